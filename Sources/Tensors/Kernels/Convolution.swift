// 2-D convolution and transposed convolution (NCHW, groups 1), forward and backward, on GEMM,
// generic over the scalar (Float: our kernels; Double: the reference GEMMs, so that
// finite-difference checks run this very index arithmetic).
//
// Legend: N images, C input channels, O output channels, H W input size, Ho Wo output size,
// kH kW kernel size, K = C·kH·kW the reduction of the forward GEMM, P = Ho·Wo positions.
//
// The im2col matrix is never stored. The input is copied once per image into a zero-padded
// plane Xp [C, Hp, Wp]; then im2col(x)[(c,i,j), (oy,ox)] = Xp[rowOff(c,i,j) + colOff(oy,ox)] with
//   rowOff(c, i, j) = c·Hp·Wp + i·dH·Wp + j·dW,   colOff(oy, ox) = oy·sH·Wp + ox·sW,
// and the GEMMs read it through these two offset tables (Kernels.gemmMappedB / gemmMappedA):
//   forward        y_n [O, P] = W [O, K] · im2col(x_n)
//   weight grad    dWᵀ [K, O] = Σ_n im2col(x_n) · dy_nᵀ       (images in order, positions in order)
//   input grad     stride 1:  dx_n [C, H·W] = W̃ [C, O·kH·kW] · im2col'(dy_n padded by d(k−1)−p),
//                             W̃[c, (o,i,j)] = W[o, c, kH−1−i, kW−1−j]  (a correlation, again on GEMM)
//                  otherwise: dcol = Wᵀ · dy_n (GEMM), then col2im: each dx element adds its
//                             contributions in (i, j, position) order.
// A transposed convolution is the input gradient of the convolution with the same weight,
// and its gradients are that convolution's forward and weight gradient.
// A 1×1 stride-1 convolution without padding runs its backward as plain GEMMs on x itself
// (im2col(x_n) = x_n), and a convolution whose kernel equals its stride over planes it tiles
// exactly writes dx in place of col2im (one contribution per element): the same chains of
// products either way.

import CBLAS

/// Stride, padding and dilation of a 2-D convolution (PyTorch's Conv2d arguments), per axis.
public struct Conv2dGeometry: Sendable, Equatable {
    public var strideH: Int, strideW: Int
    public var padH: Int, padW: Int
    public var dilationH: Int, dilationW: Int

    public init(stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        precondition(stride.0 >= 1 && stride.1 >= 1, "conv2d: stride \(stride) must be >= 1")
        precondition(padding.0 >= 0 && padding.1 >= 0, "conv2d: padding \(padding) must be >= 0")
        precondition(dilation.0 >= 1 && dilation.1 >= 1, "conv2d: dilation \(dilation) must be >= 1")
        (strideH, strideW) = stride
        (padH, padW) = padding
        (dilationH, dilationW) = dilation
    }

    /// Output size of the convolution: floor((H + 2p − d(k−1) − 1) / s) + 1 per axis.
    public func outputSize(h: Int, w: Int, kh: Int, kw: Int) -> (Int, Int) {
        let oh = (h + 2 * padH - dilationH * (kh - 1) - 1) / strideH + 1
        let ow = (w + 2 * padW - dilationW * (kw - 1) - 1) / strideW + 1
        return (oh, ow)
    }
}

extension Kernels {
    /// The offset tables of im2col over a padded plane [C, Hp, Wp]: rows (c, i, j), columns (oy, ox).
    static func im2colOffsets(channels c: Int, kh: Int, kw: Int, oh: Int, ow: Int, hp: Int, wp: Int,
                              _ g: Conv2dGeometry) -> (rows: [Int], cols: [Int]) {
        var rows = [Int](repeating: 0, count: c * kh * kw)
        for ch in 0..<c {
            for i in 0..<kh {
                for j in 0..<kw { rows[(ch * kh + i) * kw + j] = ch * hp * wp + i * g.dilationH * wp + j * g.dilationW }
            }
        }
        var cols = [Int](repeating: 0, count: oh * ow)
        for oy in 0..<oh {
            for ox in 0..<ow { cols[oy * ow + ox] = oy * g.strideH * wp + ox * g.strideW }
        }
        return (rows, cols)
    }

