import XCTest
import NN
import Tensors
import FLMM

/// Attention with `layers` × `heads` over a token sequence, all zeros except the entries set.
private struct HandAttention {
    let layers: Int, heads: Int, seq: Int
    var data: [Float]
    init(layers: Int, heads: Int, seq: Int) {
        self.layers = layers
        self.heads = heads
        self.seq = seq
        data = [Float](repeating: 0, count: layers * heads * seq * seq)
    }
    mutating func set(layer: Int, head: Int, row: Int, col: Int, _ v: Float) {
        data[((layer * heads + head) * seq + row) * seq + col] = v
    }
    var tensor: Tensor { Tensor(shape: [layers, heads, seq, seq], data: data) }
}

/// The value of `maps` [N, C, h, w] at (n, c, y, x).
private func at(_ t: Tensor, _ n: Int, _ c: Int, _ y: Int, _ x: Int) -> Float {
    let s = t.shape
    return t.data[((n * s[1] + c) * s[2] + y) * s[3] + x]
}

/// Asserts that plane (n, c) of `t` is one-hot at (y, x) with value `v`.
private func assertOneHot(_ t: Tensor, n: Int, c: Int, y: Int, x: Int, value v: Float = 1,
                          file: StaticString = #filePath, line: UInt = #line) {
    let (h, w) = (t.shape[2], t.shape[3])
    for yy in 0..<h {
        for xx in 0..<w {
            XCTAssertEqual(at(t, n, c, yy, xx), yy == y && xx == x ? v : 0,
                           "plane (\(n), \(c)) at (\(yy), \(xx))", file: file, line: line)
        }
    }
}

/// Worst |finite difference − analytic| of the phrase-map kernels in Double, for attention `a`
/// [l, h, r, k] and a random output gradient.
private func worstPhraseMapsGradientError(_ a: [Double], l: Int, h: Int, r: Int, k: Int, plan: PhraseMapPlan,
                                          rng: inout PhiloxRNG) -> Double {
    let g = (0..<plan.outputShape(layers: l, heads: h).product).map { _ in Double(rng.nextFloat()) - 0.5 }
    func f(_ x: [Double]) -> Double {
        zip(Kernels.phraseMaps(x, layers: l, heads: h, rows: r, cols: k, plan: plan), g).reduce(0) { $0 + $1.0 * $1.1 }
    }
    let analytic = Kernels.phraseMapsBackward(g, a, layers: l, heads: h, rows: r, cols: k, plan: plan)
    var worst = 0.0
    for i in a.indices {
        var p = a, m = a
        p[i] += 1e-6
        m[i] -= 1e-6
        worst = max(worst, abs((f(p) - f(m)) / 2e-6 - analytic[i]))
    }
    return worst
}

final class AttentionMapsTests: XCTestCase {
    // Sequence: 2 prefix tokens, 6 image tokens (grid 2×3), 4 text tokens with mask ids.
    let imageID = 7
    var inputIDs: [Int] { [1, 2] + [Int](repeating: imageID, count: 6) + [3, 4, 5, 6] }
    var maskIDs: [Int] { [-1, -1] + [Int](repeating: -1, count: 6) + [0, 0, -1, 1] }

    func testDeepSeekOneHotPerLayerAndHead() throws {
        // Token 8 (mask 0) attends, at layer l / head j, to the image token of cell (l, j + 1).
        var a = HandAttention(layers: 2, heads: 2, seq: 12)
        for l in 0..<2 {
            for j in 0..<2 { a.set(layer: l, head: j, row: 8, col: 2 + l * 3 + j + 1, 1) }
        }
        a.set(layer: 1, head: 0, row: 11, col: 2 + 0, 0.25)   // mask 1 → cell (0, 0)
        let layout = DeepSeekVLLayout(imageTokenID: imageID, gridHeight: 2, gridWidth: 3)
        let maps = try AttentionMaps.extract(attentions: a.tensor, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 2,
                                             layout: layout, merge: .max)
        XCTAssertEqual(maps.shape, [2, 4, 2, 3])
        for l in 0..<2 {
            for j in 0..<2 { assertOneHot(maps, n: 0, c: l * 2 + j, y: l, x: j + 1) }   // channel = l·NH + j
        }
        assertOneHot(maps, n: 1, c: 2, y: 0, x: 0, value: 0.25)
        for c in [0, 1, 3] { XCTAssertEqual(maps.sum([2, 3]).data[4 + c], 0) }
        // Mean over mask 0's two tokens halves the one-hot value (token 9 attends to nothing).
        let mean = try AttentionMaps.extract(attentions: a.tensor, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 2,
                                             layout: layout, merge: .mean)
        assertOneHot(mean, n: 0, c: 3, y: 1, x: 2, value: 0.5)
    }

