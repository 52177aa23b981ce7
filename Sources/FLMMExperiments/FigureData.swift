// Plain-text data for gnuplot (Figures/*.gp), made from Results files and the qualitative file,
// and the results table printed by `flmm results table`.
//
// Numbers are written with a fixed number of decimals by integer arithmetic (no locale, no
// printf), "?" (gnuplot's missing value) where a value does not exist (no SAM mask without the
// refiner). Statistics over seeds: mean = Σ / n in Double in seed order; std = the SAMPLE
// standard deviation √(Σ (x − mean)² / (n − 1)), 0 for a single seed. A value that is NaN for any
// seed is missing.
//
// Per experiment E (the Results file's `experiment` attribute):
//   E_bars.dat   one row per configuration, in the file's order:
//                  1 index  2 "label"  3–4 unet mIoU mean std  5–6 unet cIoU mean std
//                  7–8 sam mIoU mean std  9–10 sam cIoU mean std  11 seeds
//                phrase_group "all", in percent (× 100), 4 decimals
//   E_loss.dat   step, then the total training loss (mean over seeds) per configuration;
//                the first line holds the column titles ("step" and the labels)
//   E_unet_loss.dat  the same for the U-Net's part of the loss (loss_mask + loss_dice), which
//                every configuration has, so the curves compare
//   E_meta.gp    gnuplot variables: experiment, title, xlabel, profile, nseeds, nconfigs
// Qualitative file (`QualitativeFile`):
//   qualitative_panels.gp        npanels and per panel i (1-based): phrase_i, iou_unet_i, iou_sam_i,
//                              has_sam_i, height_i, width_i, gh_i, gw_i
//   qualitative_i.dat          one row per pixel: x y, then R G B of the image, of the U-Net overlay,
//                              of the SAM overlay (mid-grey without SAM) and of the ground-truth
//                              overlay; y = height − 1 − row, so the image is upright on gnuplot's axes
//   qualitative_i_attention.dat  the attention map as a gnuplot matrix (gw columns, gh rows), last
//                              grid row first (upright), normalised to [0, 1] by its min and max

import Foundation

/// Fixed-decimal text for data files and tables.
public enum FigureText {
    /// `x` with exactly `digits` decimals, rounded half to even on x·10^digits; "?" when not finite.
    public static func fixed(_ x: Double, digits: Int, missing: String = "?") -> String {
        guard x.isFinite else { return missing }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let r = (Swift.abs(x) * scale).rounded(.toNearestOrEven)
        guard r < 9e18 else { return missing }
        let n = UInt64(r)
        let p = UInt64(scale)
        let whole = n / p, frac = n % p
        var s = (x < 0 && n != 0 ? "-" : "") + String(whole)
        if digits > 0 {
            let f = String(frac)
            s += "." + String(repeating: "0", count: digits - f.count) + f
        }
        return s
    }

