// SAM as a whole (segment_anything/modeling/sam.py) and its coordinate arithmetic
// (segment_anything/utils/transforms.py: ResizeLongestSide).

import NN
import Tensors

/// `Sam(image_encoder, prompt_encoder, mask_decoder, pixel_mean, pixel_std)`. Keys:
/// `image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*` (pixel_mean / pixel_std are
/// non-persistent buffers, not in the state dict, as in the official checkpoints).
/// Built with `includeImageEncoder: false` it has no image encoder (and no `image_encoder.*`
/// keys): the F-LMM refiner trained on cached image embeddings needs only the prompt encoder
/// and the mask decoder.
public final class Sam: Module {
    public let config: SamConfig
    public let imageEncoder: ImageEncoderViT?
    public let promptEncoder: PromptEncoder
    public let maskDecoder: MaskDecoder
    /// Threshold on mask logits (`mask_threshold`).
    public let maskThreshold: Float = 0

    public var children: [ModuleChild] {
        [.module("image_encoder", imageEncoder), .module("prompt_encoder", promptEncoder),
         .module("mask_decoder", maskDecoder)]
    }

    public init(_ c: SamConfig, includeImageEncoder: Bool = true, rng: inout PhiloxRNG) {
        precondition(c.pixelMean.count == c.imageEncoder.inChans && c.pixelStd.count == c.imageEncoder.inChans,
                     "Sam: pixel mean \(c.pixelMean) / std \(c.pixelStd) need \(c.imageEncoder.inChans) channels")
        config = c
        imageEncoder = includeImageEncoder ? ImageEncoderViT(c.imageEncoder, rng: &rng) : nil
        promptEncoder = PromptEncoder(c.promptEncoder, rng: &rng)
        maskDecoder = MaskDecoder(c.maskDecoder, rng: &rng)
    }

    /// Side of the square encoder input (`image_encoder.img_size`).
    public var imgSize: Int { config.imageEncoder.imgSize }

    /// `preprocess`: (x − pixel_mean) / pixel_std per channel, then zero padding at the bottom and
    /// right to imgSize × imgSize. x [B, C, h, w] (0–255, already resized) → [B, C, S, S].
    public func preprocess(_ x: Tensor) -> Tensor {
        Sam.preprocess(x, pixelMean: config.pixelMean, pixelStd: config.pixelStd, imgSize: imgSize)
    }

    public static func preprocess(_ x: Tensor, pixelMean: [Float], pixelStd: [Float], imgSize: Int) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == pixelMean.count && x.shape[2] <= imgSize && x.shape[3] <= imgSize,
                     "Sam.preprocess: image \(x.shape) must be [B, \(pixelMean.count), h ≤ \(imgSize), w ≤ \(imgSize)]")
        let c = pixelMean.count
        let y = (x - Tensor(shape: [c, 1, 1], data: pixelMean)) / Tensor(shape: [c, 1, 1], data: pixelStd)
        let (padH, padW) = (imgSize - x.shape[2], imgSize - x.shape[3])
        return padH == 0 && padW == 0 ? y : pad(y, (left: 0, right: padW, top: 0, bottom: padH))
    }

    /// `postprocess_masks`: masks [B, C, h, w] → bilinear (imgSize, imgSize) → crop to
    /// `inputSize` → bilinear `originalSize`, align_corners false. Differentiable.
    public func postprocessMasks(_ masks: Tensor, inputSize: (Int, Int), originalSize: (Int, Int)) -> Tensor {
        Sam.postprocessMasks(masks, inputSize: inputSize, originalSize: originalSize, imgSize: imgSize)
    }

    public static func postprocessMasks(_ masks: Tensor, inputSize: (Int, Int), originalSize: (Int, Int),
                                        imgSize: Int) -> Tensor {
        precondition(inputSize.0 <= imgSize && inputSize.1 <= imgSize && inputSize.0 > 0 && inputSize.1 > 0,
                     "Sam.postprocessMasks: input size \(inputSize) must fit the encoder input \(imgSize)")
        let full = interpolate(masks, size: (imgSize, imgSize), mode: .bilinear, alignCorners: false)
        let cropped = full.crop(top: 0, left: 0, height: inputSize.0, width: inputSize.1)
        return interpolate(cropped, size: originalSize, mode: .bilinear, alignCorners: false)
    }
}

/// `ResizeLongestSide(target_length)`: the arithmetic that maps an image of (H, W) to the
/// encoder frame, whose longest side is `targetLength`.
public struct ResizeLongestSide: Sendable, Equatable {
    public let targetLength: Int

    public init(_ targetLength: Int) { self.targetLength = targetLength }

    /// `get_preprocess_shape`: s = target / max(H, W) in Double; (int(H·s + 0.5), int(W·s + 0.5)).
    public static func preprocessShape(_ oldH: Int, _ oldW: Int, longSideLength: Int) -> (Int, Int) {
        let scale = Double(longSideLength) * 1.0 / Double(max(oldH, oldW))
        let newH = Double(oldH) * scale, newW = Double(oldW) * scale
        return (Int(newH + 0.5), Int(newW + 0.5))
    }

