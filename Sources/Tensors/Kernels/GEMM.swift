// General matrix multiply, C = A·B (+ C), row-major: the entry point every op calls, the naive
// reference kernels, and the backend switch (our own packed kernels or OpenBLAS).
//
// Legend: M rows of C, N columns of C, K the reduction length; lda/ldb/ldc row strides.
//
// Determinism: every C[i,j] is computed as c = fma(a[i,k], b[k,j], c) for k = 0, 1, …, K-1
// in that order, starting from 0 (or from C when accumulating). Any kernel that keeps this
// order gives the same bits, whatever its tiling, SIMD width or thread count: the packed
// kernels (GEMMPacked.swift) are bitwise equal to `gemmReference`, on any thread count.
// OpenBLAS (`Backend.openblas`) does not keep this order; its bits depend on its core type
// and thread count.

import CBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which GEMM `Kernels.gemm` runs. `FLMM_BACKEND=openblas|own` sets the default (own).
public enum Backend: String, Sendable, CaseIterable {
    /// Our packed SIMD kernels: deterministic, bitwise equal to `Kernels.gemmReference`.
    case own
    /// OpenBLAS's `cblas_sgemm`, on `Parallel.threads` threads. Not bitwise reproducible.
    case openblas

    nonisolated(unsafe) private static var _current: Backend = fromEnvironment()

    /// The backend used by every Float GEMM.
    public static var current: Backend {
        get { _current }
        set { _current = newValue }
    }

    /// `FLMM_BACKEND` if it names a backend, else `.own`.
    public static func fromEnvironment() -> Backend {
        guard let s = getenv("FLMM_BACKEND") else { return .own }
        let name = String(cString: s).lowercased()
        if let b = Backend(rawValue: name) { return b }
        precondition(name.isEmpty, "FLMM_BACKEND: '\(name)' is not one of own, openblas")
        return .own
    }

    /// OpenBLAS's thread count as last set by this toolkit (0: never set).
    nonisolated(unsafe) private static var openblasThreads = 0

    /// Sets OpenBLAS's thread count to `n` if it differs from what was last set.
    static func syncOpenBLASThreads(_ n: Int) {
        if openblasThreads != n {
            openblas_set_num_threads(Int32(n))
            openblasThreads = n
        }
    }

    /// The core type OpenBLAS chose (e.g. "Haswell", "Cooperlake"), for benchmark reports.
    public static var openblasCoreName: String {
        guard let p = openblas_get_corename() else { return "?" }
        return String(cString: p)
    }
}

