// Spatial resizing of NCHW tensors (F.interpolate, modes 'nearest' and 'bilinear').
// Coordinate rules: Kernels/InterpolateKernels.swift.

/// `F.interpolate(x, size=, scale_factor=, mode=, align_corners=)` on x [N, C, H, W].
///
/// Give exactly one of `size` (output (H, W)) or `scaleFactor` ((sH, sW); output
/// floor(H·sH), floor(W·sW) in Double, and the source-coordinate ratio is 1/s, not in/out —
/// PyTorch's behaviour with recompute_scale_factor=None). `mode` defaults to `.nearest`
/// (legacy nearest), as in PyTorch; `alignCorners` applies to `.bilinear` only.
/// Output [N, C, outH, outW]. Backward: the transpose with the same weights.
public func interpolate(_ x: Tensor, size: (Int, Int)? = nil, scaleFactor: (Double, Double)? = nil,
                        mode: InterpolationMode = .nearest, alignCorners: Bool = false) -> Tensor {
    precondition(x.rank == 4, "interpolate: input \(x.shape) must be [N, C, H, W]")
    precondition((size == nil) != (scaleFactor == nil),
                 "interpolate: give exactly one of size and scaleFactor (input \(x.shape))")
    precondition(!(alignCorners && mode == .nearest), "interpolate: alignCorners is only valid for bilinear")
    let (inH, inW) = (x.shape[2], x.shape[3])
    let outH: Int, outW: Int
    if let size {
        (outH, outW) = size
    } else {
        let (sh, sw) = scaleFactor!
        precondition(sh > 0 && sw > 0, "interpolate: scaleFactor \((sh, sw)) must be positive")
        outH = Int((Double(inH) * sh).rounded(.down))
        outW = Int((Double(inW) * sw).rounded(.down))
    }
    precondition(outH > 0 && outW > 0, "interpolate: output size \((outH, outW)) from input \(x.shape) must be positive")
    let plan: InterpolationPlan
    switch mode {
    case .bilinear:
        plan = InterpolationPlan(
            mode: .bilinear,
            h: .linear(inSize: inH, outSize: outH, scale: scaleFactor?.0, alignCorners: alignCorners),
            w: .linear(inSize: inW, outSize: outW, scale: scaleFactor?.1, alignCorners: alignCorners))
    case .nearest:
        plan = InterpolationPlan(mode: .nearest,
                                 h: .nearest(inSize: inH, outSize: outH, scale: scaleFactor?.0),
                                 w: .nearest(inSize: inW, outSize: outW, scale: scaleFactor?.1))
    }
    let planes = x.shape[0] * x.shape[1]
    let y = Tensor(shape: [x.shape[0], x.shape[1], outH, outW], data: Kernels.interpolate(x.data, planes: planes, plan))
    return record(y, [x], .interpolate(plan))
}
