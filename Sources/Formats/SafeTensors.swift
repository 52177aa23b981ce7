// safetensors: read and write (https://github.com/huggingface/safetensors, format v0).
//
// Layout: 8 bytes little-endian UInt64 `n`, then `n` bytes of UTF-8 JSON (the header), then the
// byte buffer. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]} (offsets relative to the byte buffer) and may hold "__metadata__": {String: String}.
//
// Reading is strict and never traps: every inconsistency is a `SafeTensorsError` naming the
// file and the problem. The tensors' byte ranges must tile the byte buffer exactly (no gaps,
// no overlaps, nothing left over) and each range must hold exactly shape.product × dtype size
// bytes, as the reference implementation requires.
//
// Writing follows the reference implementation: data ordered by dtype (widest first) then
// name, header keys sorted (`__metadata__` first, then tensor names; inside each entry too), header padded with spaces to a multiple
// of 8 bytes; the file is written atomically (temporary file + rename).

import Foundation
import Tensors

/// Element types this toolkit reads and writes.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, U8, BOOL

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16: return 2
        case .U8, .BOOL: return 1
        }
    }

    /// Whether values decode to Float (`SafeTensorsEntry.floats()`); else to Int64 (`int64s()`).
    public var isFloatingPoint: Bool {
        switch self {
        case .F64, .F32, .F16, .BF16: return true
        case .I64, .I32, .U8, .BOOL: return false
        }
    }

    /// The reference implementation's data order: wider/“larger” dtypes first.
    var layoutRank: Int {
        switch self {
        case .I64: return 0
        case .F64: return 1
        case .F32: return 2
        case .I32: return 3
        case .BF16: return 4
        case .F16: return 5
        case .U8: return 6
        case .BOOL: return 7
        }
    }
}

/// A safetensors file could not be read or written: which file, and what is wrong.
public struct SafeTensorsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The path of the file (or the label given to `SafeTensors(bytes:file:)`).
    public let file: String
    public let kind: Kind

    public enum Kind: Equatable, Sendable {
        /// The file could not be opened or read.
        case unreadable(String)
        /// Fewer than the 8 bytes of the header length.
        case truncated(fileSize: Int)
        /// The header length points past the end of the file (or above the 100 MB limit).
        case headerLengthPastEnd(headerLength: UInt64, fileSize: Int)
        /// The header is not UTF-8 JSON.
        case badJSON(String)
        /// The header is JSON but not an object.
        case headerNotObject
        /// `__metadata__` is not an object of strings.
        case badMetadata(String)
        /// A tensor entry is not an object with `dtype`, `shape`, `data_offsets` of the right types.
        case badEntry(tensor: String, problem: String)
        /// A dtype this reader does not support.
        case unknownDType(tensor: String, dtype: String)
        /// A shape entry that is negative, not an integer, or an element count that overflows.
        case badShape(tensor: String, problem: String)
        /// `data_offsets` negative, reversed, or past the end of the byte buffer.
        case offsetsOutOfRange(tensor: String, begin: Int, end: Int, bufferSize: Int)
        /// Two tensors' byte ranges overlap.
        case overlappingOffsets(tensor: String, other: String)
        /// Bytes of the buffer belong to no tensor: a gap before `before` (nil: at the end).
        case uncoveredBytes(begin: Int, end: Int, before: String?)
        /// The byte range's length disagrees with dtype size × element count.
        case byteCountMismatch(tensor: String, dtype: String, shape: [Int], expected: Int, actual: Int)
        /// No tensor of that name (accessors).
        case missingTensor(String)
        /// The tensor's dtype does not decode to what was asked (accessors).
        case wrongDType(tensor: String, dtype: String, expected: String)
        /// The file could not be written.
        case unwritable(String)
    }

    public init(file: String, kind: Kind) {
        self.file = file
        self.kind = kind
    }

    public var description: String {
        let what: String
        switch kind {
        case .unreadable(let m): what = "cannot read: \(m)"
        case .truncated(let n): what = "truncated file: \(n) bytes, a safetensors file has at least 8"
        case .headerLengthPastEnd(let n, let size):
            what = "header length \(n) runs past the end of the file (\(size) bytes) or the 100 MB limit"
        case .badJSON(let m): what = "header is not valid JSON: \(m)"
        case .headerNotObject: what = "header is not a JSON object"
        case .badMetadata(let m): what = "__metadata__: \(m)"
        case .badEntry(let t, let m): what = "tensor '\(t)': \(m)"
        case .unknownDType(let t, let d):
            what = "tensor '\(t)': unknown dtype '\(d)' (supported: "
                + SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ") + ")"
        case .badShape(let t, let m): what = "tensor '\(t)': bad shape: \(m)"
        case .offsetsOutOfRange(let t, let b, let e, let n):
            what = "tensor '\(t)': data_offsets [\(b), \(e)] out of range for a byte buffer of \(n) bytes"
        case .overlappingOffsets(let t, let o): what = "tensor '\(t)': data_offsets overlap those of '\(o)'"
        case .uncoveredBytes(let b, let e, let before):
            what = "bytes \(b)..<\(e) of the byte buffer belong to no tensor"
                + (before.map { " (gap before '\($0)')" } ?? " (left over at the end)")
        case .byteCountMismatch(let t, let d, let s, let exp, let act):
            what = "tensor '\(t)': \(d) \(s) needs \(exp) bytes, data_offsets give \(act)"
        case .missingTensor(let t): what = "no tensor '\(t)'"
        case .wrongDType(let t, let d, let e): what = "tensor '\(t)' has dtype \(d), expected \(e)"
        case .unwritable(let m): what = "cannot write: \(m)"
        }
        return "\(file): \(what)"
    }
}

