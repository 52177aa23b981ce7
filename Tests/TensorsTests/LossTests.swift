import XCTest
import Tensors
import FLMM

final class LossTests: XCTestCase {
    func testBCEWithLogitsHandValues() {
        let x = Tensor(shape: [5], data: [0, 0, 40, -40, 2], requiresGrad: true)
        let t = Tensor(shape: [5], data: [1, 0, 0, 0, 1])
        let l = binaryCrossEntropyWithLogits(x, t)
        XCTAssertEqual(l.data[0], Float(log(2.0)), accuracy: 1e-7)
        XCTAssertEqual(l.data[1], Float(log(2.0)), accuracy: 1e-7)
        XCTAssertEqual(l.data[2], 40)                                   // 40 + log1p(e^-40)
        XCTAssertEqual(l.data[3], 0)   // −40 − (−40 − 4e-18) in Float, as PyTorch's (1−t)·x − logσ(x); no overflow
        XCTAssertEqual(l.data[4], Float(log1p(exp(-2.0))), accuracy: 1e-7)
        l.sum().backward()
        // σ(x) − t: 0.5 − t at 0.
        XCTAssertEqual(x.grad!.data[0], -0.5)
        XCTAssertEqual(x.grad!.data[1], 0.5)
        XCTAssertEqual(x.grad!.data[2], 1)
        XCTAssertEqual(x.grad!.data[3], Float(exp(-40.0)), accuracy: 1e-20)
        XCTAssertEqual(x.grad!.data[4], Float(1 / (1 + exp(-2.0))) - 1, accuracy: 1e-7)
    }

    func testBCEWithLogitsFiniteDifferences() {
        let x: [Double] = [-3, -0.7, 0.2, 1.5, 4, -12]
        let t: [Double] = [0, 1, 0.3, 1, 0, 1]
        let g: [Double] = [0.3, -1.2, 0.8, 0.5, -0.4, 1.1]
        let (dx, dt) = Kernels.bceWithLogitsBackward(g, x, t)
        func f(_ x: [Double], _ t: [Double]) -> Double {
            zip(Kernels.bceWithLogits(x, t), g).reduce(0) { $0 + $1.0 * $1.1 }
        }
        for i in x.indices {
            var xp = x, xm = x, tp = t, tm = t
            xp[i] += 1e-6; xm[i] -= 1e-6; tp[i] += 1e-6; tm[i] -= 1e-6
            XCTAssertEqual((f(xp, t) - f(xm, t)) / 2e-6, dx[i], accuracy: 1e-8)
            XCTAssertEqual((f(x, tp) - f(x, tm)) / 2e-6, dt[i], accuracy: 1e-8)
        }
    }

    func testSigmoidBCEAvgFactorAndIgnore() {
        // mmdet: sum / (avg_factor + float32 eps); labels < 0 or == -100 have weight 0.
        let x = Tensor(shape: [4], data: [0, 0, 0, 0], requiresGrad: true)
        let loss = sigmoidBinaryCrossEntropy(x, Tensor(shape: [4], data: [1, 0, -100, 1]), avgFactor: 4)
        XCTAssertEqual(loss.item, Float(3 * log(2.0)) / Float(4 + float32Epsilon), accuracy: 1e-7)
        loss.backward()
        XCTAssertEqual(x.grad!.data, [-0.5 / 4, 0.5 / 4, 0, -0.5 / 4])
        // Without avg_factor, 'mean' divides by the element count.
        let plain = sigmoidBinaryCrossEntropy(Tensor(shape: [2], data: [0, 0]), Tensor(shape: [2], data: [1, 1]))
        XCTAssertEqual(plain.item, Float(log(2.0)), accuracy: 1e-7)
    }

