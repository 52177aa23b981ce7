// Case runners: softmax, norms, interpolation, max pooling and SAM's attention
// (ops_softmax, ops_layer_norm, ops_layer_norm_2d, ops_group_norm, ops_batch_norm_train,
// ops_batch_norm_eval, ops_interpolate_bilinear, ops_interpolate_nearest, ops_max_pool2d,
// ops_attention).
//
// Each runner rebuilds its op from `config` alone (shapes come from the `in.*` tensors), takes
// `in.*` and `param.*`, computes `out.*`, runs the backward scalar `config.backward` describes,
// and returns `out.*`, `out.buffer.*`, `grad.in.*` and `grad.param.*` under the golden names.
// Cases with variants use `in.<v>` → `out.<v>` with parameters `param.<v>.<key>`.

import Tensors

enum OpsNN {
    /// What one variant (or the whole case) computed, and the leaves whose gradients to report.
    struct Computed {
        var outputs: [String: Tensor] = [:]     // short output names ("y", "<v>")
        var inputs: [String: Tensor] = [:]      // golden names after "in."
        var params: [String: Tensor] = [:]      // golden names after "param."
    }

    /// Runs the backward pass and collects `out.*`, `grad.in.*`, `grad.param.*` (zeros for a
    /// parameter without a path to the scalar, as the golden files store).
    static func finish(_ golden: GoldenCase, _ c: Computed) throws -> CaseResult {
        try golden.runBackward(outputs: c.outputs)
        var r = CaseResult()
        for (k, y) in c.outputs { r.tensors["out.\(k)"] = y.detached() }
        for (k, x) in c.inputs { r.tensors["grad.in.\(k)"] = x.grad ?? Tensor.zeros(x.shape) }
        for (k, p) in c.params { r.tensors["grad.param.\(k)"] = p.grad ?? Tensor.zeros(p.shape) }
        return r
    }

    /// Variant names of a case with `config.variants`, in sorted order.
    static func variantNames(_ golden: GoldenCase) throws -> [(name: String, config: JSONField)] {
        try golden.setting("variants").members.map { ($0.key, $0.value) }
    }

    /// A parameter leaf `param.<key>` (requires grad) recorded in `c`.
    static func param(_ golden: GoldenCase, _ key: String, _ c: inout Computed) throws -> Tensor {
        let p = try golden.leaf("param.\(key)")
        c.params[key] = p
        return p
    }

    /// An input leaf `in.<key>` (requires grad) recorded in `c`.
    static func input(_ golden: GoldenCase, _ key: String, _ c: inout Computed) throws -> Tensor {
        let x = try golden.leaf("in.\(key)")
        c.inputs[key] = x
        return x
    }

    /// A config number or a per-axis pair ([h, w]) as (h, w).
    static func pair(_ f: JSONField) throws -> (Double, Double) {
        if case .array? = f.value {
            let v = try f.doubles
            guard v.count == 2 else { throw GoldenError.badConfig(case: f.caseName, key: f.path, expected: "2 numbers") }
            return (v[0], v[1])
        }
        let s = try f.double
        return (s, s)
    }

    // MARK: softmax

