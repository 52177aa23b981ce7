"""Exporter tests: tiny random models of the three families, built offline (tests/tiny.py).

* capture: exported rows and hidden states equal, bit for bit, a plain eager forward with
  output_attentions=True, output_hidden_states=True (float32 and bfloat16);
* layouts tile every grid cell exactly once; LLaVA-NeXT's K_i matches the model's features;
* preprocessing: F-LMM's padding meta;
* writer: the file read back with netCDF4 equals what was exported (16-bit encodings, offsets,
  attributes); merged form = mean / max of the rows; atomic write; float16 overflow fails;
* readers parse the fixtures; bad input gives errors naming the file and field.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import unittest

import numpy as np
import torch

from flmm_export import capture, layouts, writer
from flmm_export.__main__ import main as cli_main
from flmm_export.data import DataError, read_data, read_json
from flmm_export.export import FAMILIES, export, load_model, run_sample
from tests import tiny

FAMS = ["deepseek_vl", "llava", "llava_next"]
TMP = None
MODELS = {}


def setUpModule():
    global TMP
    TMP = os.environ.get("FLMM_EXPORT_TEST_DIR") or tempfile.mkdtemp(prefix="flmm-export-test-")
    os.makedirs(TMP, exist_ok=True)
    for f in FAMS:
        tiny.build(f, os.path.join(TMP, f))
    tiny.json_fixture(os.path.join(TMP, "json"))
    tiny.refcoco_fixture(os.path.join(TMP, "coco"))
    tiny.png_fixture(os.path.join(TMP, "png"))


def tearDownModule():
    if not os.environ.get("FLMM_EXPORT_TEST_DIR"):
        shutil.rmtree(TMP, ignore_errors=True)


def model(f, dtype=torch.float32):
    key = (f, dtype)
    if key not in MODELS:
        MODELS[key] = load_model(os.path.join(TMP, f), f, dtype, "cpu")
    return MODELS[key]


def samples():
    return read_data("json:" + os.path.join(TMP, "json", "data.json"))


def decode16(bits, encoding):
    bits = np.asarray(bits, np.uint16)
    if encoding == "float16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def reference(m, fam, sample):
    """A plain eager forward (fresh eager model) with output_attentions: rows [R, L, NH, K], hidden [R, L, d]."""
    prep = fam.prepare(sample, sample.image())
    rows = torch.nonzero(prep.mask_ids >= 0)[:, 0]
    cols = torch.nonzero(prep.input_ids[0] == fam.image_token_id)[:, 0]
    px = {k: (v.to(m.dtype) if v.is_floating_point() else v) for k, v in prep.pixel_inputs.items()}
    with torch.no_grad():
        out = m(input_ids=prep.input_ids, attention_mask=torch.ones_like(prep.input_ids), output_attentions=True,
                output_hidden_states=True, use_cache=False, **px)
    att = torch.stack([a[0][:, rows][:, :, cols] for a in out.attentions]).permute(2, 0, 1, 3)
    hid = torch.stack(out.hidden_states[1:])[:, 0, rows].permute(1, 0, 2)
    return att, hid, prep


def writer_padding(m):
    """F-LMM meta_data -> the cache's padding fields."""
    p = m["padding"]
    return dict(padding_before_height=p["before_height"], padding_after_height=p["after_height"],
                padding_before_width=p["before_width"], padding_after_width=p["after_width"],
                resized_height=m["image_shape"]["height"], resized_width=m["image_shape"]["width"],
                padded_height=m["padded_shape"]["height"], padded_width=m["padded_shape"]["width"])


