// How each frozen LMM family lays out its image tokens, as small explicit types.
//
// A layout says which image columns (keys) go where: a table of segments, each placing a
// block of image columns into one map with map[r0 + i, c0 + j] = image column
// [start + i·rowStride + j] (image columns are counted among the image tokens only, in
// sequence order). The segments of a layout must tile each of its maps exactly once.
// Channels are layer-major within a map; with two maps, `channelOrder` says how they are
// stacked (see ../shared/design/lmm-layouts.md and F-LMM's frozen_*.py).

import Tensors

/// One block of image columns placed into one map.
public struct AttentionSegment: Sendable, Equatable {
    /// Index of the map (0 for single-map layouts).
    public var map: Int
    /// First image column of the block.
    public var start: Int
    /// Block size in grid rows and columns.
    public var rows: Int, cols: Int
    /// Distance in image columns between two block rows (`cols`, or more to skip columns).
    public var rowStride: Int
    /// Where the block's top-left cell lands in the map.
    public var r0: Int, c0: Int

    public init(map: Int = 0, start: Int, rows: Int, cols: Int, rowStride: Int? = nil, r0: Int = 0, c0: Int = 0) {
        self.map = map
        self.start = start
        self.rows = rows
        self.cols = cols
        self.rowStride = rowStride ?? cols
        self.r0 = r0
        self.c0 = c0
    }
}

/// A bilinear resize (`F.interpolate(mode='bilinear', align_corners=False)`) of a map.
public enum AttentionMapResize: Sendable, Equatable {
    /// Every token's map is scaled by an integer factor before the merge
    /// (MGM-HD's global map: `F.interpolate(scale_factor=image_grid)`, then the merge).
    case beforeMerge(scaleFactor: Int)
    /// The merged map is resized to a size (LLaVA-NeXT's coarse map → the fine grid).
    case afterMerge(height: Int, width: Int)
}

/// One map of a layout: its grid (where the segments land) and an optional resize.
public struct AttentionMapGeometry: Sendable, Equatable {
    public var height: Int
    public var width: Int
    public var resize: AttentionMapResize?

    public init(height: Int, width: Int, resize: AttentionMapResize? = nil) {
        self.height = height
        self.width = width
        self.resize = resize
    }

    /// Size stacked into the output (after the resize).
    public var outputSize: (height: Int, width: Int) {
        switch resize {
        case nil: return (height, width)
        case .beforeMerge(let s)?: return (height * s, width * s)
        case .afterMerge(let h, let w)?: return (h, w)
        }
    }

    /// The fused op's description of this map, reading `cellColumns`.
    func plan(cellColumns: [Int]) -> PhraseMapPlan.Map {
        func bilinear(_ inSize: Int, _ outSize: Int, _ scale: Double?) -> InterpolationAxis {
            .linear(inSize: inSize, outSize: outSize, scale: scale, alignCorners: false)
        }
        switch resize {
        case nil:
            return PhraseMapPlan.Map(height: height, width: width, cellColumns: cellColumns)
        case .beforeMerge(let s)?:
            let r = InterpolationPlan(mode: .bilinear, h: bilinear(height, height * s, Double(s)),
                                      w: bilinear(width, width * s, Double(s)))
            return PhraseMapPlan.Map(height: height, width: width, cellColumns: cellColumns, beforeMerge: r)
        case .afterMerge(let h, let w)?:
            let r = InterpolationPlan(mode: .bilinear, h: bilinear(height, h, nil), w: bilinear(width, w, nil))
            return PhraseMapPlan.Map(height: height, width: width, cellColumns: cellColumns, afterMerge: r)
        }
    }
}

/// A frozen LMM's image-token layout.
public protocol AttentionLayout: Sendable {
    /// Name used in error messages, e.g. "DeepSeek-VL 24×24".
    var name: String { get }
    /// Token id of the image placeholder in `input_ids` (the full-sequence form finds image
    /// columns as `input_ids == imageTokenID`).
    var imageTokenID: Int { get }
    /// Number of image columns the LMM produces (including unused ones, e.g. LLaVA-NeXT's newlines).
    var imageTokenCount: Int { get }
    /// The maps built from the image columns.
    var maps: [AttentionMapGeometry] { get }
    /// Where the image columns land.
    var segments: [AttentionSegment] { get }
    /// How the maps' channels are stacked (irrelevant with one map).
    var channelOrder: PhraseMapChannelOrder { get }
}

