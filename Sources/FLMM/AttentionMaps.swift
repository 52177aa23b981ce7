// F-LMM's phrase attention maps (frozen_*.py `_forward`): for each phrase (mask id k), its
// tokens' attention rows restricted to the image columns, placed on the layout's grid(s),
// merged over the phrase's tokens (mean or max), stacked layer-major → [N, C, h, w].
//
// Two input forms:
//   * the full attention of the LMM, [L, NH, S, S], with `input_ids` and `mask_ids` of the S
//     tokens (image columns = `input_ids == layout.imageTokenID`);
//   * the form a GroundingCache stores: only the phrase tokens' rows over the image columns,
//     [L, NH, T, K] with K = layout.imageTokenCount, and the mask id of each of the T rows.
// Both end in the one fused, differentiable op `Tensor.phraseMaps` (Tensors).

import Tensors

/// A bad attention input: each case names what was expected.
public enum AttentionMapError: Error, CustomStringConvertible, Equatable {
    /// An input tensor (`what`: "attention", "hidden states") does not have the expected shape.
    case shape(what: String, expected: String, actual: [Int])
    /// `input_ids` / `mask_ids` do not have one entry per attention row.
    case tokenCount(what: String, expected: Int, actual: Int)
    /// The number of image tokens found differs from what the layout needs (h·w, …).
    case imageTokenCount(layout: String, expected: Int, found: Int)
    /// A phrase (mask id) has no token.
    case emptyPhrase(mask: Int, numMasks: Int)
    /// A token's mask id is neither −1 nor in 0..<numMasks.
    case maskIDOutOfRange(token: Int, maskID: Int, numMasks: Int)
    /// NaN or ±Inf in a phrase token's attention to an image column.
    case nonFinite(layer: Int, head: Int, row: Int, imageColumn: Int, value: Float)
    /// The layout's segments do not tile its maps.
    case badLayout(layout: String, detail: String)

    public var description: String {
        switch self {
        case .shape(let w, let e, let a):
            return "attention maps: expected \(w) \(e), got shape \(a)"
        case .tokenCount(let w, let e, let a):
            return "attention maps: expected \(e) \(w) (one per attention row), got \(a)"
        case .imageTokenCount(let l, let e, let f):
            return "attention maps: layout \(l) needs \(e) image tokens, found \(f)"
        case .emptyPhrase(let m, let n):
            return "attention maps: mask \(m) of \(n) has no token (every mask id 0..<\(n) needs at least one)"
        case .maskIDOutOfRange(let t, let id, let n):
            return "attention maps: token \(t) has mask id \(id); expected -1 (no mask) or 0..<\(n)"
        case .nonFinite(let l, let h, let r, let c, let v):
            return "attention maps: non-finite value \(v) at layer \(l), head \(h), row \(r), image column \(c)"
        case .badLayout(let l, let d):
            return "attention layout \(l): \(d)"
        }
    }
}

/// Builds F-LMM's mask-head input from attention probabilities.
public enum AttentionMaps {
    /// Phrase maps from the full attention `attentions` [L, NH, S, S] (the LMM's per-layer
    /// probabilities, batch dim dropped), `inputIDs` and `maskIDs` (−1 = in no phrase) of the S
    /// tokens, for masks 0..<numMasks → [numMasks, maps·L·NH, h, w].
    public static func extract(attentions: Tensor, inputIDs: [Int], maskIDs: [Int], numMasks: Int,
                               layout: some AttentionLayout, merge: PhraseMerge) throws -> Tensor {
        guard attentions.rank == 4, attentions.shape[2] == attentions.shape[3] else {
            throw AttentionMapError.shape(what: "attention", expected: "[L, NH, S, S]", actual: attentions.shape)
        }
        let s = attentions.shape[2]
        guard inputIDs.count == s else { throw AttentionMapError.tokenCount(what: "input ids", expected: s, actual: inputIDs.count) }
        guard maskIDs.count == s else { throw AttentionMapError.tokenCount(what: "mask ids", expected: s, actual: maskIDs.count) }
        let imageColumns = inputIDs.indices.filter { inputIDs[$0] == layout.imageTokenID }
        guard imageColumns.count == layout.imageTokenCount else {
            throw AttentionMapError.imageTokenCount(layout: layout.name, expected: layout.imageTokenCount, found: imageColumns.count)
        }
        return try build(attentions, imageColumns: imageColumns, rowMaskIDs: maskIDs, numMasks: numMasks,
                         layout: layout, merge: merge)
    }

