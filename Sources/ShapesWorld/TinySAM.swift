// TinySAM: SAM's own architecture (SegmentAnything's ImageEncoderViT, PromptEncoder,
// TwoWayTransformer, MaskDecoder) at a size that a CPU pretrains on ShapesWorld in minutes,
// and the geometry shared by its pretraining, its evaluation and F-LMM's use of it:
// the encoder input (ResizeLongestSide), mask bounding boxes, point prompts and mask IoU.
//
// Sizes (SamConfig.tinySAM):
//   image [3, h', w'] (longest side 128) ─ preprocess: normalise, pad to 128×128
//   ─ patch_embed (Conv k = s = 8) ─► [1, 16, 16, 64] + pos_embed
//   ─ 4 ViT blocks, 4 heads, MLP 4×, rel-pos; blocks 0 and 2 windowed (8×8), 1 and 3 global
//   ─ neck (Conv1×1 → LN2d → Conv3×3 → LN2d) ─► embedding [1, 64, 16, 16]
//   prompt encoder: 64-d prompts in the 128×128 frame; mask prompts [B, 1, 64, 64]
//   mask decoder: two-way transformer depth 2, 4 heads, MLP 256, cross-attention at 32 dims;
//   3 multimask outputs + 1 single mask, IoU head (3 layers, 64 hidden)
//   ─► low-res masks [B, K, 64, 64] (4 × the 16×16 grid: one cell per 2 encoder-frame pixels,
//   at most 2.5 original pixels for the largest scenes).
// Why patch 8 and not 4 (measured on 1 thread, two runs side by side on the 2 cores): a step
// of 2 scenes takes 0.14 s with patch 8 and 0.61 s with patch 4 (32×32 grid, 128×128 low-res
// masks), and both reach the 0.85 target when trained long enough (box mIoU 0.866 after 7200
// patch-8 steps in 1040 s; 0.867 after 2000 patch-4 steps in 1230 s). Patch 4 would also make
// every F-LMM refiner step and the cached embedding 4× larger, so patch 8 stays.
// The resolution ceiling of the 64×64 low-res masks, measured with ideal logits (each low-res
// cell's mask coverage − ½, then postprocess_masks and threshold 0) on the objects of 100 val
// scenes: mIoU 0.958 (small objects 0.936), against 0.994 for 128×128.
// Measured with the committed checkpoint (TinySAMPretrainConfig.standard: 7200 steps of 2
// scenes from 20,000 train scenes): box mIoU 0.866 and point mIoU 0.845 on all objects of
// the 200 val scenes (`flmm world evaluate-sam`). The former standard, 2400 steps over 4000
// scenes, stopped at box 0.783 / point 0.767; a 3× wider model trained as long reached only
// 0.792, so the gain came from training longer, not from size.

import NN
import SegmentAnything
import Tensors

public extension SamConfig {
    /// The ShapesWorld SAM: 128² input, patch 8 (16×16 embedding), encoder dim 64, depth 4
    /// (windows of 8 in blocks 0 and 2, global attention in blocks 1 and 3), 64-d prompts,
    /// decoder depth 2 with 4 heads and MLP 256, 3 multimask outputs, IoU head hidden 64.
    /// Pixel mean/std are SAM's.
    static let tinySAM = tinySAM(patch: 8)

    /// `tinySAM` with another patch size (the embedding grid is 128 / patch).
    static func tinySAM(patch: Int) -> SamConfig {
        let imageSize = 128, promptDim = 64
        let grid = imageSize / patch
        return SamConfig(
            imageEncoder: ImageEncoderConfig(imgSize: imageSize, patchSize: patch, embedDim: 64, depth: 4,
                                             numHeads: 4, mlpRatio: 4, outChans: promptDim, windowSize: 8,
                                             globalAttnIndexes: [1, 3]),
            promptEncoder: PromptEncoderConfig(embedDim: promptDim, imageEmbeddingSize: (grid, grid),
                                               inputImageSize: (imageSize, imageSize), maskInChans: 16),
            maskDecoder: MaskDecoderConfig(transformerDim: promptDim, depth: 2, numHeads: 4, mlpDim: 256,
                                           attentionDownsampleRate: 2, numMultimaskOutputs: 3, iouHeadDepth: 3,
                                           iouHeadHiddenDim: 64))
    }
}

