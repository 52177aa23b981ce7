// F-LMM's full training step: the flmm_step golden case (every output and every gradient),
// gradients into every trainable part, and trained weights saved / loaded as safetensors with
// F-LMM's key names.

import Foundation
import XCTest
import Formats
import FLMM
import NN
import SegmentAnything
import Tensors
import Verification

final class FLMMStepTests: XCTestCase {
    func testFLMMStepGoldenPasses() throws {
        let report = try Verifier.verify(file: goldenURL("flmm_step"))
        printReport(report)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.comparisons.count, 222)
    }

    /// A small FLMMModel (DeepSeek-VL-like layout on a 4×4 grid, tiny SAM) and one sample.
    func tinyModelAndSample(_ options: RefinerOptions = RefinerOptions()) -> (FLMMModel, FLMMSample, DeepSeekVLLayout) {
        var rng = PhiloxRNG(seed: 21)
        var head = UNetHeadConfig(inChannels: 2 * 2)
        head.baseChannels = 4
        head.upsampleInput = 8
        let pe = PromptEncoderConfig(embedDim: 16, imageEmbeddingSize: (4, 4), inputImageSize: (32, 32), maskInChans: 16)
        let md = MaskDecoderConfig(transformerDim: 16, depth: 1, numHeads: 2, mlpDim: 16, iouHeadHiddenDim: 16)
        let enc = ImageEncoderConfig(imgSize: 32, patchSize: 8, embedDim: 16, depth: 0, numHeads: 1, outChans: 16,
                                     globalAttnIndexes: [])
        let sam = Sam(SamConfig(imageEncoder: enc, promptEncoder: pe, maskDecoder: md), includeImageEncoder: false, rng: &rng)
        let model = FLMMModel(maskHead: UNetHead(head, rng: &rng),
                              text: TextEmbedding(layers: 2, hiddenSize: 6, embedDim: 16, rng: &rng),
                              sam: MaskRefiner(sam: sam, options: options))
        // Tokens: 2 prompt, 16 image (id 7), 4 caption tokens of phrases 0, 0, 1, 1.
        let s = 22
        let inputIDs = [1, 2] + [Int](repeating: 7, count: 16) + [3, 4, 5, 6]
        let maskIDs = [-1, -1] + [Int](repeating: -1, count: 16) + [0, 0, 1, 1]
        var logits = (0..<(2 * 2 * s * s)).map { _ in rng.nextNormal() }
        for row in 0..<(2 * 2 * s) {                        // causal softmax rows
            let r = row % s
            let base = row * s
            let m = (0...r).map { logits[base + $0] }.max()!
            var z: Float = 0
            for j in 0..<s { logits[base + j] = j <= r ? Foundation.exp(logits[base + j] - m) : 0; z += logits[base + j] }
            for j in 0..<s { logits[base + j] /= z }
        }
        var gt = [Float](repeating: 0, count: 2 * 12 * 16)
        for y in 2..<8 { for x in 3..<10 { gt[y * 16 + x] = 1 } }
        for y in 5..<11 { for x in 8..<15 { gt[192 + y * 16 + x] = 1 } }
        let sample = FLMMSample(attentions: Tensor(shape: [2, 2, s, s], data: logits),
                                hiddenStates: Tensor(shape: [2, s, 6], data: (0..<(2 * s * 6)).map { _ in rng.nextNormal() }),
                                inputIDs: inputIDs, maskIDs: maskIDs, numMasks: 2,
                                imageEmbedding: Tensor(shape: [1, 16, 4, 4], data: (0..<256).map { _ in rng.nextNormal() }),
                                gtMasks: Tensor(shape: [2, 12, 16], data: gt), originalSize: (24, 32),
                                unpadRegion: { hm, wm in (hm * 2 / 16, 0, Int(Double(12 * hm) / 16 + 0.5), wm) })
        return (model, sample, DeepSeekVLLayout(imageTokenID: 7, gridHeight: 4, gridWidth: 4))
    }

    /// Every trainable part gets a gradient; the SAM loss reaches the U-Net through the mask
    /// prompt (with use_mask off, the U-Net gradient changes).
    func testGradientsReachEveryTrainablePart() throws {
        let (model, sample, layout) = tinyModelAndSample()
        let out = try model.step(sample, layout: layout)
        XCTAssertEqual(out.refiner?.masks.shape, [2, 24, 32])
        XCTAssertEqual(out.predMasks.shape, [2, 6, 8])
        XCTAssertTrue(out.loss.item.isFinite)
        out.loss.backward()
        func norm(_ prefix: String) -> Double {
            model.namedParameters().filter { $0.0.hasPrefix(prefix) }
                .reduce(0.0) { $0 + ($1.1.grad?.data.reduce(0.0) { $0 + Double($1 * $1) } ?? 0) }
        }
        for prefix in ["mask_head.", "text_layer_weights", "text_proj.", "sam.model.prompt_encoder.mask_downscaling",
                       "sam.model.prompt_encoder.point_embeddings.2", "sam.model.mask_decoder.transformer",
                       "sam.model.mask_decoder.output_upscaling", "sam.model.mask_decoder.output_hypernetworks_mlps.0"] {
            XCTAssertGreaterThan(norm(prefix), 0, prefix)
        }
        // Unused by the loss: the IoU head and the other mask tokens' hypernetworks.
        XCTAssertEqual(norm("sam.model.mask_decoder.iou_prediction_head"), 0)
        let headGrad = model.maskHead.convSeg.weight.grad!.data

        let (model2, sample2, _) = tinyModelAndSample(RefinerOptions(useMask: false))
        let out2 = try model2.step(sample2, layout: layout)
        out2.loss.backward()
        XCTAssertNotEqual(model2.maskHead.convSeg.weight.grad!.data, headGrad, "the mask prompt carries SAM's loss into the U-Net")
        // Without the mask prompt, the U-Net's gradient is that of its own losses alone.
        let (model3, sample3, _) = tinyModelAndSample(RefinerOptions(useMask: false))
        let out3 = try model3.step(sample3, layout: layout)
        (out3.lossMask + out3.lossDice).backward()
        XCTAssertEqual(model3.maskHead.convSeg.weight.grad!.data, model2.maskHead.convSeg.weight.grad!.data)
    }

    /// Trained weights round-trip through a safetensors file under F-LMM's keys; strict loading
    /// names unknown, missing and wrong-shape keys.
    func testTrainedWeightsSaveAndLoadAsSafetensors() throws {
        let (model, _, _) = tinyModelAndSample()
        let keys = model.trainedStateDict().map(\.0)
        XCTAssertTrue(keys.allSatisfy { k in
            ["mask_head.", "text_layer_weights", "text_proj.", "sam.model.prompt_encoder.", "sam.model.mask_decoder."]
                .contains { k.hasPrefix($0) } })
        XCTAssertTrue(keys.contains("sam.model.mask_decoder.transformer.layers.0.self_attn.q_proj.weight"))
        XCTAssertTrue(keys.contains("mask_head.conv_seg.weight"))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("flmm-head-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensors.write(model.trainedStateDict().map { SafeTensorsEntry(name: $0.0, tensor: $0.1) },
                              metadata: ["format": "pt"], to: url)
        let (fresh, _, _) = tinyModelAndSample()
        // Different weights before loading (the PE buffer is a fresh draw too).
        for (k, t) in fresh.trainedStateDict() { t.assign(t.data.map { $0 + 1 }); _ = k }
        try fresh.loadTrained(stateDict: SafeTensors.read(url).floatTensors)
        for ((ka, a), (kb, b)) in zip(model.trainedStateDict(), fresh.trainedStateDict()) {
            XCTAssertEqual(ka, kb)
            XCTAssertEqual(a.data, b.data, ka)
        }
        var bad = try SafeTensors.read(url).floatTensors
        bad["sam.model.image_encoder.pos_embed"] = Tensor.zeros([1])
        XCTAssertThrowsError(try fresh.loadTrained(stateDict: bad)) {
            XCTAssertEqual($0 as? LoadError, .unknownKey("sam.model.image_encoder.pos_embed"))
        }
        bad = try SafeTensors.read(url).floatTensors
        bad["text_layer_weights"] = nil
        XCTAssertThrowsError(try fresh.loadTrained(stateDict: bad)) {
            XCTAssertEqual($0 as? LoadError, .missingKey("text_layer_weights"))
        }
    }

    /// The three attention forms give bitwise the same mask-head input and losses for both
    /// merges: full [L, NH, S, S]; phrase rows [L, NH, R, K] (what a cache stores); merged rows.
    /// Without the refiner, the loss is the U-Net's two terms alone.
    func testAttentionFormsAgreeBitwise() throws {
        let (model, sample, layout) = tinyModelAndSample()
        guard case .full(let a, _, let maskIDs) = sample.attention else { return XCTFail("tiny sample is full") }
        let rowIdx = maskIDs.indices.filter { maskIDs[$0] >= 0 }             // tokens 18...21
        let (l, nh, s) = (a.shape[0], a.shape[1], a.shape[2])
        var rows = [Float]()
        for p in 0..<(l * nh) { for r in rowIdx { for c in 2..<18 { rows.append(a.data[(p * s + r) * s + c]) } } }
        let rowT = Tensor(shape: [l, nh, rowIdx.count, 16], data: rows)
        let rowIDs = rowIdx.map { maskIDs[$0] }
        let (mean, max) = try AttentionMaps.mergedRows(rowT, rowMaskIDs: rowIDs, numMasks: 2)
        XCTAssertEqual(mean.shape, [2, 2, 2, 16])
        // Hand check: phrase 1 of layer 0, head 0 at image column 0 = mean / max of rows 20, 21.
        let v20 = a.data[20 * s + 2], v21 = a.data[21 * s + 2]
        XCTAssertEqual(mean.data[16], Float((Double(v20) + Double(v21)) / 2))
        XCTAssertEqual(max.data[16], Swift.max(v20, v21))
        for merge in PhraseMerge.allCases {
            model.merge = merge
            var outs: [FLMMStepOutput] = []
            for form in [sample.attention, .rows(rowT, rowMaskIDs: rowIDs), .merged(mean: mean, max: max)] {
                var x = sample
                x.attention = form
                outs.append(try model.step(x, layout: layout))
            }
            for o in outs.dropFirst() {
                XCTAssertEqual(o.maskAttentions.data, outs[0].maskAttentions.data, "\(merge)")
                XCTAssertEqual(o.loss.item.bitPattern, outs[0].loss.item.bitPattern, "\(merge)")
            }
        }
        model.useRefiner = false
        let coarse = try model.step(sample, layout: layout)
        XCTAssertNil(coarse.refiner)
        XCTAssertEqual(coarse.loss.item.bitPattern, (coarse.lossMask + coarse.lossDice).item.bitPattern)
    }

}
