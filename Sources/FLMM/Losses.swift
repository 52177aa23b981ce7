// mmdet's mask losses as F-LMM configures them (mmdet 3.x `dice_loss.py`,
// `cross_entropy_loss.py`, `utils.py`):
//   DiceLoss(use_sigmoid=True, activate=True, reduction='mean', naive_dice=True, eps=1.0)
//     called as loss_dice(pred.view(N, -1), gt.view(N, -1), avg_factor=N);
//   CrossEntropyLoss(use_sigmoid=True, reduction='mean')
//     called as loss_mask(pred.view(-1), gt.view(-1), avg_factor=pred.numel()).
// With an avg_factor, mmdet's 'mean' is sum / (avg_factor + finfo(float32).eps).

import Tensors

/// mmdet's loss reduction.
public enum LossReduction: String, Sendable {
    case none, mean, sum
}

/// `torch.finfo(torch.float32).eps`, which mmdet adds to every avg_factor.
public let float32Epsilon: Double = 1.1920928955078125e-07

/// mmdet `weight_reduce_loss` without element weights: `none` → `loss`; `mean` →
/// `loss.mean()`, or `loss.sum() / (avgFactor + float32 eps)` with an avg_factor (the divisor is
/// rounded to Float, as PyTorch does with a Python scalar); `sum` → `loss.sum()` (no avg_factor).
public func weightReduceLoss(_ loss: Tensor, reduction: LossReduction, avgFactor: Double? = nil) -> Tensor {
    switch (reduction, avgFactor) {
    case (.none, _): return loss
    case (.mean, nil): return loss.mean()
    case (.mean, let f?): return loss.sum() / Float(f + float32Epsilon)
    case (.sum, nil): return loss.sum()
    case (.sum, _?): preconditionFailure("weightReduceLoss: avg_factor cannot be used with reduction 'sum'")
    }
}

/// mmdet `DiceLoss` on logits `pred` [N, …] against `target` (same shape; 0/1):
/// p = σ(pred) when `activate`; per row i (flattened after dim 0), a = Σ p·t and
///   naive:   d = (2a + eps) / (Σp + Σt + eps)
///   else:    d = 2a / ((Σp² + eps) + (Σt² + eps));
/// loss_i = 1 − d, reduced by `weightReduceLoss`, times `lossWeight`.
/// F-LMM: eps 1, naiveDice, activate, mean with avg_factor = N.
public func diceLoss(_ pred: Tensor, _ target: Tensor, eps: Float = 1, naiveDice: Bool = true, activate: Bool = true,
                     reduction: LossReduction = .mean, avgFactor: Double? = nil, lossWeight: Float = 1) -> Tensor {
    precondition(pred.shape == target.shape && pred.rank >= 1,
                 "diceLoss: pred \(pred.shape) and target \(target.shape) must have the same shape [N, ...]")
    let n = pred.shape[0]
    let p = (activate ? pred.sigmoid() : pred).reshape([n, -1])
    let t = target.detached().reshape([n, -1])
    let a = (p * t).sum([1])
    let d: Tensor
    if naiveDice {
        d = (2 * a + eps) / (p.sum([1]) + t.sum([1]) + eps)
    } else {
        d = (2 * a) / (((p * p).sum([1]) + eps) + ((t * t).sum([1]) + eps))
    }
    let loss = weightReduceLoss(1 - d, reduction: reduction, avgFactor: avgFactor)
    return lossWeight == 1 ? loss : loss * lossWeight
}

/// mmdet `CrossEntropyLoss(use_sigmoid=True)` with pred and label of the same shape: the stable
/// BCE on logits per element, weighted by the valid mask (label ≥ 0 and label ≠ ignoreIndex),
/// reduced by `weightReduceLoss`, times `lossWeight`. Gradient for the logits: σ(x) − t per
/// element, divided by the avg_factor divisor. F-LMM: mean with avg_factor = numel.
public func sigmoidBinaryCrossEntropy(_ pred: Tensor, _ label: Tensor, reduction: LossReduction = .mean,
                                      avgFactor: Double? = nil, lossWeight: Float = 1,
                                      ignoreIndex: Float = -100) -> Tensor {
    precondition(pred.shape == label.shape,
                 "sigmoidBinaryCrossEntropy: pred \(pred.shape) and label \(label.shape) must have the same shape")
    var loss = binaryCrossEntropyWithLogits(pred, label.detached())
    if label.data.contains(where: { $0 < 0 || $0 == ignoreIndex }) {
        let valid = label.map { $0 >= 0 && $0 != ignoreIndex ? 1 : 0 }
        loss = loss * valid
    }
    let reduced = weightReduceLoss(loss, reduction: reduction, avgFactor: avgFactor)
    return lossWeight == 1 ? reduced : reduced * lossWeight
}
