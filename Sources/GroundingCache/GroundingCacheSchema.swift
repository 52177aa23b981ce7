// The NetCDF layout of a GroundingCache (schema version 1), shared by the writer and the
// reader: dimension names, variables (type, dimensions, attributes, chunking) and the global
// attributes of the header. SCHEMA.md documents it.

import Formats

/// Dimension and variable names, and the variable table of schema version 1.
enum CacheSchema {
    // Ragged dimensions (unlimited: they grow with every record).
    static let sample = "sample", phrase = "phrase", token = "token", row = "row"
    static let pixel = "pixel", maskPixel = "mask_pixel"
    // Fixed dimensions.
    static let rgb = "rgb", layer = "layer", head = "head", imageToken = "image_token", hidden = "hidden"
    static let samChannel = "sam_channel", samY = "sam_y", samX = "sam_x"

    static let raggedDimensions = [sample, phrase, token, row, pixel, maskPixel]

    /// Fixed dimension lengths for a header.
    static func fixedDimensions(_ h: GroundingCacheHeader) -> [(String, Int)] {
        var d = [(rgb, 3), (layer, h.layers), (head, h.heads), (imageToken, h.imageTokenCount), (hidden, h.hiddenSize)]
        if let s = h.sam { d += [(samChannel, s.embeddingDim), (samY, s.embeddingHeight), (samX, s.embeddingWidth)] }
        return d
    }

    struct Variable {
        let name: String
        let type: NetCDFType
        let dimensions: [String]
        let attributes: [(String, NetCDFAttribute)]
        /// Chunk sizes (nil: the library's default, for fixed-size variables).
        let chunks: [Int]?
        /// The 16-bit encoding of a ushort float variable.
        let encoding: HalfEncoding?
    }

    /// Per-sample integer variables, in the order the writer fills them.
    static let perSampleInts: [(String, String)] = [
        ("sample_index", "index of the sample in its split"),
        ("image_height", "original image height H"),
        ("image_width", "original image width W"),
        ("phrase_offset", "first phrase of the sample along dim phrase"),
        ("phrase_count", "number of phrases M (= masks) of the sample"),
        ("token_offset", "first token of the sample along dim token"),
        ("token_count", "number of tokens S of the LMM sequence"),
        ("row_offset", "first phrase token of the sample along dim row"),
        ("row_count", "number of phrase tokens R (tokens with mask_id >= 0)"),
        ("image_token_count", "image tokens K of the sample (<= dim image_token; columns beyond are zero)"),
        ("padding_before_height", "LMM padding: rows above the resized image (F-LMM meta before_height)"),
        ("padding_after_height", "LMM padding: rows below the resized image (F-LMM meta after_height)"),
        ("padding_before_width", "LMM padding: columns left of the resized image (F-LMM meta before_width)"),
        ("padding_after_width", "LMM padding: columns right of the resized image (F-LMM meta after_width)"),
        ("resized_height", "LMM resized image height h_r (F-LMM meta image_shape[0])"),
        ("resized_width", "LMM resized image width w_r (F-LMM meta image_shape[1])"),
        ("padded_height", "LMM padded square height P (F-LMM meta padded_shape[0])"),
        ("padded_width", "LMM padded square width P (F-LMM meta padded_shape[1])"),
    ]
    static let fineGridInts: [(String, String)] = [
        ("fine_grid_height", "LLaVA-NeXT fine (anyres, unpadded) grid height H_f of the sample"),
        ("fine_grid_width", "LLaVA-NeXT fine (anyres, unpadded) grid width W_f of the sample"),
    ]
    static let perSampleInt64s: [(String, String)] = [
        ("image_offset", "first pixel of the sample's image along dim pixel (H*W pixels)"),
        ("mask_pixel_offset", "first value of the sample's masks along dim mask_pixel (M*H*W values)"),
    ]

    /// Chunk length along a ragged dim so that a chunk holds about `target` values.
    static func rows(per inner: Int, target: Int = 1 << 17, cap: Int = 4096) -> Int {
        Swift.max(1, Swift.min(cap, target / Swift.max(1, inner)))
    }

