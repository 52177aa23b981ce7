// Ops for SAM's large tensors, each a primitive with a closed-form backward: fused multi-head
// attention on the [B, N, NH·d] layout (Kernels/AttentionKernels.swift), the same with the key and
// value projections, or the query and output projections, folded in
// (Kernels/FoldedAttentionKernels.swift), GELU with a vectorised erf (Kernels/GELUKernels.swift), a · bᵀ for a small a (Kernels/SmallMatmulKernels.swift) and
// LayerNorm over contiguous rows (Kernels/RowNormKernels.swift).
// Each replaces a composite of general ops whose copies and passes dominated SAM's step.

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

/// softmax(q_h (k Wkᵀ + bk)_hᵀ / s) (v Wvᵀ + bv)_h for every head h, with the key and value
/// projections folded into the queries and the output instead of applied to every key and value
/// (Kernels/FoldedAttentionKernels.swift): SAM's `Attention` from its projected queries to the
/// input of `out_proj`, for few queries against many keys.
/// - q: [B, Nq, I] (projected), k: [B, Nk, C], v: [B, Nk, C], kWeight, vWeight: [I, C],
///   kBias, vBias: [I] → [B, Nq, I]; head h is columns h·d ..< (h+1)·d, I = numHeads·d
/// - scale: the logits are divided by it (SAM: √d)
/// Gradients reach q, k, v and the four projection tensors. Equal to `multiHeadAttention` on
/// the projected keys and values up to float rounding, not bit for bit.
public func foldedMultiHeadAttention(q: Tensor, k: Tensor, v: Tensor, kWeight: Tensor, kBias: Tensor,
                                     vWeight: Tensor, vBias: Tensor, numHeads: Int, scale: Float) -> Tensor {
    precondition(q.rank == 3 && k.rank == 3 && v.rank == 3 && k.shape == v.shape && k.shape[0] == q.shape[0],
                 "foldedMultiHeadAttention: q \(q.shape), k \(k.shape), v \(v.shape) must be [B, Nq, I], [B, Nk, C], [B, Nk, C]")
    let (b, nq, inner, nk, c) = (q.shape[0], q.shape[1], q.shape[2], k.shape[1], k.shape[2])
    precondition(numHeads > 0 && inner % numHeads == 0,
                 "foldedMultiHeadAttention: \(numHeads) heads do not divide the query width \(inner)")
    precondition(kWeight.shape == [inner, c] && vWeight.shape == [inner, c] && kBias.shape == [inner] && vBias.shape == [inner],
                 "foldedMultiHeadAttention: k/v weights \(kWeight.shape), \(vWeight.shape) and biases \(kBias.shape), \(vBias.shape) must be [\(inner), \(c)] and [\(inner)]")
    let g = FoldedAttentionGeometry(batch: b, heads: numHeads, nq: nq, nk: nk, channels: c, headDim: inner / numHeads,
                                    scale: scale)
    let inputs = [k, v, q, kWeight, kBias, vWeight, vBias]
    let needGrad = Autograd.isEnabled && inputs.contains { $0.tracksGradient }
    let r = Kernels.foldedAttentionForward(q: q.data, k: k.data, v: v.data, kWeight: kWeight.data, kBias: kBias.data,
                                           vWeight: vWeight.data, vBias: vBias.data, g, keep: needGrad)
    return record(Tensor(shape: [b, nq, inner], data: r.out), inputs,
                  .foldedAttention(g, saved: r.saved ?? FoldedAttentionSaved(qk: [], probs: [], pv: [])))
}

/// residual + out_proj(softmax((x Wqᵀ + bq)_h k_hᵀ / s) v_h over heads), with the query and
/// output projections folded into the keys and values instead of applied to every query
/// (Kernels/FoldedAttentionKernels.swift): SAM's `Attention` from its unprojected queries and
/// projected keys and values, for many queries against few keys.
/// - x: [B, Nq, C] (queries before q_proj), k, v: [B, Nk, I] (projected), qWeight: [I, C],
///   qBias: [I], outWeight: [C, I], outBias: [C], residual: [B, Nq, C] or nil → [B, Nq, C];
///   head h is columns h·d ..< (h+1)·d of I = numHeads·d
/// - scale: the logits are divided by it (SAM: √d)
/// Gradients reach every input. Equal to q_proj, `multiHeadAttention` and out_proj (+ residual)
/// up to float rounding, not bit for bit.
public func queryFoldedMultiHeadAttention(x: Tensor, k: Tensor, v: Tensor, qWeight: Tensor, qBias: Tensor,
                                          outWeight: Tensor, outBias: Tensor, adding residual: Tensor? = nil,
                                          numHeads: Int, scale: Float) -> Tensor {
    precondition(x.rank == 3 && k.rank == 3 && v.rank == 3 && k.shape == v.shape && k.shape[0] == x.shape[0],
                 "queryFoldedMultiHeadAttention: x \(x.shape), k \(k.shape), v \(v.shape) must be [B, Nq, C], [B, Nk, I], [B, Nk, I]")
    let (b, nq, c, nk, inner) = (x.shape[0], x.shape[1], x.shape[2], k.shape[1], k.shape[2])
    precondition(numHeads > 0 && inner % numHeads == 0,
                 "queryFoldedMultiHeadAttention: \(numHeads) heads do not divide the key width \(inner)")
    precondition(qWeight.shape == [inner, c] && qBias.shape == [inner] && outWeight.shape == [c, inner] && outBias.shape == [c],
                 "queryFoldedMultiHeadAttention: q weight \(qWeight.shape), bias \(qBias.shape), out weight \(outWeight.shape), bias \(outBias.shape) must be [\(inner), \(c)], [\(inner)], [\(c), \(inner)], [\(c)]")
    precondition(residual == nil || residual!.shape == x.shape,
                 "queryFoldedMultiHeadAttention: residual \(residual!.shape) must be x's shape \(x.shape)")
    let g = FoldedAttentionGeometry(batch: b, heads: numHeads, nq: nq, nk: nk, channels: c, headDim: inner / numHeads,
                                    scale: scale)
    let inputs = [x, k, v, qWeight, qBias, outWeight, outBias] + (residual.map { [$0] } ?? [])
    let needGrad = Autograd.isEnabled && inputs.contains { $0.tracksGradient }
    let r = Kernels.queryFoldedAttentionForward(x: x.data, k: k.data, v: v.data, qWeight: qWeight.data, qBias: qBias.data,
                                                outWeight: outWeight.data, outBias: outBias.data, residual: residual?.data,
                                                g, keep: needGrad)
    return record(Tensor(shape: [b, nq, c], data: r.out), inputs,
                  .queryFoldedAttention(g, saved: r.saved ?? FoldedAttentionSaved(qk: [], probs: [], pv: [])))
}

