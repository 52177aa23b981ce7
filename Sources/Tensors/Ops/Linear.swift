// nn.Linear as a function (torch.nn.functional.linear).

/// y = x · Wᵀ + bias over the last dim (`F.linear(x, weight, bias)`).
/// - x: [..., in] (1-D [in] allowed)
/// - weight: [out, in]
/// - bias: [out] or nil
/// - returns: [..., out]
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
    precondition(x.rank >= 1, "linear: input must have rank >= 1, got \(x.shape)")
    precondition(weight.rank == 2, "linear: weight must be [out, in], got \(weight.shape)")
    let fin = weight.shape[1], fout = weight.shape[0]
    precondition(x.shape[x.rank - 1] == fin,
                 "linear: input \(x.shape) last dim differs from weight \(weight.shape) in_features \(fin)")
    if let bias {
        precondition(bias.shape == [fout], "linear: bias \(bias.shape) must be [\(fout)] for weight \(weight.shape)")
    }
    let rowsShape = Array(x.shape.dropLast())
    let y = Kernels.linear(x.data, rows: rowsShape.product, weight: weight.data, bias: bias?.data,
                           inFeatures: fin, outFeatures: fout)
    let inputs = bias.map { [x, weight, $0] } ?? [x, weight]
    return record(Tensor(shape: rowsShape + [fout], data: y), inputs, .linear)
}
