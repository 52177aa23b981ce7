import XCTest
import Tensors

final class NormTests: XCTestCase {
    /// y = norm(x; w, b) in Double with the kernels, statistics from x (or fixed ones).
    private func forward(_ x: [Double], _ w: [Double], _ b: [Double], _ s: NormShape, eps: Double,
                         fixed: (mean: [Double], rstd: [Double])? = nil) -> [Double] {
        if let fixed { return Kernels.normForward(x, s, mean: fixed.mean, rstd: fixed.rstd, weight: w, bias: b) }
        let (m, v) = Kernels.normMoments(x, s)
        return Kernels.normForward(x, s, mean: m, rstd: Kernels.normRstd(v, eps: eps), weight: w, bias: b)
    }

    /// Finite differences w.r.t. x, weight and bias for one layout.
    private func checkLayout(_ name: String, _ s: NormShape, eps: Double, fixedStats: Bool = false) {
        let n = s.p * s.c * s.q
        let x = OpsGradCheck.normals(n, seed: 21, scale: 1.5, shift: 0.3)
        let w = OpsGradCheck.normals(s.c, seed: 22, scale: 0.3, shift: 1)
        let b = OpsGradCheck.normals(s.c, seed: 23, scale: 0.3)
        let u = OpsGradCheck.normals(n, seed: 24)
        var fixed: (mean: [Double], rstd: [Double])? = nil
        let mean: [Double], rstd: [Double]
        if fixedStats {
            fixed = (OpsGradCheck.normals(s.statCount, seed: 25, scale: 0.5),
                     OpsGradCheck.normals(s.statCount, seed: 26, scale: 0.1, shift: 1))
            (mean, rstd) = fixed!
        } else {
            let (m, v) = Kernels.normMoments(x, s)
            (mean, rstd) = (m, Kernels.normRstd(v, eps: eps))
        }
        let (dx, dw, db) = Kernels.normBackward(x, u, s, mean: mean, rstd: rstd, weight: w, statsConstant: fixedStats)
        OpsGradCheck.check("\(name) dx", x, upstream: u, analytic: dx) { self.forward($0, w, b, s, eps: eps, fixed: fixed) }
        OpsGradCheck.check("\(name) dweight", w, upstream: u, analytic: dw) { self.forward(x, $0, b, s, eps: eps, fixed: fixed) }
        OpsGradCheck.check("\(name) dbias", b, upstream: u, analytic: db) { self.forward(x, w, $0, s, eps: eps, fixed: fixed) }
    }

    func testLayerNormFiniteDifferences() {
        checkLayout("layerNorm [5, 7]", NormShape(p: 5, c: 7, q: 1, grouping: .groups(1)), eps: 1e-5)
    }

    /// LayerNorm's row fast path ([P, C, 1], one group) agrees with the general per-position
    /// path (the same statistics seen as `.channels`), forward and backward.
    func testLayerNormRowPathMatchesGeneralPath() {
        let (p, c) = (6, 37)
        let x = OpsGradCheck.normals(p * c, seed: 27, scale: 2), g = OpsGradCheck.normals(p * c, seed: 28)
        let w = OpsGradCheck.normals(c, seed: 29, shift: 1), b = OpsGradCheck.normals(c, seed: 30)
        var outs: [[Double]] = []
        for grouping in [NormGrouping.groups(1), .channels] {
            let s = NormShape(p: p, c: c, q: 1, grouping: grouping)
            let (m, v) = Kernels.normMoments(x, s)
            let r = Kernels.normRstd(v, eps: 1e-5)
            let (dx, dw, db) = Kernels.normBackward(x, g, s, mean: m, rstd: r, weight: w, statsConstant: false)
            outs.append(Kernels.normForward(x, s, mean: m, rstd: r, weight: w, bias: b) + dx + dw + db)
        }
        XCTAssertLessThan(OpsGradCheck.maxAbs(outs[0], outs[1]), 1e-12)
    }

    func testLayerNorm2dFiniteDifferences() {
        // Q = 70 > the 64-position block: two position blocks per sample.
        checkLayout("layerNorm2d [2, 5, 70]", NormShape(p: 2, c: 5, q: 70, grouping: .channels), eps: 1e-6)
    }

    func testGroupNormFiniteDifferences() {
        checkLayout("groupNorm G=3 [2, 6, 5]", NormShape(p: 2, c: 6, q: 5, grouping: .groups(3)), eps: 1e-5)
        checkLayout("groupNorm G=1 [2, 4, 6]", NormShape(p: 2, c: 4, q: 6, grouping: .groups(1)), eps: 1e-5)
    }

