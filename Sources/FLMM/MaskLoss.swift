// F-LMM's `_compute(pred_masks, gt_masks)` (frozen_*.py): the two mask losses and the two
// logged values, for N predicted masks against N ground-truth masks of the same size.

import Tensors

/// The terms F-LMM computes for one set of N masks (U-Net or SAM output).
public struct MaskLossTerms {
    /// mmdet Dice (naive, eps 1, sigmoid) with avg_factor = N: `loss_dice`.
    public let dice: Tensor
    /// mmdet sigmoid BCE with avg_factor = number of pixels: `loss_mask`.
    public let bce: Tensor
    /// Pixel accuracy of σ(pred) > 0.5 against the ground truth (logged, no gradient).
    public let accuracy: Float
    /// Mean over masks of I / (U + 1e-12) for σ(pred) > 0.5 (logged, no gradient).
    public let aiou: Float

    /// dice + bce, what mmengine's `parse_losses` sums for this set.
    public var total: Tensor { bce + dice }
}

/// F-LMM's `_compute`: `pred` are logits [N, H, W], `gt` 0/1 masks [N, H, W] (already resized
/// to the prediction's size by nearest interpolation).
public func maskLossTerms(pred: Tensor, gt: Tensor) -> MaskLossTerms {
    precondition(pred.rank == 3 && pred.shape == gt.shape,
                 "maskLossTerms: pred \(pred.shape) and gt \(gt.shape) must both be [N, H, W]")
    let n = pred.shape[0]
    let dice = diceLoss(pred.reshape([n, -1]), gt.reshape([n, -1]), avgFactor: Double(n))
    let bce = sigmoidBinaryCrossEntropy(pred.reshape([-1]), gt.reshape([-1]), avgFactor: Double(pred.count))
    let (accuracy, aiou) = binarizedAccuracyAndIoU(logits: pred, gt: gt)
    return MaskLossTerms(dice: dice, bce: bce, accuracy: accuracy, aiou: aiou)
}

/// F-LMM's `compute_loss` ground truth: 0/1 masks [N, H, W] resized to the prediction's size
/// by `F.interpolate(masks[None].float(), size)` (legacy nearest: src = min(⌊dst·Float(in/out)⌋,
/// in − 1), with out == in and out == 2·in exact) → [N, size.0, size.1]. No gradient.
public func resizedGroundTruth(_ masks: Tensor, to size: (height: Int, width: Int)) -> Tensor {
    precondition(masks.rank == 3 && size.height > 0 && size.width > 0,
                 "resizedGroundTruth: masks \(masks.shape) must be [N, H, W], size \(size) positive")
    let n = masks.shape[0]
    return Autograd.noGrad {
        interpolate(masks.detached().reshape([1, n, masks.shape[1], masks.shape[2]]), size: size, mode: .nearest)
            .reshape([n, size.height, size.width])
    }
}

/// F-LMM's logged values: with b = (σ(pred) > 0.5), accuracy = mean(b == gt) and
/// aiou = mean_i I_i / (U_i + 1e-12) with I = Σ b·gt, U = Σ (b + gt − b·gt) per mask (Float32).
public func binarizedAccuracyAndIoU(logits pred: Tensor, gt: Tensor) -> (accuracy: Float, aiou: Float) {
    precondition(pred.rank >= 1 && pred.shape == gt.shape,
                 "binarizedAccuracyAndIoU: pred \(pred.shape) and gt \(gt.shape) must have the same shape [N, ...]")
    let n = pred.shape[0], per = n == 0 ? 0 : pred.count / n
    var equal = 0, iouSum = 0.0
    for i in 0..<n {
        var inter = 0.0, union = 0.0
        for j in (i * per)..<((i + 1) * per) {
            let b: Float = Kernels.sigmoid(pred.data[j]) > 0.5 ? 1 : 0, g = gt.data[j]
            if b == g { equal += 1 }
            inter += Double(b * g)
            union += Double((b + g) - b * g)
        }
        iouSum += Double(Float(inter) / (Float(union) + 1e-12))
    }
    return (Float(Double(equal) / Double(pred.count)), Float(iouSum / Double(n)))
}
