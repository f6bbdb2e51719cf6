# Two commands do all set-up on a fresh machine with Python 3.10+:
#   make run    - create .venv, install, run `fivetran debug` on the embedded simulator (files/warehouse.db)
#   make test   - create .venv, install, lint, type-check and run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3 || command -v python)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck soak bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" fivetran debug --configuration configuration.json

lint: $(STAMP)
	$(PY) -m ruff check src tests connector.py $(wildcard benchmarks)

typecheck: $(STAMP)
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q

# Long forms of the reliability tests (many crash trials, fault soak).
soak: $(STAMP)
	$(PY) -m pytest -q -m slow --timeout=1800

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --out BENCHMARKS.md

clean:
	rm -rf $(VENV) files crash-reports .pytest_cache .mypy_cache .ruff_cache