extension AttentionLayout {
    /// Output channels for an LMM with `layers` × `heads`: maps · L · NH.
    public func channels(layers: Int, heads: Int) -> Int { maps.count * layers * heads }

    /// Output grid (after any resize), common to every map.
    public var outputSize: (height: Int, width: Int) { maps[0].outputSize }

    /// For each map, the image column each grid cell reads (row-major cells). Checks that the
    /// segments tile every map exactly once and read each image column at most once.
    public func cellColumns() throws -> [[Int]] {
        var tables = maps.map { [Int](repeating: -1, count: $0.height * $0.width) }
        var used = [Bool](repeating: false, count: imageTokenCount)
        for (k, s) in segments.enumerated() {
            guard s.map >= 0 && s.map < maps.count else {
                throw AttentionMapError.badLayout(layout: name, detail: "segment \(k) names map \(s.map) of \(maps.count)")
            }
            let g = maps[s.map]
            guard s.rows > 0, s.cols > 0, s.rowStride >= s.cols, s.r0 >= 0, s.c0 >= 0,
                  s.r0 + s.rows <= g.height, s.c0 + s.cols <= g.width else {
                throw AttentionMapError.badLayout(
                    layout: name, detail: "segment \(k) (\(s.rows)×\(s.cols) at \(s.r0),\(s.c0)) does not fit map \(s.map) (\(g.height)×\(g.width))")
            }
            for i in 0..<s.rows {
                for j in 0..<s.cols {
                    let col = s.start + i * s.rowStride + j
                    guard col >= 0 && col < imageTokenCount else {
                        throw AttentionMapError.badLayout(layout: name, detail: "segment \(k) reads image column \(col) of \(imageTokenCount)")
                    }
                    guard !used[col] else {
                        throw AttentionMapError.badLayout(layout: name, detail: "image column \(col) is placed twice")
                    }
                    used[col] = true
                    let cell = (s.r0 + i) * g.width + s.c0 + j
                    guard tables[s.map][cell] < 0 else {
                        throw AttentionMapError.badLayout(
                            layout: name, detail: "map \(s.map) cell (\(s.r0 + i), \(s.c0 + j)) is covered twice")
                    }
                    tables[s.map][cell] = col
                }
            }
        }
        for (m, t) in tables.enumerated() {
            if let cell = t.firstIndex(of: -1) {
                let w = maps[m].width
                throw AttentionMapError.badLayout(layout: name, detail: "map \(m) cell (\(cell / w), \(cell % w)) is not covered")
            }
        }
        let out = maps[0].outputSize
        for (m, g) in maps.enumerated() where g.outputSize != out {
            throw AttentionMapError.badLayout(
                layout: name, detail: "map \(m) ends \(g.outputSize.height)×\(g.outputSize.width), map 0 \(out.height)×\(out.width)")
        }
        return tables
    }
}

/// DeepSeek-VL (1.3B, 7B): 576 `<image_placeholder>` tokens (id 100015) on a fixed 24×24 grid,
/// row-major (F-LMM's `clip_shape = 24`). L·NH channels.
public struct DeepSeekVLLayout: AttentionLayout {
    public let imageTokenID: Int
    public let gridHeight: Int, gridWidth: Int

    /// The real model: id 100015, 24×24. Other grids serve small test models.
    public init(imageTokenID: Int = 100015, gridHeight: Int = 24, gridWidth: Int = 24) {
        precondition(gridHeight > 0 && gridWidth > 0, "DeepSeekVLLayout: grid \(gridHeight)×\(gridWidth)")
        self.imageTokenID = imageTokenID
        self.gridHeight = gridHeight
        self.gridWidth = gridWidth
    }

    public var name: String { "DeepSeek-VL \(gridHeight)×\(gridWidth)" }
    public var imageTokenCount: Int { gridHeight * gridWidth }
    public var maps: [AttentionMapGeometry] { [AttentionMapGeometry(height: gridHeight, width: gridWidth)] }
    public var segments: [AttentionSegment] { [AttentionSegment(start: 0, rows: gridHeight, cols: gridWidth)] }
    public var channelOrder: PhraseMapChannelOrder { .mapMajor }
}

/// LLaVA-1.5: image tokens `input_ids == image_token_index` (32000 for llava-hf), grid
/// (padded height // patch, padded width // patch): 336 / 14 = 24. L·NH channels.
public struct LlavaLayout: AttentionLayout {
    public let imageTokenID: Int
    public let paddedHeight: Int, paddedWidth: Int
    public let patchSize: Int

