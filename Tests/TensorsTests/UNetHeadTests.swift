import XCTest
import NN
import Tensors
import FLMM

/// Σ g·f(x) and its finite-difference gradient in Double (central, step 1e-6).
private func finiteDifference(_ x: [Double], _ f: ([Double]) -> [Double], _ g: [Double]) -> [Double] {
    func loss(_ v: [Double]) -> Double { zip(f(v), g).reduce(0) { $0 + $1.0 * $1.1 } }
    return x.indices.map { i in
        var p = x, m = x
        p[i] += 1e-6
        m[i] -= 1e-6
        return (loss(p) - loss(m)) / 2e-6
    }
}

private func maxAbsDiff(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

private func randoms(_ n: Int, _ rng: inout PhiloxRNG, scale: Double = 1) -> [Double] {
    (0..<n).map { _ in scale * (2 * rng.nextDouble() - 1) }
}

/// conv2d (stride 1, zero padding (k−1)/2) on [C, N, H, W] by the definition, in Double.
private func naiveConv(_ x: [Double], c: Int, n: Int, h: Int, w: Int, _ wt: [Double], o: Int, k: Int) -> [Double] {
    let p = (k - 1) / 2
    var y = [Double](repeating: 0, count: o * n * h * w)
    for oc in 0..<o { for img in 0..<n { for yy in 0..<h { for xx in 0..<w {
        var s = 0.0
        for ch in 0..<c { for i in 0..<k { for j in 0..<k {
            let sy = yy + i - p, sx = xx + j - p
            if sy >= 0 && sy < h && sx >= 0 && sx < w {
                s += wt[((oc * c + ch) * k + i) * k + j] * x[((ch * n + img) * h + sy) * w + sx]
            }
        }}}
        y[((oc * n + img) * h + yy) * w + xx] = s
    }}}}
    return y
}

final class UNetHeadTests: XCTestCase {
    // MARK: fused primitives, checked in Double

    func testConvCNHWMatchesDefinitionAndFiniteDifferences() {
        var rng = PhiloxRNG(seed: 21)
        for k in [1, 3] {
            let (c, n, h, w, o) = (3, 2, 5, 4, 2)
            let x = randoms(c * n * h * w, &rng), wt = randoms(o * c * k * k, &rng), g = randoms(o * n * h * w, &rng)
            let y = Kernels.convCNHW(x, c: c, n: n, h: h, w: w, weight: wt, o: o, k: k)
            XCTAssertLessThan(maxAbsDiff(y, naiveConv(x, c: c, n: n, h: h, w: w, wt, o: o, k: k)), 1e-12)
            let (dx, dw) = Kernels.convCNHWBackward(g, x: x, c: c, n: n, h: h, w: w, weight: wt, o: o, k: k,
                                                     needX: true, needWeight: true)
            let fdx = finiteDifference(x, { Kernels.convCNHW($0, c: c, n: n, h: h, w: w, weight: wt, o: o, k: k) }, g)
            let fdw = finiteDifference(wt, { Kernels.convCNHW(x, c: c, n: n, h: h, w: w, weight: $0, o: o, k: k) }, g)
            XCTAssertLessThan(maxAbsDiff(dx!, fdx), 1e-8, "k \(k)")
            XCTAssertLessThan(maxAbsDiff(dw!, fdw), 1e-8, "k \(k)")
        }
    }

    func testWinogradMatchesDirectConvolutionAndItsGradients() {
        var rng = PhiloxRNG(seed: 22)
        // Odd and even sizes: partial tiles at the bottom/right edges.
        for (h, w) in [(5, 3), (4, 6), (1, 1), (7, 8)] {
            let (c, n, o) = (3, 2, 4)
            let x = randoms(c * n * h * w, &rng), wt = randoms(o * c * 9, &rng), g = randoms(o * n * h * w, &rng)
            let y = Kernels.conv3x3Winograd(x, c: c, n: n, h: h, w: w, weight: wt, o: o)
            XCTAssertLessThan(maxAbsDiff(y, naiveConv(x, c: c, n: n, h: h, w: w, wt, o: o, k: 3)), 1e-12, "\(h)×\(w)")
            let (dx, dw) = Kernels.conv3x3WinogradBackward(g, x: x, c: c, n: n, h: h, w: w, weight: wt, o: o,
                                                            needX: true, needWeight: true)
            let (rx, rw) = Kernels.convCNHWBackward(g, x: x, c: c, n: n, h: h, w: w, weight: wt, o: o, k: 3,
                                                     needX: true, needWeight: true)
            XCTAssertLessThan(maxAbsDiff(dx!, rx!), 1e-12, "\(h)×\(w)")
            XCTAssertLessThan(maxAbsDiff(dw!, rw!), 1e-12, "\(h)×\(w)")
        }
        // And in Float, the two algorithms agree to rounding.
        let x = Tensor.normal([8, 2, 12, 10], rng: &rng), wt = Tensor.normal([6, 8, 3, 3], rng: &rng)
        let a = x.conv3x3WinogradCNHW(weight: wt).data, b = x.convCNHW(weight: wt).data
        let err = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
            / b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
        XCTAssertLessThan(err, 2e-6)
    }

    func testGroupNormReLUFiniteDifferences() {
        var rng = PhiloxRNG(seed: 23)
        for groups in [1, 2] {
            let (c, n, hw) = (4, 2, 6)
            let x = randoms(c * n * hw, &rng, scale: 2), gw = randoms(c, &rng).map { 1 + 0.3 * $0 }
            let gb = randoms(c, &rng, scale: 0.3), g = randoms(c * n * hw, &rng)
            func forward(_ x: [Double], _ gw: [Double], _ gb: [Double]) -> [Double] {
                let (m, r) = Kernels.groupNormStatsCNHW(x, c: c, n: n, hw: hw, groups: groups, eps: 1e-5)
                return Kernels.groupNormReLUCNHW(x, c: c, n: n, hw: hw, groups: groups, mean: m, rstd: r, weight: gw, bias: gb)
            }
            let y = forward(x, gw, gb)
            // By the definition: per (image, group) mean and biased variance.
            let cg = c / groups
            for img in 0..<n {
                for gi in 0..<groups {
                    var vals: [Double] = []
                    for ch in (gi * cg)..<((gi + 1) * cg) { vals += x[((ch * n) + img) * hw..<((ch * n) + img + 1) * hw] }
                    let mean = vals.reduce(0, +) / Double(vals.count)
                    let rstd = 1 / (vals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(vals.count) + 1e-5).squareRoot()
                    for ch in (gi * cg)..<((gi + 1) * cg) {
                        for i in 0..<hw {
                            let e = ((ch * n) + img) * hw + i
                            XCTAssertEqual(y[e], max(0, (x[e] - mean) * rstd * gw[ch] + gb[ch]), accuracy: 1e-12)
                        }
                    }
                }
            }
            let (m, r) = Kernels.groupNormStatsCNHW(x, c: c, n: n, hw: hw, groups: groups, eps: 1e-5)
            let (dx, dgw, dgb) = Kernels.groupNormReLUCNHWBackward(g, x: x, y: y, c: c, n: n, hw: hw, groups: groups,
                                                                    mean: m, rstd: r, weight: gw)
            XCTAssertLessThan(maxAbsDiff(dx, finiteDifference(x, { forward($0, gw, gb) }, g)), 1e-7, "groups \(groups)")
            XCTAssertLessThan(maxAbsDiff(dgw, finiteDifference(gw, { forward(x, $0, gb) }, g)), 1e-7, "groups \(groups)")
            XCTAssertLessThan(maxAbsDiff(dgb, finiteDifference(gb, { forward(x, gw, $0) }, g)), 1e-7, "groups \(groups)")
        }
    }

    func testUpsampledConvEqualsConvolvingTheUpsampledMap() {
        var rng = PhiloxRNG(seed: 24)
        // 3×3 after ×(8/3) scale-factor upsampling into a frame padded to multiples of 8, and
        // InterpConv's 1×1 after a ×2 resize by size.
        let cases: [(h: Int, w: Int, up: InterpolationPlan, frame: (Int, Int), k: Int)] = [
            (3, 2, InterpolationPlan(mode: .bilinear, h: .linear(inSize: 3, outSize: 8, scale: 8.0 / 3, alignCorners: false),
                                     w: .linear(inSize: 2, outSize: 5, scale: 8.0 / 3, alignCorners: false)), (8, 8), 3),
            (3, 4, InterpolationPlan(mode: .bilinear, h: .linear(inSize: 3, outSize: 6, scale: nil, alignCorners: false),
                                     w: .linear(inSize: 4, outSize: 8, scale: nil, alignCorners: false)), (6, 8), 1),
        ]
        for t in cases {
            let (c, n, o) = (3, 2, 2), k = t.k
            let plan = UpsampledConvPlan(up: t.up, frameH: t.frame.0, frameW: t.frame.1, kernelSize: k)
            let x = randoms(c * n * t.h * t.w, &rng), wt = randoms(o * c * k * k, &rng)
            let g = randoms(o * n * t.frame.0 * t.frame.1, &rng)
            let y = Kernels.upsampledConvCNHW(x, c: c, n: n, weight: wt, o: o, plan)
            // Reference: upsample, zero-pad to the frame, convolve.
            let (hs, ws) = (t.up.h.outSize, t.up.w.outSize), (fh, fw) = t.frame
            let up = Kernels.interpolate(x, planes: c * n, t.up)
            var framed = [Double](repeating: 0, count: c * n * fh * fw)
            for pl in 0..<(c * n) { for yy in 0..<hs { for xx in 0..<ws { framed[(pl * fh + yy) * fw + xx] = up[(pl * hs + yy) * ws + xx] } } }
            XCTAssertLessThan(maxAbsDiff(y, naiveConv(framed, c: c, n: n, h: fh, w: fw, wt, o: o, k: k)), 1e-12, "k \(k)")
            let (dx, dw) = Kernels.upsampledConvCNHWBackward(g, x: x, c: c, n: n, weight: wt, o: o, plan, needX: true, needWeight: true)
            XCTAssertLessThan(maxAbsDiff(dx!, finiteDifference(x, { Kernels.upsampledConvCNHW($0, c: c, n: n, weight: wt, o: o, plan) }, g)), 1e-8)
            XCTAssertLessThan(maxAbsDiff(dw!, finiteDifference(wt, { Kernels.upsampledConvCNHW(x, c: c, n: n, weight: $0, o: o, plan) }, g)), 1e-8)
        }
    }

    // MARK: the head

    func testParameterNamesAreFLMMKeysAndInitIsMmseg() {
        var rng = PhiloxRNG(seed: 25)
        let head = UNetHead(UNetHeadConfig(inChannels: 384), rng: &rng)
        let keys = head.namedParameters().map(\.0)
        XCTAssertEqual(keys.count, 53)
        XCTAssertTrue(keys.contains("encoder.1.1.convs.0.gn.weight"))
        XCTAssertTrue(keys.contains("decoder.2.upsample.interp_upsample.1.conv.weight"))
        XCTAssertEqual(keys.first, "encoder.0.0.convs.0.conv.weight")
        XCTAssertEqual(keys.last, "conv_seg.bias")
        // F-LMM's parameter count: 7,182,785 + 576·C_in.
        XCTAssertEqual(head.namedParameters().reduce(0) { $0 + $1.1.count }, 7_182_785 + 576 * 384)
        // Kaiming normal, fan_out, ReLU gain: std √(2 / (64·9)) for the first conv; norms 1 / 0.
        let w = head.encoder[0].block.convs[0].conv.weight.data
        let std = (w.map { Double($0) * Double($0) }.reduce(0, +) / Double(w.count)).squareRoot()
        XCTAssertEqual(std, (2.0 / 576).squareRoot(), accuracy: 0.002)
        XCTAssertEqual(head.encoder[0].block.convs[0].groupNorm!.weight!.data, [Float](repeating: 1, count: 64))
        XCTAssertEqual(head.convSeg.bias!.data, [0])
        XCTAssertNil(head.encoder[0].block.convs[0].conv.bias)
    }

    /// The fused channel-major path equals the NCHW reference composition, forward and backward.
    func testFusedPathMatchesReference() throws {
        var rng = PhiloxRNG(seed: 26)
        for (upsample, normalize, shape) in [(Optional(16), true, [2, 6, 6, 5]), (nil, false, [2, 6, 10, 13])] {
            var cfg = UNetHeadConfig(inChannels: 6)
            cfg.baseChannels = 4
            cfg.upsampleInput = upsample
            cfg.normalizeInput = normalize
            let head = UNetHead(cfg, rng: &rng)
            XCTAssertTrue(head.usesFusedPath)
            for (_, p) in head.namedParameters() where p.shape.count == 1 {   // non-trivial norm affine
                p.assign(p.data.map { $0 + 0.1 * Float(rng.nextDouble() - 0.5) })
            }
            let x = Tensor.uniform(shape, rng: &rng, requiresGrad: true)
            var results: [[Tensor]] = []
            for fused in [true, false] {
                for (_, p) in head.namedParameters() { p.zeroGrad() }
                x.zeroGrad()
                let y = fused ? try head(x) : try head.reference(x)
                let g = Tensor(shape: y.shape, data: (0..<y.count).map { Float(($0 * 7919) % 13) / 13 - 0.5 })
                (y * g).sum().backward()
                results.append([y, x.grad!] + head.namedParameters().map { $0.1.grad! })
            }
            let expectedShape = upsample == nil ? [2, 1, 10, 13] : [2, 1, 16, 13]
            XCTAssertEqual(results[0][0].shape, expectedShape)
            for (a, b) in zip(results[0], results[1]) {
                let num = zip(a.data, b.data).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
                let den = b.data.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
                XCTAssertLessThan(num / max(den, 1e-30), 1e-5, "shape \(a.shape)")
            }
        }
    }

    func testBadInputsAreTypedErrors() {
        var rng = PhiloxRNG(seed: 27)
        var cfg = UNetHeadConfig(inChannels: 2)
        cfg.baseChannels = 2
        let head = UNetHead(cfg, rng: &rng)
        XCTAssertThrowsError(try head(Tensor(shape: [1, 2, 2, 2], data: [0, 0.5, 1, 0.2, 0.3, 1.5, 0, 0]))) { e in
            XCTAssertEqual(e as? UNetHeadError, .inputOutOfRange(index: 5, value: 1.5))
        }
        XCTAssertThrowsError(try head(Tensor(shape: [1, 2, 1, 1], data: [.nan, 0]))) { e in
            guard case .inputOutOfRange(let i, _)? = e as? UNetHeadError else { return XCTFail("\(e)") }
            XCTAssertEqual(i, 0)
        }
        XCTAssertThrowsError(try head(Tensor.zeros([1, 3, 4, 4]))) { e in
            XCTAssertEqual(e as? UNetHeadError, .inputShape(expected: "[N, 2, h, w]", actual: [1, 3, 4, 4]))
        }
    }

    /// A training step gives the same bits on 1 and 2 threads.
    func testStepIsBitwiseIdenticalOnOneAndTwoThreads() throws {
        var rng = PhiloxRNG(seed: 28)
        var cfg = UNetHeadConfig(inChannels: 16)
        cfg.baseChannels = 8
        let head = UNetHead(cfg, rng: &rng)
        let x = Tensor.uniform([3, 16, 24, 24], rng: &rng)
        let g = Tensor.normal([3, 1, 64, 64], rng: &rng)
        var runs: [[[Float]]] = []
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for t in [1, 2] {
            Parallel.threads = t
            for (_, p) in head.namedParameters() { p.zeroGrad() }
            let y = try head(x)
            (y * g).sum().backward()
            runs.append([y.data] + head.namedParameters().map { $0.1.grad!.data })
        }
        XCTAssertEqual(runs[0], runs[1])
    }

    // MARK: golden cases

    func testGoldenUNetHeads() throws {
        for name in ["unet_head", "unet_head_raw", "unet_head_bn"] { try assertGoldenPasses(name) }
    }
}
