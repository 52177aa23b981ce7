"""Tiny random models of the three families and small data fixtures, built offline.

Models: 3 text layers x 4 heads (2 KV heads), hidden 32, vocab 128; a 2-layer vision tower
at 32 x 32 px with 8 px patches (4 x 4 grid); LLaVA-NeXT pinpoints [[32, 64], [64, 32], [64, 64]].
Weights from torch.manual_seed(seed); saved with a word-level tokenizer so that
``from_pretrained(folder)`` works exactly as for a hub model.
"""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import torch
from PIL import Image

WORDS = ("USER ASSISTANT INST User Assistant : [ ] / . , Please give me a description of the image "
         "the red cup a blue square man on left right dog and two cats sky tree next to small big "
         "person in picture white car green").split()
SPECIALS = ["<unk>", "<s>", "</s>", "<image>", "<image_placeholder>"]


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=["<image>", "<image_placeholder>"])


def _text():
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=False)


def _clip():
    from transformers import CLIPVisionConfig
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=32)


def build(family: str, folder: str, seed: int = 0) -> str:
    """Save a tiny random model of ``family`` (+ tokenizer, preprocessor config) to ``folder``."""
    import transformers as tf
    torch.manual_seed(seed)
    tok = tokenizer()
    if family == "llava":
        cfg = tf.LlavaConfig(vision_config=_clip(), text_config=_text(), image_token_id=3, vision_feature_layer=-2,
                             vision_feature_select_strategy="default")
        model = tf.LlavaForConditionalGeneration(cfg)
        pre = {}
    elif family == "llava_next":
        cfg = tf.LlavaNextConfig(vision_config=_clip(), text_config=_text(), image_token_id=3, vision_feature_layer=-2,
                                 vision_feature_select_strategy="default",
                                 image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]])
        model = tf.LlavaNextForConditionalGeneration(cfg)
        pre = {}
    elif family == "deepseek_vl":
        vc = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   image_size=32, patch_size=8)
        cfg = tf.DeepseekVLConfig(vision_config=vc.to_dict(), text_config=_text().to_dict(), image_token_id=4)
        model = tf.DeepseekVLForConditionalGeneration(cfg)
        pre = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "min_size": 14}
    else:
        raise ValueError(family)
    with torch.no_grad():   # random init at a larger scale, so that attention is far from uniform
        for p in model.parameters():
            p.normal_(0, 0.3) if p.dim() > 1 else None
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if pre:
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(pre, f)
    return folder


# -- data fixtures --------------------------------------------------------------------------
SIZES = [(40, 56), (64, 30), (33, 33)]          # (H, W)


