// Spatial interpolation kernels (F.interpolate on NCHW, modes 'bilinear' and 'nearest'),
// following PyTorch CPU's coordinate rules exactly; forward and transpose, generic over the
// scalar.
//
// Per axis (H and W independently), with `in` and `out` sizes:
//   bilinear ratio r (Float32):  alignCorners: (in−1)/(out−1) (0 if out == 1);
//                                else 1/s (Double division rounded to Float) when a scale
//                                factor s was given, else Float(in)/Float(out).
//   source coordinate (Float32): alignCorners: r·dst; else max(0, r·(dst + 0.5) − 0.5).
//   i0 = min(floor(src), in−1), i1 = i0 + (i0 < in−1 ? 1 : 0), l1 = clamp(src − i0, 0, 1),
//   l0 = 1 − l1;  y = l0h·(l0w·x[i0h,i0w] + l1w·x[i0h,i1w]) + l1h·(l0w·x[i1h,i0w] + l1w·x[i1h,i1w]).
//   nearest (legacy 'nearest', not 'nearest-exact'): out == in: src = dst; out == 2·in:
//   src = dst >> 1; else r = 1/s (Float) with a scale factor, else Float(in)/Float(out), and
//   src = min(floor(Float(dst)·r), in−1) in Float32.
// Backward (the transpose): each input element gathers, in increasing output order, the
// upstream values that read it times the same weights (per axis, separably), summed in Double.
// A gather instead of a scatter lets input rows run in parallel with a fixed order.

/// F.interpolate's `mode`.
public enum InterpolationMode: String, Sendable, Equatable {
    case nearest, bilinear
}

/// One axis of an interpolation: where each output reads, and (transposed) which outputs
/// read each input, with the weights.
public struct InterpolationAxis: Sendable, Equatable {
    public let inSize: Int
    public let outSize: Int
    /// Source indices and weights of each output (nearest: i1 = i0, l0 = 1, l1 = 0).
    public let i0: [Int], i1: [Int]
    public let l0: [Float], l1: [Float]
    /// Transposed table (CSR): input i is read by outputs `readers[start[i]..<start[i+1]]`
    /// with weights `weights[...]`, in increasing output order.
    let start: [Int]
    let readers: [Int]
    let weights: [Double]

    init(inSize: Int, outSize: Int, i0: [Int], i1: [Int], l0: [Float], l1: [Float]) {
        self.inSize = inSize
        self.outSize = outSize
        self.i0 = i0
        self.i1 = i1
        self.l0 = l0
        self.l1 = l1
        var lists = [[(Int, Double)]](repeating: [], count: inSize)
        for o in 0..<outSize {
            lists[i0[o]].append((o, Double(l0[o])))
            if l1[o] != 0 || i1[o] != i0[o] { lists[i1[o]].append((o, Double(l1[o]))) }
        }
        var st = [0], rd: [Int] = [], wt: [Double] = []
        for l in lists {
            for (o, w) in l { rd.append(o); wt.append(w) }
            st.append(rd.count)
        }
        start = st
        readers = rd
        weights = wt
    }

    /// Bilinear (linear along this axis) coordinates. `scale` is the user's scale factor for
    /// this axis (nil when a size was given).
    public static func linear(inSize: Int, outSize: Int, scale: Double?, alignCorners: Bool) -> InterpolationAxis {
        precondition(inSize > 0 && outSize > 0, "interpolate: sizes must be positive (in \(inSize), out \(outSize))")
        let r: Float
        if alignCorners {
            r = outSize > 1 ? Float(inSize - 1) / Float(outSize - 1) : 0
        } else if let s = scale, s > 0 {
            r = Float(1.0 / s)
        } else {
            r = Float(inSize) / Float(outSize)
        }
        var i0 = [Int](), i1 = [Int](), l0 = [Float](), l1 = [Float]()
        for d in 0..<outSize {
            let src: Float
            if alignCorners {
                src = r * Float(d)
            } else {
                let v = r * (Float(d) + 0.5) - 0.5
                src = v < 0 ? 0 : v
            }
            let a = Swift.min(Int(src.rounded(.down)), inSize - 1)
            let lam = Swift.min(Swift.max(src - Float(a), 0), 1)
            i0.append(a)
            i1.append(a + (a < inSize - 1 ? 1 : 0))
            l1.append(lam)
            l0.append(1 - lam)
        }
        return InterpolationAxis(inSize: inSize, outSize: outSize, i0: i0, i1: i1, l0: l0, l1: l1)
    }

    /// Legacy nearest coordinates (PyTorch's `nearest_idx`).
    public static func nearest(inSize: Int, outSize: Int, scale: Double?) -> InterpolationAxis {
        precondition(inSize > 0 && outSize > 0, "interpolate: sizes must be positive (in \(inSize), out \(outSize))")
        var src = [Int]()
        if outSize == inSize {
            src = Array(0..<outSize)
        } else if outSize == 2 * inSize {
            src = (0..<outSize).map { $0 >> 1 }
        } else {
            let r: Float
            if let s = scale, s > 0 { r = Float(1.0 / s) } else { r = Float(inSize) / Float(outSize) }
            src = (0..<outSize).map { Swift.min(Int((Float($0) * r).rounded(.down)), inSize - 1) }
        }
        return InterpolationAxis(inSize: inSize, outSize: outSize, i0: src, i1: src,
                                 l0: [Float](repeating: 1, count: outSize), l1: [Float](repeating: 0, count: outSize))
    }
}

