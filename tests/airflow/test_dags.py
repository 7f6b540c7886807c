"""The Airflow 3 DAGs: one ingest DAG per configured source, transform, alerts and bulletin
import cleanly and fast; failures reach the alert channels; credentials are masked in task
logs; and the whole chain runs with dag.test() against the sandbox, giving the marts and
alerts the simulator's truth predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from pytest_httpserver import HTTPServer

from pipelines.demo import DEMO_CREDENTIALS_ENV, KEY_ENV
from pipelines.periods import parse_period
from pipelines.simulate import simulate
from pipelines.simulate.country import build_country

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("dag_check.py")
PROBE_DAGS = Path(__file__).with_name("probe_dags")
SEEDED_KEY = "airflow-e2e-pseudonym-key-4f9c2a7e81b3"
CORE_DAGS = {"healthpipe_transform", "healthpipe_alerts", "healthpipe_bulletin"}


def check(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run dag_check.py; returns its report and the process's log output."""
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
    return report, result.stdout + result.stderr


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def every_source_type(country: Path, urls: dict[str, str]) -> list[dict[str, Any]]:
    """One source of every type, as the demo configures them (file drops and the sandbox)."""
    return [
        {"name": "hmis", "type": "dhis2", "path": str(country / "dhis2")},
        {"name": "emr", "type": "fhir", "base_url": urls["emr"]},
        {"name": "lab", "type": "hl7v2", "path": str(country / "hl7")},
        {
            "name": "chw",
            "type": "odk",
            "base_url": urls["odk"],
            "project_id": 1,
            "username_env": "DEMO_ODK_USER",
            "password_env": "DEMO_ODK_PASSWORD",
        },
        {
            "name": "nutrition",
            "type": "kobo",
            "base_url": urls["kobo"],
            "token_env": "DEMO_KOBO_TOKEN",
        },
        {"name": "facility_reports", "type": "tabular", "path": str(country / "tabular")},
    ]


def test_one_ingest_dag_per_source_and_every_dag_parses_fast(
    airflow_env: dict[str, str], tmp_path: Path
) -> None:
    urls = {name: f"http://127.0.0.1:9/{name}" for name in ("emr", "odk", "kobo")}
    sources = every_source_type(tmp_path / "country", urls)
    sources.append({"name": "national", "type": "dhis2", "base_url": "http://127.0.0.1:9/",
                    "org_units": [f"OU{i:09d}" for i in range(45)]})  # fmt: skip
    sources[0]["schedule"] = "6h"  # a duration, as healthpipe status reads it too
    sources[1]["schedule"] = "@hourly"
    config = write_config(
        tmp_path / "healthpipe.yml",
        {"warehouse": f"duckdb:///{tmp_path / 'w.duckdb'}", "sources": sources},
    )
    report, _ = check({**airflow_env, "HEALTHPIPE_CONFIG": str(config)}, tmp_path)

    assert report["import_errors"] == {}
    ingest = {f"healthpipe_ingest_{s['name']}" for s in sources}
    assert set(report["dags"]) == ingest | CORE_DAGS
    # The DAG processor re-parses every file every few minutes: the files wire tasks and leave
    # the heavy imports (GX takes seconds) to the tasks. Checked by what parsing imported,
    # not by a time (which a busy machine would break); the time bound only catches a hang.
    assert report["heavy_modules_loaded"] == []
    for file, duration in report["parse_seconds"].items():
        assert duration < 30, f"{file} took {duration:.2f} s to parse"
    for dag_id, dag in report["dags"].items():
        assert dag["tags"] and "healthpipe" in dag["tags"], dag_id
        assert dag["owner"] == "healthpipe", dag_id
        assert dag["retries"] and dag["retries"] > 0, dag_id
        assert dag["has_doc_md"], dag_id
        assert dag["has_failure_callback"], dag_id
        assert dag["catchup"] is False, dag_id
    for dag_id in ingest:
        dag = report["dags"][dag_id]
        assert dag["tasks"] == ["data_docs", "extract_land_validate", "plan"]
        assert dag["mapped"] == ["extract_land_validate"]
        assert dag["pools"]["extract_land_validate"] == "healthpipe_duckdb"
    timetables = {dag_id: report["dags"][dag_id]["timetable"] for dag_id in ingest}
    assert timetables.pop(f"healthpipe_ingest_{sources[0]['name']}") == "DeltaDataIntervalTimetable"
    assert set(timetables.values()) == {"CronDataIntervalTimetable"}
    assert report["dags"]["healthpipe_transform"]["timetable"] == "AssetTriggeredTimetable"
    assert report["dags"]["healthpipe_alerts"]["timetable"] == "AssetTriggeredTimetable"
    assert set(report["dags"]["healthpipe_transform"]["pools"].values()) == {"healthpipe_duckdb"}
    # the models reading the alert records are built after the alerts and their notifications
    alerts = report["dags"]["healthpipe_alerts"]
    assert alerts["downstream"] == {
        "detect_and_record": ["notify"],
        "notify": ["dbt_build_after_alerts"],
        "dbt_build_after_alerts": [],
    }
    assert set(alerts["pools"].values()) == {"healthpipe_duckdb"}


