// TinyVLM pretraining: next-token prediction on ShapesWorld scenes, deterministic from its
// config (the same config gives bitwise the same weights on any thread count).
//
// Captions. Two kinds, chosen per training sample by a Philox draw:
//   - the canonical caption (probability 1 − descriptionFraction): every object, in attribute
//     order (large before small, then palette colour order, then shape order), as its full
//     attribute phrase followed by ".": "the large blue star . the small red circle . …".
//     Each size, colour and shape word is then determined by the image and the prefix: the next
//     object is the first one in this order not yet named, which needs only which objects the
//     image holds (no comparison of positions), and its words are read off its image tokens. So
//     next-token accuracy on those words can approach 100% and is a meaningful target, and naming
//     the next object's attributes forces the phrase tokens to look at that object's image
//     tokens. (A left-to-right order was tried first: the 4-layer LM did not learn to find the
//     leftmost unnamed object; its size-word accuracy stayed between 0.59 and 0.66 in eight
//     runs, where a guess gives 0.5.)
//   - the grounding description (probability descriptionFraction): `DescriptionSample.words`,
//     the shuffled attribute / relational / plural phrases F-LMM later grounds. Their order and
//     templates are random, so not every word is predictable, but the words that follow a
//     phrase's first words are, and only by finding the object(s) the prefix names: this teaches
//     content-based attention ("red" → the red object's patches) on exactly the captions the
//     frozen model is read on.
// The vision encoder's own objective (models with vision layers): every image token is also
// classified by `vision.attribute_head` into the shape, colour and size of the object under its
// cell centre (or none: background, padding), `cellAttributes`; its cross-entropy, weighted by
// `attributeWeight`, is added to each sample's next-token loss. This is the supervised
// pretraining a real LMM's vision tower gets before it meets the LM (there, ImageNet or
// image-text pairs), here on ShapesWorld's object maps. It trains the image features only:
// the LM's attention is learned from next-token prediction alone, and the head is never used
// by the frozen model's forward pass.
// Token accuracy is measured on the canonical captions of val scenes; pointing on their
// grounding descriptions (TinyVLMEvaluation.swift).
//
// Optimisation: AdamW (β = (0.9, 0.98), weight decay on every tensor), mmengine-style linear
// warm-up then cosine decay (`WarmupCosineSchedule`), gradient clipping by global norm, batches
// accumulated over `batchSize` samples (each sample's loss / batchSize, backward in order).
// Data order: training scene indices from a Philox permutation per epoch
// (seed dataSeed, stream "VLMDATA" + epoch); the caption kind of the i-th training sample from
// the i-th draw u of the Philox stream (dataSeed, "VLMKIND"): the description iff
// u < descriptionFraction.

import FLMM
import Foundation
import NN
import Tensors

/// Everything that determines a pretrained TinyVLM.
public struct TinyVLMPretrainConfig: Sendable, Equatable {
    /// The model's sizes.
    public var model: TinyVLMConfig
    /// The ShapesWorld seed and the number of training scenes used.
    public var worldSeed: UInt64
    public var trainScenes: Int
    /// Seeds of the initial weights and of the data order.
    public var initSeed: UInt64
    public var dataSeed: UInt64
    /// Optimiser steps, samples per step.
    public var steps: Int
    public var batchSize: Int
    /// Peak learning rate, warm-up steps (linear from 1e-3 · lr), final fraction of lr (cosine's η / lr).
    public var lr: Double
    public var warmupSteps: Int
    public var minLRFraction: Double
    public var weightDecay: Double
    /// Global gradient-norm clip (nil: none).
    public var gradClip: Double?
    /// Share of samples trained on the grounding description instead of the canonical caption.
    public var descriptionFraction: Double
    /// Weight of the vision layers' attribute loss (used only when the model has vision layers).
    public var attributeWeight: Double

