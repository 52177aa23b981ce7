// An experiment's grid: every (configuration, seed) unit trained on the train cache and
// evaluated on the val cache, resumable and shardable.
//
//   unit u = configIndex · seeds + seedIndex; shard i/n runs the units with u mod n = i
//   a finished unit is written at once as its own Results part (experiment attribute "unit"),
//       <out>/parts/<profile>/<configuration>-seed<s>.nc   (atomic: temp file + rename)
//   parts are shared by the experiments: F-LMM's default configuration, which every experiment
//   contains, is trained once per seed and profile
//   a restarted grid skips the units whose part exists (after checking that the part was made
//   from the same caches, profile, steps and optimiser settings: otherwise it stops and names it)
//   when every unit of the grid has its part, the parts are assembled into <out>/<experiment>.nc
//
// A model of a unit: F-LMM's U-Net head (normalize_input / upsample_input of the configuration)
// and text projection, initialised from the unit's seed; the pretrained SAM's prompt encoder and mask decoder
// from its checkpoint (F-LMM starts SAM from its pretrained weights); SAM's image encoder is not
// needed (the cache holds its output).

import FLMM
import Formats
import Foundation
import NN
import SegmentAnything
import Tensors

/// Where a grid reads and writes, and how much it does.
public struct GridOptions {
    public var experiment: Experiment
    public var profile: Profile
    public var seeds: [UInt64]
    public var steps: Int
    public var shard: (index: Int, count: Int) = (0, 1)
    /// The Results folder.
    public var outDir: URL
    public var settings = OptimizerSettings()

    public init(experiment: Experiment, profile: Profile, outDir: URL) {
        self.experiment = experiment
        self.profile = profile
        seeds = profile.seeds
        steps = profile.steps
        self.outDir = outDir
    }

    /// Parses "i/n" (0 ≤ i < n).
    public static func parseShard(_ s: String) throws -> (index: Int, count: Int) {
        let parts = s.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
            throw ExperimentError("--shard '\(s)': expected i/n with 0 ≤ i < n, e.g. 0/2")
        }
        return (i, n)
    }
}

/// The frozen and pretrained weights a grid starts from.
public struct GridInputs {
    public let train: GroundingDataset
    public let val: GroundingDataset
    /// TinySAM's configuration and its prompt encoder + mask decoder weights (`prompt_encoder.*`,
    /// `mask_decoder.*`).
    public let samConfig: SamConfig
    public let samWeights: [String: Tensor]
    public let samDigest: String

    public init(train: GroundingDataset, val: GroundingDataset, samConfig: SamConfig, samWeights: [String: Tensor],
                samDigest: String) {
        self.train = train
        self.val = val
        self.samConfig = samConfig
        self.samWeights = samWeights
        self.samDigest = samDigest
    }
}

public final class AblationGrid {
    public let options: GridOptions
    public let inputs: GridInputs
    public let configs: [AblationConfig]

    public init(options: GridOptions, inputs: GridInputs) throws {
        guard !options.seeds.isEmpty else { throw ExperimentError("--seeds: at least one seed is needed") }
        guard options.steps > 0 else { throw ExperimentError("steps \(options.steps): must be positive") }
        guard inputs.train.count > 0, inputs.val.count > 0 else {
            throw ExperimentError("empty cache: \(inputs.train.count) train and \(inputs.val.count) val samples")
        }
        self.options = options
        self.inputs = inputs
        configs = options.experiment.configs
    }

    /// The folder of this grid's parts (shared by the experiments of a profile).
    public var partsDir: URL {
        options.outDir.appendingPathComponent("parts/\(options.profile.name)")
    }

    /// The assembled Results file.
    public var resultsURL: URL { options.outDir.appendingPathComponent("\(options.experiment.rawValue).nc") }

    /// All units as (config index, seed index), in unit order.
    public var units: [(config: Int, seed: Int)] {
        configs.indices.flatMap { c in options.seeds.indices.map { (c, $0) } }
    }

    public func partURL(config c: Int, seed s: Int) -> URL {
        partsDir.appendingPathComponent(AblationGrid.unitName(configs[c], seed: options.seeds[s]) + ".nc")
    }

    /// The trained weights of a unit (F-LMM's keys), written just before its part.
    public func weightsURL(config c: Int, seed s: Int) -> URL {
        partsDir.appendingPathComponent(AblationGrid.unitName(configs[c], seed: options.seeds[s]) + ".safetensors")
    }

