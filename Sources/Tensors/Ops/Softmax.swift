// Softmax and log-softmax along one dim (fused primitives; see Kernels/SoftmaxKernels.swift).

extension Tensor {
    /// Splits `shape` around `dim` into (outer, size of dim, inner).
    func splitAround(_ dim: Int) -> (outer: Int, k: Int, inner: Int) {
        (shape[..<dim].reduce(1, *), shape[dim], shape[(dim + 1)...].reduce(1, *))
    }

    /// `torch.softmax(x, dim)`: exp(x − max) / Σ exp(x − max) along `dim` (negative counts from the end).
    public func softmax(dim: Int) -> Tensor {
        let d = normalizedDim(dim, rank: rank, op: "softmax")
        let (o, k, i) = splitAround(d)
        return record(Tensor(shape: shape, data: Kernels.softmax(data, outer: o, axis: k, inner: i, log: false)),
                      [self], .softmax(dim: d))
    }

    /// `torch.log_softmax(x, dim)`: (x − max) − log Σ exp(x − max) along `dim`.
    public func logSoftmax(dim: Int) -> Tensor {
        let d = normalizedDim(dim, rank: rank, op: "logSoftmax")
        let (o, k, i) = splitAround(d)
        return record(Tensor(shape: shape, data: Kernels.softmax(data, outer: o, axis: k, inner: i, log: true)),
                      [self], .logSoftmax(dim: d))
    }
}

/// `torch.softmax(x, dim)`.
public func softmax(_ x: Tensor, dim: Int) -> Tensor { x.softmax(dim: dim) }

/// `torch.log_softmax(x, dim)`.
public func logSoftmax(_ x: Tensor, dim: Int) -> Tensor { x.logSoftmax(dim: dim) }
