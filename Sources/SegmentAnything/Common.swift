// Pieces shared by SAM's modules (segment_anything/modeling/common.py and mask_decoder.py's MLP),
// and the calls of NN layers on the functional ops.
//
// Dimension letters: B batch, N tokens, C/D channels, H W spatial.

import NN
import Tensors

/// The activations SAM's modules are built with.
public enum Activation: String, Sendable {
    /// `nn.ReLU` (TwoWayTransformer's MLP, MaskDecoder's MLP heads).
    case relu
    /// `nn.GELU()`, the exact erf form (image encoder MLP, mask downscaling, output upscaling);
    /// computed with the vectorised erf (`Tensor.geluVectorized`).
    case gelu

    @inline(__always) func callAsFunction(_ x: Tensor) -> Tensor {
        switch self {
        case .relu: return x.relu()
        case .gelu: return x.geluVectorized()
        }
    }
}

/// `common.MLPBlock(embedding_dim, mlp_dim, act)`: lin2(act(lin1(x))). x [..., D] → [..., D].
/// Keys: `lin1.{weight,bias}` [mlp, D], `lin2.{weight,bias}` [D, mlp].
public final class MLPBlock: Module {
    public let lin1: Linear
    public let lin2: Linear
    public let activation: Activation

    public var children: [ModuleChild] { [.module("lin1", lin1), .module("lin2", lin2)] }

    public init(embeddingDim: Int, mlpDim: Int, activation: Activation, rng: inout PhiloxRNG) {
        lin1 = Linear(embeddingDim, mlpDim, rng: &rng)
        lin2 = Linear(mlpDim, embeddingDim, rng: &rng)
        self.activation = activation
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        apply(lin2, activation(apply(lin1, x)))
    }
}

/// `mask_decoder.MLP(input_dim, hidden_dim, output_dim, num_layers)`: `num_layers` Linear layers
/// with ReLU between them (none after the last). x [..., in] → [..., out].
/// Keys: `layers.<i>.{weight,bias}`.
public final class MLP: Module {
    public let layers: [Linear]

    public var children: [ModuleChild] { [.list("layers", layers)] }

    public init(inputDim: Int, hiddenDim: Int, outputDim: Int, numLayers: Int, rng: inout PhiloxRNG) {
        precondition(numLayers >= 1, "MLP: numLayers \(numLayers) must be >= 1")
        let dims = [inputDim] + [Int](repeating: hiddenDim, count: numLayers - 1) + [outputDim]
        var layers: [Linear] = []
        for i in 0..<numLayers { layers.append(Linear(dims[i], dims[i + 1], rng: &rng)) }
        self.layers = layers
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var y = x
        for (i, l) in layers.enumerated() {
            y = apply(l, y)
            if i < layers.count - 1 { y = y.relu() }
        }
        return y
    }
}

// MARK: layers as functions

/// `nn.Linear` forward: x [..., in] → [..., out].
@inline(__always) func apply(_ l: Linear, _ x: Tensor) -> Tensor {
    linear(x, weight: l.weight, bias: l.bias)
}

/// `nn.LayerNorm([D])` forward over the last dim of x [..., D], on the row kernels.
@inline(__always) func apply(_ n: LayerNorm, _ x: Tensor) -> Tensor {
    precondition(n.normalizedShape.count == 1, "LayerNorm over \(n.normalizedShape): SAM normalises one dim")
    return layerNormRows(x, weight: n.weight, bias: n.bias, eps: n.eps)
}

/// `nn.Conv2d` forward: x [N, C, H, W] → [N, O, H', W'].
@inline(__always) func apply(_ c: Conv2d, _ x: Tensor) -> Tensor {
    conv2d(x, weight: c.weight, bias: c.bias, stride: c.stride, padding: c.padding, dilation: c.dilation)
}

/// `nn.ConvTranspose2d` forward: x [N, C, H, W] → [N, O, H', W'].
@inline(__always) func apply(_ c: ConvTranspose2d, _ x: Tensor) -> Tensor {
    convTranspose2d(x, weight: c.weight, bias: c.bias, stride: c.stride, padding: c.padding,
                    outputPadding: c.outputPadding, dilation: c.dilation)
}
