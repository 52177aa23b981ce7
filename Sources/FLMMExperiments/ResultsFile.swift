// The Results file of an experiment (NetCDF-4), readable by ncdump and xarray.
//
//   dimensions  config, seed, mask_kind (unet, sam), phrase_group (all, attribute, relational,
//               plural), log_step, phrase (the val phrases, in sample order)
//   coordinates config(config) names; seed(seed); mask_kind; phrase_group; log_step(log_step);
//               one per factor along config: merge (string), normalize_input, refiner, use_box,
//               use_mask, use_text (byte 0/1), upsample_input (int, 0 = none);
//               phrase_sample(phrase) (val sample index), phrase_kind(phrase) (string)
//   metrics     ciou, miou, prec50 (float) and avg_recall (double)
//               [config, seed, mask_kind, phrase_group]; NaN where a mask kind does not exist
//               (no SAM mask without the refiner) or a group has no phrase
//   curves      loss, loss_mask, loss_dice, sam_loss_mask, sam_loss_dice [config, seed, log_step]
//   per phrase  iou [config, seed, mask_kind, phrase]
//   attributes  experiment, title, profile, steps, optimiser settings, the cache digests, and
//               provenance: toolkit_version, git_commit, backend, threads, cpu, wall_seconds
// Data variables depend only on the inputs and the seeds; provenance attributes (wall time,
// commit, host) are the only parts that differ between two runs.
//
// A unit of work is one (configuration, seed). Each finished unit is written as its own file
// of this same schema (one config, one seed) under the parts folder, so a killed grid resumes
// where it stopped and shards of a grid merge by reading their parts.

import FLMM
import Tensors
import Formats
import Foundation

/// What one (configuration, seed) run produced.
public struct RunResult: Sendable {
    public var config: AblationConfig
    public var seed: UInt64
    public var curve: LossCurve
    /// Per-phrase IoU by mask kind (absent kinds: no SAM mask without the refiner).
    public var ious: [MaskKind: [Float]]
    /// Scores by mask kind and group (NaN where absent).
    public var scores: [MaskKind: [PhraseGroup: GroupScores]]

    public init(config: AblationConfig, seed: UInt64, curve: LossCurve, evaluation: EvaluationResult) {
        self.config = config
        self.seed = seed
        self.curve = curve
        ious = evaluation.ious
        var s: [MaskKind: [PhraseGroup: GroupScores]] = [:]
        for k in MaskKind.allCases where evaluation.overlaps[k] != nil {
            for g in PhraseGroup.allCases { s[k, default: [:]][g] = evaluation.scores(k, g) }
        }
        scores = s
    }

    init(config: AblationConfig, seed: UInt64, curve: LossCurve, ious: [MaskKind: [Float]],
         scores: [MaskKind: [PhraseGroup: GroupScores]]) {
        self.config = config
        self.seed = seed
        self.curve = curve
        self.ious = ious
        self.scores = scores
    }
}

/// The file-level description of a Results file.
public struct ResultsHeader: Sendable {
    public var experiment: String
    public var title: String
    public var profile: String
    public var steps: Int
    public var configs: [AblationConfig]
    public var seeds: [UInt64]
    public var logSteps: [Int]
    /// Val sample index and kind of every evaluated phrase.
    public var phraseSamples: [Int]
    public var phraseKinds: [PhraseGroup]
    /// Attributes that describe the inputs (cache digests, optimiser settings): part of the
    /// experiment's identity, checked when parts are merged.
    public var inputs: [String: NetCDFAttribute]
    /// Provenance attributes (commit, host, wall time): informative only.
    public var provenance: [String: NetCDFAttribute]

    public init(experiment: String, title: String, profile: String, steps: Int, configs: [AblationConfig], seeds: [UInt64],
                logSteps: [Int], phraseSamples: [Int], phraseKinds: [PhraseGroup],
                inputs: [String: NetCDFAttribute], provenance: [String: NetCDFAttribute]) {
        self.experiment = experiment
        self.title = title
        self.profile = profile
        self.steps = steps
        self.configs = configs
        self.seeds = seeds
        self.logSteps = logSteps
        self.phraseSamples = phraseSamples
        self.phraseKinds = phraseKinds
        self.inputs = inputs
        self.provenance = provenance
    }
}

/// A Results file that does not hold what was expected.
public struct ResultsFileError: Error, CustomStringConvertible {
    public let file: String
    public let detail: String
    public var description: String { "\(file): \(detail)" }
}

