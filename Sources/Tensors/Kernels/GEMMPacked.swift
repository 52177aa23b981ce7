// Our packed SIMD GEMM, the `Backend.own` path of `Kernels.gemm`, and its two variants that
// the convolutions use (B read through an index map, A read through an index map).
//
// Legend: C[M, N] (+)= A[M, K] · B[K, N]. MR × NR is the register tile: MR = 6 rows by
// NR = 2 vectors of W floats (W = 16 with AVX-512, 8 with AVX2: `FLMM_SIMD_FLOATS`, which
// follows the build's `-target-cpu`); a packed panel at most W wide runs a 6 × W kernel
// (`microKernelNarrow`). KC, MC, NC are the cache blocks (BLIS's loop order):
//
//   for jc in N by NC:                 (thread's column range)
//     for pc in K by KC:               pack B[pc, jc] into KC×NR panels (L2)
//       for ic in M by MC:             A[ic, pc] as MR×KC panels (L2; packed once per thread
//                                      for all of A when it fits, else here; or, when C is
//                                      narrow, read in place: `readsAInPlace`)
//         for jr in NC by NR:          B micro-panel stays in L1
//           for ir in MC by MR:        micro-kernel: 12 vector accumulators, FMA per k
//
// C with at most 16 rows (a dozen tokens) skips this blocking: Kernels/GEMMFewRows.swift.
// Packing scratch comes from a pool (no page faults per call); the next C tile is prefetched
// while the current one computes. A convolution's B panel whose 2W columns are one contiguous
// run of the input in every row is not packed: the micro-kernel reads it where it is. With
// AVX-512, a full transposed-B panel is packed with 16-lane gathers (`flmm_pack_bt32`).
//
// Determinism: the micro-kernel keeps one accumulator per C element and adds the products in
// k order with FMA (`addingProduct`), starting from 0 (or the bias row, for a linear layer)
// when pc == 0 and the call does not accumulate, else from the value stored in C (the exact
// partial sum). Threads split whole column (or row) panels of C, never k. So every element
// has the bits of `gemmReference`. An `addend` D (`Kernels.gemmAdding`) is added to each
// finished sum as its tile is stored after the last k block: D + s, the bits of adding D
// afterwards.

import CBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The packed GEMM and its variants. All sizes in elements.
enum GEMMPacked {
    static let mr = 6
    /// Cache blocks, for 48 KB L1 / 2 MB L2 per core: a KC×NR B micro-panel (32 KB) stays in L1,
    /// an MC×KC A block (144 KB) and a KC×NC B block (512 KB) in L2.
    static let kc = 256
    static let mc = 144
    static let nc = 512
    /// Largest A (floats) packed whole, once per GEMM and thread (16 MB).
    static let maxPackedA = 1 << 22
    /// Whether the micro-kernels read full row panels of A where A is, unpacked (`RowsA`,
    /// `ColumnsA`). Packing A costs about as much per element as the micro-kernel spends on it
    /// per B panel, so it pays only when C is wide: measured here, reading in place is 2–29%
    /// faster for n ≤ 256 and 1–3% slower for n = 1024. A transposed A read in place touches one
    /// cache line per k step, which pays while the stride is short (lda ≤ 256: +3–19%; 512:
    /// −6%) or C has at most 64 columns.
    static func readsAInPlace(n: Int, transA: Bool, lda: Int) -> Bool {
        n <= 256 && (!transA || lda <= 256 || n <= 64)
    }

    /// Fewest flops worth a second thread.
    static let minFlopsPerThread = 1 << 23
    /// What one byte of A, B or C traffic costs, in flops, when splitting work over threads: one
    /// core here runs 162–175 GFLOP/s of FMAs but streams 15 GB/s from memory (8.6 GB/s of
    /// writes), so a GEMM that is mostly traffic (a short k, or few rows against a large weight)
    /// gains from a second core although it has few flops.
    static let flopsPerByte = 8

    /// Units per thread at least, for units of `flops` flops that touch `floats` elements of A,
    /// B and C: enough for `minFlopsPerThread` of work, counting traffic at `flopsPerByte`.
    static func grain(flops: Int, floats: Int) -> Int {
        max(1, minFlopsPerThread / max(1, flops + 4 * flopsPerByte * floats))
    }

    /// SIMD width of the build (floats per vector).
    static var simdFloats: Int { Int(FLMM_SIMD_FLOATS) }

    // MARK: entry points (dispatch on the build's SIMD width)

