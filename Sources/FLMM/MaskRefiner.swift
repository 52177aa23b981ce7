// F-LMM's SAM refiner (flmm/models/mask_head/mask_refiner.py, `SAMWrapper`): SAM's prompt
// encoder and mask decoder turn the U-Net's coarse mask logits into fine logits at the
// original image size, prompted by
//   - a mask: the coarse logits resized to the encoder frame, padded with a logit ≤ −1, and
//     resized to SAM's low-resolution mask size (differentiable: SAM's loss reaches the U-Net);
//   - a box: of the coarse mask's pixels (sigmoid > 0.5 at the original size, detached);
//   - text: the phrase's projected token embeddings, appended after the box corners.
// Each prompt kind is an independent switch. Only SAM's image encoder is frozen; its output
// can be computed once per image and reused (`encodeImage`, or a cached embedding).
//
// Dimension letters: M masks (phrases), H W original image, h' w' resized image (the encoder
// frame before padding), S encoder input side, P prompt-mask side (4 × embedding side),
// E prompt dim, T text tokens of a phrase.

import NN
import SegmentAnything
import Tensors

/// Which prompts the refiner gives SAM (SAMWrapper's constructor flags).
public struct RefinerOptions: Sendable, Equatable {
    public var useText: Bool
    public var useMask: Bool
    public var useBox: Bool
    /// Ask SAM for its 3 candidate masks and keep the one with the highest IoU against the
    /// binarised coarse mask (off in F-LMM's released configs).
    public var multimaskOutput: Bool

    public init(useText: Bool = true, useMask: Bool = true, useBox: Bool = true, multimaskOutput: Bool = false) {
        self.useText = useText
        self.useMask = useMask
        self.useBox = useBox
        self.multimaskOutput = multimaskOutput
    }
}

/// The prompts made from the coarse masks (`generate_prompt_masks` and the box step).
public struct RefinerPrompts {
    /// [M, 1, P, P] mask prompts (logits; differentiable w.r.t. the coarse logits).
    public let promptMasks: Tensor
    /// min(−1, min over all coarse logits): the padding logit.
    public let padValue: Float
    /// [M, H, W] sigmoid of the coarse logits resized to the original size (detached).
    public let boxProbs: Tensor
    /// [M, H, W] boxProbs > 0.5 as 0/1.
    public let boxBinaryMasks: Tensor
    /// [x0, y0, x1 + 1, y1 + 1] per mask in original pixels ([0, 0, W, H] for an empty mask).
    public let boxesOriginal: [[Double]]
    /// The boxes in the encoder frame (ResizeLongestSide, Double), as SAM receives them
    /// (after rounding to Float).
    public let boxes: [[Double]]
}

/// What the refiner computed, per mask.
public struct RefinerOutput {
    /// [M, H, W] fine mask logits at the original size.
    public let masks: Tensor
    /// [M, K, P/… ] SAM's low-resolution logits (K = 1, or 3 with multimask output), stacked.
    public let lowResMasks: Tensor
    /// [M, K] SAM's IoU predictions.
    public let iouPredictions: Tensor
    /// Sparse prompt tokens given to the decoder, per mask: [1, N_m, E].
    public let sparseEmbeddings: [Tensor]
    /// [M, E, h, w] dense prompt embeddings.
    public let denseEmbeddings: Tensor
    /// The candidate picked per mask (0 without multimask output).
    public let chosen: [Int]
    public let prompts: RefinerPrompts
}

/// `SAMWrapper`: SAM (image encoder optional and frozen) with F-LMM's prompt construction.
/// Keys: `model.image_encoder.*` (when present), `model.prompt_encoder.*`, `model.mask_decoder.*`
/// — inside F-LMM's model they appear under `sam.`. `trainableStateDict()` drops the image
/// encoder, as SAMWrapper's `state_dict()` does.
public final class MaskRefiner: Module {
    public let model: Sam
    public var options: RefinerOptions

    public var children: [ModuleChild] { [.module("model", model)] }

    /// Wraps `sam` and freezes its image encoder.
    public init(sam: Sam, options: RefinerOptions = RefinerOptions()) {
        model = sam
        self.options = options
        sam.imageEncoder?.freeze()
    }

