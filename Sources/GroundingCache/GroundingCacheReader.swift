// Reads a GroundingCache: the header, then any record by index (random access). Opening
// checks the schema version first, then every dimension and variable the schema requires
// (names, types, dimensions, lengths against the header) and that the per-sample offsets
// tile the ragged dimensions; every failure is a GroundingCacheError naming the file, the
// variable, what was expected and what was found.

import FLMM
import Formats
import Foundation
import Tensors

/// A GroundingCache opened for reading.
public final class GroundingCacheReader {
    public let url: URL
    public let header: GroundingCacheHeader
    /// Number of records.
    public let count: Int
    private let file: NetCDFFile
    /// Per-sample integer variables, read at open.
    private let ints: [String: [Int32]]
    private let imageOffsets: [Int64], maskOffsets: [Int64]

    public init(url: URL) throws {
        self.url = url
        let path = url.path
        func fail(_ v: String?, _ k: GroundingCacheError.Kind) -> GroundingCacheError {
            GroundingCacheError(file: path, variable: v, kind: k)
        }
        let f: NetCDFFile
        do { f = try NetCDFFile.open(url) } catch let e as NetCDFError { throw GroundingCacheError(file: path, e) }
        file = f
        do {
            let h = try GroundingCacheReader.readHeader(f, path: path)
            header = h
            // Dimensions.
            for d in CacheSchema.raggedDimensions where (try? f.dimension(d)) == nil {
                throw fail("dimension '\(d)'", .missingDimension)
            }
            for (d, n) in CacheSchema.fixedDimensions(h) {
                guard let dim = try? f.dimension(d) else { throw fail("dimension '\(d)'", .missingDimension) }
                guard dim.length == n else { throw fail("dimension '\(d)'", .wrongDimensionLength(expected: n, found: dim.length)) }
            }
            // Variables.
            let specs = CacheSchema.variables(h)
            for v in specs {
                guard f.hasVariable(v.name) else { throw fail(v.name, .missingVariable) }
                let info = try f.variable(v.name)
                guard info.dimensions == v.dimensions else {
                    throw fail(v.name, .wrongDimensions(expected: v.dimensions, found: info.dimensions))
                }
                guard info.type == v.type else { throw fail(v.name, .wrongType(expected: v.type.description, found: info.type.description)) }
                if let e = v.encoding {
                    let found = try f.attribute("encoding", variable: v.name)?.text
                    guard found == e.rawValue else {
                        throw fail("variable '\(v.name)', attribute 'encoding'", .badAttribute(expected: e.rawValue, found: found ?? "none"))
                    }
                }
            }
            // Per-sample tables and their consistency.
            let n = try f.dimension(CacheSchema.sample).length
            count = n
            var t: [String: [Int32]] = [:]
            for (name, _) in CacheSchema.perSampleInts + (h.layout.hasPerSampleFineGrid ? CacheSchema.fineGridInts : []) {
                let a = try f.read(name, as: Int32.self)
                guard a.count == n else { throw fail(name, .wrongDimensionLength(expected: n, found: a.count)) }
                t[name] = a
            }
            ints = t
            imageOffsets = try f.read("image_offset", as: Int64.self)
            maskOffsets = try f.read("mask_pixel_offset", as: Int64.self)
            try GroundingCacheReader.checkOffsets(f, path: path, header: h, count: n, ints: t,
                                                  imageOffsets: imageOffsets, maskOffsets: maskOffsets)
        } catch let e as NetCDFError {
            f.discard()
            throw GroundingCacheError(file: path, e)
        } catch {
            f.discard()
            throw error
        }
    }

    deinit { file.discard() }

    // MARK: header

