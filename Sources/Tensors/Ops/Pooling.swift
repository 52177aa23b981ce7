// 2-D max pooling (nn.MaxPool2d / F.max_pool2d, floor mode). Kernels: Kernels/PoolKernels.swift.

/// `F.max_pool2d(x, kernelSize, stride, padding)` on x [N, C, H, W], ceil_mode=False, dilation 1.
/// `stride` defaults to `kernelSize`. Output [N, C, ⌊(H + 2p − k)/s⌋ + 1, ⌊(W + 2p − k)/s⌋ + 1]
/// (a trailing row/column that does not fill a window is dropped). The gradient goes to the
/// first maximum of each window.
public func maxPool2d(_ x: Tensor, kernelSize: Int, stride: Int? = nil, padding: Int = 0) -> Tensor {
    precondition(x.rank == 4, "maxPool2d: input \(x.shape) must be [N, C, H, W]")
    let st = stride ?? kernelSize
    let s = Pool2dShape(inH: x.shape[2], inW: x.shape[3], kernel: (kernelSize, kernelSize),
                        stride: (st, st), padding: (padding, padding))
    let (v, idx) = Kernels.maxPool2d(x.data, planes: x.shape[0] * x.shape[1], s)
    return record(Tensor(shape: [x.shape[0], x.shape[1], s.outH, s.outW], data: v), [x], .maxPool2d(s, argmax: idx))
}