/// Everything an interpolation of [N, C, H, W] planes needs: the mode and both axes.
public struct InterpolationPlan: Sendable, Equatable {
    public let mode: InterpolationMode
    public let h: InterpolationAxis
    public let w: InterpolationAxis

    public init(mode: InterpolationMode, h: InterpolationAxis, w: InterpolationAxis) {
        self.mode = mode
        self.h = h
        self.w = w
    }
}

extension Kernels {
    /// Interpolates `planes` planes of [inH, inW] to [outH, outW].
    public static func interpolate<T: BinaryFloatingPoint & Sendable>(_ x: [T], planes: Int, _ plan: InterpolationPlan) -> [T] {
        let (ih, iw, oh, ow) = (plan.h.inSize, plan.w.inSize, plan.h.outSize, plan.w.outSize)
        precondition(x.count == planes * ih * iw, "interpolate: \(x.count) elements for \(planes) planes of \(ih)×\(iw)")
        var y = [T](repeating: 0, count: planes * oh * ow)
        if y.isEmpty { return y }
        let bilinear = plan.mode == .bilinear
        let h0 = plan.h.i0, h1 = plan.h.i1, w0 = plan.w.i0, w1 = plan.w.i1
        let lh0 = plan.h.l0.map { T($0) }, lh1 = plan.h.l1.map { T($0) }
        let lw0 = plan.w.l0.map { T($0) }, lw1 = plan.w.l1.map { T($0) }
        x.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                let xp = SendableConstPointer(xb.baseAddress!), yp = SendablePointer(yb.baseAddress!)
                Parallel.forEach(planes * oh, grain: max(1, 4096 / ow)) { row in
                    let pl = row / oh, r = row % oh
                    let src = xp.base + pl * ih * iw, dst = yp.base + row * ow
                    let a = src + h0[r] * iw
                    if bilinear {
                        let b = src + h1[r] * iw, ha = lh0[r], hb = lh1[r]
                        for c in 0..<ow {
                            let j0 = w0[c], j1 = w1[c], wa = lw0[c], wb = lw1[c]
                            dst[c] = ha * (wa * a[j0] + wb * a[j1]) + hb * (wa * b[j0] + wb * b[j1])
                        }
                    } else {
                        for c in 0..<ow { dst[c] = a[w0[c]] }
                    }
                }
            }
        }
        return y
    }

    /// The transpose of `interpolate`: gradient w.r.t. the input from the output's gradient `g`.
    public static func interpolateBackward<T: BinaryFloatingPoint & Sendable>(_ g: [T], planes: Int, _ plan: InterpolationPlan) -> [T] {
        let (ih, iw, oh, ow) = (plan.h.inSize, plan.w.inSize, plan.h.outSize, plan.w.outSize)
        precondition(g.count == planes * oh * ow, "interpolateBackward: \(g.count) elements for \(planes) planes of \(oh)×\(ow)")
        var dx = [T](repeating: 0, count: planes * ih * iw)
        if dx.isEmpty { return dx }
        // Stage 1 (per output row): R[oh, iw] = Σ_{ow reading iw} w·g[oh, ow], in Double.
        var rows = [Double](repeating: 0, count: planes * oh * iw)
        let wx = plan.w, hx = plan.h
        g.withUnsafeBufferPointer { gb in
            rows.withUnsafeMutableBufferPointer { rb in
                let gp = SendableConstPointer(gb.baseAddress!), rp = SendablePointer(rb.baseAddress!)
                Parallel.forEach(planes * oh, grain: max(1, 4096 / ow)) { row in
                    let gr = gp.base + row * ow, rr = rp.base + row * iw
                    wx.start.withUnsafeBufferPointer { st in
                        wx.readers.withUnsafeBufferPointer { rd in
                            wx.weights.withUnsafeBufferPointer { wt in
                                for i in 0..<iw {
                                    var s = 0.0
                                    for e in st[i]..<st[i + 1] { s += wt[e] * Double(gr[rd[e]]) }
                                    rr[i] = s
                                }
                            }
                        }
                    }
                }
            }
        }
        // Stage 2 (per input row): dx[ih, iw] = Σ_{oh reading ih} w·R[oh, iw].
        rows.withUnsafeBufferPointer { rb in
            dx.withUnsafeMutableBufferPointer { db in
                let rp = SendableConstPointer(rb.baseAddress!), dp = SendablePointer(db.baseAddress!)
                Parallel.forEach(planes * ih, grain: max(1, 4096 / iw)) { row in
                    let pl = row / ih, i = row % ih
                    var acc = [Double](repeating: 0, count: iw)
                    hx.start.withUnsafeBufferPointer { st in
                        hx.readers.withUnsafeBufferPointer { rd in
                            hx.weights.withUnsafeBufferPointer { wt in
                                for e in st[i]..<st[i + 1] {
                                    let src = rp.base + (pl * oh + rd[e]) * iw, w = wt[e]
                                    for j in 0..<iw { acc[j] += w * src[j] }
                                }
                            }
                        }
                    }
                    let out = dp.base + row * iw
                    for j in 0..<iw { out[j] = T(acc[j]) }
                }
            }
        }
        return dx
    }
}
