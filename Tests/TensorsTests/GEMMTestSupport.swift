import Tensors

/// Shared helpers of the GEMM-based op tests (matmul, linear, conv): random data, central
/// differences in Double, the relative error of the golden tolerance rule.
enum GEMMTestSupport {
    /// Standard normal Doubles from a fixed Philox stream (Float draws widened).
    static func randn(_ count: Int, seed: UInt64) -> [Double] {
        var rng = PhiloxRNG(seed: seed, stream: 7)
        return (0..<count).map { _ in Double(rng.nextNormal()) }
    }

    /// ∂f/∂x by central differences (x ± h) for every element.
    static func numericGradient(_ x: [Double], h: Double = 1e-5, _ f: ([Double]) -> Double) -> [Double] {
        var x = x
        var g = [Double](repeating: 0, count: x.count)
        for i in x.indices {
            let x0 = x[i]
            x[i] = x0 + h
            let fp = f(x)
            x[i] = x0 - h
            let fm = f(x)
            x[i] = x0
            g[i] = (fp - fm) / (2 * h)
        }
        return g
    }

    /// Σ out · upstream.
    static func dot(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count, "dot: \(a.count) vs \(b.count)")
        var s = 0.0
        for i in a.indices { s += a[i] * b[i] }
        return s
    }

    /// ‖a − b‖₂ / ‖b‖₂ (‖a − b‖₂ when b is 0), in Double.
    static func relErr<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(_ a: [A], _ b: [B]) -> Double {
        precondition(a.count == b.count, "relErr: \(a.count) vs \(b.count) elements")
        var num = 0.0, den = 0.0
        for i in a.indices {
            let d = Double(a[i]) - Double(b[i])
            num += d * d
            den += Double(b[i]) * Double(b[i])
        }
        return den > 0 ? (num / den).squareRoot() : num.squareRoot()
    }

    static func floats(_ x: [Double]) -> [Float] { x.map { Float($0) } }
}
