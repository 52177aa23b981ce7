// Case runners: F-LMM's grounding head — attention pipeline, losses, metrics
// (unet_head, unet_head_raw, unet_head_bn, flmm_attention_pipeline, loss_dice, loss_bce, metrics_iou).
// Each rebuilds its case from `config` and the tensors alone, for any shapes they describe.

import FLMM
import NN
import Tensors

enum FLMMHeadCases {
    /// An int64 tensor's values as Ints.
    static func ints(_ golden: GoldenCase, _ name: String) throws -> [Int] {
        try golden.int64(name).values.map { Int($0) }
    }

    /// An int64 tensor as a Float tensor (binary masks).
    static func floats(_ golden: GoldenCase, _ name: String) throws -> Tensor {
        let t = try golden.int64(name)
        return Tensor(shape: t.shape, data: t.values.map { Float($0) })
    }

    /// Throws unless the boolean setting `key` is `value` (the only form implemented).
    static func require(_ golden: GoldenCase, _ key: String, _ value: Bool) throws {
        guard try golden.setting(key).bool == value else {
            throw GoldenError.badConfig(case: golden.name, key: key, expected: "\(value) (the only supported value)")
        }
    }

    /// `out.<name>` detached for every computed output, `grad.param.<key>` for the module.
    static func result(outputs: [String: Tensor], inputs: [String: Tensor], module: (any Module)? = nil) -> CaseResult {
        var r = CaseResult()
        for (k, y) in outputs { r.tensors["out.\(k)"] = y.detached() }
        for (k, x) in inputs { if let g = x.grad { r.tensors["grad.in.\(k)"] = g } }
        for (k, p) in module?.namedParameters() ?? [] {
            r.tensors["grad.param.\(k)"] = p.grad ?? Tensor.zeros(p.shape)
        }
        return r
    }

    /// Attention → phrase maps (DeepSeek-VL layout: image tokens by id on the config's grid),
    /// text_layer_weights softmax, weighted hidden states and text_proj per phrase.
    static let attentionPipeline: CaseRunner = { golden in
        let layers = try golden.setting("num_layers").int
        let hidden = try golden.setting("hidden_size").int
        let grid = try golden.setting("grid_hw").ints
        guard grid.count == 2 else { throw GoldenError.badConfig(case: golden.name, key: "grid_hw", expected: "[h, w]") }
        let numMasks = try golden.setting("num_masks").int
        let layout = DeepSeekVLLayout(imageTokenID: try golden.setting("image_token_id").int,
                                      gridHeight: grid[0], gridWidth: grid[1])
        var rng = PhiloxRNG(seed: 0)
        let text = TextEmbedding(layers: layers, hiddenSize: hidden, embedDim: try golden.setting("embed_dim").int, rng: &rng)
        try text.load(stateDict: golden.stateDict())
        let attentions = try golden.leaf("in.attentions"), hiddenStates = try golden.leaf("in.hidden_states")
        let inputIDs = try ints(golden, "in.input_ids"), maskIDs = try ints(golden, "in.mask_ids")
        var outs: [String: Tensor] = [:]
        for name in try golden.setting("merges").strings {
            guard let merge = PhraseMerge(rawValue: name) else {
                throw GoldenError.badConfig(case: golden.name, key: "merges", expected: "\"mean\" or \"max\", found \"\(name)\"")
            }
            outs["mask_attentions_\(name)"] = try AttentionMaps.extract(
                attentions: attentions, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: numMasks, layout: layout, merge: merge)
        }
        outs["layer_weights"] = text.layerWeights()
        let (weighted, embeddings) = try text(hiddenStates: hiddenStates, maskIDs: maskIDs, numMasks: numMasks)
        outs["hidden_weighted"] = weighted
        for (k, e) in embeddings.enumerated() { outs["text_embeds.\(k)"] = e }
        try golden.runBackward(outputs: outs)
        return result(outputs: outs, inputs: ["attentions": attentions, "hidden_states": hiddenStates], module: text)
    }

    /// mmdet DiceLoss as F-LMM calls it: loss (avg_factor from the config) and per-mask values.
    static let dice: CaseRunner = { golden in
        try require(golden, "use_sigmoid", true)
        let eps = try golden.setting("eps").float
        let naive = try golden.setting("naive_dice").bool
        let activate = try golden.setting("activate").bool
        let weight = try golden.setting("loss_weight").float
        let reduction = try golden.setting("reduction").string(oneOf: ["mean"])
        let avgFactor = try golden.setting("avg_factor").optional?.double
        let pred = try golden.leaf("in.pred"), target = try golden.tensor("in.target")
        let m = pred.shape[0]
        let p2 = pred.reshape([m, -1]), t2 = target.reshape([m, -1])
        let loss = diceLoss(p2, t2, eps: eps, naiveDice: naive, activate: activate,
                            reduction: LossReduction(rawValue: reduction)!, avgFactor: avgFactor, lossWeight: weight)
        let perMask = Autograd.noGrad {
            diceLoss(p2, t2, eps: eps, naiveDice: naive, activate: activate, reduction: .none, lossWeight: weight)
        }
        try golden.runBackward(outputs: ["loss": loss])
        return result(outputs: ["loss": loss, "per_mask": perMask], inputs: ["pred": pred])
    }

