"""python -m flmm_export --model HF_ID_OR_PATH --family deepseek_vl|llava|llava_next
    --data refcoco:DIR|png:ROOT|json:FILE --out cache.nc [options]

Runs the frozen LMM once over the data and writes a GroundingCache (schema v1) that the Swift
toolkit reads (``flmm cache inspect``).  See Exporter/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m flmm_export", description=__doc__.split("\n\n")[1])
    p.add_argument("--model", required=True, help="Hugging Face model id or local folder")
    p.add_argument("--family", required=True, choices=["deepseek_vl", "llava", "llava_next"])
    p.add_argument("--data", required=True, help="refcoco:DIR | png:ROOT | json:FILE")
    p.add_argument("--out", required=True, help="output .nc (written atomically)")
    p.add_argument("--store", default="rows", choices=["rows", "merged"],
                   help="per-token attention rows, or per-phrase mean and max maps")
    p.add_argument("--sam-checkpoint", help="official SAM .pth: also store SAM image embeddings")
    p.add_argument("--sam-model", default="vit_l", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--limit", type=int, help="only the first N samples")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--split", default="val", help="data split (refcoco: val/testA/testB/test/train; png: val/train)")
    p.add_argument("--protocol", default="select_first", choices=["select_first", "all"],
                   help="refcoco: first sentence per object (F-LMM eval) or every sentence")
    p.add_argument("--per-phrase", action="store_true", help="one sample per phrase (F-LMM's refcoco evaluation)")
    p.add_argument("--image-dir", help="images folder (refcoco default DIR/../train2014, png ROOT/{split}2017)")
    p.add_argument("--refs-file", help="refcoco: refs pickle (default refs(unc|umd|google).p in DIR)")
    p.add_argument("--png-narratives", help="png: narratives json (default ROOT/annotations/png_coco_{split}2017.json)")
    p.add_argument("--panoptic-json", help="png: panoptic json (default ROOT/annotations/panoptic_{split}2017.json)")
    p.add_argument("--panoptic-dir", help="png: panoptic PNG folder (default ROOT/annotations/panoptic_{split}2017)")
    p.add_argument("--template", choices=["vicuna", "mistral", "deepseek"],
                   help="prompt template (default: deepseek for deepseek_vl; mistral for llava_next models whose "
                        "id contains 'mistral'; else vicuna)")
    p.add_argument("--prompt", help="user prompt (default F-LMM's '<image>\\nPlease give me a description of the image.')")
    p.add_argument("--fine-grid", default="largest", choices=["largest", "max"],
                   help="llava_next: size image_token for the largest sample (default) or for the largest "
                        "possible fine grid (same layout attributes for every cache of the model, e.g. train and val)")
    p.add_argument("--deflate", type=int, default=1, help="deflate level 0-9 (0: none); shuffle is on")
    return p.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"flmm_export needs torch and transformers>=5 ({e}); pip install -r Exporter/requirements.txt")
    import torch
    from .data import DataError, read_data
    from .export import export, load_model
    from .family import FamilyError
    from .writer import CacheWriteError
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: CUDA is not available")
    out_dir = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(out_dir):
        raise SystemExit(f"--out {a.out}: folder {out_dir} does not exist")
    try:
        samples = read_data(a.data, split=a.split, protocol=a.protocol, image_dir=a.image_dir, refs_file=a.refs_file,
                            per_phrase=a.per_phrase, png_narratives=a.png_narratives, panoptic_json=a.panoptic_json,
                            panoptic_dir=a.panoptic_dir)
        if a.limit is not None:
            samples = samples[:a.limit]
        if not samples:
            raise DataError(f"{a.data}: no samples")
        template = a.template
        if template is None and a.family == "llava_next" and "mistral" in a.model.lower():
            template = "mistral"
        sam = None
        if a.sam_checkpoint:
            from .sam import load_sam
            sam = load_sam(a.sam_model, a.sam_checkpoint, a.device)
        model, tok = load_model(a.model, a.family, getattr(torch, a.dtype), a.device)
        prov = {"data_source": a.data, "split": a.split, "protocol": a.protocol if a.data.startswith("refcoco:") else "-",
                "per_phrase": str(a.per_phrase), "limit": str(a.limit), "device": a.device,
                "fine_grid": a.fine_grid,
                "command": " ".join(sys.argv)}
        if a.sam_checkpoint:
            prov["sam_checkpoint"] = os.path.basename(a.sam_checkpoint)
        st = export(model, tok, a.family, a.model, samples, a.out, store=a.store, sam=sam, split=a.split,
                    provenance=prov, template=template, prompt=a.prompt, deflate=a.deflate or None,
                    fine_grid=a.fine_grid)
    except (DataError, FamilyError, CacheWriteError) as e:
        raise SystemExit(f"error: {e}")
    print(f"wrote {st['path']}: {st['samples']} samples in {st['seconds']:.2f} s "
          f"({st['samples'] / st['seconds']:.2f} samples/s), {st['bytes']} bytes "
          f"({st['bytes'] / st['samples']:.0f} bytes/sample)")


if __name__ == "__main__":
    main()
