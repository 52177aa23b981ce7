// Gradient clipping by global norm: torch.nn.utils.clip_grad_norm_(params, max_norm,
// norm_type=2), as mmengine's OptimWrapper calls it (F-LMM: max_norm = 1).

import Tensors

/// Scales the gradients of `parameters` so that their global 2-norm is at most `maxNorm`, and
/// returns the global norm before clipping.
///
/// Like PyTorch: total = ‖(‖g₁‖₂, …, ‖gₙ‖₂)‖₂ over the parameters that have a gradient;
/// coef = Float(maxNorm) / (Float(total) + 1e-6) in float32; every gradient is multiplied by
/// min(coef, 1) (also when coef ≥ 1, which leaves it unchanged). Each ‖gᵢ‖² is summed in Double
/// in element order, the total in Double in parameter order (PyTorch sums in float32 in its
/// own order, so the returned norm can differ from PyTorch's in the last float32 bits).
@discardableResult
public func clipGradNorm(_ parameters: [Tensor], maxNorm: Double) -> Double {
    precondition(maxNorm >= 0, "clipGradNorm: max_norm \(maxNorm) must be non-negative")
    let grads = parameters.compactMap(\.grad)
    guard !grads.isEmpty else { return 0 }
    var totalSquared = 0.0
    for g in grads {
        let s = g.data.withUnsafeBufferPointer { b in
            var acc = 0.0
            for x in b { let d = Double(x); acc += d * d }
            return acc
        }
        let norm = s.squareRoot()
        totalSquared += norm * norm
    }
    let total = totalSquared.squareRoot()
    let coef = min(Float(maxNorm) / (Float(total) + 1e-6), 1)
    for p in parameters {
        guard let g = p.grad else { continue }
        p.setGrad(Tensor(shape: g.shape, data: g.data.map { $0 * coef }))
    }
    return total
}
