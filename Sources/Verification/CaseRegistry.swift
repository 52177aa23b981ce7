// Every golden case this toolkit can rebuild, by case name.

/// Runs a case: rebuilds it from `config`, returns the computed `out.*` / `grad.*`.
public typealias CaseRunner = @Sendable (GoldenCase) throws -> CaseResult

public enum CaseRegistry {
    /// Case name → runner. One line per case; each runner lives in Cases/<Area>.swift.
    public static let runners: [String: CaseRunner] = {
        var r: [String: CaseRunner] = [:]
        // MARK: ops built on GEMM (matmul, linear, conv, attention)
        r["ops_linear"] = OpsGEMM.linear
        r["ops_matmul_batched"] = OpsGEMM.matmul
        r["ops_conv2d"] = OpsGEMM.conv2d
        r["ops_conv_transpose2d"] = OpsGEMM.convTranspose2d

        // MARK: ops: activations, softmax, norms, interpolation, pooling
        r["ops_relu"] = OpsPointwise.relu
        r["ops_sigmoid"] = OpsPointwise.sigmoid
        r["ops_gelu"] = OpsPointwise.gelu
        r["ops_softmax"] = OpsNN.softmax
        r["ops_layer_norm"] = OpsNN.layerNorm
        r["ops_layer_norm_2d"] = OpsNN.layerNorm2d
        r["ops_group_norm"] = OpsNN.groupNorm
        r["ops_batch_norm_train"] = OpsNN.batchNorm
        r["ops_batch_norm_eval"] = OpsNN.batchNorm
        r["ops_interpolate_bilinear"] = OpsNN.interpolateBilinear
        r["ops_interpolate_nearest"] = OpsNN.interpolateNearest
        r["ops_max_pool2d"] = OpsNN.maxPool2d
        r["ops_attention"] = OpsNN.attention

        // MARK: F-LMM grounding head (U-Net, attention pipeline, losses, metrics)
        r["unet_head"] = FLMMHeadCases.unetHead
        r["unet_head_raw"] = FLMMHeadCases.unetHead
        r["unet_head_bn"] = FLMMHeadCases.unetHead
        r["flmm_attention_pipeline"] = FLMMHeadCases.attentionPipeline
        r["loss_dice"] = FLMMHeadCases.dice
        r["loss_bce"] = FLMMHeadCases.bce
        r["metrics_iou"] = FLMMHeadCases.metrics

        // MARK: SAM and the full F-LMM step
        r["sam_prompt_encoder"] = SAMCases.promptEncoder
        r["sam_mask_decoder_small"] = SAMCases.maskDecoder
        r["sam_mask_decoder_full"] = SAMCases.maskDecoder
        r["sam_image_encoder_tiny"] = SAMCases.imageEncoder
        r["sam_postprocess"] = SAMCases.postprocess
        r["flmm_sam_prompts"] = SAMCases.flmmPrompts
        r["flmm_step"] = FLMMStepCase.run

        return r
    }()
}
