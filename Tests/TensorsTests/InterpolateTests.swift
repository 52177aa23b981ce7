import XCTest
import Tensors

final class InterpolateTests: XCTestCase {
    /// x[h] = h² along H (W = 1), so each output shows its source coordinate.
    private func column(_ values: [Float]) -> Tensor { Tensor(shape: [1, 1, values.count, 1], data: values) }

    /// Scale factor 16/9 on H = 6: output floor(6·16/9) = 10 and ratio 1/s = 0.5625 (not 6/10).
    func testBilinearScaleFactorUsesInverseScale() {
        let x = column([0, 1, 4, 9, 16, 25])
        let y = interpolate(x, scaleFactor: (16.0 / 9.0, 1.0), mode: .bilinear, alignCorners: false)
        XCTAssertEqual(y.shape, [1, 1, 10, 1])
        // dst 0: src = max(0, 0.5625·0.5 − 0.5) = 0; dst 1: 0.34375; dst 9: 4.84375 (i0 4, l1 0.84375).
        XCTAssertEqual(y.data[0], 0)
        XCTAssertEqual(y.data[1], 0.34375)
        XCTAssertEqual(y.data[9], 16 * 0.15625 + 25 * 0.84375)
        // The same output size requested by size uses ratio 6/10: dst 1 -> src 0.4; dst 9 -> 5.2, clamped to x[5].
        let z = interpolate(x, size: (10, 1), mode: .bilinear, alignCorners: false)
        XCTAssertEqual(z.data[1], 0.4, accuracy: 1e-6)
        XCTAssertEqual(z.data[9], 25, accuracy: 1e-6)
        // W: 9 · 16/9 = 16 in Double -> 16 columns.
        let w = interpolate(Tensor.zeros([1, 1, 6, 9]), scaleFactor: (16.0 / 9.0, 16.0 / 9.0), mode: .bilinear)
        XCTAssertEqual(w.shape, [1, 1, 10, 16])
    }

    func testBilinearAlignCorners() {
        let x = column([0, 1, 4, 9, 16])
        // in 5 -> out 9: ratio 4/8 = 0.5; dst 3 -> src 1.5; dst 8 -> src 4 (the last input).
        let y = interpolate(x, size: (9, 1), mode: .bilinear, alignCorners: true)
        XCTAssertEqual(y.data[3], 2.5)
        XCTAssertEqual(y.data[8], 16)
        // With a scale factor, alignCorners ignores it: ratio (in−1)/(out−1); out = floor(5·2.5) = 12.
        let s = interpolate(x, scaleFactor: (2.5, 1.0), mode: .bilinear, alignCorners: true)
        XCTAssertEqual(s.shape, [1, 1, 12, 1])
        XCTAssertEqual(s.data[0], 0)
        XCTAssertEqual(s.data[11], 16, accuracy: 1e-5)
        // Output size 1: alignCorners reads x[0]; without alignCorners ratio 5 -> src 2 -> x[2].
        XCTAssertEqual(interpolate(x, size: (1, 1), mode: .bilinear, alignCorners: true).data, [0])
        XCTAssertEqual(interpolate(x, size: (1, 1), mode: .bilinear, alignCorners: false).data, [4])
        // in 6 -> out 1 without alignCorners: src 2.5, halfway between x[2] and x[3].
        XCTAssertEqual(interpolate(column([0, 1, 4, 9, 16, 25]), size: (1, 1), mode: .bilinear).data, [6.5])
    }