class CaptureTests(unittest.TestCase):
    def check_family(self, f, dtype):
        ref_model, tok = load_model(os.path.join(TMP, f), f, dtype, "cpu")   # stays eager everywhere
        cap_model, _ = load_model(os.path.join(TMP, f), f, dtype, "cpu")
        fam = FAMILIES[f](cap_model, tok, os.path.join(TMP, f))
        capture.install(cap_model)
        self.assertEqual(cap_model.config.vision_config._attn_implementation, "eager")
        self.assertEqual(ref_model.config.text_config._attn_implementation, "eager")
        for s in samples():
            r = run_sample(cap_model, fam, s, "cpu")
            att, hid, prep = reference(ref_model, fam, s)
            self.assertEqual(r["attention"].dtype, dtype)
            self.assertTrue(torch.equal(r["attention"], att), f"{f} {dtype} sample {s.index}: rows differ")
            self.assertTrue(torch.equal(r["hidden"], hid), f"{f} {dtype} sample {s.index}: hidden states differ")
            self.assertEqual(r["attention"].shape[-1], prep.image_token_count)
            self.assertGreater(len(r["row_positions"]), 0)
            # rows are probabilities of a causal softmax: image columns precede the phrase rows
            tol = 1.05 if dtype == torch.bfloat16 else 1.0001
            self.assertTrue(bool((r["attention"] >= 0).all()) and bool((r["attention"].float().sum(-1) <= tol).all()))

    def test_bitwise_float32(self):
        for f in FAMS:
            with self.subTest(family=f):
                self.check_family(f, torch.float32)

    def test_bitwise_bfloat16(self):
        for f in FAMS:
            with self.subTest(family=f):
                self.check_family(f, torch.bfloat16)

    def test_mask_function_registered(self):
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
        capture.register()
        self.assertIn(capture.NAME, ALL_MASK_ATTENTION_FUNCTIONS)

    def test_capture_outside_context_fails(self):
        with self.assertRaises(RuntimeError):
            capture.capture_attention(None, None, None, None, None)


class LayoutTests(unittest.TestCase):
    def tiles_once(self, lay):
        cells = layouts.cell_columns(lay)
        used = sorted(c for m in cells for row in m for cs in row for c in cs)
        for m in cells:
            for row in m:
                for cs in row:
                    self.assertEqual(len(cs), 1)
        self.assertEqual(len(used), len(set(used)))
        self.assertTrue(all(0 <= c < lay.image_token_count for c in used))
        return set(range(lay.image_token_count)) - set(used)

    def test_single_grids(self):
        for kind in ("llava", "deepseek_vl"):
            self.assertEqual(self.tiles_once(layouts.single(kind, kind, 24, 24)), set())

    def test_llava_next_skips_only_newlines(self):
        for ch, fh, fw in [(24, 48, 36), (4, 8, 5), (4, 3, 8)]:
            lay = layouts.llava_next(ch, ch, fh, fw)
            skipped = self.tiles_once(lay)
            self.assertEqual(skipped, {ch * ch + i * (fw + 1) + fw for i in range(fh)})

    def test_header_layouts_tile(self):
        for f in FAMS:
            m, tok = model(f)
            fam = FAMILIES[f](m, tok, os.path.join(TMP, f))
            k, fine = fam.image_token_count_for(40, 56)
            _, attrs, lay = fam.header_layout(fine)
            self.assertEqual(lay.image_token_count, k)
            self.tiles_once(lay)

    def test_llava_next_count_matches_model(self):
        m, tok = model("llava_next")
        fam = FAMILIES["llava_next"](m, tok, os.path.join(TMP, "llava_next"))
        from PIL import Image
        rng = np.random.default_rng(0)
        for h, w in [(40, 56), (64, 30), (33, 33), (10, 90), (90, 11), (31, 64), (64, 64), (7, 7), (100, 49)]:
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            px, pad, k, fine = fam.preprocess(img)
            with torch.no_grad():
                feats = m.model.get_image_features(px["pixel_values"], px["image_sizes"]).pooler_output
            self.assertEqual(feats[0].shape[0], k, f"{h}x{w}")
            self.assertEqual((k, fine), fam.image_token_count_for(h, w))
            self.assertEqual(pad["padding_before_height"] + pad["padding_after_width"], 0)


    def test_llava_next_max_fine_grid(self):
        m, tok = model("llava_next")
        fam = FAMILIES["llava_next"](m, tok, os.path.join(TMP, "llava_next"))
        self.assertEqual(fam.max_fine_grid(), (8, 8))
        kmax = layouts.llava_next(4, 4, 8, 8).image_token_count
        for h in range(1, 120, 7):
            for w in range(1, 120, 11):
                self.assertLessEqual(fam.image_token_count_for(h, w)[0], kmax)
        out = [os.path.join(TMP, f"fine-max-{i}.nc") for i in range(2)]
        for i, o in enumerate(out):   # two caches of different images: same layout attributes
            export(m, tok, "llava_next", os.path.join(TMP, "llava_next"), samples()[i:i + 1], o, fine_grid="max", log=None)
        import netCDF4
        with netCDF4.Dataset(out[0]) as a, netCDF4.Dataset(out[1]) as b:
            for k in ("fine_grid_height", "fine_grid_width", "num_image_tokens"):
                self.assertEqual(int(a.getncattr(k)), int(b.getncattr(k)))
            self.assertEqual(int(a.num_image_tokens), kmax)


