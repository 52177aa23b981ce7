// SAM's two-way transformer (segment_anything/modeling/transformer.py): prompt tokens attend to
// the image embedding and the image embedding attends back to the tokens.
//
// Dimension letters: B batch, N tokens, HW image positions (h·w), C embedding dim.

import NN
import Tensors

/// `transformer.Attention(embedding_dim, num_heads, downsample_rate)`: projections to
/// I = C / rate, `numHeads` heads, softmax(q kᵀ / √(I/NH)) v, projection back to C.
/// Keys: `{q,k,v}_proj.{weight,bias}` [I, C], `out_proj.{weight,bias}` [C, I].
public final class Attention: Module {
    public let numHeads: Int
    public let qProj: Linear
    public let kProj: Linear
    public let vProj: Linear
    public let outProj: Linear

    public var children: [ModuleChild] {
        [.module("q_proj", qProj), .module("k_proj", kProj), .module("v_proj", vProj), .module("out_proj", outProj)]
    }

    public init(embeddingDim: Int, numHeads: Int, downsampleRate: Int = 1, rng: inout PhiloxRNG) {
        let internalDim = embeddingDim / downsampleRate
        precondition(numHeads > 0 && internalDim % numHeads == 0,
                     "Attention: num_heads \(numHeads) must divide the internal dim \(internalDim)")
        self.numHeads = numHeads
        qProj = Linear(embeddingDim, internalDim, rng: &rng)
        kProj = Linear(embeddingDim, internalDim, rng: &rng)
        vProj = Linear(embeddingDim, internalDim, rng: &rng)
        outProj = Linear(internalDim, embeddingDim, rng: &rng)
    }

    /// q [B, Nq, C], k [B, Nk, C], v [B, Nk, C] → [B, Nq, C]:
    /// out_proj(softmax(q_h k_hᵀ / √(I/NH)) v_h over heads), on the fused attention op, or with
    /// the key and value projections folded in (`foldsKeyValueProjections`), or the query and
    /// output projections (`foldsQueryOutputProjections`);
    /// with `residual` [B, Nq, C], residual + that, added as out_proj's GEMM stores (the same bits).
    public func callAsFunction(q: Tensor, k: Tensor, v: Tensor, residual: Tensor? = nil) -> Tensor {
        let scale = Float(Double(qProj.outFeatures / numHeads).squareRoot())
        if let qBias = qProj.bias, let outBias = outProj.bias,
           foldsQueryOutputProjections(queries: q.shape[1], keys: k.shape[1]) {
            return queryFoldedMultiHeadAttention(x: q, k: apply(kProj, k), v: apply(vProj, v), qWeight: qProj.weight,
                                                 qBias: qBias, outWeight: outProj.weight, outBias: outBias,
                                                 adding: residual, numHeads: numHeads, scale: scale)
        }
        let o: Tensor
        if let kBias = kProj.bias, let vBias = vProj.bias, foldsKeyValueProjections(queries: q.shape[1], keys: k.shape[1]) {
            o = foldedMultiHeadAttention(q: apply(qProj, q), k: k, v: v, kWeight: kProj.weight, kBias: kBias,
                                         vWeight: vProj.weight, vBias: vBias, numHeads: numHeads, scale: scale)
        } else {
            o = multiHeadAttention(q: apply(qProj, q), k: apply(kProj, k), v: apply(vProj, v), numHeads: numHeads,
                                   scale: .divide(scale))
        }
        guard let residual else { return apply(outProj, o) }
        return linear(o, weight: outProj.weight, bias: outProj.bias, adding: residual)
    }
}

extension Attention {
    /// Whether a call with `queries` queries and `keys` keys folds the key and value projections
    /// into the queries and the output (`foldedMultiHeadAttention`): when the heads' query rows
    /// are fewer than the projected width (NH·Nq < I, so fewer multiply-adds than projecting
    /// every key and value) and there are at least `foldingMinLength` keys. SAM's token-to-image
    /// attention (12 tokens, 4096 image positions) folds.
    public func foldsKeyValueProjections(queries: Int, keys: Int) -> Bool {
        numHeads * queries < qProj.outFeatures && keys >= Self.foldingMinLength
    }

