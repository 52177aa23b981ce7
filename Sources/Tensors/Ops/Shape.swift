// Reductions and shape ops.

extension Tensor {
    /// Sum over `dims` (all dims when empty... use `sum()` for that), PyTorch's `x.sum(dims, keepdim)`.
    public func sum(_ dims: [Int], keepDim: Bool = false) -> Tensor {
        let ds = Array(Set(dims.map { normalizedDim($0, rank: rank, op: "sum") })).sorted()
        let (d, s) = Kernels.sum(data, shape, dims: ds, keepDim: keepDim)
        return record(Tensor(shape: s, data: d), [self], .sum(dims: ds, keepDim: keepDim))
    }
    /// Sum of all elements, a 0-d tensor.
    public func sum() -> Tensor { sum(Array(0..<rank)) }
    /// Mean over `dims`: the sum divided by the number of reduced elements.
    public func mean(_ dims: [Int], keepDim: Bool = false) -> Tensor {
        let n = dims.map { size($0) }.product
        return sum(dims, keepDim: keepDim) / Float(n)
    }
    /// Mean of all elements, a 0-d tensor.
    public func mean() -> Tensor { sum() / Float(count) }

    /// The same data with a new shape; one entry may be -1 (inferred).
    public func reshape(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let rest = s.enumerated().filter { $0.offset != i }.map(\.element).product
            precondition(rest > 0 && count % rest == 0, "reshape: cannot view \(shape) as \(newShape)")
            s[i] = count / rest
        }
        precondition(s.product == count, "reshape: cannot view \(shape) (\(count) elements) as \(newShape)")
        return record(Tensor(shape: s, data: data), [self], .reshape)
    }

    /// Reorders dimensions: output dim i is input dim `dims[i]` (PyTorch's `permute`). Copies.
    public func permute(_ dims: [Int]) -> Tensor {
        let ds = dims.map { normalizedDim($0, rank: rank, op: "permute") }
        return record(Tensor(shape: ds.map { shape[$0] }, data: Kernels.permute(data, shape, ds)),
                      [self], .permute(ds))
    }

    /// Swaps two dimensions (PyTorch's `transpose`).
    public func transpose(_ a: Int, _ b: Int) -> Tensor {
        var p = Array(0..<rank)
        p.swapAt(normalizedDim(a, rank: rank, op: "transpose"), normalizedDim(b, rank: rank, op: "transpose"))
        return permute(p)
    }
}