    /// The resized (H', W') of an image of `originalSize`.
    public func preprocessShape(_ originalSize: (Int, Int)) -> (Int, Int) {
        Self.preprocessShape(originalSize.0, originalSize.1, longSideLength: targetLength)
    }

    /// `apply_coords`: (x, y) pairs in the original frame → x·(W'/W), y·(H'/H), in Double.
    public func applyCoords(_ coords: [(x: Double, y: Double)], originalSize: (Int, Int)) -> [(x: Double, y: Double)] {
        let (oldH, oldW) = originalSize
        let (newH, newW) = preprocessShape(originalSize)
        let sx = Double(newW) / Double(oldW), sy = Double(newH) / Double(oldH)
        return coords.map { ($0.x * sx, $0.y * sy) }
    }

    /// `apply_boxes`: [x0, y0, x1, y1] boxes in the original frame → the encoder frame (Double).
    public func applyBoxes(_ boxes: [[Double]], originalSize: (Int, Int)) -> [[Double]] {
        boxes.map { b in
            precondition(b.count == 4, "ResizeLongestSide.applyBoxes: box \(b) must be [x0, y0, x1, y1]")
            let c = applyCoords([(b[0], b[1]), (b[2], b[3])], originalSize: originalSize)
            return [c[0].x, c[0].y, c[1].x, c[1].y]
        }
    }

    public static func == (a: Self, b: Self) -> Bool { a.targetLength == b.targetLength }
}

/// A state dict that does not fit this SAM: which file it came from, what it looks like, and
/// the first key that does not fit.
public struct SamCheckpointError: Error, Equatable, CustomStringConvertible {
    /// The checkpoint's file (or another label for where the state dict came from).
    public let file: String
    /// The model it was loaded into (a preset name, or a description of the config).
    public let model: String
    /// What the checkpoint looks like (`SamConfig.describe`), when it has an image encoder.
    public let checkpointLooksLike: String?
    /// The strict loader's error: the key that is unknown, missing, or of another shape.
    public let cause: LoadError

    public init(file: String, model: String, checkpointLooksLike: String?, cause: LoadError) {
        self.file = file
        self.model = model
        self.checkpointLooksLike = checkpointLooksLike
        self.cause = cause
    }

    public var description: String {
        var s = "\(file): checkpoint does not fit SAM \(model)"
        if let c = checkpointLooksLike { s += " (the checkpoint looks like \(c))" }
        return s + ": " + cause.description
    }
}

extension SamConfig {
    /// The preset name of this config ("vit_b", "vit_l", "vit_h"), if it is one.
    public var presetName: String? {
        [("vit_b", SamConfig.vitB), ("vit_l", SamConfig.vitL), ("vit_h", SamConfig.vitH)].first { $0.1 == self }?.0
    }

    /// A short description of the image encoder a state dict holds, from its key shapes:
    /// embed dim (`image_encoder.pos_embed` or `patch_embed.proj.weight`), depth (number of
    /// blocks) and the preset with those, e.g. "ViT embed 768, depth 12 (vit_b)". Nil without
    /// image-encoder keys.
    public static func describe(stateDictShapes shapes: [String: [Int]]) -> String? {
        guard let embed = shapes["image_encoder.pos_embed"]?.last ?? shapes["image_encoder.patch_embed.proj.weight"]?.first
        else { return nil }
        var blocks = Set<Int>()
        for k in shapes.keys where k.hasPrefix("image_encoder.blocks.") {
            if let n = Int(k.dropFirst("image_encoder.blocks.".count).prefix { $0 != "." }) { blocks.insert(n) }
        }
        let preset = [("vit_b", SamConfig.vitB), ("vit_l", SamConfig.vitL), ("vit_h", SamConfig.vitH)].first {
            $0.1.imageEncoder.embedDim == embed && $0.1.imageEncoder.depth == blocks.count
        }?.0
        return "ViT embed \(embed), depth \(blocks.count)" + (preset.map { " (\($0))" } ?? "")
    }
}

extension Sam {
    /// Strict `load(stateDict:)` whose error names the checkpoint `file`, this model and what
    /// the checkpoint looks like (an official checkpoint of another size fails on
    /// `image_encoder.pos_embed`). Nothing is loaded when it throws.
    public func load(stateDict: [String: Tensor], file: String) throws(SamCheckpointError) {
        do {
            try load(stateDict: stateDict)
        } catch let e as LoadError {
            let model = config.presetName ?? "(embed \(config.imageEncoder.embedDim), depth \(config.imageEncoder.depth), image encoder \(imageEncoder == nil ? "absent" : "present"))"
            throw SamCheckpointError(file: file, model: model,
                                     checkpointLooksLike: SamConfig.describe(stateDictShapes: stateDict.mapValues(\.shape)),
                                     cause: e)
        } catch {
            preconditionFailure("Module.load threw \(error), which is not a LoadError")
        }
    }
}