    static func encodingComment(_ e: HalfEncoding) -> String {
        switch e {
        case .float16: return "IEEE 754 binary16 bit patterns in ushort; decode exactly to float32 (no scale/offset)"
        case .bfloat16: return "bfloat16 bit patterns in ushort (the upper 16 bits of a float32); decode: float32 bits = value << 16"
        }
    }

    /// Every variable of a file with this header.
    static func variables(_ h: GroundingCacheHeader) -> [Variable] {
        var v: [Variable] = []
        for (n, d) in perSampleInts + (h.layout.hasPerSampleFineGrid ? fineGridInts : []) {
            v.append(Variable(name: n, type: .int, dimensions: [sample], attributes: [("long_name", .text(d))],
                              chunks: [1024], encoding: nil))
        }
        for (n, d) in perSampleInt64s {
            v.append(Variable(name: n, type: .int64, dimensions: [sample], attributes: [("long_name", .text(d))],
                              chunks: [1024], encoding: nil))
        }
        v.append(Variable(name: "image", type: .ubyte, dimensions: [pixel, rgb],
                          attributes: [("long_name", "original RGB images, row-major [image_height, image_width] per sample, from image_offset"),
                                       ("units", "8-bit intensity")],
                          chunks: [16384, 3], encoding: nil))
        v.append(Variable(name: "gt_masks", type: .ubyte, dimensions: [maskPixel],
                          attributes: [("long_name", "ground-truth phrase masks at the original size, [phrase_count, image_height, image_width] per sample, from mask_pixel_offset"),
                                       ("flag_values", .uint8s([0, 1])), ("flag_meanings", "background object")],
                          chunks: [1 << 16], encoding: nil))
        v.append(Variable(name: "phrase_kind", type: .byte, dimensions: [phrase],
                          attributes: [("long_name", "how the phrase picks its objects"),
                                       ("flag_values", .int8s(PhraseKind.allCases.map(\.rawValue))),
                                       ("flag_meanings", .text(PhraseKind.allCases.map(\.name).joined(separator: " ")))],
                          chunks: [4096], encoding: nil))
        v.append(Variable(name: "phrase_text", type: .string, dimensions: [phrase],
                          attributes: [("long_name", "the phrase's words")], chunks: [1024], encoding: nil))
        v.append(Variable(name: "token_ids", type: .int, dimensions: [token],
                          attributes: [("long_name", "token ids of the LMM sequence (image tokens expanded)")],
                          chunks: [8192], encoding: nil))
        v.append(Variable(name: "mask_ids", type: .int, dimensions: [token],
                          attributes: [("long_name", "F-LMM mask id of each token: the phrase it belongs to, -1 for none")],
                          chunks: [8192], encoding: nil))
        v.append(Variable(name: "row_token_position", type: .int, dimensions: [row],
                          attributes: [("long_name", "sequence position of each phrase token (row), in sequence order")],
                          chunks: [8192], encoding: nil))
        v.append(Variable(name: "row_mask_id", type: .int, dimensions: [row],
                          attributes: [("long_name", "mask id (phrase) of each phrase token (row)")],
                          chunks: [8192], encoding: nil))
        let lhk = h.layers * h.heads * h.imageTokenCount
        let attnChunks = lhk > (1 << 20) ? [1, 1, h.heads, h.imageTokenCount]
                                          : [rows(per: lhk), h.layers, h.heads, h.imageTokenCount]
        func attention(_ name: String, _ dim: String, _ what: String) -> Variable {
            Variable(name: name, type: .ushort, dimensions: [dim, layer, head, imageToken],
                     attributes: [("long_name", .text(what)), ("units", "1"), ("encoding", .text(h.attentionEncoding.rawValue)),
                                  ("comment", .text(encodingComment(h.attentionEncoding)))],
                     chunks: attnChunks, encoding: h.attentionEncoding)
        }
        switch h.attentionForm {
        case .rows:
            v.append(attention("attention_rows", row,
                               "softmax attention probability of each phrase token (query) to each image token (key), per layer and head"))
        case .merged:
            v.append(attention("attention_mean", phrase,
                               "mean over the phrase's tokens of their attention probabilities to each image token, per layer and head"))
            v.append(attention("attention_max", phrase,
                               "max over the phrase's tokens of their attention probabilities to each image token, per layer and head"))
        }
        v.append(Variable(name: "hidden_states", type: .ushort, dimensions: [row, layer, hidden],
                          attributes: [("long_name", "LMM hidden state of each phrase token after each layer (HF hidden_states[1:], the last after the final norm)"),
                                       ("encoding", .text(h.hiddenEncoding.rawValue)),
                                       ("comment", .text(encodingComment(h.hiddenEncoding)))],
                          chunks: [rows(per: h.layers * h.hiddenSize), h.layers, h.hiddenSize], encoding: h.hiddenEncoding))
        if let s = h.sam {
            v.append(Variable(name: "sam_embedding", type: .ushort, dimensions: [sample, samChannel, samY, samX],
                              attributes: [("long_name", "frozen SAM image encoder output (image_embeddings) of the sample's image"),
                                           ("encoding", .text(h.samEncoding.rawValue)),
                                           ("comment", .text(encodingComment(h.samEncoding)))],
                              chunks: [1, s.embeddingDim, s.embeddingHeight, s.embeddingWidth], encoding: h.samEncoding))
        }
        return v
    }

