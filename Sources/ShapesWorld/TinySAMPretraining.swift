// TinySAM pretraining: promptable segmentation of ShapesWorld objects, SAM-style, from scratch.
//
// Step s (0-based) takes `scenesPerStep` train scenes in a Philox order (a fresh permutation of
// the train indices per epoch, stream `1 << 32 | epoch` of `dataSeed`), runs the image encoder
// on them as one batch, and prompts every object of every scene twice:
//   box:    the mask's bounding box [x0, y0, x1 + 1, y1 + 1] with each side moved by
//           u · boxJitter · (box side along that axis), u uniform in [−1, 1), clamped to the
//           image, mapped to the encoder frame (ResizeLongestSide); single-mask output (token 0);
//   points: 1 or 2 (one draw per scene) positive points, each a uniformly drawn pixel of the
//           mask, at that pixel's (column, row); multimask output (tokens 1…3).
// The prompt draws come from stream `2 << 32 | s` of `dataSeed`.
// Every predicted mask is brought to the original size by `postprocess_masks` (bilinear to
// 128², crop to the resized image, bilinear to H×W), and the losses are computed there,
// against the exact original-size mask:
//   mask loss  = focalWeight · focal + diceWeight · dice, per mask, where
//     focal = mean over pixels of α_t·(1 − p_t)²·BCE(x, t), p = σ(x), p_t = p·t + (1−p)(1−t),
//             α_t = α·t + (1 − α)(1 − t)      (α = 0.25, γ = 2)
//     dice  = 1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)
//   box prompts: the mask loss of the single mask; point prompts: the smallest mask loss of
//   the 3 candidates (the choice is made on the values and not differentiated, as SAM trains
//   multimask outputs);
//   IoU loss   = mean over all predicted masks (the single box mask and all 3 point candidates)
//                of (iou_pred − IoU(x > 0, t))², the actual IoU a constant.
// loss = mean over objects of the box mask loss + mean over objects of the best point mask
// loss + iouWeight · (box IoU loss + point IoU loss), averaged over the scenes of the step.
// AdamW with a linear warm-up and cosine decay (WarmupCosineSchedule), gradient clipping by
// global norm. Every parameter of the image encoder, prompt encoder and mask decoder is
// trained; the Gaussian matrix of the prompt encoder's positional encoding is a buffer (fixed
// at initialisation, as in SAM). The weights are bitwise the same for any FLMM_THREADS.

import NN
import SegmentAnything
import Tensors

/// Hyper-parameters of TinySAM pretraining.
public struct TinySAMPretrainConfig: Sendable, Equatable {
    public var sam: SamConfig
    /// The ShapesWorld the scenes come from (its seed and number of train scenes).
    public var worldSeed: UInt64
    public var trainScenes: Int
    /// Seeds of the initial weights and of the data order / prompt draws.
    public var initSeed: UInt64
    public var dataSeed: UInt64
    public var steps: Int
    public var scenesPerStep: Int
    public var baseLR: Double
    public var warmupSteps: Int
    public var weightDecay: Double
    /// Max global gradient norm (0: no clipping).
    public var gradClip: Double
    public var focalWeight: Float
    public var diceWeight: Float
    public var iouWeight: Float
    public var focalAlpha: Float
    /// Box sides move by up to this fraction of the box's extent.
    public var boxJitter: Double

    public init(sam: SamConfig = .tinySAM, worldSeed: UInt64 = 0, trainScenes: Int = 4000, initSeed: UInt64 = 1,
                dataSeed: UInt64 = 2, steps: Int, scenesPerStep: Int = 2, baseLR: Double = 2e-3, warmupSteps: Int = 100,
                weightDecay: Double = 0.01, gradClip: Double = 1, focalWeight: Float = 20, diceWeight: Float = 1,
                iouWeight: Float = 1, focalAlpha: Float = 0.25, boxJitter: Double = 0.08) {
        precondition(steps > warmupSteps && warmupSteps >= 0 && scenesPerStep >= 1 && trainScenes >= scenesPerStep,
                     "TinySAMPretrainConfig: steps \(steps), warm-up \(warmupSteps), scenes per step \(scenesPerStep), train scenes \(trainScenes)")
        self.sam = sam
        self.worldSeed = worldSeed
        self.trainScenes = trainScenes
        self.initSeed = initSeed
        self.dataSeed = dataSeed
        self.steps = steps
        self.scenesPerStep = scenesPerStep
        self.baseLR = baseLR
        self.warmupSteps = warmupSteps
        self.weightDecay = weightDecay
        self.gradClip = gradClip
        self.focalWeight = focalWeight
        self.diceWeight = diceWeight
        self.iouWeight = iouWeight
        self.focalAlpha = focalAlpha
        self.boxJitter = boxJitter
    }

