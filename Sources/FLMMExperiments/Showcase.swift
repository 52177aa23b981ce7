// What `make figures` shows besides the numbers: F-LMM's default configuration (merge mean,
// normalize_input, upsample_input 64, SAM with box + mask + text), first seed, after the grid:
//   <out>/flmm_heads.safetensors   its trained weights (F-LMM's keys; `flmm ground --heads`)
//   <out>/qualitative.nc           panels for the first phrase of the first val samples: the
//                                  image, the phrase's merged attention map (mean over layers and
//                                  heads), the U-Net mask, the SAM mask, the ground truth

import FLMM
import Formats
import Foundation
import Tensors

public enum Showcase {
    /// Writes both files from the default configuration's finished unit of `grid`.
    @discardableResult
    public static func write(grid: AblationGrid, panels: Int) throws -> [URL] {
        guard let c = grid.configs.firstIndex(of: AblationConfig()) else {
            throw ExperimentError("showcase: \(grid.options.experiment.rawValue) has no default configuration")
        }
        let weights = grid.weightsURL(config: c, seed: 0)
        let stateDict = try SafeTensors.read(weights).floatTensors
        let model = try grid.makeModel(grid.configs[c], seed: grid.options.seeds[0])
        try model.loadTrained(stateDict: stateDict)
        model.eval()
        let heads = grid.options.outDir.appendingPathComponent("flmm_heads.safetensors")
        try SafeTensors.write(tensors: stateDict, to: heads)

        let val = grid.inputs.val
        var out: [QualitativePanel] = []
        for i in 0..<min(panels, val.count) {
            let s = val.evalSample(i)
            let output = try Autograd.noGrad { try model.step(s.input, layout: s.layout) }
            let r = val.records[i]
            out.append(QualitativePanel.fromModelOutput(
                phrase: r.phraseTexts[0], phraseIndex: 0, image: r.image, height: r.imageHeight, width: r.imageWidth,
                maskAttentions: output.maskAttentions, unetLogits: output.predMasks, samLogits: output.refiner?.masks,
                gtMask: Array(r.masks[0..<(r.imageHeight * r.imageWidth)])))
        }
        let qual = grid.options.outDir.appendingPathComponent("qualitative.nc")
        try QualitativeFile.write(qual, panels: out, attributes: ["title": .text("F-LMM default configuration, seed \(grid.options.seeds[0])"),
                                                                   "config": .text(grid.configs[c].description)])
        return [heads, qual]
    }
}