    /// Copies planes [C, H, W] into zero-padded planes [C, H + top + bottom, W + left + right].
    static func padPlanes<T: BinaryFloatingPoint>(_ x: UnsafePointer<T>, channels c: Int, h: Int, w: Int,
                                                  top: Int, bottom: Int, left: Int, right: Int) -> [T] {
        let hp = h + top + bottom, wp = w + left + right
        var out = [T](repeating: 0, count: c * hp * wp)
        out.withUnsafeMutableBufferPointer { o in
            for ch in 0..<c {
                for y in 0..<h {
                    (o.baseAddress! + (ch * hp + y + top) * wp + left).update(from: x + (ch * h + y) * w, count: w)
                }
            }
        }
        return out
    }

    static func checkConv(_ xShape: [Int], _ wShape: [Int], op: String) {
        precondition(xShape.count == 4, "\(op): input must be [N, C, H, W], got \(xShape)")
        precondition(wShape.count == 4, "\(op): weight must be 4-D, got \(wShape)")
    }

    // MARK: convolution cores (no bias)

    /// y [N, O, Ho, Wo] = conv(x [N, C, H, W], w [O, C, kH, kW]); each y starts from `bias[o]`
    /// (or 0) and adds the products in (c, i, j) order.
    static func convForward<T: BinaryFloatingPoint>(_ x: [T], n: Int, c: Int, h: Int, w: Int,
                                                    weight: [T], o: Int, kh: Int, kw: Int, bias: [T]?,
                                                    _ g: Conv2dGeometry) -> [T] {
        let (oh, ow) = g.outputSize(h: h, w: w, kh: kh, kw: kw)
        precondition(oh > 0 && ow > 0, "conv2d: input \(h)×\(w) too small for kernel \(kh)×\(kw) with \(g)")
        let hp = h + 2 * g.padH, wp = w + 2 * g.padW
        let (rowOff, colOff) = im2colOffsets(channels: c, kh: kh, kw: kw, oh: oh, ow: ow, hp: hp, wp: wp, g)
        let p = oh * ow, k = c * kh * kw
        // Each output plane starts at its bias (the GEMM accumulates onto it) or is written whole
        // by the GEMM; zeros only when there is no GEMM (k = 0) and no bias.
        var y = bias == nil && k == 0 ? [T](repeating: 0, count: n * o * p) : unfilledArray(T.self, n * o * p)
        if let bias {
            y.withUnsafeMutableBufferPointer { py in
                for img in 0..<n { for oc in 0..<o { (py.baseAddress! + (img * o + oc) * p).update(repeating: bias[oc], count: p) } }
            }
        }
        if k == 0 || o == 0 { return y }
        x.withUnsafeBufferPointer { px in
            weight.withUnsafeBufferPointer { pw in
                y.withUnsafeMutableBufferPointer { py in
                    for img in 0..<n {
                        let xi = px.baseAddress! + img * c * h * w
                        let padded = g.padH > 0 || g.padW > 0
                        let xp = padded ? padPlanes(xi, channels: c, h: h, w: w, top: g.padH, bottom: g.padH,
                                                    left: g.padW, right: g.padW) : []
                        let out = py.baseAddress! + img * o * p
                        let run = { (base: UnsafePointer<T>) in
                            gemmMappedB(m: o, n: p, k: k, a: pw.baseAddress!, lda: k, transA: false, base: base,
                                        rowOff: rowOff, colOff: colOff, c: out, ldc: p,
                                        accumulate: bias != nil)
                        }
                        if padded { xp.withUnsafeBufferPointer { run($0.baseAddress!) } } else { run(xi) }
                    }
                }
            }
        }
        return y
    }

