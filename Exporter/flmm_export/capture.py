"""Row capture: keep only the phrase rows x image columns of each text-layer attention.

A custom attention function, registered with transformers' ``AttentionInterface`` (and, with
the eager mask builder, with ``AttentionMaskInterface``: without a mask function registered
under the same name the model would run without its causal mask), runs the text layer's own
``eager_attention_forward`` (from the layer's modeling module) and slices its probabilities
``attn_weights[0][:, rows][:, :, cols]`` -> [NH, R, K].  It is set on the text model only
(``set_attn_implementation({"text_config": NAME})``); the vision tower stays eager.  The
values are the eager ones bit for bit; only one layer's [NH, S, S] exists at a time.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import torch

NAME = "flmm_row_capture"
_active: "RowCapture | None" = None


class RowCapture:
    """Holds the rows/cols to keep during one forward and the captured [NH, R, K] per layer."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, num_layers: int):
        self.rows, self.cols, self.num_layers = rows, cols, num_layers
        self.layers: dict[int, torch.Tensor] = {}

    def stacked(self) -> torch.Tensor:
        """[R, L, NH, K] in the model dtype (the cache's row order)."""
        missing = [i for i in range(self.num_layers) if i not in self.layers]
        if missing:
            raise RuntimeError(f"row capture: no attention captured for text layers {missing}; "
                               "the text model does not route its attention through AttentionInterface")
        return torch.stack([self.layers[i] for i in range(self.num_layers)]).permute(2, 0, 1, 3).contiguous()


def _eager_for(module):
    mod = sys.modules.get(type(module).__module__)
    fn = getattr(mod, "eager_attention_forward", None)
    if fn is None:
        raise RuntimeError(f"row capture: {type(module).__name__} ({type(module).__module__}) "
                           "has no eager_attention_forward to run")
    return fn


def capture_attention(module, query, key, value, attention_mask, **kwargs):
    """The registered attention function: eager attention, then keep rows x cols."""
    if _active is None:
        raise RuntimeError(f"attention implementation '{NAME}' called outside flmm_export.capture.capturing()")
    kwargs.pop("output_attentions", None)
    out, weights = _eager_for(module)(module, query, key, value, attention_mask, **kwargs)
    if weights.shape[0] != 1:
        raise RuntimeError(f"row capture expects batch size 1, found {weights.shape[0]}")
    _active.layers[module.layer_idx] = weights[0].index_select(1, _active.rows).index_select(2, _active.cols)
    return out, None


def register() -> str:
    """Register the function and its mask builder (the eager one) under NAME; returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    AttentionInterface.register(NAME, capture_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    return NAME


def install(model) -> None:
    """Set the capture on the text model only (vision tower and projector stay as loaded)."""
    register()
    model.set_attn_implementation({"text_config": NAME})
    impl = model.config.text_config._attn_implementation
    if impl != NAME:
        raise RuntimeError(f"could not set attention '{NAME}' on the text model (found '{impl}')")


@contextmanager
def capturing(rows: torch.Tensor, cols: torch.Tensor, num_layers: int):
    """Activate a RowCapture for one forward pass."""
    global _active
    if _active is not None:
        raise RuntimeError("row capture already active")
    _active = RowCapture(rows, cols, num_layers)
    try:
        yield _active
    finally:
        _active = None
