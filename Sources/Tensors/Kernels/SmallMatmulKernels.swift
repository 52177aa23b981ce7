// C[b] = A[b] · B[b]ᵀ for a small A (few rows M, short rows K) and a long B (N rows of K):
// SAM's mask product masks[m, p] = Σ_c hyper[m, c]·upscaled[p, c] (M = 4, K = 32,
// N = 65536), where a packed GEMM spends its time packing. Same arithmetic as the GEMM
// contract: every sum in index order from 0 with FMA (forward over k; dA over n; dB over m).
//
// Forward: blocks of 16 rows of B are transposed into a K×16 tile and the 16 sums of each
// row of A run side by side. dA: one pass over B per row m of A, 16-wide over k. dB: per row
// n of B, Σ_m g[m, n]·A[m, :]. Parallel over independent outputs only.

extension Kernels {
    /// a [batch, M, K], b [batch, N, K] → c [batch, M, N], c[m, n] = Σ_k a[m, k]·b[n, k].
    public static func matmulNT<T: BinaryFloatingPoint & Sendable>(
        _ a: [T], _ b: [T], batch: Int, m: Int, n: Int, k: Int
    ) -> [T] {
        precondition(a.count == batch * m * k && b.count == batch * n * k,
                     "matmulNT: \(a.count) / \(b.count) elements for [\(batch), \(m), \(k)] · [\(batch), \(n), \(k)]ᵀ")
        var c = [T](repeating: 0, count: batch * m * n)
        if c.isEmpty || k == 0 { return c }
        let blocks = (n + 15) / 16
        a.withUnsafeBufferPointer { ab in b.withUnsafeBufferPointer { bb in c.withUnsafeMutableBufferPointer { cb in
            let ap = SendableConstPointer(ab.baseAddress!), bp = SendableConstPointer(bb.baseAddress!)
            let cp = SendablePointer(cb.baseAddress!)
            Parallel.forEachChunk(batch * blocks, grain: max(1, 4096 / max(1, m * k))) { range in
                let tile = UnsafeMutablePointer<T>.allocate(capacity: k * 16)
                let s = UnsafeMutablePointer<T>.allocate(capacity: 16)
                defer { tile.deallocate(); s.deallocate() }
                for unit in range {
                    let bi = unit / blocks, n0 = (unit % blocks) * 16, w = min(16, n - n0)
                    let bRows = bp.base + (bi * n + n0) * k
                    for j in 0..<16 { for kk in 0..<k { tile[kk * 16 + j] = j < w ? bRows[j * k + kk] : 0 } }
                    for mi in 0..<m {
                        let arow = ap.base + (bi * m + mi) * k
                        s.update(repeating: 0, count: 16)
                        for kk in 0..<k {
                            let av = arow[kk], t = tile + kk * 16
                            for j in 0..<16 { s[j] = s[j].addingProduct(av, t[j]) }
                        }
                        let out = cp.base + (bi * m + mi) * n + n0
                        for j in 0..<w { out[j] = s[j] }
                    }
                }
            }
        }}}
        return c
    }

    /// Gradients of `matmulNT` from g [batch, M, N]: dA [batch, M, K], dB [batch, N, K].
    public static func matmulNTBackward<T: BinaryFloatingPoint & Sendable>(
        _ g: [T], _ a: [T], _ b: [T], batch: Int, m: Int, n: Int, k: Int, needA: Bool, needB: Bool
    ) -> (da: [T]?, db: [T]?) {
        var da = [T](repeating: 0, count: needA ? batch * m * k : 0)
        var db = [T](repeating: 0, count: needB ? batch * n * k : 0)
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
                // dB[n, k] = Σ_m g[m, n]·a[m, k], m in order.
                let dbp = SendablePointer(base)
                Parallel.forEachChunk(batch * n, grain: max(1, 16384 / max(1, m * k))) { range in
                    for row in range {
                        let bi = row / n, nn = row % n
                        let out = dbp.base + row * k
                        for mi in 0..<m {
                            let gv = gp[(bi * m + mi) * n + nn], arow = ap.base + (bi * m + mi) * k
                            for kk in 0..<k { out[kk] = out[kk].addingProduct(gv, arow[kk]) }
                        }
                    }
                }
            }
        }}}}}
        return (needA ? da : nil, needB ? db : nil)
    }
}
