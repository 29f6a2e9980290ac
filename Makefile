# The shop's commands. `make run` and `make test` are the two a new machine needs; both install first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install run test test-unit test-integration test-contract test-e2e test-function lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

## Start the whole shop locally (PostgreSQL, migrations, stock, every function); Ctrl-C stops it.
run: install
	PYTHONPATH=. $(PY) -m functions.devserver run

## Install, start the test infrastructure, run every suite, stop what was started.
test: install
	PYTHONPATH=. $(PY) -m pytest tests -q -p no:cacheprovider

test-unit: install
	PYTHONPATH=. $(PY) -m pytest tests/unit -q

test-integration: install
	PYTHONPATH=. $(PY) -m pytest tests/integration -q

test-contract: install
	PYTHONPATH=. $(PY) -m pytest tests/contract -q

test-e2e: install
	PYTHONPATH=. $(PY) -m pytest tests/e2e -q

## One function's tests alone: make test-function F=list_cart
test-function: install
	@test -n "$(F)" || { echo "usage: make test-function F=<function name>"; exit 2; }
	PYTHONPATH=. $(PY) -m pytest tests -q --function $(F)

lint: install
	$(VENV)/bin/ruff check functions shared_lib tests bench
	$(VENV)/bin/ruff format --check functions shared_lib tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix functions shared_lib tests bench
	$(VENV)/bin/ruff format functions shared_lib tests bench

## Benchmarks: print measured figures; never part of `make test`.
bench: install
	PYTHONPATH=. $(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
