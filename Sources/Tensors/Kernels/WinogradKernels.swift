// 3×3 convolution (stride 1, zero padding 1, no bias) by Winograd's minimal filtering
// F(2×2, 3×3), on channel-major activations [C, N, H, W].
//
// Legend: C input, O output channels; N images of H×W; tiles of 2×2 outputs, th = ⌈H/2⌉,
// tw = ⌈W/2⌉, T = N·th·tw tiles (t = (n·th + ty)·tw + tx); ξ = 4r + s indexes the 16
// transformed positions. Tile (ty, tx) reads the 4×4 input patch at rows 2ty−1 … 2ty+2 and
// columns 2tx−1 … 2tx+2 (zero outside the image) and writes outputs 2ty…2ty+1 × 2tx…2tx+1
// (those inside the image).
//
//   U = G g Gᵀ   (filter, [16, O, C])     G  = [[1,0,0], [½,½,½], [½,−½,½], [0,0,1]]
//   V = Bᵀ d B   (input,  [16, C, T])     Bᵀ = [[1,0,−1,0], [0,1,1,0], [0,−1,1,0], [0,1,0,−1]]
//   M_ξ = U_ξ · V_ξ   (16 GEMMs [O, C]·[C, T])
//   Y = Aᵀ M A   (output)                 Aᵀ = [[1,1,1,0], [0,1,−1,−1]]
// Backward, the adjoint of each step: dM = A dY Aᵀ; dU_ξ = dM_ξ · V_ξᵀ; dV_ξ = U_ξᵀ · dM_ξ;
// dg = Gᵀ dU G; dx = overlap-add of B dV Bᵀ. The same function as the direct convolution, with
// 2.25× fewer multiplications (16 instead of 36 per 2×2 outputs) and other rounding.
//
// Each transform works on one image plane at a time, a row of tiles as vectors over tx; every
// output element is written by one task in a fixed order, so results do not depend on the
// thread count. Overlap-adds run tile rows then tile columns in increasing order.

extension Kernels {
    /// Tile grid of an H×W map.
    @inline(__always)
    static func winogradTiles(_ h: Int, _ w: Int) -> (th: Int, tw: Int) { ((h + 1) / 2, (w + 1) / 2) }

