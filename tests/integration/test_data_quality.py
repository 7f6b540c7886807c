"""Data quality as data and the public layer, on a small simulated country built once:
outlier flags against an independent pandas computation, validation rules and consistency
over time recomputed from the values, the DQ indicators, small-cell suppression properties,
dbt unit tests in the build, and dbt source freshness after ingest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.audit import utc_now
from pipelines.config import HealthpipeConfig
from pipelines.periods import parse_period
from pipelines.run import RunSummary, check_freshness, run_pipeline, transform
from pipelines.simulate import build_country, simulate
from pipelines.simulate.catalogue import ANC1, ANC4
from pipelines.warehouse import Warehouse
from tests.conftest import make_config
from tests.integration.suppression_attack import read_published, recover
from tests.reliability.results import Results

# The dbt project's defaults (dbt_project.yml vars).
Z, MOD_Z, MIN_MAX_SD = 3.0, 3.5, 2.0
SEASONAL_YEARS, SEASONAL_WINDOW, SEASONAL_MIN = 3, 2, 5
CONSISTENCY_YEARS, TOLERANCE = 3, 0.33
EDGE = 1e-9  # statistics this close to a threshold may round either way in SQL and numpy


@dataclass
class Built:
    config: HealthpipeConfig
    summary: RunSummary
    injected: tuple[str, str]  # (org unit, month) where ANC4 was raised above ANC1


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Two districts, 120 weeks (2023W42-2026W5): two complete years (2024, 2025) for
    consistency over time and seasonal baselines, one ANC4 > ANC1 injected."""
    root = tmp_path_factory.mktemp("dq")
    country = build_country(7, districts=2, regions=1, facilities_per_district=(2, 3))
    simulate(root / "country", country=country, weeks=120, sources=["dhis2"])
    folder = root / "country" / "dhis2"
    injected = inject_anc4_above_anc1(folder / "dataValueSets" / "hmis_monthly_2025.json")
    config = make_config(f"duckdb:///{root / 'warehouse.duckdb'}", folder, root / "state")
    return Built(config, run_pipeline(config), injected)


def inject_anc4_above_anc1(path: Path) -> tuple[str, str]:
    payload = json.loads(path.read_text(encoding="utf-8"))
    values = payload["dataValues"]
    anc1 = {
        (v["orgUnit"], v["period"]): float(v["value"])
        for v in values
        if v["dataElement"] == ANC1.uid and "value" in v
    }
    for v in values:
        key = (v["orgUnit"], v["period"])
        if v["dataElement"] == ANC4.uid and key in anc1:
            v["value"] = str(int(anc1[key]) + 50)
            path.write_text(json.dumps(payload), encoding="utf-8")
            return key
    raise AssertionError("no ANC4 value to raise")


def frame(config: HealthpipeConfig, sql: str) -> pd.DataFrame:
    with Warehouse.open(config.warehouse) as warehouse:
        cursor = warehouse.fetchall(sql)
        columns = [c.strip() for c in sql.split("select", 1)[1].split("from", 1)[0].split(",")]
    return pd.DataFrame(cursor, columns=[c.split(" as ")[-1].split(".")[-1] for c in columns])


def rows(config: HealthpipeConfig, sql: str) -> list[tuple[Any, ...]]:
    with Warehouse.open(config.warehouse) as warehouse:
        return warehouse.fetchall(sql)


def reported_values(config: HealthpipeConfig) -> pd.DataFrame:
    """The DHIS2 values as the warehouse publishes them, with period facts from the Python
    period parser (independent of the dbt calendar)."""
    values = frame(
        config,
        "select source, data_element_id, category_option_combo_id, attribute_option_combo_id, "
        "org_unit_id, period_id, value from marts.fct_data_values "
        "where source = 'hmis' and value is not null",
    )
    periods = {p: parse_period(p) for p in values["period_id"].unique()}
    values["period_type"] = values["period_id"].map(lambda p: periods[p].period_type)
    # A week belongs to the year holding its fourth day; other periods to their start's.
    values["year"] = values["period_id"].map(
        lambda p: (
            (periods[p].start_date + timedelta(days=3)).year
            if periods[p].period_type == "Weekly"
            else periods[p].start_date.year
        )
    )
    values["period_of_year"] = values["period_id"].map(
        lambda p: (
            int(p.split("W")[1])
            if periods[p].period_type == "Weekly"
            else (int(p[4:6]) if periods[p].period_type == "Monthly" else None)
        )
    )
    values["value"] = values["value"].astype(float)
    return values


