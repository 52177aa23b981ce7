// Vectorised exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)), and its derivative, for the large
// activations of SAM (ViT MLPs, mask decoder upscaling, mask downscaling).
//
// erf with Cephes' single-precision formulas: |u| < 1: u·T(u²) (degree 6);
// 1 ≤ |u| < 2: 1 − e^(−u²)·(1/|u|)·P(1/u²) (degree 8); |u| ≥ 2: the same with R (degree 7);
// |u| ≥ 9.2: ±1. e^(−u²) is `Kernels.expFloat`. Written as straight-line code with selects, as
// a scalar function and as its 16-lane twin (`erfFloat16`, the same operations per lane, so the
// same bits): the loops run 16 elements at a time (the compiler's own vectorisation of the
// scalar loop stops at 8 lanes on AVX-512 targets) and the scalar function finishes the tail.
// Each element's value does not depend on its position or on the thread count. Agrees with
// libm's erf to about 2e-7 absolute.
//   GELU(x)  = ½·x·(1 + erf(x/√2))               (PyTorch's formula, same evaluation order)
//   GELU'(x) = ½·(1 + erf(x/√2)) + x·e^(−x²/2)/√(2π)

extension Kernels {
    /// erf(u) (see the file header). NaN stays NaN.
    @inline(__always)
    public static func erfFloat(_ u: Float) -> Float {
        let a = u < 0 ? -u : u
        let z = a * a
        var t: Float = 7.853861353153693e-5
        t = Float(-8.010193625184903e-4).addingProduct(t, z)
        t = Float(5.188327685732524e-3).addingProduct(t, z)
        t = Float(-2.685381193529856e-2).addingProduct(t, z)
        t = Float(1.128358514861418e-1).addingProduct(t, z)
        t = Float(-3.761262582423300e-1).addingProduct(t, z)
        t = Float(1.128379165726710e+0).addingProduct(t, z)
        let small = u * t
        // erfc(a) = e^(−a²)·(1/a)·P(1/a²) for 1 ≤ a < 2, R for a ≥ 2 (a clamped away from 0).
        let ac = Swift.max(a, 1)
        let q = 1 / ac, y = q * q
        var p: Float = 2.326819970068386e-2
        p = Float(-1.387039388740657e-1).addingProduct(p, y)
        p = Float(3.687424674597105e-1).addingProduct(p, y)
        p = Float(-5.824733027278666e-1).addingProduct(p, y)
        p = Float(6.210004621745983e-1).addingProduct(p, y)
        p = Float(-4.944515323274145e-1).addingProduct(p, y)
        p = Float(3.404879937665872e-1).addingProduct(p, y)
        p = Float(-2.741127028184656e-1).addingProduct(p, y)
        p = Float(5.638259427386472e-1).addingProduct(p, y)
        var r: Float = -1.047766399936249e+1
        r = Float(1.297719955372516e+1).addingProduct(r, y)
        r = Float(-7.495518717768503e+0).addingProduct(r, y)
        r = Float(2.921019019210786e+0).addingProduct(r, y)
        r = Float(-1.015265279202700e+0).addingProduct(r, y)
        r = Float(4.218463358204948e-1).addingProduct(r, y)
        r = Float(-2.820767439740514e-1).addingProduct(r, y)
        r = Float(5.641895067754075e-1).addingProduct(r, y)
        let erfc = expFloat(-(ac * ac)) * q * (ac >= 2 ? r : p)
        var big = a >= 9.2 ? 1 : 1 - erfc
        big = u < 0 ? -big : big
        let out = a >= 1 ? big : small
        return u != u ? u : out
    }

