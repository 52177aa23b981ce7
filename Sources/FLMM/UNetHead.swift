// F-LMM's mask head (flmm/models/mask_head/mask_decoder.py `UNetHead`) over mmseg 1.x's UNet
// (mmseg/models/backbones/unet.py, utils/up_conv_block.py), as F-LMM configures it:
//
//   forward(x [N, C_in, h, w]):
//     normalize_input:  x ← x / clamp(Σ_{h,w} x, min 1e-12) per (n, c)   (x must lie in [0, 1])
//     upsample_input U: s = max(1, U / max(h, w)); x ← bilinear(x, scale_factor s)
//                       (size ⌊h·s⌋ × ⌊w·s⌋, coordinate ratio 1/s, align_corners False)
//     pad:              zeros at the bottom/right up to multiples of 2^(stages−1) = 8
//     UNet:             encoder stage 0 = BasicConvBlock(C_in → B); stage i = MaxPool2d(2) +
//                       BasicConvBlock(B·2^(i−1) → B·2^i); decoder (deepest first) UpConvBlock:
//                       InterpConv (bilinear ×2 by size, then 1×1 ConvModule B·2^i → B·2^(i−1)),
//                       cat([skip, up]), BasicConvBlock(2·B·2^(i−1) → B·2^(i−1));
//                       ConvModule = conv (bias only without a norm) → norm → ReLU
//     crop:             the last (full-resolution) decoder output [..., :h, :w]
//     conv_seg:         1×1 Conv2d(B → 1) with bias → [N, 1, h, w]
//   The norm is GroupNorm(1 group) in every F-LMM config; BatchNorm2d is mmseg's default and an
//   option here. Parameter names are the PyTorch state-dict keys below `mask_head.`
//   (`encoder.1.1.convs.0.gn.weight`, `decoder.2.upsample.interp_upsample.1.conv.weight`, …).
//   Initialisation as mmseg: every Conv2d (conv_seg included) Kaiming normal, fan_out, ReLU
//   gain, bias 0; norms weight 1, bias 0.

import NN
import Tensors

/// The norm layer of mmcv's ConvModule (`norm_cfg`).
public enum UNetNorm: Sendable, Equatable {
    /// `dict(type='GN', num_groups=g)`: nn.GroupNorm(g, C, eps). F-LMM: 1 group, eps 1e-5.
    case groupNorm(numGroups: Int, eps: Double)
    /// `dict(type='BN')`: nn.BatchNorm2d(C, eps, momentum) (mmseg's default).
    case batchNorm(eps: Double, momentum: Double?)

    /// The attribute name mmcv gives the layer: "gn" or "bn".
    var key: String {
        switch self {
        case .groupNorm: return "gn"
        case .batchNorm: return "bn"
        }
    }
}

/// Hyper-parameters of mmseg's UNet and F-LMM's UNetHead.
public struct UNetHeadConfig: Sendable, Equatable {
    public var inChannels: Int
    public var baseChannels: Int = 64
    public var numStages: Int = 4
    public var strides: [Int] = [1, 1, 1, 1]
    public var encNumConvs: [Int] = [2, 2, 2, 2]
    public var decNumConvs: [Int] = [2, 2, 2]
    public var downsamples: [Bool] = [true, true, true]
    public var encDilations: [Int] = [1, 1, 1, 1]
    public var decDilations: [Int] = [1, 1, 1]
    public var norm: UNetNorm = .groupNorm(numGroups: 1, eps: 1e-5)
    /// Target size U of `upsample_input` (F-LMM: 64), or nil.
    public var upsampleInput: Int? = 64
    /// `normalize_input` (F-LMM: true).
    public var normalizeInput: Bool = true

    /// F-LMM's configuration (all its configs): 4 stages, base 64, GroupNorm(1), InterpConv,
    /// normalize_input, upsample_input 64; `inChannels` = L·NH (·2 for two-map layouts).
    public init(inChannels: Int) {
        self.inChannels = inChannels
    }

