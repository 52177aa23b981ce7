// Multi-head attention with the key and value projections folded in (foldedMultiHeadAttention),
// or the query and output projections (queryFoldedMultiHeadAttention): against the unfolded form
// (projections, the fused attention, out_proj) in Float, forward and every gradient, with and
// without gradients gathered before them; their kernels' backward against finite differences in
// Double; bitwise equality on 1 and 2 threads; and which SAM attention calls fold.

import Foundation
import XCTest
import SegmentAnything
import Tensors

final class FoldedAttentionTests: XCTestCase {
    var rng = PhiloxRNG(seed: 2024)

    func randn(_ shape: [Int], _ scale: Float = 1, grad: Bool = false) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.product).map { _ in scale * rng.nextNormal() }, requiresGrad: grad)
    }

    func relErr(_ a: [Float], _ b: [Float]) -> Double { GEMMTestSupport.relErr(a, b) }

    func norm(_ a: [Float]) -> Double { a.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }

    /// The largest |numeric − analytic| / max(1, |numeric|) over every element of every input,
    /// the numeric gradients by central differences (h = 1e-6) of `loss`.
    func worstFiniteDifferenceError(_ x: [[Double]], _ analytic: [[Double]], _ loss: ([[Double]]) -> Double) -> Double {
        var worst = 0.0
        for t in x.indices {
            XCTAssertEqual(analytic[t].count, x[t].count)
            let numeric = GEMMTestSupport.numericGradient(x[t], h: 1e-6) { xt in
                var y = x
                y[t] = xt
                return loss(y)
            }
            for (n, a) in zip(numeric, analytic[t]) { worst = max(worst, abs(n - a) / max(1, abs(n))) }
        }
        return worst
    }

    override func tearDown() { Parallel.threads = Parallel.defaultThreadCount() }

    /// The folded op and the unfolded form on the same tensors: the output and the gradients of
    /// q, k, v, Wk, Wv, bv (relative error), and bk (analytically zero: both within float noise of
    /// 0 against the size of Wk's gradient). `gatherFirst`: k and v also feed terms of the loss
    /// after it, whose gradients the backward gathers before the attention's adds its own.
    func checkAgainstUnfolded(b: Int, nq: Int, nk: Int, heads: Int, d: Int, c: Int, gatherFirst: Bool,
                              file: StaticString = #filePath, line: UInt = #line) {
        let inner = heads * d
        let q = randn([b, nq, inner], grad: true), k = randn([b, nk, c], grad: true), v = randn([b, nk, c], grad: true)
        let wk = randn([inner, c], 0.2, grad: true), bk = randn([inner], 0.5, grad: true)
        let wv = randn([inner, c], 0.2, grad: true), bv = randn([inner], 0.5, grad: true)
        let u = randn([b, nq, inner]), uk = randn([b, nk, c]), uv = randn([b, nk, c])
        let scale = Float(Double(d).squareRoot())
        let params = [q, k, v, wk, bk, wv, bv]
        func run(folded: Bool) -> (out: [Float], grads: [[Float]]) {
            for t in params { t.zeroGrad() }
            let o = folded
                ? foldedMultiHeadAttention(q: q, k: k, v: v, kWeight: wk, kBias: bk, vWeight: wv, vBias: bv,
                                           numHeads: heads, scale: scale)
                : multiHeadAttention(q: q, k: linear(k, weight: wk, bias: bk), v: linear(v, weight: wv, bias: bv),
                                     numHeads: heads, scale: .divide(scale))
            var loss = (o * u).sum()
            if gatherFirst { loss = loss + (k * uk).sum() + (v * uv).sum() }
            loss.backward()
            return (o.data, params.map { $0.grad!.data })
        }
        let f = run(folded: true), r = run(folded: false)
        let tag = "b \(b) nq \(nq) nk \(nk) heads \(heads) d \(d) c \(c) gatherFirst \(gatherFirst)"
        XCTAssertLessThan(relErr(f.out, r.out), 2e-6, tag, file: file, line: line)
        for (i, name) in ["q", "k", "v", "Wk", "bk", "Wv", "bv"].enumerated() where name != "bk" {
            XCTAssertLessThan(relErr(f.grads[i], r.grads[i]), 1e-5, "\(name): \(tag)", file: file, line: line)
        }
        let scaleWk = norm(r.grads[3])
        XCTAssertLessThan(norm(f.grads[4]), 1e-5 * scaleWk, "bk (folded): \(tag)", file: file, line: line)
        XCTAssertLessThan(norm(r.grads[4]), 1e-5 * scaleWk, "bk (unfolded): \(tag)", file: file, line: line)
    }

    func testFoldedAttentionMatchesUnfolded() {
        // A batch of two with a tail of keys past a multiple of 16; SAM's decoder at 1200 keys
        // (8 heads of 16, 12 tokens, C = 256); one head.
        checkAgainstUnfolded(b: 2, nq: 3, nk: 37, heads: 2, d: 4, c: 12, gatherFirst: false)
        checkAgainstUnfolded(b: 2, nq: 3, nk: 37, heads: 2, d: 4, c: 12, gatherFirst: true)
        checkAgainstUnfolded(b: 1, nq: 12, nk: 1200, heads: 8, d: 16, c: 256, gatherFirst: true)
        checkAgainstUnfolded(b: 1, nq: 5, nk: 64, heads: 1, d: 8, c: 20, gatherFirst: false)
    }

    /// k and v the same tensor (no gradient gathered for either: autograd adds the two).
    func testFoldedAttentionWithKeysAsValues() {
        let (b, nq, nk, heads, d, c) = (1, 4, 50, 2, 4, 10)
        let q = randn([b, nq, heads * d], grad: true), x = randn([b, nk, c], grad: true)
        let wk = randn([heads * d, c], 0.3, grad: true), bk = randn([heads * d], grad: true)
        let wv = randn([heads * d, c], 0.3, grad: true), bv = randn([heads * d], grad: true)
        let u = randn([b, nq, heads * d])
        (foldedMultiHeadAttention(q: q, k: x, v: x, kWeight: wk, kBias: bk, vWeight: wv, vBias: bv, numHeads: heads,
                                  scale: 2) * u).sum().backward()
        let folded = x.grad!.data
        x.zeroGrad()
        (multiHeadAttention(q: q, k: linear(x, weight: wk, bias: bk), v: linear(x, weight: wv, bias: bv),
                            numHeads: heads, scale: .divide(2)) * u).sum().backward()
        XCTAssertLessThan(relErr(folded, x.grad!.data), 1e-5)
    }

    func testFoldedAttentionBackwardFiniteDifferencesInDouble() {
        let g = FoldedAttentionGeometry(batch: 2, heads: 2, nq: 3, nk: 19, channels: 5, headDim: 3, scale: 1.7)
        func r(_ n: Int) -> [Double] { (0..<n).map { _ in Double(rng.nextNormal()) } }
        // q, k, v, kWeight, kBias, vWeight, vBias
        let x = [r(g.batch * g.nq * g.inner), r(g.batch * g.nk * g.channels), r(g.batch * g.nk * g.channels),
                 r(g.inner * g.channels), r(g.inner), r(g.inner * g.channels), r(g.inner)]
        let u = r(g.batch * g.nq * g.inner)
        func loss(_ x: [[Double]]) -> Double {
            let o = Kernels.foldedAttentionForward(q: x[0], k: x[1], v: x[2], kWeight: x[3], kBias: x[4], vWeight: x[5],
                                                   vBias: x[6], g, keep: false).out
            return zip(o, u).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let fwd = Kernels.foldedAttentionForward(q: x[0], k: x[1], v: x[2], kWeight: x[3], kBias: x[4], vWeight: x[5],
                                                 vBias: x[6], g, keep: true)
        let gr = Kernels.foldedAttentionBackward(u, q: x[0], k: x[1], v: x[2], kWeight: x[3], kBias: x[4], vWeight: x[5],
                                                 saved: fwd.saved!, g, needK: true, needV: true)
        let analytic = [gr.dq, gr.dk!, gr.dv!, gr.dkWeight, gr.dkBias, gr.dvWeight, gr.dvBias]
        XCTAssertLessThan(worstFiniteDifferenceError(x, analytic, loss), 1e-7)
        // The key bias shifts every logit of a row by the same amount: its gradient is zero.
        XCTAssertLessThan(gr.dkBias.map(abs).max()!, 1e-12)

        // Gathered gradients: addK + dk and addV + dv.
        let addK = r(x[1].count), addV = r(x[2].count)
        let ga = Kernels.foldedAttentionBackward(u, q: x[0], k: x[1], v: x[2], kWeight: x[3], kBias: x[4], vWeight: x[5],
                                                 saved: fwd.saved!, g, needK: true, needV: true, addK: addK, addV: addV)
        XCTAssertEqual(ga.dk!, zip(addK, gr.dk!).map { $0 + $1 })
        XCTAssertEqual(ga.dv!, zip(addV, gr.dv!).map { $0 + $1 })
    }

    /// Float: the gathered gradients are added as the GEMM stores (addK + dk, addX + dx, element
    /// by element the same bits as adding afterwards).
    func testFoldedAttentionGatheredGradientsBitwiseEqualToAddingAfterwards() {
        let g = FoldedAttentionGeometry(batch: 1, heads: 8, nq: 12, nk: 300, channels: 64, headDim: 8, scale: Float(8.0.squareRoot()))
        func r(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextNormal() } }
        let (q, k, v) = (r(g.nq * g.inner), r(g.nk * g.channels), r(g.nk * g.channels))
        let (wk, bk, wv, bv) = (r(g.inner * g.channels), r(g.inner), r(g.inner * g.channels), r(g.inner))
        let u = r(g.nq * g.inner), addK = r(k.count), addV = r(v.count)
        let saved = Kernels.foldedAttentionForward(q: q, k: k, v: v, kWeight: wk, kBias: bk, vWeight: wv, vBias: bv, g,
                                                   keep: true).saved!
        let plain = Kernels.foldedAttentionBackward(u, q: q, k: k, v: v, kWeight: wk, kBias: bk, vWeight: wv, saved: saved, g,
                                                    needK: true, needV: true)
        let added = Kernels.foldedAttentionBackward(u, q: q, k: k, v: v, kWeight: wk, kBias: bk, vWeight: wv, saved: saved, g,
                                                    needK: true, needV: true, addK: addK, addV: addV)
        XCTAssertEqual(added.dk!.map(\.bitPattern), zip(addK, plain.dk!).map { ($0 + $1).bitPattern })
        XCTAssertEqual(added.dv!.map(\.bitPattern), zip(addV, plain.dv!).map { ($0 + $1).bitPattern })
        XCTAssertEqual(added.dq.map(\.bitPattern), plain.dq.map(\.bitPattern))

        // The query-folded direction: 300 queries (k as x), 12 keys; addX + dx, addK + dk.
        let gq = FoldedAttentionGeometry(batch: 1, heads: 8, nq: g.nk, nk: g.nq, channels: g.channels, headDim: 8,
                                         scale: g.scale)
        let (kt, vt, wo, bo, uo) = (r(gq.nk * gq.inner), r(gq.nk * gq.inner), r(gq.channels * gq.inner), r(gq.channels),
                                    r(k.count))
        let savedQ = Kernels.queryFoldedAttentionForward(x: k, k: kt, v: vt, qWeight: wk, qBias: bk, outWeight: wo,
                                                         outBias: bo, residual: nil, gq, keep: true).saved!
        let plainQ = Kernels.queryFoldedAttentionBackward(uo, x: k, k: kt, v: vt, qWeight: wk, qBias: bk, outWeight: wo,
                                                          saved: savedQ, gq, needX: true)
        let addQ = Kernels.queryFoldedAttentionBackward(uo, x: k, k: kt, v: vt, qWeight: wk, qBias: bk, outWeight: wo,
                                                        saved: savedQ, gq, needX: true, addX: addK, addK: u)
        XCTAssertEqual(addQ.dx!.map(\.bitPattern), zip(addK, plainQ.dx!).map { ($0 + $1).bitPattern })
        XCTAssertEqual(addQ.dk.map(\.bitPattern), zip(u, plainQ.dk).map { ($0 + $1).bitPattern })
    }

    // MARK: queries and output folded

    /// The query-folded op against q_proj, the fused attention and out_proj (+ residual): the
    /// output and every gradient (relative error; bq's is not zero here, since bq · k_i differs
    /// from key to key). `gatherFirst`: x and k also feed later terms of the loss.
    func checkQueryFoldedAgainstUnfolded(b: Int, nq: Int, nk: Int, heads: Int, d: Int, c: Int, residual: Bool,
                                         gatherFirst: Bool, file: StaticString = #filePath, line: UInt = #line) {
        let inner = heads * d
        let x = randn([b, nq, c], grad: true), k = randn([b, nk, inner], grad: true), v = randn([b, nk, inner], grad: true)
        let wq = randn([inner, c], 0.2, grad: true), bq = randn([inner], 0.5, grad: true)
        let wo = randn([c, inner], 0.2, grad: true), bo = randn([c], 0.5, grad: true)
        let res = randn([b, nq, c], grad: true)
        let u = randn([b, nq, c]), ux = randn([b, nq, c]), uk = randn([b, nk, inner])
        let scale = Float(Double(d).squareRoot())
        let params = [x, k, v, wq, bq, wo, bo, res]
        func run(folded: Bool) -> (out: [Float], grads: [[Float]]) {
            for t in params { t.zeroGrad() }
            let o: Tensor
            if folded {
                o = queryFoldedMultiHeadAttention(x: x, k: k, v: v, qWeight: wq, qBias: bq, outWeight: wo, outBias: bo,
                                                  adding: residual ? res : nil, numHeads: heads, scale: scale)
            } else {
                let a = multiHeadAttention(q: linear(x, weight: wq, bias: bq), k: k, v: v, numHeads: heads,
                                           scale: .divide(scale))
                o = residual ? linear(a, weight: wo, bias: bo, adding: res) : linear(a, weight: wo, bias: bo)
            }
            var loss = (o * u).sum()
            if gatherFirst { loss = loss + (x * ux).sum() + (k * uk).sum() }
            loss.backward()
            return (o.data, params.map { $0.grad?.data ?? [] })
        }
        let f = run(folded: true), r = run(folded: false)
        let tag = "b \(b) nq \(nq) nk \(nk) heads \(heads) d \(d) c \(c) residual \(residual) gatherFirst \(gatherFirst)"
        XCTAssertLessThan(relErr(f.out, r.out), 2e-6, tag, file: file, line: line)
        for (i, name) in ["x", "k", "v", "Wq", "bq", "Wo", "bo", "residual"].enumerated() {
            XCTAssertEqual(f.grads[i].count, r.grads[i].count, "\(name): \(tag)", file: file, line: line)
            XCTAssertLessThan(relErr(f.grads[i], r.grads[i]), 1e-5, "\(name): \(tag)", file: file, line: line)
        }
    }

    func testQueryFoldedAttentionMatchesUnfolded() {
        // Queries past a multiple of 16 (the softmax's one-column path) and a batch of two; SAM's
        // image-to-token attention at 1200 image positions (8 heads of 16, 12 tokens, C = 256).
        checkQueryFoldedAgainstUnfolded(b: 2, nq: 37, nk: 3, heads: 2, d: 4, c: 12, residual: true, gatherFirst: false)
        checkQueryFoldedAgainstUnfolded(b: 2, nq: 37, nk: 3, heads: 2, d: 4, c: 12, residual: false, gatherFirst: true)
        checkQueryFoldedAgainstUnfolded(b: 1, nq: 1200, nk: 12, heads: 8, d: 16, c: 256, residual: true, gatherFirst: true)
        checkQueryFoldedAgainstUnfolded(b: 1, nq: 64, nk: 5, heads: 1, d: 8, c: 20, residual: false, gatherFirst: false)
    }

    /// The softmax runs 16 queries to a vector and the last queries one by one, with the same
    /// bits: a query repeated in both places gives the same output row.
    func testQueryFoldedSoftmaxSameBitsInVectorsAndAlone() {
        let (nq, nk, heads, d, c) = (17, 12, 8, 16, 32)
        var xs = randn([1, nq, c]).data
        for j in 0..<c { xs[16 * c + j] = xs[j] }
        let x = Tensor(shape: [1, nq, c], data: xs)
        let o = queryFoldedMultiHeadAttention(x: x, k: randn([1, nk, heads * d]), v: randn([1, nk, heads * d]),
                                              qWeight: randn([heads * d, c], 0.3), qBias: randn([heads * d]),
                                              outWeight: randn([c, heads * d], 0.3), outBias: randn([c]),
                                              numHeads: heads, scale: 4)
        XCTAssertEqual(o.data[(16 * c)..<(17 * c)].map(\.bitPattern), o.data[0..<c].map(\.bitPattern))
    }

    func testQueryFoldedAttentionBackwardFiniteDifferencesInDouble() {
        let g = FoldedAttentionGeometry(batch: 2, heads: 2, nq: 19, nk: 3, channels: 5, headDim: 3, scale: 1.7)
        func r(_ n: Int) -> [Double] { (0..<n).map { _ in Double(rng.nextNormal()) } }
        // x, k, v, qWeight, qBias, outWeight, outBias, residual
        let x = [r(g.batch * g.nq * g.channels), r(g.batch * g.nk * g.inner), r(g.batch * g.nk * g.inner),
                 r(g.inner * g.channels), r(g.inner), r(g.channels * g.inner), r(g.channels), r(g.batch * g.nq * g.channels)]
        let u = r(g.batch * g.nq * g.channels)
        func loss(_ x: [[Double]]) -> Double {
            let o = Kernels.queryFoldedAttentionForward(x: x[0], k: x[1], v: x[2], qWeight: x[3], qBias: x[4],
                                                        outWeight: x[5], outBias: x[6], residual: x[7], g, keep: false).out
            return zip(o, u).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let fwd = Kernels.queryFoldedAttentionForward(x: x[0], k: x[1], v: x[2], qWeight: x[3], qBias: x[4],
                                                      outWeight: x[5], outBias: x[6], residual: x[7], g, keep: true)
        let gr = Kernels.queryFoldedAttentionBackward(u, x: x[0], k: x[1], v: x[2], qWeight: x[3], qBias: x[4],
                                                      outWeight: x[5], saved: fwd.saved!, g, needX: true)
        let analytic = [gr.dx!, gr.dk, gr.dv, gr.dqWeight, gr.dqBias, gr.doutWeight, gr.doutBias, u]
        XCTAssertLessThan(worstFiniteDifferenceError(x, analytic, loss), 1e-7)

        // Gathered gradients: addX + dx and addK + dk.
        let addX = r(x[0].count), addK = r(x[1].count)
        let ga = Kernels.queryFoldedAttentionBackward(u, x: x[0], k: x[1], v: x[2], qWeight: x[3], qBias: x[4],
                                                      outWeight: x[5], saved: fwd.saved!, g, needX: true,
                                                      addX: addX, addK: addK)
        XCTAssertEqual(ga.dx!, zip(addX, gr.dx!).map { $0 + $1 })
        XCTAssertEqual(ga.dk, zip(addK, gr.dk).map { $0 + $1 })
    }

    func testFoldedAttentionBitwiseOnOneAndTwoThreads() {
        let (nq, nk, heads, d, c) = (12, 1100, 8, 16, 256)
        let q = randn([1, nq, heads * d], grad: true), k = randn([1, nk, c], grad: true), v = randn([1, nk, c], grad: true)
        let wk = randn([heads * d, c], 0.1, grad: true), bk = randn([heads * d], grad: true)
        let wv = randn([heads * d, c], 0.1, grad: true), bv = randn([heads * d], grad: true)
        let u = randn([1, nq, heads * d])
        // The image-to-token direction on the same tensors: 1100 queries (k as x), 12 keys.
        let wq = randn([heads * d, c], 0.1, grad: true), bq = randn([heads * d], grad: true)
        let wo = randn([c, heads * d], 0.1, grad: true), bo = randn([c], grad: true)
        let kt = randn([1, nq, heads * d], grad: true), vt = randn([1, nq, heads * d], grad: true)
        let uo = randn([1, nk, c])
        func run() -> [Float] {
            let all = [q, k, v, wk, bk, wv, bv, wq, bq, wo, bo, kt, vt]
            for t in all { t.zeroGrad() }
            let o = foldedMultiHeadAttention(q: q, k: k, v: v, kWeight: wk, kBias: bk, vWeight: wv, vBias: bv,
                                             numHeads: heads, scale: 4)
            let o2 = queryFoldedMultiHeadAttention(x: k, k: kt, v: vt, qWeight: wq, qBias: bq, outWeight: wo, outBias: bo,
                                                   adding: v, numHeads: heads, scale: 4)
            ((o * u).sum() + (o2 * uo).sum()).backward()
            return o.data + o2.data + all.flatMap { $0.grad!.data }
        }
        Parallel.threads = 1
        let one = run()
        Parallel.threads = 2
        let two = run()
        XCTAssertEqual(one.map(\.bitPattern), two.map(\.bitPattern))
    }

    /// SAM's decoder folds its token-to-image attention (12 tokens; 8 heads × 12 < 128) over a
    /// 64 × 64 embedding one way and its image-to-token attention the other, but not 16 tokens
    /// (8 × 16 = 128), not the tokens' self-attention, and not ShapesWorld's TinySAM (256 image
    /// positions).
    func testWhichAttentionCallsFold() {
        var rng = PhiloxRNG(seed: 1)
        let sam = Attention(embeddingDim: 256, numHeads: 8, downsampleRate: 2, rng: &rng)
        XCTAssertTrue(sam.foldsKeyValueProjections(queries: 12, keys: 4096))
        XCTAssertTrue(sam.foldsKeyValueProjections(queries: 15, keys: 1024))
        XCTAssertFalse(sam.foldsKeyValueProjections(queries: 16, keys: 4096))
        XCTAssertFalse(sam.foldsKeyValueProjections(queries: 12, keys: 1023))
        XCTAssertFalse(sam.foldsKeyValueProjections(queries: 4096, keys: 12))
        XCTAssertTrue(sam.foldsQueryOutputProjections(queries: 4096, keys: 12))
        XCTAssertFalse(sam.foldsQueryOutputProjections(queries: 4096, keys: 16))
        XCTAssertFalse(sam.foldsQueryOutputProjections(queries: 1023, keys: 12))
        XCTAssertFalse(sam.foldsQueryOutputProjections(queries: 12, keys: 4096))
        XCTAssertFalse(sam.foldsQueryOutputProjections(queries: 12, keys: 12))
        XCTAssertFalse(sam.foldsKeyValueProjections(queries: 12, keys: 12))
        let tiny = Attention(embeddingDim: 64, numHeads: 4, downsampleRate: 2, rng: &rng)
        XCTAssertFalse(tiny.foldsKeyValueProjections(queries: 7, keys: 256))
        XCTAssertFalse(tiny.foldsQueryOutputProjections(queries: 256, keys: 7))

        // The module's two paths agree (1024 keys folds; the same call on 1023 keys does not, and
        // its output is the unfolded form's).
        let q = randn([1, 12, 256]), k = randn([1, 1024, 256]), v = randn([1, 1024, 256])
        let folded = sam(q: q, k: k, v: v)
        let unfolded = sam.outProj(multiHeadAttention(q: sam.qProj(q), k: sam.kProj(k), v: sam.vProj(v), numHeads: 8,
                                                      scale: .divide(4)))
        XCTAssertLessThan(relErr(folded.data, unfolded.data), 2e-6)
        XCTAssertNotEqual(folded.data.map(\.bitPattern), unfolded.data.map(\.bitPattern))
        let k2 = k.narrow(dim: 1, start: 0, length: 1023), v2 = v.narrow(dim: 1, start: 0, length: 1023)
        let plain = sam(q: q, k: k2, v: v2)
        let plainRef = sam.outProj(multiHeadAttention(q: sam.qProj(q), k: sam.kProj(k2), v: sam.vProj(v2), numHeads: 8,
                                                      scale: .divide(4)))
        XCTAssertEqual(plain.data.map(\.bitPattern), plainRef.data.map(\.bitPattern))

        // Image to tokens, with the residual: 1024 queries fold, 1023 do not.
        let x = randn([1, 1024, 256]), t = randn([1, 12, 256]), res = randn([1, 1024, 256])
        let foldedI2T = sam(q: x, k: t, v: t, residual: res)
        func unfoldedI2T(_ x: Tensor, _ res: Tensor) -> Tensor {
            linear(multiHeadAttention(q: sam.qProj(x), k: sam.kProj(t), v: sam.vProj(t), numHeads: 8, scale: .divide(4)),
                   weight: sam.outProj.weight, bias: sam.outProj.bias, adding: res)
        }
        XCTAssertLessThan(relErr(foldedI2T.data, unfoldedI2T(x, res).data), 2e-6)
        XCTAssertNotEqual(foldedI2T.data.map(\.bitPattern), unfoldedI2T(x, res).data.map(\.bitPattern))
        let x2 = x.narrow(dim: 1, start: 0, length: 1023), res2 = res.narrow(dim: 1, start: 0, length: 1023)
        XCTAssertEqual(sam(q: x2, k: t, v: t, residual: res2).data.map(\.bitPattern),
                       unfoldedI2T(x2, res2).data.map(\.bitPattern))
    }
}
