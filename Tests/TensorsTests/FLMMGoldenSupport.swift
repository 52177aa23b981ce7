import XCTest
import Verification

/// Runs golden case `name` through the verifier (printing its worst error); every tensor must
/// pass the tolerance rule and the runner must compute nothing the file lacks.
func assertGoldenPasses(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
    let report = try Verifier.verify(file: goldenURL(name))
    printReport(report)
    XCTAssertTrue(report.passed, "golden case \(name) failed", file: file, line: line)
    XCTAssertFalse(report.comparisons.isEmpty, file: file, line: line)
    XCTAssertEqual(report.extraComputed, [], file: file, line: line)
}
