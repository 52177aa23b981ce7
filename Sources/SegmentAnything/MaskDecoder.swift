// SAM's mask decoder (segment_anything/modeling/mask_decoder.py): output tokens + prompt tokens
// run through the two-way transformer with the image embedding; the mask tokens become, via
// hypernetwork MLPs, dot-product weights over the upscaled image embedding; the IoU token
// predicts each mask's quality.
//
// Dimension letters: B prompts, C transformer dim, h w image-embedding size, M mask tokens
// (num_multimask_outputs + 1), T prompt tokens.

import NN
import Tensors

/// `MaskDecoder`. Keys: `transformer.*`, `iou_token.weight` [1, C], `mask_tokens.weight` [M, C],
/// `output_upscaling.{0,3}` (ConvTranspose2d), `output_upscaling.1` (LayerNorm2d),
/// `output_hypernetworks_mlps.<i>.layers.<j>`, `iou_prediction_head.layers.<j>`.
public final class MaskDecoder: Module {
    public let config: MaskDecoderConfig
    public let transformer: TwoWayTransformer
    public let iouToken: Embedding
    public let maskTokens: Embedding
    public let upscaleConv1: ConvTranspose2d
    public let upscaleNorm: LayerNorm2d
    public let upscaleConv2: ConvTranspose2d
    public let outputHypernetworksMLPs: [MLP]
    public let iouPredictionHead: MLP

    public var numMaskTokens: Int { config.numMultimaskOutputs + 1 }

    public var children: [ModuleChild] {
        [.module("transformer", transformer), .module("iou_token", iouToken), .module("mask_tokens", maskTokens),
         .list("output_upscaling", [upscaleConv1, upscaleNorm, nil, upscaleConv2, nil]),
         .list("output_hypernetworks_mlps", outputHypernetworksMLPs),
         .module("iou_prediction_head", iouPredictionHead)]
    }

    public init(_ c: MaskDecoderConfig, rng: inout PhiloxRNG) {
        precondition(c.transformerDim % 8 == 0, "MaskDecoder: transformerDim \(c.transformerDim) must be a multiple of 8")
        config = c
        let d = c.transformerDim
        transformer = TwoWayTransformer(depth: c.depth, embeddingDim: d, numHeads: c.numHeads, mlpDim: c.mlpDim,
                                        attentionDownsampleRate: c.attentionDownsampleRate,
                                        layerNormEps: c.layerNormEps, rng: &rng)
        iouToken = Embedding(1, d, rng: &rng)
        maskTokens = Embedding(c.numMultimaskOutputs + 1, d, rng: &rng)
        upscaleConv1 = ConvTranspose2d(d, d / 4, kernelSize: 2, stride: 2, rng: &rng)
        upscaleNorm = LayerNorm2d(d / 4, eps: c.layerNorm2dEps)
        upscaleConv2 = ConvTranspose2d(d / 4, d / 8, kernelSize: 2, stride: 2, rng: &rng)
        var mlps: [MLP] = []
        for _ in 0...c.numMultimaskOutputs {
            mlps.append(MLP(inputDim: d, hiddenDim: d, outputDim: d / 8, numLayers: 3, rng: &rng))
        }
        outputHypernetworksMLPs = mlps
        iouPredictionHead = MLP(inputDim: d, hiddenDim: c.iouHeadHiddenDim, outputDim: c.numMultimaskOutputs + 1,
                                numLayers: c.iouHeadDepth, rng: &rng)
    }

    /// `forward`: image embeddings [Bi, C, h, w] (each repeated B/Bi times, `repeat_interleave`),
    /// image PE [Bi, C, h, w], sparse prompts [B, T, C], dense prompts [B, C, h, w] →
    /// (masks [B, 1 or M−1, 4h, 4w], iou [B, 1 or M−1]). `multimaskOutput` keeps masks 1…M−1,
    /// otherwise mask 0.
    public func callAsFunction(imageEmbeddings: Tensor, imagePE: Tensor, sparsePromptEmbeddings: Tensor,
                               densePromptEmbeddings: Tensor, multimaskOutput: Bool) -> (masks: Tensor, iouPred: Tensor) {
        let (masks, iou) = predictMasks(imageEmbeddings: imageEmbeddings, imagePE: imagePE,
                                        sparsePromptEmbeddings: sparsePromptEmbeddings,
                                        densePromptEmbeddings: densePromptEmbeddings)
        let start = multimaskOutput ? 1 : 0, length = multimaskOutput ? numMaskTokens - 1 : 1
        return (masks.narrow(dim: 1, start: start, length: length), iou.narrow(dim: 1, start: start, length: length))
    }

