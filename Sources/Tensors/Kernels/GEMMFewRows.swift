// The packed GEMM's path for C with at most 16 rows (a linear layer on a dozen tokens: SAM's
// two-way transformer on its prompt tokens, the hypernetwork and IoU MLPs), AVX-512 builds.
//
// With m ≤ 16 rows, each element of B is used m times, so packing B into 6 × 32 panels (as the
// general driver does) costs about as much as the arithmetic. Here every row of C keeps one
// accumulator vector over 16 columns, so one B vector feeds m FMAs:
//
//   for each block of 16 columns j0 ..< j0+16 (threads split the blocks):
//     acc_r = start(r, j0 ..< j0+16)          (C, the bias row, or 0)          r < m
//     for p in 0 ..< k:  acc_r = fma(A(r, p), B(p, j0 ..< j0+16), acc_r)       r < m
//
// B(p, j0 ..< j0+16) is read in place when B is row-major (one vector per row p); a transposed
// B (a linear layer's weight) is first turned, 16 columns at a time, into a [k, 16] scratch
// with 16 × 16 register transposes. A(r, p) is broadcast from Aᵀ, copied once into a [k, 16]
// scratch (zeros past m). The accumulator count is a type parameter (4, 8, 12 or 16 rows),
// so unused rows cost nothing.
//
// Determinism: each C element is the FMA chain over p = 0, 1, …, k−1 from the same start as
// the general micro-kernel's (fma(A(r, p), B(p, j), acc)), so the bits are those of
// `gemmReference`, whatever the thread count.

import CBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The number of accumulator rows of a `GEMMPacked.fewRowsKernel` specialisation.
protocol FewRowsCount {
    static var rows: Int { get }
}
enum FewRows4: FewRowsCount { static var rows: Int { 4 } }
enum FewRows8: FewRowsCount { static var rows: Int { 8 } }
enum FewRows12: FewRowsCount { static var rows: Int { 12 } }
enum FewRows16: FewRowsCount { static var rows: Int { 16 } }

extension GEMMPacked {
    /// Most rows of C that `fewRows` handles.
    static let fewRowsMax = 16

    /// Whether `gemm` takes the few-rows path: Float with 16-lane vectors, 1 ≤ m ≤ 16, and B
    /// transposed, k ≤ 512, or n ≤ 16. (A row-major B is read in place, one 64-byte piece of
    /// each of its k rows per column block; past a few hundred rows that walk is slower than the
    /// general driver's packing when there are many blocks: 12 × 256 × 2048 took 0.30 ms against
    /// 0.19 here. With one block, an attention head's P·V, it is the least that can be read.)
    static func usesFewRows(m: Int, n: Int, k: Int, transB: Bool, width: Int) -> Bool {
        width == 16 && m >= 1 && m <= fewRowsMax && n >= 1 && k >= 1 && (transB || k <= 512 || n <= 16)
    }

    /// C[m, n] (+)= A · B for m ≤ 16 (see the file header). A is [m, k] (or [k, m] when
    /// `transA`), B [k, n] (or [n, k] when `transB`); `bias` [n] starts every row (only
    /// without `accumulate`).
    static func fewRows(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int,
                        bias: UnsafePointer<Float>?) {
        precondition(m >= 1 && m <= fewRowsMax && n >= 1 && k >= 1,
                     "GEMMPacked.fewRows: needs 1 ≤ m ≤ \(fewRowsMax), n ≥ 1, k ≥ 1; got m \(m), n \(n), k \(k)")
        precondition(bias == nil || !accumulate, "GEMMPacked.fewRows: a bias start needs accumulate false")
        // Aᵀ as [k, 16]: row p holds A(0 ..< m, p), zeros past m (so the kernel's extra rows
        // read nothing out of bounds).
        let packedA = scratch(16 * k)
        defer { release(packedA) }
        packTransposedA(a, lda: lda, transA: transA, m: m, k: k, into: packedA)
        let at = SendableConstPointer(UnsafePointer(packedA))
        let bp = SendableConstPointer(b), cp = SendablePointer(c), biasP = bias.map { SendableConstPointer($0) }
        let blocks = (n + 15) / 16
        // A block's traffic: 16 columns of B and of C (a weight of 2 MB is mostly traffic).
        let grain = grain(flops: 2 * m * 16 * k, floats: 16 * (k + m))
        chunks(blocks, grain: grain, threads: threads) { range in
            // B's block as [k, 16] (a transposed or a partial block), and one 16 × 16 tile.
            let bBlock = (transB || n % 16 != 0) ? scratch(16 * k) : nil
            // The tile starts at zero, so rows past m never compute on uninitialised memory.
            let tile = scratch(256)
            tile.initialize(repeating: 0, count: 256)
            defer {
                if let bBlock { release(bBlock) }
                release(tile)
            }
            for blk in range {
                let j0 = blk * 16, w = min(16, n - j0)
                let (rowB, ldRowB) = blockOfB(bp.base, ldb, transB, j0: j0, w: w, k: k, into: bBlock)
                // The accumulators' start, as a [16, 16] tile (row r = start of C's row r).
                let start: UnsafePointer<Float>?
                if accumulate {
                    for r in 0..<m { (tile + r * 16).update(from: cp.base + r * ldc + j0, count: w) }
                    start = UnsafePointer(tile)
                } else if let biasP {
                    tile.update(from: biasP.base + j0, count: w)
                    for r in 1..<m { (tile + r * 16).update(from: tile, count: w) }
                    start = UnsafePointer(tile)
                } else {
                    start = nil
                }
                switch m {
                case ...4: fewRowsKernel(FewRows4.self, k, at.base, rowB, ldRowB, start, tile)
                case ...8: fewRowsKernel(FewRows8.self, k, at.base, rowB, ldRowB, start, tile)
                case ...12: fewRowsKernel(FewRows12.self, k, at.base, rowB, ldRowB, start, tile)
                default: fewRowsKernel(FewRows16.self, k, at.base, rowB, ldRowB, start, tile)
                }
                for r in 0..<m { (cp.base + r * ldc + j0).update(from: tile + r * 16, count: w) }
            }
        }
    }

