// A thin, safe binding of netCDF-C (NetCDF-4 / HDF5 files).
//
// Creating: `NetCDFFile.create(url)` writes to a temporary file in the destination's folder;
// `close()` renames it into place (an abandoned or failed file never appears under the final
// name). Define dimensions, variables (optionally deflate-compressed and chunked) and
// attributes, then write whole variables or hyperslabs (`start`/`count`). NetCDF-4 allows
// defining and writing in any order.
//
// Reading: `NetCDFFile.open(url)` (read-only): dimensions, variables, attributes, whole
// variables or hyperslabs. Reads are strict about types: a variable is read as the Swift type
// of its NetCDF type (a 16-bit encoded array stored as ushort is read as [UInt16]).
//
// Every nc_* status is checked; failures are `NetCDFError`s naming the file, the variable or
// attribute, the call and `nc_strerror`'s text. netCDF-C is not thread-safe, so every call
// into it holds one process-wide lock.
//
// Types: Float (float), Double (double), Int8 (byte), UInt8 (ubyte), UInt16 (ushort),
// Int32 (int), Int64 (int64), String (string, variable-length).

import CNetCDF
import Foundation

/// A NetCDF operation failed: which file, which variable (or attribute), what went wrong.
public struct NetCDFError: Error, Equatable, Sendable, CustomStringConvertible {
    public let file: String
    /// The variable (or `attribute 'x'` / `dimension 'd'`) concerned, if any.
    public let variable: String?
    public let kind: Kind

    public enum Kind: Equatable, Sendable {
        /// An nc_* call returned an error status.
        case library(call: String, status: Int32, message: String)
        /// No variable of that name.
        case missingVariable(String)
        /// No dimension of that name.
        case missingDimension(String)
        /// A variable or attribute has another type than requested.
        case typeMismatch(expected: String, actual: String)
        /// The number of values disagrees with the shape or hyperslab.
        case countMismatch(expected: Int, actual: Int)
        /// A `start`/`count` that does not fit the variable.
        case badHyperslab(String)
        /// The file was already closed.
        case closed
        /// Creating the temporary file or renaming it into place failed.
        case io(String)
    }

    public init(file: String, variable: String? = nil, kind: Kind) {
        self.file = file
        self.variable = variable
        self.kind = kind
    }

    public var description: String {
        let place = variable.map { "\(file): \($0): " } ?? "\(file): "
        switch kind {
        case .library(let call, let status, let message): return place + "\(call): \(message) (status \(status))"
        case .missingVariable(let v): return place + "no variable '\(v)'"
        case .missingDimension(let d): return place + "no dimension '\(d)'"
        case .typeMismatch(let e, let a): return place + "expected type \(e), found \(a)"
        case .countMismatch(let e, let a): return place + "expected \(e) values, got \(a)"
        case .badHyperslab(let m): return place + "bad start/count: \(m)"
        case .closed: return place + "file is closed"
        case .io(let m): return place + m
        }
    }
}

/// NetCDF external types this binding handles.
public enum NetCDFType: Int32, Sendable, CustomStringConvertible {
    case byte = 1, char = 2, short = 3, int = 4, float = 5, double = 6
    case ubyte = 7, ushort = 8, uint = 9, int64 = 10, uint64 = 11, string = 12

    /// CDL name, as `ncdump` prints it.
    public var description: String {
        switch self {
        case .byte: return "byte"
        case .char: return "char"
        case .short: return "short"
        case .int: return "int"
        case .float: return "float"
        case .double: return "double"
        case .ubyte: return "ubyte"
        case .ushort: return "ushort"
        case .uint: return "uint"
        case .int64: return "int64"
        case .uint64: return "uint64"
        case .string: return "string"
        }
    }

    static func name(_ raw: nc_type) -> String {
        NetCDFType(rawValue: raw)?.description ?? "type \(raw)"
    }
}

/// A Swift scalar stored as one NetCDF numeric type.
public protocol NetCDFScalar: Sendable {
    static var netCDFType: NetCDFType { get }
    static func ncPut(_ ncid: Int32, _ varid: Int32, _ start: UnsafePointer<Int>, _ count: UnsafePointer<Int>,
                      _ values: UnsafePointer<Self>) -> Int32
    static func ncGet(_ ncid: Int32, _ varid: Int32, _ start: UnsafePointer<Int>, _ count: UnsafePointer<Int>,
                      _ values: UnsafeMutablePointer<Self>) -> Int32
    static func ncPutAtt(_ ncid: Int32, _ varid: Int32, _ name: String, _ n: Int, _ values: UnsafePointer<Self>) -> Int32
    static func ncGetAtt(_ ncid: Int32, _ varid: Int32, _ name: String, _ values: UnsafeMutablePointer<Self>) -> Int32
    static var zero: Self { get }
}

