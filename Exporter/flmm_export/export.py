"""The export loop: data samples -> family preprocessing -> one forward with row capture ->
GroundingCache records.

Per sample (batch 1): ``input_ids`` [1, S] with the image tokens expanded, ``mask_ids`` [S];
rows = positions with mask_id >= 0 (sequence order), cols = positions with
``input_ids == image_token_id`` (K_i of them, in sequence order).  The forward runs with an
all-ones attention mask (as F-LMM), ``output_hidden_states=True`` and ``logits_to_keep=1``;
the capture keeps attention [R, L, NH, K_i] and the hidden states ``hidden_states[1:]`` at the
rows, [R, L, d].
"""
from __future__ import annotations

import platform
import sys
import time

import numpy as np
import torch

from . import capture
from .deepseek_vl import DeepseekVL
from .llava import Llava
from .llava_next import LlavaNext
from .writer import CacheHeader, CacheWriter

FAMILIES = {"deepseek_vl": DeepseekVL, "llava": Llava, "llava_next": LlavaNext}
MODEL_CLASSES = {"deepseek_vl": "DeepseekVLForConditionalGeneration", "llava": "LlavaForConditionalGeneration",
                 "llava_next": "LlavaNextForConditionalGeneration"}
MODEL_TYPES = {"deepseek_vl": "deepseek_vl", "llava": "llava", "llava_next": "llava_next"}


def load_model(model_id: str, family: str, dtype: torch.dtype, device: str):
    """The HF model (eager attention everywhere, then the row capture on the text model) and tokenizer."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    try:
        cfg = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--model {model_id}: cannot load its config.json ({str(e).splitlines()[0][:300]})")
    if cfg.model_type != MODEL_TYPES[family]:
        raise SystemExit(f"{model_id}: config model_type is '{cfg.model_type}', expected '{MODEL_TYPES[family]}' "
                         f"for --family {family}")
    cls = getattr(transformers, MODEL_CLASSES[family])
    model = cls.from_pretrained(model_id, dtype=dtype, attn_implementation="eager").to(device).eval()
    return model, AutoTokenizer.from_pretrained(model_id)


def run_sample(model, fam, sample, device):
    """-> (record dict without sam, timing)."""
    image = sample.image()
    prep = fam.prepare(sample, image)
    ids = prep.input_ids.to(device)
    rows = torch.nonzero(prep.mask_ids >= 0)[:, 0]
    cols = torch.nonzero(prep.input_ids[0] == fam.image_token_id)[:, 0]
    if len(cols) != prep.image_token_count:
        raise RuntimeError(f"{sample.source}: {len(cols)} image tokens in the sequence, expected {prep.image_token_count}")
    px = {k: (v.to(device, model.dtype) if v.is_floating_point() else v.to(device)) for k, v in prep.pixel_inputs.items()}
    with torch.no_grad(), capture.capturing(rows.to(device), cols.to(device), fam.num_layers) as cap:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True,
                    logits_to_keep=1, use_cache=False, **px)
    attention = cap.stacked().cpu()                                        # [R, L, NH, K_i]
    r = rows.to(device)                                                   # [R, L, d], hidden_states[1:]
    hidden = torch.stack([hs[0].index_select(0, r) for hs in out.hidden_states[1:]], 1).cpu()
    h, w = image.size[1], image.size[0]
    mids = prep.mask_ids.numpy()
    return dict(sample_index=sample.index, image=np.asarray(image, np.uint8), masks=sample.masks(h, w),
                phrase_kinds=sample.phrase_kinds, phrase_texts=sample.phrase_texts,
                token_ids=prep.input_ids[0].numpy(), mask_ids=mids, row_positions=rows.numpy(),
                row_mask_ids=mids[rows.numpy()], attention=attention, hidden=hidden, padding=prep.padding,
                fine_grid=prep.fine_grid)


def export(model, tokenizer, family: str, model_id: str, samples, out: str, *, store="rows", sam=None,
           split="val", provenance=None, template=None, prompt=None, deflate=1, fine_grid="largest", log=print):
    """Write the cache for ``samples``; returns stats (samples, seconds, bytes).

    ``fine_grid`` (LLaVA-NeXT): the global fine grid that sizes ``image_token`` -- "largest":
    the largest sample's (SCHEMA.md); "max": the largest any image can get, so that the train
    and val caches of one model have the same layout attributes.
    """
    import os
    import transformers
    fam = FAMILIES[family](model, tokenizer, model_id, template=template, prompt=prompt)
    capture.install(model)
    device = next(model.parameters()).device
    # K is sized for the largest sample (LLaVA-NeXT: from the image sizes alone).
    largest, kmax = None, -1
    for s in samples:
        k, fine = fam.image_token_count_for(*s.image_size())
        if k > kmax:
            kmax, largest = k, fine
    if fine_grid == "max" and hasattr(fam, "max_fine_grid"):
        largest = fam.max_fine_grid()
    elif fine_grid not in ("largest", "max"):
        raise ValueError(f"fine_grid: expected largest or max, found '{fine_grid}'")
    kind, attrs, layout = fam.header_layout(largest)
    hidden_enc = "bfloat16" if model.dtype == torch.bfloat16 else "float16"
    prov = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "dtype": str(model.dtype).replace("torch.", ""), "model_id": model_id, "family": family,
            "template": fam.template_name, "attention_implementation": "eager (row capture on the text model)",
            "exporter": "flmm_export (Exporter/ in the F-LMM Swift toolkit)", **(provenance or {})}
    if sam is not None:
        import segment_anything
        prov["segment_anything"] = getattr(segment_anything, "__version__", "unknown")
    header = CacheHeader(source_model=model_id, layout_kind=kind, layout_attrs=attrs, layout_name=layout.name,
                         maps_per_layer=len(layout.maps), num_layers=fam.num_layers, num_heads=fam.num_heads,
                         hidden_size=fam.hidden_size, num_image_tokens=layout.image_token_count, attention_form=store,
                         hidden_encoding=hidden_enc, split=split, sam=sam.summary if sam else None, provenance=prov)
    t0 = time.perf_counter()
    with CacheWriter(out, header, deflate=deflate) as w:
        for j, s in enumerate(samples):
            r = run_sample(model, fam, s, device)
            if sam is not None:
                r["sam"] = sam(r["image"])
            w.add(r)
            if log and (j + 1) % 50 == 0:
                log(f"{j + 1}/{len(samples)} samples, {(j + 1) / (time.perf_counter() - t0):.2f}/s", file=sys.stderr)
        path = w.close()
    dt = time.perf_counter() - t0
    return dict(samples=len(samples), seconds=dt, bytes=os.path.getsize(path), path=path)
