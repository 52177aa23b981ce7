// Streams GroundingRecords into a NetCDF-4 GroundingCache. The file is written under a
// temporary name in the destination folder and renamed into place by `finish()`; a writer
// dropped (or failing) before `finish()` deletes its temporary file, so an interrupted build
// never leaves a complete-looking cache.

import FLMM
import Formats
import Foundation
import Tensors

/// Compression of the cache's variables (every numeric variable; strings are never compressed).
public struct GroundingCacheStorage: Sendable, Equatable {
    /// Deflate level 1…9, or nil for none.
    public var deflateLevel: Int?
    /// The shuffle filter before deflate (groups the bytes of 16-bit values).
    public var shuffle: Bool

    public init(deflateLevel: Int? = 1, shuffle: Bool = true) {
        self.deflateLevel = deflateLevel
        self.shuffle = shuffle
    }

    /// Deflate 1 with shuffle: the measured best size per build time (SCHEMA.md).
    public static let standard = GroundingCacheStorage()
    public static let uncompressed = GroundingCacheStorage(deflateLevel: nil, shuffle: false)
}

/// Writes a GroundingCache record by record.
public final class GroundingCacheWriter {
    public let url: URL
    public let header: GroundingCacheHeader
    private var file: NetCDFFile?
    /// Records written so far.
    public private(set) var count = 0
    private var nPhrase = 0, nToken = 0, nRow = 0, nPixel = 0, nMaskPixel = 0

    /// Creates the (temporary) file and defines the schema for `header`.
    public init(url: URL, header: GroundingCacheHeader, storage: GroundingCacheStorage = .standard) throws {
        self.url = url
        self.header = header
        let path = url.path
        guard header.schemaVersion == GroundingCache.schemaVersion else {
            throw GroundingCacheError(file: path, variable: "global attribute 'schema_version'",
                                      kind: .unknownSchemaVersion(found: String(header.schemaVersion),
                                                                  supported: [GroundingCache.schemaVersion]))
        }
        if header.attentionForm == .merged && !header.layout.allowsMergedForm {
            throw GroundingCacheError(file: path, variable: "global attribute 'attention_form'",
                                      kind: .badAttribute(expected: "rows for \(header.layout.layout().name) (each token's map is resized before the merge, so max does not commute)",
                                                          found: "merged"))
        }
        do {
            let f = try NetCDFFile.create(url)
            file = f
            for d in CacheSchema.raggedDimensions { try f.defineDimension(d, length: nil) }
            for (d, n) in CacheSchema.fixedDimensions(header) { try f.defineDimension(d, length: n) }
            for v in CacheSchema.variables(header) {
                let compress = v.type == .string ? nil : storage.deflateLevel
                try f.defineVariable(v.name, type: v.type, dimensions: v.dimensions, compression: compress,
                                     shuffle: storage.shuffle, chunks: v.chunks)
                for (k, a) in v.attributes { try f.setAttribute(k, a, variable: v.name) }
            }
            for (k, a) in CacheSchema.globalAttributes(header) { try f.setAttribute(k, a) }
        } catch let e as NetCDFError {
            file?.discard()
            file = nil
            throw GroundingCacheError(file: path, e)
        }
    }

    deinit {
        // Never finished: the temporary file goes (NetCDFFile.discard deletes it).
        file?.discard()
    }

    private func fail(_ variable: String?, _ kind: GroundingCacheError.Kind) -> GroundingCacheError {
        GroundingCacheError(file: url.path, variable: variable, kind: kind)
    }