    /// `predict_masks`: every mask token's mask [B, M, 4h, 4w] and IoU [B, M].
    public func predictMasks(imageEmbeddings: Tensor, imagePE: Tensor, sparsePromptEmbeddings: Tensor,
                             densePromptEmbeddings: Tensor) -> (Tensor, Tensor) {
        let sparse = sparsePromptEmbeddings, dense = densePromptEmbeddings
        let c = config.transformerDim
        precondition(sparse.rank == 3 && sparse.shape[2] == c,
                     "MaskDecoder: sparse prompts \(sparse.shape) must be [B, T, \(c)]")
        let b = sparse.shape[0]
        precondition(imageEmbeddings.rank == 4 && imageEmbeddings.shape[1] == c && b % imageEmbeddings.shape[0] == 0,
                     "MaskDecoder: image embeddings \(imageEmbeddings.shape) must be [Bi, \(c), h, w] with Bi dividing B = \(b)")
        precondition(imagePE.shape == imageEmbeddings.shape,
                     "MaskDecoder: image PE \(imagePE.shape) must match image embeddings \(imageEmbeddings.shape)")
        precondition(dense.shape == [b, c, imageEmbeddings.shape[2], imageEmbeddings.shape[3]],
                     "MaskDecoder: dense prompts \(dense.shape) must be [\(b), \(c), \(imageEmbeddings.shape[2]), \(imageEmbeddings.shape[3])]")

        let outputTokens = cat([iouToken.weight, maskTokens.weight], dim: 0).unsqueeze(0).expand([b, -1, -1])
        let tokens = sparse.shape[1] == 0 ? outputTokens : cat([outputTokens, sparse], dim: 1)

        let src = repeatInterleave(imageEmbeddings, to: b) + dense
        let posSrc = repeatInterleave(imagePE, to: b)
        let (h, w) = (src.shape[2], src.shape[3])

        let (hs, keys) = transformer(imageEmbedding: src, imagePE: posSrc, pointEmbedding: tokens)
        let iouTokenOut = hs.narrow(dim: 1, start: 0, length: 1).reshape([b, c])

        // Output upscaling, computed token-major (NHWC) from the transformer's keys [B, h·w, C]:
        // each ConvTranspose2d(k=2, s=2) is a Linear to the 2×2 sub-pixels then a pixel
        // shuffle, LayerNorm2d is a LayerNorm over the channels. Same values as NCHW.
        var up = convTranspose2x2TokenMajor(keys, h: h, w: w, upscaleConv1)        // [B, 4hw, C/4]
        up = layerNormRows(up, weight: upscaleNorm.weight, bias: upscaleNorm.bias, eps: upscaleNorm.eps).geluVectorized()
        up = convTranspose2x2TokenMajor(up, h: 2 * h, w: 2 * w, upscaleConv2, gelu: true)        // [B, 16hw, C/8]
        var hyper: [Tensor] = []
        for i in 0..<numMaskTokens {
            hyper.append(outputHypernetworksMLPs[i](hs.narrow(dim: 1, start: 1 + i, length: 1)))  // [B, 1, C/8]
        }
        let hyperIn = cat(hyper, dim: 1)                                                     // [B, M, C/8]
        // masks[b, m, p] = Σ_c hyper[b, m, c] · up[b, p, c]
        let masks = matmulNT(hyperIn, up).reshape([b, numMaskTokens, 4 * h, 4 * w])
        let iouPred = iouPredictionHead(iouTokenOut)
        return (masks, iouPred)
    }
}

/// `torch.repeat_interleave(x, B / x.shape[0], dim=0)`: each batch entry repeated in place.
func repeatInterleave(_ x: Tensor, to b: Int) -> Tensor {
    let bi = x.shape[0]
    if bi == b { return x }
    if bi == 1 { return x.expand([b] + Array(x.shape.dropFirst())) }
    let r = b / bi
    return x.indexSelect(dim: 0, index: (0..<b).map { $0 / r })
}

/// `ConvTranspose2d(C, C', kernel_size=2, stride=2)` on token-major input: x [B, h·w, C]
/// (token y·w + x) → [B, (2h)·(2w), C'] token-major. out[2y+dy, 2x+dx, c'] =
/// Σ_c x[y, x, c]·W[c, c', dy, dx] + bias[c'] as one Linear to [B, h, w, dy, dx, C'] and a
/// pixel shuffle; with `gelu`, the shuffle and the GELU after it are one op
/// (`geluPixelShuffle2x2`, the same bits).
func convTranspose2x2TokenMajor(_ x: Tensor, h: Int, w: Int, _ conv: ConvTranspose2d, gelu: Bool = false) -> Tensor {
    precondition(conv.kernelSize == 2 && conv.stride == 2 && conv.padding == 0 && conv.outputPadding == 0
                 && conv.dilation == 1, "convTranspose2x2TokenMajor: needs kernel 2, stride 2, no padding")
    precondition(x.rank == 3 && x.shape[1] == h * w && x.shape[2] == conv.inChannels,
                 "convTranspose2x2TokenMajor: input \(x.shape) must be [B, \(h)·\(w), \(conv.inChannels)]")
    let (b, c, co) = (x.shape[0], conv.inChannels, conv.outChannels)
    let weight = conv.weight.permute([2, 3, 1, 0]).reshape([4 * co, c])              // [(dy, dx, c'), c]
    let bias = conv.bias.map { $0.unsqueeze(0).expand([4, co]).reshape([4 * co]) }
    let y = linear(x, weight: weight, bias: bias)                                     // [B, h·w, (dy, dx, c')]
    if gelu { return geluPixelShuffle2x2(y, h: h, w: w) }
    return y.reshape([b, h, w, 2, 2, co]).permute([0, 1, 3, 2, 4, 5]).reshape([b, 4 * h * w, co])
}
