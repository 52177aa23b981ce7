// The factors F-LMM's ablations vary (paper Tables 5–7, flmm-reference-notes §2), one value each
// per configuration, and the experiments that vary them.
//
//   merge            mean | max            how a phrase's token maps are merged (default mean)
//   normalize_input  on | off              each map divided by its spatial sum (default on)
//   upsample_input   none | 32 | 64 | 128  the U-Net's input side (default 64)
//   refiner          on | off              SAM refines the U-Net mask (off: "U-Net only")
//   use_box, use_mask, use_text            SAM's prompts (default all on)
//
// Every configuration has a stable name (e.g. "merge=mean,normalize=on,upsample=64,sam=box+mask+text"),
// which keys the resume files.

import FLMM
import Tensors

/// One point of an ablation grid.
public struct AblationConfig: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var merge: PhraseMerge = .mean
    public var normalizeInput = true
    /// The U-Net's `upsample_input` target side, nil for none.
    public var upsampleInput: Int? = 64
    public var refiner = true
    public var useBox = true
    public var useMask = true
    public var useText = true

    /// F-LMM's configuration: mean, normalize on, upsample 64, SAM with box, mask and text.
    public init() {}

    /// The refiner's prompts in words: "none" (no refiner), "no-prompt", or e.g. "box+mask+text".
    public var prompts: String {
        guard refiner else { return "none" }
        let on = [(useBox, "box"), (useMask, "mask"), (useText, "text")].filter(\.0).map(\.1)
        return on.isEmpty ? "no-prompt" : on.joined(separator: "+")
    }

    /// The stable name of the configuration.
    public var description: String {
        "merge=\(merge.rawValue),normalize=\(normalizeInput ? "on" : "off"),upsample=\(upsampleInput.map(String.init) ?? "none"),sam=\(prompts)"
    }
}

/// A bad experiment option: which option, the value given, and what is allowed.
public struct ExperimentError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The experiments: each varies some factors and keeps the others at F-LMM's defaults.
public enum Experiment: String, Sendable, CaseIterable {
    case merge = "ablate-merge"
    case normalize = "ablate-normalize"
    case upsample = "ablate-upsample"
    case prompts = "ablate-prompts"

    /// What the experiment varies, in words (for the summary line and the file's title).
    public var title: String {
        switch self {
        case .merge: return "merge of the phrase tokens' attention maps: mean vs max"
        case .normalize: return "normalize_input on vs off"
        case .upsample: return "upsample_input none / 32 / 64 / 128"
        case .prompts: return "SAM refiner prompts: U-Net only, then every combination of box, mask and text"
        }
    }

    /// The configurations of the experiment, in result order.
    public var configs: [AblationConfig] {
        let base = AblationConfig()
        switch self {
        case .merge:
            return PhraseMerge.allCases.map { m in var c = base; c.merge = m; return c }
        case .normalize:
            return [true, false].map { n in var c = base; c.normalizeInput = n; return c }
        case .upsample:
            return [nil, 32, 64, 128].map { u in var c = base; c.upsampleInput = u; return c }
        case .prompts:
            var out = [AblationConfig]()
            var none = base
            none.refiner = false
            out.append(none)
            // All 8 combinations, in the order (box, mask, text) = 000, 001, …, 111 read as mask,
            // box, text bits so the paper's rows (mask, mask+box, mask+box+text) come in order.
            for bits in 0..<8 {
                var c = base
                c.useMask = bits & 4 != 0
                c.useBox = bits & 2 != 0
                c.useText = bits & 1 != 0
                out.append(c)
            }
            return out
        }
    }

    /// The experiment named `name` ("ablate-merge" or "merge", …).
    public static func named(_ name: String) throws -> Experiment {
        if let e = Experiment(rawValue: name) ?? Experiment(rawValue: "ablate-" + name) { return e }
        throw ExperimentError("unknown experiment '\(name)'; expected one of \(allCases.map(\.rawValue).joined(separator: ", "))")
    }
}
