// F-LMM's phrase attention maps: from per-layer attention rows to one map stack per phrase.
//
// Legend: L layers, NH heads, R attention rows (query tokens), K attention columns (keys),
// N phrases (masks), M maps per layout (1, or 2 for coarse+fine / global+HD), C = M·L·NH
// output channels, (h, w) a map's grid.
//
// Forward, for phrase n, map m, layer l, head j:
//   token maps  v_t[c] = A[l, j, t, col_m(c)] for the phrase's rows t (in sequence order) and
//               the cells c of the map's grid (row-major);
//   optionally  v_t ← bilinear(v_t) per token (`beforeMerge`, MGM-HD's global map);
//   merge       mean: (Σ_t v_t) / n_t, summed in Double in row order;
//               max: max_t v_t, keeping the first row on ties (torch.max's index);
//   optionally  bilinear(merged) (`afterMerge`, LLaVA-NeXT's coarse map).
// Channel of (m, l, j): map-major  m·L·NH + l·NH + j  (LLaVA-NeXT: all coarse, then all fine);
//                       layer-major l·M·NH + m·NH + j (MGM-HD: per layer [global heads, HD heads]).
// Backward: the transpose of each stage — the resizes' transposes, mean sends g/n_t to every
// row of the phrase, max sends g to the first arg-max row.

/// How a phrase's token maps are merged (F-LMM's `apply_merge`).
public enum PhraseMerge: String, Sendable, Equatable, CaseIterable {
    case mean, max
}

/// The order of the output channels when a layout has more than one map.
public enum PhraseMapChannelOrder: String, Sendable, Equatable {
    /// All channels of map 0 (layer-major), then all of map 1, … (LLaVA-NeXT: coarse, then fine).
    case mapMajor
    /// For each layer: map 0's heads, then map 1's heads, … (MGM-HD: global, then HD).
    case layerMajor
}

/// Everything the fused phrase-map op needs: which rows form each phrase, where each grid cell
/// of each map reads its column, how rows are merged and how channels are ordered.
public struct PhraseMapPlan: Sendable, Equatable {
    /// One map: its grid, for each cell in row-major order the attention column it reads, and
    /// optional bilinear resizes of each token's map (before the merge) or of the merged map.
    public struct Map: Sendable, Equatable {
        public let height: Int
        public let width: Int
        public let cellColumns: [Int]
        public let beforeMerge: InterpolationPlan?
        public let afterMerge: InterpolationPlan?

        public init(height: Int, width: Int, cellColumns: [Int],
                    beforeMerge: InterpolationPlan? = nil, afterMerge: InterpolationPlan? = nil) {
            precondition(height > 0 && width > 0 && cellColumns.count == height * width,
                         "PhraseMapPlan.Map: \(cellColumns.count) cell columns for a \(height)×\(width) grid")
            var size = (height, width)
            for r in [beforeMerge, afterMerge] {
                guard let r else { continue }
                precondition(r.h.inSize == size.0 && r.w.inSize == size.1,
                             "PhraseMapPlan.Map: resize from \(r.h.inSize)×\(r.w.inSize) applied to a \(size.0)×\(size.1) map")
                size = (r.h.outSize, r.w.outSize)
            }
            self.height = height
            self.width = width
            self.cellColumns = cellColumns
            self.beforeMerge = beforeMerge
            self.afterMerge = afterMerge
        }

        /// Size of the token maps that are merged (after `beforeMerge`).
        public var tokenSize: (height: Int, width: Int) {
            beforeMerge.map { ($0.h.outSize, $0.w.outSize) } ?? (height, width)
        }
        /// Size of the map in the output (after both resizes).
        public var outputSize: (height: Int, width: Int) {
            afterMerge.map { ($0.h.outSize, $0.w.outSize) } ?? tokenSize
        }
    }

    /// Attention rows of each phrase, in sequence order; every phrase has at least one row.
    public let rowsPerPhrase: [[Int]]
    public let maps: [Map]
    public let merge: PhraseMerge
    public let channelOrder: PhraseMapChannelOrder

