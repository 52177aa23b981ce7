// A golden case as read from its safetensors file, and the registry of case runners.
//
// A runner rebuilds the case from `config` alone (any shapes it describes), loads `param.*`,
// feeds `in.*`, runs the forward and the backward `config.backward` describes, and returns
// every `out.*` and `grad.*` it computed, under the golden file's names.
//
// Loading: GoldenFile.swift. Reading `config`: ConfigAccess.swift. Comparing: Tolerance.swift.

import Tensors

/// A parsed JSON value (the golden files' `config` and `tolerance` metadata).
/// Read it with the throwing accessors of ConfigAccess.swift: `try config["eps"].double`.
public indirect enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])
}

/// One golden file: its case name, config, and tensors by name.
public struct GoldenCase {
    public let name: String
    public let config: JSON
    /// Float tensors (`in.*`, `param.*`, `out.*`, `upstream.*`, `grad.*`), decoded to Float32.
    public let tensors: [String: Tensor]
    /// Integer tensors (token ids, mask ids, ground truth, counts): shape and values.
    public let int64s: [String: (shape: [Int], values: [Int64])]
    /// Tensor names in file order (sorted, as safetensors headers are written).
    public let names: [String]
    /// The `tolerance` metadata (an empty object when the file has none: the defaults apply).
    public var tolerance: JSON = .object([:])
    /// Every `__metadata__` string (`case`, `config`, `tolerance`, `notes`, `seed`, …).
    public var metadata: [String: String] = [:]
    /// The file it was read from ("" when built in memory).
    public var file: String = ""

    public init(name: String, config: JSON, tensors: [String: Tensor],
                int64s: [String: (shape: [Int], values: [Int64])], names: [String]) {
        self.name = name
        self.config = config
        self.tensors = tensors
        self.int64s = int64s
        self.names = names
    }
}

/// What a runner computed, under the golden names (`out.*`, `out.buffer.*`, `grad.*`).
public struct CaseResult {
    public var tensors: [String: Tensor] = [:]
    public var int64s: [String: (shape: [Int], values: [Int64])] = [:]
    public init() {}
}

/// A case could not be rebuilt from its file.
public enum GoldenError: Error, CustomStringConvertible {
    case unknownCase(String)
    case missingTensor(case: String, name: String)
    /// A config value is absent or of the wrong type. `case` is "" when the accessor did not
    /// know it (the verifier fills it in); `key` is the path, e.g. `backward.outputs[1]`.
    case badConfig(case: String, key: String, expected: String)
    /// The file is a valid safetensors file but not a golden case (metadata missing or not JSON).
    case badFile(file: String, problem: String)

    public var description: String {
        switch self {
        case .unknownCase(let c): return "unknown golden case '\(c)'"
        case .missingTensor(let c, let n): return "case '\(c)': missing tensor '\(n)'"
        case .badConfig(let c, let k, let e):
            return (c.isEmpty ? "" : "case '\(c)': ") + "config key '\(k)': expected \(e)"
        case .badFile(let f, let p): return "\(f): not a golden case: \(p)"
        }
    }
}
