// SAM rows of flmm-bench (issue 4):
//   sam_decoder_step   F-LMM's refiner training step at SAM's real size: 3 masks, each
//                      prompt encoder (box + 256² mask prompt) → 2 box + 5 text tokens →
//                      mask decoder on a 64×64×256 image embedding; backward of a loss on the
//                      low-resolution masks and IoU predictions into every prompt-encoder and
//                      mask-decoder parameter, the mask prompts and the text tokens.
//   sam_vit_b_forward  SAM ViT-B image encoder forward on a 1024×1024 image (no gradients).
// Weights are random (timing does not depend on them). Prints, per row and thread count,
//   bench <row> backend=own threads=<n> ms=<median> gflops=<nominal GFLOP / s>
// and whether every thread count gave the same bits (loss, outputs and every gradient).
// Nominal work: the GEMM flops of the step (forward; ×3 for forward + backward).

import Crypto
import Dispatch
import Foundation
import NN
import SegmentAnything
import Tensors

enum SAMBench {
    /// Runs `step` `warmup + samples` times per thread count (only `step` is timed, as in the
    /// PyTorch rows); prints the bench lines, then compares `digest()` of the last step across
    /// thread counts.
    static func measure(_ name: String, flops: Double, threads: [Int], warmup: Int, samples: Int,
                        step: () -> Void, digest: () -> [UInt8]) {
        var digests: [[UInt8]] = []
        for t in threads {
            let saved = Parallel.threads
            Parallel.threads = t
            defer { Parallel.threads = saved }
            for _ in 0..<warmup { step() }
            var times: [Double] = [], cpu: [Double] = []
            for _ in 0..<samples {
                let t0 = DispatchTime.now().uptimeNanoseconds, c0 = BenchProcess.cpuSeconds()
                step()
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                cpu.append((BenchProcess.cpuSeconds() - c0) * 1e3)
            }
            digests.append(digest())
            let ms = times.sorted()[times.count / 2]
            print(String(format: "bench %@ backend=own threads=%d ms=%.1f gflops=%.1f", name, t, ms, flops / ms / 1e6))
            print(String(format: "# %@ threads=%d: min %.1f ms, process CPU time %.1f ms (median)", name, t,
                         times.min()!, cpu.sorted()[cpu.count / 2]))
        }
        let same = digests.allSatisfy { $0 == digests[0] }
        print("bench \(name) bitwise_identical_across_threads=\(same ? "yes" : "NO")")
    }

    /// Both rows on 1 and 2 threads (the decoder step: median of 5 after a warm-up; the ViT-B
    /// forward: one run per thread count, ~10 s each on this kind of machine).
    static func run(threads: [Int] = [1, 2], decoderSamples: Int = 5, vitSamples: Int = 1) {
        // 256 MB: the ViT's MLP activations are 50 MB.
        BenchProcess.keepFreedMemory(mmapThresholdMB: 256)
        // FLMM_BENCH_SAM=decoder or =vit runs one row only; FLMM_BENCH_THREADS=2 (or 1) one
        // thread count only (for a profiler).
        let only = ProcessInfo.processInfo.environment["FLMM_BENCH_SAM"]
        let threads = ProcessInfo.processInfo.environment["FLMM_BENCH_THREADS"].flatMap(Int.init).map { [$0] } ?? threads
        if only == nil || only == "decoder" {
            let step = SAMDecoderStep()
            measure("sam_decoder_step", flops: 3 * step.forwardFlops, threads: threads, warmup: 1,
                    samples: decoderSamples, step: step.run, digest: step.digest)
        }
        if only == nil || only == "vit" {
            let vit = SAMViTBForward()
            measure("sam_vit_b_forward", flops: vit.forwardFlops, threads: threads, warmup: 0,
                    samples: vitSamples, step: vit.run, digest: vit.digest)
        }
    }
}

/// The decoder step: builds its inputs once, `run()` does one forward + backward, `digest()`
/// hashes the loss and every gradient for the determinism check (outside the timed region).
final class SAMDecoderStep {
    let sam: Sam
    let imageEmbedding: Tensor
    let boxes: [Tensor]
    let maskPrompts: [Tensor]
    let texts: [Tensor]
    let upstream: Tensor

    let textTokens: Int

    init(masks: Int = 3, textTokens: Int = 5) {
        self.textTokens = textTokens
        var rng = PhiloxRNG(seed: 11)
        sam = Sam(.vitB, includeImageEncoder: false, rng: &rng)
        let e = sam.config.promptEncoder.embedDim
        let (h, w) = sam.config.promptEncoder.imageEmbeddingSize
        let (ph, pw) = sam.config.promptEncoder.maskInputSize
        func randn(_ shape: [Int], _ scale: Float = 1, grad: Bool = false) -> Tensor {
            Tensor(shape: shape, data: (0..<shape.product).map { _ in scale * rng.nextNormal() }, requiresGrad: grad)
        }
        imageEmbedding = randn([1, e, h, w])
        var bs: [Tensor] = []
        for _ in 0..<masks {
            let x0 = 500 * rng.nextFloat(), y0 = 500 * rng.nextFloat()
            bs.append(Tensor(shape: [1, 1, 4], data: [x0, y0, x0 + 300, y0 + 400]))
        }
        boxes = bs
        maskPrompts = (0..<masks).map { _ in randn([1, 1, ph, pw], 3, grad: true) }
        texts = (0..<masks).map { _ in randn([textTokens, e], grad: true) }
        upstream = randn([1, 1, 4 * h, 4 * w])
    }

