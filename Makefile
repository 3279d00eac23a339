# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The CPU build that lies on these machines' disk; on a CUDA box use e.g. TORCH_SPEC='torch>=2.6'.
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/demo.yaml
BIN := $(VENV)/bin
LLMOPS := $(BIN)/llmops
# dvc stages call `llmops`: put the venv first on PATH for everything make runs.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup demo demo-tools test test-tools lint pipeline base-model prep tune eval register serve stop ask monitor clean vllm test-vllm

help:
	@echo "make demo     set up .venv, run the DVC pipeline, leave a live endpoint, send a sample request"
	@echo "make test     set up .venv and run the test suite"
	@echo "make stop     stop the demo server"
	@echo "make demo-tools  the tool-calling demo: stages of configs/tools-demo.yaml, then an openai call with tools"
	@echo "make vllm     create .venv-vllm with the vLLM build for this machine (CPU or CUDA)"
	@echo "make test-vllm  the real-vLLM e2e suite (pytest -m vllm; runs make vllm first)"
	@echo "make test-tools the tool-calling demo end to end (pytest -m tools_demo)"
	@echo "stage targets: base-model prep tune eval register serve ask monitor pipeline lint clean"
	@echo "more: monitor-check monitor-report monitor-export monitor-rules bench"

# TORCH_INDEX: an extra index for torch, e.g. PyTorch's CPU wheel index on a CPU CI runner (.github).
TORCH_INDEX ?=
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/dvc repro
	@# The demo serves the staging slot (serve.source); production moves only by an approved promote.
	$(LLMOPS) register promote latest --to staging -c $(CONFIG)
	$(LLMOPS) serve status -c $(CONFIG) >/dev/null 2>&1 && $(LLMOPS) serve reload -c $(CONFIG) \
		|| $(LLMOPS) serve --detach -c $(CONFIG)
	$(LLMOPS) serve ask -c $(CONFIG) "Hi, I was charged twice this month, please refund me."
	@# Alerts are reported, not fatal here (`llmops monitor` exits 1 on a breach, for CI jobs).
	$(LLMOPS) monitor -c $(CONFIG) --report-only
	@echo "endpoint: $$(cat serve/endpoint.json | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["url"])')/v1  (stop it with: make stop)"

test: setup
	$(BIN)/python -m pytest -q

# vLLM pins its own torch and transformers: it gets a venv of its own, which serve.vllm.python
# (and eval.backend=vllm) use by default. CPU machines get vLLM's CPU build (x86-64).
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed: scripts/install_vllm.sh
	PYTHON=$(PYTHON) bash scripts/install_vllm.sh $(VLLM_VENV)

vllm: $(VLLM_VENV)/.installed

test-vllm: setup vllm
	$(BIN)/python -m pytest -q -m vllm tests/e2e/test_vllm.py

# The tool-calling demo end to end (tests/e2e/test_tools_demo.py, ~10 min on 2 CPU cores).
test-tools: setup
	$(BIN)/python -m pytest -q -m tools_demo tests/e2e/test_tools_demo.py

lint: setup
	$(BIN)/ruff check llmops_cli tests benchmarks data/raw

pipeline: setup
	$(BIN)/dvc repro

base-model: setup
	$(LLMOPS) model scaffold -c $(CONFIG)
prep: setup
	$(LLMOPS) prep -c $(CONFIG)
tune: setup
	$(LLMOPS) tune -c $(CONFIG)
eval: setup
	$(LLMOPS) eval -c $(CONFIG)
register: setup
	$(LLMOPS) register -c $(CONFIG)
serve: setup
	$(LLMOPS) register promote latest --to staging -c $(CONFIG)
	$(LLMOPS) serve --detach -c $(CONFIG)
ask: setup
	$(LLMOPS) serve ask -c $(CONFIG) "$(or $(MSG),My package with the laptop has not arrived yet. Where is order 52817?)"
monitor: setup
	$(LLMOPS) monitor -c $(CONFIG)

# The tool-calling demo (configs/tools-demo.yaml, everything under demo-tools/): the same stages run
# one by one, then the official openai client calls the served model with `tools`.
TOOLS_CONFIG ?= configs/tools-demo.yaml
demo-tools: setup
	$(LLMOPS) model scaffold -c $(TOOLS_CONFIG)
	$(LLMOPS) prep -c $(TOOLS_CONFIG)
	$(LLMOPS) tune -c $(TOOLS_CONFIG)
	$(LLMOPS) eval -c $(TOOLS_CONFIG)
	$(LLMOPS) register -c $(TOOLS_CONFIG)
	$(LLMOPS) register promote latest --to staging -c $(TOOLS_CONFIG)
	$(LLMOPS) serve status -c $(TOOLS_CONFIG) >/dev/null 2>&1 && $(LLMOPS) serve reload -c $(TOOLS_CONFIG) \
		|| $(LLMOPS) serve --detach -c $(TOOLS_CONFIG)
	$(BIN)/python scripts/ask_tools.py demo-tools/serve/endpoint.json "Where is my DHL parcel?"

stop:
	-$(LLMOPS) serve stop -c $(CONFIG)
	-$(LLMOPS) serve stop -c $(TOOLS_CONFIG) 2>/dev/null

clean: stop
	rm -rf models data/processed artifacts reports registry serve demo-tools .dvc/cache .dvc/tmp
	rm -f metrics/*.json metrics/*.csv dvc.lock

.PHONY: monitor-check monitor-report monitor-export monitor-rules bench
monitor-check: setup
	$(LLMOPS) monitor check -c $(CONFIG)
monitor-report: setup
	$(LLMOPS) monitor report -c $(CONFIG)
monitor-export: setup
	$(LLMOPS) monitor export -c $(CONFIG)
monitor-rules: setup
	$(LLMOPS) monitor export-rules -c $(CONFIG)

# CPU benchmarks (results and commands: benchmarks/RESULTS.md)
bench: setup
	$(BIN)/python benchmarks/help_bench.py
	$(BIN)/python benchmarks/prep_bench.py --rows 100000
	$(BIN)/python benchmarks/monitor_bench.py --lines 1000000
	$(BIN)/python benchmarks/serve_bench.py
