// ablate-upsample: upsample_input none / 32 / 64 / 128 (the U-Net's input side).
// Reads top-down: options → seeds and configurations → data → train and evaluate every
// (configuration, seed) → Results/ablate-upsample.nc → a one-line summary.
// `swift run -c release ablate-upsample --profile quick`; see ExperimentOptions for every option.

import ExperimentKit
import FLMMExperiments

experimentMain {
    // Options, seeds and the configurations of the grid (Experiment.upsample.configs).
    let options = ExperimentOptions.parseOrExit()
    let grid = try options.gridOptions(.upsample)

    // Data: the train and val GroundingCaches (built on demand) and the refiner's pretrained SAM (TinySAM, or --sam).
    let inputs = try options.loadInputs(profile: grid.profile, progress: printProgress)

    // Train and evaluate this shard's units; each finished unit is saved at once (resume).
    let runner = try AblationGrid(options: grid, inputs: inputs)
    let results = try runner.run(progress: printProgress)

    // Summary (or what is left when other shards still run).
    if let results {
        print(try Summary.line(results))
    } else {
        print("ablate-upsample: shard \(grid.shard.index)/\(grid.shard.count) finished; parts in \(runner.partsDir.path)")
    }
}
