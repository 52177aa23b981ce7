// C[b] = A[b] · B[b]ᵀ for a small A (few rows M, short rows K) and a long B (N rows of K):
// SAM's mask product masks[m, p] = Σ_c hyper[m, c]·upscaled[p, c] (M = 4, K = 32,
// N = 65536). Same arithmetic as the GEMM contract: every sum in index order from 0 with FMA
// (forward over k; dA over n; dB over m).
//
// Forward: Cᵀ = B·Aᵀ by the packed GEMM, which reads B's rows in place, then a transpose.
// dA: one pass over B per row m of A, 16-wide over k. dB = gᵀ·A by the packed GEMM. Parallel
// over independent outputs only.

extension Kernels {
    /// a [batch, M, K], b [batch, N, K] → c [batch, M, N], c[m, n] = Σ_k a[m, k]·b[n, k].
    public static func matmulNT<T: BinaryFloatingPoint & Sendable>(
        _ a: [T], _ b: [T], batch: Int, m: Int, n: Int, k: Int
    ) -> [T] {
        precondition(a.count == batch * m * k && b.count == batch * n * k,
                     "matmulNT: \(a.count) / \(b.count) elements for [\(batch), \(m), \(k)] · [\(batch), \(n), \(k)]ᵀ")
        if batch * m * n == 0 || k == 0 { return [T](repeating: 0, count: batch * m * n) }
        // Cᵀ[b] = B[b] · A[b]ᵀ [N, M] as a GEMM that reads B's rows in place (the long operand
        // as its A: nothing of B is packed), then transposed to C. Each element is the GEMM's
        // chain fma(b[n, k], a[m, k], ·) over k from 0: the same bits as a · bᵀ.
        let ct = uninitializedArray(batch * n * m) { (cp: UnsafeMutablePointer<T>) in
            a.withUnsafeBufferPointer { ab in
                b.withUnsafeBufferPointer { bb in
                    for bi in 0..<batch {
                        gemmGeneric(transA: false, transB: true, m: n, n: m, k: k, a: bb.baseAddress! + bi * n * k, lda: k,
                                    b: ab.baseAddress! + bi * m * k, ldb: k, c: cp + bi * n * m, ldc: m,
                                    accumulate: false)
                    }
                }
            }
        }
        return permute(ct, [batch, n, m], [0, 2, 1])
    }

    /// Gradients of `matmulNT` from g [batch, M, N]: dA [batch, M, K], dB [batch, N, K].
    public static func matmulNTBackward<T: BinaryFloatingPoint & Sendable>(
        _ g: [T], _ a: [T], _ b: [T], batch: Int, m: Int, n: Int, k: Int, needA: Bool, needB: Bool
    ) -> (da: [T]?, db: [T]?) {
        var da = [T](repeating: 0, count: needA ? batch * m * k : 0)
        var db = [T](repeating: 0, count: needB ? batch * n * k : 0)
        if m == 0 || n == 0 || k == 0 { return (needA ? da : nil, needB ? db : nil) }
        g.withUnsafeBufferPointer { gb in a.withUnsafeBufferPointer { ab in b.withUnsafeBufferPointer { bb in
        da.withUnsafeMutableBufferPointer { dab in db.withUnsafeMutableBufferPointer { dbb in
            let gp = SendableConstPointer(gb.baseAddress!), ap = SendableConstPointer(ab.baseAddress!)
            let bp = SendableConstPointer(bb.baseAddress!)
            if needA, let base = dab.baseAddress {
                // dA[m, k] = Σ_n g[m, n]·b[n, k], n in order: one task per (batch, m).
                let dap = SendablePointer(base)
                Parallel.forEach(batch * m) { unit in
                    let bi = unit / m
                    let grow = gp.base + unit * n, brows = bp.base + bi * n * k, out = dap.base + unit * k
                    for nn in 0..<n {
                        let gv = grow[nn], br = brows + nn * k
                        for kk in 0..<k { out[kk] = out[kk].addingProduct(gv, br[kk]) }
                    }
                }
            }
            if needB, let base = dbb.baseAddress {
                // dB[b] = g[b]ᵀ · A[b] [N, K]: a GEMM over m in order from 0 (g read in place).
                for bi in 0..<batch {
                    gemmGeneric(transA: true, transB: false, m: n, n: k, k: m, a: gp.base + bi * m * n, lda: n,
                                b: ap.base + bi * m * k, ldb: k, c: base + bi * n * k, ldc: k, accumulate: false)
                }
            }
        }}}}}
        return (needA ? da : nil, needB ? db : nil)
    }
}