    /// At most 16 rows of C take the few-rows path (Kernels/GEMMFewRows.swift) unless `aInPlace`
    /// asks for the general driver's A mode: true reads A in place, false packs it; nil chooses
    /// by `readsAInPlace`. The bits are the same either way. `bias` [n] (only without
    /// `accumulate`): every row of C starts from it instead of 0 (a linear layer's bias, the
    /// same bits as filling C with it and accumulating, without that pass over C).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int,
                     width: Int = simdFloats, aInPlace: Bool? = nil, bias: UnsafePointer<Float>? = nil,
                     addend: UnsafePointer<Float>? = nil) {
        if aInPlace == nil && usesFewRows(m: m, n: n, k: k, transB: transB, width: width) {
            fewRows(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                    c: c, ldc: ldc, accumulate: accumulate, threads: threads, bias: bias)
            if let addend { addTile(addend, ldc, to: c, ldc, m, n) }
            return
        }
        let src = StridedB(b: b, ldb: ldb, trans: transB)
        switch width {
        case 16: driver(SIMD16<Float>.self, m: m, n: n, k: k, a: a, lda: lda, transA: transA, b: src,
                        c: c, ldc: ldc, accumulate: accumulate, threads: threads, aInPlace: aInPlace, bias: bias,
                        addend: addend)
        case 8: driver(SIMD8<Float>.self, m: m, n: n, k: k, a: a, lda: lda, transA: transA, b: src,
                       c: c, ldc: ldc, accumulate: accumulate, threads: threads, aInPlace: aInPlace, bias: bias,
                       addend: addend)
        default: driver(SIMD4<Float>.self, m: m, n: n, k: k, a: a, lda: lda, transA: transA, b: src,
                        c: c, ldc: ldc, accumulate: accumulate, threads: threads, aInPlace: aInPlace, bias: bias,
                        addend: addend)
        }
    }

    /// C (+)= A · B with B(p, j) = base[rowOff[p] + colOff[j]] (a convolution's im2col matrix,
    /// never materialised). A is [m, k] (or [k, m] when `transA`).
    static func gemmMappedB(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, transA: Bool,
                            base: UnsafePointer<Float>, rowOff: UnsafePointer<Int>, colOff: UnsafePointer<Int>,
                            c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int,
                            width: Int = simdFloats) {
        if m == 0 || n == 0 { return }
        let src = MappedB(base: base, rowOff: rowOff, colOff: colOff)
        switch width {
        case 16: driver(SIMD16<Float>.self, m: m, n: n, k: k, a: a, lda: lda, transA: transA, b: src,
                        c: c, ldc: ldc, accumulate: accumulate, threads: threads)
        case 8: driver(SIMD8<Float>.self, m: m, n: n, k: k, a: a, lda: lda, transA: transA, b: src,
                       c: c, ldc: ldc, accumulate: accumulate, threads: threads)
        default: driver(SIMD4<Float>.self, m: m, n: n, k: k, a: a, lda: lda, transA: transA, b: src,
                        c: c, ldc: ldc, accumulate: accumulate, threads: threads)
        }
    }

    /// C (+)= A · B with A(i, p) = base[rowOff[i] + colOff[p]] (read in place, not packed) and
    /// B [k, n] (or [n, k] when `transB`).
    static func gemmMappedA(m: Int, n: Int, k: Int,
                            base: UnsafePointer<Float>, rowOff: UnsafePointer<Int>, colOff: UnsafePointer<Int>,
                            b: UnsafePointer<Float>, ldb: Int, transB: Bool,
                            c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int,
                            width: Int = simdFloats) {
        if m == 0 || n == 0 { return }
        switch width {
        case 16: mappedADriver(SIMD16<Float>.self, m: m, n: n, k: k, base: base, rowOff: rowOff, colOff: colOff,
                               b: b, ldb: ldb, transB: transB, c: c, ldc: ldc, accumulate: accumulate, threads: threads)
        case 8: mappedADriver(SIMD8<Float>.self, m: m, n: n, k: k, base: base, rowOff: rowOff, colOff: colOff,
                              b: b, ldb: ldb, transB: transB, c: c, ldc: ldc, accumulate: accumulate, threads: threads)
        default: mappedADriver(SIMD4<Float>.self, m: m, n: n, k: k, base: base, rowOff: rowOff, colOff: colOff,
                               b: b, ldb: ldb, transB: transB, c: c, ldc: ldc, accumulate: accumulate, threads: threads)
        }
    }

    // MARK: helpers

    /// 64-byte aligned scratch of at least `count` floats from the pool; give it back with `release`.
    static func scratch(_ count: Int) -> UnsafeMutablePointer<Float> { ScratchPool.shared.take(count) }

    /// Returns scratch to the pool.
    static func release(_ p: UnsafeMutablePointer<Float>) { ScratchPool.shared.give(p) }

    /// Sets C[m, n] to zero (a GEMM with k = 0 that does not accumulate).
    static func zero(_ c: UnsafeMutablePointer<Float>, m: Int, n: Int, ldc: Int) {
        for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) }
    }

    /// Runs `body` over `0..<units` in contiguous chunks on up to `threads` threads, each chunk
    /// worth at least `grain` units.
    static func chunks(_ units: Int, grain: Int, threads: Int, _ body: @Sendable (Range<Int>) -> Void) {
        if threads <= 1 || units <= grain {
            body(0..<units)
        } else {
            Parallel.forEachChunk(units, grain: grain, body)
        }
    }

    // MARK: packing

    /// Packs A[i0 ..< i0+mc, p0 ..< p0+kc] as ceil(mc/MR) panels; panel r holds, for each p,
    /// MR consecutive floats (rows i0 + r·MR ..< +MR, zeros past mc).
    static func packA(_ dst: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, lda: Int, trans: Bool,
                      i0: Int, mc: Int, p0: Int, kc: Int) {
        var panel = dst
        var i = i0
        while i < i0 + mc {
            let h = min(mr, i0 + mc - i)
            if trans && h == mr {
                // A(i, p) = a[p·lda + i]: each p gives 6 consecutive floats (copied as 4 + 2).
                for p in 0..<kc {
                    let src = UnsafeRawPointer(a + (p0 + p) * lda + i)
                    let d = UnsafeMutableRawPointer(panel + p * mr)
                    d.storeBytes(of: src.loadUnaligned(as: SIMD4<Float>.self), as: SIMD4<Float>.self)
                    d.storeBytes(of: src.loadUnaligned(fromByteOffset: 16, as: SIMD2<Float>.self), toByteOffset: 16,
                                 as: SIMD2<Float>.self)
                }
            } else if trans {
                // A(i, p) = a[p·lda + i]: each p gives h consecutive floats.
                for p in 0..<kc {
                    let src = a + (p0 + p) * lda + i
                    let d = panel + p * mr
                    for r in 0..<h { d[r] = src[r] }
                    for r in h..<mr { d[r] = 0 }
                }
            } else if h == mr {
                let s0 = a + i * lda + p0, s1 = s0 + lda, s2 = s1 + lda, s3 = s2 + lda, s4 = s3 + lda, s5 = s4 + lda
                for p in 0..<kc {
                    let d = panel + p * mr
                    d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p]; d[3] = s3[p]; d[4] = s4[p]; d[5] = s5[p]
                }
            } else {
                for p in 0..<kc {
                    let d = panel + p * mr
                    for r in 0..<h { d[r] = a[(i + r) * lda + p0 + p] }
                    for r in h..<mr { d[r] = 0 }
                }
            }
            panel += mr * kc
            i += mr
        }
    }

    // MARK: driver for packed A and a packed B source

    static func driver<V: SIMD & SendableMetatype, B: PanelSourceB>(
        _ v: V.Type, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, transA: Bool, b: B,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int, aInPlace: Bool? = nil,
        bias: UnsafePointer<Float>? = nil, addend: UnsafePointer<Float>? = nil
    ) where V.Scalar == Float {
        precondition(bias == nil || !accumulate, "GEMMPacked: a bias start needs accumulate false")
        precondition(addend == nil || !accumulate, "GEMMPacked: an addend needs accumulate false")
        if m == 0 || n == 0 { return }
        if k == 0 {
            if let bias {
                for i in 0..<m { (c + i * ldc).update(from: bias, count: n) }
            } else if !accumulate {
                zero(c, m: m, n: n, ldc: ldc)
            }
            // The addend on the empty sums (0), as after any GEMM.
            if let addend { addTile(addend, ldc, to: c, ldc, m, n) }
            return
        }
        let biasP = bias.map { SendableConstPointer($0) }
        let addP = addend.map { SendableConstPointer($0) }
        let nr = 2 * V.scalarCount
        // Split the longer side of C into whole panels; each thread packs what it needs.
        let splitColumns = n >= m
        let units = splitColumns ? (n + nr - 1) / nr : (m + mr - 1) / mr
        let flopsPerUnit = 2 * k * (splitColumns ? m * nr : n * mr)
        // A unit's traffic: its B panel and C columns, or its A panel and C rows.
        let floatsPerUnit = splitColumns ? (k + m) * nr : (k + n) * mr
        let grain = grain(flops: flopsPerUnit, floats: floatsPerUnit)
        let ap = SendableConstPointer(a), cp = SendablePointer(c)
        // Column split on several threads: every thread needs all of A, so the threads pack it
        // once together (each a range of row panels) before computing.
        let mPad = (m + mr - 1) / mr * mr
        let inPlaceA = aInPlace ?? readsAInPlace(n: n, transA: transA, lda: lda)
        let shareA = !inPlaceA && splitColumns && threads > 1 && min(threads, units / grain) > 1 && mPad * k <= maxPackedA
        let shared = shareA ? scratch(mPad * k) : nil
        defer { if let shared { release(shared) } }
        if let shared {
            let sp = SendablePointer(shared)
            chunks(mPad / mr, grain: 1, threads: threads) { r in
                let i0 = r.lowerBound * mr, i1 = min(m, r.upperBound * mr)
                var pc = 0
                while pc < k {
                    let kcb = min(kc, k - pc)
                    packA(sp.base + pc * mPad + i0 * kcb, a: ap.base, lda: lda, trans: transA,
                          i0: i0, mc: i1 - i0, p0: pc, kc: kcb)
                    pc += kcb
                }
            }
        }
        let sharedA = shared.map { SendableConstPointer(UnsafePointer($0)) }
        chunks(units, grain: grain, threads: threads) { r in
            if splitColumns {
                let j0 = r.lowerBound * nr, j1 = min(n, r.upperBound * nr)
                serial(V.self, i0: 0, i1: m, j0: j0, j1: j1, k: k, a: ap.base, lda: lda, transA: transA, b: b,
                       c: cp.base, ldc: ldc, accumulate: accumulate, packedA: sharedA?.base, inPlaceA: inPlaceA,
                       bias: biasP?.base, addend: addP?.base)
            } else {
                let i0 = r.lowerBound * mr, i1 = min(m, r.upperBound * mr)
                serial(V.self, i0: i0, i1: i1, j0: 0, j1: n, k: k, a: ap.base, lda: lda, transA: transA, b: b,
                       c: cp.base, ldc: ldc, accumulate: accumulate, inPlaceA: inPlaceA, bias: biasP?.base,
                       addend: addP?.base)
            }
        }
    }

    /// One thread's block C[i0..<i1, j0..<j1].
    static func serial<V: SIMD, B: PanelSourceB>(
        _ v: V.Type, i0: Int, i1: Int, j0: Int, j1: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, transA: Bool, b: B,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, packedA: UnsafePointer<Float>? = nil,
        inPlaceA: Bool = false, bias: UnsafePointer<Float>? = nil, addend: UnsafePointer<Float>? = nil
    ) where V.Scalar == Float {
        let nr = 2 * V.scalarCount
        let kcMax = min(kc, k)
        let mcMax = min(mc, (i1 - i0 + mr - 1) / mr * mr)
        let ncMax = min(nc, (j1 - j0 + nr - 1) / nr * nr)
        // A is packed once for all of k and reused for every column block when it fits
        // (block (ic, pc) at aAll + pc·mPad + (ic − i0)·kc), or comes so packed (`packedA`, all
        // rows, i0 = 0); otherwise it is packed per (pc, ic) block.
        let mPad = (i1 - i0 + mr - 1) / mr * mr
        let inPlaceA = inPlaceA && packedA == nil
        let packAllA = !inPlaceA && (packedA != nil || mPad * k <= maxPackedA)
        let aPack = packedA.map { UnsafeMutablePointer(mutating: $0) }
            ?? scratch(inPlaceA ? mr * kcMax : packAllA ? mPad * k : mcMax * kcMax)
        let bPack = scratch(kcMax * ncMax), tile = scratch(mr * nr)
        defer {
            if packedA == nil { release(aPack) }
            release(bPack)
            release(tile)
        }
        tile.initialize(repeating: 0, count: mr * nr)
        // The bias of columns j0 ..< j1, zero-padded to whole panels: a tile's accumulators
        // start from its 2W values (row stride 0) on the first k block.
        let biasRow = bias.map { src -> UnsafeMutablePointer<Float> in
            let width = (j1 - j0 + nr - 1) / nr * nr, row = scratch(width)
            row.update(from: src + j0, count: j1 - j0)
            (row + (j1 - j0)).update(repeating: 0, count: width - (j1 - j0))
            return row
        }
        defer { if let biasRow { release(biasRow) } }
        if packAllA && packedA == nil {
            var pc = 0
            while pc < k {
                let kcb = min(kc, k - pc)
                packA(aPack + pc * mPad, a: a, lda: lda, trans: transA, i0: i0, mc: i1 - i0, p0: pc, kc: kcb)
                pc += kcb
            }
        }
        var jc = j0
        while jc < j1 {
            let ncb = min(nc, j1 - jc)
            // Panels that B can hand over in place (a convolution's contiguous runs) are read
            // from the input by the micro-kernel (`InPlaceRows`); only the others are packed.
            let inPlace = (0..<((ncb + nr - 1) / nr)).map { q in
                min(nr, ncb - q * nr) == nr ? b.inPlacePanel(j: jc + q * nr, nr: nr) : nil
            }
            var pc = 0
            while pc < k {
                let kcb = min(kc, k - pc)
                for (q, panel) in inPlace.enumerated() where panel == nil {
                    b.pack(v, into: bPack + q * kcb * nr, p0: pc, kc: kcb, j0: jc + q * nr, nc: min(nr, ncb - q * nr))
                }
                let load = accumulate || pc > 0
                // The addend goes onto each finished sum, after the last k block.
                let lastAddend = pc + kcb == k ? addend : nil
                var ic = i0
                while ic < i1 {
                    let mcb = min(mc, i1 - ic)
                    let aBlock = packAllA ? aPack + pc * mPad + (ic - i0) * kcb : aPack
                    if inPlaceA {
                        // Full row panels are read in place; a last partial one is packed
                        // (zero rows past mcb) into aPack.
                        if mcb % mr != 0 {
                            let last = mcb / mr * mr
                            packA(aPack, a: a, lda: lda, trans: transA, i0: ic + last, mc: mcb - last, p0: pc, kc: kcb)
                        }
                    } else if !packAllA {
                        packA(aPack, a: a, lda: lda, trans: transA, i0: ic, mc: mcb, p0: pc, kc: kcb)
                    }
                    var jr = 0
                    while jr < ncb {
                        let w = min(nr, ncb - jr)
                        let bPanel = bPack + (jr / nr) * kcb * nr
                        var ir = 0
                        while ir < mcb {
                            let h = min(mr, mcb - ir)
                            let aPanel = aBlock + (ir / mr) * kcb * mr
                            let cTile = c + (ic + ir) * ldc + jc + jr
                            if ir + mr < mcb {
                                // The next tile's C rows, while this one computes.
                                let next = cTile + mr * ldc
                                for r in 0..<min(mr, mcb - ir - mr) {
                                    flmm_prefetch_c(next + r * ldc)
                                    flmm_prefetch_c(next + r * ldc + nr - 1)
                                }
                            }
                            // A panel at most one vector wide (W columns) runs the one-vector kernel.
                            let narrow = w <= V.scalarCount
                            let full = h == mr && w == (narrow ? V.scalarCount : nr)
                            let cOut = full ? cTile : tile, ldOut = full ? ldc : nr
                            if !full && load { copyTile(from: cTile, ldc, to: tile, nr, h, w) }
                            // Where the accumulators start: C (or its copy), the bias, or 0.
                            let start: UnsafePointer<Float>? = load ? UnsafePointer(cOut)
                                : biasRow.map { UnsafePointer($0 + (jc - j0) + jr) }
                            let ldStart = load ? ldOut : 0
                            // A full tile adds the addend in the micro-kernel; a partial one below.
                            let add = full ? lastAddend.map { $0 + (ic + ir) * ldc + jc + jr } : nil
                            if inPlaceA && h == mr {
                                if transA {
                                    let aIn = ColumnsA(base: a + pc * lda + ic + ir, ld: lda)
                                    runTile(v, kcb, aIn, inPlace[jr / nr], pc, bPanel, narrow, cOut, ldOut, start, ldStart, add)
                                } else {
                                    let aIn = RowsA(a + (ic + ir) * lda + pc, lda)
                                    runTile(v, kcb, aIn, inPlace[jr / nr], pc, bPanel, narrow, cOut, ldOut, start, ldStart, add)
                                }
                            } else {
                                let aP = PackedA(inPlaceA ? UnsafePointer(aPack) : UnsafePointer(aPanel))
                                runTile(v, kcb, aP, inPlace[jr / nr], pc, bPanel, narrow, cOut, ldOut, start, ldStart, add)
                            }
                            if !full {
                                if let lastAddend { addTile(lastAddend + (ic + ir) * ldc + jc + jr, ldc, to: tile, nr, h, w) }
                                copyTile(from: tile, nr, to: cTile, ldc, h, w)
                            }
                            ir += mr
                        }
                        jr += nr
                    }
                    ic += mcb
                }
                pc += kcb
            }
            jc += ncb
        }
    }

    /// One register tile: B from an in-place panel, or packed (narrow or full width).
    @inline(__always)
    static func runTile<V: SIMD, A: PanelA>(_ v: V.Type, _ kcb: Int, _ a: A,
                                            _ panel: (origin: UnsafePointer<Float>, rowOff: UnsafePointer<Int>)?,
                                            _ pc: Int, _ bPanel: UnsafePointer<Float>, _ narrow: Bool,
                                            _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                                            _ start: UnsafePointer<Float>?, _ lds: Int,
                                            _ add: UnsafePointer<Float>? = nil)
    where V.Scalar == Float {
        if let panel {
            microKernel(v, kcb, a, InPlaceRows(panel.origin, panel.rowOff + pc), c, ldc, start, lds, add)
        } else if narrow {
            microKernelNarrow(v, kcb, a, PackedRows(bPanel, v), c, ldc, start, lds, add)
        } else {
            microKernel(v, kcb, a, PackedRows(bPanel, v), c, ldc, start, lds, add)
        }
    }

    /// Copies an h × w block between row-major buffers with row strides `ls` and `ld`.
    @inline(__always)
    static func copyTile(from s: UnsafePointer<Float>, _ ls: Int, to d: UnsafeMutablePointer<Float>, _ ld: Int,
                         _ h: Int, _ w: Int) {
        for r in 0..<h { (d + r * ld).update(from: s + r * ls, count: w) }
    }

    /// c = d + c over an h × w block (row strides `ldd` and `ldc`): an addend on finished sums
    /// (`gemmAdding`), where the micro-kernel does not add it itself.
    static func addTile(_ d: UnsafePointer<Float>, _ ldd: Int, to c: UnsafeMutablePointer<Float>, _ ldc: Int,
                        _ h: Int, _ w: Int) {
        for r in 0..<h { for j in 0..<w { c[r * ldc + j] = d[r * ldd + j] + c[r * ldc + j] } }
    }

    /// The 6 × 2W register tile: C[0..<6, 0..<2W] (+)= Σ_p A(r, p) · B(p, j), p in order.
    /// A(r, p) comes from `a` (`PanelA`: a packed panel, or rows read in place or through a
    /// column map); B's row p (2W floats) from `b`: a packed panel (`PackedRows`) or a
    /// contiguous run read in place (`InPlaceRows`). The accumulators start from `start` (rows
    /// `lds` apart: C itself, a copy, or a bias row with stride 0) or from 0; `c` any row stride.
    /// With `add` (rows `ldc` apart), each finished sum s is stored as add + s.
    @inline(never)
    static func microKernel<V: SIMD, A: PanelA, Rows: PanelRows>(_ v: V.Type, _ kc: Int, _ a: A, _ b: Rows,
                                                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                                                      _ start: UnsafePointer<Float>?, _ lds: Int,
                                                      _ add: UnsafePointer<Float>? = nil)
    where V.Scalar == Float {
        let w = V.scalarCount
        var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
        var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
        if let start {
            let r = UnsafeRawPointer(start), s = lds * 4, o = w * 4
            c00 = r.loadUnaligned(as: V.self); c01 = r.loadUnaligned(fromByteOffset: o, as: V.self)
            c10 = r.loadUnaligned(fromByteOffset: s, as: V.self); c11 = r.loadUnaligned(fromByteOffset: s + o, as: V.self)
            c20 = r.loadUnaligned(fromByteOffset: 2 * s, as: V.self); c21 = r.loadUnaligned(fromByteOffset: 2 * s + o, as: V.self)
            c30 = r.loadUnaligned(fromByteOffset: 3 * s, as: V.self); c31 = r.loadUnaligned(fromByteOffset: 3 * s + o, as: V.self)
            c40 = r.loadUnaligned(fromByteOffset: 4 * s, as: V.self); c41 = r.loadUnaligned(fromByteOffset: 4 * s + o, as: V.self)
            c50 = r.loadUnaligned(fromByteOffset: 5 * s, as: V.self); c51 = r.loadUnaligned(fromByteOffset: 5 * s + o, as: V.self)
        }
        for p in 0..<kc {
            let row = b.row(p)
            let b0 = row.loadUnaligned(as: V.self), b1 = row.loadUnaligned(fromByteOffset: w * 4, as: V.self)
            var x = V(repeating: a.value(p, 0))
            c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
            x = V(repeating: a.value(p, 1))
            c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
            x = V(repeating: a.value(p, 2))
            c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
            x = V(repeating: a.value(p, 3))
            c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
            x = V(repeating: a.value(p, 4))
            c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
            x = V(repeating: a.value(p, 5))
            c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
        }
        let r = UnsafeMutableRawPointer(c), s = ldc * 4, o = w * 4
        if let add {
            let d = UnsafeRawPointer(add)
            c00 = d.loadUnaligned(as: V.self) + c00; c01 = d.loadUnaligned(fromByteOffset: o, as: V.self) + c01
            c10 = d.loadUnaligned(fromByteOffset: s, as: V.self) + c10
            c11 = d.loadUnaligned(fromByteOffset: s + o, as: V.self) + c11
            c20 = d.loadUnaligned(fromByteOffset: 2 * s, as: V.self) + c20
            c21 = d.loadUnaligned(fromByteOffset: 2 * s + o, as: V.self) + c21
            c30 = d.loadUnaligned(fromByteOffset: 3 * s, as: V.self) + c30
            c31 = d.loadUnaligned(fromByteOffset: 3 * s + o, as: V.self) + c31
            c40 = d.loadUnaligned(fromByteOffset: 4 * s, as: V.self) + c40
            c41 = d.loadUnaligned(fromByteOffset: 4 * s + o, as: V.self) + c41
            c50 = d.loadUnaligned(fromByteOffset: 5 * s, as: V.self) + c50
            c51 = d.loadUnaligned(fromByteOffset: 5 * s + o, as: V.self) + c51
        }
        r.storeBytes(of: c00, as: V.self); r.storeBytes(of: c01, toByteOffset: o, as: V.self)
        r.storeBytes(of: c10, toByteOffset: s, as: V.self); r.storeBytes(of: c11, toByteOffset: s + o, as: V.self)
        r.storeBytes(of: c20, toByteOffset: 2 * s, as: V.self); r.storeBytes(of: c21, toByteOffset: 2 * s + o, as: V.self)
        r.storeBytes(of: c30, toByteOffset: 3 * s, as: V.self); r.storeBytes(of: c31, toByteOffset: 3 * s + o, as: V.self)
        r.storeBytes(of: c40, toByteOffset: 4 * s, as: V.self); r.storeBytes(of: c41, toByteOffset: 4 * s + o, as: V.self)
        r.storeBytes(of: c50, toByteOffset: 5 * s, as: V.self); r.storeBytes(of: c51, toByteOffset: 5 * s + o, as: V.self)
    }

    /// The 6 × W register tile: `microKernel` for a B panel whose columns past W are padding
    /// (a narrow last panel, or n ≤ W as in attention with 16-wide heads). The same sums.
    @inline(never)
    static func microKernelNarrow<V: SIMD, A: PanelA, Rows: PanelRows>(_ v: V.Type, _ kc: Int, _ a: A, _ b: Rows,
                                                            _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                                                            _ start: UnsafePointer<Float>?, _ lds: Int,
                                                            _ add: UnsafePointer<Float>? = nil)
    where V.Scalar == Float {
        var c0 = V(), c1 = V(), c2 = V(), c3 = V(), c4 = V(), c5 = V()
        if let start {
            let r = UnsafeRawPointer(start), s = lds * 4
            c0 = r.loadUnaligned(as: V.self); c1 = r.loadUnaligned(fromByteOffset: s, as: V.self)
            c2 = r.loadUnaligned(fromByteOffset: 2 * s, as: V.self); c3 = r.loadUnaligned(fromByteOffset: 3 * s, as: V.self)
            c4 = r.loadUnaligned(fromByteOffset: 4 * s, as: V.self); c5 = r.loadUnaligned(fromByteOffset: 5 * s, as: V.self)
        }
        for p in 0..<kc {
            let b0 = b.row(p).loadUnaligned(as: V.self)
            c0 = c0.addingProduct(V(repeating: a.value(p, 0)), b0); c1 = c1.addingProduct(V(repeating: a.value(p, 1)), b0)
            c2 = c2.addingProduct(V(repeating: a.value(p, 2)), b0); c3 = c3.addingProduct(V(repeating: a.value(p, 3)), b0)
            c4 = c4.addingProduct(V(repeating: a.value(p, 4)), b0); c5 = c5.addingProduct(V(repeating: a.value(p, 5)), b0)
        }
        let r = UnsafeMutableRawPointer(c), s = ldc * 4
        if let add {
            let d = UnsafeRawPointer(add)
            c0 = d.loadUnaligned(as: V.self) + c0; c1 = d.loadUnaligned(fromByteOffset: s, as: V.self) + c1
            c2 = d.loadUnaligned(fromByteOffset: 2 * s, as: V.self) + c2
            c3 = d.loadUnaligned(fromByteOffset: 3 * s, as: V.self) + c3
            c4 = d.loadUnaligned(fromByteOffset: 4 * s, as: V.self) + c4
            c5 = d.loadUnaligned(fromByteOffset: 5 * s, as: V.self) + c5
        }
        r.storeBytes(of: c0, as: V.self); r.storeBytes(of: c1, toByteOffset: s, as: V.self)
        r.storeBytes(of: c2, toByteOffset: 2 * s, as: V.self); r.storeBytes(of: c3, toByteOffset: 3 * s, as: V.self)
        r.storeBytes(of: c4, toByteOffset: 4 * s, as: V.self); r.storeBytes(of: c5, toByteOffset: 5 * s, as: V.self)
    }

    // MARK: driver for A read through an index map (no A packing)

    static func mappedADriver<V: SIMD & SendableMetatype>(
        _ v: V.Type, m: Int, n: Int, k: Int,
        base: UnsafePointer<Float>, rowOff: UnsafePointer<Int>, colOff: UnsafePointer<Int>,
        b: UnsafePointer<Float>, ldb: Int, transB: Bool,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int
    ) where V.Scalar == Float {
        if k == 0 {
            if !accumulate { zero(c, m: m, n: n, ldc: ldc) }
            return
        }
        let nr = 2 * V.scalarCount
        let panels = (n + nr - 1) / nr
        // B is packed once, whole (k × panels·NR), and shared read-only by the threads.
        let bPack = scratch(k * panels * nr)
        defer { release(bPack) }
        let bSrc = StridedB(b: b, ldb: ldb, trans: transB)
        var pc = 0
        while pc < k {
            // Panel q of block pc starts at q·k·NR + pc·NR: each panel is k consecutive rows.
            let kcb = min(kc, k - pc)
            for q in 0..<panels {
                bSrc.pack(v, into: bPack + q * k * nr + pc * nr, p0: pc, kc: kcb,
                          j0: q * nr, nc: min(nr, n - q * nr))
            }
            pc += kcb
        }
        let units = (m + mr - 1) / mr
        // A unit's traffic: its rows of A (read through the map) and of C.
        let grain = grain(flops: 2 * k * n * mr, floats: (k + n) * mr)
        let bp = SendableConstPointer(UnsafePointer(bPack)), cp = SendablePointer(c)
        let basep = SendableConstPointer(base), rp = SendableConstPointer(rowOff), cop = SendableConstPointer(colOff)
        chunks(units, grain: grain, threads: threads) { r in
            let tile = scratch(mr * nr)
            defer { release(tile) }
            tile.initialize(repeating: 0, count: mr * nr)
            var pc = 0
            while pc < k {
                let kcb = min(kc, k - pc)
                let load = accumulate || pc > 0
                for u in r {
                    let i = u * mr, h = min(mr, m - i)
                    // Rows past m repeat row i (valid memory); their results are dropped.
                    let r0 = basep.base + rp.base[i]
                    let r1 = h > 1 ? basep.base + rp.base[i + 1] : r0
                    let r2 = h > 2 ? basep.base + rp.base[i + 2] : r0
                    let r3 = h > 3 ? basep.base + rp.base[i + 3] : r0
                    let r4 = h > 4 ? basep.base + rp.base[i + 4] : r0
                    let r5 = h > 5 ? basep.base + rp.base[i + 5] : r0
                    let aRows = MappedRowsA(rows: RowsA(r0, r1, r2, r3, r4, r5), colOff: cop.base + pc)
                    for q in 0..<panels {
                        let w = min(nr, n - q * nr)
                        let bRows = PackedRows(bp.base + q * k * nr + pc * nr, V.self)
                        let cTile = cp.base + i * ldc + q * nr
                        if h == mr && w == nr {
                            microKernel(V.self, kcb, aRows, bRows, cTile, ldc, load ? UnsafePointer(cTile) : nil, ldc)
                        } else {
                            if load { copyTile(from: cTile, ldc, to: tile, nr, h, w) }
                            microKernel(V.self, kcb, aRows, bRows, tile, nr, load ? UnsafePointer(tile) : nil, nr)
                            copyTile(from: tile, nr, to: cTile, ldc, h, w)
                        }
                    }
                }
                pc += kcb
            }
        }
    }
}

