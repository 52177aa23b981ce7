// The GroundingCache's global description: what produced the cached features and how they
// are stored (the NetCDF global attributes; see SCHEMA.md).

import FLMM
import Formats

/// How a 16-bit variable's UInt16 values encode floats.
public enum HalfEncoding: String, Sendable, Equatable, CaseIterable {
    /// IEEE 754 binary16: 10 mantissa bits, |x| < 65520; best for values in [0, 1].
    case float16
    /// bfloat16 (the upper half of a Float32): 7 mantissa bits, Float32's range.
    case bfloat16

    /// Round to nearest, ties to even (overflow of float16 gives ±inf).
    @inlinable public func encode(_ x: Float) -> UInt16 {
        switch self {
        case .float16: return Float16Bits.encode(x)
        case .bfloat16: return BFloat16Bits.encode(x)
        }
    }

    /// Exact widening to Float.
    @inlinable public func decode(_ h: UInt16) -> Float {
        switch self {
        case .float16: return Float16Bits.decode(h)
        case .bfloat16: return BFloat16Bits.decode(h)
        }
    }

    /// `x` rounded to this encoding and widened back (what a cache round trip gives).
    @inlinable public func round(_ x: Float) -> Float { decode(encode(x)) }
}

/// Per-token attention rows, or per-phrase merged maps.
public enum AttentionForm: String, Sendable, Equatable, CaseIterable {
    /// `attention_rows` [row, layer, head, image_token]: every phrase token's row.
    case rows
    /// `attention_mean` and `attention_max` [phrase, layer, head, image_token].
    case merged
}

/// Enough to rebuild the FLMM `AttentionLayout` of the LMM that produced the cache.
public enum AttentionLayoutSpec: Sendable, Equatable {
    case deepseekVL(imageTokenID: Int, gridHeight: Int, gridWidth: Int)
    case llava(imageTokenID: Int, gridHeight: Int, gridWidth: Int, patchSize: Int)
    case hpt(imageTokenID: Int, grid: Int, patchSize: Int)
    /// Fine grid: the largest of the file (the `image_token` dim is sized for it); each sample
    /// stores its own in `fine_grid_height` / `fine_grid_width`.
    case llavaNext(imageTokenID: Int, coarseHeight: Int, coarseWidth: Int, fineHeight: Int, fineWidth: Int)
    case mgm(imageTokenID: Int, clipHeight: Int, clipWidth: Int, imageGrid: Int, imageGlobal: Bool)

    /// The `attention_layout` attribute.
    public var kind: String {
        switch self {
        case .deepseekVL: return "deepseek_vl"
        case .llava: return "llava"
        case .hpt: return "hpt"
        case .llavaNext: return "llava_next"
        case .mgm: return "mgm"
        }
    }

    public var imageTokenID: Int {
        switch self {
        case .deepseekVL(let id, _, _), .llava(let id, _, _, _), .hpt(let id, _, _), .llavaNext(let id, _, _, _, _),
             .mgm(let id, _, _, _, _):
            return id
        }
    }

    /// Whether each sample has its own fine grid (LLaVA-NeXT's anyres grid depends on the image).
    public var hasPerSampleFineGrid: Bool {
        if case .llavaNext = self { return true }
        return false
    }

    /// Whether the per-phrase merge may be stored instead of the rows: not when each token's
    /// map is resized before the merge (MGM-HD's global map), since max does not commute with
    /// the bilinear resize.
    public var allowsMergedForm: Bool {
        if case .mgm(_, _, _, let g, let global) = self, g > 1 && global { return false }
        return true
    }

    /// The layout, with a sample's own fine grid for LLaVA-NeXT.
    public func layout(fineGrid: GridSize? = nil) -> any AttentionLayout {
        switch self {
        case .deepseekVL(let id, let h, let w):
            return DeepSeekVLLayout(imageTokenID: id, gridHeight: h, gridWidth: w)
        case .llava(let id, let h, let w, let p):
            return LlavaLayout(imageTokenID: id, paddedHeight: h * p, paddedWidth: w * p, patchSize: p)
        case .hpt(let id, let g, let p):
            return HPTLayout(imageTokenID: id, imageSize: g * p, patchSize: p)
        case .llavaNext(let id, let ch, let cw, let fh, let fw):
            let f = fineGrid ?? GridSize(height: fh, width: fw)
            return LlavaNextLayout(imageTokenID: id, coarseHeight: ch, coarseWidth: cw, fineHeight: f.height, fineWidth: f.width)
        case .mgm(let id, let ch, let cw, let g, let global):
            return MGMLayout(imageTokenID: id, clipHeight: ch, clipWidth: cw, imageGrid: g, imageGlobal: global)
        }
    }

