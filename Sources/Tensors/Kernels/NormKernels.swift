// Normalization kernels (LayerNorm, SAM's LayerNorm2d, GroupNorm, BatchNorm): fused forward
// and closed-form backward, generic over the scalar.
//
// Every norm sees its input as [P, C, Q] (P outer, C channels carrying the affine weight and
// bias, Q inner) and differs only in which elements share statistics (`NormGrouping`):
//   LayerNorm over the last dim D:  [rows, D, 1], .groups(1)     stats per row
//   LayerNorm2d on NCHW:            [N, C, H·W],  .channels      stats per (n, h, w) over C
//   GroupNorm(G) on NCHW:           [N, C, H·W],  .groups(G)     stats per (n, group)
//   BatchNorm on NCHW:              [N, C, H·W],  .batch         stats per channel over (N, H, W)
//
// Forward: mean and biased variance per statistic, both accumulated in Double (two passes, in
// memory order); rstd = 1/√(var + eps) in Double; y = (x − mean)·rstd·w[c] + b[c] evaluated in
// Double and rounded once.
// Backward (M elements per statistic, x̂ = (x − mean)·rstd, ĝ = g·w[c]):
//   dx = rstd·(ĝ − Σĝ/M − x̂·Σ(ĝ·x̂)/M)   (through the statistics), or dx = rstd·ĝ when the
//   statistics are constants (BatchNorm in eval mode);  dw[c] = Σ g·x̂,  db[c] = Σ g.
// All sums are in Double with an order fixed by the layout (never by the thread count): each
// statistic and each channel is reduced by one thread.

/// Which elements of a [P, C, Q] tensor share one mean and variance.
public enum NormGrouping: Sendable, Equatable {
    /// Per (p, group) over the group's C/G channels and all q (GroupNorm; LayerNorm with 1 group and Q = 1).
    case groups(Int)
    /// Per (p, q) over all C channels (SAM's LayerNorm2d).
    case channels
    /// Per channel over all (p, q) (BatchNorm).
    case batch
}

/// The [P, C, Q] view of a normalized tensor and its grouping.
public struct NormShape: Sendable, Equatable {
    public let p: Int, c: Int, q: Int
    public let grouping: NormGrouping

    public init(p: Int, c: Int, q: Int, grouping: NormGrouping) {
        if case .groups(let g) = grouping {
            precondition(g > 0 && c % g == 0, "NormShape: \(c) channels not divisible into \(g) groups")
        }
        self.p = p
        self.c = c
        self.q = q
        self.grouping = grouping
    }

    /// Number of statistics (means / variances).
    public var statCount: Int {
        switch grouping {
        case .groups(let g): return p * g
        case .channels: return p * q
        case .batch: return c
        }
    }

    /// Number of elements behind each statistic.
    public var statSize: Int {
        switch grouping {
        case .groups(let g): return c / g * q
        case .channels: return c
        case .batch: return p * q
        }
    }

    var count: Int { p * c * q }

    /// For the groupings whose statistic is constant along a (p, c) row (not `.channels`):
    /// statistic = p·perP + ofChannel[c]. Avoids a division per row in the row-wise passes.
    var rowStats: (perP: Int, ofChannel: [Int]) {
        switch grouping {
        case .groups(let g): return (g, (0..<c).map { $0 / (c / g) })
        case .batch: return (0, Array(0..<c))
        case .channels: return (0, [Int](repeating: 0, count: c))
        }
    }
}

extension Kernels {
    /// Channels handled per task in the weight/bias gradient pass, and inner positions per task
    /// for the `.channels` grouping. Fixed sizes: the split never depends on the thread count.
    static let normChannelBlock = 16
    static let normPositionBlock = 64