    func testBatchNormFiniteDifferences() {
        // 18 channels: more than one 16-channel block in the weight-gradient pass.
        checkLayout("batchNorm train [3, 18, 4]", NormShape(p: 3, c: 18, q: 4, grouping: .batch), eps: 1e-5)
        checkLayout("batchNorm eval [3, 4, 5]", NormShape(p: 3, c: 4, q: 5, grouping: .batch), eps: 1e-5, fixedStats: true)
    }

    /// Hand values: [1, 2, 3, 4] has mean 2.5 and biased variance 1.25.
    func testLayerNormValues() {
        let x = Tensor(shape: [1, 4], data: [1, 2, 3, 4])
        let w = Tensor(shape: [4], data: [1, 2, 1, 1]), b = Tensor(shape: [4], data: [0, 0, 0, 10])
        let y = layerNorm(x, normalizedShape: [4], weight: w, bias: b, eps: 0)
        let r = 1 / 1.25.squareRoot()
        let want = [-1.5 * r, -0.5 * r * 2, 0.5 * r, 1.5 * r + 10]
        for (a, e) in zip(y.data, want) { XCTAssertEqual(Double(a), e, accuracy: 1e-6) }
        // LayerNorm2d normalizes over C at each pixel: [1, 2, 1, 2] NCHW with values per channel.
        let x2 = Tensor(shape: [1, 2, 1, 2], data: [0, 10, 2, 30])  // pixel 0: (0, 2), pixel 1: (10, 30)
        let y2 = layerNorm2d(x2, weight: nil, bias: nil, eps: 0)
        for (a, e) in zip(y2.data, [-1.0, -1, 1, 1]) { XCTAssertEqual(Double(a), e, accuracy: 1e-6) }
        // GroupNorm with 2 groups of 1 channel over H·W = 2.
        let y3 = groupNorm(x2, numGroups: 2, weight: nil, bias: nil, eps: 0)
        for (a, e) in zip(y3.data, [-1.0, 1, -1, 1]) { XCTAssertEqual(Double(a), e, accuracy: 1e-6) }
    }

    /// Running statistics: momentum update with the unbiased variance, count increments,
    /// cumulative average when momentum is nil, eval uses the running statistics.
    func testBatchNormRunningStats() {
        // Channel 0 values {1, 3, 5, 7}: mean 4, biased var 5, unbiased 20/3. Channel 1: {2, 2, 2, 6}.
        let x = Tensor(shape: [2, 2, 1, 2], data: [1, 3, 2, 2, 5, 7, 2, 6])
        let state = BatchNormState(numFeatures: 2, momentum: 0.1, eps: 1e-5)
        let y = state(x, weight: nil, bias: nil, training: true)
        XCTAssertEqual(state.numBatchesTracked, 1)
        XCTAssertEqual(Double(state.runningMean.data[0]), 0.1 * 4, accuracy: 1e-7)
        XCTAssertEqual(Double(state.runningMean.data[1]), 0.1 * 3, accuracy: 1e-7)
        XCTAssertEqual(Double(state.runningVar.data[0]), 0.9 + 0.1 * 20.0 / 3, accuracy: 1e-6)
        XCTAssertEqual(Double(state.runningVar.data[1]), 0.9 + 0.1 * 4, accuracy: 1e-6)  // biased 3, unbiased 4
        XCTAssertEqual(Double(y.data[0]), -3 / (5 + 1e-5).squareRoot(), accuracy: 1e-6)
        // Eval: (x − rm)/√(rv + eps).
        let ye = state(x, weight: nil, bias: nil, training: false)
        XCTAssertEqual(state.numBatchesTracked, 1)
        XCTAssertEqual(Double(ye.data[0]), (1 - 0.4) / (0.9 + 2.0 / 3 + 1e-5).squareRoot(), accuracy: 1e-6)
        // Cumulative average: factor 1/num_batches_tracked; after one batch the running stats are the batch's.
        let cum = BatchNormState(numFeatures: 2, momentum: nil)
        _ = cum(x, weight: nil, bias: nil, training: true)
        XCTAssertEqual(Double(cum.runningMean.data[0]), 4, accuracy: 1e-6)
        XCTAssertEqual(Double(cum.runningVar.data[0]), 20.0 / 3, accuracy: 1e-5)
    }

