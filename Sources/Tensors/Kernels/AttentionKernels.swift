// Fused multi-head attention (SAM's two-way transformer and image encoder), forward and
// backward, on the [B, N, NH·d] layout: head h is columns h·d ..< (h+1)·d of every row, so no
// head is ever copied out (strided GEMMs read it in place).
//
// Dimension letters: B batch, NH heads, Nq queries, Nk keys, dk query/key head dim, dv value
// head dim, R rows of a query block; with a relative-position bias the queries form a
// (qh, qw) grid and the keys a (kh, kw) grid.
//
// Per (b, h) and block of query rows:
//   S = Q_h K_hᵀ / s                (scale .divide(s): SAM's transformer.Attention)
//   S = (Q_h · s) K_hᵀ              (scale .multiplyQuery(s): the image encoder's Attention)
//   S[(i, j), (k, l)] += relH[(i, j), k], then += relW[(i, j), l]   (optional)
//     relH[(i, j), k] = Σ_c Q_h[(i, j), c] Rh[i, k, c],  relW[(i, j), l] = Σ_c Q_h[(i, j), c] Rw[j, l, c]
//     (from the unscaled Q, as SAM's add_decomposed_rel_pos)
//   P = softmax_rows(S); O_h = P V_h
// Softmax per row: m = max; e = exp(x − m); sum in Double in a fixed order; y = e · (1 / sum)
// (PyTorch's vectorised softmax also multiplies by the reciprocal). Float rows run 16 lanes at a
// time with `Kernels.expFloat16` (the polynomial `expFloat` on SIMD16, the same bits per lane);
// other scalars `T.exp`.
//
// Parallelism (bitwise identical for any thread count): the forward splits (b, h, row block)
// units, each writing its own rows and head columns of O (and of P when kept); the backward
// splits (b, h) units, each accumulating dK_h, dV_h over its row blocks in order; the
// relative-position tables' gradients are per-unit partials summed in unit order afterwards.
// GEMMs inside a unit run on one thread.
// With at most 16 keys (SAM's image-to-token attention) and no bias, Float attention runs the
// short-key kernels instead, forward and backward (Kernels/ShortKeyAttentionKernels.swift): the
// same bits.

import CBLAS
import RealModule

/// How the attention logits are scaled.
public enum AttentionScale: Sendable, Equatable {
    /// (q · k) / s, as `segment_anything.modeling.transformer.Attention` (`attn / math.sqrt(c)`).
    case divide(Float)
    /// (q · s) · k, as the image encoder's Attention (`(q * self.scale) @ k.transpose`).
    case multiplyQuery(Float)
}

/// Shapes of a fused multi-head attention.
public struct AttentionGeometry: Sendable, Equatable {
    public var batch: Int
    public var heads: Int
    public var nq: Int
    public var nk: Int
    public var dk: Int
    public var dv: Int
    public var scale: AttentionScale
    /// Query grid (qh, qw) and key grid (kh, kw) of the decomposed relative-position bias.
    public var relPos: RelPosGrid?

    public struct RelPosGrid: Sendable, Equatable {
        public var qh: Int, qw: Int, kh: Int, kw: Int
        public init(qh: Int, qw: Int, kh: Int, kw: Int) {
            self.qh = qh; self.qw = qw; self.kh = kh; self.kw = kw
        }
    }

    public init(batch: Int, heads: Int, nq: Int, nk: Int, dk: Int, dv: Int, scale: AttentionScale,
                relPos: RelPosGrid? = nil) {
        self.batch = batch; self.heads = heads; self.nq = nq; self.nk = nk; self.dk = dk; self.dv = dv
        self.scale = scale; self.relPos = relPos
    }

    /// Row lengths of Q/K and of V/O.
    public var iq: Int { heads * dk }
    public var iv: Int { heads * dv }
    /// Query rows per block: a block's logits stay near 512K elements (2 MB of Float).
    public var blockRows: Int { Swift.max(1, Swift.min(nq, (1 << 19) / Swift.max(nk, 1))) }
}

extension Kernels {
    // MARK: exp

    static let expHi: Float = 88.72283, expLo: Float = -87.33654