    public init(rowsPerPhrase: [[Int]], maps: [Map], merge: PhraseMerge, channelOrder: PhraseMapChannelOrder) {
        precondition(!maps.isEmpty, "PhraseMapPlan: no maps")
        precondition(rowsPerPhrase.allSatisfy { !$0.isEmpty }, "PhraseMapPlan: a phrase has no rows")
        let size = maps[0].outputSize
        precondition(maps.allSatisfy { $0.outputSize == size },
                     "PhraseMapPlan: maps of output sizes \(maps.map { [$0.outputSize.height, $0.outputSize.width] }) cannot be stacked")
        self.rowsPerPhrase = rowsPerPhrase
        self.maps = maps
        self.merge = merge
        self.channelOrder = channelOrder
    }

    /// Output shape [N, M·L·NH, h, w] for attention with `layers` × `heads`.
    public func outputShape(layers: Int, heads: Int) -> [Int] {
        [rowsPerPhrase.count, maps.count * layers * heads, maps[0].outputSize.height, maps[0].outputSize.width]
    }

    /// Output channel of (map, layer, head).
    @inlinable
    public func channel(map m: Int, layer l: Int, head j: Int, layers: Int, heads: Int) -> Int {
        switch channelOrder {
        case .mapMajor: return (m * layers + l) * heads + j
        case .layerMajor: return (l * maps.count + m) * heads + j
        }
    }
}

extension Kernels {
    /// Phrase maps from attention `a` [L, NH, R, K] → [N, M·L·NH, h, w] (see the file header).
    public static func phraseMaps<T: BinaryFloatingPoint & Sendable>(
        _ a: [T], layers: Int, heads: Int, rows: Int, cols: Int, plan: PhraseMapPlan
    ) -> [T] {
        precondition(a.count == layers * heads * rows * cols,
                     "phraseMaps: \(a.count) elements for attention [\(layers), \(heads), \(rows), \(cols)]")
        checkPlan(plan, rows: rows, cols: cols)
        let shape = plan.outputShape(layers: layers, heads: heads)
        let cells = shape[2] * shape[3]
        let lh = layers * heads, nMaps = plan.maps.count
        var out = [T](repeating: 0, count: shape.product)
        if out.isEmpty { return out }
        a.withUnsafeBufferPointer { ab in
            out.withUnsafeMutableBufferPointer { ob in
                let ap = SendableConstPointer(ab.baseAddress!), op = SendablePointer(ob.baseAddress!)
                // One job per (phrase, map, layer·head) plane: independent outputs.
                Parallel.forEach(plan.rowsPerPhrase.count * nMaps * lh, grain: max(1, 2048 / cells)) { job in
                    let n = job / (nMaps * lh), m = (job / lh) % nMaps, p = job % lh
                    let ch = plan.channel(map: m, layer: p / heads, head: p % heads, layers: layers, heads: heads)
                    let dst = op.base + (n * shape[1] + ch) * cells
                    let src = ap.base + p * rows * cols
                    let merged = mergedTokenMaps(src, rows: plan.rowsPerPhrase[n], cols: cols, map: plan.maps[m],
                                                 merge: plan.merge)
                    let final = plan.maps[m].afterMerge.map { interpolate(merged, planes: 1, $0) } ?? merged
                    for c in 0..<cells { dst[c] = final[c] }
                }
            }
        }
        return out
    }

