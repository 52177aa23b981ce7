// LayerNorm over the last dim of contiguous rows [R, D] (SAM: the two-way transformer's norms on
// 4096 image tokens, LayerNorm2d of the token-major upscaling), forward and backward.
//
// Per row: mean and variance accumulated in Double in column order (biased variance, as
// nn.LayerNorm); rstd = 1/√(var + eps) in Double; y = x̂·w + b with x̂ = (x − mean)·rstd in Float.
// Backward per row, with ĝ = g·w and sums in Double in column order:
//   dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))
// dWeight[c] = Σ_r g·x̂, dBias[c] = Σ_r g, summed in Double over fixed blocks of 64 rows (rows in
// order inside a block) and then over the blocks in order: the same on any thread count.

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
                // Row r: mean m = (Σ x) / d, then v = Σ (x − m)², each a Double sum in c order.
                // Four rows run their sums together (one lane each), the same sums.
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
                    // x̂ and g·w of up to four rows; their sums Σ g·w and Σ g·w·x̂ (Double, c order,
                    // one lane each) run together, then each row is finished in row order.
                    let xhat = UnsafeMutablePointer<T>.allocate(capacity: 4 * d)
                    let gw = UnsafeMutablePointer<T>.allocate(capacity: 4 * d)
                    defer { xhat.deallocate(); gw.deallocate() }
                    let aw = pw.base + blk * d, ab = pb.base + blk * d
                    let end = min(rows, (blk + 1) * blockRows)
                    var r0 = blk * blockRows
                    while r0 < end {
                        let nr = min(4, end - r0)
                        for i in 0..<nr {
                            let r = r0 + i, xr = xp.base + r * d, gr = gp.base + r * d
                            let xh = xhat + i * d, gwi = gw + i * d
                            let mt = T(mp[r]), rt = T(rp[r])
                            for c in 0..<d { xh[c] = (xr[c] - mt) * rt }
                            if let wp { for c in 0..<d { gwi[c] = gr[c] * wp[c] } } else { for c in 0..<d { gwi[c] = gr[c] } }
                        }
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
                        for i in 0..<nr {
                            let r = r0 + i, gr = gp.base + r * d, dr = dp.base + r * d
                            let xh = xhat + i * d, gwi = gw + i * d
                            let (a, b) = (sg[i], sgx[i])
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
}
