import XCTest
import Tensors

/// nn.Linear: hand-computed values, gradients by central differences in Double through the
/// same kernels, and the Float autograd gradients.
final class LinearTests: XCTestCase {
    typealias S = GEMMTestSupport

    func testHandComputed() {
        let x = Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])
        let w = Tensor(shape: [2, 3], data: [1, 0, -1, 0.5, 0.5, 0.5])
        let b = Tensor(shape: [2], data: [10, 20])
        let y = linear(x, weight: w, bias: b)
        XCTAssertEqual(y.shape, [2, 2])
        XCTAssertEqual(y.data, [8, 23, 8, 27.5])
        let v = linear(Tensor(shape: [3], data: [1, 2, 3]), weight: w)
        XCTAssertEqual(v.shape, [2])
        XCTAssertEqual(v.data, [-2, 3])
    }

    func testGradientsByFiniteDifferences() {
        for (n, (shape, fin, fout, hasBias)) in [([2, 5], 12, 7, true), ([3], 6, 5, false), ([2, 3, 4], 9, 10, true)]
            .enumerated() {
            let rows = shape.product
            let x = S.randn(rows * fin, seed: UInt64(n * 10 + 1))
            let w = S.randn(fout * fin, seed: UInt64(n * 10 + 2))
            let b = hasBias ? S.randn(fout, seed: UInt64(n * 10 + 3)) : nil
            let u = S.randn(rows * fout, seed: UInt64(n * 10 + 4))
            func f(_ x: [Double], _ w: [Double], _ b: [Double]?) -> Double {
                S.dot(Kernels.linear(x, rows: rows, weight: w, bias: b, inFeatures: fin, outFeatures: fout), u)
            }
            let g = Kernels.linearBackward(u, x, rows: rows, weight: w, inFeatures: fin, outFeatures: fout,
                                           needX: true, needW: true, needBias: hasBias)
            let nx = S.numericGradient(x) { f($0, w, b) }
            let nw = S.numericGradient(w) { f(x, $0, b) }
            XCTAssertLessThan(S.relErr(g.x!, nx), 1e-7, "dx \(shape)")
            XCTAssertLessThan(S.relErr(g.weight!, nw), 1e-7, "dW \(shape)")
            var nb: [Double]?
            if let b {
                nb = S.numericGradient(b) { f(x, w, $0) }
                XCTAssertLessThan(S.relErr(g.bias!, nb!), 1e-7, "db \(shape)")
            }

            let tx = Tensor(shape: shape + [fin], data: S.floats(x), requiresGrad: true)
            let tw = Tensor(shape: [fout, fin], data: S.floats(w), requiresGrad: true)
            let tb = b.map { Tensor(shape: [fout], data: S.floats($0), requiresGrad: true) }
            let y = linear(tx, weight: tw, bias: tb)
            XCTAssertEqual(y.shape, shape + [fout])
            (y * Tensor(shape: y.shape, data: S.floats(u))).sum().backward()
            XCTAssertLessThan(S.relErr(tx.grad!.data, nx), 1e-5)
            XCTAssertLessThan(S.relErr(tw.grad!.data, nw), 1e-5)
            if let tb { XCTAssertLessThan(S.relErr(tb.grad!.data, nb!), 1e-5) }
        }
    }
}
