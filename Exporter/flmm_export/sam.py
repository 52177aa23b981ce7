"""SAM image embeddings (optional): segment_anything's ``SamPredictor.set_image`` --
ResizeLongestSide to ``image_encoder.img_size`` (1024), normalise, pad, image encoder ->
``features`` [1, C, e, e] (256 x 64 x 64 for the official models).  Stored as float16."""
from __future__ import annotations

import numpy as np
import torch


class SamEmbedder:
    def __init__(self, sam, name: str, device="cpu"):
        from segment_anything import SamPredictor
        self.sam = sam.to(device).eval()
        self.name = name
        self.predictor = SamPredictor(self.sam)
        enc = self.sam.image_encoder
        self.img_size = int(enc.img_size)
        c = enc.neck[-1].weight.shape[0]                      # out_chans (256 for the official models)
        e = self.img_size // enc.patch_embed.proj.kernel_size[0]
        self.summary = dict(model=name, embedding_dim=int(c), embedding_height=e, embedding_width=e,
                            img_size=self.img_size, encoding="float16")

    @torch.no_grad()
    def __call__(self, image_rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float32 [C, e, e]."""
        self.predictor.set_image(image_rgb, image_format="RGB")
        return self.predictor.features[0].float().cpu()


def load_sam(model_name: str, checkpoint: str, device="cpu") -> SamEmbedder:
    try:
        from segment_anything import sam_model_registry
    except ImportError:
        raise SystemExit("--sam-checkpoint needs segment_anything: pip install segment-anything")
    if model_name not in ("vit_b", "vit_l", "vit_h"):
        raise SystemExit(f"--sam-model: expected vit_b, vit_l or vit_h, found '{model_name}'")
    try:
        sam = sam_model_registry[model_name](checkpoint=checkpoint)
    except FileNotFoundError:
        raise SystemExit(f"{checkpoint}: SAM checkpoint not found")
    except RuntimeError as e:
        raise SystemExit(f"{checkpoint}: does not load as SAM {model_name} ({str(e)[:300]})")
    return SamEmbedder(sam, model_name, device)