    /// "merge-mean_normalize-on_upsample-64_sam-box+mask+text-seed0".
    public static func unitName(_ c: AblationConfig, seed: UInt64) -> String {
        c.description.replacingOccurrences(of: "=", with: "-").replacingOccurrences(of: ",", with: "_") + "-seed\(seed)"
    }

    /// The experiment attribute of a part.
    public static let partExperiment = "unit"

    /// Attributes that identify the inputs of the grid (checked on resume and merge).
    public var inputAttributes: [String: NetCDFAttribute] {
        let st = options.settings
        return ["train_cache_sha256": .text(inputs.train.digest), "val_cache_sha256": .text(inputs.val.digest),
                "tinysam_sha256": .text(inputs.samDigest), "train_samples": .int(inputs.train.count),
                "val_samples": .int(inputs.val.count), "lr": .doubles([st.lr]), "weight_decay": .doubles([st.weightDecay]),
                "betas": .doubles([st.betas.0, st.betas.1]), "max_grad_norm": .doubles([st.maxGradNorm]),
                "warmup_ratio": .doubles([st.warmupRatio]), "warmup_start_factor": .doubles([st.startFactor]),
                "source_model": .text(inputs.train.header.sourceModel),
                "steps_per_unit": .int(options.steps), "log_every": .int(options.profile.logEvery),
                "unet_base_channels": .int(options.profile.unetBaseChannels)]
    }

    /// The logged steps of every unit.
    public var logSteps: [Int] {
        (0..<options.steps).filter { $0 % options.profile.logEvery == 0 || $0 == options.steps - 1 }
    }

    func header(configs: [AblationConfig], seeds: [UInt64], provenance: [String: NetCDFAttribute]) -> ResultsHeader {
        let phrases = inputs.val.phrases
        return ResultsHeader(experiment: options.experiment.rawValue, title: options.experiment.title,
                             profile: options.profile.name, steps: options.steps, configs: configs, seeds: seeds,
                             logSteps: logSteps, phraseSamples: phrases.map(\.sample), phraseKinds: phrases.map(\.kind),
                             inputs: inputAttributes, provenance: provenance)
    }

    /// A fresh model for configuration `config` and `seed`.
    public func makeModel(_ config: AblationConfig, seed: UInt64) throws -> FLMMModel {
        let h = inputs.train.header
        let (_, layout) = inputs.train.sample(0)
        var rng = PhiloxRNG(seed: seed, stream: 0x464C_4D4D_0000)          // "FLMM"
        var head = UNetHeadConfig(inChannels: layout.channels(layers: h.layers, heads: h.heads))
        head.baseChannels = options.profile.unetBaseChannels
        head.normalizeInput = config.normalizeInput
        head.upsampleInput = config.upsampleInput
        let unet = UNetHead(head, rng: &rng)
        let text = TextEmbedding(layers: h.layers, hiddenSize: h.hiddenSize,
                                 embedDim: inputs.samConfig.promptEncoder.embedDim, rng: &rng)
        var samRNG = PhiloxRNG(seed: 0)      // every weight is overwritten by the checkpoint
        let sam = Sam(inputs.samConfig, includeImageEncoder: false, rng: &samRNG)
        try sam.load(stateDict: inputs.samWeights)
        let options = RefinerOptions(useText: config.useText, useMask: config.useMask, useBox: config.useBox)
        let model = FLMMModel(maskHead: unet, text: text, sam: MaskRefiner(sam: sam, options: options), merge: config.merge)
        model.useRefiner = config.refiner
        return model
    }

    /// Trains and evaluates one unit.
    public func runUnit(config c: Int, seed s: Int, progress: (String) -> Void) throws -> (RunResult, FLMMModel) {
        let config = configs[c], seed = options.seeds[s]
        let model = try makeModel(config, seed: seed)
        let trainer = FLMMTrainer(model: model, steps: options.steps, settings: options.settings)
        let start = Date()
        let label = "\(options.experiment.rawValue) [\(c + 1)/\(configs.count)] \(config) seed \(seed)"
        let curve = try trainer.train(count: inputs.train.count, seed: seed, logEvery: options.profile.logEvery,
                                      configName: "\(config) seed \(seed)", sample: { inputs.train.sample($0) }) { step, out in
            let done = step + 1
            guard done % 10 == 0 || done == options.steps else { return }
            let rate = Double(done) / max(Date().timeIntervalSince(start), 1e-9)
            let eta = Double(options.steps - done) / rate
            var line = "\(label): step \(done)/\(options.steps) loss \(fmt(out.loss.item)) (mask \(fmt(out.lossMask.item)) dice \(fmt(out.lossDice.item))"
            if let m = out.samLossMask, let d = out.samLossDice { line += " sam_mask \(fmt(m.item)) sam_dice \(fmt(d.item))" }
            line += ") \(String(format: "%.2f", rate)) steps/s ETA \(Int(eta.rounded())) s"
            progress(line)
        }
        let evaluation = try FLMMEvaluation.evaluate(model, count: inputs.val.count, sample: { inputs.val.evalSample($0) })
        return (RunResult(config: config, seed: seed, curve: curve, evaluation: evaluation), model)
    }