    /// dW [O, C, kH, kW] = Σ_n dy_n · im2col(x_n)ᵀ, images in order, positions in order.
    static func convWeightGrad<T: BinaryFloatingPoint>(_ gy: [T], _ x: [T], n: Int, c: Int, h: Int, w: Int,
                                                       o: Int, kh: Int, kw: Int, _ g: Conv2dGeometry) -> [T] {
        let (oh, ow) = g.outputSize(h: h, w: w, kh: kh, kw: kw)
        let hp = h + 2 * g.padH, wp = w + 2 * g.padW
        let (rowOff, colOff) = im2colOffsets(channels: c, kh: kh, kw: kw, oh: oh, ow: ow, hp: hp, wp: wp, g)
        let p = oh * ow, k = c * kh * kw
        var gwT = [T](repeating: 0, count: k * o)   // [K, O]
        if k == 0 || o == 0 || p == 0 { return gwT }
        x.withUnsafeBufferPointer { px in
            gy.withUnsafeBufferPointer { pg in
                gwT.withUnsafeMutableBufferPointer { pw in
                    for img in 0..<n {
                        let xi = px.baseAddress! + img * c * h * w
                        let padded = g.padH > 0 || g.padW > 0
                        let xp = padded ? padPlanes(xi, channels: c, h: h, w: w, top: g.padH, bottom: g.padH,
                                                    left: g.padW, right: g.padW) : []
                        let out = pw.baseAddress!
                        let run = { (base: UnsafePointer<T>) in
                            gemmMappedA(m: k, n: o, k: p, base: base, rowOff: rowOff, colOff: colOff,
                                        b: pg.baseAddress! + img * o * p, ldb: p, transB: true,
                                        c: out, ldc: o, accumulate: img > 0)
                        }
                        if padded { xp.withUnsafeBufferPointer { run($0.baseAddress!) } } else { run(xi) }
                    }
                }
            }
        }
        return permute(gwT, [k, o], [1, 0])
    }

    /// dx [N, C, H, W] from dy [N, O, Ho, Wo] (the adjoint of `convForward` in x).
    static func convInputGrad<T: BinaryFloatingPoint & SendableMetatype>(_ gy: [T], weight: [T], n: Int, c: Int, h: Int, w: Int,
                                                      o: Int, kh: Int, kw: Int, _ g: Conv2dGeometry) -> [T] {
        let (oh, ow) = g.outputSize(h: h, w: w, kh: kh, kw: kw)
        let qh = g.dilationH * (kh - 1) - g.padH, qw = g.dilationW * (kw - 1) - g.padW
        if g.strideH == 1 && g.strideW == 1 && qh >= 0 && qw >= 0 {
            return convInputGradStride1(gy, weight: weight, n: n, c: c, h: h, w: w, o: o, kh: kh, kw: kw,
                                        oh: oh, ow: ow, qh: qh, qw: qw, g)
        }
        return convInputGradCol2im(gy, weight: weight, n: n, c: c, h: h, w: w, o: o, kh: kh, kw: kw, oh: oh, ow: ow, g)
    }

    /// W̃ [C, O·taps] with W̃[ch, (oc, t)] = W[oc, ch, taps − 1 − t] for W [O, C, taps]: the
    /// kernel flipped in both spatial axes with its channel axes swapped (the input gradient of
    /// a stride-1 convolution is a correlation with it). A row of W̃ per thread chunk.
    static func flippedTransposedKernel<T: SendableMetatype>(_ weight: [T], o: Int, c: Int, taps: Int) -> [T] {
        let k2 = o * taps
        if c * k2 == 0 { return [] }
        return weight.withUnsafeBufferPointer { pw in
            let src = SendableConstPointer(pw.baseAddress!)
            return uninitializedArray(c * k2) { pd in
                let dst = SendablePointer(pd)
                Parallel.forEachChunk(c, grain: max(1, (1 << 16) / k2)) { chs in
                    for ch in chs {
                        let row = dst.base + ch * k2
                        for oc in 0..<o {
                            let from = src.base + (oc * c + ch) * taps, to = row + oc * taps
                            for t in 0..<taps { to[t] = from[taps - 1 - t] }
                        }
                    }
                }
            }
        }
    }

    /// Stride 1: dx_n = W̃ · im2col'(dy_n padded by (qh, qw)), a dilated correlation with the
    /// flipped, transposed kernel. Output size: Ho + 2qh − dH(kH−1) = H.
    static func convInputGradStride1<T: BinaryFloatingPoint & SendableMetatype>(
        _ gy: [T], weight: [T], n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int,
        oh: Int, ow: Int, qh: Int, qw: Int, _ g: Conv2dGeometry
    ) -> [T] {
        let k2 = o * kh * kw
        if k2 == 0 || c == 0 { return [T](repeating: 0, count: n * c * h * w) }
        let wt = flippedTransposedKernel(weight, o: o, c: c, taps: kh * kw)
        let hq = oh + 2 * qh, wq = ow + 2 * qw
        let unit = Conv2dGeometry(stride: (1, 1), padding: (0, 0), dilation: (g.dilationH, g.dilationW))
        let (rowOff, colOff) = im2colOffsets(channels: o, kh: kh, kw: kw, oh: h, ow: w, hp: hq, wp: wq, unit)
        // Each image's GEMM writes its whole gradient plane set: no zero fill.
        return uninitializedArray(n * c * h * w) { px in
            gy.withUnsafeBufferPointer { pg in
                wt.withUnsafeBufferPointer { pw in
                    for img in 0..<n {
                        let gyp = padPlanes(pg.baseAddress! + img * o * oh * ow, channels: o, h: oh, w: ow,
                                            top: qh, bottom: qh, left: qw, right: qw)
                        gyp.withUnsafeBufferPointer { b in
                            gemmMappedB(m: c, n: h * w, k: k2, a: pw.baseAddress!, lda: k2, transA: false,
                                        base: b.baseAddress!, rowOff: rowOff, colOff: colOff,
                                        c: px + img * c * h * w, ldc: h * w, accumulate: false)
                        }
                    }
                }
            }
        }
    }

