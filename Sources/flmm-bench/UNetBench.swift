// UNetHead training-step benchmark (issue 3): forward and backward of F-LMM's mask head for
// attention maps [3, C, 24, 24] → 64×64 logits (normalize_input, upsample_input 64,
// GroupNorm(1)), for C = 384 (DeepSeek-VL-1.3B: 24 layers × 16 heads) and C = 1024
// (LLaVA-1.5-7B: 32 × 32), on 1 and 2 threads. Prints, per configuration,
//   bench unet_step_c<C> backend=own threads=<n> ms=<median> gflops=<nominal GFLOP / s>
// where the nominal work is 3 × the forward convolutions' FLOPs (PyTorch's direct-convolution
// count: ~57 GFLOP per step at C = 384), and checks that every thread count gives the same bits.

import Crypto
import FLMM
import Foundation
import Tensors

enum UNetBench {
    /// Forward multiply-adds ×2 of every convolution of the head for input [n, c, h, w]
    /// (after upsampling and padding), times 3 for forward + backward.
    static func nominalFlops(_ head: UNetHead, n: Int, h: Int, w: Int) -> Double {
        var total = 0.0
        var size = (h, w)
        var sizes: [(Int, Int)] = []
        for (i, stage) in head.encoder.enumerated() {
            if i > 0 { size = (size.0 / 2, size.1 / 2) }
            sizes.append(size)
            for m in stage.block.convs {
                let wt = m.conv.weight.shape
                total += 2.0 * Double(wt.product) * Double(size.0 * size.1)
            }
        }
        for (i, block) in head.decoder.enumerated() {
            let s = sizes[i]
            for m in block.convBlock.convs + [block.interp?.conv ?? block.projection!] {
                total += 2.0 * Double(m.conv.weight.shape.product) * Double(s.0 * s.1)
            }
        }
        total += 2.0 * Double(head.convSeg.weight.shape.product) * Double(sizes[0].0 * sizes[0].1)
        return 3 * Double(n) * total
    }

    /// One training step: forward, Σ y·upstream, backward. Returns the output.
    static func step(_ head: UNetHead, _ x: Tensor, _ upstream: Tensor) throws -> Tensor {
        for (_, p) in head.namedParameters() { p.zeroGrad() }
        let y = try head(x)
        (y * upstream).sum().backward()
        return y
    }

    /// SHA-256 of the output and every parameter gradient.
    static func digest(_ head: UNetHead, _ y: Tensor) -> [UInt8] {
        var hash = SHA256()
        y.data.withUnsafeBytes { hash.update(bufferPointer: $0) }
        for (_, p) in head.namedParameters() { p.grad?.data.withUnsafeBytes { hash.update(bufferPointer: $0) } }
        return Array(hash.finalize())
    }

    static func run(channels: [Int] = [384, 1024], threads: [Int] = [1, 2], steps: Int = 5) throws {
        BenchProcess.keepFreedMemory(mmapThresholdMB: 32)
        for c in channels {
            var rng = PhiloxRNG(seed: 3)
            let head = UNetHead(UNetHeadConfig(inChannels: c), rng: &rng)
            let x = Tensor.uniform([3, c, 24, 24], rng: &rng)
            let upstream = Tensor.normal([3, 1, 64, 64], rng: &rng)
            let flops = nominalFlops(head, n: 3, h: 64, w: 64)
            var digests: [[UInt8]] = []
            for t in threads {
                let saved = Parallel.threads
                Parallel.threads = t
                defer { Parallel.threads = saved }
                var y = try step(head, x, upstream)   // warm-up
                var times: [Double] = [], cpu: [Double] = []
                for _ in 0..<steps {
                    let t0 = DispatchTime.now().uptimeNanoseconds, c0 = BenchProcess.cpuSeconds()
                    y = try step(head, x, upstream)
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                    cpu.append((BenchProcess.cpuSeconds() - c0) * 1e3)
                }
                digests.append(digest(head, y))
                let ms = times.sorted()[times.count / 2]
                print(String(format: "bench unet_step_c%d backend=own threads=%d ms=%.1f gflops=%.1f",
                             c, t, ms, flops / ms / 1e6))
                print(String(format: "# unet_step_c%d threads=%d: min %.1f ms; process CPU time per step: median %.1f ms, min %.1f ms",
                             c, t, times.min()!, cpu.sorted()[cpu.count / 2], cpu.min()!))
            }
            let same = digests.allSatisfy { $0 == digests[0] }
            print("bench unet_step_c\(c) bitwise_identical_across_threads=\(same ? "yes" : "NO")")
        }
    }
}