    /// Mean and biased variance of every statistic of `x` (Double, two passes).
    public static func normMoments<T: BinaryFloatingPoint & Sendable>(_ x: [T], _ s: NormShape) -> (mean: [Double], variance: [Double]) {
        precondition(x.count == s.count, "normMoments: \(x.count) elements for [\(s.p), \(s.c), \(s.q)]")
        var mean = [Double](repeating: 0, count: s.statCount)
        var variance = [Double](repeating: 0, count: s.statCount)
        if s.count == 0 { return (mean, variance) }
        let (P, C, Q) = (s.p, s.c, s.q)
        let inv = 1.0 / Double(s.statSize)
        x.withUnsafeBufferPointer { xb in
            mean.withUnsafeMutableBufferPointer { mb in
                variance.withUnsafeMutableBufferPointer { vb in
                    let xp = SendableConstPointer(xb.baseAddress!)
                    let mp = SendablePointer(mb.baseAddress!), vp = SendablePointer(vb.baseAddress!)
                    switch s.grouping {
                    case .groups:
                        // Statistic st covers the contiguous block [st·L, (st+1)·L).
                        let L = s.statSize
                        Parallel.forEach(s.statCount, grain: max(1, 16384 / L)) { st in
                            let b = xp.base + st * L
                            var a = 0.0
                            for i in 0..<L { a += Double(b[i]) }
                            let m = a * inv
                            var v = 0.0
                            for i in 0..<L { let d = Double(b[i]) - m; v += d * d }
                            mp[st] = m
                            vp[st] = v * inv
                        }
                    case .channels:
                        let QB = normPositionBlock, nb = (Q + QB - 1) / QB
                        Parallel.forEach(P * nb, grain: max(1, 256 / max(C, 1))) { task in
                            let pi = task / nb, q0 = (task % nb) * QB, n = min(QB, Q - q0)
                            var a = [Double](repeating: 0, count: n)
                            for ci in 0..<C {
                                let b = xp.base + (pi * C + ci) * Q + q0
                                for j in 0..<n { a[j] += Double(b[j]) }
                            }
                            for j in 0..<n { a[j] *= inv }
                            var v = [Double](repeating: 0, count: n)
                            for ci in 0..<C {
                                let b = xp.base + (pi * C + ci) * Q + q0
                                for j in 0..<n { let d = Double(b[j]) - a[j]; v[j] += d * d }
                            }
                            for j in 0..<n {
                                mp[pi * Q + q0 + j] = a[j]
                                vp[pi * Q + q0 + j] = v[j] * inv
                            }
                        }
                    case .batch:
                        Parallel.forEach(C) { ci in
                            var a = 0.0
                            for pi in 0..<P {
                                let b = xp.base + (pi * C + ci) * Q
                                for j in 0..<Q { a += Double(b[j]) }
                            }
                            let m = a * inv
                            var v = 0.0
                            for pi in 0..<P {
                                let b = xp.base + (pi * C + ci) * Q
                                for j in 0..<Q { let d = Double(b[j]) - m; v += d * d }
                            }
                            mp[ci] = m
                            vp[ci] = v * inv
                        }
                    }
                }
            }
        }
        return (mean, variance)
    }

    /// 1/√(var + eps) for each statistic, in Double.
    public static func normRstd(_ variance: [Double], eps: Double) -> [Double] {
        variance.map { 1.0 / (($0 + eps).squareRoot()) }
    }