def _image(path, h, w, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _poly(h, w, k):
    """A rectangle polygon inside an h x w image (COCO flat [x, y, ...])."""
    x0, y0 = 2 + k, 3 + k
    x1, y1 = w * 0.6 + k, h * 0.7
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def json_fixture(folder, sizes=SIZES) -> str:
    from pycocotools import mask as cocomask
    os.makedirs(folder, exist_ok=True)
    images = []
    for i, (h, w) in enumerate(sizes):
        _image(os.path.join(folder, f"img{i}.png"), h, w, i)
        m = np.zeros((h, w), np.uint8, order="F")
        m[h // 2:, : w // 3] = 1
        rle = cocomask.encode(np.asfortranarray(m))
        phrases = [{"text": "the red cup", "mask": _poly(h, w, 0)},
                   {"text": "a blue square on the left", "mask": {"size": [h, w], "counts": rle["counts"].decode()},
                    "kind": 1}]
        if i == 1:
            phrases.append({"text": "two cats", "mask": _poly(h, w, 4), "kind": 2})
        images.append({"file": f"img{i}.png", "phrases": phrases})
    path = os.path.join(folder, "data.json")
    with open(path, "w") as f:
        json.dump({"images": images}, f)
    return path


def refcoco_fixture(root) -> str:
    """root/refcoco/{instances.json, refs(unc).p}, root/train2014/*.jpg -> returns root/refcoco."""
    d, imgdir = os.path.join(root, "refcoco"), os.path.join(root, "train2014")
    os.makedirs(d, exist_ok=True)
    os.makedirs(imgdir, exist_ok=True)
    images, anns, refs = [], [], []
    for i, (h, w) in enumerate(SIZES):
        fn = f"COCO_train2014_{i:012d}.jpg"
        _image(os.path.join(imgdir, fn), h, w, 10 + i)
        images.append({"id": 100 + i, "file_name": fn, "height": h, "width": w})
        for k in range(2):
            aid = 1000 + 10 * i + k
            anns.append({"id": aid, "image_id": 100 + i, "category_id": 1, "segmentation": _poly(h, w, 3 * k),
                         "area": 1.0, "bbox": [0, 0, 1, 1], "iscrowd": 0})
            refs.append({"ref_id": len(refs), "ann_id": aid, "image_id": 100 + i, "category_id": 1,
                         "split": "val" if i < 2 else "train", "file_name": fn,
                         "sentences": [{"raw": f"The Man on the {'left' if k == 0 else 'right'}", "sent": "", "tokens": []},
                                       {"raw": "small person", "sent": "", "tokens": []}]})
    with open(os.path.join(d, "instances.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}, f)
    with open(os.path.join(d, "refs(unc).p"), "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return d


def png_fixture(root) -> str:
    """root/annotations/{png_coco_val2017.json, panoptic_val2017.json, panoptic_val2017/}, root/val2017/."""
    ann, imgdir = os.path.join(root, "annotations"), os.path.join(root, "val2017")
    pdir = os.path.join(ann, "panoptic_val2017")
    for x in (ann, imgdir, pdir):
        os.makedirs(x, exist_ok=True)
    images, annotations, narratives = [], [], []
    for i, (h, w) in enumerate(SIZES[:2]):
        fn = f"{i:012d}.jpg"
        _image(os.path.join(imgdir, fn), h, w, 20 + i)
        ids = np.zeros((h, w), np.int64)
        ids[: h // 2] = 7 + 256 * 1           # segment 263: top half
        ids[h // 2:, : w // 2] = 5 + 65536     # segment 65541: bottom left
        ids[h // 2:, w // 2:] = 9             # segment 9
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(pdir, f"{i:012d}.png"))
        images.append({"id": 500 + i, "file_name": fn, "height": h, "width": w})
        annotations.append({"image_id": 500 + i, "file_name": f"{i:012d}.png",
                            "segments_info": [{"id": 263, "category_id": 1}, {"id": 65541, "category_id": 2},
                                              {"id": 9, "category_id": 2}]})
        narratives.append({"image_id": str(500 + i), "segments": [
            {"utterance": "In the picture", "segment_ids": [], "plural": False},
            {"utterance": "the sky", "segment_ids": ["263"], "plural": False},
            {"utterance": "and", "segment_ids": [], "plural": False},
            {"utterance": "two cats", "segment_ids": ["65541", "9"], "plural": True}]})
    narratives.append({"image_id": "500", "segments": [{"utterance": "nothing", "segment_ids": [], "plural": False}]})
    with open(os.path.join(ann, "png_coco_val2017.json"), "w") as f:
        json.dump(narratives, f)
    with open(os.path.join(ann, "panoptic_val2017.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "isthing": 0}, {"id": 2, "isthing": 1}]}, f)
    return root


def tiny_sam(seed: int = 0, img_size: int = 64, patch: int = 16, out_chans: int = 16):
    """A tiny random segment_anything Sam (default: 64 px, 16 px patches -> 16 x 4 x 4 embedding;
    ``tiny_sam(img_size=128, patch=8, out_chans=64)`` has the toolkit's TinySAM embedding, 64 x 16 x 16)."""
    from functools import partial
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    torch.manual_seed(seed)
    e = img_size // patch
    enc = ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                          out_chans=out_chans, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                          use_rel_pos=True, window_size=2, global_attn_indexes=(1,))
    pe = PromptEncoder(embed_dim=out_chans, image_embedding_size=(e, e), input_image_size=(img_size, img_size),
                       mask_in_chans=4)
    md = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=out_chans, mlp_dim=32,
                                                                           num_heads=2),
                     transformer_dim=out_chans, iou_head_depth=1, iou_head_hidden_dim=16)
    return Sam(image_encoder=enc, prompt_encoder=pe, mask_decoder=md).eval()


def main(argv=None):
    """python -m tests.tiny DIR [--images N --size HxW]: the three tiny models and the fixtures in DIR
    (DIR/{deepseek_vl,llava,llava_next}, DIR/json/data.json, DIR/coco/refcoco, DIR/png)."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m tests.tiny", description=main.__doc__)
    p.add_argument("dir")
    p.add_argument("--images", type=int, default=0, help="JSON fixture with N images of --size (default: 3 small)")
    p.add_argument("--size", default="480x640", help="HxW of the --images images")
    a = p.parse_args(argv)
    for f in ("deepseek_vl", "llava", "llava_next"):
        build(f, os.path.join(a.dir, f))
    h, w = (int(x) for x in a.size.split("x"))
    print(json_fixture(os.path.join(a.dir, "json"), [(h, w)] * a.images if a.images else SIZES))
    refcoco_fixture(os.path.join(a.dir, "coco"))
    png_fixture(os.path.join(a.dir, "png"))


if __name__ == "__main__":
    main()
