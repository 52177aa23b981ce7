// Does the frozen TinyVLM ground, and does it read the scenes? Two measurements on val.
//
// Pointing (per layer l, on the grounding descriptions `DescriptionSample.words`, run through
// VLMSequence as F-LMM runs them):
//   For phrase k (the caption positions whose mask id is k), the map m[c] over the G² image
//   tokens is the attention probability from the phrase's positions to image token c, averaged
//   over the NH heads of layer l and over the phrase's positions (sums in Double).
//   The predicted cell is the argmax of m (the first one on ties), cell (r, c) = (i / G, i % G).
// Cells in original-image pixels: original pixel (y, x) (centre (y + ½, x + ½)) maps into the
//   padded S×S square at ((y + ½)·h_r/H + before_h, (x + ½)·w_r/W + before_w) (h_r, w_r and the
//   padding from the PaddingMeta); it lies in cell (⌊·/p⌋, ⌊·/p⌋). A cell is *in the image* if
//   some pixel maps into it, and *on the mask* if some pixel of the phrase's ground-truth mask
//   does.
// Dilated mask: the in-image cells within one cell (8-neighbourhood, Chebyshev distance ≤ 1)
//   of a mask cell: the mask dilated by one patch, in grid cells.
// Hit: the predicted cell is in the dilated mask (a cell in the padding is never a hit).
// Chance: the mean over phrases of |dilated mask| / |in-image cells|, the hit rate of a cell
//   drawn uniformly from the image region.
// Accuracy per layer = hits / phrases; the best layer is the one with the highest accuracy
//   (the lowest index on ties). Also reported per phrase kind (attribute, relational, plural).
//
// Token accuracy (on the canonical captions of the same val scenes,
// `TinyVLMPretraining.canonicalSample`): over every caption position whose target word is a
// size, colour or shape noun, the fraction where the argmax of the previous position's logits
// (the first maximal id on ties) is that word.
// Cell attribute accuracy (models with vision layers, on the same scenes): over the image
// tokens whose cell centre lies on an object (`TinyVLMPretraining.cellAttributes`), the fraction
// where the argmax of `vision.attribute_head`'s logits in each group (shape, colour, size) is
// the object's class: how well the vision encoder alone tells the attributes apart.

import FLMM
import Tensors

/// Pointing and token accuracy of a TinyVLM.
public struct TinyVLMEvaluationResult: Sendable {
    /// Pointing accuracy of each layer.
    public var pointingPerLayer: [Double]
    /// Mean dilated-mask fraction (the chance hit rate).
    public var pointingChance: Double
    /// Number of phrases evaluated.
    public var phrases: Int
    /// Per phrase kind: (phrases, accuracy per layer).
    public var perKind: [ExpressionKind: (count: Int, perLayer: [Double])]
    /// Next-token accuracy on size, colour and shape words, and how many such words.
    public var tokenAccuracy: Double
    public var attributeTokens: Int
    /// Token accuracy per word class ("size", "colour", "shape").
    public var tokenAccuracyByClass: [String: Double]
    /// With vision layers: the accuracy of `attribute_head` on the cells over an object, per
    /// label group ("shape", "colour", "size"), against `TinyVLMPretraining.cellAttributes`.
    public var cellAttributeAccuracy: [String: Double]

    /// The layer with the highest pointing accuracy (lowest index on ties).
    public var bestLayer: Int {
        var best = 0
        for (l, a) in pointingPerLayer.enumerated() where a > pointingPerLayer[best] { best = l }
        return best
    }
    public var pointingAccuracy: Double { pointingPerLayer[bestLayer] }
}

public enum TinyVLMEvaluation {
    /// The averaged attention map [G²] of `rows` (positions) to the image tokens
    /// imageStart ..< imageStart + imageCount, from one layer's probabilities [NH, T, T]:
    /// mean over heads and rows, summed in Double (heads outer, rows inner).
    public static func phraseMap(attention a: [Float], heads: Int, tokens t: Int, rows: [Int],
                                 imageStart: Int, imageCount: Int) -> [Double] {
        precondition(a.count == heads * t * t, "TinyVLMEvaluation.phraseMap: \(a.count) values for [\(heads), \(t), \(t)]")
        precondition(!rows.isEmpty && rows.allSatisfy { (0..<t).contains($0) } && imageStart + imageCount <= t,
                     "TinyVLMEvaluation.phraseMap: rows \(rows) / image tokens \(imageStart)+\(imageCount) outside T = \(t)")
        var m = [Double](repeating: 0, count: imageCount)
        for h in 0..<heads {
            for r in rows {
                let base = (h * t + r) * t + imageStart
                for c in 0..<imageCount { m[c] += Double(a[base + c]) }
            }
        }
        let n = Double(heads * rows.count)
        return m.map { $0 / n }
    }

