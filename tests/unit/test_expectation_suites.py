"""Every raw table has a suite in expectations/, every suite parses and names real columns."""

from __future__ import annotations

import pytest

from pipelines.paths import EXPECTATIONS_DIR
from pipelines.sources import ADAPTERS, all_raw_tables
from pipelines.tables import RawTable
from pipelines.validate import load_suite_spec

CASES = [(adapter, table) for adapter in ADAPTERS.values() for table in adapter.tables]


@pytest.mark.parametrize(("adapter", "table"), CASES, ids=[t.name for _, t in CASES])
def test_each_raw_table_has_a_valid_suite(adapter: object, table: RawTable) -> None:
    spec = load_suite_spec(table)
    assert spec.expectations, f"{table.name}: empty suite"
    # Columns the suite may check: the table's own, and the helper columns its adapter adds
    # before validation (never stored in raw).
    columns = {*table.entity_columns, "extras", "is_deleted", *adapter.helper_columns}
    for item in spec.expectations:
        assert item.column is None or item.column in columns, (table.name, item.rule, item.column)
    assert len({item.rule for item in spec.expectations}) == len(spec.expectations)


def test_no_suite_without_a_table() -> None:
    names = {table.name for table in all_raw_tables()}
    for path in EXPECTATIONS_DIR.glob("*.yml"):
        assert path.stem in names, f"{path.name} checks no raw table"