    /// The configuration of the committed checkpoint (`make pretrain`): 7200 steps of 2 scenes
    /// drawn from 20,000 train scenes (each seen 0.72 times on average).
    public static let standard = TinySAMPretrainConfig(trainScenes: 20000, steps: 7200)

    /// A shorter run of `n` steps: the cosine ends at step n, the warm-up is kept (cut to
    /// n − 1 steps when longer). Its first steps differ from the full run's (other learning
    /// rates); `TinySAMPretraining.run(_:prefix:)` gives a true prefix.
    public func with(steps n: Int) -> TinySAMPretrainConfig {
        var c = self
        c.steps = n
        c.warmupSteps = min(warmupSteps, n - 1)
        return c
    }

    /// The ShapesWorld of the scenes (only the train split is used).
    public var world: ShapesWorld { ShapesWorld(seed: worldSeed, train: trainScenes) }
}

/// What one step reports.
public struct TinySAMStepReport: Sendable {
    public let step: Int
    public let loss: Float
    /// Mean box mask loss, mean best point mask loss, IoU losses (box + point).
    public let boxMaskLoss: Float
    public let pointMaskLoss: Float
    public let iouLoss: Float
    public let lr: Double
    /// Scenes and prompted objects processed in this step.
    public let scenes: Int
    public let objects: Int
}

/// The per-mask losses of TinySAM pretraining.
public enum TinySAMLoss {
    /// focal + dice per mask: logits [N, C, H, W], targets [N, 1, H, W] (0/1, a constant) →
    /// (focalWeight · focal + diceWeight · dice) [N, C], focal averaged over the H·W pixels.
    public static func maskLoss(_ logits: Tensor, _ target: Tensor, alpha: Float, focalWeight: Float,
                                diceWeight: Float) -> Tensor {
        precondition(logits.rank == 4 && target.rank == 4 && target.shape[1] == 1
                     && logits.shape[0] == target.shape[0] && Array(logits.shape[2...]) == Array(target.shape[2...]),
                     "TinySAMLoss.maskLoss: logits \(logits.shape) and target \(target.shape) must be [N, C, H, W] and [N, 1, H, W]")
        let (n, c, hw) = (logits.shape[0], logits.shape[1], logits.shape[2] * logits.shape[3])
        // The target broadcast to [N, C, H, W] as constants.
        var t = [Float](repeating: 0, count: n * c * hw)
        for i in 0..<n {
            for j in 0..<c {
                for p in 0..<hw { t[(i * c + j) * hw + p] = target.data[i * hw + p] }
            }
        }
        let tt = Tensor(shape: logits.shape, data: t)
        let prob = logits.sigmoid()
        let ce = binaryCrossEntropyWithLogits(logits, tt)
        // 1 − p_t = p·(1 − 2t) + t; α_t = α·t + (1 − α)(1 − t).
        let oneMinusPt = prob * Tensor(shape: logits.shape, data: t.map { 1 - 2 * $0 }) + tt
        let alphaT = Tensor(shape: logits.shape, data: t.map { alpha * $0 + (1 - alpha) * (1 - $0) })
        let focal = (alphaT * oneMinusPt * oneMinusPt * ce).reshape([n, c, hw]).mean([2])
        let p = prob.reshape([n, c, hw]), tf = tt.reshape([n, c, hw])
        let dice = 1 - (2 * (p * tf).sum([2]) + 1) / (p.sum([2]) + tf.sum([2]) + 1)
        return focal * focalWeight + dice * diceWeight
    }

    /// Actual IoUs of the masks logits [N, C, H, W] > 0 with masks[n] → [N, C] (a constant).
    public static func actualIoU(_ logits: Tensor, masks: [Mask]) -> Tensor {
        let (n, c, hw) = (logits.shape[0], logits.shape[1], logits.shape[2] * logits.shape[3])
        precondition(masks.count == n && masks.allSatisfy { $0.height * $0.width == hw },
                     "TinySAMLoss.actualIoU: logits \(logits.shape) and \(masks.count) masks")
        var out = [Float](repeating: 0, count: n * c)
        for i in 0..<n {
            for j in 0..<c { out[i * c + j] = Float(TinySAM.iou(logits: logits.data, offset: (i * c + j) * hw, mask: masks[i])) }
        }
        return Tensor(shape: [n, c], data: out)
    }

