"""GroundingCache NetCDF-4 writer, schema version 1 (Sources/GroundingCache/SCHEMA.md).

Ragged dims ``sample, phrase, token, row, pixel, mask_pixel`` (unlimited) with per-sample
offsets; fixed dims ``rgb, layer, head, image_token, hidden`` and, only with SAM embeddings,
``sam_channel, sam_y, sam_x``.  16-bit floats are stored as ushort bit patterns with an
``encoding`` attribute (float16 or bfloat16, round to nearest even); a value the encoding
cannot hold (NaN, inf, float16 overflow) is an error naming the variable and the sample.
Numeric variables are chunked along their ragged dim and deflated (level 1 + shuffle by
default); the string variable is not compressed.  The file is written under a temporary name
in the destination folder and renamed into place by ``close()``.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import netCDF4
import numpy as np
import torch

SCHEMA_NAME = "flmm-grounding-cache"
SCHEMA_VERSION = 1
PHRASE_KINDS = ("attribute", "relational", "plural")

PER_SAMPLE_INTS = [
    ("sample_index", "index of the sample in its split"),
    ("image_height", "original image height H"),
    ("image_width", "original image width W"),
    ("phrase_offset", "first phrase of the sample along dim phrase"),
    ("phrase_count", "number of phrases M (= masks) of the sample"),
    ("token_offset", "first token of the sample along dim token"),
    ("token_count", "number of tokens S of the LMM sequence"),
    ("row_offset", "first phrase token of the sample along dim row"),
    ("row_count", "number of phrase tokens R (tokens with mask_id >= 0)"),
    ("image_token_count", "image tokens K of the sample (<= dim image_token; columns beyond are zero)"),
    ("padding_before_height", "LMM padding: rows above the resized image (F-LMM meta before_height)"),
    ("padding_after_height", "LMM padding: rows below the resized image (F-LMM meta after_height)"),
    ("padding_before_width", "LMM padding: columns left of the resized image (F-LMM meta before_width)"),
    ("padding_after_width", "LMM padding: columns right of the resized image (F-LMM meta after_width)"),
    ("resized_height", "LMM resized image height h_r (F-LMM meta image_shape[0])"),
    ("resized_width", "LMM resized image width w_r (F-LMM meta image_shape[1])"),
    ("padded_height", "LMM padded square height P (F-LMM meta padded_shape[0])"),
    ("padded_width", "LMM padded square width P (F-LMM meta padded_shape[1])"),
]
FINE_GRID_INTS = [
    ("fine_grid_height", "LLaVA-NeXT fine (anyres, unpadded) grid height H_f of the sample"),
    ("fine_grid_width", "LLaVA-NeXT fine (anyres, unpadded) grid width W_f of the sample"),
]
PER_SAMPLE_INT64S = [
    ("image_offset", "first pixel of the sample's image along dim pixel (H*W pixels)"),
    ("mask_pixel_offset", "first value of the sample's masks along dim mask_pixel (M*H*W values)"),
]
PADDING_KEYS = [n for n, _ in PER_SAMPLE_INTS[10:]]
ENCODING_COMMENT = {
    "float16": "IEEE 754 binary16 bit patterns in ushort; decode exactly to float32 (no scale/offset)",
    "bfloat16": "bfloat16 bit patterns in ushort (the upper 16 bits of a float32); decode: float32 bits = value << 16",
}


class CacheWriteError(ValueError):
    """A value or record the schema cannot hold; the message names file, variable and sample."""


def encode16(x, encoding: str, *, file: str, variable: str, sample: int) -> np.ndarray:
    """Float array/tensor -> uint16 bit patterns (round to nearest even); fails on NaN/inf/overflow."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if not torch.isfinite(t).all():
        raise CacheWriteError(f"{file}: variable '{variable}', sample {sample}: NaN or infinite value "
                              f"cannot be stored as {encoding}")
    if encoding == "float16":
        with np.errstate(over="ignore"):
            h = t.float().numpy().astype(np.float16)
        if not np.isfinite(h).all():
            big = float(t.float().abs().max())
            raise CacheWriteError(f"{file}: variable '{variable}', sample {sample}: |x| = {big:g} overflows "
                                  "float16 (max 65504); use bfloat16")
        return h.view(np.uint16)
    if encoding == "bfloat16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    raise CacheWriteError(f"{file}: variable '{variable}': unknown encoding '{encoding}'")


