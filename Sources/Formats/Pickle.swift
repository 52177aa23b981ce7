// A restricted unpickler: just enough of Python's pickle to read a PyTorch state dict, and
// nothing that could run code.
//
// `torch.save(state_dict)` writes (protocol 2) an `OrderedDict` of tensors. Each tensor is
// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])`
// where `storage` is a persistent id `('storage', torch.FloatStorage, key, location, numel)`
// naming the zip entry `data/<key>`. The state dict's `_metadata` (module versions) is set with
// BUILD. This machine knows only those objects:
//
// * opcodes: PROTO FRAME STOP MARK POP EMPTY_DICT EMPTY_TUPLE EMPTY_LIST TUPLE TUPLE1 TUPLE2
//   TUPLE3 APPEND APPENDS SETITEM SETITEMS BINUNICODE SHORT_BINUNICODE BINUNICODE8 BININT
//   BININT1 BININT2 LONG1 NEWTRUE NEWFALSE NONE BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET
//   BINPERSID REDUCE BUILD GLOBAL STACK_GLOBAL (protocol 4 spellings of the same objects are
//   accepted, as newer writers may use them);
// * globals: `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the storage types
//   `torch.{Float,Half,BFloat16,Long}Storage`;
// * REDUCE only on those callables, BUILD only on an OrderedDict with a dict state.
//
// Anything else is a `PickleError` naming the opcode (or the global) and its byte offset; no
// global is ever looked up or called. Values are plain data (`PickleValue`); the tensors are left
// as references (`PickleTensorRef`) for the checkpoint reader to resolve against the storages.

/// The only Python globals the unpickler accepts.
public enum PickleGlobal: String, Sendable, Equatable, CaseIterable {
    case orderedDict = "collections.OrderedDict"
    case rebuildTensorV2 = "torch._utils._rebuild_tensor_v2"
    case floatStorage = "torch.FloatStorage"
    case halfStorage = "torch.HalfStorage"
    case bfloat16Storage = "torch.BFloat16Storage"
    case longStorage = "torch.LongStorage"

    /// The storage element type of a storage class; nil for the callables.
    public var storageDType: TorchDType? {
        switch self {
        case .floatStorage: return .float32
        case .halfStorage: return .float16
        case .bfloat16Storage: return .bfloat16
        case .longStorage: return .int64
        case .orderedDict, .rebuildTensorV2: return nil
        }
    }
}

/// Element types of the storages this reader accepts.
public enum TorchDType: String, Sendable, Equatable, CaseIterable {
    case float32, float16, bfloat16, int64

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float32: return 4
        case .float16, .bfloat16: return 2
        case .int64: return 8
        }
    }

    /// Whether the values are floating point (decoded to Float32) rather than integers.
    public var isFloatingPoint: Bool { self != .int64 }
}

