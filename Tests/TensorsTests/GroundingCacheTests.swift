import Crypto
import FLMM
import FLMMExperiments
import Formats
import Foundation
import GroundingCache
import Tensors
import SegmentAnything
import ShapesWorld
import XCTest

final class GroundingCacheTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("gcache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    // MARK: hand-made records

    static let sam = SamSummary(model: "test", embeddingDim: 4, embeddingHeight: 3, embeddingWidth: 3, imgSize: 12)

    static func header(_ form: AttentionForm, layout: AttentionLayoutSpec = .deepseekVL(imageTokenID: 7, gridHeight: 4, gridWidth: 5),
                       split: String = "val") -> GroundingCacheHeader {
        GroundingCacheHeader(sourceModel: "hand-made", layout: layout, layers: 2, heads: 3, hiddenSize: 6, sam: sam,
                             attentionForm: form, attentionEncoding: .float16, hiddenEncoding: .bfloat16,
                             samEncoding: .float16, split: split, provenance: ["seed": "11", "note": "test"])
    }

    /// Values with awkward bits: ties, subnormal float16, values that round up across a binade.
    static func values(_ n: Int, seed: UInt64, scale: Float) -> [Float] {
        var rng = PhiloxRNG(seed: seed)
        return (0..<n).map { i in
            switch i % 7 {
            case 0: return Float(rng.nextDouble()) * scale
            case 1: return 1e-6 * Float(rng.nextDouble())          // float16 subnormal range
            case 2: return Float(bitPattern: 0x3F80_1000)            // a float16 tie (1 + 2^-11)
            case 3: return Float(bitPattern: 0x3F80_8000)            // a bfloat16 tie (1 + 2^-8)
            case 4: return -Float(rng.nextDouble()) * scale
            case 5: return Float(bitPattern: 0x3F7F_FFFF)            // just below 1: rounds to 1
            default: return 0
            }
        }
    }

    /// A record of `m` phrases whose tokens sit at positions 3… of a sequence of 12 tokens.
    static func record(_ h: GroundingCacheHeader, index: Int, m: Int, fineGrid: GridSize? = nil) -> GroundingRecord {
        let (hh, ww) = (5 + index, 7)
        var rng = PhiloxRNG(seed: 100 + UInt64(index))
        let image = (0..<(hh * ww * 3)).map { _ in UInt8(rng.nextInt(below: 256)) }
        let masks = (0..<(m * hh * ww)).map { _ in UInt8(rng.nextInt(below: 2)) }
        var maskIDs = [Int32](repeating: -1, count: 12)
        for t in 3..<(3 + 2 * m) { maskIDs[t] = Int32((t - 3) / 2) }   // two tokens per phrase
        maskIDs[3 + 2 * m - 1] = -1                                     // …but the last phrase has one
        let rowPositions = maskIDs.indices.filter { maskIDs[$0] >= 0 }.map(Int32.init)
        let rowMaskIDs = rowPositions.map { maskIDs[Int($0)] }
        let r = rowPositions.count
        let k = fineGrid.map { h.layout.layout(fineGrid: $0).imageTokenCount } ?? h.imageTokenCount
        let (l, nh) = (h.layers, h.heads)
        let rows = Tensor(shape: [l, nh, r, k], data: values(l * nh * r * k, seed: UInt64(index), scale: 1).map(abs))
        let attention: CachedAttention
        switch h.attentionForm {
        case .rows: attention = .rows(rows)
        case .merged:
            let merged = try! AttentionMaps.mergedRows(rows, rowMaskIDs: rowMaskIDs.map(Int.init), numMasks: m)
            attention = .merged(mean: merged.mean, max: merged.max)
        }
        let samEmbedding = h.sam.map { s in
            Tensor(shape: [s.embeddingDim, s.embeddingHeight, s.embeddingWidth],
                   data: values(s.embeddingDim * s.embeddingHeight * s.embeddingWidth, seed: 9 + UInt64(index), scale: 2))
        }
        return GroundingRecord(
            split: h.split, sampleIndex: 40 + index, imageHeight: hh, imageWidth: ww, image: image,
            padding: PaddingMeta(beforeHeight: 1, afterHeight: 2, beforeWidth: 0, afterWidth: 0, imageHeight: 9, imageWidth: 12,
                                 paddedHeight: 12, paddedWidth: 12),
            masks: masks, phraseKinds: (0..<m).map { PhraseKind(rawValue: Int8($0 % 3))! },
            phraseTexts: (0..<m).map { "the phrase \($0)" }, tokenIDs: (0..<12).map { Int32($0 * 3 + index) }, maskIDs: maskIDs,
            rowPositions: rowPositions, rowMaskIDs: rowMaskIDs, attention: attention,
            hiddenStates: Tensor(shape: [l, r, h.hiddenSize], data: values(l * r * h.hiddenSize, seed: 7 + UInt64(index), scale: 300)),
            samEmbedding: samEmbedding, fineGrid: fineGrid)
    }

    func write(_ h: GroundingCacheHeader, _ records: [GroundingRecord], name: String = "c.nc",
               storage: GroundingCacheStorage = .standard) throws -> URL {
        let url = dir.appendingPathComponent(name)
        let w = try GroundingCacheWriter(url: url, header: h, storage: storage)
        for r in records { try w.append(r) }
        try w.finish()
        return url
    }

    /// Every field of `b` (read back) equals `a` (written) after rounding a's floats.
    func assertRoundTrip(_ a: GroundingRecord, _ b: GroundingRecord, _ h: GroundingCacheHeader,
                         file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(b.split, a.split, file: file, line: line)
        XCTAssertEqual(b.sampleIndex, a.sampleIndex, file: file, line: line)
        XCTAssertEqual(b.imageHeight, a.imageHeight, file: file, line: line)
        XCTAssertEqual(b.imageWidth, a.imageWidth, file: file, line: line)
        XCTAssertEqual(b.image, a.image, file: file, line: line)
        XCTAssertEqual(b.padding, a.padding, file: file, line: line)
        XCTAssertEqual(b.masks, a.masks, file: file, line: line)
        XCTAssertEqual(b.phraseKinds, a.phraseKinds, file: file, line: line)
        XCTAssertEqual(b.phraseTexts, a.phraseTexts, file: file, line: line)
        XCTAssertEqual(b.tokenIDs, a.tokenIDs, file: file, line: line)
        XCTAssertEqual(b.maskIDs, a.maskIDs, file: file, line: line)
        XCTAssertEqual(b.rowPositions, a.rowPositions, file: file, line: line)
        XCTAssertEqual(b.rowMaskIDs, a.rowMaskIDs, file: file, line: line)
        XCTAssertEqual(b.fineGrid, a.fineGrid, file: file, line: line)
        func same(_ x: Tensor, _ y: Tensor, _ e: HalfEncoding, _ what: String) {
            XCTAssertEqual(y.shape, x.shape, what, file: file, line: line)
            XCTAssertEqual(y.data.map(\.bitPattern), x.data.map { e.round($0).bitPattern }, what, file: file, line: line)
        }
        switch (a.attention, b.attention) {
        case (.rows(let x), .rows(let y)): same(x, y, h.attentionEncoding, "attention rows")
        case (.merged(let x1, let x2), .merged(let y1, let y2)):
            same(x1, y1, h.attentionEncoding, "attention mean")
            same(x2, y2, h.attentionEncoding, "attention max")
        default: XCTFail("attention form changed", file: file, line: line)
        }
        same(a.hiddenStates, b.hiddenStates, h.hiddenEncoding, "hidden states")
        XCTAssertEqual(a.samEmbedding == nil, b.samEmbedding == nil, "SAM embedding present", file: file, line: line)
        if let x = a.samEmbedding, let y = b.samEmbedding { same(x, y, h.samEncoding, "SAM embedding") }
    }

    // MARK: round trips

    func testHalfEncodingsRoundExactly() {
        // Ties go to even; a float16 subnormal keeps its exact value; decode is exact.
        XCTAssertEqual(HalfEncoding.float16.round(Float(bitPattern: 0x3F80_1000)), 1)               // 1 + 2^-11 → 1
        XCTAssertEqual(HalfEncoding.float16.round(Float(bitPattern: 0x3F80_3000)), 1 + 0x1p-9)      // 1 + 3·2^-11 → 1 + 2^-9
        XCTAssertEqual(HalfEncoding.bfloat16.round(Float(bitPattern: 0x3F80_8000)), 1)              // 1 + 2^-8 → 1
        XCTAssertEqual(HalfEncoding.bfloat16.round(Float(bitPattern: 0x3F81_8000)), 1 + 0x1p-6)     // 1 + 3·2^-8 → 1 + 2^-6
        XCTAssertEqual(HalfEncoding.float16.round(3 * 0x1p-24), 3 * 0x1p-24)
        XCTAssertEqual(HalfEncoding.float16.decode(0x3C00), 1)
        XCTAssertEqual(HalfEncoding.bfloat16.decode(0xC040), -3)
    }

    func testRoundTripRowsForm() throws {
        let h = Self.header(.rows)
        let records = [Self.record(h, index: 0, m: 2), Self.record(h, index: 1, m: 3), Self.record(h, index: 2, m: 1)]
        let url = try write(h, records)
        let r = try GroundingCacheReader(url: url)
        XCTAssertEqual(r.header, h)
        XCTAssertEqual(r.count, 3)
        // Random access, out of order.
        for i in [2, 0, 1] { assertRoundTrip(records[i], try r.record(i), h) }
        XCTAssertEqual(r.layout(1).name, "DeepSeek-VL 4×5")
        // The record feeds AttentionMaps as the in-process rows would.
        let rec = try r.record(1)
        let (rows, ids) = rec.phraseAttention(merge: .mean)
        let maps = try AttentionMaps.extract(phraseRows: rows, rowMaskIDs: ids, numMasks: rec.numMasks, layout: r.layout(1), merge: .mean)
        XCTAssertEqual(maps.shape, [3, 6, 4, 5])
        // F-LMM's inputs: ground truth nearest-resized to (h_r, w_r) = (9, 12), embedding [1, C, e, e].
        let sample = rec.flmmSample()
        XCTAssertEqual(sample.gtMasks.shape, [3, 9, 12])
        XCTAssertEqual(sample.imageEmbedding.shape, [1, 4, 3, 3])
        XCTAssertEqual(sample.maskIDs, rec.rowMaskIDsInt)
        XCTAssertTrue(sample.unpadRegion(12, 12) == (1, 0, 9, 12))
        // Nearest from 6×7 to 9×12: output row i reads input row floor(i·6/9), column floor(j·7/12).
        for i in 0..<9 { for j in 0..<12 {
            XCTAssertEqual(sample.gtMasks.data[(2 * 9 + i) * 12 + j], Float(rec.masks[(2 * 6 + i * 6 / 9) * 7 + j * 7 / 12]))
        } }
        XCTAssertThrowsError(try r.record(3)) { e in
            XCTAssertEqual((e as? GroundingCacheError)?.kind, .indexOutOfRange(index: 3, count: 3))
        }
    }

    func testRoundTripMergedFormWithPerSampleFineGrid() throws {
        // LLaVA-NeXT: coarse 2×2, fine grid up to 3×4 (K = 4 + 3·5 = 19); sample 1 has 2×3 (K = 4 + 2·4 = 12).
        let layout = AttentionLayoutSpec.llavaNext(imageTokenID: 9, coarseHeight: 2, coarseWidth: 2, fineHeight: 3, fineWidth: 4)
        let h = Self.header(.merged, layout: layout)
        XCTAssertEqual(h.imageTokenCount, 19)
        let records = [Self.record(h, index: 0, m: 2, fineGrid: GridSize(height: 3, width: 4)),
                       Self.record(h, index: 1, m: 2, fineGrid: GridSize(height: 2, width: 3))]
        let url = try write(h, records, storage: .uncompressed)
        let r = try GroundingCacheReader(url: url)
        XCTAssertEqual(r.header, h)
        for i in 0..<2 { assertRoundTrip(records[i], try r.record(i), h) }
        XCTAssertEqual(try r.record(1).imageTokenCount, 12)
        XCTAssertEqual(r.layout(1).imageTokenCount, 12)
        // The merged maps fed as one row per phrase give F-LMM's merge of the rows.
        let rec = try r.record(0)
        for merge in PhraseMerge.allCases {
            let (rows, ids) = rec.phraseAttention(merge: merge)
            XCTAssertEqual(ids, [0, 1])
            let viaMerged = try AttentionMaps.extract(phraseRows: rows, rowMaskIDs: ids, numMasks: 2, layout: r.layout(0), merge: merge)
            // Reference: the original (unrounded) rows, rounded after the merge as the cache stores them.
            guard case .rows(let raw) = Self.record(Self.header(.rows, layout: layout), index: 0, m: 2,
                                                    fineGrid: GridSize(height: 3, width: 4)).attention else { return XCTFail() }
            let both = try AttentionMaps.mergedRows(raw, rowMaskIDs: records[0].rowMaskIDsInt, numMasks: 2)
            let merged = merge == .mean ? both.mean : both.max
            let rounded = Tensor(shape: merged.shape, data: merged.data.map { HalfEncoding.float16.round($0) })
            let reference = try AttentionMaps.extract(phraseRows: rounded, rowMaskIDs: [0, 1], numMasks: 2, layout: r.layout(0), merge: merge)
            XCTAssertEqual(viaMerged.data, reference.data, "\(merge)")
            // And the merge of the unrounded rows is exactly the fused op's merge.
            let direct = try AttentionMaps.extract(phraseRows: raw, rowMaskIDs: records[0].rowMaskIDsInt, numMasks: 2,
                                                   layout: r.layout(0), merge: merge)
            let viaMergeFloat = try AttentionMaps.extract(phraseRows: merged, rowMaskIDs: [0, 1], numMasks: 2, layout: r.layout(0), merge: merge)
            XCTAssertEqual(direct.data, viaMergeFloat.data, "\(merge)")
        }
    }

    func testRealModelSizes() throws {
        // MGM-HD: 32 layers × 32 heads, hidden 4096, two maps per layer (global 24×24 + 48×48
        // stitched crops, K = 2880), SAM ViT's 256 × 64 × 64 embedding. Rows only: the writer
        // refuses the merged form, whose max would not commute with the per-token resize.
        let layout = AttentionLayoutSpec.mgm(imageTokenID: 32000, clipHeight: 24, clipWidth: 24, imageGrid: 2, imageGlobal: true)
        let sam = SamSummary(model: "vit_l", embeddingDim: 256, embeddingHeight: 64, embeddingWidth: 64, imgSize: 1024)
        var h = GroundingCacheHeader(sourceModel: "MGM-HD-7B (synthetic values)", layout: layout, layers: 32, heads: 32,
                                     hiddenSize: 4096, sam: sam, attentionForm: .merged, hiddenEncoding: .bfloat16,
                                     samEncoding: .bfloat16, split: "val")
        XCTAssertThrowsError(try GroundingCacheWriter(url: dir.appendingPathComponent("mgm-merged.nc"), header: h)) { e in
            XCTAssertEqual((e as? GroundingCacheError)?.variable, "global attribute 'attention_form'")
        }
        h.attentionForm = .rows
        let (l, nh, k, d, r) = (32, 32, 2880, 4096, 3)
        func pattern(_ n: Int, _ f: (Int) -> Float) -> [Float] { (0..<n).map(f) }
        let rows = Tensor(shape: [l, nh, r, k], data: pattern(l * nh * r * k) { Float(($0 * 7919) % 10007) / 10007 })
        let hidden = Tensor(shape: [l, r, d], data: pattern(l * r * d) { Float(($0 * 104729) % 20011) - 10005.5 })
        let emb = Tensor(shape: [256, 64, 64], data: pattern(256 * 64 * 64) { Float(($0 * 31) % 1001) / 100 - 5 })
        let rec = GroundingRecord(
            split: "val", sampleIndex: 0, imageHeight: 4, imageWidth: 6, image: [UInt8](repeating: 9, count: 72),
            padding: PaddingMeta(beforeHeight: 112, afterHeight: 112, beforeWidth: 0, afterWidth: 0, imageHeight: 224,
                                 imageWidth: 336, paddedHeight: 448, paddedWidth: 336),
            masks: [UInt8](repeating: 1, count: 2 * 24), phraseKinds: [.attribute, .plural], phraseTexts: ["a", "b c"],
            tokenIDs: [1, 2, 3, 4, 5], maskIDs: [-1, 0, 1, 1, -1], rowPositions: [1, 2, 3], rowMaskIDs: [0, 1, 1],
            attention: .rows(rows), hiddenStates: hidden, samEmbedding: emb)
        let url = try write(h, [rec], name: "mgm.nc")
        let reader = try GroundingCacheReader(url: url)
        XCTAssertEqual(reader.header, h)
        XCTAssertEqual(reader.layout(0).channels(layers: l, heads: nh), 2048)
        XCTAssertTrue(reader.layout(0).outputSize == (48, 48))
        assertRoundTrip(rec, try reader.record(0), h)
    }

    func testWriterRejectsMismatchedRecords() throws {
        let h = Self.header(.rows)
        let url = dir.appendingPathComponent("bad.nc")
        let w = try GroundingCacheWriter(url: url, header: h)
        var r = Self.record(h, index: 0, m: 2)
        r.hiddenStates = Tensor(shape: [2, r.numRows, 5], data: [Float](repeating: 0, count: 2 * r.numRows * 5))
        XCTAssertThrowsError(try w.append(r)) { e in
            XCTAssertEqual((e as? GroundingCacheError)?.variable, "hidden_states")
            XCTAssertTrue("\(e)".contains("[2, \(r.numRows), 6]"), "\(e)")
        }
        var big = Self.record(h, index: 0, m: 2)
        big.samEmbedding = Tensor(shape: big.samEmbedding!.shape, data: big.samEmbedding!.data.map { $0 + 1e5 })
        XCTAssertThrowsError(try w.append(big)) { e in
            guard case .notRepresentable(_, "float16", _)? = (e as? GroundingCacheError)?.kind else { return XCTFail("\(e)") }
        }
        XCTAssertEqual(w.count, 0)
        try w.append(Self.record(h, index: 0, m: 2))   // the failed appends left nothing behind
        try w.finish()
        XCTAssertEqual(try GroundingCacheReader(url: url).count, 1)
    }

    // MARK: bad files

    /// Copies `src` to `dst` through the NetCDF API, leaving out `drop`, resizing dimension
    /// `resize` and overriding global attributes.
    func copy(_ src: URL, to dst: URL, drop: String? = nil, resize: (String, Int)? = nil,
              attributes: [String: NetCDFAttribute] = [:], patch: [String: (inout [Int32]) -> Void] = [:]) throws {
        let a = try NetCDFFile.open(src)
        let b = try NetCDFFile.create(dst)
        for d in try a.dimensions() {
            let n = resize?.0 == d.name ? resize!.1 : d.length
            try b.defineDimension(d.name, length: d.isUnlimited ? nil : n)
        }
        let vars = try a.variables().filter { $0.name != drop && !$0.dimensions.contains(resize?.0 ?? "") }
        for v in vars {
            try b.defineVariable(v.name, type: v.type, dimensions: v.dimensions)
            for (k, x) in try a.attributes(variable: v.name) { try b.setAttribute(k, x, variable: v.name) }
        }
        for (k, x) in try a.attributes() { try b.setAttribute(k, attributes[k] ?? x) }
        for v in vars where v.count > 0 {
            switch v.type {
            case .ubyte: try b.write(v.name, try a.read(v.name, as: UInt8.self), start: v.shape.map { _ in 0 }, count: v.shape)
            case .byte: try b.write(v.name, try a.read(v.name, as: Int8.self), start: v.shape.map { _ in 0 }, count: v.shape)
            case .ushort: try b.write(v.name, try a.read(v.name, as: UInt16.self), start: v.shape.map { _ in 0 }, count: v.shape)
            case .int:
                var x = try a.read(v.name, as: Int32.self)
                patch[v.name]?(&x)
                try b.write(v.name, x, start: v.shape.map { _ in 0 }, count: v.shape)
            case .int64: try b.write(v.name, try a.read(v.name, as: Int64.self), start: v.shape.map { _ in 0 }, count: v.shape)
            case .string: try b.writeStrings(v.name, try a.readStrings(v.name), start: v.shape.map { _ in 0 }, count: v.shape)
            default: XCTFail("unexpected type \(v.type)")
            }
        }
        try b.close()
        try a.close()
    }

    func cacheError(_ url: URL) -> GroundingCacheError? {
        do {
            _ = try GroundingCacheReader(url: url)
            return nil
        } catch {
            return error as? GroundingCacheError
        }
    }

    func testBadFilesNameTheVariableAndTheExpectation() throws {
        let h = Self.header(.rows)
        let good = try write(h, [Self.record(h, index: 0, m: 2), Self.record(h, index: 1, m: 1)])
        // An unchanged copy reads back the same.
        let same = dir.appendingPathComponent("same.nc")
        try copy(good, to: same)
        assertRoundTrip(Self.record(h, index: 1, m: 1), try GroundingCacheReader(url: same).record(1), h)

        let missing = dir.appendingPathComponent("missing.nc")
        try copy(good, to: missing, drop: "hidden_states")
        let e1 = cacheError(missing)
        XCTAssertEqual(e1?.variable, "hidden_states")
        XCTAssertEqual(e1?.kind, .missingVariable)
        XCTAssertTrue(e1?.description.contains(missing.path) ?? false)

        // `hidden` resized: the header says 6.
        let wrongDim = dir.appendingPathComponent("wrongdim.nc")
        try copy(good, to: wrongDim, resize: ("hidden", 5))
        let e2 = cacheError(wrongDim)
        XCTAssertEqual(e2?.variable, "dimension 'hidden'")
        XCTAssertEqual(e2?.kind, .wrongDimensionLength(expected: 6, found: 5))

        let version = dir.appendingPathComponent("version.nc")
        try copy(good, to: version, attributes: ["schema_version": .int32s([99])])
        let e3 = cacheError(version)
        XCTAssertEqual(e3?.variable, "global attribute 'schema_version'")
        XCTAssertEqual(e3?.kind, .unknownSchemaVersion(found: "99", supported: [1]))
        XCTAssertTrue(e3?.description.contains("unknown schema version 99") ?? false, e3?.description ?? "")

        // Offsets that do not follow the counts.
        let offsets = dir.appendingPathComponent("offsets.nc")
        try copy(good, to: offsets, patch: ["token_offset": { $0[1] += 1 }])
        let e4 = cacheError(offsets)
        XCTAssertEqual(e4?.variable, "token_offset")
        guard case .inconsistentOffsets(1, _)? = e4?.kind else { return XCTFail("\(String(describing: e4))") }

        // Truncated: half the bytes.
        let truncated = dir.appendingPathComponent("truncated.nc")
        let bytes = try Data(contentsOf: good)
        try bytes.prefix(bytes.count / 2).write(to: truncated)
        let e5 = cacheError(truncated)
        guard case .netCDF? = e5?.kind else { return XCTFail("\(String(describing: e5))") }
        XCTAssertTrue(e5?.description.contains(truncated.path) ?? false, e5?.description ?? "")
    }

    func testInterruptedWriteLeavesNoFile() throws {
        let h = Self.header(.rows)
        let url = dir.appendingPathComponent("interrupted.nc")
        do {
            let w = try GroundingCacheWriter(url: url, header: h)
            try w.append(Self.record(h, index: 0, m: 2))
            XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), "the final name appears only on finish()")
            // Dropped here without finish().
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [], "the temporary file is removed")
        // After finish() the file is there and complete.
        let w = try GroundingCacheWriter(url: url, header: h)
        try w.append(Self.record(h, index: 0, m: 2))
        try w.finish()
        XCTAssertEqual(try GroundingCacheReader(url: url).count, 1)
        XCTAssertThrowsError(try w.append(Self.record(h, index: 1, m: 2)))
    }

    // MARK: the ShapesWorld builder

    /// Tiny random models: TinyVLM 32² / patch 8 (4×4 grid), dim 16, 2 layers × 2 heads; SAM 32² /
    /// patch 8 (4×4 embedding of 8 channels), one global block.
    static func tinyModels() -> (TinyVLM, Sam) {
        var r1 = PhiloxRNG(seed: 21), r2 = PhiloxRNG(seed: 22)
        let vlm = TinyVLM(TinyVLMConfig(imageSize: 32, patchSize: 8, dim: 16, layers: 2, heads: 2), rng: &r1)
        let sam = Sam(SamConfig(
            imageEncoder: ImageEncoderConfig(imgSize: 32, patchSize: 8, embedDim: 16, depth: 1, numHeads: 2, outChans: 8,
                                             windowSize: 0, globalAttnIndexes: [0]),
            promptEncoder: PromptEncoderConfig(embedDim: 8, imageEmbeddingSize: (4, 4), inputImageSize: (32, 32), maskInChans: 4),
            maskDecoder: MaskDecoderConfig(transformerDim: 8, depth: 1, numHeads: 2, mlpDim: 16, iouHeadHiddenDim: 8)), rng: &r2)
        return (vlm, sam)
    }

    /// A cache without SAM embeddings (what the Python exporter writes without --sam-checkpoint):
    /// no sam_* attributes or dims, no `sam_embedding`; the experiments refuse it by name; adding
    /// the embeddings in place gives the builder's own embeddings bitwise.
    func testCacheWithoutSamThenAddSamEmbeddings() throws {
        let (vlm, sam) = Self.tinyModels()
        let builder = GroundingCacheBuilder(world: ShapesWorld(seed: 5), vlm: vlm, sam: sam, vlmName: "tiny", samName: "tiny")
        let full = dir.appendingPathComponent("full.nc")
        try builder.build(split: .val, count: 2, to: full)
        let a = try GroundingCacheReader(url: full)
        var header = a.header
        header.sam = nil
        let bare = try write(header, try (0..<2).map { i in
            var r = try a.record(i)
            r.samEmbedding = nil
            return r
        }, name: "bare.nc")
        let b = try GroundingCacheReader(url: bare)
        XCTAssertNil(b.header.sam)
        XCTAssertNil(try b.record(1).samEmbedding)
        let names = try b.variables().map(\.variable.name)
        XCTAssertFalse(names.contains("sam_embedding"))
        XCTAssertThrowsError(try GroundingDataset(url: bare)) { e in
            XCTAssertEqual((e as? GroundingCacheError)?.variable, "sam_embedding")
            XCTAssertTrue("\(e)".contains("flmm cache add-sam-embeddings"), "\(e)")
        }
        // A record with an embedding does not fit a header without SAM.
        let w = try GroundingCacheWriter(url: dir.appendingPathComponent("x.nc"), header: header)
        XCTAssertThrowsError(try w.append(try a.record(0))) { e in
            XCTAssertEqual((e as? GroundingCacheError)?.variable, "sam_embedding")
        }
        w.discard()
        // In place: the same file gains the embeddings.
        var seen: [Int] = []
        let n = try GroundingCacheBuilder.addSamEmbeddings(from: b, output: bare, sam: sam, samName: "tiny", encoding: .float16,
                                                           provenance: ["sam_checkpoint_sha256": "none"]) { d, _ in seen.append(d) }
        XCTAssertEqual(n, 2)
        XCTAssertEqual(seen, [1, 2])
        let c = try GroundingCacheReader(url: bare)
        XCTAssertEqual(c.header.sam, a.header.sam)
        XCTAssertEqual(c.header.provenance["sam_checkpoint_sha256"], "none")
        for i in 0..<2 {
            let (x, y) = (try a.record(i), try c.record(i))
            XCTAssertEqual(y.samEmbedding?.data.map(\.bitPattern), x.samEmbedding?.data.map(\.bitPattern))
            XCTAssertEqual(y.hiddenStates.data.map(\.bitPattern), x.hiddenStates.data.map(\.bitPattern))
            XCTAssertEqual(y.masks, x.masks)
        }
        XCTAssertEqual(try GroundingDataset(url: bare).count, 2)
    }

    func testBuilderMatchesInProcessModels() throws {
        let (vlm, sam) = Self.tinyModels()
        let world = ShapesWorld(seed: 5)
        let builder = GroundingCacheBuilder(world: world, vlm: vlm, sam: sam, vlmName: "tiny", samName: "tiny")
        let url = dir.appendingPathComponent("built.nc")
        var seen: [Int] = []
        try builder.build(split: .val, count: 2, to: url) { done, _ in seen.append(done) }
        XCTAssertEqual(seen, [1, 2])
        let r = try GroundingCacheReader(url: url)
        XCTAssertEqual(r.count, 2)
        XCTAssertEqual(r.header.layout, .deepseekVL(imageTokenID: Tokenizer.shapesWorld.imageId, gridHeight: 4, gridWidth: 4))
        XCTAssertEqual(r.header.split, "val")
        XCTAssertEqual(r.header.provenance["world_seed"], "5")
        let f16 = HalfEncoding.float16
        var digest = SHA256()
        for i in 0..<2 {
            let rec = try r.record(i)
            let sample = world.sample(.val, i)
            // In process: the full forward, its attention stacked [L, NH, T, T], rounded as the cache rounds.
            let (pixels, meta) = ImagePreprocessor(imageSize: 32)(sample.scene.image)
            let seq = try VLMSequence(tokenizer: .shapesWorld, imageTokens: 16, sample: sample)
            let out = Autograd.noGrad { vlm(pixels, seq) }
            XCTAssertEqual(rec.padding, meta)
            XCTAssertEqual(rec.tokenIDs, seq.ids.map(Int32.init))
            XCTAssertEqual(rec.maskIDs, seq.maskIds.map(Int32.init))
            XCTAssertEqual(rec.masks, sample.masks.flatMap(\.bits))
            XCTAssertEqual(rec.image, sample.scene.image.pixels)
            XCTAssertEqual(rec.phraseTexts, sample.phrases.map { $0.words.joined(separator: " ") })
            XCTAssertEqual(rec.phraseKinds.map(\.name), sample.phrases.map(\.kind.rawValue))
            let full = out.stackedAttentions()
            let fullRounded = Tensor(shape: full.shape, data: full.data.map(f16.round))
            let t = seq.count
            guard case .rows(let rows) = rec.attention else { return XCTFail("rows form expected") }
            for l in 0..<2 { for h in 0..<2 { for (ri, pos) in rec.rowPositions.enumerated() { for c in 0..<16 {
                XCTAssertEqual(rows.data[((l * 2 + h) * rec.numRows + ri) * 16 + c].bitPattern,
                               fullRounded.data[((l * 2 + h) * t + Int(pos)) * t + seq.imageStart + c].bitPattern)
            } } } }
            for l in 0..<2 { for (ri, pos) in rec.rowPositions.enumerated() { for j in 0..<16 {
                XCTAssertEqual(rec.hiddenStates.data[(l * rec.numRows + ri) * 16 + j].bitPattern,
                               f16.round(out.hiddenStates[l].data[Int(pos) * 16 + j]).bitPattern)
            } } }
            // F-LMM's maps from the cached rows = the maps from the in-process attention (same rounding).
            let layout = r.layout(i)
            for merge in PhraseMerge.allCases {
                let fromFull = try AttentionMaps.extract(attentions: fullRounded, inputIDs: seq.ids, maskIDs: seq.maskIds,
                                                         numMasks: rec.numMasks, layout: layout, merge: merge)
                let (cr, ids) = rec.phraseAttention(merge: merge)
                let fromCache = try AttentionMaps.extract(phraseRows: cr, rowMaskIDs: ids, numMasks: rec.numMasks, layout: layout, merge: merge)
                XCTAssertEqual(fromCache.data.map(\.bitPattern), fromFull.data.map(\.bitPattern), "\(merge)")
            }
            XCTAssertEqual(rec.samEmbedding?.shape, [8, 4, 4])
            XCTAssertEqual(rec.samEmbedding?.data.map(\.bitPattern), builder.samEmbedding(sample.scene.image).data.map { f16.round($0).bitPattern })
            // The digest of the decoded arrays (format stability).
            digest.update(data: Data(rec.image))
            digest.update(data: Data(rec.masks))
            for a in [rec.tokenIDs, rec.maskIDs, rec.rowPositions, rec.rowMaskIDs] { a.withUnsafeBytes { digest.update(bufferPointer: $0) } }
            for x in [rows, rec.hiddenStates, rec.samEmbedding!] { x.data.withUnsafeBytes { digest.update(bufferPointer: $0) } }
        }
        let hex = digest.finalize().map { String(format: "%02x", $0) }.joined()
        XCTAssertEqual(hex, "676c3646376cea45ed2ec8ef20fdc43e633cfc86e153bdda9a0a8a16a39c0264", "digest of the decoded arrays of the tiny built cache")

        // The merged form of the same samples: mean and max of the in-process rows, rounded.
        var mergedBuilder = builder
        mergedBuilder.form = .merged
        let murl = dir.appendingPathComponent("merged.nc")
        try mergedBuilder.build(split: .val, count: 1, to: murl)
        let m = try GroundingCacheReader(url: murl).record(0)
        let f = try builder.vlmFeatures(world.sample(.val, 0))
        let both = try AttentionMaps.mergedRows(f.rows, rowMaskIDs: f.positions.map { f.sequence.maskIds[$0] }, numMasks: m.numMasks)
        guard case .merged(let mean, let mx) = m.attention else { return XCTFail("merged form expected") }
        XCTAssertEqual(mean.data.map(\.bitPattern), both.mean.data.map { f16.round($0).bitPattern })
        XCTAssertEqual(mx.data.map(\.bitPattern), both.max.data.map { f16.round($0).bitPattern })
    }
}
