// Training F-LMM's trainable parts on cached frozen features, with F-LMM's settings
// (flmm-reference-notes §2): AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.01; gradient
// clipping at global norm 1.0; linear warm-up over 3% of the steps from factor 1e-5, then
// cosine to 0; one sample (all its phrases) per step, in a data order drawn from the seed.
//
// Each step: zero the gradients, run FLMMModel.step, backward from the total loss, clip, set
// the lr of this step, AdamW. A non-finite loss stops training with an error that names the
// step and the configuration.

import FLMM
import NN
import Tensors

/// F-LMM's optimiser settings.
public struct OptimizerSettings: Sendable, Equatable {
    public var lr = 1e-4
    public var betas = (0.9, 0.999)
    public var weightDecay = 0.01
    public var maxGradNorm = 1.0
    public var warmupRatio = 0.03
    public var startFactor = 1e-5

    public init() {}

    public static func == (a: Self, b: Self) -> Bool {
        a.lr == b.lr && a.betas == b.betas && a.weightDecay == b.weightDecay && a.maxGradNorm == b.maxGradNorm
            && a.warmupRatio == b.warmupRatio && a.startFactor == b.startFactor
    }
}

/// The logged losses of a run, one entry per logged step.
public struct LossCurve: Sendable, Equatable {
    public var steps: [Int] = []
    public var loss: [Float] = []
    public var lossMask: [Float] = []
    public var lossDice: [Float] = []
    /// NaN where the configuration has no refiner.
    public var samLossMask: [Float] = []
    public var samLossDice: [Float] = []

    public init() {}

    public init(steps: [Int], loss: [Float], lossMask: [Float], lossDice: [Float], samLossMask: [Float], samLossDice: [Float]) {
        self.steps = steps
        self.loss = loss
        self.lossMask = lossMask
        self.lossDice = lossDice
        self.samLossMask = samLossMask
        self.samLossDice = samLossDice
    }
}

/// Training stopped: the loss became NaN or infinite.
public struct NonFiniteLossError: Error, CustomStringConvertible {
    public let step: Int
    public let config: String
    public let loss: Float
    public var description: String {
        "training diverged: loss \(loss) at step \(step) of configuration \(config); stopping (finished configurations are kept)"
    }
}

/// Trains one FLMMModel.
public final class FLMMTrainer {
    public let model: FLMMModel
    public let settings: OptimizerSettings
    public let steps: Int
    let optimizer: AdamW
    let schedule: WarmupCosineSchedule

    public init(model: FLMMModel, steps: Int, settings: OptimizerSettings = OptimizerSettings()) {
        precondition(steps > 0, "FLMMTrainer: steps \(steps) must be positive")
        self.model = model
        self.settings = settings
        self.steps = steps
        let params = model.trainableParameters().map(\.1)
        optimizer = AdamW(params, lr: settings.lr, betas: settings.betas, weightDecay: settings.weightDecay)
        schedule = WarmupCosineSchedule(baseLR: settings.lr, totalSteps: steps, warmupRatio: settings.warmupRatio,
                                        startFactor: settings.startFactor)
    }

    /// The sample index of each step: a Philox permutation of 0..<count per epoch, from `seed`.
    public static func dataOrder(count: Int, steps: Int, seed: UInt64) -> [Int] {
        precondition(count > 0, "FLMMTrainer.dataOrder: no training samples")
        var order: [Int] = []
        var epoch: UInt64 = 0
        while order.count < steps {
            var rng = PhiloxRNG(seed: seed, stream: 0x4F52_4445_5200 | epoch)       // "ORDER" + epoch
            order += rng.permutation(count)
            epoch += 1
        }
        return Array(order.prefix(steps))
    }

    /// Trains for `steps` steps on `sample(i)` (a sample and its attention layout; i from the
    /// seed's data order over `count` samples), logging every `logEvery` steps (and the last).
    /// `progress` gets each step's output (for a progress line).
    public func train(count: Int, seed: UInt64, logEvery: Int, configName: String,
                      sample: (Int) throws -> (FLMMSample, any AttentionLayout),
                      progress: (Int, FLMMStepOutput) -> Void = { _, _ in }) throws -> LossCurve {
        model.train()
        var curve = LossCurve()
        let params = optimizer.parameters
        for (step, index) in FLMMTrainer.dataOrder(count: count, steps: steps, seed: seed).enumerated() {
            optimizer.zeroGrad()
            let (input, layout) = try sample(index)
            let out = try model.step(input, layout: layout)
            let loss = out.loss.item
            guard loss.isFinite else { throw NonFiniteLossError(step: step, config: configName, loss: loss) }
            out.loss.backward()
            _ = clipGradNorm(params, maxNorm: settings.maxGradNorm)
            optimizer.lr = schedule.lr(at: step)
            optimizer.step()
            if step % logEvery == 0 || step == steps - 1 {
                curve.steps.append(step)
                curve.loss.append(loss)
                curve.lossMask.append(out.lossMask.item)
                curve.lossDice.append(out.lossDice.item)
                curve.samLossMask.append(out.samLossMask?.item ?? .nan)
                curve.samLossDice.append(out.samLossDice?.item ?? .nan)
            }
            progress(step, out)
        }
        model.eval()
        return curve
    }
}