    /// Aᵀ as [k, 16]: dst[p·16 + r] = A(r, p) for r < m, zeros for r ≥ m (so the kernel's extra
    /// rows read nothing out of bounds). A row-major A goes through 16 × 16 register transposes
    /// of 16-column slabs (its m rows copied into a zero-padded tile first).
    static func packTransposedA(_ a: UnsafePointer<Float>, lda: Int, transA: Bool, m: Int, k: Int,
                                into dst: UnsafeMutablePointer<Float>) {
        if transA {
            for p in 0..<k {
                (dst + p * 16).update(from: a + p * lda, count: m)
                (dst + p * 16 + m).update(repeating: 0, count: 16 - m)
            }
            return
        }
        let slab = scratch(256)
        defer { release(slab) }
        slab.initialize(repeating: 0, count: 256)
        var p = 0
        while p + 16 <= k {
            for r in 0..<m { (slab + r * 16).update(from: a + r * lda + p, count: 16) }
            flmm_transpose16(slab, 16, dst + p * 16, 16)
            p += 16
        }
        for p in p..<k {
            for r in 0..<m { dst[p * 16 + r] = a[r * lda + p] }
            (dst + p * 16 + m).update(repeating: 0, count: 16 - m)
        }
    }

    /// Rows B(p, j0 ..< j0+16) for p < k: in place (row-major B, full block), else copied into
    /// `scratch` as [k, 16] (zeros past w). Returns the first row and the row stride.
    @inline(__always)
    static func blockOfB(_ b: UnsafePointer<Float>, _ ldb: Int, _ transB: Bool, j0: Int, w: Int, k: Int,
                         into scratch: UnsafeMutablePointer<Float>?) -> (UnsafePointer<Float>, Int) {
        if !transB && w == 16 { return (b + j0, ldb) }
        let dst = scratch!
        if !transB {
            for p in 0..<k {
                let d = dst + p * 16
                d.update(from: b + p * ldb + j0, count: w)
                (d + w).update(repeating: 0, count: 16 - w)
            }
        } else if w == 16 {
            // B(p, j0 + t) = b[(j0 + t)·ldb + p]: 16 × 16 transposes, then a partial last one.
            let src = b + j0 * ldb
            // The next block's rows (their first lines), while this one is transposed.
            for t in 16..<32 { flmm_prefetch_r(src + t * ldb) }
            var p = 0
            while p + 16 <= k {
                flmm_transpose16(src + p, ldb, dst + p * 16, 16)
                p += 16
            }
            for p in p..<k { for t in 0..<16 { dst[p * 16 + t] = src[t * ldb + p] } }
        } else {
            for p in 0..<k {
                for t in 0..<w { dst[p * 16 + t] = b[(j0 + t) * ldb + p] }
                for t in w..<16 { dst[p * 16 + t] = 0 }
            }
        }
        return (UnsafePointer(dst), 16)
    }

