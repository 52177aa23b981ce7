// The fused attention for at most 16 keys per head (SAM's image-to-token attention: 4096 image
// queries against a dozen prompt tokens), Float only: one query row at a time with the keys in
// the 16 lanes of a vector, instead of GEMMs whose inner dimension is the key count.
//
// The same operations as the general path (Kernels/AttentionKernels.swift) in the same order,
// so the same bits:
//   logits  S[i, j] = Σ_c Q[i, c]·K[j, c], c in order, FMA from 0; then / s (or Q·s first)
//   softmax m = max_j S[i, j] (any NaN: the row is NaN); e = expFloat(S − m) (`expFloat16`, the
//           same bits per lane); Σ_j e in Double, j in order; P = e · Float(1 / Σ)
//   output  O[i, c] = Σ_j P[i, j]·V[j, c], j in order, FMA from 0
// Rows are moved into and out of lanes by 16 × 16 transposes (`flmm_transpose16`).
// Parallelism: units of (b, block of 256 query rows), each writing its own rows of O and P (all
// heads of a 16-row tile in turn, while the tile's rows of Q and O are in cache).

import CBLAS

extension Kernels {
    /// Whether the short-key kernels compute this attention (Float, Nk ≤ 16, no relative-position bias).
    public static func usesShortKeyAttention(_ g: AttentionGeometry) -> Bool {
        g.nk >= 1 && g.nk <= 16 && g.relPos == nil && g.dk >= 1 && g.dv >= 1
    }

