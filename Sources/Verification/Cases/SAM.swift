// Case runners: SAM's modules and F-LMM's prompt construction (sam_prompt_encoder,
// sam_mask_decoder_small, sam_mask_decoder_full, sam_image_encoder_tiny, sam_postprocess,
// flmm_sam_prompts). Each rebuilds the module from `config` alone (any shapes it describes),
// loads `param.*` strictly, runs the forward and the backward `config.backward` describes.

import FLMM
import NN
import SegmentAnything
import Tensors

/// Runners and config readers for the SAM cases (the config readers are public so that tests
/// and tools can build a SAM from a golden file's or checkpoint's `config`).
public enum SAMCases {
    // MARK: configs

    public static func promptEncoderConfig(_ c: JSONField) throws -> PromptEncoderConfig {
        _ = try c["activation"].string(oneOf: ["GELU(exact)"])
        let emb = try c["image_embedding_size"].ints, inp = try c["input_image_size"].ints
        guard emb.count == 2, inp.count == 2 else {
            throw GoldenError.badConfig(case: c.caseName, key: "image_embedding_size / input_image_size", expected: "[h, w] pairs")
        }
        let e = try c["embed_dim"].int
        if let f = try c["pe_num_pos_feats"].optional?.int, f != e / 2 {
            throw GoldenError.badConfig(case: c.caseName, key: "pe_num_pos_feats", expected: "embed_dim / 2 = \(e / 2)")
        }
        return PromptEncoderConfig(embedDim: e, imageEmbeddingSize: (emb[0], emb[1]), inputImageSize: (inp[0], inp[1]),
                                   maskInChans: try c["mask_in_chans"].int,
                                   layerNorm2dEps: try c["layer_norm_2d_eps"].double(default: 1e-6))
    }

    public static func maskDecoderConfig(_ c: JSONField) throws -> MaskDecoderConfig {
        _ = try c["transformer_mlp_activation"].string(oneOf: ["ReLU"])
        _ = try c["upscaling_activation"].string(oneOf: ["GELU(exact)"])
        return MaskDecoderConfig(transformerDim: try c["transformer_dim"].int, depth: try c["depth"].int,
                                 numHeads: try c["num_heads"].int, mlpDim: try c["mlp_dim"].int,
                                 attentionDownsampleRate: try c["attention_downsample_rate"].int,
                                 numMultimaskOutputs: try c["num_multimask_outputs"].int,
                                 iouHeadDepth: try c["iou_head_depth"].int,
                                 iouHeadHiddenDim: try c["iou_head_hidden_dim"].int,
                                 layerNormEps: try c["layer_norm_eps"].double(default: 1e-5),
                                 layerNorm2dEps: try c["layer_norm_2d_eps"].double(default: 1e-6))
    }

    public static func imageEncoderConfig(_ c: JSONField) throws -> ImageEncoderConfig {
        _ = try c["act"].string(oneOf: ["GELU(exact)"])
        return ImageEncoderConfig(imgSize: try c["img_size"].int, patchSize: try c["patch_size"].int,
                                  inChans: try c["in_chans"].int, embedDim: try c["embed_dim"].int,
                                  depth: try c["depth"].int, numHeads: try c["num_heads"].int,
                                  mlpRatio: try c["mlp_ratio"].double, outChans: try c["out_chans"].int,
                                  qkvBias: try c["qkv_bias"].bool, useAbsPos: try c["use_abs_pos"].bool,
                                  useRelPos: try c["use_rel_pos"].bool, windowSize: try c["window_size"].int,
                                  globalAttnIndexes: try c["global_attn_indexes"].ints,
                                  layerNormEps: try c["layer_norm_eps"].double(default: 1e-6),
                                  neckLayerNorm2dEps: try c["neck_layer_norm_2d_eps"].double(default: 1e-6))
    }

    /// A SamConfig from a config with `image_encoder`, `prompt_encoder`, `mask_decoder`,
    /// `pixel_mean`, `pixel_std` (checkpoint_tiny_sam's metadata).
    public static func samConfig(_ c: JSONField) throws -> SamConfig {
        SamConfig(imageEncoder: try imageEncoderConfig(c["image_encoder"]),
                  promptEncoder: try promptEncoderConfig(c["prompt_encoder"]),
                  maskDecoder: try maskDecoderConfig(c["mask_decoder"]),
                  pixelMean: try c["pixel_mean"].optional?.floats ?? SamConfig.defaultPixelMean,
                  pixelStd: try c["pixel_std"].optional?.floats ?? SamConfig.defaultPixelStd)
    }

    static func pair(_ f: JSONField) throws -> (Int, Int) {
        let v = try f.ints
        guard v.count == 2 else { throw GoldenError.badConfig(case: f.caseName, key: f.path, expected: "[h, w]") }
        return (v[0], v[1])
    }

    // MARK: helpers

    /// The whole config as a field whose errors name the case.
    static func root(_ g: GoldenCase) -> JSONField { JSONField(path: "", value: g.config, caseName: g.name) }

