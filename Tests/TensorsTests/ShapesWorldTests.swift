// ShapesWorld generator: determinism (pinned digest), exact masks, unambiguous phrases,
// the interpreter on a hand-made scene, the tokenizer and the DeepSeek-style padding meta.

import Crypto
import XCTest
import Tensors
import FLMM
import ShapesWorld

final class ShapesWorldTests: XCTestCase {
    /// SHA-256 over a sample's image bytes, object map, caption and targets.
    static func digest(_ samples: [DescriptionSample]) -> String {
        var bytes: [UInt8] = []
        func append<T>(_ values: [T]) { values.withUnsafeBytes { bytes.append(contentsOf: $0) } }
        for s in samples {
            append([Int32(s.scene.height), Int32(s.scene.width)])
            append(s.scene.image.pixels)
            append(s.scene.objectMap)
            append(Array(s.words.joined(separator: " ").utf8))
            var targets: [Int32] = []
            for p in s.phrases {
                targets += p.targets.map { Int32($0) }
                targets.append(-1)
            }
            append(targets)
        }
        return SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    func samples(_ world: ShapesWorld, _ split: Split, _ n: Int) -> [DescriptionSample] {
        (0..<n).map { world.sample(split, $0) }
    }

    func testDeterministicFromSeedWithPinnedDigest() {
        let a = ShapesWorld(seed: 7), b = ShapesWorld(seed: 7), c = ShapesWorld(seed: 8)
        let da = Self.digest(samples(a, .train, 4) + samples(a, .val, 2))
        XCTAssertEqual(da, Self.digest(samples(b, .train, 4) + samples(b, .val, 2)), "same seed, different bytes")
        XCTAssertNotEqual(da, Self.digest(samples(c, .train, 4) + samples(c, .val, 2)), "seed has no effect")
        // Asked in another order, a sample is the same.
        XCTAssertEqual(Self.digest([a.sample(.train, 3)]), Self.digest([samples(b, .train, 4)[3]]))
        XCTAssertEqual(da, "af32802692fa675020ba3261d5abf9bd96efd3ab8ec85ad28828edb098eb1bc3")
    }

    func testSplitsAreDistinct() {
        let w = ShapesWorld(seed: 1)
        let images = Split.allCases.map { w.sample($0, 0).scene.image }
        XCTAssertNotEqual(images[0], images[1])
        XCTAssertNotEqual(images[1], images[2])
        XCTAssertNotEqual(images[0], images[2])
    }

    func testSceneStatistics() {
        let w = ShapesWorld(seed: 3)
        var shapes = Set<ShapeKind>(), colors = Set<ShapeColor>(), sizes = Set<SizeClass>(), counts = Set<Int>()
        for s in samples(w, .train, 40) {
            let sc = s.scene
            XCTAssertTrue((72...160).contains(sc.width) && (72...160).contains(sc.height))
            XCTAssertGreaterThanOrEqual(abs(sc.width - sc.height), 12, "scene is (nearly) square")
            XCTAssertTrue((2...5).contains(sc.objects.count))
            counts.insert(sc.objects.count)
            for o in sc.objects { shapes.insert(o.shape); colors.insert(o.color); sizes.insert(o.size) }
            // Attribute triples are distinct within a scene.
            XCTAssertEqual(Set(sc.objects.map { "\($0.shape)\($0.color)\($0.size)" }).count, sc.objects.count)
            // The background is textured: many distinct grey levels.
            var levels = Set<UInt8>()
            for p in 0..<(sc.height * sc.width) where sc.objectMap[p] < 0 {
                let (r, g, b) = (sc.image.pixels[3 * p], sc.image.pixels[3 * p + 1], sc.image.pixels[3 * p + 2])
                XCTAssertLessThan(Int(max(r, g, b)) - Int(min(r, g, b)), 60, "background pixel is not grey-ish")
                levels.insert(r)
            }
            XCTAssertGreaterThan(levels.count, 20)
        }
        XCTAssertEqual(shapes.count, 6)
        XCTAssertGreaterThanOrEqual(colors.count, 6)
        XCTAssertEqual(sizes.count, 2)
        XCTAssertEqual(counts, [2, 3, 4, 5])
    }

    func testMasksAreExact() {
        let w = ShapesWorld(seed: 5)
        for s in samples(w, .val, 25) {
            let sc = s.scene, n = sc.height * sc.width
            var total = [Int](repeating: 0, count: n)
            for (k, o) in sc.objects.enumerated() {
                let m = sc.mask(k)
                // Independent rendering: own coverage minus the coverage of every object on top.
                var expected = 0
                for i in 0..<sc.height {
                    for j in 0..<sc.width where o.covers(row: i, col: j)
                        && !sc.objects[(k + 1)...].contains(where: { $0.covers(row: i, col: j) }) {
                        expected += 1
                        XCTAssertEqual(m.bits[i * sc.width + j], 1)
                    }
                }
                XCTAssertEqual(m.area, expected, "mask of object \(k) is not its visible region")
                XCTAssertGreaterThanOrEqual(100 * m.area, 55 * o.coverage(height: sc.height, width: sc.width))
                for p in 0..<n where m.bits[p] == 1 {
                    total[p] += 1
                    let (r, g, b) = o.color.rgb
                    XCTAssertTrue(sc.image.pixels[3 * p] == r && sc.image.pixels[3 * p + 1] == g && sc.image.pixels[3 * p + 2] == b)
                }
            }
            XCTAssertTrue(total.allSatisfy { $0 <= 1 }, "masks overlap")
            // Pixels painted exactly in a palette colour = the masks of the objects of that colour.
            for c in ShapeColor.allCases {
                let (r, g, b) = c.rgb
                var painted = 0
                for p in 0..<n where sc.image.pixels[3 * p] == r && sc.image.pixels[3 * p + 1] == g && sc.image.pixels[3 * p + 2] == b {
                    painted += 1
                }
                let masked = sc.objects.indices.filter { sc.objects[$0].color == c }.reduce(0) { $0 + sc.mask($1).area }
                XCTAssertEqual(painted, masked, "colour \(c)")
            }
            // Phrase masks: unions of the targets.
            for (p, m) in zip(s.phrases, s.masks) {
                XCTAssertEqual(m.area, p.targets.reduce(0) { $0 + sc.mask($1).area })
                XCTAssertEqual(m, p.targets.map { sc.mask($0) }.reduce(Mask(height: sc.height, width: sc.width,
                                                                             bits: [UInt8](repeating: 0, count: n))) { $0.union($1) })
            }
        }
    }

    func testEveryPhraseIsUnambiguous() {
        let w = ShapesWorld(seed: 11)
        var kinds: [ExpressionKind: Int] = [:]
        for s in samples(w, .train, 60) {
            let objs = s.scene.objects
            for p in s.phrases {
                XCTAssertEqual(ExpressionInterpreter.resolve(p.words, in: objs), p.targets, p.text)
                kinds[p.kind, default: 0] += 1
                if p.kind == .plural {
                    XCTAssertEqual(ExpressionInterpreter.numberWords.firstIndex(of: p.words[1]).map { $0 + 2 }, p.targets.count)
                }
            }
            // Every object is named by exactly one singular phrase.
            XCTAssertEqual(s.phrases.filter { $0.kind != .plural }.map { $0.targets[0] }.sorted(), Array(objs.indices))
            // All candidate phrases are unambiguous too.
            for k in objs.indices {
                for p in ShapesWorld.attributePhrases(k, in: objs) + ShapesWorld.relationalPhrases(k, in: objs) {
                    XCTAssertEqual(ExpressionInterpreter.resolve(p.words, in: objs), [k], p.text)
                }
            }
        }
        XCTAssertGreaterThan(kinds[.attribute, default: 0], 50)
        XCTAssertGreaterThan(kinds[.relational, default: 0], 5)
        XCTAssertGreaterThan(kinds[.plural, default: 0], 5)
    }

    func testInterpreterOnHandMadeScene() {
        let objs = [
            SceneObject(shape: .circle, color: .red, size: .small, cx: 20, cy: 20, radius: 5),
            SceneObject(shape: .star, color: .blue, size: .large, cx: 60, cy: 20, radius: 12),
            SceneObject(shape: .square, color: .red, size: .large, cx: 20, cy: 60, radius: 12),
            SceneObject(shape: .circle, color: .green, size: .small, cx: 80, cy: 60, radius: 5),
        ]
        func r(_ s: String) -> [Int]? { ExpressionInterpreter.resolve(s.split(separator: " ").map(String.init), in: objs) }
        XCTAssertNil(r("the circle"))
        XCTAssertEqual(r("the red circle"), [0])
        XCTAssertNil(r("the red shape"))
        XCTAssertEqual(r("the small red shape"), [0])
        XCTAssertEqual(r("the square"), [2])
        XCTAssertEqual(r("the two red shapes"), [0, 2])
        XCTAssertNil(r("the three red shapes"))
        XCTAssertEqual(r("the two circles"), [0, 3])
        XCTAssertNil(r("the red circles"))
        XCTAssertNil(r("the purple circle"))
        XCTAssertEqual(r("the circle left of the blue star"), [0])
        XCTAssertEqual(r("the circle right of the red square"), nil)   // circle 0 is level with the square: unclear
        XCTAssertNil(r("the circle below the blue star"))                // circle 0 level with the star: unclear
        XCTAssertNil(r("the shape above the red square"))                // circle 3 level with the square
        XCTAssertEqual(r("the large shape above the red square"), [1])
        XCTAssertNil(r("the circle left of the circle"))                  // B ambiguous
    }

    func testTokenizerRoundTripAndUnknownWord() throws {
        let tok = Tokenizer.shapesWorld
        XCTAssertEqual(Set(tok.vocabulary).count, tok.count)
        XCTAssertEqual(Tokenizer.words("the red circle. the two stars."), ["the", "red", "circle", ".", "the", "two", "stars", "."])
        let w = ShapesWorld(seed: 2)
        for s in samples(w, .test, 10) {
            let ids = try tok.encode(words: s.words)
            XCTAssertEqual(tok.decode(ids), s.words.joined(separator: " "))
            XCTAssertEqual(try tok.encode(s.words.joined(separator: " ")), ids)
        }
        XCTAssertThrowsError(try tok.encode("the banana")) { e in
            let text = String(describing: e)
            XCTAssertTrue(text.contains("unknown word 'banana'"), text)
            for word in ["<bos>", "<image>", "hexagons", "left", "purple"] { XCTAssertTrue(text.contains(word), text) }
        }
    }

    func testSequenceLayoutAndMaskIds() throws {
        let tok = Tokenizer.shapesWorld
        let s = ShapesWorld(seed: 4).sample(.train, 0)
        let seq = try VLMSequence(tokenizer: tok, imageTokens: 16, sample: s)
        XCTAssertEqual(seq.count, 1 + 16 + Tokenizer.promptWords.count + s.words.count + 1)
        XCTAssertEqual(seq.ids[0], tok.bosId)
        XCTAssertTrue(seq.ids[1..<17].allSatisfy { $0 == tok.imageId })
        XCTAssertEqual(seq.textStart, 1 + 16 + 4)
        XCTAssertEqual(seq.ids.last, tok.eosId)
        XCTAssertTrue(seq.maskIds[..<seq.textStart].allSatisfy { $0 == -1 })
        XCTAssertEqual(seq.maskIds.last, -1)
        var k = 0, pos = seq.textStart
        for p in s.phrases {
            for word in p.words {
                XCTAssertEqual(seq.maskIds[pos], k)
                XCTAssertEqual(tok.vocabulary[seq.ids[pos]], word)
                pos += 1
            }
            XCTAssertEqual(tok.vocabulary[seq.ids[pos]], ".")
            XCTAssertEqual(seq.maskIds[pos], -1)
            pos += 1
            k += 1
        }
    }

    func testPaddingMetaMatchesFLMMExample() {
        // flmm-reference-notes §1.3: 640×480 → 384×288 + padding 48; a 64×64 map keeps rows 8..<56.
        let pre = ImagePreprocessor(imageSize: 384)
        let img = RGBImage(height: 480, width: 640, pixels: [UInt8](repeating: 200, count: 480 * 640 * 3))
        let (px, meta) = pre(img)
        XCTAssertEqual(px.shape, [3, 384, 384])
        XCTAssertEqual(meta, PaddingMeta(beforeHeight: 48, afterHeight: 48, beforeWidth: 0, afterWidth: 0,
                                         imageHeight: 288, imageWidth: 384, paddedHeight: 384, paddedWidth: 384))
        let r = meta.region(mapHeight: 64, mapWidth: 64)
        XCTAssertTrue(r == (8, 0, 48, 64), "\(r)")
        XCTAssertEqual(meta.unpad(Tensor.zeros([2, 64, 64])).shape, [2, 48, 64])
        // A uniform image stays uniform after the bilinear resize; padding is Int(0.5·255) = 127.
        XCTAssertEqual(px.data[0], (127 / 255 - 0.5) / 0.5)
        XCTAssertEqual(px.data[100 * 384 + 7], (200 / 255 - 0.5) / 0.5)
    }

    func testPaddingRoundTripRecoversImage() {
        let w = ShapesWorld(seed: 9)
        let pre = ImagePreprocessor(imageSize: 96)
        var sawTall = false, sawWide = false
        for s in samples(w, .train, 12) {
            let img = s.scene.image
            let (px, meta) = pre(img)
            let resized = pre.resize(img)
            XCTAssertEqual(resized.height, meta.imageHeight)
            XCTAssertEqual(resized.width, meta.imageWidth)
            XCTAssertEqual(max(meta.imageHeight, meta.imageWidth), 96)
            XCTAssertEqual(meta.beforeHeight, (96 - meta.imageHeight) / 2)
            XCTAssertEqual(meta.beforeWidth, (96 - meta.imageWidth) / 2)
            if img.height > img.width { sawTall = true } else { sawWide = true }
            let region = meta.unpad(px)
            XCTAssertEqual(region.shape, [3, resized.height, resized.width])
            var expected = [Float](repeating: 0, count: region.count)
            let plane = resized.height * resized.width
            for p in 0..<plane { for c in 0..<3 { expected[c * plane + p] = pre.normalize(resized.pixels[3 * p + c], c) } }
            XCTAssertEqual(region.data, expected)
            // Everything outside the region is the padding value.
            let padCount = px.data.filter { $0 == pre.normalize(127, 0) }.count
            XCTAssertGreaterThanOrEqual(padCount, 3 * (96 * 96 - plane))
            // Ground-truth masks at (h_r, w_r), nearest.
            let gt = pre.resizeMasks(s.masks)
            XCTAssertEqual(gt.shape, [s.phrases.count, resized.height, resized.width])
            XCTAssertTrue(gt.data.allSatisfy { $0 == 0 || $0 == 1 })
        }
        XCTAssertTrue(sawTall && sawWide)
    }
}
