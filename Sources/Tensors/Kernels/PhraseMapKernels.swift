// F-LMM's phrase attention maps: from per-layer attention rows to one map stack per phrase.
//
// Legend: L layers, NH heads, R attention rows (query tokens), K attention columns (keys),
// N phrases (masks), M maps per layout (1, or 2 for coarse+fine / global+HD), C = M·L·NH
// output channels, (h, w) a map's grid.
//
// Forward, for phrase n, map m, layer l, head j, grid cell c (row-major in the map's grid):
//   v_t = A[l, j, t, col_m(c)] for the phrase's rows t (in sequence order)
//   mean: out = (Σ_t v_t) / n_t, summed in Double in row order;
//   max:  out = max_t v_t, keeping the first row on ties (torch.max's index).
// Channel of (m, l, j): map-major  m·L·NH + l·NH + j  (LLaVA-NeXT: all coarse, then all fine);
//                       layer-major l·M·NH + m·NH + j (MGM-HD: per layer [global heads, HD heads]).
// Backward: mean sends g/n_t to every row of the phrase, max sends g to the first arg-max row.

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
    /// One map: its grid and, for each cell in row-major order, the attention column it reads.
    public struct Map: Sendable, Equatable {
        public let height: Int
        public let width: Int
        public let cellColumns: [Int]
        public init(height: Int, width: Int, cellColumns: [Int]) {
            precondition(height > 0 && width > 0 && cellColumns.count == height * width,
                         "PhraseMapPlan.Map: \(cellColumns.count) cell columns for a \(height)×\(width) grid")
            self.height = height
            self.width = width
            self.cellColumns = cellColumns
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
        let (h, w) = (maps[0].height, maps[0].width)
        precondition(maps.allSatisfy { $0.height == h && $0.width == w },
                     "PhraseMapPlan: maps of different sizes \(maps.map { [$0.height, $0.width] }) cannot be stacked")
        self.rowsPerPhrase = rowsPerPhrase
        self.maps = maps
        self.merge = merge
        self.channelOrder = channelOrder
    }

    /// Output shape [N, M·L·NH, h, w] for attention with `layers` × `heads`.
    public func outputShape(layers: Int, heads: Int) -> [Int] {
        [rowsPerPhrase.count, maps.count * layers * heads, maps[0].height, maps[0].width]
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
                    let rs = plan.rowsPerPhrase[n], cellCols = plan.maps[m].cellColumns
                    switch plan.merge {
                    case .mean:
                        let count = Double(rs.count)
                        for c in 0..<cells {
                            let col = cellCols[c]
                            var s = 0.0
                            for r in rs { s += Double(src[r * cols + col]) }
                            dst[c] = T(s / count)
                        }
                    case .max:
                        for c in 0..<cells {
                            dst[c] = src[argmaxRow(src, rs, cols: cols, col: cellCols[c]) * cols + cellCols[c]]
                        }
                    }
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
        let lh = layers * heads, nMaps = plan.maps.count
        var da = [T](repeating: 0, count: a.count)
        if da.isEmpty || g.isEmpty { return da }
        a.withUnsafeBufferPointer { ab in
            g.withUnsafeBufferPointer { gb in
                da.withUnsafeMutableBufferPointer { db in
                    let ap = SendableConstPointer(ab.baseAddress!), gp = SendableConstPointer(gb.baseAddress!)
                    let dp = SendablePointer(db.baseAddress!)
                    // One job per (layer, head): it owns that slice of the gradient; within it the
                    // contributions are added in (phrase, map, cell, row) order.
                    Parallel.forEach(lh) { p in
                        let src = ap.base + p * rows * cols, dst = dp.base + p * rows * cols
                        for (n, rs) in plan.rowsPerPhrase.enumerated() {
                            let count = T(rs.count)
                            for m in 0..<nMaps {
                                let ch = plan.channel(map: m, layer: p / heads, head: p % heads, layers: layers, heads: heads)
                                let gs = gp.base + (n * shape[1] + ch) * cells
                                let cellCols = plan.maps[m].cellColumns
                                switch plan.merge {
                                case .mean:
                                    for c in 0..<cells {
                                        let v = gs[c] / count, col = cellCols[c]
                                        for r in rs { dst[r * cols + col] += v }
                                    }
                                case .max:
                                    for c in 0..<cells {
                                        let col = cellCols[c]
                                        dst[argmaxRow(src, rs, cols: cols, col: col) * cols + col] += gs[c]
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return da
    }

    /// The first row of `rs` whose value in column `col` is largest.
    @inline(__always)
    static func argmaxRow<T: BinaryFloatingPoint>(_ src: UnsafePointer<T>, _ rs: [Int], cols: Int, col: Int) -> Int {
        var best = rs[0], bv = src[rs[0] * cols + col]
        for r in rs.dropFirst() {
            let v = src[r * cols + col]
            if v > bv { bv = v; best = r }
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