    /// A gnuplot / data-file string: double-quoted, with `"` and `\` escaped and a line break
    /// written as `\n` (which gnuplot reads back as a line break in a double-quoted string).
    public static func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }

    /// `s` broken into lines of at most `width` characters at spaces (greedily; a longer word
    /// keeps a line of its own), joined by line breaks: a panel title that fits its column.
    public static func wrapped(_ s: String, width: Int) -> String {
        var lines: [String] = []
        var line = ""
        for word in s.split(separator: " ", omittingEmptySubsequences: true) {
            if line.isEmpty {
                line = String(word)
            } else if line.count + 1 + word.count <= width {
                line += " " + word
            } else {
                lines.append(line)
                line = String(word)
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines.joined(separator: "\n")
    }
}

/// Mean and sample standard deviation over seeds.
public struct SeedStatistic: Sendable, Equatable {
    public let mean: Double
    /// Sample standard deviation (n − 1); 0 for one seed.
    public let std: Double
    public let count: Int

    /// nil when `values` is empty or any value is NaN (a metric that does not exist).
    public init?(_ values: [Double]) {
        guard !values.isEmpty, values.allSatisfy({ !$0.isNaN }) else { return nil }
        let n = Double(values.count)
        var s = 0.0
        for v in values { s += v }
        let m = s / n
        var q = 0.0
        for v in values { q += (v - m) * (v - m) }
        mean = m
        std = values.count > 1 ? (q / (n - 1)).squareRoot() : 0
        count = values.count
    }
}

/// What `flmm results export` writes for Results files.
public enum ResultsExport {
    /// Short labels of the configurations: the values of the factors that vary between them
    /// (the refiner's prompts as one factor: "U-Net only", "no-prompt", "box+mask+text", …).
    public static func labels(_ configs: [AblationConfig]) -> [String] {
        let factors: [(name: String, value: (AblationConfig) -> String)] = [
            ("merge", { $0.merge.rawValue }),
            ("normalize", { $0.normalizeInput ? "on" : "off" }),
            ("upsample", { $0.upsampleInput.map(String.init) ?? "none" }),
            ("sam", { $0.refiner ? $0.prompts : "U-Net only" }),
        ]
        let varying = factors.filter { f in Set(configs.map(f.value)).count > 1 }
        return configs.map { c in
            switch varying.count {
            case 0: return "default"
            case 1: return varying[0].value(c)
            default: return varying.map { "\($0.name)=\($0.value(c))" }.joined(separator: ",")
            }
        }
    }

    /// The factor names that vary between `configs`, in words (the bar chart's x label).
    public static func varyingFactors(_ configs: [AblationConfig]) -> String {
        var names: [String] = []
        if Set(configs.map(\.merge)).count > 1 { names.append("merge") }
        if Set(configs.map(\.normalizeInput)).count > 1 { names.append("normalize_input") }
        if Set(configs.map(\.upsampleInput)).count > 1 { names.append("upsample_input") }
        if Set(configs.map { $0.refiner ? $0.prompts : "none" }).count > 1 { names.append("SAM prompts") }
        return names.isEmpty ? "configuration" : names.joined(separator: ", ")
    }

    /// The statistic over seeds of `metric` for `kind`, group `group`, of configuration `config`.
    public static func statistic(_ runs: [RunResult], config: AblationConfig, kind: MaskKind, group: PhraseGroup = .all,
                                 seeds: [UInt64], metric: (GroupScores) -> Double) -> SeedStatistic? {
        let values: [Double] = seeds.map { seed in
            guard let r = runs.first(where: { $0.config == config && $0.seed == seed }),
                  let s = r.scores[kind]?[group] else { return .nan }
            return metric(s)
        }
        return SeedStatistic(values)
    }

    /// The bar table (E_bars.dat).
    public static func barTable(header h: ResultsHeader, runs: [RunResult]) -> String {
        let labels = labels(h.configs)
        var out = "# \(h.experiment): \(h.title)\n"
        out += "# profile \(h.profile), \(h.steps) steps, seeds \(h.seeds.map(String.init).joined(separator: " ")); phrase_group all\n"
        out += "# values in percent; mean and SAMPLE standard deviation (n - 1) over seeds, std 0 for one seed; ? = missing\n"
        out += "# index label unet_miou unet_miou_std unet_ciou unet_ciou_std sam_miou sam_miou_std sam_ciou sam_ciou_std seeds\n"
        for (i, c) in h.configs.enumerated() {
            var row = ["\(i)", FigureText.quoted(labels[i])]
            for kind in [MaskKind.unet, .sam] {
                for metric in [{ (s: GroupScores) in Double(s.mIoU) }, { (s: GroupScores) in Double(s.cIoU) }] {
                    let st = statistic(runs, config: c, kind: kind, seeds: h.seeds, metric: metric)
                    row.append(FigureText.fixed((st?.mean ?? .nan) * 100, digits: 4))
                    row.append(FigureText.fixed((st?.std ?? .nan) * 100, digits: 4))
                }
            }
            row.append("\(h.seeds.count)")
            out += row.joined(separator: " ") + "\n"
        }
        return out
    }

    /// A loss-curve table: step, then per configuration the mean over seeds of `loss(curve)[t]`.
    public static func curveTable(header h: ResultsHeader, runs: [RunResult], what: String,
                                  loss: (LossCurve, Int) -> Float) -> String {
        let labels = labels(h.configs)
        var out = "# \(h.experiment): \(what), mean over seeds \(h.seeds.map(String.init).joined(separator: " ")); ? = missing\n"
        out += (["\"step\""] + labels.map(FigureText.quoted)).joined(separator: " ") + "\n"
        for (t, step) in h.logSteps.enumerated() {
            var row = ["\(step)"]
            for c in h.configs {
                let values: [Double] = h.seeds.map { seed in
                    guard let r = runs.first(where: { $0.config == c && $0.seed == seed }), t < r.curve.steps.count else { return .nan }
                    return Double(loss(r.curve, t))
                }
                row.append(FigureText.fixed(SeedStatistic(values)?.mean ?? .nan, digits: 6))
            }
            out += row.joined(separator: " ") + "\n"
        }
        return out
    }

    /// Gnuplot variables describing the experiment (E_meta.gp).
    public static func meta(header h: ResultsHeader) -> String {
        var out = "# \(h.experiment): variables for Figures/bars.gp and Figures/curves.gp\n"
        out += "experiment = \(FigureText.quoted(h.experiment))\n"
        out += "title = \(FigureText.quoted(h.title))\n"
        out += "xlabel = \(FigureText.quoted(varyingFactors(h.configs)))\n"
        out += "profile = \(FigureText.quoted(h.profile))\n"
        out += "nseeds = \(h.seeds.count)\n"
        out += "nconfigs = \(h.configs.count)\n"
        out += "steps = \(h.steps)\n"
        return out
    }

    /// Every data file of one Results file: (file name, text).
    public static func files(header h: ResultsHeader, runs: [RunResult]) -> [(String, String)] {
        [("\(h.experiment)_bars.dat", barTable(header: h, runs: runs)),
         ("\(h.experiment)_loss.dat", curveTable(header: h, runs: runs, what: "total training loss") { $0.loss[$1] }),
         ("\(h.experiment)_unet_loss.dat", curveTable(header: h, runs: runs, what: "U-Net loss (loss_mask + loss_dice)") {
             $0.lossMask[$1] + $0.lossDice[$1]
         }),
         ("\(h.experiment)_meta.gp", meta(header: h))]
    }

    /// The results table: one row per configuration, U-Net and SAM mIoU, cIoU, Prec@0.5 and
    /// average recall (percent, phrase_group all), mean ± sample std over seeds ("-" = missing).
    /// `markdown`: a Markdown table instead of aligned plain text.
    public static func table(header h: ResultsHeader, runs: [RunResult], markdown: Bool = false) -> String {
        let labels = labels(h.configs)
        let metrics: [(String, (GroupScores) -> Double)] = [
            ("mIoU", { Double($0.mIoU) }), ("cIoU", { Double($0.cIoU) }),
            ("Prec@0.5", { Double($0.precision50) }), ("AR", { $0.averageRecall }),
        ]
        var rows: [[String]] = [["config"] + MaskKind.allCases.flatMap { k in
            metrics.map { "\(k == .unet ? "U-Net" : "SAM") \($0.0)" }
        }]
        for (i, c) in h.configs.enumerated() {
            var row = [labels[i]]
            for k in MaskKind.allCases {
                for (_, m) in metrics {
                    guard let s = statistic(runs, config: c, kind: k, seeds: h.seeds, metric: m) else { row.append("-"); continue }
                    var cell = FigureText.fixed(s.mean * 100, digits: 1)
                    if s.count > 1 { cell += " ± " + FigureText.fixed(s.std * 100, digits: 1) }
                    row.append(cell)
                }
            }
            rows.append(row)
        }
        let seedsText = h.seeds.count == 1 ? "1 seed" : "\(h.seeds.count) seeds, mean ± sample std"
        var out = "\(h.experiment): \(h.title) (profile \(h.profile), \(h.steps) steps, \(seedsText); percent)\n"
        if markdown {
            for (r, row) in rows.enumerated() {
                out += "| " + row.joined(separator: " | ") + " |\n"
                if r == 0 { out += "|" + row.map { _ in "---|" }.joined() + "\n" }
            }
        } else {
            let widths = rows[0].indices.map { j in rows.map { $0[j].count }.max() ?? 0 }
            for row in rows {
                let cells = row.enumerated().map { j, s in
                    let pad = String(repeating: " ", count: widths[j] - s.count)
                    return j == 0 ? s + pad : pad + s
                }
                out += cells.joined(separator: "  ") + "\n"
            }
        }
        return out
    }
}

/// What `flmm results export` writes for the qualitative file.
public enum QualitativeExport {
    /// Overlay tints: U-Net magenta, SAM white, ground truth green-yellow.
    public static let unetTint: (UInt8, UInt8, UInt8) = (255, 0, 255)
    public static let samTint: (UInt8, UInt8, UInt8) = (255, 255, 255)
    public static let gtTint: (UInt8, UInt8, UInt8) = (160, 255, 0)

    /// Characters per line of a phrase title: a column of the 1100-px-wide figure holds about 34
    /// characters of 9-pt DejaVu Sans; longer phrases are wrapped at spaces.
    public static let titleWidth = 30

    /// (file name, text) of every data file for `panels`.
    public static func files(_ panels: [QualitativePanel]) -> [(String, String)] {
        var meta = "# qualitative panels: variables for Figures/qualitative.gp (panels 1-based)\n"
        meta += "npanels = \(panels.count)\n"
        var out: [(String, String)] = []
        for (p, panel) in panels.enumerated() {
            let i = p + 1
            meta += "phrase_\(i) = \(FigureText.quoted(FigureText.wrapped(panel.phrase, width: titleWidth)))\n"
            meta += "iou_unet_\(i) = \(FigureText.fixed(Double(panel.iouUNet), digits: 4, missing: "NaN"))\n"
            meta += "iou_sam_\(i) = \(FigureText.fixed(Double(panel.iouSAM ?? .nan), digits: 4, missing: "NaN"))\n"
            meta += "has_sam_\(i) = \(panel.samMask == nil ? 0 : 1)\n"
            meta += "height_\(i) = \(panel.height)\nwidth_\(i) = \(panel.width)\n"
            meta += "gh_\(i) = \(panel.gridHeight)\ngw_\(i) = \(panel.gridWidth)\n"
            out.append(("qualitative_\(i).dat", pixelTable(panel)))
            out.append(("qualitative_\(i)_attention.dat", attentionMatrix(panel)))
        }
        return [("qualitative_panels.gp", meta)] + out
    }

    /// x y, then R G B of image, U-Net overlay, SAM overlay, ground-truth overlay.
    public static func pixelTable(_ p: QualitativePanel) -> String {
        let image = RGBPicture(height: p.height, width: p.width, pixels: p.image)
        let unet = image.overlay(mask: p.unetMask, tint: unetTint)
        let sam = p.samMask.map { image.overlay(mask: $0, tint: samTint) }
            ?? RGBPicture(height: p.height, width: p.width, fill: (128, 128, 128))
        let gt = image.overlay(mask: p.gtMask, tint: gtTint)
        var out = "# \(p.phrase): x y image_rgb unet_rgb sam_rgb gt_rgb (y = height - 1 - row)\n"
        out.reserveCapacity(p.height * p.width * 48)
        for row in stride(from: p.height - 1, through: 0, by: -1) {
            let y = p.height - 1 - row
            for x in 0..<p.width {
                let o = (row * p.width + x) * 3
                var line = "\(x) \(y)"
                for pic in [image, unet, sam, gt] {
                    line += " \(pic.pixels[o]) \(pic.pixels[o + 1]) \(pic.pixels[o + 2])"
                }
                out += line + "\n"
            }
            out += "\n"
        }
        return out
    }

    /// The normalised attention map as a gnuplot matrix, last grid row first.
    public static func attentionMatrix(_ p: QualitativePanel) -> String {
        let v = ColorMap.normalized(p.attention)
        var out = ""
        for r in stride(from: p.gridHeight - 1, through: 0, by: -1) {
            out += (0..<p.gridWidth).map { FigureText.fixed(Double(v[r * p.gridWidth + $0]), digits: 5, missing: "NaN") }
                .joined(separator: " ") + "\n"
        }
        return out
    }
}
