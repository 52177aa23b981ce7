import XCTest
import Tensors

/// conv2d / convTranspose2d: bitwise agreement with a direct-loop reference, gradients by
/// central differences in Double through the same kernels, thread-count independence.
final class ConvTests: XCTestCase {
    typealias S = GEMMTestSupport

    struct Case {
        var n = 2, c = 3, h = 7, w = 6, o = 4, kh = 3, kw = 3
        var stride = (1, 1), padding = (0, 0), dilation = (1, 1)
        var bias = true
        var geometry: Conv2dGeometry { Conv2dGeometry(stride: stride, padding: padding, dilation: dilation) }
        var xShape: [Int] { [n, c, h, w] }
    }

    static let convCases: [Case] = [
        Case(padding: (1, 1)),                                                    // k3p1
        Case(h: 9, w: 11, stride: (2, 2), padding: (1, 1)),                       // k3s2p1
        Case(h: 10, w: 9, padding: (2, 2), dilation: (2, 2), bias: false),        // k3d2p2
        Case(kh: 1, kw: 1),                                                       // k1
        Case(c: 1, h: 8, w: 10, kh: 2, kw: 2, stride: (2, 2)),                    // k2s2
        Case(n: 1, h: 8, w: 12, kh: 4, kw: 4, stride: (4, 4)),                    // k4s4
        Case(h: 8, w: 7, kh: 3, kw: 2, stride: (2, 1), padding: (1, 0)),          // rectangular, per-axis
        Case(kh: 1, kw: 1, padding: (1, 1)),                                      // padding > d(k−1): col2im path
        Case(h: 9, w: 8, stride: (1, 1), padding: (0, 2), dilation: (1, 2)),      // mixed dilation
    ]

    /// y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q] · x[n, c, i·s − pad + p·d, j·s − pad + q·d] (0 outside),
    /// summed with FMA in (c, p, q) order: the same order as the GEMM, so the same bits.
    static func directConv(_ x: [Float], _ w: [Float], _ b: [Float]?, _ t: Case) -> [Float] {
        let (oh, ow) = t.geometry.outputSize(h: t.h, w: t.w, kh: t.kh, kw: t.kw)
        var y = [Float](repeating: 0, count: t.n * t.o * oh * ow)
        for n in 0..<t.n {
            for o in 0..<t.o {
                for i in 0..<oh {
                    for j in 0..<ow {
                        var s: Float = b?[o] ?? 0
                        for c in 0..<t.c {
                            for p in 0..<t.kh {
                                for q in 0..<t.kw {
                                    let yy = i * t.stride.0 - t.padding.0 + p * t.dilation.0
                                    let xx = j * t.stride.1 - t.padding.1 + q * t.dilation.1
                                    let v: Float = yy >= 0 && yy < t.h && xx >= 0 && xx < t.w
                                        ? x[((n * t.c + c) * t.h + yy) * t.w + xx] : 0
                                    s = s.addingProduct(w[((o * t.c + c) * t.kh + p) * t.kw + q], v)
                                }
                            }
                        }
                        y[((n * t.o + o) * oh + i) * ow + j] = s
                    }
                }
            }
        }
        return y
    }

    func testForwardBitwiseEqualToDirectLoop() {
        for (i, t) in Self.convCases.enumerated() {
            let x = S.floats(S.randn(t.xShape.product, seed: UInt64(100 + i)))
            let w = S.floats(S.randn(t.o * t.c * t.kh * t.kw, seed: UInt64(200 + i)))
            let b = t.bias ? S.floats(S.randn(t.o, seed: UInt64(300 + i))) : nil
            let y = Kernels.conv2d(x, t.xShape, weight: w, [t.o, t.c, t.kh, t.kw], bias: b, t.geometry)
            let ref = Self.directConv(x, w, b, t)
            XCTAssertEqual(y.map(\.bitPattern), ref.map(\.bitPattern), "case \(i)")
        }
    }