extension Float: NetCDFScalar {
    public static var netCDFType: NetCDFType { .float }
    public static var zero: Float { 0 }
    public static func ncPut(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafePointer<Float>) -> Int32 { nc_put_vara_float(n, v, s, c, p) }
    public static func ncGet(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafeMutablePointer<Float>) -> Int32 { nc_get_vara_float(n, v, s, c, p) }
    public static func ncPutAtt(_ n: Int32, _ v: Int32, _ a: String, _ k: Int, _ p: UnsafePointer<Float>) -> Int32 { nc_put_att_float(n, v, a, NC_FLOAT, k, p) }
    public static func ncGetAtt(_ n: Int32, _ v: Int32, _ a: String, _ p: UnsafeMutablePointer<Float>) -> Int32 { nc_get_att_float(n, v, a, p) }
}

extension Double: NetCDFScalar {
    public static var netCDFType: NetCDFType { .double }
    public static var zero: Double { 0 }
    public static func ncPut(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafePointer<Double>) -> Int32 { nc_put_vara_double(n, v, s, c, p) }
    public static func ncGet(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafeMutablePointer<Double>) -> Int32 { nc_get_vara_double(n, v, s, c, p) }
    public static func ncPutAtt(_ n: Int32, _ v: Int32, _ a: String, _ k: Int, _ p: UnsafePointer<Double>) -> Int32 { nc_put_att_double(n, v, a, NC_DOUBLE, k, p) }
    public static func ncGetAtt(_ n: Int32, _ v: Int32, _ a: String, _ p: UnsafeMutablePointer<Double>) -> Int32 { nc_get_att_double(n, v, a, p) }
}

extension Int8: NetCDFScalar {
    public static var netCDFType: NetCDFType { .byte }
    public static var zero: Int8 { 0 }
    public static func ncPut(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafePointer<Int8>) -> Int32 { nc_put_vara_schar(n, v, s, c, p) }
    public static func ncGet(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafeMutablePointer<Int8>) -> Int32 { nc_get_vara_schar(n, v, s, c, p) }
    public static func ncPutAtt(_ n: Int32, _ v: Int32, _ a: String, _ k: Int, _ p: UnsafePointer<Int8>) -> Int32 { nc_put_att_schar(n, v, a, NC_BYTE, k, p) }
    public static func ncGetAtt(_ n: Int32, _ v: Int32, _ a: String, _ p: UnsafeMutablePointer<Int8>) -> Int32 { nc_get_att_schar(n, v, a, p) }
}

extension UInt8: NetCDFScalar {
    public static var netCDFType: NetCDFType { .ubyte }
    public static var zero: UInt8 { 0 }
    public static func ncPut(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafePointer<UInt8>) -> Int32 { nc_put_vara_uchar(n, v, s, c, p) }
    public static func ncGet(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafeMutablePointer<UInt8>) -> Int32 { nc_get_vara_uchar(n, v, s, c, p) }
    public static func ncPutAtt(_ n: Int32, _ v: Int32, _ a: String, _ k: Int, _ p: UnsafePointer<UInt8>) -> Int32 { nc_put_att_uchar(n, v, a, NC_UBYTE, k, p) }
    public static func ncGetAtt(_ n: Int32, _ v: Int32, _ a: String, _ p: UnsafeMutablePointer<UInt8>) -> Int32 { nc_get_att_uchar(n, v, a, p) }
}

extension UInt16: NetCDFScalar {
    public static var netCDFType: NetCDFType { .ushort }
    public static var zero: UInt16 { 0 }
    public static func ncPut(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafePointer<UInt16>) -> Int32 { nc_put_vara_ushort(n, v, s, c, p) }
    public static func ncGet(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafeMutablePointer<UInt16>) -> Int32 { nc_get_vara_ushort(n, v, s, c, p) }
    public static func ncPutAtt(_ n: Int32, _ v: Int32, _ a: String, _ k: Int, _ p: UnsafePointer<UInt16>) -> Int32 { nc_put_att_ushort(n, v, a, NC_USHORT, k, p) }
    public static func ncGetAtt(_ n: Int32, _ v: Int32, _ a: String, _ p: UnsafeMutablePointer<UInt16>) -> Int32 { nc_get_att_ushort(n, v, a, p) }
}