    /// Any stride: dcol = Wᵀ · dy_n (a GEMM per block of channels), then col2im into a padded
    /// plane; each element adds its contributions in (i, j, position) order.
    static func convInputGradCol2im<T: BinaryFloatingPoint>(
        _ gy: [T], weight: [T], n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int,
        oh: Int, ow: Int, _ g: Conv2dGeometry
    ) -> [T] {
        let hp = h + 2 * g.padH, wp = w + 2 * g.padW
        let p = oh * ow, k = c * kh * kw, taps = kh * kw
        let patches = kh == g.strideH && kw == g.strideW && g.padH == 0 && g.padW == 0 && g.dilationH == 1
            && g.dilationW == 1 && h == oh * kh && w == ow * kw
        // Every element is written below (in place for patches, else copied out of its plane).
        var gx = outputArray(T.self, n * c * h * w, writtenWhole: k > 0 && p > 0)
        if k == 0 || p == 0 { return gx }
        // Channels per block: the block's dcol [cb·kH·kW, P] stays within about 4 MB.
        let cb = max(1, min(c, (1 << 20) / max(taps * p, 1)))
        var dcol = [T](repeating: 0, count: cb * taps * p)
        var plane = [T](repeating: 0, count: patches ? 0 : hp * wp)
        weight.withUnsafeBufferPointer { pw in
            gy.withUnsafeBufferPointer { pg in
                for img in 0..<n {
                    var c0 = 0
                    while c0 < c {
                        let cn = min(cb, c - c0)
                        // dcol[(c,i,j), q] = Σ_o W[o, (c,i,j)] · dy[o, q]: rows c0·taps ..< (c0+cn)·taps of Wᵀ.
                        dcol.withUnsafeMutableBufferPointer { pd in
                            if o == 0 {
                                pd.update(repeating: 0)
                            } else {
                                gemmGeneric(transA: true, transB: false, m: cn * taps, n: p, k: o,
                                            a: pw.baseAddress! + c0 * taps, lda: k,
                                            b: pg.baseAddress! + img * o * p, ldb: p,
                                            c: pd.baseAddress!, ldc: p, accumulate: false)
                            }
                        }
                        if patches {
                            // Kernel = stride, no padding, no dilation, the planes tiled exactly:
                            // each input element has one contribution, 0 + dcol (as the plane's
                            // sum from zero), written in place; rows (channel, oy) over the threads.
                            let dst = (img * c + c0) * h * w
                            dcol.withUnsafeBufferPointer { pd in gx.withUnsafeMutableBufferPointer { px in
                                let dp = SendableConstPointer(pd.baseAddress!), xq = SendablePointer(px.baseAddress! + dst)
                                Parallel.forEach(cn * oh, grain: Swift.max(1, (1 << 14) / Swift.max(taps * ow, 1))) { unit in
                                    let ch = unit / oh, oy = unit % oh
                                    for i in 0..<kh {
                                        for j in 0..<kw {
                                            let src = dp.base + ((ch * kh + i) * kw + j) * p + oy * ow
                                            let out = xq.base + ch * h * w + (oy * kh + i) * w + j
                                            for ox in 0..<ow { out[ox * kw] = 0 + src[ox] }
                                        }
                                    }
                                }
                            }}
                            c0 += cn
                            continue
                        }
                        for ch in 0..<cn {
                            for t in plane.indices { plane[t] = 0 }
                            for i in 0..<kh {
                                for j in 0..<kw {
                                    let row = ((ch * kh + i) * kw + j) * p
                                    for oy in 0..<oh {
                                        let base = (oy * g.strideH + i * g.dilationH) * wp + j * g.dilationW
                                        for ox in 0..<ow { plane[base + ox * g.strideW] += dcol[row + oy * ow + ox] }
                                    }
                                }
                            }
                            let dst = ((img * c) + c0 + ch) * h * w
                            for y in 0..<h {
                                for xx in 0..<w { gx[dst + y * w + xx] = plane[(y + g.padH) * wp + xx + g.padW] }
                            }
                        }
                        c0 += cn
                    }
                }
            }
        }
        return gx
    }