class PreprocessTests(unittest.TestCase):
    def test_llava_padding_meta(self):
        from PIL import Image
        m, tok = model("llava")
        fam = FAMILIES["llava"](m, tok, os.path.join(TMP, "llava"))
        px, pad, k, _ = fam.preprocess(Image.new("RGB", (56, 40), (255, 0, 0)))   # W 56, H 40
        self.assertEqual(pad, dict(padding_before_height=5, padding_after_height=5, padding_before_width=0,
                                   padding_after_width=0, resized_height=22, resized_width=32, padded_height=32,
                                   padded_width=32))
        self.assertEqual(tuple(px["pixel_values"].shape), (1, 3, 32, 32))
        self.assertEqual(k, 16)
        # padding rows hold the mean colour: normalised ~0 (int(mean * 255) / 255 - mean) / std
        self.assertLess(float(px["pixel_values"][0, :, 0].abs().max()), 0.02)

    def test_deepseek_padding_meta(self):
        from PIL import Image
        m, tok = model("deepseek_vl")
        fam = FAMILIES["deepseek_vl"](m, tok, os.path.join(TMP, "deepseek_vl"))
        _, pad, k, _ = fam.preprocess(Image.new("RGB", (30, 64)))                 # W 30, H 64
        self.assertEqual((pad["resized_height"], pad["resized_width"]), (32, 15))
        self.assertEqual((pad["padding_before_width"], pad["padding_after_width"], pad["padded_width"]), (8, 9, 32))
        _, pad, _, _ = fam.preprocess(Image.new("RGB", (5, 64)))                  # min_size 14
        self.assertEqual(pad["resized_width"], 14)

    def test_matches_flmm_processors(self):
        """pixel_values bit for bit and padding meta equal F-LMM's own processors (real-model sizes:
        LLaVA 336 px, LLaVA-NeXT 336 px with llava-v1.6's pinpoints, DeepSeek-VL 384 px), recorded in
        flmm_preprocessing_reference.json by make_flmm_reference.py (F-LMM 47d3c2a, transformers 4.39.3)."""
        import hashlib
        import json
        from flmm_export.deepseek_vl import DeepseekVL
        from flmm_export.llava import Llava
        from flmm_export.llava_next import LlavaNext
        from tests import make_flmm_reference as ref
        with open(os.path.join(os.path.dirname(__file__), "flmm_preprocessing_reference.json")) as f:
            want = json.load(f)
        fams = {"llava": object.__new__(Llava), "llava_next": object.__new__(LlavaNext),
                "deepseek_vl": object.__new__(DeepseekVL)}
        for name, fam in fams.items():   # preprocessing needs only these attributes (no model)
            fam.size, fam.patch = (384, 16) if name == "deepseek_vl" else (336, 14)
            fam.grid, fam.min_size, fam.pinpoints = 24, 14, ref.PINPOINTS
            fam.pre = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3} if name == "deepseek_vl" else {}
        for i, img in enumerate(ref.images()):
            for name, fam in fams.items():
                w = want["cases"][f"{name}/{i}"]
                px, pad, _, _ = fam.preprocess(img)
                x = np.ascontiguousarray(px["pixel_values"][0].numpy())
                self.assertEqual(list(x.shape), w["shape"], f"{name} image {i}")
                self.assertEqual(hashlib.sha256(x.tobytes()).hexdigest(), w["sha256"], f"{name} image {i}")
                m = w["meta"]
                if name != "llava_next":
                    self.assertEqual(pad, writer_padding(m), f"{name} image {i}")
                else:   # stored unpadded (see llava_next.py); F-LMM's anyres image shape is the resized size
                    self.assertEqual((pad["resized_height"], pad["resized_width"]),
                                     (m["image_shape"]["height"], m["image_shape"]["width"]))

    def test_sequence(self):
        m, tok = model("llava")
        fam = FAMILIES["llava"](m, tok, os.path.join(TMP, "llava"))
        s = samples()[1]
        prep = fam.prepare(s, s.image())
        ids, mids = prep.input_ids[0].tolist(), prep.mask_ids.tolist()
        self.assertEqual(ids[0], tok.bos_token_id)
        self.assertEqual(ids.count(3), 16)
        self.assertEqual(sorted(set(mids)), [-1, 0, 1, 2])
        dot = tok.convert_tokens_to_ids(".")
        for j in range(len(ids) - 1):          # each phrase is followed by '.' (mask id -1)
            if mids[j] >= 0 and mids[j + 1] != mids[j]:
                self.assertEqual((ids[j + 1], mids[j + 1]), (dot, -1))
        assistant = ids.index(tok.convert_tokens_to_ids("ASSISTANT"))
        self.assertTrue(all(x == -1 for x in mids[:assistant + 2]))   # phrases after "ASSISTANT :"


