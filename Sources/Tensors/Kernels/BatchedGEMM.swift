// Batched matrix products with torch.matmul's batch broadcasting, and nn.Linear, forward and
// backward, generic over the scalar (Float: our GEMM; Double: the reference GEMM, for
// finite-difference checks of this very code).
//
// Legend: B batch (broadcast dims, flattened), N rows of A and C, K the reduction, M columns
// of B and C. A is [..., N, K], B is [..., K, M], C is [..., N, M].
//
// Determinism: each output matrix is one GEMM (k order). Batches run either one after the
// other on all threads, or in parallel on one thread each; either way each output element
// is computed by exactly one thread in the same order. Sums over broadcast batch dims go
// through `sumToShape` (Double, fixed order) or, when B has no batch dims, through the GEMM's
// own k order (the batch folded into K).

extension Kernels {
    /// The shape of torch.matmul(a, b) for inputs of rank >= 2: broadcast batch dims, then [N, M].
    public static func matmulShape(_ a: [Int], _ b: [Int]) -> [Int] {
        precondition(a.count >= 2 && b.count >= 2, "matmul: shapes \(a) and \(b) need rank >= 2")
        precondition(a[a.count - 1] == b[b.count - 2],
                     "matmul: inner sizes differ: \(a) @ \(b) (\(a[a.count - 1]) vs \(b[b.count - 2]))")
        let batch = broadcastShape(Array(a.dropLast(2)), Array(b.dropLast(2)), op: "matmul")
        return batch + [a[a.count - 2], b[b.count - 1]]
    }

