"""Data readers: RefCOCO/+/g, Panoptic Narrative Grounding (PNG) and a plain JSON format.

Each reader returns a list of ``Sample``: an image file, the text segments in order (each with
its phrase index, or -1 for words that ground nothing), whether F-LMM appends the '.' token
after each segment, and the phrases' texts, kinds and masks (decoded lazily).

RefCOCO (``refcoco:DIR``, DIR holding ``instances.json`` and ``refs(unc).p`` / ``refs(umd).p``
/ ``refs(google).p``; images in ``--image-dir``, default ``DIR/../train2014``): the refs of
``--split`` grouped per image as mmdet's ``RefCocoDataset`` (refs sharing an ``ann_id`` keep
the last ref; images in order of first appearance).  Protocol ``select_first``: the first
sentence of each object (F-LMM's evaluation); ``all``: every sentence, each a phrase with the
object's mask.  Sentences are ``raw.lower()``.  Masks: the instance's polygons/RLE (pycocotools).
One sample per image with all its phrases (F-LMM training, ``RefCOCO2PNG(concat=True)``), or
with ``per_phrase`` one sample per phrase (F-LMM's evaluation, ``concat=False``).
Phrase kind: 0 (RefCOCO does not label it).  The refs pickle is read with an unpickler that
refuses every class (the files hold only lists, dicts, strings and numbers).

PNG (``png:ROOT``; defaults ``ROOT/annotations/png_coco_{split}2017.json``,
``ROOT/annotations/panoptic_{split}2017.json``, ``ROOT/annotations/panoptic_{split}2017/``,
``ROOT/{split}2017/``): each narrative's segments in order; a segment with ``segment_ids`` is a
phrase whose mask is the union of those panoptic segments (PNG id = R + 256 G + 256^2 B), the
others are context words (mask id -1); no '.' separators (F-LMM ``PNGDataset``).  Narratives
without any grounded segment are skipped.  Kind: 2 (plural) when ``plural`` is true, else 0.

JSON (``json:FILE``)::

    {"images": [{"file": "a.jpg",                      # relative to FILE's folder, or absolute
                 "phrases": [{"text": "the red cup",
                              "mask": [[x0, y0, x1, y1, ...], ...]   # COCO polygons, or
                                   # {"size": [h, w], "counts": "..." | [...]}  (COCO RLE)
                              "kind": 0}]}]}                          # optional 0/1/2

One sample per image; phrases separated by '.' as RefCOCO.
"""
from __future__ import annotations

import io
import json
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image


class DataError(ValueError):
    """Bad input data; the message names the file, the field, expected and found."""


@dataclass
class Sample:
    index: int
    image_path: str
    segments: list                      # [(text, phrase index or -1)]
    separator: bool                     # append '.' after each segment (RefCOCO2PNG) or not (PNG)
    phrase_texts: list
    phrase_kinds: list
    masks_fn: Callable = field(repr=False, default=None)   # (H, W) -> [M, H, W] uint8
    source: str = ""

    def image(self) -> Image.Image:
        try:
            with Image.open(self.image_path) as im:
                return im.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"{self.image_path}: cannot read image ({e}) [{self.source}]")

    def image_size(self) -> tuple[int, int]:
        """(H, W) without decoding the pixels."""
        try:
            with Image.open(self.image_path) as im:
                return im.size[1], im.size[0]
        except (OSError, ValueError) as e:
            raise DataError(f"{self.image_path}: cannot read image ({e}) [{self.source}]")

    def masks(self, h: int, w: int) -> np.ndarray:
        m = self.masks_fn(h, w)
        if m.shape != (len(self.phrase_texts), h, w):
            raise DataError(f"{self.source}: masks: expected [{len(self.phrase_texts)}, {h}, {w}], found {list(m.shape)}")
        return m


def _load_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found")
    except ValueError as e:
        raise DataError(f"{path}: {what} is not valid JSON ({e})")


