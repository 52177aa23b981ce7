// OpenBLAS's CBLAS interface (Debian: libopenblas-dev installs it under the multiarch include path).
#if __has_include(<x86_64-linux-gnu/cblas.h>)
#include <x86_64-linux-gnu/cblas.h>
#elif __has_include(<aarch64-linux-gnu/cblas.h>)
#include <aarch64-linux-gnu/cblas.h>
#else
#include <cblas.h>
#endif

// The SIMD width the build's target CPU supports, for the GEMM micro-kernels (Kernels/GEMMPacked.swift).
// Swift has no `#if` on CPU features, but the Clang importer sees `-target-cpu`, so this constant
// follows the build flags: 16 floats with AVX-512, 8 with AVX2 (or any FMA-capable 256-bit unit), else 4.
#if defined(__AVX512F__)
#define FLMM_SIMD_FLOATS 16
#elif defined(__AVX2__) && defined(__FMA__)
#define FLMM_SIMD_FLOATS 8
#else
#define FLMM_SIMD_FLOATS 4
#endif

// Software prefetch of a cache line for writing (the GEMM's next C tile), all cache levels.
static inline void flmm_prefetch_c(const void *p) { __builtin_prefetch(p, 1, 3); }

// Atomics and a spin-wait hint for the worker pool (Sources/Tensors/Parallel.swift). C11-style
// builtins on a `long` (Swift's Int on LP64), so the pool needs no newer-OS Synchronization module.
static inline long flmm_atomic_load(const long *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline long flmm_atomic_load_acquire(const long *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void flmm_atomic_store(long *p, long v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline long flmm_atomic_add(long *p, long v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }
/// Replaces *p by `desired` if it equals `expected`; true when it did (sequentially consistent).
static inline int flmm_atomic_cas(long *p, long expected, long desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline void flmm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
