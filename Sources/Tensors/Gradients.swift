// The one table of gradients.
//
// `Primitive` lists every op that records a node; `Gradients.backward` gives, for each, the
// gradients of the backward scalar with respect to the op's inputs, from the output's
// gradient `g`. Composite ops (mean, SAM attention, the losses…) are built from these
// primitives and need no entry. Fused primitives (softmax, the norms, BCE with logits…) list
// their closed-form gradients here too.
//
// Conventions: the returned array has one entry per input, `nil` for inputs that take no
// gradient (integer-like inputs, or inputs that do not track gradients). Everything here
// runs with recording off.

/// An op that autograd can differentiate, with what its backward needs to know.
public enum Primitive: Sendable {
    // Elementwise with broadcasting: inputs [a, b].
    case add, sub, mul, div
    // Scalar: input [x].
    case addScalar, mulScalar(Float), divScalar(Float)
    // Pointwise: input [x].
    case exp, log, sqrt, relu, sigmoid, gelu, clampMin(Float)
    // Reductions and shapes: input [x].
    case sum(dims: [Int], keepDim: Bool)
    case reshape
    case permute([Int])

    // MARK: GEMM-based ops (matmul, linear, conv) — cases go here
    // matmul: inputs [a, b], rank >= 2 each, torch.matmul batch broadcasting.
    case matmul
    // linear: inputs [x, weight] or [x, weight, bias]; y = x·Wᵀ + b over the last dim.
    case linear
    // r + linear(x, weight, bias): inputs [x, weight, r] or [x, weight, bias, r].
    case linearAdding(hasBias: Bool)
    // conv2d (NCHW, groups 1): inputs [x, weight] or [x, weight, bias].
    case conv2d(Conv2dGeometry)
    // conv_transpose2d (groups 1): inputs [x, weight [C, O, kH, kW]] or [x, weight, bias].
    case convTranspose2d(Conv2dGeometry, outputPadding: (Int, Int))

    // MARK: shape ops, softmax, norms, interpolation, pooling — cases go here
    // Softmax / log-softmax along `dim`: input [x]; fused, closed-form gradient.
    case softmax(dim: Int), logSoftmax(dim: Int)
    // LayerNorm, LayerNorm2d, GroupNorm, BatchNorm: inputs [x, weight?, bias?] (see NormPlan).
    case norm(NormPlan)
    // F.interpolate (nearest / bilinear): input [x]; gradient = transpose.
    case interpolate(InterpolationPlan)
    // Max pooling: input [x]; gradient to each window's arg-max (flat index within its plane).
    case maxPool2d(Pool2dShape, argmax: [Int32])
    // Concatenation along `dim`: inputs = the concatenated tensors.
    case cat(dim: Int)
    // x[..., start:start+len, ...] along `dim`: input [x].
    case narrow(dim: Int, start: Int)
    // Constant padding (F.pad's flat (before, after) list, last dim first): input [x].
    case pad([Int])
    // index_select along `dim`: input [x]; gradient scatter-adds in index order.
    case indexSelect(dim: Int, indices: [Int])
    // max along `dim` (values): input [x]; gradient to the recorded arg-max of each output.
    case maxDim(dim: Int, indices: [Int])
    // Broadcast copy (expand): input [x]; gradient sums back.
    case expand

    // MARK: losses and F-LMM ops — cases go here
    // F.binary_cross_entropy_with_logits, reduction 'none': inputs [logits, target]; fused.
    case bceWithLogits
    // F-LMM phrase attention maps (select, grid, merge, stack): input [attention [L, NH, R, K]].
    case phraseMaps(PhraseMapPlan)
    // U-Net head, channel-major [C, N, H, W] (Kernels/UNetKernels.swift):
    // same-padding stride-1 convolution of all images, inputs [x, weight];
    case convCNHW
    // the same for 3×3 by Winograd F(2×2, 3×3), inputs [x, weight];
    case conv3x3WinogradCNHW(WinogradOperands)
    // relu(GroupNorm(x)), inputs [x, weight, bias];
    case groupNormReLUCNHW(GroupNormReLUPlan)
    // convolution of the bilinearly upsampled, zero-padded input, computed at low resolution, inputs [x, weight].
    case upsampledConvCNHW(UpsampledConvPlan)

