// Multi-head attention with the key and value projections folded into the queries and the
// output: SAM's token-to-image attention, a dozen prompt tokens against 64 × 64 image positions.
//
// Dimension letters: B batch, Nq queries, Nk keys, C width of the keys and values before their
// projections, NH heads of d (I = NH·d), R = NH·Nq rows (row r = h·Nq + i: head h, query i).
//
// segment_anything's Attention projects every key and value, K = k Wkᵀ + bk and V = v Wvᵀ + bv
// ([Nk, I] each), and then takes softmax(q_h K_hᵀ / s) V_h per head. Regrouped, with Wk_h the
// rows h·d ..< (h+1)·d of Wk ([d, C]):
//   q_h K_hᵀ = (q_h Wk_h) kᵀ + q_h · bk_h
//   P_h V_h  = (P_h v) Wv_hᵀ + bv_h            (each row of P_h sums to 1)
// so, per batch:
//   Q' = [q_h Wk_h]_h                 [R, C]      qb = [q_h · bk_h]_h     [R]
//   P  = softmax_rows((Q' kᵀ + qb) / s)           [R, Nk]
//   O' = P v                          [R, C]
//   out[i, h·d + t] = bv[h·d + t] + O'_h Wv_hᵀ    [Nq, I]
// The two products with the keys take R·Nk·C multiply-adds each, against Nk·C·I for each
// projection, so fewer when R < I (SAM's decoder: 8 heads × 12 tokens = 96 < 128); and the K
// and V tensors and their gradients ([Nk, I] each) are never written.
//
// Not the bits of the unfolded form (its sums are grouped differently): the same function to
// float rounding (tested against it, and against PyTorch's full-size decoder golden).
// Softmax rows as the fused attention (AttentionKernels.swift: `softmaxRowInPlace`,
// `softmaxGradRowsFloat`). Every GEMM sums in k order (Kernels.gemm); the softmax and the
// per-row sums are split by rows over the threads: the same bits on any thread count.

import CBLAS   // flmm_widen8
import RealModule

/// Shapes of a folded multi-head attention (`foldedMultiHeadAttention`).
public struct FoldedAttentionGeometry: Sendable, Equatable {
    public var batch: Int
    public var heads: Int
    public var nq: Int
    public var nk: Int
    /// C: the width of the keys and values before their projections.
    public var channels: Int
    public var headDim: Int
    /// The logits are divided by it (`attn / math.sqrt(c)`).
    public var scale: Float

    public init(batch: Int, heads: Int, nq: Int, nk: Int, channels: Int, headDim: Int, scale: Float) {
        self.batch = batch; self.heads = heads; self.nq = nq; self.nk = nk
        self.channels = channels; self.headDim = headDim; self.scale = scale
    }

    /// R = NH·Nq rows of the folded products.
    public var rows: Int { heads * nq }
    /// I = NH·d, the projected width.
    public var inner: Int { heads * headDim }
}

/// What the backward needs from the forward: Q' [B, R, C], P [B, R, Nk], O' [B, R, C].
public struct FoldedAttentionSaved<T: Sendable>: Sendable {
    public var qk: [T]
    public var probs: [T]
    public var pv: [T]
}

extension Kernels {
    // MARK: forward

