// Fused ops of F-LMM's U-Net mask head on channel-major ("CNHW") activations [C, N, H, W].
// Kernels and the layout: Kernels/UNetKernels.swift.

/// What the fused GroupNorm + ReLU keeps for its backward.
public struct GroupNormReLUPlan: Sendable {
    public let groups: Int
    /// Per (image, group), index n·G + g.
    public let mean: [Double]
    public let rstd: [Double]
}

extension Tensor {
    /// Convolution of all images at once, stride 1, zero padding (k−1)/2, no bias:
    /// `self` [C, N, H, W], weight [O, C, k, k] (k odd) → [O, N, H, W]. Same values as
    /// `conv2d(x, weight, padding: (k−1)/2)` on the NCHW tensor, channel-major.
    public func convCNHW(weight: Tensor) -> Tensor {
        precondition(rank == 4 && weight.rank == 4 && weight.shape[1] == shape[0] && weight.shape[2] == weight.shape[3]
                     && weight.shape[2] % 2 == 1,
                     "convCNHW: input \(shape) must be [C, N, H, W] and weight \(weight.shape) [O, C, k, k] with odd k")
        let (c, n, h, w) = (shape[0], shape[1], shape[2], shape[3]), o = weight.shape[0], k = weight.shape[2]
        let y = Kernels.convCNHW(data, c: c, n: n, h: h, w: w, weight: weight.data, o: o, k: k)
        return record(Tensor(shape: [o, n, h, w], data: y), [self, weight], .convCNHW)
    }

    /// relu(GroupNorm(numGroups)(x)) on `self` [C, N, H, W] with affine weight and bias [C]:
    /// statistics per (image, group) over (C/G, H, W), biased variance, eps.
    public func groupNormReLUCNHW(numGroups: Int, weight: Tensor, bias: Tensor, eps: Double = 1e-5) -> Tensor {
        precondition(rank == 4 && numGroups > 0 && shape[0] % numGroups == 0 && weight.shape == [shape[0]] && bias.shape == [shape[0]],
                     "groupNormReLUCNHW: input \(shape) must be [C, N, H, W] with C divisible by \(numGroups), weight \(weight.shape) and bias \(bias.shape) [C]")
        let (c, n, hw) = (shape[0], shape[1], shape[2] * shape[3])
        let (mean, rstd) = Kernels.groupNormStatsCNHW(data, c: c, n: n, hw: hw, groups: numGroups, eps: eps)
        let y = Kernels.groupNormReLUCNHW(data, c: c, n: n, hw: hw, groups: numGroups, mean: mean, rstd: rstd,
                                          weight: weight.data, bias: bias.data)
        return record(Tensor(shape: shape, data: y), [self, weight, bias],
                      .groupNormReLUCNHW(GroupNormReLUPlan(groups: numGroups, mean: mean, rstd: rstd)))
    }

    /// conv_k(pad(bilinear_up(x))) on `self` [C, N, h, w] with weight [O, C, k, k], computed at
    /// low resolution → [O, N, plan.frameH, plan.frameW]. Same values (up to rounding) as
    /// upsampling with `plan.up`, zero-padding to the frame and convolving with padding (k−1)/2.
    public func upsampledConvCNHW(weight: Tensor, plan: UpsampledConvPlan) -> Tensor {
        let k = plan.kernelSize
        precondition(rank == 4 && shape[2] == plan.up.h.inSize && shape[3] == plan.up.w.inSize
                     && weight.shape == [weight.shape[0], shape[0], k, k],
                     "upsampledConvCNHW: input \(shape) must be [C, N, \(plan.up.h.inSize), \(plan.up.w.inSize)], weight \(weight.shape) [O, C, \(k), \(k)]")
        let (c, n, o) = (shape[0], shape[1], weight.shape[0])
        let y = Kernels.upsampledConvCNHW(data, c: c, n: n, weight: weight.data, o: o, plan)
        return record(Tensor(shape: [o, n, plan.frameH, plan.frameW], data: y), [self, weight], .upsampledConvCNHW(plan))
    }
}

/// The transformed filter U [16, O, C] and input V [16, C, T] of a Winograd convolution, kept
/// for its backward (recomputing them costs two transforms).
public struct WinogradOperands: Sendable {
    public let u: [Float]
    public let v: [Float]
}

extension Tensor {
    /// 3×3 convolution, stride 1, padding 1, no bias, of all images at once by Winograd's
    /// F(2×2, 3×3): `self` [C, N, H, W], weight [O, C, 3, 3] → [O, N, H, W]. The function of
    /// `convCNHW` with 2.25× fewer multiplications (other rounding).
    public func conv3x3WinogradCNHW(weight: Tensor) -> Tensor {
        precondition(rank == 4 && weight.shape == [weight.shape[0], shape[0], 3, 3],
                     "conv3x3WinogradCNHW: input \(shape) must be [C, N, H, W] and weight \(weight.shape) [O, C, 3, 3]")
        let (c, n, h, w) = (shape[0], shape[1], shape[2], shape[3]), o = weight.shape[0]
        let r = Kernels.conv3x3WinogradOperands(data, c: c, n: n, h: h, w: w, weight: weight.data, o: o)
        let out = Tensor(shape: [o, n, h, w], data: r.y)
        return record(out, [self, weight], .conv3x3WinogradCNHW(WinogradOperands(u: r.u, v: r.v)))
    }
}