def test_a_postgresql_warehouse_lets_tasks_run_in_parallel(
    airflow_env: dict[str, str], tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "healthpipe.yml",
        {
            "warehouse": "postgresql://postgres@127.0.0.1:5432/unused",
            "sources": [{"name": "hmis", "type": "dhis2", "path": str(tmp_path)}],
        },
    )
    report, _ = check({**airflow_env, "HEALTHPIPE_CONFIG": str(config)}, tmp_path)
    pools = {
        pool for dag in report["dags"].values() for pool in dag["pools"].values()
    }  # fmt: skip
    assert pools == {"default_pool"}


def test_dags_use_no_airflow_2_idioms() -> None:
    result = subprocess.run(
        [Path(sys.executable).with_name("ruff"), "check", "--select", "AIR3", "dags"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_a_failed_task_notifies_the_alert_channels_at_once(
    airflow_env: dict[str, str], tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    missing = tmp_path / "no-such-drop"
    config = write_config(
        tmp_path / "healthpipe.yml",
        {
            "warehouse": f"duckdb:///{tmp_path / 'w.duckdb'}",
            "state_dir": str(tmp_path / "state"),
            "sources": [{"name": "hmis", "type": "dhis2", "path": str(missing)}],
            "notifications": [
                {"name": "ops", "type": "webhook", "url": httpserver.url_for("/hook")}
            ],
        },
    )
    report, _ = check(
        {**airflow_env, "HEALTHPIPE_CONFIG": str(config)},
        tmp_path,
        "--run",
        "healthpipe_ingest_hmis",
    )
    assert report["states"]["healthpipe_ingest_hmis"].endswith("failed")
    # A missing folder is not retried (retrying cannot fix it): one message, sent at once.
    assert len(httpserver.log) == 1
    payload = httpserver.log[0][0].get_json()
    failure = payload["failure"]
    assert failure["source"] == "hmis"
    assert failure["task_id"] == "extract_land_validate"
    assert failure["dag_id"] == "healthpipe_ingest_hmis"
    assert str(missing) in failure["error"] and "\n" not in failure["error"]
    assert "FAILED" in payload["text"] and "hmis" in payload["text"]


def test_credentials_are_masked_in_task_logs(airflow_env: dict[str, str], tmp_path: Path) -> None:
    """The password comes from an Airflow connection, the user name from the environment."""
    password = "seeded-Pa55word-7f3a9"
    user = "seeded-user-b41c"
    config = write_config(
        tmp_path / "healthpipe.yml",
        {
            "warehouse": f"duckdb:///{tmp_path / 'w.duckdb'}",
            "sources": [
                {
                    "name": "probe",
                    "type": "odk",
                    "base_url": "http://127.0.0.1:9/",
                    "project_id": 1,
                    "username_env": "PROBE_USER",
                    "password_env": "PROBE_PASSWORD",
                }
            ],
        },
    )
    env = {
        **airflow_env,
        "HEALTHPIPE_CONFIG": str(config),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROBE_DAGS),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "dags"), os.environ.get("PYTHONPATH", "")]),
        "PROBE_USER": user,
        "AIRFLOW_CONN_HEALTHPIPE_PROBE": json.dumps(
            {"conn_type": "http", "login": "other", "password": password}
        ),
    }
    env.pop("PROBE_PASSWORD", None)
    report, output = check(env, tmp_path, "--run", "secret_probe", "--mask-logs")
    assert report["states"]["secret_probe"].endswith("success")
    logged = [line for line in output.splitlines() if "PROBE " in line]
    assert any("PROBE_PASSWORD=***" in line for line in logged), logged
    assert any("PROBE_USER=***" in line for line in logged), logged
    assert not any(password in line or user in line for line in logged), logged


