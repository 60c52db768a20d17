# One task runner for people and CI. `make run` and `make test` set up whatever is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SG := $(VENV)/bin/smartgate
DATA_DIR ?= smartgate-data
LISTEN ?= 127.0.0.1:50051
STAMP := $(VENV)/.installed
# PyTriton (a real Triton server for the Triton backend's tests) needs numpy < 2: its own venv,
# from the system python3 when there is one (see recognizer/backends/triton_process.py).
TRITON_VENV ?= .venv-triton
TRITON_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) $(PYTHON))
TRITON_STAMP := $(TRITON_VENV)/.installed

.PHONY: help setup system-deps models triton-venv run test test-all lint format typecheck proto bench-native bench-latency bench-accuracy bench-events bench-peer bench-index bench-saturation fuzz soak clean

help:
	@echo "make run        set up, fetch models, serve with embedded defaults on $(LISTEN)"
	@echo "make test       set up everything, then run the default test suite"
	@echo "make lint       ruff + cython-lint + mypy"
	@echo "make bench-*    native | latency | accuracy | peer | index | events benchmarks (not part of the tests)"
	@echo "make bench-saturation  one-face saturation against the models-alone ceiling, 70 % and 150 % runs (~4 min)"
	@echo "make fuzz       fuzz the decoder and every RPC, FUZZ_SECONDS each (default 300)"
	@echo "make soak       8 gates for 10 minutes with 1 % corrupt frames: RSS curve, streams"

# Debian packages: a C compiler (Cython kernels), npm (model packages), redis-server (event
# stream tests), a CJK font (synthetic plate tests).
system-deps:
	@missing=""; \
	command -v cc >/dev/null || missing="$$missing build-essential"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	$(TRITON_PYTHON) -c "import ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml setup.py $(wildcard native/*.pyx)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: system-deps $(STAMP)

$(TRITON_STAMP):
	@test -x $(TRITON_VENV)/bin/python || $(TRITON_PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -q --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install -q nvidia-pytriton==0.7.0 onnxruntime "numpy<2"
	@touch $(TRITON_STAMP)

triton-venv: system-deps $(TRITON_STAMP)

models: setup
	$(SG) models fetch

run: models
	$(SG) serve --data-dir $(DATA_DIR) --listen $(LISTEN)

test: models triton-venv
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m cluster_faults  # heavy Ray fault tests (cluster mode), after the rest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cython-lint native/
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

proto: setup
	$(PY) -m cluster.protogen

bench-native: setup
	$(PY) -m benchmarks.native_kernels

bench-latency: models
	$(PY) -m benchmarks.capture_latency

bench-accuracy: models
	$(PY) -m benchmarks.face_accuracy

# The peer library goes into the venv only for this comparison (see benchmarks/peer.py).
bench-peer: models
	$(PY) -m pip install -q --no-deps face_recognition==1.3.0
	$(PY) -m pip install -q dlib-bin face_recognition_models==0.3.0
	$(PY) -m pytest -q -m peer
	$(PY) -m benchmarks.peer

bench-index: setup
	$(PY) -m benchmarks.index_scale

# Issue 5's acceptance figures: saturation ≥ 85 % of --limit, every gate's p99 at 70 % and 150 %.
bench-saturation: models
	$(SG) bench --workload one-face --sweep auto --ceiling auto

bench-events: setup
	$(PY) -m benchmarks.events_query --events 1000000

# Each fuzz target (tests/fuzz) for FUZZ_SECONDS: prints inputs tried, time and failures, keeps
# new failures in tests/fuzz/regressions/. libpng's complaints about broken PNGs go to FUZZ_LOG.
FUZZ_SECONDS ?= 300
FUZZ_LOG ?= reports/fuzz-stderr.log
fuzz: models
	@mkdir -p $(dir $(FUZZ_LOG))
	SMARTGATE_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -s --timeout 0 \
	  tests/fuzz/test_fuzz_decoder.py tests/fuzz/test_fuzz_handlers.py 2>$(FUZZ_LOG)

SOAK_ARGS ?= --gates 8 --minutes 10 --corrupt 0.01
soak: models
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf build $(VENV) $(TRITON_VENV) native/*.c native/*.so *.egg-info
