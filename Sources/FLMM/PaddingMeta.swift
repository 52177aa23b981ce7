// F-LMM's padding meta of a square-padded LMM image, and its unpadding rule
// (flmm-reference-notes §1.3 "Padding removal"): the mask head's prediction covers the padded
// square; F-LMM crops it back to the image region before the losses and the refiner.

import Tensors

/// F-LMM's `meta` of a padded LMM image.
public struct PaddingMeta: Sendable, Equatable {
    public let beforeHeight: Int, afterHeight: Int
    public let beforeWidth: Int, afterWidth: Int
    /// (h_r, w_r): the resized image before padding.
    public let imageHeight: Int, imageWidth: Int
    /// (P, P): the padded square.
    public let paddedHeight: Int, paddedWidth: Int

    public init(beforeHeight: Int, afterHeight: Int, beforeWidth: Int, afterWidth: Int,
                imageHeight: Int, imageWidth: Int, paddedHeight: Int, paddedWidth: Int) {
        precondition(beforeHeight + imageHeight + afterHeight == paddedHeight
                     && beforeWidth + imageWidth + afterWidth == paddedWidth,
                     "PaddingMeta: padding (\(beforeHeight), \(afterHeight), \(beforeWidth), \(afterWidth)) + image \(imageHeight)×\(imageWidth) ≠ padded \(paddedHeight)×\(paddedWidth)")
        self.beforeHeight = beforeHeight
        self.afterHeight = afterHeight
        self.beforeWidth = beforeWidth
        self.afterWidth = afterWidth
        self.imageHeight = imageHeight
        self.imageWidth = imageWidth
        self.paddedHeight = paddedHeight
        self.paddedWidth = paddedWidth
    }

    /// The image region of a map of size (Hm, Wm) covering the padded square, by F-LMM's rule:
    /// top = Int(before_h · Hm / P), left = Int(before_w · Wm / P) (truncation);
    /// height = Int(h_r · Hm / P + 0.5), width = Int(w_r · Wm / P + 0.5) (rounding).
    public func region(mapHeight hm: Int, mapWidth wm: Int) -> (top: Int, left: Int, height: Int, width: Int) {
        let top = Int(Double(beforeHeight) * Double(hm) / Double(paddedHeight))
        let left = Int(Double(beforeWidth) * Double(wm) / Double(paddedWidth))
        let h = Int(Double(imageHeight) * Double(hm) / Double(paddedHeight) + 0.5)
        let w = Int(Double(imageWidth) * Double(wm) / Double(paddedWidth) + 0.5)
        return (top, left, h, w)
    }

    /// `pred[..., top:top+h, left:left+w]` of a map [..., Hm, Wm] (differentiable crop).
    public func unpad(_ map: Tensor) -> Tensor {
        precondition(map.rank >= 2, "PaddingMeta.unpad: map \(map.shape) needs at least 2 dims")
        let r = region(mapHeight: map.shape[map.rank - 2], mapWidth: map.shape[map.rank - 1])
        return map.crop(top: r.top, left: r.left, height: r.height, width: r.width)
    }
}
