"""fct_data_values is kept by period year: an incremental build rewrites only the years whose
rows changed, adds a year that appears and removes one that vanishes, and ends equal to a full
rebuild. On PostgreSQL the table is partitioned by year; untouched years keep their row
versions (xmin), so they were not rewritten."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pipelines.land import land_records
from pipelines.period_facts import drop_outdated_period_facts
from pipelines.run import run_pipeline
from pipelines.sources import raw_table
from pipelines.transform import run_dbt
from pipelines.warehouse import Warehouse
from tests.conftest import make_config

RAW = "raw.dhis2__data_values"
FACT = "marts.fct_data_values"


def build_fact(url: str, state: Path, *extra: str) -> None:
    with Warehouse.open(url) as warehouse:
        env = warehouse.dbt_env()
    run_dbt(["run", "--select", "fct_data_values", *extra], dbt_env=env, state_dir=state)


def column_names(warehouse: Warehouse, qualified_table: str) -> list[str]:
    schema, table = qualified_table.split(".")
    return [
        row[0]
        for row in warehouse.fetchall(
            "select column_name from information_schema.columns "
            "where table_schema = $s and table_name = $t order by ordinal_position",
            {"s": schema, "t": table},
        )
    ]


def fact_rows(url: str) -> list[tuple[object, ...]]:
    with Warehouse.open(url) as warehouse:
        columns = ", ".join(column_names(warehouse, FACT))
        return sorted(warehouse.fetchall(f"select {columns} from {FACT}"), key=repr)


def last_rewrite(state: Path) -> str:
    """What the last incremental build said it rewrote (dbt's log: the strategy's message)."""
    logs = (state / "dbt").glob("*/logs/dbt.log")
    lines = [
        line
        for log in logs
        for line in log.read_text().splitlines()
        if "fct_data_values: " in line and "period year" in line
    ]
    assert lines, "no incremental build of fct_data_values logged"
    return lines[-1].split("fct_data_values: ", 1)[1].strip()


def row_versions(url: str) -> dict[int, set[str]]:
    """PostgreSQL only: the transaction ids that wrote each year's rows."""
    with Warehouse.open(url) as warehouse:
        found = warehouse.fetchall(f"select distinct period_year, xmin::text from {FACT}")
    versions: dict[int, set[str]] = {}
    for year, xmin in found:
        versions.setdefault(year, set()).add(xmin)
    return versions


def test_only_changed_years_are_rewritten(
    demo_country: Path, warehouse_url: str, tmp_path: Path
) -> None:
    config = make_config(warehouse_url, demo_country, tmp_path / "state")
    run_pipeline(config)
    state = tmp_path / "dbt"
    postgres = warehouse_url.startswith("postgresql")
    with Warehouse.open(warehouse_url) as warehouse:
        years = dict(warehouse.fetchall(f"select period_year, count(*) from {FACT} group by 1"))
        assert {2025, 2026} <= set(years), years
        assert not warehouse.fetchall(f"select 1 from {FACT} where period_year is null limit 1")
        if postgres:
            assert warehouse.fetchall(
                "select count(*) from pg_partitioned_table p join pg_class c on c.oid = p.partrelid "
                "join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = 'marts' and c.relname = 'fct_data_values'"
            ) == [(1,)]
    before = row_versions(warehouse_url) if postgres else {}

    # no change: nothing rewritten
    build_fact(warehouse_url, state)
    assert last_rewrite(state) == "no period year changed"
    if postgres:
        assert row_versions(warehouse_url) == before

    # one value of 2025 changes, and a value appears in 2019 (a year the table lacks)
    with Warehouse.open(warehouse_url) as warehouse:
        element, period, unit = warehouse.fetchall(
            f"select data_element, period, org_unit from {RAW} "
            "where period like '2025%' and validation_status = 'valid' "
            "and value similar to '[0-9]+' order by 1, 2, 3 limit 1"
        )[0]
        warehouse.execute(
            f"update {RAW} set value = cast(cast(value as integer) + 1000 as varchar) "
            "where data_element = $e and period = $p and org_unit = $u",
            {"e": element, "p": period, "u": unit},
        )
        copied = ", ".join(
            "'201906'" if name == "period" else name for name in column_names(warehouse, RAW)
        )
        warehouse.execute(
            f"insert into {RAW} select {copied} from {RAW} "
            "where data_element = $e and period = $p and org_unit = $u",
            {"e": element, "p": period, "u": unit},
        )
    build_fact(warehouse_url, state)
    assert last_rewrite(state) == "rewriting period years 2019, 2025"
    with Warehouse.open(warehouse_url) as warehouse:
        assert warehouse.fetchall(
            f"select data_element_id, org_unit_id, period_id from {FACT} where period_year = 2019"
        ) == [(element, unit, "201906")]
    if postgres:
        after = row_versions(warehouse_url)
        assert after[2026] == before[2026]  # untouched
        assert not after[2025] & before[2025]  # rewritten whole
        with Warehouse.open(warehouse_url) as warehouse:
            bounds = {
                row[0]
                for row in warehouse.fetchall(
                    "select pg_get_expr(c.relpartbound, c.oid) from pg_inherits i "
                    "join pg_class c on c.oid = i.inhrelid "
                    f"where i.inhparent = '{FACT}'::regclass"
                )
            }
        assert {"FOR VALUES IN (2019)", "FOR VALUES IN (2025)", "DEFAULT"} <= bounds
    incremental = fact_rows(warehouse_url)
    build_fact(warehouse_url, state, "--full-refresh")
    assert fact_rows(warehouse_url) == incremental

    # the 2019 value goes again: the year vanishes from the table
    before = row_versions(warehouse_url) if postgres else {}
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.execute(f"delete from {RAW} where period = '201906'")
    build_fact(warehouse_url, state)
    assert last_rewrite(state) == "rewriting period years 2019"
    with Warehouse.open(warehouse_url) as warehouse:
        assert warehouse.fetchall(f"select count(*) from {FACT} where period_year = 2019") == [(0,)]
    if postgres:
        assert row_versions(warehouse_url)[2026] == before[2026]
    incremental = fact_rows(warehouse_url)
    build_fact(warehouse_url, state, "--full-refresh")
    assert fact_rows(warehouse_url) == incremental


