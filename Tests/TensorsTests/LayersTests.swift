import XCTest
import Tensors
import NN

/// Forward passes of the NN layers on hand-computed inputs (the ops themselves are checked
/// against PyTorch in their own tests; here: the layers pass their parameters, buffers and
/// modes correctly).
final class LayersTests: XCTestCase {
    func testLayerNormAndLayerNorm2d() {
        // [1, 3]: mean 2, biased var 1 → (x − 2)/√(1 + 1e-5) = ∓0.999995; weight [2, 1], bias [0.5, 0].
        let r = 1 / (1 + 1e-5).squareRoot()
        let ln = LayerNorm(2)
        ln.weight!.assign([2, 1]); ln.bias!.assign([0.5, 0])
        let y = ln(Tensor(shape: [1, 2], data: [1, 3]))
        XCTAssertEqual(Double(y.data[0]), -2 * r + 0.5, accuracy: 1e-6)
        XCTAssertEqual(Double(y.data[1]), r, accuracy: 1e-6)
        // LayerNorm2d normalises over C at each pixel, eps 1e-6: pixel (0,0) has C values [1, 3].
        let ln2 = LayerNorm2d(2)
        let y2 = ln2(Tensor(shape: [1, 2, 1, 2], data: [1, 5, 3, 5]))  // pixel 1 has [5, 5]: var 0 → 0
        XCTAssertEqual(Double(y2.data[0]), -1 / (1 + 1e-6).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(Double(y2.data[2]), 1 / (1 + 1e-6).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(y2.data[1], 0)
        XCTAssertEqual(y2.data[3], 0)
    }

    func testGroupNormOneGroup() {
        // GroupNorm(1, 2) on [0, 2 | 4, 6]: mean 3, biased var (9+1+1+9)/4 = 5 → (x − 3)/√5.00001.
        let gn = GroupNorm(1, 2)
        gn.bias!.assign([0, 10])
        let y = gn(Tensor(shape: [1, 2, 1, 2], data: [0, 2, 4, 6]))
        let s = (5 + 1e-5).squareRoot()
        let expected = [-3 / s, -1 / s, 1 / s + 10, 3 / s + 10]
        for (a, b) in zip(y.data, expected) { XCTAssertEqual(Double(a), b, accuracy: 1e-5) }
    }

    func testBatchNorm2dTrainUpdatesBuffersAndEvalUsesThem() {
        // One channel, x = [1, 2, 3, 6] over (N=2, W=2): mean 3, biased var 14/4 = 3.5,
        // unbiased 14/3 = 4.6667.
        let x = Tensor(shape: [2, 1, 1, 2], data: [1, 2, 3, 6])
        let bn = BatchNorm2d(1)
        let y = bn(x)
        let s = (3.5 + 1e-5).squareRoot()
        for (a, b) in zip(y.data, [-2 / s, -1 / s, 0, 3 / s]) { XCTAssertEqual(Double(a), b, accuracy: 1e-6) }
        // running_mean = 0.9·0 + 0.1·3 = 0.3; running_var = 0.9·1 + 0.1·14/3 = 1.3666667.
        XCTAssertEqual(Double(bn.runningMean!.data[0]), 0.3, accuracy: 1e-7)
        XCTAssertEqual(Double(bn.runningVar!.data[0]), 0.9 + 1.4 / 3, accuracy: 1e-6)
        XCTAssertEqual(bn.numBatchesTracked!.data, [1])
        // Eval (set from a container): y = (x − 0.3)/√(1.3666667 + 1e-5), buffers unchanged.
        let model = ModuleList([bn])
        model.eval()
        let e = bn(x)
        let se = (0.9 + 1.4 / 3 + 1e-5).squareRoot()
        XCTAssertEqual(Double(e.data[3]), (6 - 0.3) / se, accuracy: 1e-5)
        XCTAssertEqual(bn.numBatchesTracked!.data, [1])
        XCTAssertEqual(Double(bn.runningMean!.data[0]), 0.3, accuracy: 1e-7)
        // momentum nil: cumulative average, factor 1/num_batches_tracked = 1 on the first batch.
        let cumulative = BatchNorm2d(1, momentum: nil)
        _ = cumulative(x)
        XCTAssertEqual(Double(cumulative.runningMean!.data[0]), 3, accuracy: 1e-6)
        XCTAssertEqual(Double(cumulative.runningVar!.data[0]), 14.0 / 3, accuracy: 1e-5)
        // Without running stats the batch statistics are used in eval mode too.
        let noStats = BatchNorm2d(1, trackRunningStats: false)
        noStats.eval()
        XCTAssertEqual(Double(noStats(x).data[3]), 3 / s, accuracy: 1e-6)
    }

    func testEmbeddingLookupAndGradient() {
        var rng = PhiloxRNG(seed: 31)
        let e = Embedding(3, 2, rng: &rng)
        let w = e.weight.data
        let y = e([1, 1, 0])
        XCTAssertEqual(y.shape, [3, 2])
        XCTAssertEqual(y.data, [w[2], w[3], w[2], w[3], w[0], w[1]])
        y.sum().backward()
        XCTAssertEqual(e.weight.grad!.data, [1, 1, 2, 2, 0, 0])  // row 1 selected twice
    }
}
