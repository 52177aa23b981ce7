// SAM: key layout of the official presets, checkpoint loading (tiny .pth and safetensors twin,
// wrong sizes), the golden cases of its modules and of F-LMM's prompts, ResizeLongestSide
// arithmetic, and the refiner's prompt switches.

import Foundation
import XCTest
import Formats
import FLMM
import NN
import SegmentAnything
import Tensors
import Verification

/// The golden cases this file checks through the verifier. sam_mask_decoder_full (29 MB) is
/// not copied into Tests/Goldens; it is read from ../shared/golden/cases when present.
let samGoldenCases = ["sam_prompt_encoder", "sam_mask_decoder_small", "sam_image_encoder_tiny", "sam_postprocess",
                      "flmm_sam_prompts"]

func sharedGoldenURL(_ name: String, filePath: String = #filePath) -> URL {
    URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/golden/cases/\(name).safetensors")
}

final class SAMTests: XCTestCase {
    // MARK: key layout

    /// The official key list: key → shape, count and element total.
    func officialKeys(_ name: String) throws -> (keys: [String: [Int]], count: Int, elements: Int) {
        let data = try Data(contentsOf: testGoldenFile("sam_keys_\(name).json"))
        let json = JSONField(path: "", value: try JSON.parse(String(decoding: data, as: UTF8.self)))
        return (try json["keys"].object.mapValues { try $0.ints }, try json["num_tensors"].int, try json["num_elements"].int)
    }

    /// ViT-B, built whole, declares exactly the official checkpoint's keys and shapes, in
    /// state-dict order.
    func testPresetViTBKeysMatchOfficialCheckpoint() throws {
        let (expected, count, elements) = try officialKeys("vit_b")
        var rng = PhiloxRNG(seed: 1)
        let sam = Sam(.vitB, rng: &rng)
        let state = sam.stateDict()
        XCTAssertEqual(state.count, count)
        XCTAssertEqual(state.reduce(0) { $0 + $1.1.count }, elements)
        XCTAssertEqual(Set(state.map(\.0)), Set(expected.keys))
        for (k, t) in state { XCTAssertEqual(t.shape, expected[k], k) }
        XCTAssertEqual(state.first?.0, "image_encoder.pos_embed")
        XCTAssertEqual(state.last?.0, "mask_decoder.iou_prediction_head.layers.2.bias")
        XCTAssertEqual(SamConfig.vitB.presetName, "vit_b")
        XCTAssertEqual(SamConfig.describe(stateDictShapes: expected), "ViT embed 768, depth 12 (vit_b)")
    }

    /// ViT-L and ViT-H hold 308M and 632M parameters: building them whole takes tens of seconds
    /// and gigabytes. The test builds each preset with its image encoder cut to two blocks of
    /// full size, one windowed (index 0) and one global (index 1), and checks every official
    /// key against the block of its kind; all other modules are built whole.
    func testPresetViTLAndViTHKeysMatchOfficialCheckpoints() throws {
        for (name, preset) in [("vit_l", SamConfig.vitL), ("vit_h", SamConfig.vitH)] {
            let (expected, count, elements) = try officialKeys(name)
            var cut = preset
            cut.imageEncoder.depth = 2
            cut.imageEncoder.globalAttnIndexes = [1]
            var rng = PhiloxRNG(seed: 1)
            let built = Dictionary(uniqueKeysWithValues: Sam(cut, rng: &rng).stateDict().map { ($0.0, $0.1.shape) })
            var used = Set<String>(), blockIndexes = Set<Int>(), total = 0
            for (k, shape) in expected {
                total += shape.reduce(1, *)
                var key = k
                if k.hasPrefix("image_encoder.blocks.") {
                    let rest = k.dropFirst("image_encoder.blocks.".count)
                    let i = try XCTUnwrap(Int(rest.prefix { $0 != "." }))
                    blockIndexes.insert(i)
                    let kind = preset.imageEncoder.globalAttnIndexes.contains(i) ? 1 : 0
                    key = "image_encoder.blocks.\(kind)." + rest.drop { $0 != "." }.dropFirst()
                }
                XCTAssertEqual(built[key], shape, "\(name) \(k)")
                used.insert(key)
            }
            XCTAssertEqual(used, Set(built.keys), "\(name): every built key is an official key")
            XCTAssertEqual(blockIndexes, Set(0..<preset.imageEncoder.depth), name)
            XCTAssertEqual(expected.count, count, name)
            XCTAssertEqual(total, elements, name)
            XCTAssertEqual(preset.presetName, name)
            XCTAssertEqual(SamConfig.describe(stateDictShapes: expected),
                           "ViT embed \(preset.imageEncoder.embedDim), depth \(preset.imageEncoder.depth) (\(name))")
        }
    }