    /// Whether the call folds the query and output projections into the keys and values
    /// (`queryFoldedMultiHeadAttention`): NH·Nk < I and at least `foldingMinLength` queries. SAM's
    /// image-to-token attention (4096 image positions, 12 tokens) folds.
    public func foldsQueryOutputProjections(queries: Int, keys: Int) -> Bool {
        numHeads * keys < qProj.outFeatures && queries >= Self.foldingMinLength
    }

    /// Fewest keys (queries) for the folded forms. Not a speed limit: measured here, folding the
    /// keys and values is faster at 256 keys too (forward + backward with TinySAM's shapes, 7
    /// tokens and 256 keys, 0.61–0.68× of the unfolded time; SAM's, 12 tokens and 4096 keys,
    /// 0.56–0.59×). It keeps ShapesWorld's TinySAM (256 image positions) on the unfolded form,
    /// with which its committed checkpoint was pretrained (`make pretrain` checks it bit for bit)
    /// and its ablations in Results/ were run.
    public static let foldingMinLength = 1024
}

/// `TwoWayAttentionBlock`: (1) token self-attention, (2) tokens → image cross-attention,
/// (3) token MLP (ReLU), (4) image → tokens cross-attention; LayerNorm after each.
/// Keys: `self_attn`, `norm1`, `cross_attn_token_to_image`, `norm2`, `mlp`, `norm3`, `norm4`,
/// `cross_attn_image_to_token`.
public final class TwoWayAttentionBlock: Module {
    public let selfAttn: Attention
    public let norm1: LayerNorm
    public let crossAttnTokenToImage: Attention
    public let norm2: LayerNorm
    public let mlp: MLPBlock
    public let norm3: LayerNorm
    public let norm4: LayerNorm
    public let crossAttnImageToToken: Attention
    /// Block 0: self-attention without the query PE and without a residual.
    public let skipFirstLayerPE: Bool

    public var children: [ModuleChild] {
        [.module("self_attn", selfAttn), .module("norm1", norm1),
         .module("cross_attn_token_to_image", crossAttnTokenToImage), .module("norm2", norm2),
         .module("mlp", mlp), .module("norm3", norm3), .module("norm4", norm4),
         .module("cross_attn_image_to_token", crossAttnImageToToken)]
    }

    public init(embeddingDim: Int, numHeads: Int, mlpDim: Int, attentionDownsampleRate: Int,
                skipFirstLayerPE: Bool, layerNormEps: Double, rng: inout PhiloxRNG) {
        self.skipFirstLayerPE = skipFirstLayerPE
        selfAttn = Attention(embeddingDim: embeddingDim, numHeads: numHeads, rng: &rng)
        norm1 = LayerNorm(embeddingDim, eps: layerNormEps)
        crossAttnTokenToImage = Attention(embeddingDim: embeddingDim, numHeads: numHeads,
                                          downsampleRate: attentionDownsampleRate, rng: &rng)
        norm2 = LayerNorm(embeddingDim, eps: layerNormEps)
        mlp = MLPBlock(embeddingDim: embeddingDim, mlpDim: mlpDim, activation: .relu, rng: &rng)
        norm3 = LayerNorm(embeddingDim, eps: layerNormEps)
        norm4 = LayerNorm(embeddingDim, eps: layerNormEps)
        crossAttnImageToToken = Attention(embeddingDim: embeddingDim, numHeads: numHeads,
                                          downsampleRate: attentionDownsampleRate, rng: &rng)
    }

