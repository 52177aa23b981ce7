// Learning-rate schedule of F-LMM: mmengine's LinearLR warm-up followed by CosineAnnealingLR,
// both converted to iteration-based (`convert_to_iter_based=True`).
//
// F-LMM's config (max_epochs = 8, warmup_ratio = 0.03):
//   LinearLR(start_factor=1e-5, by_epoch=True, begin=0, end=warmup_ratio·max_epochs)
//   CosineAnnealingLR(eta_min=0, by_epoch=True, begin=warmup_ratio·max_epochs, end=max_epochs)
// mmengine converts epochs to iterations with int(x·epoch_length): the warm-up covers
// W = int(0.24·epoch_length) iterations and training N = 8·epoch_length (`flmm(epochLength:)`).
//
// mmengine's schedulers are chainable (each step multiplies the optimiser's current lr); the
// scheduler hook calls step() after every optimiser step, and construction applies step 0.
// The lr used by optimiser step i (0-based) is therefore:
//   warm-up, i in [0, W):   lr_i = base · (s + (e − s)·i/T),  T = W − 1   (s at T = 0)
//       (recursive form: lr_0 = base·s, lr_i = lr_{i−1}·(1 + (e−s)/(T·s + (i−1)(e−s))))
//   cosine, i in [W, N):   lr_i = η + (lr_{W−1} − η)·(1 + cos(π·k/K))/2,  k = i − W, K = N − W
//       (recursive form: lr at k = 0 is left unchanged; then
//        lr_k = (1 + cos(πk/K)) / (1 + cos(π(k−1)/K)) · (lr_{k−1} − η) + η)
//   i ≥ N: the last value stays (no scheduler is active).
// So iteration 0 trains at base·1e-5, iteration W−1 at base (the warm-up's end factor; when
// W = 1 it is base·s, and the cosine then decays from there, exactly as mmengine's chained
// form does), iteration W again at that value (cosine k = 0), and the last iteration N−1 at
// base·(1 + cos(π(K−1)/K))/2, slightly above 0: the cosine's η is reached only at i = N,
// which is never trained.
// With W = 0 (too few iterations for any warm-up; mmengine would refuse `end <= begin`) the
// cosine starts at base.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Linear warm-up then cosine annealing, per optimiser step, as mmengine computes it.
public struct WarmupCosineSchedule: Sendable, Equatable {
    /// The optimiser's initial learning rate.
    public let baseLR: Double
    /// Number of warm-up iterations W (LinearLR's `end`).
    public let warmupSteps: Int
    /// Total number of iterations N (CosineAnnealingLR's `end`).
    public let totalSteps: Int
    /// LinearLR's `start_factor` and `end_factor`.
    public let startFactor: Double
    public let endFactor: Double
    /// CosineAnnealingLR's `eta_min`.
    public let etaMin: Double

    /// A schedule with `warmupSteps` iterations of linear warm-up and cosine annealing over
    /// the remaining `totalSteps − warmupSteps`.
    public init(baseLR: Double, warmupSteps: Int, totalSteps: Int, startFactor: Double = 1e-5,
                endFactor: Double = 1, etaMin: Double = 0) {
        precondition(warmupSteps >= 0 && totalSteps > warmupSteps,
                     "WarmupCosineSchedule: need 0 <= warmupSteps (\(warmupSteps)) < totalSteps (\(totalSteps))")
        precondition((0...1).contains(startFactor) && (0...1).contains(endFactor),
                     "WarmupCosineSchedule: factors \(startFactor), \(endFactor) must be in [0, 1] (as mmengine requires)")
        self.baseLR = baseLR
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.startFactor = startFactor
        self.endFactor = endFactor
        self.etaMin = etaMin
    }

    /// Warm-up over int(warmupRatio · totalSteps) iterations (mmengine's int() truncation).
    public init(baseLR: Double, totalSteps: Int, warmupRatio: Double = 0.03, startFactor: Double = 1e-5) {
        self.init(baseLR: baseLR, warmupSteps: Int(warmupRatio * Double(totalSteps)), totalSteps: totalSteps,
                  startFactor: startFactor)
    }

    /// F-LMM's config exactly: warm-up ends at epoch `warmupRatio · maxEpochs`, converted as
    /// mmengine does: W = int((warmupRatio·maxEpochs) · epochLength), N = int(maxEpochs · epochLength).
    public static func flmm(baseLR: Double = 1e-4, epochLength: Int, maxEpochs: Int = 8,
                            warmupRatio: Double = 0.03) -> WarmupCosineSchedule {
        let warmupEnd = warmupRatio * Double(maxEpochs)
        return WarmupCosineSchedule(baseLR: baseLR, warmupSteps: Int(warmupEnd * Double(epochLength)),
                                    totalSteps: Int(Double(maxEpochs) * Double(epochLength)), startFactor: 1e-5)
    }

    /// Warm-up factor at warm-up step `i` (0 ≤ i < W): s + (e − s)·i/(W − 1).
    func warmupFactor(_ i: Int) -> Double {
        let t = warmupSteps - 1
        return t == 0 ? startFactor : startFactor + (endFactor - startFactor) * Double(i) / Double(t)
    }

    /// The learning rate used by optimiser step `step` (0-based).
    public func lr(at step: Int) -> Double {
        precondition(step >= 0, "WarmupCosineSchedule.lr(at:): negative step \(step)")
        if step < warmupSteps { return baseLR * warmupFactor(step) }
        let start = warmupSteps > 0 ? baseLR * warmupFactor(warmupSteps - 1) : baseLR
        let k = Double(min(step, totalSteps - 1) - warmupSteps)
        let period = Double(totalSteps - warmupSteps)
        return etaMin + (start - etaMin) * (1 + cos(Double.pi * k / period)) / 2
    }

    /// All learning rates of steps 0..<totalSteps by mmengine's chained (recursive) formulas,
    /// step by step in Double, for checking `lr(at:)`.
    public func chainedRates() -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(totalSteps)
        var lr = baseLR
        let t = Double(warmupSteps - 1), s = startFactor, e = endFactor
        let period = Double(totalSteps - warmupSteps)
        for i in 0..<totalSteps {
            if i < warmupSteps {
                lr = i == 0 ? lr * s : lr * (1 + (e - s) / (t * s + Double(i - 1) * (e - s)))
            } else {
                let k = Double(i - warmupSteps)
                if k > 0 {
                    lr = (1 + cos(Double.pi * k / period)) / (1 + cos(Double.pi * (k - 1) / period))
                        * (lr - etaMin) + etaMin
                }
            }
            out.append(lr)
        }
        return out
    }
}