    /// Per row of `losses` [N, C], the first column with the smallest value.
    public static func argminRows(_ losses: Tensor) -> [Int] {
        let (n, c) = (losses.shape[0], losses.shape[1])
        return (0..<n).map { i in
            var best = 0
            for j in 1..<c where losses.data[i * c + j] < losses.data[i * c + best] { best = j }
            return best
        }
    }
}

/// TinySAM pretraining.
public enum TinySAMPretraining {
    /// The prompts of one scene.
    struct ScenePrompts {
        /// [K, 4] boxes in the encoder frame.
        var boxes: Tensor
        /// [K, P, 2] points in the encoder frame, labels all 1.
        var points: Tensor
        var labels: [[Int]]
    }

    /// The train index order of epoch `e`.
    static func order(_ config: TinySAMPretrainConfig, epoch e: Int) -> [Int] {
        var rng = PhiloxRNG(seed: config.dataSeed, stream: 1 << 32 | UInt64(e))
        return rng.permutation(config.trainScenes)
    }

    /// The box and point prompts of the masks of a scene of `originalSize`, drawn from `rng`.
    static func prompts(masks: [Mask], originalSize: (Int, Int), imgSize: Int, jitter: Double,
                        rng: inout PhiloxRNG) -> ScenePrompts {
        let (h, w) = originalSize
        let resize = ResizeLongestSide(imgSize)
        var boxes: [Float] = []
        var raw: [[Double]] = []
        for m in masks {
            guard let b = TinySAM.boundingBox(m) else { preconditionFailure("TinySAMPretraining: empty object mask") }
            let bw = b[2] - b[0], bh = b[3] - b[1]
            var j = b
            for (k, ext) in [bw, bh, bw, bh].enumerated() {
                j[k] += (2 * rng.nextDouble() - 1) * jitter * ext
            }
            j[0] = min(max(j[0], 0), Double(w)); j[2] = min(max(j[2], 0), Double(w))
            j[1] = min(max(j[1], 0), Double(h)); j[3] = min(max(j[3], 0), Double(h))
            raw.append(j)
        }
        for b in resize.applyBoxes(raw, originalSize: originalSize) { boxes += b.map { Float($0) } }
        let nPoints = 1 + rng.nextInt(below: 2)
        var pts: [Float] = []
        for m in masks {
            let on = m.bits.indices.filter { m.bits[$0] != 0 }
            var coords: [(x: Double, y: Double)] = []
            for _ in 0..<nPoints {
                let p = on[rng.nextInt(below: on.count)]
                coords.append((Double(p % w), Double(p / w)))
            }
            for c in resize.applyCoords(coords, originalSize: originalSize) { pts += [Float(c.x), Float(c.y)] }
        }
        let k = masks.count
        return ScenePrompts(boxes: Tensor(shape: [k, 4], data: boxes), points: Tensor(shape: [k, nPoints, 2], data: pts),
                            labels: [[Int]](repeating: [Int](repeating: 1, count: nPoints), count: k))
    }

    /// The object masks of a scene as a [K, 1, H, W] 0/1 tensor.
    static func targetTensor(_ masks: [Mask]) -> Tensor {
        let (h, w) = (masks[0].height, masks[0].width)
        return Tensor(shape: [masks.count, 1, h, w], data: masks.flatMap { $0.bits.map { Float($0) } })
    }