extension Int32: NetCDFScalar {
    public static var netCDFType: NetCDFType { .int }
    public static var zero: Int32 { 0 }
    public static func ncPut(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafePointer<Int32>) -> Int32 { nc_put_vara_int(n, v, s, c, p) }
    public static func ncGet(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafeMutablePointer<Int32>) -> Int32 { nc_get_vara_int(n, v, s, c, p) }
    public static func ncPutAtt(_ n: Int32, _ v: Int32, _ a: String, _ k: Int, _ p: UnsafePointer<Int32>) -> Int32 { nc_put_att_int(n, v, a, NC_INT, k, p) }
    public static func ncGetAtt(_ n: Int32, _ v: Int32, _ a: String, _ p: UnsafeMutablePointer<Int32>) -> Int32 { nc_get_att_int(n, v, a, p) }
}

extension Int64: NetCDFScalar {
    public static var netCDFType: NetCDFType { .int64 }
    public static var zero: Int64 { 0 }
    public static func ncPut(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafePointer<Int64>) -> Int32 {
        p.withMemoryRebound(to: CLongLong.self, capacity: 1) { nc_put_vara_longlong(n, v, s, c, $0) }
    }
    public static func ncGet(_ n: Int32, _ v: Int32, _ s: UnsafePointer<Int>, _ c: UnsafePointer<Int>, _ p: UnsafeMutablePointer<Int64>) -> Int32 {
        p.withMemoryRebound(to: CLongLong.self, capacity: 1) { nc_get_vara_longlong(n, v, s, c, $0) }
    }
    public static func ncPutAtt(_ n: Int32, _ v: Int32, _ a: String, _ k: Int, _ p: UnsafePointer<Int64>) -> Int32 {
        p.withMemoryRebound(to: CLongLong.self, capacity: 1) { nc_put_att_longlong(n, v, a, NC_INT64, k, $0) }
    }
    public static func ncGetAtt(_ n: Int32, _ v: Int32, _ a: String, _ p: UnsafeMutablePointer<Int64>) -> Int32 {
        p.withMemoryRebound(to: CLongLong.self, capacity: 1) { nc_get_att_longlong(n, v, a, $0) }
    }
}

/// An attribute value. Literals: `"text"` → `.text`, `1.5` → `.doubles([1.5])`, `3` → `.int32s([3])`.
public enum NetCDFAttribute: Equatable, Sendable, ExpressibleByStringLiteral, ExpressibleByFloatLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    /// A char attribute (what `ncdump` prints as `:name = "…"`).
    case text(String)
    /// A string attribute (NetCDF-4 variable-length strings).
    case strings([String])
    case doubles([Double])
    case floats([Float])
    case int8s([Int8])
    case uint8s([UInt8])
    case uint16s([UInt16])
    case int32s([Int32])
    case int64s([Int64])

    public init(stringLiteral value: String) { self = .text(value) }
    public init(floatLiteral value: Double) { self = .doubles([value]) }
    public init(integerLiteral value: Int32) { self = .int32s([value]) }
    /// Booleans are stored as byte 0/1 (the CF convention for flags).
    public init(booleanLiteral value: Bool) { self = .int8s([value ? 1 : 0]) }

    /// An integer: `int` when it fits 32 bits, else `int64`.
    public static func int(_ v: Int) -> NetCDFAttribute {
        if let i = Int32(exactly: v) { return .int32s([i]) }
        return .int64s([Int64(v)])
    }
    /// A flag as byte 0/1.
    public static func bool(_ v: Bool) -> NetCDFAttribute { .int8s([v ? 1 : 0]) }

    /// The text of a char attribute or of a one-element string attribute.
    public var text: String? {
        switch self {
        case .text(let s): return s
        case .strings(let a) where a.count == 1: return a[0]
        default: return nil
        }
    }

    /// Numeric values as Double (nil for text).
    public var doubles: [Double]? {
        switch self {
        case .text, .strings: return nil
        case .doubles(let v): return v
        case .floats(let v): return v.map(Double.init)
        case .int8s(let v): return v.map(Double.init)
        case .uint8s(let v): return v.map(Double.init)
        case .uint16s(let v): return v.map(Double.init)
        case .int32s(let v): return v.map(Double.init)
        case .int64s(let v): return v.map(Double.init)
        }
    }

    /// A single integral value (any integer type, or an integral float).
    public var int: Int? {
        switch self {
        case .int8s(let v) where v.count == 1: return Int(v[0])
        case .uint8s(let v) where v.count == 1: return Int(v[0])
        case .uint16s(let v) where v.count == 1: return Int(v[0])
        case .int32s(let v) where v.count == 1: return Int(v[0])
        case .int64s(let v) where v.count == 1: return Int(exactly: v[0])
        case .doubles(let v) where v.count == 1: return Int(exactly: v[0])
        case .floats(let v) where v.count == 1: return Int(exactly: v[0])
        default: return nil
        }
    }

    /// A single numeric value as Double.
    public var double: Double? {
        guard let d = doubles, d.count == 1 else { return nil }
        return d[0]
    }
}