SERIES = [
    "source",
    "data_element_id",
    "category_option_combo_id",
    "attribute_option_combo_id",
    "org_unit_id",
    "period_type",
]


def expected_outlier_flags(values: pd.DataFrame) -> pd.DataFrame:
    out = []
    for _, series in values.groupby(SERIES):
        x = series["value"].to_numpy()
        mean, sd, median = x.mean(), x.std(ddof=0), np.median(x)
        mad = np.median(np.abs(x - median))
        mean_dev = np.mean(np.abs(x - median))
        s = series.copy()
        s["z"] = (x - mean) / sd if sd > 0 else np.nan
        if mad > 0:
            s["mz"] = 0.6745 * (x - median) / mad
        elif mean_dev > 0:
            s["mz"] = 0.7979 * (x - median) / mean_dev
        else:
            s["mz"] = np.nan
        s["lo"], s["hi"], s["sd"] = mean - MIN_MAX_SD * sd, mean + MIN_MAX_SD * sd, sd
        seasonal = []
        for _, row in s.iterrows():
            if pd.isna(row["period_of_year"]):
                seasonal.append((0, np.nan, np.nan))
                continue
            history = s[
                (s["year"] < row["year"])
                & (s["year"] >= row["year"] - SEASONAL_YEARS)
                & ((s["period_of_year"] - row["period_of_year"]).abs() <= SEASONAL_WINDOW)
            ]["value"].to_numpy()
            seasonal.append(
                (len(history), history.mean() if len(history) else np.nan,
                 history.std(ddof=0) if len(history) else np.nan)
            )  # fmt: skip
        s["n_season"] = [t[0] for t in seasonal]
        s["m_season"] = [t[1] for t in seasonal]
        s["sd_season"] = [t[2] for t in seasonal]
        out.append(s)
    return pd.concat(out)


def test_outlier_flags_match_an_independent_pandas_computation(built: Built) -> None:
    expected = expected_outlier_flags(reported_values(built.config))
    actual = frame(
        built.config,
        "select source, data_element_id, category_option_combo_id, attribute_option_combo_id, "
        "org_unit_id, period_id, is_z_score_outlier, is_modified_z_outlier, is_min_max_outlier, "
        "has_seasonal_baseline, is_seasonal_outlier from intermediate.int_data_quality_outliers",
    )
    key = [c for c in SERIES if c != "period_type"] + ["period_id"]
    merged = expected.merge(actual, on=key, how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), "the checks screened other values than reported"
    assert len(merged) > 3000

    def agree(flag: str, statistic: pd.Series, threshold: pd.Series | float) -> None:
        clear = (statistic.isna()) | ((statistic - threshold).abs() > EDGE)
        want = (statistic > threshold).fillna(False)
        wrong = merged[clear & (merged[flag] != want)]
        assert wrong.empty, f"{flag}: {wrong[key].head().to_dict('records')}"

    agree("is_z_score_outlier", merged["z"].abs(), Z)
    agree("is_modified_z_outlier", merged["mz"].abs(), MOD_Z)
    band = (merged["value"] - (merged["lo"] + merged["hi"]) / 2).abs()
    agree("is_min_max_outlier", band.where(merged["sd"] > 0), MIN_MAX_SD * merged["sd"])
    assert (merged["has_seasonal_baseline"] == (merged["n_season"] >= SEASONAL_MIN)).all()
    seasonal = (
        (merged["value"] - merged["m_season"])
        .abs()
        .where((merged["n_season"] >= SEASONAL_MIN) & (merged["sd_season"] > 0))
    )
    agree("is_seasonal_outlier", seasonal, Z * merged["sd_season"])
    # Every method fires somewhere on this country, so every comparison above has teeth.
    for flag in ("is_z_score_outlier", "is_modified_z_outlier", "is_min_max_outlier",
                 "is_seasonal_outlier"):  # fmt: skip
        assert merged[flag].sum() > 0, flag


