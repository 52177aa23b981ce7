// SAM's image encoder (segment_anything/modeling/image_encoder.py): a ViT with windowed and
// global attention blocks, decomposed relative position bias, and a convolutional neck.
//
// Dimension letters: B batch, D embed dim, G token grid side (imgSize / patch), NH heads,
// hd head dim, ws window size, W* windows.
//
//   x [B, 3, S, S] ─ patch_embed (Conv k = s = patch) ─► [B, G, G, D] + pos_embed [1, G, G, D]
//     ─ blocks: x + attn(norm1(x)) (windowed: pad G to a multiple of ws, attend per window)
//               x + mlp(norm2(x))
//     ─ neck: Conv1×1 (no bias) → LayerNorm2d → Conv3×3 pad 1 (no bias) → LayerNorm2d ─► [B, out, G, G]

import Foundation
import NN
import Tensors

/// `PatchEmbed`: a Conv2d with kernel = stride = patch, output permuted to [B, H, W, D].
/// Key: `proj.{weight,bias}` [D, C, p, p].
public final class PatchEmbed: Module {
    public let proj: Conv2d

    public var children: [ModuleChild] { [.module("proj", proj)] }

    public init(patchSize: Int, inChans: Int, embedDim: Int, rng: inout PhiloxRNG) {
        proj = Conv2d(inChans, embedDim, kernelSize: patchSize, stride: patchSize, rng: &rng)
    }

    /// x [B, C, H, W] → [B, H/p, W/p, D].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        apply(proj, x).permute([0, 2, 3, 1])
    }
}

/// The image encoder's multi-head attention with decomposed relative position bias
/// (`image_encoder.Attention`). Keys: `rel_pos_h` [2·h−1, hd], `rel_pos_w` [2·w−1, hd] (with
/// use_rel_pos), `qkv.{weight,bias}` [3D, D], `proj.{weight,bias}` [D, D].
public final class ViTAttention: Module {
    public let numHeads: Int
    public let relPosH: Tensor?
    public let relPosW: Tensor?
    public let qkv: Linear
    public let proj: Linear
    /// (h, w) of the token grid this attention was built for (the window, or the whole grid).
    public let inputSize: (Int, Int)

    public var children: [ModuleChild] {
        [.parameter("rel_pos_h", relPosH), .parameter("rel_pos_w", relPosW), .module("qkv", qkv), .module("proj", proj)]
    }

    public init(dim: Int, numHeads: Int, qkvBias: Bool, useRelPos: Bool, inputSize: (Int, Int),
                rng: inout PhiloxRNG) {
        precondition(numHeads > 0 && dim % numHeads == 0, "ViTAttention: \(numHeads) heads do not divide dim \(dim)")
        self.numHeads = numHeads
        self.inputSize = inputSize
        qkv = Linear(dim, 3 * dim, bias: qkvBias, rng: &rng)
        proj = Linear(dim, dim, rng: &rng)
        let hd = dim / numHeads
        // rel_pos_zero_init=True, as SAM builds it.
        relPosH = useRelPos ? Tensor(repeating: 0, shape: [2 * inputSize.0 - 1, hd], requiresGrad: true) : nil
        relPosW = useRelPos ? Tensor(repeating: 0, shape: [2 * inputSize.1 - 1, hd], requiresGrad: true) : nil
    }

    /// x [B, H, W, D] → [B, H, W, D].
    ///   q, k, v = Linear(x) split in three [B, H·W, D] (head h: columns h·hd ..< (h+1)·hd);
    ///   attn = softmax((q·hd^-½) @ kᵀ + rel_h + rel_w) per head (decomposed relative position
    ///   from the unscaled q); out = proj(attn @ v). On the fused attention op.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "ViTAttention: input \(x.shape) must be [B, H, W, D]")
        let (b, h, w, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        precondition(d == qkv.inFeatures, "ViTAttention: input \(x.shape) has D \(d), qkv expects \(qkv.inFeatures)")
        let hd = d / numHeads
        let qkvOut = apply(qkv, x).reshape([b, h * w, 3 * d])
        let q = qkvOut.narrow(dim: 2, start: 0, length: d)
        let k = qkvOut.narrow(dim: 2, start: d, length: d)
        let v = qkvOut.narrow(dim: 2, start: 2 * d, length: d)
        // self.scale = head_dim ** -0.5 (a Python float), applied to q in float32.
        let scale = Float(pow(Double(hd), -0.5))
        var relPos: (rh: Tensor, rw: Tensor, qSize: (Int, Int), kSize: (Int, Int))?
        if let relPosH, let relPosW {
            relPos = (getRelPos(qSize: h, kSize: h, relPos: relPosH), getRelPos(qSize: w, kSize: w, relPos: relPosW),
                      (h, w), (h, w))
        }
        let out = multiHeadAttention(q: q, k: k, v: v, numHeads: numHeads, scale: .multiplyQuery(scale), relPos: relPos)
        return apply(proj, out.reshape([b, h, w, d]))
    }
}

