import ArgumentParser
import FLMM
import FLMMExperiments
import Formats
import Foundation
import SegmentAnything
import ShapesWorld
import Tensors

/// `flmm ground --scene SEED --text PHRASE`: F-LMM on one ShapesWorld image with any phrase of
/// the world's vocabulary, drawn as a PNG panel.
struct Ground: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ground",
        abstract: "Ground one phrase in one ShapesWorld scene with the frozen TinyVLM and the trained heads.",
        discussion: """
            The scene is val sample --index (default 0) of the ShapesWorld with seed SEED \
            (ShapesWorld(seed: SEED).sample(.val, index)), the same scenes the val caches hold for that world \
            seed. The phrase (any words of the vocabulary; an unknown word is an error that lists the \
            vocabulary) becomes the caption "<phrase> ." with the phrase as the only mask. The frozen TinyVLM \
            runs on the image and the caption; its attention gives the phrase's merged maps; the trained \
            F-LMM heads (--heads: U-Net mask head, text projection, SAM prompt encoder and mask decoder) \
            predict the U-Net mask and, with the refiner, the SAM mask (SAM's image embedding from the \
            frozen TinySAM encoder). The configuration (merge, normalize, upsample, prompts) is read from the \
            heads file's metadata "config" (e.g. merge=mean,normalize=on,upsample=64,sam=box+mask+text), \
            F-LMM's default when absent; the U-Net width is read from the heads (conv_seg).
            The PNG panel, left to right: the image; the phrase's merged attention map of each layer (mean \
            over heads, cropped to the image region, nearest-upsampled, viridis colours scaled per map); the \
            U-Net mask (magenta) and the SAM mask (white) over the dimmed image; the ground truth (green) when \
            the phrase refers to objects of the scene, and then the IoU of both masks is printed.
            """
    )

    @Option(help: "ShapesWorld seed of the scene.") var scene: UInt64
    @Option(help: "Val sample index in that world.") var index: Int = 0
    @Option(help: "The phrase, in ShapesWorld's vocabulary, e.g. \"the small red circle\".") var text: String
    @Option(help: "Trained F-LMM heads (safetensors, F-LMM key names).") var heads: String = "Results/flmm_heads.safetensors"
    @Option(help: "Frozen TinyVLM checkpoint.") var vlm: String = "Checkpoints/tinyvlm.safetensors"
    @Option(help: "Frozen TinySAM checkpoint (image encoder, and the SAM architecture).") var sam: String = "Checkpoints/tinysam.safetensors"
    @Option(help: "Output PNG panel (written atomically).") var out: String = "ground.png"
    @Option(help: "Integer magnification of every tile.") var zoom: Int = 2

    func validate() throws {
        guard index >= 0 && index < ShapesWorld(seed: scene).count(.val) else {
            throw ValidationError("--index \(index): the val split has \(ShapesWorld(seed: scene).count(.val)) samples")
        }
        guard zoom >= 1 && zoom <= 16 else { throw ValidationError("--zoom \(zoom): expected 1…16") }
    }

    func run() throws {
        let world = ShapesWorld(seed: scene)
        let sample = world.sample(.val, index)
        let image = sample.scene.image
        // The phrase first: a bad phrase fails before any checkpoint is read.
        _ = try GroundingPhrase(text, imageTokens: 1)
        print("scene: ShapesWorld seed \(scene), val sample \(index), \(image.width)×\(image.height), \(sample.scene.objects.count) objects")
        print("its phrases: " + sample.phrases.map { $0.words.joined(separator: " ") }.joined(separator: " | "))

        for (path, what) in [(vlm, "--vlm"), (sam, "--sam"), (heads, "--heads")] where !FileManager.default.fileExists(atPath: path) {
            throw ValidationError("\(what): no file at \(path)")
        }
        var r3 = PhiloxRNG(seed: 3)
        let lmm = try TinyVLM.load(checkpoint: vlm)
        let vlmConfig = lmm.config
        let phrase = try GroundingPhrase(text, imageTokens: vlmConfig.imageTokens)
        print("phrase: \(phrase.words.joined(separator: " "))")
        let samModel = try Sam.loadTinySAM(checkpoint: sam)
        let headsFile = try SafeTensors.read(URL(fileURLWithPath: heads))
        let config = try headsFile.metadata["config"].map { try Ground.parseConfig($0) } ?? AblationConfig()
        print("heads: \(heads) (\(config))")

        let (l, nh, g) = (vlmConfig.layers, vlmConfig.heads, vlmConfig.grid)
        var unetConfig = UNetHeadConfig(inChannels: l * nh)
        // The U-Net width B depends on the profile that trained the heads: conv_seg is [1, B, 1, 1].
        let headsDict = Dictionary(uniqueKeysWithValues: try headsFile.names.map { ($0, try headsFile.tensor($0)) })
        guard let seg = headsDict["mask_head.conv_seg.weight"], seg.rank == 4, seg.shape[1] > 0 else {
            throw ValidationError("--heads \(heads): no mask_head.conv_seg.weight [1, B, 1, 1]; not F-LMM heads")
        }
        unetConfig.baseChannels = seg.shape[1]
        unetConfig.upsampleInput = config.upsampleInput
        unetConfig.normalizeInput = config.normalizeInput
        let refiner = MaskRefiner(sam: samModel, options: RefinerOptions(useText: config.useText, useMask: config.useMask,
                                                                          useBox: config.useBox))
        let model = FLMMModel(maskHead: UNetHead(unetConfig, rng: &r3),
                              text: TextEmbedding(layers: l, hiddenSize: vlmConfig.dim,
                                                  embedDim: samModel.config.promptEncoder.embedDim, rng: &r3),
                              sam: refiner, merge: config.merge)
        model.useRefiner = config.refiner
        try model.loadTrained(stateDict: headsDict)
        model.eval()

        // The frozen models.
        let preprocessor = ImagePreprocessor(imageSize: vlmConfig.imageSize)
        let (pixels, meta) = preprocessor(image)
        let seq = phrase.sequence
        let vlmOut = Autograd.noGrad { lmm(pixels, seq) }
        let attentions = vlmOut.stackedAttentions()
        let hidden = Autograd.noGrad { cat(vlmOut.hiddenStates.map { $0.unsqueeze(0) }, dim: 0) }
        let embedding = refiner.encodeImage(TinySAM.encoderInput(image, imgSize: refiner.imgSize))

        // Ground truth when the phrase refers to objects of the scene.
        let targets = ExpressionInterpreter.resolve(phrase.words, in: sample.scene.objects)
        let gt = targets.map { sample.scene.mask(union: $0) }
        let (h, w) = (image.height, image.width)
        let gtResized = gt.map { preprocessor.resizeMasks([$0]) }
            ?? Tensor(shape: [1, meta.imageHeight, meta.imageWidth], data: [Float](repeating: 0, count: meta.imageHeight * meta.imageWidth))
        let input = FLMMSample(attentions: attentions, hiddenStates: hidden, inputIDs: seq.ids, maskIDs: seq.maskIds, numMasks: 1,
                               imageEmbedding: embedding, gtMasks: gtResized, originalSize: (h, w),
                               unpadRegion: { meta.region(mapHeight: $0, mapWidth: $1) })
        let layout = DeepSeekVLLayout(imageTokenID: Tokenizer.shapesWorld.imageId, gridHeight: g, gridWidth: g)
        let step = try Autograd.noGrad { try model.step(input, layout: layout) }

        // Masks at the original size (the U-Net logits bilinearly resized, as the evaluation does; > 0)
        // and their IoUs against the ground truth (an empty one when the phrase refers to nothing).
        let result = QualitativePanel.fromModelOutput(phrase: phrase.words.joined(separator: " "), phraseIndex: 0, image: image.pixels,
                                                      height: h, width: w, maskAttentions: step.maskAttentions,
                                                      unetLogits: step.predMasks, samLogits: step.refiner?.masks,
                                                      gtMask: gt?.bits ?? [UInt8](repeating: 0, count: h * w))
        let unetMask = result.unetMask, samMask = result.samMask

        // The panel.
        let picture = RGBPicture(height: h, width: w, pixels: image.pixels)
        let (th, tw) = (h * zoom, w * zoom)
        var tiles = [picture.resizedNearest(height: th, width: tw)]
        let maps = PanelLayout.layerMeans(step.maskAttentions.data, shape: step.maskAttentions.shape, phrase: 0, layers: l)
        let (mh, mw) = (step.maskAttentions.shape[2], step.maskAttentions.shape[3])
        let region = meta.region(mapHeight: mh, mapWidth: mw)
        for m in maps {
            var crop: [Float] = []
            for i in 0..<region.height { for j in 0..<region.width { crop.append(m[(region.top + i) * mw + region.left + j]) } }
            tiles.append(ColorMap.picture(crop, height: region.height, width: region.width).resizedNearest(height: th, width: tw))
        }
        tiles.append(picture.overlay(mask: unetMask, tint: QualitativeExport.unetTint).resizedNearest(height: th, width: tw))
        tiles.append(samMask.map { picture.overlay(mask: $0, tint: QualitativeExport.samTint).resizedNearest(height: th, width: tw) }
                     ?? RGBPicture(height: th, width: tw, fill: (128, 128, 128)))
        if let gt { tiles.append(picture.overlay(mask: gt.bits, tint: QualitativeExport.gtTint).resizedNearest(height: th, width: tw)) }
        let panel = PanelLayout.row(tiles)
        try PNGWriter.writeRGB(URL(fileURLWithPath: out), width: panel.width, height: panel.height, pixels: panel.pixels)
        print("wrote \(out) (\(panel.width)×\(panel.height)): image | attention layer 0…\(l - 1) (mean over \(nh) heads) | "
              + "U-Net mask | SAM mask\(samMask == nil ? " (no refiner: grey)" : "")\(gt == nil ? "" : " | ground truth")")

        if gt != nil, let targets {
            print("the phrase refers to object\(targets.count == 1 ? "" : "s") \(targets.map(String.init).joined(separator: ", ")) of the scene")
            print("IoU U-Net \(FigureText.fixed(Double(result.iouUNet), digits: 4))")
            if let s = result.iouSAM { print("IoU SAM   \(FigureText.fixed(Double(s), digits: 4))") }
        } else {
            print("the phrase does not refer unambiguously to objects of this scene: no ground truth, no IoU")
        }
    }

    /// An `AblationConfig` from its stable name ("merge=mean,normalize=on,upsample=64,sam=box+mask+text").
    static func parseConfig(_ name: String) throws -> AblationConfig {
        var c = AblationConfig()
        for part in name.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw ValidationError("heads metadata config '\(name)': '\(part)' is not key=value") }
            switch (kv[0], kv[1]) {
            case ("merge", let v):
                guard let m = PhraseMerge(rawValue: v) else { throw ValidationError("heads metadata config '\(name)': merge '\(v)'") }
                c.merge = m
            case ("normalize", "on"): c.normalizeInput = true
            case ("normalize", "off"): c.normalizeInput = false
            case ("upsample", "none"): c.upsampleInput = nil
            case ("upsample", let v) where Int(v) != nil: c.upsampleInput = Int(v)
            case ("sam", "none"): c.refiner = false
            case ("sam", let v):
                let on = v == "no-prompt" ? [] : v.split(separator: "+").map(String.init)
                guard on.allSatisfy({ ["box", "mask", "text"].contains($0) }) else {
                    throw ValidationError("heads metadata config '\(name)': prompts '\(v)'")
                }
                c.refiner = true
                c.useBox = on.contains("box")
                c.useMask = on.contains("mask")
                c.useText = on.contains("text")
            default: throw ValidationError("heads metadata config '\(name)': unknown '\(part)'")
            }
        }
        return c
    }
}
