// Fused kernels of F-LMM's U-Net mask head, on channel-major activations.
//
// Legend: C input channels, O output channels, N images, H W map size, k kernel size (1 or 3,
// stride 1, "same" zero padding p = (k−1)/2), K = C·k² the reduction of the convolution,
// P = N·H·W positions. Layout "CNHW": activations are [C, N, H, W], so that a convolution of
// all N images is ONE GEMM with P columns, and concatenating channels is concatenating memory.
//
//   convCNHW            y [O, P] = W [O, K] · im2col(x) [K, P]  (im2col read through offsets)
//     weight grad       dW [O, K] += dy [O, P₀..P₁] · im2colᵀ, in chunks of positions whose
//                       im2col block is materialised (contiguous) and accumulated in p order
//     input grad        dx [C, P] = W̃ [C, O·k²] · im2col(dy padded by k−1−p), W̃ the flipped
//                       transposed kernel (a correlation on GEMM)
//   groupNormReLUCNHW   out = relu(GroupNorm(x)); statistics per (image, group) in Double
//   upsampledConvCNHW   y = conv_k(pad(bilinear_up(x))) computed at low resolution:
//                       P_t = W_t · x for each tap t (one GEMM), then for each tap row i,
//                       R_i = Σ_j shift_j(up_w(P_ij)) at low height, y = Σ_i shift_i(up_h(R_i)).
//                       Exact in real arithmetic (channel mixing commutes with the per-channel
//                       interpolation, and the vertical interpolation with horizontal shifts);
//                       k²·(H·W)/(h·w) times fewer multiply-adds than convolving the upsampled map.
//
// Determinism: every GEMM keeps gemmReference's order (k order per element, accumulation across
// position chunks continues the exact partial sums); every elementwise / reduction loop splits
// whole rows or planes over threads and reduces in a fixed order (8-lane Double partials per
// row, lanes then rows combined in index order). Results are bitwise identical on any thread
// count.

/// Geometry of an upsampled convolution: the bilinear axes (low → upsampled size), the output
/// frame (upsampled size plus zero padding at the bottom/right) and the kernel size.
public struct UpsampledConvPlan: Sendable, Equatable {
    public let up: InterpolationPlan
    /// Output frame [frameH, frameW] ⊇ the upsampled map [up.h.outSize, up.w.outSize].
    public let frameH: Int, frameW: Int
    /// 1 or 3 (padding (k−1)/2).
    public let kernelSize: Int

    public init(up: InterpolationPlan, frameH: Int, frameW: Int, kernelSize: Int) {
        precondition(up.mode == .bilinear, "UpsampledConvPlan: bilinear interpolation only")
        precondition(frameH >= up.h.outSize && frameW >= up.w.outSize,
                     "UpsampledConvPlan: frame \(frameH)×\(frameW) smaller than the upsampled \(up.h.outSize)×\(up.w.outSize)")
        precondition(kernelSize == 1 || kernelSize == 3, "UpsampledConvPlan: kernel size \(kernelSize) is not 1 or 3")
        self.up = up
        self.frameH = frameH
        self.frameW = frameW
        self.kernelSize = kernelSize
    }
}

extension Kernels {
    // MARK: - helpers

    /// (Σ a(i), Σ b(i)) over i < n in Double, in one pass: 8 lane partials (lane = i mod 8), then
    /// the lanes in order. A fixed order whatever the caller's thread.
    @inline(__always)
    static func laneSum2(_ n: Int, _ value: (Int) -> (Double, Double)) -> (Double, Double) {
        var acc = SIMD8<Double>(), acc2 = SIMD8<Double>()
        var i = 0
        while i + 8 <= n {
            var a = SIMD8<Double>(), b = SIMD8<Double>()
            for l in 0..<8 { (a[l], b[l]) = value(i + l) }
            acc += a
            acc2 += b
            i += 8
        }
        var ta = SIMD8<Double>(), tb = SIMD8<Double>()
        for j in i..<n { (ta[j - i], tb[j - i]) = value(j) }
        acc += ta
        acc2 += tb
        var s = 0.0, s2 = 0.0
        for l in 0..<8 {
            s += acc[l]
            s2 += acc2[l]
        }
        return (s, s2)
    }