    func testMeanAndMaxMergeValues() throws {
        var a = HandAttention(layers: 1, heads: 1, seq: 12)
        // Mask 0 = tokens 8, 9: cell (0, 0) gets 0.2 and 0.6; cell (1, 2) gets 0.3 and 0.1.
        a.set(layer: 0, head: 0, row: 8, col: 2, 0.2)
        a.set(layer: 0, head: 0, row: 9, col: 2, 0.6)
        a.set(layer: 0, head: 0, row: 8, col: 7, 0.3)
        a.set(layer: 0, head: 0, row: 9, col: 7, 0.1)
        let layout = LlavaLayout(imageTokenID: imageID, paddedHeight: 28, paddedWidth: 42, patchSize: 14)
        XCTAssertEqual(layout.gridHeight, 2)
        XCTAssertEqual(layout.gridWidth, 3)
        let mean = try AttentionMaps.extract(attentions: a.tensor, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 2,
                                             layout: layout, merge: .mean)
        let mx = try AttentionMaps.extract(attentions: a.tensor, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 2,
                                           layout: layout, merge: .max)
        XCTAssertEqual(at(mean, 0, 0, 0, 0), 0.4, accuracy: 1e-7)
        XCTAssertEqual(at(mean, 0, 0, 1, 2), 0.2, accuracy: 1e-7)
        XCTAssertEqual(at(mx, 0, 0, 0, 0), 0.6)
        XCTAssertEqual(at(mx, 0, 0, 1, 2), 0.3)
    }

    func testHPTGrids() throws {
        XCTAssertEqual(HPTLayout.air(imageTokenID: 1).grid, 28)
        XCTAssertEqual(HPTLayout.v1_5(imageTokenID: 1).grid, 32)
        // A 28×28 layout: the token attending to image token 28·5 + 17 lights cell (5, 17).
        let layout = HPTLayout.air(imageTokenID: 9)
        let seq = 1 + 784 + 1
        var a = HandAttention(layers: 1, heads: 1, seq: seq)
        a.set(layer: 0, head: 0, row: seq - 1, col: 1 + 28 * 5 + 17, 1)
        let ids = [0] + [Int](repeating: 9, count: 784) + [3]
        let masks = [Int](repeating: -1, count: seq - 1) + [0]
        let maps = try AttentionMaps.extract(attentions: a.tensor, inputIDs: ids, maskIDs: masks, numMasks: 1,
                                             layout: layout, merge: .mean)
        XCTAssertEqual(maps.shape, [1, 1, 28, 28])
        assertOneHot(maps, n: 0, c: 0, y: 5, x: 17)
    }

    func testCacheFormMatchesFullForm() throws {
        let (l, h, seq) = (2, 3, 12)
        var rng = PhiloxRNG(seed: 11)
        let a = Tensor(shape: [l, h, seq, seq], data: (0..<(l * h * seq * seq)).map { _ in rng.nextFloat() })
        let layout = DeepSeekVLLayout(imageTokenID: imageID, gridHeight: 2, gridWidth: 3)
        // Cache: rows of the phrase tokens (8, 9, 11) over the image columns 2..<8.
        let rows = [8, 9, 11]
        var cache = [Float]()
        for p in 0..<(l * h) {
            for r in rows { for c in 2..<8 { cache.append(a.data[(p * seq + r) * seq + c]) } }
        }
        for merge in PhraseMerge.allCases {
            let full = try AttentionMaps.extract(attentions: a, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 2,
                                                 layout: layout, merge: merge)
            let cached = try AttentionMaps.extract(phraseRows: Tensor(shape: [l, h, 3, 6], data: cache),
                                                   rowMaskIDs: [0, 0, 1], numMasks: 2, layout: layout, merge: merge)
            XCTAssertEqual(full.shape, cached.shape)
            XCTAssertEqual(full.data, cached.data, "\(merge)")
        }
    }

