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

// Packs 32 columns of a transposed B for the GEMM (Kernels/GEMMPacked.swift, StridedB): column
// j + t of B is row t of `b` (stride `ldb` floats), so panel[p*32 + t] = b[t*ldb + p] for p < kc,
// t < 32. With AVX-512, two 16-lane gathers per p; the values are copied, never changed.
#if defined(__AVX512F__)
#include <immintrin.h>
static inline void flmm_pack_bt32(const float *b, long ldb, long kc, float *panel) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)ldb));
    const float *hi = b + 16 * ldb;
    for (long p = 0; p < kc; p++) {
        _mm512_storeu_ps(panel + p * 32, _mm512_i32gather_ps(idx, b + p, 4));
        _mm512_storeu_ps(panel + p * 32 + 16, _mm512_i32gather_ps(idx, hi + p, 4));
    }
}
#define FLMM_HAS_PACK_BT32 1
#else
#define FLMM_HAS_PACK_BT32 0
#endif

// Transposes a 16 × 16 block of floats: dst[c*ldd + r] = src[r*lds + c] for r, c < 16 (the
// short-key attention's row tiles, Kernels/ShortKeyAttentionKernels.swift). Values are moved,
// never changed. With AVX-512: 16 loads, 64 in-register shuffles, 16 stores.
// `flmm_transpose16_rows` does the same with row r read from rows[r] + col (rows anywhere,
// repeated rows allowed): dst[c*ldd + r] = rows[r][col + c].
#if defined(__AVX512F__)
static inline void flmm_transpose16_regs(__m512 r[16], float *dst, long ldd) {
    __m512 t[16];
    // Pairs of rows interleaved, then 4 × 4 blocks transposed within each 128-bit lane.
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    // 128-bit lanes exchanged between row groups 4 apart, then 8 apart.
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * ldd, r[i]);
}
#endif

static inline void flmm_transpose16(const float *src, long lds, float *dst, long ldd) {
#if defined(__AVX512F__)
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    flmm_transpose16_regs(r, dst, ldd);
#else
    for (long r = 0; r < 16; r++)
        for (long c = 0; c < 16; c++) dst[c * ldd + r] = src[r * lds + c];
#endif
}

static inline void flmm_transpose16_rows(const float *const *rows, long col, float *dst, long ldd) {
#if defined(__AVX512F__)
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(rows[i] + col);
    flmm_transpose16_regs(r, dst, ldd);
#else
    for (long r = 0; r < 16; r++)
        for (long c = 0; c < 16; c++) dst[c * ldd + r] = rows[r][col + c];
#endif
}

// Float ↔ Double conversions of 8 lanes (Swift's SIMD8<Float> / SIMD8<Double>), exact widening
// and round-to-nearest narrowing, the same values as Swift's own conversions. Swift's generic
// SIMD8<Double>(SIMD8<Float>) is compiled as a call per vector here; these inline to one
// instruction (the softmax sums, Kernels/AttentionKernels.swift and ShortKeyAttentionKernels.swift).
typedef float flmm_float8 __attribute__((ext_vector_type(8)));
typedef double flmm_double8 __attribute__((ext_vector_type(8)));
static inline flmm_double8 flmm_widen8(flmm_float8 x) { return __builtin_convertvector(x, flmm_double8); }
static inline flmm_float8 flmm_narrow8(flmm_double8 x) { return __builtin_convertvector(x, flmm_float8); }

// Software prefetch of a cache line for writing (the GEMM's next C tile), all cache levels.
static inline void flmm_prefetch_c(const void *p) { __builtin_prefetch(p, 1, 3); }
// Software prefetch of a cache line for reading, all cache levels (rows of B far apart, where
// the hardware prefetcher, which stays within a 4 KB page, sees only a few per page).
static inline void flmm_prefetch_r(const void *p) { __builtin_prefetch(p, 0, 3); }

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
