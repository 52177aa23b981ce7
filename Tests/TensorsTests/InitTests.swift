import XCTest
import Tensors
import NN

/// Mean, standard deviation (population) and largest magnitude of `x`, in Double.
private func stats(_ x: [Float]) -> (mean: Double, std: Double, maxAbs: Double) {
    let n = Double(x.count)
    let mean = x.reduce(0.0) { $0 + Double($1) } / n
    let varSum = x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
    return (mean, (varSum / n).squareRoot(), x.map { Double(abs($0)) }.max() ?? 0)
}

final class InitTests: XCTestCase {
    func testGainAndFans() {
        XCTAssertEqual(Init.gain(.relu), 2.0.squareRoot())
        XCTAssertEqual(Init.gain(.linear), 1)
        XCTAssertEqual(Init.gain(.tanh), 5.0 / 3)
        // leaky_relu with a = √5: √(2/(1+5)) = √(1/3) = 0.57735…
        XCTAssertEqual(Init.gain(.leakyRelu(5.0.squareRoot())), 0.5773502691896257, accuracy: 1e-15)
        // [out=6, in=3, 3, 3]: fan_in = 3·9 = 27, fan_out = 6·9 = 54.
        XCTAssertTrue(Init.fans([6, 3, 3, 3]) == (27, 54))
        XCTAssertTrue(Init.fans([5, 7]) == (7, 5))
    }

    func testLinearDefaultIsUniformWithBoundOneOverSqrtFanIn() {
        // nn.Linear(64, 256): fan_in = 64; gain = √(1/3), std = gain/8, bound = √3·std = 1/8.
        // U(−1/8, 1/8) has mean 0 and std (1/8)/√3 = 0.0721688.
        var rng = PhiloxRNG(seed: 11)
        let lin = Linear(64, 256, rng: &rng)
        let w = stats(lin.weight.data)
        XCTAssertEqual(lin.weight.count, 16384)
        XCTAssertLessThanOrEqual(w.maxAbs, 0.125)
        XCTAssertGreaterThan(w.maxAbs, 0.1249)
        XCTAssertEqual(w.mean, 0, accuracy: 0.003)          // 5 standard errors (0.072/√16384)
        XCTAssertEqual(w.std, 0.125 / 3.0.squareRoot(), accuracy: 0.0722 * 0.02)
        // Bias: U(−1/√64, 1/√64) too.
        let b = stats(lin.bias!.data)
        XCTAssertLessThanOrEqual(b.maxAbs, 0.125)
        XCTAssertGreaterThan(b.maxAbs, 0.11)                 // P(all 256 below 0.11) = 0.88^256 ≈ 6e-15
    }

    func testConvDefaultsUseFanInOfTheirWeightLayout() {
        var rng = PhiloxRNG(seed: 12)
        // Conv2d(3, 8, 3): fan_in = 3·3·3 = 27, bound = 1/√27 = 0.19245009.
        let conv = Conv2d(3, 8, kernelSize: 3, rng: &rng)
        XCTAssertLessThanOrEqual(stats(conv.weight.data).maxAbs, Double(Float(0.19245009)))
        XCTAssertGreaterThan(stats(conv.weight.data).maxAbs, 0.18)
        XCTAssertLessThanOrEqual(stats(conv.bias!.data).maxAbs, Double(Float(0.19245009)))
        // ConvTranspose2d(64, 4, 2): weight [64, 4, 2, 2], PyTorch's fan_in = size(1)·2·2 = 16,
        // bound = 1/4 (not 1/√(64·4) = 1/16).
        let up = ConvTranspose2d(64, 4, kernelSize: 2, stride: 2, rng: &rng)
        let s = stats(up.weight.data)
        XCTAssertLessThanOrEqual(s.maxAbs, 0.25)
        XCTAssertGreaterThan(s.maxAbs, 0.24)
        XCTAssertEqual(s.std, 0.25 / 3.0.squareRoot(), accuracy: 0.1443 * 0.06)  // 1024 draws
        XCTAssertLessThanOrEqual(stats(up.bias!.data).maxAbs, 0.25)
    }

