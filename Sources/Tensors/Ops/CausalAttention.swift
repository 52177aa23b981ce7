// TinyVLM's fused causal self-attention (Kernels/CausalAttentionKernels.swift): one primitive
// instead of the composite reshape → permute → narrow → matmul → mask add → softmax → matmul →
// permute, whose copies and full [NH, T, T] passes dominated TinyVLM's training step.

/// Causal multi-head self-attention on a fused qkv projection.
/// - qkv: [T, 3·NH·d], row t = (q_t, k_t, v_t), head h at columns h·d ..< (h+1)·d of each third
///   (`Linear(D, 3D)` output viewed as [T, 3, NH, d]).
/// - returns: out [T, NH·d] = merged heads of softmax((q_h/√d)·k_hᵀ + causal)·v_h, and the
///   attention probabilities [NH, T, T] (exactly 0 above the diagonal) as a constant tensor
///   (outside the graph: F-LMM reads them from a frozen model). The gradient reaches qkv
///   through `out`; the probabilities are kept for the backward only when it will be needed.
public func causalSelfAttention(_ qkv: Tensor, heads: Int) -> (out: Tensor, probs: Tensor) {
    precondition(qkv.rank == 2 && heads > 0 && qkv.shape[1] % (3 * heads) == 0,
                 "causalSelfAttention: qkv \(qkv.shape) must be [T, 3·NH·d] with NH = \(heads)")
    let t = qkv.shape[0]
    let g = CausalAttentionGeometry(tokens: t, heads: heads, headDim: qkv.shape[1] / (3 * heads))
    let (out, probs) = Kernels.causalAttentionForward(qkv: qkv.data, g)
    let needGrad = Autograd.isEnabled && qkv.tracksGradient
    let y = record(Tensor(shape: [t, g.width], data: out), [qkv], .causalAttention(g, probs: needGrad ? probs : []))
    return (y, Tensor(shape: [heads, t, t], data: probs))
}