    func testBadInputsThrowClearErrors() throws {
        let layout = DeepSeekVLLayout(imageTokenID: imageID, gridHeight: 2, gridWidth: 3)
        let a = HandAttention(layers: 1, heads: 1, seq: 12).tensor
        func err(_ body: () throws -> Tensor) -> AttentionMapError? {
            do { _ = try body(); return nil } catch let e as AttentionMapError { return e } catch { return nil }
        }
        // Image-token count ≠ h·w.
        let wide = DeepSeekVLLayout(imageTokenID: imageID, gridHeight: 2, gridWidth: 4)
        XCTAssertEqual(err { try AttentionMaps.extract(attentions: a, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 2,
                                                       layout: wide, merge: .mean) },
                       .imageTokenCount(layout: "DeepSeek-VL 2×4", expected: 8, found: 6))
        // A phrase with no token.
        XCTAssertEqual(err { try AttentionMaps.extract(attentions: a, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 3,
                                                       layout: layout, merge: .mean) },
                       .emptyPhrase(mask: 2, numMasks: 3))
        // Mask ids beyond the number of masks.
        XCTAssertEqual(err { try AttentionMaps.extract(attentions: a, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 1,
                                                       layout: layout, merge: .mean) },
                       .maskIDOutOfRange(token: 11, maskID: 1, numMasks: 1))
        // NaN / Inf in a phrase row's image columns (but not elsewhere).
        var bad = HandAttention(layers: 2, heads: 2, seq: 12)
        bad.set(layer: 0, head: 0, row: 10, col: 3, .nan)   // token 10 is in no phrase: ignored
        XCTAssertNil(err { try AttentionMaps.extract(attentions: bad.tensor, inputIDs: inputIDs, maskIDs: maskIDs,
                                                     numMasks: 2, layout: layout, merge: .max) })
        bad.set(layer: 1, head: 1, row: 11, col: 4, .infinity)
        XCTAssertEqual(err { try AttentionMaps.extract(attentions: bad.tensor, inputIDs: inputIDs, maskIDs: maskIDs,
                                                       numMasks: 2, layout: layout, merge: .max) },
                       .nonFinite(layer: 1, head: 1, row: 11, imageColumn: 2, value: .infinity))
        // Shapes.
        XCTAssertEqual(err { try AttentionMaps.extract(attentions: a, inputIDs: Array(inputIDs.dropLast()), maskIDs: maskIDs,
                                                       numMasks: 2, layout: layout, merge: .mean) },
                       .tokenCount(what: "input ids", expected: 12, actual: 11))
        XCTAssertEqual(err { try AttentionMaps.extract(phraseRows: Tensor.zeros([1, 1, 2, 5]), rowMaskIDs: [0, 0],
                                                       numMasks: 1, layout: layout, merge: .mean) },
                       .imageTokenCount(layout: "DeepSeek-VL 2×3", expected: 6, found: 5))
        // The description names what was expected.
        XCTAssertTrue(AttentionMapError.imageTokenCount(layout: "X", expected: 576, found: 575).description.contains("576"))
    }

    func testLayoutTilingIsChecked() {
        struct Overlapping: AttentionLayout {
            var name: String { "overlapping" }
            var imageTokenID: Int { 0 }
            var imageTokenCount: Int { 8 }
            var maps: [AttentionMapGeometry] { [AttentionMapGeometry(height: 2, width: 2)] }
            var segments: [AttentionSegment] {
                [AttentionSegment(start: 0, rows: 2, cols: 2), AttentionSegment(start: 4, rows: 1, cols: 2)]
            }
            var channelOrder: PhraseMapChannelOrder { .mapMajor }
        }
        XCTAssertThrowsError(try Overlapping().cellColumns()) { e in
            XCTAssertEqual(e as? AttentionMapError,
                           .badLayout(layout: "overlapping", detail: "map 0 cell (0, 0) is covered twice"))
        }
    }

    /// Finite differences in Double of the fused kernel (forward and backward run in Double).
    func testPhraseMapsGradientByFiniteDifferences() {
        let (l, h, r, k) = (2, 2, 7, 9)
        var rng = PhiloxRNG(seed: 3)
        let a = (0..<(l * h * r * k)).map { _ in Double(rng.nextFloat()) }
        let maps = [PhraseMapPlan.Map(height: 2, width: 3, cellColumns: [8, 1, 2, 5, 4, 0]),
                    PhraseMapPlan.Map(height: 2, width: 3, cellColumns: [3, 6, 7, 2, 1, 0])]
        for merge in PhraseMerge.allCases {
            for order in [PhraseMapChannelOrder.mapMajor, .layerMajor] {
                let plan = PhraseMapPlan(rowsPerPhrase: [[1, 4, 5], [6], [0, 2]], maps: maps, merge: merge, channelOrder: order)
                XCTAssertLessThan(worstPhraseMapsGradientError(a, l: l, h: h, r: r, k: k, plan: plan, rng: &rng), 1e-8,
                                  "\(merge) \(order)")
            }
        }
    }

