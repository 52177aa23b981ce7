import ArgumentParser
import FLMMExperiments
import Formats
import Foundation

/// `flmm results export|table …`: what the Results files hold, as gnuplot data and as a table.
struct Results: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "results",
        abstract: "Export Results files to gnuplot data, or print them as a table.",
        subcommands: [Export.self, Table.self, Merge.self]
    )

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the plain-text data that Figures/*.gp draw.",
            discussion: """
                For each Results file (an experiment's NetCDF file) writes, under --out, \
                <experiment>_bars.dat (per configuration: mean and sample std over seeds of the U-Net and \
                SAM mIoU and cIoU in percent, phrase group all; "?" where a mask does not exist), \
                <experiment>_loss.dat and <experiment>_unet_loss.dat (training curves, mean over seeds) \
                and <experiment>_meta.gp (titles for the scripts). A qualitative file (schema \
                flmm-qualitative, e.g. Results/qualitative.nc) gives qualitative_panels.gp, \
                qualitative_<i>.dat and qualitative_<i>_attention.dat. Every file is written atomically; \
                the text depends only on the data variables, so reruns give the same bytes.
                """
        )

        @Argument(help: "Results files (and at most one qualitative file).", completion: .file(extensions: ["nc"]))
        var files: [String]

        @Option(help: "Output folder (created if missing).")
        var out: String = "Figures/data"

        func run() throws {
            let dir = URL(fileURLWithPath: out)
            do {
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            } catch {
                throw ValidationError("cannot create the output folder \(dir.path): \(error.localizedDescription)")
            }
            var experiments: [String: String] = [:]
            var qualitative: String?
            var written: [String] = []
            for path in files {
                let url = URL(fileURLWithPath: path)
                guard FileManager.default.fileExists(atPath: url.path) else { throw ValidationError("\(path): no such file") }
                let texts: [(String, String)]
                if QualitativeFile.isQualitative(url) {
                    if let q = qualitative { throw ValidationError("two qualitative files: \(q) and \(path)") }
                    qualitative = path
                    texts = QualitativeExport.files(try QualitativeFile.read(url))
                } else {
                    let (header, runs) = try ResultsFile.read(url)
                    if let other = experiments[header.experiment] {
                        throw ValidationError("\(other) and \(path) both hold experiment \(header.experiment)")
                    }
                    experiments[header.experiment] = path
                    texts = ResultsExport.files(header: header, runs: runs)
                }
                for (name, text) in texts {
                    try AtomicFile.write(Array(text.utf8), to: dir.appendingPathComponent(name))
                    written.append(name)
                }
            }
            print("wrote \(written.count) files to \(dir.path) (\(experiments.count) experiments\(qualitative == nil ? "" : ", qualitative panels"))")
        }
    }

    struct Table: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print each Results file as a table (percent, mean ± sample std over seeds).",
            discussion: """
                One row per configuration: U-Net and SAM mIoU, cIoU, Prec@0.5 and PNG average recall \
                over all val phrases; "-" where a mask does not exist (no SAM without the refiner).
                """
        )

        @Argument(help: "Results files.", completion: .file(extensions: ["nc"]))
        var files: [String]

        @Flag(help: "Markdown tables (for the README).")
        var markdown = false

        func run() throws {
            for (i, path) in files.enumerated() {
                let (header, runs) = try ResultsFile.read(URL(fileURLWithPath: path))
                if i > 0 { print("") }
                print(ResultsExport.table(header: header, runs: runs, markdown: markdown), terminator: "")
            }
        }
    }

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge the parts of a sharded grid into one experiment's Results file.",
            discussion: """
                Each `ablate-* --shard i/n` run writes one file per finished (configuration, seed) under \
                <out>/parts/<profile>/. Gather those files from every shard and merge them: the result is \
                bitwise the data of the unsharded run. (Rerunning the experiment without --shard on the \
                gathered parts folder assembles the same file.)
                """
        )

        @Option(help: "The experiment: ablate-merge, ablate-normalize, ablate-upsample or ablate-prompts.")
        var experiment: String

        @Option(help: "Comma-separated seeds in the grid's order (default: every seed found, ascending).")
        var seeds: String?

        @Option(help: "The merged Results file.")
        var out: String

        @Argument(help: "Part files (or partial Results files) of the grid.")
        var parts: [String]

        func run() throws {
            let e = try Experiment.named(experiment)
            let seedList = try seeds.map { s in
                try s.split(separator: ",").map { v -> UInt64 in
                    guard let x = UInt64(v.trimmingCharacters(in: .whitespaces)) else {
                        throw ValidationError("--seeds '\(s)': expected integers separated by commas")
                    }
                    return x
                }
            }
            let url = URL(fileURLWithPath: out)
            try ResultsMerge.merge(parts.map { URL(fileURLWithPath: $0) }, experiment: e, seeds: seedList, out: url)
            print("merged \(parts.count) files into \(out)")
        }
    }
}