    /// Checks that `record` fits the header and is self-consistent.
    private func validate(_ r: GroundingRecord) throws {
        let h = header, s = r.sampleIndex
        func expect(_ ok: Bool, _ variable: String, _ expected: @autoclosure () -> String, _ found: @autoclosure () -> String) throws {
            if !ok { throw fail(variable, .badRecord(sample: s, expected: expected(), found: found())) }
        }
        let (hh, ww, m, rr) = (r.imageHeight, r.imageWidth, r.numMasks, r.numRows)
        try expect(r.split == h.split, "split", "split \(h.split)", r.split)
        try expect(hh > 0 && ww > 0 && r.image.count == hh * ww * 3, "image", "\(hh)×\(ww)×3 values", "\(r.image.count)")
        try expect(m > 0, "phrase_kind", "at least one phrase", "0")
        try expect(r.masks.count == m * hh * ww, "gt_masks", "[\(m), \(hh), \(ww)] = \(m * hh * ww) values", "\(r.masks.count)")
        try expect(r.masks.allSatisfy { $0 <= 1 }, "gt_masks", "0/1 values", "\(r.masks.max() ?? 0)")
        try expect(r.phraseTexts.count == m, "phrase_text", "\(m) texts", "\(r.phraseTexts.count)")
        try expect(r.tokenIDs.count == r.maskIDs.count, "mask_ids", "\(r.tokenIDs.count) (one per token)", "\(r.maskIDs.count)")
        try expect(r.rowPositions.count == rr, "row_token_position", "\(rr) (one per row)", "\(r.rowPositions.count)")
        let phraseTokens = r.maskIDs.indices.filter { r.maskIDs[$0] >= 0 }.map(Int32.init)
        try expect(r.rowPositions == phraseTokens, "row_token_position",
                   "the positions of the tokens with mask id ≥ 0 \(phraseTokens)", "\(r.rowPositions)")
        try expect(r.rowMaskIDs == phraseTokens.map { r.maskIDs[Int($0)] }, "row_mask_id", "the mask ids of those tokens",
                   "\(r.rowMaskIDs)")
        try expect(Set(r.rowMaskIDs) == Set((0..<m).map(Int32.init)), "row_mask_id",
                   "every mask id 0..<\(m) with at least one token", "\(Array(Set(r.rowMaskIDs)).sorted())")
        let k: Int
        if h.layout.hasPerSampleFineGrid {
            guard let f = r.fineGrid else { throw fail("fine_grid_height", .badRecord(sample: s, expected: "a fine grid for \(h.layout.kind)", found: "none")) }
            k = h.layout.layout(fineGrid: f).imageTokenCount
            try expect(k <= h.imageTokenCount, "image_token_count", "≤ \(h.imageTokenCount) (dim image_token)", "\(k) for fine grid \(f.height)×\(f.width)")
        } else {
            try expect(r.fineGrid == nil, "fine_grid_height", "no fine grid for \(h.layout.kind)", "\(r.fineGrid!)")
            k = h.imageTokenCount
        }
        switch (h.attentionForm, r.attention) {
        case (.rows, .rows(let a)):
            try expect(a.shape == [h.layers, h.heads, rr, k], "attention_rows", "[\(h.layers), \(h.heads), \(rr), \(k)]", "\(a.shape)")
        case (.merged, .merged(let mean, let mx)):
            try expect(mean.shape == [h.layers, h.heads, m, k], "attention_mean", "[\(h.layers), \(h.heads), \(m), \(k)]", "\(mean.shape)")
            try expect(mx.shape == [h.layers, h.heads, m, k], "attention_max", "[\(h.layers), \(h.heads), \(m), \(k)]", "\(mx.shape)")
        default:
            throw fail("attention_form", .badRecord(sample: s, expected: "attention form \(h.attentionForm.rawValue)", found: r.attention.form.rawValue))
        }
        try expect(r.hiddenStates.shape == [h.layers, rr, h.hiddenSize], "hidden_states",
                   "[\(h.layers), \(rr), \(h.hiddenSize)]", "\(r.hiddenStates.shape)")
        if let sam = h.sam {
            let shape = [sam.embeddingDim, sam.embeddingHeight, sam.embeddingWidth]
            try expect(r.samEmbedding?.shape == shape, "sam_embedding", "\(shape)", r.samEmbedding.map { "\($0.shape)" } ?? "none")
        } else {
            try expect(r.samEmbedding == nil, "sam_embedding", "none (the header has no SAM)", "\(r.samEmbedding!.shape)")
        }
    }

    /// 16-bit codes, failing on a value the encoding cannot hold.
    private func encode(_ x: [Float], _ e: HalfEncoding, _ variable: String, sample: Int) throws -> [UInt16] {
        var out = [UInt16](repeating: 0, count: x.count)
        for i in x.indices {
            let c = e.encode(x[i])
            if !x[i].isFinite || (e == .float16 && (c & 0x7C00) == 0x7C00) {
                throw fail(variable, .notRepresentable(sample: sample, encoding: e.rawValue, value: x[i]))
            }
            out[i] = c
        }
        return out
    }

    /// [L, NH, N, k] → storage order [N, L, NH, K] with zero columns k..<K, encoded.
    private func attentionCodes(_ a: Tensor, _ variable: String, k: Int, sample: Int) throws -> [UInt16] {
        let (l, nh, n) = (a.shape[0], a.shape[1], a.shape[2])
        let kk = header.imageTokenCount
        let codes = try encode(a.data, header.attentionEncoding, variable, sample: sample)
        var out = [UInt16](repeating: 0, count: n * l * nh * kk)
        for p in 0..<(l * nh) {
            for t in 0..<n {
                let src = (p * n + t) * k, dst = (t * l * nh + p) * kk
                for c in 0..<k { out[dst + c] = codes[src + c] }
            }
        }
        return out
    }

