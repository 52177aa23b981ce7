// Errors of the GroundingCache reader and writer: each names the file, the variable (or
// attribute) concerned, what was expected and what was found.

import Formats

/// A GroundingCache file that cannot be read or a record that cannot be written.
public struct GroundingCacheError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The cache file (its final path).
    public let file: String
    /// The variable, dimension or attribute concerned (e.g. "attention_rows",
    /// "global attribute 'schema_version'"), if any.
    public let variable: String?
    public let kind: Kind

    public enum Kind: Equatable, Sendable {
        /// A variable the schema requires is absent.
        case missingVariable
        /// A required dimension is absent.
        case missingDimension
        /// A required global attribute is absent.
        case missingAttribute
        /// An attribute has a value this reader cannot use.
        case badAttribute(expected: String, found: String)
        /// The file's `schema_version` is not one this reader understands.
        case unknownSchemaVersion(found: String, supported: [Int])
        /// A variable's dimensions (names) differ from the schema's.
        case wrongDimensions(expected: [String], found: [String])
        /// A dimension's length disagrees with the header (e.g. `layer` ≠ num_layers).
        case wrongDimensionLength(expected: Int, found: Int)
        /// A variable has another NetCDF type than the schema's.
        case wrongType(expected: String, found: String)
        /// Per-sample offsets and counts do not tile the ragged dimension, or point past it.
        case inconsistentOffsets(sample: Int, detail: String)
        /// A record index outside 0..<count.
        case indexOutOfRange(index: Int, count: Int)
        /// A record that does not fit the header (writer side), or stored values that do not
        /// fit one another (reader side).
        case badRecord(sample: Int, expected: String, found: String)
        /// A value that the 16-bit encoding cannot hold (float16 overflow, NaN).
        case notRepresentable(sample: Int, encoding: String, value: Float)
        /// The NetCDF library failed (a truncated or corrupt file, an I/O error): its message.
        case netCDF(String)
        /// The writer was already finished.
        case finished
    }

    public init(file: String, variable: String? = nil, kind: Kind) {
        self.file = file
        self.variable = variable
        self.kind = kind
    }

    /// A NetCDF error, wrapped with the cache's path.
    init(file: String, _ e: NetCDFError) {
        self.init(file: file, variable: e.variable, kind: .netCDF(e.description))
    }

    public var description: String {
        let place = "GroundingCache \(file)" + (variable.map { ": \($0)" } ?? "")
        switch kind {
        case .missingVariable: return place + ": missing variable (required by schema version \(GroundingCache.schemaVersion))"
        case .missingDimension: return place + ": missing dimension"
        case .missingAttribute: return place + ": missing attribute"
        case .badAttribute(let e, let f): return place + ": expected \(e), found \(f)"
        case .unknownSchemaVersion(let f, let s):
            return place + ": unknown schema version \(f); this reader supports \(s.map(String.init).joined(separator: ", "))"
        case .wrongDimensions(let e, let f):
            return place + ": expected dimensions (\(e.joined(separator: ", "))), found (\(f.joined(separator: ", ")))"
        case .wrongDimensionLength(let e, let f): return place + ": expected length \(e), found \(f)"
        case .wrongType(let e, let f): return place + ": expected type \(e), found \(f)"
        case .inconsistentOffsets(let s, let d): return place + ": inconsistent offsets at sample \(s): \(d)"
        case .indexOutOfRange(let i, let n): return place + ": record \(i) outside 0..<\(n)"
        case .badRecord(let s, let e, let f): return place + ": sample \(s): expected \(e), found \(f)"
        case .notRepresentable(let s, let enc, let v): return place + ": sample \(s): value \(v) is not representable in \(enc)"
        case .netCDF(let m): return place + ": unreadable or truncated file (\(m))"
        case .finished: return place + ": writer already finished"
        }
    }
}
