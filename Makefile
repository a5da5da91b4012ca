# Two commands do all the set-up: `make run` (quickstart) and `make test` (test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here (not in pyproject) so a fresh venv takes the CPU wheel; users may bring any recent torch.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: run test setup data bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP) data

data: $(STAMP)
	$(BIN)/python -m siegecraft.core.data.setup_system

run: setup
	$(BIN)/siegecraft run experiments/quickstart.toml

# SIEGECRAFT_REQUIRE_LITHOPS: the Lithops tests fail instead of skipping when lithops (in `.[dev]`) is missing.
test: setup
	SIEGECRAFT_REQUIRE_LITHOPS=1 $(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/fl_overhead.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
