// Evaluation metrics on binary masks, as mmdet's RefSegMetric and F-LMM's evaluation scripts
// (scripts/multiprocess_eval_refcoco.py, scripts/multiprocess_eval_png.py) compute them.
//
//   I_i = Σ pred ∧ gt, U_i = Σ pred ∨ gt (integers); IoU_i = I_i / U_i in Float32, 0 when U_i = 0
//   mIoU = mean_i IoU_i; cIoU = ΣI / ΣU (fractions; RefSegMetric prints ×100)
//   Prec@τ = mean_i [IoU_i > τ] (strict; F-LMM's "aAcc@0.5")
//   PNG average recall (F-LMM's `average_accuracy`): thresholds t_k = k·1e-5, k < K = ⌈1/1e-5⌉,
//     acc_k = #{i: IoU_i ≥ t_k} / n, AR = Σ_{k<K−1} |t_{k+1} − t_k|·acc_k, in Float64, summed in k order.

import Tensors

/// Intersection and union (pixel counts) of one predicted and one ground-truth mask.
public struct MaskOverlap: Sendable, Equatable {
    public let intersection: Int
    public let union: Int

    public init(intersection: Int, union: Int) {
        precondition(intersection >= 0 && union >= intersection,
                     "MaskOverlap: intersection \(intersection) and union \(union)")
        self.intersection = intersection
        self.union = union
    }

    /// I / U in Float32; an empty union counts as 0 (RefSegMetric's nan_to_num; F-LMM's
    /// I / (U + 1e-12) gives the same Float32 values).
    public var iou: Float { union == 0 ? 0 : Float(intersection) / Float(union) }
}

/// Scores over a set of objects (phrases, referring expressions).
public struct SegmentationScores: Sendable, Equatable {
    public let objects: [MaskOverlap]

    public init(objects: [MaskOverlap]) { self.objects = objects }

    /// Scores of binary masks `pred` and `gt` [N, H, W] (non-zero = foreground).
    public init(pred: Tensor, gt: Tensor) {
        self.init(objects: SegmentationScores.overlaps(pred: pred, gt: gt))
    }

    /// Per-object intersection and union of binary masks [N, …] (non-zero = foreground).
    public static func overlaps(pred: Tensor, gt: Tensor) -> [MaskOverlap] {
        precondition(pred.rank >= 1 && pred.shape == gt.shape,
                     "SegmentationScores: pred \(pred.shape) and gt \(gt.shape) must have the same shape [N, ...]")
        let n = pred.shape[0], per = n == 0 ? 0 : pred.count / n
        return (0..<n).map { i in
            var inter = 0, union = 0
            for j in (i * per)..<((i + 1) * per) {
                let p = pred.data[j] != 0, g = gt.data[j] != 0
                if p && g { inter += 1 }
                if p || g { union += 1 }
            }
            return MaskOverlap(intersection: inter, union: union)
        }
    }

    /// Per-object IoU.
    public var ious: [Float] { objects.map(\.iou) }

    /// Mean of the per-object IoUs (0 for no objects).
    public var mIoU: Float {
        objects.isEmpty ? 0 : Float(objects.reduce(0.0) { $0 + Double($1.iou) } / Double(objects.count))
    }

    /// Cumulative IoU ΣI / ΣU (0 when ΣU = 0).
    public var cIoU: Float {
        let i = objects.reduce(0) { $0 + $1.intersection }, u = objects.reduce(0) { $0 + $1.union }
        return u == 0 ? 0 : Float(i) / Float(u)
    }

    /// Fraction of objects with IoU strictly above `threshold` (Prec@0.5, @0.7, @0.9).
    public func precision(above threshold: Float) -> Float {
        objects.isEmpty ? 0 : Float(Double(objects.filter { $0.iou > threshold }.count) / Double(objects.count))
    }

    /// PNG's average recall (area under recall vs IoU threshold), F-LMM's `average_accuracy`.
    public var averageRecall: Double { pngAverageRecall(ious) }
}

/// F-LMM's `average_accuracy(ious)` (scripts/multiprocess_eval_png.py): thresholds
/// t_k = k·step for k < ⌈1/step⌉ (np.arange(0, 1, step)); acc_k = #{IoU ≥ t_k} / n (IoUs as
/// Float32 widened to Float64); AR = Σ_{k<K−1} |t_{k+1} − t_k|·acc_k summed in k order. ≈ mean IoU.
public func pngAverageRecall(_ ious: [Float], step: Double = 1e-5) -> Double {
    precondition(step > 0 && step < 1, "pngAverageRecall: step \(step) must be in (0, 1)")
    precondition(!ious.isEmpty, "pngAverageRecall: no IoUs")
    let sorted = ious.map(Double.init).sorted()
    let n = sorted.count, k = Int((1.0 / step).rounded(.up))
    var below = 0, total = 0.0
    for i in 0..<(k - 1) {
        let t0 = Double(i) * step, t1 = Double(i + 1) * step
        while below < n && sorted[below] < t0 { below += 1 }
        total += Swift.abs(t1 - t0) * (Double(n - below) / Double(n))
    }
    return total
}

/// Per-object pixel accuracy mean(pred == gt) of binary masks [N, …] (non-zero = foreground).
public func pixelAccuracy(pred: Tensor, gt: Tensor) -> [Float] {
    precondition(pred.rank >= 1 && pred.shape == gt.shape,
                 "pixelAccuracy: pred \(pred.shape) and gt \(gt.shape) must have the same shape [N, ...]")
    let n = pred.shape[0], per = n == 0 ? 0 : pred.count / n
    return (0..<n).map { i in
        var same = 0
        for j in (i * per)..<((i + 1) * per) where (pred.data[j] != 0) == (gt.data[j] != 0) { same += 1 }
        return Float(Double(same) / Double(per))
    }
}