    // MARK: global attributes

    static func globalAttributes(_ h: GroundingCacheHeader) -> [(String, NetCDFAttribute)] {
        var a: [(String, NetCDFAttribute)] = [
            ("title", "F-LMM GroundingCache: frozen LMM attention, hidden states and SAM image embeddings per sample"),
            ("schema", .text(GroundingCache.schemaName)),
            ("schema_version", .int(h.schemaVersion)),
            ("source_model", .text(h.sourceModel)),
            ("attention_layout", .text(h.layout.kind)),
            ("attention_layout_name", .text(h.layout.layout().name)),
            ("image_token_id", .int(h.layout.imageTokenID)),
        ]
        switch h.layout {
        case .deepseekVL(_, let gh, let gw):
            a += [("grid_height", .int(gh)), ("grid_width", .int(gw))]
        case .llava(_, let gh, let gw, let p):
            a += [("grid_height", .int(gh)), ("grid_width", .int(gw)), ("patch_size", .int(p))]
        case .hpt(_, let g, let p):
            a += [("grid_height", .int(g)), ("grid_width", .int(g)), ("patch_size", .int(p))]
        case .llavaNext(_, let ch, let cw, let fh, let fw):
            a += [("grid_height", .int(ch)), ("grid_width", .int(cw)), ("fine_grid_height", .int(fh)), ("fine_grid_width", .int(fw))]
        case .mgm(_, let ch, let cw, let g, let global):
            a += [("grid_height", .int(ch)), ("grid_width", .int(cw)), ("mgm_image_grid", .int(g)), ("mgm_image_global", .bool(global))]
        }
        a += [
            ("attention_maps_per_layer", .int(h.layout.layout().maps.count)),
            ("num_layers", .int(h.layers)), ("num_heads", .int(h.heads)), ("hidden_size", .int(h.hiddenSize)),
            ("num_image_tokens", .int(h.imageTokenCount)),
        ]
        if let s = h.sam {
            a += [("sam_model", .text(s.model)), ("sam_embedding_dim", .int(s.embeddingDim)),
                  ("sam_embedding_height", .int(s.embeddingHeight)), ("sam_embedding_width", .int(s.embeddingWidth)),
                  ("sam_img_size", .int(s.imgSize))]
        }
        a += [
            ("attention_form", .text(h.attentionForm.rawValue)),
            ("attention_encoding", .text(h.attentionEncoding.rawValue)),
            ("hidden_encoding", .text(h.hiddenEncoding.rawValue)),
        ]
        if h.sam != nil { a.append(("sam_encoding", .text(h.samEncoding.rawValue))) }
        a.append(("split", .text(h.split)))
        for k in h.provenance.keys.sorted() { a.append(("provenance_\(k)", .text(h.provenance[k]!))) }
        return a
    }
}