/// `get_rel_pos(q_size, k_size, rel_pos)`: rows rel_pos[q·max(k/q,1) − k·max(q/k,1) +
/// (k−1)·max(q/k,1)] for every (q, k) → [qSize, kSize, C]. The table must already have
/// 2·max(q, k) − 1 rows (SAM never resizes it: windows and grids match the built size).
func getRelPos(qSize: Int, kSize: Int, relPos: Tensor) -> Tensor {
    let maxRelDist = 2 * max(qSize, kSize) - 1
    precondition(relPos.shape[0] == maxRelDist,
                 "get_rel_pos: table \(relPos.shape) has \(relPos.shape[0]) rows, q \(qSize) / k \(kSize) need \(maxRelDist) (resizing the table is not supported)")
    let qScale = max(Double(kSize) / Double(qSize), 1), kScale = max(Double(qSize) / Double(kSize), 1)
    var index: [Int] = []
    index.reserveCapacity(qSize * kSize)
    for i in 0..<qSize {
        for j in 0..<kSize {
            index.append(Int(Double(i) * qScale - Double(j) * kScale + Double(kSize - 1) * kScale))
        }
    }
    return relPos.indexSelect(dim: 0, index: index).reshape([qSize, kSize, relPos.shape[1]])
}

/// `window_partition`: x [B, H, W, C] zero-padded to multiples of ws → windows
/// [B·(Hp/ws)·(Wp/ws), ws, ws, C], and (Hp, Wp).
func windowPartition(_ x: Tensor, windowSize ws: Int) -> (Tensor, (Int, Int)) {
    let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let padH = (ws - h % ws) % ws, padW = (ws - w % ws) % ws
    let xp = (padH > 0 || padW > 0) ? pad(x, [0, 0, 0, padW, 0, padH]) : x
    let (hp, wp) = (h + padH, w + padW)
    let windows = xp.reshape([b, hp / ws, ws, wp / ws, ws, c]).permute([0, 1, 3, 2, 4, 5]).reshape([-1, ws, ws, c])
    return (windows, (hp, wp))
}

/// `window_unpartition`: windows [B·nW, ws, ws, C] → [B, H, W, C] with the padding removed.
func windowUnpartition(_ windows: Tensor, windowSize ws: Int, padHW: (Int, Int), hw: (Int, Int)) -> Tensor {
    let (hp, wp) = padHW, (h, w) = hw
    let c = windows.shape[3]
    let b = windows.shape[0] / (hp * wp / ws / ws)
    var x = windows.reshape([b, hp / ws, wp / ws, ws, ws, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, hp, wp, c])
    if hp > h { x = x.narrow(dim: 1, start: 0, length: h) }
    if wp > w { x = x.narrow(dim: 2, start: 0, length: w) }
    return x
}

/// A ViT block (`image_encoder.Block`): x + attn(norm1(x)), then x + mlp(norm2(x)); windowed
/// attention when `windowSize` > 0. Keys: `norm1`, `attn`, `norm2`, `mlp.lin1`, `mlp.lin2`.
public final class ViTBlock: Module {
    public let norm1: LayerNorm
    public let attn: ViTAttention
    public let norm2: LayerNorm
    public let mlp: MLPBlock
    /// 0: global attention.
    public let windowSize: Int

    public var children: [ModuleChild] {
        [.module("norm1", norm1), .module("attn", attn), .module("norm2", norm2), .module("mlp", mlp)]
    }

