"""DeepSeek-VL 1.3B (``DeepseekVLForConditionalGeneration``), F-LMM's ``VLMImageProcessor``.

Resize to ``[max(int(h / longest * S), min_size), max(int(w / longest * S), min_size)]``
(PIL bicubic; S = vision_config.image_size), ``expand2square`` with the mean colour
``int(mean * 255)``, rescale and normalise.  Grid g = S // patch_size (SigLIP, no CLS), K = g^2.
Template "User: {input}\\n\\nAssistant:", prompt = N x "<image_placeholder>" + the description request.
"""
from __future__ import annotations

from . import layouts
from .family import DESCRIBE, Family, normalize
from .llava import resize_longest_pad


class DeepseekVL(Family):
    kind = "deepseek_vl"
    default_template = "deepseek"
    image_token = "<image_placeholder>"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.min_size = int(self.pre.get("min_size", 14))

    def default_prompt(self, n_image):
        return self.image_token * n_image + DESCRIBE

    def preprocess(self, image):
        mean, std = self.mean_std()
        s, ms = self.size, self.min_size

        def sizes(h, w):
            m = max(h, w)
            return max(int(h / m * s), ms), max(int(w / m * s), ms)

        padded, pad = resize_longest_pad(image, s, mean, sizes)
        k = self.grid * self.grid
        return {"pixel_values": normalize(padded, mean, std)[None]}, pad, k, None

    def header_layout(self, largest_fine=None):
        g = self.grid
        return ("deepseek_vl", dict(image_token_id=self.image_token_id, grid_height=g, grid_width=g),
                layouts.single("deepseek_vl", "DeepSeek-VL", g, g))
