// Evaluation of a trained FLMMModel on val samples, for both of its masks:
//   unet  the U-Net logits (cropped to the image region), bilinearly resized to the original
//         size (align_corners=False), foreground where the logit > 0 (sigmoid > 0.5);
//   sam   the refiner's logits at the original size, foreground where > 0 (F-LMM's
//         `predict()` output, what its evaluation scores).
// Against the exact ground-truth masks at the original size. Metrics (Metrics.swift): cIoU,
// mIoU, Prec@0.5 and PNG's average recall, over all phrases and split by phrase kind.

import FLMM
import Tensors

/// Which of the model's masks is scored.
public enum MaskKind: String, Sendable, CaseIterable {
    case unet, sam
}

/// The kind of a phrase (ShapesWorld's expression kinds; "all" pools them).
public enum PhraseGroup: String, Sendable, CaseIterable {
    case all, attribute, relational, plural
}

/// One val sample to evaluate: the model's input and its attention layout, the exact masks at
/// the original size [M, H, W] (0/1), and each phrase's kind (attribute / relational / plural).
public struct EvalSample {
    public let input: FLMMSample
    public let layout: any AttentionLayout
    public let masks: Tensor
    public let kinds: [PhraseGroup]

    public init(input: FLMMSample, layout: any AttentionLayout, masks: Tensor, kinds: [PhraseGroup]) {
        precondition(masks.rank == 3 && masks.shape[0] == kinds.count && kinds.allSatisfy { $0 != .all },
                     "EvalSample: masks \(masks.shape) need one kind (not .all) per mask, got \(kinds.count)")
        self.input = input
        self.layout = layout
        self.masks = masks
        self.kinds = kinds
    }
}

/// Scores of one mask kind over one phrase group.
public struct GroupScores: Sendable, Equatable {
    public let phrases: Int
    public let cIoU: Float, mIoU: Float, precision50: Float
    /// PNG's average recall (NaN for an empty group).
    public let averageRecall: Double
}

/// Everything an evaluation measured: per-phrase IoU (in sample, phrase order) and the
/// scores per mask kind and group.
public struct EvaluationResult: Sendable {
    public var ious: [MaskKind: [Float]] = [:]
    public var overlaps: [MaskKind: [MaskOverlap]] = [:]
    public var kinds: [PhraseGroup] = []

    public init() {}

    /// Scores of `mask` over `group`.
    public func scores(_ mask: MaskKind, _ group: PhraseGroup) -> GroupScores {
        let all = overlaps[mask] ?? []
        let picked = group == .all ? all : zip(all, kinds).filter { $0.1 == group }.map(\.0)
        guard !picked.isEmpty else {
            return GroupScores(phrases: 0, cIoU: .nan, mIoU: .nan, precision50: .nan, averageRecall: .nan)
        }
        let s = SegmentationScores(objects: picked)
        return GroupScores(phrases: picked.count, cIoU: s.cIoU, mIoU: s.mIoU, precision50: s.precision(above: 0.5),
                           averageRecall: s.averageRecall)
    }
}

public enum FLMMEvaluation {
    /// Runs `model` (no gradients) on every sample and scores its U-Net mask and, when it has
    /// the refiner on, its SAM mask.
    public static func evaluate(_ model: FLMMModel, count: Int,
                                sample: (Int) throws -> EvalSample) throws -> EvaluationResult {
        var result = EvaluationResult()
        for i in 0..<count {
            let s = try sample(i)
            let p = try predict(model, s)
            result.overlaps[.unet, default: []] += SegmentationScores.overlaps(pred: p.unet, gt: s.masks)
            if let sam = p.sam {
                result.overlaps[.sam, default: []] += SegmentationScores.overlaps(pred: sam, gt: s.masks)
            }
            result.kinds += s.kinds
        }
        for (k, o) in result.overlaps { result.ious[k] = o.map(\.iou) }
        return result
    }

    /// The model's output on `s` (no gradients) and its binary masks [M, H, W] at the original
    /// size: the U-Net's (bilinear, logit > 0) and SAM's (logit > 0; nil without the refiner).
    public static func predict(_ model: FLMMModel, _ s: EvalSample) throws -> (output: FLMMStepOutput, unet: Tensor, sam: Tensor?) {
        let out = try Autograd.noGrad { try model.step(s.input, layout: s.layout) }
        let (m, h, w) = (s.masks.shape[0], s.masks.shape[1], s.masks.shape[2])
        let coarse = Autograd.noGrad {
            interpolate(out.predMasks.reshape([1, m, out.predMasks.shape[1], out.predMasks.shape[2]]),
                        size: (h, w), mode: .bilinear, alignCorners: false).reshape([m, h, w])
        }
        return (out, binarized(coarse), out.refiner.map { binarized($0.masks) })
    }

    /// 1 where the logit is > 0, else 0.
    static func binarized(_ logits: Tensor) -> Tensor {
        Tensor(shape: logits.shape, data: logits.data.map { $0 > 0 ? 1 : 0 })
    }
}