    /// Checks the per-stage lists against `numStages` (mmseg's asserts).
    func validate() {
        let s = numStages
        precondition(inChannels > 0 && baseChannels > 0 && s >= 2, "UNetHead: in \(inChannels), base \(baseChannels), stages \(s)")
        precondition(strides.count == s && encNumConvs.count == s && encDilations.count == s,
                     "UNetHead: strides \(strides), enc_num_convs \(encNumConvs), enc_dilations \(encDilations) need \(s) entries")
        precondition(decNumConvs.count == s - 1 && downsamples.count == s - 1 && decDilations.count == s - 1,
                     "UNetHead: dec_num_convs \(decNumConvs), downsamples \(downsamples), dec_dilations \(decDilations) need \(s - 1) entries")
        precondition(strides.allSatisfy { $0 == 1 || $0 == 2 } && (encNumConvs + decNumConvs).allSatisfy { $0 >= 1 },
                     "UNetHead: strides \(strides) must be 1 or 2, every block needs a conv")
        if let u = upsampleInput { precondition(u > 0, "UNetHead: upsample_input \(u)") }
    }
}

/// A bad input to the mask head.
public enum UNetHeadError: Error, CustomStringConvertible, Equatable {
    /// `normalize_input` needs attention values in [0, 1]; this one is outside (or NaN).
    case inputOutOfRange(index: Int, value: Float)
    /// The input is not [N, in_channels, h, w].
    case inputShape(expected: String, actual: [Int])

    public var description: String {
        switch self {
        case .inputOutOfRange(let i, let v):
            return "UNetHead: normalize_input expects values in [0, 1] (attention probabilities), found \(v) at element \(i)"
        case .inputShape(let e, let a):
            return "UNetHead: expected input \(e), got shape \(a)"
        }
    }
}

/// mmcv `ConvModule(in, out, k, stride, padding, dilation, norm_cfg, act_cfg=ReLU)`:
/// conv (no bias, since a norm follows) → norm → ReLU. Keys: `conv.weight`, `gn.*` / `bn.*`.
public final class ConvModule: Module {
    public let conv: Conv2d
    public let groupNorm: GroupNorm?
    public let batchNorm: BatchNorm2d?
    let normKey: String

    public var children: [ModuleChild] {
        [.module("conv", conv), .module(normKey, groupNorm ?? batchNorm)]
    }

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, norm: UNetNorm, rng: inout PhiloxRNG) {
        conv = Conv2d(inChannels, outChannels, kernelSize: kernelSize, stride: stride, padding: padding,
                      dilation: dilation, bias: false, rng: &rng)
        Init.kaimingInit(weight: conv.weight, bias: conv.bias, rng: &rng)
        normKey = norm.key
        switch norm {
        case .groupNorm(let g, let eps):
            groupNorm = GroupNorm(g, outChannels, eps: eps)
            batchNorm = nil
        case .batchNorm(let eps, let momentum):
            groupNorm = nil
            batchNorm = BatchNorm2d(outChannels, eps: eps, momentum: momentum)
        }
    }

    /// x [N, in, H, W] → [N, out, H', W'].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = conv2d(x, weight: conv.weight, bias: conv.bias, stride: conv.stride, padding: conv.padding,
                       dilation: conv.dilation)
        if let gn = groupNorm { return gn(y).relu() }
        return batchNorm!(y).relu()
    }

    /// The same on channel-major x [in, N, H, W] (stride 1, same padding, GroupNorm) → [out, N, H, W];
    /// 3×3 kernels by Winograd F(2×2, 3×3).
    func channelMajor(_ x: Tensor) -> Tensor {
        normReLU(conv.kernelSize == 3 ? x.conv3x3WinogradCNHW(weight: conv.weight) : x.convCNHW(weight: conv.weight))
    }

    /// GroupNorm + ReLU of a channel-major conv output (fused).
    func normReLU(_ y: Tensor) -> Tensor {
        let gn = groupNorm!
        return y.groupNormReLUCNHW(numGroups: gn.numGroups, weight: gn.weight!, bias: gn.bias!, eps: gn.eps)
    }
}

