import Foundation
import XCTest
import Tensors
import NN
import Verification

/// The PyTorch layer golden cases (ops_linear, the norms, …) run through the NN modules:
/// each variant's module is built from its config, strictly loads `param.<variant>.*` (so the
/// keys and buffers are exactly PyTorch's state-dict entries), runs forward and the case's
/// backward, and reports its outputs, gradients and buffers under the golden names, compared
/// by the golden tolerance rule.
final class LayersGoldenTests: XCTestCase {
    typealias Build = @Sendable (_ golden: GoldenCase, _ config: JSONField) throws -> (any Module, (Tensor) -> Tensor)

    /// A runner over the case's `variants` (names `in.<v>`, `out.<v>`, `param.<v>.<key>`), or
    /// over the single unnamed case (`in.x`, `out.y`, `param.<key>`, `out.buffer.<key>`).
    static func layerRunner(variants: Bool, _ build: @escaping Build) -> CaseRunner {
        return { golden in
            let root = JSONField(path: "", value: golden.config, caseName: golden.name)
            let names = variants ? try root["variants"].keys.sorted() : [""]
            var result = CaseResult()
            var outputs: [String: Tensor] = [:]
            var ran: [(prefix: String, input: String, x: Tensor, module: any Module)] = []
            for v in names {
                let (module, forward) = try build(golden, variants ? root["variants"][v] : root)
                let prefix = v.isEmpty ? "param." : "param.\(v)."
                var sd = golden.stateDict(prefix: prefix)
                for (k, t) in golden.int64s where k.hasPrefix(prefix) {
                    sd[String(k.dropFirst(prefix.count))] = Tensor(shape: t.shape, data: t.values.map { Float($0) })
                }
                try module.load(stateDict: sd)
                let input = v.isEmpty ? "in.x" : "in.\(v)"
                let x = try golden.leaf(input)
                let y = forward(x)
                let out = v.isEmpty ? "y" : v
                outputs[out] = y
                result.tensors["out.\(out)"] = y
                ran.append((prefix, input, x, module))
            }
            try golden.runBackward(outputs: outputs)
            for r in ran {
                result.tensors["grad.\(r.input)"] = r.x.grad
                for (k, p) in r.module.namedParameters() { result.tensors["grad.\(r.prefix)\(k)"] = p.grad }
                for (k, b) in r.module.namedBuffers() {
                    let name = "out.buffer.\(r.prefix.dropFirst("param.".count))\(k)"
                    if k == "num_batches_tracked" {
                        result.int64s[name] = (b.shape, b.data.map { Int64($0) })
                    } else {
                        result.tensors[name] = b
                    }
                }
            }
            return result
        }
    }

    static let cases: [(String, CaseRunner)] = [
        ("ops_linear", layerRunner(variants: true) { _, c in
            var rng = PhiloxRNG(seed: 0)
            let m = Linear(try c["fin"].int, try c["fout"].int, bias: try c["bias"].bool, rng: &rng)
            return (m, { m($0) })
        }),
        ("ops_layer_norm", layerRunner(variants: true) { g, c in
            let affine = try JSONField(path: "", value: g.config, caseName: g.name)["elementwise_affine"].bool
            let m = LayerNorm(try c["dim"].int, eps: try c["eps"].double, elementwiseAffine: affine)
            return (m, { m($0) })
        }),
        ("ops_layer_norm_2d", layerRunner(variants: false) { _, c in
            let m = LayerNorm2d(try c["num_channels"].int, eps: try c["eps"].double)
            return (m, { m($0) })
        }),
        ("ops_group_norm", layerRunner(variants: true) { g, c in
            let root = JSONField(path: "", value: g.config, caseName: g.name)
            let m = GroupNorm(try c["groups"].int, try root["num_channels"].int, eps: try root["eps"].double)
            return (m, { m($0) })
        }),
        ("ops_conv2d", layerRunner(variants: true) { _, c in
            var rng = PhiloxRNG(seed: 0)
            let m = Conv2d(try c["cin"].int, try c["cout"].int, kernelSize: try c["k"].int, stride: try c["stride"].int,
                           padding: try c["padding"].int, dilation: try c["dilation"].int, bias: try c["bias"].bool, rng: &rng)
            return (m, { m($0) })
        }),
        ("ops_conv_transpose2d", layerRunner(variants: true) { g, c in
            let root = JSONField(path: "", value: g.config, caseName: g.name)
            var rng = PhiloxRNG(seed: 0)
            let m = ConvTranspose2d(try c["cin"].int, try c["cout"].int, kernelSize: try root["kernel_size"].int,
                                    stride: try root["stride"].int, padding: try root["padding"].int,
                                    bias: try root["bias"].bool, rng: &rng)
            return (m, { m($0) })
        }),
        ("ops_batch_norm_train", batchNormRunner),
        ("ops_batch_norm_eval", batchNormRunner),
    ]

    static let batchNormRunner = layerRunner(variants: false) { _, c in
        let m = BatchNorm2d(try c["num_features"].int, eps: try c["eps"].double, momentum: try c["momentum"].double,
                            affine: try c["affine"].bool, trackRunningStats: try c["track_running_stats"].bool)
        m.train(try c["training"].bool)
        return (m, { m($0) })
    }

    func testLayerModulesMatchPyTorchGoldens() throws {
        for (name, runner) in Self.cases {
            let golden = try GoldenCase.load(goldenURL(name))
            let report = try Verifier.verify(golden, runner: runner)
            printReport(report)
            XCTAssertTrue(report.passed, "NN module golden \(name) failed")
            XCTAssertGreaterThan(report.comparisons.count, 2, name)
            XCTAssertTrue(report.extraComputed.isEmpty, "\(name): computed tensors the golden lacks: \(report.extraComputed)")
        }
    }
}
