"""Indicators of all ten domains on a demo country with every source type: one indicator per
domain recomputed from the simulator's own files at facility, district and national level;
parents sum their children; every domain at every level; and a derived data element and
indicator added from a temporary `indicator_paths` file."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from pipelines.config import HealthpipeConfig
from pipelines.demo import DemoResult, run_demo
from pipelines.indicators import DOMAINS
from pipelines.periods import parse_period
from pipelines.run import open_warehouse, publish_indicator_definitions, transform
from pipelines.simulate.catalogue import (
    OPD_VISITS,
    TOTAL_POPULATION,
    VL_SUPPRESSED,
    VL_TESTED,
)
from pipelines.warehouse import Warehouse
from tests.integration import recompute as rc

EXTRA_YAML = """
derived_data_elements:
  - id: lab_vl_high_results
    name: Viral-load results flagged high (test-only definition)
    domain: laboratory
    source: fct_lab_results
    filter:
      - "test_code = '20447-9'"
      - "interpretation = 'H'"
    period_type: Monthly
    date_column: collected_date
    aggregation: count
indicators:
  - id: test_vl_high_share
    name: Viral-load results flagged high (test-only)
    domain: laboratory
    description: Test-only indicator (WHO consolidated HIV guidelines 2021).
    numerator: "#{lab_vl_high_results}"
    denominator: "#{lab_vl_tests}"
    factor: 100
    unit: "%"
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, HealthpipeConfig]:
    workdir = tmp_path_factory.mktemp("indicators")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEALTHPIPE_PSEUDONYM_KEY", "indicators-test-key-0123456789")
        patch.delenv("HEALTHPIPE_WAREHOUSE", raising=False)
        result = run_demo(workdir, seed=7, districts=2, weeks=30)
        # A user's own definitions: one more file on indicator_paths, then publish and build.
        extra = workdir / "my-indicators" / "extra.yml"
        extra.parent.mkdir()
        extra.write_text(EXTRA_YAML, encoding="utf-8")
        config = result.config.model_copy(update={"indicator_paths": [extra.parent]})
        with open_warehouse(config) as warehouse:
            publish_indicator_definitions(warehouse, config)
        outcome = transform(config, run_id="indicators-extra")
        assert not outcome.failed, outcome
    return result, config


