// Building RGB pictures from maps and masks, for the `flmm ground` panel and the qualitative
// figure's data: a colour map, nearest-neighbour resizing, mask overlays, and a canvas that
// places tiles side by side. All integer or fixed Float arithmetic: the same inputs give the
// same bytes.
//
//   colour map  five anchors of matplotlib's "viridis" sampled at 0, ¼, ½, ¾, 1:
//               (68,1,84) (59,82,139) (33,145,140) (94,201,98) (253,231,37), linear between
//               them; a value v in [0, 1] (clamped; NaN → the lowest colour)
//   normalise   (v − min) / (max − min) over the finite values; a constant map → all 0
//   nearest     output pixel (i, j) of (H, W) takes source (⌊i·h / H⌋, ⌊j·w / W⌋)
//   overlay     inside the mask: (pixel + tint) / 2 per channel; outside: pixel · 2 / 5 (dimmed)

/// An RGB picture, row-major [height · width · 3].
public struct RGBPicture: Sendable, Equatable {
    public let height: Int, width: Int
    public var pixels: [UInt8]

    public init(height: Int, width: Int, pixels: [UInt8]) {
        precondition(height > 0 && width > 0 && pixels.count == height * width * 3,
                     "RGBPicture: \(pixels.count) bytes for \(height)×\(width)×3")
        self.height = height
        self.width = width
        self.pixels = pixels
    }

    /// A picture filled with one colour.
    public init(height: Int, width: Int, fill: (UInt8, UInt8, UInt8)) {
        precondition(height > 0 && width > 0, "RGBPicture: size \(height)×\(width) must be positive")
        self.height = height
        self.width = width
        pixels = [UInt8](repeating: 0, count: height * width * 3)
        for p in 0..<(height * width) {
            pixels[3 * p] = fill.0
            pixels[3 * p + 1] = fill.1
            pixels[3 * p + 2] = fill.2
        }
    }

    /// The picture resized to (height, width) by nearest neighbour.
    public func resizedNearest(height h: Int, width w: Int) -> RGBPicture {
        var out = [UInt8](repeating: 0, count: h * w * 3)
        for i in 0..<h {
            let si = i * height / h
            for j in 0..<w {
                let s = (si * width + j * width / w) * 3, d = (i * w + j) * 3
                out[d] = pixels[s]
                out[d + 1] = pixels[s + 1]
                out[d + 2] = pixels[s + 2]
            }
        }
        return RGBPicture(height: h, width: w, pixels: out)
    }

    /// Copies `tile` with its top-left corner at (row, col); parts outside are clipped.
    public mutating func place(_ tile: RGBPicture, row: Int, col: Int) {
        for i in 0..<tile.height where row + i >= 0 && row + i < height {
            for j in 0..<tile.width where col + j >= 0 && col + j < width {
                let s = (i * tile.width + j) * 3, d = ((row + i) * width + col + j) * 3
                pixels[d] = tile.pixels[s]
                pixels[d + 1] = tile.pixels[s + 1]
                pixels[d + 2] = tile.pixels[s + 2]
            }
        }
    }

    /// The image with `mask` (0/1, [height · width]) highlighted: inside, the average of the pixel
    /// and `tint`; outside, the pixel dimmed to 2/5.
    public func overlay(mask: [UInt8], tint: (UInt8, UInt8, UInt8)) -> RGBPicture {
        precondition(mask.count == height * width, "RGBPicture.overlay: mask of \(mask.count) for \(height)×\(width)")
        let t = [UInt16(tint.0), UInt16(tint.1), UInt16(tint.2)]
        var out = pixels
        for p in 0..<(height * width) {
            for c in 0..<3 {
                let v = UInt16(pixels[3 * p + c])
                out[3 * p + c] = UInt8(mask[p] != 0 ? (v + t[c]) / 2 : v * 2 / 5)
            }
        }
        return RGBPicture(height: height, width: width, pixels: out)
    }
}