@pytest.fixture(scope="module")
def outbreak_country(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two districts over 110 weeks: enough baseline for the detectors to raise alerts."""
    root = tmp_path_factory.mktemp("outbreaks")
    simulate(root, country=build_country(7, districts=2), weeks=110)
    return root


def test_the_chain_runs_end_to_end_for_every_source_type(
    airflow_env: dict[str, str], outbreak_country: Path, tmp_path: Path
) -> None:
    from pipelines.sandbox.server import start_sandbox

    warehouse = tmp_path / "warehouse.duckdb"
    with start_sandbox(outbreak_country) as sandbox:
        urls = {"emr": sandbox.fhir_url("emr"), "odk": sandbox.odk_url, "kobo": sandbox.kobo_url}
        sources = every_source_type(outbreak_country, urls)
        config = write_config(
            tmp_path / "healthpipe.yml",
            {
                "warehouse": f"duckdb:///{warehouse}",
                "state_dir": str(tmp_path / "state"),
                "sources": sources,
            },
        )
        env = {
            **airflow_env,
            "HEALTHPIPE_CONFIG": str(config),
            KEY_ENV: SEEDED_KEY,
            **{
                name: str(getattr(sandbox.credentials, field))
                for name, field in DEMO_CREDENTIALS_ENV.items()
            },
        }
        chain = [f"healthpipe_ingest_{s['name']}" for s in sources]
        chain += ["healthpipe_transform", "healthpipe_alerts", "healthpipe_bulletin"]
        report, _ = check(env, tmp_path, "--run", ",".join(chain))

    states = report["states"]
    for dag_id in chain[:-1]:
        assert states[dag_id].endswith("success"), (dag_id, states)
    assert states["healthpipe_bulletin"].endswith("success"), states
    bulletins = list((tmp_path / "state" / "bulletins").glob("bulletin-*W*.html"))
    assert len(bulletins) == 1 and "<svg" in bulletins[0].read_text(encoding="utf-8")

    # Issue 10: no secret in XCom, task logs, the metadata database, the bulletin, dbt's
    # artifacts, the Data Docs or the warehouse file (bytes, so binary files count too).
    secrets = [SEEDED_KEY, *(env[name] for name in DEMO_CREDENTIALS_ENV)]
    places = [Path(airflow_env["AIRFLOW_HOME"]), tmp_path / "state", warehouse]
    leaks = [
        (str(path), secret)
        for place in places
        for path in ([place] if place.is_file() else place.rglob("*"))
        if path.is_file()
        for secret in secrets
        if secret.encode() in path.read_bytes()
    ]
    assert leaks == []
    # the scan saw the metadata database (XCom), the bulletin and dbt's manifest
    assert (Path(airflow_env["AIRFLOW_HOME"]) / "airflow.db").is_file()
    assert list((tmp_path / "state").rglob("manifest.json")) and bulletins

    truth = json.loads((outbreak_country / "truth.json").read_text(encoding="utf-8"))
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        reconciled = connection.execute(
            "select source, bool_and(status = 'success'), sum(rows_in) "
            "from audit.pipeline_runs where step = 'reconcile' group by 1"
        ).fetchall()
        levels = connection.execute(
            "select distinct org_unit_level from marts.indicator_values order by 1"
        ).fetchall()
        weekly = {
            (disease, org_unit, period): (cases, completeness)
            for disease, org_unit, period, cases, completeness in connection.execute(
                "select disease, org_unit_id, period_id, cases, reporting_completeness "
                "from marts.fct_surveillance_weekly"
            ).fetchall()
        }
        alerts = connection.execute(
            "select disease, org_unit_id, period_id, last_period_id from marts.alerts"
        ).fetchall()
    assert {s for s, ok, rows in reconciled if ok and rows} == {s["name"] for s in sources}
    assert levels == [(1,), (2,), (3,), (4,)]

    # Every injected outbreak's extra cases are in the marts at its org unit and week, when
    # every facility reported that week (a missing report takes its cases with it).
    checked = 0
    for outbreak in truth["outbreaks"]:
        for week, extra in outbreak["weekly_extra_cases"].items():
            cases, completeness = weekly[(outbreak["disease"], outbreak["org_unit_id"], week)]
            if completeness == 100:
                assert cases >= extra, (outbreak["disease"], outbreak["org_unit_id"], week)
                checked += 1
    assert checked >= 10, "too few fully reported outbreak weeks to compare with the truth"

    # Cholera alerts on a single case (IDSR): every cholera outbreak raised an alert at its
    # org unit, starting no later than a week after the outbreak began.
    def start(period: str) -> date:
        return parse_period(period).start_date

    cholera = [o for o in truth["outbreaks"] if o["disease"] == "cholera"]
    assert cholera, "the simulation injected no cholera outbreak"
    for outbreak in cholera:
        began = start(outbreak["start_week"])
        assert any(
            disease == "cholera"
            and org_unit == outbreak["org_unit_id"]
            and start(first) <= began + timedelta(days=7)
            and start(last) >= began
            for disease, org_unit, first, last in alerts
        ), outbreak