    public init(model: TinyVLMConfig, worldSeed: UInt64 = 0, trainScenes: Int = 4000, initSeed: UInt64 = 1,
                dataSeed: UInt64 = 2, steps: Int, batchSize: Int, lr: Double, warmupSteps: Int,
                minLRFraction: Double = 0.05, weightDecay: Double = 0.01, gradClip: Double? = 1,
                descriptionFraction: Double = 0.3, attributeWeight: Double = 1) {
        precondition(steps > warmupSteps && warmupSteps >= 0 && batchSize > 0 && trainScenes > 0,
                     "TinyVLMPretrainConfig: steps \(steps), warm-up \(warmupSteps), batch \(batchSize), scenes \(trainScenes)")
        precondition((0...1).contains(descriptionFraction) && (0...1).contains(minLRFraction),
                     "TinyVLMPretrainConfig: descriptionFraction \(descriptionFraction), minLRFraction \(minLRFraction) must be in [0, 1]")
        self.model = model
        self.worldSeed = worldSeed
        self.trainScenes = trainScenes
        self.initSeed = initSeed
        self.dataSeed = dataSeed
        self.steps = steps
        self.batchSize = batchSize
        self.lr = lr
        self.warmupSteps = warmupSteps
        self.minLRFraction = minLRFraction
        self.weightDecay = weightDecay
        self.gradClip = gradClip
        self.descriptionFraction = descriptionFraction
        self.attributeWeight = attributeWeight
    }

    /// The configuration of the committed checkpoint (Checkpoints/tinyvlm.safetensors). Every
    /// step draws fresh scenes (200,000 train scenes, 32,000 samples): with 4,000 scenes seen 6
    /// times the training loss kept falling while val accuracy stood still.
    public static let standard = TinyVLMPretrainConfig(
        model: .shapesWorld, worldSeed: 0, trainScenes: 200_000, initSeed: 1, dataSeed: 2,
        steps: 4000, batchSize: 8, lr: 2e-3, warmupSteps: 100, attributeWeight: 10)

    /// The same config with another number of steps (warm-up capped at a tenth of them).
    public func with(steps: Int) -> TinyVLMPretrainConfig {
        var c = self
        c.steps = steps
        c.warmupSteps = Swift.min(warmupSteps, steps / 10)
        return c
    }

    /// The learning-rate schedule.
    public var schedule: WarmupCosineSchedule {
        WarmupCosineSchedule(baseLR: lr, warmupSteps: warmupSteps, totalSteps: steps, startFactor: 1e-3,
                             endFactor: 1, etaMin: minLRFraction * lr)
    }
}

public extension TinyVLMConfig {
    /// The frozen TinyVLM's sizes: 192×192 input, 12-pixel patches (a 16×16 grid), D = 64, a
    /// causal LM of 4 blocks of 4 heads. The vision encoder before it:
    ///   stem      3×3 convs 3→24 (stride 2), 24→48 (stride 2), 48→48, each + GELU (48×48 maps);
    ///   patches   Conv2d 48→64, kernel = stride = 3 (16×16 tokens);
    ///   grid      3 residual 3×3 convs at 16×16 (receptive field 95 px: a whole large object);
    ///   vision    2 bidirectional ViT blocks (SAM's, global attention) with their own positions.
    /// At 96×96 with one 3×3 conv and 6-pixel patches, a small object was 6–10 pixels across and
    /// the vision features did not tell shapes apart (shape-word accuracy 0.21, chance 0.17).
    /// The LM's image positions start from a 2-D sine-cosine table.
    static let shapesWorld = TinyVLMConfig(
        imageSize: 192, patchSize: 12, dim: 64, layers: 4, heads: 4,
        stem: [TinyVLMStemConv(channels: 24, stride: 2), TinyVLMStemConv(channels: 48, stride: 2),
               TinyVLMStemConv(channels: 48, stride: 1)],
        gridConvs: 3, visionLayers: 2, sincosImagePositions: true)
}

