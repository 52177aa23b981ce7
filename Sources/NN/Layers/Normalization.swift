// Normalisation layers: nn.LayerNorm, SAM's LayerNorm2d, nn.GroupNorm, nn.BatchNorm2d.
// Affine weights start at 1 and biases at 0 (PyTorch's and mmcv constant_init's values).

import Tensors

/// `nn.LayerNorm(normalized_shape, eps, elementwise_affine)`: normalises over the last
/// `normalizedShape.count` dimensions (biased variance), then scales and shifts elementwise.
/// Keys: `weight`, `bias`, each of shape `normalizedShape` (absent without affine).
public final class LayerNorm: Module {
    public let normalizedShape: [Int]
    public let eps: Double
    public let weight: Tensor?
    public let bias: Tensor?

    public var children: [ModuleChild] { [.parameter("weight", weight), .parameter("bias", bias)] }

    public init(_ normalizedShape: [Int], eps: Double = 1e-5, elementwiseAffine: Bool = true) {
        precondition(!normalizedShape.isEmpty && normalizedShape.allSatisfy { $0 > 0 },
                     "LayerNorm: invalid normalized_shape \(normalizedShape)")
        self.normalizedShape = normalizedShape
        self.eps = eps
        weight = elementwiseAffine ? Tensor(repeating: 1, shape: normalizedShape, requiresGrad: true) : nil
        bias = elementwiseAffine ? Tensor(repeating: 0, shape: normalizedShape, requiresGrad: true) : nil
    }

    /// x [..., *normalizedShape] → same shape.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        layerNorm(x, normalizedShape: normalizedShape, weight: weight, bias: bias, eps: eps)
    }

    /// LayerNorm over the last dimension of size `features`.
    public convenience init(_ features: Int, eps: Double = 1e-5, elementwiseAffine: Bool = true) {
        self.init([features], eps: eps, elementwiseAffine: elementwiseAffine)
    }
}

/// SAM's `LayerNorm2d(num_channels, eps=1e-6)`: on [N, C, H, W], normalises over C at each
/// pixel (biased variance), then y = weight[c]·x̂ + bias[c].
/// Keys: `weight` [C], `bias` [C].
public final class LayerNorm2d: Module {
    public let numChannels: Int
    public let eps: Double
    public let weight: Tensor
    public let bias: Tensor

    public var children: [ModuleChild] { [.parameter("weight", weight), .parameter("bias", bias)] }

    public init(_ numChannels: Int, eps: Double = 1e-6) {
        precondition(numChannels > 0, "LayerNorm2d: num_channels \(numChannels) must be positive")
        self.numChannels = numChannels
        self.eps = eps
        weight = Tensor(repeating: 1, shape: [numChannels], requiresGrad: true)
        bias = Tensor(repeating: 0, shape: [numChannels], requiresGrad: true)
    }

    /// x [N, C, H, W] → same shape.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == numChannels, "LayerNorm2d(\(numChannels)): input \(x.shape) must be [N, \(numChannels), H, W]")
        return layerNorm2d(x, weight: weight, bias: bias, eps: eps)
    }
}

/// `nn.GroupNorm(num_groups, num_channels, eps, affine)`: on [N, C, *], normalises each
/// sample over (C/G channels × spatial) per group (biased variance), then per-channel affine.
/// Keys: `weight` [C], `bias` [C] (absent without affine).
public final class GroupNorm: Module {
    public let numGroups: Int
    public let numChannels: Int
    public let eps: Double
    public let weight: Tensor?
    public let bias: Tensor?

    public var children: [ModuleChild] { [.parameter("weight", weight), .parameter("bias", bias)] }

