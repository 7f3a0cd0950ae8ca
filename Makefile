# One command sets up and runs each job; .venv is created when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow lint bench clean

$(BIN)/flowdiff: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/flowdiff

setup: $(BIN)/flowdiff

demo: setup
	$(BIN)/flowdiff demo

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The long checks (marked slow): longer training against closed forms, end-to-end image runs.
test-slow: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m slow

bench: setup
	$(BIN)/python benchmarks/simulate_overhead.py

clean:
	rm -rf $(VENV) runs
