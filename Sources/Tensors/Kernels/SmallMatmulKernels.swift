// C[b] = A[b] · B[b]ᵀ for a small A (few rows M, short rows K) and a long B (N rows of K):
// SAM's mask product masks[m, p] = Σ_c hyper[m, c]·upscaled[p, c] (M = 4, K = 32,
// N = 65536). Same arithmetic as the GEMM contract: every sum in index order from 0 with FMA
// (forward over k; dA over n; dB over m).
//
// Forward: Cᵀ = B·Aᵀ by the packed GEMM, which reads B's rows in place, then a transpose.
// dA: one pass over B per four rows of A and 16 columns, the accumulators in registers (Float,
// K a multiple of 16; else one pass per row, 16-wide over k). dB = gᵀ·A by the packed GEMM.
// Parallel over independent outputs only.

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
        // dB is written whole by its GEMM (m, n, k > 0 below): no zero fill.
        var da = [T](repeating: 0, count: needA ? batch * m * k : 0)
        var db = outputArray(T.self, needB ? batch * n * k : 0, writtenWhole: needB && m > 0 && n > 0 && k > 0)
        if m == 0 || n == 0 || k == 0 { return (needA ? da : nil, needB ? db : nil) }
        g.withUnsafeBufferPointer { gb in a.withUnsafeBufferPointer { ab in b.withUnsafeBufferPointer { bb in
        da.withUnsafeMutableBufferPointer { dab in db.withUnsafeMutableBufferPointer { dbb in
            let gp = SendableConstPointer(gb.baseAddress!), ap = SendableConstPointer(ab.baseAddress!)
            let bp = SendableConstPointer(bb.baseAddress!)
            if needA, let base = dab.baseAddress {
                let dap = SendablePointer(base)
                if T.self == Float.self && k % 16 == 0 {
                    // dA[m, k] = Σ_n g[m, n]·b[n, k], n in order: one task per (batch, four rows
                    // of A, 16 columns), its four accumulators in registers through all of n.
                    let rowGroups = (m + 3) / 4, colGroups = k / 16
                    Parallel.forEach(batch * rowGroups * colGroups) { unit in
                        let bi = unit / (rowGroups * colGroups), r = unit % (rowGroups * colGroups)
                        let m0 = (r / colGroups) * 4, k0 = (r % colGroups) * 16
                        let f = { (p: UnsafePointer<T>) in UnsafeRawPointer(p).assumingMemoryBound(to: Float.self) }
                        let g0 = f(gp.base + (bi * m + m0) * n)
                        let g1 = f(gp.base + (bi * m + Swift.min(m0 + 1, m - 1)) * n)
                        let g2 = f(gp.base + (bi * m + Swift.min(m0 + 2, m - 1)) * n)
                        let g3 = f(gp.base + (bi * m + Swift.min(m0 + 3, m - 1)) * n)
                        var br = UnsafeRawPointer(bp.base + bi * n * k + k0)
                        typealias V = SIMD16<Float>
                        var a0 = V(), a1 = V(), a2 = V(), a3 = V()
                        for nn in 0..<n {
                            let bv = br.loadUnaligned(as: V.self)
                            a0 = a0.addingProduct(V(repeating: g0[nn]), bv); a1 = a1.addingProduct(V(repeating: g1[nn]), bv)
                            a2 = a2.addingProduct(V(repeating: g2[nn]), bv); a3 = a3.addingProduct(V(repeating: g3[nn]), bv)
                            br += k &* 4
                        }
                        let out = UnsafeMutableRawPointer(dap.base + (bi * m + m0) * k + k0)
                        for (t, acc) in [a0, a1, a2, a3].prefix(Swift.min(4, m - m0)).enumerated() {
                            out.storeBytes(of: acc, toByteOffset: t * k * 4, as: V.self)
                        }
                    }
                } else {
                    // One task per (batch, m), 16 wide over k.
                    Parallel.forEach(batch * m) { unit in
                        let bi = unit / m
                        let grow = gp.base + unit * n, brows = bp.base + bi * n * k, out = dap.base + unit * k
                        for nn in 0..<n {
                            let gv = grow[nn], br = brows + nn * k
                            for kk in 0..<k { out[kk] = out[kk].addingProduct(gv, br[kk]) }
                        }
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