public enum ResultsFile {
    static let factorNames = ["merge", "normalize_input", "upsample_input", "refiner", "use_box", "use_mask", "use_text"]
    static let curveNames = ["loss", "loss_mask", "loss_dice", "sam_loss_mask", "sam_loss_dice"]

    /// Writes `runs` (every config × seed of `header`, any order) to `url`, atomically.
    public static func write(_ url: URL, header h: ResultsHeader, runs: [RunResult]) throws {
        let nc = h.configs.count, ns = h.seeds.count, nm = MaskKind.allCases.count, ng = PhraseGroup.allCases.count
        let nt = h.logSteps.count, np = h.phraseSamples.count
        func run(_ c: Int, _ s: Int) throws -> RunResult {
            guard let r = runs.first(where: { $0.config == h.configs[c] && $0.seed == h.seeds[s] }) else {
                throw ResultsFileError(file: url.path, detail: "no run for configuration \(h.configs[c]) and seed \(h.seeds[s])")
            }
            guard r.curve.steps == h.logSteps else {
                throw ResultsFileError(file: url.path, detail: "run \(r.config) seed \(r.seed) logged steps \(r.curve.steps.prefix(4))…, expected \(h.logSteps.prefix(4))…")
            }
            return r
        }
        var ordered: [RunResult] = []
        for c in 0..<nc { for s in 0..<ns { ordered.append(try run(c, s)) } }

        let f = try NetCDFFile.create(url)
        do {
            for (d, n) in [("config", nc), ("seed", ns), ("mask_kind", nm), ("phrase_group", ng), ("log_step", nt), ("phrase", np)] {
                _ = try f.defineDimension(d, length: n)
            }
            try f.setAttribute("Conventions", "CF-1.8")
            try f.setAttribute("experiment", .text(h.experiment))
            try f.setAttribute("title", .text(h.title))
            try f.setAttribute("profile", .text(h.profile))
            try f.setAttribute("steps", .int(h.steps))
            for (k, v) in h.inputs.sorted(by: { $0.key < $1.key }) { try f.setAttribute(k, v) }
            for (k, v) in h.provenance.sorted(by: { $0.key < $1.key }) { try f.setAttribute(k, v) }

            // Coordinates.
            try f.defineVariable("config", type: .string, dimensions: ["config"])
            try f.setAttribute("long_name", "configuration (factor values)", variable: "config")
            try f.defineVariable("seed", type: .int64, dimensions: ["seed"])
            try f.setAttribute("long_name", "training seed (U-Net init and data order)", variable: "seed")
            try f.defineVariable("mask_kind", type: .string, dimensions: ["mask_kind"])
            try f.setAttribute("long_name", "unet: U-Net mask; sam: SAM-refined mask", variable: "mask_kind")
            try f.defineVariable("phrase_group", type: .string, dimensions: ["phrase_group"])
            try f.defineVariable("log_step", type: .int, dimensions: ["log_step"])
            try f.setAttribute("long_name", "optimiser step (0-based) of the logged loss", variable: "log_step")
            try f.defineVariable("merge", type: .string, dimensions: ["config"])
            for b in ["normalize_input", "refiner", "use_box", "use_mask", "use_text"] {
                try f.defineVariable(b, type: .byte, dimensions: ["config"])
                try f.setAttribute("flag_values", .int8s([0, 1]), variable: b)
                try f.setAttribute("flag_meanings", "off on", variable: b)
            }
            try f.defineVariable("upsample_input", type: .int, dimensions: ["config"])
            try f.setAttribute("long_name", "U-Net input side after upsampling; 0 = no upsampling", variable: "upsample_input")
            try f.defineVariable("phrase_sample", type: .int, dimensions: ["phrase"])
            try f.setAttribute("long_name", "val sample index of the phrase", variable: "phrase_sample")
            try f.defineVariable("phrase_kind", type: .string, dimensions: ["phrase"])

            let coords = "merge normalize_input upsample_input refiner use_box use_mask use_text"
            let metricDims = ["config", "seed", "mask_kind", "phrase_group"]
            for (name, long) in [("ciou", "cumulative IoU (sum I / sum U)"), ("miou", "mean IoU"),
                                 ("prec50", "fraction of phrases with IoU > 0.5")] {
                try f.defineVariable(name, type: .float, dimensions: metricDims)
                try f.setAttribute("long_name", .text(long), variable: name)
                try f.setAttribute("_FillValue", .floats([.nan]), variable: name)
                try f.setAttribute("coordinates", .text(coords), variable: name)
            }
            try f.defineVariable("avg_recall", type: .double, dimensions: metricDims)
            try f.setAttribute("long_name", "PNG average recall (area under recall vs IoU threshold)", variable: "avg_recall")
            try f.setAttribute("_FillValue", .doubles([.nan]), variable: "avg_recall")
            try f.setAttribute("coordinates", .text(coords), variable: "avg_recall")
            for name in curveNames {
                try f.defineVariable(name, type: .float, dimensions: ["config", "seed", "log_step"], compression: 4)
                try f.setAttribute("long_name", .text("training \(name) at the logged step"), variable: name)
                try f.setAttribute("_FillValue", .floats([.nan]), variable: name)
                try f.setAttribute("coordinates", .text(coords), variable: name)
            }
            try f.defineVariable("iou", type: .float, dimensions: ["config", "seed", "mask_kind", "phrase"], compression: 4)
            try f.setAttribute("long_name", "IoU of each val phrase's mask at the original size", variable: "iou")
            try f.setAttribute("_FillValue", .floats([.nan]), variable: "iou")
            try f.setAttribute("coordinates", .text(coords + " phrase_sample phrase_kind"), variable: "iou")

            try f.writeStrings("config", h.configs.map(\.description))
            try f.write("seed", h.seeds.map { Int64(bitPattern: $0) })
            try f.writeStrings("mask_kind", MaskKind.allCases.map(\.rawValue))
            try f.writeStrings("phrase_group", PhraseGroup.allCases.map(\.rawValue))
            try f.write("log_step", h.logSteps.map { Int32($0) })
            try f.writeStrings("merge", h.configs.map(\.merge.rawValue))
            try f.write("normalize_input", h.configs.map { Int8($0.normalizeInput ? 1 : 0) })
            try f.write("refiner", h.configs.map { Int8($0.refiner ? 1 : 0) })
            try f.write("use_box", h.configs.map { Int8($0.useBox ? 1 : 0) })
            try f.write("use_mask", h.configs.map { Int8($0.useMask ? 1 : 0) })
            try f.write("use_text", h.configs.map { Int8($0.useText ? 1 : 0) })
            try f.write("upsample_input", h.configs.map { Int32($0.upsampleInput ?? 0) })
            try f.write("phrase_sample", h.phraseSamples.map { Int32($0) })
            try f.writeStrings("phrase_kind", h.phraseKinds.map(\.rawValue))

            var ciou = [Float](), miou = [Float](), prec = [Float](), ar = [Double]()
            var curves = [[Float]](repeating: [], count: curveNames.count), iou = [Float]()
            for r in ordered {
                for k in MaskKind.allCases {
                    for g in PhraseGroup.allCases {
                        let s = r.scores[k]?[g]
                        ciou.append(s?.cIoU ?? .nan)
                        miou.append(s?.mIoU ?? .nan)
                        prec.append(s?.precision50 ?? .nan)
                        ar.append(s?.averageRecall ?? .nan)
                    }
                    if let v = r.ious[k] {
                        guard v.count == np else {
                            throw ResultsFileError(file: url.path, detail: "run \(r.config) seed \(r.seed) has \(v.count) phrase IoUs, expected \(np)")
                        }
                        iou += v
                    } else {
                        iou += [Float](repeating: .nan, count: np)
                    }
                }
                let c = r.curve
                for (i, v) in [c.loss, c.lossMask, c.lossDice, c.samLossMask, c.samLossDice].enumerated() { curves[i] += v }
            }
            try f.write("ciou", ciou)
            try f.write("miou", miou)
            try f.write("prec50", prec)
            try f.write("avg_recall", ar)
            for (i, name) in curveNames.enumerated() { try f.write(name, curves[i]) }
            try f.write("iou", iou)
            try f.close()
        } catch {
            f.discard()
            throw error
        }
    }

