// TinyVLM's fused causal self-attention: forward against an explicit Double computation (with
// several row blocks, so the block-triangular logits are exercised), probabilities exactly 0
// above the diagonal, the backward against finite differences of the same kernel in Double,
// and bitwise equality on 1 and 2 threads.

import Foundation
import XCTest
import Tensors

final class CausalAttentionTests: XCTestCase {
    override func tearDown() { Parallel.threads = Parallel.defaultThreadCount() }

    func randn(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = PhiloxRNG(seed: seed)
        return (0..<n).map { _ in rng.nextNormal() * scale }
    }

    func testForwardMatchesExplicitCausalSoftmax() {
        let t = 150, heads = 2, d = 8, w = heads * d   // 150 rows: three blocks of 64
        let qkv = randn(t * 3 * w, seed: 1, scale: 1.5)
        let (out, probs) = causalSelfAttention(Tensor(shape: [t, 3 * w], data: qkv), heads: heads)
        XCTAssertEqual(out.shape, [t, w])
        XCTAssertEqual(probs.shape, [heads, t, t])
        var worstP = 0.0, worstO = 0.0
        let s = 1 / Double(d).squareRoot()
        for h in 0..<heads {
            for i in 0..<t {
                var logits = [Double](repeating: 0, count: i + 1)
                for j in 0...i {
                    var dot = 0.0
                    for c in 0..<d { dot += Double(qkv[i * 3 * w + h * d + c]) * s * Double(qkv[j * 3 * w + w + h * d + c]) }
                    logits[j] = dot
                }
                let m = logits.max()!
                let e = logits.map { Foundation.exp($0 - m) }
                let z = e.reduce(0, +)
                for j in 0..<t {
                    let p = probs.data[(h * t + i) * t + j]
                    if j > i { XCTAssertEqual(p, 0) } else { worstP = max(worstP, abs(Double(p) - e[j] / z)) }
                }
                for c in 0..<d {
                    var o = 0.0
                    for j in 0...i { o += e[j] / z * Double(qkv[j * 3 * w + 2 * w + h * d + c]) }
                    worstO = max(worstO, abs(Double(out.data[i * w + h * d + c]) - o))
                }
            }
        }
        XCTAssertLessThan(worstP, 2e-6)
        XCTAssertLessThan(worstO, 5e-6)
        // The first row sees only itself.
        XCTAssertEqual(probs.data[0], 1)
    }

    func testBackwardFiniteDifferencesInDouble() {
        let t = 70, heads = 2, d = 3, w = heads * d
        let g = CausalAttentionGeometry(tokens: t, heads: heads, headDim: d)
        var rng = PhiloxRNG(seed: 5)
        let x = (0..<(t * 3 * w)).map { _ in Double(rng.nextNormal()) }
        let u = (0..<(t * w)).map { _ in Double(rng.nextNormal()) }
        func loss(_ x: [Double]) -> Double {
            let (o, _) = Kernels.causalAttentionForward(qkv: x, g)
            return zip(o, u).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let (_, probs) = Kernels.causalAttentionForward(qkv: x, g)
        let grad = Kernels.causalAttentionBackward(u, qkv: x, probs: probs, g)
        var worst = 0.0
        for i in stride(from: 0, to: x.count, by: 7) {
            var xp = x, xm = x
            xp[i] += 1e-6
            xm[i] -= 1e-6
            let fd = (loss(xp) - loss(xm)) / 2e-6
            worst = max(worst, abs(fd - grad[i]) / max(1, abs(fd)))
        }
        XCTAssertLessThan(worst, 1e-6)
    }

    func testOpGradientAndThreadIndependence() {
        let t = 200, heads = 4, d = 16, w = heads * d
        let data = randn(t * 3 * w, seed: 9)
        let u = Tensor(shape: [t, w], data: randn(t * w, seed: 10))
        func run(_ threads: Int) -> ([Float], [Float], [Float]) {
            Parallel.threads = threads
            let x = Tensor(shape: [t, 3 * w], data: data, requiresGrad: true)
            let (o, p) = causalSelfAttention(x, heads: heads)
            (o * u).sum().backward()
            return (o.data, p.data, x.grad!.data)
        }
        let a = run(1), b = run(2)
        XCTAssertTrue(a.0.map(\.bitPattern) == b.0.map(\.bitPattern))
        XCTAssertTrue(a.1.map(\.bitPattern) == b.1.map(\.bitPattern))
        XCTAssertTrue(a.2.map(\.bitPattern) == b.2.map(\.bitPattern))
        // The op's gradient is the kernel's (Float) backward.
        let (_, probs) = Kernels.causalAttentionForward(qkv: data, CausalAttentionGeometry(tokens: t, heads: heads, headDim: d))
        let k = Kernels.causalAttentionBackward(u.data, qkv: data, probs: probs, CausalAttentionGeometry(tokens: t, heads: heads, headDim: d))
        XCTAssertTrue(k.map(\.bitPattern) == a.2.map(\.bitPattern))
        // Without gradients nothing is kept, and the values are the same.
        let (o2, _) = Autograd.noGrad { causalSelfAttention(Tensor(shape: [t, 3 * w], data: data), heads: heads) }
        XCTAssertTrue(o2.data.map(\.bitPattern) == a.0.map(\.bitPattern))
    }
}