    /// O [B, Nq, NH·dv] (and P [B, NH, Nq, Nk] into `probs` when given) for Nk ≤ 16.
    /// q [B, Nq, NH·dk], k [B, Nk, NH·dk], v [B, Nk, NH·dv].
    static func shortKeyAttentionForward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                         out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>?,
                                         _ g: AttentionGeometry) {
        precondition(usesShortKeyAttention(g), "shortKeyAttentionForward: \(g) has more than 16 keys or a bias")
        typealias V = SIMD16<Float>
        let rowsPerUnit = 256
        let blocks = (g.nq + rowsPerUnit - 1) / rowsPerUnit
        let qp = SendableConstPointer(q), kp = SendableConstPointer(k), vp = SendableConstPointer(v)
        let op = SendablePointer(out), pp = probs.map { SendablePointer($0) }
        Parallel.forEach(g.batch * blocks, grain: 1) { unit in
            let b = unit / blocks, blk = unit % blocks
            let r0 = blk * rowsPerUnit, r1 = Swift.min(g.nq, r0 + rowsPerUnit)
            // Tiles of 16 query rows, one row per lane: qT[c] = Q[rows, c] (scaled first for
            // .multiplyQuery), sP[j] = S, then P, of key j; oT[c] = O[rows, c].
            // Every head's K and V, copied once per unit: kLoc [NH, Nk4, dk] and vLoc [NH, Nk,
            // dv4] (Nk, dv rounded up to 4; zeros past them) for the four-wide register loops.
            let nk4 = (g.nk + 3) / 4 * 4, dv4 = (g.dv + 3) / 4 * 4
            let qT = UnsafeMutablePointer<V>.allocate(capacity: g.dk)
            let sP = UnsafeMutablePointer<V>.allocate(capacity: 16)
            let oT = UnsafeMutablePointer<V>.allocate(capacity: dv4)
            let rowsP = UnsafeMutablePointer<Float>.allocate(capacity: 256)
            let kLoc = UnsafeMutablePointer<Float>.allocate(capacity: g.heads * nk4 * g.dk)
            let vLoc = UnsafeMutablePointer<Float>.allocate(capacity: g.heads * g.nk * dv4)
            defer {
                qT.deallocate(); sP.deallocate(); oT.deallocate(); rowsP.deallocate()
                kLoc.deallocate(); vLoc.deallocate()
            }
            sP.initialize(repeating: V(), count: 16)
            kLoc.initialize(repeating: 0, count: g.heads * nk4 * g.dk)
            vLoc.initialize(repeating: 0, count: g.heads * g.nk * dv4)
            for h in 0..<g.heads {
                for j in 0..<g.nk {
                    (kLoc + (h * nk4 + j) * g.dk).update(from: kp.base + (b * g.nk + j) * g.iq + h * g.dk, count: g.dk)
                    (vLoc + (h * g.nk + j) * dv4).update(from: vp.base + (b * g.nk + j) * g.iv + h * g.dv, count: g.dv)
                }
            }
            let qF = UnsafeMutableRawPointer(qT).assumingMemoryBound(to: Float.self)
            let pF = UnsafeMutableRawPointer(sP).assumingMemoryBound(to: Float.self)
            let oF = UnsafeMutableRawPointer(oT).assumingMemoryBound(to: Float.self)
            var i0 = r0
            while i0 < r1 {
                let lanes = Swift.min(16, r1 - i0)
                // Every head of these rows while their Q and O lines are in cache.
                for h in 0..<g.heads {
                let q0 = qp.base + (b * g.nq + i0) * g.iq + h * g.dk
                let o0 = op.base + (b * g.nq + i0) * g.iv + h * g.dv
                transposeTile(from: q0, g.iq, rows: lanes, columns: g.dk, to: qF)
                if case .multiplyQuery(let m) = g.scale {
                    for c in 0..<g.dk { qT[c] = qT[c] * V(repeating: m) }
                }
                var mx = V(), bad = V()
                // S[j] = Σ_c Q[c]·K[j, c].
                laneDots(qT, depth: g.dk, rows: kLoc + h * nk4 * g.dk, count: g.nk, into: sP)
                for j in 0..<g.nk {
                    var s = sP[j]
                    if case .divide(let d) = g.scale {
                        s = s / V(repeating: d)
                        sP[j] = s
                    }
                    bad = bad.replacing(with: .nan, where: s .!= s)
                    mx = j == 0 ? s : mx.replacing(with: s, where: mx .< s)
                }
                var lo = SIMD8<Double>(), hi = SIMD8<Double>()
                for j in 0..<g.nk {
                    let e = expFloat16(sP[j] - mx)
                    sP[j] = e
                    lo += flmm_widen8(e.lowHalf)
                    hi += flmm_widen8(e.highHalf)
                }
                let inv = V(lowHalf: flmm_narrow8(1 / lo), highHalf: flmm_narrow8(1 / hi))
                for j in 0..<g.nk {
                    sP[j] = sP[j] * inv + bad
                }
                // O[c] = Σ_j P[j]·V[j, c].
                laneCombos(sP, count: g.nk, rows: vLoc + h * g.nk * dv4, dv4, columns: g.dv, scale: nil, into: oT)
                transposeTile(from: oF, 16, rows: g.dv, columns: lanes, to: o0, ld: g.iv)
                if let pp {
                    // P's rows of this tile: one contiguous run of lanes·Nk floats.
                    flmm_transpose16(pF, 16, rowsP, 16)
                    copyRows(from: rowsP, 16, to: pp.base + ((b * g.heads + h) * g.nq + i0) * g.nk, g.nk,
                             rows: lanes, count: g.nk)
                }
                }
                i0 += lanes
            }
        }
    }

    /// dq, dk, dv (the layouts of q, k, v) from dO [B, Nq, NH·dv] and the kept P [B, NH, Nq, Nk],
    /// for Nk ≤ 16: the general backward's sums in its orders.
    ///   dP[i, j] = Σ_c dO[i, c]·V[j, c] (c order); dS = P ⊙ (dP − Σ_j dP⊙P) in Double (j order),
    ///   then / s; dQ[i, c] = Σ_j dS[i, j]·K[j, c] (j order; · s for .multiplyQuery);
    ///   dV[j, c] = Σ_i P[i, j]·dO[i, c] and dK[j, c] = Σ_i dS[i, j]·Q'[i, c] (i order, one row at
    ///   a time; Q' = Q·s for .multiplyQuery). Units: (b, h), each owning its dK, dV rows.
    static func shortKeyAttentionBackward(dO: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                          v: UnsafePointer<Float>, probs: UnsafePointer<Float>,
                                          dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                          dv: UnsafeMutablePointer<Float>, _ g: AttentionGeometry) {
        precondition(usesShortKeyAttention(g), "shortKeyAttentionBackward: \(g) has more than 16 keys or a bias")
        typealias V = SIMD16<Float>
        let gp = SendableConstPointer(dO), qp = SendableConstPointer(q), kp = SendableConstPointer(k)
        let vp = SendableConstPointer(v), pp = SendableConstPointer(probs)
        let dqp = SendablePointer(dq), dkp = SendablePointer(dk), dvp = SendablePointer(dv)
        let nk4 = (g.nk + 3) / 4 * 4, dk4 = (g.dk + 3) / 4 * 4
        Parallel.forEach(g.batch * g.heads, grain: 1) { unit in
            let b = unit / g.heads, h = unit % g.heads
            // vLoc [Nk4, dv]: V_h's rows, zero rows past Nk; kLoc [Nk, dk4]: K_h's rows, zero
            // columns past dk. Tiles of 16 rows, one per lane: pT[j] = P then dS of key j,
            // dPT[j] = dP, dT[c] = dO then dQ of column c; pRows and rows16: P's and dS's rows,
            // 16 × 16 row-major. dVAcc [Nk4, dv] and dKAcc [Nk4, dk] accumulate one query row
            // at a time, in order (rows past Nk are padding, never stored).
            let vLoc = UnsafeMutablePointer<Float>.allocate(capacity: nk4 * g.dv)
            let kLoc = UnsafeMutablePointer<Float>.allocate(capacity: g.nk * dk4)
            let pT = UnsafeMutablePointer<V>.allocate(capacity: 16), dPT = UnsafeMutablePointer<V>.allocate(capacity: 16)
            let dT = UnsafeMutablePointer<V>.allocate(capacity: Swift.max(g.dv, dk4))
            let rows16 = UnsafeMutablePointer<Float>.allocate(capacity: 256)
            let pRows = UnsafeMutablePointer<Float>.allocate(capacity: 256)
            let dVAcc = UnsafeMutablePointer<Float>.allocate(capacity: nk4 * g.dv)
            let dKAcc = UnsafeMutablePointer<Float>.allocate(capacity: nk4 * g.dk)
            let qRow = UnsafeMutablePointer<Float>.allocate(capacity: g.dk)
            defer {
                vLoc.deallocate(); kLoc.deallocate(); pT.deallocate(); dPT.deallocate(); dT.deallocate()
                rows16.deallocate(); pRows.deallocate(); dVAcc.deallocate(); dKAcc.deallocate(); qRow.deallocate()
            }
            vLoc.initialize(repeating: 0, count: nk4 * g.dv)
            kLoc.initialize(repeating: 0, count: g.nk * dk4)
            for j in 0..<g.nk {
                (vLoc + j * g.dv).update(from: vp.base + (b * g.nk + j) * g.iv + h * g.dv, count: g.dv)
                (kLoc + j * dk4).update(from: kp.base + (b * g.nk + j) * g.iq + h * g.dk, count: g.dk)
            }
            pT.initialize(repeating: V(), count: 16)
            dPT.initialize(repeating: V(), count: 16)
            rows16.initialize(repeating: 0, count: 256)
            pRows.initialize(repeating: 0, count: 256)
            dVAcc.initialize(repeating: 0, count: nk4 * g.dv)
            dKAcc.initialize(repeating: 0, count: nk4 * g.dk)
            let pF = UnsafeMutableRawPointer(pT).assumingMemoryBound(to: Float.self)
            let dF = UnsafeMutableRawPointer(dT).assumingMemoryBound(to: Float.self)
            var i0 = 0
            while i0 < g.nq {
                let lanes = Swift.min(16, g.nq - i0)
                let p0 = pp.base + ((b * g.heads + h) * g.nq + i0) * g.nk
                let g0 = gp.base + (b * g.nq + i0) * g.iv + h * g.dv
                // P's rows (contiguous, Nk apart) into pRows, then into lanes.
                copyRows(from: p0, g.nk, to: pRows, 16, rows: lanes, count: g.nk)
                flmm_transpose16(pRows, 16, pF, 16)
                transposeTile(from: g0, g.iv, rows: lanes, columns: g.dv, to: dF)
                // dP[j] = Σ_c dO[c]·V[j, c].
                laneDots(dT, depth: g.dv, rows: vLoc, count: g.nk, into: dPT)
                // dS = P ⊙ (dP − Σ dP⊙P), in Double per lane; then the forward's scale.
                var sLo = SIMD8<Double>(), sHi = SIMD8<Double>()
                for j in 0..<g.nk {
                    let d = dPT[j], p = pT[j]
                    sLo += flmm_widen8(d.lowHalf) * flmm_widen8(p.lowHalf)
                    sHi += flmm_widen8(d.highHalf) * flmm_widen8(p.highHalf)
                }
                for j in 0..<g.nk {
                    let d = dPT[j], p = pT[j]
                    var ds = V(lowHalf: flmm_narrow8(flmm_widen8(p.lowHalf) * (flmm_widen8(d.lowHalf) - sLo)),
                               highHalf: flmm_narrow8(flmm_widen8(p.highHalf) * (flmm_widen8(d.highHalf) - sHi)))
                    if case .divide(let s) = g.scale { ds = ds / V(repeating: s) }
                    pT[j] = ds
                }
                // dQ[c] = Σ_j dS[j]·K[j, c] (· s for .multiplyQuery).
                let m: Float? = { if case .multiplyQuery(let m) = g.scale { return m } else { return nil } }()
                laneCombos(pT, count: g.nk, rows: kLoc, dk4, columns: g.dk, scale: m, into: dT)
                transposeTile(from: dF, 16, rows: g.dk, columns: lanes, to: dqp.base + (b * g.nq + i0) * g.iq + h * g.dk,
                              ld: g.iq)
                // dS back to rows; then dV and dK, one query row at a time in order.
                flmm_transpose16(pF, 16, rows16, 16)
                if g.dv % 16 == 0 && g.dk % 16 == 0 {
                    // Four keys × 16 columns in registers across the tile's rows.
                    var c0 = 0
                    while c0 < g.dv {
                        var j0 = 0
                        while j0 < g.nk {
                            accumulateTile(dVAcc + j0 * g.dv + c0, g.dv, weights: pRows + j0, rows: lanes,
                                           x: g0 + c0, g.iv, scale: nil)
                            j0 += 4
                        }
                        c0 += 16
                    }
                    c0 = 0
                    while c0 < g.dk {
                        var j0 = 0
                        while j0 < g.nk {
                            accumulateTile(dKAcc + j0 * g.dk + c0, g.dk, weights: rows16 + j0, rows: lanes,
                                           x: qp.base + (b * g.nq + i0) * g.iq + h * g.dk + c0, g.iq, scale: m)
                            j0 += 4
                        }
                        c0 += 16
                    }
                } else {
                    for l in 0..<lanes {
                        let gr = g0 + l * g.iv, pr = pRows + l * 16, sr = rows16 + l * 16
                        var qr = qp.base + (b * g.nq + i0 + l) * g.iq + h * g.dk
                        if case .multiplyQuery(let m) = g.scale {
                            for c in 0..<g.dk { qRow[c] = qr[c] * m }
                            qr = UnsafePointer(qRow)
                        }
                        for j in 0..<g.nk {
                            accumulateRow(dVAcc + j * g.dv, pr[j], gr, g.dv)
                            accumulateRow(dKAcc + j * g.dk, sr[j], qr, g.dk)
                        }
                    }
                }
                i0 += lanes
            }
            for j in 0..<g.nk {
                (dvp.base + (b * g.nk + j) * g.iv + h * g.dv).update(from: dVAcc + j * g.dv, count: g.dv)
                (dkp.base + (b * g.nk + j) * g.iq + h * g.dk).update(from: dKAcc + j * g.dk, count: g.dk)
            }
        }
    }

    /// out[j] = Σ_c x[c]·row_j[c] for j < count (rounded up to 4), c ascending from 0 (FMA), with
    /// row_j = rows + j·depth: the lanes of x (16 query rows) against key j. Four keys at a time,
    /// in registers: four independent chains. `rows` holds whole groups of four (zeros past count).
    @inline(__always)
    static func laneDots(_ x: UnsafePointer<SIMD16<Float>>, depth: Int, rows: UnsafePointer<Float>, count: Int,
                         into out: UnsafeMutablePointer<SIMD16<Float>>) {
        typealias V = SIMD16<Float>
        var j0 = 0
        while j0 < count {
            let r0 = rows + j0 * depth, r1 = r0 + depth, r2 = r1 + depth, r3 = r2 + depth
            var a0 = V(), a1 = V(), a2 = V(), a3 = V()
            for c in 0..<depth {
                let xc = x[c]
                a0 = a0.addingProduct(xc, V(repeating: r0[c])); a1 = a1.addingProduct(xc, V(repeating: r1[c]))
                a2 = a2.addingProduct(xc, V(repeating: r2[c])); a3 = a3.addingProduct(xc, V(repeating: r3[c]))
            }
            out[j0] = a0; out[j0 + 1] = a1; out[j0 + 2] = a2; out[j0 + 3] = a3
            j0 += 4
        }
    }

    /// out[c] = (Σ_j x[j]·rows[j·ld + c]) (· scale) for c < columns (rounded up to 4), j ascending
    /// from 0 (FMA): 16 query rows' combinations of the keys' rows. Four columns at a time, in
    /// registers: four independent chains. `rows` holds the columns rounded up to 4 (zeros past).
    @inline(__always)
    static func laneCombos(_ x: UnsafePointer<SIMD16<Float>>, count: Int, rows: UnsafePointer<Float>, _ ld: Int,
                           columns: Int, scale: Float?, into out: UnsafeMutablePointer<SIMD16<Float>>) {
        typealias V = SIMD16<Float>
        var c0 = 0
        while c0 < columns {
            var a0 = V(), a1 = V(), a2 = V(), a3 = V()
            for j in 0..<count {
                let xj = x[j], r = rows + j * ld + c0
                a0 = a0.addingProduct(xj, V(repeating: r[0])); a1 = a1.addingProduct(xj, V(repeating: r[1]))
                a2 = a2.addingProduct(xj, V(repeating: r[2])); a3 = a3.addingProduct(xj, V(repeating: r[3]))
            }
            if let scale {
                let sv = V(repeating: scale)
                a0 = a0 * sv; a1 = a1 * sv; a2 = a2 * sv; a3 = a3 * sv
            }
            out[c0] = a0; out[c0 + 1] = a1; out[c0 + 2] = a2; out[c0 + 3] = a3
            c0 += 4
        }
    }

    /// dst row l = src row l (its first `count` ≤ 16 floats) for l < rows, rows `lds` and `ldd`
    /// apart: one side a 16-float tile, the other packed `count` apart (one contiguous run). A row
    /// moves as one vector while its 16 floats stay inside both runs (extra lanes read and unused,
    /// or overwritten by the next rows), otherwise one float at a time.
    @inline(__always)
    static func copyRows(from src: UnsafePointer<Float>, _ lds: Int, to dst: UnsafeMutablePointer<Float>, _ ldd: Int,
                         rows: Int, count: Int) {
        for l in 0..<rows {
            if (rows - l) * Swift.min(lds, ldd) >= 16 {
                UnsafeMutableRawPointer(dst + l * ldd).storeBytes(
                    of: UnsafeRawPointer(src + l * lds).loadUnaligned(as: SIMD16<Float>.self), as: SIMD16<Float>.self)
            } else {
                for j in 0..<count { dst[l * ldd + j] = src[l * lds + j] }
            }
        }
    }

    /// For t < 4, c < 16 and each row r < rows in order: acc[t·lda + c] += w[r·16 + t]·x'[r·ldx + c]
    /// (FMA), x' = x, or x·scale rounded first. Four accumulators kept in registers.
    @inline(__always)
    static func accumulateTile(_ acc: UnsafeMutablePointer<Float>, _ lda: Int, weights w: UnsafePointer<Float>,
                               rows: Int, x: UnsafePointer<Float>, _ ldx: Int, scale: Float?) {
        typealias V = SIMD16<Float>
        let r0 = UnsafeMutableRawPointer(acc), r1 = UnsafeMutableRawPointer(acc + lda)
        let r2 = UnsafeMutableRawPointer(acc + 2 * lda), r3 = UnsafeMutableRawPointer(acc + 3 * lda)
        var a0 = r0.loadUnaligned(as: V.self), a1 = r1.loadUnaligned(as: V.self)
        var a2 = r2.loadUnaligned(as: V.self), a3 = r3.loadUnaligned(as: V.self)
        for r in 0..<rows {
            var xv = UnsafeRawPointer(x + r &* ldx).loadUnaligned(as: V.self)
            if let scale { xv = xv * V(repeating: scale) }
            let wr = w + r &* 16
            a0 = a0.addingProduct(V(repeating: wr[0]), xv); a1 = a1.addingProduct(V(repeating: wr[1]), xv)
            a2 = a2.addingProduct(V(repeating: wr[2]), xv); a3 = a3.addingProduct(V(repeating: wr[3]), xv)
        }
        r0.storeBytes(of: a0, as: V.self); r1.storeBytes(of: a1, as: V.self)
        r2.storeBytes(of: a2, as: V.self); r3.storeBytes(of: a3, as: V.self)
    }

    /// acc[c] = acc[c] + a·x[c] (FMA) for c < n.
    @inline(__always)
    static func accumulateRow(_ acc: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
        let av = SIMD16<Float>(repeating: a)
        var c = 0
        while c + 16 <= n {
            let r = UnsafeMutableRawPointer(acc + c)
            r.storeBytes(of: r.loadUnaligned(as: SIMD16<Float>.self)
                .addingProduct(av, UnsafeRawPointer(x + c).loadUnaligned(as: SIMD16<Float>.self)), as: SIMD16<Float>.self)
            c += 16
        }
        while c < n {
            acc[c] = acc[c].addingProduct(a, x[c])
            c += 1
        }
    }

    /// dst[c·ld + r] = src[r·lds + c] for r < rows, c < columns. With `ld` nil, dst is a tile of
    /// 16-lane vectors (ld 16; rows ≤ 16) whose lanes past `rows` are set to 0. Whole 16 × 16
    /// blocks go through `flmm_transpose16`; the values are moved, never changed.
    @inline(__always)
    static func transposeTile(from src: UnsafePointer<Float>, _ lds: Int, rows: Int, columns: Int,
                              to dst: UnsafeMutablePointer<Float>, ld: Int? = nil) {
        let ldd = ld ?? 16
        var c0 = 0
        while c0 < columns {
            let w = Swift.min(16, columns - c0)
            var r0 = 0
            while r0 < rows {
                let hgt = Swift.min(16, rows - r0)
                if w == 16 && hgt == 16 {
                    flmm_transpose16(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd)
                } else {
                    for c in 0..<w {
                        let d = dst + (c0 + c) * ldd + r0
                        for r in 0..<hgt { d[r] = src[(r0 + r) * lds + c0 + c] }
                        if ld == nil { for r in hgt..<16 { d[r] = 0 } }
                    }
                }
                r0 += 16
            }
            c0 += 16
        }
    }
}