    func testMmcvKaimingInitFanOutNormal() {
        // mmseg UNet convs: kaiming_init(mode='fan_out', nonlinearity='relu', distribution='normal').
        // Conv2d(32, 64, 3): fan_out = 64·3·3 = 576, std = √2/√576 = √2/24 = 0.0589256.
        var rng = PhiloxRNG(seed: 13)
        let conv = Conv2d(32, 64, kernelSize: 3, rng: &rng)
        Init.kaimingInit(weight: conv.weight, bias: conv.bias, rng: &rng)
        let s = stats(conv.weight.data)
        let std = 2.0.squareRoot() / 24
        XCTAssertEqual(std, 0.05892556509887897, accuracy: 1e-16)
        XCTAssertEqual(s.mean, 0, accuracy: 0.0023)           // 5 standard errors over 18432 draws
        XCTAssertEqual(s.std, std, accuracy: std * 0.02)
        // Normal shape: P(|z| < 1) = 0.6827, standard error 0.0034.
        let within = Double(conv.weight.data.filter { Double(abs($0)) < std }.count) / Double(conv.weight.count)
        XCTAssertEqual(within, 0.6827, accuracy: 0.012)
        XCTAssertEqual(conv.bias!.data, [Float](repeating: 0, count: 64))
        // constant_init(norm, 1, bias=0).
        let gn = GroupNorm(1, 4)
        Init.constant(gn.weight!, 3)
        Init.constantInit(weight: gn.weight, bias: gn.bias, value: 1)
        XCTAssertEqual(gn.weight!.data, [1, 1, 1, 1])
        XCTAssertEqual(gn.bias!.data, [0, 0, 0, 0])
    }

    func testEmbeddingIsStandardNormal() {
        var rng = PhiloxRNG(seed: 14)
        let e = Embedding(64, 256, rng: &rng)
        let s = stats(e.weight.data)
        XCTAssertEqual(s.mean, 0, accuracy: 0.04)             // 5 standard errors (1/128)
        XCTAssertEqual(s.std, 1, accuracy: 0.02)
        XCTAssertGreaterThan(s.maxAbs, 3)                      // 16384 draws reach 3σ (P(miss) ≈ e^-44)
    }

    func testDeterministicFromSeedWeightThenBias() {
        // Linear(2, 2) at seed 0 draws 4 weights then 2 biases from one stream, each
        // −b + 2b·u with b = 1/√2 (Float 0.70710677) and u the stream's uniform floats.
        var rng = PhiloxRNG(seed: 0)
        let lin = Linear(2, 2, rng: &rng)
        var ref = PhiloxRNG(seed: 0)
        let b = Float(0.70710677)
        let expected = (0..<6).map { _ in ref.uniform(-b, b) }
        XCTAssertEqual(lin.weight.data + lin.bias!.data, expected)
        var again = PhiloxRNG(seed: 0)
        XCTAssertEqual(Linear(2, 2, rng: &again).weight.data, lin.weight.data)
        var other = PhiloxRNG(seed: 1)
        XCTAssertNotEqual(Linear(2, 2, rng: &other).weight.data, lin.weight.data)
        // Pinned bits of the first values (seed 0): a change of RNG, formula or draw order shows here.
        XCTAssertEqual(lin.weight.data.prefix(2).map(\.bitPattern), Self.pinnedLinearBits)
        var nrng = PhiloxRNG(seed: 0)
        XCTAssertEqual(Embedding(1, 2, rng: &nrng).weight.data.map(\.bitPattern), Self.pinnedEmbeddingBits)
    }

    static let pinnedLinearBits: [UInt32] = [3188863560, 1057604437]  // -0.14276993, 0.53813678
    static let pinnedEmbeddingBits: [UInt32] = [3183036912, 3211559003]  // -0.09047306, -0.92383355
}
