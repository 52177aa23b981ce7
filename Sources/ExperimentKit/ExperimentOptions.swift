// The command-line options every experiment executable takes, and what they resolve to.
//
//   --profile smoke|quick|full   how much work (Profile); default quick
//   --seeds 0,1,2                training seeds (default: the profile's)
//   --steps N                    training steps per unit (default: the profile's)
//   --cache TRAIN.nc --val-cache VAL.nc
//                                GroundingCaches to use; default: the ShapesWorld caches of the
//                                profile, Results/caches/shapesworld-<profile>-{train,val}.nc,
//                                built on demand from the committed frozen checkpoints
//   --tinysam FILE               TinySAM checkpoint (prompt encoder + mask decoder init)
//   --sam FILE --sam-model vit_l official SAM checkpoint instead (for caches of real LMMs whose
//                                SAM embeddings are 256×64×64)
//   --shard i/n                  run only units u with u mod n = i (merge: `flmm results merge`)
//   --out DIR                    the Results folder (default Results)

import ArgumentParser
import FLMMExperiments
import Foundation

public struct ExperimentOptions: ParsableArguments {
    @Option(help: "Profile: smoke, quick or full.")
    public var profile: String = "quick"
    @Option(help: "Comma-separated training seeds (default: the profile's).")
    public var seeds: String?
    @Option(help: "Training steps per configuration and seed (default: the profile's).")
    public var steps: Int?
    @Option(help: "Train GroundingCache (default: the profile's ShapesWorld cache, built on demand).")
    public var cache: String?
    @Option(name: .customLong("val-cache"), help: "Val GroundingCache (needed with --cache).")
    public var valCache: String?
    @Option(help: "TinySAM checkpoint whose prompt encoder and mask decoder initialise the refiner.")
    public var tinysam: String = "Checkpoints/tinysam.safetensors"
    @Option(help: "Official SAM checkpoint (sam_vit_*.pth or safetensors) whose prompt encoder and mask decoder initialise the refiner, instead of TinySAM (needs --sam-model).")
    public var sam: String?
    @Option(name: .customLong("sam-model"), help: "The model of --sam: vit_b, vit_l (F-LMM's) or vit_h.")
    public var samModel: String?
    @Option(help: "TinyVLM checkpoint (used to build the ShapesWorld caches).")
    public var tinyvlm: String = "Checkpoints/tinyvlm.safetensors"
    @Option(help: "Run one shard i/n of the grid (0 ≤ i < n).")
    public var shard: String = "0/1"
    @Option(help: "Results folder.")
    public var out: String = "Results"

    public init() {}

    /// The grid options of `experiment`, validated.
    public func gridOptions(_ experiment: Experiment) throws -> GridOptions {
        let p = try Profile.named(profile)
        var g = GridOptions(experiment: experiment, profile: p, outDir: URL(fileURLWithPath: out))
        if let seeds {
            let parsed = seeds.split(separator: ",").map { UInt64($0.trimmingCharacters(in: .whitespaces)) }
            guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }), Set(parsed).count == parsed.count else {
                throw ExperimentError("--seeds '\(seeds)': expected distinct non-negative integers separated by commas, e.g. 0,1,2")
            }
            g.seeds = parsed.map { $0! }
        }
        if let steps {
            guard steps > 0 else { throw ExperimentError("--steps \(steps): must be positive") }
            g.steps = steps
        }
        g.shard = try GridOptions.parseShard(shard)
        try ExperimentOptions.checkWritable(URL(fileURLWithPath: out))
        return g
    }

    /// Fails early, with the folder named, when `dir` cannot be created or written.
    static func checkWritable(_ dir: URL) throws {
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw ExperimentError("--out \(dir.path): cannot create the folder (\(error.localizedDescription))")
        }
        guard FileManager.default.isWritableFile(atPath: dir.path) else {
            throw ExperimentError("--out \(dir.path): the folder is not writable")
        }
    }
}

/// Runs an executable's body: errors are printed as `error: …` on stderr with exit status 1.
public func experimentMain(_ body: () throws -> Void) {
    do {
        try body()
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        exit(1)
    }
}

/// Writes a progress line to stderr.
public func printProgress(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