def test_validation_rules_catch_the_injected_violation(built: Built) -> None:
    values = reported_values(built.config)
    totals = values.groupby(["data_element_id", "org_unit_id", "period_id"])["value"].sum()
    anc4, anc1 = totals.loc[ANC4.uid], totals.loc[ANC1.uid]
    both = anc4.index.union(anc1.index)
    left, right = anc4.reindex(both).fillna(0), anc1.reindex(both).fillna(0)
    expected = {index for index in both if left[index] > right[index]}
    assert built.injected in expected
    violations = rows(
        built.config,
        "select org_unit_id, period_id, left_value, right_value from "
        "marts.fct_validation_rule_violations where rule_id = 'anc4_le_anc1'",
    )
    assert {(ou, pe) for ou, pe, _, _ in violations} == expected
    evaluated = rows(
        built.config,
        "select count(*) from intermediate.int_validation_rule_results where rule_id = 'anc4_le_anc1'",
    )[0][0]
    assert evaluated == len(both)


def test_consistency_over_time_matches_a_recomputation(built: Built) -> None:
    values = reported_values(built.config)
    sums = values[values["data_element_id"].isin(sum_elements(built.config))]
    # Complete years: every period of the type in that year holds data somewhere.
    periods: dict[tuple[str, int], set[str]] = {}
    totals: dict[tuple[str, str, str, int], float] = {}
    for record in sums.to_dict("records"):
        year_key = (str(record["period_type"]), int(record["year"]))
        periods.setdefault(year_key, set()).add(str(record["period_id"]))
    complete = {key for key, seen in periods.items() if len(seen) == periods_in_year(*key)}
    for record in sums.to_dict("records"):
        period_type, year = str(record["period_type"]), int(record["year"])
        if (period_type, year) in complete:
            key = (str(record["data_element_id"]), str(record["org_unit_id"]), period_type, year)
            totals[key] = totals.get(key, 0.0) + float(record["value"])
    expected: dict[tuple[str, str, str, str], tuple[float, int, bool]] = {}
    for (de, ou, period_type, year), total in totals.items():
        earlier = [
            totals[(de, ou, period_type, y)]
            for y in range(year - CONSISTENCY_YEARS, year)
            if (de, ou, period_type, y) in totals
        ]
        if earlier:
            mean = float(np.mean(earlier))
            flagged = abs(total / mean - 1) > TOLERANCE if mean else total != 0
            expected[(de, ou, period_type, str(year))] = (total, len(earlier), flagged)
    assert expected, "the fixture should hold two complete years"
    actual = {
        (de, ou, pt, pe): (total, n, flagged)
        for de, ou, pt, pe, total, n, flagged in rows(
            built.config,
            "select data_element_id, org_unit_id, data_period_type, period_id, yearly_value, "
            "reference_years, is_inconsistent from marts.fct_data_quality_consistency",
        )
    }
    assert actual.keys() == expected.keys()
    for compared, (total, n, flagged) in expected.items():
        assert actual[compared][0] == pytest.approx(total), compared
        assert actual[compared][1:] == (n, flagged), compared


def sum_elements(config: HealthpipeConfig) -> set[str]:
    return {
        row[0]
        for row in rows(
            config,
            "select data_element_id from marts.dim_data_element where aggregation_type = 'SUM'",
        )
    }


def periods_in_year(period_type: str, year: int) -> int:
    if period_type == "Weekly":
        return date(year, 12, 28).isocalendar()[1]  # ISO: 28 December is in the last week
    return {"Monthly": 12, "Yearly": 1}[period_type]


def test_dq_indicators_are_ratios_of_the_check_counts(built: Built) -> None:
    checked = rows(
        built.config,
        "select count(*), sum(case when is_z_score_outlier then 1 else 0 end) "
        "from intermediate.int_data_quality_outliers where year_period_id = '2025'",
    )[0]
    violations = rows(
        built.config,
        "select count(*), sum(case when r.is_violation then 1 else 0 end) "
        "from intermediate.int_validation_rule_results r "
        "join intermediate.int_period_rollups y on y.period_id = r.period_id "
        "and y.target_period_id = '2025'",
    )[0]
    values = dict(
        (row[0], row[1:])
        for row in rows(
            built.config,
            "select indicator_id, numerator, denominator, value from marts.indicator_values "
            "where org_unit_level = 1 and period_id = '2025' and indicator_id like 'dq_%'",
        )
    )
    assert values["dq_outlier_rate_extreme"][:2] == (checked[1], checked[0])
    assert values["dq_validation_rule_violation_rate"][:2] == (violations[1], violations[0])
    assert values["dq_validation_rule_violation_rate"][0] >= 1  # the injected one
    consistency = values["dq_consistency_over_time"]
    assert consistency[1] > 0 and 0 <= consistency[2] <= 100


