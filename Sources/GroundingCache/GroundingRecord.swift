// One sample of a GroundingCache: the image, its LMM padding meta, the phrases' ground truth,
// the tokens, and what the frozen LMM and SAM image encoder produced for it.
//
// Shapes (L layers, NH heads, M phrases, R phrase tokens, K image tokens of this sample, D hidden
// size, C × e_h × e_w the SAM embedding, H × W the original image):
//   image [H, W, 3] UInt8; masks [M, H, W] UInt8 (0/1); tokenIDs, maskIDs [S];
//   rowPositions, rowMaskIDs [R] (the phrase tokens in sequence order: maskIDs ≠ −1);
//   attention .rows [L, NH, R, K] or .merged(mean, max) [L, NH, M, K] (merged over each phrase's
//   tokens from the raw rows, before any layout resize, by `AttentionMaps.mergedRows`: F-LMM
//   merges each token's map and a layout only places columns into cells, so the maps equal
//   F-LMM's bit for bit for every layout without a per-token resize, i.e. all but MGM-HD);
//   hiddenStates [L, R, D]; samEmbedding [C, e_h, e_w].

import FLMM
import Tensors

/// How a phrase picks its objects (stored as a byte with `flag_meanings`).
public enum PhraseKind: Int8, Sendable, Equatable, CaseIterable {
    case attribute = 0, relational = 1, plural = 2

    public var name: String { ["attribute", "relational", "plural"][Int(rawValue)] }
}

/// The phrase tokens' attention to the image tokens, as a cache stores it.
public enum CachedAttention {
    /// Every phrase token's row: [L, NH, R, K] (R in sequence order).
    case rows(Tensor)
    /// Per phrase, the mean and the max over its tokens' raw rows: [L, NH, M, K] each.
    case merged(mean: Tensor, max: Tensor)

    public var form: AttentionForm {
        switch self {
        case .rows: return .rows
        case .merged: return .merged
        }
    }
}

/// One cached sample.
public struct GroundingRecord {
    /// The split (must equal the header's) and the sample's index in it.
    public var split: String
    public var sampleIndex: Int
    /// The original RGB image [H, W, 3].
    public var imageHeight: Int, imageWidth: Int
    public var image: [UInt8]
    /// The LMM's padding meta (resize + centred square padding).
    public var padding: PaddingMeta
    /// Ground-truth masks [M, H, W] at the original size (0/1), one per phrase.
    public var masks: [UInt8]
    public var phraseKinds: [PhraseKind]
    /// The phrases' words (may be empty strings when a source has none).
    public var phraseTexts: [String]
    /// Token ids and mask ids (−1 = in no phrase) of the S tokens of the LMM's sequence.
    public var tokenIDs: [Int32]
    public var maskIDs: [Int32]
    /// Sequence positions and mask ids of the R phrase tokens (the rows).
    public var rowPositions: [Int32]
    public var rowMaskIDs: [Int32]
    public var attention: CachedAttention
    /// [L, R, D]: the phrase tokens' hidden states of every layer (HF's hidden_states[1:]).
    public var hiddenStates: Tensor
    /// [C, e_h, e_w]: the frozen SAM image embedding (nil in a cache without SAM embeddings).
    public var samEmbedding: Tensor?
    /// LLaVA-NeXT: this sample's fine grid (nil for layouts with a fixed geometry).
    public var fineGrid: GridSize?

    public init(split: String, sampleIndex: Int, imageHeight: Int, imageWidth: Int, image: [UInt8], padding: PaddingMeta,
                masks: [UInt8], phraseKinds: [PhraseKind], phraseTexts: [String], tokenIDs: [Int32], maskIDs: [Int32],
                rowPositions: [Int32], rowMaskIDs: [Int32], attention: CachedAttention, hiddenStates: Tensor,
                samEmbedding: Tensor?, fineGrid: GridSize? = nil) {
        self.split = split
        self.sampleIndex = sampleIndex
        self.imageHeight = imageHeight
        self.imageWidth = imageWidth
        self.image = image
        self.padding = padding
        self.masks = masks
        self.phraseKinds = phraseKinds
        self.phraseTexts = phraseTexts
        self.tokenIDs = tokenIDs
        self.maskIDs = maskIDs
        self.rowPositions = rowPositions
        self.rowMaskIDs = rowMaskIDs
        self.attention = attention
        self.hiddenStates = hiddenStates
        self.samEmbedding = samEmbedding
        self.fineGrid = fineGrid
    }

    /// M: the number of phrases (masks).
    public var numMasks: Int { phraseKinds.count }
    /// R: the number of phrase tokens.
    public var numRows: Int { rowMaskIDs.count }
    /// K of this sample (the last dim of its attention).
    public var imageTokenCount: Int {
        switch attention {
        case .rows(let a): return a.shape[3]
        case .merged(let mean, _): return mean.shape[3]
        }
    }
    /// (H, W).
    public var originalSize: (Int, Int) { (imageHeight, imageWidth) }

    /// The ground-truth masks as a float tensor [M, H, W] (0/1).
    public func maskTensor() -> Tensor {
        Tensor(shape: [numMasks, imageHeight, imageWidth], data: masks.map(Float.init))
    }

    /// The attention as F-LMM's step reads it (`FLMMSample.attention`).
    public var flmmAttention: PhraseAttention {
        switch attention {
        case .rows(let a): return .rows(a, rowMaskIDs: rowMaskIDsInt)
        case .merged(let mean, let max): return .merged(mean: mean, max: max)
        }
    }

    /// F-LMM's inputs for this sample: the attention, the phrase tokens' hidden states with
    /// their mask ids, the SAM embedding [1, C, e_h, e_w], the ground truth nearest-resized to the
    /// LMM's resized image (h_r, w_r) (F-LMM's dataset transform, `F.interpolate` 'nearest'),
    /// the original size and the padding meta's unpadding rule.
    public func flmmSample() -> FLMMSample {
        guard let samEmbedding else {
            preconditionFailure("GroundingRecord.flmmSample: sample \(sampleIndex) has no SAM embedding (check header.sam first)")
        }
        let gt = Autograd.noGrad {
            interpolate(maskTensor().unsqueeze(0), size: (padding.imageHeight, padding.imageWidth), mode: .nearest)
        }
        let meta = padding
        return FLMMSample(attention: flmmAttention, hiddenStates: hiddenStates, maskIDs: rowMaskIDsInt, numMasks: numMasks,
                          imageEmbedding: samEmbedding.unsqueeze(0),
                          gtMasks: gt.reshape([numMasks, padding.imageHeight, padding.imageWidth]),
                          originalSize: originalSize, unpadRegion: { meta.region(mapHeight: $0, mapWidth: $1) })
    }

    /// The input of `AttentionMaps.extract(phraseRows:rowMaskIDs:numMasks:layout:merge:)` for
    /// `merge`: the rows with their mask ids, or, in the merged form, the stored mean or max
    /// map of each phrase as one row per phrase (mask ids 0..<M), whose merge is the identity.
    public func phraseAttention(merge: PhraseMerge) -> (rows: Tensor, rowMaskIDs: [Int]) {
        switch attention {
        case .rows(let a): return (a, rowMaskIDs.map(Int.init))
        case .merged(let mean, let max): return (merge == .mean ? mean : max, Array(0..<numMasks))
        }
    }

    /// The mask id of each of the R rows as Int (the `maskIDs` argument of `TextEmbedding` for
    /// `hiddenStates`).
    public var rowMaskIDsInt: [Int] { rowMaskIDs.map(Int.init) }
}