    /// e^x for Float, written so that loops over it vectorise (no calls, no traps, selects
    /// only): x clamped to [−87.34, 88.72] (below: 0, above: +inf, NaN stays NaN);
    /// n = round(x·log₂e); r = x − n·ln2 (ln2 in two parts, FMA); e^r = 1 + r + r²·P(r) with
    /// Cephes' degree-5 P; times 2^⌊n/2⌋ · 2^(n − ⌊n/2⌋). About 1 ulp.
    @inline(__always)
    public static func expFloat(_ x: Float) -> Float {
        let xc = Swift.min(Swift.max(x, expLo), expHi)
        let n = (xc * 1.44269504088896341).rounded(.toNearestOrEven)
        var r = xc.addingProduct(n, -0.693359375)
        r = r.addingProduct(n, 2.12194440e-4)
        var p: Float = 1.9875691500e-4
        p = Float(1.3981999507e-3).addingProduct(p, r)
        p = Float(8.3334519073e-3).addingProduct(p, r)
        p = Float(4.1665795894e-2).addingProduct(p, r)
        p = Float(1.6666665459e-1).addingProduct(p, r)
        p = Float(5.0000001201e-1).addingProduct(p, r)
        var y = r.addingProduct(p, r * r) + 1
        // n (an integer-valued float in [−126, 128]) as an Int32: adding 1.5·2²³ puts it in the
        // low mantissa bits.
        let ni = Int32(bitPattern: (n + 12582912).bitPattern &- 0x4B40_0000)
        let a = ni &>> 1, b = ni &- a
        y = y * Float(bitPattern: UInt32(bitPattern: (a &+ 127) &<< 23))
        y = y * Float(bitPattern: UInt32(bitPattern: (b &+ 127) &<< 23))
        y = x < expLo ? 0 : y
        y = x > expHi ? .infinity : y
        return x != x ? x : y
    }

    // MARK: softmax of a row

    /// In-place softmax of `n` contiguous values (see the file header).
    @inline(__always)
    static func softmaxRowInPlace<T: Real & BinaryFloatingPoint>(_ x: UnsafeMutablePointer<T>, _ n: Int) {
        if T.self == Float.self {
            softmaxRowFloat(UnsafeMutableRawPointer(x).assumingMemoryBound(to: Float.self), n)
            return
        }
        var m = x[0]
        for j in 1..<n where x[j] > m || x[j].isNaN { m = x[j] }
        var s = 0.0
        for j in 0..<n {
            let e = T.exp(x[j] - m)
            x[j] = e
            s += Double(e)
        }
        let inv = T(1 / s)
        for j in 0..<n { x[j] *= inv }
    }

    /// `expFloat` on 16 lanes at once: the same operations in the same order on each lane, so
    /// every lane has the bits of the scalar function (written with SIMD16 because the
    /// compiler's own vectorisation of the scalar loop stops at 8 lanes on AVX-512 targets).
    @inline(__always)
    public static func expFloat16(_ x: SIMD16<Float>) -> SIMD16<Float> {
        typealias V = SIMD16<Float>
        // Clamped as Swift.min(Swift.max(x, lo), hi) (NaN stays NaN); the stdlib's generic
        // pointwiseMin/Max are not inlined.
        let lo = V(repeating: expLo), hi = V(repeating: expHi)
        var xc = x.replacing(with: lo, where: x .< lo)
        xc = xc.replacing(with: hi, where: hi .< xc)
        let n = (xc * V(repeating: 1.44269504088896341)).rounded(.toNearestOrEven)
        var r = xc.addingProduct(n, V(repeating: -0.693359375))
        r = r.addingProduct(n, V(repeating: 2.12194440e-4))
        var p = V(repeating: 1.9875691500e-4)
        p = V(repeating: 1.3981999507e-3).addingProduct(p, r)
        p = V(repeating: 8.3334519073e-3).addingProduct(p, r)
        p = V(repeating: 4.1665795894e-2).addingProduct(p, r)
        p = V(repeating: 1.6666665459e-1).addingProduct(p, r)
        p = V(repeating: 5.0000001201e-1).addingProduct(p, r)
        var y = r.addingProduct(p, r * r) + 1
        let ni = unsafeBitCast(n + 12582912, to: SIMD16<Int32>.self) &- 0x4B40_0000
        let a = ni &>> 1, b = ni &- a
        y = y * unsafeBitCast((a &+ 127) &<< 23, to: V.self)
        y = y * unsafeBitCast((b &+ 127) &<< 23, to: V.self)
        y = y.replacing(with: 0, where: x .< lo)
        y = y.replacing(with: .infinity, where: x .> hi)
        return y.replacing(with: x, where: x .!= x)
    }

