// torch.matmul with batch broadcasting.

/// torch.matmul: matrix product with batch broadcasting.
/// - a [..., N, K] @ b [..., K, M] -> [broadcast(batch a, batch b)..., N, M]
/// - a 1-D [K] is treated as [1, K] and the N dim is dropped; b 1-D [K] as [K, 1] and the M
///   dim is dropped (two 1-D inputs give a 0-d dot product).
/// Each output element is one GEMM sum in K order (see Kernels.gemm).
public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.rank >= 1 && b.rank >= 1, "matmul: 0-d operand: \(a.shape) @ \(b.shape)")
    let a2 = a.rank == 1 ? a.reshape([1, a.shape[0]]) : a
    let b2 = b.rank == 1 ? b.reshape([b.shape[0], 1]) : b
    let outShape = Kernels.matmulShape(a2.shape, b2.shape)
    let out = record(Tensor(shape: outShape, data: Kernels.matmul(a2.data, a2.shape, b2.data, b2.shape)),
                     [a2, b2], .matmul)
    if a.rank > 1 && b.rank > 1 { return out }
    var s = outShape
    if b.rank == 1 { s.removeLast() }
    if a.rank == 1 { s.remove(at: s.count - (b.rank == 1 ? 1 : 2)) }
    return out.reshape(s)
}

extension Tensor {
    /// `matmul(self, other)`.
    public func matmul(_ other: Tensor) -> Tensor { Tensors.matmul(self, other) }
}
