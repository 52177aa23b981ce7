// Pointwise activation kernels and their derivatives, generic over the scalar
// (Float for the toolkit, Double for finite-difference checks).

import RealModule

extension Kernels {
    /// ReLU: max(x, 0). Derivative 1 for x > 0, 0 for x <= 0 (PyTorch's choice at 0).
    @inlinable public static func relu<T: Real>(_ x: T) -> T { x > 0 ? x : 0 }
    @inlinable public static func reluGrad<T: Real>(_ x: T) -> T { x > 0 ? 1 : 0 }

    /// Sigmoid 1/(1+exp(-x)), written so neither branch overflows.
    @inlinable public static func sigmoid<T: Real>(_ x: T) -> T {
        if x >= 0 { return 1 / (1 + T.exp(-x)) }
        let e = T.exp(x)
        return e / (1 + e)
    }

    /// Exact (erf) GELU: 0.5 x (1 + erf(x/√2)).
    @inlinable public static func gelu<T: Real>(_ x: T) -> T {
        T(1) / 2 * x * (1 + T.erf(x / T.sqrt(2)))
    }
    /// d/dx GELU = 0.5 (1 + erf(x/√2)) + x exp(-x²/2) / √(2π).
    @inlinable public static func geluGrad<T: Real>(_ x: T) -> T {
        T(1) / 2 * (1 + T.erf(x / T.sqrt(2))) + x * T.exp(-x * x / 2) / T.sqrt(2 * T.pi)
    }
}
