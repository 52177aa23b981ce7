import XCTest
import Tensors
import Verification

/// The softmax / norm / interpolation / pooling / attention golden cases, one test each, so a
/// failure names its case; the worst error of every case is printed on success too.
final class OpsNNGoldenTests: XCTestCase {
    private func verify(_ name: String) throws {
        let report = try Verifier.verify(file: goldenURL(name))
        printReport(report)
        XCTAssertFalse(report.comparisons.isEmpty, name)
        for c in report.comparisons where !c.passed {
            XCTFail("\(name) \(c.name): error \(c.error) over bound \(c.bound) \(c.note)")
        }
        XCTAssertEqual(report.extraComputed, [], "\(name): computed tensors the golden file does not hold")
    }

    func testSoftmax() throws { try verify("ops_softmax") }
    func testLayerNorm() throws { try verify("ops_layer_norm") }
    func testLayerNorm2d() throws { try verify("ops_layer_norm_2d") }
    func testGroupNorm() throws { try verify("ops_group_norm") }
    func testBatchNormTrain() throws { try verify("ops_batch_norm_train") }
    func testBatchNormEval() throws { try verify("ops_batch_norm_eval") }
    func testInterpolateBilinear() throws { try verify("ops_interpolate_bilinear") }
    func testInterpolateNearest() throws { try verify("ops_interpolate_nearest") }
    func testMaxPool2d() throws { try verify("ops_max_pool2d") }
    func testAttention() throws { try verify("ops_attention") }
}