    func testDiceHandValues() {
        // Logits 0 → p = 0.5 everywhere. Mask 0: target all ones over 6 pixels: a = 3, Σp = 3,
        // Σt = 6 → d = 7/10. Mask 1: target all zeros: a = 0, Σp = 3 → d = 1/4.
        let pred = Tensor(shape: [2, 2, 3], data: [Float](repeating: 0, count: 12), requiresGrad: true)
        let target = Tensor(shape: [2, 2, 3], data: [Float](repeating: 1, count: 6) + [Float](repeating: 0, count: 6))
        let perMask = diceLoss(pred, target, reduction: .none)
        XCTAssertEqual(perMask.data[0], 1 - 7.0 / 10, accuracy: 1e-7)
        XCTAssertEqual(perMask.data[1], 1 - 1.0 / 4, accuracy: 1e-7)
        let loss = diceLoss(pred, target, avgFactor: 2)
        XCTAssertEqual(loss.item, Float((0.3 + 0.75) / (2 + float32Epsilon)), accuracy: 1e-7)
        loss.backward()
        // d loss/d p_j for mask 0: −(2t(b+c+1) − (2a+1)) / (b+c+1)² = −(20 − 7)/100; × σ' = 1/4, / 2.
        XCTAssertEqual(pred.grad!.data[0], Float(-13.0 / 100 / 4 / 2), accuracy: 1e-7)
        // mask 1: −(0 − 1)/16 · 1/4 / 2.
        XCTAssertEqual(pred.grad!.data[6], Float(1.0 / 16 / 4 / 2), accuracy: 1e-7)
    }

    func testDiceNonNaiveForm() {
        // p = 0.5 over 4 pixels, target all ones: a = 2, Σp² = 1, Σt² = 4 → d = 4 / (2 + 5) = 4/7.
        let pred = Tensor(shape: [1, 4], data: [0, 0, 0, 0])
        let loss = diceLoss(pred, Tensor.ones([1, 4]), naiveDice: false, reduction: .none)
        XCTAssertEqual(loss.item, 1 - 4.0 / 7, accuracy: 1e-7)
    }

    func testMaskLossTermsLoggedValues() {
        // Mask 0: logits [2, -2, 1, -1] vs gt [1, 0, 0, 0] → binary [1, 0, 1, 0]: I = 1, U = 2.
        // Mask 1: logits all −3 vs gt all 0 → I = 0, U = 0 → IoU 0 (0 / 1e-12).
        let pred = Tensor(shape: [2, 2, 2], data: [2, -2, 1, -1, -3, -3, -3, -3])
        let gt = Tensor(shape: [2, 2, 2], data: [1, 0, 0, 0, 0, 0, 0, 0])
        let terms = maskLossTerms(pred: pred, gt: gt)
        XCTAssertEqual(terms.accuracy, 7.0 / 8)
        XCTAssertEqual(terms.aiou, 0.25)
        XCTAssertEqual(terms.dice.item, diceLoss(pred.reshape([2, 4]), gt.reshape([2, 4]), avgFactor: 2).item)
        XCTAssertEqual(terms.bce.item, sigmoidBinaryCrossEntropy(pred.reshape([8]), gt.reshape([8]), avgFactor: 8).item)
        // σ(x) > 0.5 is evaluated in Float: a tiny positive logit rounds to σ = 0.5, not foreground.
        XCTAssertEqual(binarizedAccuracyAndIoU(logits: Tensor(shape: [1, 1], data: [1e-9]), gt: Tensor(shape: [1, 1], data: [0])).accuracy, 1)
    }

    func testGoldenDice() throws { try assertGoldenPasses("loss_dice") }
    func testGoldenBCE() throws { try assertGoldenPasses("loss_bce") }

    func testGroundTruthNearestResize() {
        // 3 → 5 rows: src = ⌊dst·0.6⌋ = 0, 0, 1, 1, 2; 4 → 8 columns: dst >> 1.
        let m = Tensor(shape: [1, 3, 4], data: (0..<12).map(Float.init))
        let r = resizedGroundTruth(m, to: (5, 8))
        XCTAssertEqual(r.shape, [1, 5, 8])
        let rows = [0, 0, 1, 1, 2], cols = [0, 0, 1, 1, 2, 2, 3, 3]
        XCTAssertEqual(r.data, rows.flatMap { y in cols.map { Float(y * 4 + $0) } })
        // Downsampling 5 → 2: ⌊dst·2.5⌋ = 0, 2.
        let d = resizedGroundTruth(Tensor(shape: [1, 1, 5], data: [1, 2, 3, 4, 5]), to: (1, 2))
        XCTAssertEqual(d.data, [1, 3])
    }
}
