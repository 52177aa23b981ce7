// TinyVLM: a small multimodal causal language model over [<bos>, image tokens, prompt, text].
//
//   The vision encoder (each part optional, see TinyVLMConfig):
//   pixel values [3, S, S] ─ patch_embed.stem.i (Conv2d 3×3, stride s_i, padding 1, + GELU)
//       ─ patch_embed.proj (Conv2d → D, kernel = stride = p / Π s_i) ─► [D, G, G]   (G = S / p)
//       ─ patch_embed.blocks.i: x ← x + Conv2d(D, D, 3, padding 1)(GELU(x))
//       → channels last [1, G, G, D] ─ vision: + vision.pos_embed, then bidirectional ViT blocks
//       vision.blocks.i (SAM's ViTBlock, global attention) → flatten row-major → [G², D]
//   token ids [T] ─ tok_embeddings ─► [T, D]; image positions take the image tokens instead
//   x = tokens + pos_embed[0..<T]
//   L pre-norm blocks:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
//       attn: qkv = Linear(D, 3D) → q, k, v [NH, T, D/NH];
//             probs = softmax((q · 1/√(D/NH))·kᵀ + causal, dim −1)   [NH, T, T]
//             (causal: −∞ above the diagonal, so probs[i, j>i] are exactly 0)
//             out = Linear(D, D)(merge heads(probs · v))
//             computed by one fused primitive, `causalSelfAttention` (Tensors), on the packed
//             qkv: only the visible (lower-triangular) logits are formed, the softmax uses the
//             vectorised exp, and no head is copied out.
//       mlp: Linear(D, 4D) → GELU (exact, `geluVectorized`) → Linear(4D, D)
//   LayerNorms through `layerNormRows` (nn.LayerNorm over the last dim).
//   norm (LayerNorm) → lm_head Linear(D, V) → logits [T, V]
//
// Outputs as F-LMM reads a HF model with output_attentions / output_hidden_states:
//   attentions[l]   [NH, T, T]  the softmax probabilities of block l;
//   hiddenStates[l] [T, D]      block l's output for l < L−1, and the final-norm output for the
//                               last one (HF's hidden_states[-L:] = hidden_states[1:]).
// State-dict keys: patch_embed.{proj, stem.i, blocks.i}.{weight,bias}, vision.pos_embed,
// vision.blocks.i.* (ViTBlock keys), vision.attribute_head.*, tok_embeddings.weight, pos_embed.weight,
// layers.i.{ln_1, attn.qkv, attn.proj, ln_2, mlp.fc1, mlp.fc2}.{weight,bias}, norm.*, lm_head.*.

import Foundation
import NN
import SegmentAnything
import Tensors

/// TinyVLM sizes.
public struct TinyVLMConfig: Sendable, Equatable {
    /// S: the padded square image side.
    public var imageSize: Int
    /// p: patch size; the grid is G = S / p.
    public var patchSize: Int
    /// D: hidden size.
    public var dim: Int
    /// L: number of blocks.
    public var layers: Int
    /// NH: attention heads.
    public var heads: Int
    /// MLP hidden size = mlpRatio · D.
    public var mlpRatio: Int
    /// V: vocabulary size.
    public var vocabSize: Int
    /// Longest supported sequence (positions of pos_embed).
    public var maxPositions: Int
    /// The convolutional stem before the patch embedding: 3×3 convolutions (padding 1), each
    /// followed by GELU, as (output channels, stride) in order (empty: none). The patch
    /// embedding's kernel and stride are then p / (product of the strides).
    public var stem: [TinyVLMStemConv]
    /// Residual 3×3 convolutions at the grid's resolution after the patch embedding:
    /// x ← x + Conv2d(D, D, 3, padding 1)(GELU(x)) (0: none).
    public var gridConvs: Int
    /// Bidirectional (non-causal) ViT blocks over the image tokens before the causal LM (0: none).
    public var visionLayers: Int
    /// Initialise the image tokens' rows of pos_embed with a 2-D sine-cosine table (else N(0, 0.02²)).
    public var sincosImagePositions: Bool