    /// mmdet CrossEntropyLoss(use_sigmoid=True) as F-LMM calls it (flattened, avg_factor).
    static let bce: CaseRunner = { golden in
        try require(golden, "use_sigmoid", true)
        try require(golden, "avg_non_ignore", false)
        let weight = try golden.setting("loss_weight").float
        let reduction = try golden.setting("reduction").string(oneOf: ["mean"])
        let avgFactor = try golden.setting("avg_factor").optional?.double
        let ignore = try golden.setting("ignore_index").float
        let pred = try golden.leaf("in.pred"), target = try golden.tensor("in.target")
        let loss = sigmoidBinaryCrossEntropy(pred.reshape([-1]), target.reshape([-1]),
                                             reduction: LossReduction(rawValue: reduction)!, avgFactor: avgFactor,
                                             lossWeight: weight, ignoreIndex: ignore)
        try golden.runBackward(outputs: ["loss": loss])
        return result(outputs: ["loss": loss], inputs: ["pred": pred])
    }

    /// IoU metrics (RefSegMetric, F-LMM's PNG evaluation) of binary masks [N, H, W].
    static let metrics: CaseRunner = { golden in
        let pred = try floats(golden, "in.pred"), gt = try floats(golden, "in.gt")
        let scores = SegmentationScores(pred: pred, gt: gt)
        let n = scores.objects.count
        var r = CaseResult()
        r.int64s["out.intersection"] = ([n], scores.objects.map { Int64($0.intersection) })
        r.int64s["out.union"] = ([n], scores.objects.map { Int64($0.union) })
        r.tensors["out.iou"] = Tensor(shape: [n], data: scores.ious)
        r.tensors["out.miou"] = Tensor(scalar: scores.mIoU)
        r.tensors["out.ciou"] = Tensor(scalar: scores.cIoU)
        r.tensors["out.precision_at_0_5"] = Tensor(scalar: scores.precision(above: 0.5))
        r.tensors["out.pixel_acc"] = Tensor(shape: [n], data: pixelAccuracy(pred: pred, gt: gt))
        r.tensors["out.aiou"] = Tensor(scalar: Float(scores.averageRecall))
        return r
    }

    /// The UNetHead's configuration from a unet_head* case's config (mmseg UNet keys).
    static func unetConfig(_ golden: GoldenCase) throws -> UNetHeadConfig {
        var c = UNetHeadConfig(inChannels: try golden.setting("in_channels").int)
        c.baseChannels = try golden.setting("base_channels").int
        c.numStages = try golden.setting("num_stages").int
        c.strides = try golden.setting("strides").ints
        c.encNumConvs = try golden.setting("enc_num_convs").ints
        c.decNumConvs = try golden.setting("dec_num_convs").ints
        c.downsamples = try golden.setting("downsamples").array.map { try $0.bool }
        c.encDilations = try golden.setting("enc_dilations").ints
        c.decDilations = try golden.setting("dec_dilations").ints
        c.upsampleInput = try golden.setting("upsample_input").optional?.int
        c.normalizeInput = try golden.setting("normalize_input").bool
        let norm = golden.setting("norm_cfg")
        switch try norm["type"].string(oneOf: ["GN", "BN"]) {
        case "GN": c.norm = .groupNorm(numGroups: try norm["num_groups"].int, eps: try norm["eps"].double(default: 1e-5))
        default: c.norm = .batchNorm(eps: try norm["eps"].double(default: 1e-5), momentum: try norm["momentum"].optional?.double)
        }
        // The fixed parts of F-LMM's UNetHead that this implementation hard-wires.
        _ = try golden.setting("act").string(oneOf: ["ReLU"])
        let up = golden.setting("upsample_cfg")
        _ = try up["type"].string(oneOf: ["InterpConv"])
        _ = try up["mode"].string(oneOf: ["bilinear"])
        guard try up["scale_factor"].double == 2, try !up["align_corners"].bool, try !up["conv_first"].bool,
              try up["conv_kernel_size"].int == 1 else {
            throw GoldenError.badConfig(case: golden.name, key: "upsample_cfg",
                                        expected: "scale_factor 2, align_corners false, conv_first false, conv_kernel_size 1")
        }
        guard try golden.setting("maxpool")["kernel_size"].int == 2, try golden.setting("maxpool")["stride"].int == 2 else {
            throw GoldenError.badConfig(case: golden.name, key: "maxpool", expected: "kernel_size 2, stride 2")
        }
        guard try golden.setting("pad_multiple").int == 1 << (c.numStages - 1) else {
            throw GoldenError.badConfig(case: golden.name, key: "pad_multiple", expected: "2^(num_stages - 1)")
        }
        guard try golden.setting("normalize_clamp_min").double == 1e-12 else {
            throw GoldenError.badConfig(case: golden.name, key: "normalize_clamp_min", expected: "1e-12")
        }
        return c
    }

    /// unet_head / unet_head_raw / unet_head_bn: F-LMM's UNetHead in training mode; out.y, the
    /// gradients of in.x and every parameter, and (BatchNorm) the updated buffers.
    static let unetHead: CaseRunner = { golden in
        var rng = PhiloxRNG(seed: 0)
        let head = UNetHead(try unetConfig(golden), rng: &rng)
        var state = golden.stateDict()
        for (k, t) in golden.int64s where k.hasPrefix("param.") {
            state[String(k.dropFirst(6))] = Tensor(shape: t.shape, data: t.values.map { Float($0) })
        }
        try head.load(stateDict: state)
        head.train()
        let x = try golden.leaf("in.x")
        let y = try head(x)
        try golden.runBackward(outputs: ["y": y])
        var r = result(outputs: ["y": y], inputs: ["x": x], module: head)
        for (k, b) in head.namedBuffers() {
            if k.hasSuffix("num_batches_tracked") {
                r.int64s["out.buffer.\(k)"] = (b.shape, b.data.map { Int64($0) })
            } else {
                r.tensors["out.buffer.\(k)"] = b.detached()
            }
        }
        return r
    }
}