    /// `erfFloat` on 16 lanes: the same operations on each lane, so the same bits.
    @inline(__always)
    public static func erfFloat16(_ u: SIMD16<Float>) -> SIMD16<Float> {
        typealias V = SIMD16<Float>
        let zero = V(), one = V(repeating: 1)
        let a = u.replacing(with: -u, where: u .< zero)
        let z = a * a
        var t = V(repeating: 7.853861353153693e-5)
        t = V(repeating: -8.010193625184903e-4).addingProduct(t, z)
        t = V(repeating: 5.188327685732524e-3).addingProduct(t, z)
        t = V(repeating: -2.685381193529856e-2).addingProduct(t, z)
        t = V(repeating: 1.128358514861418e-1).addingProduct(t, z)
        t = V(repeating: -3.761262582423300e-1).addingProduct(t, z)
        t = V(repeating: 1.128379165726710e+0).addingProduct(t, z)
        let small = u * t
        let ac = a.replacing(with: one, where: a .< one)
        let q = one / ac, y = q * q
        var p = V(repeating: 2.326819970068386e-2)
        p = V(repeating: -1.387039388740657e-1).addingProduct(p, y)
        p = V(repeating: 3.687424674597105e-1).addingProduct(p, y)
        p = V(repeating: -5.824733027278666e-1).addingProduct(p, y)
        p = V(repeating: 6.210004621745983e-1).addingProduct(p, y)
        p = V(repeating: -4.944515323274145e-1).addingProduct(p, y)
        p = V(repeating: 3.404879937665872e-1).addingProduct(p, y)
        p = V(repeating: -2.741127028184656e-1).addingProduct(p, y)
        p = V(repeating: 5.638259427386472e-1).addingProduct(p, y)
        var r = V(repeating: -1.047766399936249e+1)
        r = V(repeating: 1.297719955372516e+1).addingProduct(r, y)
        r = V(repeating: -7.495518717768503e+0).addingProduct(r, y)
        r = V(repeating: 2.921019019210786e+0).addingProduct(r, y)
        r = V(repeating: -1.015265279202700e+0).addingProduct(r, y)
        r = V(repeating: 4.218463358204948e-1).addingProduct(r, y)
        r = V(repeating: -2.820767439740514e-1).addingProduct(r, y)
        r = V(repeating: 5.641895067754075e-1).addingProduct(r, y)
        let erfc = expFloat16(-(ac * ac)) * q * p.replacing(with: r, where: ac .>= V(repeating: 2))
        var big = (one - erfc).replacing(with: one, where: a .>= V(repeating: 9.2))
        big = big.replacing(with: -big, where: u .< zero)
        let out = small.replacing(with: big, where: a .>= one)
        return out.replacing(with: u, where: u .!= u)
    }

    /// GELU of every element of `x`.
    public static func geluVectorized(_ x: [Float]) -> [Float] {
        chunkedElementwise(x, x, count: x.count) { range, xs, _, os in
            geluRun(xs + range.lowerBound, into: os + range.lowerBound, count: range.count)
        }
    }

    /// g · GELU'(x), elementwise.
    public static func geluVectorizedBackward(_ g: [Float], _ x: [Float]) -> [Float] {
        precondition(g.count == x.count, "geluVectorizedBackward: \(g.count) gradients for \(x.count) inputs")
        return chunkedElementwise(x, g, count: x.count) { range, xs, gs, os in
            geluBackwardRun(xs + range.lowerBound, gs + range.lowerBound, into: os + range.lowerBound,
                            count: range.count)
        }
    }

    /// GELU of ConvTranspose2d(k=2, s=2)'s output with its sub-pixels put in place, in one pass:
    /// y [B, h·w, 4·C] (token i·w + j, columns (dy, dx, c)) → out [B, 2h·2w, C] (token-major),
    /// out[b, (2i + dy)·2w + 2j + dx, c] = GELU(y[b, i·w + j, (2·dy + dx)·C + c]). The values of
    /// the pixel-shuffle permute followed by `geluVectorized`, without the permuted copy.
    public static func geluPixelShuffle2x2(_ y: [Float], batch: Int, h: Int, w: Int, channels c: Int) -> [Float] {
        precondition(y.count == batch * h * w * 4 * c,
                     "geluPixelShuffle2x2: \(y.count) values are not [\(batch), \(h)·\(w), 4·\(c)]")
        return pixelShuffle2x2Runs(y, y, batch: batch, h: h, w: w, channels: c) { src, _, dst, n in
            geluRun(src, into: dst, count: n)
        }
    }

