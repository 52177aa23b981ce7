// The ops SAM runs on: fused multi-head attention (forward against the composite of matmul /
// softmax, backward against finite differences in Double, relative-position bias), the
// vectorised exp / erf / GELU, the blocked permute, and bitwise equality on 1 and 2 threads.

import Foundation
import XCTest
import Tensors

final class SAMOpsTests: XCTestCase {
    var rng = PhiloxRNG(seed: 99)

    func randn(_ shape: [Int], _ scale: Float = 1, grad: Bool = false) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.product).map { _ in scale * rng.nextNormal() }, requiresGrad: grad)
    }

    func relErr(_ a: [Float], _ b: [Float]) -> Double {
        var d = 0.0, n = 0.0
        for (x, y) in zip(a, b) { d += Double(x - y) * Double(x - y); n += Double(y) * Double(y) }
        return n > 0 ? (d / n).squareRoot() : d.squareRoot()
    }

    override func tearDown() { Parallel.threads = Parallel.defaultThreadCount() }

    // MARK: exp, erf, GELU

    func testExpFloatAgainstDouble() {
        var worst = 0.0
        var x: Float = -87
        while x < 88.7 {
            let e = Kernels.expFloat(x)
            let exact = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(e) - exact) / exact)
            x += 0.00731
        }
        print("expFloat worst relative error \(worst)")
        XCTAssertLessThan(worst, 2.5e-7)  // ≈ 2 ulp
        XCTAssertEqual(Kernels.expFloat(0), 1)
        XCTAssertEqual(Kernels.expFloat(1), Float(M_E))
        XCTAssertEqual(Kernels.expFloat(-200), 0)
        XCTAssertEqual(Kernels.expFloat(100), .infinity)
        XCTAssertEqual(Kernels.expFloat(-.infinity), 0)
        XCTAssertTrue(Kernels.expFloat(.nan).isNaN)
    }

    func testExpFloat16EqualsScalarLaneByLane() {
        var xs: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .nan, 88.72283, 88.72284, -87.33654, -87.33655,
                           -200, 200, .leastNonzeroMagnitude, -.greatestFiniteMagnitude, 0.5, -0.5]
        var x: Float = -100
        while x < 100 { xs.append(x); x += 0.0137 }
        while xs.count % 16 != 0 { xs.append(rng.nextNormal() * 30) }
        for v in stride(from: 0, to: xs.count, by: 16) {
            let lanes = SIMD16<Float>(xs[v ..< v + 16])
            let e = Kernels.expFloat16(lanes)
            for l in 0..<16 {
                XCTAssertEqual(e[l].bitPattern, Kernels.expFloat(lanes[l]).bitPattern, "exp(\(lanes[l]))")
            }
        }
    }

    func testErfFloat16AndGELUEqualScalarLaneByLane() {
        var xs: [Float] = [0, -0, 1, -1, 2, -2, 9.2, -9.2, 0.99999994, 1.0000001, 1.9999999, -1.9999999,
                           .infinity, -.infinity, .nan, 30, -30, .leastNonzeroMagnitude]
        var x: Float = -14
        while x < 14 { xs.append(x); x += 0.00917 }
        while xs.count % 16 != 5 { xs.append(rng.nextNormal() * 3) }  // a scalar tail of 5
        let full = xs.count / 16 * 16
        for v in stride(from: 0, to: full, by: 16) {
            let e = Kernels.erfFloat16(SIMD16<Float>(xs[v ..< v + 16]))
            for l in 0..<16 { XCTAssertEqual(e[l].bitPattern, Kernels.erfFloat(xs[v + l]).bitPattern, "erf(\(xs[v + l]))") }
        }
        // GELU and its backward element by element from the scalar formulas.
        let g = xs.map { _ in rng.nextNormal() }
        let y = Kernels.geluVectorized(xs), dx = Kernels.geluVectorizedBackward(g, xs)
        for i in xs.indices {
            let v = xs[i]
            let want = (v * 0.5) * (1 + Kernels.erfFloat(v * 0.70710678118654752440))
            let cdf = 0.5 * (1 + Kernels.erfFloat(v * 0.70710678118654752440))
            let pdf = Kernels.expFloat(-0.5 * (v * v)) * 0.39894228040143267794
            XCTAssertEqual(y[i].bitPattern, want.bitPattern, "gelu(\(v))")
            XCTAssertEqual(dx[i].bitPattern, (g[i] * cdf.addingProduct(v, pdf)).bitPattern, "gelu'(\(v))")
        }
    }

    /// The row softmax as it was written before its 16-lane passes: scalar NaN scan, max,
    /// `expFloat` per element, Double sums over 16 fixed lanes, then the reciprocal.
    func softmaxRowReference(_ row: [Float]) -> [Float] {
        if row.contains(where: { $0.isNaN }) { return row.map { _ in .nan } }
        let m = row.max() ?? 0
        let e = row.map { Kernels.expFloat($0 - m) }
        let nv = e.count / 16
        var lanes = [Double](repeating: 0, count: 16)
        for v in 0..<nv { for l in 0..<16 { lanes[l] += Double(e[16 * v + l]) } }
        var s = 0.0
        for l in 0..<16 { s += lanes[l] }
        for i in (16 * nv)..<e.count { s += Double(e[i]) }
        let inv = Float(1 / s)
        return e.map { $0 * inv }
    }

    func testSoftmaxRowFloatEqualsReference() {
        var rows: [[Float]] = (1...70).map { n in (0..<n).map { _ in rng.nextNormal() * 4 } }
        rows.append((0..<4096).map { _ in rng.nextNormal() * 8 })
        rows.append((0..<37).map { i in i == 20 ? Float.infinity : rng.nextNormal() })
        rows.append((0..<40).map { i in i == 33 ? Float.nan : rng.nextNormal() })
        rows.append((0..<40).map { i in i == 3 ? Float.nan : rng.nextNormal() })
        rows.append((0..<48).map { i in i % 5 == 0 ? -Float.infinity : rng.nextNormal() })
        rows.append([Float](repeating: -.infinity, count: 32))
        rows.append((0..<33).map { i in i == 7 ? 50 : -60 })
        for row in rows {
            var got = row
            got.withUnsafeMutableBufferPointer { Kernels.softmaxRowFloat($0.baseAddress!, $0.count) }
            let want = softmaxRowReference(row)
            XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "row of \(row.count)")
        }
    }

    func testErfAndGELUAgainstDouble() {
        var worstErf = 0.0, worstGelu = 0.0
        var xs: [Float] = []
        var x: Float = -12
        while x < 12 { xs.append(x); x += 0.00731 }
        xs += [0, -0, 1, -1, 2, -2, 9.2, -9.2, 0.99999994, 1.0000001, 1.9999999]
        for v in xs { worstErf = max(worstErf, abs(Double(Kernels.erfFloat(v)) - Foundation.erf(Double(v)))) }
        let g = Kernels.geluVectorized(xs)
        for (xv, gv) in zip(xs, g) {
            let exact = 0.5 * Double(xv) * (1 + Foundation.erf(Double(xv) / 2.0.squareRoot()))
            worstGelu = max(worstGelu, abs(Double(gv) - exact) / max(1, abs(exact)))
        }
        print("erfFloat worst abs error \(worstErf), geluVectorized worst error \(worstGelu)")
        XCTAssertLessThan(worstErf, 3e-7)
        XCTAssertLessThan(worstGelu, 5e-7)
        XCTAssertTrue(Kernels.erfFloat(.nan).isNaN)
        XCTAssertEqual(Kernels.erfFloat(20), 1)
        XCTAssertEqual(Kernels.erfFloat(-20), -1)
        // Against the libm GELU of the toolkit (gelu()): same function.
        let t = Tensor(shape: [xs.count], data: xs)
        XCTAssertLessThan(relErr(t.geluVectorized().data, t.gelu().data), 3e-7)
    }

    func testGELUVectorizedGradient() {
        let xs: [Float] = (0..<1003).map { Float($0) * 0.017 - 8.5 }
        let x = Tensor(shape: [xs.count], data: xs, requiresGrad: true)
        let u = randn([xs.count])
        (x.geluVectorized() * u).sum().backward()
        let expected = zip(xs, u.data).map { xv, uv -> Float in
            let d = Double(xv)
            let cdf = 0.5 * (1 + Foundation.erf(d / 2.0.squareRoot()))
            let pdf = Foundation.exp(-d * d / 2) / (2 * Double.pi).squareRoot()
            return Float(Double(uv) * (cdf + d * pdf))
        }
        XCTAssertLessThan(relErr(x.grad!.data, expected), 1e-6)
    }

    /// The fused pixel shuffle + GELU against the permute then `geluVectorized`, bit for bit,
    /// forward and backward: runs of 2C floats that are a multiple of 16 (C = 32, SAM's decoder)
    /// and that are not (C = 7: a 14-float run, all tail), batch 2, on 1 and 2 threads.
    func testGELUPixelShuffle2x2BitwiseEqualToPermuteThenGELU() {
        for (b, h, w, c) in [(2, 3, 5, 7), (1, 8, 6, 32)] {
            let y = randn([b, h * w, 4 * c], 2, grad: true), u = randn([b, 4 * h * w, c])
            for threads in [1, 2] {
                Parallel.threads = threads
                y.zeroGrad()
                let fused = geluPixelShuffle2x2(y, h: h, w: w)
                (fused * u).sum().backward()
                let fusedGrad = y.grad!.data
                y.zeroGrad()
                let composite = y.reshape([b, h, w, 2, 2, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, 4 * h * w, c])
                    .geluVectorized()
                (composite * u).sum().backward()
                XCTAssertEqual(fused.shape, [b, 4 * h * w, c])
                XCTAssertEqual(fused.data.map(\.bitPattern), composite.data.map(\.bitPattern), "forward \((b, h, w, c)) t=\(threads)")
                XCTAssertEqual(fusedGrad.map(\.bitPattern), y.grad!.data.map(\.bitPattern), "backward \((b, h, w, c)) t=\(threads)")
                // One element by hand: out[b=last, pixel (2i+1, 2j), c] = gelu(y[b, i·w + j, (2·1 + 0)·C + c]).
                let (bi, i, j, ch) = (b - 1, h - 1, w / 2, c - 1)
                let v = y.data[(bi * h * w + i * w + j) * 4 * c + 2 * c + ch]
                let want = (v * 0.5) * (1 + Kernels.erfFloat(v * 0.70710678118654752440))
                XCTAssertEqual(fused.data[(bi * 4 * h * w + (2 * i + 1) * 2 * w + 2 * j) * c + ch].bitPattern, want.bitPattern)
            }
        }
    }

    // MARK: attention forward

    /// The composite SAM computes: split heads, (q kᵀ) / s or (q·s) kᵀ, softmax, @ v, merge.
    func compositeAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int, scale: AttentionScale) -> Tensor {
        func split(_ x: Tensor) -> Tensor {
            x.reshape([x.shape[0], x.shape[1], heads, x.shape[2] / heads]).transpose(1, 2)
        }
        let (qh, kh, vh) = (split(q), split(k), split(v))
        let logits: Tensor
        switch scale {
        case .divide(let s): logits = matmul(qh, kh.transpose(2, 3)) / s
        case .multiplyQuery(let s): logits = matmul(qh * s, kh.transpose(2, 3))
        }
        let o = matmul(logits.softmax(dim: -1), vh)
        return o.transpose(1, 2).reshape([q.shape[0], q.shape[1], v.shape[2]])
    }

    func testAttentionMatchesComposite() {
        for (b, nq, nk, heads, dk, dv, scale) in [(2, 7, 20, 4, 8, 8, AttentionScale.divide(Float(8.0.squareRoot()))),
                                                   (1, 12, 300, 8, 16, 16, .divide(4)),
                                                   (1, 33, 5, 2, 4, 6, .multiplyQuery(0.5))] {
            let q = randn([b, nq, heads * dk], grad: true), k = randn([b, nk, heads * dk], grad: true)
            let v = randn([b, nk, heads * dv], grad: true)
            let fused = multiHeadAttention(q: q, k: k, v: v, numHeads: heads, scale: scale)
            let u = randn(fused.shape)
            (fused * u).sum().backward()
            let (gq, gk, gv) = (q.grad!.data, k.grad!.data, v.grad!.data)
            q.zeroGrad(); k.zeroGrad(); v.zeroGrad()
            let ref = compositeAttention(q, k, v, heads: heads, scale: scale)
            (ref * u).sum().backward()
            XCTAssertEqual(fused.shape, [b, nq, heads * dv])
            XCTAssertLessThan(relErr(fused.data, ref.data), 2e-6, "\((b, nq, nk, heads))")
            XCTAssertLessThan(relErr(gq, q.grad!.data), 1e-5)
            XCTAssertLessThan(relErr(gk, k.grad!.data), 1e-5)
            XCTAssertLessThan(relErr(gv, v.grad!.data), 1e-5)
        }
    }

    /// SAM's image-encoder attention: logits + rel_h[(i, j), k] + rel_w[(i, j), l], from the unscaled q.
    func testAttentionRelativePositionMatchesExplicitBias() {
        let (b, heads, dk, qh, qw) = (2, 3, 4, 3, 5)
        let n = qh * qw
        let q = randn([b, n, heads * dk]), k = randn([b, n, heads * dk]), v = randn([b, n, heads * dk])
        let rh = randn([qh, qh, dk]), rw = randn([qw, qw, dk])
        let fused = multiHeadAttention(q: q, k: k, v: v, numHeads: heads, scale: .multiplyQuery(0.5),
                                       relPos: (rh, rw, (qh, qw), (qh, qw)))
        // Explicit: per (b, h), S[(i,j),(kk,l)] = Σ_c (0.5 q) k + Σ_c q rh[i,kk] + Σ_c q rw[j,l].
        var expected = [Float](repeating: 0, count: b * n * heads * dk)
        for bb in 0..<b {
            for h in 0..<heads {
                for r in 0..<n {
                    let (i, j) = (r / qw, r % qw)
                    var s = [Double](repeating: 0, count: n)
                    for c2 in 0..<n {
                        let (kk, l) = (c2 / qw, c2 % qw)
                        var dot = 0.0, bh = 0.0, bw = 0.0
                        for c in 0..<dk {
                            let qv = Double(q.data[(bb * n + r) * heads * dk + h * dk + c])
                            dot += qv * 0.5 * Double(k.data[(bb * n + c2) * heads * dk + h * dk + c])
                            bh += qv * Double(rh.data[(i * qh + kk) * dk + c])
                            bw += qv * Double(rw.data[(j * qw + l) * dk + c])
                        }
                        s[c2] = dot + bh + bw
                    }
                    let m = s.max()!
                    let e = s.map { Foundation.exp($0 - m) }
                    let z = e.reduce(0, +)
                    for c in 0..<dk {
                        var o = 0.0
                        for c2 in 0..<n { o += e[c2] / z * Double(v.data[(bb * n + c2) * heads * dk + h * dk + c]) }
                        expected[(bb * n + r) * heads * dk + h * dk + c] = Float(o)
                    }
                }
            }
        }
        XCTAssertLessThan(relErr(fused.data, expected), 2e-6)
    }

    /// Attention rows are independent: a query set split into row blocks sharing one K (here 3
    /// blocks, where the forward transposes K once for all of them) gives bitwise the outputs and
    /// probabilities of the same queries attended to in calls small enough for a single block.
    func testAttentionRowBlocksMatchSingleBlockCalls() {
        let (heads, nq, nk, dk, dv) = (2, 300, 2048, 16, 8)
        for scale in [AttentionScale.divide(4), .multiplyQuery(0.25)] {
            let g = AttentionGeometry(batch: 1, heads: heads, nq: nq, nk: nk, dk: dk, dv: dv, scale: scale)
            XCTAssertGreaterThan((nq + g.blockRows - 1) / g.blockRows, 1, "the full call must use several blocks")
            func r(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextNormal() } }
            let q = r(nq * heads * dk), k = r(nk * heads * dk), v = r(nk * heads * dv)
            let (out, probs) = Kernels.attentionForward(q: q, k: k, v: v, rh: nil, rw: nil, g, keepProbs: true)
            var refOut: [Float] = [], refProbs = [Float](repeating: .nan, count: heads * nq * nk)
            for r0 in stride(from: 0, to: nq, by: 100) {
                let part = AttentionGeometry(batch: 1, heads: heads, nq: 100, nk: nk, dk: dk, dv: dv, scale: scale)
                XCTAssertEqual(part.blockRows, 100)
                let (o, p) = Kernels.attentionForward(q: Array(q[(r0 * heads * dk)..<((r0 + 100) * heads * dk)]),
                                                      k: k, v: v, rh: nil, rw: nil, part, keepProbs: true)
                refOut += o
                for h in 0..<heads {
                    for i in 0..<100 {
                        let dst = (h * nq + r0 + i) * nk, src = (h * 100 + i) * nk
                        refProbs.replaceSubrange(dst..<(dst + nk), with: p![src..<(src + nk)])
                    }
                }
            }
            XCTAssertEqual(out.map(\.bitPattern), refOut.map(\.bitPattern), "\(scale)")
            XCTAssertEqual(probs!.map(\.bitPattern), refProbs.map(\.bitPattern), "\(scale)")
        }
    }

    /// The short-key kernels (Nk ≤ 16: one query row per lane) give the general path's bits for
    /// O and P, and for dQ, dK, dV: key counts 1–16, head widths that are and are not multiples of 4 and 16, query
    /// counts with a partial 16-row tile and several 256-row units, both scales, and rows whose
    /// logits hold a NaN or ±inf.
    func testShortKeyAttentionMatchesGeneralPathBitwise() {
        let cases: [(b: Int, nq: Int, nk: Int, heads: Int, dk: Int, dv: Int, scale: AttentionScale)] = [
            (1, 300, 12, 8, 16, 16, .divide(4)), (2, 37, 1, 2, 4, 6, .divide(2)), (1, 16, 16, 3, 32, 5, .multiplyQuery(0.3)),
            (1, 530, 7, 1, 20, 33, .divide(1.5)), (3, 5, 13, 4, 3, 1, .multiplyQuery(0.7)), (1, 12, 12, 8, 32, 32, .divide(5.6)),
            (2, 70, 9, 2, 16, 32, .multiplyQuery(0.25))]
        for (b, nq, nk, heads, dk, dv, scale) in cases {
            let g = AttentionGeometry(batch: b, heads: heads, nq: nq, nk: nk, dk: dk, dv: dv, scale: scale)
            XCTAssertTrue(Kernels.usesShortKeyAttention(g))
            func r(_ n: Int, _ s: Float = 1) -> [Float] { (0..<n).map { _ in s * rng.nextNormal() } }
            var q = r(b * nq * heads * dk, 2), k = r(b * nk * heads * dk), v = r(b * nk * heads * dv)
            if nq > 3 {
                q[3 * heads * dk] = .nan                      // query row 3, head 0: a NaN logit row
                q[2 * heads * dk] = .infinity                 // query row 2, head 0: ±inf logits
            }
            let fast = Kernels.attentionForward(q: q, k: k, v: v, rh: nil, rw: nil, g, keepProbs: true)
            let general = Kernels.attentionForward(q: q, k: k, v: v, rh: nil, rw: nil, g, keepProbs: true, shortKeys: false)
            XCTAssertEqual(fast.out.map(\.bitPattern), general.out.map(\.bitPattern), "O \(g)")
            XCTAssertEqual(fast.probs!.map(\.bitPattern), general.probs!.map(\.bitPattern), "P \(g)")
            let noProbs = Kernels.attentionForward(q: q, k: k, v: v, rh: nil, rw: nil, g, keepProbs: false)
            XCTAssertEqual(noProbs.out.map(\.bitPattern), general.out.map(\.bitPattern), "O without P \(g)")
            XCTAssertNil(noProbs.probs)
            if nq > 3 { XCTAssertTrue(fast.out[3 * heads * dv].isNaN, "a NaN logit makes its row NaN") }
            // The backward, from finite inputs (a NaN row would make every dK, dV NaN).
            let qf = r(q.count, 2), dO = r(fast.out.count)
            let pf = Kernels.attentionForward(q: qf, k: k, v: v, rh: nil, rw: nil, g, keepProbs: true).probs!
            let fb = Kernels.attentionBackward(dO, q: qf, k: k, v: v, rh: nil, rw: nil, probs: pf, g)
            let gb = Kernels.attentionBackward(dO, q: qf, k: k, v: v, rh: nil, rw: nil, probs: pf, g, shortKeys: false)
            XCTAssertEqual(fb.dq.map(\.bitPattern), gb.dq.map(\.bitPattern), "dq \(g)")
            XCTAssertEqual(fb.dk.map(\.bitPattern), gb.dk.map(\.bitPattern), "dk \(g)")
            XCTAssertEqual(fb.dv.map(\.bitPattern), gb.dv.map(\.bitPattern), "dv \(g)")
            XCTAssertFalse(fb.dk.contains { !$0.isFinite })
        }
        XCTAssertFalse(Kernels.usesShortKeyAttention(AttentionGeometry(batch: 1, heads: 1, nq: 4, nk: 17, dk: 4, dv: 4,
                                                                        scale: .divide(2))))
    }

    /// The general attention backward (Float) against direct loops in its order: dV = Pᵀ dO and
    /// dP = dO Vᵀ as FMA chains; per row s = Σ_j dP·P in Double in j order, dS = P·(dP − s) in
    /// Double rounded once, then / scale; dQ = dS K and dK = dSᵀ Q as FMA chains. 20 query rows
    /// (a group of sixteen and one of four) against 37 keys (two 16-column tiles and a tail).
    func testAttentionBackwardBitwiseEqualToDirectLoops() {
        let (b, heads, nq, nk, dk, dv, d) = (2, 2, 20, 37, 3, 2, Float(1.7))
        let g = AttentionGeometry(batch: b, heads: heads, nq: nq, nk: nk, dk: dk, dv: dv, scale: .divide(d))
        func r(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextNormal() } }
        let q = r(b * nq * heads * dk), k = r(b * nk * heads * dk), v = r(b * nk * heads * dv), dO = r(b * nq * heads * dv)
        let p = Kernels.attentionForward(q: q, k: k, v: v, rh: nil, rw: nil, g, keepProbs: true).probs!
        var dq = [Float](repeating: 0, count: q.count), dk_ = [Float](repeating: 0, count: k.count)
        var dv_ = [Float](repeating: 0, count: v.count)
        let (iq, iv) = (heads * dk, heads * dv)
        for bi in 0..<b {
            for h in 0..<heads {
                func P(_ i: Int, _ j: Int) -> Float { p[((bi * heads + h) * nq + i) * nk + j] }
                for j in 0..<nk {
                    for c in 0..<dv {
                        var acc: Float = 0
                        for i in 0..<nq { acc = acc.addingProduct(P(i, j), dO[(bi * nq + i) * iv + h * dv + c]) }
                        dv_[(bi * nk + j) * iv + h * dv + c] = acc
                    }
                }
                var dS = [Float](repeating: 0, count: nq * nk)
                for i in 0..<nq {
                    for j in 0..<nk {
                        var acc: Float = 0
                        for c in 0..<dv { acc = acc.addingProduct(dO[(bi * nq + i) * iv + h * dv + c], v[(bi * nk + j) * iv + h * dv + c]) }
                        dS[i * nk + j] = acc
                    }
                    var s = 0.0
                    for j in 0..<nk { s += Double(dS[i * nk + j]) * Double(P(i, j)) }
                    for j in 0..<nk { dS[i * nk + j] = Float(Double(P(i, j)) * (Double(dS[i * nk + j]) - s)) / d }
                }
                for i in 0..<nq {
                    for c in 0..<dk {
                        var acc: Float = 0
                        for j in 0..<nk { acc = acc.addingProduct(dS[i * nk + j], k[(bi * nk + j) * iq + h * dk + c]) }
                        dq[(bi * nq + i) * iq + h * dk + c] = acc
                    }
                }
                for j in 0..<nk {
                    for c in 0..<dk {
                        var acc: Float = 0
                        for i in 0..<nq { acc = acc.addingProduct(dS[i * nk + j], q[(bi * nq + i) * iq + h * dk + c]) }
                        dk_[(bi * nk + j) * iq + h * dk + c] = acc
                    }
                }
            }
        }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for threads in [1, 2] {
            Parallel.threads = threads
            let gr = Kernels.attentionBackward(dO, q: q, k: k, v: v, rh: nil, rw: nil, probs: p, g)
            XCTAssertEqual(gr.dq.map(\.bitPattern), dq.map(\.bitPattern), "dq, \(threads) threads")
            XCTAssertEqual(gr.dk.map(\.bitPattern), dk_.map(\.bitPattern), "dk, \(threads) threads")
            XCTAssertEqual(gr.dv.map(\.bitPattern), dv_.map(\.bitPattern), "dv, \(threads) threads")
        }
    }

    // MARK: attention backward by finite differences (Double, the same kernels)

    func testAttentionBackwardFiniteDifferencesInDouble() {
        for (scale, rel) in [(AttentionScale.divide(1.7), false), (.multiplyQuery(0.6), true)] {
            let (b, heads, dk, dv, qh, qw, kh, kw) = (2, 2, 3, 2, 2, 3, 2, 2)
            let (nq, nk) = rel ? (qh * qw, qh * qw) : (qh * qw, kh * kw)
            var g = AttentionGeometry(batch: b, heads: heads, nq: nq, nk: nk, dk: dk, dv: dv, scale: scale)
            if rel { g.relPos = .init(qh: qh, qw: qw, kh: qh, kw: qw) }
            func r(_ n: Int) -> [Double] { (0..<n).map { _ in Double(rng.nextNormal()) } }
            var inputs = [r(b * nq * heads * dk), r(b * nk * heads * dk), r(b * nk * heads * dv),
                          r(rel ? qh * qh * dk : 0), r(rel ? qw * qw * dk : 0)]
            let u = r(b * nq * heads * dv)
            func loss(_ x: [[Double]]) -> Double {
                let o = Kernels.attentionForward(q: x[0], k: x[1], v: x[2], rh: rel ? x[3] : nil, rw: rel ? x[4] : nil,
                                                 g, keepProbs: false).out
                return zip(o, u).reduce(0) { $0 + $1.0 * $1.1 }
            }
            let (out, probs) = Kernels.attentionForward(q: inputs[0], k: inputs[1], v: inputs[2],
                                                        rh: rel ? inputs[3] : nil, rw: rel ? inputs[4] : nil, g, keepProbs: true)
            XCTAssertEqual(out.count, u.count)
            let gr = Kernels.attentionBackward(u, q: inputs[0], k: inputs[1], v: inputs[2], rh: rel ? inputs[3] : nil,
                                               rw: rel ? inputs[4] : nil, probs: probs!, g)
            let analytic: [[Double]] = [gr.dq, gr.dk, gr.dv, gr.drh ?? [], gr.drw ?? []]
            var worst = 0.0
            for t in 0..<5 {
                for i in 0..<inputs[t].count {
                    let h = 1e-6
                    inputs[t][i] += h
                    let lp = loss(inputs)
                    inputs[t][i] -= 2 * h
                    let lm = loss(inputs)
                    inputs[t][i] += h
                    let fd = (lp - lm) / (2 * h)
                    worst = max(worst, abs(fd - analytic[t][i]) / max(1, abs(fd)))
                }
            }
            print("attention backward (\(scale), relPos \(rel)) worst FD error \(worst)")
            XCTAssertLessThan(worst, 1e-7)
        }
    }

    // MARK: determinism

    func testAttentionAndGELUBitwiseOnOneAndTwoThreads() {
        let q = randn([1, 200, 64], grad: true), k = randn([1, 300, 64], grad: true), v = randn([1, 300, 64], grad: true)
        let rh = randn([10, 15, 16], grad: true), rw = randn([20, 15, 16], grad: true)
        let qq = randn([1, 200, 64], grad: true), kk = randn([1, 225, 64], grad: true), vv = randn([1, 225, 64], grad: true)
        func run() -> [Float] {
            for t in [q, k, v, rh, rw, qq, kk, vv] { t.zeroGrad() }
            let a = multiHeadAttention(q: q, k: k, v: v, numHeads: 4, scale: .divide(4))
            let c = multiHeadAttention(q: qq, k: kk, v: vv, numHeads: 4, scale: .multiplyQuery(0.25),
                                       relPos: (rh, rw, (10, 20), (15, 15)))
            let gl = a.geluVectorized()
            (gl.sum() + c.sum()).backward()
            return a.data + c.data + gl.data + [q, k, v, rh, rw, qq, kk, vv].flatMap { $0.grad!.data }
        }
        Parallel.threads = 1
        let one = run()
        Parallel.threads = 2
        let two = run()
        XCTAssertEqual(one.map(\.bitPattern), two.map(\.bitPattern))
    }

    // MARK: permute fast paths

    /// out[i0, i1, i2, i3] = x[Σ_d i_d · stride(dims[d])], element by element.
    static func permuteDefinition(_ x: [Float], _ shape: [Int], _ dims: [Int]) -> [Float] {
        let strides = Tensor.strides(of: shape), outShape = dims.map { shape[$0] }
        var expected: [Float] = []
        var idx = [Int](repeating: 0, count: 4)
        for _ in 0..<x.count {
            var src = 0
            for d in 0..<4 { src += idx[d] * strides[dims[d]] }
            expected.append(x[src])
            var d = 3
            while d >= 0 { idx[d] += 1; if idx[d] < outShape[d] { break }; idx[d] = 0; d -= 1 }
        }
        return expected
    }

    func testBlockedPermuteEqualsDefinition() {
        let shape = [2, 3, 5, 7]
        let x = (0..<shape.product).map { Float($0) }
        for dims in [[0, 2, 1, 3], [0, 1, 3, 2], [3, 2, 1, 0], [1, 0, 2, 3], [0, 3, 1, 2], [2, 0, 3, 1]] {
            XCTAssertEqual(Kernels.permute(x, shape, dims), Self.permuteDefinition(x, shape, dims), "\(dims)")
        }
        // Large enough to split over 2 threads (runs, 32-row tile bands with a partial last band,
        // and the generic path), on 1 and 2 threads.
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        let large = [3, 50, 41, 70]
        let y = (0..<large.product).map { Float($0) }
        for dims in [[0, 2, 1, 3], [0, 1, 3, 2], [3, 2, 1, 0], [0, 3, 1, 2]] {
            let expected = Self.permuteDefinition(y, large, dims)
            for threads in [1, 2] {
                Parallel.threads = threads
                XCTAssertEqual(Kernels.permute(y, large, dims), expected, "\(dims) on \(threads) threads")
            }
        }
        // A large transpose (tiles) and a pixel shuffle (contiguous runs).
        let big = (0..<(70 * 45)).map { Float($0) }
        let t = Kernels.permute(big, [70, 45], [1, 0])
        XCTAssertEqual(t[1 * 70 + 3], big[3 * 45 + 1])
        XCTAssertEqual(t[44 * 70 + 69], big[69 * 45 + 44])
        let ps = Kernels.permute((0..<(2 * 3 * 2 * 2 * 4)).map { Float($0) }, [2, 3, 2, 2, 4], [0, 2, 1, 3, 4])
        XCTAssertEqual(Array(ps[0..<8]), [0, 1, 2, 3, 4, 5, 6, 7])
        XCTAssertEqual(Array(ps[8..<16]), [16, 17, 18, 19, 20, 21, 22, 23])
    }
}

