// ShapesWorld scenes: coloured flat shapes on a textured, noisy background, with exact
// per-object masks at the original size.
//
// Geometry: an object is a shape of "radius" r centred at (cx, cy) in pixel coordinates
// (x to the right, y down; pixel (row i, col j) is sampled at its centre (j + 0.5, i + 0.5)).
// Objects are painted in depth order (index 0 first, the last one on top), so the visible
// mask of an object is its coverage minus the coverage of every object painted after it.
// Objects are filled with their palette colour exactly; the background is grey-ish (each
// pixel's channels differ by < 60), while every palette colour has a channel spread > 100,
// so an object pixel can never be confused with a background pixel.

/// The shapes of ShapesWorld (singular and plural nouns are vocabulary words).
public enum ShapeKind: Int, CaseIterable, Sendable, Hashable {
    case circle, square, triangle, star, diamond, hexagon

    /// Singular noun ("circle").
    public var noun: String { ["circle", "square", "triangle", "star", "diamond", "hexagon"][rawValue] }
    /// Plural noun ("circles").
    public var plural: String { noun + "s" }

    /// Whether the point (dx, dy) relative to the centre lies inside a shape of radius `r`.
    public func contains(dx: Double, dy: Double, radius r: Double) -> Bool {
        switch self {
        case .circle:
            return dx * dx + dy * dy <= r * r
        case .square:
            let h = 0.85 * r
            return abs(dx) <= h && abs(dy) <= h
        case .diamond:
            return abs(dx) / (0.8 * r) + abs(dy) / r <= 1
        case .triangle, .star, .hexagon:
            return ShapeKind.insidePolygon(dx, dy, polygon(radius: r))
        }
    }

    /// Vertices (x, y) of the polygonal shapes, relative to the centre.
    func polygon(radius r: Double) -> [(Double, Double)] {
        switch self {
        case .triangle: return [(0, -r), (0.95 * r, 0.8 * r), (-0.95 * r, 0.8 * r)]
        case .star:
            // Unit directions at −90° + 36°·i (literal constants, so no libm is involved);
            // even vertices on radius r, odd ones on 0.45·r.
            return ShapeKind.starDirections.enumerated().map { i, d in
                let rr = i % 2 == 0 ? r : 0.45 * r
                return (rr * d.0, rr * d.1)
            }
        case .hexagon:
            let h = 0.8660254037844386 * r
            return [(r, 0), (0.5 * r, h), (-0.5 * r, h), (-r, 0), (-0.5 * r, -h), (0.5 * r, -h)]
        default: return []
        }
    }

    static let starDirections: [(Double, Double)] = {
        let c18 = 0.9510565162951535, s18 = 0.30901699437494745
        let c54 = 0.5877852522924731, s54 = 0.8090169943749475
        return [(0, -1), (c54, -s54), (c18, -s18), (c18, s18), (c54, s54),
                (0, 1), (-c54, s54), (-c18, s18), (-c18, -s18), (-c54, -s54)]
    }()

    /// Even-odd point-in-polygon test (deterministic Double arithmetic).
    static func insidePolygon(_ x: Double, _ y: Double, _ p: [(Double, Double)]) -> Bool {
        var inside = false
        var j = p.count - 1
        for i in 0..<p.count {
            let (xi, yi) = p[i], (xj, yj) = p[j]
            if (yi > y) != (yj > y) {
                let xCross = xi + (y - yi) / (yj - yi) * (xj - xi)
                if x < xCross { inside.toggle() }
            }
            j = i
        }
        return inside
    }
}

/// The palette of ShapesWorld (names are vocabulary words).
public enum ShapeColor: Int, CaseIterable, Sendable, Hashable {
    case red, green, blue, yellow, purple, orange, cyan

    public var name: String { ["red", "green", "blue", "yellow", "purple", "orange", "cyan"][rawValue] }

    /// The exact fill colour (R, G, B).
    public var rgb: (UInt8, UInt8, UInt8) {
        switch self {
        case .red: return (220, 40, 40)
        case .green: return (40, 180, 60)
        case .blue: return (40, 80, 220)
        case .yellow: return (235, 215, 40)
        case .purple: return (150, 40, 210)
        case .orange: return (245, 135, 20)
        case .cyan: return (30, 200, 215)
        }
    }
}

/// Size classes: a small object's radius is 7–10% of the image's shorter side, a large one's 14–19%.
public enum SizeClass: Int, CaseIterable, Sendable, Hashable {
    case small, large
    public var name: String { ["small", "large"][rawValue] }
}

/// One object of a scene.
public struct SceneObject: Sendable, Equatable {
    public let shape: ShapeKind
    public let color: ShapeColor
    public let size: SizeClass
    /// Centre in pixels (x right, y down).
    public let cx: Double, cy: Double
    /// Radius in pixels.
    public let radius: Double

