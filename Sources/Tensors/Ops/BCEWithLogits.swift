// Fused binary cross-entropy on logits (the stable form; see Kernels/BCEWithLogitsKernels.swift).

/// `F.binary_cross_entropy_with_logits(input, target, reduction='none')`: the elementwise loss
/// (1 − t)·x − log σ(x), with gradient σ(x) − t for the logits and −x for the targets.
/// Shapes: `input` and `target` equal, any rank.
public func binaryCrossEntropyWithLogits(_ input: Tensor, _ target: Tensor) -> Tensor {
    precondition(input.shape == target.shape,
                 "binaryCrossEntropyWithLogits: input \(input.shape) and target \(target.shape) differ")
    return record(Tensor(shape: input.shape, data: Kernels.bceWithLogits(input.data, target.data)),
                  [input, target], .bceWithLogits)
}