    static func readHeader(_ f: NetCDFFile, path: String) throws -> GroundingCacheHeader {
        func fail(_ a: String, _ k: GroundingCacheError.Kind) -> GroundingCacheError {
            GroundingCacheError(file: path, variable: "global attribute '\(a)'", kind: k)
        }
        let attrs = try f.attributes()
        guard let v = attrs["schema_version"] else { throw fail("schema_version", .missingAttribute) }
        guard let version = v.int, GroundingCache.supportedSchemaVersions.contains(version) else {
            let found = v.int.map(String.init) ?? v.text ?? "\(v)"
            throw fail("schema_version", .unknownSchemaVersion(found: found, supported: GroundingCache.supportedSchemaVersions))
        }
        func text(_ a: String) throws -> String {
            guard let x = attrs[a] else { throw fail(a, .missingAttribute) }
            guard let s = x.text else { throw fail(a, .badAttribute(expected: "text", found: "\(x)")) }
            return s
        }
        func int(_ a: String, positive: Bool = true) throws -> Int {
            guard let x = attrs[a] else { throw fail(a, .missingAttribute) }
            guard let i = x.int, !positive || i > 0 else {
                throw fail(a, .badAttribute(expected: positive ? "a positive integer" : "an integer", found: "\(x)"))
            }
            return i
        }
        func oneOf<E: RawRepresentable & CaseIterable>(_ a: String, _: E.Type) throws -> E where E.RawValue == String {
            let s = try text(a)
            guard let e = E(rawValue: s) else {
                throw fail(a, .badAttribute(expected: "one of \(E.allCases.map(\.rawValue))", found: s))
            }
            return e
        }
        let kind = try text("attention_layout")
        let id = try int("image_token_id", positive: false)
        let layout: AttentionLayoutSpec
        switch kind {
        case "deepseek_vl": layout = .deepseekVL(imageTokenID: id, gridHeight: try int("grid_height"), gridWidth: try int("grid_width"))
        case "llava": layout = .llava(imageTokenID: id, gridHeight: try int("grid_height"), gridWidth: try int("grid_width"),
                                      patchSize: try int("patch_size"))
        case "hpt":
            let g = try int("grid_height")
            guard try int("grid_width") == g else { throw fail("grid_width", .badAttribute(expected: "\(g) (HPT grids are square)", found: "\(try int("grid_width"))")) }
            layout = .hpt(imageTokenID: id, grid: g, patchSize: try int("patch_size"))
        case "llava_next":
            layout = .llavaNext(imageTokenID: id, coarseHeight: try int("grid_height"), coarseWidth: try int("grid_width"),
                                fineHeight: try int("fine_grid_height"), fineWidth: try int("fine_grid_width"))
        case "mgm":
            layout = .mgm(imageTokenID: id, clipHeight: try int("grid_height"), clipWidth: try int("grid_width"),
                          imageGrid: try int("mgm_image_grid"), imageGlobal: try int("mgm_image_global", positive: false) != 0)
        default:
            throw fail("attention_layout", .badAttribute(expected: "one of deepseek_vl, llava, hpt, llava_next, mgm", found: kind))
        }
        // SAM embeddings are optional (an exporter run without SAM): all of sam_* or none.
        let sam: SamSummary?
        if attrs["sam_model"] == nil && !f.hasVariable("sam_embedding") {
            sam = nil
        } else {
            sam = SamSummary(model: try text("sam_model"), embeddingDim: try int("sam_embedding_dim"),
                             embeddingHeight: try int("sam_embedding_height"), embeddingWidth: try int("sam_embedding_width"),
                             imgSize: try int("sam_img_size"))
        }
        var provenance: [String: String] = [:]
        for (k, a) in attrs where k.hasPrefix("provenance_") { provenance[String(k.dropFirst("provenance_".count))] = a.text ?? "\(a)" }
        let h = GroundingCacheHeader(
            schemaVersion: version, sourceModel: try text("source_model"), layout: layout,
            layers: try int("num_layers"), heads: try int("num_heads"), hiddenSize: try int("hidden_size"),
            sam: sam,
            attentionForm: try oneOf("attention_form", AttentionForm.self),
            attentionEncoding: try oneOf("attention_encoding", HalfEncoding.self),
            hiddenEncoding: try oneOf("hidden_encoding", HalfEncoding.self),
            samEncoding: sam == nil ? .bfloat16 : try oneOf("sam_encoding", HalfEncoding.self),
            split: try text("split"), provenance: provenance)
        let k = try int("num_image_tokens")
        guard k == h.imageTokenCount else {
            throw fail("num_image_tokens", .badAttribute(expected: "\(h.imageTokenCount) (layout \(h.layout.layout().name))", found: "\(k)"))
        }
        return h
    }

