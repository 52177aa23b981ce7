// Fused multi-head attention on the [B, N, NH·d] layout (kernels: Kernels/AttentionKernels.swift).
// SAM's attention layers (two-way transformer and image encoder) run on it: one primitive instead
// of the head split/merge copies, matmuls and softmax of the composite, with a closed-form backward.

/// softmax(scaled(q_h k_hᵀ) [+ decomposed relative-position bias]) v_h for every head h, where
/// head h is columns h·d ..< (h+1)·d of the last dim.
/// - q: [B, Nq, NH·dk], k: [B, Nk, NH·dk], v: [B, Nk, NH·dv] → [B, Nq, NH·dv]
/// - scale: `.divide(√dk)` (SAM's transformer: logits / s) or `.multiplyQuery(dk^-½)` (image
///   encoder: (q·s) kᵀ)
/// - relPos: rh [qh, kh, dk], rw [qw, kw, dk] (get_rel_pos rows), with the query grid (qh, qw)
///   (qh·qw = Nq) and key grid (kh, kw) (kh·kw = Nk); adds relH[(i, j), k] = q(i, j)·rh[i, k]
///   then relW[(i, j), l] = q(i, j)·rw[j, l] to logit ((i, j), (k, l)), from the unscaled q.
/// Gradients reach q, k, v, rh and rw. The softmax probabilities are kept for the backward only
/// when a gradient will be needed.
public func multiHeadAttention(q: Tensor, k: Tensor, v: Tensor, numHeads: Int, scale: AttentionScale,
                               relPos: (rh: Tensor, rw: Tensor, qSize: (Int, Int), kSize: (Int, Int))? = nil) -> Tensor {
    precondition(q.rank == 3 && k.rank == 3 && v.rank == 3,
                 "multiHeadAttention: q \(q.shape), k \(k.shape), v \(v.shape) must be [B, N, NH·d]")
    let (b, nq, iq) = (q.shape[0], q.shape[1], q.shape[2])
    let (nk, iv) = (k.shape[1], v.shape[2])
    precondition(k.shape[0] == b && v.shape[0] == b && k.shape[2] == iq && v.shape[1] == nk,
                 "multiHeadAttention: q \(q.shape), k \(k.shape), v \(v.shape) disagree")
    precondition(numHeads > 0 && iq % numHeads == 0 && iv % numHeads == 0,
                 "multiHeadAttention: \(numHeads) heads do not divide q/k width \(iq) and v width \(iv)")
    var g = AttentionGeometry(batch: b, heads: numHeads, nq: nq, nk: nk, dk: iq / numHeads, dv: iv / numHeads,
                              scale: scale)
    var inputs = [q, k, v]
    if let rp = relPos {
        let (qh, qw) = rp.qSize, (kh, kw) = rp.kSize
        precondition(qh * qw == nq && kh * kw == nk,
                     "multiHeadAttention: grids \(rp.qSize) / \(rp.kSize) do not hold \(nq) queries / \(nk) keys")
        precondition(rp.rh.shape == [qh, kh, g.dk] && rp.rw.shape == [qw, kw, g.dk],
                     "multiHeadAttention: rel-pos rows \(rp.rh.shape) / \(rp.rw.shape) must be [\(qh), \(kh), \(g.dk)] / [\(qw), \(kw), \(g.dk)]")
        g.relPos = .init(qh: qh, qw: qw, kh: kh, kw: kw)
        inputs += [rp.rh, rp.rw]
    }
    let needGrad = Autograd.isEnabled && inputs.contains { $0.tracksGradient }
    let (out, probs) = Kernels.attentionForward(q: q.data, k: k.data, v: v.data, rh: relPos?.rh.data,
                                                rw: relPos?.rw.data, g, keepProbs: needGrad)
    return record(Tensor(shape: [b, nq, iv], data: out), inputs, .multiHeadAttention(g, probs: probs ?? []))
}

extension Tensor {
    /// Exact (erf) GELU, ½x(1 + erf(x/√2)), like `gelu()`, with erf from a 16-lane polynomial
    /// (Kernels/GELUKernels.swift; within about 2e-7 of libm) instead of one libm call per
    /// element: for SAM's large activations.
    public func geluVectorized() -> Tensor {
        record(Tensor(shape: shape, data: Kernels.geluVectorized(data)), [self], .geluVectorized)
    }
}