    public init(imageTokenID: Int = 32000, paddedHeight: Int = 336, paddedWidth: Int = 336, patchSize: Int = 14) {
        precondition(patchSize > 0 && paddedHeight >= patchSize && paddedWidth >= patchSize,
                     "LlavaLayout: padded \(paddedHeight)×\(paddedWidth) with patch \(patchSize)")
        self.imageTokenID = imageTokenID
        self.paddedHeight = paddedHeight
        self.paddedWidth = paddedWidth
        self.patchSize = patchSize
    }

    public var gridHeight: Int { paddedHeight / patchSize }
    public var gridWidth: Int { paddedWidth / patchSize }
    public var name: String { "LLaVA-1.5 \(gridHeight)×\(gridWidth)" }
    public var imageTokenCount: Int { gridHeight * gridWidth }
    public var maps: [AttentionMapGeometry] { [AttentionMapGeometry(height: gridHeight, width: gridWidth)] }
    public var segments: [AttentionSegment] { [AttentionSegment(start: 0, rows: gridHeight, cols: gridWidth)] }
    public var channelOrder: PhraseMapChannelOrder { .mapMajor }
}

/// HPT (F-LMM's frozen_hpt.py): grid = image_size // patch_size, square (`clip_shape`).
/// HPT-Air runs at 392 px with CLIP-L/14 (28×28), HPT-1.5 at 448 px with SigLIP/14 (32×32).
/// L·NH channels. The image token id is that of the expanded sequence the exporter saw
/// (HPT marks image places itself; there is no tokenizer id).
public struct HPTLayout: AttentionLayout {
    public let imageTokenID: Int
    public let imageSize: Int
    public let patchSize: Int

    public init(imageTokenID: Int, imageSize: Int, patchSize: Int = 14) {
        precondition(patchSize > 0 && imageSize >= patchSize, "HPTLayout: image size \(imageSize) with patch \(patchSize)")
        self.imageTokenID = imageTokenID
        self.imageSize = imageSize
        self.patchSize = patchSize
    }

    /// HPT-Air: 392 / 14 = 28.
    public static func air(imageTokenID: Int) -> HPTLayout { HPTLayout(imageTokenID: imageTokenID, imageSize: 392) }
    /// HPT-1.5 (Llama-3-8B): 448 / 14 = 32.
    public static func v1_5(imageTokenID: Int) -> HPTLayout { HPTLayout(imageTokenID: imageTokenID, imageSize: 448) }

    public var grid: Int { imageSize / patchSize }
    public var name: String { "HPT \(grid)×\(grid)" }
    public var imageTokenCount: Int { grid * grid }
    public var maps: [AttentionMapGeometry] { [AttentionMapGeometry(height: grid, width: grid)] }
    public var segments: [AttentionSegment] { [AttentionSegment(start: 0, rows: grid, cols: grid)] }
    public var channelOrder: PhraseMapChannelOrder { .mapMajor }
}

/// LLaVA-NeXT (anyres, F-LMM's frozen_llava_next.py). Image columns are
/// `[coarse g_h×g_w][fine: H_f rows of (W_f + 1) tokens, the last of each row a newline]`:
/// the coarse grid is the base image's (pixel size // patch: 336 / 14 = 24), the fine grid
/// (H_f, W_f) is the unpadded anyres grid the model reports (`image_feature_shapes`).
/// Each phrase is merged on both grids; the merged coarse map is then resized bilinearly to
/// H_f×W_f, and the channels are all coarse (layer-major), then all fine: 2·L·NH. (F-LMM also
/// passes the fine map through a same-size bilinear resize, which is the identity.)
public struct LlavaNextLayout: AttentionLayout {
    public let imageTokenID: Int
    public let coarseHeight: Int, coarseWidth: Int
    public let fineHeight: Int, fineWidth: Int

    public init(imageTokenID: Int = 32000, coarseHeight: Int = 24, coarseWidth: Int = 24, fineHeight: Int, fineWidth: Int) {
        precondition(coarseHeight > 0 && coarseWidth > 0 && fineHeight > 0 && fineWidth > 0,
                     "LlavaNextLayout: coarse \(coarseHeight)×\(coarseWidth), fine \(fineHeight)×\(fineWidth)")
        self.imageTokenID = imageTokenID
        self.coarseHeight = coarseHeight
        self.coarseWidth = coarseWidth
        self.fineHeight = fineHeight
        self.fineWidth = fineWidth
    }

