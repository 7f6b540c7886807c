"""Every raw table has a suite in expectations/, every suite parses and names real columns."""

from __future__ import annotations

import pytest

from pipelines.paths import EXPECTATIONS_DIR
from pipelines.sources import all_raw_tables
from pipelines.validate import load_suite_spec

# Helper columns the source adapters add before validation (not stored in raw).
ENRICHED = {"period_type", "value_type"}


@pytest.mark.parametrize("table", all_raw_tables(), ids=lambda t: t.name)
def test_each_raw_table_has_a_valid_suite(table: object) -> None:
    from pipelines.tables import RawTable

    assert isinstance(table, RawTable)
    spec = load_suite_spec(table)
    assert spec.expectations, f"{table.name}: empty suite"
    columns = {*table.entity_columns, "extras", "is_deleted", *ENRICHED}
    for item in spec.expectations:
        assert item.column is None or item.column in columns, (table.name, item.rule, item.column)
    assert len({item.rule for item in spec.expectations}) == len(spec.expectations)


def test_no_suite_without_a_table() -> None:
    names = {table.name for table in all_raw_tables()}
    for path in EXPECTATIONS_DIR.glob("*.yml"):
        assert path.stem in names, f"{path.name} checks no raw table"