/// One tensor as stored: name, dtype, shape and its raw little-endian bytes.
public struct SafeTensorsEntry: Sendable, Equatable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    public let bytes: [UInt8]

    /// Wraps raw bytes. Precondition: `bytes.count == shape.product × dtype.byteSize`.
    public init(name: String, dtype: SafeTensorsDType, shape: [Int], bytes: [UInt8]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "SafeTensorsEntry '\(name)': negative size in shape \(shape)")
        precondition(bytes.count == shape.product * dtype.byteSize,
                     "SafeTensorsEntry '\(name)': \(dtype) \(shape) needs \(shape.product * dtype.byteSize) bytes, got \(bytes.count)")
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// Encodes Float values as `dtype` (F32, F64, F16 or BF16; 16-bit rounds to nearest even).
    public init(name: String, shape: [Int], floats: [Float], dtype: SafeTensorsDType = .F32) {
        precondition(dtype.isFloatingPoint, "SafeTensorsEntry '\(name)': dtype \(dtype) is not a float type")
        precondition(floats.count == shape.product, "SafeTensorsEntry '\(name)': \(floats.count) values for shape \(shape)")
        var out = [UInt8]()
        out.reserveCapacity(floats.count * dtype.byteSize)
        switch dtype {
        case .F32: for v in floats { appendLE(v.bitPattern, to: &out) }
        case .F64: for v in floats { appendLE(Double(v).bitPattern, to: &out) }
        case .F16: for v in floats { appendLE(Float16Bits.encode(v), to: &out) }
        case .BF16: for v in floats { appendLE(BFloat16Bits.encode(v), to: &out) }
        default: break
        }
        self.init(name: name, dtype: dtype, shape: shape, bytes: out)
    }

    /// A Float32 tensor's values (stored as F32).
    public init(name: String, tensor: Tensor) {
        self.init(name: name, shape: tensor.shape, floats: tensor.data, dtype: .F32)
    }

    /// Encodes integers as `dtype` (I64, I32, U8 or BOOL). Precondition: every value fits.
    public init(name: String, shape: [Int], int64s: [Int64], dtype: SafeTensorsDType = .I64) {
        precondition(!dtype.isFloatingPoint, "SafeTensorsEntry '\(name)': dtype \(dtype) is not an integer type")
        precondition(int64s.count == shape.product, "SafeTensorsEntry '\(name)': \(int64s.count) values for shape \(shape)")
        var out = [UInt8]()
        out.reserveCapacity(int64s.count * dtype.byteSize)
        for v in int64s {
            switch dtype {
            case .I64: appendLE(UInt64(bitPattern: v), to: &out)
            case .I32:
                precondition(Int64(Int32.min)...Int64(Int32.max) ~= v, "SafeTensorsEntry '\(name)': \(v) does not fit I32")
                appendLE(UInt32(bitPattern: Int32(v)), to: &out)
            case .U8:
                precondition(0...255 ~= v, "SafeTensorsEntry '\(name)': \(v) does not fit U8")
                out.append(UInt8(v))
            case .BOOL:
                precondition(v == 0 || v == 1, "SafeTensorsEntry '\(name)': \(v) is not a BOOL (0 or 1)")
                out.append(UInt8(v))
            default: break
            }
        }
        self.init(name: name, dtype: dtype, shape: shape, bytes: out)
    }

    /// Number of elements.
    public var count: Int { shape.product }

    /// The values of a float tensor (F32, F64, F16, BF16) as Float; F16/BF16 exactly, F64 rounded.
    /// Returns nil for integer dtypes.
    public func floats() -> [Float]? {
        let n = count
        switch dtype {
        case .F32:
            return bytes.withUnsafeBytes { raw in
                (0..<n).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
            }
        case .F64:
            return bytes.withUnsafeBytes { raw in
                (0..<n).map { Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)))) }
            }
        case .F16:
            return bytes.withUnsafeBytes { raw in
                (0..<n).map { Float16Bits.decode(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
            }
        case .BF16:
            return bytes.withUnsafeBytes { raw in
                (0..<n).map { BFloat16Bits.decode(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
            }
        case .I64, .I32, .U8, .BOOL:
            return nil
        }
    }

    /// The values of an integer tensor (I64, I32, U8, BOOL) as Int64. Returns nil for float dtypes.
    public func int64s() -> [Int64]? {
        let n = count
        switch dtype {
        case .I64:
            return bytes.withUnsafeBytes { raw in
                (0..<n).map { Int64(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) }
            }
        case .I32:
            return bytes.withUnsafeBytes { raw in
                (0..<n).map { Int64(Int32(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))) }
            }
        case .U8, .BOOL:
            return bytes.map { Int64($0) }
        case .F64, .F32, .F16, .BF16:
            return nil
        }
    }
}