// MARK: B panel sources

/// Something that packs a block of B into the micro-kernel's panel layout.
protocol PanelSourceB: Sendable {
    /// Packs B[p0 ..< p0+kc, j0 ..< j0+nc] as ceil(nc/NR) panels of kc × NR floats
    /// (NR = 2 · V.scalarCount), panel q holding columns j0 + q·NR ..< +NR, zeros past nc.
    func pack<V: SIMD>(_ v: V.Type, into dst: UnsafeMutablePointer<Float>, p0: Int, kc: Int, j0: Int, nc: Int)
    where V.Scalar == Float
    /// When columns j ..< j + nr of every row p are one contiguous run, B(p, j + t) =
    /// origin[rowOff[p] + t]: the panel can be read in place, unpacked. Else nil.
    func inPlacePanel(j: Int, nr: Int) -> (origin: UnsafePointer<Float>, rowOff: UnsafePointer<Int>)?
}

extension PanelSourceB {
    func inPlacePanel(j: Int, nr: Int) -> (origin: UnsafePointer<Float>, rowOff: UnsafePointer<Int>)? { nil }
}

/// Where the micro-kernel finds A(r, p), r < 6, of its row panel.
protocol PanelA {
    func value(_ p: Int, _ r: Int) -> Float
}

/// A packed panel: A(r, p) at p·6 + r.
struct PackedA: PanelA {
    let base: UnsafePointer<Float>
    init(_ base: UnsafePointer<Float>) { self.base = base }
    @inline(__always) func value(_ p: Int, _ r: Int) -> Float { base[p &* 6 &+ r] }
}