    // MARK: SAM ops — cases go here
    // Fused multi-head attention: inputs [q, k, v] or [q, k, v, rh, rw]; the softmax
    // probabilities of the forward are kept for the closed-form backward.
    case multiHeadAttention(AttentionGeometry, probs: [Float])
    // Multi-head attention with the key and value projections folded in: inputs [k, v, q,
    // kWeight, kBias, vWeight, vBias]; Q', P and O' of the forward kept for the backward.
    case foldedAttention(FoldedAttentionGeometry, saved: FoldedAttentionSaved<Float>)
    // The same with the query and output projections folded in: inputs [x, k, v, qWeight, qBias,
    // outWeight, outBias] (+ [residual]); K', P and V' of the forward kept for the backward.
    case queryFoldedAttention(FoldedAttentionGeometry, saved: FoldedAttentionSaved<Float>)
    // GELU with the vectorised erf: input [x].
    case geluVectorized
    // ConvTranspose2d(k=2, s=2)'s pixel shuffle, then GELU: input [y [B, h·w, 4·C]].
    case geluPixelShuffle2x2(h: Int, w: Int)
    // a · bᵀ per batch for small a: inputs [a [B, M, K], b [B, N, K]].
    case matmulNT
    // LayerNorm over contiguous rows: inputs [x] + [weight] + [bias] when present; row statistics kept.
    case layerNormRows(mean: [Double], rstd: [Double], hasWeight: Bool, hasBias: Bool)

    // MARK: TinyVLM ops — cases go here
    // Fused causal self-attention on packed qkv [T, 3·NH·d]: input [qkv]; the forward's
    // probabilities are kept for the closed-form backward.
    case causalAttention(CausalAttentionGeometry, probs: [Float])
}

enum Gradients {
    /// Whether `backward` can add gradients already gathered for inputs 0 and 1 into its own
    /// (`gathered`): a linear layer's x and W, the folded attentions' k and v (x and k), whose
    /// GEMMs add them as they store.
    static func addsGathered(_ op: Primitive) -> Bool {
        switch op {
        case .linear, .linearAdding, .foldedAttention, .queryFoldedAttention: return true
        default: return false
        }
    }