    // MARK: checkpoints

    func tinyConfig() throws -> SamConfig {
        let twin = try SafeTensors.read(testGoldenFile("checkpoint_tiny_sam.safetensors"))
        let cfg = try JSON.parse(twin.metadata["config"] ?? "")
        return try SAMCases.samConfig(JSONField(path: "", value: cfg))
    }

    /// The tiny checkpoint loads strictly into a Sam built from its config, and the .pth and the
    /// safetensors twin give the same parameters bit for bit.
    func testTinyCheckpointLoadsIdenticallyFromPthAndSafetensors() throws {
        let config = try tinyConfig()
        let pth = try PyTorchCheckpoint.read(testGoldenFile("checkpoint_tiny_sam.pth"))
        let twin = try SafeTensors.read(testGoldenFile("checkpoint_tiny_sam.safetensors"))
        var rng = PhiloxRNG(seed: 2)
        let a = Sam(config, rng: &rng), b = Sam(config, rng: &rng)
        XCTAssertNotEqual(a.stateDict()[1].1.data, b.stateDict()[1].1.data, "different random inits before loading")
        try a.load(stateDict: pth.floatTensors, file: pth.file)
        try b.load(stateDict: twin.floatTensors, file: twin.file)
        XCTAssertEqual(a.stateDict().map(\.0), pth.names, "module order = the checkpoint's state-dict order")
        for ((ka, ta), (kb, tb)) in zip(a.stateDict(), b.stateDict()) {
            XCTAssertEqual(ka, kb)
            XCTAssertEqual(ta.data.map(\.bitPattern), tb.data.map(\.bitPattern), ka)
        }
        XCTAssertEqual(a.stateDict().count, 174)
    }

    /// A checkpoint of another size is refused with the key, both shapes, the file and what the
    /// checkpoint looks like; nothing is loaded.
    func testCheckpointOfAnotherSizeIsRefused() throws {
        var config = try tinyConfig()
        config.imageEncoder.embedDim = 24
        config.imageEncoder.numHeads = 3
        let pth = try PyTorchCheckpoint.read(testGoldenFile("checkpoint_tiny_sam.pth"))
        var rng = PhiloxRNG(seed: 3)
        let sam = Sam(config, rng: &rng)
        let before = sam.stateDict().map { $0.1.data }
        XCTAssertThrowsError(try sam.load(stateDict: pth.floatTensors, file: pth.file)) { error in
            guard let e = error as? SamCheckpointError else { return XCTFail("\(error)") }
            XCTAssertEqual(e.cause, .shapeMismatch("image_encoder.pos_embed", expected: [1, 8, 8, 24], actual: [1, 8, 8, 32]))
            XCTAssertEqual(e.file, pth.file)
            XCTAssertEqual(e.checkpointLooksLike, "ViT embed 32, depth 2")
            XCTAssertTrue(e.description.hasPrefix(pth.file), e.description)
            XCTAssertTrue(e.description.contains("image_encoder.pos_embed"), e.description)
        }
        XCTAssertEqual(sam.stateDict().map { $0.1.data }, before, "nothing loaded")

        // An official ViT-B layout offered to ViT-L fails on its first key, named with both sizes.
        let shapes = try officialKeys("vit_b").keys
        XCTAssertEqual(SamConfig.describe(stateDictShapes: shapes), "ViT embed 768, depth 12 (vit_b)")
        let err = SamCheckpointError(file: "sam_vit_b_01ec64.pth", model: "vit_l",
                                     checkpointLooksLike: SamConfig.describe(stateDictShapes: shapes),
                                     cause: .shapeMismatch("image_encoder.pos_embed", expected: [1, 64, 64, 1024], actual: [1, 64, 64, 768]))
        XCTAssertEqual(err.description, "sam_vit_b_01ec64.pth: checkpoint does not fit SAM vit_l (the checkpoint looks like ViT embed 768, depth 12 (vit_b)): load(stateDict:): shape mismatch for key 'image_encoder.pos_embed': module expects [1, 64, 64, 1024], state dict has [1, 64, 64, 768]")
    }

