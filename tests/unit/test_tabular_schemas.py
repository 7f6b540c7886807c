"""The declared schemas of spreadsheet drops agree with the simulator's files, the suites and
the staging models; the helper columns the suites check say what is wrong with a row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from pipelines.config import SourceConfig
from pipelines.errors import ConfigError
from pipelines.paths import EXPECTATIONS_DIR, PROJECT_DIR
from pipelines.simulate import tabular as simulated
from pipelines.sources.tabular import (
    HELPER_COLUMNS,
    SCHEMAS,
    TABLES,
    load_schema,
    selected_schemas,
)
from pipelines.sources.tabular import helper_columns as compute_helpers
from pipelines.validate import load_suite_spec

SIMULATED_HEADERS = {
    "facility_assessments": simulated.ASSESSMENT_COLUMNS,
    "lmis_stock": simulated.LMIS_COLUMNS,
    "workforce": simulated.WORKFORCE_COLUMNS,
    "governance": simulated.GOVERNANCE_COLUMNS,
    "cross_sectoral": simulated.CROSS_SECTORAL_COLUMNS,
}
STAGING = PROJECT_DIR / "models" / "staging" / "tabular"


def test_there_is_a_schema_for_every_simulated_entity_matching_its_header() -> None:
    assert set(SCHEMAS) == set(SIMULATED_HEADERS)
    for entity, header in SIMULATED_HEADERS.items():
        titles = [column.title for column in SCHEMAS[entity].columns]
        assert titles == header, entity


def test_column_names_are_usable_unquoted_in_sql() -> None:
    reserved = {
        word
        for (word,) in duckdb.sql(
            "select keyword_name from duckdb_keywords() where keyword_category <> 'unreserved'"
        ).fetchall()
    }
    for table in TABLES:
        clashes = {name for name in table.entity_columns if name in reserved}
        assert not clashes, (table.name, clashes)


def test_suites_check_real_or_helper_columns_and_staging_reads_every_column() -> None:
    for table in TABLES:
        spec = load_suite_spec(table)
        columns = {*table.entity_columns, "extras", "is_deleted", *HELPER_COLUMNS}
        assert {item.column for item in spec.expectations} <= columns, table.name
        rules = {item.rule for item in spec.expectations}
        assert {"schema_drift", "required_field_present", "org_unit_known"} <= rules
        assert (EXPECTATIONS_DIR / f"{table.name}.yml").is_file()
        sql = (STAGING / f"stg_{table.name}.sql").read_text(encoding="utf-8")
        for column in SCHEMAS[table.entity].columns:
            assert column.name in sql, (table.name, column.name)


def test_a_source_reads_its_listed_entities_or_all() -> None:
    def source(**extra: Any) -> SourceConfig:
        return SourceConfig(name="sheets", type="tabular", path=Path("drop"), **extra)

    assert [s.entity for s in selected_schemas(source())] == list(SCHEMAS)
    chosen = selected_schemas(source(entities=["workforce", "lmis_stock"]))
    assert [s.entity for s in chosen] == ["workforce", "lmis_stock"]
    with pytest.raises(ConfigError, match="no schema for stock_cards"):
        selected_schemas(source(entities=["stock_cards"]))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("business_key: [facility_code, comment]", "business_key column 'comment'"),
        ("files: ['../elsewhere/*.csv']", "must stay inside the drop folder"),
        ("columns: [{name: facility_code, required: yes, min: 0}]", "min and max apply"),
        ("columns: [{name: facility_code, required: yes}, {name: source_row}]", "reserved"),
        (
            "columns: [{name: facility_code, required: yes}, {name: p, type: period, "
            "period_type: Monthlyish}]",
            "not a DHIS2 period type",
        ),
        ("colums: []", "colums: Extra inputs are not permitted"),
    ],
)
def test_schema_mistakes_are_reported_with_file_and_key(
    tmp_path: Path, change: str, match: str
) -> None:
    base = {
        "entity": "entity: things",
        "description": "description: test",
        "files": "files: ['things*.csv']",
        "business_key": "business_key: [facility_code]",
        "columns": "columns: [{name: facility_code, required: yes}, {name: comment}]",
    }
    key = change.split(":", 1)[0]
    lines = {**base, key: change} if key in base else {**base, "extra": change}
    path = tmp_path / "things.yml"
    path.write_text("\n".join(lines.values()) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as caught:
        load_schema(path)
    assert str(path) in str(caught.value)


def lmis_frame(*rows: dict[str, Any]) -> pd.DataFrame:
    good = {
        "facility_code": "HC01",
        "facility_name": "Health Centre 1",
        "period": "202501",
        "item_code": "ORS",
        "item_name": "ORS",
        "unit": "sachet",
        "opening_balance": "10",
        "quantity_received": "5",
        "quantity_consumed": "3",
        "losses": "0",
        "adjustments": "-1",
        "stock_on_hand": "11",
        "stockout_days": "0",
        "comment": None,
        "source_file": "lmis_stock/a.csv",
        "missing_columns": None,
        "extras": None,
        "is_deleted": False,
    }
    return pd.DataFrame(
        [{**good, "source_row": str(n), **row} for n, row in enumerate(rows, start=1)]
    )


def test_helper_columns_name_the_column_and_value_at_fault() -> None:
    frame = lmis_frame(
        {},
        {"quantity_consumed": None, "item_code": " "},
        {"stock_on_hand": "-14", "stockout_days": "32", "losses": "2.5"},
        {"period": "2025Q1"},
        {"period": "202513"},
        {"missing_columns": "stock_on_hand", "stock_on_hand": None, "extras": '{"soh":"3"}'},
        {"is_deleted": True, "facility_code": None, "period": None, "stock_on_hand": None},
        {"comment": "=1+1", "adjustments": "+3"},
    )
    helpers = compute_helpers(SCHEMAS["lmis_stock"], frame, {("lmis_stock/a.csv", "8"): 1})
    found = {
        (int(row), name): value
        for name in HELPER_COLUMNS
        for row, value in zip(helpers["source_row"], helpers[name], strict=True)
        if value is not None
    }
    out_of_range = (
        "stock_on_hand '-14' is below the minimum 0; stockout_days '32' is above the maximum 31"
    )
    assert found == {
        (2, "missing_required"): "item_code; quantity_consumed",
        (3, "unparsable"): "losses '2.5' is not a whole number (at most 15 digits)",
        (3, "out_of_range"): out_of_range,
        (4, "invalid_period"): "period '2025Q1' is not a Monthly period",
        (5, "invalid_period"): "period '202513' is not a DHIS2 period identifier",
        (8, "duplicate_of_row"): "1",
    }
    # The raw values are not touched: helper columns are added beside them.
    assert helpers["stock_on_hand"].tolist() == frame["stock_on_hand"].tolist()


def test_dates_and_booleans_are_checked() -> None:
    schema = SCHEMAS["facility_assessments"]
    base = {column.name: None for column in schema.columns}
    rows = [
        {**base, "assessment_date": "2025-02-30", "amen_power": "Yes"},
        {**base, "assessment_date": "2025-06-01", "amen_power": "maybe"},
    ]
    frame = pd.DataFrame(rows).assign(
        facility_code="HC01",
        period="2025",
        inpatient_beds="4",
        source_file="f.csv",
        source_row=["1", "2"],
        missing_columns=None,
        extras=None,
        is_deleted=False,
    )
    helpers = compute_helpers(schema, frame, {})
    assert helpers["unparsable"].tolist() == [
        "assessment_date '2025-02-30' is not a date YYYY-MM-DD",
        "amen_power 'maybe' is not yes or no",
    ]