extension SAMOpsTests {
    /// matmulNT equals matmul(a, bᵀ) bit for bit (same sums in k order) and has the matmul's
    /// gradients; its Double kernels match finite differences.
    func testMatmulNT() {
        let a = randn([2, 4, 32], grad: true), b = randn([2, 37, 32], grad: true)
        let c = matmulNT(a, b)
        let ref = matmul(a, b.transpose(1, 2))
        XCTAssertEqual(c.shape, [2, 4, 37])
        XCTAssertEqual(c.data.map(\.bitPattern), ref.data.map(\.bitPattern))
        let u = randn(c.shape)
        (c * u).sum().backward()
        let (ga, gb) = (a.grad!.data, b.grad!.data)
        a.zeroGrad(); b.zeroGrad()
        (ref * u).sum().backward()
        XCTAssertLessThan(relErr(ga, a.grad!.data), 1e-6)
        XCTAssertLessThan(relErr(gb, b.grad!.data), 1e-6)
        // dA of the register path (K a multiple of 16; M not a multiple of 4) and of the
        // per-row path: bitwise the FMA chain over n in order from 0.
        for (batch, m, n, k) in [(2, 5, 37, 32), (1, 4, 100, 16), (1, 3, 20, 12)] {
            let af = (0..<(batch * m * k)).map { _ in rng.nextNormal() }, bf = (0..<(batch * n * k)).map { _ in rng.nextNormal() }
            let gf = (0..<(batch * m * n)).map { _ in rng.nextNormal() }
            let gr = Kernels.matmulNTBackward(gf, af, bf, batch: batch, m: m, n: n, k: k, needA: true, needB: true)
            var expected = [Float](repeating: 0, count: batch * m * k)
            for bi in 0..<batch { for i in 0..<m { for kk in 0..<k { for nn in 0..<n {
                expected[(bi * m + i) * k + kk] = expected[(bi * m + i) * k + kk]
                    .addingProduct(gf[(bi * m + i) * n + nn], bf[(bi * n + nn) * k + kk])
            } } } }
            XCTAssertEqual(gr.da!.map(\.bitPattern), expected.map(\.bitPattern), "dA \((batch, m, n, k))")
            var expectedB = [Float](repeating: 0, count: batch * n * k)
            for bi in 0..<batch { for nn in 0..<n { for kk in 0..<k { for i in 0..<m {
                expectedB[(bi * n + nn) * k + kk] = expectedB[(bi * n + nn) * k + kk]
                    .addingProduct(gf[(bi * m + i) * n + nn], af[(bi * m + i) * k + kk])
            } } } }
            XCTAssertEqual(gr.db!.map(\.bitPattern), expectedB.map(\.bitPattern), "dB \((batch, m, n, k))")
        }
        // Double: finite differences.
        var ad = (0..<(1 * 3 * 5)).map { _ in Double(rng.nextNormal()) }, bd = (0..<(1 * 7 * 5)).map { _ in Double(rng.nextNormal()) }
        let ud = (0..<21).map { _ in Double(rng.nextNormal()) }
        func loss(_ a: [Double], _ b: [Double]) -> Double {
            zip(Kernels.matmulNT(a, b, batch: 1, m: 3, n: 7, k: 5), ud).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let gr = Kernels.matmulNTBackward(ud, ad, bd, batch: 1, m: 3, n: 7, k: 5, needA: true, needB: true)
        for i in 0..<ad.count {
            ad[i] += 1e-6; let lp = loss(ad, bd); ad[i] -= 2e-6; let lm = loss(ad, bd); ad[i] += 1e-6
            XCTAssertEqual(gr.da![i], (lp - lm) / 2e-6, accuracy: 1e-7)
        }
        for i in 0..<bd.count {
            bd[i] += 1e-6; let lp = loss(ad, bd); bd[i] -= 2e-6; let lm = loss(ad, bd); bd[i] += 1e-6
            XCTAssertEqual(gr.db![i], (lp - lm) / 2e-6, accuracy: 1e-7)
        }
    }
}

extension SAMOpsTests {
    /// layerNormRows' kernels (sums of four or sixteen rows interleaved) give the bits of the
    /// one-row-at-a-time algorithm, written out here: 135 rows (groups of sixteen, quads, a
    /// partial quad, a partial 64-row block) of 37 columns (two 16 × 16 transposes and a tail of
    /// five), and 70 rows of 64 (whole transposes only).
    func testLayerNormRowsBitwiseEqualToRowByRow() {
        for (rows, d) in [(135, 37), (70, 64)] { checkLayerNormRowsBitwise(rows: rows, d: d) }
    }