/// Six rows read in place: A(r, p) = rowR[p] (a row-major A, unpacked).
struct RowsA: PanelA {
    let r0: UnsafePointer<Float>, r1: UnsafePointer<Float>, r2: UnsafePointer<Float>
    let r3: UnsafePointer<Float>, r4: UnsafePointer<Float>, r5: UnsafePointer<Float>
    /// Rows `first`, first + ld, … (six of them).
    init(_ first: UnsafePointer<Float>, _ ld: Int) {
        r0 = first; r1 = first + ld; r2 = r1 + ld; r3 = r2 + ld; r4 = r3 + ld; r5 = r4 + ld
    }
    init(_ r0: UnsafePointer<Float>, _ r1: UnsafePointer<Float>, _ r2: UnsafePointer<Float>,
         _ r3: UnsafePointer<Float>, _ r4: UnsafePointer<Float>, _ r5: UnsafePointer<Float>) {
        (self.r0, self.r1, self.r2, self.r3, self.r4, self.r5) = (r0, r1, r2, r3, r4, r5)
    }
    @inline(__always) func value(_ p: Int, _ r: Int) -> Float {
        switch r {
        case 0: return r0[p]
        case 1: return r1[p]
        case 2: return r2[p]
        case 3: return r3[p]
        case 4: return r4[p]
        default: return r5[p]
        }
    }
}