    /// queries [B, N, C], keys [B, HW, C], queryPE [B, N, C], keyPE [B, HW, C] → (queries, keys).
    public func callAsFunction(queries: Tensor, keys: Tensor, queryPE: Tensor, keyPE: Tensor) -> (Tensor, Tensor) {
        var qs: Tensor
        if skipFirstLayerPE {
            qs = selfAttn(q: queries, k: queries, v: queries)
        } else {
            let q = queries + queryPE
            qs = queries + selfAttn(q: q, k: q, v: queries)
        }
        qs = apply(norm1, qs)

        let k = keys + keyPE
        qs = apply(norm2, qs + crossAttnTokenToImage(q: qs + queryPE, k: k, v: keys))
        qs = apply(norm3, qs + mlp(qs))

        let ks = apply(norm4, crossAttnImageToToken(q: k, k: qs + queryPE, v: qs, residual: keys))
        return (qs, ks)
    }
}

/// `TwoWayTransformer(depth, embedding_dim, num_heads, mlp_dim, activation=ReLU,
/// attention_downsample_rate)`. Keys: `layers.<i>.*`, `final_attn_token_to_image.*`,
/// `norm_final_attn.{weight,bias}`.
public final class TwoWayTransformer: Module {
    public let layers: [TwoWayAttentionBlock]
    public let finalAttnTokenToImage: Attention
    public let normFinalAttn: LayerNorm

    public var children: [ModuleChild] {
        [.list("layers", layers), .module("final_attn_token_to_image", finalAttnTokenToImage),
         .module("norm_final_attn", normFinalAttn)]
    }

    /// The last image PE without a gradient (its values and shape) and its token-major copy
    /// [B, h·w, C]: a refiner's masks share one PE, so the permute runs once, not once per mask.
    private var keyPECache: (pe: [Float], shape: [Int], tokens: Tensor)?

    public init(depth: Int, embeddingDim: Int, numHeads: Int, mlpDim: Int, attentionDownsampleRate: Int = 2,
                layerNormEps: Double = 1e-5, rng: inout PhiloxRNG) {
        var layers: [TwoWayAttentionBlock] = []
        for i in 0..<depth {
            layers.append(TwoWayAttentionBlock(embeddingDim: embeddingDim, numHeads: numHeads, mlpDim: mlpDim,
                                               attentionDownsampleRate: attentionDownsampleRate,
                                               skipFirstLayerPE: i == 0, layerNormEps: layerNormEps, rng: &rng))
        }
        self.layers = layers
        finalAttnTokenToImage = Attention(embeddingDim: embeddingDim, numHeads: numHeads,
                                          downsampleRate: attentionDownsampleRate, rng: &rng)
        normFinalAttn = LayerNorm(embeddingDim, eps: layerNormEps)
    }

    /// imageEmbedding [B, C, h, w], imagePE [B, C, h, w], pointEmbedding [B, N, C] →
    /// (queries [B, N, C], keys [B, h·w, C]).
    public func callAsFunction(imageEmbedding: Tensor, imagePE: Tensor, pointEmbedding: Tensor) -> (Tensor, Tensor) {
        precondition(imageEmbedding.rank == 4 && imagePE.shape == imageEmbedding.shape,
                     "TwoWayTransformer: image embedding \(imageEmbedding.shape) and PE \(imagePE.shape) must be equal [B, C, h, w]")
        let (b, c, h, w) = (imageEmbedding.shape[0], imageEmbedding.shape[1], imageEmbedding.shape[2], imageEmbedding.shape[3])
        let keys0 = imageEmbedding.reshape([b, c, h * w]).permute([0, 2, 1])
        let keyPE: Tensor
        if let cached = keyPECache, !imagePE.tracksGradient, cached.shape == imagePE.shape, cached.pe == imagePE.data {
            keyPE = cached.tokens
        } else {
            keyPE = imagePE.reshape([b, c, h * w]).permute([0, 2, 1])
            keyPECache = imagePE.tracksGradient ? nil : (imagePE.data, imagePE.shape, keyPE)
        }
        var queries = pointEmbedding, keys = keys0
        for layer in layers {
            (queries, keys) = layer(queries: queries, keys: keys, queryPE: pointEmbedding, keyPE: keyPE)
        }
        let attnOut = finalAttnTokenToImage(q: queries + pointEmbedding, k: keys + keyPE, v: keys)
        queries = apply(normFinalAttn, queries + attnOut)
        return (queries, keys)
    }
}