extension Kernels {
    /// Naive reference GEMM, generic over the scalar. A is [m, k] (or [k, m] when `transA`),
    /// B is [k, n] (or [n, k] when `transB`), C is [m, n]; leading dimensions are row strides.
    public static func gemmReference<T: BinaryFloatingPoint>(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
        c: UnsafeMutablePointer<T>, ldc: Int, accumulate: Bool
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var s: T = accumulate ? c[i * ldc + j] : 0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    s = s.addingProduct(av, bv)
                }
                c[i * ldc + j] = s
            }
        }
    }

    /// Float GEMM used by every op (matmul, linear, conv). Same contract as `gemmReference`;
    /// with `Backend.own` (the default) the result is bitwise equal to it, on any thread count.
    /// Runs on `Parallel.threads` threads.
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool
    ) {
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
             c: c, ldc: ldc, accumulate: accumulate, threads: Parallel.threads)
    }

    /// `gemm` on at most `threads` threads (1 inside a parallel loop over independent GEMMs).
    /// With OpenBLAS, `threads` sets OpenBLAS's own thread count.
    public static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int
    ) {
        checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
        if m == 0 || n == 0 { return }
        switch Backend.current {
        case .own:
            GEMMPacked.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda,
                            b: b, ldb: ldb, c: c, ldc: ldc, accumulate: accumulate, threads: threads)
        case .openblas:
            if k == 0 {
                if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
                return
            }
            Backend.syncOpenBLASThreads(max(1, threads))
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb),
                        accumulate ? 1 : 0, c, Int32(ldc))
        }
    }

    /// C[m, n] = D + A · B (D [m, n] with C's row stride `ldc`): each element is the sum of
    /// `gemm` (from 0, in k order, or from `bias` [n] as `gemmRowBias`) added to D's element
    /// afterwards, so the same bits as `gemm` followed by an elementwise D + C, without writing
    /// the product and reading it back (the backward's gradient accumulation, `Tensor.backward`;
    /// a residual after a linear layer, `linear(adding:)`). Our kernels add D as each register
    /// tile is stored; OpenBLAS's product is added in a second pass.
    public static func gemmAdding(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        bias: UnsafePointer<Float>? = nil, d: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
        if m == 0 || n == 0 { return }
        switch Backend.current {
        case .own:
            GEMMPacked.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                            c: c, ldc: ldc, accumulate: false, threads: Parallel.threads, bias: bias, addend: d)
        case .openblas:
            if let bias { for r in 0..<m { (c + r * ldc).update(from: bias, count: n) } }
            gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                 c: c, ldc: ldc, accumulate: bias != nil)
            GEMMPacked.addTile(d, ldc, to: c, ldc, m, n)
        }
    }

    /// Our packed GEMM with an explicit SIMD width (16, 8 or 4 floats), whatever `Backend.current`:
    /// lets tests and benchmarks run the narrower kernels of other machines on this one.
    /// `aInPlace` forces A to be read unpacked (true) or packed (false); nil lets the kernel
    /// choose. Every choice gives the same bits. `bias` [n] (with `accumulate` false): every row
    /// of C starts from it.
    public static func gemmPacked(
        width: Int, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int = Parallel.threads,
        aInPlace: Bool? = nil, bias: UnsafePointer<Float>? = nil
    ) {
        precondition([16, 8, 4].contains(width), "gemmPacked: width \(width) is not 16, 8 or 4")
        checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
        if m == 0 || n == 0 { return }
        GEMMPacked.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                        c: c, ldc: ldc, accumulate: accumulate, threads: threads, width: width, aInPlace: aInPlace,
                        bias: bias)
    }

    /// The SIMD width (floats) of our kernels in this build: 16 (AVX-512), 8 (AVX2) or 4.
    public static var gemmSIMDWidth: Int { GEMMPacked.simdFloats }

    /// GEMM for any scalar: `gemm` (the fast kernels, current backend) for Float, `gemmReference`
    /// otherwise (Double, for finite-difference checks of the ops built on GEMM).
    @inlinable
    public static func gemmGeneric<T: BinaryFloatingPoint>(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
        c: UnsafeMutablePointer<T>, ldc: Int, accumulate: Bool, threads: Int = Parallel.threads
    ) {
        if T.self == Float.self {
            gemm(transA: transA, transB: transB, m: m, n: n, k: k,
                 a: UnsafeRawPointer(a).assumingMemoryBound(to: Float.self), lda: lda,
                 b: UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), ldb: ldb,
                 c: UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc: ldc,
                 accumulate: accumulate, threads: threads)
        } else {
            gemmReference(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                          c: c, ldc: ldc, accumulate: accumulate)
        }
    }

    /// C[m, n] = bias + A · B with every row starting from `bias` [n] (a linear layer). Float
    /// with our kernels: the accumulators start from the bias, no pass over C; otherwise C is
    /// filled with the bias and the GEMM accumulates onto it. The same bits either way.
    static func gemmRowBias<T: BinaryFloatingPoint>(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
        c: UnsafeMutablePointer<T>, ldc: Int, bias: UnsafePointer<T>
    ) {
        if T.self == Float.self && Backend.current == .own {
            checkGEMM(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc)
            if m == 0 || n == 0 { return }
            GEMMPacked.gemm(transA: transA, transB: transB, m: m, n: n, k: k,
                            a: UnsafeRawPointer(a).assumingMemoryBound(to: Float.self), lda: lda,
                            b: UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), ldb: ldb,
                            c: UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc: ldc,
                            accumulate: false, threads: Parallel.threads,
                            bias: UnsafeRawPointer(bias).assumingMemoryBound(to: Float.self))
        } else {
            for r in 0..<m { (c + r * ldc).update(from: bias, count: n) }
            gemmGeneric(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                        c: c, ldc: ldc, accumulate: true)
        }
    }

    /// C[m, n] (+)= A · B where B(p, j) = base[rowOff[p] + colOff[j]] is read through an index
    /// map (a convolution's im2col matrix, never stored) and A is [m, k] (or [k, m] when `transA`).
    /// Same summation order as `gemmReference`. Float: our packed kernels (bitwise equal to
    /// `gemmMappedBReference`), or with `Backend.openblas` the materialised matrix and
    /// `cblas_sgemm`. Other scalars: the reference.
    public static func gemmMappedB<T: BinaryFloatingPoint>(
        m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int, transA: Bool,
        base: UnsafePointer<T>, rowOff: UnsafePointer<Int>, colOff: UnsafePointer<Int>,
        c: UnsafeMutablePointer<T>, ldc: Int, accumulate: Bool, threads: Int = Parallel.threads
    ) {
        checkGEMM(transA: transA, transB: false, m: m, n: n, k: k, lda: lda, ldb: max(n, 1), ldc: ldc)
        guard T.self == Float.self else {
            gemmMappedBReference(m: m, n: n, k: k, a: a, lda: lda, transA: transA, base: base, rowOff: rowOff,
                                 colOff: colOff, c: c, ldc: ldc, accumulate: accumulate)
            return
        }
        let af = UnsafeRawPointer(a).assumingMemoryBound(to: Float.self)
        let bf = UnsafeRawPointer(base).assumingMemoryBound(to: Float.self)
        let cf = UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self)
        switch Backend.current {
        case .own:
            GEMMPacked.gemmMappedB(m: m, n: n, k: k, a: af, lda: lda, transA: transA, base: bf, rowOff: rowOff,
                                   colOff: colOff, c: cf, ldc: ldc, accumulate: accumulate, threads: threads)
        case .openblas:
            var bm = [Float](repeating: 0, count: k * n)
            for p in 0..<k { for j in 0..<n { bm[p * n + j] = bf[rowOff[p] + colOff[j]] } }
            gemm(transA: transA, transB: false, m: m, n: n, k: k, a: af, lda: lda, b: bm, ldb: max(n, 1),
                 c: cf, ldc: ldc, accumulate: accumulate, threads: threads)
        }
    }

    /// C[m, n] (+)= A · B where A(i, p) = base[rowOff[i] + colOff[p]] is read through an index map
    /// and B is [k, n] (or [n, k] when `transB`). See `gemmMappedB`.
    public static func gemmMappedA<T: BinaryFloatingPoint>(
        m: Int, n: Int, k: Int, base: UnsafePointer<T>, rowOff: UnsafePointer<Int>, colOff: UnsafePointer<Int>,
        b: UnsafePointer<T>, ldb: Int, transB: Bool,
        c: UnsafeMutablePointer<T>, ldc: Int, accumulate: Bool, threads: Int = Parallel.threads
    ) {
        checkGEMM(transA: false, transB: transB, m: m, n: n, k: k, lda: max(k, 1), ldb: ldb, ldc: ldc)
        guard T.self == Float.self else {
            gemmMappedAReference(m: m, n: n, k: k, base: base, rowOff: rowOff, colOff: colOff, b: b, ldb: ldb,
                                 transB: transB, c: c, ldc: ldc, accumulate: accumulate)
            return
        }
        let basef = UnsafeRawPointer(base).assumingMemoryBound(to: Float.self)
        let bf = UnsafeRawPointer(b).assumingMemoryBound(to: Float.self)
        let cf = UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self)
        switch Backend.current {
        case .own:
            GEMMPacked.gemmMappedA(m: m, n: n, k: k, base: basef, rowOff: rowOff, colOff: colOff, b: bf, ldb: ldb,
                                   transB: transB, c: cf, ldc: ldc, accumulate: accumulate, threads: threads)
        case .openblas:
            var am = [Float](repeating: 0, count: m * k)
            for i in 0..<m { for p in 0..<k { am[i * k + p] = basef[rowOff[i] + colOff[p]] } }
            gemm(transA: false, transB: transB, m: m, n: n, k: k, a: am, lda: max(k, 1), b: bf, ldb: ldb,
                 c: cf, ldc: ldc, accumulate: accumulate, threads: threads)
        }
    }

    /// Naive `gemmMappedB`: for each C[i, j], fma over p in order.
    public static func gemmMappedBReference<T: BinaryFloatingPoint>(
        m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int, transA: Bool,
        base: UnsafePointer<T>, rowOff: UnsafePointer<Int>, colOff: UnsafePointer<Int>,
        c: UnsafeMutablePointer<T>, ldc: Int, accumulate: Bool
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var s: T = accumulate ? c[i * ldc + j] : 0
                for p in 0..<k {
                    s = s.addingProduct(transA ? a[p * lda + i] : a[i * lda + p], base[rowOff[p] + colOff[j]])
                }
                c[i * ldc + j] = s
            }
        }
    }

    /// Naive `gemmMappedA`: for each C[i, j], fma over p in order.
    public static func gemmMappedAReference<T: BinaryFloatingPoint>(
        m: Int, n: Int, k: Int, base: UnsafePointer<T>, rowOff: UnsafePointer<Int>, colOff: UnsafePointer<Int>,
        b: UnsafePointer<T>, ldb: Int, transB: Bool,
        c: UnsafeMutablePointer<T>, ldc: Int, accumulate: Bool
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var s: T = accumulate ? c[i * ldc + j] : 0
                for p in 0..<k {
                    s = s.addingProduct(base[rowOff[i] + colOff[p]], transB ? b[j * ldb + p] : b[p * ldb + j])
                }
                c[i * ldc + j] = s
            }
        }
    }

    /// Checks sizes and leading dimensions, naming the op and the shapes.
    static func checkGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m \(m), n \(n), k \(k)")
        let aCols = transA ? m : k, bCols = transB ? k : n
        precondition(lda >= max(aCols, 1), "gemm: lda \(lda) < \(aCols) columns of A (\(transA ? "[\(k), \(m)]" : "[\(m), \(k)]"))")
        precondition(ldb >= max(bCols, 1), "gemm: ldb \(ldb) < \(bCols) columns of B (\(transB ? "[\(n), \(k)]" : "[\(k), \(n)]"))")
        precondition(ldc >= max(n, 1), "gemm: ldc \(ldc) < \(n) columns of C [\(m), \(n)]")
    }
}
