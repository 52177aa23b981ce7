// Layout kernels for the shape ops (cat, narrow, constant pad, index_select) and the max
// reduction along one dim, with their transposes. Generic over the scalar; each output is
// written once, and every accumulating transpose sums in a fixed order in Double.

extension Kernels {
    /// Copies the box of sizes `box` from `src` (shape `srcShape`, corner `srcOffset`) into
    /// `dst` (shape `dstShape`, corner `dstOffset`). All shapes have the same rank.
    static func copyBox<T>(_ src: UnsafePointer<T>, _ srcShape: [Int], _ srcOffset: [Int],
                           _ dst: UnsafeMutablePointer<T>, _ dstShape: [Int], _ dstOffset: [Int], _ box: [Int]) {
        let r = box.count
        if box.contains(0) { return }
        if r == 0 { dst[0] = src[0]; return }
        let ss = Tensor.strides(of: srcShape), ds = Tensor.strides(of: dstShape)
        let run = box[r - 1]
        var idx = [Int](repeating: 0, count: r - 1)
        let rows = box.dropLast().reduce(1, *)
        for _ in 0..<rows {
            var so = srcOffset[r - 1], dof = dstOffset[r - 1]
            for d in 0..<(r - 1) {
                so += (idx[d] + srcOffset[d]) * ss[d]
                dof += (idx[d] + dstOffset[d]) * ds[d]
            }
            (dst + dof).update(from: src + so, count: run)
            var d = r - 2
            while d >= 0 {
                idx[d] += 1
                if idx[d] < box[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
    }

    /// `x[..., start:start+length, ...]` along `dim` (a copy).
    public static func narrow<T>(_ x: [T], _ shape: [Int], dim: Int, start: Int, length: Int) -> [T] {
        var box = shape
        box[dim] = length
        var off = [Int](repeating: 0, count: shape.count)
        off[dim] = start
        let zero = [Int](repeating: 0, count: shape.count)
        let n = box.product
        return [T](unsafeUninitializedCapacity: n) { buf, c in
            x.withUnsafeBufferPointer { xb in
                if n > 0 { copyBox(xb.baseAddress!, shape, off, buf.baseAddress!, box, zero, box) }
            }
            c = n
        }
    }

    /// Transpose of `narrow`: `g` placed at `start` along `dim` in zeros of `inputShape`.
    public static func narrowBackward<T: BinaryFloatingPoint>(_ g: [T], inputShape: [Int], dim: Int, start: Int, length: Int) -> [T] {
        var box = inputShape
        box[dim] = length
        var off = [Int](repeating: 0, count: inputShape.count)
        off[dim] = start
        return embed(g, box, into: inputShape, at: off, fill: 0)
    }

    /// A tensor of `outShape` filled with `fill`, with `x` (shape `shape`) copied at corner `offset`.
    public static func embed<T>(_ x: [T], _ shape: [Int], into outShape: [Int], at offset: [Int], fill: T) -> [T] {
        var out = [T](repeating: fill, count: outShape.product)
        let zero = [Int](repeating: 0, count: shape.count)
        if x.isEmpty { return out }
        x.withUnsafeBufferPointer { xb in
            out.withUnsafeMutableBufferPointer { ob in
                copyBox(xb.baseAddress!, shape, zero, ob.baseAddress!, outShape, offset, shape)
            }
        }
        return out
    }

    /// The box of sizes `box` at corner `offset` of `x` (shape `shape`).
    public static func extract<T>(_ x: [T], _ shape: [Int], at offset: [Int], box: [Int]) -> [T] {
        let n = box.product
        let zero = [Int](repeating: 0, count: shape.count)
        return [T](unsafeUninitializedCapacity: n) { buf, c in
            x.withUnsafeBufferPointer { xb in
                if n > 0 { copyBox(xb.baseAddress!, shape, offset, buf.baseAddress!, box, zero, box) }
            }
            c = n
        }
    }

    /// Per-dim (before, after) padding of a `rank`-dim tensor from F.pad's flat list
    /// (last dim first: [left, right, top, bottom, ...]).
    public static func padPairs(_ pad: [Int], rank: Int) -> [(Int, Int)] {
        var pairs = [(Int, Int)](repeating: (0, 0), count: rank)
        for i in 0..<(pad.count / 2) { pairs[rank - 1 - i] = (pad[2 * i], pad[2 * i + 1]) }
        return pairs
    }

    /// Constant padding (F.pad, mode 'constant'); `pad` as in F.pad, non-negative.
    public static func pad<T>(_ x: [T], _ shape: [Int], pad: [Int], value: T) -> [T] {
        let pairs = padPairs(pad, rank: shape.count)
        let outShape = zip(shape, pairs).map { $0 + $1.0 + $1.1 }
        return embed(x, shape, into: outShape, at: pairs.map(\.0), fill: value)
    }

    /// Transpose of `pad`: the interior of `g` (shape of the padded tensor).
    public static func padBackward<T>(_ g: [T], inputShape: [Int], pad: [Int]) -> [T] {
        let pairs = padPairs(pad, rank: inputShape.count)
        let outShape = zip(inputShape, pairs).map { $0 + $1.0 + $1.1 }
        return extract(g, outShape, at: pairs.map(\.0), box: inputShape)
    }

    /// Concatenation along `dim` of tensors whose shapes agree elsewhere.
    public static func cat<T>(_ xs: [[T]], _ shapes: [[Int]], dim: Int) -> [T] {
        let outer = shapes[0][..<dim].reduce(1, *), inner = shapes[0][(dim + 1)...].reduce(1, *)
        let runs = shapes.map { $0[dim] * inner }
        let total = runs.reduce(0, +)
        let n = outer * total
        return [T](unsafeUninitializedCapacity: n) { buf, c in
            var off = 0
            for (x, run) in zip(xs, runs) where run > 0 {
                x.withUnsafeBufferPointer { xb in
                    for o in 0..<outer {
                        (buf.baseAddress! + o * total + off).initialize(from: xb.baseAddress! + o * run, count: run)
                    }
                }
                off += run
            }
            c = n
        }
    }

    /// `x.index_select(dim, indices)` for `x` seen as [O, K, I] along K.
    public static func indexSelect<T>(_ x: [T], outer: Int, axis k: Int, inner: Int, indices: [Int]) -> [T] {
        let m = indices.count, n = outer * m * inner
        return [T](unsafeUninitializedCapacity: n) { buf, c in
            x.withUnsafeBufferPointer { xb in
                for o in 0..<outer {
                    for (t, i) in indices.enumerated() {
                        (buf.baseAddress! + (o * m + t) * inner).initialize(from: xb.baseAddress! + (o * k + i) * inner, count: inner)
                    }
                }
            }
            c = n
        }
    }

    /// Transpose of `indexSelect`: scatter-add of `g` [O, M, I] onto [O, K, I], in index order, in Double.
    public static func indexSelectBackward<T: BinaryFloatingPoint>(_ g: [T], outer: Int, axis k: Int, inner: Int, indices: [Int]) -> [T] {
        let m = indices.count
        var acc = [Double](repeating: 0, count: outer * k * inner)
        for o in 0..<outer {
            for (t, i) in indices.enumerated() {
                let d = (o * k + i) * inner, s = (o * m + t) * inner
                for j in 0..<inner { acc[d + j] += Double(g[s + j]) }
            }
        }
        return acc.map { T($0) }
    }

    /// Maximum along K of `x` seen as [O, K, I], and the first index where it occurs
    /// (NaN counts as the maximum, as in torch.max).
    public static func maxAlong<T: BinaryFloatingPoint>(_ x: [T], outer: Int, axis k: Int, inner: Int) -> (values: [T], indices: [Int]) {
        precondition(k > 0, "max: cannot reduce a dim of size 0")
        var v = [T](repeating: 0, count: outer * inner), ix = [Int](repeating: 0, count: outer * inner)
        for o in 0..<outer {
            for i in 0..<inner {
                var best = 0, m = x[o * k * inner + i]
                if !m.isNaN {
                    for j in 1..<k {
                        let e = x[(o * k + j) * inner + i]
                        if e > m || e.isNaN {
                            m = e
                            best = j
                            if e.isNaN { break }
                        }
                    }
                }
                v[o * inner + i] = m
                ix[o * inner + i] = best
            }
        }
        return (v, ix)
    }

    /// Transpose of `maxAlong`: each g goes to its arg-max.
    public static func maxAlongBackward<T: BinaryFloatingPoint>(_ g: [T], indices: [Int], outer: Int, axis k: Int, inner: Int) -> [T] {
        var dx = [T](repeating: 0, count: outer * k * inner)
        for o in 0..<outer {
            for i in 0..<inner { dx[(o * k + indices[o * inner + i]) * inner + i] = g[o * inner + i] }
        }
        return dx
    }
}
