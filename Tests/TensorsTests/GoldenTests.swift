import Foundation
import XCTest
import Formats
import Tensors
import Verification

/// The golden file of `name` (a case name, e.g. "ops_relu"): Tests/Goldens/<name>.safetensors,
/// found from this source file's path. Set FLMM_GOLDEN_DIR to read another folder (e.g. the
/// held-out set) instead.
func goldenURL(_ name: String, filePath: String = #filePath) -> URL {
    if let dir = ProcessInfo.processInfo.environment["FLMM_GOLDEN_DIR"], !dir.isEmpty {
        return URL(fileURLWithPath: dir).appendingPathComponent("\(name).safetensors")
    }
    return URL(fileURLWithPath: filePath)
        .deletingLastPathComponent()       // TensorsTests
        .deletingLastPathComponent()       // Tests
        .appendingPathComponent("Goldens")
        .appendingPathComponent("\(name).safetensors")
}

/// Prints one report's rows (also on success, with the worst error).
func printReport(_ r: VerificationReport) {
    for c in r.comparisons where !c.passed {
        print("  FAIL \(r.caseName) \(c.name): err \(formatError(c.error)) (\(c.bound)) maxabs \(formatError(c.maxAbsError)) \(c.note)")
    }
    if let w = r.worst {
        print("golden \(r.caseName): \(r.passedCount)/\(r.comparisons.count) passed; worst \(w.name) err \(formatError(w.error)) (\(w.bound)), maxabs \(formatError(w.maxAbsError))")
    }
}

final class GoldenTests: XCTestCase {
    /// Every primitive-op golden case. Each must be registered and pass.
    static let opsCases = [
        "ops_attention", "ops_batch_norm_eval", "ops_batch_norm_train", "ops_conv2d",
        "ops_conv_transpose2d", "ops_gelu", "ops_group_norm", "ops_interpolate_bilinear",
        "ops_interpolate_nearest", "ops_layer_norm", "ops_layer_norm_2d", "ops_linear",
        "ops_matmul_batched", "ops_max_pool2d", "ops_relu", "ops_sigmoid", "ops_softmax",
    ]

    func testEveryOpsGoldenCasePasses() throws {
        var missing: [String] = []
        for name in Self.opsCases {
            let url = goldenURL(name)
            XCTAssertTrue(FileManager.default.fileExists(atPath: url.path), "missing golden file \(url.path)")
            guard CaseRegistry.runners[name] != nil else {
                missing.append(name)
                continue
            }
            let report = try Verifier.verify(file: url)
            printReport(report)
            XCTAssertTrue(report.passed, "golden case \(name) failed")
            XCTAssertFalse(report.comparisons.isEmpty, name)
        }
        XCTAssertTrue(missing.isEmpty, "golden cases not registered in CaseRegistry.runners: \(missing)")
    }

    /// ops_relu / ops_sigmoid / ops_gelu through the whole path: file → runner → comparison.
    func testPointwiseCasesEndToEnd() throws {
        for name in ["ops_relu", "ops_sigmoid", "ops_gelu"] {
            let report = try Verifier.verify(file: goldenURL(name))
            printReport(report)
            XCTAssertEqual(report.caseName, name)
            XCTAssertEqual(report.comparisons.map(\.name), ["grad.in.x", "out.y"])
            XCTAssertEqual(report.comparisons.map(\.bound), [.relative(1e-4), .relative(1e-5)])
            XCTAssertTrue(report.passed, name)
            XCTAssertEqual(report.passedCount, 2)
            XCTAssertEqual(report.extraComputed, [])
        }
        // ReLU is exact, forward and backward.
        let relu = try Verifier.verify(file: goldenURL("ops_relu"))
        XCTAssertEqual(relu.comparisons.map(\.maxAbsError), [0, 0])
    }

    func testPerturbedOrIncompleteResultFails() throws {
        let golden = try GoldenCase.load(goldenURL("ops_sigmoid"))
        let sigmoid = try XCTUnwrap(CaseRegistry.runners["ops_sigmoid"])
        // Scale out.y by (1 + 1e-4): relative error 1e-4 > 1e-5.
        let perturbed: CaseRunner = { g in
            var r = try sigmoid(g)
            if let y = r.tensors["out.y"] { r.tensors["out.y"] = Tensor(shape: y.shape, data: y.data.map { $0 * 1.0001 }) }
            return r
        }
        let report = try Verifier.verify(golden, runner: perturbed)
        printReport(report)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.failedCount, 1)
        let y = try XCTUnwrap(report.comparisons.first { $0.name == "out.y" })
        XCTAssertFalse(y.passed)
        XCTAssertEqual(y.error, 1e-4, accuracy: 2e-6)
        XCTAssertTrue(try XCTUnwrap(report.comparisons.first { $0.name == "grad.in.x" }).passed)