def query(config: HealthpipeConfig, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with Warehouse.open(config.warehouse) as warehouse:
        return warehouse.fetchall(sql, params or None)


# --- recomputations, one per domain -----------------------------------------------------------

Operands = tuple[rc.Totals, rc.Totals]
YES_NO_PREFIXES = ("amen_", "equip_", "prec_", "diag_", "med_")


def sara_readiness(country: rc.Country) -> Operands:
    num, den = rc.Totals(), rc.Totals()
    for row in rc.tabular_rows(country, "tabular/facility_assessments.csv"):
        scores = []
        for prefix in YES_NO_PREFIXES:
            answers = [v for k, v in row.items() if k.startswith(prefix) and v in ("yes", "no")]
            scores.append(100.0 * answers.count("yes") / len(answers) if answers else None)
        if None in scores:
            continue
        facility = country.by_code[row["facility_code"]]
        num.add(facility, [row["period"]], sum(s for s in scores if s is not None) / 5.0)
        den.add(facility, [row["period"]], 1)
    return num, den


def vacancy_rate(country: rc.Country) -> Operands:
    """Posts are stocks (LAST): a year takes each facility's latest quarter."""
    quarters: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rc.tabular_rows(country, "tabular/workforce.csv"):
        totals = quarters[(country.by_code[row["facility_code"]], row["period"])]
        totals[0] += float(row["vacant_posts"])
        totals[1] += float(row["approved_posts"])
    latest: dict[tuple[str, str], str] = {}
    for facility, quarter in quarters:
        year_key = (facility, quarter[:4])
        latest[year_key] = max(latest.get(year_key, quarter), quarter)
    num, den = rc.Totals(), rc.Totals()
    for (facility, quarter), (vacant, approved) in quarters.items():
        periods = [quarter] + ([quarter[:4]] if latest[(facility, quarter[:4])] == quarter else [])
        num.add(facility, periods, vacant)
        den.add(facility, periods, approved)
    return num, den


def stockout_rate(country: rc.Country, item: str | None = None) -> Operands:
    num, den = rc.Totals(), rc.Totals()
    for _, row in rc.lmis_rows(country):
        if item is not None and row["item_code"] != item:
            continue
        facility = country.by_code[row["facility_code"]]
        periods = rc.month_periods(row["period"])
        den.add(facility, periods, 1)
        if int(row["stockout_days"]) > 0:
            num.add(facility, periods, 1)
    return num, den


def quarterly_ratio(file: str, numerator: str, denominator: str) -> Callable[..., Operands]:
    def recompute(country: rc.Country) -> Operands:
        num, den = rc.Totals(), rc.Totals()
        for row in rc.tabular_rows(country, file):
            facility = country.by_code[row["facility_code"]]
            num.add(facility, rc.quarter_periods(row["period"]), float(row[numerator]))
            den.add(facility, rc.quarter_periods(row["period"]), float(row[denominator]))
        return num, den

    return recompute


def visits_per_chw(country: rc.Country) -> Operands:
    visits, chws = rc.Totals(), rc.Totals()
    active: set[tuple[str, str, str]] = set()
    for row in rc.odk_submissions(country, "household_visit"):
        facility = country.by_code[row["facility_code"]]
        day = date.fromisoformat(row["visit_date"])
        visits.add(facility, rc.day_month_periods(day), 1)
        active.add((facility, f"{day.year}{day.month:02d}", row["chw_id"]))
    for facility, month, _ in active:
        chws.add(facility, rc.month_periods(month), 1)
    return visits, chws


MALARIA_TESTS = {"70569-9", "51587-4"}
POSITIVE = {"30020004", "260373001", "75953000", "10828004"}
NEGATIVE = {"260415000", "260385009"}


def malaria_positivity(country: rc.Country) -> Operands:
    num, den = rc.Totals(), rc.Totals()
    for result in rc.lab_results(country):
        if result.test_code not in MALARIA_TESTS or result.value_code not in POSITIVE | NEGATIVE:
            continue
        if result.facility_code not in country.by_code:
            continue
        facility = country.by_code[result.facility_code]
        periods = rc.week_periods(result.collected.date())
        den.add(facility, periods, 1)
        if result.value_code in POSITIVE:
            num.add(facility, periods, 1)
    return num, den


def dhis2_ratio(numerator: str, denominator: str) -> Callable[..., Operands]:
    def recompute(country: rc.Country) -> Operands:
        totals = {numerator: rc.Totals(), denominator: rc.Totals()}
        for value in rc.dhis2_values(country, {numerator, denominator}):
            totals[value["dataElement"]].add(
                value["orgUnit"], rc.dhis2_periods(value["period"]), float(value["value"])
            )
        return totals[numerator], totals[denominator]

    return recompute


def emr_coverage(country: rc.Country) -> Operands:
    locations = {}
    for location in rc.fhir_resources(country, "emr", "Location"):
        for identifier in location.get("identifier", []):
            if identifier.get("system", "").endswith("org-unit-uid"):
                locations[location["id"]] = identifier["value"]
    encounters = rc.Totals()
    for encounter in rc.fhir_resources(country, "emr", "Encounter"):
        reference = encounter["location"][0]["location"]["reference"].split("/")[-1]
        day = date.fromisoformat(encounter["period"]["start"][:10])
        encounters.add(locations[reference], rc.day_month_periods(day), 1)
    _, opd = dhis2_ratio(OPD_VISITS.uid, OPD_VISITS.uid)(country)
    return encounters, opd


MONTHS = ("Monthly", "Quarterly", "Yearly")
QUARTERS = ("Quarterly", "Yearly")
RECOMPUTED: dict[str, tuple[str, Callable[[rc.Country], Operands], tuple[str, ...]]] = {
    "infrastructure": ("sara_general_service_readiness", sara_readiness, ("Yearly",)),
    "workforce": ("health_worker_vacancy_rate", vacancy_rate, QUARTERS),
    "supply_chain": ("tracer_stockout_rate", stockout_rate, MONTHS),
    # a derived element disaggregated by item: #{lmis_item_stockouts.AL6X4}
    "supply_chain_one_item": (
        "act_stockout_rate",
        lambda country: stockout_rate(country, "AL6X4"),
        MONTHS,
    ),
    "governance": (
        "budget_execution_rate",
        quarterly_ratio("tabular/governance.csv", "budget_spent", "budget_allocated"),
        QUARTERS,
    ),
    "cross_sectoral": (
        "school_health_sessions_rate",
        quarterly_ratio(
            "tabular/cross_sectoral.csv",
            "school_health_sessions_held",
            "school_health_sessions_planned",
        ),
        QUARTERS,
    ),
    "community_engagement": ("household_visits_per_chw", visits_per_chw, MONTHS),
    "laboratory": ("lab_malaria_test_positivity", malaria_positivity, ("Weekly", "Yearly")),
    "quality_improvement": (
        "vl_suppression_rate",
        dhis2_ratio(VL_SUPPRESSED.uid, VL_TESTED.uid),
        MONTHS,
    ),
    "surveillance": (
        "measles_incidence_per_100000",
        dhis2_ratio("hpMEASCases", TOTAL_POPULATION.uid),
        ("Yearly",),
    ),
    "health_information": ("emr_encounter_coverage", emr_coverage, MONTHS),
}


def _close(actual: float | None, expected: float | None) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    return actual == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("domain", sorted(RECOMPUTED))
def test_an_indicator_per_domain_matches_the_simulated_files(demo: Any, domain: str) -> None:
    result, config = demo
    indicator, recompute, period_types = RECOMPUTED[domain]
    domain = domain.removesuffix("_one_item")
    assert indicator in {
        row[0]
        for row in query(
            config, "select indicator_id from marts.dim_indicator where domain = $d", d=domain
        )
    }
    country = rc.Country(result.country_dir)
    num_totals, den_totals = recompute(country)
    paths = country.paths
    expected_num = rc.roll_up(num_totals, paths)
    expected_den = rc.roll_up(den_totals, paths)
    (factor,) = query(
        config, "select factor from marts.dim_indicator where indicator_id = $i", i=indicator
    )[0]
    rows = query(
        config,
        "select org_unit_id, org_unit_level, period_id, period_type, numerator, denominator, value "
        "from marts.indicator_values where indicator_id = $i",
        i=indicator,
    )
    checked = [r for r in rows if r[3] in period_types]
    assert checked, f"{indicator} has no values for {period_types}"
    mismatches = []
    levels = set()
    for org_unit, level, period, _, numerator, denominator, value in checked:
        key = (org_unit, period)
        want_num, want_den = expected_num.get(key), expected_den.get(key)
        want_value = (want_num or 0.0) / want_den * factor if want_den else None
        if not (
            _close(numerator, want_num)
            and _close(denominator, want_den)
            and (want_num is None or _close(value, want_value))
        ):
            mismatches.append((org_unit, period, numerator, want_num, denominator, want_den))
        if want_den:
            levels.add(level)
    assert not mismatches, mismatches[:10]
    # Every (org unit, period) the files give a value for is in the warehouse too.
    found = {(r[0], r[2]) for r in checked}
    expected_keys = {
        key
        for key in set(expected_num) | set(expected_den)
        if parse_period(key[1]).period_type in period_types
    }
    assert expected_keys <= found, sorted(expected_keys - found)[:10]
    assert levels == {1, 2, 3, 4}, levels


# --- structure ---------------------------------------------------------------------------------


def test_every_domain_has_values_at_every_level(demo: Any) -> None:
    _, config = demo
    rows = query(
        config,
        "select domain, org_unit_level, count(value) from marts.indicator_values group by 1, 2",
    )
    with_values = {(domain, level) for domain, level, count in rows if count > 0}
    assert with_values == {(d, level) for d in DOMAINS for level in (1, 2, 3, 4)}
    per_domain = query(
        config, "select domain, count(*) from marts.dim_indicator where is_computable group by 1"
    )
    assert all(count >= 4 for _, count in per_domain) and len(per_domain) == 10, per_domain


def test_sum_type_indicators_parents_sum_their_children(demo: Any) -> None:
    """Every indicator whose numerator operands all aggregate by SUM: each parent's numerator
    is the sum of its children's (children without a value count as nothing)."""
    _, config = demo
    sum_type = {
        indicator
        for (indicator,) in query(
            config,
            """
            select o.indicator_id
            from staging.stg_healthpipe__indicator_operands o
            join marts.dim_indicator i using (indicator_id)
            join marts.dim_data_element d on d.data_element_id = o.data_element_id
            where i.is_computable
            group by o.indicator_id
            having bool_and(d.aggregation_type = 'SUM')
            """,
        )
    }
    assert len(sum_type) >= 25 and "tracer_stockout_rate" in sum_type
    mismatches = query(
        config,
        """
        select parent.indicator_id, parent.org_unit_id, parent.period_id,
               parent.numerator, sum(child.numerator)
        from marts.indicator_values parent
        join marts.dim_org_unit child_unit on child_unit.parent_id = parent.org_unit_id
        join marts.indicator_values child
          on child.org_unit_id = child_unit.org_unit_id
         and child.period_id = parent.period_id
         and child.indicator_id = parent.indicator_id
        group by parent.indicator_id, parent.org_unit_id, parent.period_id, parent.numerator
        having abs(coalesce(parent.numerator, 0) - coalesce(sum(child.numerator), 0)) > 1e-6
        """,
    )
    assert [m for m in mismatches if m[0] in sum_type] == []
    checked = query(
        config,
        "select count(distinct indicator_id) from marts.indicator_values "
        "where org_unit_level < 4 and numerator is not null",
    )[0][0]
    assert checked >= len(sum_type)


def test_derived_values_reach_the_fact_with_their_record_source(demo: Any) -> None:
    _, config = demo
    rows = query(
        config,
        """
        select d.source_name, count(distinct v.data_element_id)
        from marts.dim_data_element d
        join marts.fct_data_values v
          on v.data_element_id = d.data_element_id and v.source = d.source_name
        where d.is_derived and d.data_element_id not like 'R:%'
        group by 1
        """,
    )
    sources = dict(rows)
    # data-quality counts and the 7-1-7 alert facts are derived too (the latter only once
    # alerts exist)
    assert set(sources) - {"data_quality", "fct_alert_timeliness"} == {
        "fct_lab_results",
        "fct_stock",
        "fct_workforce",
        "fct_facility_assessments",
        "fct_governance",
        "fct_cross_sectoral",
        "fct_community_reports",
        "fct_nutrition_screenings",
        "fct_encounters",
    }, sources


def test_a_derived_element_and_indicator_from_indicator_paths(demo: Any) -> None:
    _, config = demo
    (definition,) = query(
        config,
        "select source_name, aggregation_type, is_derived from marts.dim_data_element "
        "where data_element_id = 'lab_vl_high_results'",
    )
    assert definition == ("fct_lab_results", "SUM", True)
    by_facility_month = query(
        config,
        """
        select org_unit_id, extract(year from collected_date) * 100
               + extract(month from collected_date), count(*)
        from marts.fct_lab_results
        where test_code = '20447-9' and interpretation = 'H'
        group by 1, 2
        """,
    )
    assert by_facility_month
    values = {
        (org_unit, period): value
        for org_unit, period, value in query(
            config,
            "select org_unit_id, period_id, value from marts.fct_data_values "
            "where data_element_id = 'lab_vl_high_results' and source = 'fct_lab_results'",
        )
    }
    assert values == {
        (org_unit, str(int(month))): float(count) for org_unit, month, count in by_facility_month
    }
    levels = query(
        config,
        "select distinct org_unit_level from marts.indicator_values "
        "where indicator_id = 'test_vl_high_share' and value is not null",
    )
    assert {level for (level,) in levels} == {1, 2, 3, 4}


def test_lab_results_keep_one_row_per_order_and_test(demo: Any) -> None:
    result, config = demo
    country = rc.Country(result.country_dir)
    expected = {
        (r.order, r.test_code)
        for r in rc.lab_results(country)
        if r.facility_code in country.by_code
    }
    rows = query(
        config,
        "select order_key, test_code, is_specimen_rejected, turnaround_hours "
        "from marts.fct_lab_results",
    )
    orders = {(re.sub(r"^filler:[^^]*\^", "", key), test) for key, test, _, _ in rows}
    assert len(rows) == len(expected)
    assert {order.split("^")[0] for order, _ in orders} == {o.split("^")[0] for o, _ in expected}
    assert all(tat is None for _, _, rejected, tat in rows if rejected)
    assert all(tat is not None and tat >= 0 for _, _, rejected, tat in rows if not rejected)
    rejected = sum(1 for row in rows if row[2])
    assert rejected == country.truth["notes"]["hl7_summary"]["rejected_specimens"]


def test_derived_facts_map_every_record_to_an_org_unit(demo: Any) -> None:
    _, config = demo
    for fact in ("fct_stock", "fct_workforce", "fct_governance", "fct_community_reports"):
        (missing,) = query(config, f"select count(*) from marts.{fact} where org_unit_id is null")[
            0
        ]
        assert missing == 0, fact


def test_weekly_lab_values_roll_up_to_the_year_of_their_thursday() -> None:
    # 2025-12-29 (Monday) starts 2026W1: its Thursday is 1 January 2026 (DHIS2 rule).
    assert rc.week_periods(date(2025, 12, 29)) == ["2026W1", "2026"]
