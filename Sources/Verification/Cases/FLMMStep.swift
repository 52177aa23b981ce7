// Case runner: flmm_step, F-LMM's whole training step for one sample (FLMMModel.step) rebuilt
// from its config: LMM dims and DeepSeek-VL image-token layout, the U-Net head config, SAM's
// prompt encoder and mask decoder (no image encoder: the embedding is an input), the refiner's
// switches, the padding meta and the image sizes.

import FLMM
import NN
import SegmentAnything
import Tensors

enum FLMMStepCase {
    static let run: CaseRunner = { golden in
        let c = SAMCases.root(golden)
        let llm = c["llm"]
        let (layers, hidden) = (try llm["num_layers"].int, try llm["hidden_size"].int)
        let grid = try SAMCases.pair(c["grid_hw"])
        let numMasks = try c["num_masks"].int
        guard let merge = PhraseMerge(rawValue: try c["merge"].string(oneOf: ["mean", "max"])) else {
            throw GoldenError.badConfig(case: golden.name, key: "merge", expected: "mean or max")
        }
        // The U-Net config is read by the U-Net cases' reader, from the mask_head object.
        guard let maskHeadJSON = c["mask_head"].value else {
            throw GoldenError.badConfig(case: golden.name, key: "mask_head", expected: "an object")
        }
        let headConfig = try FLMMHeadCases.unetConfig(GoldenCase(name: golden.name, config: maskHeadJSON, tensors: [:],
                                                                  int64s: [:], names: []))
        // The losses FLMM implements: mmdet's naive Dice (eps 1) and sigmoid BCE, weight 1.
        let dice = c["loss_dice"], bce = c["loss_mask"]
        guard try dice["naive_dice"].bool, try dice["use_sigmoid"].bool, try dice["activate"].bool,
              try dice["eps"].double == 1, try dice["loss_weight"].double == 1,
              try bce["use_sigmoid"].bool, try bce["loss_weight"].double == 1 else {
            throw GoldenError.badConfig(case: golden.name, key: "loss_dice / loss_mask",
                                        expected: "naive sigmoid Dice with eps 1 and sigmoid BCE, both weight 1")
        }

        let s = c["sam"]
        let img = try s["img_size"].int
        let pe = try SAMCases.promptEncoderConfig(s["prompt_encoder"])
        let md = try SAMCases.maskDecoderConfig(s["mask_decoder"])
        guard try s["prompt_mask_size"].int == pe.maskInputSize.0, pe.inputImageSize == (img, img) else {
            throw GoldenError.badConfig(case: golden.name, key: "sam.prompt_mask_size",
                                        expected: "4 × the image embedding, with input_image_size = img_size")
        }
        // No image encoder is built (the embedding is given); its config only fixes img_size.
        let encoder = ImageEncoderConfig(imgSize: img, patchSize: img / pe.imageEmbeddingSize.0, embedDim: pe.embedDim,
                                         depth: 0, numHeads: 1, outChans: pe.embedDim, globalAttnIndexes: [])
        var rng = PhiloxRNG(seed: 0)
        let samModel = Sam(SamConfig(imageEncoder: encoder, promptEncoder: pe, maskDecoder: md),
                           includeImageEncoder: false, rng: &rng)
        let options = RefinerOptions(useText: try s["use_text"].bool, useMask: try s["use_mask"].bool,
                                     useBox: try s["use_box"].bool, multimaskOutput: try s["multimask_output"].bool)
        let model = FLMMModel(maskHead: UNetHead(headConfig, rng: &rng),
                              text: TextEmbedding(layers: layers, hiddenSize: hidden, embedDim: pe.embedDim, rng: &rng),
                              sam: MaskRefiner(sam: samModel, options: options), merge: merge)
        try model.load(stateDict: golden.stateDict())
        model.train()

        let original = try SAMCases.pair(c["original_image_size"])
        let expectedInput = ResizeLongestSide(img).preprocessShape(original)
        guard try SAMCases.pair(c["sam_input_size"]) == expectedInput else {
            throw GoldenError.badConfig(case: golden.name, key: "sam_input_size",
                                        expected: "ResizeLongestSide(\(img)) of \(original) = \(expectedInput)")
        }
        let meta = c["meta"]
        let padded = try SAMCases.pair(meta["padded_shape"]), imageShape = try SAMCases.pair(meta["image_shape"])
        let (beforeH, beforeW) = (try meta["before_height"].int, try meta["before_width"].int)
        let unpad: (Int, Int) -> (top: Int, left: Int, height: Int, width: Int) = { hm, wm in
            (Int(Double(beforeH * hm) / Double(padded.0)), Int(Double(beforeW * wm) / Double(padded.1)),
             Int(Double(imageShape.0 * hm) / Double(padded.0) + 0.5), Int(Double(imageShape.1 * wm) / Double(padded.1) + 0.5))
        }
        let imageEmbedding = try golden.leaf("in.image_embedding")
        let sample = FLMMSample(attentions: try golden.leaf("in.attentions", requiresGrad: false),
                                hiddenStates: try golden.leaf("in.hidden_states", requiresGrad: false),
                                inputIDs: try FLMMHeadCases.ints(golden, "in.input_ids"),
                                maskIDs: try FLMMHeadCases.ints(golden, "in.mask_ids"), numMasks: numMasks,
                                imageEmbedding: imageEmbedding, gtMasks: try FLMMHeadCases.floats(golden, "in.gt_masks"),
                                originalSize: original, unpadRegion: unpad)
        let layout = DeepSeekVLLayout(imageTokenID: try c["image_token_id"].int, gridHeight: grid.0, gridWidth: grid.1)
        let o = try model.step(sample, layout: layout)
        // The model was built with its refiner on (FLMMModel.useRefiner's default).
        guard let refiner = o.refiner, let samLossMask = o.samLossMask, let samLossDice = o.samLossDice,
              let samAccuracy = o.samAccuracy, let samAiou = o.samAiou else {
            preconditionFailure("flmm_step: the step ran without the SAM refiner")
        }

        var outs: [String: Tensor] = [
            "mask_attentions": o.maskAttentions, "hidden_weighted": o.hiddenWeighted,
            "pred_masks_padded": o.predMasksPadded, "pred_masks": o.predMasks, "gt_masks": o.gtMasks,
            "sam_gt_masks": o.samGTMasks, "sam_pred_masks": refiner.masks,
            "dense_embeddings": refiner.denseEmbeddings, "low_res_masks": refiner.lowResMasks,
            "iou_predictions": refiner.iouPredictions,
            "loss_mask": o.lossMask, "loss_dice": o.lossDice, "sam_loss_mask": samLossMask,
            "sam_loss_dice": samLossDice, "loss": o.loss,
            "accuracy": Tensor(scalar: o.accuracy), "aiou": Tensor(scalar: o.aiou),
            "sam_accuracy": Tensor(scalar: samAccuracy), "sam_aiou": Tensor(scalar: samAiou),
        ]
        outs.merge(SAMCases.promptOutputs(refiner.prompts)) { a, _ in a }
        for (m, t) in o.textEmbeds.enumerated() { outs["text_embeds.\(m)"] = t }
        for (m, t) in refiner.sparseEmbeddings.enumerated() { outs["sparse_embeddings.\(m)"] = t }
        try golden.runBackward(outputs: outs)
        var r = CaseResult()
        SAMCases.collect(&r, outs, ["image_embedding": imageEmbedding])
        r.tensors.merge(SAMCases.paramGrads(model)) { a, _ in a }
        return r
    }
}
