// Finite-difference gradient checks in Double for the shape / softmax / norm / interpolation /
// pooling kernels: the SAME generic kernels run in Double, and the analytic backward (also in
// Double) is compared with central differences of the objective Σ forward(x)·u.

import XCTest
import Tensors

enum OpsGradCheck {
    /// Deterministic normal samples (Philox), as Double.
    static func normals(_ n: Int, seed: UInt64, scale: Double = 1, shift: Double = 0) -> [Double] {
        var rng = PhiloxRNG(seed: seed, stream: 7)
        return (0..<n).map { _ in Double(rng.nextNormal()) * scale + shift + (rng.nextDouble() - 0.5) * 1e-3 }
    }

    static func dot(_ a: [Double], _ b: [Double]) -> Double {
        var s = 0.0
        for i in a.indices { s += a[i] * b[i] }
        return s
    }

    static func norm(_ a: [Double]) -> Double { dot(a, a).squareRoot() }

    /// ‖numeric − analytic‖₂ / ‖analytic‖₂ where numeric[i] = (f(x + h eᵢ) − f(x − h eᵢ)) / 2h and
    /// f(x) = Σ forward(x)·u. Fails the test if the analytic gradient is all zero.
    static func relativeError(_ x: [Double], upstream u: [Double], analytic: [Double], h: Double = 1e-6,
                              file: StaticString = #filePath, line: UInt = #line,
                              _ forward: ([Double]) -> [Double]) -> Double {
        XCTAssertEqual(analytic.count, x.count, "analytic gradient size", file: file, line: line)
        var numeric = [Double](repeating: 0, count: x.count)
        var xp = x
        for i in x.indices {
            xp[i] = x[i] + h
            let fp = dot(forward(xp), u)
            xp[i] = x[i] - h
            let fm = dot(forward(xp), u)
            xp[i] = x[i]
            numeric[i] = (fp - fm) / (2 * h)
        }
        let na = norm(analytic)
        XCTAssertGreaterThan(na, 0, "analytic gradient is identically zero", file: file, line: line)
        var d = numeric
        for i in d.indices { d[i] -= analytic[i] }
        return norm(d) / max(na, 1e-300)
    }

    /// Asserts `relativeError(...) <= tol` and prints the error.
    static func check(_ name: String, _ x: [Double], upstream u: [Double], analytic: [Double], tol: Double = 1e-6,
                      h: Double = 1e-6, file: StaticString = #filePath, line: UInt = #line,
                      _ forward: ([Double]) -> [Double]) {
        let e = relativeError(x, upstream: u, analytic: analytic, h: h, file: file, line: line, forward)
        print("finite differences \(name): relative error \(e)")
        XCTAssertLessThanOrEqual(e, tol, "\(name): finite-difference relative error \(e)", file: file, line: line)
    }

    /// Max |a − b| over elements.
    static func maxAbs<T: BinaryFloatingPoint>(_ a: [T], _ b: [T]) -> Double {
        precondition(a.count == b.count)
        var m = 0.0
        for i in a.indices { m = max(m, abs(Double(a[i]) - Double(b[i]))) }
        return m
    }
}
