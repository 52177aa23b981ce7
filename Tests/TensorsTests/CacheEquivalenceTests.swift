// The GroundingCache loses nothing F-LMM's training needs: a few training steps on a cache give
// bitwise the same losses and weights as the same steps with the frozen models run in-process
// (full attention [L, NH, S, S] and hidden states [L, S, D] of every token, F-LMM's own form),
// once the in-process features get the same 16-bit rounding the cache stores.

import Foundation
import XCTest
import FLMM
import FLMMExperiments
import GroundingCache
import NN
import SegmentAnything
import ShapesWorld
import Tensors

final class CacheEquivalenceTests: XCTestCase {
    func testTrainingOnCacheEqualsInProcessBitwise() throws {
        let (vlm, sam) = GroundingCacheTests.tinyModels()
        let world = ShapesWorld(seed: 7)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flmm-equiv-\(ProcessInfo.processInfo.processIdentifier)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("train.nc")
        let builder = GroundingCacheBuilder(world: world, vlm: vlm, sam: sam, vlmName: "tiny", samName: "tiny")
        try builder.build(split: .train, count: 3, to: url)
        let cache = try GroundingDataset(url: url)
        let f16 = HalfEncoding.float16
        XCTAssertEqual(cache.header.attentionEncoding, f16)
        XCTAssertEqual(cache.header.hiddenEncoding, f16)
        XCTAssertEqual(cache.header.samEncoding, f16)

        // The frozen models run here, independently of the builder: F-LMM's full-attention form.
        let tokenizer = Tokenizer.shapesWorld
        let pre = ImagePreprocessor(imageSize: vlm.config.imageSize)
        let layout = DeepSeekVLLayout(imageTokenID: tokenizer.imageId, gridHeight: vlm.config.grid, gridWidth: vlm.config.grid)
        func rounded(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, data: t.data.map(f16.round)) }
        func inProcess(_ i: Int) throws -> (FLMMSample, any AttentionLayout) {
            let s = world.sample(.train, i)
            let (pixels, meta) = pre(s.scene.image)
            let seq = try VLMSequence(tokenizer: tokenizer, imageTokens: vlm.config.imageTokens, sample: s)
            let out = Autograd.noGrad { vlm(pixels, seq) }
            let attentions = rounded(out.stackedAttentions())                                     // [L, NH, S, S]
            let hidden = rounded(Autograd.noGrad { cat(out.hiddenStates.map { $0.unsqueeze(0) }, dim: 0) })  // [L, S, D]
            let emb = Autograd.noGrad { sam.imageEncoder!(sam.preprocess(TinySAM.encoderInput(s.scene.image, imgSize: sam.imgSize))) }
            let masks = Tensor(shape: [s.phrases.count, s.scene.image.height, s.scene.image.width],
                               data: s.masks.flatMap { $0.bits.map(Float.init) })
            let gt = Autograd.noGrad { interpolate(masks.unsqueeze(0), size: (meta.imageHeight, meta.imageWidth), mode: .nearest).squeeze(0) }
            let sample = FLMMSample(attentions: attentions, hiddenStates: hidden, inputIDs: seq.ids, maskIDs: seq.maskIds,
                                    numMasks: s.phrases.count, imageEmbedding: rounded(emb), gtMasks: gt,
                                    originalSize: (s.scene.image.height, s.scene.image.width),
                                    unpadRegion: { meta.region(mapHeight: $0, mapWidth: $1) })
            return (sample, layout)
        }

        func model() throws -> FLMMModel {
            var rng = PhiloxRNG(seed: 11)
            var head = UNetHeadConfig(inChannels: vlm.config.layers * vlm.config.heads)
            head.baseChannels = 8
            head.upsampleInput = 16
            var samRNG = PhiloxRNG(seed: 0)
            let refiner = Sam(sam.config, includeImageEncoder: false, rng: &samRNG)
            try refiner.load(stateDict: Dictionary(uniqueKeysWithValues: sam.stateDict().filter { !$0.0.hasPrefix("image_encoder.") }))
            return FLMMModel(maskHead: UNetHead(head, rng: &rng),
                             text: TextEmbedding(layers: vlm.config.layers, hiddenSize: vlm.config.dim,
                                                 embedDim: sam.config.promptEncoder.embedDim, rng: &rng),
                             sam: MaskRefiner(sam: refiner))
        }
        var settings = OptimizerSettings()
        settings.lr = 1e-3
        let a = try model(), b = try model()
        let curveA = try FLMMTrainer(model: a, steps: 4, settings: settings)
            .train(count: 3, seed: 5, logEvery: 1, configName: "cache", sample: { cache.sample($0) })
        let curveB = try FLMMTrainer(model: b, steps: 4, settings: settings)
            .train(count: 3, seed: 5, logEvery: 1, configName: "in-process", sample: inProcess)
        XCTAssertEqual(curveA.loss.count, 4)
        XCTAssertEqual(curveA.loss.map(\.bitPattern), curveB.loss.map(\.bitPattern))
        XCTAssertEqual(curveA.samLossDice.map(\.bitPattern), curveB.samLossDice.map(\.bitPattern))
        for ((k, ta), (_, tb)) in zip(a.trainedStateDict(), b.trainedStateDict()) {
            XCTAssertEqual(ta.data.map(\.bitPattern), tb.data.map(\.bitPattern), k)
        }
        // The steps did train: the weights moved and the loss is finite.
        XCTAssertTrue(curveA.loss.allSatisfy(\.isFinite))
        XCTAssertNotEqual(try model().trainedStateDict()[0].1.data, a.trainedStateDict()[0].1.data)

        // A diverging run stops at the first non-finite loss, naming the step and the configuration.
        var wild = OptimizerSettings()
        wild.lr = 1e36
        wild.warmupRatio = 0
        XCTAssertThrowsError(try FLMMTrainer(model: try model(), steps: 6, settings: wild)
            .train(count: 3, seed: 5, logEvery: 1, configName: "lr=1e36", sample: { cache.sample($0) })) { error in
            guard let e = error as? NonFiniteLossError else { return XCTFail("\(error)") }
            XCTAssertGreaterThan(e.step, 0)
            XCTAssertTrue(e.description.contains("at step \(e.step) of configuration lr=1e36"), e.description)
        }
    }
}