    /// dy [B, h·w, 4·C] of `geluPixelShuffle2x2` from g [B, 2h·2w, C]: each element
    /// g · GELU'(y) with g read from the sub-pixel's place, as `geluVectorizedBackward`.
    public static func geluPixelShuffle2x2Backward(_ g: [Float], _ y: [Float], batch: Int, h: Int, w: Int,
                                                   channels c: Int) -> [Float] {
        precondition(g.count == y.count && y.count == batch * h * w * 4 * c,
                     "geluPixelShuffle2x2Backward: \(g.count) gradients, \(y.count) inputs for [\(batch), \(h)·\(w), 4·\(c)]")
        return pixelShuffle2x2Runs(y, g, batch: batch, h: h, w: w, channels: c, gradient: true) { src, gs, dst, n in
            geluBackwardRun(src, gs, into: dst, count: n)
        }
    }

    /// Walks the 2·C-float runs that a 2 × 2 pixel shuffle moves: run (b, i, dy, j) is
    /// y[b, i·w + j, dy·2C ..< (dy + 1)·2C] and out[b, (2i + dy)·2w + 2j, 0 ..< 2C]. Forward:
    /// `run(y run, -, out run, 2C)`; with `gradient`: `run(y run, g's out run, dy's y run, 2C)`.
    /// Output rows (b, 2i + dy) are split over the threads.
    private static func pixelShuffle2x2Runs(
        _ y: [Float], _ g: [Float], batch: Int, h: Int, w: Int, channels c: Int, gradient: Bool = false,
        _ run: @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    ) -> [Float] {
        let n = y.count, rows = batch * h * 2, runLength = 2 * c
        return [Float](unsafeUninitializedCapacity: n) { buf, initialized in
            defer { initialized = n }
            guard n > 0 else { return }
            y.withUnsafeBufferPointer { py in g.withUnsafeBufferPointer { pg in
                let yp = SendableConstPointer(py.baseAddress!), gp = SendableConstPointer(pg.baseAddress!)
                let op = SendablePointer(buf.baseAddress!)
                Parallel.forEachChunk(rows, grain: max(1, (1 << 16) / max(1, w * runLength))) { r in
                    for row in r {
                        let (bi, dy) = (row / 2, row % 2)     // bi = b·h + i
                        for j in 0..<w {
                            let inner = (bi * w + j) * 4 * c + dy * runLength
                            let outer = (row * w + j) * runLength
                            if gradient {
                                run(yp.base + inner, gp.base + outer, op.base + inner, runLength)
                            } else {
                                run(yp.base + inner, gp.base, op.base + outer, runLength)
                            }
                        }
                    }
                }
            }}
        }
    }

    /// GELU of `count` floats: 16 lanes at a time (`erfFloat16`), the tail with `erfFloat`.
    @inline(__always)
    static func geluRun(_ xs: UnsafePointer<Float>, into os: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            let v = UnsafeRawPointer(xs + i).loadUnaligned(as: SIMD16<Float>.self)
            let y = (v * 0.5) * (1 + erfFloat16(v * SIMD16(repeating: 0.70710678118654752440)))
            UnsafeMutableRawPointer(os + i).storeBytes(of: y, as: SIMD16<Float>.self)
            i += 16
        }
        for i in i..<count {
            let v = xs[i]
            os[i] = (v * 0.5) * (1 + erfFloat(v * 0.70710678118654752440))
        }
    }

    /// g · GELU'(x) of `count` floats, as `geluRun`.
    @inline(__always)
    static func geluBackwardRun(_ xs: UnsafePointer<Float>, _ gs: UnsafePointer<Float>,
                                into os: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            let v = UnsafeRawPointer(xs + i).loadUnaligned(as: SIMD16<Float>.self)
            let gv = UnsafeRawPointer(gs + i).loadUnaligned(as: SIMD16<Float>.self)
            let cdf = 0.5 * (1 + erfFloat16(v * SIMD16(repeating: 0.70710678118654752440)))
            let pdf = expFloat16(-0.5 * (v * v)) * SIMD16(repeating: 0.39894228040143267794)
            UnsafeMutableRawPointer(os + i).storeBytes(of: gv * cdf.addingProduct(v, pdf), as: SIMD16<Float>.self)
            i += 16
        }
        for i in i..<count {
            let v = xs[i]
            let cdf = 0.5 * (1 + erfFloat(v * 0.70710678118654752440))
            let pdf = expFloat(-0.5 * (v * v)) * 0.39894228040143267794
            os[i] = gs[i] * cdf.addingProduct(v, pdf)
        }
    }
}
