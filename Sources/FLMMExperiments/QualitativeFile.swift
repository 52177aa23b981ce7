// The qualitative panels of a trained model (NetCDF-4, readable by ncdump and xarray): for a few
// val phrases, the image, the phrase's merged attention map, the U-Net mask, the SAM mask and
// the ground truth. `flmm results export` turns it into gnuplot data (Figures/qualitative.gp).
//
//   global attributes  schema = "flmm-qualitative", schema_version = 1, plus any caller's (title, config)
//   dimensions  panel; y, x (the largest image height and width); channel (3: R, G, B);
//               gy, gx (the largest attention grid); phrase strings are NetCDF-4 strings
//   per panel   phrase(panel) string; height, width, grid_height, grid_width (panel) int;
//               has_sam(panel) byte 0/1; iou_unet, iou_sam (panel) float (iou_sam NaN without SAM)
//   images      image(panel, y, x, channel) ubyte: RGB, panel i in [0, height_i) × [0, width_i),
//               0 elsewhere (padding to the largest size)
//   masks       unet_mask, sam_mask, gt_mask (panel, y, x) ubyte 0/1, padded with 0
//               (sam_mask all 0 where has_sam = 0)
//   attention   attention(panel, gy, gx) float: the phrase's merged map averaged over layers and
//               heads, on the LMM's grid; NaN outside [0, grid_height_i) × [0, grid_width_i)

import FLMM
import Formats
import Foundation
import Tensors

/// One qualitative example: a phrase on its image, what the model saw and what it predicted.
public struct QualitativePanel: Sendable, Equatable {
    public var phrase: String
    /// The original image, RGB, row-major [height · width · 3].
    public var image: [UInt8]
    public var height: Int, width: Int
    /// The phrase's merged attention map, mean over layers and heads, on the LMM's grid
    /// [gridHeight · gridWidth], row-major.
    public var attention: [Float]
    public var gridHeight: Int, gridWidth: Int
    /// Binary masks (0/1) at the original size [height · width].
    public var unetMask: [UInt8]
    /// nil when the model has no refiner.
    public var samMask: [UInt8]?
    public var gtMask: [UInt8]
    /// IoU of the U-Net and of the SAM mask against the ground truth (iouSAM nil without SAM).
    public var iouUNet: Float
    public var iouSAM: Float?

    public init(phrase: String, image: [UInt8], height: Int, width: Int, attention: [Float], gridHeight: Int,
                gridWidth: Int, unetMask: [UInt8], samMask: [UInt8]?, gtMask: [UInt8], iouUNet: Float, iouSAM: Float?) {
        precondition(height > 0 && width > 0 && image.count == height * width * 3,
                     "QualitativePanel: image of \(image.count) bytes for \(height)×\(width)×3")
        precondition(gridHeight > 0 && gridWidth > 0 && attention.count == gridHeight * gridWidth,
                     "QualitativePanel: attention of \(attention.count) values for grid \(gridHeight)×\(gridWidth)")
        let n = height * width
        precondition(unetMask.count == n && gtMask.count == n && (samMask?.count ?? n) == n,
                     "QualitativePanel: masks unet \(unetMask.count), sam \(samMask?.count ?? -1), gt \(gtMask.count) for \(height)×\(width)")
        precondition((samMask == nil) == (iouSAM == nil),
                     "QualitativePanel: a SAM mask needs its IoU and the other way round")
        self.phrase = phrase
        self.image = image
        self.height = height
        self.width = width
        self.attention = attention
        self.gridHeight = gridHeight
        self.gridWidth = gridWidth
        self.unetMask = unetMask
        self.samMask = samMask
        self.gtMask = gtMask
        self.iouUNet = iouUNet
        self.iouSAM = iouSAM
    }
}

/// A qualitative file that does not hold what was expected.
public struct QualitativeFileError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let detail: String
    public var description: String { "\(file): \(detail)" }
}

public enum QualitativeFile {
    /// The value of the global attribute `schema`.
    public static let schemaName = "flmm-qualitative"
    public static let schemaVersion = 1