    func testMaxGradientGoesToFirstArgmax() {
        // Two rows tie at every column: the gradient goes to the first row only.
        let a = Tensor(shape: [1, 1, 2, 2], data: [0.5, 0.5, 0.5, 0.5], requiresGrad: true)
        let plan = PhraseMapPlan(rowsPerPhrase: [[0, 1]], maps: [PhraseMapPlan.Map(height: 1, width: 2, cellColumns: [0, 1])],
                                 merge: .max, channelOrder: .mapMajor)
        let y = a.phraseMaps(plan)
        y.backward(Tensor(shape: y.shape, data: [2, 3]))
        XCTAssertEqual(a.grad?.data, [2, 3, 0, 0])
    }

    func testChannelOrders() {
        // 2 layers × 1 head × 1 row × 2 columns, a[l, 0, 0, c] = 10·l + c; map m reads column m.
        let a = Tensor(shape: [2, 1, 1, 2], data: [0, 1, 10, 11])
        let maps = [PhraseMapPlan.Map(height: 1, width: 1, cellColumns: [0]),
                    PhraseMapPlan.Map(height: 1, width: 1, cellColumns: [1])]
        let mapMajor = a.phraseMaps(PhraseMapPlan(rowsPerPhrase: [[0]], maps: maps, merge: .mean, channelOrder: .mapMajor))
        let layerMajor = a.phraseMaps(PhraseMapPlan(rowsPerPhrase: [[0]], maps: maps, merge: .mean, channelOrder: .layerMajor))
        XCTAssertEqual(mapMajor.data, [0, 10, 1, 11])      // [map0 l0, map0 l1, map1 l0, map1 l1]
        XCTAssertEqual(layerMajor.data, [0, 1, 10, 11])    // [l0 map0, l0 map1, l1 map0, l1 map1]
    }

    // MARK: two-map layouts

    /// Attention over [1 prefix][image tokens][2 text tokens of mask 0].
    private func oneTextToken(layout: some AttentionLayout, layers: Int, heads: Int,
                              _ entries: [(layer: Int, head: Int, row: Int, image: Int, value: Float)],
                              merge: PhraseMerge = .max) throws -> Tensor {
        let n = layout.imageTokenCount, seq = 1 + n + 2
        var a = HandAttention(layers: layers, heads: heads, seq: seq)
        for e in entries { a.set(layer: e.layer, head: e.head, row: 1 + n + e.row, col: 1 + e.image, e.value) }
        let ids = [5] + [Int](repeating: layout.imageTokenID, count: n) + [6, 7]
        let masks = [Int](repeating: -1, count: 1 + n) + [0, 0]
        return try AttentionMaps.extract(attentions: a.tensor, inputIDs: ids, maskIDs: masks, numMasks: 1,
                                         layout: layout, merge: merge)
    }

    func testLlavaNextFineMapSkipsNewlinesAndComesSecond() throws {
        // Coarse 2×2 (4 tokens), fine 2×3 stored as 2 rows of 3 + newline (8 tokens).
        let layout = LlavaNextLayout(imageTokenID: 9, coarseHeight: 2, coarseWidth: 2, fineHeight: 2, fineWidth: 3)
        XCTAssertEqual(layout.imageTokenCount, 12)
        // Fine row 1, column 2 = image token 4 + 1·4 + 2 = 10; head 1 → fine channel L·NH + 1 = 3.
        let maps = try oneTextToken(layout: layout, layers: 1, heads: 2, [(0, 1, 0, 10, 1)])
        XCTAssertEqual(maps.shape, [1, 4, 2, 3])
        assertOneHot(maps, n: 0, c: 3, y: 1, x: 2)
        for c in 0..<3 { XCTAssertEqual(maps.sum([2, 3]).data[c], 0) }
        // The newline tokens (image tokens 7 and 11) land nowhere.
        let newline = try oneTextToken(layout: layout, layers: 1, heads: 2, [(0, 0, 0, 7, 1), (0, 1, 1, 11, 1)])
        XCTAssertEqual(newline.data, [Float](repeating: 0, count: 24))
    }

