// F-LMM's trainable model and its training step for one data sample
// (frozen_deepseek_vl.py / frozen_llava.py `_forward` and `compute_loss`):
//
//   mask_att   = phrase attention maps [M, maps·L·NH, h, w]         (AttentionMaps, merge)
//   text_m     = text_proj(Σ_l softmax(w)_l · hidden_l)[tokens of m]  [n_m, E]   (TextEmbedding)
//   pred_full  = mask_head(mask_att)[:, 0]                           [M, h', w'] (UNetHead)
//   pred       = pred_full cropped to the image region (F-LMM's unpadding)   [M, mh, mw]
//   sam_pred   = SAM refiner(image embedding, pred, text)           [M, H, W]   (MaskRefiner)
//   gt, sam_gt = ground truth [M, h_r, w_r] nearest-resized to (mh, mw) and to (H, W)
//   loss_mask, loss_dice (on pred, gt) and sam_loss_mask, sam_loss_dice (on sam_pred, sam_gt)
//     = F-LMM's _compute, each averaged over the sample's masks as (0 + x·M)/M
//   loss = loss_mask + loss_dice + sam_loss_mask + sam_loss_dice   (mmengine's parse_losses)
// Gradients reach the U-Net, text_layer_weights, text_proj and SAM's prompt encoder and mask
// decoder; the SAM loss also reaches the U-Net through the mask prompt. SAM's image encoder is
// frozen: the step takes its output (computed once per image, or cached).

import NN
import SegmentAnything
import Tensors

/// The frozen LMM's attention, in one of the forms F-LMM's head can read.
public enum PhraseAttention {
    /// Every layer's probabilities [L, NH, S, S] with the S token ids (the layout finds the
    /// image tokens by id) and mask ids (−1 = in no phrase).
    case full(Tensor, inputIDs: [Int], maskIDs: [Int])
    /// Only the phrase tokens' rows to the K image tokens [L, NH, R, K] (layout order), with the
    /// mask id of each row: the form a GroundingCache stores.
    case rows(Tensor, rowMaskIDs: [Int])
    /// Each phrase's rows already merged over its tokens, by mean and by max: [L, NH, M, K] each
    /// (phrase k in row k), as `AttentionMaps.mergedRows` makes them. The compact cache form; it
    /// serves both merge settings, for layouts that resize no map before the merge (all but MGM-HD).
    case merged(mean: Tensor, max: Tensor)
}

/// One training sample as the frozen models see it.
public struct FLMMSample {
    /// The LMM's attention (full, phrase rows, or merged rows).
    public var attention: PhraseAttention
    /// The LMM's last L hidden states [L, S', d] of S' tokens (all S tokens, or only the
    /// phrase tokens), with `maskIDs` [S'] (−1 = in no phrase).
    public var hiddenStates: Tensor
    public var maskIDs: [Int]
    /// Number of phrases M (mask ids 0..<M, each with at least one token).
    public var numMasks: Int
    /// SAM's image embedding [1, C, e, e] (frozen encoder; may require grad, as in F-LMM).
    public var imageEmbedding: Tensor
    /// Ground-truth 0/1 masks [M, h_r, w_r] at the LMM's resized image size.
    public var gtMasks: Tensor
    /// (H, W) of the original image.
    public var originalSize: (Int, Int)
    /// The image region (top, left, height, width) of a mask-head map of (height, width),
    /// by F-LMM's unpadding rule (`PaddingMeta.region`).
    public var unpadRegion: (_ mapHeight: Int, _ mapWidth: Int) -> (top: Int, left: Int, height: Int, width: Int)

    public init(attention: PhraseAttention, hiddenStates: Tensor, maskIDs: [Int], numMasks: Int,
                imageEmbedding: Tensor, gtMasks: Tensor, originalSize: (Int, Int),
                unpadRegion: @escaping (Int, Int) -> (top: Int, left: Int, height: Int, width: Int)) {
        self.attention = attention
        self.hiddenStates = hiddenStates
        self.maskIDs = maskIDs
        self.numMasks = numMasks
        self.imageEmbedding = imageEmbedding
        self.gtMasks = gtMasks
        self.originalSize = originalSize
        self.unpadRegion = unpadRegion
    }