    static func checkOffsets(_ f: NetCDFFile, path: String, header h: GroundingCacheHeader, count n: Int,
                             ints t: [String: [Int32]], imageOffsets: [Int64], maskOffsets: [Int64]) throws {
        func fail(_ v: String, _ i: Int, _ d: String) -> GroundingCacheError {
            GroundingCacheError(file: path, variable: v, kind: .inconsistentOffsets(sample: i, detail: d))
        }
        guard imageOffsets.count == n else { throw fail("image_offset", 0, "\(imageOffsets.count) offsets for \(n) samples") }
        guard maskOffsets.count == n else { throw fail("mask_pixel_offset", 0, "\(maskOffsets.count) offsets for \(n) samples") }
        let hh = t["image_height"]!, ww = t["image_width"]!, m = t["phrase_count"]!
        // (offset variable, per-sample size, ragged dim)
        var tables: [(String, [Int64], [Int64], String)] = [
            ("phrase_offset", t["phrase_offset"]!.map(Int64.init), m.map(Int64.init), CacheSchema.phrase),
            ("token_offset", t["token_offset"]!.map(Int64.init), t["token_count"]!.map(Int64.init), CacheSchema.token),
            ("row_offset", t["row_offset"]!.map(Int64.init), t["row_count"]!.map(Int64.init), CacheSchema.row),
        ]
        tables.append(("image_offset", imageOffsets, (0..<n).map { Int64(hh[$0]) * Int64(ww[$0]) }, CacheSchema.pixel))
        tables.append(("mask_pixel_offset", maskOffsets, (0..<n).map { Int64(m[$0]) * Int64(hh[$0]) * Int64(ww[$0]) },
                       CacheSchema.maskPixel))
        for (name, off, size, dim) in tables {
            let length = Int64(try f.dimension(dim).length)
            var expected: Int64 = 0
            for i in 0..<n {
                guard size[i] >= 0 else { throw fail(name, i, "negative size \(size[i])") }
                guard off[i] == expected else {
                    throw fail(name, i, "expected offset \(expected) (previous offset + count), found \(off[i])")
                }
                expected += size[i]
            }
            guard expected <= length else {
                throw fail(name, n - 1, "the samples need \(expected) entries along dim \(dim), which has \(length)")
            }
        }
        let k = t["image_token_count"]!
        for i in 0..<n {
            guard hh[i] > 0, ww[i] > 0, m[i] > 0 else {
                throw fail("image_height", i, "image \(hh[i])×\(ww[i]) with \(m[i]) phrases")
            }
            let expectedK: Int
            if h.layout.hasPerSampleFineGrid {
                let g = GridSize(height: Int(t["fine_grid_height"]![i]), width: Int(t["fine_grid_width"]![i]))
                guard g.height > 0, g.width > 0 else { throw fail("fine_grid_height", i, "fine grid \(g.height)×\(g.width)") }
                expectedK = h.layout.layout(fineGrid: g).imageTokenCount
            } else {
                expectedK = h.imageTokenCount
            }
            guard Int(k[i]) == expectedK, expectedK <= h.imageTokenCount else {
                throw fail("image_token_count", i, "expected \(expectedK) (≤ \(h.imageTokenCount)), found \(k[i])")
            }
        }
    }

    // MARK: records

    /// The layout of record `i` (its own fine grid for LLaVA-NeXT).
    public func layout(_ i: Int) -> any AttentionLayout {
        header.layout.layout(fineGrid: fineGrid(i))
    }

    private func fineGrid(_ i: Int) -> GridSize? {
        guard header.layout.hasPerSampleFineGrid else { return nil }
        return GridSize(height: Int(ints["fine_grid_height"]![i]), width: Int(ints["fine_grid_width"]![i]))
    }

