// Determinism contract (ARCHITECTURE.md §3): same inputs and seed give bitwise-identical
// outputs for any thread count. Each test computes op outputs from Philox-made inputs on
// 1 and on 2 threads, checks the bytes agree, and pins their SHA-256 digest (recorded when
// the kernels were written; a change means the bits changed and must be explained).

import Crypto
import XCTest
import Tensors
import FLMM

final class DeterminismTests: XCTestCase {
    /// SHA-256 over the little-endian Float32 bytes of each tensor, in order.
    static func digest(_ tensors: [Tensor]) -> String {
        var h = SHA256()
        for t in tensors {
            t.data.withUnsafeBytes { h.update(bufferPointer: $0) }
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Runs `make` on 1 and on 2 threads; asserts identical bytes and the pinned digest.
    func assertDeterministic(_ pinned: String, file: StaticString = #filePath, line: UInt = #line,
                             _ make: () -> [Tensor]) {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 1
        let one = Self.digest(make())
        Parallel.threads = 2
        let two = Self.digest(make())
        XCTAssertEqual(one, two, "outputs differ between 1 and 2 threads", file: file, line: line)
        XCTAssertEqual(two, pinned, "pinned digest changed", file: file, line: line)
    }

    func testGEMMDigest() {
        assertDeterministic("da630f48c4606914e6467641c34f51c3b3fbe789373bfe5177eb9ad9a8da8454") {
            var rng = PhiloxRNG(seed: 11)
            let a = Tensor.normal([193, 257], rng: &rng), b = Tensor.normal([257, 131], rng: &rng)
            return [matmul(a, b)]
        }
    }

    func testConv2dDigest() {
        assertDeterministic("4c6691d783d07a54526035ce7b1c607f621b34ad842df20762ef6b81325ff207") {
            var rng = PhiloxRNG(seed: 12)
            let x = Tensor.normal([3, 24, 23, 29], rng: &rng)
            let w = Tensor.normal([40, 24, 3, 3], std: 0.1, rng: &rng)
            let b = Tensor.normal([40], rng: &rng)
            return [conv2d(x, weight: w, bias: b, stride: 1, padding: 1),
                    conv2d(x, weight: w, bias: b, stride: 2, padding: 2, dilation: 2)]
        }
    }

    func testSoftmaxDigest() {
        assertDeterministic("ee48ab05c01e80de2ba6cd2e5314c17979f4a72a2d6fd6f7d7ca140311aaaa3d") {
            var rng = PhiloxRNG(seed: 13)
            let x = Tensor.normal([6, 37, 101], std: 4, rng: &rng)
            return [x.softmax(dim: -1), x.softmax(dim: 1)]
        }
    }

    /// A U-Net head training step on its channel-major path (Winograd 3×3 convolutions, fused
    /// GroupNorm + ReLU, upsample-then-convolve): the output and every parameter's gradient.
    func testUNetHeadStepDigest() throws {
        var rng = PhiloxRNG(seed: 15)
        var cfg = UNetHeadConfig(inChannels: 12)
        cfg.baseChannels = 16
        cfg.upsampleInput = 32
        let head = UNetHead(cfg, rng: &rng)
        XCTAssertTrue(head.usesFusedPath)
        let x = Tensor.uniform([2, 12, 12, 12], rng: &rng)
        let up = Tensor.normal([2, 1, 32, 32], rng: &rng)
        var failure: Error?
        assertDeterministic("2c237a0aa49e1e9d93287a9e80a46fcdd5bafd692772c7aa67a145df3726897d") {
            for (_, p) in head.namedParameters() { p.zeroGrad() }
            do {
                let y = try head(x)
                (y * up).sum().backward()
                return [y] + head.namedParameters().map { $0.1.grad! }
            } catch {
                failure = error
                return []
            }
        }
        if let failure { throw failure }
    }

    /// A backward pass through conv → GroupNorm → ReLU → bilinear ×2 → max-pool → linear.
    func testBackwardDigest() {
        assertDeterministic("1d6b2033a574cc5075f182c05ba7118858594c380cd77fe4d2cfbeb76fcdbf16") {
            var rng = PhiloxRNG(seed: 14)
            let x = Tensor.normal([2, 16, 20, 20], rng: &rng, requiresGrad: true)
            let w = Tensor.normal([32, 16, 3, 3], std: 0.1, rng: &rng, requiresGrad: true)
            let gw = Tensor.normal([32], mean: 1, std: 0.1, rng: &rng, requiresGrad: true)
            let gb = Tensor.normal([32], std: 0.1, rng: &rng, requiresGrad: true)
            let lw = Tensor.normal([7, 20], std: 0.2, rng: &rng, requiresGrad: true)
            var h = conv2d(x, weight: w, padding: 1)
            h = groupNorm(h, numGroups: 1, weight: gw, bias: gb).relu()
            h = interpolate(h, size: (40, 40), mode: .bilinear, alignCorners: false)
            h = maxPool2d(h, kernelSize: 2)
            let y = linear(h, weight: lw, bias: nil)
            let up = Tensor.normal(y.shape, rng: &rng)
            (y * up).sum().backward()
            return [y, x.grad!, w.grad!, gw.grad!, gb.grad!, lw.grad!]
        }
    }
}
