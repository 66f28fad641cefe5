# The README's two commands: `make demo` (set up, build tiny models, serve, score a sample video)
# and `make test`. Everything lands in .venv/, .cache/ and models/, all git-ignored.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTRITON_VERSION := 0.7.0
TRITON_HOME := .cache/pytriton_wheel
WEIGHTS ?= models/tiny
SEED ?= 0

PROM_HOME := .cache/prometheus

.PHONY: setup models demo serve test test-latest lint configs clean gpu-bundle prometheus load bench-gpu soak

setup: $(VENV)/.installed $(TRITON_HOME)/.unpacked

$(VENV)/.installed: pyproject.toml contract/pyproject.toml client/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ./contract -e "./client[metrics]" -e ".[dev]"
	touch $@

# tritonserver 2.51 and its Python backend, from the nvidia-pytriton wheel (see v2bgm/serve.py).
$(TRITON_HOME)/.unpacked: | $(VENV)/.installed
	$(PY) -m pip download -q --no-deps "nvidia-pytriton==$(PYTRITON_VERSION)" -d .cache
	unzip -q -o .cache/nvidia_pytriton-$(PYTRITON_VERSION)-*.whl -d $(TRITON_HOME)
	touch $@

# Debian's prometheus package (the server and promtool: static Go binaries) for tests/monitoring,
# unpacked, not installed. `apt-get download` needs apt's package lists: refreshed when it fails.
prometheus: $(PROM_HOME)/.unpacked

$(PROM_HOME)/.unpacked:
	mkdir -p .cache/deb && rm -f .cache/deb/prometheus_*.deb
	cd .cache/deb && { apt-get download prometheus || { apt-get update -qq && apt-get download prometheus; }; }
	rm -rf $(PROM_HOME) && dpkg -x .cache/deb/prometheus_*.deb $(PROM_HOME)
	$(PROM_HOME)/usr/bin/promtool --version | head -1
	touch $@

models: $(WEIGHTS)/.built

models/tiny/.built: $(wildcard export/*.py) | $(VENV)/.installed  # rebuilt when the export changes
	$(PY) -m export --size tiny --out models/tiny --seed $(SEED)
	touch $@

demo: setup models
	$(PY) -m v2bgm.demo --weights $(WEIGHTS) --out out

serve: setup models
	$(VENV)/bin/v2bgm-serve --weights $(WEIGHTS)

configs: $(VENV)/.installed
	$(PY) -m v2bgm.triton.model_configs model_repository

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint docker/Dockerfile

test: setup models prometheus lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-latest

# The client as a backend service installs it, beside the newest releases of its dependencies
# (numpy 2, the newest tritonclient[grpc] and protobuf, PyAV, ...; no torch): ./contract and
# ./client (editable) in .cache/venv-latest, the server package with --no-deps (the test fixtures
# import its launcher), then tests/client there. Their round trips go to a tritonserver whose
# Python-backend stubs run .venv (V2BGM_STUB_PYTHON: the stubs need numpy 1.x and torch). The
# venv is made once (stamp; a change to either package's pyproject.toml remakes it: ~30 s), so a
# re-run is the tests alone (1-1.5 min on 2 cores, 40 s of it the server's start). A fresh clone,
# as in CI, gets the newest releases; `rm -rf .cache/venv-latest` gets them here. Its versions.txt
# lists what it got.
LATEST := .cache/venv-latest

$(LATEST)/.installed: contract/pyproject.toml client/pyproject.toml
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q -e ./contract -e "./client[metrics]" pytest
	$(LATEST)/bin/python -m pip install -q --no-deps -e .
	$(LATEST)/bin/python -m pip list --format=freeze > $(LATEST)/versions.txt
	touch $@

test-latest: setup models $(LATEST)/.installed
	@grep -iE '^(numpy|protobuf|tritonclient|grpcio|av|decord)==' $(LATEST)/versions.txt | xargs
	V2BGM_STUB_PYTHON=$(abspath $(PY)) $(LATEST)/bin/python -m pytest -q tests/client

# The overload tests alone (tests/reliability/test_overload.py, also part of `make test`).
load: setup models
	$(PY) -m pytest -q -s -m "load or not load" tests/reliability/test_overload.py \
	  tests/reliability/test_stream_chaos.py tests/reliability/test_stream_cancel_after_final.py

# 1,000 ensemble requests (both models) on the tiny models against a dedicated server: every
# request answered, tritonserver's and each stub's memory flat within 10 % after a warm-up;
# prints a JSON summary (tests/reliability/soak.py). 1.3-1.5 requests/s on an idle 2-core machine
# (11-13 min); a run beside other test runs took 23 min.
soak: setup models
	$(PY) -m tests.reliability.soak

clean:
	rm -rf $(VENV) .cache models out

# On the GPU machine (with .gpu/ from gpu-bundle): full-size random weights, the engine against
# the reference and the floor, the served pipeline; JSON in $(OUT)/bench_gpu.json.
bench-gpu:
	OUT=$${OUT:-out} tests/gpu/bench.sh

# What the lent GPU machine lacks, for tests/gpu/ (see tests/gpu/README.md): accelerate (the
# models load with device_map) and psutil, the one requirement of it that transformers lacks.
GPU_WHEELS := numpy==1.26.4 protobuf==4.25.9 python-rapidjson==1.25 accelerate==1.15.0 psutil==7.2.2
gpu-bundle: setup
	rm -rf .gpu && mkdir -p .gpu
	tar -C $(TRITON_HOME) -cJf .gpu/triton312.tar.xz pytriton/tritonserver/bin \
	  pytriton/tritonserver/backends pytriton/tritonserver/python_backend_stubs/3.12 nvidia_pytriton.libs
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .gpu $(GPU_WHEELS)
	tar -C $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
	  -czf .gpu/tritonclient.tar.gz tritonclient
	# the peer (tests/gpu/yue_peer.py): YuE's code, trimmed, and the wheels it lacks there
	if [ -f reference/YuE/inference/infer.py ]; then tests/gpu/bundle_peer.sh; fi
	du -sh .gpu
