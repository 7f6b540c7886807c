# healthpipe: every target bootstraps .venv from the pinned constraints first.
# `make demo` and `make test` are all a newcomer needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
STAMP  := $(VENV)/.healthpipe-installed
EXTRAS := dev,postgres,airflow
PYTEST_ARGS ?=
# TEST_WORKERS=2 spreads test modules over two pytest-xdist workers (a module's fixtures stay
# on one worker). Measured on 2 cores it was slower than serial (42 min against 35: the tests
# already run DuckDB, dbt threads and servers in parallel), so the default is 0: one process.
TEST_WORKERS ?= 0

.DEFAULT_GOAL := help
.PHONY: help install browser demo docs test test-fast reliability lint format typecheck lock bench clean airflow airflow-check airflow-celery spark-parity

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

# --compile-bytecode: uv writes no .pyc by itself, and where PYTHONDONTWRITEBYTECODE is set (as
# on our CI machines) Python never writes them either, so every process compiled pandas,
# Airflow, dbt and GX from source again: 1.5-4 s per import, measured; with .pyc, a third.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP) browser ## create .venv and install healthpipe with its pinned dependencies

# The bulletin's PDF and its browser test need headless Chromium and chromedriver. Installed
# with apt-get when missing and we may (root); otherwise say what to install. The browser
# test fails in CI (CI=true) when they are still missing.
browser: ## install headless Chromium and chromedriver (apt-get) when missing
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium and chromium-driver with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "make browser: Chromium missing; install chromium and chromium-driver (the bulletin PDF and its browser test need them)"; fi

demo: $(STAMP) ## simulate a country and run the whole pipeline on the embedded DuckDB warehouse
	$(VENV)/bin/healthpipe demo

# Airflow on the embedded defaults: SQLite metadata and logs under AIRFLOW_STATE, the DuckDB
# warehouse and sources of HEALTHPIPE_CONFIG (healthpipe.yml: the demo country), these DAGs.
AIRFLOW_STATE ?= var/airflow
AIRFLOW_PORT  ?= 8080
AIRFLOW_CONFIG = $(abspath $(or $(HEALTHPIPE_CONFIG),healthpipe.yml))
AIRFLOW_ENV = PATH=$(abspath $(VENV))/bin:$$PATH \
	AIRFLOW_HOME=$(abspath $(AIRFLOW_STATE)) \
	AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/ \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
	HEALTHPIPE_CONFIG=$(AIRFLOW_CONFIG) \
	PYTHONPATH=$(CURDIR)

airflow: $(STAMP) ## run Airflow standalone (SQLite, DuckDB, the demo sources) on :8080
	@test -n "$(HEALTHPIPE_CONFIG)" || test -d var/demo-country/dhis2 || \
	  $(VENV)/bin/healthpipe simulate --out var/demo-country --districts 4 --weeks 110
	@mkdir -p $(AIRFLOW_STATE)
	@$(AIRFLOW_ENV) $(VENV)/bin/airflow db migrate > $(AIRFLOW_STATE)/migrate.log
	@# DuckDB has one writer: every task writing the warehouse takes this pool's one slot.
	@$(AIRFLOW_ENV) $(VENV)/bin/airflow pools set healthpipe_duckdb 1 \
	  "tasks writing the DuckDB warehouse (single writer)" > /dev/null
	@test -f $(AIRFLOW_STATE)/passwords.json || $(PY) -c \
	  'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' \
	  > $(AIRFLOW_STATE)/passwords.json
	@echo "Airflow: http://localhost:$(AIRFLOW_PORT)  user admin, password" \
	  "$$($(PY) -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' $(AIRFLOW_STATE)/passwords.json)"
	$(AIRFLOW_ENV) AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$(abspath $(AIRFLOW_STATE))/passwords.json \
	  exec $(VENV)/bin/airflow standalone

airflow-check: $(STAMP) ## start `make airflow` on a small country, trigger a DAG over the REST API, stop
	$(PY) -m tests.airflow.standalone_check

airflow-celery: $(STAMP) ## the DAG chain under CeleryExecutor (2 workers, Redis, PostgreSQL); marts must equal LocalExecutor's
	$(PY) -m tests.airflow.celery_check

docs: $(STAMP) ## build dbt docs (lineage) and Great Expectations Data Docs into site/ (after make demo)
	$(VENV)/bin/healthpipe docs --out site

test: $(STAMP) browser lint ## lint, type-check and run the whole test suite
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# The Spark engine's own venv (pyspark carries its JVM jars, about 625 MB): only for Spark.
SPARK_VENV  := .venv-spark
SPARK_STAMP := $(SPARK_VENV)/.healthpipe-installed
$(SPARK_STAMP): $(STAMP) constraints.txt constraints-spark.txt
	@test -x $(SPARK_VENV)/bin/python || $(PYTHON) -m venv $(SPARK_VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(SPARK_VENV)/bin/python \
	  -c constraints.txt -c constraints-spark.txt dbt-core "dbt-spark[session]" pyspark
	@touch $(SPARK_STAMP)

spark-parity: $(STAMP) $(SPARK_STAMP) ## the dbt models on Spark (local mode, Java 17) against DuckDB, row for row
	$(PY) -m pytest tests/spark $(PYTEST_ARGS)

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
