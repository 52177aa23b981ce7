// Fused causal multi-head self-attention (TinyVLM's decoder blocks), forward and backward, on
// the packed [T, 3·NH·d] layout a fused qkv projection gives: row t holds q_t (columns
// 0 ..< NH·d), k_t (NH·d ..< 2·NH·d) and v_t (2·NH·d ..< 3·NH·d), head h being columns
// h·d ..< (h+1)·d of each third. No head is copied out; strided GEMMs read it in place.
//
// Per head h and block of query rows r0 ..< r0+R (keys 0 ..< r0+R, the only ones they can see):
//   S = (Q_h · s) K_hᵀ                     (s = 1/√d applied to q, as `(q * scale) @ kᵀ`)
//   P[i, j] = softmax over j ≤ i of S[i, j], and exactly 0 for j > i (the −∞ causal mask)
//   O_h = P V_h
// Softmax per row over its i+1 visible logits: `Kernels.softmaxRowInPlace` (max; e = exp(x − m)
// with `expFloat16`/`expFloat` for Float; Σ in Double over fixed lanes; y = e · (1/Σ)).
// Backward per head, blocks in order (sums in Double for the softmax, k order in the GEMMs):
//   dV_h += Pᵀ dO_h;  dP = dO_h V_hᵀ;  dS = P ⊙ (dP − Σ_j dP ⊙ P);
//   dQ_h = (dS K_h) · s;  dK_h += dSᵀ (Q_h · s)
// Only the visible (lower-triangular) part of each block is computed; P is 0 elsewhere, so the
// masked positions contribute nothing, exactly as with an added −∞ mask.
//
// Parallelism (bitwise identical for any thread count): the forward splits (head, row block)
// units, each writing its own rows and head columns of O and of P; the backward splits heads,
// each accumulating its dK_h, dV_h over its row blocks in order. GEMMs inside a unit run on
// one thread.

import RealModule

/// Shapes of a fused causal self-attention over one sequence.
public struct CausalAttentionGeometry: Sendable, Equatable {
    /// T: tokens.
    public var tokens: Int
    /// NH: heads.
    public var heads: Int
    /// d: head dim.
    public var headDim: Int

    public init(tokens: Int, heads: Int, headDim: Int) {
        self.tokens = tokens
        self.heads = heads
        self.headDim = headDim
    }

    /// NH·d: the width of q, k, v and of the output.
    public var width: Int { heads * headDim }
    /// Query rows per block.
    var blockRows: Int { 64 }
    /// The query scale 1/√d (Float, as the forward applies it).
    var scale: Float { Float(1 / Double(headDim).squareRoot()) }
}

extension Kernels {
    /// O [T, NH·d] and P [NH, T, T] (0 above the diagonal) of the fused causal attention on
    /// qkv [T, 3·NH·d].
    public static func causalAttentionForward<T: Real & BinaryFloatingPoint & Sendable>(
        qkv: [T], _ g: CausalAttentionGeometry
    ) -> (out: [T], probs: [T]) {
        let n = g.tokens, w = g.width, d = g.headDim, ld = 3 * w
        precondition(qkv.count == n * ld, "causalAttentionForward: qkv has \(qkv.count) elements, [\(n), \(ld)] expected")
        var out = [T](repeating: 0, count: n * w)
        var probs = [T](repeating: 0, count: g.heads * n * n)
        if n == 0 || w == 0 { return (out, probs) }
        let br = g.blockRows
        let blocks = (n + br - 1) / br
        let s = T(g.scale)
        qkv.withUnsafeBufferPointer { xb in out.withUnsafeMutableBufferPointer { ob in probs.withUnsafeMutableBufferPointer { pb in
            let xp = SendableConstPointer(xb.baseAddress!), op = SendablePointer(ob.baseAddress!)
            let pp = SendablePointer(pb.baseAddress!)
            Parallel.forEach(g.heads * blocks, grain: 1) { unit in
                let h = unit / blocks, blk = unit % blocks
                let r0 = blk * br, rows = Swift.min(br, n - r0), keys = r0 + rows
                let qs = UnsafeMutablePointer<T>.allocate(capacity: rows * d)
                defer { qs.deallocate() }
                for i in 0..<rows { for c in 0..<d { qs[i * d + c] = xp.base[(r0 + i) * ld + h * d + c] * s } }
                // Logits straight into P's rows of this block (row stride T).
                let p = pp.base + (h * n + r0) * n
                gemmGeneric(transA: false, transB: true, m: rows, n: keys, k: d, a: qs, lda: d,
                            b: xp.base + w + h * d, ldb: ld, c: p, ldc: n, accumulate: false, threads: 1)
                for i in 0..<rows {
                    let row = p + i * n, visible = r0 + i + 1
                    softmaxRowInPlace(row, visible)
                    for j in visible..<keys { row[j] = 0 }
                }
                gemmGeneric(transA: false, transB: false, m: rows, n: d, k: keys, a: p, lda: n,
                            b: xp.base + 2 * w + h * d, ldb: ld, c: op.base + r0 * w + h * d, ldc: w,
                            accumulate: false, threads: 1)
            }
        }}}
        return (out, probs)
    }

