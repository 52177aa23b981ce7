// Typed, throwing access to a golden case's `config` JSON.
//
// Usage in a case runner:
//
//     let cfg = golden.config
//     let eps     = try cfg["eps"].double                  // number
//     let groups  = try cfg["num_groups"].int              // integral number
//     let size    = try cfg["size"].ints                   // [Int]
//     let mode    = try cfg["backward"]["mode"].string     // nested keys
//     let outs    = try cfg["backward"]["outputs"].strings
//     let up      = try cfg["upsample_input"].optional?.int  // nil when absent or null
//     let corners = try cfg["align_corners"].bool(default: false)
//     for (variant, p) in try cfg["variants"].members {    // sorted by key
//         let shape = try p["shape"].ints
//     }
//
// `subscript` never throws: a missing key gives a field whose accessors throw. Every accessor
// throws `GoldenError.badConfig(case:key:expected:)` naming the path (`variants.large.shape`)
// and what was expected, plus what was found. The case name is filled in by the verifier.

/// A value looked up in a config, remembering its path for error messages.
public struct JSONField: Sendable {
    /// Dotted path from the config root, with `[i]` for array items ("" for the root).
    public let path: String
    /// The value, or nil when the key is absent.
    public let value: JSON?
    /// The case name for errors ("" when unknown).
    public let caseName: String

    public init(path: String, value: JSON?, caseName: String = "") {
        self.path = path
        self.value = value
        self.caseName = caseName
    }

    func fail(_ expected: String) -> GoldenError {
        let found: String
        switch value {
        case nil: found = "the key is missing"
        case .null?: found = "found null"
        case .bool(let b)?: found = "found \(b)"
        case .number(let x)?: found = "found \(x)"
        case .string(let s)?: found = "found \"\(s)\""
        case .array(let a)?: found = "found an array of \(a.count)"
        case .object?: found = "found an object"
        }
        return GoldenError.badConfig(case: caseName, key: path.isEmpty ? "<root>" : path,
                                     expected: "\(expected); \(found)")
    }

    /// The member `key` of an object (absent when this is not an object or has no such key).
    public subscript(key: String) -> JSONField {
        var v: JSON?
        if case .object(let m)? = value { v = m[key] }
        return JSONField(path: path.isEmpty ? key : "\(path).\(key)", value: v, caseName: caseName)
    }

    /// Item `index` of an array (absent when out of range or not an array).
    public subscript(index: Int) -> JSONField {
        var v: JSON?
        if case .array(let a)? = value, a.indices.contains(index) { v = a[index] }
        return JSONField(path: "\(path)[\(index)]", value: v, caseName: caseName)
    }

    /// True when the key is present and not null.
    public var exists: Bool {
        switch value {
        case nil, .null?: return false
        default: return true
        }
    }

    /// Nil when absent or null, else this field: `try cfg["k"].optional?.int`.
    public var optional: JSONField? { exists ? self : nil }

    /// A number.
    public var double: Double {
        get throws {
            guard case .number(let x)? = value else { throw fail("a number") }
            return x
        }
    }

    /// A number, rounded to Float.
    public var float: Float {
        get throws { Float(try double) }
    }

    /// An integral number within ±2⁵³.
    public var int: Int {
        get throws {
            guard case .number(let x)? = value, x.rounded() == x, abs(x) <= 9_007_199_254_740_992 else {
                throw fail("an integer")
            }
            return Int(x)
        }
    }

    /// true or false.
    public var bool: Bool {
        get throws {
            guard case .bool(let b)? = value else { throw fail("true or false") }
            return b
        }
    }

    /// A string.
    public var string: String {
        get throws {
            guard case .string(let s)? = value else { throw fail("a string") }
            return s
        }
    }

    /// An array, as fields (paths `key[i]`).
    public var array: [JSONField] {
        get throws {
            guard case .array(let a)? = value else { throw fail("an array") }
            return a.indices.map { self[$0] }
        }
    }

    /// An object, as fields by key (iterate `members` for a fixed order).
    public var object: [String: JSONField] {
        get throws {
            guard case .object(let m)? = value else { throw fail("an object") }
            var out: [String: JSONField] = [:]
            for k in m.keys { out[k] = self[k] }
            return out
        }
    }

    /// An object's keys, sorted.
    public var keys: [String] {
        get throws {
            guard case .object(let m)? = value else { throw fail("an object") }
            return m.keys.sorted()
        }
    }

    /// An object's members sorted by key (a deterministic order, unlike a dictionary's).
    public var members: [(key: String, value: JSONField)] {
        get throws { try keys.map { ($0, self[$0]) } }
    }

    /// An array of integers.
    public var ints: [Int] {
        get throws {
            guard case .array? = value else { throw fail("an array of integers") }
            return try array.map { try $0.int }
        }
    }

    /// An array of numbers.
    public var doubles: [Double] {
        get throws {
            guard case .array? = value else { throw fail("an array of numbers") }
            return try array.map { try $0.double }
        }
    }

    /// An array of numbers, rounded to Float.
    public var floats: [Float] {
        get throws { try doubles.map { Float($0) } }
    }

    /// An array of strings.
    public var strings: [String] {
        get throws {
            guard case .array? = value else { throw fail("an array of strings") }
            return try array.map { try $0.string }
        }
    }

    /// The integer, or `default` when absent or null (a present value of another type throws).
    public func int(default d: Int) throws -> Int { try optional?.int ?? d }
    /// The number, or `default` when absent or null.
    public func double(default d: Double) throws -> Double { try optional?.double ?? d }
    /// The boolean, or `default` when absent or null.
    public func bool(default d: Bool) throws -> Bool { try optional?.bool ?? d }
    /// The string, or `default` when absent or null.
    public func string(default d: String) throws -> String { try optional?.string ?? d }

    /// One of `choices` (e.g. merge ∈ {"mean", "max"}).
    public func string(oneOf choices: [String]) throws -> String {
        let s = try string
        guard choices.contains(s) else { throw fail("one of " + choices.map { "\"\($0)\"" }.joined(separator: ", ")) }
        return s
    }
}

extension JSON {
    /// This value as a root field (path "", case unknown).
    public var field: JSONField { JSONField(path: "", value: self) }

    /// The member `key` of an object; accessors on the result throw when it is absent.
    public subscript(key: String) -> JSONField { field[key] }
    /// Item `index` of an array.
    public subscript(index: Int) -> JSONField { field[index] }

    public var double: Double { get throws { try field.double } }
    public var float: Float { get throws { try field.float } }
    public var int: Int { get throws { try field.int } }
    public var bool: Bool { get throws { try field.bool } }
    public var string: String { get throws { try field.string } }
    public var array: [JSONField] { get throws { try field.array } }
    public var object: [String: JSONField] { get throws { try field.object } }
    public var keys: [String] { get throws { try field.keys } }
    public var members: [(key: String, value: JSONField)] { get throws { try field.members } }
    public var ints: [Int] { get throws { try field.ints } }
    public var doubles: [Double] { get throws { try field.doubles } }
    public var floats: [Float] { get throws { try field.floats } }
    public var strings: [String] { get throws { try field.strings } }
}
