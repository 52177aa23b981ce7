// Multi-head attention with two of its projections folded into the other side, for SAM's
// cross-attentions between a dozen prompt tokens and 64 × 64 image positions. First, the key
// and value projections folded into the queries and the output (token-to-image attention).
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
// The other direction, SAM's image-to-token attention (4096 image positions against a dozen
// tokens), folds the query and output projections into the keys and values instead. With k, v
// the projected keys and values [Nk, I] and x the queries before q_proj ([Nq, C]):
//   (x Wq_hᵀ + bq_h) k_hᵀ = x (k_h Wq_h)ᵀ + bq_h · k_h     Wq_h = rows h·d ..< (h+1)·d of Wq, [d, C]
//   out_proj([P_h v_h]_h) = bo + Σ_h P_h (v_h Wo_hᵀ)       Wo_h = columns h·d ..< (h+1)·d of Wo, [C, d]
// so, per batch, with R' = NH·Nk rows (row h·Nk + i) and P stored key-major ([R', Nq], so that the
// softmax over each head's Nk keys runs 16 queries to a vector):
//   K' = [k_h Wq_h]_h   [R', C]      kb = [bq_h · k_h,i]   [R']      V' = [v_h Wo_hᵀ]_h   [R', C]
//   P  = softmax over each head's Nk rows of (K' xᵀ + kb) / s     [R', Nq]
//   out = residual + (bo + Pᵀ V')                                  [Nq, C]
// again 2·R'·Nq·C multiply-adds against the projections' 2·Nq·C·I, and no [Nq, I] tensors.
//
// Not the bits of the unfolded form (its sums are grouped differently): the same function to
// float rounding (tested against it, and against PyTorch's full-size decoder golden).
// Softmax rows as the fused attention (AttentionKernels.swift: `softmaxRowInPlace`,
// `softmaxGradRowsFloat`; key-major, the same arithmetic per query). Every GEMM sums in k order
// (Kernels.gemm); the softmax and the per-row sums are split over the threads by rows (key-major:
// by blocks of 16 queries), each computed whole by one thread: the same bits on any thread count.

import CBLAS   // flmm_widen8
import RealModule

/// Shapes of a folded multi-head attention (`foldedMultiHeadAttention`, `queryFoldedMultiHeadAttention`).
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

    /// R = NH·Nq rows of the folded products (keys and values folded).
    public var rows: Int { heads * nq }
    /// R' = NH·Nk rows of the folded products (queries and output folded).
    public var keyRows: Int { heads * nk }
    /// I = NH·d, the projected width.
    public var inner: Int { heads * headDim }
}

/// What the backward needs from the forward: Q' [B, R, C], P [B, R, Nk], O' [B, R, C] (keys
/// and values folded); K', P [B, R', Nq] and V' (queries and output folded) in the same fields.
public struct FoldedAttentionSaved<T: Sendable>: Sendable {
    public var qk: [T]
    public var probs: [T]
    public var pv: [T]
}