    /// Index of the first maximum.
    public static func argmax(_ m: [Double]) -> Int {
        var best = 0
        for i in m.indices where m[i] > m[best] { best = i }
        return best
    }

    /// Cells of the G×G grid (row-major flags) that are in the image, and those on `mask`
    /// (original size H×W), for an image with padding `meta` and patch size `patch`.
    public static func cells(mask: Mask, meta: PaddingMeta, grid g: Int, patch p: Int) -> (inImage: [Bool], onMask: [Bool]) {
        let h = mask.height, w = mask.width
        // Cell row of each original row, cell column of each original column.
        let rowCell = (0..<h).map { y in
            Int(((Double(y) + 0.5) * Double(meta.imageHeight) / Double(h) + Double(meta.beforeHeight)) / Double(p))
        }
        let colCell = (0..<w).map { x in
            Int(((Double(x) + 0.5) * Double(meta.imageWidth) / Double(w) + Double(meta.beforeWidth)) / Double(p))
        }
        var inImage = [Bool](repeating: false, count: g * g), onMask = inImage
        for y in 0..<h {
            let r = Swift.min(rowCell[y], g - 1)
            for x in 0..<w {
                let c = Swift.min(colCell[x], g - 1)
                inImage[r * g + c] = true
                if mask.bits[y * w + x] != 0 { onMask[r * g + c] = true }
            }
        }
        return (inImage, onMask)
    }

    /// The mask dilated by one cell (8-neighbourhood), restricted to in-image cells.
    public static func dilate(_ onMask: [Bool], inImage: [Bool], grid g: Int) -> [Bool] {
        var out = [Bool](repeating: false, count: g * g)
        for r in 0..<g {
            for c in 0..<g where inImage[r * g + c] {
                var hit = false
                for dr in -1...1 {
                    for dc in -1...1 {
                        let rr = r + dr, cc = c + dc
                        if rr >= 0 && rr < g && cc >= 0 && cc < g && onMask[rr * g + cc] { hit = true }
                    }
                }
                out[r * g + c] = hit
            }
        }
        return out
    }

    /// (hit, dilated fraction) of one phrase: whether `cell` is in the dilated mask, and
    /// |dilated mask| / |in-image cells|.
    public static func score(cell: Int, mask: Mask, meta: PaddingMeta, grid g: Int, patch p: Int) -> (hit: Bool, chance: Double) {
        let (inImage, onMask) = cells(mask: mask, meta: meta, grid: g, patch: p)
        let dilated = dilate(onMask, inImage: inImage, grid: g)
        let area = dilated.reduce(0) { $0 + ($1 ? 1 : 0) }, total = inImage.reduce(0) { $0 + ($1 ? 1 : 0) }
        return (dilated[cell], Double(area) / Double(Swift.max(total, 1)))
    }

    /// Token ids of the size, colour and shape words.
    public static var attributeWordIds: Set<Int> {
        let t = Tokenizer.shapesWorld
        let words = SizeClass.allCases.map(\.name) + ShapeColor.allCases.map(\.name) + ShapeKind.allCases.map(\.noun)
        return Set(words.map { try! t.id($0) })
    }

