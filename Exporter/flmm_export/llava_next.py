"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``), F-LMM ``CustomLlavaNextImageProcessor``.

anyres with S = vision_config.image_size (crop size and base size):
* best = ``select_best_resolution((h, w), image_grid_pinpoints)``; resize to the patch output
  size (``min(ceil(side * scale), target)`` on the shorter-scaled side, PIL bicubic), pad with
  zeros to ``best`` centred (``pad // 2`` before), cut into S x S crops row-major;
* base image: the original resized (squashed) to S x S;
* pixel_values [1, 1 + crops, 3, S, S], image_sizes [[h, w]] (original size).

Image columns: ``[coarse g x g][fine Hf rows x (Wf + 1)]``, g = S // patch; (Hf, Wf) is the
crop grid (best // S) * g unpadded by transformers' rule (``int(round(h * cw / w, 7))``, then
``padding = (current - new) // 2`` removed on both sides).

Padding meta: F-LMM does not unpad LLaVA-NeXT's maps (the fine grid is already unpadded) and
compares the predictions with the masks resized to the anyres image size, so the cache stores
zero padding and resized = padded = the anyres patch output size (new_h, new_w).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import select_best_resolution

from . import layouts
from .family import Family, FamilyError, normalize, padding_meta


def patch_output_size(h, w, target):
    th, tw = target
    sw, sh = tw / w, th / h
    if sw < sh:
        return min(math.ceil(h * sw), th), tw
    return th, min(math.ceil(w * sh), tw)


def unpadded_grid(h, w, gh, gw):
    """transformers' unpad_image on a [gh, gw] feature grid for an original (h, w) image."""
    if w / h > gw / gh:
        new = int(round(h * (gw / w), 7))
        return gh - 2 * ((gh - new) // 2), gw
    new = int(round(w * (gh / h), 7))
    return gh, gw - 2 * ((gw - new) // 2)


class LlavaNext(Family):
    kind = "llava_next"
    default_template = "vicuna"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.pinpoints = [list(p) for p in self.config.image_grid_pinpoints]
        self.require_default_feature_strategy()
        if getattr(self.model.model, "image_newline", None) is None:
            raise FamilyError(f"{self.model_id}: the model has no image_newline (layout needs Wf + 1 columns per row)")
        for p in self.pinpoints:
            if p[0] % self.size or p[1] % self.size:
                raise FamilyError(f"{self.model_id}: image_grid_pinpoints {p} is not a multiple of image_size {self.size}")

    def fine_grid(self, h, w):
        bh, bw = select_best_resolution((h, w), self.pinpoints)
        return unpadded_grid(h, w, bh // self.size * self.grid, bw // self.size * self.grid)

    def max_fine_grid(self):
        """The largest fine grid any image can get (the pinpoint grid with the most columns, no
        unpadding): a file-independent ``image_token`` size, so that caches of one model match."""
        grids = [(p[0] // self.size * self.grid, p[1] // self.size * self.grid) for p in self.pinpoints]
        return max(grids, key=lambda g: (g[0] * (g[1] + 1), g))

    def image_token_count_for(self, height, width):
        fh, fw = self.fine_grid(height, width)
        return self.grid * self.grid + fh * (fw + 1), (fh, fw)

    def preprocess(self, image):
        mean, std = self.mean_std()
        s = self.size
        w, h = image.size
        best = select_best_resolution((h, w), self.pinpoints)
        nh, nw = patch_output_size(h, w, best)
        resized = np.asarray(image.resize((nw, nh), Image.BICUBIC), np.uint8)
        canvas = np.zeros((best[0], best[1], 3), np.uint8)
        bh, bw = (best[0] - nh) // 2, (best[1] - nw) // 2
        canvas[bh:bh + nh, bw:bw + nw] = resized
        crops = [canvas[i:i + s, j:j + s] for i in range(0, best[0], s) for j in range(0, best[1], s)]
        base = np.asarray(image.resize((s, s), Image.BICUBIC), np.uint8)
        pv = torch.stack([normalize(x, mean, std) for x in [base] + crops])[None]
        k, fine = self.image_token_count_for(h, w)
        return ({"pixel_values": pv, "image_sizes": torch.tensor([[h, w]])},
                padding_meta(0, 0, 0, 0, nh, nw, nh, nw), k, fine)

    def header_layout(self, largest_fine):
        g = self.grid
        fh, fw = largest_fine
        return ("llava_next", dict(image_token_id=self.image_token_id, grid_height=g, grid_width=g,
                                   fine_grid_height=fh, fine_grid_width=fw), layouts.llava_next(g, g, fh, fw))