    /// Appends one record.
    public func append(_ r: GroundingRecord) throws {
        guard let f = file else { throw fail(nil, .finished) }
        try validate(r)
        let h = header, i = count, s = r.sampleIndex
        let (hh, ww, m, rr, nt) = (r.imageHeight, r.imageWidth, r.numMasks, r.numRows, r.tokenIDs.count)
        let k = r.imageTokenCount
        // Every value is encoded (and checked) before anything is written, so a record that
        // fails leaves the file as it was.
        let (l, nh, kk, d) = (h.layers, h.heads, h.imageTokenCount, h.hiddenSize)
        var attention: [(String, [UInt16], Int, Int)] = []   // (variable, codes, start, count) along row/phrase
        switch r.attention {
        case .rows(let a):
            attention.append(("attention_rows", try attentionCodes(a, "attention_rows", k: k, sample: s), nRow, rr))
        case .merged(let mean, let mx):
            attention.append(("attention_mean", try attentionCodes(mean, "attention_mean", k: k, sample: s), nPhrase, m))
            attention.append(("attention_max", try attentionCodes(mx, "attention_max", k: k, sample: s), nPhrase, m))
        }
        // [L, R, D] → [R, L, D].
        let hc = try encode(r.hiddenStates.data, h.hiddenEncoding, "hidden_states", sample: s)
        var hidden = [UInt16](repeating: 0, count: hc.count)
        for li in 0..<l { for t in 0..<rr { for j in 0..<d { hidden[(t * l + li) * d + j] = hc[(li * rr + t) * d + j] } } }
        let samCodes = try r.samEmbedding.map { try encode($0.data, h.samEncoding, "sam_embedding", sample: s) }
        do {
            let p = r.padding
            var ints: [String: Int] = [
                "sample_index": s, "image_height": hh, "image_width": ww,
                "phrase_offset": nPhrase, "phrase_count": m, "token_offset": nToken, "token_count": nt,
                "row_offset": nRow, "row_count": rr, "image_token_count": k,
                "padding_before_height": p.beforeHeight, "padding_after_height": p.afterHeight,
                "padding_before_width": p.beforeWidth, "padding_after_width": p.afterWidth,
                "resized_height": p.imageHeight, "resized_width": p.imageWidth,
                "padded_height": p.paddedHeight, "padded_width": p.paddedWidth,
            ]
            if let g = r.fineGrid {
                ints["fine_grid_height"] = g.height
                ints["fine_grid_width"] = g.width
            }
            for (name, _) in CacheSchema.perSampleInts + (h.layout.hasPerSampleFineGrid ? CacheSchema.fineGridInts : []) {
                try f.write(name, [Int32(ints[name]!)], start: [i], count: [1])
            }
            try f.write("image_offset", [Int64(nPixel)], start: [i], count: [1])
            try f.write("mask_pixel_offset", [Int64(nMaskPixel)], start: [i], count: [1])
            try f.write("image", r.image, start: [nPixel, 0], count: [hh * ww, 3])
            try f.write("gt_masks", r.masks, start: [nMaskPixel], count: [m * hh * ww])
            try f.write("phrase_kind", r.phraseKinds.map(\.rawValue), start: [nPhrase], count: [m])
            try f.writeStrings("phrase_text", r.phraseTexts, start: [nPhrase], count: [m])
            try f.write("token_ids", r.tokenIDs, start: [nToken], count: [nt])
            try f.write("mask_ids", r.maskIDs, start: [nToken], count: [nt])
            try f.write("row_token_position", r.rowPositions, start: [nRow], count: [rr])
            try f.write("row_mask_id", r.rowMaskIDs, start: [nRow], count: [rr])
            for (name, codes, start, n) in attention {
                try f.write(name, codes, start: [start, 0, 0, 0], count: [n, l, nh, kk])
            }
            try f.write("hidden_states", hidden, start: [nRow, 0, 0], count: [rr, l, d])
            if let sam = h.sam, let samCodes {
                try f.write("sam_embedding", samCodes, start: [i, 0, 0, 0],
                            count: [1, sam.embeddingDim, sam.embeddingHeight, sam.embeddingWidth])
            }
        } catch let e as NetCDFError {
            throw GroundingCacheError(file: url.path, e)
        }
        count += 1
        nPhrase += m
        nToken += nt
        nRow += rr
        nPixel += hh * ww
        nMaskPixel += m * hh * ww
    }

    /// Closes the file and renames it into place. Without it (or when it fails), no file
    /// appears at `url`.
    public func finish() throws {
        guard let f = file else { throw fail(nil, .finished) }
        file = nil
        do {
            try f.close()
        } catch let e as NetCDFError {
            throw GroundingCacheError(file: url.path, e)
        }
    }

    /// Abandons the file (the temporary is deleted; nothing appears at `url`).
    public func discard() {
        file?.discard()
        file = nil
    }
}