    /// `grad.param.<key>` for every parameter of `module` (zeros where no gradient arrived, as
    /// PyTorch's allow_unused gives), keys prefixed with `keyPrefix`.
    static func paramGrads(_ module: any Module, keyPrefix: String = "") -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, p) in module.namedParameters() {
            out["grad.param." + keyPrefix + k] = p.grad ?? Tensor.zeros(p.shape)
        }
        return out
    }

    /// Leaves for the inputs `config.backward.wrt` lists (requiring gradients), others plain.
    static func inputs(_ golden: GoldenCase, _ names: [String]) throws -> [String: Tensor] {
        let wrt = Set(try golden.setting("backward")["wrt"].optional?.strings ?? [])
        var out: [String: Tensor] = [:]
        for n in names { out[n] = try golden.leaf("in." + n, requiresGrad: wrt.contains("in." + n)) }
        return out
    }

    static func collect(_ result: inout CaseResult, _ outs: [String: Tensor], _ ins: [String: Tensor]) {
        for (k, v) in outs { result.tensors["out." + k] = v.detached() }
        for (k, v) in ins { if let g = v.grad { result.tensors["grad.in." + k] = g } }
    }

    // MARK: runners

    static let promptEncoder: CaseRunner = { golden in
        let cfg = try promptEncoderConfig(root(golden))
        var rng = PhiloxRNG(seed: 0)
        let pe = PromptEncoder(cfg, rng: &rng)
        try pe.load(stateDict: golden.stateDict())
        let ins = try inputs(golden, ["boxes", "masks", "boxes_nomask"])
        let (sparse, dense) = pe(boxes: ins["boxes"], masks: ins["masks"])
        let (s2, d2) = pe(boxes: ins["boxes_nomask"])
        let outs = ["sparse": sparse, "dense": dense, "dense_pe": pe.getDensePE(), "nomask_sparse": s2,
                    "nomask_dense": d2]
        try golden.runBackward(outputs: outs)
        var r = CaseResult()
        collect(&r, outs, ins)
        r.tensors.merge(paramGrads(pe)) { a, _ in a }
        return r
    }

    static let maskDecoder: CaseRunner = { golden in
        let cfg = try maskDecoderConfig(root(golden))
        let multimask = try golden.setting("multimask_output").bool(default: false)
        var rng = PhiloxRNG(seed: 0)
        let md = MaskDecoder(cfg, rng: &rng)
        try md.load(stateDict: golden.stateDict())
        let backward = try golden.setting("backward")["mode"].string
        let ins = try inputs(golden, ["image_embeddings", "image_pe", "sparse_prompt_embeddings",
                                      "dense_prompt_embeddings"])
        func run() -> [String: Tensor] {
            let (masks, iou) = md(imageEmbeddings: ins["image_embeddings"]!, imagePE: ins["image_pe"]!,
                                  sparsePromptEmbeddings: ins["sparse_prompt_embeddings"]!,
                                  densePromptEmbeddings: ins["dense_prompt_embeddings"]!, multimaskOutput: multimask)
            return ["masks": masks, "iou_pred": iou]
        }
        var r = CaseResult()
        if backward == "none" {
            collect(&r, Autograd.noGrad { run() }, [:])
            return r
        }
        let outs = run()
        try golden.runBackward(outputs: outs)
        collect(&r, outs, ins)
        r.tensors.merge(paramGrads(md)) { a, _ in a }
        return r
    }

    static let imageEncoder: CaseRunner = { golden in
        let c = root(golden)
        let cfg = try imageEncoderConfig(c)
        var rng = PhiloxRNG(seed: 0)
        let enc = ImageEncoderViT(cfg, rng: &rng)
        try enc.load(stateDict: golden.stateDict())
        let image = try golden.tensor("in.image")
        let mean = try c["pixel_mean"].floats, std = try c["pixel_std"].floats
        let outs: [String: Tensor] = Autograd.noGrad {
            let x = Sam.preprocess(image, pixelMean: mean, pixelStd: std, imgSize: cfg.imgSize)
            return ["preprocessed": x, "image_embedding": enc(x)]
        }
        var r = CaseResult()
        collect(&r, outs, [:])
        return r
    }

    static let postprocess: CaseRunner = { golden in
        _ = try golden.setting("op").string(oneOf: ["Sam.postprocess_masks"])
        let ins = try inputs(golden, ["masks"])
        let y = Sam.postprocessMasks(ins["masks"]!, inputSize: try pair(golden.setting("input_size")),
                                     originalSize: try pair(golden.setting("original_size")),
                                     imgSize: try golden.setting("img_size").int)
        try golden.runBackward(outputs: ["masks": y])
        var r = CaseResult()
        collect(&r, ["masks": y], ins)
        return r
    }

    static let flmmPrompts: CaseRunner = { golden in
        let original = try pair(golden.setting("original_image_size"))
        let img = try golden.setting("img_size").int
        let p = try golden.setting("prompt_mask_size").int
        let expectedInput = ResizeLongestSide(img).preprocessShape(original)
        if try pair(golden.setting("sam_input_size")) != expectedInput {
            throw GoldenError.badConfig(case: golden.name, key: "sam_input_size",
                                        expected: "ResizeLongestSide(\(img)) of \(original) = \(expectedInput)")
        }
        let ins = try inputs(golden, ["pred_masks"])
        let pr = MaskRefiner.prompts(predMasks: ins["pred_masks"]!, originalSize: original, imgSize: img,
                                     promptMaskSize: (p, p))
        let outs = ["prompt_masks": pr.promptMasks]
        try golden.runBackward(outputs: outs)
        var r = CaseResult()
        collect(&r, promptOutputs(pr), ins)
        return r
    }

    /// The prompt tensors under their golden names (flmm_sam_prompts, flmm_step).
    static func promptOutputs(_ pr: RefinerPrompts) -> [String: Tensor] {
        let m = pr.boxes.count
        return ["prompt_masks": pr.promptMasks, "pad_value": Tensor(scalar: pr.padValue),
                "box_probs": pr.boxProbs, "box_binary_masks": pr.boxBinaryMasks,
                "boxes_original": Tensor(shape: [m, 4], data: pr.boxesOriginal.flatMap { $0.map { Float($0) } }),
                "boxes": Tensor(shape: [m, 4], data: pr.boxes.flatMap { $0.map { Float($0) } })]
    }
}