    /// Record `i` (0..<count).
    public func record(_ i: Int) throws -> GroundingRecord {
        let path = url.path
        guard i >= 0 && i < count else {
            throw GroundingCacheError(file: path, kind: .indexOutOfRange(index: i, count: count))
        }
        func v(_ name: String) -> Int { Int(ints[name]![i]) }
        let h = header
        let (hh, ww, m, nt, rr, k) = (v("image_height"), v("image_width"), v("phrase_count"), v("token_count"), v("row_count"),
                                      v("image_token_count"))
        let (po, to, ro) = (v("phrase_offset"), v("token_offset"), v("row_offset"))
        let (l, nh, kk, d) = (h.layers, h.heads, h.imageTokenCount, h.hiddenSize)
        do {
            let image = try file.read("image", as: UInt8.self, start: [Int(imageOffsets[i]), 0], count: [hh * ww, 3])
            let masks = try file.read("gt_masks", as: UInt8.self, start: [Int(maskOffsets[i])], count: [m * hh * ww])
            let kindCodes = try file.read("phrase_kind", as: Int8.self, start: [po], count: [m])
            var kinds: [PhraseKind] = []
            for c in kindCodes {
                guard let pk = PhraseKind(rawValue: c) else {
                    throw GroundingCacheError(file: path, variable: "phrase_kind",
                                              kind: .badRecord(sample: i, expected: "flag values 0, 1, 2", found: "\(c)"))
                }
                kinds.append(pk)
            }
            let texts = try file.readStrings("phrase_text", start: [po], count: [m])
            let tokenIDs = try file.read("token_ids", as: Int32.self, start: [to], count: [nt])
            let maskIDs = try file.read("mask_ids", as: Int32.self, start: [to], count: [nt])
            let rowPositions = try file.read("row_token_position", as: Int32.self, start: [ro], count: [rr])
            let rowMaskIDs = try file.read("row_mask_id", as: Int32.self, start: [ro], count: [rr])
            /// [N, L, NH, K] codes → [L, NH, N, k] floats.
            func attention(_ name: String, start: Int, n: Int) throws -> Tensor {
                let codes = try file.read(name, as: UInt16.self, start: [start, 0, 0, 0], count: [n, l, nh, kk])
                let e = h.attentionEncoding
                var out = [Float](repeating: 0, count: l * nh * n * k)
                for p in 0..<(l * nh) {
                    for t in 0..<n {
                        let src = (t * l * nh + p) * kk, dst = (p * n + t) * k
                        for c in 0..<k { out[dst + c] = e.decode(codes[src + c]) }
                    }
                }
                return Tensor(shape: [l, nh, n, k], data: out)
            }
            let att: CachedAttention
            switch h.attentionForm {
            case .rows: att = .rows(try attention("attention_rows", start: ro, n: rr))
            case .merged: att = .merged(mean: try attention("attention_mean", start: po, n: m), max: try attention("attention_max", start: po, n: m))
            }
            let hc = try file.read("hidden_states", as: UInt16.self, start: [ro, 0, 0], count: [rr, l, d])
            var hidden = [Float](repeating: 0, count: hc.count)
            let he = h.hiddenEncoding
            for li in 0..<l { for t in 0..<rr { for j in 0..<d { hidden[(li * rr + t) * d + j] = he.decode(hc[(t * l + li) * d + j]) } } }
            var samEmbedding: Tensor?
            if let s = h.sam {
                let sc = try file.read("sam_embedding", as: UInt16.self, start: [i, 0, 0, 0],
                                       count: [1, s.embeddingDim, s.embeddingHeight, s.embeddingWidth])
                samEmbedding = Tensor(shape: [s.embeddingDim, s.embeddingHeight, s.embeddingWidth], data: sc.map(h.samEncoding.decode))
            }
            let (bh, ah, bw, aw) = (v("padding_before_height"), v("padding_after_height"), v("padding_before_width"), v("padding_after_width"))
            let (rh, rw, ph, pw) = (v("resized_height"), v("resized_width"), v("padded_height"), v("padded_width"))
            guard bh >= 0, ah >= 0, bw >= 0, aw >= 0, bh + rh + ah == ph, bw + rw + aw == pw else {
                throw GroundingCacheError(file: path, variable: "padded_height", kind: .badRecord(
                    sample: i, expected: "padding + resized size = padded size",
                    found: "\(bh) + \(rh) + \(ah) vs \(ph), \(bw) + \(rw) + \(aw) vs \(pw)"))
            }
            let padding = PaddingMeta(
                beforeHeight: v("padding_before_height"), afterHeight: v("padding_after_height"),
                beforeWidth: v("padding_before_width"), afterWidth: v("padding_after_width"),
                imageHeight: v("resized_height"), imageWidth: v("resized_width"),
                paddedHeight: v("padded_height"), paddedWidth: v("padded_width"))
            return GroundingRecord(
                split: h.split, sampleIndex: v("sample_index"), imageHeight: hh, imageWidth: ww, image: image,
                padding: padding, masks: masks, phraseKinds: kinds, phraseTexts: texts, tokenIDs: tokenIDs, maskIDs: maskIDs,
                rowPositions: rowPositions, rowMaskIDs: rowMaskIDs, attention: att,
                hiddenStates: Tensor(shape: [l, rr, d], data: hidden),
                samEmbedding: samEmbedding,
                fineGrid: fineGrid(i))
        } catch let e as NetCDFError {
            throw GroundingCacheError(file: path, e)
        }
    }

    /// Every variable's name, type, dims and shape, its `encoding` if any, and its bytes in the
    /// file's data (uncompressed size; see `flmm cache inspect` for the file size).
    public func variables() throws -> [(variable: NetCDFVariable, encoding: String?)] {
        do {
            return try file.variables().map { ($0, try file.attribute("encoding", variable: $0.name)?.text) }
        } catch let e as NetCDFError {
            throw GroundingCacheError(file: url.path, e)
        }
    }
}