/// A dimension: name, current length, whether it is unlimited (grows with writes).
public struct NetCDFDimension: Equatable, Sendable {
    public let name: String
    public let length: Int
    public let isUnlimited: Bool
    public init(name: String, length: Int, isUnlimited: Bool) {
        self.name = name
        self.length = length
        self.isUnlimited = isUnlimited
    }
}

/// A variable's name, type, dimension names and current shape.
public struct NetCDFVariable: Equatable, Sendable {
    public let name: String
    public let type: NetCDFType
    public let dimensions: [String]
    public let shape: [Int]
    public init(name: String, type: NetCDFType, dimensions: [String], shape: [Int]) {
        self.name = name
        self.type = type
        self.dimensions = dimensions
        self.shape = shape
    }
    /// Element count of the current shape.
    public var count: Int { shape.reduce(1, *) }
}

/// An open NetCDF-4 file (created for writing, or opened read-only).
public final class NetCDFFile {
    /// The final path of the file (errors name it, not the temporary file).
    public let url: URL
    /// True for a file made by `create` (until `close` renames it into place).
    public let isWritable: Bool
    private var ncid: Int32 = -1
    private var temporary: URL?
    private var isOpen = false

    /// netCDF-C keeps global state; every call holds this lock.
    private static let lock = NetCDFLock()

    private init(url: URL, writable: Bool) {
        self.url = url
        self.isWritable = writable
    }

    deinit {
        // A file that was never closed is abandoned: close the handle, delete the temporary.
        if isOpen {
            _ = NetCDFFile.lock.withLock { nc_close(ncid) }
            if let temporary { AtomicFile.discard(temporary) }
        }
    }

    // MARK: Status checking

    private func error(_ kind: NetCDFError.Kind, _ variable: String? = nil) -> NetCDFError {
        NetCDFError(file: url.path, variable: variable, kind: kind)
    }

    /// Runs one nc_* call under the lock and turns a failing status into a `NetCDFError`.
    private func nc(_ call: String, _ variable: String? = nil, _ body: () -> Int32) throws {
        let status = NetCDFFile.lock.withLock(body)
        guard status == NC_NOERR else {
            let message = String(cString: nc_strerror(status))
            throw error(.library(call: call, status: status, message: message), variable)
        }
    }

    private func ensureOpen() throws {
        guard isOpen else { throw error(.closed) }
    }

    // MARK: Opening and closing

    /// Starts a new NetCDF-4 file; it appears at `url` only when `close()` succeeds.
    public static func create(_ url: URL) throws -> NetCDFFile {
        let f = NetCDFFile(url: url, writable: true)
        let tmp: URL
        do {
            tmp = try AtomicFile.makeTemporary(for: url)
        } catch let e as FileWriteError {
            throw NetCDFError(file: url.path, kind: .io(e.message))
        }
        var id: Int32 = -1
        do {
            try f.nc("nc_create") { nc_create(tmp.path, NC_NETCDF4 | NC_CLOBBER, &id) }
        } catch {
            AtomicFile.discard(tmp)
            throw error
        }
        f.ncid = id
        f.temporary = tmp
        f.isOpen = true
        return f
    }

    /// Opens an existing file read-only.
    public static func open(_ url: URL) throws -> NetCDFFile {
        let f = NetCDFFile(url: url, writable: false)
        var id: Int32 = -1
        try f.nc("nc_open") { nc_open(url.path, NC_NOWRITE, &id) }
        f.ncid = id
        f.isOpen = true
        return f
    }

    /// Closes the file. A created file is flushed and renamed into place.
    public func close() throws {
        try ensureOpen()
        isOpen = false
        do {
            try nc("nc_close") { nc_close(ncid) }
        } catch {
            if let temporary { AtomicFile.discard(temporary) }
            throw error
        }
        if let temporary {
            self.temporary = nil
            do {
                try AtomicFile.commit(temporary: temporary, to: url)
            } catch let e as FileWriteError {
                throw self.error(.io(e.message))
            }
        }
    }

    /// Abandons a created file (closes it and deletes the temporary); closes a read-only one.
    public func discard() {
        guard isOpen else { return }
        isOpen = false
        _ = NetCDFFile.lock.withLock { nc_close(ncid) }
        if let temporary { AtomicFile.discard(temporary) }
        temporary = nil
    }

    // MARK: Defining

