// Normalization layers as fused primitives: layer_norm, SAM's LayerNorm2d, group_norm,
// batch_norm (train and eval) and BatchNorm's buffers. Kernels: Kernels/NormKernels.swift.

/// What a recorded norm needs for its backward: the [P, C, Q] view, the statistics used in the
/// forward (Double), whether they carry gradient, and which affine inputs follow `x`.
public struct NormPlan: Sendable {
    public let shape: NormShape
    public let mean: [Double]
    public let rstd: [Double]
    /// True for BatchNorm in eval mode (running statistics: no gradient through them).
    public let statsConstant: Bool
    public let hasWeight: Bool
    public let hasBias: Bool
}

/// Runs a norm with statistics `mean` / `rstd` and records it. Inputs: x, then weight and bias if given.
func applyNorm(_ x: Tensor, _ s: NormShape, mean: [Double], rstd: [Double], statsConstant: Bool,
               weight: Tensor?, bias: Tensor?) -> Tensor {
    let y = Kernels.normForward(x.data, s, mean: mean, rstd: rstd, weight: weight?.data, bias: bias?.data)
    var inputs = [x]
    if let weight { inputs.append(weight) }
    if let bias { inputs.append(bias) }
    let plan = NormPlan(shape: s, mean: mean, rstd: rstd, statsConstant: statsConstant,
                        hasWeight: weight != nil, hasBias: bias != nil)
    return record(Tensor(shape: x.shape, data: y), inputs, .norm(plan))
}

/// `F.layer_norm(x, normalizedShape, weight, bias, eps)`: normalizes over the trailing dims
/// `normalizedShape` with the biased variance; y = (x − mean)/√(var + eps)·w + b.
/// x [..., *normalizedShape]; weight, bias [*normalizedShape] or nil.
public func layerNorm(_ x: Tensor, normalizedShape: [Int], weight: Tensor?, bias: Tensor?, eps: Double = 1e-5) -> Tensor {
    let k = normalizedShape.count
    precondition(k >= 1 && k <= x.rank && Array(x.shape.suffix(k)) == normalizedShape,
                 "layerNorm: input \(x.shape) does not end with normalizedShape \(normalizedShape)")
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let t { precondition(t.shape == normalizedShape, "layerNorm: \(name) \(t.shape) vs normalizedShape \(normalizedShape)") }
    }
    let d = normalizedShape.product
    let s = NormShape(p: d == 0 ? 0 : x.count / d, c: d, q: 1, grouping: .groups(1))
    let (mean, variance) = Kernels.normMoments(x.data, s)
    return applyNorm(x, s, mean: mean, rstd: Kernels.normRstd(variance, eps: eps), statsConstant: false,
                     weight: weight, bias: bias)
}

/// SAM's `LayerNorm2d(C, eps)` on NCHW: per (n, h, w), mean and biased variance over C;
/// y = w[c]·(x − u)/√(s + eps) + b[c]. x [N, C, H, W]; weight, bias [C] or nil.
public func layerNorm2d(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Double = 1e-6) -> Tensor {
    precondition(x.rank >= 2, "layerNorm2d: input \(x.shape) must be [N, C, ...]")
    let c = x.shape[1]
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let t { precondition(t.shape == [c], "layerNorm2d: \(name) \(t.shape) for input \(x.shape)") }
    }
    let s = NormShape(p: x.shape[0], c: c, q: x.shape[2...].reduce(1, *), grouping: .channels)
    let (mean, variance) = Kernels.normMoments(x.data, s)
    return applyNorm(x, s, mean: mean, rstd: Kernels.normRstd(variance, eps: eps), statsConstant: false,
                     weight: weight, bias: bias)
}

/// `F.group_norm(x, numGroups, weight, bias, eps)`: per sample and group of C/G channels,
/// mean and biased variance over (C/G, *spatial); y = (x − mean)/√(var + eps)·w[c] + b[c].
/// x [N, C, *]; weight, bias [C] or nil.
public func groupNorm(_ x: Tensor, numGroups: Int, weight: Tensor?, bias: Tensor?, eps: Double = 1e-5) -> Tensor {
    precondition(x.rank >= 2, "groupNorm: input \(x.shape) must be [N, C, ...]")
    let c = x.shape[1]
    precondition(numGroups > 0 && c % numGroups == 0, "groupNorm: \(c) channels of \(x.shape) not divisible into \(numGroups) groups")
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let t { precondition(t.shape == [c], "groupNorm: \(name) \(t.shape) for input \(x.shape)") }
    }
    let s = NormShape(p: x.shape[0], c: c, q: x.shape[2...].reduce(1, *), grouping: .groups(numGroups))
    let (mean, variance) = Kernels.normMoments(x.data, s)
    return applyNorm(x, s, mean: mean, rstd: Kernels.normRstd(variance, eps: eps), statsConstant: false,
                     weight: weight, bias: bias)
}

