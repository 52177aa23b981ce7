import XCTest
import Tensors

final class PoolTests: XCTestCase {
    /// Floor mode drops the odd trailing row/column; hand values on a 5×5 ramp.
    func testMaxPoolFloorModeValues() {
        let x = Tensor(shape: [1, 1, 5, 5], data: (0..<25).map { Float($0) })
        let y = maxPool2d(x, kernelSize: 2)
        XCTAssertEqual(y.shape, [1, 1, 2, 2])
        XCTAssertEqual(y.data, [6, 8, 16, 18])
        // Kernel 3, stride 2, padding 1 on 5×5: output 3×3, windows clipped at the borders.
        let z = maxPool2d(x, kernelSize: 3, stride: 2, padding: 1)
        XCTAssertEqual(z.shape, [1, 1, 3, 3])
        XCTAssertEqual(z.data, [6, 8, 9, 16, 18, 19, 21, 23, 24])
    }

    /// Ties: the first maximum in row-major window order takes the whole gradient.
    func testMaxPoolTiesGoToFirstMaximum() {
        let x = Tensor(shape: [1, 1, 2, 4], data: [1, 1, 0, 3, 1, 1, 3, 3], requiresGrad: true)
        let y = maxPool2d(x, kernelSize: 2)
        XCTAssertEqual(y.data, [1, 3])
        y.backward(Tensor(shape: [1, 1, 1, 2], data: [10, 20]))
        XCTAssertEqual(x.grad!.data, [10, 0, 0, 20, 0, 0, 0, 0])
    }

    /// Finite differences in Double on tie-free inputs (spacing far above the step), for
    /// disjoint windows (even and odd sizes) and for overlapping, padded windows.
    func testMaxPoolGradientsFiniteDifferences() {
        let shapes: [(String, Int, Int, Pool2dShape)] = [
            ("k2 even", 8, 10, Pool2dShape(inH: 8, inW: 10, kernel: (2, 2), stride: (2, 2), padding: (0, 0))),
            ("k2 odd", 9, 7, Pool2dShape(inH: 9, inW: 7, kernel: (2, 2), stride: (2, 2), padding: (0, 0))),
            ("k3 s2 p1", 7, 6, Pool2dShape(inH: 7, inW: 6, kernel: (3, 3), stride: (2, 2), padding: (1, 1))),
        ]
        for (name, h, w, s) in shapes {
            let planes = 3
            // A shuffled ramp: all values distinct, 0.01 apart.
            var rng = PhiloxRNG(seed: 71)
            let perm = rng.permutation(planes * h * w)
            let x = perm.map { Double($0) * 0.01 }
            let u = OpsGradCheck.normals(planes * s.outH * s.outW, seed: 72)
            let (_, arg) = Kernels.maxPool2d(x, planes: planes, s)
            let dx = Kernels.maxPool2dBackward(u, argmax: arg, planes: planes, s)
            OpsGradCheck.check("maxPool2d \(name)", x, upstream: u, analytic: dx) { Kernels.maxPool2d($0, planes: planes, s).values }
        }
    }

    /// Autograd wiring and thread determinism, overlapping windows included.
    func testMaxPoolAutogradThreads() {
        let xd = OpsGradCheck.normals(2 * 3 * 33 * 20, seed: 81).map { Float($0) }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        var runs: [[Float]] = []
        for t in [1, 2] {
            Parallel.threads = t
            var r: [Float] = []
            for (k, s) in [(2, 2), (3, 2)] {
                let x = Tensor(shape: [2, 3, 33, 20], data: xd, requiresGrad: true)
                let y = maxPool2d(x, kernelSize: k, stride: s)
                (y * y).sum().backward()
                // d(Σ y²)/dx = 2y at each arg-max: the gradient's total is 2 Σ y.
                let total = x.grad!.data.reduce(0.0) { $0 + Double($1) }
                XCTAssertEqual(total, 2 * y.data.reduce(0.0) { $0 + Double($1) }, accuracy: 1e-3)
                r += y.data + x.grad!.data
            }
            runs.append(r)
        }
        XCTAssertEqual(runs[0], runs[1])
    }
}