    /// Legacy nearest: src = min(floor(Float(dst) · Float(in)/Float(out)), in − 1) in Float32.
    func testNearestCoordinateRules() {
        // 26 -> 22 along W: ratio Float(26/22) = 1.1818181, dst 11 -> 12.999999 -> 12 (exact
        // integer arithmetic would give 13).
        let x = Tensor(shape: [1, 1, 1, 26], data: (0..<26).map { Float($0) })
        let y = interpolate(x, size: (1, 22))
        XCTAssertEqual(y.data[11], 12)
        XCTAssertEqual(y.data[21], 24)  // 21 · 1.1818181 = 24.8
        // 36 -> 45 (ratio 0.8): 0, 0, 1, 2, 3, 4, 4, 5, ...
        let a = InterpolationAxis.nearest(inSize: 36, outSize: 45, scale: nil)
        XCTAssertEqual(Array(a.i0.prefix(8)), [0, 0, 1, 2, 3, 4, 4, 5])
        XCTAssertEqual(a.i0.last, 35)
        // 36 -> 12: every third.
        XCTAssertEqual(InterpolationAxis.nearest(inSize: 36, outSize: 12, scale: nil).i0, (0..<12).map { 3 * $0 })
        // out == 2·in: dst >> 1; out == in: identity.
        XCTAssertEqual(InterpolationAxis.nearest(inSize: 5, outSize: 10, scale: nil).i0, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
        XCTAssertEqual(InterpolationAxis.nearest(inSize: 4, outSize: 4, scale: nil).i0, [0, 1, 2, 3])
        // A scale factor gives ratio Float(1/s): 5 with s = 1.5 -> out 7, ratio 0.6666667.
        XCTAssertEqual(InterpolationAxis.nearest(inSize: 5, outSize: 7, scale: 1.5).i0, [0, 0, 1, 2, 2, 3, 4])
    }

    /// Finite differences in Double of the bilinear and nearest kernels (the backward is the
    /// transpose, checked against the forward of the same code).
    func testInterpolateGradientsFiniteDifferences() {
        let plans: [(String, Int, Int, InterpolationPlan)] = [
            ("bilinear up", 5, 7, InterpolationPlan(mode: .bilinear, h: .linear(inSize: 5, outSize: 12, scale: nil, alignCorners: false),
                                                    w: .linear(inSize: 7, outSize: 17, scale: nil, alignCorners: false))),
            ("bilinear down ac", 13, 11, InterpolationPlan(mode: .bilinear, h: .linear(inSize: 13, outSize: 6, scale: nil, alignCorners: true),
                                                           w: .linear(inSize: 11, outSize: 4, scale: nil, alignCorners: true))),
            ("bilinear scale", 6, 9, InterpolationPlan(mode: .bilinear, h: .linear(inSize: 6, outSize: 10, scale: 16.0 / 9, alignCorners: false),
                                                       w: .linear(inSize: 9, outSize: 5, scale: 0.6, alignCorners: false))),
            ("nearest", 13, 11, InterpolationPlan(mode: .nearest, h: .nearest(inSize: 13, outSize: 7, scale: nil),
                                                  w: .nearest(inSize: 11, outSize: 23, scale: nil))),
        ]
        for (name, ih, iw, plan) in plans {
            let planes = 2
            let x = OpsGradCheck.normals(planes * ih * iw, seed: 51)
            let u = OpsGradCheck.normals(planes * plan.h.outSize * plan.w.outSize, seed: 52)
            let dx = Kernels.interpolateBackward(u, planes: planes, plan)
            OpsGradCheck.check(name, x, upstream: u, analytic: dx) { Kernels.interpolate($0, planes: planes, plan) }
        }
    }

    /// Autograd wiring and thread determinism of the Float path.
    func testInterpolateAutogradAndThreads() {
        let xd = OpsGradCheck.normals(2 * 3 * 6 * 9, seed: 61).map { Float($0) }
        let ud = OpsGradCheck.normals(2 * 3 * 10 * 16, seed: 62).map { Float($0) }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var runs: [[Float]] = []
        for t in [1, 2] {
            Parallel.threads = t
            let x = Tensor(shape: [2, 3, 6, 9], data: xd, requiresGrad: true)
            let y = interpolate(x, scaleFactor: (16.0 / 9, 16.0 / 9), mode: .bilinear)
            (y * Tensor(shape: y.shape, data: ud)).sum().backward()
            runs.append(y.data + x.grad!.data)
            // Adjoint identity <interp(x), u> = <x, interpᵀ(u)>.
            let lhs = zip(y.data, ud).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let rhs = zip(xd, x.grad!.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(lhs, rhs, accuracy: 1e-4 * max(1, abs(lhs)))
        }
        XCTAssertEqual(runs[0], runs[1])
    }
}
