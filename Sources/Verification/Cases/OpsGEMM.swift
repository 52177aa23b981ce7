// Case runners: ops built on GEMM (ops_linear, ops_matmul_batched, ops_conv2d, ops_conv_transpose2d).
//
// Each case has several variants v: inputs `in.<v>` (matmul: `in.<v>.a`, `in.<v>.b`),
// parameters `param.<v>.weight` / `param.<v>.bias`, outputs `out.<v>`. A runner rebuilds each
// variant from `config.variants.<v>` (any shapes), checks the file's tensors against it, runs
// the op, then the backward scalar Σ_v (out_v · upstream.<v>).sum(), and returns `out.*` and
// the gradients of the leaves listed in `config.backward.wrt` under their golden names.

import Tensors

enum OpsGEMM {
    /// The leaves of one case and the outputs computed from them.
    struct Run {
        let golden: GoldenCase
        var outputs: [String: Tensor] = [:]
        var leaves: [(name: String, tensor: Tensor)] = []
        let wrt: [String]?

        init(_ golden: GoldenCase) throws {
            self.golden = golden
            wrt = try golden.setting("backward")["wrt"].optional?.strings
        }

        /// Whether the backward asks for the gradient of `name` (`in.x`, `param.v.weight`).
        func wants(_ name: String) -> Bool {
            guard let wrt else { return true }
            return wrt.contains(name) || (name.hasPrefix("param.") && wrt.contains("param.*"))
        }

        /// The file's tensor `name` as a leaf, checked to have `shape`.
        mutating func leaf(_ name: String, shape: [Int]) throws -> Tensor {
            let t = try golden.leaf(name, requiresGrad: wants(name))
            guard t.shape == shape else {
                throw GoldenError.badConfig(case: golden.name, key: name,
                                            expected: "shape \(shape) from the config; the file has \(t.shape)")
            }
            leaves.append((name, t))
            return t
        }

        /// Runs the backward and collects `out.*` and `grad.*`.
        func finish() throws -> CaseResult {
            try golden.runBackward(outputs: outputs)
            var result = CaseResult()
            for (v, y) in outputs { result.tensors["out.\(v)"] = y.detached() }
            for (name, t) in leaves where wants(name) {
                if let g = t.grad { result.tensors["grad.\(name)"] = g }
            }
            return result
        }
    }

    /// An int or an [h, w] pair from a config field.
    static func pair(_ f: JSONField) throws -> (Int, Int) {
        if let v = try? f.int { return (v, v) }
        let a = try f.ints
        guard a.count == 2 else { throw f.fail("an int or an [h, w] pair") }
        return (a[0], a[1])
    }

    /// `variant[key]` if present, else the case-level `key`, else `fallback`.
    static func setting(_ golden: GoldenCase, _ variant: JSONField, _ key: String,
                        default fallback: (Int, Int)) throws -> (Int, Int) {
        if variant[key].exists { return try pair(variant[key]) }
        if golden.setting(key).exists { return try pair(golden.setting(key)) }
        return fallback
    }

    /// ops_linear: nn.Linear(fin, fout, bias) on x [shape..., fin].
    static let linear: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.nn.Linear"])
        var run = try Run(golden)
        for (v, p) in try golden.setting("variants").members {
            let fin = try p["fin"].int, fout = try p["fout"].int
            let x = try run.leaf("in.\(v)", shape: try p["shape"].ints + [fin])
            let w = try run.leaf("param.\(v).weight", shape: [fout, fin])
            let b = try p["bias"].bool ? try run.leaf("param.\(v).bias", shape: [fout]) : nil
            run.outputs[v] = Tensors.linear(x, weight: w, bias: b)
        }
        return try run.finish()
    }

    /// ops_matmul_batched: torch.matmul(a, b) with batch broadcasting.
    static let matmul: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.matmul"])
        var run = try Run(golden)
        for (v, p) in try golden.setting("variants").members {
            let a = try run.leaf("in.\(v).a", shape: try p["a"].ints)
            let b = try run.leaf("in.\(v).b", shape: try p["b"].ints)
            run.outputs[v] = Tensors.matmul(a, b)
        }
        return try run.finish()
    }

    /// ops_conv2d: nn.Conv2d(cin, cout, k, stride, padding, dilation, bias), groups 1, zero padding,
    /// on [batch, cin, hw...]. k, stride, padding, dilation may be ints or [h, w] pairs.
    static let conv2d: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.nn.Conv2d"])
        guard try golden.setting("groups").int(default: 1) == 1 else {
            throw GoldenError.badConfig(case: golden.name, key: "groups", expected: "1 (grouped convolution is not supported)")
        }
        _ = try golden.setting("padding_mode").optional?.string(oneOf: ["zeros"])
        var run = try Run(golden)
        for (v, p) in try golden.setting("variants").members {
            let n = try p["batch"].exists ? p["batch"].int : golden.setting("batch").int
            let cin = try p["cin"].int, cout = try p["cout"].int
            let hw = try p["hw"].ints
            let k = try pair(p["k"])
            let x = try run.leaf("in.\(v)", shape: [n, cin] + hw)
            let w = try run.leaf("param.\(v).weight", shape: [cout, cin, k.0, k.1])
            let b = try p["bias"].bool ? try run.leaf("param.\(v).bias", shape: [cout]) : nil
            run.outputs[v] = Tensors.conv2d(x, weight: w, bias: b,
                                            stride: try setting(golden, p, "stride", default: (1, 1)),
                                            padding: try setting(golden, p, "padding", default: (0, 0)),
                                            dilation: try setting(golden, p, "dilation", default: (1, 1)))
        }
        return try run.finish()
    }

    /// ops_conv_transpose2d: nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding) on
    /// [n, cin, hw...]; settings per variant or for the whole case.
    static let convTranspose2d: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.nn.ConvTranspose2d"])
        var run = try Run(golden)
        for (v, p) in try golden.setting("variants").members {
            let n = try p["n"].int
            let cin = try p["cin"].int, cout = try p["cout"].int
            let hw = try p["hw"].ints
            let k = try setting(golden, p, "kernel_size", default: (0, 0))
            guard k.0 > 0 && k.1 > 0 else { throw golden.setting("kernel_size").fail("a kernel size") }
            let hasBias = p["bias"].exists ? try p["bias"].bool : try golden.setting("bias").bool(default: true)
            let x = try run.leaf("in.\(v)", shape: [n, cin] + hw)
            let w = try run.leaf("param.\(v).weight", shape: [cin, cout, k.0, k.1])
            let b = hasBias ? try run.leaf("param.\(v).bias", shape: [cout]) : nil
            run.outputs[v] = Tensors.convTranspose2d(
                x, weight: w, bias: b,
                stride: try setting(golden, p, "stride", default: (1, 1)),
                padding: try setting(golden, p, "padding", default: (0, 0)),
                outputPadding: try setting(golden, p, "output_padding", default: (0, 0)),
                dilation: try setting(golden, p, "dilation", default: (1, 1)))
        }
        return try run.finish()
    }
}
