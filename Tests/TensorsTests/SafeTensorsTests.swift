import Foundation
import XCTest
import Formats
import Tensors

final class SafeTensorsTests: XCTestCase {
    // MARK: Helpers

    /// A file from a header text and a byte buffer (header length written as given).
    private func file(_ header: String, data: [UInt8] = []) -> [UInt8] {
        let h = Array(header.utf8)
        var out: [UInt8] = []
        var n = UInt64(h.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        return out + h + data
    }

    /// Parses `bytes` and returns the error kind it must throw.
    private func kind(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> SafeTensorsError.Kind? {
        do {
            _ = try SafeTensors(bytes: bytes, file: "corrupt.safetensors")
            XCTFail("parsed a corrupt file", file: file, line: line)
            return nil
        } catch let e as SafeTensorsError {
            XCTAssertEqual(e.file, "corrupt.safetensors", file: file, line: line)
            XCTAssertTrue(e.description.hasPrefix("corrupt.safetensors: "), e.description, file: file, line: line)
            return e.kind
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return nil
        }
    }

    private func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: d) }
        return d
    }

    // MARK: Round trip

    func testRoundTripEveryDType() throws {
        let f32: [Float] = [1.5, -2.25, 0, .infinity, 3.4e38, 0x1p-133]
        let f64: [Float] = [0.1, -7, 1e-30, 2]
        let f16: [Float] = [1, -2, 0x1p-14, 0x1p-24, 65504, -.infinity, 0.099975586]
        let bf16: [Float] = [1, -3.140625, 0x1p-126, Float(bitPattern: 0x7F7F_0000)]
        let entries = [
            SafeTensorsEntry(name: "a.f32", shape: [2, 3], floats: f32, dtype: .F32),
            SafeTensorsEntry(name: "b.f64", shape: [4], floats: f64, dtype: .F64),
            SafeTensorsEntry(name: "c.f16", shape: [7], floats: f16, dtype: .F16),
            SafeTensorsEntry(name: "d.bf16", shape: [2, 2], floats: bf16, dtype: .BF16),
            SafeTensorsEntry(name: "e.i64", shape: [3], int64s: [Int64.min, -1, Int64.max], dtype: .I64),
            SafeTensorsEntry(name: "f.i32", shape: [3], int64s: [Int64(Int32.min), 0, 7], dtype: .I32),
            SafeTensorsEntry(name: "g.u8", shape: [3], int64s: [0, 128, 255], dtype: .U8),
            SafeTensorsEntry(name: "h.bool", shape: [2, 1], int64s: [1, 0], dtype: .BOOL),
            SafeTensorsEntry(name: "i.scalar", shape: [], floats: [42], dtype: .F32),
            SafeTensorsEntry(name: "j.empty", shape: [0, 5], floats: [], dtype: .F32),
        ]
        let meta = ["case": "round\"trip", "config": "{\"k\": [1, 2]}", "unicode": "µ→✓\n"]
        let url = try tempDir().appendingPathComponent("rt.safetensors")
        try SafeTensors.write(entries, metadata: meta, to: url)

        let back = try SafeTensors.read(url)
        XCTAssertEqual(back.metadata, meta)
        XCTAssertEqual(back.names, entries.map(\.name))
        for e in entries { XCTAssertEqual(back[e.name], e, e.name) }

        XCTAssertEqual(try back.tensor("a.f32").data.map(\.bitPattern), f32.map(\.bitPattern))
        XCTAssertEqual(try back.tensor("a.f32").shape, [2, 3])
        XCTAssertEqual(try back.tensor("b.f64").data, f64.map { Float(Double($0)) })
        XCTAssertEqual(try back.tensor("c.f16").data, [1, -2, 0x1p-14, 0x1p-24, 65504, -.infinity, 0.099975586])
        XCTAssertEqual(try back.tensor("d.bf16").data, bf16)
        XCTAssertEqual(try back.int64s("e.i64").values, [Int64.min, -1, Int64.max])
        XCTAssertEqual(try back.int64s("f.i32").values, [Int64(Int32.min), 0, 7])
        XCTAssertEqual(try back.int64s("g.u8").values, [0, 128, 255])
        XCTAssertEqual(try back.int64s("h.bool").shape, [2, 1])
        XCTAssertEqual(try back.int64s("h.bool").values, [1, 0])
        XCTAssertEqual(try back.tensor("i.scalar").shape, [])
        XCTAssertEqual(try back.tensor("i.scalar").item, 42)
        XCTAssertEqual(try back.tensor("j.empty").shape, [0, 5])

        // Wrong-kind accessors and missing names are typed errors.
        XCTAssertThrowsError(try back.tensor("e.i64")) { e in
            guard case .wrongDType(tensor: "e.i64", dtype: "I64", _)? = (e as? SafeTensorsError)?.kind else {
                return XCTFail("\(e)")
            }
        }
        XCTAssertThrowsError(try back.int64s("a.f32"))
        XCTAssertThrowsError(try back.tensor("nope")) { e in
            XCTAssertEqual((e as? SafeTensorsError)?.kind, .missingTensor("nope"))
        }

        // Header: 8-byte aligned, padded with spaces, __metadata__ first, then keys sorted;
        // data ordered widest dtype first (I64, F64, F32, I32, BF16, F16, U8, BOOL).
        let raw = [UInt8](try Data(contentsOf: url))
        var n = 0
        for k in 0..<8 { n |= Int(raw[k]) << (8 * k) }
        XCTAssertEqual(n % 8, 0)
        let header = String(decoding: raw[8..<(8 + n)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{\"__metadata__\":{"))
        let close = header.lastIndex(of: "}") ?? header.startIndex
        XCTAssertTrue(header[header.index(after: close)...].allSatisfy { $0 == " " })
        XCTAssertTrue(header.contains("\"e.i64\":{\"data_offsets\":[0,24],\"dtype\":\"I64\",\"shape\":[3]}"), header)
        XCTAssertTrue(header.contains("\"b.f64\":{\"data_offsets\":[24,56],\"dtype\":\"F64\",\"shape\":[4]}"), header)
        let keyOrder = ["a.f32", "b.f64", "c.f16", "d.bf16", "e.i64", "f.i32", "g.u8", "h.bool", "i.scalar", "j.empty"]
            .compactMap { header.range(of: "\"\($0)\":")?.lowerBound }
        XCTAssertEqual(keyOrder, keyOrder.sorted())
        XCTAssertEqual(keyOrder.count, 10)

        // Atomic write left no temporary file behind; rewriting replaces the file.
        try SafeTensors.write([entries[0]], to: url)
        XCTAssertEqual(try SafeTensors.read(url).names, ["a.f32"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path),
                       ["rt.safetensors"])
    }

    func testHalfPrecisionConversions() {
        // Decoding known bit patterns exactly.
        XCTAssertEqual(Float16Bits.decode(0x3C00), 1)
        XCTAssertEqual(Float16Bits.decode(0xC000), -2)
        XCTAssertEqual(Float16Bits.decode(0x0001), 0x1p-24)
        XCTAssertEqual(Float16Bits.decode(0x03FF), 1023 * 0x1p-24)
        XCTAssertEqual(Float16Bits.decode(0x0400), 0x1p-14)
        XCTAssertEqual(Float16Bits.decode(0x7BFF), 65504)
        XCTAssertEqual(Float16Bits.decode(0x7C00), .infinity)
        XCTAssertEqual(Float16Bits.decode(0x8000).bitPattern, (-0.0 as Float).bitPattern)
        XCTAssertTrue(Float16Bits.decode(0x7E00).isNaN)
        XCTAssertEqual(BFloat16Bits.decode(0x3F80), 1)
        XCTAssertEqual(BFloat16Bits.decode(0x4049), 3.140625)
        // Every finite half round-trips through Float.
        for h in UInt16(0)...UInt16.max where (h & 0x7C00) != 0x7C00 {
            XCTAssertEqual(Float16Bits.encode(Float16Bits.decode(h)), h)
        }
        // Round to nearest, ties to even; overflow to inf.
        XCTAssertEqual(Float16Bits.encode(1 + 0x1p-11), 0x3C00)        // tie → even
        XCTAssertEqual(Float16Bits.encode(1 + 3 * 0x1p-11), 0x3C02)    // tie → even (up)
        XCTAssertEqual(Float16Bits.encode(1 + 0x1p-11 + 0x1p-20), 0x3C01)
        XCTAssertEqual(Float16Bits.encode(65519), 0x7BFF)
        XCTAssertEqual(Float16Bits.encode(65520), 0x7C00)
        XCTAssertEqual(Float16Bits.encode(0x1p-25), 0x0000)           // tie → even (0)
        XCTAssertEqual(Float16Bits.encode(0x1p-25 + 0x1p-40), 0x0001)
        XCTAssertEqual(Float16Bits.encode(-0x1p-14 * 1023.5 / 1024), 0x8400)  // subnormal rounding up into normal
        XCTAssertEqual(BFloat16Bits.encode(1 + 0x1p-8), 0x3F80)        // tie → even
        XCTAssertEqual(BFloat16Bits.encode(1 + 3 * 0x1p-8), 0x3F82)
        XCTAssertEqual(BFloat16Bits.encode(.greatestFiniteMagnitude), 0x7F80)
        XCTAssertTrue(BFloat16Bits.decode(BFloat16Bits.encode(.nan)).isNaN)
    }

    // MARK: Malformed files

    func testMalformedFilesGiveTypedErrors() {
        let f32x2 = [UInt8](repeating: 0, count: 8)
        XCTAssertEqual(kind([1, 2, 3, 4, 5]), .truncated(fileSize: 5))
        XCTAssertEqual(kind([]), .truncated(fileSize: 0))

        var past = file("{}")
        past[0] = 200
        XCTAssertEqual(kind(past), .headerLengthPastEnd(headerLength: 200, fileSize: 10))
        var huge = [UInt8](repeating: 0xFF, count: 8)
        huge += [0x7B, 0x7D]
        XCTAssertEqual(kind(huge), .headerLengthPastEnd(headerLength: UInt64.max, fileSize: 10))

        for bad in ["{\"a\": ", "{'a': 1}", "{\"a\":1,}", "", "{} x", "{\"a\":01}", "{\"a\":\"\\ud800\"}",
                    "{\"a\":1,\"a\":2}"] {
            guard case .badJSON? = kind(file(bad)) else { return XCTFail("accepted bad JSON \(bad)") }
        }
        var notUTF8 = file("{\"a\":\"xx\"}")
        notUTF8[8 + 6] = 0xFF
        guard case .badJSON? = kind(notUTF8) else { return XCTFail("accepted invalid UTF-8") }

        XCTAssertEqual(kind(file("[1, 2]")), .headerNotObject)
        XCTAssertEqual(kind(file("\"x\"")), .headerNotObject)

        guard case .badMetadata? = kind(file(#"{"__metadata__":{"a":1}}"#)) else { return XCTFail() }
        guard case .badMetadata? = kind(file(#"{"__metadata__":[]}"#)) else { return XCTFail() }

        guard case .badEntry(tensor: "t", _)? = kind(file(#"{"t":5}"#)) else { return XCTFail() }
        guard case .badEntry(tensor: "t", _)? = kind(file(#"{"t":{"dtype":"F32","shape":[2]}}"#, data: f32x2)) else {
            return XCTFail()
        }
        guard case .badEntry(tensor: "t", _)? = kind(file(#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, data: f32x2)) else {
            return XCTFail()
        }
        guard case .badEntry(tensor: "t", _)? = kind(file(#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}"#, data: f32x2)) else {
            return XCTFail()
        }
        guard case .badEntry(tensor: "t", _)? = kind(file(#"{"t":{"dtype":7,"shape":[2],"data_offsets":[0,8]}}"#, data: f32x2)) else {
            return XCTFail()
        }

        XCTAssertEqual(kind(file(#"{"t":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, data: [0, 0])),
                       .unknownDType(tensor: "t", dtype: "F8_E4M3"))
        XCTAssertEqual(kind(file(#"{"t":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}"#, data: f32x2)),
                       .unknownDType(tensor: "t", dtype: "f32"))

        for shape in ["[-1]", "[2.5]", "[\"2\"]", "[2, null]", "[1e3]", "[99999999999999999999]",
                      "[4294967296, 4294967296, 4294967296]"] {
            guard case .badShape(tensor: "t", _)? = kind(file(#"{"t":{"dtype":"F32","shape":"# + shape + #","data_offsets":[0,8]}}"#, data: f32x2)) else {
                return XCTFail("accepted shape \(shape)")
            }
        }

        XCTAssertEqual(kind(file(#"{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: f32x2)),
                       .offsetsOutOfRange(tensor: "t", begin: 0, end: 16, bufferSize: 8))
        XCTAssertEqual(kind(file(#"{"t":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, data: f32x2)),
                       .offsetsOutOfRange(tensor: "t", begin: 8, end: 4, bufferSize: 8))
        XCTAssertEqual(kind(file(#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}"#, data: f32x2)),
                       .offsetsOutOfRange(tensor: "t", begin: -8, end: 0, bufferSize: 8))

        XCTAssertEqual(kind(file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                                 data: [UInt8](repeating: 0, count: 12))),
                       .overlappingOffsets(tensor: "b", other: "a"))
        XCTAssertEqual(kind(file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                                 data: f32x2)),
                       .overlappingOffsets(tensor: "b", other: "a"))
        XCTAssertEqual(kind(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                                 data: [UInt8](repeating: 0, count: 12))),
                       .uncoveredBytes(begin: 4, end: 8, before: "b"))
        XCTAssertEqual(kind(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: f32x2)),
                       .uncoveredBytes(begin: 4, end: 8, before: nil))
        XCTAssertEqual(kind(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: f32x2)),
                       .uncoveredBytes(begin: 0, end: 4, before: "a"))

        XCTAssertEqual(kind(file(#"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: f32x2)),
                       .byteCountMismatch(tensor: "t", dtype: "F32", shape: [3], expected: 12, actual: 8))
        XCTAssertEqual(kind(file(#"{"t":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}}"#, data: f32x2)),
                       .byteCountMismatch(tensor: "t", dtype: "I64", shape: [2], expected: 16, actual: 8))

        // A valid minimal file parses (with trailing space padding and zero-size tensors).
        let ok = file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}}   "#,
                      data: f32x2)
        XCTAssertEqual(try SafeTensors(bytes: ok, file: "ok").names, ["a", "z"])
    }

    func testUnreadableFileNamesIt() {
        XCTAssertThrowsError(try SafeTensors.read(URL(fileURLWithPath: "/nonexistent/x.safetensors"))) { e in
            guard let e = e as? SafeTensorsError, case .unreadable = e.kind else { return XCTFail("\(e)") }
            XCTAssertEqual(e.file, "/nonexistent/x.safetensors")
        }
    }

    /// Mutated and truncated copies of a valid file either parse or throw; never trap.
    func testCorruptedBytesNeverTrap() throws {
        let valid = SafeTensors(entries: [
            SafeTensorsEntry(name: "w", shape: [2, 2], floats: [1, 2, 3, 4]),
            SafeTensorsEntry(name: "ids", shape: [3], int64s: [1, 2, 3]),
            SafeTensorsEntry(name: "h", shape: [2], floats: [1, 2], dtype: .F16),
        ], metadata: ["case": "x"]).serialized()
        var rng = SplitMix(seed: 7)
        var parsed = 0, rejected = 0
        for trial in 0..<3000 {
            var b = valid
            switch trial % 3 {
            case 0: b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next())
            case 1: b = Array(b.prefix(Int(rng.next() % UInt64(b.count))))
            default:
                // Mutate inside the header's digits / punctuation specifically.
                let i = 8 + Int(rng.next() % UInt64(min(b.count - 8, 160)))
                b[i] = Array("0123456789-.,:[]{}\"e ".utf8)[Int(rng.next() % 21)]
            }
            do { _ = try SafeTensors(bytes: b, file: "fuzz"); parsed += 1 } catch is SafeTensorsError { rejected += 1 }
        }
        XCTAssertEqual(parsed + rejected, 3000)
        XCTAssertGreaterThan(rejected, 1000)
    }

    // MARK: JSON header parser

    func testRawJSONParser() throws {
        let v = try RawJSON.parse(#" {"big": 123456789012345678, "neg": -0, "f": 1.5e-3, "s": "a\"\\\/\n\u00e9\ud83d\ude00", "a": [true, false, null, []], "o": {}} "#)
        guard case .object(let m) = v else { return XCTFail() }
        XCTAssertEqual(m["big"]?.int, 123_456_789_012_345_678)
        XCTAssertEqual(m["neg"]?.int, 0)
        XCTAssertEqual(m["f"]?.double, 1.5e-3)
        XCTAssertNil(m["f"]?.int)
        XCTAssertEqual(m["s"]?.string, "a\"\\/\né😀")
        XCTAssertEqual(m["a"], .array([.bool(true), .bool(false), .null, .array([])]))
        XCTAssertEqual(m["o"], .object([:]))
        XCTAssertNil(RawJSON.number("99999999999999999999").int)  // exceeds Int: not silently rounded

        XCTAssertThrowsError(try RawJSON.parse(String(repeating: "[", count: 10_000)))
        XCTAssertThrowsError(try RawJSON.parse("[1 2]"))
        XCTAssertThrowsError(try RawJSON.parse("\"a\u{01}\""))
        XCTAssertThrowsError(try RawJSON.parse("-"))
        XCTAssertThrowsError(try RawJSON.parse("1."))
        XCTAssertThrowsError(try RawJSON.parse("tru"))
        XCTAssertEqual(try RawJSON.parse("[1,{\"b\":\"x\\ty\",\"a\":2}]").serialized, "[1,{\"a\":2,\"b\":\"x\\ty\"}]")
    }

    // MARK: Real golden file

    func testReadsGoldenFiles() throws {
        let relu = try SafeTensors.read(goldenURL("ops_relu"))
        XCTAssertEqual(relu.names, ["grad.in.x", "in.x", "out.y", "upstream.y"])
        for e in relu.entries {
            XCTAssertEqual(e.dtype, .F32)
            XCTAssertEqual(e.shape, [125])
        }
        XCTAssertEqual(relu.metadata["case"], "ops_relu")
        XCTAssertEqual(relu.metadata["seed"], "0")
        let x = try relu.tensor("in.x"), y = try relu.tensor("out.y")
        XCTAssertEqual(y.data, x.data.map { max($0, 0) })
        XCTAssertTrue(x.data.contains(0))

        let pipe = try SafeTensors.read(goldenURL("flmm_attention_pipeline"))
        XCTAssertEqual(pipe["in.input_ids"]?.dtype, .I64)
        XCTAssertEqual(try pipe.int64s("in.input_ids").shape, [51])
        XCTAssertEqual(try pipe.int64s("in.input_ids").values.filter { $0 == 100015 }.count, 36)  // 6×6 image tokens
        XCTAssertEqual(try pipe.tensor("in.attentions").shape, [3, 4, 51, 51])
        XCTAssertEqual(try pipe.tensor("out.mask_attentions_mean").shape, [3, 12, 6, 6])

        // Re-serialising a golden file reproduces PyTorch's bytes exactly.
        let original = [UInt8](try Data(contentsOf: goldenURL("flmm_attention_pipeline")))
        XCTAssertEqual(pipe.serialized(), original)
    }
}

/// SplitMix64, for test fuzzing only.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