    /// Defines a dimension; `length: nil` makes it unlimited.
    @discardableResult
    public func defineDimension(_ name: String, length: Int?) throws -> NetCDFDimension {
        try ensureOpen()
        if let length, length < 0 { throw error(.badHyperslab("negative length \(length)"), "dimension '\(name)'") }
        var id: Int32 = -1
        try nc("nc_def_dim", "dimension '\(name)'") { nc_def_dim(ncid, name, length ?? 0, &id) }
        return NetCDFDimension(name: name, length: length ?? 0, isUnlimited: length == nil)
    }

    /// Defines a variable over named dimensions (outermost first; `[]` for a scalar).
    /// `compression`: deflate level 1…9 (with the shuffle filter unless `shuffle: false`);
    /// `chunks`: chunk sizes, one per dimension.
    @discardableResult
    public func defineVariable(_ name: String, type: NetCDFType, dimensions: [String],
                               compression: Int? = nil, shuffle: Bool = true,
                               chunks: [Int]? = nil) throws -> NetCDFVariable {
        try ensureOpen()
        var dimids: [Int32] = []
        for d in dimensions {
            var id: Int32 = -1
            let status = NetCDFFile.lock.withLock { nc_inq_dimid(ncid, d, &id) }
            guard status == NC_NOERR else { throw error(.missingDimension(d), name) }
            dimids.append(id)
        }
        var varid: Int32 = -1
        try nc("nc_def_var", name) {
            dimids.withUnsafeBufferPointer { nc_def_var(ncid, name, type.rawValue, Int32(dimids.count), $0.baseAddress, &varid) }
        }
        if let chunks {
            guard chunks.count == dimensions.count, chunks.allSatisfy({ $0 > 0 }) else {
                throw error(.badHyperslab("chunks \(chunks) for dimensions \(dimensions)"), name)
            }
            try nc("nc_def_var_chunking", name) {
                chunks.withUnsafeBufferPointer { nc_def_var_chunking(ncid, varid, NC_CHUNKED, $0.baseAddress) }
            }
        }
        if let compression {
            guard (0...9).contains(compression) else {
                throw error(.badHyperslab("deflate level \(compression) outside 0…9"), name)
            }
            try nc("nc_def_var_deflate", name) {
                nc_def_var_deflate(ncid, varid, shuffle ? 1 : 0, 1, Int32(compression))
            }
        }
        return try variable(name)
    }

    /// Sets an attribute on a variable, or a global attribute when `variable` is nil.
    public func setAttribute(_ name: String, _ value: NetCDFAttribute, variable: String? = nil) throws {
        try ensureOpen()
        let varid = try variableID(variable)
        let label = attributeLabel(name, variable)
        switch value {
        case .text(let s):
            let bytes = Array(s.utf8)
            try nc("nc_put_att_text", label) {
                bytes.withUnsafeBufferPointer { p in
                    p.withMemoryRebound(to: CChar.self) { nc_put_att_text(ncid, varid, name, bytes.count, $0.baseAddress) }
                }
            }
        case .strings(let a):
            try withCStrings(a) { ptrs in
                try nc("nc_put_att_string", label) { nc_put_att_string(ncid, varid, name, a.count, ptrs) }
            }
        case .doubles(let v): try putAtt(name, varid, label, v)
        case .floats(let v): try putAtt(name, varid, label, v)
        case .int8s(let v): try putAtt(name, varid, label, v)
        case .uint8s(let v): try putAtt(name, varid, label, v)
        case .uint16s(let v): try putAtt(name, varid, label, v)
        case .int32s(let v): try putAtt(name, varid, label, v)
        case .int64s(let v): try putAtt(name, varid, label, v)
        }
    }

    private func putAtt<T: NetCDFScalar>(_ name: String, _ varid: Int32, _ label: String, _ v: [T]) throws {
        try nc("nc_put_att_\(T.netCDFType)", label) {
            v.withUnsafeBufferPointer { p in
                withPointer(p) { T.ncPutAtt(ncid, varid, name, v.count, $0) }
            }
        }
    }

    private func attributeLabel(_ name: String, _ variable: String?) -> String {
        variable.map { "variable '\($0)', attribute '\(name)'" } ?? "global attribute '\(name)'"
    }

    // MARK: Writing and reading data