class WriterTests(unittest.TestCase):
    def export_file(self, f, store, dtype=torch.float32, sam=None):
        m, tok = model(f, dtype)
        out = os.path.join(TMP, f"{f}-{store}-{str(dtype)[6:]}{'-sam' if sam else ''}.nc")
        st = export(m, tok, f, os.path.join(TMP, f), samples(), out, store=store, sam=sam, log=None)
        self.assertEqual(st["samples"], 3)
        return out, m, tok

    def read(self, path):
        import netCDF4
        nc = netCDF4.Dataset(path)
        nc.set_auto_mask(False)
        return nc

    def test_round_trip_rows(self):
        for f in FAMS:
            for dtype in (torch.float32, torch.bfloat16):
                with self.subTest(family=f, dtype=dtype):
                    self.round_trip(f, dtype)

    def round_trip(self, f, dtype):
        path, m, tok = self.export_file(f, "rows", dtype)
        fam = FAMILIES[f](m, tok, os.path.join(TMP, f))
        nc = self.read(path)
        try:
            self.assertEqual(nc.schema, "flmm-grounding-cache")
            self.assertEqual(int(nc.schema_version), 1)
            self.assertEqual(nc.attention_layout, f)
            self.assertEqual(nc.hidden_encoding, "bfloat16" if dtype == torch.bfloat16 else "float16")
            self.assertNotIn("sam_embedding", nc.variables)
            self.assertNotIn("sam_model", nc.ncattrs())
            self.assertEqual(nc.provenance_transformers, __import__("transformers").__version__)
            K = nc.dimensions["image_token"].size
            self.assertEqual(int(nc.num_image_tokens), K)
            for i, s in enumerate(samples()):
                r = run_sample(m, fam, s, "cpu")
                po, ro, to = (int(nc[v][i]) for v in ("phrase_offset", "row_offset", "token_offset"))
                R, M, S, ki = (int(nc[v][i]) for v in ("row_count", "phrase_count", "token_count", "image_token_count"))
                self.assertEqual(ki, r["attention"].shape[-1])
                H, W = int(nc["image_height"][i]), int(nc["image_width"][i])
                io = int(nc["image_offset"][i])
                self.assertTrue(np.array_equal(nc["image"][io:io + H * W].reshape(H, W, 3), r["image"]))
                mo = int(nc["mask_pixel_offset"][i])
                self.assertTrue(np.array_equal(nc["gt_masks"][mo:mo + M * H * W].reshape(M, H, W), r["masks"]))
                self.assertEqual(list(nc["phrase_text"][po:po + M]), s.phrase_texts)
                self.assertEqual(list(nc["phrase_kind"][po:po + M]), s.phrase_kinds)
                self.assertTrue(np.array_equal(nc["token_ids"][to:to + S], r["token_ids"]))
                self.assertTrue(np.array_equal(nc["mask_ids"][to:to + S], r["mask_ids"]))
                self.assertTrue(np.array_equal(nc["row_token_position"][ro:ro + R], r["row_positions"]))
                a = nc["attention_rows"][ro:ro + R]
                want = r["attention"].float().numpy().astype(np.float16).view(np.uint16)
                self.assertTrue(np.array_equal(a[..., :ki], want))
                self.assertFalse(a[..., ki:].any())
                hbits = nc["hidden_states"][ro:ro + R]
                if dtype == torch.bfloat16:
                    self.assertTrue(np.array_equal(hbits, r["hidden"].view(torch.int16).numpy().view(np.uint16)))
                else:
                    self.assertTrue(np.array_equal(hbits, r["hidden"].numpy().astype(np.float16).view(np.uint16)))
                self.assertTrue(np.allclose(decode16(a[..., :ki], "float16"), r["attention"].float().numpy(), rtol=1e-3, atol=1e-7))
                pad = {k: int(nc[k][i]) for k in writer.PADDING_KEYS}
                self.assertEqual(pad, r["padding"])
                if f == "llava_next":
                    self.assertEqual((int(nc["fine_grid_height"][i]), int(nc["fine_grid_width"][i])), r["fine_grid"])
            if f == "llava_next":   # global fine grid = the largest sample's
                fh, fw = int(nc.fine_grid_height), int(nc.fine_grid_width)
                self.assertEqual(K, int(nc.grid_height) ** 2 + fh * (fw + 1))
                self.assertEqual(K, int(nc["image_token_count"][:].max()))
            # chunking and compression as SCHEMA.md
            self.assertEqual(nc["attention_rows"].filters()["complevel"], 1)
            self.assertTrue(nc["attention_rows"].filters()["shuffle"])
        finally:
            nc.close()

    def test_merged_equals_mean_max_of_rows(self):
        for f in FAMS:
            with self.subTest(family=f):
                path, m, tok = self.export_file(f, "merged")
                fam = FAMILIES[f](m, tok, os.path.join(TMP, f))
                nc = self.read(path)
                try:
                    self.assertEqual(nc.attention_form, "merged")
                    self.assertNotIn("attention_rows", nc.variables)
                    for i, s in enumerate(samples()):
                        r = run_sample(m, fam, s, "cpu")
                        po, M, ki = int(nc["phrase_offset"][i]), int(nc["phrase_count"][i]), int(nc["image_token_count"][i])
                        rows = r["attention"].float().numpy()
                        mean = nc["attention_mean"][po:po + M][..., :ki]
                        mx = nc["attention_max"][po:po + M][..., :ki]
                        for p in range(M):
                            sel = rows[r["row_mask_ids"] == p]
                            want_mean = (sel.astype(np.float64).sum(0) / len(sel)).astype(np.float32)
                            self.assertTrue(np.array_equal(mean[p], want_mean.astype(np.float16).view(np.uint16)))
                            self.assertTrue(np.array_equal(mx[p], sel.max(0).astype(np.float16).view(np.uint16)))
                finally:
                    nc.close()

    def test_merged_sum_is_sequential_float64(self):
        rows = np.array([[1e-8], [1.0], [-1.0 + 1e-9]], np.float32)
        mean, mx = writer.merged_rows(rows, np.array([0, 0, 0]), 1)
        acc = 0.0
        for v in rows[:, 0]:
            acc += float(v)
        self.assertEqual(mean[0, 0], np.float32(acc / 3))
        self.assertEqual(mx[0, 0], np.float32(1.0))

    def test_float16_overflow_and_nan_fail(self):
        with self.assertRaisesRegex(writer.CacheWriteError, "hidden_states.*sample 4.*overflows float16"):
            writer.encode16(np.array([70000.0], np.float32), "float16", file="x.nc", variable="hidden_states", sample=4)
        with self.assertRaisesRegex(writer.CacheWriteError, "NaN"):
            writer.encode16(np.array([np.nan], np.float32), "bfloat16", file="x.nc", variable="v", sample=0)
        self.assertEqual(int(writer.encode16(np.array([65504.0], np.float32), "float16", file="", variable="",
                                             sample=0)[0]), 0x7BFF)
        # round to nearest even in bfloat16: 1 + 2^-8 is a tie -> 1.0; 1 + 3 * 2^-8 -> 1 + 2^-6
        b = writer.encode16(np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8], np.float32), "bfloat16", file="", variable="",
                            sample=0)
        self.assertEqual([int(x) for x in b], [0x3F80, 0x3F82])

    def test_atomic_write(self):
        out = os.path.join(TMP, "atomic.nc")
        m, tok = model("llava")
        bad = samples()
        bad[1].phrase_texts = bad[1].phrase_texts[:1]     # masks no longer match the phrases -> error mid-way
        with self.assertRaises(Exception):
            export(m, tok, "llava", os.path.join(TMP, "llava"), bad, out, log=None)
        self.assertFalse(os.path.exists(out))
        self.assertEqual([x for x in os.listdir(TMP) if x.startswith(".atomic.nc")], [])

    def test_sam_embeddings(self):
        try:
            from tests import tv_stub
            stub = tv_stub.install_if_missing()
            from flmm_export.sam import SamEmbedder
        except ImportError as e:
            self.skipTest(f"segment_anything not importable: {e}")
        sam = SamEmbedder(tiny.tiny_sam(), "tiny-random-sam")
        # every family and form with SAM (the Swift reader of this toolkit's current build needs SAM)
        for f, store, dtype in [("deepseek_vl", "rows", torch.bfloat16), ("llava", "merged", torch.float32),
                                ("llava_next", "merged", torch.bfloat16), ("deepseek_vl", "merged", torch.float32),
                                ("llava_next", "rows", torch.float32)]:
            self.export_file(f, store, dtype, sam=sam)
        # train/val caches whose SAM embedding fits the toolkit's TinySAM (64 x 16 x 16), for
        # run_tests.sh's Swift training check (ablate-merge --profile smoke)
        tsam = SamEmbedder(tiny.tiny_sam(img_size=128, patch=8, out_chans=64), "tiny-random-sam-128")
        for f in FAMS:
            m, tok = model(f)
            for split, ss in [("train", samples()[:2]), ("val", samples()[2:])]:
                export(m, tok, f, os.path.join(TMP, f), ss, os.path.join(TMP, f"tinysam-{f}-{split}.nc"), sam=tsam,
                       split=split, fine_grid="max", log=None)
        path, m, tok = self.export_file("llava", "rows", sam=sam)
        nc = self.read(path)
        try:
            self.assertEqual(nc.sam_model, "tiny-random-sam")
            self.assertEqual((int(nc.sam_embedding_dim), int(nc.sam_embedding_height), int(nc.sam_img_size)), (16, 4, 64))
            self.assertEqual(nc.sam_encoding, "float16")
            for i, s in enumerate(samples()):
                want = sam(np.asarray(s.image()))
                self.assertTrue(np.array_equal(nc["sam_embedding"][i], want.numpy().astype(np.float16).view(np.uint16)))
        finally:
            nc.close()
        print(f"\n  SAM test ran{' with the torchvision stand-in (tests/tv_stub.py)' if stub else ''}")