/// mmseg `BasicConvBlock(in, out, num_convs, stride, dilation)`: 3×3 ConvModules; the first
/// has the stride (dilation 1, padding 1), the others stride 1, dilation = padding = `dilation`.
/// Keys: `convs.<i>.…`.
public final class BasicConvBlock: Module {
    public let convs: [ConvModule]
    public var children: [ModuleChild] { [.list("convs", convs)] }

    public init(_ inChannels: Int, _ outChannels: Int, numConvs: Int, stride: Int, dilation: Int, norm: UNetNorm,
                rng: inout PhiloxRNG) {
        var cs: [ConvModule] = []
        for i in 0..<numConvs {
            cs.append(ConvModule(i == 0 ? inChannels : outChannels, outChannels, kernelSize: 3,
                                 stride: i == 0 ? stride : 1, padding: i == 0 ? 1 : dilation,
                                 dilation: i == 0 ? 1 : dilation, norm: norm, rng: &rng))
        }
        convs = cs
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { convs.reduce(x) { $1($0) } }

    /// The same on channel-major x [in, N, H, W].
    func channelMajor(_ x: Tensor) -> Tensor { convs.reduce(x) { $1.channelMajor($0) } }
}

/// mmseg `InterpConv` (conv_first False): bilinear ×2 by size (⌊2h⌋ × ⌊2w⌋, align_corners
/// False, F-LMM's float32 Upsample), then a 1×1 ConvModule. Keys: `interp_upsample.1.…`.
public final class InterpConv: Module {
    public let conv: ConvModule
    public var children: [ModuleChild] { [.list("interp_upsample", [nil, conv])] }

    public init(_ inChannels: Int, _ outChannels: Int, norm: UNetNorm, rng: inout PhiloxRNG) {
        conv = ConvModule(inChannels, outChannels, kernelSize: 1, norm: norm, rng: &rng)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        conv(interpolate(x, size: (2 * x.shape[2], 2 * x.shape[3]), mode: .bilinear, alignCorners: false))
    }
}

/// mmseg `UpConvBlock`: x ← upsample(x) (InterpConv, or a 1×1 ConvModule when the stage did
/// not downsample); BasicConvBlock(cat([skip, x], dim 1)). Keys: `conv_block.…`, `upsample.…`.
public final class UpConvBlock: Module {
    public let convBlock: BasicConvBlock
    public let interp: InterpConv?
    public let projection: ConvModule?

    public var children: [ModuleChild] {
        [.module("conv_block", convBlock), .module("upsample", interp ?? projection)]
    }

    public init(inChannels: Int, skipChannels: Int, outChannels: Int, numConvs: Int, dilation: Int, upsample: Bool,
                norm: UNetNorm, rng: inout PhiloxRNG) {
        convBlock = BasicConvBlock(2 * skipChannels, outChannels, numConvs: numConvs, stride: 1, dilation: dilation,
                                   norm: norm, rng: &rng)
        if upsample {
            interp = InterpConv(inChannels, skipChannels, norm: norm, rng: &rng)
            projection = nil
        } else {
            interp = nil
            projection = ConvModule(inChannels, skipChannels, kernelSize: 1, norm: norm, rng: &rng)
        }
    }

    public func callAsFunction(skip: Tensor, _ x: Tensor) -> Tensor {
        let up = interp.map { $0(x) } ?? projection!(x)
        return convBlock(cat([skip, up], dim: 1))
    }

