"""Writes flmm_preprocessing_reference.json: F-LMM's own image processors run on seeded images.

Not part of the test run.  Usage (a python with transformers==4.39.3, numpy<2, pillow; no torch):

    python Exporter/tests/make_flmm_reference.py --flmm /path/to/F-LMM > Exporter/tests/flmm_preprocessing_reference.json

It imports F-LMM's ``CustomLlavaImageProcessor``, ``CustomLlavaNextImageProcessor`` (LLaVA-1.5 /
llava-v1.6 settings: 336 px, CLIP mean/std, bicubic, the llava-v1.6 pinpoints) and DeepSeek-VL's
``VLMImageProcessor`` (384 px, mean/std 0.5) from that checkout, and records for each image the
sha256 of ``pixel_values`` (float32 bytes) and the padding meta.  torch and torchvision are not
needed by these processors on PIL images except for DeepSeek-VL's ``torchvision...resize``, which
on a PIL image is ``img.resize((w, h), BICUBIC)``; it is supplied as exactly that call.
test_exporter.PreprocessTests.test_matches_flmm_processors compares the exporter against the file.
"""
import argparse
import hashlib
import importlib.machinery
import json
import sys
import types

import numpy as np
from PIL import Image

SIZES = [(480, 640), (427, 640), (640, 359), (333, 333), (101, 997), (1000, 77), (500, 375)]
MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--flmm", required=True, help="a checkout of github.com/wusize/F-LMM")
    a = p.parse_args()
    import transformers  # noqa: F401  (decides torch/torchvision are absent before the stand-ins)
    import transformers.image_processing_utils  # noqa: F401
    from transformers import AutoImageProcessor  # noqa: F401
    mods = {n: types.ModuleType(n) for n in ("torch", "torchvision", "torchvision.transforms",
                                             "torchvision.transforms.functional", "mmengine", "mmengine.logging")}
    mods["torch"].Tensor = object
    fn = mods["torchvision.transforms.functional"]
    fn.InterpolationMode = types.SimpleNamespace(BICUBIC=Image.BICUBIC)
    fn.resize = lambda img, size, interpolation, antialias=True: img.resize((size[1], size[0]), interpolation)
    mods["torchvision"].transforms = mods["torchvision.transforms"]
    mods["torchvision.transforms"].functional = fn
    mods["mmengine.logging"].print_log = lambda *x, **k: None
    for n, m in mods.items():
        m.__spec__ = importlib.machinery.ModuleSpec(n, None)
    sys.modules.update(mods)
    utils = types.ModuleType("flmm.utils")
    utils.multi_apply = lambda f, *args: tuple(map(list, zip(*map(f, *args))))
    sys.modules["flmm.utils"] = utils
    import importlib.util as ilu
    import os

    def load(rel):   # by file path: the packages' __init__ files import their models (torch)
        spec = ilu.spec_from_file_location(rel.replace("/", "_")[:-3], os.path.join(a.flmm, rel))
        m = ilu.module_from_spec(spec)
        spec.loader.exec_module(m)
        return m
    CustomLlavaImageProcessor = load("flmm/datasets/llava_processors.py").CustomLlavaImageProcessor
    CustomLlavaNextImageProcessor = load("flmm/datasets/llava_next_processors.py").CustomLlavaNextImageProcessor
    VLMImageProcessor = load("deepseek_vl/models/image_processing_vlm.py").VLMImageProcessor
    procs = {
        "llava": CustomLlavaImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                           image_mean=MEAN, image_std=STD, resample=3),
        "llava_next": CustomLlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                                    image_mean=MEAN, image_std=STD, resample=3,
                                                    image_grid_pinpoints=PINPOINTS),
        "deepseek_vl": VLMImageProcessor(image_size=384, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)),
    }
    out = {"sizes": SIZES, "cases": {}}
    for fam, proc in procs.items():
        for i, img in enumerate(images()):
            r = proc.preprocess([img]) if fam == "deepseek_vl" else proc.preprocess(img)
            x = np.ascontiguousarray(np.asarray(r["pixel_values"][0], np.float32))
            out["cases"][f"{fam}/{i}"] = {"shape": list(x.shape), "sha256": hashlib.sha256(x.tobytes()).hexdigest(),
                                          "meta": r["meta_datas"][0]}
    json.dump(out, sys.stdout, indent=1, default=int)


if __name__ == "__main__":
    main()