    /// d(qkv) [T, 3·NH·d] from dO [T, NH·d], the input qkv and the forward's probabilities P.
    public static func causalAttentionBackward<T: Real & BinaryFloatingPoint & Sendable>(
        _ dO: [T], qkv: [T], probs: [T], _ g: CausalAttentionGeometry
    ) -> [T] {
        let n = g.tokens, w = g.width, d = g.headDim, ld = 3 * w
        precondition(dO.count == n * w && qkv.count == n * ld && probs.count == g.heads * n * n,
                     "causalAttentionBackward: dO \(dO.count), qkv \(qkv.count), probs \(probs.count) do not fit \(g)")
        var dx = [T](repeating: 0, count: n * ld)
        if n == 0 || w == 0 { return dx }
        let br = g.blockRows
        let s = T(g.scale)
        dO.withUnsafeBufferPointer { gb in qkv.withUnsafeBufferPointer { xb in probs.withUnsafeBufferPointer { pb in
        dx.withUnsafeMutableBufferPointer { db in
            let gp = SendableConstPointer(gb.baseAddress!), xp = SendableConstPointer(xb.baseAddress!)
            let pp = SendableConstPointer(pb.baseAddress!), dp = SendablePointer(db.baseAddress!)
            Parallel.forEach(g.heads, grain: 1) { h in
                let dS = UnsafeMutablePointer<T>.allocate(capacity: br * n)
                let qs = UnsafeMutablePointer<T>.allocate(capacity: br * d)
                defer { dS.deallocate(); qs.deallocate() }
                let q = xp.base + h * d, k = xp.base + w + h * d, v = xp.base + 2 * w + h * d
                let dq = dp.base + h * d, dk = dp.base + w + h * d, dv = dp.base + 2 * w + h * d
                var r0 = 0
                while r0 < n {
                    let rows = Swift.min(br, n - r0), keys = r0 + rows
                    let p = pp.base + (h * n + r0) * n
                    let go = gp.base + r0 * w + h * d
                    // dV_h[0..<keys] += Pᵀ dO_h (dV starts at 0).
                    gemmGeneric(transA: true, transB: false, m: keys, n: d, k: rows, a: p, lda: n,
                                b: go, ldb: w, c: dv, ldc: ld, accumulate: true, threads: 1)
                    // dP = dO_h V_hᵀ; dS = P ⊙ (dP − Σ dP ⊙ P) over the visible keys.
                    gemmGeneric(transA: false, transB: true, m: rows, n: keys, k: d, a: go, lda: w,
                                b: v, ldb: ld, c: dS, ldc: keys, accumulate: false, threads: 1)
                    for i in 0..<rows {
                        let pr = p + i * n, dr = dS + i * keys, visible = r0 + i + 1
                        var acc = 0.0
                        for j in 0..<visible { acc += Double(dr[j]) * Double(pr[j]) }
                        for j in 0..<visible { dr[j] = T(Double(pr[j]) * (Double(dr[j]) - acc)) }
                        for j in visible..<keys { dr[j] = 0 }
                    }
                    // dQ_h = (dS K_h) · s, through qs.
                    gemmGeneric(transA: false, transB: false, m: rows, n: d, k: keys, a: dS, lda: keys,
                                b: k, ldb: ld, c: qs, ldc: d, accumulate: false, threads: 1)
                    for i in 0..<rows { for c in 0..<d { dq[(r0 + i) * ld + c] = qs[i * d + c] * s } }
                    // dK_h[0..<keys] += dSᵀ (Q_h · s).
                    for i in 0..<rows { for c in 0..<d { qs[i * d + c] = q[(r0 + i) * ld + c] * s } }
                    gemmGeneric(transA: true, transB: false, m: keys, n: d, k: rows, a: dS, lda: keys,
                                b: qs, ldb: d, c: dk, ldc: ld, accumulate: true, threads: 1)
                    r0 += rows
                }
            }
        }}}}
        return dx
    }
}
