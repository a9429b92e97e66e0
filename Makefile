# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# what it needs; nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml solvers/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e "./solvers[test,cvxpy]" -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/evdlm demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src solvers tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src solvers/src

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/evdlm bench solver --json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
