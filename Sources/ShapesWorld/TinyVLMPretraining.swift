// TinyVLM pretraining: next-token prediction on ShapesWorld scenes, deterministic from its
// config (the same config gives bitwise the same weights on any thread count).
//
// Captions. Two kinds, chosen per training sample by a Philox draw:
//   - the canonical caption (probability 1 − descriptionFraction): every object, in canonical
//     spatial order (left to right by centre x; ties by centre y, then depth index), as its
//     full attribute phrase followed by ".": "the small red circle . the large blue star . …".
//     Each size, colour and shape word is then determined by the image and the prefix (which
//     object comes next is fixed by the order, and its attributes by the image), so next-token
//     accuracy on those words can approach 100% and is a meaningful target. Naming the next
//     object's attributes forces the phrase tokens to look at that object's image tokens.
//   - the grounding description (probability descriptionFraction): `DescriptionSample.words`,
//     the shuffled attribute / relational / plural phrases F-LMM later grounds. Their order and
//     templates are random, so not every word is predictable, but the words that follow a
//     phrase's first words are, and only by finding the object(s) the prefix names: this teaches
//     content-based attention ("red" → the red object's patches) on exactly the captions the
//     frozen model is read on.
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

    public init(model: TinyVLMConfig, worldSeed: UInt64 = 0, trainScenes: Int = 4000, initSeed: UInt64 = 1,
                dataSeed: UInt64 = 2, steps: Int, batchSize: Int, lr: Double, warmupSteps: Int,
                minLRFraction: Double = 0.05, weightDecay: Double = 0.01, gradClip: Double? = 1,
                descriptionFraction: Double = 0.3) {
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
    }

    /// The configuration of the committed checkpoint (Checkpoints/tinyvlm.safetensors).
    public static let standard = TinyVLMPretrainConfig(
        model: .shapesWorld, worldSeed: 0, trainScenes: 4000, initSeed: 1, dataSeed: 2,
        steps: 2000, batchSize: 8, lr: 2e-3, warmupSteps: 100)

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
    /// The frozen TinyVLM's sizes: 96×96 input, 6-pixel patches (a 16×16 grid), D = 64, 4 blocks
    /// of 4 heads. (A 24×24 grid with 4-pixel patches sees the same pixels but has 2.2× the image
    /// tokens; its step is ~3× slower, too slow for the 15-minute pretraining budget on 2 cores.)
    /// A 16-channel 3×3 convolution + GELU before the patch embedding gives the patches local
    /// edge features (shape cues), and the image positions start from a 2-D sine-cosine table.
    static let shapesWorld = TinyVLMConfig(imageSize: 96, patchSize: 6, dim: 64, layers: 4, heads: 4,
                                           stemChannels: 16, sincosImagePositions: true)
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
    /// The canonical caption of `scene`: objects left to right by centre (ties: centre y, then
    /// depth index), each as the attribute phrase "the <size> <colour> <shape>" with the object
    /// as its only target.
    public static func canonicalPhrases(_ scene: Scene) -> [ReferringExpression] {
        let order = scene.objects.indices.sorted { a, b in
            let oa = scene.objects[a], ob = scene.objects[b]
            if oa.cx != ob.cx { return oa.cx < ob.cx }
            if oa.cy != ob.cy { return oa.cy < ob.cy }
            return a < b
        }
        return order.map { k in
            let o = scene.objects[k]
            return ReferringExpression(kind: .attribute, words: ["the", o.size.name, o.color.name, o.shape.noun], targets: [k])
        }
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
                let (pixels, _) = pre(sample.scene.image)
                // The vocabulary covers the grammar, so encoding cannot fail.
                let seq = try! VLMSequence(tokenizer: tokenizer, imageTokens: cfg.model.imageTokens, sample: sample)
                let out = model(pixels, seq)
                let loss = TinyVLM.nextTokenLoss(logits: out.logits, sequence: seq) / Float(cfg.batchSize)
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
