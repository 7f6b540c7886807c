"""The Airflow 3 DAGs: they import cleanly and fast, and the slice DAG runs with dag.test()
against a temporary DuckDB warehouse, calling the same pipeline functions as the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("dag_check.py")


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    env.pop("HEALTHPIPE_WAREHOUSE", None)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return env


def check(env: dict[str, str], tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(CHECK), str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


def test_dags_import_without_errors_and_parse_fast(
    airflow_env: dict[str, str], tmp_path: Path
) -> None:
    report = check(airflow_env, tmp_path)
    assert report["import_errors"] == {}
    assert report["dags"], "no DAGs found"
    for file, duration in report["parse_seconds"].items():
        assert duration < 2.0, f"{file} took {duration:.2f} s to parse"
    for dag_id, dag in report["dags"].items():
        assert dag["tags"], dag_id
        assert dag["owner"] == "healthpipe", dag_id
        assert dag["retries"] and dag["retries"] > 0, dag_id
        assert dag["has_doc_md"], dag_id
    assert set(report["dags"]["healthpipe_slice"]["tasks"]) == {
        "list_sources",
        "ingest",
        "source_freshness",
        "publish_indicators",
        "transform",
    }


def test_slice_dag_runs_end_to_end(
    airflow_env: dict[str, str], demo_country: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    config = tmp_path / "healthpipe.yml"
    config.write_text(
        f"warehouse: duckdb:///{warehouse}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"sources:\n  - name: hmis\n    type: dhis2\n    path: {demo_country}\n",
        encoding="utf-8",
    )
    env = {**airflow_env, "HEALTHPIPE_CONFIG": str(config)}
    report = check(env, tmp_path, "--run")
    assert report["state"].endswith("success"), report
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        levels = connection.execute(
            "select distinct org_unit_level from marts.indicator_values order by 1"
        ).fetchall()
        steps = connection.execute(
            "select distinct step, status from audit.pipeline_runs order by 1"
        ).fetchall()
    assert levels == [(1,), (2,), (3,), (4,)]
    assert ("transform", "success") in steps and ("land", "success") in steps
