import XCTest
import Tensors

/// Our packed GEMM against the naive reference: bitwise, for odd shapes, transposes,
/// accumulation, padded leading dimensions, every SIMD width, and 1 vs 2 threads.
final class GEMMTests: XCTestCase {
    /// Random normal floats from a fixed Philox stream.
    static func randn(_ count: Int, seed: UInt64) -> [Float] {
        var rng = PhiloxRNG(seed: seed)
        return (0..<count).map { _ in rng.nextNormal() }
    }

    static func bits(_ x: [Float]) -> [UInt32] { x.map(\.bitPattern) }

    /// Runs one GEMM with our kernels (given width) and the reference; returns (ours, reference).
    static func run(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, accumulate: Bool,
                    padA: Int = 0, padB: Int = 0, padC: Int = 0, width: Int? = nil, threads: Int = 1,
                    aInPlace: Bool? = nil, seed: UInt64 = 1, reference: Bool = true) -> ([Float], [Float]) {
        let lda = max(transA ? m : k, 1) + padA, ldb = max(transB ? k : n, 1) + padB, ldc = max(n, 1) + padC
        let a = randn(max((transA ? k : m) * lda, 1), seed: seed)
        let b = randn(max((transB ? n : k) * ldb, 1), seed: seed + 1)
        let c0 = randn(max(m * ldc, 1), seed: seed + 2)
        var ours = c0, ref = c0
        ours.withUnsafeMutableBufferPointer { c in
            if width != nil || aInPlace != nil {
                Kernels.gemmPacked(width: width ?? Kernels.gemmSIMDWidth, transA: transA, transB: transB, m: m, n: n,
                                   k: k, a: a, lda: lda, b: b, ldb: ldb, c: c.baseAddress!, ldc: ldc,
                                   accumulate: accumulate, threads: threads, aInPlace: aInPlace)
            } else {
                Kernels.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                             c: c.baseAddress!, ldc: ldc, accumulate: accumulate, threads: threads)
            }
        }
        if !reference { return (ours, []) }
        ref.withUnsafeMutableBufferPointer { c in
            Kernels.gemmReference(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                                  c: c.baseAddress!, ldc: ldc, accumulate: accumulate)
        }
        return (ours, ref)
    }

    static let shapes: [(Int, Int, Int)] = [
        (1, 1, 1), (1, 37, 5), (5, 1, 9), (6, 32, 8), (7, 33, 3), (13, 65, 17), (1, 100, 300),
        (150, 70, 260), (31, 47, 513), (145, 31, 2), (12, 530, 7), (6, 16, 1), (2, 3, 0),
    ]

    func testBitwiseEqualToReferenceOddShapes() {
        var cases = 0
        for (m, n, k) in Self.shapes {
            for transA in [false, true] {
                for transB in [false, true] {
                    for accumulate in [false, true] {
                        let (ours, ref) = Self.run(m: m, n: n, k: k, transA: transA, transB: transB,
                                                   accumulate: accumulate, seed: UInt64(m * 1000 + n + k))
                        XCTAssertEqual(Self.bits(ours), Self.bits(ref),
                                       "m \(m) n \(n) k \(k) transA \(transA) transB \(transB) acc \(accumulate)")
                        cases += 1
                    }
                }
            }
        }
        XCTAssertEqual(cases, Self.shapes.count * 8)
    }

    /// A read in place (row panels `RowsA`, transposed `ColumnsA`, a last partial panel packed)
    /// and A packed give the reference bits, whatever the automatic choice would be: every odd
    /// shape, both transposes, accumulation, padded leading dimensions, and 2 threads splitting
    /// rows (m > n) or columns.
    func testAReadInPlaceOrPackedBitwiseEqual() {
        var cases = 0
        let shapes = Self.shapes + [(150, 400, 70), (600, 96, 300), (96, 300, 600)]
        for (m, n, k) in shapes {
            for transA in [false, true] {
                for inPlace in [false, true] {
                    let seed = UInt64(7 * m + n + k)
                    let (ours, ref) = Self.run(m: m, n: n, k: k, transA: transA, transB: !transA, accumulate: transA,
                                               padA: 3, padC: 1, threads: 2, aInPlace: inPlace, seed: seed)
                    XCTAssertEqual(Self.bits(ours), Self.bits(ref),
                                   "aInPlace \(inPlace): m \(m) n \(n) k \(k) transA \(transA)")
                    cases += 1
                }
            }
        }
        XCTAssertEqual(cases, shapes.count * 4)
    }

    /// Rows started from a bias (a linear layer) give the bits of C filled with the bias and
    /// accumulated onto: odd shapes (partial tiles and panels, k past one block), both
    /// transposes, A in place or packed, 1 and 2 threads; and k = 0 leaves the bias.
    func testBiasStartBitwiseEqualToFilledC() {
        for (m, n, k) in Self.shapes + [(150, 400, 300), (600, 96, 300)] {
            let bias = Self.randn(n, seed: UInt64(m + 3 * n + k))
            for transA in [false, true] {
                for threads in [1, 2] {
                    let lda = max(transA ? m : k, 1), ldb = max(n, 1), ldc = max(n, 1)
                    let a = Self.randn(max((transA ? k : m) * lda, 1), seed: 5), b = Self.randn(max(k * ldb, 1), seed: 6)
                    var ref = [Float](repeating: 0, count: max(m * ldc, 1))
                    for i in 0..<m { for j in 0..<n { ref[i * ldc + j] = bias[j] } }
                    ref.withUnsafeMutableBufferPointer { c in
                        Kernels.gemmReference(transA: transA, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b,
                                              ldb: ldb, c: c.baseAddress!, ldc: ldc, accumulate: true)
                    }
                    for inPlace in [false, true] {
                        var ours = [Float](repeating: .nan, count: max(m * ldc, 1))
                        ours.withUnsafeMutableBufferPointer { c in
                            bias.withUnsafeBufferPointer { pb in
                                Kernels.gemmPacked(width: Kernels.gemmSIMDWidth, transA: transA, transB: false, m: m,
                                                   n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c.baseAddress!,
                                                   ldc: ldc, accumulate: false, threads: threads, aInPlace: inPlace,
                                                   bias: pb.baseAddress!)
                            }
                        }
                        XCTAssertEqual(Self.bits(Array(ours.prefix(m * ldc))), Self.bits(Array(ref.prefix(m * ldc))),
                                       "bias: m \(m) n \(n) k \(k) transA \(transA) inPlace \(inPlace) threads \(threads)")
                    }
                }
            }
        }
    }

    /// D + A · B (`gemmAdding`: the backward adds a gradient gathered so far as the tiles are
    /// stored) gives the bits of the reference product with D added afterwards: odd shapes
    /// (partial tiles and panels, k past one block, k = 0, the few-rows path), both transposes
    /// of A, 1 and 2 threads.
    func testAddendBitwiseEqualToProductThenAdd() {
        for (m, n, k) in Self.shapes + [(150, 400, 300), (600, 96, 300), (40, 600, 700)] {
            for transA in [false, true] {
                let lda = max(transA ? m : k, 1), ldb = max(n, 1), ldc = max(n, 1)
                let a = Self.randn(max((transA ? k : m) * lda, 1), seed: 11), b = Self.randn(max(k * ldb, 1), seed: 12)
                let d = Self.randn(max(m * ldc, 1), seed: 13)
                var ref = [Float](repeating: 0, count: max(m * ldc, 1))
                ref.withUnsafeMutableBufferPointer { c in
                    Kernels.gemmReference(transA: transA, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b,
                                          ldb: ldb, c: c.baseAddress!, ldc: ldc, accumulate: false)
                }
                for i in 0..<(m * n) { ref[i] = d[i] + ref[i] }
                for threads in [1, 2] {
                    let saved = Parallel.threads
                    Parallel.threads = threads
                    defer { Parallel.threads = saved }
                    var ours = [Float](repeating: .nan, count: max(m * ldc, 1))
                    ours.withUnsafeMutableBufferPointer { c in
                        Kernels.gemmAdding(transA: transA, transB: false, m: m, n: n, k: k, a: a, lda: lda, b: b,
                                           ldb: ldb, d: d, c: c.baseAddress!, ldc: ldc)
                    }
                    XCTAssertEqual(Self.bits(Array(ours.prefix(m * n))), Self.bits(Array(ref.prefix(m * n))),
                                   "addend: m \(m) n \(n) k \(k) transA \(transA) threads \(threads)")
                }
            }
        }
    }

    /// At most 16 rows of C (the few-rows path with 16-lane vectors: rows in accumulators, B
    /// read in place or transposed 16 columns at a time): the reference bits for every row
    /// count class (1–4, 5–8, 9–12, 13–16), partial and whole 16-column blocks, k below, at and
    /// past a 16-step transpose and past one 512 block, both transposes, accumulation, padded
    /// leading dimensions, a bias start, and columns split over 2 threads; ±inf and NaN in A.
    func testFewRowsBitwiseEqualToReference() {
        var cases = 0
        for m in [1, 4, 5, 9, 12, 13, 16] {
            for (n, k) in [(1, 1), (15, 17), (16, 16), (40, 33), (33, 600)] {
                for transA in [false, true] {
                    for transB in [false, true] {
                        let accumulate = (m + n + k) % 2 == 0
                        let (ours, ref) = Self.run(m: m, n: n, k: k, transA: transA, transB: transB,
                                                   accumulate: accumulate, padA: 1, padB: 2, padC: 3,
                                                   seed: UInt64(97 * m + n + k))
                        XCTAssertEqual(Self.bits(ours), Self.bits(ref),
                                       "m \(m) n \(n) k \(k) transA \(transA) transB \(transB) acc \(accumulate)")
                        cases += 1
                    }
                }
            }
        }
        XCTAssertEqual(cases, 7 * 5 * 4)
        // Columns split over 2 threads (16.8 MFLOP): the 1-thread bits and the reference's.
        let (one, ref) = Self.run(m: 16, n: 4096, k: 128, transA: false, transB: true, accumulate: false, threads: 1)
        let (two, _) = Self.run(m: 16, n: 4096, k: 128, transA: false, transB: true, accumulate: false, threads: 2,
                                reference: false)
        XCTAssertEqual(Self.bits(one), Self.bits(ref))
        XCTAssertEqual(Self.bits(two), Self.bits(ref))
        // A bias start (a linear layer on 12 tokens), and non-finite values in A.
        let (m, n, k) = (12, 50, 70)
        var a = Self.randn(m * k, seed: 41)
        a[3] = .infinity; a[k + 5] = -.infinity; a[2 * k + 7] = .nan
        let w = Self.randn(n * k, seed: 42), bias = Self.randn(n, seed: 43)
        var ref2 = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { ref2[i * n + j] = bias[j] } }
        ref2.withUnsafeMutableBufferPointer { c in
            Kernels.gemmReference(transA: false, transB: true, m: m, n: n, k: k, a: a, lda: k, b: w, ldb: k,
                                  c: c.baseAddress!, ldc: n, accumulate: true)
        }
        let ours = Kernels.linear(a, rows: m, weight: w, bias: bias, inFeatures: k, outFeatures: n)
        XCTAssertEqual(Self.bits(ours), Self.bits(ref2))
        XCTAssertTrue(ours[0].isInfinite && ours[n].isInfinite && ours[2 * n].isNaN && ours[3 * n].isFinite)
    }

    /// GEMMs that are mostly traffic and take a second thread for it (`GEMMPacked.grain` counts
    /// 8 flops per byte): SAM's token MLP on 12 tokens (a 2 MB weight; few-rows path, 35 and 4
    /// blocks per thread at least, of 128 and 16) and its gradients (a column split of 8 panels,
    /// grain 2; a row split of 342 panels with k = 12, grain 94). Each on 1 and 2 threads gives
    /// the reference's bits.
    func testTrafficBoundShapesOnTwoThreadsMatchReference() {
        for (m, n, k, transA, transB) in [(12, 2048, 256, false, true), (12, 256, 2048, false, true),
                                          (12, 256, 2048, false, false), (2048, 256, 12, true, false)] {
            let (one, ref) = Self.run(m: m, n: n, k: k, transA: transA, transB: transB, accumulate: false, threads: 1)
            let (two, _) = Self.run(m: m, n: n, k: k, transA: transA, transB: transB, accumulate: false, threads: 2,
                                    reference: false)
            XCTAssertEqual(Self.bits(one), Self.bits(ref), "m \(m) n \(n) k \(k) 1 thread")
            XCTAssertEqual(Self.bits(two), Self.bits(ref), "m \(m) n \(n) k \(k) 2 threads")
        }
    }

    /// At most 16 rows and at most 16 columns with a long k (an attention head's P·V or dS·K:
    /// 12 queries, 16 channels, 4096 keys): the few-rows path reads a row-major B in place (or
    /// copies a partial block), with B's rows `ldb` apart; the reference's bits.
    func testNarrowFewRowsLongKMatchReference() {
        for (m, n, k) in [(12, 16, 4096), (5, 16, 700), (12, 7, 1030)] {
            for transA in [false, true] {
                let (ours, ref) = Self.run(m: m, n: n, k: k, transA: transA, transB: false, accumulate: k % 2 == 0,
                                           padB: 112, seed: UInt64(m + n + k))
                XCTAssertEqual(Self.bits(ours), Self.bits(ref), "m \(m) n \(n) k \(k) transA \(transA)")
            }
        }
    }

    /// A too large to pack whole (m·k > 4M floats on one thread): A packed per (KC, MC) block.
    func testBlockwisePackedA() {
        let (ours, ref) = Self.run(m: 2100, n: 7, k: 2001, transA: false, transB: true, accumulate: true,
                                   aInPlace: false)
        XCTAssertEqual(Self.bits(ours), Self.bits(ref))
    }

    func testPaddedLeadingDimensions() {
        for (m, n, k) in [(7, 45, 19), (20, 33, 300)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let (ours, ref) = Self.run(m: m, n: n, k: k, transA: transA, transB: transB, accumulate: true,
                                               padA: 3, padB: 5, padC: 2)
                    XCTAssertEqual(Self.bits(ours), Self.bits(ref), "lda>k: m \(m) n \(n) k \(k) \(transA) \(transB)")
                }
            }
        }
    }

    /// The narrower kernels of AVX2 / SSE machines give the same bits (they run here too).
    func testEverySIMDWidthBitwiseEqual() {
        for width in [16, 8, 4] {
            for (m, n, k) in [(13, 65, 17), (150, 70, 260), (1, 9, 3)] {
                for transA in [false, true] {
                    let (ours, ref) = Self.run(m: m, n: n, k: k, transA: transA, transB: !transA, accumulate: transA,
                                               width: width)
                    XCTAssertEqual(Self.bits(ours), Self.bits(ref), "width \(width) m \(m) n \(n) k \(k)")
                }
            }
        }
    }

    /// Splitting columns (n >= m) and rows (m > n) over 2 threads gives the 1-thread bits.
    func testBitwiseEqualAcrossThreadCounts() {
        for (m, n, k) in [(96, 400, 200), (600, 96, 300), (257, 255, 129)] {
            for transB in [false, true] {
                let (one, ref) = Self.run(m: m, n: n, k: k, transA: false, transB: transB, accumulate: false,
                                          threads: 1, reference: !transB)
                let (two, _) = Self.run(m: m, n: n, k: k, transA: false, transB: transB, accumulate: false,
                                        threads: 2, reference: false)
                XCTAssertEqual(Self.bits(one), Self.bits(two), "threads 1 vs 2: m \(m) n \(n) k \(k)")
                if !transB { XCTAssertEqual(Self.bits(one), Self.bits(ref), "vs reference: m \(m) n \(n) k \(k)") }
            }
        }
    }

    /// A hand-computed product, including k = 0 without accumulation (C becomes 0).
    func testSmallHandComputed() {
        let a: [Float] = [1, 2, 3, 4, 5, 6]          // [2, 3]
        let b: [Float] = [7, 8, 9, 10, 11, 12]       // [3, 2]
        var c = [Float](repeating: -1, count: 4)
        Kernels.gemm(transA: false, transB: false, m: 2, n: 2, k: 3, a: a, lda: 3, b: b, ldb: 2,
                     c: &c, ldc: 2, accumulate: false)
        XCTAssertEqual(c, [58, 64, 139, 154])
        Kernels.gemm(transA: false, transB: false, m: 2, n: 2, k: 3, a: a, lda: 3, b: b, ldb: 2,
                     c: &c, ldc: 2, accumulate: true)
        XCTAssertEqual(c, [116, 128, 278, 308])
        Kernels.gemm(transA: false, transB: false, m: 2, n: 2, k: 0, a: a, lda: 3, b: b, ldb: 2,
                     c: &c, ldc: 2, accumulate: false)
        XCTAssertEqual(c, [0, 0, 0, 0])
    }

    /// The index-mapped variants (used by the convolutions) against their references.
    func testMappedVariantsBitwiseEqualToReference() {
        let baseCount = 5000
        let base = Self.randn(baseCount, seed: 9)
        for (m, n, k) in [(7, 70, 300), (64, 33, 40), (1, 5, 3)] {
            var rng = PhiloxRNG(seed: UInt64(m + n + k))
            let rowOff = (0..<max(m, k)).map { _ in Int(rng.nextUInt32() % 2000) }
            let colOff = (0..<max(n, k)).map { _ in Int(rng.nextUInt32() % 3000) }
            let a = Self.randn(m * k, seed: 3), b = Self.randn(k * n, seed: 4)
            for threads in [1, 2] {
                var ours = Self.randn(m * n, seed: 5), ref = ours
                Kernels.gemmMappedB(m: m, n: n, k: k, a: a, lda: k, transA: false, base: base, rowOff: rowOff,
                                    colOff: colOff, c: &ours, ldc: n, accumulate: true, threads: threads)
                Kernels.gemmMappedBReference(m: m, n: n, k: k, a: a, lda: k, transA: false, base: base,
                                             rowOff: rowOff, colOff: colOff, c: &ref, ldc: n, accumulate: true)
                XCTAssertEqual(Self.bits(ours), Self.bits(ref), "mappedB m \(m) n \(n) k \(k)")

                var ours2 = [Float](repeating: 0, count: m * n), ref2 = ours2
                Kernels.gemmMappedA(m: m, n: n, k: k, base: base, rowOff: rowOff, colOff: colOff, b: b, ldb: n,
                                    transB: false, c: &ours2, ldc: n, accumulate: false, threads: threads)
                Kernels.gemmMappedAReference(m: m, n: n, k: k, base: base, rowOff: rowOff, colOff: colOff, b: b,
                                             ldb: n, transB: false, c: &ref2, ldc: n, accumulate: false)
                XCTAssertEqual(Self.bits(ours2), Self.bits(ref2), "mappedA m \(m) n \(n) k \(k)")
            }
        }
    }

    /// Contiguous runs of the mapped B (a stride-1 convolution's rows): a panel of 2W columns inside
    /// one run is read in place (`InPlaceRows`), one across the gap and the partial last panel
    /// are packed (vector copies where a half is a run). k = 300 spans two k blocks, so the row
    /// offsets of the second block are exercised too.
    func testMappedBContiguousRuns() {
        let w = 40
        for (k, accumulate) in [(30, false), (300, true)] {
            let base = Self.randn(w * (k + 2) + 64, seed: 11)
            let n = 2 * w
            let rowOff = (0..<k).map { $0 * w }
            let colOff = (0..<n).map { ($0 / w) * (w + 3) + $0 % w }   // two runs of 40 with a gap
            let a = Self.randn(9 * k, seed: 12)
            for threads in [1, 2] {
                var ours = Self.randn(9 * n, seed: 13), ref = ours
                Kernels.gemmMappedB(m: 9, n: n, k: k, a: a, lda: k, transA: false, base: base, rowOff: rowOff,
                                    colOff: colOff, c: &ours, ldc: n, accumulate: accumulate, threads: threads)
                Kernels.gemmMappedBReference(m: 9, n: n, k: k, a: a, lda: k, transA: false, base: base, rowOff: rowOff,
                                             colOff: colOff, c: &ref, ldc: n, accumulate: accumulate)
                XCTAssertEqual(Self.bits(ours), Self.bits(ref), "k \(k) threads \(threads)")
            }
        }
    }

    /// The OpenBLAS backend computes the same product (to rounding); `Backend.current` routes it.
    func testOpenBLASBackendAgrees() {
        let saved = Backend.current
        defer { Backend.current = saved }
        Backend.current = .openblas
        let (blas, ref) = Self.run(m: 37, n: 29, k: 41, transA: true, transB: false, accumulate: true, threads: 2)
        var num = 0.0, den = 0.0
        for (x, y) in zip(blas, ref) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
        let rel = (num / den).squareRoot()
        print("GEMMTests: OpenBLAS (\(Backend.openblasCoreName)) vs reference rel err \(rel)")
        XCTAssertLessThan(rel, 1e-6)
        XCTAssertGreaterThan(den, 0)
    }
}
