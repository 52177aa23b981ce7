// Tensor: Float32, contiguous, row-major (NCHW for images).
//
// Dimension letters used in doc comments across the toolkit:
//   N batch or masks, C channels, H W spatial, L layers, NH heads, T tokens, D features.
//
// A tensor is a reference type, as in PyTorch: autograd attaches `grad` to the leaf that
// asked for it. Ops never mutate their inputs; they return new tensors. Data is always
// contiguous, so `permute` and `slice` copy (cheap at this toolkit's sizes, and it keeps every
// kernel simple and every reduction order fixed).

/// A Float32 tensor with optional reverse-mode gradient tracking.
public final class Tensor: @unchecked Sendable {
    /// Sizes, outermost first (PyTorch's `shape`).
    public let shape: [Int]
    /// Elements in row-major order; `data.count == shape.product`.
    public internal(set) var data: [Float]
    /// Leaf flag: accumulate a gradient into `grad` during `backward()`.
    public var requiresGrad: Bool
    /// The gradient accumulated by the last `backward()` (leaves with `requiresGrad` only).
    public internal(set) var grad: Tensor?
    /// The op that made this tensor, when it was made from tensors that need gradients.
    var node: Node?

    /// Wraps `data` with `shape`. Precondition: the element count matches.
    public init(shape: [Int], data: [Float], requiresGrad: Bool = false) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative size in shape \(shape)")
        precondition(shape.reduce(1, *) == data.count,
                     "Tensor: shape \(shape) holds \(shape.reduce(1, *)) elements, data has \(data.count)")
        self.shape = shape
        self.data = data
        self.requiresGrad = requiresGrad
    }

    /// A tensor of `shape` filled with `value`.
    public convenience init(repeating value: Float, shape: [Int], requiresGrad: Bool = false) {
        self.init(shape: shape, data: [Float](repeating: value, count: shape.reduce(1, *)),
                  requiresGrad: requiresGrad)
    }

    /// A 0-d tensor holding `value`.
    public convenience init(scalar value: Float) {
        self.init(shape: [], data: [value])
    }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(repeating: 0, shape: shape) }
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(repeating: 1, shape: shape) }

    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Number of elements.
    public var count: Int { data.count }
    /// Size of dimension `d` (negative `d` counts from the end).
    public func size(_ d: Int) -> Int { shape[normalizedDim(d, rank: rank, op: "size")] }

    /// The value of a one-element tensor.
    public var item: Float {
        precondition(count == 1, "item: tensor of shape \(shape) has \(count) elements, expected 1")
        return data[0]
    }

    /// Whether gradients flow through this tensor (a leaf that asked, or a result of one).
    public var tracksGradient: Bool { requiresGrad || node != nil }

    /// The same values, cut from the graph (PyTorch's `detach()`).
    public func detached() -> Tensor { Tensor(shape: shape, data: data) }

    /// Clears the accumulated gradient.
    public func zeroGrad() { grad = nil }

    /// Replaces the values in place (optimisers, loading). Shapes must match; the graph is cut.
    public func assign(_ values: [Float]) {
        precondition(values.count == count, "assign: \(values.count) values for shape \(shape)")
        data = values
        node = nil
    }

    /// Sets the accumulated gradient (used by the backward engine and by optimiser tests).
    public func setGrad(_ g: Tensor?) {
        if let g { precondition(g.shape == shape, "setGrad: gradient \(g.shape) for tensor \(shape)") }
        grad = g
    }

    /// Row-major strides of `shape`.
    public static func strides(of shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for d in stride(from: shape.count - 1, through: 0, by: -1) {
            s[d] = acc
            acc *= shape[d]
        }
        return s
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = data.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), data: [\(head)\(count > 8 ? ", …" : "")])"
    }
}

/// Maps a possibly negative dimension index into `0..<rank`, naming the op on failure.
@inline(__always)
public func normalizedDim(_ d: Int, rank: Int, op: String) -> Int {
    let r = d < 0 ? d + rank : d
    precondition(r >= 0 && r < max(rank, 1), "\(op): dim \(d) out of range for rank \(rank)")
    return r
}

extension Array where Element == Int {
    /// Product of the sizes (1 for a 0-d shape).
    @inline(__always) public var product: Int { reduce(1, *) }
}