    /// Gradients of the inputs of `op` given `g`, the gradient of `output`. `gathered[i]`
    /// (only where `addsGathered(op)`): a gradient already gathered for input i, which the
    /// returned gradient of input i then includes (gathered + own, as `Tensor.addRaw` adds).
    static func backward(_ op: Primitive, inputs x: [Tensor], output y: Tensor, grad g: Tensor,
                         gathered: [Tensor?] = []) -> [Tensor?] {
        switch op {
        case .add:
            return [reduce(g, to: x[0]), reduce(g, to: x[1])]
        case .sub:
            return [reduce(g, to: x[0]), reduce(g.map { -$0 }, to: x[1])]
        case .mul:
            return [reduce(pointwise(g, x[1], y.shape) { $0 * $1 }, to: x[0]),
                    reduce(pointwise(g, x[0], y.shape) { $0 * $1 }, to: x[1])]
        case .div:
            // d(a/b)/da = 1/b ; d(a/b)/db = -a/b² = -y/b
            let ga = pointwise(g, x[1], y.shape) { $0 / $1 }
            let gb = pointwise(pointwise(g, y, y.shape) { $0 * $1 }, x[1], y.shape) { -$0 / $1 }
            return [reduce(ga, to: x[0]), reduce(gb, to: x[1])]
        case .addScalar:
            return [g]
        case .mulScalar(let s):
            return [g.map { $0 * s }]
        case .divScalar(let s):
            return [g.map { $0 / s }]
        case .exp:
            return [zip(g, y) { $0 * $1 }]
        case .log:
            return [zip(g, x[0]) { $0 / $1 }]
        case .sqrt:
            return [zip(g, y) { $0 / (2 * $1) }]
        case .relu:
            return [zip(g, x[0]) { $0 * Kernels.reluGrad($1) }]
        case .sigmoid:
            return [zip(g, y) { $0 * $1 * (1 - $1) }]
        case .gelu:
            return [zip(g, x[0]) { $0 * Kernels.geluGrad($1) }]
        case .clampMin(let lo):
            return [zip(g, x[0]) { $1 >= lo ? $0 : 0 }]
        case .sum(let dims, let keepDim):
            return [Tensor(shape: x[0].shape,
                           data: Kernels.sumBackward(g.data, inputShape: x[0].shape, dims: dims, keepDim: keepDim))]
        case .reshape:
            return [Tensor(shape: x[0].shape, data: g.data)]
        case .permute(let dims):
            var inverse = [Int](repeating: 0, count: dims.count)
            for (i, d) in dims.enumerated() { inverse[d] = i }
            return [Tensor(shape: x[0].shape, data: Kernels.permute(g.data, g.shape, inverse))]

        // MARK: GEMM-based ops (matmul, linear, conv) — gradients go here
        case .matmul:
            let (ga, gb) = Kernels.matmulBackward(g.data, x[0].data, x[0].shape, x[1].data, x[1].shape,
                                                  needA: x[0].tracksGradient, needB: x[1].tracksGradient)
            return [ga.map { Tensor(shape: x[0].shape, data: $0) }, gb.map { Tensor(shape: x[1].shape, data: $0) }]
        case .linear, .linearAdding:
            // The residual of `linearAdding` (last input) gets g itself.
            var hasBias = x.count > 2, residual = false
            if case .linearAdding(let b) = op { (hasBias, residual) = (b, true) }
            let w = x[1], fout = w.shape[0], fin = w.shape[1]
            let grads = Kernels.linearBackward(g.data, x[0].data, rows: Array(x[0].shape.dropLast()).product, weight: w.data,
                                               inFeatures: fin, outFeatures: fout, needX: x[0].tracksGradient,
                                               needW: w.tracksGradient, needBias: hasBias && x[2].tracksGradient,
                                               addX: gathered.count > 0 ? gathered[0]?.data : nil,
                                               addW: gathered.count > 1 ? gathered[1]?.data : nil)
            var out: [Tensor?] = [grads.x.map { Tensor(shape: x[0].shape, data: $0) },
                                  grads.weight.map { Tensor(shape: w.shape, data: $0) }]
            if hasBias { out.append(grads.bias.map { Tensor(shape: x[2].shape, data: $0) }) }
            if residual { out.append(Tensor(shape: x[x.count - 1].shape, data: g.data)) }
            return out
        case .conv2d(let geometry):
            let r = Kernels.conv2dBackward(g.data, x: x[0].data, x[0].shape, weight: x[1].data, x[1].shape, geometry,
                                           needX: x[0].tracksGradient, needWeight: x[1].tracksGradient,
                                           needBias: x.count > 2 && x[2].tracksGradient)
            var out: [Tensor?] = [r.x.map { Tensor(shape: x[0].shape, data: $0) },
                                  r.weight.map { Tensor(shape: x[1].shape, data: $0) }]
            if x.count > 2 { out.append(r.bias.map { Tensor(shape: x[2].shape, data: $0) }) }
            return out
        case .convTranspose2d(let geometry, let outputPadding):
            let r = Kernels.convTranspose2dBackward(g.data, x: x[0].data, x[0].shape, weight: x[1].data, x[1].shape,
                                                    geometry, outputPadding: outputPadding,
                                                    needX: x[0].tracksGradient, needWeight: x[1].tracksGradient,
                                                    needBias: x.count > 2 && x[2].tracksGradient)
            var out: [Tensor?] = [r.x.map { Tensor(shape: x[0].shape, data: $0) },
                                  r.weight.map { Tensor(shape: x[1].shape, data: $0) }]
            if x.count > 2 { out.append(r.bias.map { Tensor(shape: x[2].shape, data: $0) }) }
            return out

        // MARK: shape ops, softmax, norms, interpolation, pooling — gradients go here
        case .softmax(let d), .logSoftmax(let d):
            let (o, k, i) = y.splitAround(d)
            var isLog = false
            if case .logSoftmax = op { isLog = true }
            return [Tensor(shape: y.shape, data: Kernels.softmaxBackward(y.data, g.data, outer: o, axis: k, inner: i, log: isLog))]
        case .norm(let plan):
            let w: Tensor? = plan.hasWeight ? x[1] : nil
            let (dx, dw, db) = Kernels.normBackward(x[0].data, g.data, plan.shape, mean: plan.mean, rstd: plan.rstd,
                                                    weight: w?.data, statsConstant: plan.statsConstant)
            var out: [Tensor?] = [Tensor(shape: x[0].shape, data: dx)]
            if let w { out.append(Tensor(shape: w.shape, data: dw)) }
            if plan.hasBias { out.append(Tensor(shape: x[x.count - 1].shape, data: db)) }
            return out
        case .interpolate(let plan):
            return [Tensor(shape: x[0].shape,
                           data: Kernels.interpolateBackward(g.data, planes: x[0].shape[0] * x[0].shape[1], plan))]
        case .maxPool2d(let s, let argmax):
            return [Tensor(shape: x[0].shape,
                           data: Kernels.maxPool2dBackward(g.data, argmax: argmax, planes: x[0].shape[0] * x[0].shape[1], s))]
        case .cat(let d):
            var start = 0
            return x.map { t in
                defer { start += t.shape[d] }
                return Tensor(shape: t.shape, data: Kernels.narrow(g.data, g.shape, dim: d, start: start, length: t.shape[d]))
            }
        case .narrow(let d, let start):
            return [Tensor(shape: x[0].shape,
                           data: Kernels.narrowBackward(g.data, inputShape: x[0].shape, dim: d, start: start, length: y.shape[d]))]
        case .pad(let p):
            return [Tensor(shape: x[0].shape, data: Kernels.padBackward(g.data, inputShape: x[0].shape, pad: p))]
        case .indexSelect(let d, let indices):
            let (o, k, i) = x[0].splitAround(d)
            return [Tensor(shape: x[0].shape,
                           data: Kernels.indexSelectBackward(g.data, outer: o, axis: k, inner: i, indices: indices))]
        case .maxDim(let d, let indices):
            let (o, k, i) = x[0].splitAround(d)
            return [Tensor(shape: x[0].shape,
                           data: Kernels.maxAlongBackward(g.data, indices: indices, outer: o, axis: k, inner: i))]
        case .expand:
            return [reduce(g, to: x[0])]

        // MARK: losses and F-LMM ops — gradients go here
        case .bceWithLogits:
            // ∂/∂x = g·(σ(x) − t), ∂/∂t = −g·x
            let (dx, dt) = Kernels.bceWithLogitsBackward(g.data, x[0].data, x[1].data)
            return [Tensor(shape: x[0].shape, data: dx), x[1].tracksGradient ? Tensor(shape: x[1].shape, data: dt) : nil]
        case .phraseMaps(let plan):
            let s = x[0].shape
            return [Tensor(shape: s, data: Kernels.phraseMapsBackward(g.data, x[0].data, layers: s[0], heads: s[1],
                                                                      rows: s[2], cols: s[3], plan: plan))]
        case .convCNHW:
            let (s, ws) = (x[0].shape, x[1].shape)
            let r = Kernels.convCNHWBackward(g.data, x: x[0].data, c: s[0], n: s[1], h: s[2], w: s[3], weight: x[1].data,
                                             o: ws[0], k: ws[2], needX: x[0].tracksGradient, needWeight: x[1].tracksGradient)
            return [r.dx.map { Tensor(shape: s, data: $0) }, r.dweight.map { Tensor(shape: ws, data: $0) }]
        case .conv3x3WinogradCNHW(let saved):
            let (s, ws) = (x[0].shape, x[1].shape)
            let r = Kernels.conv3x3WinogradBackward(g.data, x: x[0].data, c: s[0], n: s[1], h: s[2], w: s[3],
                                                    weight: x[1].data, o: ws[0], needX: x[0].tracksGradient,
                                                    needWeight: x[1].tracksGradient, u: saved.u, v: saved.v)
            return [r.dx.map { Tensor(shape: s, data: $0) }, r.dweight.map { Tensor(shape: ws, data: $0) }]
        case .groupNormReLUCNHW(let plan):
            let s = x[0].shape
            let r = Kernels.groupNormReLUCNHWBackward(g.data, x: x[0].data, y: y.data, c: s[0], n: s[1], hw: s[2] * s[3],
                                                      groups: plan.groups, mean: plan.mean, rstd: plan.rstd,
                                                      weight: x[1].data)
            return [Tensor(shape: s, data: r.dx), Tensor(shape: x[1].shape, data: r.dweight),
                    Tensor(shape: x[2].shape, data: r.dbias)]
        case .upsampledConvCNHW(let plan):
            let (s, ws) = (x[0].shape, x[1].shape)
            let r = Kernels.upsampledConvCNHWBackward(g.data, x: x[0].data, c: s[0], n: s[1], weight: x[1].data, o: ws[0],
                                                      plan, needX: x[0].tracksGradient, needWeight: x[1].tracksGradient)
            return [r.dx.map { Tensor(shape: s, data: $0) }, r.dweight.map { Tensor(shape: ws, data: $0) }]

        // MARK: SAM ops — gradients go here
        case .multiHeadAttention(let geometry, let probs):
            let r = Kernels.attentionBackward(g.data, q: x[0].data, k: x[1].data, v: x[2].data,
                                              rh: x.count > 3 ? x[3].data : nil, rw: x.count > 3 ? x[4].data : nil,
                                              probs: probs, geometry)
            var out: [Tensor?] = [Tensor(shape: x[0].shape, data: r.dq), Tensor(shape: x[1].shape, data: r.dk),
                                  Tensor(shape: x[2].shape, data: r.dv)]
            if x.count > 3, let drh = r.drh, let drw = r.drw {
                out += [Tensor(shape: x[3].shape, data: drh), Tensor(shape: x[4].shape, data: drw)]
            }
            return out
        case .foldedAttention(let geometry, let saved):
            let r = Kernels.foldedAttentionBackward(g.data, q: x[2].data, k: x[0].data, v: x[1].data,
                                                    kWeight: x[3].data, kBias: x[4].data, vWeight: x[5].data,
                                                    saved: saved, geometry,
                                                    needK: x[0].tracksGradient, needV: x[1].tracksGradient,
                                                    addK: gathered.count > 0 ? gathered[0]?.data : nil,
                                                    addV: gathered.count > 1 ? gathered[1]?.data : nil)
            return [r.dk.map { Tensor(shape: x[0].shape, data: $0) }, r.dv.map { Tensor(shape: x[1].shape, data: $0) },
                    Tensor(shape: x[2].shape, data: r.dq), Tensor(shape: x[3].shape, data: r.dkWeight),
                    Tensor(shape: x[4].shape, data: r.dkBias), Tensor(shape: x[5].shape, data: r.dvWeight),
                    Tensor(shape: x[6].shape, data: r.dvBias)]
        case .queryFoldedAttention(let geometry, let saved):
            let r = Kernels.queryFoldedAttentionBackward(g.data, x: x[0].data, k: x[1].data, v: x[2].data,
                                                         qWeight: x[3].data, qBias: x[4].data, outWeight: x[5].data,
                                                         saved: saved, geometry, needX: x[0].tracksGradient,
                                                         addX: gathered.count > 0 ? gathered[0]?.data : nil,
                                                         addK: gathered.count > 1 ? gathered[1]?.data : nil)
            var out: [Tensor?] = [r.dx.map { Tensor(shape: x[0].shape, data: $0) }, Tensor(shape: x[1].shape, data: r.dk),
                                  Tensor(shape: x[2].shape, data: r.dv), Tensor(shape: x[3].shape, data: r.dqWeight),
                                  Tensor(shape: x[4].shape, data: r.dqBias), Tensor(shape: x[5].shape, data: r.doutWeight),
                                  Tensor(shape: x[6].shape, data: r.doutBias)]
            if x.count > 7 { out.append(Tensor(shape: x[7].shape, data: g.data)) }
            return out
        case .geluVectorized:
            return [Tensor(shape: x[0].shape, data: Kernels.geluVectorizedBackward(g.data, x[0].data))]
        case .geluPixelShuffle2x2(let h, let w):
            let y = x[0].shape
            return [Tensor(shape: y, data: Kernels.geluPixelShuffle2x2Backward(g.data, x[0].data, batch: y[0], h: h, w: w,
                                                                                channels: y[2] / 4))]
        case .matmulNT:
            let (a, b) = (x[0].shape, x[1].shape)
            let r = Kernels.matmulNTBackward(g.data, x[0].data, x[1].data, batch: a[0], m: a[1], n: b[1], k: a[2],
                                             needA: x[0].tracksGradient, needB: x[1].tracksGradient)
            return [r.da.map { Tensor(shape: a, data: $0) }, r.db.map { Tensor(shape: b, data: $0) }]
        case .layerNormRows(let mean, let rstd, let hasWeight, let hasBias):
            let d = x[0].shape[x[0].rank - 1]
            let r = Kernels.layerNormRowsBackward(g.data, x[0].data, rows: mean.count, d: d, mean: mean, rstd: rstd,
                                                  weight: hasWeight ? x[1].data : nil)
            var out: [Tensor?] = [Tensor(shape: x[0].shape, data: r.dx)]
            if hasWeight { out.append(Tensor(shape: [d], data: r.dWeight)) }
            if hasBias { out.append(Tensor(shape: [d], data: r.dBias)) }
            return out

        // MARK: TinyVLM ops — gradients go here
        case .causalAttention(let geometry, let probs):
            return [Tensor(shape: x[0].shape,
                           data: Kernels.causalAttentionBackward(g.data, qkv: x[0].data, probs: probs, geometry))]
        }
    }

    /// Elementwise f(g, t) for same-shape tensors.
    static func zip(_ g: Tensor, _ t: Tensor, _ f: @Sendable (Float, Float) -> Float) -> Tensor {
        precondition(g.shape == t.shape, "Gradients.zip: \(g.shape) vs \(t.shape)")
        return Tensor(shape: g.shape, data: Kernels.binary(g.data, g.shape, t.data, t.shape, g.shape, f))
    }

    /// f(g, t) with `t` broadcast to `shape` (the output shape).
    static func pointwise(_ g: Tensor, _ t: Tensor, _ shape: [Int], _ f: @Sendable (Float, Float) -> Float) -> Tensor {
        Tensor(shape: shape, data: Kernels.binary(g.data, g.shape, t.data, t.shape, shape, f))
    }

    /// Sums a broadcast gradient back to the input's shape.
    static func reduce(_ g: Tensor, to x: Tensor) -> Tensor {
        g.shape == x.shape ? g : Tensor(shape: x.shape, data: Kernels.sumToShape(g.data, g.shape, x.shape))
    }
}