    func checkLayerNormRowsBitwise(rows: Int, d: Int) {
        let x = (0..<(rows * d)).map { _ in 3 * rng.nextNormal() + 0.5 }, g = (0..<(rows * d)).map { _ in rng.nextNormal() }
        let w = (0..<d).map { _ in rng.nextNormal() }, b = (0..<d).map { _ in rng.nextNormal() }
        var y = [Float](repeating: 0, count: rows * d), mean = [Double](), rstd = [Double]()
        var dx = [Float](repeating: 0, count: rows * d), dw = [Double](repeating: 0, count: d)
        var db = [Double](repeating: 0, count: d)
        var pw = [Double](repeating: 0, count: d), pb = [Double](repeating: 0, count: d)
        for r in 0..<rows {
            let xr = Array(x[(r * d)..<((r + 1) * d)]), gr = Array(g[(r * d)..<((r + 1) * d)])
            var s = 0.0
            for c in 0..<d { s += Double(xr[c]) }
            let m = s / Double(d)
            var v = 0.0
            for c in 0..<d { let t = Double(xr[c]) - m; v += t * t }
            let rs = 1 / (v / Double(d) + 1e-5).squareRoot()
            mean.append(m); rstd.append(rs)
            let (mt, rt) = (Float(m), Float(rs))
            for c in 0..<d { y[r * d + c] = ((xr[c] - mt) * rt) * w[c] + b[c] }
            let xhat = xr.map { ($0 - mt) * rt }, gw = (0..<d).map { gr[$0] * w[$0] }
            var sg = 0.0, sgx = 0.0
            for c in 0..<d { sg += Double(gw[c]); sgx += Double(gw[c]) * Double(xhat[c]) }
            let mg = Float(sg / Double(d)), mgx = Float(sgx / Double(d))
            for c in 0..<d { dx[r * d + c] = rt * ((gw[c] - mg) - xhat[c] * mgx) }
            for c in 0..<d { pw[c] += Double(gr[c]) * Double(xhat[c]); pb[c] += Double(gr[c]) }
            if r % 64 == 63 || r == rows - 1 {   // the kernel's 64-row partial sums, in block order
                for c in 0..<d { dw[c] += pw[c]; db[c] += pb[c] }
                pw = [Double](repeating: 0, count: d); pb = pw
            }
        }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for threads in [1, 2] {
            Parallel.threads = threads
            let f = Kernels.layerNormRows(x, rows: rows, d: d, weight: w, bias: b, eps: 1e-5)
            XCTAssertEqual(f.y.map(\.bitPattern), y.map(\.bitPattern), "y, \(rows) × \(d), \(threads) threads")
            XCTAssertEqual(f.mean, mean)
            XCTAssertEqual(f.rstd, rstd)
            let bw = Kernels.layerNormRowsBackward(g, x, rows: rows, d: d, mean: f.mean, rstd: f.rstd, weight: w)
            XCTAssertEqual(bw.dx.map(\.bitPattern), dx.map(\.bitPattern), "dx, \(rows) × \(d), \(threads) threads")
            XCTAssertEqual(bw.dWeight.map(\.bitPattern), dw.map { Float($0).bitPattern })
            XCTAssertEqual(bw.dBias.map(\.bitPattern), db.map { Float($0).bitPattern })
        }
    }