    /// Gradient of `phraseMaps` with respect to the attention `a` [L, NH, R, K], from `g`
    /// (the output's gradient). Rows outside every phrase and unused columns get 0.
    public static func phraseMapsBackward<T: BinaryFloatingPoint & Sendable>(
        _ g: [T], _ a: [T], layers: Int, heads: Int, rows: Int, cols: Int, plan: PhraseMapPlan
    ) -> [T] {
        let shape = plan.outputShape(layers: layers, heads: heads)
        precondition(g.count == shape.product, "phraseMapsBackward: gradient has \(g.count) elements, output \(shape)")
        precondition(a.count == layers * heads * rows * cols,
                     "phraseMapsBackward: \(a.count) elements for attention [\(layers), \(heads), \(rows), \(cols)]")
        let cells = shape[2] * shape[3]
        let lh = layers * heads
        var da = [T](repeating: 0, count: a.count)
        if da.isEmpty || g.isEmpty { return da }
        a.withUnsafeBufferPointer { ab in
            g.withUnsafeBufferPointer { gb in
                da.withUnsafeMutableBufferPointer { db in
                    let ap = SendableConstPointer(ab.baseAddress!), gp = SendableConstPointer(gb.baseAddress!)
                    let dp = SendablePointer(db.baseAddress!)
                    // One job per (layer, head): it owns that slice of the gradient; within it the
                    // contributions are added in (phrase, map, row, cell) order.
                    Parallel.forEach(lh) { p in
                        let src = ap.base + p * rows * cols, dst = dp.base + p * rows * cols
                        for (n, rs) in plan.rowsPerPhrase.enumerated() {
                            for (m, map) in plan.maps.enumerated() {
                                let ch = plan.channel(map: m, layer: p / heads, head: p % heads, layers: layers, heads: heads)
                                let gOut = Array(UnsafeBufferPointer(start: gp.base + (n * shape[1] + ch) * cells, count: cells))
                                let gMerged = map.afterMerge.map { interpolateBackward(gOut, planes: 1, $0) } ?? gOut
                                let tc = gMerged.count, nt = rs.count
                                // Gradient of each token's (resized) map.
                                var gTok = [T](repeating: 0, count: nt * tc)
                                switch plan.merge {
                                case .mean:
                                    let count = T(nt)
                                    for t in 0..<nt { for c in 0..<tc { gTok[t * tc + c] = gMerged[c] / count } }
                                case .max:
                                    let tok = tokenMaps(src, rows: rs, cols: cols, map: map)
                                    for c in 0..<tc { gTok[firstArgmax(tok, tokens: nt, cells: tc, cell: c) * tc + c] = gMerged[c] }
                                }
                                let gGrid = map.beforeMerge.map { interpolateBackward(gTok, planes: nt, $0) } ?? gTok
                                let gc = map.height * map.width
                                for (t, r) in rs.enumerated() {
                                    for c in 0..<gc { dst[r * cols + map.cellColumns[c]] += gGrid[t * gc + c] }
                                }
                            }
                        }
                    }
                }
            }
        }
        return da
    }

    /// The phrase's token maps [n_t, tokenSize] for one (layer, head) slice `src` [R, K]: the
    /// grid gathered from the columns, resized by `beforeMerge` when the map has one.
    static func tokenMaps<T: BinaryFloatingPoint & Sendable>(_ src: UnsafePointer<T>, rows rs: [Int], cols: Int,
                                                            map: PhraseMapPlan.Map) -> [T] {
        let gc = map.height * map.width
        var grid = [T](repeating: 0, count: rs.count * gc)
        for (t, r) in rs.enumerated() {
            for c in 0..<gc { grid[t * gc + c] = src[r * cols + map.cellColumns[c]] }
        }
        return map.beforeMerge.map { interpolate(grid, planes: rs.count, $0) } ?? grid
    }

    /// The merged map [tokenSize] of the phrase's token maps (mean in Double, or first max).
    static func mergedTokenMaps<T: BinaryFloatingPoint & Sendable>(_ src: UnsafePointer<T>, rows rs: [Int], cols: Int,
                                                                  map: PhraseMapPlan.Map, merge: PhraseMerge) -> [T] {
        let tok = tokenMaps(src, rows: rs, cols: cols, map: map)
        let nt = rs.count, tc = tok.count / nt
        return (0..<tc).map { c in
            switch merge {
            case .mean:
                var s = 0.0
                for t in 0..<nt { s += Double(tok[t * tc + c]) }
                return T(s / Double(nt))
            case .max:
                return tok[firstArgmax(tok, tokens: nt, cells: tc, cell: c) * tc + c]
            }
        }
    }

    /// The first token whose value at `cell` is largest, in token maps [tokens, cells].
    @inline(__always)
    static func firstArgmax<T: BinaryFloatingPoint>(_ tok: [T], tokens: Int, cells: Int, cell: Int) -> Int {
        var best = 0, bv = tok[cell]
        for t in 1..<tokens where tok[t * cells + cell] > bv {
            bv = tok[t * cells + cell]
            best = t
        }
        return best
    }

    static func checkPlan(_ plan: PhraseMapPlan, rows: Int, cols: Int) {
        for rs in plan.rowsPerPhrase {
            precondition(rs.allSatisfy { $0 >= 0 && $0 < rows }, "phraseMaps: phrase rows \(rs) outside 0..<\(rows)")
        }
        for m in plan.maps {
            precondition(m.cellColumns.allSatisfy { $0 >= 0 && $0 < cols },
                         "phraseMaps: a map reads a column outside 0..<\(cols)")
        }
    }
}