/// Six rows read through a column map: A(r, p) = rowR[colOff[p]] (`gemmMappedA`: a
/// convolution's im2col rows, never stored).
struct MappedRowsA: PanelA {
    let rows: RowsA, colOff: UnsafePointer<Int>
    @inline(__always) func value(_ p: Int, _ r: Int) -> Float { rows.value(colOff[p], r) }
}

/// A transposed A read in place: A(r, p) = base[p·ld + r] (six consecutive floats per p).
struct ColumnsA: PanelA {
    let base: UnsafePointer<Float>, ld: Int
    @inline(__always) func value(_ p: Int, _ r: Int) -> Float { base[p &* ld &+ r] }
}

/// Where the micro-kernel finds row p (2W floats) of its B panel.
protocol PanelRows {
    func row(_ p: Int) -> UnsafeRawPointer
}

/// A packed panel: row p at p·2W floats.
struct PackedRows: PanelRows {
    let base: UnsafeRawPointer, stride: Int
    init<V: SIMD>(_ panel: UnsafePointer<Float>, _ v: V.Type) where V.Scalar == Float {
        base = UnsafeRawPointer(panel)
        stride = 2 * V.scalarCount * 4
    }
    @inline(__always) func row(_ p: Int) -> UnsafeRawPointer { base + p &* stride }
}