def merged_rows(rows: np.ndarray, row_mask_ids: np.ndarray, num_phrases: int, *, file: str = "", sample: int = 0):
    """Per-phrase mean and max of the raw rows [R, ...] -> ([M, ...] float32, [M, ...] float32).

    Mean: summed in float64 in row order, divided by the count, rounded to float32
    (AttentionMaps.mergedRows); max: elementwise max.
    """
    shape = rows.shape[1:]
    mean = np.zeros((num_phrases,) + shape, np.float32)
    mx = np.zeros((num_phrases,) + shape, np.float32)
    for m in range(num_phrases):
        idx = np.nonzero(row_mask_ids == m)[0]
        if len(idx) == 0:
            raise CacheWriteError(f"{file}: sample {sample}: phrase {m} has no tokens (empty phrase text?)")
        acc = np.zeros(shape, np.float64)
        for r in idx:
            acc += rows[r].astype(np.float64)
        mean[m] = (acc / len(idx)).astype(np.float32)
        mx[m] = rows[idx].astype(np.float32).max(axis=0)
    return mean, mx


@dataclass
class CacheHeader:
    """The global description of a cache (SCHEMA.md "Global attributes")."""
    source_model: str
    layout_kind: str                     # deepseek_vl | llava | llava_next
    layout_attrs: dict                   # image_token_id, grid_height, ... (ints)
    layout_name: str
    maps_per_layer: int
    num_layers: int
    num_heads: int
    hidden_size: int
    num_image_tokens: int                # K (largest sample)
    attention_form: str = "rows"         # rows | merged
    attention_encoding: str = "float16"
    hidden_encoding: str = "bfloat16"
    split: str = "val"
    sam: dict | None = None              # model, embedding_dim, embedding_height, embedding_width, img_size, encoding
    provenance: dict = field(default_factory=dict)


