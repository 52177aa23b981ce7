// The one place where threads meet unsafe buffers.
//
// Determinism rule: a parallel loop splits *independent outputs* across threads; no thread
// ever adds into a value another thread adds into, and no reduction is split. Each index
// range is given to exactly one thread, so the bits of every output are the same for any
// thread count.

import CBLAS   // the C shim: flmm_atomic_*, flmm_cpu_relax
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
        withoutActuallyEscaping(body) { body in
            // The pool is taken (a nested or concurrent call): the same outputs, on this thread.
            if !WorkerPool.shared.run(chunks: t, count: count, body) { body(0..<count) }
        }
    }

    /// Chunk `i` of `count` indices split into `chunks` contiguous ranges.
    @inline(__always)
    public static func chunk(_ i: Int, of chunks: Int, count: Int) -> Range<Int> {
        (count * i / chunks)..<(count * (i + 1) / chunks)
    }

    /// How long an idle worker spins, waiting for the next loop, before it sleeps.
    public static var workerSpinNanoseconds: UInt64 { WorkerPool.spinNanoseconds }

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

/// The threads behind `Parallel.forEachChunk`: `threads − 1` workers that spin briefly between
/// loops and then sleep, so that a loop of a few microseconds per chunk still gains from a second
/// core. (libdispatch's `concurrentPerform` wakes a sleeping worker per call; in this VM that took
/// ~100 µs, so loops under ~0.5 ms ran slower on two threads than on one.)
///
/// One loop at a time holds the pool (`busy`). Its chunks are claimed through one atomic word,
/// `state` = generation << 32 | chunks << 16 | next chunk, by the caller and by whichever workers
/// are awake; each chunk is run by exactly one thread, and the caller returns when `done` counts
/// them all. Which thread runs a chunk never changes what the chunk writes, so this adds no
/// nondeterminism (see the determinism rule above). A call that finds the pool held (a loop
/// inside a loop, or a second calling thread) runs its loop on its own thread instead.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()
    /// How long an idle worker spins before it sleeps.
    static let spinNanoseconds: UInt64 = 2_000_000

    private struct Job {
        var body: (@Sendable (Range<Int>) -> Void)?
        var count: Int
    }

    /// Five atomic words, one cache line apart: state, done, busy, sleepers, active.
    private let words: UnsafeMutablePointer<Int>
    private var state: UnsafeMutablePointer<Int> { words }
    private var done: UnsafeMutablePointer<Int> { words + 8 }
    private var busy: UnsafeMutablePointer<Int> { words + 16 }
    private var sleepers: UnsafeMutablePointer<Int> { words + 24 }
    /// Workers 0 ..< active take part (Parallel.threads − 1 at the last loop); the others are parked.
    private var active: UnsafeMutablePointer<Int> { words + 32 }
    /// The current loop; written by the holder before it publishes `state`.
    private let job: UnsafeMutablePointer<Job>
    /// Touched only by the holder of `busy`.
    private var generation = 0
    private var workers = 0
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let wake: UnsafeMutablePointer<pthread_cond_t>
    private let unpark: UnsafeMutablePointer<pthread_cond_t>

    private init() {
        words = UnsafeMutableRawPointer.allocate(byteCount: 5 * 64, alignment: 64).bindMemory(to: Int.self, capacity: 40)
        words.initialize(repeating: 0, count: 40)
        job = .allocate(capacity: 1)
        job.initialize(to: Job(body: nil, count: 0))
        mutex = .allocate(capacity: 1)
        wake = .allocate(capacity: 1)
        unpark = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(unpark, nil)
    }

    /// The chunk index `s` offers, if any.
    @inline(__always)
    private static func offered(_ s: Int) -> (index: Int, chunks: Int)? {
        let next = s & 0xFFFF, chunks = (s >> 16) & 0xFFFF
        return next < chunks ? (next, chunks) : nil
    }

    /// Runs `body` over `chunks` chunks of `0..<count` on this thread and up to
    /// `Parallel.threads − 1` workers (started on first need; any beyond that stay parked, so
    /// that lowering the thread count stops them from spinning). Returns
    /// false, having run nothing, when the pool is held by another loop.
    func run(chunks: Int, count: Int, _ body: @escaping @Sendable (Range<Int>) -> Void) -> Bool {
        precondition(chunks >= 1 && chunks <= 0xFFFF, "WorkerPool.run: \(chunks) chunks (1...65535)")
        guard flmm_atomic_cas(busy, 0, 1) != 0 else { return false }
        let want = Parallel.threads - 1
        startWorkers(want)
        if want != flmm_atomic_load(active) {
            pthread_mutex_lock(mutex)
            flmm_atomic_store(active, want)
            pthread_cond_broadcast(unpark)
            pthread_mutex_unlock(mutex)
        }
        job.pointee = Job(body: body, count: count)
        flmm_atomic_store(done, 0)
        generation += 1
        flmm_atomic_store(state, generation << 32 | chunks << 16)
        if flmm_atomic_load(sleepers) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)
        }
        claimAndRun()
        while flmm_atomic_load_acquire(done) < chunks { flmm_cpu_relax() }
        job.pointee.body = nil
        flmm_atomic_store(busy, 0)
        return true
    }

    /// Claims offered chunks one by one and runs them, until none is left.
    private func claimAndRun() {
        var s = flmm_atomic_load(state)
        while let (i, chunks) = Self.offered(s) {
            if flmm_atomic_cas(state, s, s + 1) != 0 {
                runChunk(i, of: chunks)
                _ = flmm_atomic_add(done, 1)
            }
            s = flmm_atomic_load(state)
        }
    }

    /// Runs chunk `i`; the closure's copy is released before the chunk is counted as done.
    @inline(never)
    private func runChunk(_ i: Int, of chunks: Int) {
        let j = job.pointee
        let r = Parallel.chunk(i, of: chunks, count: j.count)
        if !r.isEmpty { j.body!(r) }
    }

    /// Starts workers until there are `n`.
    private func startWorkers(_ n: Int) {
        while workers < n {
            var thread = pthread_t()
            let index = UnsafeMutableRawPointer(bitPattern: workers + 1)   // 1-based: never nil
            let rc = pthread_create(&thread, nil, { WorkerPool.shared.workerLoop(index: Int(bitPattern: $0) - 1) }, index)
            precondition(rc == 0, "WorkerPool: pthread_create failed (\(rc))")
            pthread_detach(thread)
            workers += 1
        }
    }

    private func workerLoop(index: Int) -> Never {
        while true {
            if index >= flmm_atomic_load(active) {
                pthread_mutex_lock(mutex)
                while index >= flmm_atomic_load(active) { pthread_cond_wait(unpark, mutex) }
                pthread_mutex_unlock(mutex)
            }
            claimAndRun()
            waitForChange(from: flmm_atomic_load(state))
        }
    }

    /// Spins while `state` is `seen`; after `spinNanoseconds`, sleeps until a loop is published.
    private func waitForChange(from seen: Int) {
        var spins = 0
        var deadline: UInt64 = 0
        while flmm_atomic_load_acquire(state) == seen {
            flmm_cpu_relax()
            spins += 1
            guard spins & 255 == 0 else { continue }
            let now = Self.monotonicNanoseconds()
            if deadline == 0 {
                deadline = now + Self.spinNanoseconds
            } else if now > deadline {
                pthread_mutex_lock(mutex)
                _ = flmm_atomic_add(sleepers, 1)
                while flmm_atomic_load(state) == seen { pthread_cond_wait(wake, mutex) }
                _ = flmm_atomic_add(sleepers, -1)
                pthread_mutex_unlock(mutex)
                return
            }
        }
    }

    private static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