/// A panel read in place: row p at origin + rowOff[p] floats (a contiguous run of the input).
struct InPlaceRows: PanelRows {
    let origin: UnsafeRawPointer, rowOff: UnsafePointer<Int>
    init(_ origin: UnsafePointer<Float>, _ rowOff: UnsafePointer<Int>) {
        self.origin = UnsafeRawPointer(origin)
        self.rowOff = rowOff
    }
    @inline(__always) func row(_ p: Int) -> UnsafeRawPointer { origin + rowOff[p] &* 4 }
}

/// B as a row-major matrix [k, n] with row stride `ldb`, or its transpose ([n, k]) when `trans`.
struct StridedB: PanelSourceB, @unchecked Sendable {
    let b: UnsafePointer<Float>
    let ldb: Int
    let trans: Bool

    func pack<V: SIMD>(_ v: V.Type, into dst: UnsafeMutablePointer<Float>, p0: Int, kc: Int, j0: Int, nc: Int)
    where V.Scalar == Float {
        let w = V.scalarCount, nr = 2 * w
        var panel = dst
        var j = j0
        while j < j0 + nc {
            let width = min(nr, j0 + nc - j)
            if trans && width == 32 && nr == 32 && FLMM_HAS_PACK_BT32 != 0 && 15 * ldb < Int(Int32.max) / 4 {
                // A full panel with AVX-512: 16-lane gathers (32-bit offsets jj·ldb).
                flmm_pack_bt32(b + j * ldb + p0, ldb, kc, panel)
            } else if trans {
                // B(p, j) = b[j·ldb + p]: read each column contiguously.
                for jj in 0..<width {
                    let src = b + (j + jj) * ldb + p0
                    for p in 0..<kc { panel[p * nr + jj] = src[p] }
                }
                if width < nr {
                    for p in 0..<kc { (panel + p * nr + width).update(repeating: 0, count: nr - width) }
                }
            } else if width == nr {
                var src = UnsafeRawPointer(b + p0 * ldb + j)
                let d = UnsafeMutableRawPointer(panel)
                for p in 0..<kc {
                    d.storeBytes(of: src.loadUnaligned(as: V.self), toByteOffset: p * nr * 4, as: V.self)
                    d.storeBytes(of: src.loadUnaligned(fromByteOffset: w * 4, as: V.self),
                                 toByteOffset: p * nr * 4 + w * 4, as: V.self)
                    src += ldb * 4
                }
            } else {
                for p in 0..<kc {
                    let d = panel + p * nr
                    d.update(from: b + (p0 + p) * ldb + j, count: width)
                    (d + width).update(repeating: 0, count: nr - width)
                }
            }
            panel += kc * nr
            j += nr
        }
    }
}