/// What the progress callback receives after every step.
public struct TinyVLMPretrainProgress: Sendable {
    public let step: Int, steps: Int
    public let loss: Float
    public let samplesPerSecond: Double
    public let secondsLeft: Double
}

/// The pretraining procedure.
public enum TinyVLMPretraining {
    /// The canonical caption of `scene`: objects in attribute order (large before small, then
    /// palette colour order red, green, blue, yellow, purple, orange, cyan, then shape order
    /// circle, square, triangle, star, diamond, hexagon; the triples are distinct, so the order
    /// is total), each as the attribute phrase "the <size> <colour> <shape>" with the object as
    /// its only target.
    public static func canonicalPhrases(_ scene: Scene) -> [ReferringExpression] {
        let order = scene.objects.indices.sorted { a, b in
            let oa = scene.objects[a], ob = scene.objects[b]
            if oa.size != ob.size { return oa.size.rawValue > ob.size.rawValue }
            if oa.color != ob.color { return oa.color.rawValue < ob.color.rawValue }
            return oa.shape.rawValue < ob.shape.rawValue
        }
        return order.map { k in
            let o = scene.objects[k]
            return ReferringExpression(kind: .attribute, words: ["the", o.size.name, o.color.name, o.shape.noun], targets: [k])
        }
    }

    /// The attribute labels of the G×G image cells, the targets of the vision layers'
    /// `attribute_head`: cell (r, c) (centre ((r + ½)·p, (c + ½)·p) in the padded S×S frame,
    /// p = S / G) lies at resized-image position (y, x) = centre − (before_h, before_w); outside
    /// the resized image it is padding. Otherwise the object on top at original pixel
    /// (⌊y·H/h_r⌋, ⌊x·W/w_r⌋) gives the labels. Returns three arrays of G² class indices (row-major
    /// cells): shape, colour, size, each 0 for background or padding and 1 + rawValue for an object.
    public static func cellAttributes(_ scene: Scene, meta: PaddingMeta, grid g: Int) -> [[Int]] {
        let p = Double(meta.paddedHeight) / Double(g)
        var labels = [[Int]](repeating: [Int](repeating: 0, count: g * g), count: 3)
        for r in 0..<g {
            for c in 0..<g {
                let y = (Double(r) + 0.5) * p - Double(meta.beforeHeight)
                let x = (Double(c) + 0.5) * p - Double(meta.beforeWidth)
                guard y >= 0, x >= 0, y < Double(meta.imageHeight), x < Double(meta.imageWidth) else { continue }
                let i = Swift.min(scene.height - 1, Int(y * Double(scene.height) / Double(meta.imageHeight)))
                let j = Swift.min(scene.width - 1, Int(x * Double(scene.width) / Double(meta.imageWidth)))
                let k = Int(scene.objectMap[i * scene.width + j])
                guard k >= 0 else { continue }
                let o = scene.objects[k]
                labels[0][r * g + c] = 1 + o.shape.rawValue
                labels[1][r * g + c] = 1 + o.color.rawValue
                labels[2][r * g + c] = 1 + o.size.rawValue
            }
        }
        return labels
    }

    /// The attribute loss of the image tokens [G², D]: the sum over the three label groups
    /// (shape, colour, size) of the mean cross-entropy over the cells of `attribute_head`'s
    /// logits in that group against `cellAttributes`.
    public static func attributeLoss(_ vision: VisionTower, imageTokens: Tensor, labels: [[Int]]) -> Tensor {
        let logits = vision.attributeHead(imageTokens)                            // [G², 18]
        let n = imageTokens.shape[0]
        var total: Tensor? = nil
        for (group, columns) in VisionTower.attributeColumns.enumerated() {
            let classes = columns.count
            let logp = logits.narrow(dim: 1, start: columns.lowerBound, length: classes).logSoftmax(dim: 1).reshape([n * classes])
            let picked = logp.indexSelect(dim: 0, index: (0..<n).map { $0 * classes + labels[group][$0] })
            let loss = -picked.mean()
            total = total.map { $0 + loss } ?? loss
        }
        return total!
    }