/// Geometry shared by TinySAM's pretraining, evaluation and use: encoder input, boxes,
/// points and IoU, all in the conventions of SAM's `SamPredictor` and F-LMM's refiner.
public enum TinySAM {
    /// The encoder input of an image: its 0–255 values as a float tensor [1, 3, h', w'] resized
    /// (bilinear, align_corners false, no antialias, no rounding) so that its longest side is
    /// `imgSize` (`ResizeLongestSide(imgSize).preprocessShape`). `Sam.preprocess` then
    /// normalises and pads it; `MaskRefiner.encodeImage` takes it as is.
    public static func encoderInput(_ image: RGBImage, imgSize: Int = SamConfig.tinySAM.imageEncoder.imgSize) -> Tensor {
        let (h, w) = (image.height, image.width)
        let plane = h * w
        var chw = [Float](repeating: 0, count: 3 * plane)
        for p in 0..<plane { for c in 0..<3 { chw[c * plane + p] = Float(image.pixels[3 * p + c]) } }
        let x = Tensor(shape: [1, 3, h, w], data: chw)
        let size = ResizeLongestSide(imgSize).preprocessShape((h, w))
        if size == (h, w) { return x }
        return Autograd.noGrad { interpolate(x, size: size, mode: .bilinear, alignCorners: false) }
    }

    /// The box of a mask as SAM's prompt and F-LMM's `mask2box` give it, in original pixels:
    /// [x0, y0, x1 + 1, y1 + 1] over the set pixels (x0…x1 columns, y0…y1 rows, inclusive);
    /// nil for an empty mask.
    public static func boundingBox(_ mask: Mask) -> [Double]? {
        var x0 = Int.max, y0 = Int.max, x1 = -1, y1 = -1
        for y in 0..<mask.height {
            for x in 0..<mask.width where mask.bits[y * mask.width + x] != 0 {
                x0 = min(x0, x); x1 = max(x1, x)
                y0 = min(y0, y); y1 = max(y1, y)
            }
        }
        return x1 >= 0 ? [Double(x0), Double(y0), Double(x1 + 1), Double(y1 + 1)] : nil
    }

    /// The evaluation point prompt of a mask, as (x, y) in original pixels: the set pixel
    /// (column, row) nearest to the mask's centroid (squared distance of pixel centres, ties to
    /// the first in row-major order); nil for an empty mask.
    public static func centralPoint(_ mask: Mask) -> (x: Double, y: Double)? {
        var sx = 0.0, sy = 0.0, n = 0
        for y in 0..<mask.height {
            for x in 0..<mask.width where mask.bits[y * mask.width + x] != 0 {
                sx += Double(x); sy += Double(y); n += 1
            }
        }
        guard n > 0 else { return nil }
        let cx = sx / Double(n), cy = sy / Double(n)
        var best = (x: 0.0, y: 0.0), bestD = Double.infinity
        for y in 0..<mask.height {
            for x in 0..<mask.width where mask.bits[y * mask.width + x] != 0 {
                let d = (Double(x) - cx) * (Double(x) - cx) + (Double(y) - cy) * (Double(y) - cy)
                if d < bestD { bestD = d; best = (Double(x), Double(y)) }
            }
        }
        return best
    }

    /// IoU of a binary prediction (`logits[offset + p] > threshold`, p over the H·W pixels)
    /// with a mask of the same size: |P ∩ G| / |P ∪ G| counted exactly; 1 when both are empty.
    public static func iou(logits: [Float], offset: Int = 0, threshold: Float = 0, mask: Mask) -> Double {
        let n = mask.height * mask.width
        precondition(offset >= 0 && offset + n <= logits.count,
                     "TinySAM.iou: \(logits.count) logits, offset \(offset), mask \(mask.height)×\(mask.width)")
        var inter = 0, union = 0
        for p in 0..<n {
            let a = logits[offset + p] > threshold, b = mask.bits[p] != 0
            if a && b { inter += 1 }
            if a || b { union += 1 }
        }
        return union == 0 ? 1 : Double(inter) / Double(union)
    }
}
