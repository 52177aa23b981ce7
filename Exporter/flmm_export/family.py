"""What every family shares: F-LMM's prompt and phrase tokenisation, pixel normalisation.

Sequence (F-LMM ``RefCOCO2PNG.transform_concat`` / ``PNGDataset.__getitem__``)::

    input_ids = tokenizer.encode(TEMPLATE.format(input=PROMPT), add_special_tokens=True)
              + for each segment: tokenizer.encode(text, add_special_tokens=False)
                                  [+ the '.' token when the source separates phrases]
    mask_ids  = -1 for the prompt, the segment's phrase index (or -1) for its tokens, -1 for '.'

The phrases sit in the assistant slot (after the template's assistant tag).  The prompt's
image token is expanded to the family's N image tokens (or, for DeepSeek-VL, the prompt
already holds N placeholders), so image positions are ``input_ids == image_token_id`` and
mask_ids align with input_ids one to one.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

# xtuner PROMPT_TEMPLATE INSTRUCTION strings used by F-LMM's configs.
TEMPLATES = {
    "vicuna": "USER: {input} ASSISTANT:",
    "mistral": "[INST] {input} [/INST]",
    "deepseek": "User: {input}\n\nAssistant:",
}
DESCRIBE = "Please give me a description of the image."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FamilyError(ValueError):
    pass


@dataclass
class Prepared:
    """One sample ready for the forward pass (batch 1)."""
    input_ids: torch.Tensor      # [1, S] long
    mask_ids: torch.Tensor       # [S] long
    pixel_inputs: dict           # pixel_values [1, ...], (image_sizes)
    padding: dict                # writer.PADDING_KEYS
    image_token_count: int       # K_i
    fine_grid: tuple | None      # (Hf, Wf) for LLaVA-NeXT


def padding_meta(bh, ah, bw, aw, rh, rw, ph, pw) -> dict:
    return dict(padding_before_height=bh, padding_after_height=ah, padding_before_width=bw, padding_after_width=aw,
                resized_height=rh, resized_width=rw, padded_height=ph, padded_width=pw)


def read_preprocessor_config(model_id: str) -> dict:
    """The model's preprocessor_config.json if there is one (local folder or HF cache), else {}."""
    path = os.path.join(model_id, "preprocessor_config.json")
    if not os.path.isdir(model_id):
        try:
            from transformers.utils import cached_file
            path = cached_file(model_id, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        except Exception:
            path = None
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise FamilyError(f"{path}: not valid JSON ({e})")


def normalize(img: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] as transformers' rescale (float64 * 1/255 -> float32)
    then normalize ((x - mean) / std in float32)."""
    x = (img.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class Family:
    """Base: subclasses set ``kind``, ``template``, ``prompt`` and implement ``preprocess``."""
    kind = ""
    default_template = "vicuna"
    image_token = "<image>"

    def __init__(self, model, tokenizer, model_id: str, template: str | None = None, prompt: str | None = None):
        self.model, self.tokenizer, self.model_id = model, tokenizer, model_id
        self.config = model.config
        self.pre = read_preprocessor_config(model_id)
        tname = template or self.default_template
        if tname not in TEMPLATES:
            raise FamilyError(f"--template: expected one of {sorted(TEMPLATES)}, found '{tname}'")
        self.template_name, self.template = tname, TEMPLATES[tname]
        self.prompt = prompt
        self.image_token_id = int(self.config.image_token_id)
        tc = self.config.text_config
        self.num_layers, self.num_heads, self.hidden_size = tc.num_hidden_layers, tc.num_attention_heads, tc.hidden_size
        vc = self.config.vision_config
        self.size, self.patch = int(vc.image_size), int(vc.patch_size)   # vision input side, patch
        self.grid = self.size // self.patch                                # g: the g x g image-token grid
        tok = getattr(tokenizer, "image_token", None) or self.image_token
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid != self.image_token_id:
            raise FamilyError(f"{model_id}: tokenizer's image token '{tok}' has id {tid}, expected "
                              f"config.image_token_id = {self.image_token_id}")
        self.image_token = tok
        ids = tokenizer.encode(".", add_special_tokens=False)
        if not ids:
            raise FamilyError(f"{model_id}: the tokenizer encodes '.' to no token")
        self.split_token_id = ids[-1]

    def require_default_feature_strategy(self):
        """F-LMM's LLaVA models use vision_feature_select_strategy 'default' (g*g tokens, no CLS)."""
        strategy = getattr(self.config, "vision_feature_select_strategy", "default")
        if strategy != "default":
            raise FamilyError(f"{self.model_id}: vision_feature_select_strategy '{strategy}' is not supported "
                              "(F-LMM's LLaVA models use 'default': g*g tokens without CLS)")

    def mean_std(self):
        return tuple(self.pre.get("image_mean", CLIP_MEAN)), tuple(self.pre.get("image_std", CLIP_STD))

    def default_prompt(self, n_image: int) -> str:
        return self.image_token + "\n" + DESCRIBE

    def sequence(self, segments, separator: bool, n_image: int):
        """(input_ids [S], mask_ids [S]) lists with the image token expanded to n_image copies."""
        text = self.template.format(input=self.prompt if self.prompt is not None else self.default_prompt(n_image))
        prompt = self.tokenizer.encode(text, add_special_tokens=True)
        c = sum(1 for t in prompt if t == self.image_token_id)
        if c == 1 and n_image != 1:
            j = prompt.index(self.image_token_id)
            prompt = prompt[:j] + [self.image_token_id] * n_image + prompt[j + 1:]
        elif c != n_image:
            raise FamilyError(f"prompt {text[:60]!r}...: expected 1 or {n_image} image tokens "
                              f"(id {self.image_token_id}), found {c}")
        ids, mids = list(prompt), [-1] * len(prompt)
        for seg_text, mask_id in segments:
            t = self.tokenizer.encode(seg_text, add_special_tokens=False)
            if self.image_token_id in t:
                raise FamilyError(f"phrase {seg_text!r} contains the image token")
            ids += t
            mids += [mask_id] * len(t)
            if separator:
                ids.append(self.split_token_id)
                mids.append(-1)
        return ids, mids

    def prepare(self, sample, image) -> Prepared:
        pixel_inputs, padding, k, fine = self.preprocess(image)
        ids, mids = self.sequence(sample.segments, sample.separator, k)
        return Prepared(torch.tensor([ids]), torch.tensor(mids), pixel_inputs, padding, k, fine)

    # Subclasses ------------------------------------------------------------------------
    def preprocess(self, image):
        """PIL RGB image -> (pixel inputs, padding meta, K_i, fine grid or None)."""
        raise NotImplementedError

    def image_token_count_for(self, height: int, width: int) -> tuple[int, tuple | None]:
        """K_i and the fine grid from the original size alone (no pixels): g*g and none for a
        single-grid family; LLaVA-NeXT overrides it."""
        return self.grid * self.grid, None

    def header_layout(self, largest_fine: tuple | None):
        """(layout_kind, layout attrs, Layout)."""
        raise NotImplementedError