    /// y = (x − mean)·rstd·w[c] + b[c]; `weight` / `bias` are [C] or nil (1 / 0).
    public static func normForward<T: BinaryFloatingPoint & Sendable>(
        _ x: [T], _ s: NormShape, mean: [Double], rstd: [Double], weight: [T]?, bias: [T]?
    ) -> [T] {
        precondition(x.count == s.count && mean.count == s.statCount && rstd.count == s.statCount,
                     "normForward: sizes do not match [\(s.p), \(s.c), \(s.q)]")
        precondition((weight?.count ?? s.c) == s.c && (bias?.count ?? s.c) == s.c,
                     "normForward: weight/bias must have \(s.c) elements")
        var y = [T](repeating: 0, count: s.count)
        if s.count == 0 { return y }
        let wd = weight.map { $0.map { Double($0) } } ?? [Double](repeating: 1, count: s.c)
        let bd = bias.map { $0.map { Double($0) } } ?? [Double](repeating: 0, count: s.c)
        let (C, Q) = (s.c, s.q)
        let (perP, ofChannel) = s.rowStats
        let perChannelPosition = s.grouping == .channels
        let rowsLayout = Q == 1 && s.grouping == .groups(1)
        x.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                let xp = SendableConstPointer(xb.baseAddress!), yp = SendablePointer(yb.baseAddress!)
                mean.withUnsafeBufferPointer { meanb in
                    rstd.withUnsafeBufferPointer { rb in
                        wd.withUnsafeBufferPointer { wb in
                            bd.withUnsafeBufferPointer { bb in
                                let m = SendableConstPointer(meanb.baseAddress!), r = SendableConstPointer(rb.baseAddress!)
                                let w = SendableConstPointer(wb.baseAddress!), b = SendableConstPointer(bb.baseAddress!)
                                if rowsLayout {
                                    // LayerNorm: one statistic per contiguous row of C (same arithmetic as below).
                                    Parallel.forEachChunk(s.p, grain: max(1, 8192 / max(C, 1))) { rows in
                                        for pi in rows {
                                            let xr = xp.base + pi * C, yr = yp.base + pi * C
                                            let mm = m[pi], rr = r[pi]
                                            for ci in 0..<C { yr[ci] = T((Double(xr[ci]) - mm) * (rr * w[ci]) + b[ci]) }
                                        }
                                    }
                                    return
                                }
                                Parallel.forEachChunk(s.p * C, grain: max(1, 8192 / max(Q, 1))) { rows in
                                    var pi = rows.lowerBound / C, ci = rows.lowerBound % C
                                    for row in rows {
                                        defer { ci += 1; if ci == C { ci = 0; pi += 1 } }
                                        let xr = xp.base + row * Q, yr = yp.base + row * Q
                                        let wc = w[ci], bc = b[ci]
                                        if perChannelPosition {
                                            let ms = m.base + pi * Q, rs = r.base + pi * Q
                                            for j in 0..<Q { yr[j] = T((Double(xr[j]) - ms[j]) * rs[j] * wc + bc) }
                                            continue
                                        }
                                        let st = pi * perP + ofChannel[ci]
                                        let mm = m[st], a = r[st] * wc
                                        for j in 0..<Q { yr[j] = T((Double(xr[j]) - mm) * a + bc) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Gradients of a norm: dx (through the statistics unless `statsConstant`), dWeight[c] =
    /// Σ g·x̂ and dBias[c] = Σ g. `weight` nil means 1.
    public static func normBackward<T: BinaryFloatingPoint & Sendable>(
        _ x: [T], _ g: [T], _ s: NormShape, mean: [Double], rstd: [Double], weight: [T]?, statsConstant: Bool
    ) -> (dx: [T], dWeight: [T], dBias: [T]) {
        precondition(x.count == s.count && g.count == s.count && mean.count == s.statCount && rstd.count == s.statCount,
                     "normBackward: sizes do not match [\(s.p), \(s.c), \(s.q)]")
        let (P, C, Q) = (s.p, s.c, s.q)
        var dx = [T](repeating: 0, count: s.count)
        var dw = [Double](repeating: 0, count: C)
        var db = [Double](repeating: 0, count: C)
        if s.count == 0 { return (dx, dw.map { T($0) }, db.map { T($0) }) }
        let wd = weight.map { $0.map { Double($0) } } ?? [Double](repeating: 1, count: C)
        let groupSize: Int
        if case .groups(let gg) = s.grouping { groupSize = C / gg } else { groupSize = 1 }
        // Σĝ and Σĝ·x̂ per statistic.
        var sumG = [Double](repeating: 0, count: s.statCount)
        var sumGX = [Double](repeating: 0, count: s.statCount)
        let invM = 1.0 / Double(s.statSize)

        x.withUnsafeBufferPointer { xb in
        g.withUnsafeBufferPointer { gb in
        mean.withUnsafeBufferPointer { meanb in
        rstd.withUnsafeBufferPointer { rb in
        wd.withUnsafeBufferPointer { wb in
        dx.withUnsafeMutableBufferPointer { dxb in
        dw.withUnsafeMutableBufferPointer { dwb in
        db.withUnsafeMutableBufferPointer { dbb in
        sumG.withUnsafeMutableBufferPointer { sgb in
        sumGX.withUnsafeMutableBufferPointer { sgxb in
            let xp = SendableConstPointer(xb.baseAddress!), gp = SendableConstPointer(gb.baseAddress!)
            let m = SendableConstPointer(meanb.baseAddress!), r = SendableConstPointer(rb.baseAddress!)
            let w = SendableConstPointer(wb.baseAddress!)
            let dxp = SendablePointer(dxb.baseAddress!)
            let dwp = SendablePointer(dwb.baseAddress!), dbp = SendablePointer(dbb.baseAddress!)
            let sg = SendablePointer(sgb.baseAddress!), sgx = SendablePointer(sgxb.baseAddress!)

            let (perP, ofChannel) = s.rowStats
            let rowsLayout = Q == 1 && s.grouping == .groups(1)

            // 1. dWeight, dBias: each block of channels summed by one task in (p, q) order.
            let CB = normChannelBlock, nb = (C + CB - 1) / CB
            Parallel.forEach(nb) { blk in
                let c0 = blk * CB, c1 = min(C, c0 + CB)
                var aw = [Double](repeating: 0, count: c1 - c0), ab = aw
                if rowsLayout {
                    for pi in 0..<P {
                        let mm = m[pi], rr = r[pi], o = pi * C
                        for ci in c0..<c1 {
                            let gv = Double(gp[o + ci])
                            aw[ci - c0] += gv * ((Double(xp[o + ci]) - mm) * rr)
                            ab[ci - c0] += gv
                        }
                    }
                }
                for pi in 0..<(rowsLayout ? 0 : P) {
                    for ci in c0..<c1 {
                        let o = (pi * C + ci) * Q
                        var sw = 0.0, sb = 0.0
                        if case .channels = s.grouping {
                            let ms = m.base + pi * Q, rs = r.base + pi * Q
                            for j in 0..<Q {
                                let gv = Double(gp[o + j])
                                sw += gv * ((Double(xp[o + j]) - ms[j]) * rs[j])
                                sb += gv
                            }
                        } else {
                            let st = pi * perP + ofChannel[ci]
                            let mm = m[st], rr = r[st]
                            for j in 0..<Q {
                                let gv = Double(gp[o + j])
                                sw += gv * ((Double(xp[o + j]) - mm) * rr)
                                sb += gv
                            }
                        }
                        aw[ci - c0] += sw
                        ab[ci - c0] += sb
                    }
                }
                for ci in c0..<c1 {
                    dwp[ci] = aw[ci - c0]
                    dbp[ci] = ab[ci - c0]
                }
            }

            // 2. Σĝ, Σĝ·x̂ per statistic (only when the statistics carry gradient).
            if !statsConstant {
                switch s.grouping {
                case .groups(let gg):
                    Parallel.forEach(P * gg, grain: max(1, 16384 / max(s.statSize, 1))) { st in
                        let pi = st / gg, gi = st % gg
                        let mm = m[st], rr = r[st]
                        var a = 0.0, bsum = 0.0
                        for cc in 0..<groupSize {
                            let ci = gi * groupSize + cc
                            let o = (pi * C + ci) * Q, wc = w[ci]
                            for j in 0..<Q {
                                let gh = Double(gp[o + j]) * wc
                                a += gh
                                bsum += gh * ((Double(xp[o + j]) - mm) * rr)
                            }
                        }
                        sg[st] = a
                        sgx[st] = bsum
                    }
                case .channels:
                    let QB = normPositionBlock, nq = (Q + QB - 1) / QB
                    Parallel.forEach(P * nq, grain: max(1, 256 / max(C, 1))) { task in
                        let pi = task / nq, q0 = (task % nq) * QB, n = min(QB, Q - q0)
                        var a = [Double](repeating: 0, count: n), bsum = a
                        let ms = m.base + pi * Q + q0, rs = r.base + pi * Q + q0
                        for ci in 0..<C {
                            let o = (pi * C + ci) * Q + q0, wc = w[ci]
                            for j in 0..<n {
                                let gh = Double(gp[o + j]) * wc
                                a[j] += gh
                                bsum[j] += gh * ((Double(xp[o + j]) - ms[j]) * rs[j])
                            }
                        }
                        for j in 0..<n {
                            sg[pi * Q + q0 + j] = a[j]
                            sgx[pi * Q + q0 + j] = bsum[j]
                        }
                    }
                case .batch:
                    Parallel.forEach(C) { ci in
                        let mm = m[ci], rr = r[ci], wc = w[ci]
                        var a = 0.0, bsum = 0.0
                        for pi in 0..<P {
                            let o = (pi * C + ci) * Q
                            for j in 0..<Q {
                                let gh = Double(gp[o + j]) * wc
                                a += gh
                                bsum += gh * ((Double(xp[o + j]) - mm) * rr)
                            }
                        }
                        sg[ci] = a
                        sgx[ci] = bsum
                    }
                }
            }

            // 3. dx, row by row.
            if rowsLayout {
                Parallel.forEachChunk(P, grain: max(1, 8192 / max(C, 1))) { rows in
                    for pi in rows {
                        let o = pi * C, mm = m[pi], rr = r[pi]
                        if statsConstant {
                            for ci in 0..<C { dxp[o + ci] = T(rr * (Double(gp[o + ci]) * w[ci])) }
                        } else {
                            let a = sg[pi] * invM, bb = sgx[pi] * invM
                            for ci in 0..<C {
                                let xh = (Double(xp[o + ci]) - mm) * rr
                                dxp[o + ci] = T(rr * (Double(gp[o + ci]) * w[ci] - a - xh * bb))
                            }
                        }
                    }
                }
                return
            }
            Parallel.forEachChunk(P * C, grain: max(1, 8192 / max(Q, 1))) { rows in
                var pi = rows.lowerBound / C, ci = rows.lowerBound % C
                for row in rows {
                    defer { ci += 1; if ci == C { ci = 0; pi += 1 } }
                    let o = row * Q, wc = w[ci]
                    if case .channels = s.grouping {
                        let base = pi * Q
                        for j in 0..<Q {
                            let st = base + j
                            let gh = Double(gp[o + j]) * wc
                            if statsConstant {
                                dxp[o + j] = T(r[st] * gh)
                            } else {
                                let xh = (Double(xp[o + j]) - m[st]) * r[st]
                                dxp[o + j] = T(r[st] * (gh - sg[st] * invM - xh * sgx[st] * invM))
                            }
                        }
                        continue
                    }
                    let st = pi * perP + ofChannel[ci]
                    let mm = m[st], rr = r[st]
                    if statsConstant {
                        for j in 0..<Q { dxp[o + j] = T(rr * (Double(gp[o + j]) * wc)) }
                    } else {
                        let a = sg[st] * invM, bb = sgx[st] * invM
                        for j in 0..<Q {
                            let xh = (Double(xp[o + j]) - mm) * rr
                            dxp[o + j] = T(rr * (Double(gp[o + j]) * wc - a - xh * bb))
                        }
                    }
                }
            }
        }}}}}}}}}}
        return (dx, dw.map { T($0) }, db.map { T($0) })
    }
}
