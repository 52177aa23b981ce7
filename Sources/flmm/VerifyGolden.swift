import ArgumentParser
import Foundation
import Formats
import Verification

/// `flmm verify-golden FILE... [--save DIR]`: rebuilds each golden case with its registered
/// runner and compares every out.* / grad.* tensor by the tolerance rule.
struct VerifyGolden: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-golden",
        abstract: "Check golden .safetensors cases against this implementation.",
        discussion: """
            Prints one line per out.*/grad.* tensor (PASS/FAIL, case, tensor, error, bound, max abs \
            error), then "N passed, M failed" counting tensors. Exits non-zero on any failure, an \
            unknown case or a malformed file.
            """
    )

    @Argument(help: "Golden files (<case>.safetensors).", completion: .file(extensions: ["safetensors"]))
    var files: [String]

    @Option(help: "Write the computed tensors to DIR/<case>.safetensors, under the golden names.")
    var save: String?

    func run() throws {
        var passed = 0, failed = 0, errors = 0
        let saveDir = save.map { URL(fileURLWithPath: $0) }
        if let saveDir {
            do {
                try FileManager.default.createDirectory(at: saveDir, withIntermediateDirectories: true)
            } catch {
                throw ValidationError("cannot create --save folder \(saveDir.path): \(error)")
            }
        }
        for path in files {
            let url = URL(fileURLWithPath: path)
            do {
                let report = try Verifier.verify(file: url)
                for c in report.comparisons {
                    var line = "\(c.passed ? "PASS" : "FAIL")  \(report.caseName)  \(c.name)  "
                    line += "err \(formatError(c.error)) (\(c.bound))  maxabs \(formatError(c.maxAbsError))"
                    if !c.note.isEmpty { line += "  [\(c.note)]" }
                    print(line)
                }
                passed += report.passedCount
                failed += report.failedCount
                if let saveDir {
                    let out = saveDir.appendingPathComponent("\(report.caseName).safetensors")
                    try SafeTensors.write(tensors: report.computed.tensors, int64s: report.computed.int64s,
                                          metadata: ["case": report.caseName, "generator": "flmm verify-golden"],
                                          to: out)
                }
            } catch {
                errors += 1
                let text = "\(error)"
                // Errors from the safetensors reader and badFile already name the file.
                let message = text.contains(url.path) ? text : "\(url.path): \(text)"
                FileHandle.standardError.write(Data("error: \(message)\n".utf8))
            }
        }
        print("\(passed) passed, \(failed) failed")
        if failed > 0 || errors > 0 { throw ExitCode.failure }
    }
}