extension Kernels {
    // MARK: keys and values folded (token-to-image)

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
                // Q'_h = q_h Wk_h and qb_h = q_h · bk_h
                foldSmallSide(qB, rows: nq, weight: kw.baseAddress!, bias: kb.baseAddress!, g,
                              folded: qkB, rowBias: qbp.baseAddress!)
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
        (addK ?? []).withUnsafeBufferPointer { akp in (addV ?? []).withUnsafeBufferPointer { avp in
            let dSB = dSp.baseAddress!, dpvB = dpvp.baseAddress!, dqkB = dqkp.baseAddress!
            let addKp = addK == nil ? nil : akp.baseAddress, addVp = addV == nil ? nil : avp.baseAddress
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
                    transposedProduct(m: nk, n: c, k: r, a: pB, lda: nk, b: dpvB, adding: addVp.map { $0 + b * nk * c },
                                      c: dvp.baseAddress! + b * nk * c)
                }
                // dS = P ⊙ (dP − Σ_j P⊙dP) / s, and dqb = Σ_j dS
                softmaxGradRows(p: pB, dS: dSB, rows: r, n: nk)
                divideRowsSumming(dSB, rows: r, n: nk, by: scale, sums: dqbp.baseAddress!)
                // dQ' = dS k; dk = dSᵀ Q'
                gemmGeneric(transA: false, transB: false, m: r, n: c, k: nk, a: dSB, lda: nk, b: kB, ldb: c,
                            c: dqkB, ldc: c, accumulate: false)
                if needK {
                    transposedProduct(m: nk, n: c, k: r, a: dSB, lda: nk, b: qkB, adding: addKp.map { $0 + b * nk * c },
                                      c: dkp.baseAddress! + b * nk * c)
                }
                // dq_h = dQ'_h Wk_hᵀ + dqb_h bk_hᵀ; dWk_h += q_hᵀ dQ'_h; dbk_h += q_hᵀ dqb_h
                foldSmallSideBackward(qB, rows: nq, weight: kw.baseAddress!, bias: kb.baseAddress!, g,
                                      dFolded: dqkB, dRowBias: dqbp.baseAddress!, dSmall: dqp.baseAddress! + b * nq * inner,
                                      dWeight: dkWp.baseAddress!, dBias: dkBp.baseAddress!, accumulate: b > 0)
            }
        }}}}}}}}}}}}}}}}}}}}}}
        // dbv[o] = Σ over the B·Nq rows of dOut, in Double and row order (a linear layer's bias).
        let dvB = sum(dOut, [g.batch * nq, inner], dims: [0], keepDim: false).0
        return (needK ? dk : nil, needV ? dv : nil, dq, dkW, dkB, dvW, dvB)
    }

    // MARK: the small side's fold, shared by both directions

    /// F_h = s_h W_h ([rows, C], at row h·rows of F) and f[h·rows + i] = s_h,i · b_h (FMA in t
    /// order from 0) for every head h, from the small side s [rows, I] (head h: columns
    /// h·d ..< (h+1)·d), W [I, C] (W_h: rows h·d ..< (h+1)·d) and b [I]: Q' and qb
    /// (token-to-image), K' and kb (image-to-token).
    private static func foldSmallSide<T: BinaryFloatingPoint>(_ s: UnsafePointer<T>, rows: Int, weight: UnsafePointer<T>,
                                                              bias: UnsafePointer<T>, _ g: FoldedAttentionGeometry,
                                                              folded: UnsafeMutablePointer<T>, rowBias: UnsafeMutablePointer<T>) {
        let (c, d, inner) = (g.channels, g.headDim, g.inner)
        for h in 0..<g.heads {
            gemmGeneric(transA: false, transB: false, m: rows, n: c, k: d, a: s + h * d, lda: inner,
                        b: weight + h * d * c, ldb: c, c: folded + h * rows * c, ldc: c, accumulate: false)
            for i in 0..<rows {
                var acc: T = 0
                for t in 0..<d { acc = acc.addingProduct(s[i * inner + h * d + t], bias[h * d + t]) }
                rowBias[h * rows + i] = acc
            }
        }
    }

    /// The gradients through `foldSmallSide` from dF and df: ds_h = dF_h W_hᵀ + df_h b_hᵀ (written
    /// into ds [rows, I]), dW_h = s_hᵀ dF_h (added to dW when `accumulate`) and db_h += s_hᵀ df_h.
    private static func foldSmallSideBackward<T: BinaryFloatingPoint>(
        _ s: UnsafePointer<T>, rows: Int, weight: UnsafePointer<T>, bias: UnsafePointer<T>, _ g: FoldedAttentionGeometry,
        dFolded: UnsafePointer<T>, dRowBias: UnsafePointer<T>, dSmall: UnsafeMutablePointer<T>,
        dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>, accumulate: Bool
    ) {
        let (c, d, inner) = (g.channels, g.headDim, g.inner)
        for h in 0..<g.heads {
            let ds = dSmall + h * d
            gemmGeneric(transA: false, transB: true, m: rows, n: d, k: c, a: dFolded + h * rows * c, lda: c,
                        b: weight + h * d * c, ldb: c, c: ds, ldc: inner, accumulate: false)
            for i in 0..<rows {
                for t in 0..<d { ds[i * inner + t] = ds[i * inner + t].addingProduct(dRowBias[h * rows + i], bias[h * d + t]) }
            }
            gemmGeneric(transA: true, transB: false, m: d, n: c, k: rows, a: s + h * d, lda: inner,
                        b: dFolded + h * rows * c, ldb: c, c: dWeight + h * d * c, ldc: c, accumulate: accumulate)
            for t in 0..<d {
                var acc = dBias[h * d + t]
                for i in 0..<rows { acc = acc.addingProduct(s[i * inner + h * d + t], dRowBias[h * rows + i]) }
                dBias[h * d + t] = acc
            }
        }
    }

    /// C [m, n] (row stride n) = Aᵀ · B for A [k, m] (row stride lda) and B [k, n], each row
    /// starting from `bias` [n] when given (`gemmRowBias`), then D + that when `adding` D [m, n] is
    /// given: Float's `gemmAdding` adds D as it stores, other scalars afterwards (the same sums).
    private static func transposedProduct<T: BinaryFloatingPoint>(m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int,
                                                                  b: UnsafePointer<T>, bias: UnsafePointer<T>? = nil,
                                                                  adding d: UnsafePointer<T>?, c: UnsafeMutablePointer<T>) {
        if T.self == Float.self, let d {
            func f(_ p: UnsafePointer<T>) -> UnsafePointer<Float> { UnsafeRawPointer(p).assumingMemoryBound(to: Float.self) }
            gemmAdding(transA: true, transB: false, m: m, n: n, k: k, a: f(a), lda: lda, b: f(b), ldb: n,
                       bias: bias.map(f), d: f(d), c: UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc: n)
            return
        }
        if let bias {
            gemmRowBias(transA: true, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: n, c: c, ldc: n, bias: bias)
        } else {
            gemmGeneric(transA: true, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: n, c: c, ldc: n,
                        accumulate: false)
        }
        if let d { for i in 0..<(m * n) { c[i] = d[i] + c[i] } }
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
    private static func softmaxGradRows<T: BinaryFloatingPoint & Sendable>(p: UnsafePointer<T>, dS: UnsafeMutablePointer<T>,
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

    // MARK: queries and output folded (image-to-token)

    /// residual + out_proj(attention) [B, Nq, C] with the query and output projections folded in,
    /// and what the backward needs when `keep`. x [B, Nq, C] (queries before q_proj), k, v
    /// [B, Nk, I] (projected), qWeight [I, C], qBias [I], outWeight [C, I], outBias [C],
    /// residual [B, Nq, C] or nil. Each output element: residual + (bo + Σ_r P[r, j] V'[r, c]).
    public static func queryFoldedAttentionForward<T: Real & BinaryFloatingPoint & Sendable>(
        x: [T], k: [T], v: [T], qWeight: [T], qBias: [T], outWeight: [T], outBias: [T], residual: [T]?,
        _ g: FoldedAttentionGeometry, keep: Bool
    ) -> (out: [T], saved: FoldedAttentionSaved<T>?) {
        let (nq, nk, c, d, r, inner) = (g.nq, g.nk, g.channels, g.headDim, g.keyRows, g.inner)
        precondition(residual == nil || residual!.count == x.count,
                     "queryFoldedAttentionForward: residual has \(residual!.count) values, not \(x.count)")
        var out = unfilledArray(T.self, x.count)
        var kq = unfilledArray(T.self, g.batch * r * c), vo = unfilledArray(T.self, g.batch * r * c)
        var probs = unfilledArray(T.self, g.batch * r * nq)
        var kb = [T](repeating: 0, count: r)
        x.withUnsafeBufferPointer { xp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
        qWeight.withUnsafeBufferPointer { qw in qBias.withUnsafeBufferPointer { qb in
        outWeight.withUnsafeBufferPointer { ow in outBias.withUnsafeBufferPointer { ob in
        (residual ?? []).withUnsafeBufferPointer { rp in
        out.withUnsafeMutableBufferPointer { op in kq.withUnsafeMutableBufferPointer { kqp in
        vo.withUnsafeMutableBufferPointer { vop in probs.withUnsafeMutableBufferPointer { pp in
        kb.withUnsafeMutableBufferPointer { kbp in
            for b in 0..<g.batch {
                let xB = xp.baseAddress! + b * nq * c, kB = kp.baseAddress! + b * nk * inner
                let vB = vp.baseAddress! + b * nk * inner, oB = op.baseAddress! + b * nq * c
                let kqB = kqp.baseAddress! + b * r * c, voB = vop.baseAddress! + b * r * c
                let pB = pp.baseAddress! + b * r * nq
                // K'_h = k_h Wq_h, kb_h = k_h · bq_h, V'_h = v_h Wo_hᵀ.
                foldSmallSide(kB, rows: nk, weight: qw.baseAddress!, bias: qb.baseAddress!, g,
                              folded: kqB, rowBias: kbp.baseAddress!)
                for h in 0..<g.heads {
                    gemmGeneric(transA: false, transB: true, m: nk, n: c, k: d, a: vB + h * d, lda: inner,
                                b: ow.baseAddress! + h * d, ldb: inner, c: voB + h * nk * c, ldc: c, accumulate: false)
                }
                // P = softmax over each head's keys of (K' xᵀ + kb) / s, key-major.
                gemmGeneric(transA: false, transB: true, m: r, n: nq, k: c, a: kqB, lda: c, b: xB, ldb: c,
                            c: pB, ldc: nq, accumulate: false)
                keyMajorSoftmax(pB, heads: g.heads, keys: nk, queries: nq, rowBias: kbp.baseAddress!, scale: T(g.scale))
                // out = residual + (bo + Pᵀ V')
                let res = residual == nil ? nil : rp.baseAddress.map { $0 + b * nq * c }
                transposedProduct(m: nq, n: c, k: r, a: pB, lda: nq, b: voB, bias: ob.baseAddress!, adding: res, c: oB)
            }
        }}}}}}}}}}}}}
        return (out, keep ? FoldedAttentionSaved(qk: kq, probs: probs, pv: vo) : nil)
    }

    /// Gradients of `queryFoldedAttentionForward` from dOut [B, Nq, C]: dx (nil unless asked;
    /// addX + own when `addX` is given, Float adding as the GEMM stores), dk (addK + own when
    /// given), dv, dqWeight, dqBias, doutWeight, doutBias (the residual's gradient is dOut
    /// itself). Per batch:
    ///   dPᵀ = V' dOutᵀ;  dV' = P dOut;  dL = grouped softmax backward / s;  dkb = Σ_j dL
    ///   dx = dLᵀ K';  dK' = dL x;  dk_h = dK'_h Wq_hᵀ + dkb_h bq_h;  dWq_h += k_hᵀ dK'_h;
    ///   dbq_h += k_hᵀ dkb_h;  dv_h = dV'_h Wo_h;  dWo_h += dV'_hᵀ v_h;  dbo = Σ dOut (Double, row order)
    public static func queryFoldedAttentionBackward<T: Real & BinaryFloatingPoint & Sendable>(
        _ dOut: [T], x: [T], k: [T], v: [T], qWeight: [T], qBias: [T], outWeight: [T],
        saved: FoldedAttentionSaved<T>, _ g: FoldedAttentionGeometry, needX: Bool, addX: [T]? = nil, addK: [T]? = nil
    ) -> (dx: [T]?, dk: [T], dv: [T], dqWeight: [T], dqBias: [T], doutWeight: [T], doutBias: [T]) {
        let (nq, nk, c, d, r, inner) = (g.nq, g.nk, g.channels, g.headDim, g.keyRows, g.inner)
        precondition(addX == nil || addX!.count == x.count, "queryFoldedAttentionBackward: addX has \(addX!.count) values, not \(x.count)")
        var dx = needX ? unfilledArray(T.self, x.count) : []
        var dk = unfilledArray(T.self, k.count), dv = unfilledArray(T.self, v.count)
        var dqW = [T](repeating: 0, count: inner * c), dqB = [T](repeating: 0, count: inner)
        var doW = [T](repeating: 0, count: c * inner)
        var dL = unfilledArray(T.self, r * nq)
        var dvo = unfilledArray(T.self, r * c), dkq = unfilledArray(T.self, r * c)
        var dkb = [T](repeating: 0, count: r)
        let scale = T(g.scale)
        dOut.withUnsafeBufferPointer { gp in x.withUnsafeBufferPointer { xp in k.withUnsafeBufferPointer { kp in
        v.withUnsafeBufferPointer { vp in qWeight.withUnsafeBufferPointer { qw in qBias.withUnsafeBufferPointer { qb in
        outWeight.withUnsafeBufferPointer { ow in saved.qk.withUnsafeBufferPointer { kqp in
        saved.probs.withUnsafeBufferPointer { pp in saved.pv.withUnsafeBufferPointer { vop in
        dx.withUnsafeMutableBufferPointer { dxp in dk.withUnsafeMutableBufferPointer { dkp in
        dv.withUnsafeMutableBufferPointer { dvp in dqW.withUnsafeMutableBufferPointer { dqWp in
        dqB.withUnsafeMutableBufferPointer { dqBp in doW.withUnsafeMutableBufferPointer { doWp in
        dL.withUnsafeMutableBufferPointer { dLp in dvo.withUnsafeMutableBufferPointer { dvop in
        dkq.withUnsafeMutableBufferPointer { dkqp in dkb.withUnsafeMutableBufferPointer { dkbp in
        (addX ?? []).withUnsafeBufferPointer { axp in
            let dLB = dLp.baseAddress!, dvoB = dvop.baseAddress!, dkqB = dkqp.baseAddress!
            let addXp = addX == nil ? nil : axp.baseAddress
            for b in 0..<g.batch {
                let gB = gp.baseAddress! + b * nq * c, xB = xp.baseAddress! + b * nq * c
                let kB = kp.baseAddress! + b * nk * inner, vB = vp.baseAddress! + b * nk * inner
                let kqB = kqp.baseAddress! + b * r * c, pB = pp.baseAddress! + b * r * nq
                let voB = vop.baseAddress! + b * r * c
                // dPᵀ = V' dOutᵀ (into dL); dV' = P dOut
                gemmGeneric(transA: false, transB: true, m: r, n: nq, k: c, a: voB, lda: c, b: gB, ldb: c,
                            c: dLB, ldc: nq, accumulate: false)
                gemmGeneric(transA: false, transB: false, m: r, n: c, k: nq, a: pB, lda: nq, b: gB, ldb: c,
                            c: dvoB, ldc: c, accumulate: false)
                // dL = P ⊙ (dP − Σ_i P⊙dP) per head and query, then / s; dkb = Σ_j dL
                keyMajorSoftmaxBackward(p: pB, dS: dLB, heads: g.heads, keys: nk, queries: nq)
                divideRowsSumming(dLB, rows: r, n: nq, by: scale, sums: dkbp.baseAddress!)
                // dx = dLᵀ K' (+ addX); dK' = dL x
                if needX {
                    transposedProduct(m: nq, n: c, k: r, a: dLB, lda: nq, b: kqB, adding: addXp.map { $0 + b * nq * c },
                                      c: dxp.baseAddress! + b * nq * c)
                }
                gemmGeneric(transA: false, transB: false, m: r, n: c, k: nq, a: dLB, lda: nq, b: xB, ldb: c,
                            c: dkqB, ldc: c, accumulate: false)
                // dk_h = dK'_h Wq_hᵀ + dkb_h bq_h; dWq_h += k_hᵀ dK'_h; dbq_h += k_hᵀ dkb_h
                foldSmallSideBackward(kB, rows: nk, weight: qw.baseAddress!, bias: qb.baseAddress!, g,
                                      dFolded: dkqB, dRowBias: dkbp.baseAddress!, dSmall: dkp.baseAddress! + b * nk * inner,
                                      dWeight: dqWp.baseAddress!, dBias: dqBp.baseAddress!, accumulate: b > 0)
                for h in 0..<g.heads {
                    // dv_h = dV'_h Wo_h; dWo_h += dV'_hᵀ v_h
                    gemmGeneric(transA: false, transB: false, m: nk, n: d, k: c, a: dvoB + h * nk * c, lda: c,
                                b: ow.baseAddress! + h * d, ldb: inner, c: dvp.baseAddress! + b * nk * inner + h * d,
                                ldc: inner, accumulate: false)
                    gemmGeneric(transA: true, transB: false, m: c, n: d, k: nk, a: dvoB + h * nk * c, lda: c,
                                b: vB + h * d, ldb: inner, c: doWp.baseAddress! + h * d, ldc: inner, accumulate: b > 0)
                }
            }
        }}}}}}}}}}}}}}}}}}}}}
        if let addK {
            precondition(addK.count == k.count, "queryFoldedAttentionBackward: addK has \(addK.count) values, not \(k.count)")
            for i in 0..<dk.count { dk[i] = addK[i] + dk[i] }
        }
        let doB = sum(dOut, [g.batch * nq, c], dims: [0], keepDim: false).0
        return (needX ? dx : nil, dk, dv, dqW, dqB, doW, doB)
    }

    /// Rows x[i] /= s (n values each), with sums[i] = Σ_j of the quotients in Double (Float:
    /// `divideRowSummingFloat`'s order; else j order); rows split over the threads.
    private static func divideRowsSumming<T: BinaryFloatingPoint & Sendable>(_ x: UnsafeMutablePointer<T>, rows: Int, n: Int, by s: T,
                                                                   sums: UnsafeMutablePointer<T>) {
        let xs = SendablePointer(x), out = SendablePointer(sums)
        Parallel.forEach(rows, grain: 4) { row in
            let xr = xs.base + row * n
            if T.self == Float.self {
                out[row] = T(divideRowSummingFloat(UnsafeMutableRawPointer(xr).assumingMemoryBound(to: Float.self), n,
                                                   by: Float(s)))
            } else {
                var total = 0.0
                for j in 0..<n {
                    xr[j] = xr[j] / s
                    total += Double(xr[j])
                }
                out[row] = T(total)
            }
        }
    }

    /// In place on key-major logits x [heads·keys, queries] (row h·keys + i): for each head h and
    /// query j, softmax over the head's `keys` rows of (x + rowBias[row]) / scale, as
    /// `softmaxRowInPlace` computes a row: the maximum, e = exp(v − max) (`expFloat`), the sum in
    /// Double in key order, e · (1 / sum); NaN anywhere makes the column NaN. Float: 16 queries
    /// per vector (`expFloat16`, the same bits per lane), split over the threads by query blocks.
    static func keyMajorSoftmax<T: Real & BinaryFloatingPoint & Sendable>(_ x: UnsafeMutablePointer<T>, heads: Int, keys: Int,
                                                                          queries: Int, rowBias: UnsafePointer<T>, scale: T) {
        let xs = SendablePointer(x), bias = SendableConstPointer(rowBias)
        let blocks = (queries + 15) / 16
        Parallel.forEach(heads * blocks, grain: 4) { unit in
            let h = unit / blocks, j0 = (unit % blocks) * 16, w = Swift.min(16, queries - j0)
            let base = xs.base + h * keys * queries + j0
            if T.self == Float.self && w == 16 {
                typealias V = SIMD16<Float>
                let raw = UnsafeMutableRawPointer(base), stride = queries * 4, s = V(repeating: Float(scale))
                var m = V(repeating: -.infinity)
                var nanLanes = SIMD16<Int32>()
                for i in 0..<keys {
                    let e = (raw.loadUnaligned(fromByteOffset: i * stride, as: V.self)
                             + V(repeating: Float(bias[h * keys + i]))) / s
                    raw.storeBytes(of: e, toByteOffset: i * stride, as: V.self)
                    nanLanes.replace(with: 1, where: e .!= e)
                    m = m.replacing(with: e, where: m .< e)
                }
                var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
                for i in 0..<keys {
                    let e = expFloat16(raw.loadUnaligned(fromByteOffset: i * stride, as: V.self) - m)
                    raw.storeBytes(of: e, toByteOffset: i * stride, as: V.self)
                    s0 += flmm_widen8(e.lowHalf)
                    s1 += flmm_widen8(e.highHalf)
                }
                let one = SIMD8<Double>(repeating: 1)
                var inv = V(lowHalf: flmm_narrow8(one / s0), highHalf: flmm_narrow8(one / s1))
                inv.replace(with: .nan, where: nanLanes .!= 0)
                for i in 0..<keys {
                    raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: i * stride, as: V.self) * inv,
                                   toByteOffset: i * stride, as: V.self)
                }
                return
            }
            // A column at a time (the tail of Float, and other scalars).
            let col = UnsafeMutablePointer<T>.allocate(capacity: keys)
            defer { col.deallocate() }
            for jj in 0..<w {
                for i in 0..<keys { col[i] = (base[i * queries + jj] + bias[h * keys + i]) / scale }
                softmaxRowInPlace(col, keys)
                for i in 0..<keys { base[i * queries + jj] = col[i] }
            }
        }
    }

    /// The backward of `keyMajorSoftmax` (before its scaling): dS = P ⊙ (dP − Σ_i dP⊙P) per head
    /// and query, over the head's `keys` rows (dS holds dP on entry), each sum in Double in key
    /// order and each element Float(Double(p)·(Double(dP) − s)), as `softmaxGradRowsFloat`.
    static func keyMajorSoftmaxBackward<T: BinaryFloatingPoint & Sendable>(p: UnsafePointer<T>, dS: UnsafeMutablePointer<T>, heads: Int,
                                                                keys: Int, queries: Int) {
        let ps = SendableConstPointer(p), ds = SendablePointer(dS)
        let blocks = (queries + 15) / 16
        Parallel.forEach(heads * blocks, grain: 4) { unit in
            let h = unit / blocks, j0 = (unit % blocks) * 16, w = Swift.min(16, queries - j0)
            let off = h * keys * queries + j0
            if T.self == Float.self && w == 16 {
                typealias V = SIMD16<Float>
                let pr = UnsafeRawPointer(ps.base + off), dr = UnsafeMutableRawPointer(ds.base + off), stride = queries * 4
                var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
                for i in 0..<keys {
                    let d = dr.loadUnaligned(fromByteOffset: i * stride, as: V.self)
                    let q = pr.loadUnaligned(fromByteOffset: i * stride, as: V.self)
                    s0 += flmm_widen8(d.lowHalf) * flmm_widen8(q.lowHalf)
                    s1 += flmm_widen8(d.highHalf) * flmm_widen8(q.highHalf)
                }
                for i in 0..<keys {
                    let d = dr.loadUnaligned(fromByteOffset: i * stride, as: V.self)
                    let q = pr.loadUnaligned(fromByteOffset: i * stride, as: V.self)
                    let lo = flmm_narrow8(flmm_widen8(q.lowHalf) * (flmm_widen8(d.lowHalf) - s0))
                    let hi = flmm_narrow8(flmm_widen8(q.highHalf) * (flmm_widen8(d.highHalf) - s1))
                    dr.storeBytes(of: V(lowHalf: lo, highHalf: hi), toByteOffset: i * stride, as: V.self)
                }
                return
            }
            for jj in 0..<w {
                var s = 0.0
                for i in 0..<keys { s += Double(ds.base[off + i * queries + jj]) * Double(ps.base[off + i * queries + jj]) }
                for i in 0..<keys {
                    let e = off + i * queries + jj
                    ds.base[e] = T(Double(ps.base[e]) * (Double(ds.base[e]) - s))
                }
            }
        }
    }
}
