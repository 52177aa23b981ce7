// 2-D convolution and transposed convolution (torch.nn.functional.conv2d / conv_transpose2d),
// NCHW, groups 1, zero padding. Kernels: Kernels/Convolution.swift.

/// torch.nn.functional.conv2d with per-axis (h, w) stride, padding and dilation.
/// - x: [N, C, H, W] (or unbatched [C, H, W])
/// - weight: [O, C, kH, kW]
/// - bias: [O] or nil
/// - returns: [N, O, Ho, Wo], Ho = floor((H + 2·pad − dil·(kH−1) − 1) / stride) + 1 (same for W)
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil,
                   stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)) -> Tensor {
    if x.rank == 3 {
        let y = conv2d(x.reshape([1] + x.shape), weight: weight, bias: bias,
                       stride: stride, padding: padding, dilation: dilation)
        return y.reshape(Array(y.shape.dropFirst()))
    }
    let g = Conv2dGeometry(stride: stride, padding: padding, dilation: dilation)
    let yShape = Kernels.conv2dShape(x.shape, weight.shape, g)
    precondition(x.shape[1] == weight.shape[1],
                 "conv2d: input \(x.shape) has \(x.shape[1]) channels, weight \(weight.shape) expects \(weight.shape[1])")
    precondition(yShape[2] > 0 && yShape[3] > 0,
                 "conv2d: input \(x.shape) too small for weight \(weight.shape) with stride \(stride), padding \(padding), dilation \(dilation)")
    if let bias {
        precondition(bias.shape == [weight.shape[0]], "conv2d: bias \(bias.shape) must be [\(weight.shape[0])] for weight \(weight.shape)")
    }
    let y = Kernels.conv2d(x.data, x.shape, weight: weight.data, weight.shape, bias: bias?.data, g)
    return record(Tensor(shape: yShape, data: y), bias.map { [x, weight, $0] } ?? [x, weight], .conv2d(g))
}

/// torch.nn.functional.conv2d with the same stride, padding and dilation on both axes.
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil,
                   stride: Int = 1, padding: Int = 0, dilation: Int = 1) -> Tensor {
    conv2d(x, weight: weight, bias: bias, stride: (stride, stride), padding: (padding, padding),
           dilation: (dilation, dilation))
}

/// torch.nn.functional.conv_transpose2d (groups 1) with per-axis (h, w) arguments.
/// - x: [N, C, H, W] (or unbatched [C, H, W])
/// - weight: [C, O, kH, kW]
/// - bias: [O] or nil
/// - returns: [N, O, Ho, Wo], Ho = (H − 1)·stride − 2·pad + dil·(kH − 1) + outputPadding + 1
public func convTranspose2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil,
                            stride: (Int, Int), padding: (Int, Int), outputPadding: (Int, Int),
                            dilation: (Int, Int)) -> Tensor {
    if x.rank == 3 {
        let y = convTranspose2d(x.reshape([1] + x.shape), weight: weight, bias: bias, stride: stride,
                                padding: padding, outputPadding: outputPadding, dilation: dilation)
        return y.reshape(Array(y.shape.dropFirst()))
    }
    let g = Conv2dGeometry(stride: stride, padding: padding, dilation: dilation)
    let yShape = Kernels.convTranspose2dShape(x.shape, weight.shape, g, outputPadding: outputPadding)
    precondition(x.shape[1] == weight.shape[0],
                 "convTranspose2d: input \(x.shape) has \(x.shape[1]) channels, weight \(weight.shape) expects \(weight.shape[0])")
    if let bias {
        precondition(bias.shape == [weight.shape[1]],
                     "convTranspose2d: bias \(bias.shape) must be [\(weight.shape[1])] for weight \(weight.shape)")
    }
    let y = Kernels.convTranspose2d(x.data, x.shape, weight: weight.data, weight.shape, bias: bias?.data, g,
                                    outputPadding: outputPadding)
    return record(Tensor(shape: yShape, data: y), bias.map { [x, weight, $0] } ?? [x, weight],
                  .convTranspose2d(g, outputPadding: outputPadding))
}

/// torch.nn.functional.conv_transpose2d with the same arguments on both axes.
public func convTranspose2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0,
                            outputPadding: Int = 0, dilation: Int = 1) -> Tensor {
    convTranspose2d(x, weight: weight, bias: bias, stride: (stride, stride), padding: (padding, padding),
                    outputPadding: (outputPadding, outputPadding), dilation: (dilation, dilation))
}
