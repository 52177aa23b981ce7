#!/usr/bin/env python3
"""Checks Results files the way a user opens them: with xarray, the factors must be coordinates.

Usage: check_results.py RESULTS.nc...   (exit 0 when every file passes; 3 when xarray is absent,
so the caller can fall back to the ncdump check in check_results_ncdump.sh)
"""
import sys

try:
    import xarray as xr
except ImportError:
    print("xarray not installed", file=sys.stderr)
    sys.exit(3)

FACTORS = ["merge", "normalize_input", "upsample_input", "refiner", "use_box", "use_mask", "use_text"]
DIMS = {"config", "seed", "mask_kind", "phrase_group", "log_step", "phrase"}
METRICS = ["ciou", "miou", "prec50", "avg_recall"]
CURVES = ["loss", "loss_mask", "loss_dice", "sam_loss_mask", "sam_loss_dice"]

failed = False
for path in sys.argv[1:]:
    ds = xr.open_dataset(path)
    problems = []
    missing_dims = DIMS - set(ds.sizes)
    if missing_dims:
        problems.append(f"missing dims {sorted(missing_dims)}")
    for f in FACTORS:
        if f not in ds.coords:
            problems.append(f"factor {f} is not a coordinate")
        elif ds.coords[f].dims != ("config",):
            problems.append(f"factor {f} has dims {ds.coords[f].dims}, expected ('config',)")
    for v in METRICS:
        if v not in ds.data_vars or ds[v].dims != ("config", "seed", "mask_kind", "phrase_group"):
            problems.append(f"metric {v} missing or with wrong dims")
        else:
            vals = ds[v].sel(mask_kind="unet", phrase_group="all").values
            if not ((vals >= 0) & (vals <= 1)).all():
                problems.append(f"{v} of the U-Net outside [0, 1]: {vals}")
    for v in CURVES:
        if v not in ds.data_vars or ds[v].dims != ("config", "seed", "log_step"):
            problems.append(f"curve {v} missing or with wrong dims")
    if "iou" not in ds.data_vars or ds["iou"].dims != ("config", "seed", "mask_kind", "phrase"):
        problems.append("iou missing or with wrong dims")
    for a in ["toolkit_version", "git_commit", "backend", "threads", "cpu", "wall_seconds", "train_cache_sha256"]:
        if a not in ds.attrs:
            problems.append(f"attribute {a} missing")
    if problems:
        failed = True
        print(f"{path}: " + "; ".join(problems))
    else:
        print(f"{path}: xarray sees {ds.sizes['config']} configurations × {ds.sizes['seed']} seeds; "
              f"factors {', '.join(FACTORS)} are coordinates")
sys.exit(1 if failed else 0)
