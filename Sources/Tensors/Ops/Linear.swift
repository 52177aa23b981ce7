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

/// r + (x · Wᵀ + bias), a residual added as the GEMM stores its result (`torch.addmm`'s
/// input + mat1 · mat2, with F.linear's bias): each element the bits of `r + linear(x, ...)`,
/// without writing the product and reading it back.
/// - x: [..., in]; weight: [out, in]; bias: [out] or nil
/// - residual: [..., out], the shape of the result
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, adding residual: Tensor) -> Tensor {
    precondition(x.rank >= 1 && weight.rank == 2 && x.shape[x.rank - 1] == weight.shape[1],
                 "linear(adding:): input \(x.shape) and weight \(weight.shape) must be [..., in] and [out, in]")
    let fin = weight.shape[1], fout = weight.shape[0]
    if let bias {
        precondition(bias.shape == [fout], "linear(adding:): bias \(bias.shape) must be [\(fout)] for weight \(weight.shape)")
    }
    let rowsShape = Array(x.shape.dropLast())
    precondition(residual.shape == rowsShape + [fout],
                 "linear(adding:): residual \(residual.shape) must be the output shape \(rowsShape + [fout])")
    let y = Kernels.linear(x.data, rows: rowsShape.product, weight: weight.data, bias: bias?.data,
                           inFeatures: fin, outFeatures: fout, adding: residual.data)
    let inputs = (bias.map { [x, weight, $0] } ?? [x, weight]) + [residual]
    return record(Tensor(shape: residual.shape, data: y), inputs, .linearAdding(hasBias: bias != nil))
}