extension Tensor {
    /// Exact (erf) GELU, ½x(1 + erf(x/√2)), like `gelu()`, with erf from a 16-lane polynomial
    /// (Kernels/GELUKernels.swift; within about 2e-7 of libm) instead of one libm call per
    /// element: for SAM's large activations.
    public func geluVectorized() -> Tensor {
        record(Tensor(shape: shape, data: Kernels.geluVectorized(data)), [self], .geluVectorized)
    }
}

/// `ConvTranspose2d(k=2, s=2)`'s pixel shuffle followed by GELU, in one pass over the data:
/// y [B, h·w, 4·C] (token-major, the convolution as a Linear to columns (dy, dx, c)) →
/// [B, 2h·2w, C] token-major. The same values and gradient, bit for bit, as
/// `y.reshape([B, h, w, 2, 2, C]).permute([0, 1, 3, 2, 4, 5]).reshape([B, 4hw, C]).geluVectorized()`
/// (SAM's mask decoder: the second upscaling convolution and its activation).
public func geluPixelShuffle2x2(_ y: Tensor, h: Int, w: Int) -> Tensor {
    precondition(y.rank == 3 && y.shape[1] == h * w && y.shape[2] % 4 == 0,
                 "geluPixelShuffle2x2: input \(y.shape) must be [B, \(h)·\(w), 4·C]")
    let (b, c) = (y.shape[0], y.shape[2] / 4)
    return record(Tensor(shape: [b, 4 * h * w, c], data: Kernels.geluPixelShuffle2x2(y.data, batch: b, h: h, w: w, channels: c)),
                  [y], .geluPixelShuffle2x2(h: h, w: w))
}

/// a · bᵀ per batch for a small `a`: a [B, M, K], b [B, N, K] → [B, M, N] (SAM's mask product,
/// hypernetwork weights [B, 4, 32] against upscaled features [B, 65536, 32]). Same values as
/// `matmul(a, b.transpose(1, 2))` (each sum in k order with FMA) without the transpose and
/// the packing a GEMM spends on such shapes.
public func matmulNT(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.rank == 3 && b.rank == 3 && a.shape[0] == b.shape[0] && a.shape[2] == b.shape[2],
                 "matmulNT: a \(a.shape) and b \(b.shape) must be [B, M, K] and [B, N, K]")
    let (batch, m, k, n) = (a.shape[0], a.shape[1], a.shape[2], b.shape[1])
    return record(Tensor(shape: [batch, m, n], data: Kernels.matmulNT(a.data, b.data, batch: batch, m: m, n: n, k: k)),
                  [a, b], .matmulNT)
}

/// `F.layer_norm(x, [D], weight, bias, eps)` over the last dim of x [..., D] (contiguous rows),
/// with kernels that make one pass per statistic (Kernels/RowNormKernels.swift): for SAM's
/// norms over thousands of tokens. Same function as `layerNorm(x, normalizedShape: [D], ...)`.
public func layerNormRows(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Double) -> Tensor {
    precondition(x.rank >= 1, "layerNormRows: input must have rank ≥ 1")
    let d = x.shape[x.rank - 1], rows = x.count / Swift.max(d, 1)
    if let weight { precondition(weight.shape == [d], "layerNormRows: weight \(weight.shape) for input \(x.shape)") }
    if let bias { precondition(bias.shape == [d], "layerNormRows: bias \(bias.shape) for input \(x.shape)") }
    let r = Kernels.layerNormRows(x.data, rows: rows, d: d, weight: weight?.data, bias: bias?.data, eps: eps)
    var inputs = [x]
    if let weight { inputs.append(weight) }
    if let bias { inputs.append(bias) }
    return record(Tensor(shape: x.shape, data: r.y), inputs,
                  .layerNormRows(mean: r.mean, rstd: r.rstd, hasWeight: weight != nil, hasBias: bias != nil))
}