    /// The same on channel-major tensors (InterpConv only): the 1×1 conv runs before the ×2
    /// bilinear resize (they commute), on a quarter of the pixels.
    func channelMajor(skip: Tensor, _ x: Tensor) -> Tensor {
        let m = interp!.conv
        let (h, w) = (x.shape[2], x.shape[3])
        let up = InterpolationPlan(mode: .bilinear, h: .linear(inSize: h, outSize: 2 * h, scale: nil, alignCorners: false),
                                   w: .linear(inSize: w, outSize: 2 * w, scale: nil, alignCorners: false))
        let y = x.upsampledConvCNHW(weight: m.conv.weight, plan: UpsampledConvPlan(up: up, frameH: 2 * h, frameW: 2 * w, kernelSize: 1))
        return convBlock.channelMajor(cat([skip, m.normReLU(y)], dim: 0))
    }
}

/// One encoder stage: `Sequential([MaxPool2d(2)?, BasicConvBlock])`. Keys `0.…` or `1.…`.
public final class UNetEncoderStage: Module {
    public let maxPool: Bool
    public let block: BasicConvBlock
    public var children: [ModuleChild] { [.module(maxPool ? "1" : "0", block)] }

    init(maxPool: Bool, block: BasicConvBlock) {
        self.maxPool = maxPool
        self.block = block
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        block(maxPool ? maxPool2d(x, kernelSize: 2) : x)
    }
}

/// F-LMM's `UNetHead` (see the file header). Keys: `encoder.*`, `decoder.*`, `conv_seg.*`.
public final class UNetHead: Module {
    public let config: UNetHeadConfig
    public let encoder: [UNetEncoderStage]
    public let decoder: [UpConvBlock]
    /// Conv2d(base, 1, 1) with bias.
    public let convSeg: Conv2d

    public var children: [ModuleChild] {
        [.list("encoder", encoder), .list("decoder", decoder), .module("conv_seg", convSeg)]
    }

    public init(_ config: UNetHeadConfig, rng: inout PhiloxRNG) {
        config.validate()
        self.config = config
        let b = config.baseChannels
        var enc: [UNetEncoderStage] = [], dec: [UpConvBlock] = []
        var inC = config.inChannels
        for i in 0..<config.numStages {
            let out = b << i
            if i > 0 {
                dec.append(UpConvBlock(inChannels: out, skipChannels: out / 2, outChannels: out / 2,
                                       numConvs: config.decNumConvs[i - 1], dilation: config.decDilations[i - 1],
                                       upsample: config.strides[i] != 1 || config.downsamples[i - 1],
                                       norm: config.norm, rng: &rng))
            }
            let pool = i > 0 && config.strides[i] == 1 && config.downsamples[i - 1]
            enc.append(UNetEncoderStage(maxPool: pool, block: BasicConvBlock(
                inC, out, numConvs: config.encNumConvs[i], stride: config.strides[i], dilation: config.encDilations[i],
                norm: config.norm, rng: &rng)))
            inC = out
        }
        encoder = enc
        decoder = dec
        convSeg = Conv2d(b, 1, kernelSize: 1, rng: &rng)
        Init.kaimingInit(weight: convSeg.weight, bias: convSeg.bias, rng: &rng)
    }

    /// Whether the fused channel-major path applies: F-LMM's configuration (GroupNorm, stride 1
    /// with max-pool downsampling at every stage, dilation 1). Otherwise `reference` runs.
    public var usesFusedPath: Bool {
        guard case .groupNorm = config.norm else { return false }
        return config.strides.allSatisfy { $0 == 1 } && config.downsamples.allSatisfy { $0 }
            && (config.encDilations + config.decDilations).allSatisfy { $0 == 1 }
    }

    /// Mask logits [N, 1, h', w'] for attention maps `x` [N, in_channels, h, w]
    /// ((h', w') = (h, w), or the upsampled size with `upsample_input`). Runs the fused
    /// channel-major path when it applies (`usesFusedPath`), else `reference`.
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let x = try prepared(x)
        return usesFusedPath ? fused(x) : reference(normalized: x)
    }

    /// The head composed of the NCHW ops one by one, exactly as the PyTorch module is written
    /// (the reference the fused path is tested against).
    public func reference(_ x: Tensor) throws -> Tensor { reference(normalized: try prepared(x)) }