@inline(__always)
private func appendLE<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
    var le = v.littleEndian
    withUnsafeBytes(of: &le) { out.append(contentsOf: $0) }
}

/// A weight file read into named entries (safetensors, or a PyTorch `.pth`), decoded by name.
public protocol TensorEntries {
    var entries: [SafeTensorsEntry] { get }
}

extension TensorEntries {
    /// Every floating-point tensor, decoded to Float32, by name (what a module's `load` takes).
    public var floatTensors: [String: Tensor] {
        var out: [String: Tensor] = [:]
        for e in entries { if let v = e.floats() { out[e.name] = Tensor(shape: e.shape, data: v) } }
        return out
    }

    /// Every integer tensor as Int64 values, by name.
    public var integerTensors: [String: (shape: [Int], values: [Int64])] {
        var out: [String: (shape: [Int], values: [Int64])] = [:]
        for e in entries { if let v = e.int64s() { out[e.name] = (e.shape, v) } }
        return out
    }
}

/// The contents of a safetensors file: its tensors and its `__metadata__`.
public struct SafeTensors: Sendable, TensorEntries {
    /// Header limit of the reference implementation.
    public static let maxHeaderLength: UInt64 = 100_000_000

    /// The file path or label, used in errors.
    public let file: String
    /// `__metadata__` (empty if absent).
    public let metadata: [String: String]
    /// Tensors sorted by name.
    public let entries: [SafeTensorsEntry]
    private let index: [String: Int]

    /// Tensor names, sorted.
    public var names: [String] { entries.map(\.name) }

    /// The entry named `name`, if present.
    public subscript(name: String) -> SafeTensorsEntry? {
        index[name].map { entries[$0] }
    }

    /// Builds a file's contents from entries (names must be unique). Precondition on duplicates.
    public init(entries: [SafeTensorsEntry], metadata: [String: String] = [:], file: String = "<memory>") {
        let sorted = entries.sorted { $0.name < $1.name }
        var index: [String: Int] = [:]
        for (k, e) in sorted.enumerated() {
            precondition(index.updateValue(k, forKey: e.name) == nil, "SafeTensors: duplicate tensor name '\(e.name)'")
        }
        self.file = file
        self.metadata = metadata
        self.entries = sorted
        self.index = index
    }