    /// Writes `panels` to `url` (atomically); `attributes` are added as global attributes.
    public static func write(_ url: URL, panels: [QualitativePanel], attributes: [String: NetCDFAttribute] = [:]) throws {
        let n = panels.count
        let my = panels.map(\.height).max() ?? 0, mx = panels.map(\.width).max() ?? 0
        let gy = panels.map(\.gridHeight).max() ?? 0, gx = panels.map(\.gridWidth).max() ?? 0
        let f = try NetCDFFile.create(url)
        do {
            for (d, len) in [("panel", n), ("y", my), ("x", mx), ("channel", 3), ("gy", gy), ("gx", gx)] {
                try f.defineDimension(d, length: len)
            }
            try f.setAttribute("schema", .text(schemaName))
            try f.setAttribute("schema_version", .int(schemaVersion))
            for (k, v) in attributes.sorted(by: { $0.key < $1.key }) where k != "schema" && k != "schema_version" {
                try f.setAttribute(k, v)
            }
            try f.defineVariable("phrase", type: .string, dimensions: ["panel"])
            for (name, long) in [("height", "image height of the panel (rows of image and masks in use)"),
                                 ("width", "image width of the panel"),
                                 ("grid_height", "attention grid rows in use"), ("grid_width", "attention grid columns in use")] {
                try f.defineVariable(name, type: .int, dimensions: ["panel"])
                try f.setAttribute("long_name", .text(long), variable: name)
            }
            try f.defineVariable("has_sam", type: .byte, dimensions: ["panel"])
            try f.setAttribute("flag_values", .int8s([0, 1]), variable: "has_sam")
            try f.setAttribute("flag_meanings", "no_refiner refiner", variable: "has_sam")
            for (name, long) in [("iou_unet", "IoU of the U-Net mask"), ("iou_sam", "IoU of the SAM mask (NaN without the refiner)")] {
                try f.defineVariable(name, type: .float, dimensions: ["panel"])
                try f.setAttribute("long_name", .text(long), variable: name)
                try f.setAttribute("_FillValue", .floats([.nan]), variable: name)
            }
            try f.defineVariable("image", type: .ubyte, dimensions: ["panel", "y", "x", "channel"], compression: 4)
            try f.setAttribute("long_name", "RGB image, padded with 0 beyond height × width", variable: "image")
            for (name, long) in [("unet_mask", "U-Net mask (0/1)"), ("sam_mask", "SAM mask (0/1; all 0 without the refiner)"),
                                 ("gt_mask", "ground-truth mask (0/1)")] {
                try f.defineVariable(name, type: .ubyte, dimensions: ["panel", "y", "x"], compression: 4)
                try f.setAttribute("long_name", .text(long), variable: name)
            }
            try f.defineVariable("attention", type: .float, dimensions: ["panel", "gy", "gx"], compression: 4)
            try f.setAttribute("long_name", "merged phrase attention, mean over layers and heads, on the LMM grid", variable: "attention")
            try f.setAttribute("_FillValue", .floats([.nan]), variable: "attention")

            try f.writeStrings("phrase", panels.map(\.phrase))
            try f.write("height", panels.map { Int32($0.height) })
            try f.write("width", panels.map { Int32($0.width) })
            try f.write("grid_height", panels.map { Int32($0.gridHeight) })
            try f.write("grid_width", panels.map { Int32($0.gridWidth) })
            try f.write("has_sam", panels.map { Int8($0.samMask == nil ? 0 : 1) })
            try f.write("iou_unet", panels.map(\.iouUNet))
            try f.write("iou_sam", panels.map { $0.iouSAM ?? .nan })
            if n > 0 {
                var image = [UInt8](repeating: 0, count: n * my * mx * 3)
                var masks = [[UInt8]](repeating: [UInt8](repeating: 0, count: n * my * mx), count: 3)
                var att = [Float](repeating: .nan, count: n * gy * gx)
                for (p, panel) in panels.enumerated() {
                    for i in 0..<panel.height {
                        let src = i * panel.width, dst = (p * my + i) * mx
                        for c in 0..<(panel.width * 3) { image[dst * 3 + c] = panel.image[src * 3 + c] }
                        for j in 0..<panel.width {
                            masks[0][dst + j] = panel.unetMask[src + j]
                            masks[1][dst + j] = panel.samMask?[src + j] ?? 0
                            masks[2][dst + j] = panel.gtMask[src + j]
                        }
                    }
                    for i in 0..<panel.gridHeight {
                        for j in 0..<panel.gridWidth {
                            att[(p * gy + i) * gx + j] = panel.attention[i * panel.gridWidth + j]
                        }
                    }
                }
                try f.write("image", image)
                try f.write("unet_mask", masks[0])
                try f.write("sam_mask", masks[1])
                try f.write("gt_mask", masks[2])
                try f.write("attention", att)
            }
            try f.close()
        } catch {
            f.discard()
            throw error
        }
    }

    /// Whether `url` is a qualitative file (its `schema` attribute).
    public static func isQualitative(_ url: URL) -> Bool {
        guard let f = try? NetCDFFile.open(url) else { return false }
        defer { try? f.close() }
        return (try? f.attribute("schema"))??.text == schemaName
    }

