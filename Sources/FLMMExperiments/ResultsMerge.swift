// Merging the parts of a sharded grid (files of one unit each, or partial Results files) into
// the Results file of an experiment.
//
// Every input must come from the same kind of run: the same profile, steps, logged steps, val
// phrases and input attributes (caches, TinySAM, optimiser settings). The merged file orders the
// configurations as the experiment lists them and the seeds as given, exactly as an unsharded
// run assembles its parts, so a grid sharded n ways and merged has bitwise the unsharded
// file's data.

import Formats
import Foundation

public enum ResultsMerge {
    /// Merges `inputs` into `out` (atomically). Throws naming the first input that disagrees
    /// with the first one, or the units still missing.
    /// `seeds` nil: every seed found in the inputs, ascending.
    public static func merge(_ inputs: [URL], experiment: Experiment, seeds: [UInt64]? = nil, out: URL) throws {
        guard let first = inputs.first else { throw ExperimentError("results merge: no input files") }
        let (h0, _) = try ResultsFile.read(first)
        var runs: [RunResult] = []
        var wall = 0.0
        for url in inputs {
            let (h, r) = try ResultsFile.read(url)
            var problems: [String] = []
            if h.profile != h0.profile { problems.append("profile \(h.profile) vs \(h0.profile)") }
            if h.steps != h0.steps || h.logSteps != h0.logSteps { problems.append("steps \(h.steps) vs \(h0.steps)") }
            if h.phraseSamples != h0.phraseSamples || h.phraseKinds != h0.phraseKinds { problems.append("val phrases differ") }
            for k in Set(h.inputs.keys).union(h0.inputs.keys) where h.inputs[k] != h0.inputs[k] {
                problems.append("attribute \(k) differs")
            }
            guard problems.isEmpty else {
                throw ResultsFileError(file: url.path, detail: "cannot merge with \(first.lastPathComponent): \(problems.joined(separator: "; "))")
            }
            wall += h.provenance["wall_seconds"]?.double ?? 0
            for run in r where !runs.contains(where: { $0.config == run.config && $0.seed == run.seed }) { runs.append(run) }
        }
        let seeds = seeds ?? Array(Set(runs.map(\.seed))).sorted()
        let configs = experiment.configs
        var missing: [String] = []
        for c in configs { for s in seeds where !runs.contains(where: { $0.config == c && $0.seed == s }) { missing.append("\(c) seed \(s)") } }
        guard missing.isEmpty else {
            throw ExperimentError("results merge: \(missing.count) unit(s) missing, e.g. \(missing[0]); run the remaining shards first")
        }
        var header = h0
        header.experiment = experiment.rawValue
        header.title = experiment.title
        header.configs = configs
        header.seeds = seeds
        header.provenance = Provenance.attributes(wallSeconds: wall, command: CommandLine.arguments.joined(separator: " "))
        try ResultsFile.write(out, header: header, runs: runs)
    }
}
