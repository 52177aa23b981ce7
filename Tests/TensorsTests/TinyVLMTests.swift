// TinyVLM: output shapes and state-dict keys, exact causality, the next-token loss against a
// hand computation, and a 20-step training prefix (loss decreases, pinned digest, bitwise
// identical on 1 and 2 threads).

import Crypto
import Foundation
import XCTest
import NN
import Tensors
import ShapesWorld

final class TinyVLMTests: XCTestCase {
    static let small = TinyVLMConfig(imageSize: 32, patchSize: 4, dim: 32, layers: 2, heads: 2)

    func input(_ config: TinyVLMConfig, seed: UInt64 = 1, index: Int = 0) throws -> (Tensor, VLMSequence) {
        let s = ShapesWorld(seed: seed).sample(.train, index)
        let (px, _) = ImagePreprocessor(imageSize: config.imageSize)(s.scene.image)
        return (px, try VLMSequence(tokenizer: .shapesWorld, imageTokens: config.imageTokens, sample: s))
    }

    func testDefaultConfigShapesAndKeys() throws {
        let c = TinyVLMConfig()
        XCTAssertEqual(c.grid, 24)
        var rng = PhiloxRNG(seed: 0)
        let model = TinyVLM(c, rng: &rng)
        let (px, seq) = try input(c)
        let out = Autograd.noGrad { model(px, seq) }
        let t = seq.count
        XCTAssertEqual(out.logits.shape, [t, Tokenizer.shapesWorld.count])
        XCTAssertEqual(out.attentions.count, c.layers)
        XCTAssertEqual(out.hiddenStates.count, c.layers)
        XCTAssertTrue(out.attentions.allSatisfy { $0.shape == [c.heads, t, t] })
        XCTAssertTrue(out.hiddenStates.allSatisfy { $0.shape == [t, c.dim] })
        XCTAssertEqual(out.stackedAttentions().shape, [c.layers, c.heads, t, t])
        // Rows are distributions; above the diagonal exactly 0.
        let a = out.attentions[c.layers - 1].data
        for h in 0..<c.heads {
            for i in stride(from: 0, to: t, by: 37) {
                var s = 0.0
                for j in 0..<t {
                    let v = a[(h * t + i) * t + j]
                    if j > i { XCTAssertEqual(v, 0) } else { XCTAssertGreaterThan(v, 0) }
                    s += Double(v)
                }
                XCTAssertEqual(s, 1, accuracy: 1e-5)
            }
        }
        // The last hidden state is the final-norm output: per-token mean 0, variance 1 (unit LN weights).
        let last = out.hiddenStates[c.layers - 1].data
        let row = last[0..<c.dim].map(Double.init)
        XCTAssertEqual(row.reduce(0, +) / Double(c.dim), 0, accuracy: 1e-5)
        let keys = model.stateDict().map(\.0)
        XCTAssertEqual(Array(keys.prefix(4)), ["patch_embed.proj.weight", "patch_embed.proj.bias",
                                               "tok_embeddings.weight", "pos_embed.weight"])
        XCTAssertTrue(keys.contains("layers.3.attn.qkv.weight") && keys.contains("layers.0.mlp.fc2.bias"))
        XCTAssertEqual(Array(keys.suffix(4)), ["norm.weight", "norm.bias", "lm_head.weight", "lm_head.bias"])
    }