    /// Reads a Results file (or a part) back: its header and its runs.
    public static func read(_ url: URL) throws -> (header: ResultsHeader, runs: [RunResult]) {
        let f = try NetCDFFile.open(url)
        defer { try? f.close() }
        let attrs = try f.attributes()
        func text(_ k: String) throws -> String {
            guard let v = attrs[k]?.text else { throw ResultsFileError(file: url.path, detail: "missing global attribute '\(k)'") }
            return v
        }
        guard let steps = attrs["steps"]?.int else { throw ResultsFileError(file: url.path, detail: "missing global attribute 'steps'") }
        let merges: [String] = try f.readStrings("merge")
        let norm: [Int8] = try f.read("normalize_input"), ref: [Int8] = try f.read("refiner")
        let box: [Int8] = try f.read("use_box"), mask: [Int8] = try f.read("use_mask"), txt: [Int8] = try f.read("use_text")
        let ups: [Int32] = try f.read("upsample_input")
        var configs: [AblationConfig] = []
        for i in merges.indices {
            var c = AblationConfig()
            guard let m = PhraseMerge(rawValue: merges[i]) else {
                throw ResultsFileError(file: url.path, detail: "variable 'merge': unknown value '\(merges[i])', expected mean or max")
            }
            c.merge = m
            c.normalizeInput = norm[i] != 0
            c.refiner = ref[i] != 0
            c.useBox = box[i] != 0
            c.useMask = mask[i] != 0
            c.useText = txt[i] != 0
            c.upsampleInput = ups[i] == 0 ? nil : Int(ups[i])
            configs.append(c)
        }
        let seeds: [Int64] = try f.read("seed")
        let logSteps: [Int32] = try f.read("log_step")
        let phraseSamples: [Int32] = try f.read("phrase_sample")
        let kindNames = try f.readStrings("phrase_kind")
        let kinds = try kindNames.map { k in
            guard let g = PhraseGroup(rawValue: k), g != .all else {
                throw ResultsFileError(file: url.path, detail: "variable 'phrase_kind': unknown kind '\(k)'")
            }
            return g
        }
        var inputs: [String: NetCDFAttribute] = [:], provenance: [String: NetCDFAttribute] = [:]
        for (k, v) in attrs where !["Conventions", "experiment", "title", "profile", "steps"].contains(k) {
            if Provenance.keys.contains(k) { provenance[k] = v } else { inputs[k] = v }
        }
        let header = ResultsHeader(experiment: try text("experiment"), title: try text("title"), profile: try text("profile"),
                                   steps: steps, configs: configs, seeds: seeds.map { UInt64(bitPattern: $0) },
                                   logSteps: logSteps.map(Int.init), phraseSamples: phraseSamples.map(Int.init),
                                   phraseKinds: kinds, inputs: inputs, provenance: provenance)
        let ciou: [Float] = try f.read("ciou"), miou: [Float] = try f.read("miou"), prec: [Float] = try f.read("prec50")
        let ar: [Double] = try f.read("avg_recall"), iou: [Float] = try f.read("iou")
        let curves: [[Float]] = try curveNames.map { try f.read($0) }
        let nm = MaskKind.allCases.count, ng = PhraseGroup.allCases.count, nt = logSteps.count, np = phraseSamples.count
        var runs: [RunResult] = []
        for (c, config) in configs.enumerated() {
            for (s, seed) in header.seeds.enumerated() {
                let u = c * seeds.count + s
                var ious: [MaskKind: [Float]] = [:]
                var scores: [MaskKind: [PhraseGroup: GroupScores]] = [:]
                for (ki, k) in MaskKind.allCases.enumerated() {
                    let base = (u * nm + ki) * np
                    let v = Array(iou[base..<(base + np)])
                    // A mask kind the run did not produce is all NaN (no SAM mask without the refiner).
                    if np > 0 && v.allSatisfy({ $0.isNaN }) { continue }
                    ious[k] = v
                    for (gi, g) in PhraseGroup.allCases.enumerated() {
                        let i = (u * nm + ki) * ng + gi
                        let n = g == .all ? kinds.count : kinds.filter { $0 == g }.count
                        scores[k, default: [:]][g] = GroupScores(phrases: n, cIoU: ciou[i], mIoU: miou[i],
                                                                 precision50: prec[i], averageRecall: ar[i])
                    }
                }
                let t0 = u * nt
                let curve = LossCurve(steps: logSteps.map(Int.init), loss: Array(curves[0][t0..<(t0 + nt)]),
                                      lossMask: Array(curves[1][t0..<(t0 + nt)]), lossDice: Array(curves[2][t0..<(t0 + nt)]),
                                      samLossMask: Array(curves[3][t0..<(t0 + nt)]), samLossDice: Array(curves[4][t0..<(t0 + nt)]))
                runs.append(RunResult(config: config, seed: seed, curve: curve, ious: ious, scores: scores))
            }
        }
        return (header, runs)
    }
}