    /// `sample` with its description replaced by the canonical caption.
    public static func canonicalSample(_ sample: DescriptionSample) -> DescriptionSample {
        DescriptionSample(scene: sample.scene, phrases: canonicalPhrases(sample.scene))
    }

    /// Runs the pretraining from scratch. `progress` is called after every step. With
    /// `stopAfter`, only the first `stopAfter` steps of the run (same schedule) are made: a prefix
    /// of the full run, bit for bit.
    public static func run(_ cfg: TinyVLMPretrainConfig, stopAfter: Int? = nil,
                           progress: (TinyVLMPretrainProgress) -> Void = { _ in }) -> (model: TinyVLM, losses: [Float]) {
        var rng = PhiloxRNG(seed: cfg.initSeed)
        let model = TinyVLM(cfg.model, rng: &rng)
        let world = ShapesWorld(seed: cfg.worldSeed, train: cfg.trainScenes)
        let pre = ImagePreprocessor(imageSize: cfg.model.imageSize)
        let tokenizer = Tokenizer.shapesWorld
        let params = model.trainableParameters().map(\.1)
        let opt = AdamW(params, lr: cfg.lr, betas: (0.9, 0.98), weightDecay: cfg.weightDecay)
        let schedule = cfg.schedule
        var order: [Int] = [], cursor = 0, epoch = 0
        var kindRNG = PhiloxRNG(seed: cfg.dataSeed, stream: 0x564C_4D4B_494E_44)   // "VLMKIND"
        var losses: [Float] = []
        let start = Date()
        let steps = Swift.min(cfg.steps, stopAfter ?? cfg.steps)
        for step in 0..<steps {
            opt.zeroGrad()
            var total = 0.0
            for _ in 0..<cfg.batchSize {
                if cursor == order.count {
                    var prng = PhiloxRNG(seed: cfg.dataSeed, stream: 0x564C_4D44_4154_4100 | UInt64(epoch & 0xFF))  // "VLMDATA"
                    order = prng.permutation(cfg.trainScenes)
                    cursor = 0
                    epoch += 1
                }
                let raw = world.sample(.train, order[cursor])
                cursor += 1
                let sample = kindRNG.nextFloat() < Float(cfg.descriptionFraction) ? raw : canonicalSample(raw)
                let (pixels, meta) = pre(sample.scene.image)
                // The vocabulary covers the grammar, so encoding cannot fail.
                let seq = try! VLMSequence(tokenizer: tokenizer, imageTokens: cfg.model.imageTokens, sample: sample)
                let out = model(pixels, seq)
                var loss = TinyVLM.nextTokenLoss(logits: out.logits, sequence: seq)
                if let vision = model.vision, cfg.attributeWeight > 0 {
                    let labels = cellAttributes(sample.scene, meta: meta, grid: cfg.model.grid)
                    loss = loss + attributeLoss(vision, imageTokens: out.imageTokens, labels: labels) * Float(cfg.attributeWeight)
                }
                loss = loss / Float(cfg.batchSize)
                loss.backward()
                total += Double(loss.item)
            }
            if let clip = cfg.gradClip { clipGradNorm(params, maxNorm: clip) }
            opt.lr = schedule.lr(at: step)
            opt.step()
            losses.append(Float(total))
            let elapsed = Date().timeIntervalSince(start)
            let done = Double((step + 1) * cfg.batchSize)
            progress(TinyVLMPretrainProgress(step: step + 1, steps: steps, loss: Float(total),
                                             samplesPerSecond: done / max(elapsed, 1e-9),
                                             secondsLeft: elapsed / Double(step + 1) * Double(steps - step - 1)))
        }
        return (model, losses)
    }
}