    /// Writes `values` (row-major) into the whole variable, or into the hyperslab `start`/`count`.
    /// Writing past the end of an unlimited dimension grows it.
    public func write<T: NetCDFScalar>(_ variable: String, _ values: [T], start: [Int]? = nil, count: [Int]? = nil) throws {
        try ensureOpen()
        let (varid, info) = try lookup(variable)
        guard info.type == T.netCDFType else {
            throw error(.typeMismatch(expected: info.type.description, actual: "\(T.self) (\(T.netCDFType))"), variable)
        }
        let (s, c) = try slab(info, start: start, count: count)
        guard c.reduce(1, *) == values.count else { throw error(.countMismatch(expected: c.reduce(1, *), actual: values.count), variable) }
        try nc("nc_put_vara_\(T.netCDFType)", variable) {
            values.withUnsafeBufferPointer { p in
                withPointer(p) { T.ncPut(ncid, varid, s, c, $0) }
            }
        }
    }

    /// Reads the whole variable, or the hyperslab `start`/`count`, row-major.
    /// The variable's type must be `T`'s NetCDF type.
    public func read<T: NetCDFScalar>(_ variable: String, as _: T.Type = T.self, start: [Int]? = nil,
                                      count: [Int]? = nil) throws -> [T] {
        try ensureOpen()
        let (varid, info) = try lookup(variable)
        guard info.type == T.netCDFType else {
            throw error(.typeMismatch(expected: "\(T.self) (\(T.netCDFType))", actual: info.type.description), variable)
        }
        let (s, c) = try slab(info, start: start, count: count)
        var out = [T](repeating: T.zero, count: c.reduce(1, *))
        if out.isEmpty { return out }
        try nc("nc_get_vara_\(T.netCDFType)", variable) {
            out.withUnsafeMutableBufferPointer { p in
                guard let base = p.baseAddress else { return NC_NOERR }
                return T.ncGet(ncid, varid, s, c, base)
            }
        }
        return out
    }

    /// Writes strings into a `string` variable (whole, or the hyperslab `start`/`count`).
    public func writeStrings(_ variable: String, _ values: [String], start: [Int]? = nil, count: [Int]? = nil) throws {
        try ensureOpen()
        let (varid, info) = try lookup(variable)
        guard info.type == .string else { throw error(.typeMismatch(expected: info.type.description, actual: "string"), variable) }
        let (s, c) = try slab(info, start: start, count: count)
        guard c.reduce(1, *) == values.count else { throw error(.countMismatch(expected: c.reduce(1, *), actual: values.count), variable) }
        try withCStrings(values) { ptrs in
            try nc("nc_put_vara_string", variable) { nc_put_vara_string(ncid, varid, s, c, ptrs) }
        }
    }