    /// Checks the input and applies normalize_input.
    func prepared(_ x: Tensor) throws -> Tensor {
        guard x.rank == 4 && x.shape[1] == config.inChannels && x.shape[2] > 0 && x.shape[3] > 0 else {
            throw UNetHeadError.inputShape(expected: "[N, \(config.inChannels), h, w]", actual: x.shape)
        }
        guard config.normalizeInput else { return x }
        if let i = x.data.firstIndex(where: { !($0 >= 0 && $0 <= 1) }) {
            throw UNetHeadError.inputOutOfRange(index: i, value: x.data[i])
        }
        return x / x.sum([2, 3], keepDim: true).clamp(min: 1e-12)
    }

    /// upsample_input's bilinear plan for an h×w input, or nil (no option, or scale 1: the
    /// identity).
    func inputUpsampling(h: Int, w: Int) -> InterpolationPlan? {
        guard let u = config.upsampleInput else { return nil }
        let s = Swift.max(1.0, Double(u) / Double(Swift.max(h, w)))
        guard s > 1 else { return nil }
        let (oh, ow) = (Int((Double(h) * s).rounded(.down)), Int((Double(w) * s).rounded(.down)))
        return InterpolationPlan(mode: .bilinear, h: .linear(inSize: h, outSize: oh, scale: s, alignCorners: false),
                                 w: .linear(inSize: w, outSize: ow, scale: s, alignCorners: false))
    }

    /// Size padded up to multiples of 2^(stages−1).
    func paddedSize(_ h: Int, _ w: Int) -> (Int, Int) {
        let m = 1 << (config.numStages - 1)
        return ((h + m - 1) / m * m, (w + m - 1) / m * m)
    }

    /// The fused path: channel-major activations, upsample_input folded into the first
    /// convolution (computed at the input resolution), InterpConv's 1×1 conv before its resize.
    func fused(_ x: Tensor) -> Tensor {
        let (h0, w0) = (x.shape[2], x.shape[3])
        let up = inputUpsampling(h: h0, w: w0)
        let (h, w) = up.map { ($0.h.outSize, $0.w.outSize) } ?? (h0, w0)
        let (ph, pw) = paddedSize(h, w)
        var t = x.permute([1, 0, 2, 3])
        let first = encoder[0].block.convs[0]
        if let up {
            t = first.normReLU(t.upsampledConvCNHW(weight: first.conv.weight,
                                                   plan: UpsampledConvPlan(up: up, frameH: ph, frameW: pw, kernelSize: 3)))
        } else {
            if ph != h || pw != w { t = pad(t, (left: 0, right: pw - w, top: 0, bottom: ph - h)) }
            t = first.channelMajor(t)
        }
        for m in encoder[0].block.convs.dropFirst() { t = m.channelMajor(t) }
        var skips = [t]
        for stage in encoder.dropFirst() {
            t = stage.block.channelMajor(maxPool2d(t, kernelSize: 2))
            skips.append(t)
        }
        for i in stride(from: decoder.count - 1, through: 0, by: -1) {
            t = decoder[i].channelMajor(skip: skips[i], t)
        }
        let y = t.crop(height: h, width: w).convCNHW(weight: convSeg.weight) + convSeg.bias!.reshape([1, 1, 1, 1])
        return y.permute([1, 0, 2, 3])
    }

    /// The NCHW composition, from the normalized input.
    func reference(normalized x: Tensor) -> Tensor {
        var x = x
        if let u = config.upsampleInput {
            let s = Swift.max(1.0, Double(u) / Double(Swift.max(x.shape[2], x.shape[3])))
            x = interpolate(x, scaleFactor: (s, s), mode: .bilinear, alignCorners: false)
        }
        let (h, w) = (x.shape[2], x.shape[3])
        let (ph, pw) = paddedSize(h, w)
        if ph != h || pw != w { x = pad(x, (left: 0, right: pw - w, top: 0, bottom: ph - h)) }
        var skips: [Tensor] = []
        for stage in encoder {
            x = stage(x)
            skips.append(x)
        }
        for i in stride(from: decoder.count - 1, through: 0, by: -1) {
            x = decoder[i](skip: skips[i], x)
        }
        x = x.crop(height: h, width: w)
        return conv2d(x, weight: convSeg.weight, bias: convSeg.bias)
    }
}