    public init(imageSize: Int = 96, patchSize: Int = 4, dim: Int = 64, layers: Int = 4, heads: Int = 4,
                mlpRatio: Int = 4, vocabSize: Int = Tokenizer.shapesWorld.count, maxPositions: Int? = nil,
                stem: [TinyVLMStemConv] = [], gridConvs: Int = 0, visionLayers: Int = 0,
                sincosImagePositions: Bool = false) {
        if let problem = TinyVLMConfig.problem(imageSize: imageSize, patchSize: patchSize, dim: dim, heads: heads,
                                               stem: stem, sincosImagePositions: sincosImagePositions) {
            preconditionFailure("TinyVLMConfig: \(problem)")
        }
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.dim = dim
        self.layers = layers
        self.heads = heads
        self.mlpRatio = mlpRatio
        self.vocabSize = vocabSize
        let g = imageSize / patchSize
        self.maxPositions = maxPositions ?? (g * g + 96)
        self.stem = stem
        self.gridConvs = gridConvs
        self.visionLayers = visionLayers
        self.sincosImagePositions = sincosImagePositions
    }

    /// Why these sizes cannot make a TinyVLM, or nil when they can. The one check behind the
    /// initialiser's precondition, the checkpoint loader's error and `flmm world pretrain-vlm`'s
    /// usage error.
    public static func problem(imageSize: Int, patchSize: Int, dim: Int, heads: Int, stem: [TinyVLMStemConv],
                               sincosImagePositions: Bool) -> String? {
        if imageSize <= 0 || patchSize <= 0 || imageSize % patchSize != 0 {
            return "patch size \(patchSize) must be positive and divide image size \(imageSize)"
        }
        if heads <= 0 || dim <= 0 || dim % heads != 0 { return "\(heads) heads must divide dim \(dim)" }
        if !stem.allSatisfy({ $0.channels > 0 && $0.stride > 0 }) || patchSize % stem.totalStride != 0 {
            return "stem \(stem) must have positive channels and strides whose product divides the patch size \(patchSize)"
        }
        if sincosImagePositions && dim % 4 != 0 { return "the 2-D sine-cosine table needs dim \(dim) divisible by 4" }
        return nil
    }

    /// G: image tokens per side.
    public var grid: Int { imageSize / patchSize }
    /// G²: number of image tokens.
    public var imageTokens: Int { grid * grid }
}

/// One convolution of TinyVLM's stem: Conv2d(in, channels, 3, stride, padding 1) → GELU.
public struct TinyVLMStemConv: Sendable, Equatable, CustomStringConvertible {
    public var channels: Int
    public var stride: Int
    public init(channels: Int, stride: Int = 1) {
        self.channels = channels
        self.stride = stride
    }
    /// "channels:stride", the notation of the checkpoint metadata and of `--stem`.
    public var description: String { "\(channels):\(stride)" }

    /// Parses "channels:stride"; nil unless both are positive integers.
    public init?(_ text: Substring) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 2, let c = parts[0], let s = parts[1], c > 0, s > 0 else { return nil }
        self.init(channels: c, stride: s)
    }
}

public extension Array where Element == TinyVLMStemConv {
    /// How much the stem downsamples: the product of its strides.
    var totalStride: Int { reduce(1) { $0 * $1.stride } }

    /// Parses the stem notation "channels:stride,…" (empty: no stem) of the checkpoint metadata
    /// and of `--stem`; the first entry that is not "channels:stride" with positive integers
    /// throws `badEntry(entry)`.
    init(parsing text: String, badEntry: (Substring) -> any Error) throws {
        self = try text.split(separator: ",").map { entry in
            guard let conv = TinyVLMStemConv(entry) else { throw badEntry(entry) }
            return conv
        }
    }
}

/// What one forward pass returns.
public struct TinyVLMOutput {
    /// [T, V] next-token logits.
    public let logits: Tensor
    /// L × [NH, T, T] attention probabilities.
    public let attentions: [Tensor]
    /// L × [T, D] hidden states (the last one after the final norm).
    public let hiddenStates: [Tensor]
    /// [G², D] the image tokens as the causal LM receives them (patch embedding, then the
    /// vision layers if any).
    public let imageTokens: Tensor

