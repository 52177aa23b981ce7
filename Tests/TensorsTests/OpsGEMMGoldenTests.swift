import XCTest
import Tensors
import Verification

/// The PyTorch golden cases of the GEMM-based ops, through file → runner → tolerance rule.
final class OpsGEMMGoldenTests: XCTestCase {
    func verify(_ name: String, expecting names: [String]) throws {
        let report = try Verifier.verify(file: goldenURL(name))
        printReport(report)
        XCTAssertTrue(report.passed, name)
        XCTAssertEqual(report.comparisons.map(\.name).sorted(), names.sorted(), name)
        XCTAssertEqual(report.extraComputed, [], name)
    }

    func testLinear() throws {
        try verify("ops_linear", expecting: [
            "out.bias", "out.nobias", "grad.in.bias", "grad.in.nobias",
            "grad.param.bias.weight", "grad.param.bias.bias", "grad.param.nobias.weight"])
    }

    func testMatmulBatched() throws {
        try verify("ops_matmul_batched", expecting: [
            "out.bmm4d", "out.broadcast", "grad.in.bmm4d.a", "grad.in.bmm4d.b",
            "grad.in.broadcast.a", "grad.in.broadcast.b"])
    }

    func testConv2d() throws {
        let variants = ["k3p1", "k3s2p1", "k3d2p2", "k1", "k2s2", "k4s4"]
        let withBias = ["k3s2p1", "k1", "k2s2", "k4s4"]
        try verify("ops_conv2d", expecting: variants.flatMap { ["out.\($0)", "grad.in.\($0)", "grad.param.\($0).weight"] }
                   + withBias.map { "grad.param.\($0).bias" })
    }

    func testConvTranspose2d() throws {
        try verify("ops_conv_transpose2d", expecting: ["k2s2", "k2s2_wide"].flatMap {
            ["out.\($0)", "grad.in.\($0)", "grad.param.\($0).weight", "grad.param.\($0).bias"]
        })
    }
}