    /// Without an image encoder (cached embeddings), image_encoder.* keys are unknown.
    func testSamWithoutImageEncoder() throws {
        let config = try tinyConfig()
        var rng = PhiloxRNG(seed: 4)
        let sam = Sam(config, includeImageEncoder: false, rng: &rng)
        XCTAssertFalse(sam.stateDict().contains { $0.0.hasPrefix("image_encoder.") })
        let pth = try PyTorchCheckpoint.read(testGoldenFile("checkpoint_tiny_sam.pth")).floatTensors
        XCTAssertThrowsError(try sam.load(stateDict: pth))
        try sam.load(stateDict: pth.filter { !$0.key.hasPrefix("image_encoder.") })
        XCTAssertEqual(sam.stateDict().count, 174 - 37)
    }

    // MARK: golden cases

    func testSAMGoldenCasesPass() throws {
        for name in samGoldenCases {
            let report = try Verifier.verify(file: goldenURL(name))
            printReport(report)
            XCTAssertTrue(report.passed, name)
            XCTAssertGreaterThan(report.comparisons.count, 1, name)
        }
    }

    func testSAMMaskDecoderFullSize() throws {
        let url = sharedGoldenURL("sam_mask_decoder_full")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: url.path), "no \(url.path)")
        let report = try Verifier.verify(file: url)
        printReport(report)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.comparisons.count, 2)
    }

    /// The transformer keeps the token-major image PE of its last call: a second call with the
    /// same PE gives the bits of a fresh transformer's call, and a PE with other values is
    /// permuted anew, not taken from the last call.
    func testTwoWayTransformerReusesImagePEOnlyForTheSameValues() {
        func make() -> TwoWayTransformer {
            var rng = PhiloxRNG(seed: 21)
            return TwoWayTransformer(depth: 2, embeddingDim: 16, numHeads: 2, mlpDim: 32, rng: &rng)
        }
        var rng = PhiloxRNG(seed: 22)
        func randn(_ shape: [Int]) -> Tensor { Tensor(shape: shape, data: (0..<shape.product).map { _ in rng.nextNormal() }) }
        let image = randn([1, 16, 3, 4]), tokens = randn([1, 5, 16])
        let pe = randn([1, 16, 3, 4]), otherPE = randn([1, 16, 3, 4])
        func bits(_ r: (Tensor, Tensor)) -> [UInt32] { (r.0.data + r.1.data).map(\.bitPattern) }
        let reused = make()
        _ = reused(imageEmbedding: image, imagePE: pe, pointEmbedding: tokens)
        XCTAssertEqual(bits(reused(imageEmbedding: image, imagePE: pe, pointEmbedding: tokens)),
                       bits(make()(imageEmbedding: image, imagePE: pe, pointEmbedding: tokens)))
        let fresh = bits(make()(imageEmbedding: image, imagePE: otherPE, pointEmbedding: tokens))
        XCTAssertEqual(bits(reused(imageEmbedding: image, imagePE: otherPE, pointEmbedding: tokens)), fresh)
        XCTAssertNotEqual(bits(make()(imageEmbedding: image, imagePE: pe, pointEmbedding: tokens)), fresh)
        // Other tensor objects: equal values are reused, other values are not.
        let expected = bits(make()(imageEmbedding: image, imagePE: pe, pointEmbedding: tokens))
        XCTAssertEqual(bits(reused(imageEmbedding: image, imagePE: Tensor(shape: pe.shape, data: pe.data),
                                   pointEmbedding: tokens)), expected)
        XCTAssertEqual(bits(reused(imageEmbedding: image, imagePE: Tensor(shape: pe.shape, data: otherPE.data),
                                   pointEmbedding: tokens)), fresh)
    }

    /// Point prompts: pe(p + ½) plus the label's embedding; label −1 (and the padding point
    /// added without a box) is not_a_point_embed alone.
    func testPointPrompts() throws {
        var rng = PhiloxRNG(seed: 8)
        let pe = PromptEncoder(PromptEncoderConfig(embedDim: 8, imageEmbeddingSize: (4, 4), inputImageSize: (32, 32),
                                                   maskInChans: 4), rng: &rng)
        let coords = Tensor(shape: [1, 3, 2], data: [3, 5, 10.5, 20, 31, 0])
        let (sparse, dense) = pe(points: (coords, [[1, 0, -1]]))
        XCTAssertEqual(sparse.shape, [1, 4, 8])   // padded with one not-a-point (no box)
        XCTAssertEqual(dense.shape, [1, 8, 4, 4])
        let enc = pe.peLayer.forwardWithCoords(coords + 0.5, imageSize: (32, 32)).data
        let w = pe.pointEmbeddings.map(\.weight.data), na = pe.notAPointEmbed.weight.data
        for c in 0..<8 {
            XCTAssertEqual(sparse.data[c], enc[c] + w[1][c])            // positive point
            XCTAssertEqual(sparse.data[8 + c], enc[8 + c] + w[0][c])    // negative point
            XCTAssertEqual(sparse.data[16 + c], na[c])                  // label −1
            XCTAssertEqual(sparse.data[24 + c], na[c])                  // padding point
            XCTAssertEqual(dense.data[c * 16], pe.noMaskEmbed.weight.data[c])
        }
        // With a box, no padding point: 2 points + 2 corners.
        let (s2, _) = pe(points: (coords.narrow(dim: 1, start: 0, length: 2), [[1, 0]]),
                         boxes: Tensor(shape: [1, 4], data: [1, 2, 20, 30]))
        XCTAssertEqual(s2.shape, [1, 4, 8])
        XCTAssertEqual(Array(s2.data[16..<24]), Array(pe.embedBoxes(Tensor(shape: [1, 4], data: [1, 2, 20, 30])).data[0..<8]))
    }

    // MARK: ResizeLongestSide

    func testResizeLongestSideArithmetic() {
        // s = 64/60: 45·s = 48.0 → 48, 60·s = 64 → 64.
        XCTAssertTrue(ResizeLongestSide(64).preprocessShape((45, 60)) == (48, 64))
        // s = 80/70: 37·s = 42.29 → 42; 70·s = 80.
        XCTAssertTrue(ResizeLongestSide(80).preprocessShape((37, 70)) == (42, 80))
        // A 480×640 photo → 768×1024; 500×333 → 1024×(333·1024/500 = 681.98 → 682).
        XCTAssertTrue(ResizeLongestSide(1024).preprocessShape((480, 640)) == (768, 1024))
        XCTAssertTrue(ResizeLongestSide(1024).preprocessShape((500, 333)) == (1024, 682))
        // Boxes scale x by W'/W and y by H'/H: (10, 20, 30, 45) in 45×60 → ×64/60, ×48/45.
        let b = ResizeLongestSide(64).applyBoxes([[10, 20, 30, 45]], originalSize: (45, 60))[0]
        let sx: Double = 64.0 / 60, sy: Double = 48.0 / 45
        let expected: [Double] = [10 * sx, 20 * sy, 30 * sx, 45 * sy]
        XCTAssertEqual(b, expected)
    }

    // MARK: refiner

    func tinyRefiner(_ options: RefinerOptions) throws -> MaskRefiner {
        var rng = PhiloxRNG(seed: 5)
        let sam = Sam(try tinyConfig(), includeImageEncoder: false, rng: &rng)
        try sam.load(stateDict: try PyTorchCheckpoint.read(testGoldenFile("checkpoint_tiny_sam.pth"))
            .floatTensors.filter { !$0.key.hasPrefix("image_encoder.") })
        return MaskRefiner(sam: sam, options: options)
    }

    /// use_text / use_mask / use_box change exactly the prompts SAM gets.
    func testRefinerPromptSwitches() throws {
        var rng = PhiloxRNG(seed: 6)
        let emb = Tensor(shape: [1, 32, 8, 8], data: (0..<(32 * 64)).map { _ in rng.nextNormal() })
        let pred = Tensor(shape: [2, 12, 16], data: (0..<(2 * 12 * 16)).map { i in i < 192 ? Float(i % 16) - 6 : -3 },
                          requiresGrad: true)
        let text = [Tensor(shape: [3, 32], data: (0..<96).map { _ in rng.nextNormal() }),
                    Tensor(shape: [2, 32], data: (0..<64).map { _ in rng.nextNormal() })]
        let switches: [(Bool, Bool, Bool)] = [(true, true, true), (false, true, true), (true, false, true),
                                              (true, true, false), (false, false, false)]
        for (useText, useMask, useBox) in switches {
            let refiner = try tinyRefiner(RefinerOptions(useText: useText, useMask: useMask, useBox: useBox))
            pred.zeroGrad()
            let out = refiner(imageEmbedding: emb, predMasks: pred, textEmbeds: text, originalSize: (45, 60))
            XCTAssertEqual(out.masks.shape, [2, 45, 60])
            let boxTokens = useBox ? 2 : 0
            let expectedTokens: [Int] = [boxTokens + (useText ? 3 : 0), boxTokens + (useText ? 2 : 0)]
            XCTAssertEqual(out.sparseEmbeddings.map { $0.shape[1] }, expectedTokens, "\((useText, useMask, useBox))")
            // Without a mask prompt the dense embedding is no_mask_embed everywhere.
            let noMask = refiner.model.promptEncoder.noMaskEmbed.weight.data
            let denseIsNoMask = out.denseEmbeddings.data[0] == noMask[0] && out.denseEmbeddings.data[63] == noMask[0]
            XCTAssertEqual(denseIsNoMask, !useMask)
            // Box prompts: mask 0 is positive on its right part; mask 1 is empty → the whole image.
            XCTAssertEqual(out.prompts.boxesOriginal[1], [0, 0, 60, 45])
            XCTAssertEqual(out.prompts.boxesOriginal[0][0] > 0, true)
            // The coarse logits get a gradient only through the mask prompt.
            out.masks.sum().backward()
            let g = pred.grad.map { $0.data.contains { $0 != 0 } } ?? false
            XCTAssertEqual(g, useMask, "gradient to the coarse mask iff use_mask")
        }
    }

    func testMultimaskPicksHighestIoU() throws {
        // Three 1×2×2 candidates vs target [1, 1, 0, 0]: IoUs 1/3 (one hit, union 3), 1, 0.
        let candidates = Tensor(shape: [3, 2, 2], data: [1, -1, 1, 1, 2, 3, -1, -1, -1, -1, 5, -5])
        let target = Tensor(shape: [1, 2, 2], data: [1, 1, 0, 0])
        XCTAssertEqual(MaskRefiner.bestCandidate(candidates, target: target, mask: 0), 1)
        // Ties keep the first: two identical best candidates.
        let tie = Tensor(shape: [2, 2, 2], data: [1, 1, -1, -1, 1, 1, -1, -1])
        XCTAssertEqual(MaskRefiner.bestCandidate(tie, target: target, mask: 0), 0)

        let refiner = try tinyRefiner(RefinerOptions(multimaskOutput: true))
        var rng = PhiloxRNG(seed: 7)
        let emb = Tensor(shape: [1, 32, 8, 8], data: (0..<(32 * 64)).map { _ in rng.nextNormal() })
        let pred = Tensor(shape: [1, 12, 16], data: (0..<192).map { Float($0 % 16) - 6 })
        let text = [Tensor(shape: [1, 32], data: (0..<32).map { _ in rng.nextNormal() })]
        let out = refiner(imageEmbedding: emb, predMasks: pred, textEmbeds: text, originalSize: (45, 60))
        XCTAssertEqual(out.lowResMasks.shape, [1, 3, 32, 32])
        XCTAssertEqual(out.iouPredictions.shape, [1, 3])
        let all = refiner.model.postprocessMasks(out.lowResMasks, inputSize: (48, 64), originalSize: (45, 60))
        let best = MaskRefiner.bestCandidate(all.squeeze(0), target: out.prompts.boxBinaryMasks, mask: 0)
        XCTAssertEqual(out.chosen, [best])
        XCTAssertEqual(out.masks.data, all.narrow(dim: 1, start: best, length: 1).data)
    }
}
