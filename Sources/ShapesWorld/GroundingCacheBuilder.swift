// Builds a GroundingCache for a ShapesWorld split: for each sample, the frozen TinyVLM's
// phrase-token attention rows to the image tokens and hidden states, and the frozen SAM image
// encoder's embedding, with the image, padding meta, masks and tokens.
//
// Per sample i of the split:
//   pixels, meta = ImagePreprocessor(imageSize: vlm S)(image)        (DeepSeek-VL resize + pad)
//   sequence     = VLMSequence(<bos>, G² <image>, prompt, caption, <eos>) with F-LMM's mask ids
//   out          = vlm(pixels, sequence) under no-grad
//   rows         = out.attentions[l][h, t, imageStart ..< imageStart + G²] for the phrase tokens t
//                  (mask id ≥ 0, sequence order) → [L, NH, R, G²]
//   hidden       = out.hiddenStates[l][t, :] → [L, R, D]
//   sam          = sam.image_encoder(sam.preprocess(TinySAM.encoderInput(image))) → [C, e, e]
//                  (bilinear resize so that the longest side is img_size, ResizeLongestSide)
// The TinyVLM layout is DeepSeek-VL's: one G×G map, image token id `<image>`.

import FLMM
import Foundation
import GroundingCache
import SegmentAnything
import Tensors

/// Runs the frozen models over ShapesWorld samples and writes GroundingCache records.
public struct GroundingCacheBuilder {
    public let world: ShapesWorld
    public let vlm: TinyVLM
    public let sam: Sam
    public let tokenizer: Tokenizer
    public let preprocessor: ImagePreprocessor
    public var form: AttentionForm
    /// Names recorded in the header (e.g. "TinySAM", a checkpoint's file name).
    public var vlmName: String
    public var samName: String
    public var attentionEncoding: HalfEncoding = .float16
    public var hiddenEncoding: HalfEncoding = .float16
    public var samEncoding: HalfEncoding = .float16

    public init(world: ShapesWorld, vlm: TinyVLM, sam: Sam, form: AttentionForm = .rows,
                vlmName: String = "TinyVLM", samName: String = "SAM") {
        precondition(sam.imageEncoder != nil, "GroundingCacheBuilder: SAM needs its image encoder")
        self.world = world
        self.vlm = vlm
        self.sam = sam
        self.form = form
        self.vlmName = vlmName
        self.samName = samName
        tokenizer = Tokenizer.shapesWorld
        preprocessor = ImagePreprocessor(imageSize: vlm.config.imageSize)
    }

    /// The TinyVLM's attention layout (DeepSeek-VL style, one G×G map).
    public var layout: AttentionLayoutSpec {
        .deepseekVL(imageTokenID: tokenizer.imageId, gridHeight: vlm.config.grid, gridWidth: vlm.config.grid)
    }

    /// The header of a cache of `split`; `provenance` adds to the generator seed and configs.
    public func header(split: Split, provenance: [String: String] = [:]) -> GroundingCacheHeader {
        let c = vlm.config, s = sam.config
        var p = provenance
        p["world_seed"] = String(world.seed)
        p["vlm_config"] = String(describing: c)
        p["sam_config"] = "img_size=\(s.imageEncoder.imgSize) patch=\(s.imageEncoder.patchSize) embed=\(s.imageEncoder.embedDim) depth=\(s.imageEncoder.depth) heads=\(s.imageEncoder.numHeads) out=\(s.imageEncoder.outChans)"
        let grid = s.imageEncoder.gridSize
        return GroundingCacheHeader(
            sourceModel: vlmName, layout: layout, layers: c.layers, heads: c.heads, hiddenSize: c.dim,
            sam: SamSummary(model: samName, embeddingDim: s.imageEncoder.outChans, embeddingHeight: grid, embeddingWidth: grid,
                            imgSize: s.imageEncoder.imgSize),
            attentionForm: form, attentionEncoding: attentionEncoding, hiddenEncoding: hiddenEncoding, samEncoding: samEncoding,
            split: "\(split)", provenance: p)
    }

    /// The frozen SAM image embedding [C, e, e] of an image.
    public func samEmbedding(_ image: RGBImage) -> Tensor { GroundingCacheBuilder.samEmbedding(image, sam: sam) }

    /// `sam.image_encoder(sam.preprocess(x))` of an image [H, W, 3] resized so that its longest side
    /// is `img_size` (bilinear, align_corners=False), as [C, e_h, e_w].
    public static func samEmbedding(_ image: RGBImage, sam: Sam) -> Tensor {
        precondition(sam.imageEncoder != nil, "GroundingCacheBuilder.samEmbedding: SAM needs its image encoder")
        let encoder = sam.imageEncoder!
        let y = Autograd.noGrad { encoder(sam.preprocess(TinySAM.encoderInput(image, imgSize: sam.imgSize))) }
        return Tensor(shape: Array(y.shape.dropFirst()), data: y.data)
    }