    func testCausalEarlierOutputsIgnoreLaterTokens() throws {
        let c = Self.small
        var rng = PhiloxRNG(seed: 3)
        let model = TinyVLM(c, rng: &rng)
        let (px, seq) = try input(c)
        // Change the last caption word before <eos>.
        var words = ShapesWorld(seed: 1).sample(.train, 0).words
        let s = ShapesWorld(seed: 1).sample(.train, 0)
        words[words.count - 2] = words[words.count - 2] == "circle" ? "square" : "circle"
        let seq2 = try VLMSequence(tokenizer: .shapesWorld, imageTokens: c.imageTokens, captionWords: words,
                                   captionMaskIds: s.wordMaskIds)
        let p = seq.count - 3   // the changed token's position
        XCTAssertNotEqual(seq.ids[p], seq2.ids[p])
        let o1 = Autograd.noGrad { model(px, seq) }, o2 = Autograd.noGrad { model(px, seq2) }
        let t = seq.count, v = o1.logits.shape[1]
        XCTAssertEqual(Array(o1.logits.data[0..<(p * v)]), Array(o2.logits.data[0..<(p * v)]))
        XCTAssertNotEqual(Array(o1.logits.data[(p * v)...]), Array(o2.logits.data[(p * v)...]))
        for l in 0..<c.layers {
            XCTAssertEqual(Array(o1.hiddenStates[l].data[0..<(p * c.dim)]), Array(o2.hiddenStates[l].data[0..<(p * c.dim)]))
            for h in 0..<c.heads {
                for i in 0..<p {
                    let r = (h * t + i) * t
                    XCTAssertEqual(Array(o1.attentions[l].data[r..<(r + t)]), Array(o2.attentions[l].data[r..<(r + t)]))
                }
            }
        }
    }

    func testNextTokenLossMatchesHandComputation() throws {
        let c = Self.small
        var rng = PhiloxRNG(seed: 4)
        let model = TinyVLM(c, rng: &rng)
        let (px, seq) = try input(c, index: 2)
        let out = model(px, seq)
        let loss = TinyVLM.nextTokenLoss(logits: out.logits, sequence: seq)
        let v = out.logits.shape[1]
        var expected = 0.0
        for p in (seq.textStart - 1)..<(seq.count - 1) {
            let row = out.logits.data[(p * v)..<((p + 1) * v)].map(Double.init)
            let m = row.max()!
            let lse = m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
            expected += lse - row[seq.ids[p + 1]]
        }
        expected /= Double(seq.count - seq.textStart)
        XCTAssertEqual(Double(loss.item), expected, accuracy: 1e-5)
        // At initialisation the model is near uniform: loss ≈ log V.
        XCTAssertEqual(Double(loss.item), Foundation.log(Double(v)), accuracy: 0.5)
        // The loss reaches every parameter.
        loss.backward()
        for (name, p) in model.trainableParameters() {
            XCTAssertNotNil(p.grad, name)
            XCTAssertTrue(p.grad!.data.contains { $0 != 0 } || name.hasPrefix("pos_embed") || name.hasPrefix("tok_embeddings"), name)
        }
    }

    /// 20 AdamW steps of batch 2 on the small config.
    func trainPrefix() -> [Float] {
        var rng = PhiloxRNG(seed: 42)
        let model = TinyVLM(Self.small, rng: &rng)
        let trainer = TinyVLMTrainer(model: model, world: ShapesWorld(seed: 42, train: 64), batchSize: 2, lr: 3e-3, seed: 42)
        return (0..<20).map { _ in trainer.trainStep() }
    }

    func testTrainingPrefixLossDecreasesAndIsPinned() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 1
        let one = trainPrefix()
        Parallel.threads = 2
        let two = trainPrefix()
        XCTAssertEqual(one.map(\.bitPattern), two.map(\.bitPattern), "losses differ between 1 and 2 threads")
        let first = one.prefix(5).reduce(0, +) / 5, last = one.suffix(5).reduce(0, +) / 5
        XCTAssertLessThan(last, first - 0.5, "loss did not decrease: \(one)")
        var h = SHA256()
        one.withUnsafeBytes { h.update(bufferPointer: $0) }
        let digest = h.finalize().map { String(format: "%02x", $0) }.joined()
        XCTAssertEqual(digest, "a15b1c9aa7e009aa344ccc1c59a2625c9d3890f243613cc9cddc5bed17d279b3", "losses \(one)")
    }
}
