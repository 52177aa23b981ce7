// How much work an experiment does: seeds, training steps and data sizes.
//
//   smoke  the tests' profile: a few steps on a few samples (seconds)
//   quick  the README's main command: one seed, a short training (minutes for the whole grid)
//   full   the paper-style grid: 3 seeds, longer training, more data, a wider U-Net
//
// Each profile also names the ShapesWorld caches it uses by default (built on demand).

/// An experiment profile.
public struct Profile: Sendable, Equatable {
    public let name: String
    /// Training seeds (the U-Net's init, the data order).
    public var seeds: [UInt64]
    /// Optimiser steps per configuration and seed (one sample, all its phrases, per step).
    public var steps: Int
    /// ShapesWorld samples in the train and val caches.
    public var trainSamples: Int
    public var valSamples: Int
    /// Steps between two points of the logged loss curve.
    public var logEvery: Int
    /// The U-Net's `base_channels` (F-LMM: 64). The U-Net dominates a step's cost (its 3×3
    /// convolutions scale with the square of the width): at 64 a step takes about 1 s on 2 cores,
    /// so the full grid (14 configurations × 3 seeds) would need about 12 h. The profiles train a
    /// narrower U-Net to fit their budgets (full ≤ 3 h, quick ≤ 15 min with the build).
    public var unetBaseChannels: Int

    public init(name: String, seeds: [UInt64], steps: Int, trainSamples: Int, valSamples: Int, logEvery: Int,
                unetBaseChannels: Int) {
        self.name = name
        self.seeds = seeds
        self.steps = steps
        self.trainSamples = trainSamples
        self.valSamples = valSamples
        self.logEvery = logEvery
        self.unetBaseChannels = unetBaseChannels
    }

    public static let smoke = Profile(name: "smoke", seeds: [0], steps: 3, trainSamples: 3, valSamples: 2, logEvery: 1,
                                      unetBaseChannels: 8)
    public static let quick = Profile(name: "quick", seeds: [0], steps: 150, trainSamples: 300, valSamples: 60, logEvery: 5,
                                      unetBaseChannels: 16)
    public static let full = Profile(name: "full", seeds: [0, 1, 2], steps: 500, trainSamples: 1000, valSamples: 200,
                                     logEvery: 10, unetBaseChannels: 32)

    public static let all: [Profile] = [.smoke, .quick, .full]

    /// The profile named `name`.
    public static func named(_ name: String) throws -> Profile {
        if let p = all.first(where: { $0.name == name }) { return p }
        throw ExperimentError("unknown profile '\(name)'; expected one of \(all.map(\.name).joined(separator: ", "))")
    }
}
