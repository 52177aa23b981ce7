// The fused phrase-map op of F-LMM (select image columns, place them on the grid, merge the
// phrase's tokens, stack layer-major). Kernels and semantics: Kernels/PhraseMapKernels.swift.

extension Tensor {
    /// Phrase attention maps from attention probabilities `self` [L, NH, R, K] (R query rows,
    /// K key columns) → [N, M·L·NH, h, w], as `plan` describes. Differentiable with respect to
    /// the attention (mean: g/n to each phrase row; max: g to the first arg-max row).
    public func phraseMaps(_ plan: PhraseMapPlan) -> Tensor {
        precondition(rank == 4, "phraseMaps: attention must be [L, NH, R, K], got \(shape)")
        let out = Kernels.phraseMaps(data, layers: shape[0], heads: shape[1], rows: shape[2], cols: shape[3], plan: plan)
        return record(Tensor(shape: plan.outputShape(layers: shape[0], heads: shape[1]), data: out),
                      [self], .phraseMaps(plan))
    }
}
