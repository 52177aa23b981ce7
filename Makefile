# F-LMM in Swift. `make test` installs what it needs, builds in release and runs every test.
SHELL := /bin/bash

# The target CPU decides the SIMD width of the kernels (see ARCHITECTURE.md §3).
# AVX-512 -> skylake-avx512 (SIMD16 GEMM), AVX2 -> haswell (SIMD8), else the default.
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
ifneq ($(findstring avx512f,$(CPU_FLAGS)),)
  TARGET_CPU ?= skylake-avx512
else ifneq ($(findstring avx2,$(CPU_FLAGS)),)
  TARGET_CPU ?= haswell
endif
SWIFT_FLAGS := -c release $(if $(TARGET_CPU),-Xswiftc -target-cpu -Xswiftc $(TARGET_CPU) -Xcc -march=$(TARGET_CPU))
BIN := $(shell swift build $(SWIFT_FLAGS) --show-bin-path 2>/dev/null)

DEB_PACKAGES := libopenblas-dev libnetcdf-dev netcdf-bin gnuplot-nox

.PHONY: all deps build test test-exporter exporter-check exporter-venv verify-threads smoke bench bench-pytorch figures figures-from ablations ablations-full clean pretrain pretrain-sam pretrain-vlm

all: build

# Installs the Debian packages when a header or tool is missing.
deps:
	@missing=""; \
	[ -f /usr/include/netcdf.h ] || missing="$$missing libnetcdf-dev"; \
	command -v ncdump >/dev/null || missing="$$missing netcdf-bin"; \
	{ ls /usr/include/*/cblas.h || ls /usr/include/cblas.h; } >/dev/null 2>&1 || missing="$$missing libopenblas-dev"; \
	command -v gnuplot >/dev/null || missing="$$missing gnuplot-nox"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run as root: apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

build: deps
	swift build $(SWIFT_FLAGS)

# Golden cases checked through the command-line verifier on 1 and 2 threads (outputs must be
# bitwise identical): every case the toolkit registers.
GOLDEN_FILES := $(filter-out %checkpoint_tiny_sam.safetensors, \
                  $(wildcard Tests/Goldens/*.safetensors))

test: deps
	swift build $(SWIFT_FLAGS) --build-tests
	swift test $(SWIFT_FLAGS) --skip-build
	$(MAKE) --no-print-directory verify-threads
	$(MAKE) --no-print-directory smoke
	$(MAKE) --no-print-directory exporter-check

# The Python exporter's tests (Exporter/run_tests.sh): tiny random LMMs built offline, checked bit
# for bit against eager attention, then read (flmm cache inspect --check) and trained on
# (ablate-merge --profile smoke) by this toolkit.
# `make test` runs them with EXPORTER_PYTHON (.venv-exporter when it exists, else python3) and prints
# why they are skipped when it cannot import torch and transformers >= 5; `make test-exporter` first
# makes .venv-exporter (CPU torch from PyTorch's index when reachable, else PyPI's torch, whose CUDA
# wheels make a 5.7 GB venv and still run on the CPU: measured on a fresh clone here, 2 min 43 s; no
# torchvision: segment_anything's two PIL calls are stood in for by Exporter/tests/tv_stub.py).
EXPORTER_PYTHON ?= $(if $(wildcard .venv-exporter/bin/python),$(CURDIR)/.venv-exporter/bin/python,python3)
exporter-check:
	@PYTHON=$(EXPORTER_PYTHON) FLMM_BIN=$(BIN)/flmm Exporter/run_tests.sh

test-exporter: build exporter-venv
	@$(MAKE) --no-print-directory exporter-check EXPORTER_PYTHON=$(CURDIR)/.venv-exporter/bin/python

exporter-venv:
	@[ -x .venv-exporter/bin/python ] || python3 -m venv .venv-exporter
	@.venv-exporter/bin/python -c 'import torch' 2>/dev/null \
	  || .venv-exporter/bin/pip install -q --retries 0 --timeout 15 torch \
	       --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
	  || .venv-exporter/bin/pip install -q torch
	.venv-exporter/bin/pip install -q -r Exporter/requirements.txt segment-anything

# `flmm verify-golden` over the golden files with FLMM_THREADS=1 and 2; the saved outputs must match bit for bit.
verify-threads:
	@rm -rf .build/verify-t1 .build/verify-t2
	@echo "flmm verify-golden on $(words $(GOLDEN_FILES)) golden files, FLMM_THREADS=1 and 2"
	@set -o pipefail; FLMM_THREADS=1 $(BIN)/flmm verify-golden --save .build/verify-t1 $(GOLDEN_FILES) | tail -1
	@set -o pipefail; FLMM_THREADS=2 $(BIN)/flmm verify-golden --save .build/verify-t2 $(GOLDEN_FILES) | tail -1
	@cmp -s <(cd .build/verify-t1 && cat $$(ls)) <(cd .build/verify-t2 && cat $$(ls)) \
	  && diff <(ls .build/verify-t1) <(ls .build/verify-t2) \
	  && echo "verify-golden outputs bitwise identical on 1 and 2 threads ($$(ls .build/verify-t1 | wc -l) cases)"

# Retrains the frozen ShapesWorld models from scratch (deterministic on any thread count) and
# checks the new checkpoints against the digests recorded in Checkpoints/SHA256SUMS. The two
# trainings run side by side on one thread each: on 2 cores that finishes sooner than running
# them one after the other on 2 threads (each scales poorly from 1 to 2 threads).
pretrain: build
	FLMM_THREADS=1 $(MAKE) --no-print-directory -j2 pretrain-vlm pretrain-sam
	sha256sum -c Checkpoints/SHA256SUMS

# TinyVLM: TinyVLMPretrainConfig.standard (deterministic on any thread count).
pretrain-vlm: build
	$(BIN)/flmm world pretrain-vlm --out Checkpoints/tinyvlm.safetensors

# TinySAM: TinySAMPretrainConfig.standard, then its box/point mIoU on val.
pretrain-sam: build
	$(BIN)/flmm world pretrain-sam --out Checkpoints/tinysam.safetensors

# Every experiment on the smoke profile (caches of a few ShapesWorld samples built from the committed
# checkpoints), then its Results files checked: with xarray when Python has it (installed with pip when
# possible), else `ncdump -h` against the documented schema.
SMOKE_DIR := .build/smoke
smoke:
	@rm -rf $(SMOKE_DIR)
	@python3 -c 'import xarray, netCDF4' 2>/dev/null || pip install -q xarray netCDF4 >/dev/null 2>&1 \
	  || echo "xarray not installable here: Results are checked with ncdump -h"
	$(BIN)/ablate-all --profile smoke --out $(SMOKE_DIR)
	Tests/Scripts/check_results.sh $(SMOKE_DIR)/ablate-*.nc

# The main job: the quick profile of every ablation, then the figures and the results table.
ablations: build
	$(BIN)/ablate-all --profile quick --out Results
	$(MAKE) --no-print-directory figures
	$(BIN)/flmm results table Results/ablate-*.nc

# The paper-style grid (3 seeds, trained to convergence) into Results/full and Figures/full; shard it with
# `$(BIN)/ablate-all --profile full --out Results/full --shard i/n` on n machines, then rerun it once to assemble.
ablations-full: build
	$(BIN)/ablate-all --profile full --out Results/full
	$(MAKE) --no-print-directory figures
	$(BIN)/flmm results table Results/full/ablate-*.nc


bench: build
	$(BIN)/flmm-bench --out Results/bench.nc

# PyTorch on the same machine, for the model rows of `make bench` (unet_step_c*, sam_decoder_step,
# sam_vit_b_forward): the same workloads in torch + segment_anything, from .venv-exporter.
bench-pytorch: exporter-venv
	.venv-exporter/bin/python Benchmarks/pytorch_reference.py

# Figures/*.png and *.svg from Results/ alone, and Figures/full/ from Results/full/ (the committed
# full-profile run) when it exists: `flmm results export` writes the gnuplot data (FIGURES_DIR/data,
# remade from scratch), then every script runs (Figures/*.gp). The same Results give byte-identical
# PNG and SVG files.
figures: build
	@$(MAKE) --no-print-directory figures-from RESULTS_DIR=Results FIGURES_DIR=Figures
	@if ls Results/full/ablate-*.nc >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory figures-from RESULTS_DIR=Results/full FIGURES_DIR=Figures/full; fi

FIGURE_RESULTS = $(wildcard $(RESULTS_DIR)/ablate-*.nc)
figures-from:
	@test -n "$(FIGURE_RESULTS)" || { echo "make figures: no $(RESULTS_DIR)/ablate-*.nc (run the experiments first)"; exit 1; }
	@rm -rf $(FIGURES_DIR)/data && mkdir -p $(FIGURES_DIR)
	$(BIN)/flmm results export $(FIGURE_RESULTS) $(wildcard $(RESULTS_DIR)/qualitative.nc) --out $(FIGURES_DIR)/data
	@set -e; for f in $(FIGURES_DIR)/data/*_bars.dat; do \
	  e=$$(basename $$f _bars.dat); \
	  gnuplot -c Figures/bars.gp $(FIGURES_DIR)/data $$e $(FIGURES_DIR); \
	  gnuplot -c Figures/curves.gp $(FIGURES_DIR)/data $$e $(FIGURES_DIR); \
	  echo "$(FIGURES_DIR)/$${e}_bars.{png,svg} $(FIGURES_DIR)/$${e}_curves.{png,svg}"; \
	done
	@if [ -f $(FIGURES_DIR)/data/qualitative_panels.gp ]; then \
	  gnuplot -c Figures/qualitative.gp $(FIGURES_DIR)/data $(FIGURES_DIR) && echo "$(FIGURES_DIR)/qualitative.{png,svg}"; \
	fi

clean:
	rm -rf .build
