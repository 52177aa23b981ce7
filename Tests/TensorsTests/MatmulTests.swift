import XCTest
import Tensors

/// torch.matmul: shapes, hand-computed values, bitwise agreement with the reference GEMM, and
/// gradients by central differences in Double through the same kernels.
final class MatmulTests: XCTestCase {
    typealias S = GEMMTestSupport

    func testHandComputed2D() {
        let a = Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [3, 2], data: [7, 8, 9, 10, 11, 12])
        let c = matmul(a, b)
        XCTAssertEqual(c.shape, [2, 2])
        XCTAssertEqual(c.data, [58, 64, 139, 154])
    }

    func testVectorCases() {
        let a = Tensor(shape: [3], data: [1, 2, 3])
        let m = Tensor(shape: [3, 2], data: [7, 8, 9, 10, 11, 12])
        let va = matmul(a, m)
        XCTAssertEqual(va.shape, [2])
        XCTAssertEqual(va.data, [58, 64])
        let mv = matmul(Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6]), a)
        XCTAssertEqual(mv.shape, [2])
        XCTAssertEqual(mv.data, [14, 32])
        let dot = matmul(a, a)
        XCTAssertEqual(dot.shape, [])
        XCTAssertEqual(dot.item, 14)
        // Batched matrix @ vector: [2, 2, 3] @ [3] -> [2, 2].
        let bm = Tensor(shape: [2, 2, 3], data: (0..<12).map(Float.init))
        XCTAssertEqual(matmul(bm, a).data, [8, 26, 44, 62])
    }

    func testBroadcastShapes() {
        XCTAssertEqual(Kernels.matmulShape([2, 3, 5, 4], [4, 6]), [2, 3, 5, 6])
        XCTAssertEqual(Kernels.matmulShape([2, 1, 5, 4], [3, 4, 6]), [2, 3, 5, 6])
        XCTAssertEqual(Kernels.matmulShape([5, 4], [2, 3, 4, 6]), [2, 3, 5, 6])
    }

    /// Each output matrix of a broadcast batched product is bitwise the reference GEMM of its operands.
    func testBatchedBitwiseEqualToReferencePerMatrix() {
        let aShape = [2, 1, 5, 4], bShape = [3, 4, 6]
        let a = S.floats(S.randn(aShape.product, seed: 1)), b = S.floats(S.randn(bShape.product, seed: 2))
        let c = Kernels.matmul(a, aShape, b, bShape)
        for i in 0..<2 {
            for j in 0..<3 {
                var ref = [Float](repeating: 0, count: 30)
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        Kernels.gemmReference(transA: false, transB: false, m: 5, n: 6, k: 4,
                                              a: pa.baseAddress! + i * 20, lda: 4, b: pb.baseAddress! + j * 24, ldb: 6,
                                              c: &ref, ldc: 6, accumulate: false)
                    }
                }
                let got = Array(c[(i * 3 + j) * 30 ..< (i * 3 + j + 1) * 30])
                XCTAssertEqual(got.map(\.bitPattern), ref.map(\.bitPattern), "batch (\(i), \(j))")
            }
        }
    }

    /// Analytic gradients (Double kernels) against central differences, for 2-D, batched and
    /// both kinds of broadcasting; then the Float autograd gradients against the same numbers.
    func testGradientsByFiniteDifferences() {
        let cases: [([Int], [Int])] = [
            ([3, 4], [4, 5]), ([2, 3, 5, 4], [2, 3, 4, 6]), ([2, 3, 5, 4], [4, 6]),
            ([2, 1, 3, 4], [3, 4, 2]), ([3, 4], [2, 4, 5]),
        ]
        for (n, (aShape, bShape)) in cases.enumerated() {
            let a = S.randn(aShape.product, seed: UInt64(10 * n + 1))
            let b = S.randn(bShape.product, seed: UInt64(10 * n + 2))
            let outShape = Kernels.matmulShape(aShape, bShape)
            let u = S.randn(outShape.product, seed: UInt64(10 * n + 3))
            let (ga, gb) = Kernels.matmulBackward(u, a, aShape, b, bShape, needA: true, needB: true)
            let na = S.numericGradient(a) { S.dot(Kernels.matmul($0, aShape, b, bShape), u) }
            let nb = S.numericGradient(b) { S.dot(Kernels.matmul(a, aShape, $0, bShape), u) }
            XCTAssertLessThan(S.relErr(ga!, na), 1e-7, "dA \(aShape) @ \(bShape)")
            XCTAssertLessThan(S.relErr(gb!, nb), 1e-7, "dB \(aShape) @ \(bShape)")

            // The Tensor op and its entry in the gradient table, in Float.
            let ta = Tensor(shape: aShape, data: S.floats(a), requiresGrad: true)
            let tb = Tensor(shape: bShape, data: S.floats(b), requiresGrad: true)
            let y = matmul(ta, tb)
            XCTAssertEqual(y.shape, outShape)
            (y * Tensor(shape: outShape, data: S.floats(u))).sum().backward()
            XCTAssertLessThan(S.relErr(ta.grad!.data, na), 1e-5, "Float dA \(aShape) @ \(bShape)")
            XCTAssertLessThan(S.relErr(tb.grad!.data, nb), 1e-5, "Float dB \(aShape) @ \(bShape)")
        }
    }

    /// Gradients through the 1-D reshapes.
    func testVectorGradients() {
        let a = Tensor(shape: [3], data: [1, 2, 3], requiresGrad: true)
        let m = Tensor(shape: [3, 2], data: [7, 8, 9, 10, 11, 12], requiresGrad: true)
        matmul(a, m).sum().backward()
        XCTAssertEqual(a.grad!.data, [15, 19, 23])
        XCTAssertEqual(m.grad!.data, [1, 1, 2, 2, 3, 3])
    }
}