    /// Pointing and token accuracy on the first `count` val samples of `world`.
    public static func evaluate(_ model: TinyVLM, world: ShapesWorld, split: Split = .val, count: Int? = nil) -> TinyVLMEvaluationResult {
        let c = model.config
        let n = Swift.min(count ?? world.count(split), world.count(split))
        let pre = ImagePreprocessor(imageSize: c.imageSize)
        let tokenizer = Tokenizer.shapesWorld
        let attrIds = attributeWordIds
        var hits = [Int](repeating: 0, count: c.layers), phrases = 0, chance = 0.0
        var kindHits: [ExpressionKind: [Int]] = [:], kindCount: [ExpressionKind: Int] = [:]
        var tokenHits = 0, tokenCount = 0
        var classHits: [String: Int] = [:], classCount: [String: Int] = [:]
        var cellHits = [Int](repeating: 0, count: VisionTower.attributeGroups.count), cellCount = 0
        func wordClass(_ id: Int) -> String {
            let w = tokenizer.vocabulary[id]
            if SizeClass.allCases.contains(where: { $0.name == w }) { return "size" }
            if ShapeColor.allCases.contains(where: { $0.name == w }) { return "colour" }
            return "shape"
        }
        for i in 0..<n {
            let sample = world.sample(split, i)
            let (pixels, meta) = pre(sample.scene.image)
            // Pointing on the grounding description.
            let seq = try! VLMSequence(tokenizer: tokenizer, imageTokens: c.imageTokens, sample: sample)
            let out = Autograd.noGrad { model(pixels, seq) }
            for (k, phrase) in sample.phrases.enumerated() {
                let rows = seq.maskIds.indices.filter { seq.maskIds[$0] == k }
                let mask = phrase.mask(in: sample.scene)
                phrases += 1
                kindCount[phrase.kind, default: 0] += 1
                var kh = kindHits[phrase.kind] ?? [Int](repeating: 0, count: c.layers)
                for l in 0..<c.layers {
                    let m = phraseMap(attention: out.attentions[l].data, heads: c.heads, tokens: seq.count, rows: rows,
                                      imageStart: seq.imageStart, imageCount: seq.imageCount)
                    let (hit, frac) = score(cell: argmax(m), mask: mask, meta: meta, grid: c.grid, patch: c.patchSize)
                    if l == 0 { chance += frac }
                    if hit { hits[l] += 1; kh[l] += 1 }
                }
                kindHits[phrase.kind] = kh
            }
            if let vision = model.vision {
                let labels = TinyVLMPretraining.cellAttributes(sample.scene, meta: meta, grid: c.grid)
                let logits = Autograd.noGrad { vision.attributeHead(out.imageTokens) }.data
                let width = vision.attributeHead.outFeatures
                for cell in 0..<c.imageTokens where labels[0][cell] > 0 {
                    cellCount += 1
                    for (group, columns) in VisionTower.attributeColumns.enumerated() {
                        let row = logits[(cell * width + columns.lowerBound)..<(cell * width + columns.upperBound)]
                        if argmax(row.map(Double.init)) == labels[group][cell] { cellHits[group] += 1 }
                    }
                }
            }
            // Token accuracy on the canonical caption.
            let canon = TinyVLMPretraining.canonicalSample(sample)
            let cseq = try! VLMSequence(tokenizer: tokenizer, imageTokens: c.imageTokens, sample: canon)
            let logits = Autograd.noGrad { model(pixels, cseq) }.logits
            let v = logits.shape[1]
            for p in cseq.textStart..<cseq.count where attrIds.contains(cseq.ids[p]) {
                let row = logits.data[((p - 1) * v)..<(p * v)]
                var best = row.startIndex
                for j in row.indices where row[j] > row[best] { best = j }
                tokenCount += 1
                let cls = wordClass(cseq.ids[p])
                classCount[cls, default: 0] += 1
                if best - row.startIndex == cseq.ids[p] { tokenHits += 1; classHits[cls, default: 0] += 1 }
            }
        }
        var perKind: [ExpressionKind: (count: Int, perLayer: [Double])] = [:]
        for (kind, cnt) in kindCount {
            perKind[kind] = (cnt, kindHits[kind]!.map { Double($0) / Double(cnt) })
        }
        return TinyVLMEvaluationResult(
            pointingPerLayer: hits.map { Double($0) / Double(Swift.max(phrases, 1)) },
            pointingChance: chance / Double(Swift.max(phrases, 1)), phrases: phrases, perKind: perKind,
            tokenAccuracy: Double(tokenHits) / Double(Swift.max(tokenCount, 1)), attributeTokens: tokenCount,
            tokenAccuracyByClass: Dictionary(uniqueKeysWithValues: classCount.map { ($0.key, Double(classHits[$0.key] ?? 0) / Double($0.value)) }),
            cellAttributeAccuracy: cellCount == 0 ? [:] : Dictionary(uniqueKeysWithValues: zip(VisionTower.attributeGroups, cellHits.map { Double($0) / Double(cellCount) })))
    }
}