    public init(shape: ShapeKind, color: ShapeColor, size: SizeClass, cx: Double, cy: Double, radius: Double) {
        self.shape = shape
        self.color = color
        self.size = size
        self.cx = cx
        self.cy = cy
        self.radius = radius
    }

    /// Whether the centre of pixel (row, col) is covered by this object (ignoring occlusion).
    public func covers(row: Int, col: Int) -> Bool {
        shape.contains(dx: Double(col) + 0.5 - cx, dy: Double(row) + 0.5 - cy, radius: radius)
    }
}

/// An 8-bit RGB image, row-major HWC (as a PIL image).
public struct RGBImage: Sendable, Equatable {
    public let height: Int, width: Int
    /// [height · width · 3], pixel (i, j) channel c at (i·width + j)·3 + c.
    public var pixels: [UInt8]

    public init(height: Int, width: Int, pixels: [UInt8]) {
        precondition(pixels.count == height * width * 3,
                     "RGBImage: \(pixels.count) bytes for \(height)×\(width)×3")
        self.height = height
        self.width = width
        self.pixels = pixels
    }

    public func pixel(row: Int, col: Int) -> (UInt8, UInt8, UInt8) {
        let o = (row * width + col) * 3
        return (pixels[o], pixels[o + 1], pixels[o + 2])
    }
}

/// A binary mask at an image's size, row-major (1 = inside).
public struct Mask: Sendable, Equatable {
    public let height: Int, width: Int
    public var bits: [UInt8]

    public init(height: Int, width: Int, bits: [UInt8]) {
        precondition(bits.count == height * width, "Mask: \(bits.count) values for \(height)×\(width)")
        self.height = height
        self.width = width
        self.bits = bits
    }

    /// Number of pixels inside.
    public var area: Int { bits.reduce(0) { $0 + Int($1) } }

    /// Pixelwise union.
    public func union(_ other: Mask) -> Mask {
        precondition(height == other.height && width == other.width,
                     "Mask.union: \(height)×\(width) vs \(other.height)×\(other.width)")
        return Mask(height: height, width: width, bits: zip(bits, other.bits).map { $0 | $1 })
    }
}

/// A rendered scene: the image, its objects in depth order, and which object is visible at
/// each pixel.
public struct Scene: Sendable {
    public let image: RGBImage
    /// Objects in depth order (index 0 at the back).
    public let objects: [SceneObject]
    /// Visible object per pixel (row-major), −1 for background.
    public let objectMap: [Int8]

    public var height: Int { image.height }
    public var width: Int { image.width }

    /// Exact visible mask of object `k` at the original size.
    public func mask(_ k: Int) -> Mask {
        precondition(objects.indices.contains(k), "Scene.mask: object \(k) of \(objects.count)")
        return Mask(height: height, width: width, bits: objectMap.map { $0 == Int8(k) ? 1 : 0 })
    }

    /// Union of the visible masks of `objects`.
    public func mask(union ks: [Int]) -> Mask {
        let set = Set(ks.map { Int8($0) })
        return Mask(height: height, width: width, bits: objectMap.map { set.contains($0) ? 1 : 0 })
    }

    /// Paints `objects` in depth order over `background` (same size), giving the scene.
    public static func render(background: RGBImage, objects: [SceneObject]) -> Scene {
        var pixels = background.pixels
        var map = [Int8](repeating: -1, count: background.height * background.width)
        for (k, o) in objects.enumerated() {
            let (r, g, b) = o.color.rgb
            let (r0, r1, c0, c1) = o.boundingRows(height: background.height, width: background.width)
            for i in r0..<r1 {
                for j in c0..<c1 where o.covers(row: i, col: j) {
                    let p = i * background.width + j
                    map[p] = Int8(k)
                    pixels[3 * p] = r
                    pixels[3 * p + 1] = g
                    pixels[3 * p + 2] = b
                }
            }
        }
        return Scene(image: RGBImage(height: background.height, width: background.width, pixels: pixels),
                     objects: objects, objectMap: map)
    }
}

extension SceneObject {
    /// Pixel rows [r0, r1) and cols [c0, c1) that can be covered, clipped to the image.
    func boundingRows(height: Int, width: Int) -> (Int, Int, Int, Int) {
        let r0 = max(0, Int((cy - radius).rounded(.down)) - 1), r1 = min(height, Int((cy + radius).rounded(.up)) + 1)
        let c0 = max(0, Int((cx - radius).rounded(.down)) - 1), c1 = min(width, Int((cx + radius).rounded(.up)) + 1)
        return (r0, max(r0, r1), c0, max(c0, c1))
    }

    /// Number of pixels this object covers on its own.
    public func coverage(height: Int, width: Int) -> Int {
        let (r0, r1, c0, c1) = boundingRows(height: height, width: width)
        var n = 0
        for i in r0..<r1 { for j in c0..<c1 where covers(row: i, col: j) { n += 1 } }
        return n
    }
}