def test_dbt_unit_tests_ran_in_the_build(built: Built) -> None:
    # A run that raised alerts ends with a partial build of the models that read them, which
    # overwrites run_results.json: a full build shows what every build runs.
    from pipelines.run import transform

    transform(built.config, run_id="unit-tests-check")
    results = json.loads(
        (built.config.state_dir / "dbt" / "duckdb" / "target" / "run_results.json").read_text()
    )["results"]
    unit = {
        r["unique_id"].split(".")[2]: r["status"]
        for r in results
        if r["unique_id"].startswith("unit_test.")
    }
    for model in ("int_period_rollups", "int_data_values_aggregated", "indicator_values",
                  "int_data_quality_outliers", "int_validation_rule_results",
                  "int_data_quality_consistency"):  # fmt: skip
        assert unit.get(model) == "pass", model
    # Complementary suppression runs in a post-hook, which dbt unit tests skip: its checks are
    # a data test on every build (and tests/integration/test_suppression_rounds.py).
    data_tests = {r["unique_id"].split(".")[2]: r["status"] for r in results}
    assert data_tests.get("assert_suppressed_cells_are_not_recoverable") == "pass"


# --- the public layer ----------------------------------------------------------------------


def test_no_published_count_is_a_small_cell(built: Built) -> None:
    small = "between 1 and 4.999999"
    assert rows(built.config, f"select count(*) from marts.pub_surveillance_weekly where cases {small} or deaths {small}") == [(0,)]  # fmt: skip
    assert rows(
        built.config,
        f"select count(*) from marts.pub_data_values where value {small} "
        "and source not in ('reporting', 'data_quality')",
    ) == [(0,)]
    sensitive = (
        "indicator_id in (select indicator_id from staging.stg_healthpipe__indicator_operands "
        "where data_element_id not like 'R:%' and data_element_id not like 'DQ%')"
    )
    assert rows(
        built.config,
        f"select count(*) from marts.pub_indicator_values where {sensitive} "
        f"and (numerator {small} or denominator {small})",
    ) == [(0,)]
    # Suppression happened, and only where asked: published cells are exact.
    masked, changed = rows(
        built.config,
        "select sum(case when p.is_cases_suppressed then 1 else 0 end), "
        "sum(case when not p.is_cases_suppressed and p.cases is distinct from f.cases then 1 else 0 end) "
        "from marts.pub_surveillance_weekly p join marts.fct_surveillance_weekly f "
        "using (disease, org_unit_id, period_id)",
    )[0]
    assert masked > 0 and changed == 0
    zeros = rows(built.config, "select count(*) from marts.pub_surveillance_weekly where cases = 0")
    assert zeros[0][0] > 0


@pytest.mark.reliability
def test_subtraction_from_published_totals_recovers_no_masked_cell(
    built: Built, results: Results
) -> None:
    """The attacker of tests/integration/suppression_attack.py subtracts published cells from
    published totals along org units, periods and disaggregations, in every public table."""
    published = read_published(built.config)
    cells = published.cells
    tables = set(cells.loc[cells["masked"], "table"])
    assert tables == {"pub_surveillance_weekly", "pub_indicator_values", "pub_data_values"}
    # The attack works: had only the small counts been masked, it would get many back.
    primary = cells["masked"] & cells["exact"].gt(0) & cells["exact"].lt(5)
    weak = recover(published, masked=primary)
    assert set(weak["table"]) == tables
    recovered = recover(published)
    results.record(
        "privacy",
        "subtraction of published cells from published totals (parent org units, coarser "
        "periods, disaggregations) in pub_surveillance_weekly, pub_indicator_values and "
        "pub_data_values, repeated while it finds cells",
        int(cells["masked"].sum()),
        len(recovered),
        cells_published=len(cells),
        small_counts_masked=int(primary.sum()),
        complements_masked=int(cells["masked"].sum() - primary.sum()),
        recovered_had_only_small_counts_been_masked=len(weak),
    )
    assert recovered.empty, recovered.head(10).to_string()