    /// GEMM flops of the forward: per mask, the transformer's projections and attention
    /// products, the output upscaling, the mask products and the mask downscaling's last conv.
    /// Both cross-attentions run folded (`foldedMultiHeadAttention`, `queryFoldedMultiHeadAttention`):
    /// two products of the 8 heads × n tokens with the image's 4096 × 256 each, and four of the
    /// tokens' size (the token projections and the per-head folds).
    var forwardFlops: Double {
        let c = 256.0, ci = 128.0, hw = 4096.0, n = Double(5 + 2 + textTokens), mlp = 2048.0, heads = 8.0
        let imageProduct = heads * n * hw * c * 2, tokenProduct = n * c * ci * 2
        let crossAttn = 2 * (2 * imageProduct + 4 * tokenProduct)
        let selfAttn = 4 * n * c * c * 2 + 2 * n * n * c * 2
        let mlpFlops = 2 * n * c * mlp * 2
        let layer = crossAttn + selfAttn + mlpFlops
        let final = 2 * imageProduct + 4 * tokenProduct
        let upscale = hw * c * (c / 4 * 4) * 2 + 4 * hw * (c / 4) * (c / 8 * 4) * 2 + 16 * hw * (c / 8) * 4 * 2
        let downscale = hw * 16 * c * 2
        return Double(boxes.count) * (2 * layer + final + upscale + downscale)
    }

    /// The loss of the last `run()` (its value only: the graph is not kept alive).
    private var lossValue: Float = .nan

    /// One forward + backward (gradients land in the parameters, mask prompts and texts).
    func run() {
        for (_, p) in sam.namedParameters() { p.zeroGrad() }
        for t in maskPrompts + texts { t.zeroGrad() }
        let densePE = sam.promptEncoder.getDensePE()
        var loss: Tensor?
        for i in 0..<boxes.count {
            let (sp, de) = sam.promptEncoder(boxes: boxes[i], masks: maskPrompts[i])
            let sparse = cat([sp, texts[i].unsqueeze(0)], dim: 1)
            let (low, iou) = sam.maskDecoder(imageEmbeddings: imageEmbedding, imagePE: densePE,
                                             sparsePromptEmbeddings: sparse, densePromptEmbeddings: de,
                                             multimaskOutput: false)
            let term = (low * upstream).sum() + iou.sum()
            loss = loss.map { $0 + term } ?? term
        }
        loss!.backward()
        lossValue = loss!.item
    }

    /// SHA-256 of the last step's loss and every gradient (parameters, mask prompts, texts).
    func digest() -> [UInt8] {
        var hash = SHA256()
        withUnsafeBytes(of: lossValue) { hash.update(bufferPointer: $0) }
        for (_, p) in sam.namedParameters() { p.grad?.data.withUnsafeBytes { hash.update(bufferPointer: $0) } }
        for t in maskPrompts + texts { t.grad?.data.withUnsafeBytes { hash.update(bufferPointer: $0) } }
        return Array(hash.finalize())
    }
}

/// ViT-B image encoder on one 1024² image.
final class SAMViTBForward {
    /// GEMM flops: per block qkv, proj and MLP on 4096 tokens; attention products in 14×14
    /// windows (25 per image, padded 70×70) or global; the neck's two convolutions.
    var forwardFlops: Double {
        let c = SamConfig.vitB.imageEncoder
        let d = Double(c.embedDim), t = 4096.0
        let linear = t * d * (3 * d + d + 8 * d) * 2
        let windowed = 25 * 196.0 * 196 * d * 2 * 2, global = t * t * d * 2 * 2
        let blocks = Double(c.depth) * linear + Double(c.globalAttnIndexes.count) * global
            + Double(c.depth - c.globalAttnIndexes.count) * windowed
        return blocks + t * d * 256 * 2 + t * 256 * 256 * 9 * 2
    }

    let encoder: ImageEncoderViT
    let image: Tensor

    init() {
        var rng = PhiloxRNG(seed: 12)
        encoder = ImageEncoderViT(SamConfig.vitB.imageEncoder, rng: &rng)
        // Non-zero position and relative-position tables (zero-initialised upstream).
        for (k, p) in encoder.namedParameters() where k.contains("pos") {
            p.assign((0..<p.count).map { _ in 0.02 * rng.nextNormal() })
        }
        image = Tensor(shape: [1, 3, 1024, 1024], data: (0..<(3 << 20)).map { _ in rng.nextNormal() })
    }

    /// The output of the last `run()`.
    private var output: [Float] = []

    func run() { output = Autograd.noGrad { encoder(image).data } }

    /// SHA-256 of the last output.
    func digest() -> [UInt8] { Array(SHA256.hash(data: output.withUnsafeBytes { Data($0) })) }
}
