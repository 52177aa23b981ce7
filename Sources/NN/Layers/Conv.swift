// nn.Conv2d and nn.ConvTranspose2d (square kernels, groups = 1, zero padding).

import Tensors

/// `nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias)`.
/// Input [N, C_in, H, W] → output [N, C_out, H', W'],
/// H' = ⌊(H + 2·padding − dilation·(k−1) − 1)/stride⌋ + 1 (same for W).
/// Keys: `weight` [C_out, C_in, k, k], `bias` [C_out] (absent with `bias: false`).
/// Initialisation: PyTorch's default (`Init.pytorchDefault`, fan_in = C_in·k²).
public final class Conv2d: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let kernelSize: Int
    public let stride: Int
    public let padding: Int
    public let dilation: Int
    /// [outChannels, inChannels, kernelSize, kernelSize]
    public let weight: Tensor
    /// [outChannels], or nil.
    public let bias: Tensor?

    public var children: [ModuleChild] { [.parameter("weight", weight), .parameter("bias", bias)] }

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, bias: Bool = true, rng: inout PhiloxRNG) {
        precondition(inChannels > 0 && outChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0 && dilation > 0,
                     "Conv2d: invalid in \(inChannels), out \(outChannels), kernel \(kernelSize), stride \(stride), padding \(padding), dilation \(dilation)")
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        weight = Tensor(repeating: 0, shape: [outChannels, inChannels, kernelSize, kernelSize], requiresGrad: true)
        self.bias = bias ? Tensor(repeating: 0, shape: [outChannels], requiresGrad: true) : nil
        Init.pytorchDefault(weight: weight, bias: self.bias, rng: &rng)
    }

    /// x [N, C_in, H, W] (or [C_in, H, W]) → [N, C_out, H', W'].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition((x.rank == 4 && x.shape[1] == inChannels) || (x.rank == 3 && x.shape[0] == inChannels),
                     "Conv2d(\(inChannels), \(outChannels)): input \(x.shape) must be [N, \(inChannels), H, W]")
        return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation)
    }
}

/// `nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, output_padding,
/// bias, dilation)`. Input [N, C_in, H, W] → output [N, C_out, H', W'],
/// H' = (H−1)·stride − 2·padding + dilation·(k−1) + output_padding + 1.
/// Keys: `weight` [C_in, C_out, k, k] (PyTorch's layout: input channels first), `bias` [C_out].
/// Initialisation: PyTorch's default, whose fan_in is computed from that layout: C_out·k².
public final class ConvTranspose2d: Module {
    public let inChannels: Int
    public let outChannels: Int
    public let kernelSize: Int
    public let stride: Int
    public let padding: Int
    public let outputPadding: Int
    public let dilation: Int
    /// [inChannels, outChannels, kernelSize, kernelSize]
    public let weight: Tensor
    /// [outChannels], or nil.
    public let bias: Tensor?

    public var children: [ModuleChild] { [.parameter("weight", weight), .parameter("bias", bias)] }

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                outputPadding: Int = 0, dilation: Int = 1, bias: Bool = true, rng: inout PhiloxRNG) {
        precondition(inChannels > 0 && outChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0
                     && dilation > 0 && outputPadding >= 0 && outputPadding < max(stride, dilation),
                     "ConvTranspose2d: invalid in \(inChannels), out \(outChannels), kernel \(kernelSize), stride \(stride), padding \(padding), output_padding \(outputPadding), dilation \(dilation)")
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.outputPadding = outputPadding
        self.dilation = dilation
        weight = Tensor(repeating: 0, shape: [inChannels, outChannels, kernelSize, kernelSize], requiresGrad: true)
        self.bias = bias ? Tensor(repeating: 0, shape: [outChannels], requiresGrad: true) : nil
        Init.pytorchDefault(weight: weight, bias: self.bias, rng: &rng)
    }

    /// x [N, C_in, H, W] (or [C_in, H, W]) → [N, C_out, H', W'].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition((x.rank == 4 && x.shape[1] == inChannels) || (x.rank == 3 && x.shape[0] == inChannels),
                     "ConvTranspose2d(\(inChannels), \(outChannels)): input \(x.shape) must be [N, \(inChannels), H, W]")
        return convTranspose2d(x, weight: weight, bias: bias, stride: stride, padding: padding,
                               outputPadding: outputPadding, dilation: dilation)
    }
}
