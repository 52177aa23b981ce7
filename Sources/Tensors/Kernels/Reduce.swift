// Reductions and layout kernels, generic over the scalar.

extension Kernels {
    /// Sums `x` over `dims` (sorted, non-negative). Each output is accumulated in Double in
    /// row-major order of the reduced elements. Output shape: `x` with `dims` removed
    /// (or set to 1 with `keepDim`).
    public static func sum<T: BinaryFloatingPoint>(_ x: [T], _ shape: [Int], dims: [Int], keepDim: Bool) -> ([T], [Int]) {
        let keptShape = shape.enumerated().map { dims.contains($0.offset) ? 1 : $0.element }
        let outShape = keepDim ? keptShape : shape.enumerated().filter { !dims.contains($0.offset) }.map(\.element)
        let n = keptShape.product
        var acc = [Double](repeating: 0, count: n)
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
}
