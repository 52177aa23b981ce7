// Elementwise ops with broadcasting, scalar ops and pointwise activations.

import RealModule

extension Tensor {
    /// Applies `f` to each element (no graph).
    @inlinable
    public func map(_ f: (Float) -> Float) -> Tensor { Tensor(shape: shape, data: data.map(f)) }

    static func binaryOp(_ a: Tensor, _ b: Tensor, _ op: Primitive, _ name: String,
                         _ arithmetic: Kernels.Arithmetic) -> Tensor {
        let s = Kernels.broadcastShape(a.shape, b.shape, op: name)
        let out = Tensor(shape: s, data: Kernels.binary(a.data, a.shape, b.data, b.shape, s, arithmetic))
        return record(out, [a, b], op)
    }

    /// a + b with broadcasting.
    public static func + (a: Tensor, b: Tensor) -> Tensor { binaryOp(a, b, .add, "add", .add) }
    /// a − b with broadcasting.
    public static func - (a: Tensor, b: Tensor) -> Tensor { binaryOp(a, b, .sub, "sub", .sub) }
    /// a · b (elementwise) with broadcasting.
    public static func * (a: Tensor, b: Tensor) -> Tensor { binaryOp(a, b, .mul, "mul", .mul) }
    /// a / b (elementwise) with broadcasting.
    public static func / (a: Tensor, b: Tensor) -> Tensor { binaryOp(a, b, .div, "div", .div) }

    /// x + s.
    public static func + (x: Tensor, s: Float) -> Tensor {
        record(Tensor(shape: x.shape, data: x.data.map { $0 + s }), [x], .addScalar)
    }
    public static func + (s: Float, x: Tensor) -> Tensor { x + s }
    public static func - (x: Tensor, s: Float) -> Tensor { x + (-s) }
    public static func - (s: Float, x: Tensor) -> Tensor { (-x) + s }
    /// x · s.
    public static func * (x: Tensor, s: Float) -> Tensor {
        record(Tensor(shape: x.shape, data: x.data.map { $0 * s }), [x], .mulScalar(s))
    }
    public static func * (s: Float, x: Tensor) -> Tensor { x * s }
    /// x / s, computed as a true division (not multiplication by 1/s), like PyTorch.
    public static func / (x: Tensor, s: Float) -> Tensor {
        record(Tensor(shape: x.shape, data: x.data.map { $0 / s }), [x], .divScalar(s))
    }
    /// −x.
    public static prefix func - (x: Tensor) -> Tensor { x * -1 }

    func unary(_ op: Primitive, _ f: (Float) -> Float) -> Tensor {
        record(Tensor(shape: shape, data: data.map(f)), [self], op)
    }

    /// eˣ.
    public func exp() -> Tensor { unary(.exp) { Float.exp($0) } }
    /// Natural logarithm.
    public func log() -> Tensor { unary(.log) { Float.log($0) } }
    /// Square root.
    public func sqrt() -> Tensor { unary(.sqrt) { $0.squareRoot() } }
    /// max(x, 0).
    public func relu() -> Tensor { unary(.relu) { Kernels.relu($0) } }
    /// 1 / (1 + e⁻ˣ).
    public func sigmoid() -> Tensor { unary(.sigmoid) { Kernels.sigmoid($0) } }
    /// Exact (erf) GELU, `nn.GELU()`.
    public func gelu() -> Tensor { unary(.gelu) { Kernels.gelu($0) } }
    /// Clamps below at `min` (`torch.clamp(min=)`); gradient 1 where x > min... and at x == min
    /// PyTorch passes the gradient (x >= min), which this follows.
    public func clamp(min lo: Float) -> Tensor { unary(.clampMin(lo)) { Swift.max($0, lo) } }
}