    /// layerNormRows is nn.LayerNorm over the last dim: it agrees with the general layerNorm op
    /// (forward and gradients), its Double kernels match finite differences, and its bits do
    /// not depend on the thread count.
    func testLayerNormRows() {
        let x = randn([3, 70, 24], 2, grad: true), w = randn([24], grad: true), b = randn([24], grad: true)
        let u = randn(x.shape)
        let y = layerNormRows(x, weight: w, bias: b, eps: 1e-5)
        y.backward(u)
        let (gx, gw, gb) = (x.grad!.data, w.grad!.data, b.grad!.data)
        x.zeroGrad(); w.zeroGrad(); b.zeroGrad()
        let ref = layerNorm(x, normalizedShape: [24], weight: w, bias: b, eps: 1e-5)
        ref.backward(u)
        XCTAssertLessThan(relErr(y.data, ref.data), 1e-6)
        XCTAssertLessThan(relErr(gx, x.grad!.data), 1e-5)
        XCTAssertLessThan(relErr(gw, w.grad!.data), 1e-6)
        XCTAssertLessThan(relErr(gb, b.grad!.data), 1e-6)
        // Without affine parameters.
        let plain = layerNormRows(x, weight: nil, bias: nil, eps: 1e-6)
        XCTAssertLessThan(relErr(plain.data, layerNorm(x, normalizedShape: [24], weight: nil, bias: nil, eps: 1e-6).data), 1e-6)

        // Double: finite differences of Σ y·u w.r.t. x, weight and bias (rows 130 > one block).
        let (rows, d) = (130, 5)
        func r(_ n: Int) -> [Double] { (0..<n).map { _ in Double(rng.nextNormal()) } }
        var xd = r(rows * d), wd = r(d), bd = r(d)
        let ud = r(rows * d)
        func loss() -> Double {
            zip(Kernels.layerNormRows(xd, rows: rows, d: d, weight: wd, bias: bd, eps: 1e-5).y, ud).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let f = Kernels.layerNormRows(xd, rows: rows, d: d, weight: wd, bias: bd, eps: 1e-5)
        let gr = Kernels.layerNormRowsBackward(ud, xd, rows: rows, d: d, mean: f.mean, rstd: f.rstd, weight: wd)
        var worst = 0.0
        for i in stride(from: 0, to: xd.count, by: 7) {
            xd[i] += 1e-6; let lp = loss(); xd[i] -= 2e-6; let lm = loss(); xd[i] += 1e-6
            worst = max(worst, abs((lp - lm) / 2e-6 - gr.dx[i]))
        }
        for i in 0..<d {
            wd[i] += 1e-6; var lp = loss(); wd[i] -= 2e-6; var lm = loss(); wd[i] += 1e-6
            worst = max(worst, abs((lp - lm) / 2e-6 - gr.dWeight[i]))
            bd[i] += 1e-6; lp = loss(); bd[i] -= 2e-6; lm = loss(); bd[i] += 1e-6
            worst = max(worst, abs((lp - lm) / 2e-6 - gr.dBias[i]))
        }
        XCTAssertLessThan(worst, 1e-6)

        // 1 vs 2 threads.
        let big = randn([700, 64], grad: true), bw = randn([64], grad: true)
        let bu = randn(big.shape)
        func run() -> [Float] {
            big.zeroGrad(); bw.zeroGrad()
            let o = layerNormRows(big, weight: bw, bias: nil, eps: 1e-6)
            o.backward(bu)
            return o.data + big.grad!.data + bw.grad!.data
        }
        Parallel.threads = 1
        let one = run()
        Parallel.threads = 2
        XCTAssertEqual(one.map(\.bitPattern), run().map(\.bitPattern))
    }
}
