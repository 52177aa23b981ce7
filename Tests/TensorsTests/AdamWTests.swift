import XCTest
import Tensors
import NN
import Foundation

final class AdamWTests: XCTestCase {
    /// Three AdamW steps on p = [1, −2, 0.5] with lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.01,
    /// compared with the update worked out by hand in Double.
    func testThreeStepsMatchHandDerivation() {
        let p = Tensor(shape: [3], data: [1, -2, 0.5], requiresGrad: true)
        let opt = AdamW([p], lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0.01)

        // Step 1, g = [0.1, −0.2, 0]:
        //   decay: p·(1 − 0.1·0.01) = p·0.999 = [0.999, −1.998, 0.4995]
        //   m = 0.1·g = [0.01, −0.02, 0];  v = 0.001·g² = [1e-5, 4e-5, 0]
        //   bc1 = 1 − 0.9 = 0.1, bc2 = 1 − 0.999 = 0.001, step_size = 0.1/0.1 = 1
        //   denom = √v/√0.001 + 1e-8 = |g| + 1e-8 = [0.10000001, 0.20000001, 1e-8]
        //   p −= m/denom: 0.01/0.10000001 = 0.09999999, −0.02/0.20000001 = −0.099999995, 0/1e-8 = 0
        //   p = [0.89900001, −1.898000005, 0.4995]
        p.setGrad(Tensor(shape: [3], data: [0.1, -0.2, 0]))
        opt.step()
        assertClose(p.data, [0.8990000099999991, -1.8980000049999997, 0.4995])
        assertClose(opt.state[0]!.expAvg, [0.01, -0.02, 0])
        assertClose(opt.state[0]!.expAvgSq, [1e-5, 4e-5, 0])

        // Step 2, g = [−0.1, 0.3, 0.05]:
        //   decay: [0.89810101, −1.896102005, 0.4990005]
        //   m = 0.9·m + 0.1·g = [0.009 − 0.01, −0.018 + 0.03, 0.005] = [−0.001, 0.012, 0.005]
        //   v = 0.999·v + 0.001·g² = [0.999e-5 + 1e-5, 3.996e-5 + 9e-5, 2.5e-6] = [1.999e-5, 1.2996e-4, 2.5e-6]
        //   bc1 = 1 − 0.81 = 0.19, bc2 = 1 − 0.998001 = 0.001999, step_size = 0.1/0.19 = 0.52631579
        //   denom = √(v/bc2) + 1e-8 = [√0.01 = 0.1, √0.06501251 = 0.25497551, √0.00125063 = 0.03536419]
        //   p −= step_size·m/denom = [−0.00526316, 0.02477018, 0.07441366]
        //   p = [0.90336417, −1.92087219, 0.42458684]
        p.setGrad(Tensor(shape: [3], data: [-0.1, 0.3, 0.05]))
        opt.step()
        assertClose(p.data, [0.9033641673584202, -1.9208721856369428, 0.42458683868540115])
        assertClose(opt.state[0]!.expAvg, [-0.001, 0.012, 0.005])
        assertClose(opt.state[0]!.expAvgSq, [1.999e-5, 1.2996e-4, 2.5e-6])

        // Step 3, g = [0.2, 0, −0.05]:
        //   decay: [0.90246081, −1.91895131, 0.42416225]
        //   m = [−0.0009 + 0.02, 0.0108 + 0, 0.0045 − 0.005] = [0.0191, 0.0108, −0.0005]
        //   v = [1.997001e-5 + 4e-5, 1.2983004e-4 + 0, 2.4975e-6 + 2.5e-6] = [5.997001e-5, 1.2983004e-4, 4.9975e-6]
        //   bc1 = 1 − 0.729 = 0.271, bc2 = 1 − 0.997002999 = 0.002997001, step_size = 0.1/0.271 = 0.36900369
        //   denom = √(v/bc2) + 1e-8 = [0.14145674, 0.20813455, 0.04083505]
        //   p −= step_size·m/denom = [0.04982422, 0.01914742, −0.00451823]
        //   p = [0.85263659, −1.93809873, 0.42868047]
        p.setGrad(Tensor(shape: [3], data: [0.2, 0, -0.05]))
        opt.step()
        assertClose(p.data, [0.8526365923183592, -1.9380987347102319, 0.4286804747179714])
        assertClose(opt.state[0]!.expAvg, [0.0191, 0.0108, -0.0005])
        XCTAssertEqual(opt.state[0]!.step, 3)
    }

    /// Parameters without a gradient are skipped and keep no state (PyTorch); weight decay 0
    /// leaves only the Adam step.
    func testSkipsParametersWithoutGradient() {
        let a = Tensor(shape: [2], data: [1, 2], requiresGrad: true)
        let b = Tensor(shape: [1], data: [3], requiresGrad: true)
        let opt = AdamW([a, b], lr: 0.01, weightDecay: 0)
        a.setGrad(Tensor(shape: [2], data: [0.5, -4]))
        opt.step()
        // First step, no decay: m = 0.1·g, denom = √(0.001·g²)/√0.001 + 1e-8 = |g| + 1e-8, so
        // m/denom = 0.1·sign(g) (up to 1e-8 relative); step_size = 0.01/(1 − 0.9) = 0.1:
        // a = [1 − 0.01, 2 + 0.01].
        assertClose(a.data, [0.99, 2.01])
        XCTAssertEqual(b.data, [3])
        XCTAssertNil(opt.state[1])
        opt.zeroGrad()
        XCTAssertNil(a.grad)
        b.setGrad(Tensor(shape: [1], data: [1]))
        opt.step()
        XCTAssertEqual(opt.state[0]!.step, 1)
        XCTAssertEqual(opt.state[1]!.step, 1)
        assertClose(b.data, [2.99])  // b's own first step: 0.1 · 0.1·sign(1) = 0.01
    }