    /// Zero-padded copy [C, N, H + 2p, W + 2p] of x [C, N, H, W].
    static func padCNHW<T: BinaryFloatingPoint & Sendable>(_ x: UnsafePointer<T>, planes: Int, h: Int, w: Int, pad p: Int) -> [T] {
        let hp = h + 2 * p, wp = w + 2 * p
        var out = [T](repeating: 0, count: planes * hp * wp)
        out.withUnsafeMutableBufferPointer { ob in
            let op = SendablePointer(ob.baseAddress!), xp = SendableConstPointer(x)
            Parallel.forEach(planes, grain: max(1, 16384 / max(h * w, 1))) { pl in
                for y in 0..<h {
                    (op.base + (pl * hp + y + p) * wp + p).update(from: xp.base + (pl * h + y) * w, count: w)
                }
            }
        }
        return out
    }

    /// im2col offsets over a padded [C, N, Hp, Wp] buffer: rows (c, i, j), columns (n, y, x).
    static func cnhwOffsets(c: Int, n: Int, h: Int, w: Int, k: Int, hp: Int, wp: Int) -> (rows: [Int], cols: [Int]) {
        var rows = [Int](repeating: 0, count: c * k * k)
        for ch in 0..<c {
            for i in 0..<k { for j in 0..<k { rows[(ch * k + i) * k + j] = ch * n * hp * wp + i * wp + j } }
        }
        var cols = [Int](repeating: 0, count: n * h * w)
        for img in 0..<n {
            for y in 0..<h { for x in 0..<w { cols[(img * h + y) * w + x] = img * hp * wp + y * wp + x } }
        }
        return (rows, cols)
    }

    // MARK: - convolution, stride 1, same padding, no bias

    /// y [O, N, H, W] = conv(x [C, N, H, W], weight [O, C, k, k]) with zero padding (k−1)/2.
    public static func convCNHW<T: BinaryFloatingPoint & Sendable>(_ x: [T], c: Int, n: Int, h: Int, w: Int,
                                                                   weight: [T], o: Int, k: Int) -> [T] {
        precondition(k % 2 == 1 && x.count == c * n * h * w && weight.count == o * c * k * k,
                     "convCNHW: x \(x.count) for [\(c), \(n), \(h), \(w)], weight \(weight.count) for [\(o), \(c), \(k), \(k)]")
        let p = (k - 1) / 2, hp = h + 2 * p, wp = w + 2 * p
        if o * n * h * w == 0 || c == 0 { return [T](repeating: 0, count: o * n * h * w) }
        let xp = p > 0 ? x.withUnsafeBufferPointer { padCNHW($0.baseAddress!, planes: c * n, h: h, w: w, pad: p) } : x
        let (rowOff, colOff) = cnhwOffsets(c: c, n: n, h: h, w: w, k: k, hp: hp, wp: wp)
        return xp.withUnsafeBufferPointer { bp in
            weight.withUnsafeBufferPointer { wb in
                uninitializedArray(o * n * h * w) { (yb: UnsafeMutablePointer<T>) in
                    gemmMappedB(m: o, n: n * h * w, k: c * k * k, a: wb.baseAddress!, lda: c * k * k, transA: false,
                                base: bp.baseAddress!, rowOff: rowOff, colOff: colOff,
                                c: yb, ldc: n * h * w, accumulate: false)
                }
            }
        }
    }

