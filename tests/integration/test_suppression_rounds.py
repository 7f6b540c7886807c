"""Complementary suppression, cell by cell: the masking models (int_suppression_*) run by dbt
on a small hand-made warehouse whose masks can be worked out on paper.

The upstream marts are plain tables here; dbt builds only the suppression models and
pub_surveillance_weekly on top of them, post-hooks and all (a dbt unit test would skip the
rounds, which run in int_suppression_masked_cells' post-hook)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import TransformError
from pipelines.transform import run_dbt
from pipelines.warehouse import Warehouse

MODELS = [
    "int_period_type_covers",
    "int_suppression_period_links",
    "int_suppression_cells",
    "int_suppression_keys",
    "int_suppression_cell_keys",
    "int_suppression_link_keys",
    "int_suppression_equations",
    "int_suppression_masked_cells",
    "int_suppression_masks",
    "pub_surveillance_weekly",
    "assert_suppressed_cells_are_not_recoverable",
]
UPSTREAM = """
create schema marts;
create schema intermediate;
create schema staging;
create table marts.dim_org_unit (org_unit_id varchar, parent_id varchar, level integer);
create table marts.fct_surveillance_weekly (
    disease varchar, disease_name varchar, org_unit_id varchar, org_unit_level integer,
    period_id varchar, week_start_date date, week_end_date date, cases double, deaths double,
    population double, cases_per_100k double, reports_received integer,
    reports_expected integer, reporting_completeness double,
    is_immediately_notifiable boolean);
create table marts.indicator_values (
    indicator_id varchar, org_unit_id varchar, period_id varchar, period_type varchar,
    numerator double, denominator double);
create table marts.fct_data_values (
    source varchar, data_element_id varchar, category_option_combo_id varchar,
    attribute_option_combo_id varchar, org_unit_id varchar, period_id varchar,
    period_type varchar, value double);
create table staging.stg_healthpipe__indicator_operands (
    indicator_id varchar, data_element_id varchar);
create table staging.data_quality_elements (data_element_id varchar);
-- left by an older version, which built the equations as an indexed table (a view now:
-- DuckDB renames no table with an index, so the build must drop the index first)
create table intermediate.int_suppression_equations (group_id varchar, family varchar, cell_id bigint);
create index int_suppression_equations_group on intermediate.int_suppression_equations (group_id);
create table intermediate.int_period_rollups (
    period_id varchar, period_type varchar, target_period_id varchar,
    target_period_type varchar);
