// Vectorised exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)), and its derivative, for the large
// activations of SAM (ViT MLPs, mask decoder upscaling, mask downscaling).
//
// erf on 16 lanes with Cephes' single-precision formulas: |u| < 1: u·T(u²) (degree 6);
// 1 ≤ |u| < 2: 1 − e^(−u²)·(1/|u|)·P(1/u²) (degree 8); |u| ≥ 2: the same with R (degree 7);
// |u| ≥ 9.2: ±1. e^(−u²) is `Kernels.expFloat16`. Every element, vector lanes and the tail
// alike, goes through the same 16-lane code (the tail in a zero-padded vector), so results do
// not depend on position or thread count. Agrees with libm's erff to about 2e-7 absolute.
//   GELU(x)  = ½·x·(1 + erf(x/√2))               (PyTorch's formula, same evaluation order)
//   GELU'(x) = ½·(1 + erf(x/√2)) + x·e^(−x²/2)/√(2π)

extension Kernels {
    /// erf on 16 lanes (see the file header). NaN stays NaN.
    @inline(__always)
    public static func erfFloat16(_ u: SIMD16<Float>) -> SIMD16<Float> {
        let a = u.replacing(with: -u, where: u .< 0)
        let z = a * a
        // T(z), degree 6 (Horner, FMA).
        var t = SIMD16<Float>(repeating: 7.853861353153693e-5)
        t = SIMD16(repeating: -8.010193625184903e-4).addingProduct(t, z)
        t = SIMD16(repeating: 5.188327685732524e-3).addingProduct(t, z)
        t = SIMD16(repeating: -2.685381193529856e-2).addingProduct(t, z)
        t = SIMD16(repeating: 1.128358514861418e-1).addingProduct(t, z)
        t = SIMD16(repeating: -3.761262582423300e-1).addingProduct(t, z)
        t = SIMD16(repeating: 1.128379165726710e+0).addingProduct(t, z)
        let small = u * t
        // erfc(a) = e^(−a²)·(1/a)·P(1/a²) for 1 ≤ a < 2, R for a ≥ 2 (a clamped away from 0).
        let ac = a.replacing(with: 1, where: a .< 1)
        let q = 1 / ac, y = q * q
        var p = SIMD16<Float>(repeating: 2.326819970068386e-2)
        p = SIMD16(repeating: -1.387039388740657e-1).addingProduct(p, y)
        p = SIMD16(repeating: 3.687424674597105e-1).addingProduct(p, y)
        p = SIMD16(repeating: -5.824733027278666e-1).addingProduct(p, y)
        p = SIMD16(repeating: 6.210004621745983e-1).addingProduct(p, y)
        p = SIMD16(repeating: -4.944515323274145e-1).addingProduct(p, y)
        p = SIMD16(repeating: 3.404879937665872e-1).addingProduct(p, y)
        p = SIMD16(repeating: -2.741127028184656e-1).addingProduct(p, y)
        p = SIMD16(repeating: 5.638259427386472e-1).addingProduct(p, y)
        var r2 = SIMD16<Float>(repeating: -1.047766399936249e+1)
        r2 = SIMD16(repeating: 1.297719955372516e+1).addingProduct(r2, y)
        r2 = SIMD16(repeating: -7.495518717768503e+0).addingProduct(r2, y)
        r2 = SIMD16(repeating: 2.921019019210786e+0).addingProduct(r2, y)
        r2 = SIMD16(repeating: -1.015265279202700e+0).addingProduct(r2, y)
        r2 = SIMD16(repeating: 4.218463358204948e-1).addingProduct(r2, y)
        r2 = SIMD16(repeating: -2.820767439740514e-1).addingProduct(r2, y)
        r2 = SIMD16(repeating: 5.641895067754075e-1).addingProduct(r2, y)
        p.replace(with: r2, where: ac .>= 2)
        let erfc = expFloat16(-(ac * ac)) * q * p
        var big = 1 - erfc
        big.replace(with: 1, where: a .>= 9.2)
        big.replace(with: -big, where: u .< 0)
        var r = small.replacing(with: big, where: a .>= 1)
        r.replace(with: u, where: u .!= u)
        return r
    }

    /// GELU of every element of `x` (16 lanes at a time; the tail zero-padded).
    public static func geluVectorized(_ x: [Float]) -> [Float] {
        map16(x) { v in
            let half = SIMD16<Float>(repeating: 0.5)
            return (v * half) * (1 + erfFloat16(v * 0.70710678118654752440))
        }
    }

    /// g · GELU'(x), elementwise.
    public static func geluVectorizedBackward(_ g: [Float], _ x: [Float]) -> [Float] {
        precondition(g.count == x.count, "geluVectorizedBackward: \(g.count) gradients for \(x.count) inputs")
        return map16(x, g) { v, gv in
            let cdf = 0.5 * (1 + erfFloat16(v * 0.70710678118654752440))
            let pdf = expFloat16(-0.5 * (v * v)) * 0.39894228040143267794
            return gv * cdf.addingProduct(v, pdf)
        }
    }

    /// f over 16-lane chunks of `x` (and `y`), in parallel over independent chunks.
    @inline(__always)
    static func map16(_ x: [Float], _ y: [Float]? = nil,
                      _ f: @escaping @Sendable (SIMD16<Float>, SIMD16<Float>) -> SIMD16<Float>) -> [Float] {
        let n = x.count
        var out = [Float](repeating: 0, count: n)
        if n == 0 { return out }
        let chunks = (n + 15) / 16
        let yy = y ?? []
        x.withUnsafeBufferPointer { xb in
            yy.withUnsafeBufferPointer { yb in
                out.withUnsafeMutableBufferPointer { ob in
                    let xp = SendableConstPointer(xb.baseAddress!), op = SendablePointer(ob.baseAddress!)
                    let yp = y == nil ? nil : yb.baseAddress.map { SendableConstPointer($0) }
                    Parallel.forEachChunk(chunks, grain: 4096) { range in
                        for c in range {
                            let i = 16 * c
                            if i + 16 <= n {
                                let xv = UnsafeRawPointer(xp.base + i).loadUnaligned(as: SIMD16<Float>.self)
                                let yv = yp.map { UnsafeRawPointer($0.base + i).loadUnaligned(as: SIMD16<Float>.self) } ?? SIMD16()
                                UnsafeMutableRawPointer(op.base + i).storeBytes(of: f(xv, yv), as: SIMD16<Float>.self)
                            } else {
                                var xv = SIMD16<Float>(), yv = SIMD16<Float>()
                                for j in 0..<(n - i) { xv[j] = xp[i + j]; if let yp { yv[j] = yp[i + j] } }
                                let r = f(xv, yv)
                                for j in 0..<(n - i) { op[i + j] = r[j] }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    @inline(__always)
    static func map16(_ x: [Float], _ f: @escaping @Sendable (SIMD16<Float>) -> SIMD16<Float>) -> [Float] {
        map16(x, nil) { v, _ in f(v) }
    }
}