    func testConv2dGradientsByFiniteDifferences() {
        for (i, t) in Self.convCases.enumerated() {
            let wShape = [t.o, t.c, t.kh, t.kw]
            let x = S.randn(t.xShape.product, seed: UInt64(10 + i))
            let w = S.randn(wShape.product, seed: UInt64(20 + i))
            let b = t.bias ? S.randn(t.o, seed: UInt64(30 + i)) : nil
            let yShape = Kernels.conv2dShape(t.xShape, wShape, t.geometry)
            let u = S.randn(yShape.product, seed: UInt64(40 + i))
            func f(_ x: [Double], _ w: [Double], _ b: [Double]?) -> Double {
                S.dot(Kernels.conv2d(x, t.xShape, weight: w, wShape, bias: b, t.geometry), u)
            }
            let g = Kernels.conv2dBackward(u, x: x, t.xShape, weight: w, wShape, t.geometry,
                                           needX: true, needWeight: true, needBias: t.bias)
            let nx = S.numericGradient(x) { f($0, w, b) }
            let nw = S.numericGradient(w) { f(x, $0, b) }
            XCTAssertLessThan(S.relErr(g.x!, nx), 1e-7, "dx case \(i)")
            XCTAssertLessThan(S.relErr(g.weight!, nw), 1e-7, "dW case \(i)")
            var nb: [Double]?
            if let b {
                nb = S.numericGradient(b) { f(x, w, $0) }
                XCTAssertLessThan(S.relErr(g.bias!, nb!), 1e-7, "db case \(i)")
            }

            // The Tensor op and its gradient-table entry, in Float.
            let tx = Tensor(shape: t.xShape, data: S.floats(x), requiresGrad: true)
            let tw = Tensor(shape: wShape, data: S.floats(w), requiresGrad: true)
            let tb = b.map { Tensor(shape: [t.o], data: S.floats($0), requiresGrad: true) }
            let y = conv2d(tx, weight: tw, bias: tb, stride: t.stride, padding: t.padding, dilation: t.dilation)
            XCTAssertEqual(y.shape, yShape)
            (y * Tensor(shape: yShape, data: S.floats(u))).sum().backward()
            XCTAssertLessThan(S.relErr(tx.grad!.data, nx), 1e-5, "Float dx case \(i)")
            XCTAssertLessThan(S.relErr(tw.grad!.data, nw), 1e-5, "Float dW case \(i)")
            if let tb { XCTAssertLessThan(S.relErr(tb.grad!.data, nb!), 1e-5, "Float db case \(i)") }
        }
    }