def _rows_per_chunk(inner: int, target: int = 1 << 17, cap: int = 4096) -> int:
    return max(1, min(cap, target // max(1, inner)))


class CacheWriter:
    """Writes records one by one; ``close()`` renames the finished file into place.

    Record fields (``add``): sample_index; image [H, W, 3] uint8; masks [M, H, W] 0/1;
    phrase_kinds [M]; phrase_texts [M]; token_ids, mask_ids [S]; row_positions, row_mask_ids [R];
    attention [R, L, NH, K_i] (form rows) -- the writer merges it for form merged;
    hidden [R, L, d]; padding dict (PADDING_KEYS); fine_grid (Hf, Wf) for llava_next;
    sam [C, e_h, e_w] when the header has SAM.
    """

    def __init__(self, path: str, header: CacheHeader, deflate: int | None = 1, shuffle: bool = True):
        self.path, self.h = os.path.abspath(path), header
        if header.attention_form not in ("rows", "merged"):
            raise CacheWriteError(f"{path}: attention_form must be rows or merged, found '{header.attention_form}'")
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise CacheWriteError(f"{path}: destination folder {folder} does not exist")
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
        self.nc = netCDF4.Dataset(self.tmp, "w", format="NETCDF4")
        self.n = {"sample": 0, "phrase": 0, "token": 0, "row": 0, "pixel": 0, "mask_pixel": 0}
        self._define(deflate, shuffle)

    # -- schema ---------------------------------------------------------------------------
    def _define(self, deflate, shuffle):
        h, nc = self.h, self.nc
        for d in self.n:
            nc.createDimension(d, None)
        fixed = [("rgb", 3), ("layer", h.num_layers), ("head", h.num_heads), ("image_token", h.num_image_tokens),
                 ("hidden", h.hidden_size)]
        if h.sam:
            fixed += [("sam_channel", h.sam["embedding_dim"]), ("sam_y", h.sam["embedding_height"]),
                      ("sam_x", h.sam["embedding_width"])]
        for d, n in fixed:
            nc.createDimension(d, n)
        z = dict(zlib=deflate is not None, complevel=deflate or 0, shuffle=shuffle and deflate is not None)

        def var(name, dtype, dims, chunks, attrs, compress=True):
            v = nc.createVariable(name, dtype, dims, chunksizes=chunks, **(z if compress else {}))
            for k, a in attrs:
                v.setncattr(k, a)
            return v

        ints = PER_SAMPLE_INTS + (FINE_GRID_INTS if h.layout_kind == "llava_next" else [])
        for n, d in ints:
            var(n, "i4", ("sample",), [1024], [("long_name", d)])
        for n, d in PER_SAMPLE_INT64S:
            var(n, "i8", ("sample",), [1024], [("long_name", d)])
        var("image", "u1", ("pixel", "rgb"), [16384, 3],
            [("long_name", "original RGB images, row-major [image_height, image_width] per sample, from image_offset"),
             ("units", "8-bit intensity")])
        var("gt_masks", "u1", ("mask_pixel",), [1 << 16],
            [("long_name", "ground-truth phrase masks at the original size, [phrase_count, image_height, image_width] "
                           "per sample, from mask_pixel_offset"),
             ("flag_values", np.array([0, 1], np.uint8)), ("flag_meanings", "background object")])
        var("phrase_kind", "i1", ("phrase",), [4096],
            [("long_name", "how the phrase picks its objects"), ("flag_values", np.array([0, 1, 2], np.int8)),
             ("flag_meanings", " ".join(PHRASE_KINDS))])
        var("phrase_text", str, ("phrase",), [1024], [("long_name", "the phrase's words")], compress=False)
        var("token_ids", "i4", ("token",), [8192], [("long_name", "token ids of the LMM sequence (image tokens expanded)")])
        var("mask_ids", "i4", ("token",), [8192],
            [("long_name", "F-LMM mask id of each token: the phrase it belongs to, -1 for none")])
        var("row_token_position", "i4", ("row",), [8192],
            [("long_name", "sequence position of each phrase token (row), in sequence order")])
        var("row_mask_id", "i4", ("row",), [8192], [("long_name", "mask id (phrase) of each phrase token (row)")])
        L, NH, K, D = h.num_layers, h.num_heads, h.num_image_tokens, h.hidden_size
        lhk = L * NH * K
        achunks = [1, 1, NH, K] if lhk > (1 << 20) else [_rows_per_chunk(lhk), L, NH, K]
        ae = h.attention_encoding

        def attention(name, dim, what):
            var(name, "u2", (dim, "layer", "head", "image_token"), achunks,
                [("long_name", what), ("units", "1"), ("encoding", ae), ("comment", ENCODING_COMMENT[ae])])

        if h.attention_form == "rows":
            attention("attention_rows", "row", "softmax attention probability of each phrase token (query) to each "
                      "image token (key), per layer and head")
        else:
            attention("attention_mean", "phrase", "mean over the phrase's tokens of their attention probabilities to "
                      "each image token, per layer and head")
            attention("attention_max", "phrase", "max over the phrase's tokens of their attention probabilities to "
                      "each image token, per layer and head")
        he = h.hidden_encoding
        var("hidden_states", "u2", ("row", "layer", "hidden"), [_rows_per_chunk(L * D), L, D],
            [("long_name", "LMM hidden state of each phrase token after each layer (HF hidden_states[1:], the last "
                           "after the final norm)"), ("encoding", he), ("comment", ENCODING_COMMENT[he])])
        if h.sam:
            s = h.sam
            var("sam_embedding", "u2", ("sample", "sam_channel", "sam_y", "sam_x"),
                [1, s["embedding_dim"], s["embedding_height"], s["embedding_width"]],
                [("long_name", "frozen SAM image encoder output (image_embeddings) of the sample's image"),
                 ("encoding", s["encoding"]), ("comment", ENCODING_COMMENT[s["encoding"]])])
        self._globals()

    def _globals(self):
        h, i32 = self.h, np.int32
        a = [("title", "F-LMM GroundingCache: frozen LMM attention, hidden states and SAM image embeddings per sample"),
             ("schema", SCHEMA_NAME), ("schema_version", i32(SCHEMA_VERSION)), ("source_model", h.source_model),
             ("attention_layout", h.layout_kind), ("attention_layout_name", h.layout_name)]
        a += [(k, i32(v)) for k, v in h.layout_attrs.items()]
        a += [("attention_maps_per_layer", i32(h.maps_per_layer)), ("num_layers", i32(h.num_layers)),
              ("num_heads", i32(h.num_heads)), ("hidden_size", i32(h.hidden_size)),
              ("num_image_tokens", i32(h.num_image_tokens))]
        if h.sam:
            s = h.sam
            a += [("sam_model", s["model"]), ("sam_embedding_dim", i32(s["embedding_dim"])),
                  ("sam_embedding_height", i32(s["embedding_height"])),
                  ("sam_embedding_width", i32(s["embedding_width"])), ("sam_img_size", i32(s["img_size"]))]
        a += [("attention_form", h.attention_form), ("attention_encoding", h.attention_encoding),
              ("hidden_encoding", h.hidden_encoding)]
        if h.sam:
            a.append(("sam_encoding", h.sam["encoding"]))
        a.append(("split", h.split))
        a += [(f"provenance_{k}", str(h.provenance[k])) for k in sorted(h.provenance)]
        for k, v in a:
            self.nc.setncattr(k, v)

    # -- records --------------------------------------------------------------------------
    def _fail(self, sample, variable, expected, found):
        raise CacheWriteError(f"{self.path}: variable '{variable}', sample {sample}: expected {expected}, found {found}")

    def add(self, r: dict) -> None:
        h, nc, n, i = self.h, self.nc, self.n, self.n["sample"]
        L, NH, K, D = h.num_layers, h.num_heads, h.num_image_tokens, h.hidden_size
        image = np.asarray(r["image"], np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            self._fail(i, "image", "[H, W, 3]", list(image.shape))
        H, W = image.shape[:2]
        masks = np.asarray(r["masks"])
        M = len(r["phrase_texts"])
        if masks.shape != (M, H, W):
            self._fail(i, "gt_masks", [M, H, W], list(masks.shape))
        if M == 0:
            self._fail(i, "phrase_count", "at least one phrase", 0)
        kinds = np.asarray(r["phrase_kinds"], np.int8)
        if kinds.shape != (M,) or ((kinds < 0) | (kinds > 2)).any():
            self._fail(i, "phrase_kind", f"{M} values in 0...2", list(kinds))
        tok = np.asarray(r["token_ids"], np.int32)
        mid = np.asarray(r["mask_ids"], np.int32)
        if tok.shape != mid.shape or tok.ndim != 1:
            self._fail(i, "mask_ids", f"{tok.shape[0]} tokens", list(mid.shape))
        pos = np.asarray(r["row_positions"], np.int32)
        rmid = np.asarray(r["row_mask_ids"], np.int32)
        if not np.array_equal(pos, np.nonzero(mid >= 0)[0]) or not np.array_equal(rmid, mid[pos]):
            self._fail(i, "row_token_position", "the positions of mask_ids >= 0 in sequence order", list(pos))
        R = len(pos)
        att = r["attention"]
        ki = att.shape[-1]
        if tuple(att.shape) != (R, L, NH, ki) or ki > K:
            self._fail(i, "attention", f"[{R}, {L}, {NH}, K_i <= {K}]", list(att.shape))
        hid = r["hidden"]
        if tuple(hid.shape) != (R, L, D):
            self._fail(i, "hidden_states", [R, L, D], list(hid.shape))
        pad = r["padding"]
        ints = {"sample_index": r["sample_index"], "image_height": H, "image_width": W, "phrase_offset": n["phrase"],
                "phrase_count": M, "token_offset": n["token"], "token_count": len(tok), "row_offset": n["row"],
                "row_count": R, "image_token_count": ki, **{k: pad[k] for k in PADDING_KEYS}}
        if pad["padding_before_height"] + pad["resized_height"] + pad["padding_after_height"] != pad["padded_height"] or \
           pad["padding_before_width"] + pad["resized_width"] + pad["padding_after_width"] != pad["padded_width"]:
            self._fail(i, "padded_height", "padding + resized size = padded size", pad)
        if h.layout_kind == "llava_next":
            ints["fine_grid_height"], ints["fine_grid_width"] = r["fine_grid"]
        for k, v in ints.items():
            nc[k][i] = np.int32(v)
        nc["image_offset"][i] = np.int64(n["pixel"])
        nc["mask_pixel_offset"][i] = np.int64(n["mask_pixel"])
        nc["image"][n["pixel"]:n["pixel"] + H * W, :] = image.reshape(H * W, 3)
        nc["gt_masks"][n["mask_pixel"]:n["mask_pixel"] + M * H * W] = (masks.reshape(-1) != 0).astype(np.uint8)
        p0 = n["phrase"]
        nc["phrase_kind"][p0:p0 + M] = kinds
        for j, t in enumerate(r["phrase_texts"]):
            nc["phrase_text"][p0 + j] = str(t)
        t0 = n["token"]
        nc["token_ids"][t0:t0 + len(tok)] = tok
        nc["mask_ids"][t0:t0 + len(tok)] = mid
        r0 = n["row"]
        if R:
            nc["row_token_position"][r0:r0 + R] = pos
            nc["row_mask_id"][r0:r0 + R] = rmid
        att32 = att.float().cpu().numpy() if isinstance(att, torch.Tensor) else np.asarray(att, np.float32)
        full = np.zeros(att32.shape[:3] + (K,), np.float32)
        full[..., :ki] = att32
        e = h.attention_encoding
        if h.attention_form == "rows":
            if R:
                nc["attention_rows"][r0:r0 + R] = encode16(full, e, file=self.path, variable="attention_rows", sample=i)
        else:
            mean, mx = merged_rows(full, rmid, M, file=self.path, sample=i)
            nc["attention_mean"][p0:p0 + M] = encode16(mean, e, file=self.path, variable="attention_mean", sample=i)
            nc["attention_max"][p0:p0 + M] = encode16(mx, e, file=self.path, variable="attention_max", sample=i)
        if R:
            nc["hidden_states"][r0:r0 + R] = encode16(hid, h.hidden_encoding, file=self.path,
                                                      variable="hidden_states", sample=i)
        if h.sam:
            s = h.sam
            emb = r["sam"]
            want = (s["embedding_dim"], s["embedding_height"], s["embedding_width"])
            if tuple(emb.shape) != want:
                self._fail(i, "sam_embedding", list(want), list(emb.shape))
            nc["sam_embedding"][i] = encode16(emb, s["encoding"], file=self.path, variable="sam_embedding", sample=i)
        n["sample"] += 1
        n["phrase"] += M
        n["token"] += len(tok)
        n["row"] += R
        n["pixel"] += H * W
        n["mask_pixel"] += M * H * W

    def close(self) -> str:
        """Close the file and rename it into place; returns the final path."""
        if self.n["sample"] == 0:
            self.abort()
            raise CacheWriteError(f"{self.path}: no samples were written")
        self.nc.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (nothing appears at the final path)."""
        try:
            self.nc.close()
        except Exception:
            pass
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            self.abort()
