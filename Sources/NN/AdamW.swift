// AdamW with the semantics and float arithmetic of PyTorch's `torch.optim.AdamW`
// (amsgrad=False, maximize=False, foreach=False, i.e. `_single_tensor_adam` with decoupled
// weight decay, non-capturable), on CPU float32 tensors.
//
// Per parameter p with gradient g (parameters whose `grad` is nil are skipped entirely, and
// their step count does not advance, as in PyTorch), with lr, β1, β2, eps, wd Doubles:
//
//   step += 1                                      (per parameter, like state['step'])
//   p ← p · Float(1 − lr·wd)                        param.mul_(1 - lr*wd); skipped when wd == 0
//   m ← fma(w, g − m, m),  w = Float(1 − β1)         exp_avg.lerp_(grad, 1 - beta1): ATen's
//                                                  vectorised lerp for |w| < 0.5 is
//                                                  fmadd(w, end − self, self)
//   v ← v·Float(β2);  v ← v + (Float(1 − β2)·g)·g    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1-beta2)
//   bc1 = 1 − β1^step,  bc2 = 1 − β2^step           Python floats (Double, libm pow)
//   stepSize = lr / bc1;  bc2Sqrt = √bc2            Double (PyTorch: bc2**0.5)
//   denom = √v / Float(bc2Sqrt) + Float(eps)        (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps):
//                                                  float32 sqrt, true division, add
//   p ← p + (Float(−stepSize)·m) / denom            param.addcdiv_(exp_avg, denom, value=-step_size):
//                                                  ATen computes self + value·t1/t2 left to right
//
// Every Double scalar becomes a Float before it meets a tensor, as a Python scalar does in a
// float32 ATen kernel. Elements are independent, so the update is split across threads over
// elements without changing any bit.

import Tensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `torch.optim.AdamW` for a fixed list of parameters.
public final class AdamW {
    /// Optimiser state of one parameter (PyTorch's `state[p]`).
    public struct State: Sendable {
        /// Number of updates applied to this parameter.
        public var step: Int
        /// First moment (`exp_avg`).
        public var expAvg: [Float]
        /// Second moment (`exp_avg_sq`).
        public var expAvgSq: [Float]
    }

    /// The parameters, in the order given (the update order; it does not affect any value).
    public let parameters: [Tensor]
    /// Learning rate; a schedule sets it before each `step()`.
    public var lr: Double
    public var beta1: Double
    public var beta2: Double
    public var eps: Double
    public var weightDecay: Double
    /// State per parameter (same order as `parameters`); nil until its first update.
    public private(set) var state: [State?]

    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2.
    public init(_ parameters: [Tensor], lr: Double = 1e-3, betas: (Double, Double) = (0.9, 0.999),
                eps: Double = 1e-8, weightDecay: Double = 1e-2) {
        precondition(lr >= 0 && eps >= 0 && weightDecay >= 0 && (0..<1).contains(betas.0) && (0..<1).contains(betas.1),
                     "AdamW: invalid lr \(lr), betas \(betas), eps \(eps) or weight_decay \(weightDecay)")
        var seen = Set<ObjectIdentifier>()
        for p in parameters {
            precondition(seen.insert(ObjectIdentifier(p)).inserted, "AdamW: a parameter of shape \(p.shape) is listed twice")
        }
        self.parameters = parameters
        self.lr = lr
        beta1 = betas.0
        beta2 = betas.1
        self.eps = eps
        self.weightDecay = weightDecay
        state = [State?](repeating: nil, count: parameters.count)
    }

    /// Applies one update to every parameter that has a gradient.
    public func step() {
        for (i, p) in parameters.enumerated() {
            guard let grad = p.grad else { continue }
            precondition(grad.shape == p.shape, "AdamW.step: gradient \(grad.shape) for parameter \(p.shape)")
            var s = state[i] ?? State(step: 0, expAvg: [Float](repeating: 0, count: p.count),
                                      expAvgSq: [Float](repeating: 0, count: p.count))
            state[i] = nil  // drop the stored copy so the arrays below are mutated in place
            s.step += 1
            let t = Double(s.step)
            // wd == 0 skips PyTorch's mul_; multiplying by exactly 1 changes no bit, so one loop serves.
            let decay: Float = weightDecay != 0 ? Float(1 - lr * weightDecay) : 1
            // ATen's lerp(self, end, w): fmadd(w, end − self, self) when |w| < 0.5, else
            // fmadd(w − 1, end − self, end).
            let w1 = Float(1 - beta1)
            let smallWeight = abs(w1) < 0.5
            let lerpCoeff = smallWeight ? w1 : w1 - 1
            let b2 = Float(beta2), c2 = Float(1 - beta2)
            let bc1 = 1 - pow(beta1, t)
            let bc2 = 1 - pow(beta2, t)
            let stepSize = lr / bc1
            let bc2Sqrt = Float(bc2.squareRoot())
            let epsF = Float(eps)
            let negStep = Float(-stepSize)
            var param = p.data
            param.withUnsafeMutableBufferPointer { pp in
                s.expAvg.withUnsafeMutableBufferPointer { mp in
                    s.expAvgSq.withUnsafeMutableBufferPointer { vp in
                        grad.data.withUnsafeBufferPointer { gp in
                            guard let p0 = pp.baseAddress, let m0 = mp.baseAddress, let v0 = vp.baseAddress,
                                  let g0 = gp.baseAddress else { return }
                            let P = SendablePointer(p0), M = SendablePointer(m0)
                            let V = SendablePointer(v0), G = SendableConstPointer(g0)
                            Parallel.forEachChunk(pp.count, grain: 1 << 15) { r in
                                for j in r {
                                    let g = G[j], mOld = M[j]
                                    let m = (smallWeight ? mOld : g).addingProduct(lerpCoeff, g - mOld)
                                    let v = V[j] * b2 + (c2 * g) * g
                                    let denom = v.squareRoot() / bc2Sqrt + epsF
                                    M[j] = m
                                    V[j] = v
                                    P[j] = P[j] * decay + (negStep * m) / denom
                                }
                            }
                        }
                    }
                }
            }
            p.assign(param)
            state[i] = s
        }
    }

    /// Clears the gradients of all parameters (PyTorch's `zero_grad(set_to_none=True)`).
    public func zeroGrad() {
        for p in parameters { p.zeroGrad() }
    }
}
