// PyTorch `.pth` checkpoints as `torch.save(state_dict)` writes them (the zip format, torch ≥ 1.6).
//
// Layout: a zip archive (entries stored uncompressed) with one folder `<name>/` holding
//   data.pkl        the pickled state dict (protocol 2), read by the restricted `Unpickler`
//   data/<key>      the raw bytes of storage <key> (numel × element size)
//   byteorder       "little" or "big" (absent in old files: little)
//   version, .format_version, .storage_alignment, .data/serialization_id   (not needed)
// Each tensor is a strided view (storage offset, size, stride) of a storage; views are
// materialised as contiguous row-major bytes, non-contiguous ones element by element.
//
// Reading never executes anything from the file and never traps: a corrupt archive, a pickle
// outside the allowed set, a missing storage or a storage shorter than its view are
// `PyTorchCheckpointError`s naming the file and the cause.

import Foundation
import Tensors
import ZIPFoundation

/// A `.pth` file could not be read: which file, and what is wrong.
public struct PyTorchCheckpointError: Error, Equatable, Sendable, CustomStringConvertible {
    public let file: String
    public let kind: Kind

    public enum Kind: Equatable, Sendable {
        /// The file does not exist or cannot be opened.
        case unreadable(String)
        /// Not a zip archive, truncated, or an entry fails its size or CRC check.
        case corruptArchive(String)
        /// A zip entry the checkpoint needs is absent (`data.pkl`, `data/<key>`).
        case missingEntry(String)
        /// The pickle uses something outside the allowed set, or is malformed.
        case pickle(PickleError)
        /// The pickle is valid but not a flat dict of tensors keyed by strings.
        case notAStateDict(String)
        /// A tensor's view reaches past the end of its storage.
        case storageTooShort(tensor: String, storage: String, needed: Int, available: Int)
        /// One storage key used with two element types.
        case inconsistentStorage(tensor: String, storage: String, problem: String)
        /// The `byteorder` entry is neither "little" nor "big".
        case unsupportedByteOrder(String)
        /// No tensor of that name (accessors).
        case missingTensor(String)
        /// The tensor's dtype does not decode to what was asked (accessors).
        case wrongDType(tensor: String, dtype: String, expected: String)
    }

    public init(file: String, kind: Kind) {
        self.file = file
        self.kind = kind
    }

    public var description: String {
        let what: String
        switch kind {
        case .unreadable(let m): what = "cannot read: \(m)"
        case .corruptArchive(let m): what = "not a valid PyTorch zip checkpoint (truncated or corrupt): \(m)"
        case .missingEntry(let e): what = "the archive has no entry '\(e)'"
        case .pickle(let e): what = e.description
        case .notAStateDict(let m): what = "not a state dict: \(m)"
        case .storageTooShort(let t, let s, let need, let have):
            what = "tensor '\(t)': its view needs \(need) bytes of storage '\(s)', which holds \(have)"
        case .inconsistentStorage(let t, let s, let p): what = "tensor '\(t)': storage '\(s)': \(p)"
        case .unsupportedByteOrder(let b): what = "unsupported byteorder '\(b)' (expected little or big)"
        case .missingTensor(let t): what = "no tensor '\(t)'"
        case .wrongDType(let t, let d, let e): what = "tensor '\(t)' has dtype \(d), expected \(e)"
        }
        return "\(file): \(what)"
    }
}

/// A state dict read from a `.pth` file: tensors in the file's (insertion) order.
public struct PyTorchCheckpoint: Sendable, TensorEntries {
    /// One tensor: name, dtype (F32, F16, BF16 or I64), shape and contiguous little-endian
    /// row-major bytes, exactly as a safetensors file stores it.
    public typealias Entry = SafeTensorsEntry

    /// The path of the file read.
    public let file: String
    /// Tensors in the state dict's order.
    public let entries: [Entry]

    /// Tensor names in the state dict's order.
    public var names: [String] { entries.map(\.name) }

    public subscript(name: String) -> Entry? { entries.first { $0.name == name } }

    public init(file: String, entries: [Entry]) {
        self.file = file
        self.entries = entries
    }