    /// The encoder input side S (`image_encoder.img_size`).
    public var imgSize: Int { model.imgSize }
    /// The mask-prompt side P (`4 × image embedding`; F-LMM hard-codes 256 for the real SAM).
    public var promptMaskSize: (Int, Int) { model.config.promptEncoder.maskInputSize }

    /// The resized (h', w') of an original (H, W) image (`ResizeLongestSide(S)`).
    public func inputSize(originalSize: (Int, Int)) -> (Int, Int) {
        ResizeLongestSide(imgSize).preprocessShape(originalSize)
    }

    /// `encode_image` after the resize: image [3, h', w'] or [1, 3, h', w'] (0–255, resized so that
    /// max(h', w') = S) → embedding [1, C, e, e], without gradients (the encoder is frozen).
    public func encodeImage(_ image: Tensor) -> Tensor {
        guard let encoder = model.imageEncoder else {
            preconditionFailure("MaskRefiner.encodeImage: this SAM was built without an image encoder; pass a cached embedding")
        }
        let x = image.rank == 3 ? image.unsqueeze(0) : image
        return Autograd.noGrad { encoder(model.preprocess(x)).detached() }
    }

    /// The mask and box prompts for coarse logits `predMasks` [M, mh, mw] of an image whose
    /// original size is (H, W).
    public func prompts(predMasks: Tensor, originalSize: (Int, Int)) -> RefinerPrompts {
        MaskRefiner.prompts(predMasks: predMasks, originalSize: originalSize, imgSize: imgSize,
                            promptMaskSize: promptMaskSize)
    }

    /// The prompt construction alone (it needs no weights): `imgSize` S is the encoder input
    /// side, `promptMaskSize` (P, P) SAM's low-resolution mask size.
    ///   pad = min(−1, min(predMasks)); x = bilinear(pred, (h', w')); pad right/bottom to S×S
    ///   with `pad`; promptMasks = bilinear(x, P×P)   (align_corners false, no antialias)
    ///   boxProbs = bilinear(sigmoid(pred), (H, W)); box of the pixels > 0.5 → encoder frame.
    public static func prompts(predMasks: Tensor, originalSize: (Int, Int), imgSize s: Int,
                               promptMaskSize: (Int, Int)) -> RefinerPrompts {
        precondition(predMasks.rank == 3 && predMasks.shape[0] > 0,
                     "MaskRefiner.prompts: coarse masks \(predMasks.shape) must be [M, h, w] with M ≥ 1")
        let (hIn, wIn) = ResizeLongestSide(s).preprocessShape(originalSize)
        let (p0, p1) = promptMaskSize
        // generate_prompt_masks: one padding constant for all masks, no gradient through it.
        let padValue = Swift.min(-1, predMasks.data.min() ?? -1)
        let resized = interpolate(predMasks.unsqueeze(1), size: (hIn, wIn), mode: .bilinear, alignCorners: false)
        let padded = pad(resized, (left: 0, right: s - wIn, top: 0, bottom: s - hIn), value: padValue)
        let promptMasks = interpolate(padded, size: (p0, p1), mode: .bilinear, alignCorners: false)

        // Box prompts from the detached coarse mask: sigmoid, then bilinear to (H, W), > 0.5.
        let (bigH, bigW) = originalSize
        let probs = interpolate(predMasks.detached().sigmoid().unsqueeze(0), size: originalSize, mode: .bilinear,
                                alignCorners: false).squeeze(0)
        let binary = probs.map { $0 > 0.5 ? 1 : 0 }
        let m = predMasks.shape[0]
        var raw: [[Double]] = []
        for i in 0..<m {
            var x0 = Int.max, y0 = Int.max, x1 = -1, y1 = -1
            let base = i * bigH * bigW
            for y in 0..<bigH {
                for x in 0..<bigW where binary.data[base + y * bigW + x] > 0 {
                    x0 = Swift.min(x0, x); x1 = Swift.max(x1, x)
                    y0 = Swift.min(y0, y); y1 = Swift.max(y1, y)
                }
            }
            // mask2box: [x0, y0, x1 + 1, y1 + 1]; an empty mask prompts the whole image.
            raw.append(x1 >= 0 ? [Double(x0), Double(y0), Double(x1 + 1), Double(y1 + 1)]
                       : [0, 0, Double(bigW), Double(bigH)])
        }
        let boxes = ResizeLongestSide(s).applyBoxes(raw, originalSize: originalSize)
        return RefinerPrompts(promptMasks: promptMasks, padValue: padValue, boxProbs: probs, boxBinaryMasks: binary,
                              boxesOriginal: raw, boxes: boxes)
    }

