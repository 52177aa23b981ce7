// Softmax and log-softmax along one axis, fused forward and closed-form backward.
//
// Layout: the input is seen as [O, K, I] (O outer dims, K the softmax axis, I inner dims);
// each of the O·I rows of K elements (stride I) is independent. Generic over the scalar so
// the finite-difference checks run this same code in Double.
//
// Numerics (per row): m = max_k x_k; e_k = exp(x_k − m) in T; s = Σ_k e_k accumulated in Double
// in k order; softmax y_k = e_k / s (Double division, rounded once); log-softmax
// y_k = (x_k − m) − log s. Subtracting the row max keeps exp from overflowing (logits ~100).
// Backward: softmax dx_k = y_k (g_k − Σ_j g_j y_j); log-softmax dx_k = g_k − exp(y_k) Σ_j g_j,
// both sums in Double in k order.

import RealModule

extension Kernels {
    /// Softmax (or log-softmax when `log`) of `x` seen as [O, K, I], along K.
    public static func softmax<T: Real & BinaryFloatingPoint & Sendable>(
        _ x: [T], outer: Int, axis k: Int, inner: Int, log: Bool
    ) -> [T] {
        let n = outer * k * inner
        precondition(x.count == n, "softmax: \(x.count) elements for [\(outer), \(k), \(inner)]")
        var y = [T](repeating: 0, count: n)
        if n == 0 { return y }
        x.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                let xp = SendableConstPointer(xb.baseAddress!), yp = SendablePointer(yb.baseAddress!)
                Parallel.forEachChunk(outer * inner, grain: max(1, 4096 / k)) { rows in
                    for r in rows {
                        let base = (r / inner) * k * inner + r % inner
                        softmaxRow(xp.base + base, yp.base + base, k, inner, log)
                    }
                }
            }
        }
        return y
    }

    @inline(__always)
    static func softmaxRow<T: Real & BinaryFloatingPoint & Sendable>(
        _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ k: Int, _ st: Int, _ log: Bool
    ) {
        var m = x[0]
        for j in 1..<k where x[j * st] > m || x[j * st].isNaN { m = x[j * st] }
        var s = 0.0
        for j in 0..<k {
            let e = T.exp(x[j * st] - m)
            if !log { y[j * st] = e }
            s += Double(e)
        }
        if log {
            let ls = Double.log(s)
            for j in 0..<k { y[j * st] = T(Double(x[j * st] - m) - ls) }
        } else {
            for j in 0..<k { y[j * st] = T(Double(y[j * st]) / s) }
        }
    }

    /// Gradient of `softmax` w.r.t. its input, from the output `y` and its gradient `g`.
    public static func softmaxBackward<T: Real & BinaryFloatingPoint & Sendable>(
        _ y: [T], _ g: [T], outer: Int, axis k: Int, inner: Int, log: Bool
    ) -> [T] {
        let n = outer * k * inner
        precondition(y.count == n && g.count == n,
                     "softmaxBackward: \(y.count)/\(g.count) elements for [\(outer), \(k), \(inner)]")
        var dx = [T](repeating: 0, count: n)
        if n == 0 { return dx }
        y.withUnsafeBufferPointer { yb in
            g.withUnsafeBufferPointer { gb in
                dx.withUnsafeMutableBufferPointer { db in
                    let yp = SendableConstPointer(yb.baseAddress!), gp = SendableConstPointer(gb.baseAddress!)
                    let dp = SendablePointer(db.baseAddress!)
                    Parallel.forEachChunk(outer * inner, grain: max(1, 4096 / k)) { rows in
                        for r in rows {
                            let b = (r / inner) * k * inner + r % inner
                            let yr = yp.base + b, gr = gp.base + b, dr = dp.base + b
                            if log {
                                var s = 0.0
                                for j in 0..<k { s += Double(gr[j * inner]) }
                                for j in 0..<k {
                                    let i = j * inner
                                    dr[i] = T(Double(gr[i]) - Double(T.exp(yr[i])) * s)
                                }
                            } else {
                                var s = 0.0
                                for j in 0..<k { s += Double(gr[j * inner]) * Double(yr[j * inner]) }
                                for j in 0..<k {
                                    let i = j * inner
                                    dr[i] = T(Double(yr[i]) * (Double(gr[i]) - s))
                                }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}
