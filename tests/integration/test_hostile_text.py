"""SQL-like and control text in every free-text column of every raw table is stored as text,
verbatim, and executes nothing (issue 10: hostile input)."""

from __future__ import annotations

from datetime import UTC, datetime

from pipelines.land import land_records
from pipelines.sources import all_raw_tables
from pipelines.warehouse import Warehouse

HOSTILE = (
    "x'); drop table raw.dhis2__data_values; -- ",
    '" or 1=1; select pg_sleep(5); --',
    "$1 $$ %s %(x)s {{ var('x') }} \\' \t\r\n=cmd|' /C calc'!A0",
)


def test_every_text_column_keeps_hostile_text_verbatim(warehouse_url: str) -> None:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.ensure_schemas()
        checked = 0
        for table in all_raw_tables():
            text_columns = [n for n, t in table.columns if t.split()[0] in ("text", "varchar")]
            if not text_columns:
                continue
            records = [
                {name: f"{value}#{name}#{i}" for name in text_columns}
                for i, value in enumerate(HOSTILE)
            ]
            # keys that are not text get a value of their type
            for name, sql_type in table.columns:
                if name in table.key and name not in text_columns:
                    for i, record in enumerate(records):
                        record[name] = i if "int" in sql_type else f"2026-01-0{i + 1}"
            with warehouse.transaction():
                landed = land_records(
                    warehouse, table, "hostile", records,
                    run_id="hostile", batch_id="hostile:1", extracted_at=now, now=now,
                )  # fmt: skip
            assert landed.inserted == len(HOSTILE), table.name
            stored = warehouse.fetchall(
                f"select {', '.join(text_columns)} from {table.qualified_name} "
                "where source_name = 'hostile'"
            )
            expected = {tuple(r[name] for name in text_columns) for r in records}
            assert set(stored) == expected, table.name
            checked += len(text_columns)
        assert warehouse.table_exists("raw", "dhis2__data_values")
    assert checked > 100