    /// Float softmax of a row in three passes of 16 lanes (the tail past the last multiple of
    /// 16 scalar): (1) the maximum m, and whether any value is NaN (then the row becomes all
    /// NaN); (2) e = exp(x − m) (`expFloat16`, `expFloat` on the tail), stored, and summed in
    /// Double over 16 fixed lanes (lane l sums elements l, l+16, …), lanes added in order, then
    /// the tail; (3) y = e · Float(1 / sum). The same order on every run.
    public static func softmaxRowFloat(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        typealias V = SIMD16<Float>
        let raw = UnsafeMutableRawPointer(x)
        let nv = n / 16, tail = 16 * nv
        var mv = V(repeating: -.infinity)
        var nanLanes = SIMD16<Int32>()
        for v in 0..<nv {
            let e = raw.loadUnaligned(fromByteOffset: 64 * v, as: V.self)
            nanLanes.replace(with: 1, where: e .!= e)
            mv = mv.replacing(with: e, where: mv .< e)
        }
        var m = mv.max()
        var nan = nanLanes != SIMD16<Int32>()
        for j in tail..<n {
            nan = nan || x[j] != x[j]
            m = Swift.max(m, x[j])
        }
        if nan {
            for j in 0..<n { x[j] = .nan }
            return
        }
        let mV = V(repeating: m)
        var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
        for v in 0..<nv {
            let e = expFloat16(raw.loadUnaligned(fromByteOffset: 64 * v, as: V.self) - mV)
            raw.storeBytes(of: e, toByteOffset: 64 * v, as: V.self)
            s0 += flmm_widen8(e.lowHalf)
            s1 += flmm_widen8(e.highHalf)
        }
        for i in tail..<n { x[i] = expFloat(x[i] - m) }
        var s = 0.0
        for l in 0..<8 { s += s0[l] }
        for l in 0..<8 { s += s1[l] }
        for i in tail..<n { s += Double(x[i]) }
        let inv = Float(1 / s), invV = V(repeating: inv)
        for v in 0..<nv {
            raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: 64 * v, as: V.self) * invV,
                           toByteOffset: 64 * v, as: V.self)
        }
        for i in tail..<n { x[i] *= inv }
    }

    // MARK: forward

    /// O [B, Nq, NH·dv] of the fused attention; also P [B, NH, Nq, Nk] when `keepProbs`.
    /// q [B, Nq, NH·dk], k [B, Nk, NH·dk], v [B, Nk, NH·dv]; rh [qh, kh, dk], rw [qw, kw, dk]
    /// (the gathered relative-position rows) when `g.relPos` is set.
    /// `shortKeys: false` forces the general path where the short-key kernels would run (the
    /// tests compare the two).
    public static func attentionForward<T: Real & BinaryFloatingPoint & Sendable>(
        q: [T], k: [T], v: [T], rh: [T]?, rw: [T]?, _ g: AttentionGeometry, keepProbs: Bool, shortKeys: Bool = true
    ) -> (out: [T], probs: [T]?) {
        precondition(q.count == g.batch * g.nq * g.iq && k.count == g.batch * g.nk * g.iq && v.count == g.batch * g.nk * g.iv,
                     "attentionForward: buffers \(q.count)/\(k.count)/\(v.count) do not fit \(g)")
        let outCount = g.batch * g.nq * g.iv, probCount = keepProbs ? g.batch * g.heads * g.nq * g.nk : 0
        if outCount == 0 || g.nk == 0 {
            return ([T](repeating: 0, count: outCount), keepProbs ? [T](repeating: 0, count: probCount) : nil)
        }
        // Every element of O (and of P) is written below: no zero fill.
        var out = unfilledArray(T.self, outCount)
        var probs = unfilledArray(T.self, probCount)
        if shortKeys && T.self == Float.self && usesShortKeyAttention(g) {
            q.withUnsafeBytes { qb in k.withUnsafeBytes { kb in v.withUnsafeBytes { vb in
            out.withUnsafeMutableBytes { ob in probs.withUnsafeMutableBytes { pb in
                shortKeyAttentionForward(q: qb.baseAddress!.assumingMemoryBound(to: Float.self),
                                         k: kb.baseAddress!.assumingMemoryBound(to: Float.self),
                                         v: vb.baseAddress!.assumingMemoryBound(to: Float.self),
                                         out: ob.baseAddress!.assumingMemoryBound(to: Float.self),
                                         probs: keepProbs ? pb.baseAddress!.assumingMemoryBound(to: Float.self) : nil, g)
            }}}}}
            return (out, keepProbs ? probs : nil)
        }
        let rowsPerBlock = g.blockRows
        let blocks = (g.nq + rowsPerBlock - 1) / rowsPerBlock
        let units = g.batch * g.heads * blocks
        // With several row blocks per head, K transposed once to [batch, heads, dk, Nk]: each
        // block's logits GEMM then packs it with vector copies instead of gathering K's columns
        // again (the same sums in the same order, so the same bits).
        let kT: [T] = blocks > 1 ? permute(k, [g.batch, g.nk, g.heads, g.dk], [0, 2, 3, 1]) : []
        // The relative-position rows transposed to [q, dk, k] for the logits kernel.
        var rhA: [T] = [], rwA: [T] = []
        if let grid = g.relPos, let rh, let rw {
            rhA = permute(rh, [grid.qh, grid.kh, g.dk], [0, 2, 1])
            rwA = permute(rw, [grid.qw, grid.kw, g.dk], [0, 2, 1])
        }
        q.withUnsafeBufferPointer { qb in k.withUnsafeBufferPointer { kb in v.withUnsafeBufferPointer { vb in
        rhA.withUnsafeBufferPointer { rhb in rwA.withUnsafeBufferPointer { rwb in kT.withUnsafeBufferPointer { ktb in
        out.withUnsafeMutableBufferPointer { ob in probs.withUnsafeMutableBufferPointer { pb in
            let qp = SendableConstPointer(qb.baseAddress!), kp = SendableConstPointer(kb.baseAddress!)
            let ktp = kT.isEmpty ? nil : ktb.baseAddress.map { SendableConstPointer($0) }
            let vp = SendableConstPointer(vb.baseAddress!), op = SendablePointer(ob.baseAddress!)
            let rhp = rh == nil ? nil : rhb.baseAddress.map { SendableConstPointer($0) }
            let rwp = rw == nil ? nil : rwb.baseAddress.map { SendableConstPointer($0) }
            let pp = keepProbs ? pb.baseAddress.map { SendablePointer($0) } : nil
            Parallel.forEach(units, grain: 1) { unit in
                let bh = unit / blocks, blk = unit % blocks
                let b = bh / g.heads, h = bh % g.heads
                let r0 = blk * rowsPerBlock, rows = Swift.min(rowsPerBlock, g.nq - r0)
                // The logits and probabilities of this block: in P itself when it is kept.
                let kept = pp.map { $0.base + ((b * g.heads + h) * g.nq + r0) * g.nk }
                let sBuf = kept ?? UnsafeMutablePointer<T>.allocate(capacity: rows * g.nk)
                defer { if kept == nil { sBuf.deallocate() } }
                attentionLogits(qp.base, kp.base, ktp?.base, rhp?.base, rwp?.base, g, b: b, h: h, r0: r0, rows: rows,
                                into: sBuf)
                for i in 0..<rows { softmaxRowInPlace(sBuf + i * g.nk, g.nk) }
                gemmGeneric(transA: false, transB: false, m: rows, n: g.dv, k: g.nk, a: sBuf, lda: g.nk,
                            b: vp.base + b * g.nk * g.iv + h * g.dv, ldb: g.iv,
                            c: op.base + (b * g.nq + r0) * g.iv + h * g.dv, ldc: g.iv, accumulate: false, threads: 1)
            }
        }}}}}}}}
        return (out, keepProbs ? probs : nil)
    }

    /// Logits of rows r0 ..< r0+rows of head h of batch b into `s` [rows, Nk] (scaled, with the
    /// relative-position bias; `rh` [qh, dk, kh] and `rw` [qw, dk, kw] transposed). K is read
    /// from `kT` [batch, heads, dk, Nk] when given, else from `k`.
    @inline(__always)
    static func attentionLogits<T: Real & BinaryFloatingPoint>(
        _ q: UnsafePointer<T>, _ k: UnsafePointer<T>, _ kT: UnsafePointer<T>?,
        _ rh: UnsafePointer<T>?, _ rw: UnsafePointer<T>?,
        _ g: AttentionGeometry, b: Int, h: Int, r0: Int, rows: Int, into s: UnsafeMutablePointer<T>
    ) {
        let qh = q + (b * g.nq + r0) * g.iq + h * g.dk
        // K^T of this head: [dk, Nk] with row stride Nk (kT), or k's columns (stride iq).
        let kh = kT.map { $0 + (b * g.heads + h) * g.dk * g.nk } ?? k + b * g.nk * g.iq + h * g.dk
        let transK = kT == nil, ldk = kT == nil ? g.iq : g.nk
        switch g.scale {
        case .divide(let d):
            gemmGeneric(transA: false, transB: transK, m: rows, n: g.nk, k: g.dk, a: qh, lda: g.iq, b: kh, ldb: ldk,
                        c: s, ldc: g.nk, accumulate: false, threads: 1)
            let dt = T(d)
            for i in 0..<(rows * g.nk) { s[i] = s[i] / dt }
        case .multiplyQuery(let m):
            let qs = UnsafeMutablePointer<T>.allocate(capacity: rows * g.dk)
            defer { qs.deallocate() }
            let mt = T(m)
            for i in 0..<rows { for c in 0..<g.dk { qs[i * g.dk + c] = qh[i * g.iq + c] * mt } }
            gemmGeneric(transA: false, transB: transK, m: rows, n: g.nk, k: g.dk, a: qs, lda: g.dk, b: kh, ldb: ldk,
                        c: s, ldc: g.nk, accumulate: false, threads: 1)
        }
        guard let grid = g.relPos, let rh, let rw else { return }
        // relH[(i, j), k] = q(i, j) · Rh[i, k]; relW[(i, j), l] = q(i, j) · Rw[j, l] (unscaled q),
        // each sum in c order; rh / rw come transposed ([qh, dk, kh], [qw, dk, kw]) so the
        // loops over k and l are contiguous.
        let rel = UnsafeMutablePointer<T>.allocate(capacity: grid.kh + grid.kw)
        defer { rel.deallocate() }
        let relW = rel + grid.kh
        for r in 0..<rows {
            let row = r0 + r
            let i = row / grid.qw, j = row % grid.qw
            let qr = qh + r * g.iq
            rel.update(repeating: 0, count: grid.kh + grid.kw)
            for c in 0..<g.dk {
                let qc = qr[c]
                let th = rh + (i * g.dk + c) * grid.kh, tw = rw + (j * g.dk + c) * grid.kw
                for kk in 0..<grid.kh { rel[kk] = rel[kk].addingProduct(qc, th[kk]) }
                for l in 0..<grid.kw { relW[l] = relW[l].addingProduct(qc, tw[l]) }
            }
            let sr = s + r * g.nk
            for kk in 0..<grid.kh {
                let a = rel[kk], srk = sr + kk * grid.kw
                for l in 0..<grid.kw { srk[l] = (srk[l] + a) + relW[l] }
            }
        }
    }

    // MARK: backward

    /// dS = P ⊙ (dP − Σ_j dP⊙P) for `rows` rows of `n` (row i at i·n; dS holds dP on entry),
    /// each sum in Double in j order and each element as `Float(Double(p)·(Double(dP) − s))`:
    /// the general backward's arithmetic. Sixteen rows at a time (the lanes past the last row
    /// repeat the first and are not used), 16 columns at a time transposed so that each row's
    /// sum is one lane of two SIMD8<Double> chains; a row's last n mod 16 terms, one by one.
    static func softmaxGradRowsFloat(p: UnsafePointer<Float>, dS: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        let tiles = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 64).bindMemory(to: Float.self, capacity: 512)
        let rowPointers = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: 32)
        defer { tiles.deallocate(); rowPointers.deallocate() }
        let tD = tiles, tP = tiles + 256, dRows = rowPointers, pRows = rowPointers + 16
        var r0 = 0
        while r0 < rows {
            let nr = Swift.min(16, rows - r0)
            for lane in 0..<16 {
                let r = r0 + (lane < nr ? lane : 0)
                dRows[lane] = UnsafePointer(dS + r * n)
                pRows[lane] = p + r * n
            }
            var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
            var j0 = 0
            while j0 + 16 <= n {
                flmm_transpose16_rows(dRows, j0, tD, 16)
                flmm_transpose16_rows(pRows, j0, tP, 16)
                for jj in 0..<16 {
                    let d = UnsafeRawPointer(tD + 16 * jj).load(as: SIMD16<Float>.self)
                    let q = UnsafeRawPointer(tP + 16 * jj).load(as: SIMD16<Float>.self)
                    s0 += flmm_widen8(d.lowHalf) * flmm_widen8(q.lowHalf)
                    s1 += flmm_widen8(d.highHalf) * flmm_widen8(q.highHalf)
                }
                j0 += 16
            }
            for i in 0..<nr {
                let pr = p + (r0 + i) * n, dr = dS + (r0 + i) * n
                var s = i < 8 ? s0[i] : s1[i - 8]
                for j in j0..<n { s += Double(dr[j]) * Double(pr[j]) }
                for j in 0..<n { dr[j] = Float(Double(pr[j]) * (Double(dr[j]) - s)) }
            }
            r0 += nr
        }
    }

    /// Gradients of the fused attention from dO [B, Nq, NH·dv] and the kept probabilities P:
    /// dq, dk, dv (same layouts as q, k, v) and, with a relative-position bias, drh, drw.
    /// `shortKeys: false` forces the general path where the short-key kernels would run.
    public static func attentionBackward<T: Real & BinaryFloatingPoint & Sendable>(
        _ dO: [T], q: [T], k: [T], v: [T], rh: [T]?, rw: [T]?, probs: [T], _ g: AttentionGeometry,
        shortKeys: Bool = true
    ) -> (dq: [T], dk: [T], dv: [T], drh: [T]?, drw: [T]?) {
        // With queries and keys, every element of dQ, dK and dV is written below (the first row
        // block of a unit does not accumulate): no zero fill.
        let written = g.nq > 0 && g.nk > 0
        var dq = outputArray(T.self, q.count, writtenWhole: written)
        var dk = outputArray(T.self, k.count, writtenWhole: written)
        var dv = outputArray(T.self, v.count, writtenWhole: written)
        if written && shortKeys && T.self == Float.self && usesShortKeyAttention(g) {
            func f(_ p: UnsafeRawBufferPointer) -> UnsafePointer<Float> { p.baseAddress!.assumingMemoryBound(to: Float.self) }
            func f(_ p: UnsafeMutableRawBufferPointer) -> UnsafeMutablePointer<Float> {
                p.baseAddress!.assumingMemoryBound(to: Float.self)
            }
            dO.withUnsafeBytes { gb in q.withUnsafeBytes { qb in k.withUnsafeBytes { kb in
            v.withUnsafeBytes { vb in probs.withUnsafeBytes { pb in
            dq.withUnsafeMutableBytes { dqb in dk.withUnsafeMutableBytes { dkb in dv.withUnsafeMutableBytes { dvb in
                shortKeyAttentionBackward(dO: f(gb), q: f(qb), k: f(kb), v: f(vb), probs: f(pb),
                                          dq: f(dqb), dk: f(dkb), dv: f(dvb), g)
            }}}}}}}}
            return (dq, dk, dv, nil, nil)
        }
        let grid = g.relPos
        let units = g.batch * g.heads
        let rhCount = grid.map { $0.qh * $0.kh * g.dk } ?? 0, rwCount = grid.map { $0.qw * $0.kw * g.dk } ?? 0
        var drhParts = [T](repeating: 0, count: units * rhCount), drwParts = [T](repeating: 0, count: units * rwCount)
        if g.nq > 0 && g.nk > 0 {
            let rowsPerBlock = g.blockRows
            let rhA = rh ?? [], rwA = rw ?? []
            dO.withUnsafeBufferPointer { gb in q.withUnsafeBufferPointer { qb in k.withUnsafeBufferPointer { kb in
            v.withUnsafeBufferPointer { vb in probs.withUnsafeBufferPointer { pb in
            rhA.withUnsafeBufferPointer { rhb in rwA.withUnsafeBufferPointer { rwb in
            dq.withUnsafeMutableBufferPointer { dqb in dk.withUnsafeMutableBufferPointer { dkb in
            dv.withUnsafeMutableBufferPointer { dvb in
            drhParts.withUnsafeMutableBufferPointer { drhb in drwParts.withUnsafeMutableBufferPointer { drwb in
                let gp = SendableConstPointer(gb.baseAddress!), qp = SendableConstPointer(qb.baseAddress!)
                let kp = SendableConstPointer(kb.baseAddress!), vp = SendableConstPointer(vb.baseAddress!)
                let pp = SendableConstPointer(pb.baseAddress!)
                let rhp = rhb.baseAddress.map { SendableConstPointer($0) }, rwp = rwb.baseAddress.map { SendableConstPointer($0) }
                let dqp = SendablePointer(dqb.baseAddress!), dkp = SendablePointer(dkb.baseAddress!)
                let dvp = SendablePointer(dvb.baseAddress!)
                let drhp = drhb.baseAddress.map { SendablePointer($0) }, drwp = drwb.baseAddress.map { SendablePointer($0) }
                Parallel.forEach(units, grain: 1) { unit in
                    let b = unit / g.heads, h = unit % g.heads
                    let kOff = b * g.nk * g.iq + h * g.dk, vOff = b * g.nk * g.iv + h * g.dv
                    let dS = UnsafeMutablePointer<T>.allocate(capacity: rowsPerBlock * g.nk)
                    let qs = UnsafeMutablePointer<T>.allocate(capacity: rowsPerBlock * g.dk)
                    let dRel = UnsafeMutablePointer<T>.allocate(capacity: grid.map { $0.kh + $0.kw } ?? 1)
                    defer { dS.deallocate(); qs.deallocate(); dRel.deallocate() }
                    var r0 = 0
                    while r0 < g.nq {
                        let rows = Swift.min(rowsPerBlock, g.nq - r0)
                        let p = pp.base + ((b * g.heads + h) * g.nq + r0) * g.nk
                        let gOff = (b * g.nq + r0) * g.iv + h * g.dv
                        let qOff = (b * g.nq + r0) * g.iq + h * g.dk
                        // dV_h += Pᵀ dO_h
                        gemmGeneric(transA: true, transB: false, m: g.nk, n: g.dv, k: rows, a: p, lda: g.nk,
                                    b: gp.base + gOff, ldb: g.iv, c: dvp.base + vOff, ldc: g.iv,
                                    accumulate: r0 > 0, threads: 1)
                        // dP = dO_h V_hᵀ; dS = P ⊙ (dP − Σ dP⊙P)
                        gemmGeneric(transA: false, transB: true, m: rows, n: g.nk, k: g.dv, a: gp.base + gOff, lda: g.iv,
                                    b: vp.base + vOff, ldb: g.iv, c: dS, ldc: g.nk, accumulate: false, threads: 1)
                        if T.self == Float.self {
                            softmaxGradRowsFloat(p: UnsafeRawPointer(p).assumingMemoryBound(to: Float.self),
                                                 dS: UnsafeMutableRawPointer(dS).assumingMemoryBound(to: Float.self),
                                                 rows: rows, n: g.nk)
                        } else {
                            for i in 0..<rows {
                                let pr = p + i * g.nk, dr = dS + i * g.nk
                                var s = 0.0
                                for j in 0..<g.nk { s += Double(dr[j]) * Double(pr[j]) }
                                for j in 0..<g.nk { dr[j] = T(Double(pr[j]) * (Double(dr[j]) - s)) }
                            }
                        }
                        // Relative-position bias: dRelH = Σ_l dS, dRelW = Σ_k dS per row; their
                        // contributions to dQ (unscaled) and to the per-unit table partials.
                        if let grid, let rhp, let rwp, let drhp, let drwp {
                            let drh = drhp.base + unit * rhCount, drw = drwp.base + unit * rwCount
                            for r in 0..<rows {
                                let row = r0 + r
                                let i = row / grid.qw, j = row % grid.qw
                                let dr = dS + r * g.nk
                                for kk in 0..<grid.kh {
                                    var acc = 0.0
                                    for l in 0..<grid.kw { acc += Double(dr[kk * grid.kw + l]) }
                                    dRel[kk] = T(acc)
                                }
                                for l in 0..<grid.kw {
                                    var acc = 0.0
                                    for kk in 0..<grid.kh { acc += Double(dr[kk * grid.kw + l]) }
                                    dRel[grid.kh + l] = T(acc)
                                }
                                let qr = qp.base + qOff + r * g.iq, dqr = dqp.base + qOff + r * g.iq
                                for c in 0..<g.dk {
                                    var acc: T = 0
                                    for kk in 0..<grid.kh { acc = acc.addingProduct(dRel[kk], rhp.base[(i * grid.kh + kk) * g.dk + c]) }
                                    for l in 0..<grid.kw { acc = acc.addingProduct(dRel[grid.kh + l], rwp.base[(j * grid.kw + l) * g.dk + c]) }
                                    dqr[c] = acc
                                }
                                for kk in 0..<grid.kh {
                                    let t = drh + (i * grid.kh + kk) * g.dk
                                    for c in 0..<g.dk { t[c] = t[c].addingProduct(dRel[kk], qr[c]) }
                                }
                                for l in 0..<grid.kw {
                                    let t = drw + (j * grid.kw + l) * g.dk
                                    for c in 0..<g.dk { t[c] = t[c].addingProduct(dRel[grid.kh + l], qr[c]) }
                                }
                            }
                        }
                        // Logits: dQ_h (+)= dS' K_h, dK_h += dS'ᵀ Q'_h with the scale applied as the
                        // forward applied it.
                        let hasRel = grid != nil
                        switch g.scale {
                        case .divide(let d):
                            let dt = T(d)
                            for i in 0..<(rows * g.nk) { dS[i] = dS[i] / dt }
                            gemmGeneric(transA: false, transB: false, m: rows, n: g.dk, k: g.nk, a: dS, lda: g.nk,
                                        b: kp.base + kOff, ldb: g.iq, c: dqp.base + qOff, ldc: g.iq,
                                        accumulate: hasRel, threads: 1)
                            gemmGeneric(transA: true, transB: false, m: g.nk, n: g.dk, k: rows, a: dS, lda: g.nk,
                                        b: qp.base + qOff, ldb: g.iq, c: dkp.base + kOff, ldc: g.iq,
                                        accumulate: r0 > 0, threads: 1)
                        case .multiplyQuery(let m):
                            let mt = T(m)
                            // dQs = dS K_h into qs, then dQ += dQs · s.
                            gemmGeneric(transA: false, transB: false, m: rows, n: g.dk, k: g.nk, a: dS, lda: g.nk,
                                        b: kp.base + kOff, ldb: g.iq, c: qs, ldc: g.dk, accumulate: false, threads: 1)
                            for i in 0..<rows {
                                let dqr = dqp.base + qOff + i * g.iq
                                for c in 0..<g.dk {
                                    let t = qs[i * g.dk + c] * mt
                                    dqr[c] = hasRel ? dqr[c] + t : t
                                }
                            }
                            for i in 0..<rows {
                                for c in 0..<g.dk { qs[i * g.dk + c] = qp.base[qOff + i * g.iq + c] * mt }
                            }
                            gemmGeneric(transA: true, transB: false, m: g.nk, n: g.dk, k: rows, a: dS, lda: g.nk,
                                        b: qs, ldb: g.dk, c: dkp.base + kOff, ldc: g.iq, accumulate: r0 > 0, threads: 1)
                        }
                        r0 += rows
                    }
                }
            }}}}}}}}}}}}
        }
        guard grid != nil else { return (dq, dk, dv, nil, nil) }
        // Sum the per-unit partials of the tables in unit order.
        var drh = [T](repeating: 0, count: rhCount), drw = [T](repeating: 0, count: rwCount)
        for u in 0..<units {
            for i in 0..<rhCount { drh[i] += drhParts[u * rhCount + i] }
            for i in 0..<rwCount { drw[i] += drwParts[u * rwCount + i] }
        }
        return (dq, dk, dv, drh, drw)
    }
}