    /// A zeroed scratch buffer of `count` elements for one task (freed by the caller).
    @inline(__always)
    static func scratchBuffer<T: BinaryFloatingPoint>(_ count: Int) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        p.initialize(repeating: 0, count: max(count, 1))
        return p
    }

    /// An array of `count` elements that `body` fully initialises through the pointer.
    @inline(__always)
    static func uninitializedArray<T>(_ count: Int, _ body: (UnsafeMutablePointer<T>) -> Void) -> [T] {
        [T](unsafeUninitializedCapacity: count) { buf, n in
            if let b = buf.baseAddress { body(b) }
            n = count
        }
    }

    /// An array of `count` elements that the caller overwrites entirely before reading: the
    /// form of `uninitializedArray` for outputs written in one pass with others (the attention's
    /// O and P, LayerNorm's y with its statistics, conv2d's planes after their bias).
    @inline(__always)
    static func unfilledArray<T>(_: T.Type, _ count: Int) -> [T] {
        [T](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }

    /// An output of `count` elements: unfilled when the caller's kernels write every element
    /// (`writtenWhole`), else zeros (the degenerate shapes whose kernels write nothing).
    @inline(__always)
    static func outputArray<T: BinaryFloatingPoint>(_: T.Type, _ count: Int, writtenWhole: Bool) -> [T] {
        writtenWhole ? unfilledArray(T.self, count) : [T](repeating: 0, count: count)
    }

    /// Runs the 16 GEMMs of a Winograd step: whole GEMMs split over the threads (each GEMM on
    /// one thread: one dispatch instead of sixteen, and no k split, so the same bits on any
    /// thread count); `body(ξ, threads)` gets the thread count its GEMM may use.
    static func batchedGEMM(_ body: @Sendable (Int, Int) -> Void) {
        if Parallel.threads <= 1 {
            for xi in 0..<16 { body(xi, 1) }
        } else {
            Parallel.forEach(16) { xi in body(xi, 1) }
        }
    }

    /// Filter pairs (o, c) per task of the filter transforms.
    static let winogradFilterChunk = 1024

    /// U [16, O, C] = G g Gᵀ for weight g [O, C, 3, 3]; vectorised over blocks of (o, c) pairs.
    static func winogradFilter<T: BinaryFloatingPoint & Sendable>(_ weight: [T], o: Int, c: Int) -> [T] {
        let pairs = o * c
        if pairs == 0 { return [] }
        return weight.withUnsafeBufferPointer { wb in
            uninitializedArray(16 * pairs) { (ub: UnsafeMutablePointer<T>) in
                let wp = SendableConstPointer(wb.baseAddress!), up = SendablePointer(ub)
                let chunk = winogradFilterChunk
                Parallel.forEach((pairs + chunk - 1) / chunk) { blk in
                    let p0 = blk * chunk, len = min(chunk, pairs - p0)
                    let half: T = 0.5
                    // g[t·len + e] = weight[p0 + e, t]; h[(4i + s)·len + e] = row transform of filter row i.
                    let g: UnsafeMutablePointer<T> = scratchBuffer(21 * len)
                    defer { g.deallocate() }
                    let hrow = g + 9 * len
                    for e in 0..<len { for t in 0..<9 { g[t * len + e] = wp[(p0 + e) * 9 + t] } }
                    for i in 0..<3 {
                        let g0 = g + 3 * i * len, g1 = g0 + len, g2 = g1 + len
                        let h0 = hrow + 4 * i * len, h1 = h0 + len, h2 = h1 + len, h3 = h2 + len
                        for e in 0..<len {
                            h0[e] = g0[e]
                            h1[e] = half * (g0[e] + g1[e] + g2[e])
                            h2[e] = half * (g0[e] - g1[e] + g2[e])
                            h3[e] = g2[e]
                        }
                    }
                    for s in 0..<4 {
                        let a = hrow + s * len, b = hrow + (4 + s) * len, d = hrow + (8 + s) * len
                        let u0 = up.base + (0 * 4 + s) * pairs + p0, u1 = up.base + (1 * 4 + s) * pairs + p0
                        let u2 = up.base + (2 * 4 + s) * pairs + p0, u3 = up.base + (3 * 4 + s) * pairs + p0
                        for e in 0..<len {
                            u0[e] = a[e]
                            u1[e] = half * (a[e] + b[e] + d[e])
                            u2[e] = half * (a[e] - b[e] + d[e])
                            u3[e] = d[e]
                        }
                    }
                }
            }
        }
    }

    /// dg [O, C, 3, 3] = Gᵀ dU G for dU [16, O, C]; vectorised over blocks of (o, c) pairs.
    static func winogradFilterAdjoint<T: BinaryFloatingPoint & Sendable>(_ du: [T], o: Int, c: Int) -> [T] {
        let pairs = o * c
        if pairs == 0 { return [] }
        return du.withUnsafeBufferPointer { ub in
            uninitializedArray(9 * pairs) { (gb: UnsafeMutablePointer<T>) in
                let up = SendableConstPointer(ub.baseAddress!), gp = SendablePointer(gb)
                let chunk = winogradFilterChunk
                Parallel.forEach((pairs + chunk - 1) / chunk) { blk in
                    let p0 = blk * chunk, len = min(chunk, pairs - p0)
                    let half: T = 0.5
                    // z[(4i + s)·len + e] = Σ_r G[r][i] dU[r][s]; dg[t·len + e]
                    let z: UnsafeMutablePointer<T> = scratchBuffer(21 * len)
                    defer { z.deallocate() }
                    let dg = z + 12 * len
                    for s in 0..<4 {
                        let d0 = up.base + (0 * 4 + s) * pairs + p0, d1 = up.base + (1 * 4 + s) * pairs + p0
                        let d2 = up.base + (2 * 4 + s) * pairs + p0, d3 = up.base + (3 * 4 + s) * pairs + p0
                        let z0 = z + s * len, z1 = z + (4 + s) * len, z2 = z + (8 + s) * len
                        for e in 0..<len {
                            z0[e] = d0[e] + half * d1[e] + half * d2[e]
                            z1[e] = half * d1[e] - half * d2[e]
                            z2[e] = half * d1[e] + half * d2[e] + d3[e]
                        }
                    }
                    for i in 0..<3 {
                        let a = z + 4 * i * len, b = a + len, d = b + len, e4 = d + len
                        let o0 = dg + 3 * i * len, o1 = o0 + len, o2 = o1 + len
                        for e in 0..<len {
                            o0[e] = a[e] + half * b[e] + half * d[e]
                            o1[e] = half * b[e] - half * d[e]
                            o2[e] = half * b[e] + half * d[e] + e4[e]
                        }
                    }
                    for e in 0..<len { for t in 0..<9 { gp[(p0 + e) * 9 + t] = dg[t * len + e] } }
                }
            }
        }
    }

    /// V [16, C, T] = Bᵀ d B of every input tile of x [C, N, H, W].
    static func winogradInput<T: BinaryFloatingPoint & Sendable>(_ x: UnsafePointer<T>, c: Int, n: Int, h: Int, w: Int) -> [T] {
        let (th, tw) = winogradTiles(h, w), tiles = n * th * tw
        if c * tiles == 0 { return [T](repeating: 0, count: 16 * c * tiles) }
        return uninitializedArray(16 * c * tiles) { (vb: UnsafeMutablePointer<T>) in
            let vp = SendablePointer(vb), xp = SendableConstPointer(x)
            Parallel.forEach(c * n, grain: max(1, 16384 / max(h * w, 1))) { plane in
                let ch = plane / n, img = plane % n
                let src = xp.base + plane * h * w
                // rt[(yy·4 + s)·tw + tx]: row transform of input row y = yy − 1 (zero rows outside).
                // ev[m] = x[y, 2m − 1], od[m] = x[y, 2m] (zero outside the row), m = 0 … tw.
                let rows = 2 * th + 2
                let rt: UnsafeMutablePointer<T> = scratchBuffer(rows * 4 * tw + 2 * (tw + 1))
                defer { rt.deallocate() }
                let ev = rt + rows * 4 * tw, od = ev + tw + 1
                for yy in 0..<rows {
                    let y = yy - 1
                    guard y >= 0 && y < h else { continue }
                    let line = src + y * w
                    for m in 1...tw where 2 * m - 1 < w { ev[m] = line[2 * m - 1] }
                    for m in 0..<tw where 2 * m < w { od[m] = line[2 * m] }
                    let r0 = rt + yy * 4 * tw, r1 = r0 + tw, r2 = r1 + tw, r3 = r2 + tw
                    for tx in 0..<tw {
                        let d0 = ev[tx], d1 = od[tx], d2 = ev[tx + 1], d3 = od[tx + 1]
                        r0[tx] = d0 - d2
                        r1[tx] = d1 + d2
                        r2[tx] = d2 - d1
                        r3[tx] = d1 - d3
                    }
                }
                for ty in 0..<th {
                    let t0 = (img * th + ty) * tw
                    let a = rt + 2 * ty * 4 * tw, b = a + 4 * tw, d = b + 4 * tw, e = d + 4 * tw
                    for s in 0..<4 {
                        let v0 = vp.base + ((0 * 4 + s) * c + ch) * tiles + t0, v1 = vp.base + ((1 * 4 + s) * c + ch) * tiles + t0
                        let v2 = vp.base + ((2 * 4 + s) * c + ch) * tiles + t0, v3 = vp.base + ((3 * 4 + s) * c + ch) * tiles + t0
                        let ra = a + s * tw, rb = b + s * tw, rd = d + s * tw, re = e + s * tw
                        for tx in 0..<tw {
                            let r0 = ra[tx], r1 = rb[tx], r2 = rd[tx], r3 = re[tx]
                            v0[tx] = r0 - r2
                            v1[tx] = r1 + r2
                            v2[tx] = r2 - r1
                            v3[tx] = r1 - r3
                        }
                    }
                }
            }
        }
    }

    /// dx [C, N, H, W]: the overlap-add of B dV Bᵀ over the tiles (adjoint of `winogradInput`).
    static func winogradInputAdjoint<T: BinaryFloatingPoint & Sendable>(_ dv: [T], c: Int, n: Int, h: Int, w: Int) -> [T] {
        let (th, tw) = winogradTiles(h, w), tiles = n * th * tw
        if c * n * h * w == 0 || tiles == 0 { return [T](repeating: 0, count: c * n * h * w) }
        return dv.withUnsafeBufferPointer { vb in
            uninitializedArray(c * n * h * w) { (xb: UnsafeMutablePointer<T>) in
                let vp = SendableConstPointer(vb.baseAddress!), xp = SendablePointer(xb)
                Parallel.forEach(c * n, grain: max(1, 16384 / max(h * w, 1))) { plane in
                    let ch = plane / n, img = plane % n
                    // accE / accO: padded rows −1 … 2th of the even / odd padded columns: accE[r][m] is
                    // column 2m − 1, accO[r][m] column 2m (m = 0 … tw); wv[(i·4 + s)·tw + tx] = w_i(s).
                    let ah = 2 * th + 2, aw = tw + 1
                    let accE: UnsafeMutablePointer<T> = scratchBuffer(2 * ah * aw + 20 * tw)
                    defer { accE.deallocate() }
                    let accO = accE + ah * aw, wv = accO + ah * aw, f = wv + 16 * tw
                    for ty in 0..<th {
                        let t0 = (img * th + ty) * tw
                        for s in 0..<4 {
                            let d0 = vp.base + ((0 * 4 + s) * c + ch) * tiles + t0, d1 = vp.base + ((1 * 4 + s) * c + ch) * tiles + t0
                            let d2 = vp.base + ((2 * 4 + s) * c + ch) * tiles + t0, d3 = vp.base + ((3 * 4 + s) * c + ch) * tiles + t0
                            let w0 = wv + s * tw, w1 = wv + (4 + s) * tw, w2 = wv + (8 + s) * tw, w3 = wv + (12 + s) * tw
                            for tx in 0..<tw {
                                w0[tx] = d0[tx]
                                w1[tx] = d1[tx] - d2[tx] + d3[tx]
                                w2[tx] = -d0[tx] + d1[tx] + d2[tx]
                                w3[tx] = -d3[tx]
                            }
                        }
                        for i in 0..<4 {
                            let re = accE + (2 * ty + i) * aw, ro = accO + (2 * ty + i) * aw
                            let e0 = wv + i * 4 * tw, e1 = e0 + tw, e2 = e1 + tw, e3 = e2 + tw
                            let f1 = f, f2 = f + tw, f3 = f + 2 * tw
                            for tx in 0..<tw {
                                f1[tx] = e1[tx] - e2[tx] + e3[tx]
                                f2[tx] = -e0[tx] + e1[tx] + e2[tx]
                                f3[tx] = -e3[tx]
                            }
                            // tile tx adds to padded columns 2tx (j = 0), 2tx + 1, 2tx + 2, 2tx + 3.
                            for tx in 0..<tw { re[tx] += e0[tx] }
                            for tx in 0..<tw { ro[tx] += f1[tx] }
                            for tx in 0..<tw { re[tx + 1] += f2[tx] }
                            for tx in 0..<tw { ro[tx + 1] += f3[tx] }
                        }
                    }
                    // Image column x is padded column x + 1: odd x = 2m − 1 → accE[m], even x = 2m → accO[m].
                    let dst = xp.base + plane * h * w
                    for y in 0..<h {
                        let re = accE + (y + 1) * aw, ro = accO + (y + 1) * aw, row = dst + y * w
                        for m in 0..<tw where 2 * m < w { row[2 * m] = ro[m] }
                        for m in 1...tw where 2 * m - 1 < w { row[2 * m - 1] = re[m] }
                    }
                }
            }
        }
    }

    /// y [O, N, H, W] = Aᵀ M A of every tile, M [16, O, T].
    static func winogradOutput<T: BinaryFloatingPoint & Sendable>(_ m: [T], o: Int, n: Int, h: Int, w: Int) -> [T] {
        let (th, tw) = winogradTiles(h, w), tiles = n * th * tw
        if o * n * h * w == 0 || tiles == 0 { return [T](repeating: 0, count: o * n * h * w) }
        return m.withUnsafeBufferPointer { mb in
            uninitializedArray(o * n * h * w) { (yb: UnsafeMutablePointer<T>) in
                let mp = SendableConstPointer(mb.baseAddress!), yp = SendablePointer(yb)
                Parallel.forEach(o * n, grain: max(1, 16384 / max(h * w, 1))) { plane in
                    let oc = plane / n, img = plane % n
                    let dst = yp.base + plane * h * w
                    // q[(r·2 + b)·tw + tx] = q_b(r); out[(a·2 + b)·tw + tx] = Y[a][b]
                    let q: UnsafeMutablePointer<T> = scratchBuffer(12 * tw)
                    defer { q.deallocate() }
                    let out = q + 8 * tw
                    for ty in 0..<th {
                        let t0 = (img * th + ty) * tw
                        for r in 0..<4 {
                            let m0 = mp.base + ((r * 4 + 0) * o + oc) * tiles + t0, m1 = mp.base + ((r * 4 + 1) * o + oc) * tiles + t0
                            let m2 = mp.base + ((r * 4 + 2) * o + oc) * tiles + t0, m3 = mp.base + ((r * 4 + 3) * o + oc) * tiles + t0
                            let qa = q + r * 2 * tw, qb = qa + tw
                            for tx in 0..<tw {
                                qa[tx] = m0[tx] + m1[tx] + m2[tx]
                                qb[tx] = m1[tx] - m2[tx] - m3[tx]
                            }
                        }
                        for b in 0..<2 {
                            let q0 = q + b * tw, q1 = q + (2 + b) * tw, q2 = q + (4 + b) * tw, q3 = q + (6 + b) * tw
                            let y0 = out + b * tw, y1 = out + (2 + b) * tw
                            for tx in 0..<tw {
                                y0[tx] = q0[tx] + q1[tx] + q2[tx]
                                y1[tx] = q1[tx] - q2[tx] - q3[tx]
                            }
                        }
                        for a in 0..<2 where 2 * ty + a < h {
                            let row = dst + (2 * ty + a) * w, e = out + a * 2 * tw, f = e + tw
                            for tx in 0..<(w / 2) {
                                row[2 * tx] = e[tx]
                                row[2 * tx + 1] = f[tx]
                            }
                            if w % 2 == 1 { row[w - 1] = e[tw - 1] }
                        }
                    }
                }
            }
        }
    }

    /// dM [16, O, T] = A dY Aᵀ of every tile of gy [O, N, H, W] (adjoint of `winogradOutput`).
    static func winogradOutputAdjoint<T: BinaryFloatingPoint & Sendable>(_ gy: [T], o: Int, n: Int, h: Int, w: Int) -> [T] {
        let (th, tw) = winogradTiles(h, w), tiles = n * th * tw
        if o * tiles == 0 { return [T](repeating: 0, count: 16 * o * tiles) }
        return gy.withUnsafeBufferPointer { gb in
            uninitializedArray(16 * o * tiles) { (mb: UnsafeMutablePointer<T>) in
                let gp = SendableConstPointer(gb.baseAddress!), mp = SendablePointer(mb)
                Parallel.forEach(o * n, grain: max(1, 16384 / max(h * w, 1))) { plane in
                    let oc = plane / n, img = plane % n
                    let src = gp.base + plane * h * w
                    // g[(a·2 + b)·tw + tx] = dY[2ty + a, 2tx + b] (0 outside); u[(r·2 + b)·tw + tx] = u_r(b)
                    let g: UnsafeMutablePointer<T> = scratchBuffer(12 * tw)
                    defer { g.deallocate() }
                    let u = g + 4 * tw
                    for ty in 0..<th {
                        let t0 = (img * th + ty) * tw
                        for a in 0..<2 {
                            let ga = g + a * 2 * tw, gb2 = ga + tw
                            if 2 * ty + a < h {
                                let row = src + (2 * ty + a) * w
                                for tx in 0..<(w / 2) {
                                    ga[tx] = row[2 * tx]
                                    gb2[tx] = row[2 * tx + 1]
                                }
                                if w % 2 == 1 {
                                    ga[tw - 1] = row[w - 1]
                                    gb2[tw - 1] = 0
                                }
                            } else {
                                for tx in 0..<tw {
                                    ga[tx] = 0
                                    gb2[tx] = 0
                                }
                            }
                        }
                        let g00 = g, g01 = g + tw, g10 = g + 2 * tw, g11 = g + 3 * tw
                        for b in 0..<2 {
                            let top = b == 0 ? g00 : g01, bottom = b == 0 ? g10 : g11
                            let u0 = u + b * tw, u1 = u + (2 + b) * tw, u2 = u + (4 + b) * tw, u3 = u + (6 + b) * tw
                            for tx in 0..<tw {
                                u0[tx] = top[tx]
                                u1[tx] = top[tx] + bottom[tx]
                                u2[tx] = top[tx] - bottom[tx]
                                u3[tx] = -bottom[tx]
                            }
                        }
                        for r in 0..<4 {
                            let d0 = mp.base + ((r * 4 + 0) * o + oc) * tiles + t0, d1 = mp.base + ((r * 4 + 1) * o + oc) * tiles + t0
                            let d2 = mp.base + ((r * 4 + 2) * o + oc) * tiles + t0, d3 = mp.base + ((r * 4 + 3) * o + oc) * tiles + t0
                            let ua = u + r * 2 * tw, ub = ua + tw
                            for tx in 0..<tw {
                                d0[tx] = ua[tx]
                                d1[tx] = ua[tx] + ub[tx]
                                d2[tx] = ua[tx] - ub[tx]
                                d3[tx] = -ub[tx]
                            }
                        }
                    }
                }
            }
        }
    }

    /// y [O, N, H, W] = conv3×3(x [C, N, H, W], weight [O, C, 3, 3]), padding 1, by F(2×2, 3×3).
    public static func conv3x3Winograd<T: BinaryFloatingPoint & Sendable>(_ x: [T], c: Int, n: Int, h: Int, w: Int,
                                                                          weight: [T], o: Int) -> [T] {
        conv3x3WinogradOperands(x, c: c, n: n, h: h, w: w, weight: weight, o: o).y
    }

    /// `conv3x3Winograd`, also returning the transformed filter U [16, O, C] and input
    /// V [16, C, T] for the backward.
    public static func conv3x3WinogradOperands<T: BinaryFloatingPoint & Sendable>(
        _ x: [T], c: Int, n: Int, h: Int, w: Int, weight: [T], o: Int
    ) -> (y: [T], u: [T], v: [T]) {
        precondition(x.count == c * n * h * w && weight.count == o * c * 9,
                     "conv3x3Winograd: x \(x.count) for [\(c), \(n), \(h), \(w)], weight \(weight.count) for [\(o), \(c), 3, 3]")
        let (th, tw) = winogradTiles(h, w), tiles = n * th * tw
        let u = winogradFilter(weight, o: o, c: c)
        let v = x.withUnsafeBufferPointer { winogradInput($0.baseAddress!, c: c, n: n, h: h, w: w) }
        if o * tiles == 0 || c == 0 { return ([T](repeating: 0, count: o * n * h * w), u, v) }
        let m = u.withUnsafeBufferPointer { ub in
            v.withUnsafeBufferPointer { vb in
                uninitializedArray(16 * o * tiles) { (mb: UnsafeMutablePointer<T>) in
                    let a = SendableConstPointer(ub.baseAddress!), b = SendableConstPointer(vb.baseAddress!), cp = SendablePointer(mb)
                    batchedGEMM { xi, threads in
                        gemmGeneric(transA: false, transB: false, m: o, n: tiles, k: c, a: a.base + xi * o * c, lda: c,
                                    b: b.base + xi * c * tiles, ldb: tiles,
                                    c: cp.base + xi * o * tiles, ldc: tiles, accumulate: false, threads: threads)
                    }
                }
            }
        }
        return (winogradOutput(m, o: o, n: n, h: h, w: w), u, v)
    }

    /// Gradients of `conv3x3Winograd` from gy [O, N, H, W]: dx [C, N, H, W], dweight [O, C, 3, 3].
    /// `u` / `v`: the forward's transformed filter and input (recomputed when nil).
    public static func conv3x3WinogradBackward<T: BinaryFloatingPoint & Sendable>(
        _ gy: [T], x: [T], c: Int, n: Int, h: Int, w: Int, weight: [T], o: Int, needX: Bool, needWeight: Bool,
        u: [T]? = nil, v: [T]? = nil
    ) -> (dx: [T]?, dweight: [T]?) {
        let (th, tw) = winogradTiles(h, w), tiles = n * th * tw
        let dm = winogradOutputAdjoint(gy, o: o, n: n, h: h, w: w)
        var dweight: [T]? = nil
        if needWeight {
            // Written whole by the GEMMs below (k = tiles ≥ 1): no zero fill then.
            let written = tiles > 0 && o > 0 && c > 0
            var du = outputArray(T.self, 16 * o * c, writtenWhole: written)
            if written {
                let v = v ?? x.withUnsafeBufferPointer { winogradInput($0.baseAddress!, c: c, n: n, h: h, w: w) }
                dm.withUnsafeBufferPointer { mb in
                    v.withUnsafeBufferPointer { vb in
                        du.withUnsafeMutableBufferPointer { db in
                            let a = SendableConstPointer(mb.baseAddress!), b = SendableConstPointer(vb.baseAddress!)
                            let cp = SendablePointer(db.baseAddress!)
                            batchedGEMM { xi, threads in
                                gemmGeneric(transA: false, transB: true, m: o, n: c, k: tiles, a: a.base + xi * o * tiles,
                                            lda: tiles, b: b.base + xi * c * tiles, ldb: tiles,
                                            c: cp.base + xi * o * c, ldc: c, accumulate: false, threads: threads)
                            }
                        }
                    }
                }
            }
            dweight = winogradFilterAdjoint(du, o: o, c: c)
        }
        var dx: [T]? = nil
        if needX {
            // Written whole by the GEMMs below (k = o ≥ 1): no zero fill then (16·C·T floats:
            // 12.6 MB for 64 channels at 64×64 in three images).
            let written = tiles > 0 && o > 0 && c > 0
            var dv = outputArray(T.self, 16 * c * tiles, writtenWhole: written)
            if written {
                let u = u ?? winogradFilter(weight, o: o, c: c)
                u.withUnsafeBufferPointer { ub in
                    dm.withUnsafeBufferPointer { mb in
                        dv.withUnsafeMutableBufferPointer { db in
                            let a = SendableConstPointer(ub.baseAddress!), b = SendableConstPointer(mb.baseAddress!)
                            let cp = SendablePointer(db.baseAddress!)
                            batchedGEMM { xi, threads in
                                gemmGeneric(transA: true, transB: false, m: c, n: tiles, k: o, a: a.base + xi * o * c,
                                            lda: c, b: b.base + xi * o * tiles, ldb: tiles,
                                            c: cp.base + xi * c * tiles, ldc: tiles, accumulate: false, threads: threads)
                            }
                        }
                    }
                }
            }
            dx = winogradInputAdjoint(dv, c: c, n: n, h: h, w: w)
        }
        return (dx, dweight)
    }
}