    /// The attentions stacked to [L, NH, T, T] (outside the graph), as F-LMM indexes them.
    public func stackedAttentions() -> Tensor {
        Autograd.noGrad { cat(attentions.map { $0.unsqueeze(0) }, dim: 0) }
    }
}

/// Multi-head causal self-attention with a fused qkv projection.
public final class CausalSelfAttention: Module {
    public let heads: Int
    public let qkv: Linear, proj: Linear
    public var children: [ModuleChild] { [.module("qkv", qkv), .module("proj", proj)] }

    public init(dim: Int, heads: Int, rng: inout PhiloxRNG) {
        self.heads = heads
        qkv = Linear(dim, 3 * dim, rng: &rng)
        proj = Linear(dim, dim, rng: &rng)
    }

    /// x [T, D] → (out [T, D], probs [NH, T, T]), causal. One fused primitive
    /// (`causalSelfAttention`) on the packed qkv [T, 3D] (viewed as [T, 3, NH, D/NH]); the scale
    /// 1/√(D/NH) is applied to q.
    public func callAsFunction(_ x: Tensor) -> (Tensor, Tensor) {
        let (out, probs) = causalSelfAttention(qkv(x), heads: heads)
        return (proj(out), probs)
    }
}

/// Linear → GELU → Linear.
public final class MLP: Module {
    public let fc1: Linear, fc2: Linear
    public var children: [ModuleChild] { [.module("fc1", fc1), .module("fc2", fc2)] }

    public init(dim: Int, hidden: Int, rng: inout PhiloxRNG) {
        fc1 = Linear(dim, hidden, rng: &rng)
        fc2 = Linear(hidden, dim, rng: &rng)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { fc2(fc1(x).geluVectorized()) }
}

/// One pre-norm transformer block.
public final class TinyVLMBlock: Module {
    public let ln1: LayerNorm, attn: CausalSelfAttention, ln2: LayerNorm, mlp: MLP
    public var children: [ModuleChild] {
        [.module("ln_1", ln1), .module("attn", attn), .module("ln_2", ln2), .module("mlp", mlp)]
    }

    public init(dim: Int, heads: Int, mlpHidden: Int, rng: inout PhiloxRNG) {
        ln1 = LayerNorm([dim])
        attn = CausalSelfAttention(dim: dim, heads: heads, rng: &rng)
        ln2 = LayerNorm([dim])
        mlp = MLP(dim: dim, hidden: mlpHidden, rng: &rng)
    }

    /// x [T, D] → (x', probs [NH, T, T]).
    public func callAsFunction(_ x: Tensor) -> (Tensor, Tensor) {
        let (a, probs) = attn(TinyVLMBlock.norm(ln1, x))
        let h = x + a
        return (h + mlp(TinyVLMBlock.norm(ln2, h)), probs)
    }

    /// nn.LayerNorm over the last dim through the row kernel (`layerNormRows`, same function).
    static func norm(_ ln: LayerNorm, _ x: Tensor) -> Tensor {
        layerNormRows(x, weight: ln.weight, bias: ln.bias, eps: ln.eps)
    }
}

/// The patch embedding: the stem's convolutions `patch_embed.stem.i` (Conv2d 3×3, padding 1,
/// each + GELU), then `patch_embed.proj` (Conv2d → D, kernel = stride = p / stem strides).
public final class PatchEmbed: Module {
    public let proj: Conv2d
    public let stem: [Conv2d]
    /// `patch_embed.blocks.i`: the residual grid convolutions.
    public let blocks: [Conv2d]
    public var children: [ModuleChild] {
        var c: [ModuleChild] = [.module("proj", proj)]
        if !stem.isEmpty { c.append(.list("stem", stem)) }
        if !blocks.isEmpty { c.append(.list("blocks", blocks)) }
        return c
    }

