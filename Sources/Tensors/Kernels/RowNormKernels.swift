// LayerNorm over the last dim of contiguous rows [R, D] (SAM: the two-way transformer's norms on
// 4096 image tokens, LayerNorm2d of the token-major upscaling), forward and backward.
//
// Per row: mean and variance accumulated in Double in column order (biased variance, as
// nn.LayerNorm); rstd = 1/√(var + eps) in Double; y = x̂·w + b with x̂ = (x − mean)·rstd in Float.
// Backward per row, with ĝ = g·w and sums in Double in column order:
//   dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))
// dWeight[c] = Σ_r g·x̂, dBias[c] = Σ_r g, summed in Double over fixed blocks of 64 rows (rows in
// order inside a block) and then over the blocks in order: the same on any thread count.

import CBLAS

extension Kernels {
    /// y, and the per-row mean and rstd for the backward. x [rows, d]; weight, bias [d] or nil.
    public static func layerNormRows<T: BinaryFloatingPoint & Sendable>(
        _ x: [T], rows: Int, d: Int, weight: [T]?, bias: [T]?, eps: Double
    ) -> (y: [T], mean: [Double], rstd: [Double]) {
        precondition(x.count == rows * d, "layerNormRows: \(x.count) elements for [\(rows), \(d)]")
        var y = unfilledArray(T.self, x.count)   // every row is written below
        var mean = [Double](repeating: 0, count: rows), rstd = [Double](repeating: 0, count: rows)
        if x.isEmpty { return (y, mean, rstd) }
        let w = weight ?? [], b = bias ?? []
        x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { yb in
        mean.withUnsafeMutableBufferPointer { mb in rstd.withUnsafeMutableBufferPointer { rb in
        w.withUnsafeBufferPointer { wb in b.withUnsafeBufferPointer { bb in
            let xp = SendableConstPointer(xb.baseAddress!), yp = SendablePointer(yb.baseAddress!)
            let mp = SendablePointer(mb.baseAddress!), rp = SendablePointer(rb.baseAddress!)
            let wp = weight == nil ? nil : wb.baseAddress.map { SendableConstPointer($0) }
            let bp = bias == nil ? nil : bb.baseAddress.map { SendableConstPointer($0) }
            Parallel.forEachChunk(rows, grain: max(1, 8192 / d)) { range in
                // Float: 16 rows transposed to [d, 16] (see `transposeRows16`).
                let tr = T.self == Float.self && range.count >= 16 ? transposeScratch(d) : nil
                defer { tr?.deallocate() }
                // Row r: mean m = (Σ x) / d, then v = Σ (x − m)², each a Double sum in c order.
                // Four rows run their sums together (one lane each), the same sums; with Float,
                // sixteen (two vectors of eight lanes) where a chunk has sixteen rows left.
                @inline(__always) func normalize(_ r: Int, _ m: Double, _ v: Double) {
                    let xr = xp.base + r * d, yr = yp.base + r * d
                    let rs = 1 / (v / Double(d) + eps).squareRoot()
                    mp[r] = m
                    rp[r] = rs
                    let mt = T(m), rt = T(rs)
                    switch (wp, bp) {
                    case let (w?, b?): for c in 0..<d { yr[c] = ((xr[c] - mt) * rt) * w[c] + b[c] }
                    case let (w?, nil): for c in 0..<d { yr[c] = ((xr[c] - mt) * rt) * w[c] }
                    case let (nil, b?): for c in 0..<d { yr[c] = (xr[c] - mt) * rt + b[c] }
                    case (nil, nil): for c in 0..<d { yr[c] = (xr[c] - mt) * rt }
                    }
                }
                var r = range.lowerBound
                while r < range.upperBound {
                    if let tr, range.upperBound - r >= 16 {
                        // Sixteen rows: column c of the transposed block is one vector of their
                        // values; the two halves' sums are two chains of adds, side by side.
                        transposeRows16(UnsafeRawPointer(xp.base + r * d).assumingMemoryBound(to: Float.self), d: d, into: tr)
                        var s0 = SIMD8<Double>(), s1 = SIMD8<Double>()
                        for c in 0..<d {
                            let v = UnsafeRawPointer(tr + 16 * c).load(as: SIMD16<Float>.self)
                            s0 += flmm_widen8(v.lowHalf)
                            s1 += flmm_widen8(v.highHalf)
                        }
                        let m0 = s0 / Double(d), m1 = s1 / Double(d)
                        var v0 = SIMD8<Double>(), v1 = SIMD8<Double>()
                        for c in 0..<d {
                            let v = UnsafeRawPointer(tr + 16 * c).load(as: SIMD16<Float>.self)
                            let t0 = flmm_widen8(v.lowHalf) - m0, t1 = flmm_widen8(v.highHalf) - m1
                            v0 += t0 * t0
                            v1 += t1 * t1
                        }
                        for i in 0..<8 { normalize(r + i, m0[i], v0[i]) }
                        for i in 0..<8 { normalize(r + 8 + i, m1[i], v1[i]) }
                        r += 16
                        continue
                    }
                    // Rows r ..< r + nr; the lanes past nr repeat row r and are not used.
                    let nr = min(4, range.upperBound - r)
                    let x0 = xp.base + r * d
                    let x1 = nr > 1 ? x0 + d : x0, x2 = nr > 2 ? x0 + 2 * d : x0, x3 = nr > 3 ? x0 + 3 * d : x0
                    @inline(__always) func lanes(_ c: Int) -> SIMD4<Double> {
                        SIMD4(Double(x0[c]), Double(x1[c]), Double(x2[c]), Double(x3[c]))
                    }
                    var s = SIMD4<Double>()
                    for c in 0..<d { s += lanes(c) }
                    let m = s / Double(d)
                    var v = SIMD4<Double>()
                    for c in 0..<d { let t = lanes(c) - m; v += t * t }
                    for i in 0..<nr { normalize(r + i, m[i], v[i]) }
                    r += nr
                }
            }
        }}}}}}
        return (y, mean, rstd)
    }

    /// Gradients of `layerNormRows` from g [rows, d]: dx, and dWeight / dBias (zeros when the
    /// layer has none).
    public static func layerNormRowsBackward<T: BinaryFloatingPoint & Sendable>(
        _ g: [T], _ x: [T], rows: Int, d: Int, mean: [Double], rstd: [Double], weight: [T]?
    ) -> (dx: [T], dWeight: [T], dBias: [T]) {
        var dx = unfilledArray(T.self, x.count)   // every row is written below
        let blockRows = 64
        let blocks = (rows + blockRows - 1) / blockRows
        var partW = [Double](repeating: 0, count: blocks * d), partB = [Double](repeating: 0, count: blocks * d)
        let w = weight ?? []
        if !x.isEmpty {
            g.withUnsafeBufferPointer { gb in x.withUnsafeBufferPointer { xb in dx.withUnsafeMutableBufferPointer { db in
            mean.withUnsafeBufferPointer { mb in rstd.withUnsafeBufferPointer { rb in w.withUnsafeBufferPointer { wb in
            partW.withUnsafeMutableBufferPointer { pwb in partB.withUnsafeMutableBufferPointer { pbb in
                let gp = SendableConstPointer(gb.baseAddress!), xp = SendableConstPointer(xb.baseAddress!)
                let dp = SendablePointer(db.baseAddress!)
                let mp = SendableConstPointer(mb.baseAddress!), rp = SendableConstPointer(rb.baseAddress!)
                let wp = weight == nil ? nil : wb.baseAddress.map { SendableConstPointer($0) }
                let pw = SendablePointer(pwb.baseAddress!), pb = SendablePointer(pbb.baseAddress!)
                Parallel.forEach(blocks) { blk in
                    // x̂ and g·w of up to four rows (sixteen with Float); their sums Σ g·w and
                    // Σ g·w·x̂ (Double, c order, one lane each) run together, then each row is
                    // finished in row order.
                    let xhat = UnsafeMutablePointer<T>.allocate(capacity: 16 * d)
                    let gw = UnsafeMutablePointer<T>.allocate(capacity: 16 * d)
                    let float16 = T.self == Float.self
                    let trG = float16 ? transposeScratch(d) : nil, trX = float16 ? transposeScratch(d) : nil
                    // Σ g·w of row i of a group at sums[i], Σ g·w·x̂ at sums[16 + i].
                    let sums = UnsafeMutablePointer<Double>.allocate(capacity: 32)
                    defer { xhat.deallocate(); gw.deallocate(); trG?.deallocate(); trX?.deallocate(); sums.deallocate() }
                    let aw = pw.base + blk * d, ab = pb.base + blk * d
                    let end = min(rows, (blk + 1) * blockRows)
                    var r0 = blk * blockRows
                    while r0 < end {
                        let nr = float16 && end - r0 >= 16 ? 16 : min(4, end - r0)
                        for i in 0..<nr {
                            let r = r0 + i, xr = xp.base + r * d, gr = gp.base + r * d
                            let xh = xhat + i * d, gwi = gw + i * d
                            let mt = T(mp[r]), rt = T(rp[r])
                            for c in 0..<d { xh[c] = (xr[c] - mt) * rt }
                            if let wp { for c in 0..<d { gwi[c] = gr[c] * wp[c] } } else { for c in 0..<d { gwi[c] = gr[c] } }
                        }
                        if nr == 16, let trG, let trX {
                            // Sixteen rows transposed to [d, 16]: one vector per column, two
                            // chains per sum (rows 0–7 and 8–15), the same sums as one row at a time.
                            transposeRows16(UnsafeRawPointer(gw).assumingMemoryBound(to: Float.self), d: d, into: trG)
                            transposeRows16(UnsafeRawPointer(xhat).assumingMemoryBound(to: Float.self), d: d, into: trX)
                            var sg0 = SIMD8<Double>(), sg1 = SIMD8<Double>(), sx0 = SIMD8<Double>(), sx1 = SIMD8<Double>()
                            for c in 0..<d {
                                let gv = UnsafeRawPointer(trG + 16 * c).load(as: SIMD16<Float>.self)
                                let xv = UnsafeRawPointer(trX + 16 * c).load(as: SIMD16<Float>.self)
                                let g0 = flmm_widen8(gv.lowHalf), g1 = flmm_widen8(gv.highHalf)
                                sg0 += g0
                                sg1 += g1
                                sx0 += g0 * flmm_widen8(xv.lowHalf)
                                sx1 += g1 * flmm_widen8(xv.highHalf)
                            }
                            for i in 0..<8 {
                                sums[i] = sg0[i]; sums[8 + i] = sg1[i]; sums[16 + i] = sx0[i]; sums[24 + i] = sx1[i]
                            }
                        } else {
                            // Lanes past nr repeat the first row and are not used.
                            let g1 = nr > 1 ? gw + d : gw, g2 = nr > 2 ? gw + 2 * d : gw, g3 = nr > 3 ? gw + 3 * d : gw
                            let h1 = nr > 1 ? xhat + d : xhat, h2 = nr > 2 ? xhat + 2 * d : xhat
                            let h3 = nr > 3 ? xhat + 3 * d : xhat
                            var sg = SIMD4<Double>(), sgx = SIMD4<Double>()
                            for c in 0..<d {
                                let gv = SIMD4(Double(gw[c]), Double(g1[c]), Double(g2[c]), Double(g3[c]))
                                sg += gv
                                sgx += gv * SIMD4(Double(xhat[c]), Double(h1[c]), Double(h2[c]), Double(h3[c]))
                            }
                            for i in 0..<nr { sums[i] = sg[i]; sums[16 + i] = sgx[i] }
                        }
                        for i in 0..<nr {
                            let r = r0 + i, gr = gp.base + r * d, dr = dp.base + r * d
                            let xh = xhat + i * d, gwi = gw + i * d
                            let (a, b) = (sums[i], sums[16 + i])
                            let mg = T(a / Double(d)), mgx = T(b / Double(d)), rt = T(rp[r])
                            for c in 0..<d { dr[c] = rt * ((gwi[c] - mg) - xh[c] * mgx) }
                            for c in 0..<d {
                                aw[c] += Double(gr[c]) * Double(xh[c])
                                ab[c] += Double(gr[c])
                            }
                        }
                        r0 += nr
                    }
                }
            }}}}}}}}
        }
        var dw = [Double](repeating: 0, count: d), dbias = [Double](repeating: 0, count: d)
        for blk in 0..<blocks {
            for c in 0..<d {
                dw[c] += partW[blk * d + c]
                dbias[c] += partB[blk * d + c]
            }
        }
        return (dx, dw.map { T($0) }, dbias.map { T($0) })
    }

    /// A 64-byte aligned [d, 16] Float buffer for `transposeRows16` (deallocate it after use).
    static func transposeScratch(_ d: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer.allocate(byteCount: 64 * d, alignment: 64).bindMemory(to: Float.self, capacity: 16 * d)
    }

    /// Rows 0 ..< 16 of `x` (row length `d`, contiguous) transposed into `t` [d, 16]:
    /// t[16·c + i] = x[i·d + c], by 16 × 16 register transposes and then the last d mod 16
    /// columns one by one. Values are moved, never changed.
    static func transposeRows16(_ x: UnsafePointer<Float>, d: Int, into t: UnsafeMutablePointer<Float>) {
        var c0 = 0
        while c0 + 16 <= d {
            flmm_transpose16(x + c0, d, t + 16 * c0, 16)
            c0 += 16
        }
        for c in c0..<d {
            for i in 0..<16 { t[16 * c + i] = x[i * d + c] }
        }
    }
}
