// DeepSeek-VL-style image preprocessing with F-LMM's padding meta.
//
// As DeepSeek-VL's VLMImageProcessor (flmm-reference-notes §1.3 "Image preprocessing per LMM"):
//   1. resize, keeping the aspect ratio, so the longest side is S: each side becomes
//      max(Int(side / longest · S), minSide) (Double arithmetic, truncation);
//      resampling here is F.interpolate bilinear (align_corners=False, no antialias) on the 8-bit
//      values, rounded to the nearest integer and clamped to 0…255, so the resized image is
//      again an 8-bit image (DeepSeek uses torchvision bicubic with antialias: a documented
//      difference; nothing downstream depends on the kernel);
//   2. paste it centred on an S×S canvas filled with Int(mean_c · 255): before = diff / 2;
//   3. rescale by 1/255 and normalise: (x − mean_c) / std_c.
// The meta is F-LMM's: padding (before/after height/width), image_shape (h_r, w_r) and
// padded_shape (S, S), kept in FLMM's `PaddingMeta`, whose `unpad` removes the padding from a map the way
// F-LMM crops its mask predictions (§1.3 "Padding removal").

import FLMM
import Tensors

/// DeepSeek-VL-style resize + centred square padding + normalisation.
public struct ImagePreprocessor: Sendable {
    /// S: the padded square's side.
    public let imageSize: Int
    /// Smallest side after resizing (DeepSeek-VL: 14).
    public let minSide: Int
    public let mean: [Float], std: [Float]

    public init(imageSize: Int, minSide: Int = 14, mean: [Float] = [0.5, 0.5, 0.5], std: [Float] = [0.5, 0.5, 0.5]) {
        precondition(imageSize > 0 && mean.count == 3 && std.count == 3,
                     "ImagePreprocessor: imageSize \(imageSize), mean \(mean), std \(std)")
        self.imageSize = imageSize
        self.minSide = minSide
        self.mean = mean
        self.std = std
    }

    /// (h_r, w_r) for an image of (height, width).
    public func resizedShape(height: Int, width: Int) -> (Int, Int) {
        let longest = Double(max(height, width)), s = Double(imageSize)
        return (max(Int(Double(height) / longest * s), minSide), max(Int(Double(width) / longest * s), minSide))
    }

    /// The resized 8-bit image (step 1).
    public func resize(_ image: RGBImage) -> RGBImage {
        let (hr, wr) = resizedShape(height: image.height, width: image.width)
        var chw = [Float](repeating: 0, count: 3 * image.height * image.width)
        let plane = image.height * image.width
        for p in 0..<plane { for c in 0..<3 { chw[c * plane + p] = Float(image.pixels[3 * p + c]) } }
        let x = Tensor(shape: [1, 3, image.height, image.width], data: chw)
        let y = Autograd.noGrad { interpolate(x, size: (hr, wr), mode: .bilinear) }
        var px = [UInt8](repeating: 0, count: hr * wr * 3)
        let outPlane = hr * wr
        for p in 0..<outPlane {
            for c in 0..<3 {
                px[3 * p + c] = UInt8(Swift.min(255, Swift.max(0, y.data[c * outPlane + p].rounded(.toNearestOrEven))))
            }
        }
        return RGBImage(height: hr, width: wr, pixels: px)
    }

    /// The padding colour per channel: Int(mean_c · 255).
    public var fill: [UInt8] { mean.map { UInt8(Int($0 * 255)) } }

    /// Pixel values [3, S, S] and the padding meta of `image`.
    public func callAsFunction(_ image: RGBImage) -> (pixelValues: Tensor, meta: PaddingMeta) {
        let r = resize(image)
        let s = imageSize
        let bh = (s - r.height) / 2, bw = (s - r.width) / 2
        let meta = PaddingMeta(beforeHeight: bh, afterHeight: s - r.height - bh, beforeWidth: bw,
                               afterWidth: s - r.width - bw, imageHeight: r.height, imageWidth: r.width,
                               paddedHeight: s, paddedWidth: s)
        var out = [Float](repeating: 0, count: 3 * s * s)
        let fill = self.fill
        for c in 0..<3 {
            let padValue = normalize(fill[c], c)
            for i in 0..<s {
                for j in 0..<s {
                    let ii = i - bh, jj = j - bw
                    let inside = ii >= 0 && ii < r.height && jj >= 0 && jj < r.width
                    out[(c * s + i) * s + j] = inside ? normalize(r.pixels[(ii * r.width + jj) * 3 + c], c) : padValue
                }
            }
        }
        return (Tensor(shape: [3, s, s], data: out), meta)
    }

    /// (v / 255 − mean_c) / std_c in Float.
    @inline(__always) public func normalize(_ v: UInt8, _ c: Int) -> Float {
        (Float(v) / 255 - mean[c]) / std[c]
    }

    /// Ground-truth masks as F-LMM's dataset transform gives them: nearest-resized to the
    /// resized image size (h_r, w_r) (F.interpolate mode 'nearest'). Output [N, h_r, w_r].
    public func resizeMasks(_ masks: [Mask]) -> Tensor {
        precondition(!masks.isEmpty, "ImagePreprocessor.resizeMasks: no masks")
        let h = masks[0].height, w = masks[0].width
        precondition(masks.allSatisfy { $0.height == h && $0.width == w }, "ImagePreprocessor.resizeMasks: masks differ in size")
        let x = Tensor(shape: [1, masks.count, h, w], data: masks.flatMap { $0.bits.map(Float.init) })
        let (hr, wr) = resizedShape(height: h, width: w)
        return Autograd.noGrad { interpolate(x, size: (hr, wr), mode: .nearest) }.reshape([masks.count, hr, wr])
    }
}