    /// C[batch] = op(A[batch]) · op(B[batch]) for every index of `batch`, with A's and B's batch
    /// dims broadcast to `batch` (matrix strides 0 on broadcast dims). op(A) is [m, k] (A stored
    /// [k, m] when `transA`), op(B) is [k, n]. Returns C, [batch..., m, n] contiguous.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func batchedGEMM<T: BinaryFloatingPoint>(
        batch: [Int], a: [T], aBatch: [Int], transA: Bool, b: [T], bBatch: [Int], transB: Bool,
        m: Int, n: Int, k: Int
    ) -> [T] {
        let count = batch.product
        let sa = broadcastStrides(aBatch, to: batch), sb = broadcastStrides(bBatch, to: batch)
        let aOff = batchOffsets(batch, sa, matrix: m * k), bOff = batchOffsets(batch, sb, matrix: k * n)
        if count == 0 || m == 0 || n == 0 || k == 0 { return [T](repeating: 0, count: count * m * n) }
        let lda = transA ? m : k, ldb = transB ? k : n
        let flops = 2 * m * n * k
        // Many small products: one per thread at a time (Float, own backend), else one after the other.
        let parallelBatches = T.self == Float.self && Backend.current == .own
            && count > 1 && Parallel.threads > 1 && flops < (1 << 24)
        // Every product writes its whole C (no accumulation): no zero fill.
        return uninitializedArray(count * m * n) { cp in
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    if parallelBatches {
                        floatBatchesInParallel(
                            count: count, a: UnsafeRawPointer(pa.baseAddress!).assumingMemoryBound(to: Float.self),
                            aOff: aOff, lda: max(lda, 1), transA: transA,
                            b: UnsafeRawPointer(pb.baseAddress!).assumingMemoryBound(to: Float.self),
                            bOff: bOff, ldb: max(ldb, 1), transB: transB,
                            c: UnsafeMutableRawPointer(cp).assumingMemoryBound(to: Float.self),
                            m: m, n: n, k: k)
                    } else {
                        for i in 0..<count {
                            gemmGeneric(transA: transA, transB: transB, m: m, n: n, k: k,
                                        a: pa.baseAddress! + aOff[i], lda: max(lda, 1),
                                        b: pb.baseAddress! + bOff[i], ldb: max(ldb, 1),
                                        c: cp + i * m * n, ldc: n, accumulate: false)
                        }
                    }
                }
            }
        }
    }

    /// The batch loop of `batchedGEMM` over threads, one single-threaded GEMM per batch matrix.
    static func floatBatchesInParallel(count: Int, a: UnsafePointer<Float>, aOff: [Int], lda: Int, transA: Bool,
                                       b: UnsafePointer<Float>, bOff: [Int], ldb: Int, transB: Bool,
                                       c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int) {
        let ap = SendableConstPointer(a), bp = SendableConstPointer(b), cp = SendablePointer(c)
        Parallel.forEach(count, grain: max(1, (1 << 20) / max(2 * m * n * k, 1))) { i in
            Kernels.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: ap + aOff[i], lda: lda,
                         b: bp + bOff[i], ldb: ldb, c: cp + i * m * n, ldc: n, accumulate: false, threads: 1)
        }
    }

    /// Element offsets of each batch matrix (row-major over `batch`), given matrix strides.
    static func batchOffsets(_ batch: [Int], _ strides: [Int], matrix: Int) -> [Int] {
        let count = batch.product
        var out = [Int](repeating: 0, count: count)
        var idx = [Int](repeating: 0, count: batch.count)
        for i in 0..<count {
            var o = 0
            for d in 0..<batch.count { o += idx[d] * strides[d] }
            out[i] = o * matrix
            var d = batch.count - 1
            while d >= 0 {
                idx[d] += 1
                if idx[d] < batch[d] { break }
                idx[d] = 0
                d -= 1
            }
        }
        return out
    }

    /// torch.matmul for rank >= 2 inputs: a [..., N, K] @ b [..., K, M] -> [batch..., N, M].
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func matmul<T: BinaryFloatingPoint>(_ a: [T], _ aShape: [Int], _ b: [T], _ bShape: [Int]) -> [T] {
        let outShape = matmulShape(aShape, bShape)
        let r = outShape.count
        let n = outShape[r - 2], m = outShape[r - 1], k = aShape[aShape.count - 1]
        let batch = Array(outShape.dropLast(2))
        if bShape.count == 2 {
            // B shared by every batch: one GEMM with the batch folded into the rows.
            return batchedGEMM(batch: [], a: a, aBatch: [], transA: false, b: b, bBatch: [], transB: false,
                               m: batch.product * n, n: m, k: k)
        }
        return batchedGEMM(batch: batch, a: a, aBatch: Array(aShape.dropLast(2)), transA: false,
                           b: b, bBatch: Array(bShape.dropLast(2)), transB: false, m: n, n: m, k: k)
    }

    /// Gradients of `matmul` given g = dL/dC: (dL/dA, dL/dB), each nil when not asked for.
    /// dA = g · Bᵀ, dB = Aᵀ · g, summed over the dims each input was broadcast along.
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func matmulBackward<T: BinaryFloatingPoint>(
        _ g: [T], _ a: [T], _ aShape: [Int], _ b: [T], _ bShape: [Int], needA: Bool, needB: Bool
    ) -> ([T]?, [T]?) {
        let outShape = matmulShape(aShape, bShape)
        let r = outShape.count
        let n = outShape[r - 2], m = outShape[r - 1], k = aShape[aShape.count - 1]
        let batch = Array(outShape.dropLast(2))
        let aBatch = Array(aShape.dropLast(2)), bBatch = Array(bShape.dropLast(2))
        var ga: [T]?, gb: [T]?
        if bShape.count == 2 {
            // Batch folded into the rows: A is [B·N, K] (A's batch is the output's), g is [B·N, M].
            let rows = batch.product * n
            if needA {
                ga = batchedGEMM(batch: [], a: g, aBatch: [], transA: false, b: b, bBatch: [], transB: true,
                                 m: rows, n: k, k: m)
            }
            if needB {
                // dB = Σ_rows Aᵀ g: one GEMM whose reduction runs over all B·N rows in order.
                gb = batchedGEMM(batch: [], a: a, aBatch: [], transA: true, b: g, bBatch: [], transB: false,
                                 m: k, n: m, k: rows)
            }
            return (ga, gb)
        }
        if needA {
            let full = batchedGEMM(batch: batch, a: g, aBatch: batch, transA: false, b: b, bBatch: bBatch,
                                   transB: true, m: n, n: k, k: m)
            ga = sumToShape(full, batch + [n, k], aShape)
        }
        if needB {
            let full = batchedGEMM(batch: batch, a: a, aBatch: aBatch, transA: true, b: g, bBatch: batch,
                                   transB: false, m: k, n: m, k: n)
            gb = sumToShape(full, batch + [k, m], bShape)
        }
        return (ga, gb)
    }

    /// nn.Linear on `rows` vectors: y[rows, out] = x[rows, in] · Wᵀ + bias, W [out, in].
    /// Each y[r, o] is bias[o] (or 0) plus the products in input order (FMA). With `adding` D
    /// [rows, out]: D + y, each element D's value plus the finished y[r, o] (`linear(adding:)`).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func linear<T: BinaryFloatingPoint>(_ x: [T], rows: Int, weight w: [T], bias: [T]?,
                                                      inFeatures fin: Int, outFeatures fout: Int,
                                                      adding d: [T]? = nil) -> [T] {
        let count = rows * fout
        if let d {
            precondition(d.count == count, "linear: the addend has \(d.count) values, not \(rows) x \(fout)")
            // Float: D added as the GEMM stores (`gemmAdding`); other scalars: afterwards.
            guard T.self == Float.self, count > 0, fin > 0 else {
                return zip(d, linear(x, rows: rows, weight: w, bias: bias, inFeatures: fin, outFeatures: fout)).map { $0 + $1 }
            }
            return floatProductAdding(d, a: x, transA: false, b: w, transB: true, m: rows, n: fout, k: fin, bias: bias)
        }
        return [T](unsafeUninitializedCapacity: count) { py, initialized in
            defer { initialized = count }
            guard count > 0, let y = py.baseAddress else { return }
            // Rows start at the bias (`gemmRowBias`) or at 0.
            if fin == 0 {
                if let bias {
                    bias.withUnsafeBufferPointer { pb in
                        for r in 0..<rows { (y + r * fout).initialize(from: pb.baseAddress!, count: fout) }
                    }
                } else {
                    y.initialize(repeating: 0, count: count)
                }
                return
            }
            x.withUnsafeBufferPointer { px in
                w.withUnsafeBufferPointer { pw in
                    if let bias {
                        bias.withUnsafeBufferPointer { pb in
                            gemmRowBias(transA: false, transB: true, m: rows, n: fout, k: fin,
                                        a: px.baseAddress!, lda: fin, b: pw.baseAddress!, ldb: fin,
                                        c: y, ldc: fout, bias: pb.baseAddress!)
                        }
                    } else {
                        gemmGeneric(transA: false, transB: true, m: rows, n: fout, k: fin,
                                    a: px.baseAddress!, lda: fin, b: pw.baseAddress!, ldb: fin,
                                    c: y, ldc: fout, accumulate: false)
                    }
                }
            }
        }
    }

    /// Gradients of `linear` given g [rows, out]: dx = g · W [rows, in], dW = gᵀ · x [out, in],
    /// dbias[o] = Σ_r g[r, o] (Double, row order). Each nil when not asked for.
    /// `addX` / `addW`: gradients already gathered for x / W (`Tensor.backward`); the result is
    /// then addX + dx (addW + dW), each element the same sum as adding the two afterwards, with
    /// Float's addition done as the GEMM stores its tiles (`gemmAdding`).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func linearBackward<T: BinaryFloatingPoint>(
        _ g: [T], _ x: [T], rows: Int, weight w: [T], inFeatures fin: Int, outFeatures fout: Int,
        needX: Bool, needW: Bool, needBias: Bool, addX: [T]? = nil, addW: [T]? = nil
    ) -> (x: [T]?, weight: [T]?, bias: [T]?) {
        precondition(addX == nil || addX!.count == rows * fin, "linearBackward: addX has \(addX!.count) values, not \(rows) x \(fin)")
        precondition(addW == nil || addW!.count == fout * fin, "linearBackward: addW has \(addW!.count) values, not \(fout) x \(fin)")
        var gx: [T]?, gw: [T]?, gbias: [T]?
        if needX {
            gx = productAdding(addX, a: g, transA: false, b: w, m: rows, n: fin, k: fout)
        }
        if needW {
            gw = productAdding(addW, a: g, transA: true, b: x, m: fout, n: fin, k: rows)
        }
        if needBias {
            // Each dbias[o] the sum of column o in row order, in Double (`sum` over dim 0).
            gbias = sum(g, [rows, fout], dims: [0], keepDim: false).0
        }
        return (gx, gw, gbias)
    }

    /// d + op(A) · B ([m, n], B [k, n]), or the product alone when `d` is nil.
    static func productAdding<T: BinaryFloatingPoint>(_ d: [T]?, a: [T], transA: Bool, b: [T],
                                                      m: Int, n: Int, k: Int) -> [T] {
        guard let d else {
            return batchedGEMM(batch: [], a: a, aBatch: [], transA: transA, b: b, bBatch: [], transB: false,
                               m: m, n: n, k: k)
        }
        guard T.self == Float.self, m > 0, n > 0, k > 0 else {
            let p = batchedGEMM(batch: [], a: a, aBatch: [], transA: transA, b: b, bBatch: [], transB: false,
                                m: m, n: n, k: k)
            return zip(d, p).map { $0 + $1 }
        }
        return floatProductAdding(d, a: a, transA: transA, b: b, transB: false, m: m, n: n, k: k, bias: nil)
    }

    /// d + op(A) · op(B) ([m, n] with m, n, k > 0; each row of the product starting from `bias`
    /// [n] when given) through `gemmAdding`, for T = Float.
    private static func floatProductAdding<T: BinaryFloatingPoint>(_ d: [T], a: [T], transA: Bool, b: [T], transB: Bool,
                                                                   m: Int, n: Int, k: Int, bias: [T]?) -> [T] {
        precondition(T.self == Float.self, "floatProductAdding: Float only")
        func f(_ p: UnsafeRawBufferPointer) -> UnsafePointer<Float> { p.baseAddress!.assumingMemoryBound(to: Float.self) }
        return uninitializedArray(m * n) { (c: UnsafeMutablePointer<T>) in
            a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in d.withUnsafeBytes { pd in (bias ?? []).withUnsafeBytes { pbias in
                gemmAdding(transA: transA, transB: transB, m: m, n: n, k: k,
                           a: f(pa), lda: max(transA ? m : k, 1), b: f(pb), ldb: max(transB ? k : n, 1),
                           bias: bias == nil ? nil : f(pbias), d: f(pd),
                           c: UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), ldc: n)
            }}}}
        }
    }
}