"""


def build(tmp_path: Path, units: list[tuple[str, str | None, int]],
          cases: dict[tuple[str, str], float],
          rollups: list[tuple[str, str]] = (),
          extra: list[str] = ()) -> dict[tuple[str, str], tuple[float | None, bool]]:  # fmt: skip
    """Build the masks for malaria cases per (org unit, week); deaths are all zero; `extra`
    statements fill the other marts first.
    Returns (published cases, is_cases_suppressed) per (org unit, week)."""
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    with Warehouse.open(url) as warehouse:
        for statement in UPSTREAM.split(";"):
            if statement.strip():
                warehouse.execute(statement)
        for unit, parent, level in units:
            warehouse.execute(
                "insert into marts.dim_org_unit values ($u, $p, $l)",
                {"u": unit, "p": parent, "l": level},
            )
        levels = {unit: level for unit, _, level in units}
        for (unit, week), count in cases.items():
            warehouse.execute(
                "insert into marts.fct_surveillance_weekly (disease, org_unit_id, org_unit_level, "
                "period_id, cases, deaths) values ('malaria', $u, $l, $w, $c, 0)",
                {"u": unit, "l": levels[unit], "w": week, "c": count},
            )
        for week, target in rollups:
            warehouse.execute(
                "insert into intermediate.int_period_rollups values ($w, 'Weekly', $t, 'Monthly')",
                {"w": week, "t": target},
            )
        for statement in extra:
            warehouse.execute(statement)
        env = warehouse.dbt_env()
    run_dbt(["build", "--select", *MODELS], dbt_env=env, state_dir=tmp_path / "state")
    with Warehouse.open(url) as warehouse:
        published = warehouse.fetchall(
            "select org_unit_id, period_id, cases, is_cases_suppressed "
            "from marts.pub_surveillance_weekly"
        )
    return {(unit, week): (count, masked) for unit, week, count, masked in published}


def test_small_counts_and_their_complements_along_the_hierarchy(tmp_path: Path) -> None:
    """Country C (34 cases) has districts D1 (19), D2 (12) and D3 (3). D3 is a small count;
    the smallest other district, D2, goes with it. D2 is then masked but none of its
    facilities F4 (0) and F5 (12): F5 is masked (a zero is a poor complement, taken last).
    Under D1, F1 (2) is small and the next smallest, F3 (7), goes with it; F2 (10) stays.
    Under D3, F6 (3) is small and D3 is masked: nothing more. Zeros stay visible."""
    units = [("C", None, 1), ("D1", "C", 2), ("D2", "C", 2), ("D3", "C", 2),
             ("F1", "D1", 3), ("F2", "D1", 3), ("F3", "D1", 3), ("F4", "D2", 3),
             ("F5", "D2", 3), ("F6", "D3", 3), ("F7", "D3", 3)]  # fmt: skip
    counts = {"C": 34, "D1": 19, "D2": 12, "D3": 3, "F1": 2, "F2": 10, "F3": 7, "F4": 0,
              "F5": 12, "F6": 3, "F7": 0}  # fmt: skip
    published = build(tmp_path, units, {(u, "2025W5"): c for u, c in counts.items()})
    masked = {unit for (unit, _), (_, is_masked) in published.items() if is_masked}
    assert masked == {"D2", "D3", "F1", "F3", "F5", "F6"}
    assert all(published[(u, "2025W5")][0] is None for u in masked)
    assert published[("F4", "2025W5")] == (0, False)
    assert published[("C", "2025W5")] == (34, False)


def test_the_data_test_catches_a_mask_left_alone(tmp_path: Path) -> None:
    """assert_suppressed_cells_are_not_recoverable fails when a group has one masked cell:
    with F5's mask taken away, D2 (masked) = F4 (0) + F5 (12) gives D2 back."""
    units = [("C", None, 1), ("D1", "C", 2), ("D2", "C", 2), ("F4", "D2", 3), ("F5", "D2", 3),
             ("F1", "D1", 3), ("F2", "D1", 3)]  # fmt: skip
    counts = {"C": 15, "D1": 3, "D2": 12, "F4": 0, "F5": 12, "F1": 3, "F2": 0}
    published = build(tmp_path, units, {(u, "2025W5"): c for u, c in counts.items()})
    assert published[("F5", "2025W5")] == (None, True)
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    with Warehouse.open(url) as warehouse:
        warehouse.execute(
            "delete from intermediate.int_suppression_masked_cells where cell_id = ("
            "select cell_id from intermediate.int_suppression_cells "
            "where org_unit_id = 'F5' and measure = 'cases')"
        )
        env = warehouse.dbt_env()
    with pytest.raises(
        TransformError, match="assert_suppressed_cells_are_not_recoverable"
    ) as failed:
        run_dbt(
            ["test", "--select", "assert_suppressed_cells_are_not_recoverable"],
            dbt_env=env,
            state_dir=tmp_path / "state",
        )
    # the failure carries what dbt ran, so a failed build's timings are recorded too
    (node,) = failed.value.nodes
    assert node.unique_id.endswith(".assert_suppressed_cells_are_not_recoverable")
    assert node.status == "fail" and node.seconds > 0


