"""A backfill of one month reproduces the marts of the original runs, and leaves the cursor
alone: warehouse A is pulled whole, built, alerted and built after the alerts; warehouse B is
A with a month of DHIS2 data values and registrations lost from raw and its marts emptied,
then repaired by a windowed ingest DAG run for that month, a transform DAG run and an alerts
DAG run (dag.test, against the sandbox's DHIS2 Web API): the transform DAG builds what does
not read the alert records, the alerts DAG the rest, so every compared mart is rebuilt."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.alerts.pipeline import run_alerts
from pipelines.config import parse_config
from pipelines.orchestration import Pull, ingest_pull
from pipelines.periods import parse_period
from pipelines.run import (
    AFTER_ALERTS,
    BEFORE_ALERTS,
    open_warehouse,
    publish_indicator_definitions,
    transform,
)
from pipelines.sandbox.server import start_sandbox
from pipelines.simulate import simulate
from pipelines.simulate.country import build_country
from tests.airflow.test_dags import check, write_config

CREDENTIALS = {"DHIS2_USER": "admin", "DHIS2_PASSWORD": "district"}
FIRST, LAST = date(2025, 12, 1), date(2025, 12, 31)
MARTS = ("fct_data_values", "indicator_values", "fct_surveillance_weekly")
LINEAGE = {"landed_at"}
"""Columns saying when a row was landed: a backfill lands the month again, so these differ
by design; every other column must match."""


def overlaps(period: str) -> bool:
    parsed = parse_period(period)
    return parsed.start_date <= LAST and parsed.end_date >= FIRST


def marts(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        tables = {}
        for table in MARTS:
            columns = [
                row[0]
                for row in connection.execute(
                    "select column_name from information_schema.columns "
                    "where table_schema = 'marts' and table_name = ? order by ordinal_position",
                    [table],
                ).fetchall()
                if row[0] not in LINEAGE
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = connection.execute(f"select {listed} from marts.{table}").fetchall()
            tables[table] = sorted(rows, key=repr)
    return tables


def cursors(path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(
            "select source_name, entity, cursor from audit.source_state order by 1, 2"
        ).fetchall()


@pytest.fixture(scope="module")
def country(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two districts over 12 weeks ending 2026W5: December 2025 lies inside, with weeks
    straddling both of its month ends."""
    root = tmp_path_factory.mktemp("backfill_country")
    simulate(root, country=build_country(7, districts=2), weeks=12, sources=["dhis2"])
    return root


def test_a_one_month_backfill_reproduces_the_marts_and_leaves_the_cursor(
    airflow_env: dict[str, str],
    country: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with start_sandbox(country) as sandbox:

        def settings(name: str) -> dict[str, Any]:
            return {
                "warehouse": f"duckdb:///{tmp_path / name}.duckdb",
                "state_dir": str(tmp_path / name),
                "sources": [
                    {
                        "name": "hmis",
                        "type": "dhis2",
                        "base_url": sandbox.dhis2_url,
                        "username_env": "DHIS2_USER",
                        "password_env": "DHIS2_PASSWORD",
                    }
                ],
            }

        # A: the original runs, a full pull and a build.
        config_a = parse_config(settings("a"), origin="test", base_dir=tmp_path, env=CREDENTIALS)
        ingest_pull(config_a, "hmis", Pull(label="hmis", org_units=None), run_id="original")
        with open_warehouse(config_a) as warehouse:
            publish_indicator_definitions(warehouse, config_a)
        transform(config_a, run_id="original", part=BEFORE_ALERTS)
        with open_warehouse(config_a) as warehouse:
            run_alerts(warehouse, config_a, run_id="original")
        transform(config_a, run_id="original", part=AFTER_ALERTS)

        # B: A having lost December's data values and registrations from raw.
        shutil.copy(tmp_path / "a.duckdb", tmp_path / "b.duckdb")
        lost: dict[str, int] = {}
        with duckdb.connect(str(tmp_path / "b.duckdb")) as connection:
            for table in ("data_values", "complete_registrations"):
                periods = [
                    row[0]
                    for row in connection.execute(
                        f"select distinct period from raw.dhis2__{table}"
                    ).fetchall()
                ]
                december = [p for p in periods if overlaps(p)]
                assert set(periods) - set(december), f"{table}: nothing outside the month"
                row = connection.execute(
                    f"delete from raw.dhis2__{table} where list_contains(?, period)",
                    [december],
                ).fetchone()
                lost[table] = int(row[0]) if row else 0
            # emptied, so that a mart neither DAG rebuilt cannot pass as reproduced
            for table in MARTS:
                connection.execute(f"delete from marts.{table}")
        assert all(lost.values()), lost
        before = cursors(tmp_path / "b.duckdb")
        assert before, "the original pull saved no cursor"

        config_b = write_config(tmp_path / "b.yml", settings("b"))
        report, output = check(
            {**airflow_env, **CREDENTIALS, "HEALTHPIPE_CONFIG": str(config_b)},
            tmp_path,
            "--conf",
            f'healthpipe_ingest_hmis={{"window": "{FIRST}/{LAST}"}}',
            "--run",
            "healthpipe_ingest_hmis,healthpipe_transform,healthpipe_alerts",
        )
    for dag_id, state in report["states"].items():
        assert state.endswith("success"), (dag_id, state, output[-3000:])

    # The backfill pulled the month's periods only, and every one of them came back.
    with duckdb.connect(str(tmp_path / "b.duckdb"), read_only=True) as connection:
        for table in ("data_values", "complete_registrations"):
            pulled = [
                row[0]
                for row in connection.execute(
                    f"select period from raw.dhis2__{table} where batch_id like '%ingest_hmis%'"
                ).fetchall()
            ]
            assert len(pulled) >= lost[table], table
            assert all(overlaps(p) for p in pulled), sorted(set(pulled))
        reconciled = connection.execute(
            "select status, message from audit.pipeline_runs "
            "where step = 'reconcile' and run_id like '%ingest_hmis%' and entity = 'data_values'"
        ).fetchall()
    assert [status for status, _ in reconciled] == ["success"], reconciled
    assert f"window pull {FIRST}/{LAST}" in reconciled[0][1]

    assert cursors(tmp_path / "b.duckdb") == before
    original, backfilled = marts(tmp_path / "a.duckdb"), marts(tmp_path / "b.duckdb")
    for table in MARTS:
        assert original[table], f"marts.{table} is empty: nothing to compare"
        assert backfilled[table] == original[table], table
