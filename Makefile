# Two entry points for a fresh machine (see README):
#   make run   - set up and run the main job (the demo, no cluster needed)
#   make test  - set up and run the whole test suite, lint and type checks
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install system-deps lint typecheck pytest bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/controlloop demo

system-deps:
	bash scripts/install-system-deps.sh

lint: install
	$(BIN)/ruff check controlloop tests benchmarks

typecheck: install
	$(BIN)/mypy

pytest: install system-deps
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: install
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_optimize.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-out