    public init(_ numGroups: Int, _ numChannels: Int, eps: Double = 1e-5, affine: Bool = true) {
        precondition(numGroups > 0 && numChannels > 0 && numChannels % numGroups == 0,
                     "GroupNorm: num_channels \(numChannels) must be a positive multiple of num_groups \(numGroups)")
        self.numGroups = numGroups
        self.numChannels = numChannels
        self.eps = eps
        weight = affine ? Tensor(repeating: 1, shape: [numChannels], requiresGrad: true) : nil
        bias = affine ? Tensor(repeating: 0, shape: [numChannels], requiresGrad: true) : nil
    }

    /// x [N, C, *] → same shape.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 2 && x.shape[1] == numChannels, "GroupNorm(\(numGroups), \(numChannels)): input \(x.shape) must be [N, \(numChannels), ...]")
        return groupNorm(x, numGroups: numGroups, weight: weight, bias: bias, eps: eps)
    }
}

/// `nn.BatchNorm2d(num_features, eps, momentum, affine, track_running_stats)` on [N, C, H, W].
/// Training mode: normalises with the batch statistics over (N, H, W) (biased variance) and
/// updates running_mean ← (1−momentum)·running_mean + momentum·mean, running_var likewise with
/// the unbiased variance, num_batches_tracked += 1. Evaluation mode: uses the running stats.
/// Keys: `weight`, `bias` [C] (parameters), then buffers `running_mean` [C] (0),
/// `running_var` [C] (1), `num_batches_tracked` [] (0; int64 in PyTorch, an integer-valued
/// Float here, exact below 2²⁴).
public final class BatchNorm2d: Module {
    public let numFeatures: Int
    public let eps: Double
    /// Running-average factor; nil: cumulative average (1/num_batches_tracked), as PyTorch's `momentum=None`.
    public let momentum: Double?
    public let weight: Tensor?
    public let bias: Tensor?
    public let runningMean: Tensor?
    public let runningVar: Tensor?
    public let numBatchesTracked: Tensor?
    /// Training behaviour (batch statistics); set through `train(_:)` / `eval()` on the root.
    public private(set) var training = true

    public var children: [ModuleChild] {
        [.parameter("weight", weight), .parameter("bias", bias),
         .buffer("running_mean", runningMean), .buffer("running_var", runningVar),
         .buffer("num_batches_tracked", numBatchesTracked)]
    }

    public func setTraining(_ training: Bool) { self.training = training }

    public init(_ numFeatures: Int, eps: Double = 1e-5, momentum: Double? = 0.1, affine: Bool = true,
                trackRunningStats: Bool = true) {
        precondition(numFeatures > 0, "BatchNorm2d: num_features \(numFeatures) must be positive")
        self.numFeatures = numFeatures
        self.eps = eps
        self.momentum = momentum
        weight = affine ? Tensor(repeating: 1, shape: [numFeatures], requiresGrad: true) : nil
        bias = affine ? Tensor(repeating: 0, shape: [numFeatures], requiresGrad: true) : nil
        runningMean = trackRunningStats ? Tensor.zeros([numFeatures]) : nil
        runningVar = trackRunningStats ? Tensor.ones([numFeatures]) : nil
        numBatchesTracked = trackRunningStats ? Tensor(scalar: 0) : nil
    }

    /// x [N, C, H, W] → same shape. As nn.BatchNorm2d.forward: in training mode with running
    /// stats, num_batches_tracked += 1 and the running stats are updated in place (factor
    /// `momentum`, or 1/num_batches_tracked when it is nil); without running stats the batch
    /// statistics are used in both modes.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == numFeatures, "BatchNorm2d(\(numFeatures)): input \(x.shape) must be [N, \(numFeatures), H, W]")
        var factor = momentum ?? 0
        if training, let count = numBatchesTracked {
            count.assign([count.data[0] + 1])
            if momentum == nil { factor = 1 / Double(count.data[0]) }
        }
        return batchNorm(x, runningMean: runningMean, runningVar: runningVar, weight: weight, bias: bias,
                         training: training || runningMean == nil, momentum: factor, eps: eps)
    }
}
