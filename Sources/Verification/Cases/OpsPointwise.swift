// Case runners: pointwise activations (ops_relu, ops_sigmoid, ops_gelu).
//
// Each case: in.x → out.y = f(in.x); backward scalar (out.y · upstream.y).sum();
// gradient grad.in.x.

import Tensors

enum OpsPointwise {
    /// A runner for `y = f(x)` whose config names the PyTorch op `op`.
    static func unary(op: String, _ f: @escaping @Sendable (Tensor) -> Tensor) -> CaseRunner {
        return { golden in
            _ = try golden.setting("op").string(oneOf: [op])
            let x = try golden.leaf("in.x")
            let y = f(x)
            try golden.runBackward(outputs: ["y": y])
            var result = CaseResult()
            result.tensors["out.y"] = y.detached()
            if let g = x.grad { result.tensors["grad.in.x"] = g }
            return result
        }
    }

    static let relu = unary(op: "torch.nn.ReLU") { $0.relu() }
    static let sigmoid = unary(op: "torch.sigmoid") { $0.sigmoid() }
    static let gelu = unary(op: "torch.nn.GELU(approximate='none')") { $0.gelu() }
}
