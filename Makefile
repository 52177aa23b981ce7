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

.PHONY: all deps build test bench clean

all: build

# Installs the Debian packages when a header or tool is missing.
deps:
	@missing=""; \
	[ -f /usr/include/netcdf.h ] || missing="$$missing libnetcdf-dev"; \
	command -v ncdump >/dev/null || missing="$$missing netcdf-bin"; \
	ls /usr/include/*/cblas.h /usr/include/cblas.h >/dev/null 2>&1 || missing="$$missing libopenblas-dev"; \
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

test: deps
	swift build $(SWIFT_FLAGS) --build-tests
	swift test $(SWIFT_FLAGS) --skip-build

bench: build
	$(BIN)/flmm-bench --out Results/bench.nc

clean:
	rm -rf .build