    /// The input gradient of convolutions whose kernel equals their stride (SAM's mask
    /// downscaling: k2s2) against a direct loop in the col2im path's order: dx = 0 + (FMA chain
    /// over o of W[o, c, i, j] · dy[o, oy, ox]), +0 where no window covers the element. Patches
    /// that tile the plane exactly (written in place) and ones that leave a row and a column
    /// over (the general col2im), on 1 and 2 threads.
    func testPatchConvInputGradientBitwiseEqualToDirectLoop() {
        let cases: [(n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int)] = [
            (2, 3, 6, 8, 5, 2, 2), (1, 4, 8, 9, 3, 2, 3), (2, 2, 7, 9, 4, 2, 2), (1, 1, 64, 64, 4, 2, 2)]
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for (i, t) in cases.enumerated() {
            let g = Conv2dGeometry(stride: (t.kh, t.kw), padding: (0, 0), dilation: (1, 1))
            let (oh, ow) = g.outputSize(h: t.h, w: t.w, kh: t.kh, kw: t.kw)
            let wt = S.floats(S.randn(t.o * t.c * t.kh * t.kw, seed: UInt64(70 + i)))
            let x = S.floats(S.randn(t.n * t.c * t.h * t.w, seed: UInt64(80 + i)))
            let dy = S.floats(S.randn(t.n * t.o * oh * ow, seed: UInt64(90 + i)))
            var dx = [Float](repeating: 0, count: t.n * t.c * t.h * t.w)
            for img in 0..<t.n {
                for ch in 0..<t.c {
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            for di in 0..<t.kh {
                                for dj in 0..<t.kw {
                                    var acc: Float = 0
                                    for oc in 0..<t.o {
                                        acc = acc.addingProduct(wt[((oc * t.c + ch) * t.kh + di) * t.kw + dj],
                                                                dy[((img * t.o + oc) * oh + oy) * ow + ox])
                                    }
                                    dx[((img * t.c + ch) * t.h + oy * t.kh + di) * t.w + ox * t.kw + dj] = 0 + acc
                                }
                            }
                        }
                    }
                }
            }
            for threads in [1, 2] {
                Parallel.threads = threads
                let r = Kernels.conv2dBackward(dy, x: x, [t.n, t.c, t.h, t.w], weight: wt, [t.o, t.c, t.kh, t.kw], g,
                                               needX: true, needWeight: false, needBias: false)
                XCTAssertEqual(r.x!.map(\.bitPattern), dx.map(\.bitPattern), "case \(i), \(threads) threads")
            }
        }
    }

    /// The 1×1 stride-1 backward (plain GEMMs) and the bias sums, against direct loops in the
    /// order the general kernels use: dx[n,c,q] = FMA chain over o of W[o,c]·dy[n,o,q];
    /// dW[o,c] = FMA chain over (image, position) of dy·x; db[o] = Double sum in (image,
    /// position) order. Bitwise, on 1 and 2 threads (21 channels: a group of sixteen, one of
    /// four and one; 31 × 47 positions: 91 transposed tiles of 16 and one left over).
    func testConv1x1BackwardBitwiseEqualToDirectLoops() {
        let (n, c, o, h, w) = (2, 5, 21, 31, 47)
        let s = h * w
        let x = S.floats(S.randn(n * c * s, seed: 61)), wt = S.floats(S.randn(o * c, seed: 62))
        let dy = S.floats(S.randn(n * o * s, seed: 63))
        var dx = [Float](repeating: 0, count: n * c * s), dw = [Float](repeating: 0, count: o * c)
        var db = [Float](repeating: 0, count: o)
        for img in 0..<n {
            for ch in 0..<c {
                for q in 0..<s {
                    var acc: Float = 0
                    for oc in 0..<o { acc = acc.addingProduct(wt[oc * c + ch], dy[(img * o + oc) * s + q]) }
                    dx[(img * c + ch) * s + q] = acc
                }
            }
        }
        for oc in 0..<o {
            for ch in 0..<c {
                var acc: Float = 0
                for img in 0..<n {
                    for q in 0..<s { acc = acc.addingProduct(dy[(img * o + oc) * s + q], x[(img * c + ch) * s + q]) }
                }
                dw[oc * c + ch] = acc
            }
            var sum = 0.0
            for img in 0..<n { for q in 0..<s { sum += Double(dy[(img * o + oc) * s + q]) } }
            db[oc] = Float(sum)
        }
        // An empty batch: zero weight and bias gradients, an empty input gradient.
        let empty = Kernels.conv2dBackward([Float](), x: [], [0, c, h, w], weight: wt, [o, c, 1, 1], Conv2dGeometry(),
                                           needX: true, needWeight: true, needBias: true)
        XCTAssertEqual(empty.x!, [])
        XCTAssertEqual(empty.weight!, [Float](repeating: 0, count: o * c))
        XCTAssertEqual(empty.bias!, [Float](repeating: 0, count: o))
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for threads in [1, 2] {
            Parallel.threads = threads
            let g = Kernels.conv2dBackward(dy, x: x, [n, c, h, w], weight: wt, [o, c, 1, 1], Conv2dGeometry(),
                                           needX: true, needWeight: true, needBias: true)
            XCTAssertEqual(g.x!.map(\.bitPattern), dx.map(\.bitPattern), "dx, \(threads) threads")
            XCTAssertEqual(g.weight!.map(\.bitPattern), dw.map(\.bitPattern), "dW, \(threads) threads")
            XCTAssertEqual(g.bias!.map(\.bitPattern), db.map(\.bitPattern), "db, \(threads) threads")
        }
    }

    struct TCase {
        var n = 2, c = 4, h = 5, w = 4, o = 3, k = (2, 2)
        var stride = (2, 2), padding = (0, 0), outputPadding = (0, 0), dilation = (1, 1)
        var bias = true
        var geometry: Conv2dGeometry { Conv2dGeometry(stride: stride, padding: padding, dilation: dilation) }
    }

    static let transposeCases: [TCase] = [
        TCase(),                                                                  // SAM's k2s2
        TCase(n: 1, c: 6, h: 4, w: 4, o: 5, bias: false),
        TCase(k: (3, 3), padding: (1, 1), outputPadding: (1, 1)),                 // k3s2p1 op1
        TCase(k: (3, 3), stride: (1, 1), padding: (1, 1)),                        // stride 1
        TCase(k: (3, 2), stride: (2, 3), padding: (1, 0), dilation: (2, 1)),
    ]

    /// The scatter definition: y[n, o, i·s − p + a·d, j·s − p + b·d] += x[n, c, i, j] · w[c, o, a, b].
    static func directTranspose(_ x: [Double], _ w: [Double], _ bias: [Double]?, _ t: TCase, _ yShape: [Int]) -> [Double] {
        let (oh, ow) = (yShape[2], yShape[3])
        var y = [Double](repeating: 0, count: yShape.product)
        for n in 0..<t.n {
            for o in 0..<t.o {
                for q in 0..<oh * ow { y[(n * t.o + o) * oh * ow + q] = bias?[o] ?? 0 }
                for c in 0..<t.c {
                    for i in 0..<t.h {
                        for j in 0..<t.w {
                            for a in 0..<t.k.0 {
                                for b in 0..<t.k.1 {
                                    let yy = i * t.stride.0 - t.padding.0 + a * t.dilation.0
                                    let xx = j * t.stride.1 - t.padding.1 + b * t.dilation.1
                                    guard yy >= 0 && yy < oh && xx >= 0 && xx < ow else { continue }
                                    y[((n * t.o + o) * oh + yy) * ow + xx] +=
                                        x[((n * t.c + c) * t.h + i) * t.w + j] * w[((c * t.o + o) * t.k.0 + a) * t.k.1 + b]
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    func testConvTranspose2dForwardAndGradients() {
        for (i, t) in Self.transposeCases.enumerated() {
            let xShape = [t.n, t.c, t.h, t.w], wShape = [t.c, t.o, t.k.0, t.k.1]
            let yShape = Kernels.convTranspose2dShape(xShape, wShape, t.geometry, outputPadding: t.outputPadding)
            let x = S.randn(xShape.product, seed: UInt64(50 + i))
            let w = S.randn(wShape.product, seed: UInt64(60 + i))
            let b = t.bias ? S.randn(t.o, seed: UInt64(70 + i)) : nil
            let u = S.randn(yShape.product, seed: UInt64(80 + i))
            func f(_ x: [Double], _ w: [Double], _ b: [Double]?) -> [Double] {
                Kernels.convTranspose2d(x, xShape, weight: w, wShape, bias: b, t.geometry, outputPadding: t.outputPadding)
            }
            XCTAssertLessThan(S.relErr(f(x, w, b), Self.directTranspose(x, w, b, t, yShape)), 1e-14, "forward case \(i)")
            let g = Kernels.convTranspose2dBackward(u, x: x, xShape, weight: w, wShape, t.geometry,
                                                    outputPadding: t.outputPadding,
                                                    needX: true, needWeight: true, needBias: t.bias)
            let nx = S.numericGradient(x) { S.dot(f($0, w, b), u) }
            let nw = S.numericGradient(w) { S.dot(f(x, $0, b), u) }
            XCTAssertLessThan(S.relErr(g.x!, nx), 1e-7, "dx case \(i)")
            XCTAssertLessThan(S.relErr(g.weight!, nw), 1e-7, "dW case \(i)")
            var nb: [Double]?
            if let b {
                nb = S.numericGradient(b) { S.dot(f(x, w, $0), u) }
                XCTAssertLessThan(S.relErr(g.bias!, nb!), 1e-7, "db case \(i)")
            }

            let tx = Tensor(shape: xShape, data: S.floats(x), requiresGrad: true)
            let tw = Tensor(shape: wShape, data: S.floats(w), requiresGrad: true)
            let tb = b.map { Tensor(shape: [t.o], data: S.floats($0), requiresGrad: true) }
            let y = convTranspose2d(tx, weight: tw, bias: tb, stride: t.stride, padding: t.padding,
                                    outputPadding: t.outputPadding, dilation: t.dilation)
            XCTAssertEqual(y.shape, yShape)
            (y * Tensor(shape: yShape, data: S.floats(u))).sum().backward()
            XCTAssertLessThan(S.relErr(tx.grad!.data, nx), 1e-5, "Float dx case \(i)")
            XCTAssertLessThan(S.relErr(tw.grad!.data, nw), 1e-5, "Float dW case \(i)")
            if let tb { XCTAssertLessThan(S.relErr(tb.grad!.data, nb!), 1e-5, "Float db case \(i)") }
        }
    }

    /// Forward and every gradient are bitwise the same on 1 and 2 threads (sizes large enough
    /// for the GEMMs to split), for the stride-1 and the col2im input-gradient paths.
    func testBitwiseEqualAcrossThreadCounts() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for (stride, pad) in [(1, 1), (2, 1)] {
            // Big enough that every GEMM (forward, weight grad, both input-grad paths) splits.
            let xShape = [2, 48, 48, 48], wShape = [64, 48, 3, 3]
            let x = S.floats(S.randn(xShape.product, seed: 1)), w = S.floats(S.randn(wShape.product, seed: 2))
            let b = S.floats(S.randn(64, seed: 3))
            let g = Conv2dGeometry(stride: (stride, stride), padding: (pad, pad))
            let yShape = Kernels.conv2dShape(xShape, wShape, g)
            let u = S.floats(S.randn(yShape.product, seed: 4))
            var results: [[[UInt32]]] = []
            for threads in [1, 2] {
                Parallel.threads = threads
                let y = Kernels.conv2d(x, xShape, weight: w, wShape, bias: b, g)
                let r = Kernels.conv2dBackward(u, x: x, xShape, weight: w, wShape, g,
                                               needX: true, needWeight: true, needBias: true)
                let t = Kernels.convTranspose2d(y, yShape, weight: w, wShape, bias: nil, g)
                results.append([y, r.x!, r.weight!, r.bias!, t].map { $0.map(\.bitPattern) })
            }
            XCTAssertEqual(results[0], results[1], "stride \(stride)")
        }
    }

    /// Unbatched input, and the OpenBLAS backend (im2col + sgemm) computing the same numbers.
    func testUnbatchedAndOpenBLAS() {
        let x = Tensor(shape: [3, 6, 5], data: S.floats(S.randn(90, seed: 5)))
        let w = Tensor(shape: [4, 3, 3, 3], data: S.floats(S.randn(108, seed: 6)))
        let y = conv2d(x, weight: w, padding: 1)
        XCTAssertEqual(y.shape, [4, 6, 5])
        let yb = conv2d(x.reshape([1, 3, 6, 5]), weight: w, padding: 1)
        XCTAssertEqual(y.data, yb.data)

        let saved = Backend.current
        defer { Backend.current = saved }
        Backend.current = .openblas
        let xb = Tensor(shape: [2, 3, 6, 5], data: S.floats(S.randn(180, seed: 7)), requiresGrad: true)
        let wb = Tensor(shape: [4, 3, 3, 3], data: w.data, requiresGrad: true)
        let blas = conv2d(xb, weight: wb, stride: 2, padding: 1)
        blas.sum().backward()
        Backend.current = .own
        let xo = Tensor(shape: xb.shape, data: xb.data, requiresGrad: true)
        let wo = Tensor(shape: wb.shape, data: wb.data, requiresGrad: true)
        let own = conv2d(xo, weight: wo, stride: 2, padding: 1)
        own.sum().backward()
        XCTAssertLessThan(S.relErr(blas.data, own.data), 1e-6)
        XCTAssertLessThan(S.relErr(xb.grad!.data, xo.grad!.data), 1e-6)
        XCTAssertLessThan(S.relErr(wb.grad!.data, wo.grad!.data), 1e-6)
    }
}