    /// Gradients of `convCNHW` from gy [O, N, H, W]: dx [C, N, H, W] and dweight [O, C, k, k].
    public static func convCNHWBackward<T: BinaryFloatingPoint & Sendable>(
        _ gy: [T], x: [T], c: Int, n: Int, h: Int, w: Int, weight: [T], o: Int, k: Int,
        needX: Bool, needWeight: Bool
    ) -> (dx: [T]?, dweight: [T]?) {
        let p = (k - 1) / 2, hp = h + 2 * p, wp = w + 2 * p, kk = c * k * k, pos = n * h * w
        var dweight: [T]? = nil
        if needWeight {
            var dw = [T](repeating: 0, count: o * kk)
            if pos > 0 && kk > 0 && o > 0 {
                let xp = p > 0 ? x.withUnsafeBufferPointer { padCNHW($0.baseAddress!, planes: c * n, h: h, w: w, pad: p) } : x
                // Chunks of whole image rows; the chunk's im2col block [K, rows·W] stays about 1 MB
                // and is copied row segment by row segment (contiguous runs of W floats).
                let imageRows = n * h
                let rowsPerChunk = max(1, min(imageRows, (1 << 18) / max(kk * w, 1)))
                var col = [T](repeating: 0, count: kk * rowsPerChunk * w)
                xp.withUnsafeBufferPointer { bp in
                    gy.withUnsafeBufferPointer { gb in
                        dw.withUnsafeMutableBufferPointer { db in
                            var r0 = 0
                            while r0 < imageRows {
                                let nr = min(rowsPerChunk, imageRows - r0), len = nr * w, first = r0
                                col.withUnsafeMutableBufferPointer { cb in
                                    let cp = SendablePointer(cb.baseAddress!), src = SendableConstPointer(bp.baseAddress!)
                                    Parallel.forEach(kk, grain: max(1, 8192 / len)) { r in
                                        let ch = r / (k * k), t = r % (k * k), i = t / k, j = t % k
                                        for q in 0..<nr {
                                            let img = (first + q) / h, y = (first + q) % h
                                            let from = src.base + ((ch * n + img) * hp + y + i) * wp + j
                                            (cp.base + r * len + q * w).update(from: from, count: w)
                                        }
                                    }
                                    // dW[O, K] (+)= dy[:, positions of the chunk] · col[K, len]ᵀ
                                    gemmGeneric(transA: false, transB: true, m: o, n: kk, k: len,
                                                a: gb.baseAddress! + first * w, lda: pos, b: cb.baseAddress!, ldb: len,
                                                c: db.baseAddress!, ldc: kk, accumulate: first > 0)
                                }
                                r0 += nr
                            }
                        }
                    }
                }
            }
            dweight = dw
        }
        var dx: [T]? = nil
        if needX {
            // Written whole by the GEMM when o·k² ≥ 1.
            let written = pos > 0 && c > 0 && o > 0 && k > 0
            var gx = outputArray(T.self, c * pos, writtenWhole: written)
            if written {
                // W̃[c, (o, i, j)] = W[o, c, k−1−i, k−1−j]
                let k2 = o * k * k
                let wt = flippedTransposedKernel(weight, o: o, c: c, taps: k * k)
                let q = k - 1 - p
                let gyp = q > 0 ? gy.withUnsafeBufferPointer { padCNHW($0.baseAddress!, planes: o * n, h: h, w: w, pad: q) } : gy
                let (rowOff, colOff) = cnhwOffsets(c: o, n: n, h: h, w: w, k: k, hp: h + 2 * q, wp: w + 2 * q)
                gyp.withUnsafeBufferPointer { bp in
                    wt.withUnsafeBufferPointer { wb in
                        gx.withUnsafeMutableBufferPointer { xb in
                            gemmMappedB(m: c, n: pos, k: k2, a: wb.baseAddress!, lda: k2, transA: false,
                                        base: bp.baseAddress!, rowOff: rowOff, colOff: colOff,
                                        c: xb.baseAddress!, ldc: pos, accumulate: false)
                        }
                    }
                }
            }
            dx = gx
        }
        return (dx, dweight)
    }

    // MARK: - GroupNorm + ReLU