    /// A sample with the full attention `attentions` [L, NH, S, S] and hidden states [L, S, d]
    /// of all S tokens (the in-process form, as F-LMM's `_forward` has them).
    public init(attentions: Tensor, hiddenStates: Tensor, inputIDs: [Int], maskIDs: [Int], numMasks: Int,
                imageEmbedding: Tensor, gtMasks: Tensor, originalSize: (Int, Int),
                unpadRegion: @escaping (Int, Int) -> (top: Int, left: Int, height: Int, width: Int)) {
        self.init(attention: .full(attentions, inputIDs: inputIDs, maskIDs: maskIDs), hiddenStates: hiddenStates, maskIDs: maskIDs,
                  numMasks: numMasks, imageEmbedding: imageEmbedding, gtMasks: gtMasks, originalSize: originalSize,
                  unpadRegion: unpadRegion)
    }
}

/// Everything one step computed (F-LMM's loss dict and the tensors between).
public struct FLMMStepOutput {
    public let maskAttentions: Tensor
    public let hiddenWeighted: Tensor
    public let textEmbeds: [Tensor]
    /// [M, h', w'] mask-head logits before and [M, mh, mw] after unpadding.
    public let predMasksPadded: Tensor
    public let predMasks: Tensor
    /// Ground truth at the prediction's and at the original size.
    public let gtMasks: Tensor
    public let samGTMasks: Tensor
    /// The refiner's output and SAM's loss terms; nil when the model runs without the refiner.
    public let refiner: RefinerOutput?
    public let lossMask: Tensor, lossDice: Tensor, samLossMask: Tensor?, samLossDice: Tensor?
    public let accuracy: Float, aiou: Float, samAccuracy: Float?, samAiou: Float?
    /// loss_mask + loss_dice + sam_loss_mask + sam_loss_dice (the first two alone without the
    /// refiner): backward from here.
    public let loss: Tensor
}

/// F-LMM's trainable parts: the U-Net mask head, the text layer weights and projection, and the
/// SAM refiner. Keys (F-LMM's): `text_layer_weights`, `mask_head.*`, `text_proj.*`,
/// `sam.model.prompt_encoder.*`, `sam.model.mask_decoder.*` (and `sam.model.image_encoder.*`
/// when SAM has its frozen encoder, never part of the trained weights).
public final class FLMMModel: Module {
    public let maskHead: UNetHead
    public let text: TextEmbedding
    public let sam: MaskRefiner
    /// How a phrase's tokens' attention maps are merged (F-LMM's default: mean).
    public var merge: PhraseMerge
    /// Whether SAM refines the U-Net mask. Off: the "no refiner" ablation row, trained on the
    /// U-Net losses alone (SAM's weights stay in the model, untouched).
    public var useRefiner: Bool = true

    public var children: [ModuleChild] {
        [.parameter("text_layer_weights", text.textLayerWeights), .module("mask_head", maskHead),
         .module("text_proj", text.textProj), .module("sam", sam)]
    }

    public init(maskHead: UNetHead, text: TextEmbedding, sam: MaskRefiner, merge: PhraseMerge = .mean) {
        precondition(text.textProj.outFeatures == sam.model.config.promptEncoder.embedDim,
                     "FLMMModel: text_proj gives \(text.textProj.outFeatures) features, SAM prompts have \(sam.model.config.promptEncoder.embedDim)")
        self.maskHead = maskHead
        self.text = text
        self.sam = sam
        self.merge = merge
    }

    /// The weights F-LMM trains and saves (SAMWrapper drops `image_encoder` keys).
    public func trainedStateDict() -> [(String, Tensor)] {
        stateDict().filter { !$0.0.contains("image_encoder") }
    }

    /// Loads trained weights (`trainedStateDict`'s keys) strictly: every such key must be
    /// present with its shape and no other key may appear; SAM's image encoder is left alone.
    public func loadTrained(stateDict: [String: Tensor]) throws {
        let own = trainedStateDict()
        var sources: [Tensor] = []
        for (k, t) in own {
            guard let s = stateDict[k] else { throw LoadError.missingKey(k) }
            guard s.shape == t.shape else { throw LoadError.shapeMismatch(k, expected: t.shape, actual: s.shape) }
            sources.append(s)
        }
        let known = Set(own.map(\.0))
        if let k = stateDict.keys.filter({ !known.contains($0) }).sorted().first { throw LoadError.unknownKey(k) }
        for ((_, t), s) in zip(own, sources) { t.assign(s.data) }
    }

