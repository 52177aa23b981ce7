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

/// One map of a layout: its grid (where the segments land).
public struct AttentionMapGeometry: Sendable, Equatable {
    public var height: Int
    public var width: Int

    public init(height: Int, width: Int) {
        self.height = height
        self.width = width
    }

    /// Size stacked into the output.
    public var outputSize: (height: Int, width: Int) { (height, width) }
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
