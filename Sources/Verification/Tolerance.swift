// The golden vectors' tolerance rule (shared/golden/README.md, "Tolerance rule").
//
// For each `out.*` / `grad.*` tensor, b the golden and a the computed value, norms over all
// elements in float64:
//   - integer tensors must be exactly equal;
//   - err = ‖a − b‖₂ / ‖b‖₂ (or ‖a − b‖₂ when ‖b‖₂ = 0) must be ≤ rel, where
//     rel = tolerance.per_tensor[key].rel if present, else tolerance.forward (default 1e-5)
//     for out.* and tolerance.grad (default 1e-4) for grad.*;
//   - keys with tolerance.per_tensor[key].abs are checked as ‖a − b‖₂ ≤ abs instead.
// A shape mismatch or a non-finite computed value fails. The max absolute error is reported
// for information.

import Foundation
import Tensors

/// The bound one tensor is held to.
public enum ToleranceBound: Sendable, Equatable, CustomStringConvertible {
    /// Relative L2 error (absolute when the golden norm is 0) at most this.
    case relative(Double)
    /// Absolute L2 error at most this.
    case absolute(Double)
    /// Integer tensors: every element equal.
    case exact

    public var description: String {
        switch self {
        case .relative(let r): return "rel ≤ \(formatError(r))"
        case .absolute(let a): return "abs ≤ \(formatError(a))"
        case .exact: return "exact"
        }
    }
}

/// A case's tolerance metadata.
public struct ToleranceRule: Sendable {
    public var forward: Double = 1e-5
    public var grad: Double = 1e-4
    /// Per tensor name: an explicit relative and/or absolute bound.
    public var perTensor: [String: (rel: Double?, abs: Double?)] = [:]

    public init() {}

    /// Reads `{"forward": …, "grad": …, "per_tensor": {key: {"rel"|"abs": …}}}`; absent keys
    /// keep the defaults. A present key of the wrong type throws `GoldenError.badConfig`.
    public init(_ json: JSON, caseName: String = "") throws {
        let root = JSONField(path: "tolerance", value: json, caseName: caseName)
        forward = try root["forward"].double(default: 1e-5)
        grad = try root["grad"].double(default: 1e-4)
        if let pt = root["per_tensor"].optional {
            for (key, entry) in try pt.members {
                perTensor[key] = (try entry["rel"].optional?.double, try entry["abs"].optional?.double)
            }
        }
    }

    /// The bound for tensor `name`: its `abs` entry, else its `rel` entry, else `forward` for
    /// `out.*` and `grad` for everything else (`grad.*`).
    public func bound(for name: String) -> ToleranceBound {
        if let e = perTensor[name] {
            if let a = e.abs { return .absolute(a) }
            if let r = e.rel { return .relative(r) }
        }
        return .relative(name.hasPrefix("out.") ? forward : grad)
    }
}

/// How one computed tensor compares with its golden value.
public struct TensorComparison: Sendable {
    public let name: String
    public let goldenShape: [Int]
    /// nil when the runner did not produce the tensor.
    public let computedShape: [Int]?
    public let bound: ToleranceBound
    /// The error the bound is checked against: relative (or absolute when ‖b‖ = 0) L2 error
    /// for `.relative`, absolute L2 error for `.absolute`, max |a − b| for `.exact`;
    /// +inf on a shape mismatch, a missing tensor or a non-finite value.
    public let error: Double
    /// max |a − b| over elements (float64); +inf when not comparable.
    public let maxAbsError: Double
    public let passed: Bool
    /// Why it failed beyond the numbers ("missing", "shape [2] != [3]", "non-finite", …), else "".
    public let note: String

    /// Compares float values `a` (computed) with `b` (golden).
    public static func compare(name: String, computed a: Tensor?, golden b: Tensor,
                               bound: ToleranceBound) -> TensorComparison {
        guard let a else {
            return TensorComparison(name: name, goldenShape: b.shape, computedShape: nil, bound: bound,
                                    error: .infinity, maxAbsError: .infinity, passed: false,
                                    note: "not computed by the runner")
        }
        guard a.shape == b.shape else {
            return TensorComparison(name: name, goldenShape: b.shape, computedShape: a.shape, bound: bound,
                                    error: .infinity, maxAbsError: .infinity, passed: false,
                                    note: "shape \(a.shape) != golden \(b.shape)")
        }
        var diff2 = 0.0, norm2 = 0.0, maxAbs = 0.0
        var finite = true
        for i in 0..<b.count {
            let x = Double(a.data[i]), y = Double(b.data[i])
            if !x.isFinite { finite = false }
            let d = x - y
            diff2 += d * d
            norm2 += y * y
            maxAbs = Swift.max(maxAbs, Swift.abs(d))
        }
        guard finite else {
            return TensorComparison(name: name, goldenShape: b.shape, computedShape: a.shape, bound: bound,
                                    error: .infinity, maxAbsError: maxAbs.isNaN ? .infinity : maxAbs,
                                    passed: false, note: "non-finite computed value")
        }
        let diff = diff2.squareRoot(), norm = norm2.squareRoot()
        let error: Double
        let passed: Bool
        switch bound {
        case .absolute(let limit):
            error = diff
            passed = diff <= limit
        case .relative(let limit):
            error = norm > 0 ? diff / norm : diff
            passed = error <= limit
        case .exact:
            error = maxAbs
            passed = maxAbs == 0
        }
        return TensorComparison(name: name, goldenShape: b.shape, computedShape: a.shape, bound: bound,
                                error: error, maxAbsError: maxAbs, passed: passed, note: "")
    }

    /// Compares integer values exactly.
    public static func compare(name: String, computed a: (shape: [Int], values: [Int64])?,
                               golden b: (shape: [Int], values: [Int64])) -> TensorComparison {
        guard let a else {
            return TensorComparison(name: name, goldenShape: b.shape, computedShape: nil, bound: .exact,
                                    error: .infinity, maxAbsError: .infinity, passed: false,
                                    note: "not computed by the runner (as an integer tensor)")
        }
        guard a.shape == b.shape, a.values.count == b.values.count else {
            return TensorComparison(name: name, goldenShape: b.shape, computedShape: a.shape, bound: .exact,
                                    error: .infinity, maxAbsError: .infinity, passed: false,
                                    note: "shape \(a.shape) != golden \(b.shape)")
        }
        var maxAbs = 0.0
        for (x, y) in zip(a.values, b.values) where x != y {
            maxAbs = Swift.max(maxAbs, Swift.abs(Double(x) - Double(y)))
        }
        return TensorComparison(name: name, goldenShape: b.shape, computedShape: a.shape, bound: .exact,
                                error: maxAbs, maxAbsError: maxAbs, passed: maxAbs == 0, note: "")
    }
}

/// Errors printed as `1.234e-06`; 0 as `0`; infinity as `inf`.
public func formatError(_ x: Double) -> String {
    if x == 0 { return "0" }
    if x.isNaN { return "nan" }
    if x.isInfinite { return x > 0 ? "inf" : "-inf" }
    return String(format: "%.3e", x)
}