    /// `R.rows` rows × 16 columns: out[r, 0 ..< 16] = start[r] (or 0) + Σ_p A(r, p) · B(p, ·),
    /// p in order, with A(r, p) = at[p·16 + r] (Aᵀ packed as [k, 16]) and B(p, ·) the 16
    /// floats at rowB + p·ldRowB. `out` (and `start`) are [16, 16] tiles.
    @inline(never)
    static func fewRowsKernel<R: FewRowsCount>(_ rows: R.Type, _ k: Int, _ at: UnsafePointer<Float>,
                                               _ rowB: UnsafePointer<Float>, _ ldRowB: Int,
                                               _ start: UnsafePointer<Float>?, _ out: UnsafeMutablePointer<Float>) {
        typealias V = SIMD16<Float>
        let n = R.rows
        var c0 = V(), c1 = V(), c2 = V(), c3 = V(), c4 = V(), c5 = V(), c6 = V(), c7 = V()
        var c8 = V(), c9 = V(), c10 = V(), c11 = V(), c12 = V(), c13 = V(), c14 = V(), c15 = V()
        if let start {
            let s = UnsafeRawPointer(start)
            c0 = s.loadUnaligned(as: V.self); c1 = s.loadUnaligned(fromByteOffset: 64, as: V.self)
            c2 = s.loadUnaligned(fromByteOffset: 128, as: V.self); c3 = s.loadUnaligned(fromByteOffset: 192, as: V.self)
            if n > 4 {
                c4 = s.loadUnaligned(fromByteOffset: 256, as: V.self); c5 = s.loadUnaligned(fromByteOffset: 320, as: V.self)
                c6 = s.loadUnaligned(fromByteOffset: 384, as: V.self); c7 = s.loadUnaligned(fromByteOffset: 448, as: V.self)
            }
            if n > 8 {
                c8 = s.loadUnaligned(fromByteOffset: 512, as: V.self); c9 = s.loadUnaligned(fromByteOffset: 576, as: V.self)
                c10 = s.loadUnaligned(fromByteOffset: 640, as: V.self); c11 = s.loadUnaligned(fromByteOffset: 704, as: V.self)
            }
            if n > 12 {
                c12 = s.loadUnaligned(fromByteOffset: 768, as: V.self); c13 = s.loadUnaligned(fromByteOffset: 832, as: V.self)
                c14 = s.loadUnaligned(fromByteOffset: 896, as: V.self); c15 = s.loadUnaligned(fromByteOffset: 960, as: V.self)
            }
        }
        var ap = at, bp = rowB
        // B rows read in place lie `ldRowB` floats apart: fetch the row 32 steps ahead (a
        // prefetch past the end of B is harmless: it never faults).
        let ahead = 32 * ldRowB
        for _ in 0..<k {
            flmm_prefetch_r(bp + ahead)
            let bv = UnsafeRawPointer(bp).loadUnaligned(as: V.self)
            c0 = c0.addingProduct(V(repeating: ap[0]), bv); c1 = c1.addingProduct(V(repeating: ap[1]), bv)
            c2 = c2.addingProduct(V(repeating: ap[2]), bv); c3 = c3.addingProduct(V(repeating: ap[3]), bv)
            if n > 4 {
                c4 = c4.addingProduct(V(repeating: ap[4]), bv); c5 = c5.addingProduct(V(repeating: ap[5]), bv)
                c6 = c6.addingProduct(V(repeating: ap[6]), bv); c7 = c7.addingProduct(V(repeating: ap[7]), bv)
            }
            if n > 8 {
                c8 = c8.addingProduct(V(repeating: ap[8]), bv); c9 = c9.addingProduct(V(repeating: ap[9]), bv)
                c10 = c10.addingProduct(V(repeating: ap[10]), bv); c11 = c11.addingProduct(V(repeating: ap[11]), bv)
            }
            if n > 12 {
                c12 = c12.addingProduct(V(repeating: ap[12]), bv); c13 = c13.addingProduct(V(repeating: ap[13]), bv)
                c14 = c14.addingProduct(V(repeating: ap[14]), bv); c15 = c15.addingProduct(V(repeating: ap[15]), bv)
            }
            ap += 16
            bp += ldRowB
        }
        let o = UnsafeMutableRawPointer(out)
        o.storeBytes(of: c0, as: V.self); o.storeBytes(of: c1, toByteOffset: 64, as: V.self)
        o.storeBytes(of: c2, toByteOffset: 128, as: V.self); o.storeBytes(of: c3, toByteOffset: 192, as: V.self)
        if n > 4 {
            o.storeBytes(of: c4, toByteOffset: 256, as: V.self); o.storeBytes(of: c5, toByteOffset: 320, as: V.self)
            o.storeBytes(of: c6, toByteOffset: 384, as: V.self); o.storeBytes(of: c7, toByteOffset: 448, as: V.self)
        }
        if n > 8 {
            o.storeBytes(of: c8, toByteOffset: 512, as: V.self); o.storeBytes(of: c9, toByteOffset: 576, as: V.self)
            o.storeBytes(of: c10, toByteOffset: 640, as: V.self); o.storeBytes(of: c11, toByteOffset: 704, as: V.self)
        }
        if n > 12 {
            o.storeBytes(of: c12, toByteOffset: 768, as: V.self); o.storeBytes(of: c13, toByteOffset: 832, as: V.self)
            o.storeBytes(of: c14, toByteOffset: 896, as: V.self); o.storeBytes(of: c15, toByteOffset: 960, as: V.self)
        }
    }
}
