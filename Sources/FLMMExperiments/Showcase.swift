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
        let file = try SafeTensors.read(weights)
        let stateDict = try Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, try file.tensor($0.name)) })
        let model = try grid.makeModel(grid.configs[c], seed: grid.options.seeds[0])
        try model.loadTrained(stateDict: stateDict)
        model.eval()
        let heads = grid.options.outDir.appendingPathComponent("flmm_heads.safetensors")
        try SafeTensors.write(tensors: stateDict, to: heads)

        let val = grid.inputs.val
        var out: [QualitativePanel] = []
        for i in 0..<min(panels, val.count) {
            let s = val.evalSample(i)
            let (output, unet, sam) = try FLMMEvaluation.predict(model, s)
            let r = val.records[i]
            let (h, w) = (r.imageHeight, r.imageWidth)
            let att = output.maskAttentions                       // [M, C, gh, gw]
            let (ch, gh, gw) = (att.shape[1], att.shape[2], att.shape[3])
            let map = (0..<(gh * gw)).map { p in
                Float((0..<ch).reduce(0.0) { $0 + Double(att.data[$1 * gh * gw + p]) } / Double(ch))
            }
            let n = h * w
            let gt = r.masks[0..<n].map { $0 }
            let unetMask = unet.data[0..<n].map { UInt8($0) }
            let samMask = sam.map { t in t.data[0..<n].map { UInt8($0) } }
            func iou(_ p: [UInt8]) -> Float {
                MaskOverlap(intersection: zip(p, gt).filter { $0 != 0 && $1 != 0 }.count,
                            union: zip(p, gt).filter { $0 != 0 || $1 != 0 }.count).iou
            }
            out.append(QualitativePanel(phrase: r.phraseTexts[0], image: r.image, height: h, width: w, attention: map,
                                        gridHeight: gh, gridWidth: gw, unetMask: unetMask, samMask: samMask, gtMask: gt,
                                        iouUNet: iou(unetMask), iouSAM: samMask.map(iou)))
        }
        let qual = grid.options.outDir.appendingPathComponent("qualitative.nc")
        try QualitativeFile.write(qual, panels: out, attributes: ["title": .text("F-LMM default configuration, seed \(grid.options.seeds[0])"),
                                                                   "config": .text(grid.configs[c].description)])
        return [heads, qual]
    }
}
