import XCTest
import Tensors

final class ShapeOpsTests: XCTestCase {
    func testCatValuesAndGradients() {
        let a = Tensor(shape: [2, 1, 2], data: [1, 2, 3, 4], requiresGrad: true)
        let b = Tensor(shape: [2, 2, 2], data: [5, 6, 7, 8, 9, 10, 11, 12], requiresGrad: true)
        let y = cat([a, b], dim: 1)
        XCTAssertEqual(y.shape, [2, 3, 2])
        XCTAssertEqual(y.data, [1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12])
        y.backward(Tensor(shape: [2, 3, 2], data: (0..<12).map { Float($0) }))
        XCTAssertEqual(a.grad!.data, [0, 1, 6, 7])
        XCTAssertEqual(b.grad!.data, [2, 3, 4, 5, 8, 9, 10, 11])
        // Finite differences in Double through the kernels (gradient of each part = narrow of g).
        let x1 = OpsGradCheck.normals(2 * 3 * 4, seed: 1), x2 = OpsGradCheck.normals(2 * 2 * 4, seed: 2)
        let u = OpsGradCheck.normals(2 * 5 * 4, seed: 3)
        let g1 = Kernels.narrow(u, [2, 5, 4], dim: 1, start: 0, length: 3)
        let g2 = Kernels.narrow(u, [2, 5, 4], dim: 1, start: 3, length: 2)
        OpsGradCheck.check("cat part 1", x1, upstream: u, analytic: g1) { Kernels.cat([$0, x2], [[2, 3, 4], [2, 2, 4]], dim: 1) }
        OpsGradCheck.check("cat part 2", x2, upstream: u, analytic: g2) { Kernels.cat([x1, $0], [[2, 3, 4], [2, 2, 4]], dim: 1) }
    }

    /// `Kernels.sum` over every subset of dims of two rank-4 shapes (adjacent blocks take a fast
    /// path): bit for bit a naive reference that visits the elements in row-major order and adds
    /// each into its output's Double accumulator. Double values spread over 2^0 … 2^40, so that
    /// any other summation order changes the result's bits.
    func testSumOverEveryDimSubsetMatchesRowMajorReference() {
        for shape in [[3, 5, 7, 6], [2, 1, 9, 5]] {
            var rng = PhiloxRNG(seed: 11)
            let x = (0..<shape.product).map { i in Double(rng.nextNormal()) * Double(1 << (5 * (i % 9))) }
            for mask in 0..<16 {
                let dims = (0..<4).filter { mask & (1 << $0) != 0 }
                let kept = (0..<4).map { dims.contains($0) ? 1 : shape[$0] }
                var expected = [Double](repeating: 0, count: kept.product)
                for i in 0..<x.count {
                    var rest = i, o = 0, scale = 1
                    for d in (0..<4).reversed() {
                        let c = rest % shape[d]
                        rest /= shape[d]
                        if !dims.contains(d) { o += c * scale; scale *= shape[d] }
                    }
                    expected[o] += x[i]
                }
                for keepDim in [false, true] {
                    let (y, yShape) = Kernels.sum(x, shape, dims: dims, keepDim: keepDim)
                    XCTAssertEqual(yShape, keepDim ? kept : (0..<4).filter { !dims.contains($0) }.map { shape[$0] })
                    XCTAssertEqual(y.map(\.bitPattern), expected.map(\.bitPattern), "shape \(shape) dims \(dims)")
                }
            }
        }
    }

    /// Float sums over a middle or leading dim with many columns (a linear layer's bias
    /// gradient): bit for bit each column's Double sum in row order, rounded to Float, on 1 and 2
    /// threads. Rows cycle through +2^50, a value near 1 and −2^50, so the running sum rounds the
    /// small values to quarters, differently in another order: summing the rows in reverse fails.
    func testFloatColumnSumsMatchRowOrderReference() {
        for (shape, dim) in [([2, 37, 200], 1), ([300, 70], 0), ([5, 16], 0)] {
            var rng = PhiloxRNG(seed: 12)
            let x = (0..<shape.product).map { i -> Float in
                let q = i / shape[shape.count - 1]
                return q % 3 == 1 ? rng.nextNormal() : (q % 3 == 0 ? 1 : -1) * Float(1 << 50)
            }
            let outer = Array(shape[..<dim]).product, r = shape[dim], inner = Array(shape[(dim + 1)...]).product
            var expected = [Double](repeating: 0, count: outer * inner)
            for a in 0..<outer { for q in 0..<r { for j in 0..<inner { expected[a * inner + j] += Double(x[(a * r + q) * inner + j]) } } }
            for threads in [1, 2] {
                Parallel.threads = threads
                let (y, _) = Kernels.sum(x, shape, dims: [dim], keepDim: false)
                XCTAssertEqual(y.map(\.bitPattern), expected.map { Float($0).bitPattern }, "shape \(shape) dim \(dim) t=\(threads)")
            }
        }
        Parallel.threads = Parallel.defaultThreadCount()
    }