def test_a_fact_table_from_before_partitioning_is_dropped_for_a_whole_rebuild(
    warehouse_url: str,
) -> None:
    postgres = warehouse_url.startswith("postgresql")
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.execute("create schema if not exists marts")
        assert drop_outdated_period_facts(warehouse) == []  # nothing there yet
        warehouse.execute(f"create table {FACT} (period_id varchar, value double precision)")
        assert drop_outdated_period_facts(warehouse) == [FACT]
        assert not warehouse.table_exists("marts", "fct_data_values")
        warehouse.execute(f"create table {FACT} (period_id varchar, period_year integer)")
        assert drop_outdated_period_facts(warehouse) == ([FACT] if postgres else [])
        if postgres:
            warehouse.execute(
                f"create table {FACT} (period_id varchar, period_year integer) "
                "partition by list (period_year)"
            )
            assert drop_outdated_period_facts(warehouse) == []
        assert warehouse.table_exists("marts", "fct_data_values")


@pytest.mark.postgres
def test_raw_data_values_are_partitioned_by_year_on_postgres(postgres_url: str) -> None:
    """Landing adds a year's partition before its rows; an id without a year goes to the
    default partition; re-landing and a later year keep working."""
    table = raw_table("dhis2", "data_values")
    now = datetime(2026, 1, 1, 12, 0)

    def land(periods: list[str], batch: str) -> None:
        records = [
            {"data_element": "deAAAAAAAAA", "period": period, "org_unit": "ouAAAAAAAAA",
             "category_option_combo": "HllvX50cXC0", "attribute_option_combo": "HllvX50cXC0",
             "value": "10", "deleted": False}
            for period in periods
        ]  # fmt: skip
        land_records(
            warehouse, table, "hmis", records, run_id="r", batch_id=batch, extracted_at=now, now=now
        )

    def placement() -> dict[str, str]:
        return dict(warehouse.fetchall(f"select period, tableoid::regclass::text from {RAW}"))

    with Warehouse.open(postgres_url) as warehouse:
        warehouse.ensure_schemas()
        warehouse.ensure_schemas()  # twice: nothing to add the second time
        assert warehouse.is_partitioned("raw", "dhis2__data_values")
        land(["2024W53", "202501", "2025April", "2025Q1", "bad"], "b1")
        land(["202501", "2026W1"], "b2")
        assert placement() == {
            "2024W53": "raw.dhis2__data_values_y2024",
            "202501": "raw.dhis2__data_values_y2025",
            "2025April": "raw.dhis2__data_values_y2025",
            "2025Q1": "raw.dhis2__data_values_y2025",
            "2026W1": "raw.dhis2__data_values_y2026",
            "bad": "raw.dhis2__data_values_default",
        }
        assert warehouse.row_count(RAW) == 6
