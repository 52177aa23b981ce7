// Reverse-mode automatic differentiation.
//
// Every differentiable op records a `Node` (its `Primitive` and its inputs) on its output
// when gradients are enabled and some input tracks them. `backward()` walks the graph in a
// fixed reverse topological order and asks `Gradients.backward` (the one table of gradient
// formulas, Gradients.swift) for each node's input gradients. Gradients are accumulated in
// that fixed order, so they are bitwise reproducible.

/// One recorded op: which primitive made the output, and from which inputs.
final class Node {
    let op: Primitive
    let inputs: [Tensor]
    init(op: Primitive, inputs: [Tensor]) {
        self.op = op
        self.inputs = inputs
    }
}

/// Global switch for recording (PyTorch's `torch.no_grad()`).
public enum Autograd {
    nonisolated(unsafe) static var enabledDepth = 0

    /// True unless inside `Autograd.noGrad { }`.
    public static var isEnabled: Bool { enabledDepth == 0 }

    /// Runs `body` without recording any graph.
    public static func noGrad<R>(_ body: () throws -> R) rethrows -> R {
        enabledDepth += 1
        defer { enabledDepth -= 1 }
        return try body()
    }
}

/// Attaches `op` to `out` if recording is on and any input tracks gradients. Returns `out`.
@inline(__always)
func record(_ out: Tensor, _ inputs: [Tensor], _ op: @autoclosure () -> Primitive) -> Tensor {
    if Autograd.isEnabled {
        for t in inputs where t.tracksGradient {
            out.node = Node(op: op(), inputs: inputs)
            break
        }
    }
    return out
}

extension Tensor {
    /// Back-propagates from this tensor. `gradient` defaults to 1 for a one-element tensor
    /// (PyTorch's `loss.backward()`); otherwise it must have this tensor's shape.
    /// Leaves with `requiresGrad` accumulate into `grad`.
    public func backward(_ gradient: Tensor? = nil) {
        let seed: Tensor
        if let gradient {
            precondition(gradient.shape == shape,
                         "backward: gradient shape \(gradient.shape) differs from tensor shape \(shape)")
            seed = gradient
        } else {
            precondition(count == 1, "backward: tensor of shape \(shape) needs an explicit gradient")
            seed = Tensor(repeating: 1, shape: shape)
        }
        let order = topologicalOrder()
        var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(self): seed]
        Autograd.noGrad {
            for t in order.reversed() {
                guard let g = grads.removeValue(forKey: ObjectIdentifier(t)) else { continue }
                if let node = t.node {
                    // Gradients already gathered for inputs the op adds into its own (each input
                    // once: not when it is also another input of the same node).
                    var gathered: [Tensor?] = []
                    if Gradients.addsGathered(node.op) {
                        gathered = node.inputs.prefix(2).enumerated().map { i, x in
                            let unique = node.inputs.indices.allSatisfy { $0 == i || node.inputs[$0] !== x }
                            return unique && x.tracksGradient ? grads.removeValue(forKey: ObjectIdentifier(x)) : nil
                        }
                    }
                    let inputGrads = Gradients.backward(node.op, inputs: node.inputs, output: t, grad: g, gathered: gathered)
                    precondition(inputGrads.count == node.inputs.count,
                                 "backward: \(node.op) returned \(inputGrads.count) gradients for \(node.inputs.count) inputs")
                    for (i, (x, gx)) in zip(node.inputs, inputGrads).enumerated() {
                        guard let gx, x.tracksGradient else {
                            // A gathered gradient taken out above goes back when the op gave none.
                            if i < gathered.count, let back = gathered[i] { grads[ObjectIdentifier(x)] = back }
                            continue
                        }
                        precondition(gx.shape == x.shape,
                                     "backward: \(node.op) gave gradient \(gx.shape) for input \(x.shape)")
                        let key = ObjectIdentifier(x)
                        if let prev = grads[key] { grads[key] = Tensor.addRaw(prev, gx) } else { grads[key] = gx }
                    }
                } else if t.requiresGrad {
                    t.grad = t.grad.map { Tensor.addRaw($0, g) } ?? g
                }
            }
        }
    }

    /// Tensors reachable from `self` through recorded nodes, inputs before outputs.
    /// Iterative DFS in input order, so the order is the same on every run.
    func topologicalOrder() -> [Tensor] {
        var order: [Tensor] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(Tensor, Int)] = [(self, 0)]
        visited.insert(ObjectIdentifier(self))
        while let (t, i) = stack.popLast() {
            let inputs = t.node?.inputs ?? []
            if i < inputs.count {
                stack.append((t, i + 1))
                let x = inputs[i]
                if x.tracksGradient && visited.insert(ObjectIdentifier(x)).inserted {
                    stack.append((x, 0))
                }
            } else {
                order.append(t)
            }
        }
        return order
    }

    /// Elementwise sum of two same-shape tensors, outside the graph (each element a + b, so any
    /// split over threads gives the same bits).
    static func addRaw(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "addRaw: shapes \(a.shape) and \(b.shape)")
        return Tensor(shape: a.shape, data: Kernels.binary(a.data, a.shape, b.data, b.shape, a.shape, .add))
    }
}
