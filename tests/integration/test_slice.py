"""The walking skeleton end to end: DHIS2 payloads -> raw -> GX -> dbt -> indicator_values,
checked against numbers recomputed straight from the source files."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import HealthpipeConfig
from pipelines.periods import parse_period
from pipelines.run import RunSummary, run_pipeline
from pipelines.simulate.catalogue import ANC1, ANC4
from pipelines.warehouse import Warehouse
from tests.conftest import make_config

COUNTED_SCHEMAS = ("raw", "staging", "intermediate", "marts")


def table_counts(warehouse: Warehouse) -> dict[str, int]:
    tables = warehouse.fetchall(
        "select table_schema, table_name from information_schema.tables "
        "where table_schema in ('raw', 'staging', 'intermediate', 'marts', 'audit')"
    )
    return {
        f"{schema}.{name}": warehouse.row_count(f"{schema}.{name}")
        for schema, name in sorted(tables)
        # The run log grows with every run by design; everything else must not.
        if (schema, name) not in (("audit", "pipeline_runs"), ("audit", "validation_results"))
    }


@pytest.fixture(scope="module")
def slice_run(
    demo_country: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[HealthpipeConfig, RunSummary, dict[str, int], RunSummary, dict[str, int]]:
    state = tmp_path_factory.mktemp("slice")
    config = make_config(f"duckdb:///{state / 'warehouse.duckdb'}", demo_country, state)
    first = run_pipeline(config)
    with Warehouse.open(config.warehouse) as warehouse:
        counts_first = table_counts(warehouse)
    second = run_pipeline(config)
    with Warehouse.open(config.warehouse) as warehouse:
        counts_second = table_counts(warehouse)
    return config, first, counts_first, second, counts_second


def source_values(folder: Path) -> list[dict[str, Any]]:
    """Every data value in the drop, as the files hold them (injected defects included)."""
    values: list[dict[str, Any]] = []
    for path in sorted((folder / "dataValueSets").glob("*.json")):
        values.extend(json.loads(path.read_text(encoding="utf-8"))["dataValues"])
    return values


def query(config: HealthpipeConfig, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with Warehouse.open(config.warehouse) as warehouse:
        return warehouse.fetchall(sql, params or None)


def test_every_level_has_indicator_values(slice_run: Any) -> None:
    config = slice_run[0]
    levels = query(
        config,
        "select indicator_id, org_unit_level, count(*) from marts.indicator_values "
        "group by 1, 2 order by 1, 2",
    )
    by_indicator: dict[str, set[int]] = defaultdict(set)
    for indicator, level, rows in levels:
        assert rows > 0
        by_indicator[indicator].add(level)
    assert by_indicator["anc4_completion_rate"] == {1, 2, 3, 4}
    assert by_indicator["hiv_test_positivity"] == {1, 2, 3, 4}


def test_values_match_a_recomputation_from_the_source_files(
    slice_run: Any, demo_country: Path
) -> None:
    """ANC4 completion recomputed in plain Python from the dataValueSet and the org-unit
    paths, at facility, district and national level, for months, quarters and the year."""
    config = slice_run[0]
    units = json.loads((demo_country / "metadata" / "organisationUnits.json").read_text())
    paths = {u["id"]: u["path"].strip("/").split("/") for u in units["organisationUnits"]}
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for v in source_values(demo_country):
        # Records the pipeline must hold back (see truth.json) do not count.
        if v["dataElement"] not in (ANC1.uid, ANC4.uid) or "value" not in v:
            continue
        if v.get("orgUnit") not in paths:
            continue
        period = parse_period(v["period"])
        quarter = f"{period.start_date.year}Q{(period.start_date.month - 1) // 3 + 1}"
        for ancestor in paths[v["orgUnit"]]:
            for target in (v["period"], quarter, str(period.start_date.year)):
                totals[(v["dataElement"], ancestor, target)] += float(v["value"])

    rows = query(
        config,
        "select org_unit_id, period_id, numerator, denominator, value from marts.indicator_values "
        "where indicator_id = 'anc4_completion_rate' and period_type in ('Monthly', 'Quarterly', 'Yearly')",
    )
    assert rows
    checked_levels = set()
    for org_unit, period, numerator, denominator, value in rows:
        expected_num = totals[(ANC4.uid, org_unit, period)]
        expected_den = totals[(ANC1.uid, org_unit, period)]
        assert numerator == expected_num, (org_unit, period)
        assert denominator == expected_den, (org_unit, period)
        if expected_den:
            assert value == pytest.approx(expected_num / expected_den * 100, rel=1e-12)
        else:
            assert value is None
        checked_levels.add(len(paths[org_unit]))
    assert checked_levels == {1, 2, 3, 4}


def test_parents_sum_their_children(slice_run: Any) -> None:
    config = slice_run[0]
    mismatches = query(
        config,
        """
        select parent.org_unit_id, parent.period_id
        from marts.indicator_values parent
        join marts.dim_org_unit child_unit on child_unit.parent_id = parent.org_unit_id
        join marts.indicator_values child
          on child.org_unit_id = child_unit.org_unit_id
         and child.period_id = parent.period_id
         and child.indicator_id = parent.indicator_id
        group by parent.indicator_id, parent.org_unit_id, parent.period_id, parent.numerator
        having abs(parent.numerator - sum(child.numerator)) > 1e-9
        """,
    )
    assert mismatches == []


def test_period_dimension_agrees_with_the_python_parser(slice_run: Any) -> None:
    config = slice_run[0]
    periods = query(
        config, "select period_id, period_type, start_date, end_date from marts.dim_period"
    )
    assert len(periods) > 10_000
    for period_id, period_type, start, end in periods:
        parsed = parse_period(period_id)
        assert (parsed.period_type, parsed.start_date, parsed.end_date) == (period_type, start, end)


def test_weeks_roll_up_by_their_fourth_day(slice_run: Any) -> None:
    config = slice_run[0]
    targets = dict(
        query(
            config,
            "select target_period_type, target_period_id from intermediate.int_period_rollups "
            "where period_id = '2026W5'",
        )
    )
    # 2026W5 runs Mon 26 Jan to Sun 1 Feb; its Thursday (29 Jan) is in January.
    assert targets["Monthly"] == "202601"
    assert targets["Quarterly"] == "2026Q1"
    assert targets["BiWeekly"] == "2026BiW3"
    assert "WeeklyWednesday" not in targets
    daily = dict(
        query(
            config,
            "select target_period_type, target_period_id from intermediate.int_period_rollups "
            "where period_id = '20260201'",
        )
    )
    assert (daily["Weekly"], daily["WeeklySunday"], daily["Monthly"]) == (
        "2026W5",
        "2026SunW5",
        "202602",
    )
    targets = dict(
        query(
            config,
            "select target_period_type, target_period_id from intermediate.int_period_rollups "
            "where period_id = '2021W52'",
        )
    )
    # 2021W52 runs 27 Dec 2021 to 2 Jan 2022: it belongs to December 2021.
    assert (targets["Monthly"], targets["Yearly"]) == ("202112", "2021")


def test_running_twice_changes_no_row_counts(slice_run: Any) -> None:
    _, first, counts_first, second, counts_second = slice_run
    assert counts_first == counts_second
    assert counts_first["marts.indicator_values"] > 0
    received = sum(c.received for s in first.sources for c in s.entities.values())
    assert received > 0
    # Unchanged files are not read again.
    assert second.sources[0].pages == 0


def test_every_step_is_recorded(slice_run: Any) -> None:
    config, first, *_ = slice_run
    steps = query(
        config,
        "select step, status, count(*) from audit.pipeline_runs where run_id = $run "
        "group by 1, 2 order by 1",
        run=first.run_id,
    )
    assert {(step, status) for step, status, _ in steps} == {
        ("extract", "success"),
        ("land", "success"),
        ("validate", "success"),
        ("reconcile", "success"),
        ("indicators", "success"),
        ("transform", "success"),
        ("alerts", "success"),
    }
    rows_in, rows_out, quarantined, duplicates = query(
        config,
        "select sum(rows_in), sum(rows_out), sum(rows_quarantined), sum(rows_duplicate) "
        "from audit.pipeline_runs where run_id = $run and step = 'land' and entity = 'data_values'",
        run=first.run_id,
    )[0]
    assert rows_in == len(source_values_of(config))
    # Received = landed + held back at landing (no natural key) + duplicates collapsed.
    assert rows_in == rows_out + quarantined + duplicates
    assert (quarantined, duplicates) == (1, 1)


def source_values_of(config: HealthpipeConfig) -> list[dict[str, Any]]:
    path = config.source("hmis").path
    assert path is not None
    return source_values(path)


def test_reporting_completeness_matches_the_registrations(
    slice_run: Any, demo_country: Path
) -> None:
    """IDSR completeness and timeliness for 2025 recomputed from the registration files:
    every facility is expected every week; on time means within 2 days of the week's end."""
    config = slice_run[0]
    registrations = []
    for path in (demo_country / "completeDataSetRegistrations").glob("idsr_weekly_*.json"):
        registrations += json.loads(path.read_text())["completeDataSetRegistrations"]
    in_2025 = [r for r in registrations if r["period"].startswith("2025W")]
    weeks = {f"2025W{n}" for n in range(1, 53)}
    units = json.loads((demo_country / "metadata" / "organisationUnits.json").read_text())
    facilities = [u for u in units["organisationUnits"] if u["level"] == 4]
    on_time = sum(
        1
        for r in in_2025
        if datetime.fromisoformat(r["date"]).date()
        <= parse_period(r["period"]).end_date + timedelta(days=2)
    )
    rows = query(
        config,
        "select indicator_id, numerator, denominator from marts.indicator_values "
        "where org_unit_level = 1 and period_id = '2025' "
        "and indicator_id in ('idsr_reporting_completeness', 'idsr_reporting_timeliness')",
    )
    values = {indicator: (num, den) for indicator, num, den in rows}
    assert {r["period"] for r in in_2025} <= weeks
    assert values["idsr_reporting_completeness"] == (len(in_2025), len(facilities) * 52)
    assert values["idsr_reporting_timeliness"] == (on_time, len(facilities) * 52)