    /// The tensor `name` as a Float32 `Tensor` (float32, float16 and bfloat16 storages).
    public func tensor(_ name: String) throws(PyTorchCheckpointError) -> Tensor {
        guard let e = self[name] else { throw PyTorchCheckpointError(file: file, kind: .missingTensor(name)) }
        guard let values = e.floats() else {
            throw PyTorchCheckpointError(file: file, kind: .wrongDType(tensor: name, dtype: e.dtype.rawValue,
                                                                       expected: "a floating-point dtype"))
        }
        return Tensor(shape: e.shape, data: values)
    }

    // MARK: reading

    /// Reads a `.pth` file written by `torch.save(state_dict)`.
    public static func read(_ url: URL) throws(PyTorchCheckpointError) -> PyTorchCheckpoint {
        let file = url.path
        func fail(_ k: PyTorchCheckpointError.Kind) -> PyTorchCheckpointError {
            PyTorchCheckpointError(file: file, kind: k)
        }
        guard FileManager.default.isReadableFile(atPath: file) else {
            throw fail(.unreadable("no such readable file"))
        }
        let archive: Archive
        do {
            archive = try Archive(url: url, accessMode: .read)
        } catch {
            // torch.save before 1.6 (or with _use_new_zipfile_serialization=False) writes a bare
            // pickle stream: say so rather than only "not a zip".
            let head = FileHandle(forReadingAtPath: file).map { h -> [UInt8] in
                defer { try? h.close() }
                return [UInt8](h.readData(ofLength: 2))
            } ?? []
            if head.first == 0x80 {
                throw fail(.corruptArchive("this is the legacy (pre-1.6, non-zip) torch.save format, which is not supported; re-save it with a current torch.save"))
            }
            throw fail(.corruptArchive("cannot open the zip archive (\(error))"))
        }
        var byPath: [String: ZIPFoundation.Entry] = [:]
        var order: [String] = []
        for e in archive {
            if byPath[e.path] == nil { order.append(e.path) }
            byPath[e.path] = e
        }
        guard let pkl = order.first(where: { $0 == "data.pkl" || $0.hasSuffix("/data.pkl") }) else {
            throw fail(.missingEntry("<archive>/data.pkl"))
        }
        let prefix = String(pkl.dropLast("data.pkl".count))

        func readEntry(_ path: String) throws(PyTorchCheckpointError) -> [UInt8] {
            guard let e = byPath[path] else { throw fail(.missingEntry(path)) }
            var out: [UInt8] = []
            out.reserveCapacity(Int(clamping: e.uncompressedSize))
            let crc: CRC32
            do {
                crc = try archive.extract(e, bufferSize: 1 << 20, skipCRC32: false) { data in
                    out.append(contentsOf: data)
                }
            } catch {
                throw fail(.corruptArchive("entry '\(path)' cannot be read (\(error))"))
            }
            guard UInt64(out.count) == e.uncompressedSize else {
                throw fail(.corruptArchive("entry '\(path)' holds \(out.count) of its \(e.uncompressedSize) bytes"))
            }
            guard crc == e.checksum else {
                throw fail(.corruptArchive("entry '\(path)' fails its CRC-32 check"))
            }
            return out
        }

        var bigEndian = false
        if byPath[prefix + "byteorder"] != nil {
            let text = String(decoding: try readEntry(prefix + "byteorder"), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            switch text {
            case "little": bigEndian = false
            case "big": bigEndian = true
            default: throw fail(.unsupportedByteOrder(text))
            }
        }

        let root: PickleValue
        do {
            root = try Unpickler.load(try readEntry(pkl))
        } catch let e as PickleError {
            throw fail(.pickle(e))
        } catch let e as PyTorchCheckpointError {
            throw e
        } catch {
            throw fail(.corruptArchive("\(error)"))
        }

        guard case .dict(let dict) = root else {
            throw fail(.notAStateDict("the pickle holds \(root.kindName), not a dict of tensors"))
        }
        var refs: [(String, PickleTensorRef)] = []
        for (k, v) in dict.items {
            guard case .string(let name) = k else { throw fail(.notAStateDict("a key is \(k.kindName), not a str")) }
            guard case .tensor(let t) = v else { throw fail(.notAStateDict("'\(name)' holds \(v.kindName), not a tensor")) }
            refs.append((name, t))
        }

        // Read each storage once; drop it after its last tensor.
        var remainingUses: [String: Int] = [:]
        for (_, t) in refs { remainingUses[t.storage.key, default: 0] += 1 }
        var storages: [String: (dtype: TorchDType, bytes: [UInt8])] = [:]
        var entries: [Entry] = []
        entries.reserveCapacity(refs.count)
        for (name, t) in refs {
            let key = t.storage.key
            let path = prefix + "data/" + key
            let storage: (dtype: TorchDType, bytes: [UInt8])
            if let s = storages[key] {
                guard s.dtype == t.storage.dtype else {
                    throw fail(.inconsistentStorage(tensor: name, storage: path,
                                                    problem: "used as \(s.dtype) and as \(t.storage.dtype)"))
                }
                storage = s
            } else {
                var bytes = try readEntry(path)
                if bigEndian { swapBytes(&bytes, width: t.storage.dtype.byteSize) }
                storage = (t.storage.dtype, bytes)
            }
            remainingUses[key, default: 1] -= 1
            if remainingUses[key] == 0 { storages[key] = nil } else { storages[key] = storage }
            entries.append(try materialize(name: name, ref: t, storage: storage.bytes, path: path, file: file))
        }
        return PyTorchCheckpoint(file: file, entries: entries)
    }

    /// Copies the strided view `ref` of `storage` into contiguous row-major bytes.
    static func materialize(name: String, ref: PickleTensorRef, storage: [UInt8], path: String,
                            file: String) throws(PyTorchCheckpointError) -> Entry {
        let es = ref.storage.dtype.byteSize
        let n = ref.shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        let dtype = ref.storage.dtype.safeTensorsDType
        if n == 0 { return Entry(name: name, dtype: dtype, shape: ref.shape, bytes: []) }
        // Last element index of the view; the view needs storage elements 0...last.
        var last = ref.storageOffset
        for (s, st) in zip(ref.shape, ref.stride) {
            let (m, o1) = (s - 1).multipliedReportingOverflow(by: st)
            let (sum, o2) = last.addingReportingOverflow(m)
            last = (o1 || o2) ? Int.max : sum
        }
        let available = min(storage.count, ref.storage.count.multipliedReportingOverflow(by: es).overflow
                            ? Int.max : ref.storage.count * es)
        let (needed, overflow) = (last == Int.max ? (Int.max, true) : (last + 1).multipliedReportingOverflow(by: es))
        guard !overflow, needed <= available else {
            throw PyTorchCheckpointError(file: file, kind: .storageTooShort(
                tensor: name, storage: path, needed: overflow ? Int.max : needed, available: available))
        }
        let contiguous = Tensor.strides(of: ref.shape)
        let isContiguous = zip(zip(ref.shape, ref.stride), contiguous).allSatisfy { $0.0.0 <= 1 || $0.0.1 == $0.1 }
        if isContiguous {
            let start = ref.storageOffset * es
            return Entry(name: name, dtype: dtype, shape: ref.shape, bytes: Array(storage[start..<(start + n * es)]))
        }
        var out = [UInt8](repeating: 0, count: n * es)
        let rank = ref.shape.count
        var index = [Int](repeating: 0, count: rank)
        var src = ref.storageOffset
        storage.withUnsafeBytes { s in
            out.withUnsafeMutableBytes { o in
                for i in 0..<n {
                    for b in 0..<es { o[i * es + b] = s[src * es + b] }
                    // Advance the multi-index (row-major), updating the source offset.
                    var d = rank - 1
                    while d >= 0 {
                        index[d] += 1
                        src += ref.stride[d]
                        if index[d] < ref.shape[d] { break }
                        src -= ref.stride[d] * ref.shape[d]
                        index[d] = 0
                        d -= 1
                    }
                }
            }
        }
        return Entry(name: name, dtype: dtype, shape: ref.shape, bytes: out)
    }

    static func swapBytes(_ bytes: inout [UInt8], width: Int) {
        guard width > 1 else { return }
        var i = 0
        while i + width <= bytes.count {
            bytes[i..<(i + width)].reverse()
            i += width
        }
    }
}

extension TorchDType {
    /// The safetensors name of this element type.
    public var safeTensorsDType: SafeTensorsDType {
        switch self {
        case .float32: return .F32
        case .float16: return .F16
        case .bfloat16: return .BF16
        case .int64: return .I64
        }
    }
}