/// B(p, j) = base[rowOff[p] + colOff[j]]: a convolution's im2col matrix read from the (padded)
/// input. Runs of W columns with consecutive offsets are copied as vectors.
struct MappedB: PanelSourceB, @unchecked Sendable {
    let base: UnsafePointer<Float>
    let rowOff: UnsafePointer<Int>
    let colOff: UnsafePointer<Int>

    func inPlacePanel(j: Int, nr: Int) -> (origin: UnsafePointer<Float>, rowOff: UnsafePointer<Int>)? {
        colOff[j + nr - 1] - colOff[j] == nr - 1 ? (base + colOff[j], rowOff) : nil
    }

    func pack<V: SIMD>(_ v: V.Type, into dst: UnsafeMutablePointer<Float>, p0: Int, kc: Int, j0: Int, nc: Int)
    where V.Scalar == Float {
        let w = V.scalarCount, nr = 2 * w
        var panel = dst
        var j = j0
        while j < j0 + nc {
            let width = min(nr, j0 + nc - j)
            // Each half (W columns) is either a contiguous run of the input or gathered.
            let run0 = width >= w && colOff[j + w - 1] - colOff[j] == w - 1
            let run1 = width == nr && colOff[j + nr - 1] - colOff[j + w] == w - 1
            let d = UnsafeMutableRawPointer(panel)
            for p in 0..<kc {
                let row = base + rowOff[p0 + p]
                let dp = panel + p * nr
                if run0 {
                    d.storeBytes(of: UnsafeRawPointer(row + colOff[j]).loadUnaligned(as: V.self),
                                 toByteOffset: p * nr * 4, as: V.self)
                } else {
                    for t in 0..<min(w, width) { dp[t] = row[colOff[j + t]] }
                }
                if run1 {
                    d.storeBytes(of: UnsafeRawPointer(row + colOff[j + w]).loadUnaligned(as: V.self),
                                 toByteOffset: p * nr * 4 + w * 4, as: V.self)
                } else {
                    for t in min(w, width)..<width { dp[t] = row[colOff[j + t]] }
                }
                if width < nr { (dp + width).update(repeating: 0, count: nr - width) }
            }
            panel += kc * nr
            j += nr
        }
    }
}