    /// Per-channel sums of g [N, O, S] over images and positions, in Double, in that order.
    static func channelSums<T: BinaryFloatingPoint & SendableMetatype>(_ g: [T], n: Int, o: Int, s: Int) -> [T] {
        // Channels are independent sums: split over the threads, and four channels advance
        // together (one lane each); each is still added in (image, position) order.
        var acc = [Double](repeating: 0, count: o)
        if g.isEmpty || o == 0 { return acc.map { T($0) } }   // no positions: zero sums
        g.withUnsafeBufferPointer { pg in
            acc.withUnsafeMutableBufferPointer { pa in
                let gp = SendableConstPointer(pg.baseAddress!), ap = SendablePointer(pa.baseAddress!)
                // Float: sixteen channels at once, their rows transposed 16 positions at a time so
                // that each position gives one vector of the sixteen channels (two chains of eight
                // Double lanes); the channels past the last sixteen as below, four at a time.
                let sixteens = T.self == Float.self ? o / 16 : 0
                if sixteens > 0 {
                    Parallel.forEach(sixteens, grain: Swift.max(1, (1 << 16) / Swift.max(16 * n * s, 1))) { grp in
                        let o0 = 16 * grp
                        let tile = UnsafeMutableRawPointer.allocate(byteCount: 1024, alignment: 64)
                            .bindMemory(to: Float.self, capacity: 256)
                        defer { tile.deallocate() }
                        var a0 = SIMD8<Double>(), a1 = SIMD8<Double>()
                        for img in 0..<n {
                            let r0 = UnsafeRawPointer(gp.base + (img * o + o0) * s).assumingMemoryBound(to: Float.self)
                            var q0 = 0
                            while q0 + 16 <= s {
                                flmm_transpose16(r0 + q0, s, tile, 16)
                                for q in 0..<16 {
                                    let v = UnsafeRawPointer(tile + 16 * q).load(as: SIMD16<Float>.self)
                                    a0 += flmm_widen8(v.lowHalf)
                                    a1 += flmm_widen8(v.highHalf)
                                }
                                q0 += 16
                            }
                            for q in q0..<s {
                                for i in 0..<8 {
                                    a0[i] += Double(r0[i * s + q])
                                    a1[i] += Double(r0[(8 + i) * s + q])
                                }
                            }
                        }
                        for i in 0..<8 {
                            ap.base[o0 + i] = a0[i]
                            ap.base[o0 + 8 + i] = a1[i]
                        }
                    }
                }
                let first = 16 * sixteens
                Parallel.forEachChunk((o - first + 3) / 4, grain: Swift.max(1, (1 << 16) / Swift.max(4 * n * s, 1))) { quads in
                    for quad in quads {
                        // Channels o0 ..< o0 + cn; the lanes past cn repeat channel o0 and are not used.
                        let o0 = first + 4 * quad, cn = Swift.min(4, o - o0)
                        var a = SIMD4<Double>()
                        for img in 0..<n {
                            let r0 = gp.base + (img * o + o0) * s
                            let r1 = cn > 1 ? r0 + s : r0, r2 = cn > 2 ? r0 + 2 * s : r0, r3 = cn > 3 ? r0 + 3 * s : r0
                            for q in 0..<s { a += SIMD4(Double(r0[q]), Double(r1[q]), Double(r2[q]), Double(r3[q])) }
                        }
                        for i in 0..<cn { ap.base[o0 + i] = a[i] }
                    }
                }
            }
        }
        return acc.map { T($0) }
    }

    // MARK: public kernels