/// A storage as named by a persistent id: `('storage', <type>, key, location, numel)`.
public struct PickleStorageRef: Sendable, Equatable {
    public let dtype: TorchDType
    /// The zip entry `data/<key>` holding the bytes.
    public let key: String
    /// Device the storage was saved from (`cpu`, `cuda:0`, …); the bytes are the same.
    public let location: String
    /// Number of elements in the storage.
    public let count: Int
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)`: a strided view of a storage.
public struct PickleTensorRef: Sendable, Equatable {
    public let storage: PickleStorageRef
    /// Offset of element [0, …, 0] in the storage, in elements.
    public let storageOffset: Int
    public let shape: [Int]
    /// Element strides (may be non-contiguous).
    public let stride: [Int]
    public let requiresGrad: Bool
}

/// A reference-type dict so that SETITEM on a memoised dict is seen through every reference,
/// as in Python. Keys keep insertion order.
public final class PickleDict: @unchecked Sendable {
    public internal(set) var items: [(key: PickleValue, value: PickleValue)] = []
    /// True for `collections.OrderedDict()`, false for a plain `{}`.
    public let ordered: Bool
    /// The state given to BUILD (an OrderedDict's `__dict__`, e.g. torch's `_metadata`).
    public internal(set) var attributes: [(key: PickleValue, value: PickleValue)] = []

    init(ordered: Bool) { self.ordered = ordered }

    func set(_ key: PickleValue, _ value: PickleValue) {
        if let i = items.firstIndex(where: { $0.key == key }) {
            items[i].value = value
        } else {
            items.append((key, value))
        }
    }
}

/// A reference-type list (same reason as `PickleDict`).
public final class PickleList: @unchecked Sendable {
    public internal(set) var items: [PickleValue] = []
}

/// A value on the unpickler's stack.
public indirect enum PickleValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    case string(String)
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    case global(PickleGlobal)
    case storage(PickleStorageRef)
    case tensor(PickleTensorRef)

    public static func == (a: PickleValue, b: PickleValue) -> Bool {
        switch (a, b) {
        case (.none, .none): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.tuple(x), .tuple(y)): return x == y
        case let (.list(x), .list(y)): return x === y
        case let (.dict(x), .dict(y)): return x === y
        case let (.global(x), .global(y)): return x == y
        case let (.storage(x), .storage(y)): return x == y
        case let (.tensor(x), .tensor(y)): return x == y
        default: return false
        }
    }

    /// A short name of the kind of value, for error messages.
    public var kindName: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int: return "an int"
        case .string: return "a str"
        case .tuple: return "a tuple"
        case .list: return "a list"
        case .dict(let d): return d.ordered ? "an OrderedDict" : "a dict"
        case .global(let g): return g.rawValue
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }
}

/// Why a pickle was refused: what, and at which byte of the pickle stream.
public enum PickleError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An opcode outside the allowed set (`name` is Python's name for it, when known).
    case disallowedOpcode(opcode: UInt8, name: String, offset: Int)
    /// A GLOBAL / STACK_GLOBAL naming anything but the allowed globals.
    case disallowedGlobal(module: String, name: String, offset: Int)
    /// The stream is inconsistent (stack underflow, bad memo index, wrong argument types, …).
    case malformed(String, offset: Int)
    /// The stream ended before STOP.
    case truncated(offset: Int)

    public var description: String {
        switch self {
        case .disallowedOpcode(let op, let name, let off):
            let hex = "0x" + String(op, radix: 16, uppercase: true)
            return "pickle opcode \(name) (\(hex)) at byte \(off) is not allowed in a state dict"
        case .disallowedGlobal(let m, let n, let off):
            return "pickle global '\(m).\(n)' at byte \(off) is not allowed (allowed: "
                + PickleGlobal.allCases.map(\.rawValue).joined(separator: ", ") + ")"
        case .malformed(let m, let off): return "malformed pickle at byte \(off): \(m)"
        case .truncated(let off): return "pickle stream ends at byte \(off) before STOP"
        }
    }
}

/// The restricted unpickler. `Unpickler.load(bytes)` returns the pickled value.
public struct Unpickler {
    /// Python's names of every opcode (protocols 0–5), for error messages.
    static let opcodeNames: [UInt8: String] = [
        0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT",
        0x49: "INT", 0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE",
        0x50: "PERSID", 0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING",
        0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD",
        0x63: "GLOBAL", 0x64: "DICT", 0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET",
        0x69: "INST", 0x6A: "LONG_BINGET", 0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT",
        0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE",
        0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2",
        0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE",
        0x8A: "LONG1", 0x8B: "LONG4", 0x43: "SHORT_BINBYTES", 0x42: "BINBYTES", 0x8C: "SHORT_BINUNICODE",
        0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET",
        0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8",
        0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
    ]

    /// Longest string or frame accepted (guards against absurd lengths in corrupt files).
    static let maxLength = 1 << 30

    let bytes: [UInt8]
    var pos = 0
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]

    /// Unpickles `bytes` (one pickle, up to its STOP).
    public static func load(_ bytes: [UInt8]) throws(PickleError) -> PickleValue {
        var u = Unpickler(bytes: bytes)
        return try u.run()
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    // MARK: reading the stream

    mutating func byte() throws(PickleError) -> UInt8 {
        guard pos < bytes.count else { throw .truncated(offset: pos) }
        let b = bytes[pos]
        pos += 1
        return b
    }

    mutating func read(_ n: Int) throws(PickleError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= Self.maxLength, pos + n <= bytes.count else { throw .truncated(offset: pos) }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }

    /// Little-endian unsigned integer of `n` bytes.
    mutating func uint(_ n: Int) throws(PickleError) -> UInt64 {
        let s = try read(n)
        var v: UInt64 = 0
        for (i, b) in s.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }

    /// Reads up to the next newline (GLOBAL's text arguments).
    mutating func line() throws(PickleError) -> String {
        guard let end = bytes[pos...].firstIndex(of: 0x0A) else { throw .truncated(offset: bytes.count) }
        let text = String(decoding: bytes[pos..<end], as: UTF8.self)
        pos = end + 1
        return text
    }

    mutating func utf8(_ n: Int, at start: Int) throws(PickleError) -> String {
        let s = try read(n)
        guard let text = String(validating: s, as: UTF8.self) else {
            throw .malformed("string is not valid UTF-8", offset: start)
        }
        return text
    }

    // MARK: the stack

    mutating func pop(_ at: Int) throws(PickleError) -> PickleValue {
        if let m = marks.last, stack.count <= m { throw .malformed("stack underflow (at a MARK)", offset: at) }
        guard let v = stack.popLast() else { throw .malformed("stack underflow", offset: at) }
        return v
    }

    /// Pops everything above the last MARK, and the MARK.
    mutating func popMark(_ at: Int) throws(PickleError) -> [PickleValue] {
        guard let m = marks.popLast() else { throw .malformed("no MARK on the stack", offset: at) }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    mutating func top(_ at: Int) throws(PickleError) -> PickleValue {
        if let m = marks.last, stack.count <= m { throw .malformed("stack underflow (at a MARK)", offset: at) }
        guard let v = stack.last else { throw .malformed("stack underflow", offset: at) }
        return v
    }

    mutating func put(_ index: Int, _ at: Int) throws(PickleError) {
        memo[index] = try top(at)
    }

    func get(_ index: Int, _ at: Int) throws(PickleError) -> PickleValue {
        guard let v = memo[index] else { throw .malformed("memo index \(index) was never stored", offset: at) }
        return v
    }

    // MARK: the machine

    mutating func run() throws(PickleError) -> PickleValue {
        while true {
            let at = pos
            let op = try byte()
            switch op {
            case 0x80:  // PROTO
                let proto = try byte()
                guard proto <= 5 else { throw .malformed("unsupported protocol \(proto)", offset: at) }
            case 0x95:  // FRAME: a length hint only
                _ = try uint(8)
            case 0x2E:  // STOP
                guard marks.isEmpty, stack.count == 1, let v = stack.last else {
                    throw .malformed("STOP with \(stack.count) values and \(marks.count) marks on the stack", offset: at)
                }
                return v
            case 0x28:  // MARK
                marks.append(stack.count)
            case 0x30:  // POP
                _ = try pop(at)
            case 0x7D:  // EMPTY_DICT
                stack.append(.dict(PickleDict(ordered: false)))
            case 0x5D:  // EMPTY_LIST
                stack.append(.list(PickleList()))
            case 0x29:  // EMPTY_TUPLE
                stack.append(.tuple([]))
            case 0x74:  // TUPLE
                stack.append(.tuple(try popMark(at)))
            case 0x85, 0x86, 0x87:  // TUPLE1/2/3
                let n = Int(op - 0x84)
                var items: [PickleValue] = []
                for _ in 0..<n { items.insert(try pop(at), at: 0) }
                stack.append(.tuple(items))
            case 0x61:  // APPEND
                let v = try pop(at)
                guard case .list(let l) = try top(at) else { throw .malformed("APPEND to a non-list", offset: at) }
                l.items.append(v)
            case 0x65:  // APPENDS
                let items = try popMark(at)
                guard case .list(let l) = try top(at) else { throw .malformed("APPENDS to a non-list", offset: at) }
                l.items.append(contentsOf: items)
            case 0x73:  // SETITEM
                let v = try pop(at), k = try pop(at)
                guard case .dict(let d) = try top(at) else { throw .malformed("SETITEM on a non-dict", offset: at) }
                d.set(k, v)
            case 0x75:  // SETITEMS
                let items = try popMark(at)
                guard items.count % 2 == 0 else { throw .malformed("SETITEMS with an odd item count", offset: at) }
                guard case .dict(let d) = try top(at) else { throw .malformed("SETITEMS on a non-dict", offset: at) }
                for i in stride(from: 0, to: items.count, by: 2) { d.set(items[i], items[i + 1]) }
            case 0x58:  // BINUNICODE
                let n = Int(try uint(4))
                stack.append(.string(try utf8(n, at: at)))
            case 0x8C:  // SHORT_BINUNICODE
                let n = Int(try byte())
                stack.append(.string(try utf8(n, at: at)))
            case 0x8D:  // BINUNICODE8
                let n = try uint(8)
                guard n <= UInt64(Self.maxLength) else { throw .malformed("string of \(n) bytes", offset: at) }
                stack.append(.string(try utf8(Int(n), at: at)))
            case 0x4A:  // BININT (signed 32-bit)
                stack.append(.int(Int(Int32(bitPattern: UInt32(try uint(4))))))
            case 0x4B:  // BININT1
                stack.append(.int(Int(try byte())))
            case 0x4D:  // BININT2
                stack.append(.int(Int(try uint(2))))
            case 0x8A:  // LONG1: n bytes, little-endian two's complement
                let n = Int(try byte())
                guard n <= 8 else { throw .malformed("LONG1 of \(n) bytes does not fit 64 bits", offset: at) }
                if n == 0 {
                    stack.append(.int(0))
                } else {
                    var v = try uint(n)
                    if n < 8, v & (1 << (8 * UInt64(n) - 1)) != 0 { v |= ~0 << (8 * UInt64(n)) }
                    stack.append(.int(Int(Int64(bitPattern: v))))
                }
            case 0x88: stack.append(.bool(true))   // NEWTRUE
            case 0x89: stack.append(.bool(false))  // NEWFALSE
            case 0x4E: stack.append(.none)         // NONE
            case 0x71:  // BINPUT
                try put(Int(try byte()), at)
            case 0x72:  // LONG_BINPUT
                try put(Int(try uint(4)), at)
            case 0x94:  // MEMOIZE
                try put(memo.count, at)
            case 0x68:  // BINGET
                stack.append(try get(Int(try byte()), at))
            case 0x6A:  // LONG_BINGET
                stack.append(try get(Int(try uint(4)), at))
            case 0x63:  // GLOBAL "module\nname\n"
                let module = try line(), name = try line()
                stack.append(.global(try Self.allowedGlobal(module, name, at)))
            case 0x93:  // STACK_GLOBAL
                let n = try pop(at), m = try pop(at)
                guard case .string(let module) = m, case .string(let name) = n else {
                    throw .malformed("STACK_GLOBAL needs two strings", offset: at)
                }
                stack.append(.global(try Self.allowedGlobal(module, name, at)))
            case 0x51:  // BINPERSID
                stack.append(try Self.persistentLoad(try pop(at), at))
            case 0x52:  // REDUCE
                let args = try pop(at), callable = try pop(at)
                stack.append(try Self.reduce(callable, args, at))
            case 0x62:  // BUILD
                let state = try pop(at), object = try top(at)
                guard case .dict(let target) = object, target.ordered else {
                    throw .malformed("BUILD is allowed only on an OrderedDict, not on \(object.kindName)", offset: at)
                }
                guard case .dict(let attrs) = state else {
                    throw .malformed("BUILD state must be a dict, not \(state.kindName)", offset: at)
                }
                target.attributes.append(contentsOf: attrs.items)
            default:
                throw .disallowedOpcode(opcode: op, name: Self.opcodeNames[op] ?? "unknown", offset: at)
            }
        }
    }

    static func allowedGlobal(_ module: String, _ name: String, _ at: Int) throws(PickleError) -> PickleGlobal {
        guard let g = PickleGlobal(rawValue: module + "." + name) else {
            throw .disallowedGlobal(module: module, name: name, offset: at)
        }
        return g
    }

    /// torch's persistent id: `('storage', <storage type>, key, location, numel)`.
    static func persistentLoad(_ pid: PickleValue, _ at: Int) throws(PickleError) -> PickleValue {
        guard case .tuple(let t) = pid, t.count == 5, t[0] == .string("storage") else {
            throw .malformed("persistent id is not ('storage', type, key, location, numel)", offset: at)
        }
        guard case .global(let g) = t[1], let dtype = g.storageDType else {
            throw .malformed("persistent id names \(t[1].kindName), not a storage type", offset: at)
        }
        guard case .string(let key) = t[2], case .string(let location) = t[3], case .int(let n) = t[4], n >= 0 else {
            throw .malformed("persistent id fields are not (str key, str location, int numel)", offset: at)
        }
        return .storage(PickleStorageRef(dtype: dtype, key: key, location: location, count: n))
    }

    static func reduce(_ callable: PickleValue, _ args: PickleValue, _ at: Int) throws(PickleError) -> PickleValue {
        guard case .global(let g) = callable else {
            throw .malformed("REDUCE on \(callable.kindName), which is not callable", offset: at)
        }
        guard case .tuple(let a) = args else { throw .malformed("REDUCE arguments are not a tuple", offset: at) }
        switch g {
        case .orderedDict:
            guard a.isEmpty else { throw .malformed("OrderedDict() with arguments", offset: at) }
            return .dict(PickleDict(ordered: true))
        case .rebuildTensorV2:
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard a.count == 6 || a.count == 7 else {
                throw .malformed("_rebuild_tensor_v2 with \(a.count) arguments (expected 6 or 7)", offset: at)
            }
            guard case .storage(let s) = a[0] else {
                throw .malformed("_rebuild_tensor_v2: argument 0 is \(a[0].kindName), not a storage", offset: at)
            }
            guard case .int(let offset) = a[1], offset >= 0 else {
                throw .malformed("_rebuild_tensor_v2: bad storage offset", offset: at)
            }
            let shape = try intTuple(a[2], "size", at), stride = try intTuple(a[3], "stride", at)
            guard shape.count == stride.count, shape.allSatisfy({ $0 >= 0 }), stride.allSatisfy({ $0 >= 0 }) else {
                throw .malformed("_rebuild_tensor_v2: size \(shape) and stride \(stride) do not match", offset: at)
            }
            guard case .bool(let rg) = a[4] else {
                throw .malformed("_rebuild_tensor_v2: requires_grad is \(a[4].kindName)", offset: at)
            }
            // Backward hooks must be empty (an empty OrderedDict); metadata, if any, is ignored.
            if case .dict(let hooks) = a[5], hooks.items.isEmpty {} else if a[5] != .none {
                throw .malformed("_rebuild_tensor_v2: tensor has backward hooks", offset: at)
            }
            return .tensor(PickleTensorRef(storage: s, storageOffset: offset, shape: shape, stride: stride,
                                           requiresGrad: rg))
        case .floatStorage, .halfStorage, .bfloat16Storage, .longStorage:
            throw .malformed("\(g.rawValue) may appear only in a persistent id, not be called", offset: at)
        }
    }

    static func intTuple(_ v: PickleValue, _ what: String, _ at: Int) throws(PickleError) -> [Int] {
        guard case .tuple(let items) = v else { throw .malformed("\(what) is \(v.kindName), not a tuple", offset: at) }
        var out: [Int] = []
        for item in items {
            guard case .int(let i) = item else { throw .malformed("\(what) holds \(item.kindName)", offset: at) }
            out.append(i)
        }
        return out
    }
}