    static let softmax: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.softmax"])
        let dim = try golden.setting("dim").int
        var c = Computed()
        for (v, _) in try variantNames(golden) {
            c.outputs[v] = try input(golden, v, &c).softmax(dim: dim)
        }
        return try finish(golden, c)
    }

    // MARK: norms

    static let layerNorm: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.nn.LayerNorm"])
        var c = Computed()
        for (v, cfg) in try variantNames(golden) {
            let dim = try cfg["dim"].int
            let x = try input(golden, v, &c)
            let w = try param(golden, "\(v).weight", &c), b = try param(golden, "\(v).bias", &c)
            c.outputs[v] = Tensors.layerNorm(x, normalizedShape: [dim], weight: w, bias: b, eps: try cfg["eps"].double)
        }
        return try finish(golden, c)
    }

    static let layerNorm2d: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["segment_anything LayerNorm2d"])
        var c = Computed()
        let x = try input(golden, "x", &c)
        let w = try param(golden, "weight", &c), b = try param(golden, "bias", &c)
        let channels = try golden.setting("num_channels").int
        guard x.rank >= 2 && x.shape[1] == channels else {
            throw GoldenError.badConfig(case: golden.name, key: "num_channels", expected: "channel count of in.x \(x.shape)")
        }
        c.outputs["y"] = Tensors.layerNorm2d(x, weight: w, bias: b, eps: try golden.setting("eps").double)
        return try finish(golden, c)
    }

    static let groupNorm: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.nn.GroupNorm"])
        let eps = try golden.setting("eps").double
        var c = Computed()
        for (v, cfg) in try variantNames(golden) {
            let x = try input(golden, v, &c)
            let w = try param(golden, "\(v).weight", &c), b = try param(golden, "\(v).bias", &c)
            c.outputs[v] = Tensors.groupNorm(x, numGroups: try cfg["groups"].int, weight: w, bias: b, eps: eps)
        }
        return try finish(golden, c)
    }

    /// nn.BatchNorm2d in the mode `config.training` says; buffers after the forward as out.buffer.*.
    static let batchNorm: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["torch.nn.BatchNorm2d"])
        let training = try golden.setting("training").bool
        guard (try golden.setting("track_running_stats").bool(default: true)) else {
            throw GoldenError.badConfig(case: golden.name, key: "track_running_stats", expected: "true")
        }
        var c = Computed()
        let x = try input(golden, "x", &c)
        let w = try param(golden, "weight", &c), b = try param(golden, "bias", &c)
        let count = try golden.int64("param.num_batches_tracked").values.first ?? 0
        let state = BatchNormState(runningMean: try golden.leaf("param.running_mean", requiresGrad: false),
                                   runningVar: try golden.leaf("param.running_var", requiresGrad: false),
                                   numBatchesTracked: count,
                                   momentum: try golden.setting("momentum").optional?.double,
                                   eps: try golden.setting("eps").double)
        c.outputs["y"] = state(x, weight: w, bias: b, training: training)
        var r = try finish(golden, c)
        r.tensors["out.buffer.running_mean"] = state.runningMean.detached()
        r.tensors["out.buffer.running_var"] = state.runningVar.detached()
        r.int64s["out.buffer.num_batches_tracked"] = (shape: [], values: [state.numBatchesTracked])
        return r
    }

    // MARK: interpolation

    static let interpolateBilinear: CaseRunner = { golden in
        _ = try golden.setting("mode").string(oneOf: ["bilinear"])
        var c = Computed()
        for (v, cfg) in try variantNames(golden) {
            let x = try input(golden, v, &c)
            let ac = try cfg["align_corners"].bool(default: false)
            if let s = cfg["size"].optional {
                let hw = try s.ints
                c.outputs[v] = interpolate(x, size: (hw[0], hw[1]), mode: .bilinear, alignCorners: ac)
            } else {
                c.outputs[v] = interpolate(x, scaleFactor: try pair(cfg["scale_factor"]), mode: .bilinear, alignCorners: ac)
            }
        }
        return try finish(golden, c)
    }

    static let interpolateNearest: CaseRunner = { golden in
        _ = try golden.setting("mode").string(oneOf: ["nearest"])
        var c = Computed()
        for (v, cfg) in try variantNames(golden) {
            let x = try input(golden, v, &c)
            if let s = cfg["size"].optional {
                let hw = try s.ints
                c.outputs[v] = interpolate(x, size: (hw[0], hw[1]), mode: .nearest)
            } else {
                c.outputs[v] = interpolate(x, scaleFactor: try pair(cfg["scale_factor"]), mode: .nearest)
            }
        }
        return try finish(golden, c)
    }

    // MARK: pooling

    static let maxPool2d: CaseRunner = { golden in
        guard !(try golden.setting("ceil_mode").bool(default: false)) else {
            throw GoldenError.badConfig(case: golden.name, key: "ceil_mode", expected: "false (floor mode)")
        }
        let k = try golden.setting("kernel_size").int
        let s = try golden.setting("stride").optional?.int ?? k
        let p = try golden.setting("padding").int(default: 0)
        var c = Computed()
        for (v, _) in try variantNames(golden) {
            c.outputs[v] = Tensors.maxPool2d(try input(golden, v, &c), kernelSize: k, stride: s, padding: p)
        }
        return try finish(golden, c)
    }

    // MARK: attention

    /// segment_anything Attention per variant: in.<v>.q|k|v, param.<v>.{q,k,v,out}_proj.{weight,bias}.
    static let attention: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["segment_anything Attention"])
        var c = Computed()
        for (v, cfg) in try variantNames(golden) {
            let heads = try cfg["heads"].int
            func proj(_ name: String) throws -> (weight: Tensor, bias: Tensor?) {
                (try param(golden, "\(v).\(name).weight", &c), try param(golden, "\(v).\(name).bias", &c))
            }
            let q = try input(golden, "\(v).q", &c), k = try input(golden, "\(v).k", &c)
            let val = try input(golden, "\(v).v", &c)
            let qp = try proj("q_proj"), kp = try proj("k_proj"), vp = try proj("v_proj"), op = try proj("out_proj")
            guard qp.weight.shape[0] * (try cfg["rate"].int) == q.shape[2] else {
                throw GoldenError.badConfig(case: golden.name, key: "variants.\(v).rate",
                                            expected: "dim / rate = q_proj rows \(qp.weight.shape)")
            }
            c.outputs[v] = samAttention(q: q, k: k, v: val, qProj: qp, kProj: kp, vProj: vp, outProj: op, numHeads: heads)
        }
        return try finish(golden, c)
    }
}