    func testNarrowCropAndPad() {
        let x = Tensor(shape: [1, 2, 3, 4], data: (0..<24).map { Float($0) }, requiresGrad: true)
        let c = x.crop(top: 1, left: 1, height: 2, width: 2)
        XCTAssertEqual(c.shape, [1, 2, 2, 2])
        XCTAssertEqual(c.data, [5, 6, 9, 10, 17, 18, 21, 22])
        c.sum().backward()
        XCTAssertEqual(x.grad!.data, [0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0,
                                      0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0])
        let p = pad(Tensor(shape: [1, 1, 1, 2], data: [1, 2]), (left: 1, right: 0, top: 0, bottom: 2), value: -5)
        XCTAssertEqual(p.shape, [1, 1, 3, 3])
        XCTAssertEqual(p.data, [-5, 1, 2, -5, -5, -5, -5, -5, -5])
        // Finite differences in Double.
        let xs = OpsGradCheck.normals(24, seed: 4)
        let un = OpsGradCheck.normals(1 * 2 * 3 * 2, seed: 5)
        OpsGradCheck.check("narrow", xs, upstream: un,
                           analytic: Kernels.narrowBackward(un, inputShape: [1, 2, 3, 4], dim: 3, start: 1, length: 2)) {
            Kernels.narrow($0, [1, 2, 3, 4], dim: 3, start: 1, length: 2)
        }
        let up = OpsGradCheck.normals(1 * 2 * 6 * 7, seed: 6)
        OpsGradCheck.check("pad", xs, upstream: up, analytic: Kernels.padBackward(up, inputShape: [1, 2, 3, 4], pad: [2, 1, 0, 3])) {
            Kernels.pad($0, [1, 2, 3, 4], pad: [2, 1, 0, 3], value: 0.5)
        }
    }

    func testIndexSelectWithRepeats() {
        let x = Tensor(shape: [3, 2], data: [1, 2, 3, 4, 5, 6], requiresGrad: true)
        let y = x.indexSelect(dim: 0, index: [2, 0, 2])
        XCTAssertEqual(y.data, [5, 6, 1, 2, 5, 6])
        y.backward(Tensor(shape: [3, 2], data: [1, 10, 100, 1000, 2, 20]))
        XCTAssertEqual(x.grad!.data, [100, 1000, 0, 0, 3, 30])
        let xs = OpsGradCheck.normals(2 * 5 * 3, seed: 7)
        let idx = [4, 1, 1, 0]
        let u = OpsGradCheck.normals(2 * 4 * 3, seed: 8)
        OpsGradCheck.check("indexSelect", xs, upstream: u,
                           analytic: Kernels.indexSelectBackward(u, outer: 2, axis: 5, inner: 3, indices: idx)) {
            Kernels.indexSelect($0, outer: 2, axis: 5, inner: 3, indices: idx)
        }
    }

    func testMaxAlongDim() {
        let x = Tensor(shape: [2, 3], data: [1, 7, 7, 4, -1, 2], requiresGrad: true)
        let (v, i) = x.max(dim: 1)
        XCTAssertEqual(v.data, [7, 4])
        XCTAssertEqual(i, [1, 0])  // the tie 7, 7 gives the first index
        v.backward(Tensor(shape: [2], data: [1, 2]))
        XCTAssertEqual(x.grad!.data, [0, 1, 0, 2, 0, 0])
        let (vk, _) = Tensor(shape: [2, 3], data: [1, 7, 7, 4, -1, 2]).max(dim: 0, keepDim: true)
        XCTAssertEqual(vk.shape, [1, 3])
        XCTAssertEqual(vk.data, [4, 7, 7])
        // Finite differences in Double (tie-free), along a middle dim.
        var rng = PhiloxRNG(seed: 9)
        let xs = rng.permutation(2 * 4 * 3).map { Double($0) * 0.1 }
        let u = OpsGradCheck.normals(2 * 3, seed: 10)
        let (_, ix) = Kernels.maxAlong(xs, outer: 2, axis: 4, inner: 3)
        OpsGradCheck.check("max(dim)", xs, upstream: u,
                           analytic: Kernels.maxAlongBackward(u, indices: ix, outer: 2, axis: 4, inner: 3)) {
            Kernels.maxAlong($0, outer: 2, axis: 4, inner: 3).values
        }
    }

    func testExpandSqueezeUnsqueeze() {
        let x = Tensor(shape: [3, 1], data: [1, 2, 3], requiresGrad: true)
        let y = x.expand([2, 3, 4])
        XCTAssertEqual(y.shape, [2, 3, 4])
        XCTAssertEqual(Array(y.data[0..<8]), [1, 1, 1, 1, 2, 2, 2, 2])
        y.sum().backward()
        XCTAssertEqual(x.grad!.data, [8, 8, 8])
        XCTAssertEqual(x.expand([-1, 2]).shape, [3, 2])
        XCTAssertEqual(x.unsqueeze(0).shape, [1, 3, 1])
        XCTAssertEqual(x.unsqueeze(-1).shape, [3, 1, 1])
        XCTAssertEqual(x.squeeze(1).shape, [3])
        XCTAssertEqual(x.squeeze(0).shape, [3, 1])
        XCTAssertEqual(Tensor.zeros([1, 3, 1, 2]).squeeze().shape, [3, 2])
        // Finite differences in Double for the broadcast copy and its sum-back.
        let xs = OpsGradCheck.normals(3, seed: 11)
        let u = OpsGradCheck.normals(24, seed: 12)
        OpsGradCheck.check("expand", xs, upstream: u, analytic: Kernels.sumToShape(u, [2, 3, 4], [3, 1])) {
            Kernels.expand($0, [3, 1], to: [2, 3, 4])
        }
    }
}