    public init(dim: Int, numHeads: Int, mlpRatio: Double, qkvBias: Bool, useRelPos: Bool, windowSize: Int,
                inputSize: (Int, Int), layerNormEps: Double, rng: inout PhiloxRNG) {
        self.windowSize = windowSize
        norm1 = LayerNorm(dim, eps: layerNormEps)
        attn = ViTAttention(dim: dim, numHeads: numHeads, qkvBias: qkvBias, useRelPos: useRelPos,
                            inputSize: windowSize == 0 ? inputSize : (windowSize, windowSize), rng: &rng)
        norm2 = LayerNorm(dim, eps: layerNormEps)
        mlp = MLPBlock(embeddingDim: dim, mlpDim: Int(Double(dim) * mlpRatio), activation: .gelu, rng: &rng)
    }

    /// x [B, H, W, D] → [B, H, W, D].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let shortcut = x
        var y = apply(norm1, x)
        if windowSize > 0 {
            let (h, w) = (y.shape[1], y.shape[2])
            let (windows, padHW) = windowPartition(y, windowSize: windowSize)
            y = windowUnpartition(attn(windows), windowSize: windowSize, padHW: padHW, hw: (h, w))
        } else {
            y = attn(y)
        }
        let x1 = shortcut + y
        return x1 + mlp(apply(norm2, x1))
    }
}

/// `ImageEncoderViT`. Keys: `pos_embed` [1, G, G, D], `patch_embed.proj.*`, `blocks.<i>.*`,
/// `neck.{0,2}.weight` (convs, no bias), `neck.{1,3}.{weight,bias}` (LayerNorm2d).
public final class ImageEncoderViT: Module {
    public let config: ImageEncoderConfig
    public let patchEmbed: PatchEmbed
    public let posEmbed: Tensor?
    public let blocks: [ViTBlock]
    public let neckConv1: Conv2d
    public let neckNorm1: LayerNorm2d
    public let neckConv2: Conv2d
    public let neckNorm2: LayerNorm2d

    public var children: [ModuleChild] {
        [.parameter("pos_embed", posEmbed), .module("patch_embed", patchEmbed), .list("blocks", blocks),
         .list("neck", [neckConv1, neckNorm1, neckConv2, neckNorm2])]
    }

    public init(_ c: ImageEncoderConfig, rng: inout PhiloxRNG) {
        precondition(c.imgSize % c.patchSize == 0, "ImageEncoderViT: imgSize \(c.imgSize) is not a multiple of patch \(c.patchSize)")
        precondition(c.globalAttnIndexes.allSatisfy { $0 >= 0 && $0 < c.depth },
                     "ImageEncoderViT: global_attn_indexes \(c.globalAttnIndexes) out of range for depth \(c.depth)")
        config = c
        let g = c.gridSize
        patchEmbed = PatchEmbed(patchSize: c.patchSize, inChans: c.inChans, embedDim: c.embedDim, rng: &rng)
        posEmbed = c.useAbsPos ? Tensor(repeating: 0, shape: [1, g, g, c.embedDim], requiresGrad: true) : nil
        var blocks: [ViTBlock] = []
        for i in 0..<c.depth {
            blocks.append(ViTBlock(dim: c.embedDim, numHeads: c.numHeads, mlpRatio: c.mlpRatio, qkvBias: c.qkvBias,
                                   useRelPos: c.useRelPos,
                                   windowSize: c.globalAttnIndexes.contains(i) ? 0 : c.windowSize,
                                   inputSize: (g, g), layerNormEps: c.layerNormEps, rng: &rng))
        }
        self.blocks = blocks
        neckConv1 = Conv2d(c.embedDim, c.outChans, kernelSize: 1, bias: false, rng: &rng)
        neckNorm1 = LayerNorm2d(c.outChans, eps: c.neckLayerNorm2dEps)
        neckConv2 = Conv2d(c.outChans, c.outChans, kernelSize: 3, padding: 1, bias: false, rng: &rng)
        neckNorm2 = LayerNorm2d(c.outChans, eps: c.neckLayerNorm2dEps)
    }

    /// x [B, C, S, S] (S = imgSize, normalised and padded) → embedding [B, outChans, G, G].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == config.inChans && x.shape[2] == config.imgSize
                     && x.shape[3] == config.imgSize,
                     "ImageEncoderViT: input \(x.shape) must be [B, \(config.inChans), \(config.imgSize), \(config.imgSize)]")
        var y = patchEmbed(x)
        if let posEmbed { y = y + posEmbed }
        for blk in blocks { y = blk(y) }
        y = y.permute([0, 3, 1, 2])
        return neckNorm2(apply(neckConv2, neckNorm1(apply(neckConv1, y))))
    }
}