def decode_mask(seg, h: int, w: int, where: str) -> np.ndarray:
    """COCO polygons (list of flat [x, y, ...] lists) or RLE dict -> [h, w] uint8."""
    from pycocotools import mask as cocomask
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, (list, tuple))]
        if len(polys) != len(seg) or not polys or any(len(p) < 6 or len(p) % 2 for p in polys):
            raise DataError(f"{where}: expected a list of polygons [x0, y0, x1, y1, ...] (>= 3 points each) "
                            f"or an RLE dict, found {str(seg)[:80]}")
        rle = cocomask.merge(cocomask.frPyObjects([[float(v) for v in p] for p in polys], h, w))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [h, w]:
            raise DataError(f"{where}: RLE size {seg['size']} does not match the image {h}x{w}")
        rle = cocomask.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else \
            {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
    else:
        raise DataError(f"{where}: expected a list of polygons or an RLE dict {{size, counts}}, found {str(seg)[:80]}")
    return (cocomask.decode(rle) > 0).astype(np.uint8)


def _split_per_phrase(samples):
    out = []
    for s in samples:
        for m, text in enumerate(s.phrase_texts):
            fn = (lambda f, m: lambda h, w: f(h, w)[m:m + 1])(s.masks_fn, m)
            out.append(Sample(len(out), s.image_path, [(text, 0)], s.separator, [text], [s.phrase_kinds[m]], fn,
                              f"{s.source} phrase {m}"))
    return out


# -- RefCOCO --------------------------------------------------------------------------------
class _NoClassUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refs pickle refers to {module}.{name}; only plain data is allowed")


def _load_refs(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: refs file not found")
    for enc in ("ASCII", "latin1"):
        try:
            return _NoClassUnpickler(io.BytesIO(data), encoding=enc).load()
        except UnicodeDecodeError:
            continue
        except Exception as e:
            raise DataError(f"{path}: not a refs pickle ({e})")
    raise DataError(f"{path}: cannot decode the refs pickle")


def read_refcoco(root, split="val", protocol="select_first", image_dir=None, refs_file=None, per_phrase=False):
    if protocol not in ("select_first", "all"):
        raise DataError(f"--protocol: expected select_first or all, found '{protocol}'")
    if refs_file is None:
        found = [os.path.join(root, f) for f in ("refs(unc).p", "refs(umd).p", "refs(google).p")
                 if os.path.exists(os.path.join(root, f))]
        if not found:
            raise DataError(f"{root}: no refs(unc).p, refs(umd).p or refs(google).p (or pass --refs-file)")
        refs_file = found[0]
    ann_file = os.path.join(root, "instances.json")
    image_dir = image_dir or os.path.join(os.path.dirname(os.path.abspath(root)), "train2014")
    refs = _load_refs(refs_file)
    inst = _load_json(ann_file, "instances file")
    for key in ("images", "annotations"):
        if not isinstance(inst, dict) or not isinstance(inst.get(key), list):
            raise DataError(f"{ann_file}: field '{key}': expected a list")
    if not isinstance(refs, list):
        raise DataError(f"{refs_file}: expected a list of refs, found {type(refs).__name__}")
    anns = {a["id"]: a for a in inst["annotations"]}
    imgs = {i["id"]: i for i in inst["images"]}
    by_ann, order = OrderedDict(), []
    for j, ref in enumerate(refs):
        for key in ("ann_id", "image_id", "split", "sentences"):
            if key not in ref:
                raise DataError(f"{refs_file}: refs[{j}]: missing field '{key}'")
        if ref["split"] != split:
            continue
        if ref["ann_id"] not in anns:
            raise DataError(f"{refs_file}: refs[{j}]: ann_id {ref['ann_id']} is not in {ann_file}")
        by_ann[ref["ann_id"]] = ref
    per_image = OrderedDict()
    for ann_id, ref in by_ann.items():
        per_image.setdefault(ref["image_id"], []).append(ref)
    if not per_image:
        splits = sorted({str(r.get("split")) for r in refs})
        raise DataError(f"{refs_file}: no refs in split '{split}' (splits: {', '.join(splits)})")
    samples = []
    for image_id, rs in per_image.items():
        if image_id not in imgs:
            raise DataError(f"{ann_file}: images: no image with id {image_id} (referenced by {refs_file})")
        info = imgs[image_id]
        texts, segs = [], []
        for ref in rs:
            sents = [s["raw"].lower() for s in ref["sentences"]]
            if not sents:
                raise DataError(f"{refs_file}: ref {ref.get('ref_id')}: no sentences")
            for t in (sents[:1] if protocol == "select_first" else sents):
                texts.append(t)
                segs.append(anns[ref["ann_id"]]["segmentation"])

        def masks(h, w, segs=segs, where=f"{ann_file} image {image_id}"):
            return np.stack([decode_mask(s, h, w, f"{where} segmentation") for s in segs])

        samples.append(Sample(len(samples), os.path.join(image_dir, info["file_name"]),
                              [(t, m) for m, t in enumerate(texts)], True, texts, [0] * len(texts), masks,
                              f"{refs_file} image {image_id}"))
    return _split_per_phrase(samples) if per_phrase else samples


# -- PNG ------------------------------------------------------------------------------------
def read_png(root, split="val", narratives=None, panoptic_json=None, panoptic_dir=None, image_dir=None):
    ann = os.path.join(root, "annotations")
    narratives = narratives or os.path.join(ann, f"png_coco_{split}2017.json")
    panoptic_json = panoptic_json or os.path.join(ann, f"panoptic_{split}2017.json")
    panoptic_dir = panoptic_dir or os.path.join(ann, f"panoptic_{split}2017")
    image_dir = image_dir or os.path.join(root, f"{split}2017")
    data = _load_json(narratives, "PNG narratives")
    pan = _load_json(panoptic_json, "panoptic annotations")
    if not isinstance(data, list):
        raise DataError(f"{narratives}: expected a list of narratives, found {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(pan, dict) or not isinstance(pan.get(key), list):
            raise DataError(f"{panoptic_json}: field '{key}': expected a list")
    imgs = {i["id"]: i for i in pan["images"]}
    pans = {a["image_id"]: a for a in pan["annotations"]}
    samples = []
    for j, d in enumerate(data):
        where = f"{narratives}[{j}]"
        if "image_id" not in d or not isinstance(d.get("segments"), list):
            raise DataError(f"{where}: expected fields 'image_id' and 'segments' (list)")
        image_id = int(d["image_id"])
        if image_id not in imgs or image_id not in pans:
            raise DataError(f"{panoptic_json}: no image/annotation with id {image_id} (from {where})")
        segs, texts, kinds, ids = [], [], [], []
        for k, s in enumerate(d["segments"]):
            if "utterance" not in s or not isinstance(s.get("segment_ids"), list):
                raise DataError(f"{where}.segments[{k}]: expected fields 'utterance' and 'segment_ids' (list)")
            if s["segment_ids"]:
                segs.append((s["utterance"], len(texts)))
                texts.append(s["utterance"])
                kinds.append(2 if s.get("plural") else 0)
                ids.append([int(x) for x in s["segment_ids"]])
            else:
                segs.append((s["utterance"], -1))
        if not texts:
            continue
        png_path = os.path.join(panoptic_dir, pans[image_id]["file_name"])

        def masks(h, w, png_path=png_path, ids=ids, where=where):
            try:
                with Image.open(png_path) as im:
                    rgb = np.asarray(im.convert("RGB"), np.uint32)
            except (OSError, ValueError) as e:
                raise DataError(f"{png_path}: cannot read panoptic PNG ({e})")
            if rgb.shape[:2] != (h, w):
                raise DataError(f"{png_path}: panoptic PNG is {rgb.shape[0]}x{rgb.shape[1]}, image is {h}x{w}")
            seg = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
            out = np.stack([np.isin(seg, np.asarray(x, np.uint32)) for x in ids]).astype(np.uint8)
            for m, x in enumerate(ids):
                if not out[m].any():
                    raise DataError(f"{where}: segment ids {x} do not occur in {png_path}")
            return out

        samples.append(Sample(len(samples), os.path.join(image_dir, imgs[image_id]["file_name"]), segs, False,
                              texts, kinds, masks, where))
    return samples


# -- plain JSON -----------------------------------------------------------------------------
def read_json(path):
    data = _load_json(path, "data file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: field 'images': expected a list")
    base = os.path.dirname(os.path.abspath(path))
    samples = []
    for j, im in enumerate(data["images"]):
        where = f"{path}: images[{j}]"
        if not isinstance(im, dict) or not isinstance(im.get("file"), str):
            raise DataError(f"{where}.file: expected a string")
        phrases = im.get("phrases")
        if not isinstance(phrases, list) or not phrases:
            raise DataError(f"{where}.phrases: expected a non-empty list")
        texts, kinds, segs = [], [], []
        for k, p in enumerate(phrases):
            if not isinstance(p, dict) or not isinstance(p.get("text"), str) or not p["text"].strip():
                raise DataError(f"{where}.phrases[{k}].text: expected a non-empty string")
            if "mask" not in p:
                raise DataError(f"{where}.phrases[{k}].mask: missing")
            kind = p.get("kind", 0)
            if kind not in (0, 1, 2):
                raise DataError(f"{where}.phrases[{k}].kind: expected 0, 1 or 2, found {kind!r}")
            texts.append(p["text"])
            kinds.append(kind)
            segs.append(p["mask"])

        def masks(h, w, segs=segs, where=where):
            return np.stack([decode_mask(s, h, w, f"{where}.phrases[{k}].mask") for k, s in enumerate(segs)])

        samples.append(Sample(j, os.path.join(base, im["file"]), [(t, m) for m, t in enumerate(texts)], True,
                              texts, kinds, masks, where))
    return samples


def read_data(spec: str, *, split="val", protocol="select_first", image_dir=None, refs_file=None, per_phrase=False,
              png_narratives=None, panoptic_json=None, panoptic_dir=None):
    """``refcoco:DIR`` | ``png:ROOT`` | ``json:FILE`` -> (samples, description)."""
    kind, _, path = spec.partition(":")
    if not path:
        raise DataError(f"--data: expected refcoco:PATH, png:PATH or json:PATH, found '{spec}'")
    if kind == "refcoco":
        s = read_refcoco(path, split, protocol, image_dir, refs_file, per_phrase)
    elif kind == "png":
        if per_phrase:
            raise DataError("--per-phrase: not for png (a narrative's context words belong to the sequence)")
        s = read_png(path, split, png_narratives, panoptic_json, panoptic_dir, image_dir)
    elif kind == "json":
        s = read_json(path)
        s = _split_per_phrase(s) if per_phrase else s
    else:
        raise DataError(f"--data: unknown source '{kind}' (expected refcoco, png or json)")
    return s
