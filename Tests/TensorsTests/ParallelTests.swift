import Dispatch
import XCTest
import Tensors

/// `Parallel.forEachChunk` on the worker pool: every index is visited exactly once, for any
/// thread count, for loops inside loops and for two threads calling at once.
final class ParallelTests: XCTestCase {
    override func tearDown() { Parallel.threads = Parallel.defaultThreadCount() }

    /// Visit counts of `0..<count` after `loop` ran (each visit adds 1 to its index).
    private func visits(_ count: Int, _ loop: (SendablePointer<Int>) -> Void) -> [Int] {
        var v = [Int](repeating: 0, count: count)
        v.withUnsafeMutableBufferPointer { loop(SendablePointer($0.baseAddress!)) }
        return v
    }

    func testChunksPartitionTheRange() {
        // 10 indices in 3 chunks: ⌊10·i/3⌋ boundaries 0, 3, 6, 10.
        XCTAssertEqual((0..<3).map { Parallel.chunk($0, of: 3, count: 10) }, [0..<3, 3..<6, 6..<10])
        XCTAssertEqual((0..<4).map { Parallel.chunk($0, of: 4, count: 2) }, [0..<0, 0..<1, 1..<1, 1..<2])
    }

    func testEveryIndexOnceForAnyThreadCountAndGrain() {
        for threads in [1, 2, 3, 5] {
            Parallel.threads = threads
            for count in [1, 2, 7, 64, 1000] {
                for grain in [1, 3, 100] {
                    let v = visits(count) { p in
                        Parallel.forEachChunk(count, grain: grain) { r in for i in r { p[i] += 1 } }
                    }
                    XCTAssertEqual(v, [Int](repeating: 1, count: count), "threads \(threads) count \(count) grain \(grain)")
                }
            }
        }
    }

    /// Thousands of tiny loops back to back: the pool's hand-over between loops loses nothing.
    func testManySmallLoops() {
        Parallel.threads = 2
        let v = visits(64) { p in
            for _ in 0..<20_000 { Parallel.forEach(64) { i in p[i] += 1 } }
        }
        XCTAssertEqual(v, [Int](repeating: 20_000, count: 64))
    }

    func testLoopInsideLoop() {
        Parallel.threads = 2
        let v = visits(8 * 50) { p in
            Parallel.forEach(8) { o in
                Parallel.forEach(50) { i in p[o * 50 + i] += 1 }
            }
        }
        XCTAssertEqual(v, [Int](repeating: 1, count: 400))
    }

    func testTwoCallingThreads() {
        Parallel.threads = 2
        let v = visits(2 * 300) { p in
            DispatchQueue.concurrentPerform(iterations: 2) { caller in
                for _ in 0..<500 {
                    Parallel.forEach(300) { i in p[caller * 300 + i] += 1 }
                }
            }
        }
        XCTAssertEqual(v, [Int](repeating: 500, count: 600))
    }

    /// Lowering the thread count parks the extra workers; raising it again brings them back.
    func testThreadCountDownAndUp() {
        for threads in [4, 2, 1, 4, 3] {
            Parallel.threads = threads
            let v = visits(500) { p in
                for _ in 0..<50 { Parallel.forEachChunk(500) { r in for i in r { p[i] += 1 } } }
            }
            XCTAssertEqual(v, [Int](repeating: 50, count: 500), "threads \(threads)")
        }
    }

    /// After the workers have gone to sleep (idle longer than the spin time), a loop still runs.
    func testLoopAfterWorkersSlept() {
        Parallel.threads = 2
        Parallel.forEach(4) { _ in }
        usleep(UInt32(3 * Parallel.workerSpinNanoseconds / 1000))
        let v = visits(1000) { p in Parallel.forEach(1000) { i in p[i] += 1 } }
        XCTAssertEqual(v, [Int](repeating: 1, count: 1000))
    }
}
