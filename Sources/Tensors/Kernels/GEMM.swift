// General matrix multiply, C = A·B (+ C), row-major.
//
// Determinism: every C[i,j] is computed as c = fma(a[i,k], b[k,j], c) for k = 0, 1, …, K-1
// in that order, starting from 0 (or from C when accumulating). Any kernel that keeps this
// order gives the same bits, whatever its tiling, SIMD width or thread count.

extension Kernels {
    /// Naive reference GEMM, generic over the scalar. A is [m, k] (or [k, m] when `transA`),
    /// B is [k, n] (or [n, k] when `transB`), C is [m, n]; leading dimensions are row strides.
    public static func gemmReference<T: BinaryFloatingPoint>(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
        c: UnsafeMutablePointer<T>, ldc: Int, accumulate: Bool
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var s: T = accumulate ? c[i * ldc + j] : 0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s = s.addingProduct(av, bv)
                }
                c[i * ldc + j] = s
            }
        }
    }

    /// Float GEMM used by every op (matmul, linear, conv). Same contract as `gemmReference`.
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool
    ) {
        gemmReference(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                      c: c, ldc: ldc, accumulate: accumulate)
    }
}