    /// `SAMWrapper.forward` on an image embedding [1, C, e, e] (from `encodeImage` or a cache):
    /// coarse logits `predMasks` [M, mh, mw], `textEmbeds` one [T_m, E] per mask (needed when
    /// `useText`), original image size (H, W) → fine logits [M, H, W] and what led to them.
    public func callAsFunction(imageEmbedding: Tensor, predMasks: Tensor, textEmbeds: [Tensor]?,
                               originalSize: (Int, Int)) -> RefinerOutput {
        let m = predMasks.shape[0]
        if options.useText {
            precondition(textEmbeds?.count == m,
                         "MaskRefiner: useText needs one text embedding per mask (\(m)), got \(textEmbeds?.count ?? 0)")
        }
        let pr = prompts(predMasks: predMasks, originalSize: originalSize)
        let inSize = inputSize(originalSize: originalSize)
        let (p0, p1) = promptMaskSize
        let densePE = model.promptEncoder.getDensePE()
        var fine: [Tensor] = [], low: [Tensor] = [], ious: [Tensor] = [], sparse: [Tensor] = [], dense: [Tensor] = []
        var chosen: [Int] = []
        for i in 0..<m {
            let box = options.useBox ? Tensor(shape: [1, 1, 4], data: pr.boxes[i].map { Float($0) }) : nil
            let maskPrompt = options.useMask
                ? pr.promptMasks.narrow(dim: 0, start: i, length: 1).reshape([1, 1, p0, p1]) : nil
            var (sp, de) = model.promptEncoder(points: nil, boxes: box, masks: maskPrompt)
            if options.useText, let t = textEmbeds?[i] {
                sp = sp.shape[1] == 0 ? t.unsqueeze(0) : cat([sp, t.unsqueeze(0)], dim: 1)
            }
            let (lowRes, iou) = model.maskDecoder(imageEmbeddings: imageEmbedding, imagePE: densePE,
                                                  sparsePromptEmbeddings: sp, densePromptEmbeddings: de,
                                                  multimaskOutput: options.multimaskOutput)
            let full = model.postprocessMasks(lowRes, inputSize: inSize, originalSize: originalSize)  // [1, K, H, W]
            var pick = 0
            if options.multimaskOutput {
                pick = MaskRefiner.bestCandidate(full.squeeze(0), target: pr.boxBinaryMasks, mask: i)
            }
            fine.append(full.narrow(dim: 1, start: pick, length: 1).reshape([1] + originalSizeArray(originalSize)))
            chosen.append(pick)
            low.append(lowRes)
            ious.append(iou)
            sparse.append(sp)
            dense.append(de)
        }
        return RefinerOutput(masks: cat(fine, dim: 0), lowResMasks: cat(low, dim: 0), iouPredictions: cat(ious, dim: 0),
                             sparseEmbeddings: sparse, denseEmbeddings: cat(dense, dim: 0), chosen: chosen, prompts: pr)
    }

    /// Multimask selection: candidates [K, H, W] binarised at logit > 0; IoU = I / (U + 1e-12)
    /// (Float32) with the binarised coarse mask `target[mask]`; the first best index.
    public static func bestCandidate(_ candidates: Tensor, target: Tensor, mask: Int) -> Int {
        let k = candidates.shape[0], n = candidates.shape[1] * candidates.shape[2]
        var best = 0, bestIoU = -Float.infinity
        for c in 0..<k {
            var inter: Float = 0, union: Float = 0
            for j in 0..<n {
                let a: Float = candidates.data[c * n + j] > 0 ? 1 : 0
                let t = target.data[mask * n + j]
                inter += a * t
                union += a + t - a * t
            }
            let iou = inter / (union + 1e-12)
            if iou > bestIoU { best = c; bestIoU = iou }
        }
        return best
    }

    /// Parameters and buffers without the frozen image encoder (SAMWrapper.state_dict()).
    public func trainableStateDict() -> [(String, Tensor)] {
        stateDict().filter { !$0.0.contains("image_encoder") }
    }
}

private func originalSizeArray(_ s: (Int, Int)) -> [Int] { [s.0, s.1] }
