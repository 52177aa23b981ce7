// PyTorch .pth reading: the real tiny SAM checkpoint, hand-built pickles for the other dtypes
// and strided views, and every kind of bad input (corrupt zip, disallowed pickle, short or
// missing storage) built as corrupted copies in a temporary folder.

import Foundation
import XCTest
import ZIPFoundation
import Formats

final class PyTorchCheckpointTests: XCTestCase {
    static let tinyPath = testGoldenFile("checkpoint_tiny_sam.pth")

    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("pth-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    // MARK: helpers

    /// Every entry of a zip, in order.
    func zipEntries(_ url: URL) throws -> [(String, [UInt8])] {
        let archive = try Archive(url: url, accessMode: .read)
        var out: [(String, [UInt8])] = []
        for e in archive {
            var bytes: [UInt8] = []
            _ = try archive.extract(e) { bytes.append(contentsOf: $0) }
            out.append((e.path, bytes))
        }
        return out
    }

    /// Writes a zip (stored, like torch) with `entries`.
    func writeZip(_ entries: [(String, [UInt8])], name: String) throws -> URL {
        let url = tmp.appendingPathComponent(name)
        let archive = try Archive(url: url, accessMode: .create)
        for (path, bytes) in entries {
            let data = Data(bytes)
            try archive.addEntry(with: path, type: .file, uncompressedSize: Int64(data.count),
                                 compressionMethod: .none) { pos, size in
                data.subdata(in: Int(pos)..<(Int(pos) + size))
            }
        }
        return url
    }

    /// A copy of the tiny checkpoint with entries changed (`nil` from `edit` drops the entry).
    func corruptedCopy(_ name: String, _ edit: (String, [UInt8]) -> [UInt8]?) throws -> URL {
        let entries = try zipEntries(Self.tinyPath).compactMap { p, b in edit(p, b).map { (p, $0) } }
        return try writeZip(entries, name: name)
    }

    func readError(_ url: URL) -> PyTorchCheckpointError.Kind? {
        do {
            _ = try PyTorchCheckpoint.read(url)
            return nil
        } catch {
            XCTAssertEqual(error.file, url.path, "the error names the file")
            XCTAssertTrue(error.description.hasPrefix(url.path))
            return error.kind
        }
    }

    // MARK: the real file

    func testTinyCheckpointLoads() throws {
        let ck = try PyTorchCheckpoint.read(Self.tinyPath)
        XCTAssertEqual(ck.entries.count, 174)
        XCTAssertEqual(ck.names.first, "image_encoder.pos_embed")
        XCTAssertEqual(ck.names[1], "image_encoder.patch_embed.proj.weight")
        XCTAssertEqual(ck.names.last, "mask_decoder.iou_prediction_head.layers.2.bias")
        XCTAssertTrue(ck.entries.allSatisfy { $0.dtype == .F32 })
        XCTAssertEqual(ck["image_encoder.pos_embed"]?.shape, [1, 8, 8, 32])
        XCTAssertEqual(ck["image_encoder.patch_embed.proj.weight"]?.shape, [32, 3, 8, 8])
        XCTAssertEqual(ck["mask_decoder.iou_prediction_head.layers.2.weight"]?.shape, [4, 32])
        // Values read with Python's zipfile + struct from data/0 and data/2.
        let pos = try ck.tensor("image_encoder.pos_embed")
        XCTAssertEqual(Array(pos.data.prefix(4)),
                       [0.15483397245407104, 0.12352506071329117, 0.011288798414170742, -0.1345154047012329])
        let bias = try ck.tensor("image_encoder.patch_embed.proj.bias")
        XCTAssertEqual(bias.shape, [32])
        XCTAssertEqual(Array(bias.data.prefix(4)),
                       [-0.024373093619942665, 0.06490916758775711, -0.04909881576895714, 0.00034371460787951946])
    }

    /// The .pth and its safetensors twin (written by the golden generator from the same state
    /// dict) hold the same keys, dtypes, shapes and bytes.
    func testTinyCheckpointEqualsSafetensorsTwinBitForBit() throws {
        let ck = try PyTorchCheckpoint.read(Self.tinyPath)
        let twin = try SafeTensors.read(testGoldenFile("checkpoint_tiny_sam.safetensors"))
        XCTAssertEqual(Set(ck.names), Set(twin.names))
        XCTAssertEqual(ck.names.count, twin.names.count)
        for e in ck.entries {
            XCTAssertEqual(e, twin[e.name], e.name)
        }
        // Decoded: the Float32 tensors are equal too.
        let a = ck.floatTensors, b = twin.floatTensors
        for (k, t) in b { XCTAssertEqual(a[k]?.data, t.data, k) }
    }

    func testConvertKeepsKeysAndBytes() throws {
        let out = tmp.appendingPathComponent("converted.safetensors")
        XCTAssertEqual(try WeightFile.convert(Self.tinyPath, to: out), 174)
        let converted = try SafeTensors.read(out)
        let twin = try SafeTensors.read(testGoldenFile("checkpoint_tiny_sam.safetensors"))
        XCTAssertEqual(converted.entries, twin.entries)
        XCTAssertEqual(converted.metadata["format"], "pt")
        // Reading either kind through WeightFile: the .pth in state-dict order, safetensors sorted.
        let (f1, e1) = try WeightFile.read(Self.tinyPath)
        let (f2, e2) = try WeightFile.read(out)
        XCTAssertEqual(f1, .pytorch)
        XCTAssertEqual(f2, .safetensors)
        XCTAssertEqual(e1.first?.name, "image_encoder.pos_embed")
        XCTAssertEqual(e1.sorted { $0.name < $1.name }, e2)
        // A bad input converts to nothing and names the input.
        let bad = tmp.appendingPathComponent("bad.pth")
        try Data(try Data(contentsOf: Self.tinyPath).prefix(5000)).write(to: bad)
        XCTAssertThrowsError(try WeightFile.convert(bad, to: tmp.appendingPathComponent("never.safetensors"))) {
            XCTAssertTrue("\($0)".hasPrefix(bad.path), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.appendingPathComponent("never.safetensors").path))
    }

    // MARK: hand-built pickles: other dtypes, strided views

    func testDTypesOffsetsAndNonContiguousViews() throws {
        var p = PickleWriter()
        p.ordered { p in
            // float16 [2] = [1.5, -0.25] at offset 1 of a 3-element storage.
            p.item("half") { $0.tensor(storage: "HalfStorage", key: "0", numel: 3, offset: 1, size: [2], stride: [1]) }
            // bfloat16 [2] = [3.0, -2.0].
            p.item("bf16") { $0.tensor(storage: "BFloat16Storage", key: "1", numel: 2, offset: 0, size: [2], stride: [1]) }
            // int64 [3] = [-5, 7, 1 << 40].
            p.item("long") { $0.tensor(storage: "LongStorage", key: "2", numel: 3, offset: 0, size: [3], stride: [1]) }
            // float32 transposed view of a 2×3 storage (t() of [[0,1,2],[3,4,5]]): [3, 2] stride (1, 3).
            p.item("t") { $0.tensor(storage: "FloatStorage", key: "3", numel: 6, offset: 0, size: [3, 2], stride: [1, 3]) }
            // Shares storage 3: row 1 as a view with offset 3.
            p.item("row1") { $0.tensor(storage: "FloatStorage", key: "3", numel: 6, offset: 3, size: [3], stride: [1]) }
            // A broadcast (stride 0) view and an empty tensor.
            p.item("bcast") { $0.tensor(storage: "FloatStorage", key: "3", numel: 6, offset: 2, size: [2, 2], stride: [0, 1]) }
            p.item("empty") { $0.tensor(storage: "FloatStorage", key: "4", numel: 0, offset: 0, size: [0, 5], stride: [5, 1]) }
        }
        let half: [UInt8] = [0x00, 0x7C, 0x00, 0x3E, 0x00, 0xB4]  // inf, 1.5, -0.25
        let bf16: [UInt8] = [0x40, 0x40, 0x00, 0xC0]              // 3.0, -2.0
        var long: [UInt8] = []
        for v: Int64 in [-5, 7, 1 << 40] { withUnsafeBytes(of: v.littleEndian) { long += $0 } }
        var f32: [UInt8] = []
        for v: Float in [0, 1, 2, 3, 4, 5] { withUnsafeBytes(of: v.bitPattern.littleEndian) { f32 += $0 } }
        let url = try writeZip([("m/data.pkl", p.finish()), ("m/byteorder", Array("little".utf8)),
                                ("m/data/0", half), ("m/data/1", bf16), ("m/data/2", long), ("m/data/3", f32),
                                ("m/data/4", [])], name: "dtypes.pth")
        let ck = try PyTorchCheckpoint.read(url)
        XCTAssertEqual(ck.names, ["half", "bf16", "long", "t", "row1", "bcast", "empty"])
        XCTAssertEqual(ck["half"]?.dtype, .F16)
        XCTAssertEqual(ck["half"]?.floats(), [1.5, -0.25])
        XCTAssertEqual(ck["bf16"]?.dtype, .BF16)
        XCTAssertEqual(ck["bf16"]?.floats(), [3, -2])
        XCTAssertEqual(ck["long"]?.int64s(), [-5, 7, 1 << 40])
        XCTAssertNil(ck["long"]?.floats())
        XCTAssertEqual(try ck.tensor("t").shape, [3, 2])
        XCTAssertEqual(try ck.tensor("t").data, [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(try ck.tensor("row1").data, [3, 4, 5])
        XCTAssertEqual(try ck.tensor("bcast").data, [2, 3, 2, 3])
        XCTAssertEqual(try ck.tensor("empty").shape, [0, 5])
        XCTAssertThrowsError(try ck.tensor("long")) {
            guard case .wrongDType = ($0 as? PyTorchCheckpointError)?.kind else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try ck.tensor("nope"))
    }

    func testBigEndianStorages() throws {
        var p = PickleWriter()
        p.ordered { p in
            p.item("x") { $0.tensor(storage: "FloatStorage", key: "0", numel: 2, offset: 0, size: [2], stride: [1]) }
        }
        var f32: [UInt8] = []
        for v: Float in [1.25, -8] { withUnsafeBytes(of: v.bitPattern.bigEndian) { f32 += $0 } }
        let url = try writeZip([("m/data.pkl", p.finish()), ("m/byteorder", Array("big".utf8)), ("m/data/0", f32)],
                               name: "big.pth")
        XCTAssertEqual(try PyTorchCheckpoint.read(url).tensor("x").data, [1.25, -8])
    }

    // MARK: bad input

    func testMissingFile() {
        guard case .unreadable = readError(tmp.appendingPathComponent("absent.pth")) else { return XCTFail() }
    }

    func testTruncatedZip() throws {
        let bytes = try Data(contentsOf: Self.tinyPath)
        for keep in [bytes.count / 2, bytes.count - 10, 100] {
            let url = tmp.appendingPathComponent("trunc\(keep).pth")
            try bytes.prefix(keep).write(to: url)
            guard case .corruptArchive = readError(url) else { return XCTFail("truncated to \(keep) bytes") }
        }
    }

    func testNotAZip() throws {
        let url = tmp.appendingPathComponent("text.pth")
        try Data("hello, this is not a zip file at all".utf8).write(to: url)
        guard case .corruptArchive = readError(url) else { return XCTFail() }
    }

    func testLegacyPickleFormatIsNamed() throws {
        let url = tmp.appendingPathComponent("legacy.pth")
        try Data([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]).write(to: url)
        guard case .corruptArchive(let m) = readError(url) else { return XCTFail() }
        XCTAssertTrue(m.contains("legacy"), m)
    }

    func testCorruptStorageBytesFailCRC() throws {
        var bytes = [UInt8](try Data(contentsOf: Self.tinyPath))
        // Find data/0's payload by its first 16 bytes and flip a bit inside it.
        let ck = try PyTorchCheckpoint.read(Self.tinyPath)
        let needle = Array(ck.entries[0].bytes.prefix(16))
        guard let at = (0..<(bytes.count - 16)).first(where: { Array(bytes[$0..<($0 + 16)]) == needle }) else {
            return XCTFail("payload not found")
        }
        bytes[at + 100] ^= 0x10
        let url = tmp.appendingPathComponent("crc.pth")
        try Data(bytes).write(to: url)
        guard case .corruptArchive(let m) = readError(url) else { return XCTFail() }
        XCTAssertTrue(m.contains("data/0"), m)
    }

    func testDisallowedGlobal() throws {
        let url = try corruptedCopy("global.pth") { path, bytes in
            guard path.hasSuffix("data.pkl") else { return bytes }
            return replace(bytes, Array("collections\nOrderedDict\n".utf8), Array("posix\nsystem\n".utf8))
        }
        guard case .pickle(.disallowedGlobal(let m, let n, let off)) = readError(url) else { return XCTFail() }
        XCTAssertEqual([m, n], ["posix", "system"])
        XCTAssertEqual(off, 2)
    }

    func testDisallowedStorageTypeGlobal() throws {
        let url = try corruptedCopy("int8.pth") { path, bytes in
            guard path.hasSuffix("data.pkl") else { return bytes }
            return replace(bytes, Array("torch\nFloatStorage\n".utf8), Array("torch\nCharStorage\n".utf8))
        }
        guard case .pickle(.disallowedGlobal(_, "CharStorage", _)) = readError(url) else { return XCTFail() }
    }

    func testDisallowedOpcode() throws {
        let url = try corruptedCopy("opcode.pth") { path, bytes in
            guard path.hasSuffix("data.pkl") else { return bytes }
            var b = bytes
            XCTAssertEqual(b[190], 0x89)  // NEWFALSE (requires_grad of the first tensor)
            b[190] = 0x69                 // INST: would instantiate a class
            return b
        }
        guard case .pickle(.disallowedOpcode(0x69, "INST", 190)) = readError(url) else { return XCTFail() }
        // The message names the opcode and where it is.
        do { _ = try PyTorchCheckpoint.read(url) } catch {
            XCTAssertTrue(error.description.contains("INST"), error.description)
            XCTAssertTrue(error.description.contains("190"), error.description)
        }
    }

    func testTruncatedPickle() throws {
        let url = try corruptedCopy("shortpkl.pth") { path, bytes in
            path.hasSuffix("data.pkl") ? Array(bytes.prefix(5000)) : bytes
        }
        guard case .pickle(.truncated) = readError(url) else { return XCTFail() }
    }

    func testStorageShorterThanView() throws {
        // data/1 is image_encoder.patch_embed.proj.weight, [32, 3, 8, 8] float32 = 24576 bytes.
        let url = try corruptedCopy("short.pth") { path, bytes in
            path.hasSuffix("/data/1") ? Array(bytes.prefix(1000)) : bytes
        }
        guard case .storageTooShort(let t, let s, let need, let have) = readError(url) else { return XCTFail() }
        XCTAssertEqual(t, "image_encoder.patch_embed.proj.weight")
        XCTAssertTrue(s.hasSuffix("data/1"))
        XCTAssertEqual(need, 24576)
        XCTAssertEqual(have, 1000)
    }

    func testViewPastDeclaredStorageSize() throws {
        var p = PickleWriter()
        p.ordered { p in
            p.item("x") { $0.tensor(storage: "FloatStorage", key: "0", numel: 4, offset: 2, size: [2, 2], stride: [2, 1]) }
        }
        let url = try writeZip([("m/data.pkl", p.finish()), ("m/data/0", [UInt8](repeating: 0, count: 16))],
                               name: "view.pth")
        guard case .storageTooShort("x", _, 24, 16) = readError(url) else { return XCTFail() }
    }

    func testMissingStorageEntry() throws {
        let url = try corruptedCopy("missing.pth") { path, bytes in path.hasSuffix("/data/7") ? nil : bytes }
        guard case .missingEntry(let e) = readError(url) else { return XCTFail() }
        XCTAssertEqual(e, "checkpoint_tiny_sam/data/7")
    }

    func testMissingPickle() throws {
        let url = try corruptedCopy("nopkl.pth") { path, bytes in path.hasSuffix("data.pkl") ? nil : bytes }
        guard case .missingEntry = readError(url) else { return XCTFail() }
    }

    func testNotAStateDict() throws {
        var p = PickleWriter()
        p.raw([0x5D])  // EMPTY_LIST
        let url = try writeZip([("m/data.pkl", p.finish())], name: "list.pth")
        guard case .notAStateDict(let m) = readError(url) else { return XCTFail() }
        XCTAssertTrue(m.contains("list"), m)
    }
}

/// A file in Tests/Goldens (found from this source file's path).
func testGoldenFile(_ name: String, filePath: String = #filePath) -> URL {
    URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Goldens").appendingPathComponent(name)
}

/// Replaces the first occurrence of `a` in `bytes` with `b`.
func replace(_ bytes: [UInt8], _ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
    for i in 0...(bytes.count - a.count) where Array(bytes[i..<(i + a.count)]) == a {
        return Array(bytes[..<i]) + b + Array(bytes[(i + a.count)...])
    }
    XCTFail("pattern not found")
    return bytes
}

/// Emits protocol-2 pickles the way torch.save does, for hand-built test checkpoints.
struct PickleWriter {
    var out: [UInt8] = [0x80, 0x02]

    mutating func raw(_ b: [UInt8]) { out += b }
    mutating func global(_ module: String, _ name: String) { out += [0x63] + Array("\(module)\n\(name)\n".utf8) }
    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        out += [0x58] + withUnsafeBytes(of: UInt32(u.count).littleEndian, Array.init) + u
    }
    mutating func int(_ v: Int) { out += [0x4A] + withUnsafeBytes(of: Int32(v).littleEndian, Array.init) }
    mutating func tuple(_ items: [Int]) {
        out.append(0x28)
        for i in items { int(i) }
        out.append(0x74)
    }

    /// `OrderedDict()` then MARK … SETITEMS around `body`.
    mutating func ordered(_ body: (inout PickleWriter) -> Void) {
        global("collections", "OrderedDict")
        out += [0x29, 0x52, 0x28]  // EMPTY_TUPLE REDUCE MARK
        body(&self)
        out.append(0x75)  // SETITEMS
    }

    mutating func item(_ key: String, _ value: (inout PickleWriter) -> Void) {
        string(key)
        value(&self)
    }

    /// `_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())`.
    mutating func tensor(storage: String, key: String, numel: Int, offset: Int, size: [Int], stride: [Int]) {
        global("torch._utils", "_rebuild_tensor_v2")
        out.append(0x28)  // MARK (args)
        out.append(0x28)  // MARK (persistent id)
        string("storage")
        global("torch", storage)
        string(key)
        string("cpu")
        int(numel)
        out += [0x74, 0x51]  // TUPLE BINPERSID
        int(offset)
        tuple(size)
        tuple(stride)
        out.append(0x89)  // NEWFALSE
        global("collections", "OrderedDict")
        out += [0x29, 0x52]  // EMPTY_TUPLE REDUCE
        out += [0x74, 0x52]  // TUPLE REDUCE
    }

    mutating func finish() -> [UInt8] { out + [0x2E] }
}