    /// Reads the panels of `url` back.
    public static func read(_ url: URL) throws -> [QualitativePanel] {
        let f = try NetCDFFile.open(url)
        defer { try? f.close() }
        guard try f.attribute("schema")?.text == schemaName else {
            throw QualitativeFileError(file: url.path, detail: "not a qualitative file (global attribute schema is not '\(schemaName)')")
        }
        guard let v = try f.attribute("schema_version")?.int, v == schemaVersion else {
            throw QualitativeFileError(file: url.path, detail: "schema_version is not \(schemaVersion)")
        }
        let n = try f.dimension("panel").length
        let my = try f.dimension("y").length, mx = try f.dimension("x").length
        let gy = try f.dimension("gy").length, gx = try f.dimension("gx").length
        let phrases = try f.readStrings("phrase")
        let hs: [Int32] = try f.read("height"), ws: [Int32] = try f.read("width")
        let ghs: [Int32] = try f.read("grid_height"), gws: [Int32] = try f.read("grid_width")
        let hasSam: [Int8] = try f.read("has_sam")
        let iouU: [Float] = try f.read("iou_unet"), iouS: [Float] = try f.read("iou_sam")
        guard n > 0 else { return [] }
        let image: [UInt8] = try f.read("image"), unet: [UInt8] = try f.read("unet_mask")
        let sam: [UInt8] = try f.read("sam_mask"), gt: [UInt8] = try f.read("gt_mask")
        let att: [Float] = try f.read("attention")
        var panels: [QualitativePanel] = []
        for p in 0..<n {
            let h = Int(hs[p]), w = Int(ws[p]), gh = Int(ghs[p]), gw = Int(gws[p])
            guard h > 0, h <= my, w > 0, w <= mx, gh > 0, gh <= gy, gw > 0, gw <= gx else {
                throw QualitativeFileError(file: url.path,
                    detail: "panel \(p): size \(h)×\(w), grid \(gh)×\(gw) outside the padded \(my)×\(mx), \(gy)×\(gx)")
            }
            var img = [UInt8](), um = [UInt8](), sm = [UInt8](), gm = [UInt8]()
            img.reserveCapacity(h * w * 3)
            for i in 0..<h {
                let row = (p * my + i) * mx
                img += image[(row * 3)..<((row + w) * 3)]
                um += unet[row..<(row + w)]
                sm += sam[row..<(row + w)]
                gm += gt[row..<(row + w)]
            }
            var a = [Float]()
            for i in 0..<gh { let row = (p * gy + i) * gx; a += att[row..<(row + gw)] }
            let withSam = hasSam[p] != 0
            panels.append(QualitativePanel(phrase: phrases[p], image: img, height: h, width: w, attention: a, gridHeight: gh,
                                           gridWidth: gw, unetMask: um, samMask: withSam ? sm : nil, gtMask: gm,
                                           iouUNet: iouU[p], iouSAM: withSam ? iouS[p] : nil))
        }
        return panels
    }
}

extension QualitativePanel {
    /// The panel of phrase `k` from what the model computed for its sample (`FLMMStepOutput`):
    /// `maskAttentions` [M, L·NH, h, w] (the attention map shown: mean over every layer and head),
    /// `unetLogits` [M, mh, mw] (`predMasks`, bilinearly resized to the original size as the
    /// evaluation does, foreground > 0), `samLogits` [M, H, W] (`refiner?.masks`, foreground > 0,
    /// nil without the refiner), and the ground truth `gtMask` (0/1, H·W) of the image
    /// (`image` RGB, H·W·3). IoUs as `MaskOverlap.iou`.
    public static func fromModelOutput(phrase: String, phraseIndex k: Int, image: [UInt8], height h: Int, width w: Int,
                                       maskAttentions: Tensor, unetLogits: Tensor, samLogits: Tensor?,
                                       gtMask: [UInt8]) -> QualitativePanel {
        precondition(maskAttentions.rank == 4 && unetLogits.rank == 3 && k < unetLogits.shape[0] && k < maskAttentions.shape[0],
                     "QualitativePanel.fromModelOutput: maps \(maskAttentions.shape), U-Net logits \(unetLogits.shape), phrase \(k)")
        let att = PanelLayout.overallMean(maskAttentions.data, shape: maskAttentions.shape, phrase: k)
        let (mh, mw) = (unetLogits.shape[1], unetLogits.shape[2])
        let one = Tensor(shape: [1, 1, mh, mw], data: Array(unetLogits.data[(k * mh * mw)..<((k + 1) * mh * mw)]))
        let resized = Autograd.noGrad { interpolate(one, size: (h, w), mode: .bilinear, alignCorners: false) }
        let unet = resized.data.map { UInt8($0 > 0 ? 1 : 0) }
        var sam: [UInt8]?
        if let s = samLogits {
            precondition(s.shape == [unetLogits.shape[0], h, w],
                         "QualitativePanel.fromModelOutput: SAM logits \(s.shape), expected [\(unetLogits.shape[0]), \(h), \(w)]")
            sam = s.data[(k * h * w)..<((k + 1) * h * w)].map { UInt8($0 > 0 ? 1 : 0) }
        }
        func iou(_ p: [UInt8]) -> Float {
            var i = 0, u = 0
            for (a, b) in zip(p, gtMask) {
                if a != 0 && b != 0 { i += 1 }
                if a != 0 || b != 0 { u += 1 }
            }
            return MaskOverlap(intersection: i, union: u).iou
        }
        return QualitativePanel(phrase: phrase, image: image, height: h, width: w, attention: att,
                                gridHeight: maskAttentions.shape[2], gridWidth: maskAttentions.shape[3], unetMask: unet,
                                samMask: sam, gtMask: gtMask, iouUNet: iou(unet), iouSAM: sam.map(iou))
    }
}
