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

    // MARK: shape ops, softmax, norms, interpolation, pooling — cases go here

    // MARK: losses and F-LMM ops — cases go here
}

enum Gradients {
    /// Gradients of the inputs of `op` given `g`, the gradient of `output`.
    static func backward(_ op: Primitive, inputs x: [Tensor], output y: Tensor, grad g: Tensor) -> [Tensor?] {
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

        // MARK: shape ops, softmax, norms, interpolation, pooling — gradients go here

        // MARK: losses and F-LMM ops — gradients go here
        }
    }

    /// Elementwise f(g, t) for same-shape tensors.
    static func zip(_ g: Tensor, _ t: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
        precondition(g.shape == t.shape, "Gradients.zip: \(g.shape) vs \(t.shape)")
        return Tensor(shape: g.shape, data: Kernels.binary(g.data, g.shape, t.data, t.shape, g.shape, f))
    }

    /// f(g, t) with `t` broadcast to `shape` (the output shape).
    static func pointwise(_ g: Tensor, _ t: Tensor, _ shape: [Int], _ f: (Float, Float) -> Float) -> Tensor {
        Tensor(shape: shape, data: Kernels.binary(g.data, g.shape, t.data, t.shape, shape, f))
    }

    /// Sums a broadcast gradient back to the input's shape.
    static func reduce(_ g: Tensor, to x: Tensor) -> Tensor {
        g.shape == x.shape ? g : Tensor(shape: x.shape, data: Kernels.sumToShape(g.data, g.shape, x.shape))
    }
}