    /// The output shape of `conv2d`: [N, O, Ho, Wo].
    public static func conv2dShape(_ xShape: [Int], _ wShape: [Int], _ g: Conv2dGeometry) -> [Int] {
        checkConv(xShape, wShape, op: "conv2d")
        let (oh, ow) = g.outputSize(h: xShape[2], w: xShape[3], kh: wShape[2], kw: wShape[3])
        return [xShape[0], wShape[0], oh, ow]
    }

    /// torch.nn.functional.conv2d (groups 1): x [N, C, H, W], weight [O, C, kH, kW], bias [O]?
    /// → [N, O, Ho, Wo]. Each output is bias (or 0) plus the products in (c, i, j) order.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func conv2d<T: BinaryFloatingPoint>(_ x: [T], _ xShape: [Int], weight: [T], _ wShape: [Int],
                                                      bias: [T]?, _ g: Conv2dGeometry) -> [T] {
        checkConv(xShape, wShape, op: "conv2d")
        precondition(xShape[1] == wShape[1],
                     "conv2d: input \(xShape) has \(xShape[1]) channels, weight \(wShape) expects \(wShape[1])")
        return convForward(x, n: xShape[0], c: xShape[1], h: xShape[2], w: xShape[3], weight: weight,
                           o: wShape[0], kh: wShape[2], kw: wShape[3], bias: bias, g)
    }

    /// Gradients of `conv2d` given dy [N, O, Ho, Wo]: (dx, dW, dbias), each nil when not asked for.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func conv2dBackward<T: BinaryFloatingPoint & SendableMetatype>(
        _ gy: [T], x: [T], _ xShape: [Int], weight: [T], _ wShape: [Int], _ g: Conv2dGeometry,
        needX: Bool, needWeight: Bool, needBias: Bool
    ) -> (x: [T]?, weight: [T]?, bias: [T]?) {
        let (n, c, h, w) = (xShape[0], xShape[1], xShape[2], xShape[3])
        let (o, kh, kw) = (wShape[0], wShape[2], wShape[3])
        let (oh, ow) = g.outputSize(h: h, w: w, kh: kh, kw: kw)
        if kh == 1 && kw == 1 && g.strideH == 1 && g.strideW == 1 && g.padH == 0 && g.padW == 0 {
            let (gx, gw) = conv1x1Backward(gy, x: x, weight: weight, n: n, c: c, s: h * w, o: o,
                                           needX: needX, needWeight: needWeight)
            return (gx, gw, needBias ? channelSums(gy, n: n, o: o, s: oh * ow) : nil)
        }
        let gx = needX ? convInputGrad(gy, weight: weight, n: n, c: c, h: h, w: w, o: o, kh: kh, kw: kw, g) : nil
        let gw = needWeight ? convWeightGrad(gy, x, n: n, c: c, h: h, w: w, o: o, kh: kh, kw: kw, g) : nil
        let gb = needBias ? channelSums(gy, n: n, o: o, s: oh * ow) : nil
        return (gx, gw, gb)
    }

    /// dx and dW of a 1×1 convolution with stride 1 and no padding, where the im2col matrix of
    /// image i is x_i [C, S] itself: dx_i = Wᵀ dy_i, dW = Σ_i dy_i x_iᵀ (images in order), as
    /// plain GEMMs with nothing packed through an index map. Each element is the same chain of
    /// products as `convInputGrad` / `convWeightGrad` (over o, resp. over positions then images).
    static func conv1x1Backward<T: BinaryFloatingPoint>(_ gy: [T], x: [T], weight: [T], n: Int, c: Int, s: Int,
                                                        o: Int, needX: Bool, needWeight: Bool) -> ([T]?, [T]?) {
        var gx: [T]?, gw: [T]?
        gy.withUnsafeBufferPointer { pg in
            let g0 = pg.baseAddress!
            if needX {
                gx = o == 0 || s == 0 ? [T](repeating: 0, count: n * c * s) : uninitializedArray(n * c * s) { px in
                    weight.withUnsafeBufferPointer { pw in
                        for img in 0..<n {
                            gemmGeneric(transA: true, transB: false, m: c, n: s, k: o, a: pw.baseAddress!, lda: c,
                                        b: g0 + img * o * s, ldb: s, c: px + img * c * s, ldc: s, accumulate: false)
                        }
                    }
                }
            }
            if needWeight {
                var w = [T](repeating: 0, count: o * c)
                if s > 0 && n > 0 {
                    x.withUnsafeBufferPointer { px in
                        w.withUnsafeMutableBufferPointer { pw in
                            for img in 0..<n {
                                gemmGeneric(transA: false, transB: true, m: o, n: c, k: s, a: g0 + img * o * s, lda: s,
                                            b: px.baseAddress! + img * c * s, ldb: s, c: pw.baseAddress!, ldc: c,
                                            accumulate: img > 0)
                            }
                        }
                    }
                }
                gw = w
            }
        }
        return (gx, gw)
    }

    /// The output shape of `convTranspose2d`: [N, O, (H−1)s − 2p + d(k−1) + op + 1, …].
    public static func convTranspose2dShape(_ xShape: [Int], _ wShape: [Int], _ g: Conv2dGeometry,
                                            outputPadding: (Int, Int)) -> [Int] {
        checkConv(xShape, wShape, op: "convTranspose2d")
        let oh = (xShape[2] - 1) * g.strideH - 2 * g.padH + g.dilationH * (wShape[2] - 1) + outputPadding.0 + 1
        let ow = (xShape[3] - 1) * g.strideW - 2 * g.padW + g.dilationW * (wShape[3] - 1) + outputPadding.1 + 1
        return [xShape[0], wShape[1], oh, ow]
    }

    /// torch.nn.functional.conv_transpose2d (groups 1): x [N, C, H, W], weight [C, O, kH, kW],
    /// bias [O]? → [N, O, Ho, Wo]: the input gradient of conv2d(·, weight) with dy = x, plus bias.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func convTranspose2d<T: BinaryFloatingPoint & SendableMetatype>(_ x: [T], _ xShape: [Int], weight: [T], _ wShape: [Int],
                                                               bias: [T]?, _ g: Conv2dGeometry,
                                                               outputPadding: (Int, Int) = (0, 0)) -> [T] {
        let yShape = convTranspose2dShape(xShape, wShape, g, outputPadding: outputPadding)
        precondition(xShape[1] == wShape[0],
                     "convTranspose2d: input \(xShape) has \(xShape[1]) channels, weight \(wShape) expects \(wShape[0])")
        precondition(outputPadding.0 >= 0 && outputPadding.1 >= 0
                     && outputPadding.0 < g.strideH && outputPadding.1 < g.strideW,
                     "convTranspose2d: output padding \(outputPadding) must be >= 0 and smaller than the stride (\(g.strideH), \(g.strideW))")
        precondition(yShape[2] > 0 && yShape[3] > 0, "convTranspose2d: empty output \(yShape) for input \(xShape)")
        var y = convInputGrad(x, weight: weight, n: xShape[0], c: yShape[1], h: yShape[2], w: yShape[3],
                              o: xShape[1], kh: wShape[2], kw: wShape[3], g)
        if let bias {
            let s = yShape[2] * yShape[3]
            for img in 0..<yShape[0] {
                for oc in 0..<yShape[1] {
                    let b = bias[oc], base = (img * yShape[1] + oc) * s
                    for q in 0..<s { y[base + q] += b }
                }
            }
        }
        return y
    }

    /// Gradients of `convTranspose2d` given dy [N, O, Ho, Wo]: dx = conv2d(dy, weight),
    /// dW = the weight gradient of that convolution with dy as input and x as output gradient.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func convTranspose2dBackward<T: BinaryFloatingPoint & SendableMetatype>(
        _ gy: [T], x: [T], _ xShape: [Int], weight: [T], _ wShape: [Int], _ g: Conv2dGeometry,
        outputPadding: (Int, Int) = (0, 0), needX: Bool, needWeight: Bool, needBias: Bool
    ) -> (x: [T]?, weight: [T]?, bias: [T]?) {
        let yShape = convTranspose2dShape(xShape, wShape, g, outputPadding: outputPadding)
        let (n, o, oh, ow) = (yShape[0], yShape[1], yShape[2], yShape[3])
        let (c, kh, kw) = (xShape[1], wShape[2], wShape[3])
        let gx = needX ? convForward(gy, n: n, c: o, h: oh, w: ow, weight: weight, o: c, kh: kh, kw: kw, bias: nil, g) : nil
        let gw = needWeight ? convWeightGrad(x, gy, n: n, c: o, h: oh, w: ow, o: c, kh: kh, kw: kw, g) : nil
        let gb = needBias ? channelSums(gy, n: n, o: o, s: oh * ow) : nil
        return (gx, gw, gb)
    }
}
