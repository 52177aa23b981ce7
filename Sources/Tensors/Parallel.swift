// The one place where threads meet unsafe buffers.
//
// Determinism rule: a parallel loop splits *independent outputs* across threads; no thread
// ever adds into a value another thread adds into, and no reduction is split. Each index
// range is given to exactly one thread, so the bits of every output are the same for any
// thread count.

import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Thread configuration. `FLMM_THREADS` sets the count (default: all cores).
public enum Parallel {
    nonisolated(unsafe) private static var _threads: Int = defaultThreadCount()

    /// Number of threads parallel kernels use.
    public static var threads: Int {
        get { _threads }
        set {
            precondition(newValue >= 1, "Parallel.threads: \(newValue) must be >= 1")
            _threads = newValue
        }
    }

    /// `FLMM_THREADS` if set to a positive integer, else the number of active cores.
    public static func defaultThreadCount() -> Int {
        if let s = getenv("FLMM_THREADS"), let n = Int(String(cString: s)), n >= 1 { return n }
        #if canImport(Glibc)
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #else
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
        #endif
    }

    /// Runs `body` over `0..<count` split into at most `threads` contiguous chunks.
    /// `grain` is the smallest chunk worth a thread. Each index is visited exactly once.
    public static func forEachChunk(_ count: Int, grain: Int = 1,
                                    _ body: @Sendable (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let t = min(threads, max(1, count / max(grain, 1)))
        if t <= 1 {
            body(0..<count)
            return
        }
        DispatchQueue.concurrentPerform(iterations: t) { i in
            let lo = count * i / t, hi = count * (i + 1) / t
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Runs `body(i)` for every `i` in `0..<count`, chunked as `forEachChunk`.
    public static func forEach(_ count: Int, grain: Int = 1, _ body: @Sendable (Int) -> Void) {
        forEachChunk(count, grain: grain) { r in for i in r { body(i) } }
    }
}

/// An unsafe pointer that may cross into a parallel loop. The loop must write disjoint
/// elements from each thread (see the determinism rule above).
public struct SendablePointer<T>: @unchecked Sendable {
    public let base: UnsafeMutablePointer<T>
    @inline(__always) public init(_ base: UnsafeMutablePointer<T>) { self.base = base }
    @inline(__always) public subscript(i: Int) -> T {
        get { base[i] }
        nonmutating set { base[i] = newValue }
    }
    @inline(__always) public static func + (p: SendablePointer, k: Int) -> UnsafeMutablePointer<T> { p.base + k }
}

/// A read-only pointer that may cross into a parallel loop.
public struct SendableConstPointer<T>: @unchecked Sendable {
    public let base: UnsafePointer<T>
    @inline(__always) public init(_ base: UnsafePointer<T>) { self.base = base }
    @inline(__always) public subscript(i: Int) -> T { base[i] }
    @inline(__always) public static func + (p: SendableConstPointer, k: Int) -> UnsafePointer<T> { p.base + k }
}