    /// out [B, Nq, I] of the folded attention, and what the backward needs when `keep`.
    /// q [B, Nq, I] (projected queries), k [B, Nk, C], v [B, Nk, C], kWeight, vWeight [I, C],
    /// kBias, vBias [I].
    public static func foldedAttentionForward<T: Real & BinaryFloatingPoint & Sendable>(
        q: [T], k: [T], v: [T], kWeight: [T], kBias: [T], vWeight: [T], vBias: [T],
        _ g: FoldedAttentionGeometry, keep: Bool
    ) -> (out: [T], saved: FoldedAttentionSaved<T>?) {
        let (nq, nk, c, d, r, inner) = (g.nq, g.nk, g.channels, g.headDim, g.rows, g.inner)
        var out = outputArray(T.self, g.batch * nq * inner, writtenWhole: true)
        var qk = unfilledArray(T.self, g.batch * r * c)
        var probs = unfilledArray(T.self, g.batch * r * nk)
        var pv = unfilledArray(T.self, g.batch * r * c)
        var qb = [T](repeating: 0, count: r)
        let scale = T(g.scale)
        q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
        kWeight.withUnsafeBufferPointer { kw in kBias.withUnsafeBufferPointer { kb in
        vWeight.withUnsafeBufferPointer { vw in vBias.withUnsafeBufferPointer { vb in
        out.withUnsafeMutableBufferPointer { op in qk.withUnsafeMutableBufferPointer { qkp in
        probs.withUnsafeMutableBufferPointer { pp in pv.withUnsafeMutableBufferPointer { pvp in
        qb.withUnsafeMutableBufferPointer { qbp in
            for b in 0..<g.batch {
                let qB = qp.baseAddress! + b * nq * inner, kB = kp.baseAddress! + b * nk * c
                let vB = vp.baseAddress! + b * nk * c, oB = op.baseAddress! + b * nq * inner
                let qkB = qkp.baseAddress! + b * r * c, pB = pp.baseAddress! + b * r * nk
                let pvB = pvp.baseAddress! + b * r * c
                // Q'_h = q_h Wk_h and qb_h = q_h · bk_h (FMA in t order from 0).
                for h in 0..<g.heads {
                    gemmGeneric(transA: false, transB: false, m: nq, n: c, k: d, a: qB + h * d, lda: inner,
                                b: kw.baseAddress! + h * d * c, ldb: c, c: qkB + h * nq * c, ldc: c, accumulate: false)
                    for i in 0..<nq {
                        var s: T = 0
                        for t in 0..<d { s = s.addingProduct(qB[i * inner + h * d + t], kb[h * d + t]) }
                        qbp[h * nq + i] = s
                    }
                }
                // P = softmax_rows((Q' kᵀ + qb) / s)
                gemmGeneric(transA: false, transB: true, m: r, n: nk, k: c, a: qkB, lda: c, b: kB, ldb: c,
                            c: pB, ldc: nk, accumulate: false)
                let rowsP = SendablePointer(pB), qbs = SendableConstPointer(UnsafePointer(qbp.baseAddress!))
                Parallel.forEach(r, grain: 4) { row in
                    let x = rowsP.base + row * nk, add = qbs[row]
                    for j in 0..<nk { x[j] = (x[j] + add) / scale }
                    softmaxRowInPlace(x, nk)
                }
                // O' = P v; out_h = bv_h + O'_h Wv_hᵀ (each element from the bias, then in c order).
                gemmGeneric(transA: false, transB: false, m: r, n: c, k: nk, a: pB, lda: nk, b: vB, ldb: c,
                            c: pvB, ldc: c, accumulate: false)
                for h in 0..<g.heads {
                    for i in 0..<nq { (oB + i * inner + h * d).update(from: vb.baseAddress! + h * d, count: d) }
                    gemmGeneric(transA: false, transB: true, m: nq, n: d, k: c, a: pvB + h * nq * c, lda: c,
                                b: vw.baseAddress! + h * d * c, ldb: c, c: oB + h * d, ldc: inner, accumulate: true)
                }
            }
        }}}}}}}}}}}}
        return (out, keep ? FoldedAttentionSaved(qk: qk, probs: probs, pv: pv) : nil)
    }

    // MARK: backward

    /// Gradients of the folded attention from dOut [B, Nq, I] and the forward's saved tensors:
    /// dk, dv (nil unless asked for) and dq, dkWeight, dkBias, dvWeight, dvBias. `addK` / `addV`:
    /// gradients already gathered for k / v (`Tensor.backward`); dk (dv) then holds addK + own,
    /// each element the same sum as adding the two afterwards (Float: as the GEMM stores).
    /// Per batch, with dS the gradient of the scaled logits:
    ///   dO'_h = dOut_h Wv_h;  dWv_h += dOut_hᵀ O'_h;  dbv = Σ dOut (Double, row order)
    ///   dP = dO' vᵀ;  dv = Pᵀ dO';  dS = P ⊙ (dP − Σ_j P⊙dP) / s;  dqb = Σ_j dS (Double, j order)
    ///   dQ' = dS k;  dk = dSᵀ Q';  dq_h = dQ'_h Wk_hᵀ + dqb_h bk_hᵀ
    ///   dWk_h += q_hᵀ dQ'_h;  dbk_h += q_hᵀ dqb_h
    public static func foldedAttentionBackward<T: Real & BinaryFloatingPoint & Sendable>(
        _ dOut: [T], q: [T], k: [T], v: [T], kWeight: [T], kBias: [T], vWeight: [T],
        saved: FoldedAttentionSaved<T>, _ g: FoldedAttentionGeometry,
        needK: Bool, needV: Bool, addK: [T]? = nil, addV: [T]? = nil
    ) -> (dk: [T]?, dv: [T]?, dq: [T], dkWeight: [T], dkBias: [T], dvWeight: [T], dvBias: [T]) {
        let (nq, nk, c, d, r, inner) = (g.nq, g.nk, g.channels, g.headDim, g.rows, g.inner)
        precondition(addK == nil || addK!.count == k.count, "foldedAttentionBackward: addK has \(addK!.count) values, not \(k.count)")
        precondition(addV == nil || addV!.count == v.count, "foldedAttentionBackward: addV has \(addV!.count) values, not \(v.count)")
        var dk = needK ? unfilledArray(T.self, k.count) : []
        var dv = needV ? unfilledArray(T.self, v.count) : []
        var dq = unfilledArray(T.self, q.count)
        var dkW = [T](repeating: 0, count: inner * c), dkB = [T](repeating: 0, count: inner)
        var dvW = [T](repeating: 0, count: inner * c)
        var dS = unfilledArray(T.self, r * nk)
        var dpv = unfilledArray(T.self, r * c), dqk = unfilledArray(T.self, r * c)
        var dqb = [T](repeating: 0, count: r)
        let scale = T(g.scale)
        dOut.withUnsafeBufferPointer { gp in q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in
        v.withUnsafeBufferPointer { vp in kWeight.withUnsafeBufferPointer { kw in kBias.withUnsafeBufferPointer { kb in
        vWeight.withUnsafeBufferPointer { vw in saved.qk.withUnsafeBufferPointer { qkp in
        saved.probs.withUnsafeBufferPointer { pp in saved.pv.withUnsafeBufferPointer { pvp in
        dk.withUnsafeMutableBufferPointer { dkp in dv.withUnsafeMutableBufferPointer { dvp in
        dq.withUnsafeMutableBufferPointer { dqp in dkW.withUnsafeMutableBufferPointer { dkWp in
        dkB.withUnsafeMutableBufferPointer { dkBp in dvW.withUnsafeMutableBufferPointer { dvWp in
        dS.withUnsafeMutableBufferPointer { dSp in dpv.withUnsafeMutableBufferPointer { dpvp in
        dqk.withUnsafeMutableBufferPointer { dqkp in dqb.withUnsafeMutableBufferPointer { dqbp in
            let dSB = dSp.baseAddress!, dpvB = dpvp.baseAddress!, dqkB = dqkp.baseAddress!
            for b in 0..<g.batch {
                let gB = gp.baseAddress! + b * nq * inner, qB = qp.baseAddress! + b * nq * inner
                let kB = kp.baseAddress! + b * nk * c, vB = vp.baseAddress! + b * nk * c
                let qkB = qkp.baseAddress! + b * r * c, pB = pp.baseAddress! + b * r * nk
                let pvB = pvp.baseAddress! + b * r * c
                // dO'_h = dOut_h Wv_h; dWv_h += dOut_hᵀ O'_h
                for h in 0..<g.heads {
                    gemmGeneric(transA: false, transB: false, m: nq, n: c, k: d, a: gB + h * d, lda: inner,
                                b: vw.baseAddress! + h * d * c, ldb: c, c: dpvB + h * nq * c, ldc: c, accumulate: false)
                    gemmGeneric(transA: true, transB: false, m: d, n: c, k: nq, a: gB + h * d, lda: inner,
                                b: pvB + h * nq * c, ldb: c, c: dvWp.baseAddress! + h * d * c, ldc: c,
                                accumulate: b > 0)
                }
                // dP = dO' vᵀ (into dS); dv = Pᵀ dO'
                gemmGeneric(transA: false, transB: true, m: r, n: nk, k: c, a: dpvB, lda: c, b: vB, ldb: c,
                            c: dSB, ldc: nk, accumulate: false)
                if needV {
                    foldedProduct(m: nk, n: c, k: r, a: pB, lda: nk, b: dpvB, c: dvp.baseAddress! + b * nk * c,
                                  adding: addV, offset: b * nk * c)
                }
                // dS = P ⊙ (dP − Σ_j P⊙dP) / s, and dqb = Σ_j dS
                softmaxGradRows(p: pB, dS: dSB, rows: r, n: nk)
                let rowsS = SendablePointer(dSB), sums = SendablePointer(dqbp.baseAddress!)
                Parallel.forEach(r, grain: 4) { row in
                    let x = rowsS.base + row * nk
                    if T.self == Float.self {
                        sums[row] = T(divideRowSummingFloat(UnsafeMutableRawPointer(x).assumingMemoryBound(to: Float.self),
                                                            nk, by: Float(scale)))
                    } else {
                        var s = 0.0
                        for j in 0..<nk {
                            x[j] = x[j] / scale
                            s += Double(x[j])
                        }
                        sums[row] = T(s)
                    }
                }
                // dQ' = dS k; dk = dSᵀ Q'
                gemmGeneric(transA: false, transB: false, m: r, n: c, k: nk, a: dSB, lda: nk, b: kB, ldb: c,
                            c: dqkB, ldc: c, accumulate: false)
                if needK {
                    foldedProduct(m: nk, n: c, k: r, a: dSB, lda: nk, b: qkB, c: dkp.baseAddress! + b * nk * c,
                                  adding: addK, offset: b * nk * c)
                }
                // dq_h = dQ'_h Wk_hᵀ + dqb_h bk_hᵀ; dWk_h += q_hᵀ dQ'_h; dbk_h += q_hᵀ dqb_h
                for h in 0..<g.heads {
                    let dqH = dqp.baseAddress! + b * nq * inner + h * d
                    gemmGeneric(transA: false, transB: true, m: nq, n: d, k: c, a: dqkB + h * nq * c, lda: c,
                                b: kw.baseAddress! + h * d * c, ldb: c, c: dqH, ldc: inner, accumulate: false)
                    for i in 0..<nq {
                        for t in 0..<d { dqH[i * inner + t] = dqH[i * inner + t].addingProduct(dqbp[h * nq + i], kb[h * d + t]) }
                    }
                    gemmGeneric(transA: true, transB: false, m: d, n: c, k: nq, a: qB + h * d, lda: inner,
                                b: dqkB + h * nq * c, ldb: c, c: dkWp.baseAddress! + h * d * c, ldc: c,
                                accumulate: b > 0)
                    for t in 0..<d {
                        var s = dkBp[h * d + t]
                        for i in 0..<nq { s = s.addingProduct(qB[i * inner + h * d + t], dqbp[h * nq + i]) }
                        dkBp[h * d + t] = s
                    }
                }
            }
        }}}}}}}}}}}}}}}}}}}}
        // dbv[o] = Σ over the B·Nq rows of dOut, in Double and row order (a linear layer's bias).
        let dvB = sum(dOut, [g.batch * nq, inner], dims: [0], keepDim: false).0
        return (needK ? dk : nil, needV ? dv : nil, dq, dkW, dkB, dvW, dvB)
    }

    /// C [m, n] (row stride n) = Aᵀ · B for A [k, m] (row stride lda) and B [k, n], plus
    /// `adding[offset...]` when given (D + product: Float's `gemmAdding`, else added afterwards).
    private static func foldedProduct<T: BinaryFloatingPoint>(m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int,
                                                              b: UnsafePointer<T>, c: UnsafeMutablePointer<T>,
                                                              adding d: [T]?, offset: Int) {
        guard let d else {
            gemmGeneric(transA: true, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: n,
                        c: c, ldc: n, accumulate: false)
            return
        }
        d.withUnsafeBufferPointer { dp in
            let dB = dp.baseAddress! + offset
            if T.self == Float.self {
                func f(_ p: UnsafePointer<T>) -> UnsafePointer<Float> { UnsafeRawPointer(p).assumingMemoryBound(to: Float.self) }
                gemmAdding(transA: true, transB: false, m: m, n: n, k: k, a: f(a), lda: lda, b: f(b), ldb: n,
                           d: f(dB), c: UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc: n)
            } else {
                gemmGeneric(transA: true, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: n,
                            c: c, ldc: n, accumulate: false)
                for i in 0..<(m * n) { c[i] = dB[i] + c[i] }
            }
        }
    }

    /// x[j] = x[j] / s over a row of n values; returns Σ_j x[j] (the quotients) in Double, summed
    /// over 16 fixed lanes (lane l: elements l, l + 16, …), the lanes in order, then the tail.
    private static func divideRowSummingFloat(_ x: UnsafeMutablePointer<Float>, _ n: Int, by s: Float) -> Double {
        typealias V = SIMD16<Float>
        let raw = UnsafeMutableRawPointer(x), sV = V(repeating: s)
        let nv = n / 16
        var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
        for v in 0..<nv {
            let e = raw.loadUnaligned(fromByteOffset: 64 * v, as: V.self) / sV
            raw.storeBytes(of: e, toByteOffset: 64 * v, as: V.self)
            s0 += flmm_widen8(e.lowHalf)
            s1 += flmm_widen8(e.highHalf)
        }
        var total = 0.0
        for l in 0..<8 { total += s0[l] }
        for l in 0..<8 { total += s1[l] }
        for j in (16 * nv)..<n {
            x[j] = x[j] / s
            total += Double(x[j])
        }
        return total
    }

    /// dS = P ⊙ (dP − Σ_j dP⊙P) in place over `rows` rows of `n` (dS holds dP on entry): the fused
    /// attention's softmax backward (`softmaxGradRowsFloat` for Float, 16 rows per unit over the
    /// threads; the same formula, one row at a time, otherwise).
    private static func softmaxGradRows<T: BinaryFloatingPoint>(p: UnsafePointer<T>, dS: UnsafeMutablePointer<T>,
                                                                 rows: Int, n: Int) {
        let ps = SendableConstPointer(p), ds = SendablePointer(dS)
        if T.self == Float.self {
            Parallel.forEach((rows + 15) / 16) { u in
                let r0 = 16 * u
                softmaxGradRowsFloat(p: UnsafeRawPointer(ps.base + r0 * n).assumingMemoryBound(to: Float.self),
                                     dS: UnsafeMutableRawPointer(ds.base + r0 * n).assumingMemoryBound(to: Float.self),
                                     rows: Swift.min(16, rows - r0), n: n)
            }
            return
        }
        Parallel.forEach(rows) { i in
            let pr = ps.base + i * n, dr = ds.base + i * n
            var s = 0.0
            for j in 0..<n { s += Double(dr[j]) * Double(pr[j]) }
            for j in 0..<n { dr[j] = T(Double(pr[j]) * (Double(dr[j]) - s)) }
        }
    }
}
