"""LLaVA-1.5 (``LlavaForConditionalGeneration``), F-LMM ``CustomLlavaImageProcessor``.

Resize the longest side to S = vision_config.image_size (PIL bicubic; the other side
``int(side * S / longest)``), pad to a centred S x S square with the mean colour
``int(mean * 255)``, rescale and normalise.  Grid g = S // patch_size, K = g^2 (strategy
"default" drops CLS).  Vicuna template, prompt "<image>\\nPlease give me a description of the image."
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from . import layouts
from .family import Family, FamilyError, normalize, padding_meta


def resize_longest_pad(image: Image.Image, size: int, mean, resize_sizes):
    """(padded uint8 [size, size, 3], padding meta).  resize_sizes(h, w) -> (new_h, new_w)."""
    w, h = image.size
    nh, nw = resize_sizes(h, w)
    img = np.asarray(image.resize((nw, nh), Image.BICUBIC), np.uint8)
    side = max(nh, nw)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.asarray([int(x * 255) for x in mean], np.uint8)
    bh, bw = (side - nh) // 2, (side - nw) // 2
    out[bh:bh + nh, bw:bw + nw] = img
    return out, padding_meta(bh, side - nh - bh, bw, side - nw - bw, nh, nw, side, side)


class Llava(Family):
    kind = "llava"
    default_template = "vicuna"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.require_default_feature_strategy()

    def preprocess(self, image):
        mean, std = self.mean_std()
        s = self.size

        def sizes(h, w):   # F-LMM: force the largest edge to size
            return (s, int(w * s / h)) if h > w else (int(h * s / w), s)

        padded, pad = resize_longest_pad(image, s, mean, sizes)
        if padded.shape[0] != s:
            raise FamilyError(f"padded image {padded.shape[0]} != vision image_size {s}")
        k = self.grid * self.grid
        return {"pixel_values": normalize(padded, mean, std)[None]}, pad, k, None

    def header_layout(self, largest_fine=None):
        g = self.grid
        return ("llava", dict(image_token_id=self.image_token_id, grid_height=g, grid_width=g, patch_size=self.patch),
                layouts.single("llava", "LLaVA-1.5", g, g))
