// Binary cross-entropy on logits (F.binary_cross_entropy_with_logits, reduction 'none'),
// generic over the scalar (Float for the toolkit, Double for finite-difference checks).
//
//   l(x, t) = (1 − t)·x − log σ(x),   log σ(x) = min(x, 0) − log1p(exp(−|x|))
// which never overflows (|x| = 40 and beyond). Gradients: ∂l/∂x = σ(x) − t (0.5 − t at
// x = 0), ∂l/∂t = −x.

import RealModule

extension Kernels {
    /// log σ(x) without overflow.
    @inlinable public static func logSigmoid<T: Real>(_ x: T) -> T {
        Swift.min(x, 0) - T.log(onePlus: T.exp(-Swift.abs(x)))
    }

    /// Elementwise BCE-with-logits loss of logits `x` against targets `t` (same count).
    @inlinable public static func bceWithLogits<T: Real>(_ x: [T], _ t: [T]) -> [T] {
        precondition(x.count == t.count, "bceWithLogits: \(x.count) logits, \(t.count) targets")
        return [T](unsafeUninitializedCapacity: x.count) { buf, n in
            for i in 0..<x.count { buf[i] = (1 - t[i]) * x[i] - logSigmoid(x[i]) }
            n = x.count
        }
    }

    /// Gradients (dx, dt) of `bceWithLogits` from the output gradient `g`.
    @inlinable public static func bceWithLogitsBackward<T: Real>(_ g: [T], _ x: [T], _ t: [T]) -> (dx: [T], dt: [T]) {
        precondition(g.count == x.count && x.count == t.count,
                     "bceWithLogitsBackward: \(g.count) gradients, \(x.count) logits, \(t.count) targets")
        var dx = [T](repeating: 0, count: x.count), dt = dx
        for i in 0..<x.count {
            dx[i] = g[i] * (sigmoid(x[i]) - t[i])
            dt[i] = -g[i] * x[i]
        }
        return (dx, dt)
    }
}