    /// Statistics of GroupNorm on x [C, N, H, W]: mean and rstd per (image, group), index n·G + g.
    /// One pass: per row Σx and Σx² in Double (8 lane partials), rows combined in channel order;
    /// var = E[x²] − mean² (Double keeps ~40 bits even when |mean| is 1000× the deviation).
    public static func groupNormStatsCNHW<T: BinaryFloatingPoint & Sendable>(
        _ x: [T], c: Int, n: Int, hw: Int, groups: Int, eps: Double
    ) -> (mean: [Double], rstd: [Double]) {
        let cg = c / groups, m = Double(cg * hw), rows = c * n
        var rowSum = [Double](repeating: 0, count: rows), rowSq = rowSum
        x.withUnsafeBufferPointer { xb in
            rowSum.withUnsafeMutableBufferPointer { sb in
                rowSq.withUnsafeMutableBufferPointer { qb in
                    guard let x0 = xb.baseAddress else { return }
                    let xp = SendableConstPointer(x0), sp = SendablePointer(sb.baseAddress!), qp = SendablePointer(qb.baseAddress!)
                    Parallel.forEach(rows, grain: max(1, 16384 / max(hw, 1))) { r in
                        let row = xp.base + r * hw
                        (sp[r], qp[r]) = laneSum2(hw) { i in
                            let v = Double(row[i])
                            return (v, v * v)
                        }
                    }
                }
            }
        }
        var mean = [Double](repeating: 0, count: n * groups), rstd = mean
        for img in 0..<n {
            for g in 0..<groups {
                var s = 0.0, q = 0.0
                for ch in (g * cg)..<((g + 1) * cg) {
                    s += rowSum[ch * n + img]
                    q += rowSq[ch * n + img]
                }
                let mu = s / m
                mean[img * groups + g] = mu
                rstd[img * groups + g] = 1 / (Swift.max(q / m - mu * mu, 0) + eps).squareRoot()
            }
        }
        return (mean, rstd)
    }

    /// relu(GroupNorm(x)) on x [C, N, H, W]: y = max(0, (x − mean)·rstd·γ[c] + β[c]), evaluated in
    /// Double and rounded once.
    public static func groupNormReLUCNHW<T: BinaryFloatingPoint & Sendable>(
        _ x: [T], c: Int, n: Int, hw: Int, groups: Int, mean: [Double], rstd: [Double], weight: [T], bias: [T]
    ) -> [T] {
        let cg = c / groups
        if x.isEmpty { return [] }
        return x.withUnsafeBufferPointer { xb in
            uninitializedArray(x.count) { (yb: UnsafeMutablePointer<T>) in
                let xp = SendableConstPointer(xb.baseAddress!), yp = SendablePointer(yb)
                Parallel.forEach(c * n, grain: max(1, 16384 / max(hw, 1))) { r in
                    let ch = r / n, img = r % n, st = img * groups + ch / cg
                    let a = rstd[st] * Double(weight[ch]), b = Double(bias[ch]) - mean[st] * a
                    let src = xp.base + r * hw, dst = yp.base + r * hw
                    for i in 0..<hw {
                        let v = Double(src[i]) * a + b
                        dst[i] = v > 0 ? T(v) : 0
                    }
                }
            }
        }
    }

