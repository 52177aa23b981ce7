// TinyVLM pretraining and evaluation: the first steps of the standard pretraining run (pinned
// digests of the losses and weights, bitwise equal on 1 and 2 threads), the committed
// checkpoint (loads strictly, file digest = Checkpoints/SHA256SUMS), the canonical caption,
// and the pointing evaluation on hand-made cases.

import Crypto
import FLMM
import Formats
import Foundation
import XCTest
import NN
import Tensors
import ShapesWorld

final class TinyVLMPretrainTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func hex<D: Sequence>(_ d: D) -> String where D.Element == UInt8 {
        d.map { String(format: "%02x", $0) }.joined()
    }

    static func digest(_ values: [Float]) -> String {
        var h = SHA256()
        values.withUnsafeBytes { h.update(bufferPointer: $0) }
        return hex(h.finalize())
    }

    /// The first 3 steps of `make pretrain`'s TinyVLM run (standard config, same schedule).
    func prefix() -> (losses: [Float], weights: [Float]) {
        let (model, losses) = TinyVLMPretraining.run(.standard, stopAfter: 3)
        return (losses, model.stateDict().flatMap { $0.1.data })
    }

    func testStandardPretrainingPrefixIsPinnedAndThreadIndependent() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 1
        let one = prefix()
        Parallel.threads = 2
        let two = prefix()
        XCTAssertEqual(one.losses.map(\.bitPattern), two.losses.map(\.bitPattern), "losses differ between 1 and 2 threads")
        XCTAssertTrue(one.weights.map(\.bitPattern) == two.weights.map(\.bitPattern), "weights differ between 1 and 2 threads")
        XCTAssertEqual(one.losses.count, 3)
        // At initialisation the predictions are near uniform: log V for the next token, plus the
        // attribute loss, attributeWeight × (log 7 + log 8 + log 3) (shape, colour, size groups);
        // the attribute head's initial logits are not exactly flat, hence the tolerance.
        let cfg = TinyVLMPretrainConfig.standard
        let uniform = log(Double(Tokenizer.shapesWorld.count))
            + cfg.attributeWeight * VisionTower.attributeClasses.map { log(Double($0)) }.reduce(0, +)
        XCTAssertEqual(Double(one.losses[0]), uniform, accuracy: 5)
        XCTAssertEqual(Self.digest(one.losses), "48bbf854b8cc85bad6bdb5847457163ba41d8b70e034ae4865a4837d38ad8413", "losses \(one.losses)")
        XCTAssertEqual(Self.digest(one.weights), "dad31b8f4a32fef57fbde7f2aabee0f1f726f4255fe62f8c7afbbb600dc5a249")
    }

    func testCommittedCheckpointLoadsAndMatchesItsDigest() throws {
        let path = Self.root.appendingPathComponent("Checkpoints/tinyvlm.safetensors").path
        let sums = try String(contentsOf: Self.root.appendingPathComponent("Checkpoints/SHA256SUMS"), encoding: .utf8)
        let line = sums.split(separator: "\n").first { $0.hasSuffix("tinyvlm.safetensors") }
        XCTAssertNotNil(line, "Checkpoints/SHA256SUMS has no line for tinyvlm.safetensors")
        let digest = String(line?.split(separator: " ").first ?? "")
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertLessThanOrEqual(data.count, 10_000_000)
        XCTAssertEqual(Self.hex(SHA256.hash(data: data)), digest)
        let model = try TinyVLM.load(checkpoint: path)
        var expected = TinyVLMPretrainConfig.standard.model
        expected.sincosImagePositions = false   // an initialisation choice, not stored
        XCTAssertEqual(model.config, expected)
        // Strict: a file without one tensor is refused, naming the file.
        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("tinyvlm-broken-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: broken) }
        var dict = Dictionary(uniqueKeysWithValues: model.stateDict().map { ($0.0, $0.1.detached()) })
        dict["norm.bias"] = nil
        try SafeTensors.write(tensors: dict, metadata: model.config.metadata, to: broken)
        XCTAssertThrowsError(try TinyVLM.load(checkpoint: broken.path)) { e in
            XCTAssertTrue("\(e)".contains(broken.path) && "\(e)".contains("norm.bias"), "\(e)")
        }
    }

    func testCanonicalCaptionListsObjectsInAttributeOrder() {
        let s = ShapesWorld(seed: 0).sample(.val, 3)
        let phrases = TinyVLMPretraining.canonicalPhrases(s.scene)
        XCTAssertEqual(phrases.count, s.scene.objects.count)
        XCTAssertEqual(Set(phrases.map { $0.targets[0] }), Set(s.scene.objects.indices), "every object once")
        // Large before small, then palette colour, then shape: the keys strictly increase.
        let keys = phrases.map { p -> [Int] in
            let o = s.scene.objects[p.targets[0]]
            return [1 - o.size.rawValue, o.color.rawValue, o.shape.rawValue]
        }
        for (a, b) in zip(keys, keys.dropFirst()) { XCTAssertTrue(a.lexicographicallyPrecedes(b), "\(keys)") }
        // A hand-made scene: a small red circle, a large cyan star and a large red square are
        // named large red square, large cyan star, small red circle.
        let bg = RGBImage(height: 40, width: 60, pixels: [UInt8](repeating: 128, count: 40 * 60 * 3))
        let scene = Scene.render(background: bg, objects: [
            SceneObject(shape: .circle, color: .red, size: .small, cx: 8, cy: 8, radius: 3),
            SceneObject(shape: .star, color: .cyan, size: .large, cx: 25, cy: 20, radius: 8),
            SceneObject(shape: .square, color: .red, size: .large, cx: 48, cy: 20, radius: 8)])
        XCTAssertEqual(TinyVLMPretraining.canonicalPhrases(scene).map(\.words),
                       [["the", "large", "red", "square"], ["the", "large", "cyan", "star"], ["the", "small", "red", "circle"]])
        for p in phrases {
            let o = s.scene.objects[p.targets[0]]
            XCTAssertEqual(p.words, ["the", o.size.name, o.color.name, o.shape.noun])
        }
        let canon = TinyVLMPretraining.canonicalSample(s)
        XCTAssertEqual(canon.words.count, 5 * phrases.count)
        XCTAssertEqual(canon.wordMaskIds.prefix(5), [0, 0, 0, 0, -1])
    }

    func testPhraseMapAndArgmaxOnAHandMadeAttention() {
        // NH = 2, T = 6: <bos>, 4 image tokens (2×2 grid) at 1…4, one text token at 5.
        let t = 6
        var a = [Float](repeating: 0, count: 2 * t * t)
        // Row 5 (the phrase token): head 0 puts 0.5 on image token 1 (cell 1), head 1 0.25 on
        // cell 2 and 0.25 on cell 1 (values exact in binary).
        a[(0 * t + 5) * t + 2] = 0.5
        a[(1 * t + 5) * t + 3] = 0.25
        a[(1 * t + 5) * t + 2] = 0.25
        let m = TinyVLMEvaluation.phraseMap(attention: a, heads: 2, tokens: t, rows: [5], imageStart: 1, imageCount: 4)
        XCTAssertEqual(m, [0, 0.375, 0.125, 0], "mean over heads: cell 1 (0.5 + 0.25)/2, cell 2 0.25/2")
        XCTAssertEqual(TinyVLMEvaluation.argmax(m), 1)
        XCTAssertEqual(TinyVLMEvaluation.argmax([0.2, 0.5, 0.5]), 1, "the first maximum wins")
    }

    func testCellsDilationAndScoreByHand() {
        // A 12×24 image resized to 6×12 and centre-padded to 12×12 (3 rows above, 3 below),
        // patch 3: a 4×4 grid whose rows 1 and 2 hold the image (padded rows 3…8).
        let meta = PaddingMeta(beforeHeight: 3, afterHeight: 3, beforeWidth: 0, afterWidth: 0,
                               imageHeight: 6, imageWidth: 12, paddedHeight: 12, paddedWidth: 12)
        // Mask: original pixels rows 0…1, cols 0…1 → padded rows 3.25…3.75, cols 0.25…0.75 → cell (1, 0).
        var bits = [UInt8](repeating: 0, count: 12 * 24)
        for y in 0..<2 { for x in 0..<2 { bits[y * 24 + x] = 1 } }
        let mask = Mask(height: 12, width: 24, bits: bits)
        let (inImage, onMask) = TinyVLMEvaluation.cells(mask: mask, meta: meta, grid: 4, patch: 3)
        XCTAssertEqual(inImage, [false, false, false, false, true, true, true, true,
                                 true, true, true, true, false, false, false, false])
        XCTAssertEqual(onMask.indices.filter { onMask[$0] }, [4])
        let dilated = TinyVLMEvaluation.dilate(onMask, inImage: inImage, grid: 4)
        // Cells within one of (1, 0) that are in the image: (1, 0), (1, 1), (2, 0), (2, 1);
        // (0, 0) and (0, 1) are padding.
        XCTAssertEqual(dilated.indices.filter { dilated[$0] }, [4, 5, 8, 9])
        let hit = TinyVLMEvaluation.score(cell: 9, mask: mask, meta: meta, grid: 4, patch: 3)
        XCTAssertTrue(hit.hit)
        XCTAssertEqual(hit.chance, 4.0 / 8.0)
        XCTAssertFalse(TinyVLMEvaluation.score(cell: 6, mask: mask, meta: meta, grid: 4, patch: 3).hit)
        XCTAssertFalse(TinyVLMEvaluation.score(cell: 0, mask: mask, meta: meta, grid: 4, patch: 3).hit, "padding cell")
    }

    func testCellAttributesByHand() {
        // A 10×20 image holding one large red square (centre (15, 5), radius 4: half side 3.4, so
        // pixel centres 11.6…18.4 by 1.6…8.4 → rows 2…7, cols 12…17), resized to 20×40 and
        // centre-padded to 40×40 (10 rows above and below); a 4×4 grid of 10-pixel cells.
        let bg = RGBImage(height: 10, width: 20, pixels: [UInt8](repeating: 128, count: 10 * 20 * 3))
        let square = SceneObject(shape: .square, color: .red, size: .large, cx: 15, cy: 5, radius: 4)
        let scene = Scene.render(background: bg, objects: [square])
        let meta = PaddingMeta(beforeHeight: 10, afterHeight: 10, beforeWidth: 0, afterWidth: 0,
                               imageHeight: 20, imageWidth: 40, paddedHeight: 40, paddedWidth: 40)
        let labels = TinyVLMPretraining.cellAttributes(scene, meta: meta, grid: 4)
        // Cell centres 5, 15, 25, 35. Rows 0 and 3 are padding (y = −5, 25 ≥ 20); rows 1 and 2
        // sample original rows ⌊5·10/20⌋ = 2 and ⌊15·10/20⌋ = 7; cols 2 and 3 sample original cols
        // 12 and 17 (on the square), cols 0 and 1 sample 2 and 7 (background).
        let on = [6, 7, 10, 11]
        XCTAssertEqual(labels[0], (0..<16).map { on.contains($0) ? 1 + ShapeKind.square.rawValue : 0 })
        XCTAssertEqual(labels[1], (0..<16).map { on.contains($0) ? 1 + ShapeColor.red.rawValue : 0 })
        XCTAssertEqual(labels[2], (0..<16).map { on.contains($0) ? 1 + SizeClass.large.rawValue : 0 })
    }
}
