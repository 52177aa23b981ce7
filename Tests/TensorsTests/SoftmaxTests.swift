import XCTest
import Tensors

final class SoftmaxTests: XCTestCase {
    /// Finite differences in Double for softmax and log-softmax, along the last dim and along a
    /// middle dim (strided rows).
    func testSoftmaxGradientsFiniteDifferences() {
        for (o, k, i) in [(6, 7, 1), (3, 5, 4)] {
            for isLog in [false, true] {
                let x = OpsGradCheck.normals(o * k * i, seed: 11, scale: 3)
                let u = OpsGradCheck.normals(o * k * i, seed: 12)
                let y = Kernels.softmax(x, outer: o, axis: k, inner: i, log: isLog)
                let dx = Kernels.softmaxBackward(y, u, outer: o, axis: k, inner: i, log: isLog)
                OpsGradCheck.check("\(isLog ? "logSoftmax" : "softmax") [\(o),\(k),\(i)]", x, upstream: u, analytic: dx) {
                    Kernels.softmax($0, outer: o, axis: k, inner: i, log: isLog)
                }
            }
        }
    }

    /// Hand values, including logits of ~100 that overflow exp(x) in Float without the max shift.
    func testSoftmaxValues() {
        let x = Tensor(shape: [2, 3], data: [0, 1, 2, 100, 90, 100])
        let y = x.softmax(dim: -1)
        let e1: Double = Foundation.exp(1.0), e2: Double = Foundation.exp(2.0), s = 1 + e1 + e2
        let e10: Double = Foundation.exp(-10.0)
        let want: [Double] = [1 / s, e1 / s, e2 / s, 1 / (2 + e10), e10 / (2 + e10), 1 / (2 + e10)]
        for (a, b) in zip(y.data, want) { XCTAssertEqual(Double(a), b, accuracy: 1e-7) }
        XCTAssertTrue(y.data.allSatisfy { $0.isFinite })
        let ly = x.logSoftmax(dim: 1)
        for (a, b) in zip(ly.data, want) { XCTAssertEqual(Double(a), Foundation.log(b), accuracy: 1e-6) }
        // Along dim 0 of a [2, 2]: columns.
        let z = Tensor(shape: [2, 2], data: [0, 3, 0, 3]).softmax(dim: 0)
        XCTAssertEqual(z.data, [0.5, 0.5, 0.5, 0.5])
    }

    /// The recorded primitive gives the kernel's gradient (autograd wiring), dim in the middle.
    func testSoftmaxAutograd() {
        let xd = OpsGradCheck.normals(2 * 3 * 4, seed: 3, scale: 2)
        let ud = OpsGradCheck.normals(2 * 3 * 4, seed: 4)
        let x = Tensor(shape: [2, 3, 4], data: xd.map { Float($0) }, requiresGrad: true)
        let u = Tensor(shape: [2, 3, 4], data: ud.map { Float($0) })
        (x.softmax(dim: 1) * u).sum().backward()
        let yD = Kernels.softmax(x.data.map { Double($0) }, outer: 2, axis: 3, inner: 4, log: false)
        let want = Kernels.softmaxBackward(yD, u.data.map { Double($0) }, outer: 2, axis: 3, inner: 4, log: false)
        XCTAssertLessThan(OpsGradCheck.maxAbs(x.grad!.data.map { Double($0) }, want), 1e-6)
        // Softmax gradients sum to zero along the softmax dim.
        for o in 0..<2 {
            for i in 0..<4 {
                let s = (0..<3).reduce(0.0) { $0 + Double(x.grad!.data[(o * 3 + $1) * 4 + i]) }
                XCTAssertEqual(s, 0, accuracy: 1e-6)
            }
        }
    }
}