    /// Gradients of `groupNormReLUCNHW` from g (gradient of the output `y`): dx, dweight, dbias.
    public static func groupNormReLUCNHWBackward<T: BinaryFloatingPoint & Sendable>(
        _ g: [T], x: [T], y: [T], c: Int, n: Int, hw: Int, groups: Int, mean: [Double], rstd: [Double], weight: [T]
    ) -> (dx: [T], dweight: [T], dbias: [T]) {
        let cg = c / groups, m = Double(cg * hw), rows = c * n
        var sumG = [Double](repeating: 0, count: rows), sumGX = sumG
        g.withUnsafeBufferPointer { gb in
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeBufferPointer { yb in
                    sumG.withUnsafeMutableBufferPointer { sb in
                        sumGX.withUnsafeMutableBufferPointer { sxb in
                            guard let g0 = gb.baseAddress, let x0 = xb.baseAddress, let y0 = yb.baseAddress else { return }
                            let gp = SendableConstPointer(g0), xp = SendableConstPointer(x0), yp = SendableConstPointer(y0)
                            let sp = SendablePointer(sb.baseAddress!), sxp = SendablePointer(sxb.baseAddress!)
                            Parallel.forEach(rows, grain: max(1, 16384 / max(hw, 1))) { r in
                                let st = (r % n) * groups + (r / n) / cg, mm = mean[st], rs = rstd[st]
                                let gr = gp.base + r * hw, xr = xp.base + r * hw, yr = yp.base + r * hw
                                (sp[r], sxp[r]) = laneSum2(hw) { i in
                                    guard yr[i] > 0 else { return (0, 0) }
                                    let gv = Double(gr[i])
                                    return (gv, gv * ((Double(xr[i]) - mm) * rs))
                                }
                            }
                        }
                    }
                }
            }
        }
        var dweight = [T](repeating: 0, count: c), dbias = dweight
        for ch in 0..<c {
            var a = 0.0, b = 0.0
            for img in 0..<n {
                a += sumGX[ch * n + img]
                b += sumG[ch * n + img]
            }
            dweight[ch] = T(a)
            dbias[ch] = T(b)
        }
        var s1 = [Double](repeating: 0, count: n * groups), s2 = s1
        for img in 0..<n {
            for gi in 0..<groups {
                var a = 0.0, b = 0.0
                for ch in (gi * cg)..<((gi + 1) * cg) {
                    a += Double(weight[ch]) * sumG[ch * n + img]
                    b += Double(weight[ch]) * sumGX[ch * n + img]
                }
                s1[img * groups + gi] = a / m
                s2[img * groups + gi] = b / m
            }
        }
        if x.isEmpty { return ([], dweight, dbias) }
        let (m1, m2) = (s1, s2)
        let dx = g.withUnsafeBufferPointer { gb in
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeBufferPointer { yb in
                    uninitializedArray(x.count) { (db: UnsafeMutablePointer<T>) in
                        let gp = SendableConstPointer(gb.baseAddress!), xp = SendableConstPointer(xb.baseAddress!)
                        let yp = SendableConstPointer(yb.baseAddress!), dp = SendablePointer(db)
                        Parallel.forEach(rows, grain: max(1, 16384 / max(hw, 1))) { r in
                            let ch = r / n, st = (r % n) * groups + ch / cg
                            let mm = mean[st], rs = rstd[st], wc = Double(weight[ch]), a = m1[st], b = m2[st]
                            let gr = gp.base + r * hw, xr = xp.base + r * hw, yr = yp.base + r * hw, dr = dp.base + r * hw
                            for i in 0..<hw {
                                let xh = (Double(xr[i]) - mm) * rs
                                let gz = yr[i] > 0 ? Double(gr[i]) * wc : 0
                                dr[i] = T(rs * (gz - a - xh * b))
                            }
                        }
                    }
                }
            }
        }
        return (dx, dweight, dbias)
    }

    // MARK: - upsampled convolution

    /// Wt[(o·k² + t), c] = weight[o, c, t]: the kernel as one row per (output channel, tap).
    static func tapMajor<T>(_ weight: [T], o: Int, c: Int, taps: Int) -> [T] {
        permute(weight, [o, c, taps], [0, 2, 1])
    }

    /// The inverse of `tapMajor`: [(O, taps), C] → [O, C, taps].
    static func channelMajor<T>(_ wt: [T], o: Int, c: Int, taps: Int) -> [T] {
        permute(wt, [o, taps, c], [0, 2, 1])
    }

    /// y [O, N, frameH, frameW] = conv_k(pad(up(x))) for x [C, N, h, w] (see the file header).
    public static func upsampledConvCNHW<T: BinaryFloatingPoint & Sendable>(
        _ x: [T], c: Int, n: Int, weight: [T], o: Int, _ plan: UpsampledConvPlan
    ) -> [T] {
        let (h, w) = (plan.up.h.inSize, plan.up.w.inSize), k = plan.kernelSize, taps = k * k
        let (fh, fw) = (plan.frameH, plan.frameW)
        precondition(x.count == c * n * h * w && weight.count == o * c * taps,
                     "upsampledConvCNHW: x \(x.count) for [\(c), \(n), \(h), \(w)], weight \(weight.count) for [\(o), \(c), \(k), \(k)]")
        let lowP = n * h * w
        // P [(o, t), N, h, w], written whole by the GEMM when c ≥ 1.
        let projWritten = c > 0 && lowP > 0 && o > 0
        var proj = outputArray(T.self, o * taps * lowP, writtenWhole: projWritten)
        let wt = tapMajor(weight, o: o, c: c, taps: taps)
        if projWritten {
            wt.withUnsafeBufferPointer { wb in
                x.withUnsafeBufferPointer { xb in
                    proj.withUnsafeMutableBufferPointer { pb in
                        gemmGeneric(transA: false, transB: false, m: o * taps, n: lowP, k: c, a: wb.baseAddress!, lda: c,
                                    b: xb.baseAddress!, ldb: lowP, c: pb.baseAddress!, ldc: lowP, accumulate: false)
                    }
                }
            }
        }
        if o * n * fh * fw == 0 { return [] }
        let uh = plan.up.h, uw = plan.up.w, pad = (k - 1) / 2, hs = uh.outSize, ws = uw.outSize
        return proj.withUnsafeBufferPointer { pb in
            uninitializedArray(o * n * fh * fw) { (yb: UnsafeMutablePointer<T>) in
                let pp = SendableConstPointer(pb.baseAddress!), yp = SendablePointer(yb)
                Parallel.forEach(o * n) { job in
                    let oc = job / n, img = job % n
                    let acc = UnsafeMutablePointer<Double>.allocate(capacity: fh * fw)
                    let r = UnsafeMutablePointer<Double>.allocate(capacity: h * fw)
                    defer { acc.deallocate(); r.deallocate() }
                    acc.initialize(repeating: 0, count: fh * fw)
                    for i in 0..<k {
                        r.initialize(repeating: 0, count: h * fw)
                        // R_i[row, X] = Σ_j up_w(P_ij[row])[X + j − pad]
                        for j in 0..<k {
                            let src = pp.base + ((oc * taps + i * k + j) * n + img) * h * w
                            for X in 0..<fw {
                                let xs = X + j - pad
                                guard xs >= 0 && xs < ws else { continue }
                                let a0 = uw.i0[xs], a1 = uw.i1[xs], l0 = Double(uw.l0[xs]), l1 = Double(uw.l1[xs])
                                for row in 0..<h {
                                    r[row * fw + X] += l0 * Double(src[row * w + a0]) + l1 * Double(src[row * w + a1])
                                }
                            }
                        }
                        // y[Y, :] += up_h(R_i)[Y + i − pad, :]
                        for Y in 0..<fh {
                            let ys = Y + i - pad
                            guard ys >= 0 && ys < hs else { continue }
                            let b0 = uh.i0[ys] * fw, b1 = uh.i1[ys] * fw, l0 = Double(uh.l0[ys]), l1 = Double(uh.l1[ys])
                            for X in 0..<fw { acc[Y * fw + X] += l0 * r[b0 + X] + l1 * r[b1 + X] }
                        }
                    }
                    let dst = yp.base + job * fh * fw
                    for e in 0..<(fh * fw) { dst[e] = T(acc[e]) }
                }
            }
        }
    }

    /// Gradients of `upsampledConvCNHW` from gy [O, N, frameH, frameW]: dx [C, N, h, w] and
    /// dweight [O, C, k, k].
    public static func upsampledConvCNHWBackward<T: BinaryFloatingPoint & Sendable>(
        _ gy: [T], x: [T], c: Int, n: Int, weight: [T], o: Int, _ plan: UpsampledConvPlan, needX: Bool, needWeight: Bool
    ) -> (dx: [T]?, dweight: [T]?) {
        let (h, w) = (plan.up.h.inSize, plan.up.w.inSize), k = plan.kernelSize, taps = k * k
        let (fh, fw) = (plan.frameH, plan.frameW), lowP = n * h * w
        let uh = plan.up.h, uw = plan.up.w, pad = (k - 1) / 2, hs = uh.outSize, ws = uw.outSize
        // G [(o, t), N, h, w]: the gradient of the low-resolution projections P (every element
        // written below).
        var gproj = unfilledArray(T.self, o * taps * lowP)
        if !gproj.isEmpty {
            gy.withUnsafeBufferPointer { gb in
                gproj.withUnsafeMutableBufferPointer { pb in
                    let gp = SendableConstPointer(gb.baseAddress!), pp = SendablePointer(pb.baseAddress!)
                    Parallel.forEach(o * n) { job in
                        let oc = job / n, img = job % n
                        let g = gp.base + job * fh * fw
                        let t = UnsafeMutablePointer<Double>.allocate(capacity: h * fw)
                        let acc = UnsafeMutablePointer<Double>.allocate(capacity: h * w)
                        defer { t.deallocate(); acc.deallocate() }
                        for i in 0..<k {
                            // T_i = up_hᵀ(shift_iᵀ(g)) : [h, frameW]
                            t.initialize(repeating: 0, count: h * fw)
                            for Y in 0..<fh {
                                let ys = Y + i - pad
                                guard ys >= 0 && ys < hs else { continue }
                                let b0 = uh.i0[ys] * fw, b1 = uh.i1[ys] * fw, l0 = Double(uh.l0[ys]), l1 = Double(uh.l1[ys])
                                for X in 0..<fw {
                                    let gv = Double(g[Y * fw + X])
                                    t[b0 + X] += l0 * gv
                                    t[b1 + X] += l1 * gv
                                }
                            }
                            // G_ij = up_wᵀ(shift_jᵀ(T_i)) : [h, w]
                            for j in 0..<k {
                                acc.initialize(repeating: 0, count: h * w)
                                for X in 0..<fw {
                                    let xs = X + j - pad
                                    guard xs >= 0 && xs < ws else { continue }
                                    let a0 = uw.i0[xs], a1 = uw.i1[xs], l0 = Double(uw.l0[xs]), l1 = Double(uw.l1[xs])
                                    for row in 0..<h {
                                        let tv = t[row * fw + X]
                                        acc[row * w + a0] += l0 * tv
                                        acc[row * w + a1] += l1 * tv
                                    }
                                }
                                let dst = pp.base + ((oc * taps + i * k + j) * n + img) * h * w
                                for e in 0..<(h * w) { dst[e] = T(acc[e]) }
                            }
                        }
                    }
                }
            }
        }
        let wt = tapMajor(weight, o: o, c: c, taps: taps)
        var dweight: [T]? = nil
        if needWeight {
            // [(o, t), C], written whole by the GEMM when lowP ≥ 1.
            let written = lowP > 0 && c > 0 && o > 0
            var dwt = outputArray(T.self, o * taps * c, writtenWhole: written)
            if written {
                gproj.withUnsafeBufferPointer { gb in
                    x.withUnsafeBufferPointer { xb in
                        dwt.withUnsafeMutableBufferPointer { db in
                            gemmGeneric(transA: false, transB: true, m: o * taps, n: c, k: lowP, a: gb.baseAddress!, lda: lowP,
                                        b: xb.baseAddress!, ldb: lowP, c: db.baseAddress!, ldc: c, accumulate: false)
                        }
                    }
                }
            }
            dweight = channelMajor(dwt, o: o, c: c, taps: taps)
        }
        var dx: [T]? = nil
        if needX {
            // Written whole by the GEMM when o·taps ≥ 1.
            let written = lowP > 0 && c > 0 && o > 0 && taps > 0
            var gx = outputArray(T.self, c * lowP, writtenWhole: written)
            if written {
                wt.withUnsafeBufferPointer { wb in
                    gproj.withUnsafeBufferPointer { gb in
                        gx.withUnsafeMutableBufferPointer { xb in
                            gemmGeneric(transA: true, transB: false, m: c, n: lowP, k: o * taps, a: wb.baseAddress!, lda: c,
                                        b: gb.baseAddress!, ldb: lowP, c: xb.baseAddress!, ldc: lowP, accumulate: false)
                        }
                    }
                }
            }
            dx = gx
        }
        return (dx, dweight)
    }
}
