// 2-D max pooling on [N, C, H, W] planes (nn.MaxPool2d, floor mode), generic over the scalar.
//
// Output size per axis: floor((in + 2·padding − kernel) / stride) + 1. Each window is scanned
// in row-major order and keeps the first maximum (a later element wins only if strictly
// greater, or NaN), as PyTorch's CPU kernel does; padded positions are never selected.
// Backward: each output's gradient goes to its arg-max. Windows that overlap (kernel > stride)
// may share an arg-max; then each plane is accumulated by one thread in output order.

/// Geometry of a 2-D pooling window.
public struct Pool2dShape: Sendable, Equatable {
    public let inH: Int, inW: Int
    public let kernelH: Int, kernelW: Int
    public let strideH: Int, strideW: Int
    public let padH: Int, padW: Int

    public init(inH: Int, inW: Int, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int)) {
        precondition(kernel.0 > 0 && kernel.1 > 0 && stride.0 > 0 && stride.1 > 0,
                     "maxPool2d: kernel \(kernel) and stride \(stride) must be positive")
        precondition(padding.0 >= 0 && padding.1 >= 0 && 2 * padding.0 <= kernel.0 && 2 * padding.1 <= kernel.1,
                     "maxPool2d: padding \(padding) must be at most half the kernel \(kernel)")
        self.inH = inH
        self.inW = inW
        kernelH = kernel.0
        kernelW = kernel.1
        strideH = stride.0
        strideW = stride.1
        padH = padding.0
        padW = padding.1
        precondition(outH > 0 && outW > 0,
                     "maxPool2d: input \(inH)×\(inW) is smaller than the kernel \(kernel) (padding \(padding))")
    }

    public var outH: Int { (inH + 2 * padH - kernelH) / strideH + 1 }
    public var outW: Int { (inW + 2 * padW - kernelW) / strideW + 1 }
}

extension Kernels {
    /// Max pooling of `planes` planes. Returns the maxima and, for each, the flat index
    /// (h·inW + w) of its arg-max within its plane.
    public static func maxPool2d<T: BinaryFloatingPoint & Sendable>(_ x: [T], planes: Int, _ s: Pool2dShape) -> (values: [T], argmax: [Int32]) {
        precondition(x.count == planes * s.inH * s.inW,
                     "maxPool2d: \(x.count) elements for \(planes) planes of \(s.inH)×\(s.inW)")
        let (oh, ow) = (s.outH, s.outW)
        var y = [T](repeating: 0, count: planes * oh * ow)
        var idx = [Int32](repeating: 0, count: planes * oh * ow)
        if y.isEmpty { return (y, idx) }
        x.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                idx.withUnsafeMutableBufferPointer { ib in
                    let xp = SendableConstPointer(xb.baseAddress!)
                    let yp = SendablePointer(yb.baseAddress!), ip = SendablePointer(ib.baseAddress!)
                    Parallel.forEach(planes * oh, grain: max(1, 2048 / ow)) { row in
                        let pl = row / oh, r = row % oh
                        let src = xp.base + pl * s.inH * s.inW
                        let h0 = r * s.strideH - s.padH
                        let ha = Swift.max(h0, 0), hb = Swift.min(h0 + s.kernelH, s.inH)
                        for c in 0..<ow {
                            let w0 = c * s.strideW - s.padW
                            let wa = Swift.max(w0, 0), wb = Swift.min(w0 + s.kernelW, s.inW)
                            var best = ha * s.inW + wa
                            var m = -T.infinity
                            for i in ha..<hb {
                                for j in wa..<wb {
                                    let v = src[i * s.inW + j]
                                    if v > m || v.isNaN {
                                        m = v
                                        best = i * s.inW + j
                                    }
                                }
                            }
                            yp[row * ow + c] = src[best]
                            ip[row * ow + c] = Int32(best)
                        }
                    }
                }
            }
        }
        return (y, idx)
    }

    /// Gradient of `maxPool2d` w.r.t. its input: each g goes to its window's arg-max.
    public static func maxPool2dBackward<T: BinaryFloatingPoint & Sendable>(_ g: [T], argmax: [Int32], planes: Int, _ s: Pool2dShape) -> [T] {
        let (oh, ow) = (s.outH, s.outW), plane = s.inH * s.inW
        precondition(g.count == planes * oh * ow && argmax.count == g.count,
                     "maxPool2dBackward: \(g.count) gradients for \(planes) planes of \(oh)×\(ow)")
        var dx = [T](repeating: 0, count: planes * plane)
        if dx.isEmpty || g.isEmpty { return dx }
        let disjoint = s.kernelH <= s.strideH && s.kernelW <= s.strideW
        g.withUnsafeBufferPointer { gb in
            argmax.withUnsafeBufferPointer { ab in
                dx.withUnsafeMutableBufferPointer { db in
                    let gp = SendableConstPointer(gb.baseAddress!), ap = SendableConstPointer(ab.baseAddress!)
                    let dp = SendablePointer(db.baseAddress!)
                    if disjoint {
                        // Every input belongs to at most one window: rows write disjoint elements.
                        Parallel.forEach(planes * oh, grain: max(1, 4096 / ow)) { row in
                            let base = (row / oh) * plane
                            for c in 0..<ow { dp[base + Int(ap[row * ow + c])] = gp[row * ow + c] }
                        }
                    } else {
                        Parallel.forEach(planes) { pl in
                            let base = pl * plane
                            for o in pl * oh * ow..<(pl + 1) * oh * ow { dp[base + Int(ap[o])] += gp[o] }
                        }
                    }
                }
            }
        }
        return dx
    }
}
