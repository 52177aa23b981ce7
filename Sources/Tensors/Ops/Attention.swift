// SAM's multi-head attention (segment_anything.modeling.transformer.Attention) as a composite
// of linear, reshape/permute, matmul and softmax: no primitive of its own, so its gradient is
// the chain of theirs.

/// `segment_anything.modeling.transformer.Attention.forward(q, k, v)` with the module's
/// weights passed in (PyTorch keys `q_proj`, `k_proj`, `v_proj`, `out_proj`).
///
/// q [B, Nq, D], k [B, Nk, D], v [B, Nk, D]; q/k/vProj weight [I, D] (I = D / downsample_rate),
/// bias [I]; outProj weight [D, I], bias [D]. `numHeads` must divide I.
///   q, k, v = Linear(q|k|v) → [B, N, NH, I/NH] → transpose(1, 2)
///   attn = softmax(q @ kᵀ / √(I/NH), dim −1)   [B, NH, Nq, Nk]
///   out = outProj(recombine(attn @ v))          [B, Nq, D]
public func samAttention(q: Tensor, k: Tensor, v: Tensor,
                         qProj: (weight: Tensor, bias: Tensor?), kProj: (weight: Tensor, bias: Tensor?),
                         vProj: (weight: Tensor, bias: Tensor?), outProj: (weight: Tensor, bias: Tensor?),
                         numHeads: Int) -> Tensor {
    precondition(q.rank == 3 && k.rank == 3 && v.rank == 3,
                 "samAttention: q \(q.shape), k \(k.shape), v \(v.shape) must be [B, N, D]")
    precondition(k.shape[0] == q.shape[0] && v.shape[0] == q.shape[0] && k.shape[1] == v.shape[1],
                 "samAttention: batch/token mismatch: q \(q.shape), k \(k.shape), v \(v.shape)")
    let internalDim = qProj.weight.shape[0]
    precondition(numHeads > 0 && internalDim % numHeads == 0,
                 "samAttention: \(numHeads) heads do not divide the internal dim \(internalDim) (q_proj \(qProj.weight.shape))")

    /// [B, N, I] → [B, NH, N, I/NH].
    func separateHeads(_ x: Tensor) -> Tensor {
        x.reshape([x.shape[0], x.shape[1], numHeads, x.shape[2] / numHeads]).transpose(1, 2)
    }

    let qh = separateHeads(linear(q, weight: qProj.weight, bias: qProj.bias))
    let kh = separateHeads(linear(k, weight: kProj.weight, bias: kProj.bias))
    let vh = separateHeads(linear(v, weight: vProj.weight, bias: vProj.bias))
    let headDim = qh.shape[3]
    let logits = matmul(qh, kh.permute([0, 1, 3, 2])) / Float(Double(headDim).squareRoot())
    let attn = logits.softmax(dim: -1)
    let out = matmul(attn, vh)                                          // [B, NH, Nq, I/NH]
    let merged = out.transpose(1, 2).reshape([q.shape[0], q.shape[1], internalDim])
    return linear(merged, weight: outProj.weight, bias: outProj.bias)
}