    /// Reads and validates the file at `url`. Throws `SafeTensorsError`.
    public static func read(_ url: URL) throws -> SafeTensors {
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: url))
        } catch {
            throw SafeTensorsError(file: url.path, kind: .unreadable(String(describing: error)))
        }
        return try SafeTensors(bytes: bytes, file: url.path)
    }

    /// Parses and validates a whole file held in memory; `file` names it in errors.
    public init(bytes: [UInt8], file: String) throws {
        func fail(_ k: SafeTensorsError.Kind) -> SafeTensorsError { SafeTensorsError(file: file, kind: k) }

        guard bytes.count >= 8 else { throw fail(.truncated(fileSize: bytes.count)) }
        var n: UInt64 = 0
        for k in 0..<8 { n |= UInt64(bytes[k]) << (8 * UInt64(k)) }
        guard n <= SafeTensors.maxHeaderLength, n <= UInt64(bytes.count - 8) else {
            throw fail(.headerLengthPastEnd(headerLength: n, fileSize: bytes.count))
        }
        let headerEnd = 8 + Int(n)
        let json: RawJSON
        do {
            json = try RawJSON.parse(bytes[8..<headerEnd])
        } catch {
            throw fail(.badJSON(error.description))
        }
        guard case .object(let members) = json else { throw fail(.headerNotObject) }
        let bufferSize = bytes.count - headerEnd

        var metadata: [String: String] = [:]
        if let meta = members["__metadata__"] {
            guard case .object(let m) = meta else { throw fail(.badMetadata("expected an object, found \(meta.kindName)")) }
            for (k, v) in m {
                guard case .string(let s) = v else {
                    throw fail(.badMetadata("value of '\(k)' must be a string, found \(v.kindName)"))
                }
                metadata[k] = s
            }
        }

        struct Slot { let name: String; let dtype: SafeTensorsDType; let shape: [Int]; let begin: Int; let end: Int }
        var slots: [Slot] = []
        for name in members.keys.sorted() where name != "__metadata__" {
            guard case .object(let info)? = members[name] else {
                throw fail(.badEntry(tensor: name, problem: "expected an object with dtype, shape, data_offsets"))
            }
            guard let dt = info["dtype"] else { throw fail(.badEntry(tensor: name, problem: "missing 'dtype'")) }
            guard case .string(let dtName) = dt else {
                throw fail(.badEntry(tensor: name, problem: "'dtype' must be a string, found \(dt.kindName)"))
            }
            guard let dtype = SafeTensorsDType(rawValue: dtName) else {
                throw fail(.unknownDType(tensor: name, dtype: dtName))
            }
            guard let sh = info["shape"] else { throw fail(.badEntry(tensor: name, problem: "missing 'shape'")) }
            guard case .array(let dims) = sh else {
                throw fail(.badEntry(tensor: name, problem: "'shape' must be an array, found \(sh.kindName)"))
            }
            var shape: [Int] = []
            var elements = 1
            for d in dims {
                guard case .number(let lit) = d else {
                    throw fail(.badShape(tensor: name, problem: "entry \(d.serialized) is not an integer"))
                }
                guard let v = d.int else {
                    throw fail(.badShape(tensor: name, problem: "entry \(lit) is not an integer that fits Int"))
                }
                guard v >= 0 else { throw fail(.badShape(tensor: name, problem: "negative entry \(v)")) }
                let (p, overflow) = elements.multipliedReportingOverflow(by: v)
                guard !overflow else { throw fail(.badShape(tensor: name, problem: "element count overflows")) }
                elements = p
                shape.append(v)
            }
            guard let off = info["data_offsets"] else {
                throw fail(.badEntry(tensor: name, problem: "missing 'data_offsets'"))
            }
            guard case .array(let pair) = off, pair.count == 2 else {
                throw fail(.badEntry(tensor: name, problem: "'data_offsets' must be an array of two integers"))
            }
            guard let begin = pair[0].int, let end = pair[1].int else {
                throw fail(.badEntry(tensor: name, problem: "'data_offsets' must be two integers that fit Int, found \(off.serialized)"))
            }
            guard begin >= 0, begin <= end, end <= bufferSize else {
                throw fail(.offsetsOutOfRange(tensor: name, begin: begin, end: end, bufferSize: bufferSize))
            }
            let (expected, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, expected == end - begin else {
                throw fail(.byteCountMismatch(tensor: name, dtype: dtName, shape: shape,
                                              expected: overflow ? Int.max : expected, actual: end - begin))
            }
            slots.append(Slot(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }

        // The ranges must tile the byte buffer: in order of (begin, end), each starts where the
        // previous one ended, and the last ends at the buffer's end.
        let tiled = slots.sorted { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var cursor = 0
        var previous: String?
        for s in tiled {
            if s.begin < cursor, let previous {
                throw fail(.overlappingOffsets(tensor: s.name, other: previous))
            }
            if s.begin > cursor {
                throw fail(.uncoveredBytes(begin: cursor, end: s.begin, before: s.name))
            }
            cursor = s.end
            previous = s.name
        }
        if cursor != bufferSize {
            throw fail(.uncoveredBytes(begin: cursor, end: bufferSize, before: nil))
        }

        let entries = slots.map {
            SafeTensorsEntry(name: $0.name, dtype: $0.dtype, shape: $0.shape,
                             bytes: Array(bytes[(headerEnd + $0.begin)..<(headerEnd + $0.end)]))
        }
        self.init(entries: entries, metadata: metadata, file: file)
    }

    // MARK: Convenience accessors

    /// The entry named `name`, or `missingTensor`.
    public func entry(_ name: String) throws -> SafeTensorsEntry {
        guard let e = self[name] else { throw SafeTensorsError(file: file, kind: .missingTensor(name)) }
        return e
    }

    /// A float tensor (F32, F64, F16, BF16) decoded to a Float32 `Tensor`.
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        guard let v = e.floats() else {
            throw SafeTensorsError(file: file, kind: .wrongDType(tensor: name, dtype: e.dtype.rawValue, expected: "a float dtype (F32, F64, F16, BF16)"))
        }
        return Tensor(shape: e.shape, data: v)
    }

    /// An integer tensor (I64, I32, U8, BOOL): its shape and values as Int64.
    public func int64s(_ name: String) throws -> (shape: [Int], values: [Int64]) {
        let e = try entry(name)
        guard let v = e.int64s() else {
            throw SafeTensorsError(file: file, kind: .wrongDType(tensor: name, dtype: e.dtype.rawValue, expected: "an integer dtype (I64, I32, U8, BOOL)"))
        }
        return (e.shape, v)
    }

    // MARK: Writing

    /// The file's bytes: header (keys sorted, `__metadata__` first, padded with spaces to a
    /// multiple of 8), then the data ordered by dtype (widest first) and name.
    public func serialized() -> [UInt8] {
        let layout = entries.sorted { ($0.dtype.layoutRank, $0.name) < ($1.dtype.layoutRank, $1.name) }
        var offsets: [String: (Int, Int)] = [:]
        var cursor = 0
        for e in layout {
            offsets[e.name] = (cursor, cursor + e.bytes.count)
            cursor += e.bytes.count
        }
        var header = "{"
        var first = true
        if !metadata.isEmpty {
            var meta: [String: RawJSON] = [:]
            for (k, v) in metadata { meta[k] = .string(v) }
            header += "\"__metadata__\":" + RawJSON.object(meta).serialized
            first = false
        }
        for e in entries {  // sorted by name
            guard let (b, end) = offsets[e.name] else { continue }
            if !first { header += "," }
            first = false
            RawJSON.writeString(e.name, to: &header)
            header += ":{\"data_offsets\":[\(b),\(end)],\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))]}"
        }
        header += "}"
        var h = Array(header.utf8)
        h.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - h.count % 8) % 8))
        var out: [UInt8] = []
        out.reserveCapacity(8 + h.count + cursor)
        appendLE(UInt64(h.count), to: &out)
        out.append(contentsOf: h)
        for e in layout { out.append(contentsOf: e.bytes) }
        return out
    }

    /// Writes the file atomically (temporary file in the same folder, then rename).
    public func write(to url: URL) throws {
        do {
            try AtomicFile.write(serialized(), to: url)
        } catch let e as FileWriteError {
            throw SafeTensorsError(file: url.path, kind: .unwritable(e.message))
        }
    }

    /// Writes `entries` with `metadata` to `url` atomically.
    public static func write(_ entries: [SafeTensorsEntry], metadata: [String: String] = [:], to url: URL) throws {
        try SafeTensors(entries: entries, metadata: metadata, file: url.path).write(to: url)
    }

    /// Writes Float32 tensors (F32) and integer tensors (I64) to `url` atomically.
    public static func write(tensors: [String: Tensor], int64s: [String: (shape: [Int], values: [Int64])] = [:],
                             metadata: [String: String] = [:], to url: URL) throws {
        var entries = tensors.map { SafeTensorsEntry(name: $0.key, tensor: $0.value) }
        entries += int64s.map { SafeTensorsEntry(name: $0.key, shape: $0.value.shape, int64s: $0.value.values) }
        try write(entries, metadata: metadata, to: url)
    }
}