    /// Reads a `string` variable (whole, or the hyperslab `start`/`count`).
    public func readStrings(_ variable: String, start: [Int]? = nil, count: [Int]? = nil) throws -> [String] {
        try ensureOpen()
        let (varid, info) = try lookup(variable)
        guard info.type == .string else { throw error(.typeMismatch(expected: "string", actual: info.type.description), variable) }
        let (s, c) = try slab(info, start: start, count: count)
        let n = c.reduce(1, *)
        if n == 0 { return [] }
        var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: n)
        try nc("nc_get_vara_string", variable) {
            ptrs.withUnsafeMutableBufferPointer { nc_get_vara_string(ncid, varid, s, c, $0.baseAddress) }
        }
        let out = ptrs.map { $0.map { String(cString: $0) } ?? "" }
        _ = NetCDFFile.lock.withLock {
            ptrs.withUnsafeMutableBufferPointer { nc_free_string(n, $0.baseAddress) }
        }
        return out
    }

    /// Validated start/count (defaults: the whole variable) as buffers with ≥ 1 element (a
    /// scalar variable is passed a dummy 0 / 1 that netCDF ignores).
    private func slab(_ info: NetCDFVariable, start: [Int]?, count: [Int]?) throws -> ([Int], [Int]) {
        let rank = info.shape.count
        let s = start ?? [Int](repeating: 0, count: rank)
        let c = count ?? zip(info.shape, s).map { $0 - $1 }
        guard s.count == rank, c.count == rank else {
            throw error(.badHyperslab("start \(s) / count \(c) for a variable of rank \(rank) \(info.dimensions)"), info.name)
        }
        guard s.allSatisfy({ $0 >= 0 }), c.allSatisfy({ $0 >= 0 }) else {
            throw error(.badHyperslab("negative start \(s) or count \(c)"), info.name)
        }
        return (rank == 0 ? [0] : s, rank == 0 ? [1] : c)
    }

    // MARK: Inquiring

    private func variableID(_ name: String?) throws -> Int32 {
        guard let name else { return NC_GLOBAL }
        var id: Int32 = -1
        let status = NetCDFFile.lock.withLock { nc_inq_varid(ncid, name, &id) }
        guard status == NC_NOERR else { throw error(.missingVariable(name), name) }
        return id
    }

    private func lookup(_ name: String) throws -> (Int32, NetCDFVariable) {
        let id = try variableID(name)
        return (id, try info(id, name))
    }

    private func info(_ varid: Int32, _ name: String) throws -> NetCDFVariable {
        var type: nc_type = 0
        var ndims: Int32 = 0
        try nc("nc_inq_var", name) { nc_inq_var(ncid, varid, nil, &type, &ndims, nil, nil) }
        var dimids = [Int32](repeating: 0, count: Int(max(ndims, 1)))
        try nc("nc_inq_vardimid", name) { dimids.withUnsafeMutableBufferPointer { nc_inq_vardimid(ncid, varid, $0.baseAddress) } }
        var names: [String] = []
        var shape: [Int] = []
        for id in dimids.prefix(Int(ndims)) {
            let d = try dimension(id: id)
            names.append(d.name)
            shape.append(d.length)
        }
        guard let t = NetCDFType(rawValue: type) else {
            throw error(.typeMismatch(expected: "a basic type", actual: NetCDFType.name(type)), name)
        }
        return NetCDFVariable(name: name, type: t, dimensions: names, shape: shape)
    }

    private func dimension(id: Int32) throws -> NetCDFDimension {
        var buf = [CChar](repeating: 0, count: Int(NC_MAX_NAME) + 1)
        var len = 0
        try nc("nc_inq_dim") { buf.withUnsafeMutableBufferPointer { nc_inq_dim(ncid, id, $0.baseAddress, &len) } }
        var nUnlim: Int32 = 0
        var unlim = [Int32](repeating: -1, count: 16)
        try nc("nc_inq_unlimdims") { nc_inq_unlimdims(ncid, &nUnlim, nil) }
        if Int(nUnlim) > unlim.count { unlim = [Int32](repeating: -1, count: Int(nUnlim)) }
        try nc("nc_inq_unlimdims") { unlim.withUnsafeMutableBufferPointer { nc_inq_unlimdims(ncid, &nUnlim, $0.baseAddress) } }
        return NetCDFDimension(name: cString(buf), length: len, isUnlimited: unlim.prefix(Int(nUnlim)).contains(id))
    }

    /// Every dimension of the file, in definition order.
    public func dimensions() throws -> [NetCDFDimension] {
        try ensureOpen()
        var n: Int32 = 0
        try nc("nc_inq_dimids") { nc_inq_dimids(ncid, &n, nil, 0) }
        var ids = [Int32](repeating: 0, count: Int(max(n, 1)))
        try nc("nc_inq_dimids") { ids.withUnsafeMutableBufferPointer { nc_inq_dimids(ncid, &n, $0.baseAddress, 0) } }
        return try ids.prefix(Int(n)).sorted().map { try dimension(id: $0) }
    }

    /// The dimension `name`.
    public func dimension(_ name: String) throws -> NetCDFDimension {
        try ensureOpen()
        var id: Int32 = -1
        let status = NetCDFFile.lock.withLock { nc_inq_dimid(ncid, name, &id) }
        guard status == NC_NOERR else { throw error(.missingDimension(name)) }
        return try dimension(id: id)
    }

    /// Every variable of the file, in definition order.
    public func variables() throws -> [NetCDFVariable] {
        try ensureOpen()
        var n: Int32 = 0
        try nc("nc_inq_varids") { nc_inq_varids(ncid, &n, nil) }
        var ids = [Int32](repeating: 0, count: Int(max(n, 1)))
        try nc("nc_inq_varids") { ids.withUnsafeMutableBufferPointer { nc_inq_varids(ncid, &n, $0.baseAddress) } }
        return try ids.prefix(Int(n)).sorted().map { id in
            var buf = [CChar](repeating: 0, count: Int(NC_MAX_NAME) + 1)
            try nc("nc_inq_varname") { buf.withUnsafeMutableBufferPointer { nc_inq_varname(ncid, id, $0.baseAddress) } }
            return try info(id, cString(buf))
        }
    }

    /// The variable `name`: type, dimensions, current shape.
    public func variable(_ name: String) throws -> NetCDFVariable {
        try ensureOpen()
        return try lookup(name).1
    }

    /// Whether a variable `name` exists.
    public func hasVariable(_ name: String) -> Bool {
        guard isOpen else { return false }
        var id: Int32 = -1
        return NetCDFFile.lock.withLock { nc_inq_varid(ncid, name, &id) } == NC_NOERR
    }

    /// All attributes of a variable (or the global ones when `variable` is nil), by name.
    public func attributes(variable: String? = nil) throws -> [String: NetCDFAttribute] {
        try ensureOpen()
        let varid = try variableID(variable)
        var n: Int32 = 0
        try nc("nc_inq_varnatts", variable) { nc_inq_varnatts(ncid, varid, &n) }
        var out: [String: NetCDFAttribute] = [:]
        for k in 0..<n {
            var buf = [CChar](repeating: 0, count: Int(NC_MAX_NAME) + 1)
            try nc("nc_inq_attname", variable) { buf.withUnsafeMutableBufferPointer { nc_inq_attname(ncid, varid, k, $0.baseAddress) } }
            let name = cString(buf)
            if let a = try attribute(name, variable: variable) { out[name] = a }
        }
        return out
    }

    /// The attribute `name` of a variable (or a global one), or nil when absent.
    public func attribute(_ name: String, variable: String? = nil) throws -> NetCDFAttribute? {
        try ensureOpen()
        let varid = try variableID(variable)
        let label = attributeLabel(name, variable)
        var type: nc_type = 0
        var len = 0
        let status = NetCDFFile.lock.withLock { nc_inq_att(ncid, varid, name, &type, &len) }
        if status == NC_ENOTATT { return nil }
        try nc("nc_inq_att", label) { status }
        switch NetCDFType(rawValue: type) {
        case .char?:
            var buf = [UInt8](repeating: 0, count: max(len, 1))
            try nc("nc_get_att_text", label) {
                buf.withUnsafeMutableBufferPointer { p in
                    p.withMemoryRebound(to: CChar.self) { nc_get_att_text(ncid, varid, name, $0.baseAddress) }
                }
            }
            // Trailing NULs (C writers often include one) are not part of the text.
            var end = len
            while end > 0, buf[end - 1] == 0 { end -= 1 }
            return .text(String(decoding: buf[0..<end], as: UTF8.self))
        case .string?:
            var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: max(len, 1))
            try nc("nc_get_att_string", label) { ptrs.withUnsafeMutableBufferPointer { nc_get_att_string(ncid, varid, name, $0.baseAddress) } }
            let out = ptrs.prefix(len).map { $0.map { String(cString: $0) } ?? "" }
            _ = NetCDFFile.lock.withLock { ptrs.withUnsafeMutableBufferPointer { nc_free_string(len, $0.baseAddress) } }
            return .strings(out)
        case .double?: return .doubles(try getAtt(name, varid, label, len))
        case .float?: return .floats(try getAtt(name, varid, label, len))
        case .byte?: return .int8s(try getAtt(name, varid, label, len))
        case .ubyte?: return .uint8s(try getAtt(name, varid, label, len))
        case .ushort?: return .uint16s(try getAtt(name, varid, label, len))
        case .int?: return .int32s(try getAtt(name, varid, label, len))
        case .int64?: return .int64s(try getAtt(name, varid, label, len))
        default:
            throw error(.typeMismatch(expected: "a text, string or numeric attribute", actual: NetCDFType.name(type)), label)
        }
    }

    private func getAtt<T: NetCDFScalar>(_ name: String, _ varid: Int32, _ label: String, _ len: Int) throws -> [T] {
        var out = [T](repeating: T.zero, count: max(len, 1))
        try nc("nc_get_att_\(T.netCDFType)", label) {
            out.withUnsafeMutableBufferPointer { p in
                guard let base = p.baseAddress else { return NC_NOERR }
                return T.ncGetAtt(ncid, varid, name, base)
            }
        }
        return Array(out.prefix(len))
    }
}

// MARK: C helpers

/// A pointer to the buffer's elements (a valid dummy for an empty buffer).
private func withPointer<T: NetCDFScalar, R>(_ p: UnsafeBufferPointer<T>, _ body: (UnsafePointer<T>) -> R) -> R {
    if let base = p.baseAddress { return body(base) }
    var dummy = T.zero
    return withUnsafePointer(to: &dummy) { body($0) }
}

/// The text of a NUL-terminated name buffer.
private func cString(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Runs `body` with an array of C strings (freed afterwards).
private func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafePointer<CChar>?>) throws -> R) rethrows -> R {
    let n = max(strings.count, 1)
    let ptrs = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: n)
    ptrs.initialize(repeating: nil, count: n)
    defer {
        for k in 0..<n { free(UnsafeMutableRawPointer(mutating: ptrs[k])) }
        ptrs.deallocate()
    }
    for (k, s) in strings.enumerated() { ptrs[k] = UnsafePointer(strdup(s)) }
    return try body(ptrs)
}

/// A plain mutex around netCDF-C calls.
final class NetCDFLock: @unchecked Sendable {
    private let lock = NSLock()
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}
