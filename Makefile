# Two commands do all set-up on a fresh machine with Python 3.10+:
#   make run    - create .venv, install, run `fivetran debug` on the embedded simulator (files/warehouse.db)
#   make test   - create .venv, install, lint, type-check and run the whole test suite
# And for Fivetran:
#   make setup-test - run the setup form's tests (`fivetran configuration --test`) on configuration.json
#   make package    - build the upload zip offline with the SDK's packager (dist/syncflow-connector.zip)
#   make deploy     - package and deploy; FIVETRAN_API_KEY, FIVETRAN_DESTINATION_NAME, FIVETRAN_CONNECTION_NAME
PYTHON ?= $(shell command -v python3.11 || command -v python3 || command -v python)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck soak bench bench-scale bench-quick clean setup-test package deploy

# The SDK runs `pipreqs` as a bare command: the venv's bin/ must be on PATH, or `fivetran deploy` cannot find it.
FIVETRAN := PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/fivetran
CONFIG   ?= configuration.json
STAGE    := build/connector

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# syncflow's bytecode, compiled here as a regular (non-editable) install would: the fetch process imports it at every
# sync's start, before any row moves, and compiling it from source there costs ~50 ms (PYTHONDONTWRITEBYTECODE set,
# or a read-only tree). Only what changed is recompiled; the files are ignored by git.
BYTECODE := $(PY) -m compileall -q src >/dev/null

run: $(STAMP)
	$(BYTECODE)
	$(FIVETRAN) debug --configuration $(CONFIG)

setup-test: $(STAMP)
	$(FIVETRAN) configuration --test --non-interactive

# The upload package holds connector.py, requirements.txt and src/ (less what only the Python API uses); see
# tools/package.py for why it is staged rather than zipped from here.
package: $(STAMP)
	$(PY) tools/package.py --stage $(STAGE) --out dist/syncflow-connector.zip

deploy: $(STAMP)
	$(PY) tools/package.py --stage $(STAGE) --stage-only
	$(FIVETRAN) deploy $(STAGE) --configuration "$(abspath $(CONFIG))" $(DEPLOY_FLAGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests connector.py tools $(wildcard benchmarks)

typecheck: $(STAMP)
	$(PY) -m mypy

# One worker per core (pytest-xdist): much of the suite waits on subprocesses (`fivetran debug`, the SDK runner) and
# simulated latency, so two cores run it in well under the serial time. Tests that share a module-scoped fixture are
# kept on one worker (`xdist_group`), so it is built once.
test: lint typecheck
	$(PY) -m pytest -q -n auto --dist loadgroup

# Long forms of the reliability tests (many crash trials, fault soak).
soak: $(STAMP)
	$(PY) -m pytest -q -m slow --timeout=1800

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# make bench: every side-by-side scenario (floor, clean, rate_limited, requests, scale10, zero_latency,
# concurrency), 10 min measured on 2 idle vCPUs, then BENCHMARKS.md; scale_1m's figures are kept from results.json.
# make bench-scale: the million-row scenario alone (both paths, a kill and resume each, memory), 18 min measured
# on 2 idle vCPUs; make bench-quick: small data through every scenario, a few minutes, into build/ (not committed).
bench: $(BENCH_STAMP)
	$(BYTECODE)
	$(PY) -m benchmarks.run --keep benchmarks/results.json --out BENCHMARKS.md

bench-scale: $(BENCH_STAMP)
	$(BYTECODE)
	$(PY) -m benchmarks.run --scenarios scale_1m --keep benchmarks/results.json --out BENCHMARKS.md

bench-quick: $(BENCH_STAMP)
	$(BYTECODE)
	mkdir -p build/bench-quick
	$(PY) -m benchmarks.run --quick --scenarios floor,clean,rate_limited,requests,scale10,zero_latency,concurrency,scale_1m \
		--results build/bench-quick/results.json --charts build/bench-quick --out build/bench-quick/BENCHMARKS.md

clean:
	rm -rf $(VENV) files crash-reports build dist .pytest_cache .mypy_cache .ruff_cache
