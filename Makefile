# healthpipe: every target bootstraps .venv from the pinned constraints first.
# `make demo` and `make test` are all a newcomer needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
STAMP  := $(VENV)/.healthpipe-installed
EXTRAS := dev,postgres,airflow
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast reliability lint format typecheck lock bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(UV) pip install --quiet --python $(PY) -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install healthpipe with its pinned dependencies

demo: $(STAMP) ## simulate a country and run the whole pipeline on the embedded DuckDB warehouse
	$(VENV)/bin/healthpipe demo

test: $(STAMP) lint ## lint, type-check and run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the unit tests only
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

RELIABILITY_RESULTS := benchmarks/results/reliability.jsonl

reliability: $(STAMP) ## the fault and abuse suite in full (50 kill points, a real PostgreSQL restart); rewrites RELIABILITY.md
	rm -f $(RELIABILITY_RESULTS)
	HEALTHPIPE_KILL_POINTS=50 HEALTHPIPE_RELIABILITY_PG_RESTART=1 \
	  HEALTHPIPE_RELIABILITY_RESULTS=$(RELIABILITY_RESULTS) \
	  $(PY) -m pytest -m reliability $(PYTEST_ARGS)
	$(PY) -m benchmarks.reliability_report $(RELIABILITY_RESULTS) RELIABILITY.md

lint: $(STAMP) ## ruff (lint and format check) and mypy on connectors/ and pipelines/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: $(STAMP) ## re-resolve constraints.txt from pyproject.toml
	$(UV) pip compile pyproject.toml --extra dev --extra postgres --extra airflow \
	  --python-version 3.11 --no-header --no-annotate -o constraints.body
	@{ echo "# Every version healthpipe installs, resolved for Python 3.11 (versions only)."; \
	   echo "# Regenerate with: make lock"; cat constraints.body; } > constraints.txt
	@rm -f constraints.body

bench: $(STAMP) ## run the benchmark harness and record results under benchmarks/results/
	$(PY) -m benchmarks.run --scale $(or $(SCALE),S)

clean: ## remove the run-time state (var/, dbt target) but keep .venv
	rm -rf var target logs site
