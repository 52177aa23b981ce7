// SAM's prompt encoder (segment_anything/modeling/prompt_encoder.py): sparse embeddings for
// points and boxes (random-Fourier positional encoding + learned type embeddings) and dense
// embeddings for a low-resolution mask (or the learned no-mask embedding).
//
// Dimension letters: B prompts (batch), N sparse tokens, E embed dim, h w image-embedding size.

import Foundation
import NN
import Tensors

/// `PositionEmbeddingRandom(num_pos_feats)`: pe(u) = [sin(2π·(2u−1)·G), cos(2π·(2u−1)·G)] for
/// u ∈ [0, 1]², G [2, F] a fixed Gaussian matrix. Key (a buffer):
/// `positional_encoding_gaussian_matrix` [2, F].
public final class PositionEmbeddingRandom: Module {
    public let gaussianMatrix: Tensor

    public var children: [ModuleChild] { [.buffer("positional_encoding_gaussian_matrix", gaussianMatrix)] }

    /// G = scale · N(0, 1) [2, numPosFeats] (scale ≤ 0 means 1, as in SAM).
    public init(numPosFeats: Int, scale: Float = 1, rng: inout PhiloxRNG) {
        let s: Float = scale <= 0 ? 1 : scale
        gaussianMatrix = Tensor(shape: [2, numPosFeats], data: (0..<(2 * numPosFeats)).map { _ in s * rng.nextNormal() })
    }

    /// Coordinates normalised to [0, 1], [..., 2] as (x, y) → [..., 2F].
    ///   c = 2·coords − 1; c = c @ G; c = 2π·c (2π rounded to Float); [sin c, cos c].
    /// A constant: no gradient flows to the coordinates or to G (a buffer), as in F-LMM where
    /// box prompts are detached.
    public func peEncoding(_ coords: Tensor) -> Tensor {
        precondition(coords.shape.last == 2, "peEncoding: coords \(coords.shape) must be [..., 2]")
        let f = gaussianMatrix.shape[1]
        let c = ((coords.detached() * 2 - 1).matmul(gaussianMatrix.detached()) * Float(2 * Double.pi)).data
        let rows = c.count / f
        var out = [Float](repeating: 0, count: rows * 2 * f)
        for r in 0..<rows {
            for j in 0..<f {
                out[r * 2 * f + j] = Foundation.sin(c[r * f + j])
                out[r * 2 * f + f + j] = Foundation.cos(c[r * f + j])
            }
        }
        return Tensor(shape: Array(coords.shape.dropLast()) + [2 * f], data: out)
    }

    /// Dense encoding of an (h, w) grid of cell centres ((j + ½)/w, (i + ½)/h) → [2F, h, w].
    public func callAsFunction(_ size: (Int, Int)) -> Tensor {
        let (h, w) = size
        var coords = [Float](repeating: 0, count: h * w * 2)
        for i in 0..<h {
            for j in 0..<w {
                // cumsum of ones minus 0.5 is exact; the division is one float32 rounding.
                coords[(i * w + j) * 2] = (Float(j + 1) - 0.5) / Float(w)
                coords[(i * w + j) * 2 + 1] = (Float(i + 1) - 0.5) / Float(h)
            }
        }
        return peEncoding(Tensor(shape: [h, w, 2], data: coords)).permute([2, 0, 1])
    }

    /// Points in pixels of an image of `imageSize` (H, W), [B, N, 2] as (x, y) → [B, N, 2F].
    public func forwardWithCoords(_ coords: Tensor, imageSize: (Int, Int)) -> Tensor {
        precondition(coords.rank == 3 && coords.shape[2] == 2, "forwardWithCoords: coords \(coords.shape) must be [B, N, 2]")
        let scale = Tensor(shape: [2], data: [Float(imageSize.1), Float(imageSize.0)])
        return peEncoding(coords / scale)
    }
}