    /// Phrase maps from cached phrase rows `phraseRows` [L, NH, T, K] (only the phrase tokens'
    /// rows, only the K = layout.imageTokenCount image columns), with the mask id of each row.
    public static func extract(phraseRows: Tensor, rowMaskIDs: [Int], numMasks: Int,
                               layout: some AttentionLayout, merge: PhraseMerge) throws -> Tensor {
        guard phraseRows.rank == 4 else {
            throw AttentionMapError.shape(what: "attention", expected: "[L, NH, T, \(layout.imageTokenCount)]",
                                          actual: phraseRows.shape)
        }
        guard phraseRows.shape[3] == layout.imageTokenCount else {
            throw AttentionMapError.imageTokenCount(layout: layout.name, expected: layout.imageTokenCount, found: phraseRows.shape[3])
        }
        guard rowMaskIDs.count == phraseRows.shape[2] else {
            throw AttentionMapError.tokenCount(what: "mask ids", expected: phraseRows.shape[2], actual: rowMaskIDs.count)
        }
        return try build(phraseRows, imageColumns: Array(0..<layout.imageTokenCount), rowMaskIDs: rowMaskIDs,
                         numMasks: numMasks, layout: layout, merge: merge)
    }

    /// Each phrase's rows merged over its tokens, by mean and by max: rows [L, NH, R, K] with the
    /// mask id of each row → (mean, max), each [L, NH, numMasks, K] (phrase k in row k).
    /// Mean sums in Double in row order and max keeps the first maximum, as the phrase-map kernel
    /// does, so maps built from these rows equal maps built from the token rows bit for bit
    /// (for layouts without a per-token resize).
    public static func mergedRows(_ rows: Tensor, rowMaskIDs: [Int], numMasks: Int) throws -> (mean: Tensor, max: Tensor) {
        guard rows.rank == 4 else {
            throw AttentionMapError.shape(what: "attention", expected: "[L, NH, R, K]", actual: rows.shape)
        }
        guard rowMaskIDs.count == rows.shape[2] else {
            throw AttentionMapError.tokenCount(what: "mask ids", expected: rows.shape[2], actual: rowMaskIDs.count)
        }
        let phrases = try phraseRows(maskIDs: rowMaskIDs, numMasks: numMasks)
        let (lh, r, k) = (rows.shape[0] * rows.shape[1], rows.shape[2], rows.shape[3])
        var mean = [Float](repeating: 0, count: lh * numMasks * k), max = mean
        for p in 0..<lh {
            for (m, rs) in phrases.enumerated() {
                let out = (p * numMasks + m) * k
                for c in 0..<k {
                    var s = 0.0, best = rows.data[(p * r + rs[0]) * k + c]
                    for t in rs {
                        let v = rows.data[(p * r + t) * k + c]
                        s += Double(v)
                        if v > best { best = v }
                    }
                    mean[out + c] = Float(s / Double(rs.count))
                    max[out + c] = best
                }
            }
        }
        let shape = [rows.shape[0], rows.shape[1], numMasks, k]
        return (Tensor(shape: shape, data: mean), Tensor(shape: shape, data: max))
    }

    /// The rows of each phrase, in sequence order: `rows[k]` = tokens with mask id k.
    public static func phraseRows(maskIDs: [Int], numMasks: Int) throws -> [[Int]] {
        var rows = [[Int]](repeating: [], count: numMasks)
        for (t, id) in maskIDs.enumerated() {
            if id == -1 { continue }
            guard id >= 0 && id < numMasks else {
                throw AttentionMapError.maskIDOutOfRange(token: t, maskID: id, numMasks: numMasks)
            }
            rows[id].append(t)
        }
        if let k = rows.firstIndex(where: { $0.isEmpty }) {
            throw AttentionMapError.emptyPhrase(mask: k, numMasks: numMasks)
        }
        return rows
    }

    static func build(_ a: Tensor, imageColumns: [Int], rowMaskIDs: [Int], numMasks: Int,
                      layout: some AttentionLayout, merge: PhraseMerge) throws -> Tensor {
        let rows = try phraseRows(maskIDs: rowMaskIDs, numMasks: numMasks)
        let tables = try layout.cellColumns()
        try checkFinite(a, rows: rows.flatMap { $0 }, imageColumns: imageColumns)
        let maps = zip(layout.maps, tables).map { g, t in g.plan(cellColumns: t.map { imageColumns[$0] }) }
        let plan = PhraseMapPlan(rowsPerPhrase: rows, maps: maps, merge: merge, channelOrder: layout.channelOrder)
        return a.phraseMaps(plan)
    }

    /// Throws on the first NaN/Inf among the given rows × image columns of every layer and head.
    static func checkFinite(_ a: Tensor, rows: [Int], imageColumns: [Int]) throws {
        let (nh, r, k) = (a.shape[1], a.shape[2], a.shape[3])
        for p in 0..<(a.shape[0] * nh) {
            for row in rows.sorted() {
                let base = (p * r + row) * k
                for (c, col) in imageColumns.enumerated() where !a.data[base + col].isFinite {
                    throw AttentionMapError.nonFinite(layer: p / nh, head: p % nh, row: row, imageColumn: c,
                                                      value: a.data[base + col])
                }
            }
        }
    }
}