# --- source freshness (these tests change the warehouse: keep them last) ------------------


def test_freshness_runs_after_ingest_and_is_recorded(built: Built) -> None:
    statuses = {result.table: result.status for result in built.summary.freshness}
    assert statuses == {
        "raw.dhis2__data_values": "pass",
        "raw.dhis2__complete_registrations": "pass",
    }
    recorded = rows(
        built.config,
        "select raw_table, success from audit.validation_results where suite = 'freshness' "
        f"and run_id = '{built.summary.run_id}'",
    )
    assert sorted(recorded) == [
        ("raw.dhis2__complete_registrations", True),
        ("raw.dhis2__data_values", True),
    ]


@pytest.fixture
def stale_extracts(built: Built) -> Iterator[None]:
    now = utc_now().replace(tzinfo=None)
    with Warehouse.open(built.config.warehouse) as warehouse:
        saved = warehouse.fetchall("select max(extracted_at) from raw.dhis2__data_values")[0][0]
        warehouse.execute(
            "update raw.dhis2__data_values set extracted_at = $t", {"t": now - timedelta(days=10)}
        )
        warehouse.execute(
            "update raw.dhis2__complete_registrations set extracted_at = $t",
            {"t": now - timedelta(days=3)},
        )
    yield
    with Warehouse.open(built.config.warehouse) as warehouse:
        warehouse.execute("update raw.dhis2__data_values set extracted_at = $t", {"t": saved})


def test_stale_sources_warn_or_error_without_stopping(built: Built, stale_extracts: None) -> None:
    results = check_freshness(built.config, run_id="stale-check", source_types=["dhis2"])
    statuses = {result.table: result.status for result in results}
    # DHIS2: warn after 2 days, error after 8 (models/staging/dhis2/_dhis2__sources.yml).
    assert statuses == {
        "raw.dhis2__data_values": "error",
        "raw.dhis2__complete_registrations": "warn",
    }
    recorded = dict(
        rows(
            built.config,
            "select raw_table, severity from audit.validation_results "
            "where run_id = 'stale-check' and not success",
        )
    )
    assert recorded == {
        "raw.dhis2__data_values": "error",
        "raw.dhis2__complete_registrations": "warning",
    }


def test_source_freshness_after_a_build_keeps_dbts_partial_parse(built: Built) -> None:
    """Every dbt invocation gets the build's vars: with other vars (or none) dbt parses the
    whole project again, which was most of a run with nothing new (about 5 s)."""
    transform(built.config, run_id="parse-build")
    log = built.config.state_dir / "dbt" / "duckdb" / "logs" / "dbt.log"
    written_before = log.stat().st_size
    check_freshness(built.config, run_id="parse-freshness", source_types=["dhis2"])
    with log.open("rb") as handle:
        handle.seek(written_before)
        freshness_log = handle.read().decode("utf-8", errors="replace")
    assert "freshness" in freshness_log
    assert "Unable to do partial parsing" not in freshness_log


def test_threshold_comes_from_the_config(built: Built) -> None:
    """small_cell_threshold: 2 masks only ones (the dbt var reaches every public model)."""
    config = built.config.model_copy(update={"small_cell_threshold": 2})
    transform(config, run_id="threshold-2")
    counts = dict(
        rows(
            config,
            "select f.cases, count(*) from marts.pub_surveillance_weekly p "
            "join marts.fct_surveillance_weekly f using (disease, org_unit_id, period_id) "
            "where p.cases is null and p.is_cases_suppressed and f.cases < 5 group by f.cases",
        )
    )
    assert counts.get(1, 0) > 0
    published_small = rows(
        config,
        "select count(*) from marts.pub_surveillance_weekly where cases between 2 and 4",
    )[0][0]
    assert published_small > 0
    assert rows(config, "select count(*) from marts.pub_surveillance_weekly where cases = 1") == [
        (0,)
    ]
