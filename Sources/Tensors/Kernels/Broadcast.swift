// Elementwise kernels with NumPy/PyTorch broadcasting, generic over the scalar so that the
// same code runs in Float (the toolkit) and in Double (finite-difference gradient checks).

extension Kernels {
    /// The broadcast shape of `a` and `b` (trailing dimensions aligned).
    public static func broadcastShape(_ a: [Int], _ b: [Int], op: String) -> [Int] {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            precondition(da == db || da == 1 || db == 1,
                         "\(op): shapes \(a) and \(b) cannot be broadcast together")
            out[i] = da == 1 ? db : da
        }
        return out
    }

    /// Strides of `shape` seen as `outShape` under broadcasting (0 on broadcast dimensions).
    public static func broadcastStrides(_ shape: [Int], to outShape: [Int]) -> [Int] {
        let r = outShape.count
        let s = Tensor.strides(of: shape)
        var out = [Int](repeating: 0, count: r)
        for i in 0..<shape.count {
            let o = r - shape.count + i
            out[o] = shape[i] == 1 && outShape[o] != 1 ? 0 : s[i]
        }
        return out
    }

    /// The four arithmetic ops behind `Tensor`'s operators.
    public enum Arithmetic: Sendable { case add, sub, mul, div }

    /// a (op) b over the broadcast shape `outShape`: `binary(_:_:_:_:_:_:)` with the op, but
    /// the same-shape and single-value cases run a loop with the op compiled in (no call per
    /// element).
    public static func binary(_ a: [Float], _ aShape: [Int], _ b: [Float], _ bShape: [Int],
                              _ outShape: [Int], _ op: Arithmetic) -> [Float] {
        guard let mode = directMode(aShape, a.count, bShape, b.count, outShape) else {
            switch op {
            case .add: return binary(a, aShape, b, bShape, outShape, +)
            case .sub: return binary(a, aShape, b, bShape, outShape, -)
            case .mul: return binary(a, aShape, b, bShape, outShape, *)
            case .div: return binary(a, aShape, b, bShape, outShape, /)
            }
        }
        return chunkedElementwise(a, b, count: outShape.product) { r, x, y, o in
            switch op {
            case .add: directChunk(r, mode, x, y, o) { $0 + $1 }
            case .sub: directChunk(r, mode, x, y, o) { $0 - $1 }
            case .mul: directChunk(r, mode, x, y, o) { $0 * $1 }
            case .div: directChunk(r, mode, x, y, o) { $0 / $1 }
            }
        }
    }

    /// How a binary op can index its inputs directly: 0 same shapes, 1 b a single value
    /// broadcast over a, 2 a a single value broadcast over b; nil for any other broadcast.
    @inlinable
    static func directMode(_ aShape: [Int], _ aCount: Int, _ bShape: [Int], _ bCount: Int, _ outShape: [Int]) -> Int? {
        if aShape == bShape { return 0 }
        if bCount == 1 && aShape == outShape { return 1 }
        if aCount == 1 && bShape == outShape { return 2 }
        return nil
    }

    /// o[i] = f(x[i], y[i]) (mode 0), f(x[i], y[0]) (1) or f(x[0], y[i]) (2) for i in r.
    @inlinable @inline(__always)
    static func directChunk<T>(_ r: Range<Int>, _ mode: Int, _ x: UnsafePointer<T>, _ y: UnsafePointer<T>,
                               _ o: UnsafeMutablePointer<T>, _ f: (T, T) -> T) {
        switch mode {
        case 0:
            for i in r { o[i] = f(x[i], y[i]) }
        case 1:
            let s = y[0]
            for i in r { o[i] = f(x[i], s) }
        default:
            let s = x[0]
            for i in r { o[i] = f(s, y[i]) }
        }
    }

    /// A `count`-element output written by `chunk(range, a, b, out)` over 64K-element ranges on
    /// the threads. Each output element must depend on its own inputs only (then any split gives
    /// the same bits); `chunk` writes every element of its range.
    @inlinable
    public static func chunkedElementwise<T>(
        _ a: [T], _ b: [T], count n: Int,
        _ chunk: @Sendable (Range<Int>, UnsafePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>) -> Void
    ) -> [T] {
        [T](unsafeUninitializedCapacity: n) { buf, initialized in
            defer { initialized = n }
            guard n > 0 else { return }
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    let ap = SendableConstPointer(pa.baseAddress!), bp = SendableConstPointer(pb.baseAddress!)
                    let op = SendablePointer(buf.baseAddress!)
                    Parallel.forEachChunk(n, grain: 1 << 16) { r in chunk(r, ap.base, bp.base, op.base) }
                }
            }
        }
    }

    /// out[i] = f(a[ia], b[ib]) over the broadcast shape `outShape` (same shapes and single
    /// values index directly, in chunks over the threads; other broadcasts walk the strides).
    @inlinable
    public static func binary<T>(_ a: [T], _ aShape: [Int], _ b: [T], _ bShape: [Int],
                                 _ outShape: [Int], _ f: @Sendable (T, T) -> T) -> [T] {
        let n = outShape.product
        if let mode = directMode(aShape, a.count, bShape, b.count, outShape) {
            return chunkedElementwise(a, b, count: n) { r, x, y, o in directChunk(r, mode, x, y, o, f) }
        }
        let sa = broadcastStrides(aShape, to: outShape), sb = broadcastStrides(bShape, to: outShape)
        let r = outShape.count
        let inner = r == 0 ? 1 : outShape[r - 1]
        let ia = r == 0 ? 0 : sa[r - 1], ib = r == 0 ? 0 : sb[r - 1]
        var idx = [Int](repeating: 0, count: max(r - 1, 0))
        return [T](unsafeUninitializedCapacity: n) { buf, c in
            var o = 0
            while o < n {
                var oa = 0, ob = 0
                for d in 0..<idx.count { oa += idx[d] * sa[d]; ob += idx[d] * sb[d] }
                for j in 0..<inner { buf[o + j] = f(a[oa + j * ia], b[ob + j * ib]) }
                o += inner
                var d = idx.count - 1
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

    /// Sums `g` (shape `gShape`) down to `shape`, the reverse of broadcasting `shape` to `gShape`.
    /// Each output is accumulated in Double, visiting `g` in row-major order.
    public static func sumToShape<T: BinaryFloatingPoint>(_ g: [T], _ gShape: [Int], _ shape: [Int]) -> [T] {
        if gShape == shape { return g }
        let n = shape.product
        var acc = [Double](repeating: 0, count: n)
        let st = broadcastStrides(shape, to: gShape)
        let r = gShape.count
        var idx = [Int](repeating: 0, count: r)
        for i in 0..<g.count {
            var o = 0
            for d in 0..<r { o += idx[d] * st[d] }
            acc[o] += Double(g[i])
            var d = r - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < gShape[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        return acc.map { T($0) }
    }
}

/// Namespace of the raw kernels: they take and return flat arrays plus shapes, record nothing,
/// and are generic over the scalar where a Double version is needed for gradient checks.
public enum Kernels {}
