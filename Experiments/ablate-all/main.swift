// ablate-all: every ablation of F-LMM (merge, normalize_input, upsample_input, SAM prompts) on
// one profile, then the default configuration's trained heads and the qualitative panel data
// that `make figures` draws.
// Reads top-down: options → data → each experiment's grid (units shared between experiments
// are trained once) → Results/*.nc → one summary line per experiment.
// `make ablations` runs it with --profile quick; `make ablations-full` with --profile full.

import ExperimentKit
import FLMMExperiments
import Foundation

experimentMain {
    // Options (the same as every experiment's) and the profile.
    let options = ExperimentOptions.parseOrExit()
    let profile = try Profile.named(options.profile)

    // Data: the train and val GroundingCaches (built on demand) and the refiner's pretrained SAM (TinySAM, or --sam).
    let inputs = try options.loadInputs(profile: profile, progress: printProgress)

    // Every experiment's grid; a unit another experiment already trained is read back, not redone.
    var finished: [URL] = []
    for experiment in Experiment.allCases {
        let runner = try AblationGrid(options: try options.gridOptions(experiment), inputs: inputs)
        if let url = try runner.run(progress: printProgress) {
            finished.append(url)
            print(try Summary.line(url))
        }
    }

    // F-LMM's default configuration, first seed: its trained heads and the qualitative panels.
    if finished.count == Experiment.allCases.count {
        let grid = try AblationGrid(options: try options.gridOptions(.prompts), inputs: inputs)
        let written = try Showcase.write(grid: grid, panels: 6)
        print("showcase: \(written.map(\.path).joined(separator: ", "))")
    }
}
