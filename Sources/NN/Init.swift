// Parameter initialisers: PyTorch's `torch.nn.init` and mmcv/mmengine's module initialisers,
// drawing from our own `PhiloxRNG` (never PyTorch's generator, so the values differ from
// PyTorch's but follow the same distributions).
//
// Distribution parameters are computed in Double with PyTorch's formulas and operation order;
// each value is then drawn in Float with the RNG's documented rules:
//   uniform(lo, hi):     Float(lo) + (Float(hi) − Float(lo)) · u,  u = 24-bit uniform in [0, 1)
//   normal(mean, std):   Float(mean) + Float(std) · z,             z = Box–Muller normal
// Values are drawn in row-major order, one tensor after the other in the order the calls are
// made (a layer draws its weight, then its bias, as PyTorch's `reset_parameters`).
//
// Summary of the defaults (fan_in = shape[1]·∏shape[2...], fan_out = shape[0]·∏shape[2...]):
//   nn.Linear, nn.Conv2d, nn.ConvTranspose2d weight: kaiming_uniform_(a = √5)
//       gain = √(2/(1+a²)) = √(1/3), std = gain/√fan_in, bound = √3·std = 1/√fan_in
//       (for ConvTranspose2d the weight is [in, out/groups, kH, kW], so fan_in = out·kH·kW)
//   their bias: U(−1/√fan_in, 1/√fan_in) with the weight's fan_in
//   nn.Embedding weight: N(0, 1)
//   norms (LayerNorm, GroupNorm, BatchNorm): weight 1, bias 0; BN running mean 0, var 1
//   mmcv kaiming_init (mmseg UNet, ConvModule): N(0, std²), std = √2/√fan_out, bias 0
//   mmcv constant_init (norms in mmseg UNet): weight = val, bias 0

import Tensors

/// Initialisers that overwrite a tensor's values in place (PyTorch's `nn.init.*_`).
public enum Init {
    /// Which fan Kaiming initialisation preserves (PyTorch's `mode`).
    public enum FanMode: Sendable { case fanIn, fanOut }

    /// The nonlinearity after the layer, for `gain` (PyTorch's `nonlinearity` and `a`).
    public enum Nonlinearity: Sendable {
        case linear, sigmoid, tanh, relu
        /// Leaky ReLU with this negative slope (PyTorch's `a`); slope 0 is PyTorch's default.
        case leakyRelu(Double)
    }

    /// `torch.nn.init.calculate_gain`: 1 (linear, conv, sigmoid), 5/3 (tanh), √2 (relu),
    /// √(2/(1+a²)) (leaky_relu with slope a).
    public static func gain(_ nonlinearity: Nonlinearity) -> Double {
        switch nonlinearity {
        case .linear, .sigmoid: return 1
        case .tanh: return 5.0 / 3
        case .relu: return (2.0).squareRoot()
        case .leakyRelu(let a): return (2.0 / (1 + a * a)).squareRoot()
        }
    }

    /// `torch.nn.init._calculate_fan_in_and_fan_out`: for a weight of shape [d0, d1, k...],
    /// fan_in = d1·∏k and fan_out = d0·∏k. Precondition: rank ≥ 2.
    public static func fans(_ shape: [Int]) -> (fanIn: Int, fanOut: Int) {
        precondition(shape.count >= 2, "Init.fans: shape \(shape) needs at least 2 dimensions")
        let receptive = shape.dropFirst(2).reduce(1, *)
        return (shape[1] * receptive, shape[0] * receptive)
    }

    /// Fills `t` with U(lo, hi) (`nn.init.uniform_`).
    public static func uniform(_ t: Tensor, _ lo: Double, _ hi: Double, rng: inout PhiloxRNG) {
        let l = Float(lo), h = Float(hi)
        var d = [Float](repeating: 0, count: t.count)
        for i in d.indices { d[i] = rng.uniform(l, h) }
        t.assign(d)
    }