    public init(patchSize: Int, dim: Int, stem: [TinyVLMStemConv] = [], gridConvs: Int = 0, rng: inout PhiloxRNG) {
        let k = patchSize / stem.totalStride
        proj = Conv2d(stem.last?.channels ?? 3, dim, kernelSize: k, stride: k, rng: &rng)
        var convs: [Conv2d] = [], inChannels = 3
        for c in stem {
            convs.append(Conv2d(inChannels, c.channels, kernelSize: 3, stride: c.stride, padding: 1, rng: &rng))
            inChannels = c.channels
        }
        self.stem = convs
        blocks = (0..<gridConvs).map { _ in Conv2d(dim, dim, kernelSize: 3, stride: 1, padding: 1, rng: &rng) }
    }

    /// pixel values [3, S, S] → image tokens [1, G, G, D] (channels last, row-major grid).
    public func callAsFunction(_ pixels: Tensor) -> Tensor {
        var x = pixels.unsqueeze(0)
        for conv in stem { x = conv(x).geluVectorized() }
        x = proj(x)                                                // [1, D, G, G]
        for block in blocks { x = x + block(x.geluVectorized()) }
        return x.permute([0, 2, 3, 1])                             // [1, G, G, D]
    }
}

/// Bidirectional ViT layers over the image tokens, as an LMM's vision encoder runs before its
/// causal LM: x + pos_embed, then `blocks.i` (SAM's ViTBlock: global attention, no relative
/// positions, qkv bias, LayerNorm eps 1e-5). Keys `pos_embed` [1, G, G, D] (initialised with the
/// 2-D sine-cosine table), `blocks.i.*`, and `attribute_head` (Linear D → 18), which is used only
/// by pretraining: the vision encoder's own supervised objective (TinyVLMPretraining.swift),
/// never by the frozen model's forward.
public final class VisionTower: Module {
    public let posEmbed: Tensor
    public let blocks: [ViTBlock]
    public let attributeHead: Linear
    public var children: [ModuleChild] {
        [.parameter("pos_embed", posEmbed), .list("blocks", blocks), .module("attribute_head", attributeHead)]
    }

    /// Logit groups of `attribute_head`, in `TinyVLMPretraining.cellAttributes`' label order:
    /// shape (none + 6), colour (none + 7), size (none + 2).
    public static let attributeGroups = ["shape", "colour", "size"]
    public static let attributeClasses = [1 + ShapeKind.allCases.count, 1 + ShapeColor.allCases.count,
                                          1 + SizeClass.allCases.count]
    /// The columns of each group in `attribute_head`'s output, in group order.
    public static let attributeColumns: [Range<Int>] = attributeClasses.indices.map { g in
        let start = attributeClasses[..<g].reduce(0, +)
        return start..<(start + attributeClasses[g])
    }

    public init(_ c: TinyVLMConfig, rng: inout PhiloxRNG) {
        let g = c.grid
        posEmbed = Tensor(shape: [1, g, g, c.dim], data: TinyVLM.sincos2D(grid: g, dim: c.dim), requiresGrad: true)
        blocks = (0..<c.visionLayers).map { _ in
            ViTBlock(dim: c.dim, numHeads: c.heads, mlpRatio: Double(c.mlpRatio), qkvBias: true, useRelPos: false,
                     windowSize: 0, inputSize: (g, g), layerNormEps: 1e-5, rng: &rng)
        }
        attributeHead = Linear(c.dim, VisionTower.attributeClasses.reduce(0, +), rng: &rng)
    }

    /// [1, G, G, D] → [1, G, G, D].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        blocks.reduce(x + posEmbed) { y, block in block(y) }
    }
}

/// The model.
public final class TinyVLM: Module {
    public let config: TinyVLMConfig
    public let patchEmbed: PatchEmbed
    /// The bidirectional vision layers (`vision.*`), present when `visionLayers` > 0.
    public let vision: VisionTower?
    public let tokEmbeddings: Embedding
    public let posEmbed: Embedding
    public let layers: [TinyVLMBlock]
    public let norm: LayerNorm
    public let lmHead: Linear

    public var children: [ModuleChild] {
        var c: [ModuleChild] = [.module("patch_embed", patchEmbed)]
        if let vision { c.append(.module("vision", vision)) }
        return c + [.module("tok_embeddings", tokEmbeddings), .module("pos_embed", posEmbed),
                    .list("layers", layers), .module("norm", norm), .module("lm_head", lmHead)]
    }

