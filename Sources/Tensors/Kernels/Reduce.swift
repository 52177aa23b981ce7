// Reductions and layout kernels, generic over the scalar.

import CBLAS

extension Kernels {
    /// Sums `x` over `dims` (sorted, non-negative). Each output is accumulated in Double in
    /// row-major order of the reduced elements. Output shape: `x` with `dims` removed
    /// (or set to 1 with `keepDim`).
    public static func sum<T: BinaryFloatingPoint>(_ x: [T], _ shape: [Int], dims: [Int], keepDim: Bool) -> ([T], [Int]) {
        let keptShape = shape.enumerated().map { dims.contains($0.offset) ? 1 : $0.element }
        let outShape = keepDim ? keptShape : shape.enumerated().filter { !dims.contains($0.offset) }.map(\.element)
        let n = keptShape.product
        var acc = [Double](repeating: 0, count: n)
        if let first = dims.first, dims == Array(first ..< first + dims.count), !x.isEmpty {
            // One block of adjacent dims: x as [A, R, B], out[a, b] = Σ_r x[a, r, b] in r order,
            // the order of the general loop below, without its per-element index arithmetic.
            let end = first + dims.count
            let outer = Array(shape[..<first]).product, r = Array(shape[first ..< end]).product
            let inner = Array(shape[end...]).product
            x.withUnsafeBufferPointer { px in
                acc.withUnsafeMutableBufferPointer { pa in
                    let xs = px.baseAddress!, sums = pa.baseAddress!
                    if inner == 1 {
                        // Four outputs advance together (one lane each).
                        var o0 = 0
                        while o0 < outer {
                            let cn = Swift.min(4, outer - o0)
                            let r0 = xs + o0 * r
                            let r1 = cn > 1 ? r0 + r : r0, r2 = cn > 2 ? r0 + 2 * r : r0, r3 = cn > 3 ? r0 + 3 * r : r0
                            var s = SIMD4<Double>()
                            for q in 0..<r { s += SIMD4(Double(r0[q]), Double(r1[q]), Double(r2[q]), Double(r3[q])) }
                            for i in 0..<cn { sums[o0 + i] = s[i] }
                            o0 += 4
                        }
                    } else {
                        for a in 0..<outer {
                            let dst = sums + a * inner
                            for q in 0..<r {
                                let src = xs + (a * r + q) * inner
                                for j in 0..<inner { dst[j] += Double(src[j]) }
                            }
                        }
                    }
                }
            }
            return (acc.map { T($0) }, outShape)
        }
        let st = broadcastStrides(keptShape, to: shape)
        let r = shape.count
        var idx = [Int](repeating: 0, count: r)
        for i in 0..<x.count {
            var o = 0
            for d in 0..<r { o += idx[d] * st[d] }
            acc[o] += Double(x[i])
            var d = r - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < shape[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        return (acc.map { T($0) }, outShape)
    }

    /// Gradient of `sum`: broadcasts `g` back over the reduced dims.
    public static func sumBackward<T>(_ g: [T], inputShape: [Int], dims: [Int], keepDim: Bool) -> [T] {
        let keptShape = inputShape.enumerated().map { dims.contains($0.offset) ? 1 : $0.element }
        return expand(g, keptShape, to: inputShape)
    }

    /// Broadcasts `x` of `shape` to `outShape` (a copy).
    public static func expand<T>(_ x: [T], _ shape: [Int], to outShape: [Int]) -> [T] {
        if shape == outShape { return x }
        let st = broadcastStrides(shape, to: outShape)
        let r = outShape.count, n = outShape.product
        var idx = [Int](repeating: 0, count: r)
        return [T](unsafeUninitializedCapacity: n) { buf, c in
            for o in 0..<n {
                var i = 0
                for d in 0..<r { i += idx[d] * st[d] }
                buf[o] = x[i]
                var d = r - 1
                while d >= 0 {
                    idx[d] += 1
                    if idx[d] < outShape[d] { break }
                    idx[d] = 0
                    d -= 1
                }
            }
            c = n
        }
    }

    /// Transposes `x` (shape `shape`) so that output dim i is input dim `dims[i]`.
    public static func permute<T>(_ x: [T], _ shape: [Int], _ dims: [Int]) -> [T] {
        let r = shape.count
        precondition(dims.count == r && Set(dims).count == r && dims.allSatisfy { $0 >= 0 && $0 < r },
                     "permute: dims \(dims) are not a permutation for shape \(shape)")
        let inStrides = Tensor.strides(of: shape)
        let outShape = dims.map { shape[$0] }
        let srcStrides = dims.map { inStrides[$0] }
        let n = x.count
        if n == 0 { return [] }
        if let fast = permuteBlocked(x, outShape, srcStrides) { return fast }
        var idx = [Int](repeating: 0, count: r)
        return [T](unsafeUninitializedCapacity: n) { buf, c in
            var src = 0
            for o in 0..<n {
                buf[o] = x[src]
                var d = r - 1
                while d >= 0 {
                    idx[d] += 1
                    src += srcStrides[d]
                    if idx[d] < outShape[d] { break }
                    src -= srcStrides[d] * outShape[d]
                    idx[d] = 0
                    d -= 1
                }
            }
            c = n
        }
    }

    /// Fast paths of `permute` (same result, element for element): after merging output dims
    /// that stay adjacent in the input, either the innermost run is contiguous in both (copied
    /// run by run) or the last two output dims are a transpose of a contiguous input dim (copied
    /// in 32×32 tiles, whole Float ones by 16 × 16 register transposes), split over the threads
    /// by output rows or 32-row bands (pure copies: the same result on any thread count). Nil
    /// when neither applies.
    static func permuteBlocked<T>(_ x: [T], _ outShape: [Int], _ srcStrides: [Int]) -> [T]? {
        // Drop size-1 dims, then merge dim d into d+1 when srcStride[d] == size[d+1]·srcStride[d+1].
        var shape: [Int] = [], st: [Int] = []
        for (s, t) in zip(outShape, srcStrides) where s != 1 {
            if let ls = shape.last, let lt = st.last, lt == s * t {
                shape[shape.count - 1] = ls * s
                st[st.count - 1] = t
            } else {
                shape.append(s)
                st.append(t)
            }
        }
        let n = x.count
        if shape.count <= 1 { return x }  // the identity after merging
        let r = shape.count
        let outer = shape.dropLast(2).reduce(1, *)
        let outerShape = Array(shape.dropLast(2)), outerStrides = Array(st.dropLast(2))
        let (a, b) = (shape[r - 2], shape[r - 1]), (sa, sb) = (st[r - 2], st[r - 1])
        // Source offset of each outer index, row-major.
        var outerOff = [Int](repeating: 0, count: outer)
        var idx = [Int](repeating: 0, count: outerShape.count)
        for o in 0..<outer {
            var off = 0
            for d in 0..<outerShape.count { off += idx[d] * outerStrides[d] }
            outerOff[o] = off
            var d = outerShape.count - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < outerShape[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        // Pure copies, so any split over threads gives the same result: output rows (runs) or
        // bands of 32 output rows (tiles), at least ~32K elements per thread.
        let minElements = 1 << 15
        let offsets = outerOff
        if sb == 1 {
            // Contiguous runs of b elements: output row (o, i) from x[off(o) + i·sa ..< + b].
            return x.withUnsafeBufferPointer { xb in
                [T](unsafeUninitializedCapacity: n) { buf, c in
                    let src = SendableConstPointer(xb.baseAddress!), dst = SendablePointer(buf.baseAddress!)
                    Parallel.forEachChunk(outer * a, grain: Swift.max(1, minElements / b)) { rows in
                        for row in rows {
                            let o = row / a, i = row % a
                            (dst.base + row * b).initialize(from: src.base + offsets[o] + i * sa, count: b)
                        }
                    }
                    c = n
                }
            }
        }
        guard sa == 1 else { return nil }
        // out[o, i, j] = x[off + i + j·sb]: a transpose, in 32 × 32 tiles.
        let tile = 32
        let bands = (a + tile - 1) / tile
        return x.withUnsafeBufferPointer { xb in
            [T](unsafeUninitializedCapacity: n) { buf, c in
                let src = SendableConstPointer(xb.baseAddress!), dst = SendablePointer(buf.baseAddress!)
                Parallel.forEachChunk(outer * bands, grain: Swift.max(1, minElements / (tile * b))) { units in
                    for unit in units {
                        let o = unit / bands, i0 = (unit % bands) * tile, i1 = Swift.min(i0 + tile, a)
                        let s0 = src.base + offsets[o], d0 = dst.base + o * a * b
                        var j0 = 0
                        while j0 < b {
                            let j1 = Swift.min(j0 + tile, b)
                            if T.self == Float.self && i1 - i0 == tile && j1 - j0 == tile {
                                // A whole Float tile: four 16 × 16 register transposes.
                                let s = UnsafeRawPointer(s0).assumingMemoryBound(to: Float.self)
                                let d = UnsafeMutableRawPointer(d0).assumingMemoryBound(to: Float.self)
                                for ii in stride(from: 0, to: tile, by: 16) {
                                    for jj in stride(from: 0, to: tile, by: 16) {
                                        flmm_transpose16(s + (j0 + jj) * sb + i0 + ii, sb, d + (i0 + ii) * b + j0 + jj, b)
                                    }
                                }
                            } else {
                                for i in i0..<i1 {
                                    for j in j0..<j1 { (d0 + i * b + j).initialize(to: s0[i + j * sb]) }
                                }
                            }
                            j0 = j1
                        }
                    }
                }
                c = n
            }
        }
    }
}