/// Reusable 64-byte aligned float buffers for packing, so that a GEMM neither maps nor faults
/// in fresh pages on every call. Each buffer has one user at a time; the pool keeps at most
/// `maxBuffers` idle buffers (the largest ones).
final class ScratchPool: @unchecked Sendable {
    static let shared = ScratchPool()
    static let maxBuffers = 16

    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Idle buffers and their capacities (floats).
    private var idle: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    /// Capacities of the buffers in use, by address.
    private var inUse: [UnsafeMutablePointer<Float>: Int] = [:]

    init() {
        mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// The smallest idle buffer of at least `count` floats, or a new one.
    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        let need = max(count, 16)
        let found: UnsafeMutablePointer<Float>? = locked {
            var best: Int?
            for (i, b) in idle.enumerated() where b.capacity >= need {
                if best == nil || b.capacity < idle[best!].capacity { best = i }
            }
            guard let best else { return nil }
            let b = idle.remove(at: best)
            inUse[b.pointer] = b.capacity
            return b.pointer
        }
        if let found { return found }
        let p = UnsafeMutableRawPointer.allocate(byteCount: need * 4, alignment: 64).bindMemory(to: Float.self, capacity: need)
        locked { inUse[p] = need }
        return p
    }

    /// Puts a buffer from `take` back; frees the smallest idle buffer beyond `maxBuffers`.
    func give(_ p: UnsafeMutablePointer<Float>) {
        let drop: UnsafeMutablePointer<Float>? = locked {
            guard let capacity = inUse.removeValue(forKey: p) else {
                preconditionFailure("ScratchPool.give: buffer was not taken from the pool")
            }
            idle.append((p, capacity))
            guard idle.count > Self.maxBuffers else { return nil }
            var smallest = 0
            for i in idle.indices where idle[i].capacity < idle[smallest].capacity { smallest = i }
            return idle.remove(at: smallest).pointer
        }
        drop?.deallocate()
    }
}