    /// A freshly initialised model: PyTorch defaults for Linear / Conv2d / LayerNorm, and
    /// N(0, 0.02²) for the token and position embeddings (GPT-2's rule), all from `rng` in
    /// declaration order.
    public init(_ config: TinyVLMConfig, rng: inout PhiloxRNG) {
        self.config = config
        patchEmbed = PatchEmbed(patchSize: config.patchSize, dim: config.dim, stem: config.stem,
                                gridConvs: config.gridConvs, rng: &rng)
        vision = config.visionLayers > 0 ? VisionTower(config, rng: &rng) : nil
        tokEmbeddings = Embedding(config.vocabSize, config.dim, rng: &rng)
        Init.normal(tokEmbeddings.weight, std: 0.02, rng: &rng)
        posEmbed = Embedding(config.maxPositions, config.dim, rng: &rng)
        Init.normal(posEmbed.weight, std: 0.02, rng: &rng)
        if config.sincosImagePositions {
            // Rows 1 ..< 1 + G² (the image tokens follow <bos>): 2-D sine-cosine table.
            var w = posEmbed.weight.data
            let table = TinyVLM.sincos2D(grid: config.grid, dim: config.dim)
            for i in 0..<table.count { w[config.dim + i] = table[i] }
            posEmbed.weight.assign(w)
        }
        var blocks: [TinyVLMBlock] = []
        for _ in 0..<config.layers {
            blocks.append(TinyVLMBlock(dim: config.dim, heads: config.heads, mlpHidden: config.mlpRatio * config.dim, rng: &rng))
        }
        layers = blocks
        norm = LayerNorm([config.dim])
        lmHead = Linear(config.dim, config.vocabSize, rng: &rng)
    }

    /// The 2-D sine-cosine position table [G², D] (MAE's layout), scaled by ½: for cell (r, c),
    /// the first D/2 features encode r and the last D/2 encode c, each as
    /// [sin(pos·ω_k)]_k ++ [cos(pos·ω_k)]_k with ω_k = 10000^(−k/(D/4)), k < D/4 (Double, then Float).
    public static func sincos2D(grid g: Int, dim d: Int) -> [Float] {
        let q = d / 4
        var out = [Float](repeating: 0, count: g * g * d)
        for r in 0..<g {
            for c in 0..<g {
                for (half, pos) in [(0, r), (1, c)] {
                    for k in 0..<q {
                        let omega = 1 / Foundation.pow(10000.0, Double(k) / Double(q))
                        let base = (r * g + c) * d + half * (d / 2)
                        out[base + k] = Float(0.5 * Foundation.sin(Double(pos) * omega))
                        out[base + q + k] = Float(0.5 * Foundation.cos(Double(pos) * omega))
                    }
                }
            }
        }
        return out
    }

    /// [T, T] additive causal mask: 0 on and below the diagonal, −∞ above.
    public static func causalMask(_ t: Int) -> Tensor {
        var m = [Float](repeating: 0, count: t * t)
        for i in 0..<t { for j in (i + 1)..<max(i + 1, t) { m[i * t + j] = -.infinity } }
        return Tensor(shape: [t, t], data: m)
    }