def test_org_units_carry_their_group_sets(slice_run: Any, demo_country: Path) -> None:
    config = slice_run[0]
    rows = query(config, "select level, facility_type, ownership from marts.dim_org_unit")
    facilities = [r for r in rows if r[0] == 4]
    assert facilities and all(r[1] and r[2] for r in facilities)
    assert {r[1] for r in facilities} <= {"District Hospital", "Health Centre", "Health Post"}
    assert all(r[1] is None for r in rows if r[0] < 4)


def test_validation_results_render_as_data_docs(slice_run: Any) -> None:
    config = slice_run[0]
    index = config.state_dir / "site" / "data-docs" / "index.html"
    assert index.exists()
    pages = {p.stem for p in (index.parent / "expectations").glob("*.html")}
    assert {"dhis2__data_values", "dhis2__organisation_units"} <= pages
    assert list((index.parent / "validations").rglob("*.html"))


def test_surveillance_weekly_matches_the_idsr_files(slice_run: Any, demo_country: Path) -> None:
    """District weekly malaria cases recomputed from the data value files; zero-case weeks
    appear as 0, not as missing rows."""
    config = slice_run[0]
    units = json.loads((demo_country / "metadata" / "organisationUnits.json").read_text())
    parent = {u["id"]: u.get("parent", {}).get("id") for u in units["organisationUnits"]}
    expected: dict[tuple[str, str], float] = defaultdict(float)
    for v in source_values(demo_country):
        if v["dataElement"] == "hpMALACases" and v.get("orgUnit") in parent and "value" in v:
            expected[(parent[v["orgUnit"]], v["period"])] += float(v["value"])
    rows = query(
        config,
        "select org_unit_id, period_id, cases, population from marts.fct_surveillance_weekly "
        "where disease = 'malaria' and org_unit_level = 3",
    )
    assert rows
    got = {(ou, period): cases for ou, period, cases, _ in rows}
    for key, cases in expected.items():
        assert got[key] == cases, key
    assert all(pop and pop > 0 for _, _, _, pop in rows)
    cholera_zero_weeks = query(
        config,
        "select count(*) from marts.fct_surveillance_weekly "
        "where disease = 'cholera' and org_unit_level = 3 and cases = 0",
    )
    assert cholera_zero_weeks[0][0] > 0