    /// One training step's forward for `sample` (see the file header); call
    /// `output.loss.backward()` for the gradients.
    public func step(_ sample: FLMMSample, layout: some AttentionLayout) throws -> FLMMStepOutput {
        let m = sample.numMasks
        let maskAtt = try maskAttentions(sample.attention, numMasks: m, layout: layout)
        let (weighted, textEmbeds) = try text(hiddenStates: sample.hiddenStates, maskIDs: sample.maskIDs, numMasks: m)
        let full = try maskHead(maskAtt)
        let predFull = full.reshape([m, full.shape[2], full.shape[3]])
        let r = sample.unpadRegion(predFull.shape[1], predFull.shape[2])
        let pred = predFull.crop(top: r.top, left: r.left, height: r.height, width: r.width)
        precondition(sample.gtMasks.rank == 3 && sample.gtMasks.shape[0] == m,
                     "FLMMModel.step: ground truth \(sample.gtMasks.shape) must be [\(m), h, w]")
        let gt = resizedGroundTruth(sample.gtMasks, to: (pred.shape[1], pred.shape[2]))
        let samGT = resizedGroundTruth(sample.gtMasks, to: sample.originalSize)
        let terms = maskLossTerms(pred: pred, gt: gt)
        // compute_loss averages over the samples of the batch weighted by their mask counts:
        // one sample gives (0 + x·M) / M.
        let fm = Float(m)
        func perSample(_ x: Tensor) -> Tensor { (x * fm) / fm }
        func perSample(_ x: Float) -> Float { (x * fm) / fm }
        let lossMask = perSample(terms.bce), lossDice = perSample(terms.dice)
        guard useRefiner else {
            return FLMMStepOutput(maskAttentions: maskAtt, hiddenWeighted: weighted, textEmbeds: textEmbeds,
                                  predMasksPadded: predFull, predMasks: pred, gtMasks: gt, samGTMasks: samGT,
                                  refiner: nil, lossMask: lossMask, lossDice: lossDice, samLossMask: nil,
                                  samLossDice: nil, accuracy: perSample(terms.accuracy), aiou: perSample(terms.aiou),
                                  samAccuracy: nil, samAiou: nil, loss: lossMask + lossDice)
        }
        let refined = sam(imageEmbedding: sample.imageEmbedding, predMasks: pred,
                          textEmbeds: sam.options.useText ? textEmbeds : nil, originalSize: sample.originalSize)
        let samTerms = maskLossTerms(pred: refined.masks, gt: samGT)
        let samLossMask = perSample(samTerms.bce), samLossDice = perSample(samTerms.dice)
        let loss = ((lossMask + lossDice) + samLossMask) + samLossDice
        return FLMMStepOutput(maskAttentions: maskAtt, hiddenWeighted: weighted, textEmbeds: textEmbeds,
                              predMasksPadded: predFull, predMasks: pred, gtMasks: gt, samGTMasks: samGT,
                              refiner: refined, lossMask: lossMask, lossDice: lossDice, samLossMask: samLossMask,
                              samLossDice: samLossDice, accuracy: perSample(terms.accuracy),
                              aiou: perSample(terms.aiou), samAccuracy: perSample(samTerms.accuracy),
                              samAiou: perSample(samTerms.aiou), loss: loss)
    }

    /// The mask head's input [M, maps·L·NH, h, w] from any form of the LMM's attention, merged
    /// with `merge`. The three forms give bitwise the same maps for the same probabilities
    /// (the merged form when its rows were merged with `AttentionMaps.mergedRows`).
    public func maskAttentions(_ attention: PhraseAttention, numMasks m: Int, layout: some AttentionLayout) throws -> Tensor {
        switch attention {
        case .full(let a, let inputIDs, let maskIDs):
            return try AttentionMaps.extract(attentions: a, inputIDs: inputIDs, maskIDs: maskIDs, numMasks: m,
                                             layout: layout, merge: merge)
        case .rows(let r, let rowMaskIDs):
            return try AttentionMaps.extract(phraseRows: r, rowMaskIDs: rowMaskIDs, numMasks: m, layout: layout, merge: merge)
        case .merged(let mean, let max):
            if let k = layout.maps.firstIndex(where: { if case .beforeMerge = $0.resize { return true } else { return false } }) {
                throw AttentionMapError.badLayout(layout: layout.name,
                    detail: "map \(k) is resized per token before the merge, so merged rows cannot stand for its tokens; store the rows")
            }
            return try AttentionMaps.extract(phraseRows: merge == .mean ? mean : max, rowMaskIDs: Array(0..<m),
                                             numMasks: m, layout: layout, merge: merge)
        }
    }
}
