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
        var y = [T](repeating: 0, count: x.count)
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
                for r in range {
                    let xr = xp.base + r * d, yr = yp.base + r * d
                    var s = 0.0
                    for c in 0..<d { s += Double(xr[c]) }
                    let m = s / Double(d)
                    var v = 0.0
                    for c in 0..<d { let t = Double(xr[c]) - m; v += t * t }
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
            }
        }}}}}}
        return (y, mean, rstd)
    }

    /// Gradients of `layerNormRows` from g [rows, d]: dx, and dWeight / dBias (zeros when the
    /// layer has none).
    public static func layerNormRowsBackward<T: BinaryFloatingPoint & Sendable>(
        _ g: [T], _ x: [T], rows: Int, d: Int, mean: [Double], rstd: [Double], weight: [T]?
    ) -> (dx: [T], dWeight: [T], dBias: [T]) {
        var dx = [T](repeating: 0, count: x.count)
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
                    let xhat = UnsafeMutablePointer<T>.allocate(capacity: d)
                    let gw = UnsafeMutablePointer<T>.allocate(capacity: d)
                    defer { xhat.deallocate(); gw.deallocate() }
                    let aw = pw.base + blk * d, ab = pb.base + blk * d
                    for r in (blk * blockRows)..<min(rows, (blk + 1) * blockRows) {
                        let xr = xp.base + r * d, gr = gp.base + r * d, dr = dp.base + r * d
                        let mt = T(mp[r]), rt = T(rp[r])
                        for c in 0..<d { xhat[c] = (xr[c] - mt) * rt }
                        if let wp { for c in 0..<d { gw[c] = gr[c] * wp[c] } } else { for c in 0..<d { gw[c] = gr[c] } }
                        var sg = 0.0, sgx = 0.0
                        for c in 0..<d { sg += Double(gw[c]); sgx += Double(gw[c]) * Double(xhat[c]) }
                        let mg = T(sg / Double(d)), mgx = T(sgx / Double(d))
                        for c in 0..<d { dr[c] = rt * ((gw[c] - mg) - xhat[c] * mgx) }
                        for c in 0..<d {
                            aw[c] += Double(gr[c]) * Double(xhat[c])
                            ab[c] += Double(gr[c])
                        }
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