def test_cells_are_numbered_in_byte_order_across_every_public_table(tmp_path: Path) -> None:
    """cell_id breaks ties between equal candidates, so it must be the cell's rank in byte
    order of (table, measure, keys, org unit, period) over all cells, though the model numbers
    each series apart and adds the count of the cells before it. Mixed-case keys and org units
    make byte order differ from a case-blind one; series of different lengths make a wrong
    offset show."""
    units = [("C", None, 1), ("D1", "C", 2), ("d2", "C", 2), ("F1", "D1", 3)]
    cases = {(u, w): 5 for u, _, _ in units for w in ("2025W5", "2025W10", "2025W6")}
    extra = [
        "insert into marts.fct_data_values values "
        "('dhis2', 'de_b', 'coc', '', 'D1', '202501', 'Monthly', 4), "
        "('dhis2', 'de_b', 'coc', '', 'd2', '202501', 'Monthly', 4), "
        "('dhis2', 'de_b', 'COC', '', 'D1', '202502', 'Monthly', 12), "
        "('dhis2', 'DE_A', null, null, 'C', '202501', 'Monthly', 40), "
        "('dhis2', 'DE_A', null, null, 'F1', '202501', 'Monthly', null), "
        "('idsr', 'de_b', 'coc', 'aoc', 'F1', '2025W5', 'Weekly', 1)",
        "insert into marts.indicator_values values "
        "('ind_Z', 'C', '2025', 'Yearly', 30, 60), ('IND_y', 'd2', '2025', 'Yearly', 3, 9)",
    ]
    build(tmp_path, units, cases, extra=extra)
    with Warehouse.open(f"duckdb:///{tmp_path / 'warehouse.duckdb'}") as warehouse:
        cells = warehouse.fetchall(
            "select cell_id, series_id, table_name, measure, key_1, key_2, key_3, key_4, "
            "org_unit_id, period_id from intermediate.int_suppression_cells"
        )
    # surveillance: 4 units x 3 weeks x 2 measures; indicators 2 x 2; data values 5 (one NULL)
    assert len(cells) == 24 + 4 + 5
    in_byte_order = sorted(cells, key=lambda cell: [part.encode() for part in cell[2:]])
    assert [cell[0] for cell in in_byte_order] == list(range(1, len(cells) + 1))
    series = {cell[2:8] for cell in cells}
    series_ids = {cell[2:8]: cell[1] for cell in cells}
    assert sorted(series_ids.values()) == sorted(set(series_ids.values()))
    assert len(set(series_ids.values())) == len(series)


def test_masking_goes_round_org_units_and_periods_until_nothing_is_alone(
    tmp_path: Path,
) -> None:
    """Districts D1 and D2 under C, weeks W7 and W8 of one month. D1's 3 in W7 is small.
    Round 1: W7's total needs D2 W7 (10) masked; D1's month needs D1 W8 (8) masked.
    Round 2: that leaves W8's total with one masked district, and D2's month with one
    masked week: D2 W8 (9) answers both. Then every total has two masked parts or none."""
    units = [("C", None, 1), ("D1", "C", 2), ("D2", "C", 2)]
    cases = {("C", "2025W7"): 13, ("D1", "2025W7"): 3, ("D2", "2025W7"): 10,
             ("C", "2025W8"): 17, ("D1", "2025W8"): 8, ("D2", "2025W8"): 9}  # fmt: skip
    rollups = [("2025W7", "202502"), ("2025W8", "202502")]
    published = build(tmp_path, units, cases, rollups)
    masked = {key for key, (_, is_masked) in published.items() if is_masked}
    assert masked == {("D1", "2025W7"), ("D2", "2025W7"), ("D1", "2025W8"), ("D2", "2025W8")}
    assert published[("C", "2025W7")] == (13, False)
    assert published[("C", "2025W8")] == (17, False)
    with Warehouse.open(f"duckdb:///{tmp_path / 'warehouse.duckdb'}") as warehouse:
        rounds = dict(
            warehouse.fetchall(
                "select c.org_unit_id || ' ' || c.period_id, m.masked_round "
                "from intermediate.int_suppression_masks m "
                "join intermediate.int_suppression_cells c using (cell_id) "
                "where m.is_masked and c.measure = 'cases'"
            )
        )
    assert rounds == {"D1 2025W7": 0, "D2 2025W7": 1, "D1 2025W8": 1, "D2 2025W8": 2}


def test_a_lone_child_takes_its_parent_with_it(tmp_path: Path) -> None:
    """A district with one facility: the facility's 2 equals the district's total, which is
    then masked too (a small count itself), and the country loses it by its other district."""
    units = [("C", None, 1), ("D1", "C", 2), ("D2", "C", 2), ("F1", "D1", 3), ("F2", "D2", 3)]
    cases = {("C", "2025W5"): 22, ("D1", "2025W5"): 2, ("D2", "2025W5"): 20,
             ("F1", "2025W5"): 2, ("F2", "2025W5"): 20}  # fmt: skip
    published = build(tmp_path, units, cases)
    masked = {unit for (unit, _), (_, is_masked) in published.items() if is_masked}
    assert masked == {"D1", "F1", "D2", "F2"}
    assert published[("C", "2025W5")] == (22, False)