    /// Runs this shard's unfinished units (each written as a part when it finishes), then
    /// assembles the Results file if every unit of the grid is finished. Returns the Results
    /// file's URL, or nil when other shards still have work.
    @discardableResult
    public func run(progress: (String) -> Void) throws -> URL? {
        try FileManager.default.createDirectory(at: partsDir, withIntermediateDirectories: true)
        for (u, unit) in units.enumerated() where u % options.shard.count == options.shard.index {
            let url = partURL(config: unit.config, seed: unit.seed)
            if FileManager.default.fileExists(atPath: url.path) {
                _ = try checkedPart(url, config: unit.config, seed: unit.seed)
                progress("\(options.experiment.rawValue): \(configs[unit.config]) seed \(options.seeds[unit.seed]) already finished (\(url.lastPathComponent))")
                continue
            }
            let start = Date()
            let (result, model) = try runUnit(config: unit.config, seed: unit.seed, progress: progress)
            try SafeTensors.write(tensors: Dictionary(uniqueKeysWithValues: model.trainedStateDict()),
                                  to: weightsURL(config: unit.config, seed: unit.seed))
            let prov = Provenance.attributes(wallSeconds: Date().timeIntervalSince(start), command: CommandLine.arguments.joined(separator: " "))
            var partHeader = header(configs: [configs[unit.config]], seeds: [options.seeds[unit.seed]], provenance: prov)
            partHeader.experiment = AblationGrid.partExperiment
            partHeader.title = "one unit of an ablation grid"
            try ResultsFile.write(url, header: partHeader, runs: [result])
        }
        return try assembleIfComplete()
    }

    /// Reads a part and checks that it belongs to this grid.
    func checkedPart(_ url: URL, config c: Int, seed s: Int) throws -> RunResult {
        let (h, runs) = try ResultsFile.read(url)
        let expected = header(configs: [configs[c]], seeds: [options.seeds[s]], provenance: [:])
        var problems: [String] = []
        if h.experiment != AblationGrid.partExperiment { problems.append("experiment \(h.experiment), expected \(AblationGrid.partExperiment)") }
        if h.profile != expected.profile { problems.append("profile \(h.profile), expected \(expected.profile)") }
        if h.steps != expected.steps { problems.append("steps \(h.steps), expected \(expected.steps)") }
        if h.configs != expected.configs { problems.append("configuration \(h.configs.map(\.description)), expected \(configs[c])") }
        if h.seeds != expected.seeds { problems.append("seed \(h.seeds), expected \(options.seeds[s])") }
        for (k, v) in expected.inputs where h.inputs[k] != v {
            problems.append("attribute \(k) = \(h.inputs[k].map { "\($0)" } ?? "missing"), expected \(v)")
        }
        guard problems.isEmpty, runs.count == 1 else {
            throw ResultsFileError(file: url.path, detail: "this finished part belongs to another run (\(problems.joined(separator: "; "))); move it away or use another --out")
        }
        return runs[0]
    }

    /// Assembles `<experiment>.nc` from the parts when all are there (with `ResultsMerge`, as
    /// `flmm results merge` does for parts gathered from shards).
    public func assembleIfComplete() throws -> URL? {
        var parts: [URL] = []
        for unit in units {
            let url = partURL(config: unit.config, seed: unit.seed)
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            _ = try checkedPart(url, config: unit.config, seed: unit.seed)
            parts.append(url)
        }
        try ResultsMerge.merge(parts, experiment: options.experiment, seeds: options.seeds, out: resultsURL)
        return resultsURL
    }
}

func fmt(_ x: Float) -> String { String(format: "%.4f", Double(x)) }