    public var name: String { "LLaVA-NeXT \(coarseHeight)×\(coarseWidth) + \(fineHeight)×\(fineWidth)" }
    public var imageTokenCount: Int { coarseHeight * coarseWidth + fineHeight * (fineWidth + 1) }
    public var maps: [AttentionMapGeometry] {
        [AttentionMapGeometry(height: coarseHeight, width: coarseWidth, resize: .afterMerge(height: fineHeight, width: fineWidth)),
         AttentionMapGeometry(height: fineHeight, width: fineWidth)]
    }
    public var segments: [AttentionSegment] {
        [AttentionSegment(map: 0, start: 0, rows: coarseHeight, cols: coarseWidth),
         AttentionSegment(map: 1, start: coarseHeight * coarseWidth, rows: fineHeight, cols: fineWidth,
                          rowStride: fineWidth + 1)]
    }
    public var channelOrder: PhraseMapChannelOrder { .mapMajor }
}

/// Mini-Gemini (F-LMM's frozen_mgm.py `_process_attention`), CLIP grid h×w (336 / 14 = 24):
/// * `imageGrid` 1 (MGM-2B/7B): one h×w map, L·NH channels;
/// * `imageGrid` g ≥ 2 with `imageGlobal` (MGM-HD): image columns `[global h·w][crop(0,0)]
///   [crop(0,1)]…` (crops row-major, each h×w row-major), crops stitched into a g·h × g·w map;
///   each token's global map is scaled ×g bilinearly before the merge; channels interleaved per
///   layer: [NH global, NH HD] for layer 0, then layer 1, …: 2·L·NH;
/// * `imageGrid` g ≥ 2 without `imageGlobal`: the stitched crops only, L·NH channels.
public struct MGMLayout: AttentionLayout {
    public let imageTokenID: Int
    public let clipHeight: Int, clipWidth: Int
    public let imageGrid: Int
    public let imageGlobal: Bool

    public init(imageTokenID: Int, clipHeight: Int = 24, clipWidth: Int = 24, imageGrid: Int = 1, imageGlobal: Bool = false) {
        precondition(clipHeight > 0 && clipWidth > 0 && imageGrid >= 1,
                     "MGMLayout: clip \(clipHeight)×\(clipWidth), image grid \(imageGrid)")
        self.imageTokenID = imageTokenID
        self.clipHeight = clipHeight
        self.clipWidth = clipWidth
        self.imageGrid = imageGrid
        self.imageGlobal = imageGlobal && imageGrid > 1
    }

    /// MGM-HD: 2×2 crops plus the global image.
    public static func hd(imageTokenID: Int) -> MGMLayout {
        MGMLayout(imageTokenID: imageTokenID, imageGrid: 2, imageGlobal: true)
    }

    var single: Int { clipHeight * clipWidth }
    public var name: String {
        imageGrid == 1 ? "MGM \(clipHeight)×\(clipWidth)"
            : "MGM-HD \(imageGrid)×\(imageGrid) crops of \(clipHeight)×\(clipWidth)\(imageGlobal ? " + global" : "")"
    }
    public var imageTokenCount: Int { (imageGrid * imageGrid + (imageGlobal ? 1 : 0)) * single }
    public var maps: [AttentionMapGeometry] {
        let hd = AttentionMapGeometry(height: imageGrid * clipHeight, width: imageGrid * clipWidth)
        guard imageGlobal else { return [hd] }
        return [AttentionMapGeometry(height: clipHeight, width: clipWidth, resize: .beforeMerge(scaleFactor: imageGrid)), hd]
    }
    public var segments: [AttentionSegment] {
        if imageGrid == 1 { return [AttentionSegment(start: 0, rows: clipHeight, cols: clipWidth)] }
        let first = imageGlobal ? single : 0, hdMap = imageGlobal ? 1 : 0
        var out = imageGlobal ? [AttentionSegment(map: 0, start: 0, rows: clipHeight, cols: clipWidth)] : []
        for gr in 0..<imageGrid {
            for gc in 0..<imageGrid {
                out.append(AttentionSegment(map: hdMap, start: first + (gr * imageGrid + gc) * single,
                                            rows: clipHeight, cols: clipWidth, r0: gr * clipHeight, c0: gc * clipWidth))
            }
        }
        return out
    }
    public var channelOrder: PhraseMapChannelOrder { .layerMajor }
}