        // A golden tensor the runner did not produce fails, named; so does a wrong shape.
        let incomplete: CaseRunner = { g in
            var r = try sigmoid(g)
            r.tensors["grad.in.x"] = nil
            r.tensors["out.y"] = Tensor.zeros([5, 25])
            r.tensors["out.extra"] = Tensor.zeros([1])
            return r
        }
        let bad = try Verifier.verify(golden, runner: incomplete)
        XCTAssertEqual(bad.failedCount, 2)
        XCTAssertEqual(bad.comparisons.first { $0.name == "grad.in.x" }?.note, "not computed by the runner")
        XCTAssertEqual(bad.comparisons.first { $0.name == "out.y" }?.note, "shape [5, 25] != golden [125]")
        XCTAssertEqual(bad.extraComputed, ["out.extra"])
    }

    func testUnknownCaseIsAnError() throws {
        let golden = try GoldenCase.load(goldenURL("ops_relu"))
        let renamed = GoldenCase(name: "ops_no_such_case", config: golden.config, tensors: golden.tensors,
                                 int64s: golden.int64s, names: golden.names)
        XCTAssertThrowsError(try Verifier.verify(renamed)) { e in
            guard case GoldenError.unknownCase("ops_no_such_case")? = e as? GoldenError else { return XCTFail("\(e)") }
        }
        // Same through a file.
        let st = try SafeTensors.read(goldenURL("ops_relu"))
        var meta = st.metadata
        meta["case"] = "ops_no_such_case"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("golden-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("x.safetensors")
        try SafeTensors.write(st.entries, metadata: meta, to: url)
        XCTAssertThrowsError(try Verifier.verify(file: url)) { e in
            guard case GoldenError.unknownCase("ops_no_such_case")? = e as? GoldenError else { return XCTFail("\(e)") }
        }
        // A safetensors file that is not a golden case.
        try SafeTensors.write(st.entries, metadata: [:], to: url)
        XCTAssertThrowsError(try Verifier.verify(file: url)) { e in
            guard case GoldenError.badFile(let f, _)? = e as? GoldenError else { return XCTFail("\(e)") }
            XCTAssertEqual(f, url.path)
        }
    }

    func testGoldenCaseLoading() throws {
        let g = try GoldenCase.load(goldenURL("flmm_attention_pipeline"))
        XCTAssertEqual(g.name, "flmm_attention_pipeline")
        XCTAssertEqual(try g.config["grid_hw"].ints, [6, 6])
        XCTAssertEqual(try g.config["image_token_id"].int, 100015)
        XCTAssertEqual(try g.config["merges"].strings, ["mean", "max"])
        XCTAssertEqual(try g.config["backward"]["mode"].string, "upstream")
        XCTAssertEqual(try g.config["backward"]["outputs"][4].string, "text_embeds.0")
        XCTAssertEqual(try g.tensor("in.attentions").shape, [3, 4, 51, 51])
        XCTAssertEqual(try g.int64("in.mask_ids").shape, [51])
        XCTAssertEqual(g.stateDict().keys.sorted(), ["text_layer_weights", "text_proj.bias", "text_proj.weight"])
        XCTAssertTrue(g.stateDict()["text_proj.weight"]?.requiresGrad ?? false)
        XCTAssertEqual(g.names.count, g.tensors.count + g.int64s.count)
        XCTAssertEqual(g.metadata["seed"], "0")
        let rule = try ToleranceRule(g.tolerance)
        XCTAssertEqual(rule.forward, 1e-5)
        XCTAssertEqual(rule.grad, 1e-4)
        XCTAssertThrowsError(try g.tensor("in.nope")) { e in
            XCTAssertEqual("\(e)", "case 'flmm_attention_pipeline': missing tensor 'in.nope'")
        }

        let sam = try GoldenCase.load(goldenURL("sam_mask_decoder_small"))
        let samRule = try ToleranceRule(sam.tolerance)
        XCTAssertEqual(samRule.bound(for: "grad.param.transformer.layers.0.self_attn.k_proj.bias"), .absolute(0.0002))
        XCTAssertEqual(samRule.bound(for: "grad.param.transformer.layers.0.self_attn.q_proj.bias"), .relative(1e-4))
        XCTAssertEqual(samRule.bound(for: "out.masks"), .relative(1e-5))
        let bn = try ToleranceRule(try GoldenCase.load(goldenURL("unet_head_bn")).tolerance)
        XCTAssertEqual(bn.bound(for: "out.y"), .relative(5e-5))
    }

    func testConfigAccessors() throws {
        let cfg = try JSON.parse(#"{"eps": 1e-5, "n": 3, "flag": true, "name": "max", "size": [4, 5], "bad": [1, 2.5], "nested": {"b": {"k": "v"}}, "none": null, "v": {"z": 1, "a": 2}}"#)
        XCTAssertEqual(try cfg["eps"].double, 1e-5)
        XCTAssertEqual(try cfg["eps"].float, 1e-5)
        XCTAssertEqual(try cfg["n"].int, 3)
        XCTAssertEqual(try cfg["n"].double, 3)
        XCTAssertEqual(try cfg["flag"].bool, true)
        XCTAssertEqual(try cfg["name"].string(oneOf: ["mean", "max"]), "max")
        XCTAssertEqual(try cfg["size"].ints, [4, 5])
        XCTAssertEqual(try cfg["nested"]["b"]["k"].string, "v")
        XCTAssertEqual(try cfg["v"].members.map(\.key), ["a", "z"])
        XCTAssertEqual(try cfg["v"].object["z"]?.int, 1)
        XCTAssertNil(try cfg["none"].optional?.int)
        XCTAssertNil(try cfg["absent"].optional?.int)
        XCTAssertEqual(try cfg["absent"].int(default: 7), 7)
        XCTAssertEqual(try cfg["none"].bool(default: true), true)
        XCTAssertFalse(cfg["absent"].exists)

        func expectBad(_ body: @autoclosure () throws -> Any, key: String, expecting: String,
                       line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { e in
                guard case GoldenError.badConfig(let c, let k, let exp)? = e as? GoldenError else {
                    return XCTFail("\(e)", line: line)
                }
                XCTAssertEqual(c, "", line: line)
                XCTAssertEqual(k, key, line: line)
                XCTAssertTrue(exp.hasPrefix(expecting), exp, line: line)
            }
        }
        expectBad(try cfg["eps"].int, key: "eps", expecting: "an integer; found 1e-05")
        expectBad(try cfg["name"].double, key: "name", expecting: "a number; found \"max\"")
        expectBad(try cfg["missing"].string, key: "missing", expecting: "a string; the key is missing")
        expectBad(try cfg["bad"].ints, key: "bad[1]", expecting: "an integer; found 2.5")
        expectBad(try cfg["nested"]["b"]["x"].bool, key: "nested.b.x", expecting: "true or false")
        expectBad(try cfg["name"].string(oneOf: ["mean"]), key: "name", expecting: "one of \"mean\"")
        expectBad(try cfg["n"].bool(default: false), key: "n", expecting: "true or false; found 3.0")
        expectBad(try cfg["size"].object, key: "size", expecting: "an object")
        expectBad(try cfg.int, key: "<root>", expecting: "an integer")

        // The verifier names the case in config errors thrown by a runner.
        let golden = try GoldenCase.load(goldenURL("ops_relu"))
        let needsKey: CaseRunner = { g in
            _ = try g.config["kernel_size"].ints
            return CaseResult()
        }
        XCTAssertThrowsError(try Verifier.verify(golden, runner: needsKey)) { e in
            XCTAssertEqual("\(e)", "case 'ops_relu': config key 'kernel_size': expected an array of integers; the key is missing")
        }
        XCTAssertThrowsError(try golden.setting("op").int) { e in
            XCTAssertEqual("\(e)", "case 'ops_relu': config key 'op': expected an integer; found \"torch.nn.ReLU\"")
        }
    }

    func testToleranceRule() throws {
        let rule = try ToleranceRule(JSON.parse(#"{"forward": 1e-5, "grad": 1e-4, "per_tensor": {"grad.z": {"abs": 0.6}, "out.loose": {"rel": 0.25}}}"#))
        XCTAssertEqual(rule.bound(for: "out.y"), .relative(1e-5))
        XCTAssertEqual(rule.bound(for: "out.buffer.running_mean"), .relative(1e-5))
        XCTAssertEqual(rule.bound(for: "grad.in.x"), .relative(1e-4))
        XCTAssertEqual(rule.bound(for: "grad.z"), .absolute(0.6))
        XCTAssertEqual(rule.bound(for: "out.loose"), .relative(0.25))

        // ‖a − b‖ = 1, ‖b‖ = 5: relative error 0.2, max abs 1.
        let b = Tensor(shape: [2], data: [3, 4]), a = Tensor(shape: [2], data: [3, 5])
        let c = TensorComparison.compare(name: "out.loose", computed: a, golden: b, bound: rule.bound(for: "out.loose"))
        XCTAssertEqual(c.error, 0.2, accuracy: 1e-15)
        XCTAssertEqual(c.maxAbsError, 1)
        XCTAssertTrue(c.passed)
        XCTAssertFalse(TensorComparison.compare(name: "out.y", computed: a, golden: b, bound: .relative(0.19)).passed)
        // Zero golden: the error is absolute, ‖(0.3, 0.4)‖ = 0.5.
        let zero = Tensor.zeros([2]), small = Tensor(shape: [2], data: [0.3, 0.4])
        let cz = TensorComparison.compare(name: "grad.q", computed: small, golden: zero, bound: .relative(0.49))
        XCTAssertEqual(cz.error, 0.5, accuracy: 1e-7)
        XCTAssertFalse(cz.passed)
        // Absolute bound: ‖a − b‖ ≤ abs, whatever ‖b‖.
        let ca = TensorComparison.compare(name: "grad.z", computed: small, golden: Tensor(shape: [2], data: [1e-9, 0]),
                                          bound: rule.bound(for: "grad.z"))
        XCTAssertTrue(ca.passed)
        XCTAssertEqual(ca.error, 0.5, accuracy: 1e-7)
        // Non-finite values and shape mismatches fail.
        XCTAssertFalse(TensorComparison.compare(name: "out.y", computed: Tensor(shape: [2], data: [.nan, 4]),
                                                golden: b, bound: .relative(1)).passed)
        XCTAssertFalse(TensorComparison.compare(name: "out.y", computed: Tensor(shape: [2], data: [.infinity, 4]),
                                                golden: b, bound: .relative(.infinity)).passed)
        XCTAssertFalse(TensorComparison.compare(name: "out.y", computed: Tensor(shape: [1, 2], data: [3, 4]),
                                                golden: b, bound: .relative(1)).passed)
        // Integers: exact.
        XCTAssertTrue(TensorComparison.compare(name: "out.n", computed: ([2], [1, 2]), golden: ([2], [1, 2])).passed)
        let ci = TensorComparison.compare(name: "out.n", computed: ([2], [1, 4]), golden: ([2], [1, 2]))
        XCTAssertFalse(ci.passed)
        XCTAssertEqual(ci.maxAbsError, 2)
        XCTAssertEqual(formatError(1.5e-6), "1.500e-06")
        XCTAssertEqual(formatError(0), "0")
    }

    /// The `flmm verify-golden` command: output lines, summary, exit status.
    func testVerifyGoldenCommand() throws {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("flmm")
        guard FileManager.default.isExecutableFile(atPath: bin.path) else {
            throw XCTSkip("flmm binary not found next to the test bundle (\(bin.path))")
        }
        func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            let p = Process()
            p.executableURL = bin
            p.arguments = args
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let o = out.fileHandleForReading.readDataToEndOfFile()
            let e = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flmm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        let ok = try run(["verify-golden", goldenURL("ops_relu").path, goldenURL("ops_gelu").path,
                          "--save", dir.appendingPathComponent("saved").path])
        XCTAssertEqual(ok.status, 0, ok.out + ok.err)
        XCTAssertTrue(ok.out.hasSuffix("4 passed, 0 failed\n"), ok.out)
        XCTAssertEqual(ok.out.split(separator: "\n").filter { $0.hasPrefix("PASS") }.count, 4, ok.out)
        let saved = try SafeTensors.read(dir.appendingPathComponent("saved/ops_gelu.safetensors"))
        XCTAssertEqual(saved.names, ["grad.in.x", "out.y"])

        let corrupt = dir.appendingPathComponent("corrupt.safetensors")
        try Data([1, 2, 3]).write(to: corrupt)
        let bad = try run(["verify-golden", goldenURL("ops_relu").path, corrupt.path])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains(corrupt.path), bad.err)
        XCTAssertTrue(bad.out.hasSuffix("2 passed, 0 failed\n"), bad.out)
    }
}
