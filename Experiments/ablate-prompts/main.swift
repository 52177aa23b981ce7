// ablate-prompts: U-Net only, then SAM with every combination of box, mask and text prompts.
// Reads top-down: options → seeds and configurations → data → train and evaluate every
// (configuration, seed) → Results/ablate-prompts.nc → a one-line summary.
// `swift run -c release ablate-prompts --profile quick`; see ExperimentOptions for every option.

import ExperimentKit
import FLMMExperiments

experimentMain {
    // Options, seeds and the configurations of the grid (Experiment.prompts.configs).
    let options = ExperimentOptions.parseOrExit()
    let grid = try options.gridOptions(.prompts)

    // Data: the train and val GroundingCaches (built on demand) and the refiner's pretrained SAM (TinySAM, or --sam).
    let inputs = try options.loadInputs(profile: grid.profile, progress: printProgress)

    // Train and evaluate this shard's units; each finished unit is saved at once (resume).
    let runner = try AblationGrid(options: grid, inputs: inputs)
    let results = try runner.run(progress: printProgress)

    // Summary (or what is left when other shards still run).
    if let results {
        print(try Summary.line(results))
    } else {
        print("ablate-prompts: shard \(grid.shard.index)/\(grid.shard.count) finished; parts in \(runner.partsDir.path)")
    }
}