/// `PromptEncoder`. Keys: `pe_layer.positional_encoding_gaussian_matrix` [2, E/2],
/// `point_embeddings.{0..3}.weight` [1, E] (negative point, positive point, box corner 1, box
/// corner 2), `not_a_point_embed.weight` [1, E], `mask_downscaling.{0,3,6}` (convs),
/// `mask_downscaling.{1,4}` (LayerNorm2d), `no_mask_embed.weight` [1, E].
public final class PromptEncoder: Module {
    public let config: PromptEncoderConfig
    public let peLayer: PositionEmbeddingRandom
    public let pointEmbeddings: [Embedding]
    public let notAPointEmbed: Embedding
    public let maskConv1: Conv2d
    public let maskNorm1: LayerNorm2d
    public let maskConv2: Conv2d
    public let maskNorm2: LayerNorm2d
    public let maskConv3: Conv2d
    public let noMaskEmbed: Embedding

    public var children: [ModuleChild] {
        [.module("pe_layer", peLayer), .list("point_embeddings", pointEmbeddings),
         .module("not_a_point_embed", notAPointEmbed),
         .list("mask_downscaling", [maskConv1, maskNorm1, nil, maskConv2, maskNorm2, nil, maskConv3]),
         .module("no_mask_embed", noMaskEmbed)]
    }

    public init(_ c: PromptEncoderConfig, rng: inout PhiloxRNG) {
        precondition(c.embedDim % 2 == 0, "PromptEncoder: embedDim \(c.embedDim) must be even")
        precondition(c.maskInChans % 4 == 0 && c.maskInChans > 0, "PromptEncoder: maskInChans \(c.maskInChans) must be a positive multiple of 4")
        config = c
        peLayer = PositionEmbeddingRandom(numPosFeats: c.embedDim / 2, rng: &rng)
        var pts: [Embedding] = []
        for _ in 0..<4 { pts.append(Embedding(1, c.embedDim, rng: &rng)) }
        pointEmbeddings = pts
        notAPointEmbed = Embedding(1, c.embedDim, rng: &rng)
        maskConv1 = Conv2d(1, c.maskInChans / 4, kernelSize: 2, stride: 2, rng: &rng)
        maskNorm1 = LayerNorm2d(c.maskInChans / 4, eps: c.layerNorm2dEps)
        maskConv2 = Conv2d(c.maskInChans / 4, c.maskInChans, kernelSize: 2, stride: 2, rng: &rng)
        maskNorm2 = LayerNorm2d(c.maskInChans, eps: c.layerNorm2dEps)
        maskConv3 = Conv2d(c.maskInChans, c.embedDim, kernelSize: 1, rng: &rng)
        noMaskEmbed = Embedding(1, c.embedDim, rng: &rng)
    }

    /// The last dense PE and the Gaussian matrix it was computed from.
    private var densePECache: (gaussian: [Float], pe: Tensor)?

    /// `get_dense_pe()`: the positional encoding of the image-embedding grid, [1, E, h, w]. A
    /// constant (no gradient); computed once and reused until the Gaussian matrix changes.
    public func getDensePE() -> Tensor {
        if let c = densePECache, c.gaussian == peLayer.gaussianMatrix.data { return c.pe }
        let pe = peLayer(config.imageEmbeddingSize).unsqueeze(0)
        densePECache = (peLayer.gaussianMatrix.data, pe)
        return pe
    }