    /// K: image tokens of the largest sample (the `image_token` dim).
    public var imageTokenCount: Int { layout().imageTokenCount }

    /// The LMM's layout without LLaVA-NeXT's file-level fine grid (the largest sample's, which
    /// differs between the train and val caches of one model): equal for every cache of one LMM.
    public var modelLayout: AttentionLayoutSpec {
        if case .llavaNext(let id, let ch, let cw, _, _) = self {
            return .llavaNext(imageTokenID: id, coarseHeight: ch, coarseWidth: cw, fineHeight: 0, fineWidth: 0)
        }
        return self
    }
}

/// A grid's height and width.
public struct GridSize: Sendable, Equatable, Hashable {
    public var height: Int
    public var width: Int
    public init(height: Int, width: Int) {
        self.height = height
        self.width = width
    }
}

/// What the frozen SAM image encoder looks like (enough to check a refiner against it).
public struct SamSummary: Sendable, Equatable {
    /// A name: "vit_l", "tinysam", …
    public var model: String
    /// C, the embedding channels (the prompt dim).
    public var embeddingDim: Int
    /// (e_h, e_w): the embedding grid.
    public var embeddingHeight: Int, embeddingWidth: Int
    /// The encoder input side (`img_size`, 1024 for the real SAM).
    public var imgSize: Int

    public init(model: String, embeddingDim: Int, embeddingHeight: Int, embeddingWidth: Int, imgSize: Int) {
        self.model = model
        self.embeddingDim = embeddingDim
        self.embeddingHeight = embeddingHeight
        self.embeddingWidth = embeddingWidth
        self.imgSize = imgSize
    }
}

/// The global attributes of a GroundingCache file.
public struct GroundingCacheHeader: Sendable, Equatable {
    /// The schema version of the file (`GroundingCache.schemaVersion` when written here).
    public var schemaVersion: Int
    /// The LMM, e.g. "TinyVLM (ShapesWorld)" or "llava-hf/llava-1.5-7b-hf".
    public var sourceModel: String
    public var layout: AttentionLayoutSpec
    /// L, NH, d of the LMM.
    public var layers: Int, heads: Int, hiddenSize: Int
    /// The frozen SAM image encoder of `sam_embedding`; nil when the cache has no SAM embeddings
    /// yet (an exporter run without SAM; `flmm cache add-sam-embeddings` adds them).
    public var sam: SamSummary?
    public var attentionForm: AttentionForm
    /// Encodings of `attention_rows` / `attention_mean` / `attention_max`, `hidden_states` and
    /// `sam_embedding`.
    public var attentionEncoding: HalfEncoding
    public var hiddenEncoding: HalfEncoding
    public var samEncoding: HalfEncoding
    /// "train", "val", "test", or a data set's own split name.
    public var split: String
    /// Free-form provenance (generator seed, checkpoint sha256s, library versions, …), written
    /// as global attributes `provenance_<key>`.
    public var provenance: [String: String]

    public init(schemaVersion: Int = GroundingCache.schemaVersion, sourceModel: String, layout: AttentionLayoutSpec,
                layers: Int, heads: Int, hiddenSize: Int, sam: SamSummary?, attentionForm: AttentionForm,
                attentionEncoding: HalfEncoding = .float16, hiddenEncoding: HalfEncoding = .bfloat16,
                samEncoding: HalfEncoding = .bfloat16, split: String, provenance: [String: String] = [:]) {
        self.schemaVersion = schemaVersion
        self.sourceModel = sourceModel
        self.layout = layout
        self.layers = layers
        self.heads = heads
        self.hiddenSize = hiddenSize
        self.sam = sam
        self.attentionForm = attentionForm
        self.attentionEncoding = attentionEncoding
        self.hiddenEncoding = hiddenEncoding
        self.samEncoding = samEncoding
        self.split = split
        self.provenance = provenance
    }

    /// K: the `image_token` dim (the largest sample's image-token count).
    public var imageTokenCount: Int { layout.imageTokenCount }
}

/// Schema constants.
public enum GroundingCache {
    /// The version this toolkit writes and reads.
    public static let schemaVersion = 1
    /// Versions this reader understands.
    public static let supportedSchemaVersions = [1]
    /// The `schema` global attribute.
    public static let schemaName = "flmm-grounding-cache"
}
