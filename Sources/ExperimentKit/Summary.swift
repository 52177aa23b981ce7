// The one-line summary an experiment prints (the full table: `flmm results table`).

import FLMMExperiments
import Foundation

public enum Summary {
    /// "ablate-merge (quick; seeds 0; 150 steps): mean: sam mIoU 0.612 unet 0.455 | max: … → Results/ablate-merge.nc"
    public static func line(_ url: URL) throws -> String {
        let (h, runs) = try ResultsFile.read(url)
        let parts = h.configs.map { c -> String in
            let rs = runs.filter { $0.config == c }
            func mean(_ k: MaskKind) -> String {
                let v = rs.compactMap { $0.scores[k]?[.all]?.mIoU }
                return v.isEmpty ? "-" : String(format: "%.3f", v.reduce(0, +) / Float(v.count))
            }
            return "\(label(c, experiment: h.experiment)): sam mIoU \(mean(.sam)) unet \(mean(.unet))"
        }
        return "\(h.experiment) (\(h.profile); seeds \(h.seeds.map(String.init).joined(separator: ",")); \(h.steps) steps): "
            + parts.joined(separator: " | ") + " → \(url.path)"
    }

    /// The factor an experiment varies, as a short label of the configuration.
    public static func label(_ c: AblationConfig, experiment: String) -> String {
        switch experiment {
        case Experiment.merge.rawValue: return c.merge.rawValue
        case Experiment.normalize.rawValue: return c.normalizeInput ? "normalize on" : "normalize off"
        case Experiment.upsample.rawValue: return "upsample \(c.upsampleInput.map(String.init) ?? "none")"
        default: return c.refiner ? "sam " + c.prompts : "U-Net only"
        }
    }
}