    /// Fills `t` with N(mean, std²) (`nn.init.normal_`).
    public static func normal(_ t: Tensor, mean: Double = 0, std: Double = 1, rng: inout PhiloxRNG) {
        let m = Float(mean), s = Float(std)
        var d = [Float](repeating: 0, count: t.count)
        for i in d.indices { d[i] = m + s * rng.nextNormal() }
        t.assign(d)
    }

    /// Fills `t` with `value` (`nn.init.constant_`).
    public static func constant(_ t: Tensor, _ value: Double) {
        t.assign([Float](repeating: Float(value), count: t.count))
    }

    /// The standard deviation Kaiming initialisation gives a weight of `shape`:
    /// gain(nonlinearity) / √fan.
    public static func kaimingStd(_ shape: [Int], mode: FanMode, nonlinearity: Nonlinearity) -> Double {
        let (fanIn, fanOut) = fans(shape)
        let fan = mode == .fanIn ? fanIn : fanOut
        precondition(fan > 0, "Init.kaiming: zero fan for shape \(shape)")
        return gain(nonlinearity) / Double(fan).squareRoot()
    }

    /// `nn.init.kaiming_uniform_`: U(−b, b) with b = √3 · gain/√fan.
    public static func kaimingUniform(_ t: Tensor, mode: FanMode = .fanIn,
                                      nonlinearity: Nonlinearity = .leakyRelu(0), rng: inout PhiloxRNG) {
        let bound = (3.0).squareRoot() * kaimingStd(t.shape, mode: mode, nonlinearity: nonlinearity)
        uniform(t, -bound, bound, rng: &rng)
    }

    /// `nn.init.kaiming_normal_`: N(0, std²) with std = gain/√fan.
    public static func kaimingNormal(_ t: Tensor, mode: FanMode = .fanIn,
                                     nonlinearity: Nonlinearity = .leakyRelu(0), rng: inout PhiloxRNG) {
        normal(t, mean: 0, std: kaimingStd(t.shape, mode: mode, nonlinearity: nonlinearity), rng: &rng)
    }

    /// PyTorch's `reset_parameters` of nn.Linear and nn.Conv*d (and ConvTranspose*d):
    /// weight kaiming_uniform_(a = √5), i.e. U(−1/√fan_in, 1/√fan_in) up to rounding, then
    /// bias U(−1/√fan_in, 1/√fan_in) with the weight's fan_in (0 when fan_in is 0).
    public static func pytorchDefault(weight: Tensor, bias: Tensor?, rng: inout PhiloxRNG) {
        kaimingUniform(weight, mode: .fanIn, nonlinearity: .leakyRelu((5.0).squareRoot()), rng: &rng)
        if let bias {
            let fanIn = fans(weight.shape).fanIn
            let bound = fanIn > 0 ? 1 / Double(fanIn).squareRoot() : 0
            uniform(bias, -bound, bound, rng: &rng)
        }
    }

    /// How mmcv's `kaiming_init` draws.
    public enum Distribution: Sendable { case normal, uniform }

    /// mmcv/mmengine `kaiming_init(module, a, mode, nonlinearity, bias, distribution)`, with
    /// mmseg's defaults: weight N(0, 2/fan_out) (fan_out = out·kH·kW for a Conv2d), bias 0.
    /// `a` is the leaky-ReLU slope, used only when `nonlinearity` is `.leakyRelu`.
    public static func kaimingInit(weight: Tensor, bias: Tensor?, mode: FanMode = .fanOut,
                                   nonlinearity: Nonlinearity = .relu, distribution: Distribution = .normal,
                                   biasValue: Double = 0, rng: inout PhiloxRNG) {
        switch distribution {
        case .normal: kaimingNormal(weight, mode: mode, nonlinearity: nonlinearity, rng: &rng)
        case .uniform: kaimingUniform(weight, mode: mode, nonlinearity: nonlinearity, rng: &rng)
        }
        if let bias { constant(bias, biasValue) }
    }

    /// mmcv/mmengine `constant_init(module, val, bias)`: weight = val, bias = `biasValue`.
    public static func constantInit(weight: Tensor?, bias: Tensor?, value: Double, biasValue: Double = 0) {
        if let weight { constant(weight, value) }
        if let bias { constant(bias, biasValue) }
    }
}