    func testLlavaNextCoarseMapIsResizedAfterTheMerge() throws {
        let layout = LlavaNextLayout(imageTokenID: 9, coarseHeight: 2, coarseWidth: 2, fineHeight: 2, fineWidth: 3)
        // Coarse cell (0, 0) = image token 0, head 0 → channel 0. Bilinear 2×2 → 2×3 by size:
        // rows unchanged; columns read src = (x + 0.5)·2/3 − 0.5 → x0: col 0, x1: ½·col 0 + ½·col 1, x2: col 1.
        let maps = try oneTextToken(layout: layout, layers: 1, heads: 2, [(0, 0, 0, 0, 1)])
        XCTAssertEqual(Array(maps.data[0..<6]), [1, 0.5, 0, 0, 0, 0])
        XCTAssertEqual(Array(maps.data[6..<24]), [Float](repeating: 0, count: 18))
        // Max merges first, then resizes: tokens lighting coarse (0, 0) and (0, 1) give a merged
        // row [1, 1] → [1, 1, 1] (a resize per token, then max, would give [1, ½, 1]).
        let both = try oneTextToken(layout: layout, layers: 1, heads: 2, [(0, 0, 0, 0, 1), (0, 0, 1, 1, 1)])
        XCTAssertEqual(Array(both.data[0..<3]), [1, 1, 1])
    }

    func testMGMHDStitchesCropsAndInterleavesLayers() throws {
        // Clip 2×2, 2×2 crops + global: 4 + 16 image tokens; maps 4×4; 2 layers × 1 head.
        let layout = MGMLayout(imageTokenID: 9, clipHeight: 2, clipWidth: 2, imageGrid: 2, imageGlobal: true)
        XCTAssertEqual(layout.imageTokenCount, 20)
        // Crop (1, 0), cell (0, 1) = image token 4 + 2·4 + 1 = 13 → HD map (2, 1); layer 1 → channel 1·2 + 1 = 3.
        let maps = try oneTextToken(layout: layout, layers: 2, heads: 1, [(1, 0, 0, 13, 1)])
        XCTAssertEqual(maps.shape, [1, 4, 4, 4])
        assertOneHot(maps, n: 0, c: 3, y: 2, x: 1)
        for c in 0..<3 { XCTAssertEqual(maps.sum([2, 3]).data[c], 0) }
        // Global cell (1, 1) = image token 3 at layer 0 → channel 0, scaled ×2 (ratio ½): each
        // axis reads [0, ¼, ¾, 1] of the lit index.
        let global = try oneTextToken(layout: layout, layers: 2, heads: 1, [(0, 0, 1, 3, 1)])
        let w: [Float] = [0, 0.25, 0.75, 1]
        XCTAssertEqual(Array(global.data[0..<16]), w.flatMap { y in w.map { y * $0 } })
    }

    func testMGMHDResizesEachTokenBeforeTheMerge() throws {
        let layout = MGMLayout(imageTokenID: 9, clipHeight: 2, clipWidth: 2, imageGrid: 2, imageGlobal: true)
        // Token 0 lights global (0, 0), token 1 global (0, 1). Per token, row 0 becomes
        // [1, ¾, ¼, 0] and [0, ¼, ¾, 1]; the max is [1, ¾, ¾, 1] (merge-then-resize would give 1s).
        let maps = try oneTextToken(layout: layout, layers: 1, heads: 1, [(0, 0, 0, 0, 1), (0, 0, 1, 1, 1)])
        XCTAssertEqual(Array(maps.data[0..<4]), [1, 0.75, 0.75, 1])
        // Mean: the average of the two resized maps.
        let mean = try oneTextToken(layout: layout, layers: 1, heads: 1, [(0, 0, 0, 0, 1), (0, 0, 1, 1, 1)], merge: .mean)
        XCTAssertEqual(Array(mean.data[0..<4]), [0.5, 0.5, 0.5, 0.5])
    }

