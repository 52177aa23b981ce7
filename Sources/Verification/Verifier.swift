// Rebuilds a golden case with its registered runner and compares every `out.*` / `grad.*`
// tensor of the file with the computed one, by the tolerance rule (Tolerance.swift).

import Foundation
import Tensors

/// The outcome of verifying one golden file.
public struct VerificationReport {
    public let caseName: String
    public let file: String
    /// One row per golden `out.*` / `grad.*` tensor, sorted by name.
    public let comparisons: [TensorComparison]
    /// Names the runner produced that the golden file does not hold (informational).
    public let extraComputed: [String]
    /// What the runner computed (for `--save`).
    public let computed: CaseResult

    /// Every golden tensor was computed and is within its bound.
    public var passed: Bool { comparisons.allSatisfy(\.passed) }
    public var passedCount: Int { comparisons.filter(\.passed).count }
    public var failedCount: Int { comparisons.count - passedCount }

    /// The comparison closest to (or furthest past) its bound: largest error / bound.
    public var worst: TensorComparison? {
        func ratio(_ c: TensorComparison) -> Double {
            switch c.bound {
            case .relative(let b), .absolute(let b): return b > 0 ? c.error / b : (c.error > 0 ? .infinity : 0)
            case .exact: return c.error
            }
        }
        return comparisons.max { ratio($0) < ratio($1) }
    }
}

public enum Verifier {
    /// Loads `file`, runs its case's registered runner, compares. Throws for a malformed file
    /// (`SafeTensorsError`, `GoldenError.badFile`), an unregistered case
    /// (`GoldenError.unknownCase`) or a runner error; a numerical mismatch is not an error but
    /// a failed comparison in the report.
    public static func verify(file: URL) throws -> VerificationReport {
        try verify(GoldenCase.load(file))
    }

    /// Runs `runner` (default: `CaseRegistry.runners[golden.name]`) on the case and compares.
    public static func verify(_ golden: GoldenCase, runner: CaseRunner? = nil) throws -> VerificationReport {
        guard let run = runner ?? CaseRegistry.runners[golden.name] else {
            throw GoldenError.unknownCase(golden.name)
        }
        let result: CaseResult
        do {
            result = try run(golden)
        } catch GoldenError.badConfig(let c, let key, let expected) where c.isEmpty {
            throw GoldenError.badConfig(case: golden.name, key: key, expected: expected)
        }
        return try compare(golden, result)
    }

    /// Compares a runner's result with the golden `out.*` / `grad.*` tensors.
    public static func compare(_ golden: GoldenCase, _ result: CaseResult) throws -> VerificationReport {
        let rule = try ToleranceRule(golden.tolerance, caseName: golden.name)
        var rows: [TensorComparison] = []
        var goldenNames = Set<String>()
        for name in (Array(golden.tensors.keys) + Array(golden.int64s.keys)).sorted()
        where name.hasPrefix("out.") || name.hasPrefix("grad.") {
            goldenNames.insert(name)
            if let b = golden.int64s[name] {
                if result.int64s[name] == nil, let f = result.tensors[name] {
                    rows.append(TensorComparison(name: name, goldenShape: b.shape, computedShape: f.shape,
                                                 bound: .exact, error: .infinity, maxAbsError: .infinity,
                                                 passed: false, note: "computed as float, golden is int64"))
                } else {
                    rows.append(TensorComparison.compare(name: name, computed: result.int64s[name], golden: b))
                }
            } else if let b = golden.tensors[name] {
                rows.append(TensorComparison.compare(name: name, computed: result.tensors[name], golden: b,
                                                     bound: rule.bound(for: name)))
            }
        }
        let extra = Set(result.tensors.keys).union(result.int64s.keys).subtracting(goldenNames).sorted()
        return VerificationReport(caseName: golden.name, file: golden.file, comparisons: rows,
                                  extraComputed: extra, computed: result)
    }
}