    /// The primitives through autograd (Float) agree with the Double kernels' gradients, for
    /// every norm and with x, weight and bias all requiring gradients.
    func testNormAutogradMatchesDoubleKernels() {
        let shape = [2, 6, 3, 4]
        let xd = OpsGradCheck.normals(shape.product, seed: 31, scale: 2, shift: 0.5)
        let ud = OpsGradCheck.normals(shape.product, seed: 32)
        let wd = OpsGradCheck.normals(6, seed: 33, scale: 0.2, shift: 1), bd = OpsGradCheck.normals(6, seed: 34)
        let cases: [(String, NormShape, (Tensor, Tensor, Tensor) -> Tensor)] = [
            ("groupNorm", NormShape(p: 2, c: 6, q: 12, grouping: .groups(3)),
             { groupNorm($0, numGroups: 3, weight: $1, bias: $2, eps: 1e-5) }),
            ("layerNorm2d", NormShape(p: 2, c: 6, q: 12, grouping: .channels),
             { layerNorm2d($0, weight: $1, bias: $2, eps: 1e-5) }),
            ("batchNorm", NormShape(p: 2, c: 6, q: 12, grouping: .batch),
             { batchNorm($0, runningMean: nil, runningVar: nil, weight: $1, bias: $2, training: true, eps: 1e-5) }),
        ]
        for (name, s, op) in cases {
            let x = Tensor(shape: shape, data: xd.map { Float($0) }, requiresGrad: true)
            let w = Tensor(shape: [6], data: wd.map { Float($0) }, requiresGrad: true)
            let b = Tensor(shape: [6], data: bd.map { Float($0) }, requiresGrad: true)
            let u = Tensor(shape: shape, data: ud.map { Float($0) })
            (op(x, w, b) * u).sum().backward()
            let xs = x.data.map { Double($0) }, ws = w.data.map { Double($0) }
            let (m, v) = Kernels.normMoments(xs, s)
            let (dx, dw, db) = Kernels.normBackward(xs, u.data.map { Double($0) }, s, mean: m,
                                                    rstd: Kernels.normRstd(v, eps: 1e-5), weight: ws, statsConstant: false)
            for (got, want, what) in [(x.grad!.data, dx, "x"), (w.grad!.data, dw, "weight"), (b.grad!.data, db, "bias")] {
                let e = OpsGradCheck.maxAbs(got.map { Double($0) }, want) / max(OpsGradCheck.norm(want) / Double(want.count).squareRoot(), 1e-12)
                XCTAssertLessThan(e, 1e-5, "\(name) grad \(what)")
            }
        }
        // layerNorm over the last two dims [3, 4] of [2, 6, 3, 4].
        let x = Tensor(shape: shape, data: xd.map { Float($0) }, requiresGrad: true)
        let w = Tensor(shape: [3, 4], data: (0..<12).map { 1 + 0.05 * Float($0) }, requiresGrad: true)
        (layerNorm(x, normalizedShape: [3, 4], weight: w, bias: nil) * Tensor(shape: shape, data: ud.map { Float($0) })).sum().backward()
        XCTAssertEqual(w.grad?.shape, [3, 4])
        XCTAssertEqual(x.grad?.shape, shape)
    }

    /// Forward and backward are bitwise identical with 1 and 2 threads (sizes large enough to split).
    func testNormThreadDeterminism() {
        let shape = [3, 40, 9, 30]
        let xd = OpsGradCheck.normals(shape.product, seed: 41, scale: 2).map { Float($0) }
        let ud = OpsGradCheck.normals(shape.product, seed: 42).map { Float($0) }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var results: [[[Float]]] = []
        for t in [1, 2] {
            Parallel.threads = t
            var r: [[Float]] = []
            for op in 0..<4 {
                let x = Tensor(shape: shape, data: xd, requiresGrad: true)
                let w = Tensor(repeating: 1.5, shape: [40], requiresGrad: true)
                let y: Tensor
                switch op {
                case 0: y = groupNorm(x, numGroups: 4, weight: w, bias: nil)
                case 1: y = layerNorm2d(x, weight: w, bias: nil)
                case 2: y = batchNorm(x, runningMean: nil, runningVar: nil, weight: w, bias: nil, training: true)
                default: y = layerNorm(x, normalizedShape: [30], weight: nil, bias: nil)
                }
                (y * Tensor(shape: shape, data: ud)).sum().backward()
                r += [y.data, x.grad!.data, w.grad?.data ?? []]
            }
            results.append(r)
        }
        XCTAssertEqual(results[0], results[1])
    }
}
