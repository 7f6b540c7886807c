"""The warehouse module on real DuckDB and PostgreSQL: schemas, bulk loads, transactions."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.errors import WarehouseError
from pipelines.warehouse import Warehouse, parse_warehouse_url


def test_creates_the_five_schemas_and_audit_tables(warehouse_url: str) -> None:
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.ensure_schemas()
        warehouse.ensure_schemas()  # idempotent
        schemas = {
            row[0]
            for row in warehouse.fetchall("select schema_name from information_schema.schemata")
        }
        assert {"raw", "audit", "staging", "intermediate", "marts"} <= schemas
        for table in ("pipeline_runs", "source_state", "validation_results", "quarantine",
                      "schema_changes"):  # fmt: skip
            assert warehouse.table_exists("audit", table), table
        assert warehouse.table_exists("raw", "dhis2__data_values")


@pytest.mark.postgres
def test_processes_creating_a_fresh_warehouse_at_once_all_succeed(postgres_url: str) -> None:
    """Parallel ingest tasks (Celery workers) open a fresh warehouse together: without a
    lock, `create schema if not exists` races and one fails with a unique violation."""
    import threading

    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_and_create() -> None:
        try:
            with Warehouse.open(postgres_url) as warehouse:
                barrier.wait(timeout=30)
                warehouse.ensure_schemas()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with Warehouse.open(postgres_url) as warehouse:
        assert warehouse.table_exists("raw", "dhis2__data_values")


def test_bulk_load_keeps_nulls_empty_strings_and_awkward_text(warehouse_url: str) -> None:
    awkward = ["plain", "", None, 'comma, "quote"\nnewline', "percent % and $name", "ünïcode"]
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.execute(
            "create table t (id bigint, label text, flag boolean, x double precision)"
        )
        data = pa.table(
            {
                "id": pa.array(range(len(awkward)), pa.int64()),
                "label": pa.array(awkward, pa.string()),
                "flag": pa.array([True, False, None, True, False, True]),
                "x": pa.array([1.5, None, 0.0, -2.25, 1e300, 3.0]),
            }
        )
        assert warehouse.load_arrow("t", data) == len(awkward)
        rows = warehouse.fetchall("select label, flag, x from t order by id")
        assert [r[0] for r in rows] == awkward
        assert [r[1] for r in rows] == [True, False, None, True, False, True]
        assert [r[2] for r in rows] == [1.5, None, 0.0, -2.25, 1e300, 3.0]


def test_a_failed_transaction_leaves_nothing(warehouse_url: str) -> None:
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.execute("create table t (id bigint primary key)")
        with pytest.raises(RuntimeError), warehouse.transaction():
            warehouse.execute("insert into t values (1)")
            raise RuntimeError("boom")
        assert warehouse.row_count("t") == 0
        with warehouse.transaction():
            warehouse.execute("insert into t values ($id)", {"id": 2})
        assert warehouse.fetchall("select id from t") == [(2,)]


@pytest.mark.parametrize(
    "url",
    ["mysql://x@y/z", "duckdb:///", "postgresql://user@host:5432/", "warehouse.duckdb"],
)
def test_bad_urls_say_what_is_expected(url: str) -> None:
    with pytest.raises(WarehouseError) as error:
        parse_warehouse_url(url)
    assert url in str(error.value)


def test_postgres_url_parts_and_redaction() -> None:
    location = parse_warehouse_url("postgresql+psycopg://hp:s3cret@db.example:6543/warehouse")
    assert (location.host, location.port, location.user, location.dbname) == (
        "db.example",
        6543,
        "hp",
        "warehouse",
    )
    assert "s3cret" not in location.redacted()


def test_a_duckdb_url_sets_the_memory_limit_of_both_connections(tmp_path: Path) -> None:
    """``?memory_limit=`` bounds healthpipe's own DuckDB connection and dbt's (profiles.yml)."""
    import duckdb

    from pipelines.transform import _invoke

    url = f"duckdb:///{tmp_path / 'w.duckdb'}?memory_limit=300MB"
    location = parse_warehouse_url(url)
    assert location.memory_limit == "300MB" and location.url.endswith("?memory_limit=300MB")
    expected = (
        duckdb.connect(config={"memory_limit": "300MB"})
        .execute("select current_setting('memory_limit')")
        .fetchall()[0]
    )
    with Warehouse.open(url) as warehouse:
        assert warehouse.fetchall("select current_setting('memory_limit')")[0] == expected
        env = warehouse.dbt_env()
    assert env["HEALTHPIPE_DUCKDB_MEMORY_LIMIT"] == "300MB"
    result, _, _ = _invoke(
        ["show", "--inline", "select current_setting('memory_limit') as memory_limit"],
        dbt_env=env,
        state_dir=tmp_path / "state",
        quiet=True,
    )
    assert result.success, result.exception
    assert tuple(result.result.results[0].agate_table.rows[0]) == expected
    # without the setting, DuckDB's own default (80% of the machine)
    with Warehouse.open(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        default = warehouse.fetchall("select current_setting('memory_limit')")[0]
    assert (
        default == duckdb.connect().execute("select current_setting('memory_limit')").fetchall()[0]
    )


@pytest.mark.parametrize(
    ("query", "named"),
    [("threads=4", "threads"), ("memory_limit=lots", "lots"), ("memory_limit=", "memory_limit")],
)
def test_bad_duckdb_url_settings_are_named(tmp_path: Path, query: str, named: str) -> None:
    with pytest.raises(WarehouseError) as error:
        parse_warehouse_url(f"duckdb:///{tmp_path / 'w.duckdb'}?{query}")
    assert named in str(error.value)