    /// Bitwise check of the float32 operation order against a scalar transcription of
    /// PyTorch's kernels, on random data over 3 steps, with 2 threads and 1.
    func testFloatOperationOrder() {
        var rng = PhiloxRNG(seed: 21)
        let n = 70_001
        let start = (0..<n).map { _ in rng.uniform(-1, 1) }
        let grads = (0..<3).map { _ in (0..<n).map { _ in rng.uniform(-1e-2, 1e-2) } }
        let lr = 3e-4, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.05

        // Reference: torch.optim.AdamW single-tensor path, as ATen's CPU kernels compute it.
        var p = start, m = [Float](repeating: 0, count: n), v = m
        var naiveDiffers = false
        for (t, g) in grads.enumerated() {
            let step = Double(t + 1)
            let bc1 = 1 - Foundation.pow(b1, step), bc2 = 1 - Foundation.pow(b2, step)
            let stepSize = lr / bc1, bc2Sqrt = Float(bc2.squareRoot())
            for i in 0..<n {
                p[i] = p[i] * Float(1 - lr * wd)                                // param.mul_(1 - lr*wd)
                let naive = Float(b1) * m[i] + Float(1 - b1) * g[i]
                m[i] = m[i].addingProduct(Float(1 - b1), g[i] - m[i])           // exp_avg.lerp_(g, 1-b1)
                if naive != m[i] { naiveDiffers = true }
                v[i] = v[i] * Float(b2)                                          // exp_avg_sq.mul_(b2)
                v[i] = v[i] + Float(1 - b2) * g[i] * g[i]                        // .addcmul_(g, g, 1-b2)
                let denom = v[i].squareRoot() / bc2Sqrt + Float(eps)             // (v.sqrt()/bc2_sqrt).add_(eps)
                p[i] = p[i] + Float(-stepSize) * m[i] / denom                    // addcdiv_(m, denom, -step_size)
            }
        }
        XCTAssertTrue(naiveDiffers, "the lerp form must matter for this data, or the test proves nothing")

        for threads in [2, 1] {
            let saved = Parallel.threads
            Parallel.threads = threads
            defer { Parallel.threads = saved }
            let x = Tensor(shape: [n], data: start, requiresGrad: true)
            let opt = AdamW([x], lr: lr, betas: (b1, b2), eps: eps, weightDecay: wd)
            for g in grads {
                x.setGrad(Tensor(shape: [n], data: g))
                opt.step()
            }
            XCTAssertEqual(x.data, p, "threads \(threads)")
            XCTAssertEqual(opt.state[0]!.expAvg, m)
            XCTAssertEqual(opt.state[0]!.expAvgSq, v)
        }
    }

    func testClipGradNormHandComputed() {
        // ‖g1‖ = ‖(3, 4)‖ = 5, ‖g2‖ = ‖(0, 12)‖ = 12, total = √(25 + 144) = 13.
        let a = Tensor(shape: [2], data: [0, 0], requiresGrad: true)
        let b = Tensor(shape: [1, 2], data: [0, 0], requiresGrad: true)
        let c = Tensor(shape: [1], data: [0], requiresGrad: true)  // no gradient: ignored
        a.setGrad(Tensor(shape: [2], data: [3, 4]))
        b.setGrad(Tensor(shape: [1, 2], data: [0, 12]))
        let total = clipGradNorm([a, b, c], maxNorm: 1)
        XCTAssertEqual(total, 13)
        // coef = 1/(13 + 1e-6) in float32: 13 + 1e-6 rounds to 13.000000953674316 (ulp 9.5e-7),
        // so coef = Float(1/13.000000953674316) = 0.07692307; grads ≈ [0.23076922, 0.30769229], [0, 0.92307687].
        let coef = Float(1) / (Float(13) + Float(1e-6))
        XCTAssertEqual(Double(coef), 1 / 13.000000953674316, accuracy: 1e-8)
        XCTAssertEqual(a.grad!.data, [3 * coef, 4 * coef])
        XCTAssertEqual(b.grad!.data, [0, 12 * coef])
        XCTAssertEqual(a.grad!.data[1], 0.30769229, accuracy: 1e-7)
        XCTAssertNil(c.grad)
        // The clipped norm is max_norm up to the 1e-6: 13/(13 + 1e-6).
        XCTAssertEqual(clipGradNorm([a, b], maxNorm: 1e9), 1, accuracy: 1e-6)

        // Below the threshold the coefficient clamps to 1: unchanged.
        a.setGrad(Tensor(shape: [2], data: [3, 4]))
        XCTAssertEqual(clipGradNorm([a], maxNorm: 20), 5)
        XCTAssertEqual(a.grad!.data, [3, 4])
    }

    private func assertClose(_ a: [Float], _ b: [Double], tol: Double = 1e-6,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(Double(x), y, accuracy: max(tol * abs(y), 1e-12), "\(a) vs \(b)", file: file, line: line)
        }
    }
}