    /// Forward pass over `sequence` with the image `pixelValues` [3, S, S].
    public func callAsFunction(_ pixelValues: Tensor, _ sequence: VLMSequence) -> TinyVLMOutput {
        let c = config
        precondition(pixelValues.shape == [3, c.imageSize, c.imageSize],
                     "TinyVLM: pixel values \(pixelValues.shape) must be [3, \(c.imageSize), \(c.imageSize)]")
        precondition(sequence.imageCount == c.imageTokens,
                     "TinyVLM: sequence has \(sequence.imageCount) image tokens, the model's grid gives \(c.imageTokens)")
        let t = sequence.count
        precondition(t <= c.maxPositions, "TinyVLM: sequence of \(t) tokens exceeds max positions \(c.maxPositions)")
        var grid = patchEmbed(pixelValues)                                      // [1, G, G, D]
        if let vision { grid = vision(grid) }
        let image = grid.reshape([c.imageTokens, c.dim])                        // [G², D]
        let before = tokEmbeddings(Array(sequence.ids[0..<sequence.imageStart]))
        let after = tokEmbeddings(Array(sequence.ids[(sequence.imageStart + sequence.imageCount)...]))
        var x = cat([before, image, after], dim: 0) + posEmbed(Array(0..<t))    // [T, D]
        var attentions: [Tensor] = [], hidden: [Tensor] = []
        for (l, block) in layers.enumerated() {
            let (y, probs) = block(x)
            attentions.append(probs)
            x = y
            hidden.append(l == layers.count - 1 ? TinyVLMBlock.norm(norm, y) : y)
        }
        let logits = lmHead(hidden[hidden.count - 1])
        return TinyVLMOutput(logits: logits, attentions: attentions, hiddenStates: hidden, imageTokens: image)
    }

    /// Mean next-token cross-entropy over the caption: positions textStart−1 … T−2 predict
    /// ids[textStart] … ids[T−1] (the caption words and <eos>). Built from logSoftmax and
    /// indexSelect, so autograd differentiates it.
    public static func nextTokenLoss(logits: Tensor, sequence: VLMSequence) -> Tensor {
        let start = sequence.textStart - 1, n = sequence.count - sequence.textStart
        precondition(n > 0, "TinyVLM.nextTokenLoss: the sequence has no caption tokens")
        let v = logits.shape[1]
        let logp = logits.narrow(dim: 0, start: start, length: n).logSoftmax(dim: 1).reshape([n * v])
        let picked = logp.indexSelect(dim: 0, index: (0..<n).map { $0 * v + sequence.ids[sequence.textStart + $0] })
        return -picked.mean()
    }
}

/// Next-token pretraining of TinyVLM on ShapesWorld descriptions (AdamW, fixed order).
public final class TinyVLMTrainer {
    public let model: TinyVLM
    public let world: ShapesWorld
    public let preprocessor: ImagePreprocessor
    public let tokenizer: Tokenizer
    public let optimizer: AdamW
    /// Samples per step (gradients accumulated, loss averaged).
    public let batchSize: Int
    /// Order of training samples (a Philox permutation per epoch).
    var order: [Int] = []
    var cursor = 0
    var epoch = 0
    public private(set) var step = 0
    let seed: UInt64

    public init(model: TinyVLM, world: ShapesWorld, batchSize: Int = 4, lr: Double = 1e-3, weightDecay: Double = 0.01,
                seed: UInt64 = 0) {
        self.model = model
        self.world = world
        self.batchSize = batchSize
        self.seed = seed
        preprocessor = ImagePreprocessor(imageSize: model.config.imageSize)
        tokenizer = Tokenizer.shapesWorld
        optimizer = AdamW(model.trainableParameters().map(\.1), lr: lr, weightDecay: weightDecay)
    }

    func nextIndex() -> Int {
        if cursor == order.count {
            var rng = PhiloxRNG(seed: seed, stream: 0x5452_4149_4E00 | UInt64(epoch))   // "TRAIN" + epoch
            order = rng.permutation(world.count(.train))
            cursor = 0
            epoch += 1
        }
        defer { cursor += 1 }
        return order[cursor]
    }

    /// One optimiser step on the next `batchSize` training samples; returns the mean loss.
    @discardableResult
    public func trainStep() -> Float {
        optimizer.zeroGrad()
        var total = 0.0
        for _ in 0..<batchSize {
            let sample = world.sample(.train, nextIndex())
            let (pixels, _) = preprocessor(sample.scene.image)
            // The vocabulary covers the grammar, so encoding cannot fail.
            let seq = try! VLMSequence(tokenizer: tokenizer, imageTokens: model.config.imageTokens, sample: sample)
            let out = model(pixels, seq)
            let loss = TinyVLM.nextTokenLoss(logits: out.logits, sequence: seq) / Float(batchSize)
            loss.backward()
            total += Double(loss.item)
        }
        optimizer.step()
        step += 1
        return Float(total)
    }
}
