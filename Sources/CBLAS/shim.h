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