    /// Builds TinySAM from `config.initSeed` and trains it; `progress` is called after every
    /// step. Returns the trained model and the loss of every step. `prefix` stops after that
    /// many steps of the same run (same schedule): the first steps of the full run, bit for bit.
    public static func run(_ config: TinySAMPretrainConfig, prefix: Int? = nil,
                           progress: ((TinySAMStepReport) -> Void)? = nil) -> (model: Sam, losses: [Float]) {
        var initRNG = PhiloxRNG(seed: config.initSeed)
        let model = Sam(config.sam, rng: &initRNG)
        let params = model.trainableParameters().map(\.1)
        let optimizer = AdamW(params, lr: config.baseLR, weightDecay: config.weightDecay)
        let schedule = WarmupCosineSchedule(baseLR: config.baseLR, warmupSteps: config.warmupSteps,
                                            totalSteps: config.steps)
        let world = config.world
        let imgSize = model.imgSize
        var losses: [Float] = []
        var epoch = -1
        var epochOrder: [Int] = []
        for step in 0..<min(config.steps, prefix ?? config.steps) {
            optimizer.lr = schedule.lr(at: step)
            // The scenes of this step, in the Philox order.
            var scenes: [Scene] = []
            for j in 0..<config.scenesPerStep {
                let flat = step * config.scenesPerStep + j
                let e = flat / config.trainScenes
                if e != epoch { epoch = e; epochOrder = order(config, epoch: e) }
                var rng = world.rng(.train, epochOrder[flat % config.trainScenes])
                scenes.append(ShapesWorld.makeScene(rng: &rng))
            }
            var promptRNG = PhiloxRNG(seed: config.dataSeed, stream: 2 << 32 | UInt64(step))

            // The image encoder on all scenes at once.
            let inputs = scenes.map { model.preprocess(TinySAM.encoderInput($0.image, imgSize: imgSize)) }
            let embeddings = model.imageEncoder!(cat(inputs, dim: 0))          // [S, E, g, g]
            let densePE = model.promptEncoder.getDensePE()

            var total: Tensor?
            var boxSum: Float = 0, pointSum: Float = 0, iouSum: Float = 0, objects = 0
            for (j, scene) in scenes.enumerated() {
                let masks = scene.objects.indices.map { scene.mask($0) }
                let original = (scene.height, scene.width)
                let inSize = ResizeLongestSide(imgSize).preprocessShape(original)
                let pr = prompts(masks: masks, originalSize: original, imgSize: imgSize, jitter: config.boxJitter,
                                 rng: &promptRNG)
                let target = targetTensor(masks)
                let emb = embeddings.narrow(dim: 0, start: j, length: 1)

                // Box prompts, single mask.
                let (bs, bd) = model.promptEncoder(boxes: pr.boxes)
                let (boxLow, boxIoU) = model.maskDecoder(imageEmbeddings: emb, imagePE: densePE, sparsePromptEmbeddings: bs,
                                                         densePromptEmbeddings: bd, multimaskOutput: false)
                let boxMasks = model.postprocessMasks(boxLow, inputSize: inSize, originalSize: original)
                let boxLoss = TinySAMLoss.maskLoss(boxMasks, target, alpha: config.focalAlpha,
                                                   focalWeight: config.focalWeight, diceWeight: config.diceWeight)
                let boxIoULoss = meanSquaredError(boxIoU, TinySAMLoss.actualIoU(boxMasks, masks: masks))

                // Point prompts, 3 candidates, the best one trained.
                let (ps, pd) = model.promptEncoder(points: (pr.points, pr.labels))
                let (ptLow, ptIoU) = model.maskDecoder(imageEmbeddings: emb, imagePE: densePE, sparsePromptEmbeddings: ps,
                                                       densePromptEmbeddings: pd, multimaskOutput: true)
                let ptMasks = model.postprocessMasks(ptLow, inputSize: inSize, originalSize: original)
                let ptLossAll = TinySAMLoss.maskLoss(ptMasks, target, alpha: config.focalAlpha,
                                                     focalWeight: config.focalWeight, diceWeight: config.diceWeight)
                let c = ptLossAll.shape[1]
                let best = TinySAMLoss.argminRows(ptLossAll).enumerated().map { $0.offset * c + $0.element }
                let ptLoss = ptLossAll.reshape([-1]).indexSelect(dim: 0, index: best)
                let ptIoULoss = meanSquaredError(ptIoU, TinySAMLoss.actualIoU(ptMasks, masks: masks))

                let iouLoss = boxIoULoss + ptIoULoss
                let sceneLoss = boxLoss.mean() + ptLoss.mean() + iouLoss * config.iouWeight
                total = total.map { $0 + sceneLoss } ?? sceneLoss
                boxSum += boxLoss.mean().item
                pointSum += ptLoss.mean().item
                iouSum += iouLoss.item
                objects += masks.count
            }
            let s = Float(scenes.count)
            let loss = total! / s
            optimizer.zeroGrad()
            loss.backward()
            if config.gradClip > 0 { clipGradNorm(params, maxNorm: config.gradClip) }
            optimizer.step()
            losses.append(loss.item)
            progress?(TinySAMStepReport(step: step, loss: loss.item, boxMaskLoss: boxSum / s, pointMaskLoss: pointSum / s,
                                        iouLoss: iouSum / s, lr: optimizer.lr, scenes: scenes.count, objects: objects))
        }
        return (model, losses)
    }
}

/// mean((a − b)²) on the autograd graph.
func meanSquaredError(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape, "meanSquaredError: \(a.shape) vs \(b.shape)")
    let d = a - b
    return (d * d).mean()
}
