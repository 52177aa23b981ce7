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
    /// element), in 64K-element chunks over the threads.
    public static func binary(_ a: [Float], _ aShape: [Int], _ b: [Float], _ bShape: [Int],
                              _ outShape: [Int], _ op: Arithmetic) -> [Float] {
        let n = outShape.product
        let sameShape = aShape == bShape
        let scalarB = !sameShape && b.count == 1 && aShape == outShape
        let scalarA = !sameShape && !scalarB && a.count == 1 && bShape == outShape
        guard sameShape || scalarB || scalarA else {
            switch op {
            case .add: return binary(a, aShape, b, bShape, outShape, +)
            case .sub: return binary(a, aShape, b, bShape, outShape, -)
            case .mul: return binary(a, aShape, b, bShape, outShape, *)
            case .div: return binary(a, aShape, b, bShape, outShape, /)
            }
        }
        let mode = sameShape ? 0 : scalarB ? 1 : 2
        return [Float](unsafeUninitializedCapacity: n) { buf, c in
            defer { c = n }
            guard n > 0 else { return }
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    let ap = SendableConstPointer(pa.baseAddress!), bp = SendableConstPointer(pb.baseAddress!)
                    let outp = SendablePointer(buf.baseAddress!)
                    Parallel.forEachChunk(n, grain: 1 << 16) { r in
                        switch op {
                        case .add: arithmeticChunk(r, mode, ap.base, bp.base, outp.base) { $0 + $1 }
                        case .sub: arithmeticChunk(r, mode, ap.base, bp.base, outp.base) { $0 - $1 }
                        case .mul: arithmeticChunk(r, mode, ap.base, bp.base, outp.base) { $0 * $1 }
                        case .div: arithmeticChunk(r, mode, ap.base, bp.base, outp.base) { $0 / $1 }
                        }
                    }
                }
            }
        }
    }

    /// o[i] = f(x[i], y[i]) (mode 0), f(x[i], y[0]) (1) or f(x[0], y[i]) (2) for i in r.
    @inline(__always)
    static func arithmeticChunk(_ r: Range<Int>, _ mode: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                                _ o: UnsafeMutablePointer<Float>, _ f: (Float, Float) -> Float) {
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

    /// out[i] = f(a[ia], b[ib]) over the broadcast shape `outShape`.
    @inlinable
    public static func binary<T>(_ a: [T], _ aShape: [Int], _ b: [T], _ bShape: [Int],
                                 _ outShape: [Int], _ f: @Sendable (T, T) -> T) -> [T] {
        let n = outShape.product
        // Same shapes, or one side a single value: f per element on raw pointers, in chunks
        // over the threads from 64K elements (each output depends on its own inputs only).
        let sameShape = aShape == bShape
        let scalarB = !sameShape && b.count == 1 && aShape == outShape
        let scalarA = !sameShape && !scalarB && a.count == 1 && bShape == outShape
        if sameShape || scalarB || scalarA {
            return [T](unsafeUninitializedCapacity: n) { buf, c in
                defer { c = n }
                guard n > 0 else { return }
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        let ap = SendableConstPointer(pa.baseAddress!), bp = SendableConstPointer(pb.baseAddress!)
                        let op = SendablePointer(buf.baseAddress!)
                        Parallel.forEachChunk(n, grain: 1 << 16) { r in
                            let x = ap.base, y = bp.base, o = op.base
                            if sameShape {
                                for i in r { o[i] = f(x[i], y[i]) }
                            } else if scalarB {
                                let s = y[0]
                                for i in r { o[i] = f(x[i], s) }
                            } else {
                                let s = x[0]
                                for i in r { o[i] = f(s, y[i]) }
                            }
                        }
                    }
                }
            }
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