    func testMGMSingleAndCropOnlyLayouts() throws {
        let single = MGMLayout(imageTokenID: 9, clipHeight: 2, clipWidth: 3)
        XCTAssertEqual(single.imageTokenCount, 6)
        assertOneHot(try oneTextToken(layout: single, layers: 1, heads: 1, [(0, 0, 0, 4, 1)]), n: 0, c: 0, y: 1, x: 1)
        let crops = MGMLayout(imageTokenID: 9, clipHeight: 2, clipWidth: 2, imageGrid: 2, imageGlobal: false)
        XCTAssertEqual(crops.imageTokenCount, 16)
        XCTAssertEqual(crops.maps.count, 1)
        // Crop (0, 1), cell (1, 0) = image token 4 + 2 → map (1, 2).
        assertOneHot(try oneTextToken(layout: crops, layers: 1, heads: 1, [(0, 0, 1, 6, 1)]), n: 0, c: 0, y: 1, x: 2)
    }

    func testPhraseMapsWithResizesByFiniteDifferences() {
        let (l, h, r, k) = (2, 1, 5, 12)
        var rng = PhiloxRNG(seed: 5)
        let a = (0..<(l * h * r * k)).map { _ in Double(rng.nextFloat()) }
        func axis(_ i: Int, _ o: Int, _ s: Double?) -> InterpolationAxis { .linear(inSize: i, outSize: o, scale: s, alignCorners: false) }
        let up = InterpolationPlan(mode: .bilinear, h: axis(2, 4, 2), w: axis(2, 4, 2))
        let resize = InterpolationPlan(mode: .bilinear, h: axis(2, 4, nil), w: axis(3, 4, nil))
        let maps = [PhraseMapPlan.Map(height: 2, width: 2, cellColumns: [0, 1, 2, 3], beforeMerge: up),
                    PhraseMapPlan.Map(height: 2, width: 3, cellColumns: [4, 5, 6, 8, 9, 10], afterMerge: resize),
                    PhraseMapPlan.Map(height: 4, width: 4, cellColumns: (0..<16).map { $0 % 12 })]
        for merge in PhraseMerge.allCases {
            let plan = PhraseMapPlan(rowsPerPhrase: [[0, 2, 3], [4]], maps: maps, merge: merge, channelOrder: .layerMajor)
            XCTAssertEqual(plan.outputShape(layers: l, heads: h), [2, 6, 4, 4])
            XCTAssertLessThan(worstPhraseMapsGradientError(a, l: l, h: h, r: r, k: k, plan: plan, rng: &rng), 1e-8, "\(merge)")
        }
    }

    func testGoldenAttentionPipeline() throws { try assertGoldenPasses("flmm_attention_pipeline") }

    func testTextEmbeddingStartsUniformAndProjectsEachPhrase() throws {
        var rng = PhiloxRNG(seed: 1)
        let text = TextEmbedding(layers: 4, hiddenSize: 3, embedDim: 2, rng: &rng)
        XCTAssertEqual(text.namedParameters().map(\.0), ["text_layer_weights", "text_proj.weight", "text_proj.bias"])
        XCTAssertEqual(text.layerWeights().data, [0.25, 0.25, 0.25, 0.25])
        // Layer l holds the value l everywhere: the uniform mix is 1.5.
        let hs = Tensor(shape: [4, 3, 3], data: (0..<36).map { Float($0 / 9) })
        try text.load(stateDict: ["text_layer_weights": Tensor(shape: [4], data: [0, 0, 0, 0]),
                                  "text_proj.weight": Tensor(shape: [2, 3], data: [1, 0, 0, 1, 1, 1]),
                                  "text_proj.bias": Tensor(shape: [2], data: [0, -1])])
        let (weighted, embeds) = try text(hiddenStates: hs, maskIDs: [1, 0, 1], numMasks: 2)
        XCTAssertEqual(weighted.data, [Float](repeating: 1.5, count: 9))
        XCTAssertEqual(embeds.count, 2)
        XCTAssertEqual(embeds[1].shape, [2, 2])
        XCTAssertEqual(embeds[1].data, [1.5, 3.5, 1.5, 3.5])   // [x₀, x₀+x₁+x₂−1] per token
        XCTAssertEqual(embeds[0].shape, [1, 2])
        // A phrase without tokens is an error, as in the maps.
        XCTAssertThrowsError(try text(hiddenStates: hs, maskIDs: [1, -1, 1], numMasks: 2)) { e in
            XCTAssertEqual(e as? AttentionMapError, .emptyPhrase(mask: 0, numMasks: 2))
        }
    }
}