/// A perceptual colour map (viridis anchors, linear between them).
public enum ColorMap {
    /// viridis at 0, 0.25, 0.5, 0.75, 1.
    public static let anchors: [(UInt8, UInt8, UInt8)] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]

    /// The colour of `v` in [0, 1] (clamped; NaN gives the first anchor).
    public static func color(_ v: Float) -> (UInt8, UInt8, UInt8) {
        guard v.isFinite else { return v == .infinity ? anchors[anchors.count - 1] : anchors[0] }
        let x = min(max(v, 0), 1) * Float(anchors.count - 1)
        let k = min(Int(x), anchors.count - 2)
        let f = x - Float(k)
        let a = anchors[k], b = anchors[k + 1]
        func mix(_ p: UInt8, _ q: UInt8) -> UInt8 {
            UInt8((Float(p) + (Float(q) - Float(p)) * f).rounded(.toNearestOrEven))
        }
        return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }

    /// `values` rescaled to [0, 1] by their finite min and max (all 0 for a constant map;
    /// non-finite values stay NaN).
    public static func normalized(_ values: [Float]) -> [Float] {
        let finite = values.filter(\.isFinite)
        guard let lo = finite.min(), let hi = finite.max() else { return values.map { _ in .nan } }
        let range = hi - lo
        return values.map { v in v.isFinite ? (range > 0 ? (v - lo) / range : 0) : .nan }
    }

    /// A map [height · width] as a picture: normalised by its min and max, coloured.
    public static func picture(_ values: [Float], height: Int, width: Int) -> RGBPicture {
        precondition(values.count == height * width, "ColorMap.picture: \(values.count) values for \(height)×\(width)")
        var px = [UInt8](repeating: 0, count: height * width * 3)
        for (p, v) in normalized(values).enumerated() {
            let c = color(v)
            px[3 * p] = c.0
            px[3 * p + 1] = c.1
            px[3 * p + 2] = c.2
        }
        return RGBPicture(height: height, width: width, pixels: px)
    }
}

/// Pictures side by side.
public enum PanelLayout {
    /// `tiles` left to right, top-aligned, `gap` pixels apart and around, on `background`.
    public static func row(_ tiles: [RGBPicture], gap: Int = 4, background: (UInt8, UInt8, UInt8) = (255, 255, 255)) -> RGBPicture {
        precondition(!tiles.isEmpty && gap >= 0, "PanelLayout.row: \(tiles.count) tiles, gap \(gap)")
        let h = tiles.map(\.height).max()! + 2 * gap
        let w = tiles.reduce(gap) { $0 + $1.width + gap }
        var canvas = RGBPicture(height: h, width: w, fill: background)
        var x = gap
        for t in tiles {
            canvas.place(t, row: gap, col: x)
            x += t.width + gap
        }
        return canvas
    }

    /// Per-layer maps of one phrase from mask-head input `maskAttentions` [M, L·NH, h, w]
    /// (channels layer-major: c = l·NH + head): the mean over heads of layer l, in Double in head
    /// order → L maps of h·w values.
    public static func layerMeans(_ maskAttentions: [Float], shape: [Int], phrase: Int, layers: Int) -> [[Float]] {
        precondition(shape.count == 4 && shape[1] % layers == 0 && phrase < shape[0] && maskAttentions.count == shape.reduce(1, *),
                     "PanelLayout.layerMeans: maps \(shape) with \(layers) layers, phrase \(phrase)")
        let heads = shape[1] / layers, hw = shape[2] * shape[3]
        return (0..<layers).map { l in
            (0..<hw).map { p in
                var s = 0.0
                for hd in 0..<heads { s += Double(maskAttentions[((phrase * shape[1]) + l * heads + hd) * hw + p]) }
                return Float(s / Double(heads))
            }
        }
    }

    /// The mean over every layer and head of one phrase's maps (what a qualitative panel shows).
    public static func overallMean(_ maskAttentions: [Float], shape: [Int], phrase: Int) -> [Float] {
        layerMeans(maskAttentions, shape: shape, phrase: phrase, layers: 1)[0]
    }
}