    /// What the frozen TinyVLM gives for one sample: rows [L, NH, R, G²], hidden [L, R, D],
    /// and the sequence, padding meta and phrase-token positions.
    public func vlmFeatures(_ sample: DescriptionSample) throws
        -> (rows: Tensor, hidden: Tensor, sequence: VLMSequence, meta: PaddingMeta, positions: [Int]) {
        let (pixels, meta) = preprocessor(sample.scene.image)
        let seq = try VLMSequence(tokenizer: tokenizer, imageTokens: vlm.config.imageTokens, sample: sample)
        let out = Autograd.noGrad { vlm(pixels, seq) }
        let positions = seq.maskIds.indices.filter { seq.maskIds[$0] >= 0 }
        let (l, nh, t, k, d, r) = (vlm.config.layers, vlm.config.heads, seq.count, seq.imageCount, vlm.config.dim, positions.count)
        var rows = [Float](repeating: 0, count: l * nh * r * k)
        var hidden = [Float](repeating: 0, count: l * r * d)
        for li in 0..<l {
            let a = out.attentions[li].data, hs = out.hiddenStates[li].data
            for hj in 0..<nh {
                for (ri, pos) in positions.enumerated() {
                    let src = (hj * t + pos) * t + seq.imageStart, dst = ((li * nh + hj) * r + ri) * k
                    for c in 0..<k { rows[dst + c] = a[src + c] }
                }
            }
            for (ri, pos) in positions.enumerated() {
                for j in 0..<d { hidden[(li * r + ri) * d + j] = hs[pos * d + j] }
            }
        }
        return (Tensor(shape: [l, nh, r, k], data: rows), Tensor(shape: [l, r, d], data: hidden), seq, meta, positions)
    }

    /// The record of sample `index` of `split`.
    public func record(_ split: Split, _ index: Int) throws -> GroundingRecord {
        let sample = world.sample(split, index)
        let f = try vlmFeatures(sample)
        let image = sample.scene.image
        let m = sample.phrases.count
        let rowMaskIDs = f.positions.map { f.sequence.maskIds[$0] }
        let attention: CachedAttention
        switch form {
        case .rows: attention = .rows(f.rows)
        case .merged:
            let merged = try AttentionMaps.mergedRows(f.rows, rowMaskIDs: rowMaskIDs, numMasks: m)
            attention = .merged(mean: merged.mean, max: merged.max)
        }
        return GroundingRecord(
            split: "\(split)", sampleIndex: index, imageHeight: image.height, imageWidth: image.width, image: image.pixels,
            padding: f.meta, masks: sample.masks.flatMap(\.bits),
            phraseKinds: sample.phrases.map { p in
                switch p.kind {
                case .attribute: return .attribute
                case .relational: return .relational
                case .plural: return .plural
                }
            },
            phraseTexts: sample.phrases.map { $0.words.joined(separator: " ") },
            tokenIDs: f.sequence.ids.map { Int32($0) }, maskIDs: f.sequence.maskIds.map { Int32($0) },
            rowPositions: f.positions.map { Int32($0) }, rowMaskIDs: rowMaskIDs.map { Int32($0) },
            attention: attention, hiddenStates: f.hidden, samEmbedding: samEmbedding(image))
    }

    /// Writes samples 0..<count of `split` to `url` (atomically); `progress(done, count)` after
    /// each record.
    public func build(split: Split, count: Int, to url: URL, storage: GroundingCacheStorage = .standard,
                      provenance: [String: String] = [:], progress: ((Int, Int) -> Void)? = nil) throws {
        precondition(count >= 0 && count <= world.count(split),
                     "GroundingCacheBuilder.build: \(count) samples, the \(split) split has \(world.count(split))")
        let w = try GroundingCacheWriter(url: url, header: header(split: split, provenance: provenance), storage: storage)
        for i in 0..<count {
            try w.append(try record(split, i))
            progress?(i + 1, count)
        }
        try w.finish()
    }
}

extension GroundingCacheBuilder {
    /// Copies the cache open in `reader` to `output` (atomically; it may be the reader's own file)
    /// with every sample's SAM image embedding computed by `sam` (`samEmbedding(_:sam:)`, which
    /// needs its image encoder) and the header's `sam` described from `sam.config` under the name
    /// `samName`. Embeddings already there are replaced. Returns the sample count.
    /// `progress(done, total)` after each sample.
    public static func addSamEmbeddings(from reader: GroundingCacheReader, output: URL, sam: Sam, samName: String,
                                        encoding: HalfEncoding, provenance: [String: String] = [:],
                                        progress: (Int, Int) -> Void = { _, _ in }) throws -> Int {
        let c = sam.config
        var header = reader.header
        header.sam = SamSummary(model: samName, embeddingDim: c.promptEncoder.embedDim,
                                embeddingHeight: c.promptEncoder.imageEmbeddingSize.0,
                                embeddingWidth: c.promptEncoder.imageEmbeddingSize.1, imgSize: c.imageEncoder.imgSize)
        header.samEncoding = encoding
        header.provenance.merge(provenance) { $1 }
        let writer = try GroundingCacheWriter(url: output, header: header)
        do {
            for i in 0..<reader.count {
                var r = try reader.record(i)
                r.samEmbedding = samEmbedding(RGBImage(height: r.imageHeight, width: r.imageWidth, pixels: r.image), sam: sam)
                try writer.append(r)
                progress(i + 1, reader.count)
            }
            try writer.finish()
        } catch {
            writer.discard()
            throw error
        }
        return reader.count
    }
}