class Evil:
    """A class in a refs pickle: the reader must refuse it."""


class ReaderTests(unittest.TestCase):
    def test_json(self):
        s = samples()
        self.assertEqual([len(x.phrase_texts) for x in s], [2, 3, 2])
        self.assertEqual(s[1].phrase_kinds, [0, 1, 2])
        h, w = s[0].image_size()
        m = s[0].masks(h, w)
        self.assertEqual(m.shape, (2, 40, 56))
        self.assertEqual(int(m[1].sum()), (40 - 20) * (56 // 3))          # the RLE rectangle
        self.assertGreater(int(m[0].sum()), 0)

    def test_refcoco(self):
        root = os.path.join(TMP, "coco", "refcoco")
        first = read_data("refcoco:" + root, split="val")
        self.assertEqual([x.phrase_texts for x in first], [["the man on the left", "the man on the right"]] * 2)
        allp = read_data("refcoco:" + root, split="val", protocol="all")
        self.assertEqual(len(allp[0].phrase_texts), 4)
        m = allp[0].masks(*allp[0].image_size())
        self.assertTrue(np.array_equal(m[0], m[1]))          # both sentences of one object share its mask
        per = read_data("refcoco:" + root, split="val", per_phrase=True)
        self.assertEqual(len(per), 4)
        self.assertEqual(per[1].masks(*per[1].image_size()).shape[0], 1)
        self.assertEqual(len(read_data("refcoco:" + root, split="train")), 1)
        with self.assertRaisesRegex(DataError, "no refs in split 'testA'"):
            read_data("refcoco:" + root, split="testA")

    def test_png(self):
        s = read_data("png:" + os.path.join(TMP, "png"), split="val")
        self.assertEqual(len(s), 2)                           # the narrative without masks is skipped
        self.assertEqual(s[0].phrase_texts, ["the sky", "two cats"])
        self.assertEqual(s[0].phrase_kinds, [0, 2])
        self.assertEqual([m for _, m in s[0].segments], [-1, 0, -1, 1])
        self.assertFalse(s[0].separator)
        h, w = s[0].image_size()
        m = s[0].masks(h, w)
        self.assertEqual(int(m[0].sum()), (h // 2) * w)
        self.assertEqual(int(m[1].sum()), (h - h // 2) * w)

    def test_bad_inputs(self):
        d = os.path.join(TMP, "bad")
        os.makedirs(d, exist_ok=True)

        def write(obj):
            import json
            p = os.path.join(d, "bad.json")
            with open(p, "w") as f:
                json.dump(obj, f)
            return p

        with self.assertRaisesRegex(DataError, r"bad\.json: field 'images'"):
            read_json(write({"imgs": []}))
        with self.assertRaisesRegex(DataError, r"bad\.json: images\[0\]\.phrases\[0\]\.mask: missing"):
            read_json(write({"images": [{"file": "a.png", "phrases": [{"text": "x"}]}]}))
        p = write({"images": [{"file": "../json/img0.png", "phrases": [{"text": "x", "mask": [[1, 2, 3]]}]}]})
        s = read_json(p)[0]
        with self.assertRaisesRegex(DataError, r"images\[0\]\.phrases\[0\]\.mask: expected a list of polygons"):
            s.masks(*s.image_size())
        with self.assertRaisesRegex(DataError, "kind: expected 0, 1 or 2"):
            read_json(write({"images": [{"file": "a", "phrases": [{"text": "x", "mask": [], "kind": 7}]}]}))
        with self.assertRaisesRegex(DataError, "cannot read image"):
            read_json(write({"images": [{"file": "none.png", "phrases": [{"text": "x", "mask": []}]}]}))[0].image()
        with self.assertRaisesRegex(DataError, "unknown source 'coco'"):
            read_data("coco:/x")
        import pickle
        os.makedirs(os.path.join(d, "rc"), exist_ok=True)
        with open(os.path.join(d, "rc", "refs(unc).p"), "wb") as f:
            pickle.dump([Evil()], f)
        with open(os.path.join(d, "rc", "instances.json"), "w") as f:
            f.write('{"images": [], "annotations": []}')
        with self.assertRaisesRegex(DataError, r"refs\(unc\)\.p: not a refs pickle"):
            read_data("refcoco:" + os.path.join(d, "rc"))

    def test_cli_errors(self):
        out = os.path.join(TMP, "cli.nc")
        with self.assertRaisesRegex(SystemExit, "model_type is 'llava', expected 'deepseek_vl'"):
            cli_main(["--model", os.path.join(TMP, "llava"), "--family", "deepseek_vl", "--data",
                      "json:" + os.path.join(TMP, "json", "data.json"), "--out", out])
        with self.assertRaisesRegex(SystemExit, "--model .*no-such-model: cannot load its config.json"):
            cli_main(["--model", os.path.join(TMP, "no-such-model"), "--family", "llava", "--data",
                      "json:" + os.path.join(TMP, "json", "data.json"), "--out", out])
        with self.assertRaisesRegex(SystemExit, "does not exist"):
            cli_main(["--model", os.path.join(TMP, "llava"), "--family", "llava", "--data",
                      "json:" + os.path.join(TMP, "json", "data.json"), "--out", "/nonexistent/x.nc"])
        with self.assertRaisesRegex(SystemExit, r"error: .*panoptic_val2017.json: images\[0\]\.file: expected a string"):
            cli_main(["--model", os.path.join(TMP, "llava"), "--family", "llava", "--data",
                      "json:" + os.path.join(TMP, "png", "annotations", "panoptic_val2017.json"), "--out", out])


class CliTests(unittest.TestCase):
    def test_train_val_caches_without_sam(self):
        """nosam-FAMILY-{train,val}.nc for run_tests.sh: flmm cache add-sam-embeddings, then training."""
        for f in FAMS:
            m, tok = model(f)
            for split, ss in [("train", samples()[:2]), ("val", samples()[2:])]:
                out = os.path.join(TMP, f"nosam-{f}-{split}.nc")
                export(m, tok, f, os.path.join(TMP, f), ss, out, split=split, fine_grid="max", log=None)
                import netCDF4
                with netCDF4.Dataset(out) as nc:
                    self.assertNotIn("sam_channel", nc.dimensions)
                    self.assertFalse([a for a in nc.ncattrs() if a.startswith("sam_")])

    def test_cli_each_family_and_source(self):
        runs = [("deepseek_vl", "json:" + os.path.join(TMP, "json", "data.json"), []),
                ("llava", "refcoco:" + os.path.join(TMP, "coco", "refcoco"), ["--protocol", "all"]),
                ("llava_next", "png:" + os.path.join(TMP, "png"), ["--store", "merged"])]
        for f, data, extra in runs:
            with self.subTest(family=f):
                out = os.path.join(TMP, f"cli-{f}.nc")
                cli_main(["--model", os.path.join(TMP, f), "--family", f, "--data", data, "--out", out,
                          "--dtype", "float32", "--limit", "2"] + extra)
                import netCDF4
                with netCDF4.Dataset(out) as nc:
                    self.assertEqual(nc.dimensions["sample"].size, 2)
                    self.assertIn(data.split(":")[0], nc.provenance_data_source)


if __name__ == "__main__":
    unittest.main()