    /// `_embed_points`: coords [B, N, 2] (pixels of the input frame), labels [B][N] in
    /// {−1 (padding), 0 (negative), 1 (positive)}; `pad` appends a (0, 0) point labelled −1.
    /// → [B, N(+1), E]: pe(coords + ½) + the label's embedding; label −1 gives not_a_point alone.
    public func embedPoints(_ coords: Tensor, labels: [[Int]], pad: Bool) -> Tensor {
        precondition(coords.rank == 3 && coords.shape[2] == 2 && labels.count == coords.shape[0]
                     && labels.allSatisfy { $0.count == coords.shape[1] },
                     "embedPoints: coords \(coords.shape) and labels \(labels.count)×\(labels.first?.count ?? 0) disagree")
        precondition(labels.allSatisfy { $0.allSatisfy { (-1...1).contains($0) } }, "embedPoints: labels must be -1, 0 or 1")
        var points = coords + 0.5
        var labs = labels
        if pad {
            points = cat([points, Tensor.zeros([coords.shape[0], 1, 2])], dim: 1)
            labs = labs.map { $0 + [-1] }
        }
        let (b, n, e) = (points.shape[0], points.shape[1], config.embedDim)
        let pe = peLayer.forwardWithCoords(points, imageSize: config.inputImageSize)
        let flat = labs.flatMap { $0 }
        // Label −1: the encoding is zeroed (exactly) and not_a_point added; 0/1: its embedding added.
        let keep = Tensor(shape: [b, n, 1], data: flat.map { $0 == -1 ? 0 : 1 })
        let table = cat([notAPointEmbed.weight, pointEmbeddings[0].weight, pointEmbeddings[1].weight], dim: 0)
        let added = table.indexSelect(dim: 0, index: flat.map { $0 + 1 }).reshape([b, n, e])
        return pe * keep + added
    }

    /// `_embed_boxes`: boxes [B, 4] or [B, 1, 4] as (x0, y0, x1, y1) in the input frame →
    /// [B, 2, E]: pe(corner + ½) + point_embeddings[2] (top-left) / [3] (bottom-right).
    public func embedBoxes(_ boxes: Tensor) -> Tensor {
        precondition(boxes.count % 4 == 0 && boxes.count > 0, "embedBoxes: boxes \(boxes.shape) must hold (x0, y0, x1, y1) rows")
        let corners = (boxes + 0.5).reshape([-1, 2, 2])
        let pe = peLayer.forwardWithCoords(corners, imageSize: config.inputImageSize)
        return pe + cat([pointEmbeddings[2].weight, pointEmbeddings[3].weight], dim: 0)
    }

    /// `_embed_masks`: masks [B, 1, 4h, 4w] → [B, E, h, w] through the mask downscaling.
    public func embedMasks(_ masks: Tensor) -> Tensor {
        precondition(masks.rank == 4 && masks.shape[1] == 1, "embedMasks: masks \(masks.shape) must be [B, 1, H, W]")
        var y = apply(maskConv1, masks)
        y = maskNorm1(y).geluVectorized()
        y = apply(maskConv2, y)
        y = maskNorm2(y).geluVectorized()
        return apply(maskConv3, y)
    }

    /// `forward(points, boxes, masks)` → (sparse [B, N, E], dense [B, E, h, w]). B comes from the
    /// first prompt given (points, boxes, masks), else 1. Points are padded with a not-a-point
    /// when there is no box. Without a mask, dense is no_mask_embed broadcast to [B, E, h, w].
    public func callAsFunction(points: (coords: Tensor, labels: [[Int]])? = nil, boxes: Tensor? = nil,
                               masks: Tensor? = nil) -> (sparse: Tensor, dense: Tensor) {
        let bs = points?.coords.shape[0] ?? boxes.map { $0.count / 4 } ?? masks?.shape[0] ?? 1
        var parts: [Tensor] = []
        if let points { parts.append(embedPoints(points.coords, labels: points.labels, pad: boxes == nil)) }
        if let boxes { parts.append(embedBoxes(boxes)) }
        for p in parts {
            precondition(p.shape[0] == bs, "PromptEncoder: prompts of batch \(p.shape[0]) and \(bs) disagree")
        }
        let sparse = parts.isEmpty ? Tensor.zeros([bs, 0, config.embedDim])
            : parts.count == 1 ? parts[0] : cat(parts, dim: 1)
        let dense: Tensor
        if let masks {
            precondition(masks.shape[2] == config.maskInputSize.0 && masks.shape[3] == config.maskInputSize.1,
                         "PromptEncoder: mask prompt \(masks.shape) must be [B, 1, \(config.maskInputSize.0), \(config.maskInputSize.1)]")
            dense = embedMasks(masks)
        } else {
            let (h, w) = config.imageEmbeddingSize
            dense = noMaskEmbed.weight.reshape([1, config.embedDim, 1, 1]).expand([bs, -1, h, w])
        }
        return (sparse, dense)
    }
}
