#!/usr/bin/env bash
# Exporter tests (tiny random models, built offline).  Usage: Exporter/run_tests.sh
#   PYTHON   the interpreter with torch, transformers>=5, netCDF4, pillow, pycocotools, numpy
#            (default: python3)
#   FLMM_BIN the Swift toolkit's binary (default .build/release/flmm, from the repository root);
#            when it exists, `$FLMM_BIN cache inspect --check` reads every exported tiny cache.
# Without torch/transformers it prints why and exits 0 ("skipped").
set -u
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
PY="${PYTHON:-python3}"
BIN="${FLMM_BIN:-$root/.build/release/flmm}"
if ! why=$("$PY" -c "import torch, transformers, netCDF4, PIL, pycocotools, numpy; \
assert int(transformers.__version__.split('.')[0]) >= 5, 'transformers ' + transformers.__version__ + ' < 5'" 2>&1); then
    echo "exporter tests skipped: $PY cannot import the exporter's requirements ($(echo "$why" | tail -1))"
    echo "  (pip install -r Exporter/requirements.txt, or set PYTHON=/path/to/venv/bin/python)"
    exit 0
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/flmm-export-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$here"
PYTHONPATH="$here" FLMM_EXPORT_TEST_DIR="$work" "$PY" -m unittest -v tests.test_exporter 2>&1 \
    | grep -v -e "Loading weights" -e "Writing model shards"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "exporter tests FAILED"; exit "$status"; }
if [ -x "$BIN" ]; then
    n=0
    for f in "$work"/*.nc; do
        out=$("$BIN" cache inspect "$f" --check 2>&1)
        rc=$?
        if [ $rc -ne 0 ]; then
            if echo "$out" | grep -q "sam_model': missing attribute"; then
                echo "swift: $(basename "$f"): not readable by this flmm build (no SAM embeddings; needs the reader that accepts caches without sam_embedding)"
                continue
            fi
            echo "swift: $(basename "$f"): FAILED"; echo "$out"; exit 1
        fi
        echo "swift: $(basename "$f"): $(echo "$out" | grep -e '^check' | sed 's/^check *//')"
        n=$((n + 1))
    done
    echo "swift: flmm cache inspect --check read $n exported caches"
    ablate="$(dirname "$BIN")/ablate-merge"
    tinysam="$root/Checkpoints/tinysam.safetensors"
    train() {   # $1 label, $2 train cache, $3 val cache
        (cd "$root" && "$ablate" --profile smoke --seeds 0 --steps 2 --cache "$2" --val-cache "$3" \
            --out "$work/train-$1" 2>&1 | tail -1 | sed "s|^|swift train $1: |")
        [ -f "$work/train-$1/ablate-merge.nc" ] || { echo "swift training on the $1 caches FAILED"; exit 1; }
    }
    if [ -x "$ablate" ] && [ -f "$tinysam" ]; then
        for f in deepseek_vl llava llava_next; do
            # SAM embeddings from segment_anything (a random Sam of TinySAM's embedding size)
            if [ -f "$work/tinysam-$f-train.nc" ]; then
                train "$f-segment_anything" "$work/tinysam-$f-train.nc" "$work/tinysam-$f-val.nc"
            fi
            # exported without SAM, then flmm cache add-sam-embeddings (TinySAM) -- the no-GPU path
            if "$BIN" cache add-sam-embeddings --help >/dev/null 2>&1; then
                for s in train val; do
                    out=$("$BIN" cache add-sam-embeddings "$work/nosam-$f-$s.nc" --sam "$tinysam" --sam-model tinysam \
                        --out "$work/addsam-$f-$s.nc" 2>&1) || { echo "$out"; echo "add-sam-embeddings on $f FAILED"; exit 1; }
                done
                train "$f-add-sam-embeddings" "$work/addsam-$f-train.nc" "$work/addsam-$f-val.nc"
            fi
        done
    else
        echo "swift training check skipped (needs $ablate and $tinysam)"
    fi
else
    echo "swift check skipped: no flmm binary at $BIN (set FLMM_BIN)"
fi
echo "exporter tests passed"
