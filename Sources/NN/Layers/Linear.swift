// nn.Linear.

import Tensors

/// `nn.Linear(in_features, out_features, bias)`: y = x·Wᵀ + b over the last dimension.
/// Keys: `weight` [out, in], `bias` [out] (absent with `bias: false`).
/// Initialisation: PyTorch's default (`Init.pytorchDefault`), weight then bias.
public final class Linear: Module {
    public let inFeatures: Int
    public let outFeatures: Int
    /// [outFeatures, inFeatures]
    public let weight: Tensor
    /// [outFeatures], or nil.
    public let bias: Tensor?

    public var children: [ModuleChild] { [.parameter("weight", weight), .parameter("bias", bias)] }

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, rng: inout PhiloxRNG) {
        precondition(inFeatures > 0 && outFeatures > 0,
                     "Linear: in_features \(inFeatures) and out_features \(outFeatures) must be positive")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Tensor(repeating: 0, shape: [outFeatures, inFeatures], requiresGrad: true)
        self.bias = bias ? Tensor(repeating: 0, shape: [outFeatures], requiresGrad: true) : nil
        Init.pytorchDefault(weight: weight, bias: self.bias, rng: &rng)
    }

    /// x [..., inFeatures] → [..., outFeatures].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 1 && x.shape[x.rank - 1] == inFeatures,
                     "Linear(\(inFeatures), \(outFeatures)): input \(x.shape) must end with \(inFeatures)")
        return linear(x, weight: weight, bias: bias)
    }
}