/// `F.batch_norm(x, runningMean, runningVar, weight, bias, training, momentum, eps)` on [N, C, *].
///
/// Training: mean and biased variance per channel over (N, *spatial) normalize x (gradients
/// flow through them); if running buffers are given they are updated **in place**:
/// running = (1 − momentum)·running + momentum·batch, with the unbiased variance (n/(n−1)).
/// Eval: y = (x − runningMean)/√(runningVar + eps)·w + b, buffers unchanged.
/// weight, bias, runningMean, runningVar: [C] or nil.
public func batchNorm(_ x: Tensor, runningMean: Tensor?, runningVar: Tensor?, weight: Tensor?, bias: Tensor?,
                      training: Bool, momentum: Double = 0.1, eps: Double = 1e-5) -> Tensor {
    precondition(x.rank >= 2, "batchNorm: input \(x.shape) must be [N, C, ...]")
    let c = x.shape[1]
    for (name, t) in [("weight", weight), ("bias", bias), ("runningMean", runningMean), ("runningVar", runningVar)] {
        if let t { precondition(t.shape == [c], "batchNorm: \(name) \(t.shape) for input \(x.shape)") }
    }
    let s = NormShape(p: x.shape[0], c: c, q: x.shape[2...].reduce(1, *), grouping: .batch)
    if training {
        let n = s.statSize
        precondition(n > 1, "batchNorm: expected more than 1 value per channel when training, got input \(x.shape)")
        let (mean, variance) = Kernels.normMoments(x.data, s)
        if let rm = runningMean {
            rm.assign((0..<c).map { Float(momentum * mean[$0] + (1 - momentum) * Double(rm.data[$0])) })
        }
        if let rv = runningVar {
            let k = Double(n) / Double(n - 1)
            rv.assign((0..<c).map { Float(momentum * (variance[$0] * k) + (1 - momentum) * Double(rv.data[$0])) })
        }
        return applyNorm(x, s, mean: mean, rstd: Kernels.normRstd(variance, eps: eps), statsConstant: false,
                         weight: weight, bias: bias)
    }
    guard let rm = runningMean, let rv = runningVar else {
        preconditionFailure("batchNorm: eval mode needs runningMean and runningVar (input \(x.shape))")
    }
    let mean = rm.data.map { Double($0) }
    let rstd = Kernels.normRstd(rv.data.map { Double($0) }, eps: eps)
    return applyNorm(x, s, mean: mean, rstd: rstd, statsConstant: true, weight: weight, bias: bias)
}

/// BatchNorm's buffers and hyper-parameters (nn.BatchNorm2d's `running_mean`, `running_var`,
/// `num_batches_tracked`, `momentum`, `eps`), applied like nn.BatchNorm2d.forward with
/// track_running_stats=True. The affine weight and bias are parameters of the owning module
/// and are passed in.
public final class BatchNormState: @unchecked Sendable {
    /// [C], updated in place by training-mode calls.
    public let runningMean: Tensor
    /// [C], updated in place (unbiased batch variance) by training-mode calls.
    public let runningVar: Tensor
    /// Training-mode calls so far (int64 in PyTorch's state dict).
    public var numBatchesTracked: Int64
    /// Exponential-average factor; nil = cumulative average (factor 1/numBatchesTracked).
    public let momentum: Double?
    public let eps: Double

    /// Fresh buffers as nn.BatchNorm2d(numFeatures) creates them: mean 0, var 1, count 0.
    public convenience init(numFeatures: Int, momentum: Double? = 0.1, eps: Double = 1e-5) {
        self.init(runningMean: Tensor.zeros([numFeatures]), runningVar: Tensor.ones([numFeatures]),
                  numBatchesTracked: 0, momentum: momentum, eps: eps)
    }

    public init(runningMean: Tensor, runningVar: Tensor, numBatchesTracked: Int64, momentum: Double? = 0.1, eps: Double = 1e-5) {
        precondition(runningMean.rank == 1 && runningMean.shape == runningVar.shape,
                     "BatchNormState: runningMean \(runningMean.shape) and runningVar \(runningVar.shape) must be equal [C]")
        self.runningMean = runningMean
        self.runningVar = runningVar
        self.numBatchesTracked = numBatchesTracked
        self.momentum = momentum
        self.eps = eps
    }

    /// Normalizes x [N, C, *]; in training mode increments `numBatchesTracked` and updates the
    /// running statistics in place.
    public func callAsFunction(_ x: Tensor, weight: Tensor?, bias: Tensor?, training: Bool) -> Tensor {
        var factor = momentum ?? 0
        if training {
            numBatchesTracked += 1
            if momentum == nil { factor = 1.0 / Double(numBatchesTracked) }
        }
        return batchNorm(x, runningMean: runningMean, runningVar: runningVar, weight: weight, bias: bias,
                         training: training, momentum: factor, eps: eps)
    }
}
