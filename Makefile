# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# what it needs; nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench asv clean

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
	$(BIN)/ruff format --check src solvers tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src solvers/src

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/evdlm bench solver --json

# airspeed velocity over benchmarks/asv_bench (asv.conf.json), in this venv; results in .asv/
asv: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/asv machine --yes >/dev/null
	$(BIN)/asv run --quick --python=same --show-stderr

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .asv
