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

    /// A tensor used by several ops gathers its gradient over the backward; a linear layer adds
    /// the part gathered so far as its GEMMs store the tiles (`Kernels.gemmAdding`). x feeds two
    /// linears, W serves two, z feeds a linear and a product: each gradient has the bits of its
    /// two parts (the per-op gradients, computed alone) added, on 1 and 2 threads, with the GEMM's
    /// driver (150 rows: partial tiles) and its few-rows path (12 rows).
    func testGatheredGradientsBitwiseEqualToSumOfParts() {
        let fin = 70, fout = 33
        for rows in [150, 12] {
            let x = S.floats(S.randn(rows * fin, seed: 1)), z = S.floats(S.randn(rows * fin, seed: 2))
            let w = S.floats(S.randn(fout * fin, seed: 3)), w2 = S.floats(S.randn(fout * fin, seed: 4))
            let b = S.floats(S.randn(fout, seed: 5)), c = S.floats(S.randn(rows * fin, seed: 6))
            let u = (7..<10).map { S.floats(S.randn(rows * fout, seed: UInt64($0))) }
            let u4 = S.floats(S.randn(rows * fin, seed: 10))
            for threads in [1, 2] {
                let saved = Parallel.threads
                Parallel.threads = threads
                defer { Parallel.threads = saved }
                let tx = Tensor(shape: [rows, fin], data: x, requiresGrad: true)
                let tz = Tensor(shape: [rows, fin], data: z, requiresGrad: true)
                let tw = Tensor(shape: [fout, fin], data: w, requiresGrad: true)
                let tw2 = Tensor(shape: [fout, fin], data: w2, requiresGrad: true)
                let tb = Tensor(shape: [fout], data: b, requiresGrad: true)
                func weighted(_ y: Tensor, _ v: [Float]) -> Tensor { (y * Tensor(shape: y.shape, data: v)).sum() }
                let loss = (weighted(linear(tx, weight: tw, bias: tb), u[0]) + weighted(linear(tx, weight: tw2), u[1]))
                    + (weighted(linear(tz, weight: tw), u[2]) + weighted(tz * Tensor(shape: [rows, fin], data: c), u4))
                loss.backward()

                func parts(_ g: [Float], _ x: [Float], _ w: [Float]) -> (x: [Float], w: [Float]) {
                    let r = Kernels.linearBackward(g, x, rows: rows, weight: w, inFeatures: fin, outFeatures: fout,
                                                   needX: true, needW: true, needBias: false)
                    return (r.x!, r.weight!)
                }
                let p1 = parts(u[0], x, w), p2 = parts(u[1], x, w2), p3 = parts(u[2], z, w)
                let zMul = zip(u4, c).map { $0 * $1 }
                func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }
                XCTAssertEqual(bits(tx.grad!.data), bits(zip(p1.x, p2.x).map { $0 + $1 }), "dx rows \(rows) threads \(threads)")
                XCTAssertEqual(bits(tw.grad!.data), bits(zip(p1.w, p3.w).map { $0 + $1 }), "dW rows \(rows) threads \(threads)")
                XCTAssertEqual(bits(tz.grad!.data), bits(zip(p3.x, zMul).map { $0 + $1 }), "dz rows \(rows) threads \(threads)")
                XCTAssertEqual(bits(tw2.grad!.data), bits(p2.w), "dW2 rows \(rows) threads \(threads)")
            }
        }
    }

    /// `linear(x, weight:, bias:, adding: r)` against `r + linear(x, ...)`: the output and every
    /// gradient bit for bit (r's gradient is the upstream one), with and without a bias, through
    /// the GEMM's driver (150 rows: partial tiles) and its few-rows path (12 rows), on 1 and 2
    /// threads, with our kernels and with OpenBLAS (the product, then the residual added); and the
    /// Double kernel (the finite-difference path) the same sums.
    func testLinearAddingBitwiseEqualToResidualPlusLinear() {
        let fin = 70, fout = 33
        for rows in [150, 12] {
            for hasBias in [true, false] {
                let x = S.floats(S.randn(rows * fin, seed: 11)), w = S.floats(S.randn(fout * fin, seed: 12))
                let b = S.floats(S.randn(fout, seed: 13)), r = S.floats(S.randn(rows * fout, seed: 14))
                let u = S.floats(S.randn(rows * fout, seed: 15))
                for (threads, backend) in [(1, Backend.own), (2, .own), (2, .openblas)] {
                    let (saved, savedBackend) = (Parallel.threads, Backend.current)
                    (Parallel.threads, Backend.current) = (threads, backend)
                    defer { (Parallel.threads, Backend.current) = (saved, savedBackend) }
                    func run(fused: Bool) -> [[UInt32]] {
                        let tx = Tensor(shape: [rows, fin], data: x, requiresGrad: true)
                        let tw = Tensor(shape: [fout, fin], data: w, requiresGrad: true)
                        let tb = hasBias ? Tensor(shape: [fout], data: b, requiresGrad: true) : nil
                        let tr = Tensor(shape: [rows, fout], data: r, requiresGrad: true)
                        let y = fused ? linear(tx, weight: tw, bias: tb, adding: tr) : tr + linear(tx, weight: tw, bias: tb)
                        (y * Tensor(shape: y.shape, data: u)).sum().backward()
                        return [y.data, tx.grad!.data, tw.grad!.data, tr.grad!.data, tb?.grad!.data ?? []]
                            .map { $0.map(\.bitPattern) }
                    }
                    XCTAssertEqual(run(fused: true), run(fused: false),
                                   "rows \(rows) bias \(hasBias) threads \(threads) \(backend)")
                }
                let xd = x.map(Double.init), wd = w.map(Double.init), rd = r.map(Double.init)
                let bd = hasBias ? b.map(Double.init) : nil
                let fusedD = Kernels.linear(xd, rows: rows, weight: wd, bias: bd, inFeatures: fin, outFeatures: fout, adding: rd)
                let plainD = Kernels.linear(xd, rows: rows, weight: wd, bias: bd, inFeatures: fin, outFeatures: fout)
                XCTAssertEqual(fusedD, zip(rd, plainD).map { $0 + $1 })
            }
        }
    }
}
