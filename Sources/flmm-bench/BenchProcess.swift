// Process-level helpers of the model rows (UNetBench, SAMBench): CPU time and glibc's malloc
// settings for timing steps.

import Foundation

enum BenchProcess {
    /// CPU time of the whole process (all threads), in seconds.
    static func cpuSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// glibc malloc: serve blocks up to `mmapThresholdMB` from the heap (M_MMAP_THRESHOLD) and
    /// never trim it (M_TRIM_THRESHOLD), so a step's large temporaries are reused instead of
    /// being mapped, page-faulted and zeroed again on every step (with 256, the SAM decoder step
    /// takes no page fault after its warm-up step). No effect without mallopt.
    static func keepFreedMemory(mmapThresholdMB: Int32) {
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let sym = dlsym(nil, "mallopt") else { return }
        let mallopt = unsafeBitCast(sym, to: Mallopt.self)
        _ = mallopt(-3, mmapThresholdMB << 20)    // M_MMAP_THRESHOLD
        _ = mallopt(-1, Int32.max)    // M_TRIM_THRESHOLD
    }
}
