"""Window pulls: which days a DAG run pulls, the DHIS2 date range that returns exactly the
periods overlapping them, and a clear error for sources that cannot be pulled by window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.errors import ConfigError
from pipelines.orchestration import run_window
from pipelines.periods import PERIOD_TYPES, PeriodError, covering_range, parse_period
from pipelines.run import ingest_source, open_warehouse
from pipelines.window import Window
from tests.conftest import make_config


def some_periods(period_type: str, year: int) -> list[str]:
    """Identifiers of several period types, to check the calendar arithmetic against the
    parser (which follows DHIS2's rules independently)."""
    candidates = {
        "Daily": [f"{year}0101", f"{year}0228", f"{year}1231"],
        "Weekly": [f"{year}W{w}" for w in (1, 2, 26, 52, 53)],
        "WeeklySunday": [f"{year}SunW{w}" for w in (1, 30, 52, 53)],
        "WeeklyWednesday": [f"{year}WedW{w}" for w in (1, 30, 52, 53)],
        "WeeklyThursday": [f"{year}ThuW{w}" for w in (1, 30, 52, 53)],
        "WeeklySaturday": [f"{year}SatW{w}" for w in (1, 30, 52, 53)],
        "BiWeekly": [f"{year}BiW{n}" for n in (1, 13, 26)],
        "Monthly": [f"{year}{m:02d}" for m in range(1, 13)],
        "BiMonthly": [f"{year}{b:02d}B" for b in range(1, 7)],
        "Quarterly": [f"{year}Q{q}" for q in range(1, 5)],
        "SixMonthly": [f"{year}S1", f"{year}S2"],
        "SixMonthlyApril": [f"{year}AprilS1", f"{year}AprilS2"],
        "Yearly": [f"{year}"],
        "FinancialApril": [f"{year}April"],
        "FinancialJuly": [f"{year}July"],
        "FinancialOct": [f"{year}Oct"],
        "FinancialNov": [f"{year}Nov"],
    }[period_type]
    periods = []
    for period_id in candidates:
        try:
            periods.append(parse_period(period_id).period_id)
        except PeriodError:
            continue  # e.g. no week 53 that year
    return periods


@pytest.mark.parametrize("period_type", PERIOD_TYPES)
def test_the_covering_range_is_the_overlapping_periods_bounds(period_type: str) -> None:
    for year in (2024, 2025, 2026):
        for period_id in some_periods(period_type, year):
            period = parse_period(period_id)
            inside = period.start_date + (period.end_date - period.start_date) // 2
            # A window touching the period anywhere asks for the whole of it ...
            for first, last in [
                (period.start_date, period.start_date),
                (inside, inside),
                (period.end_date, period.end_date),
                (period.start_date - timedelta(days=1), period.start_date),
            ]:
                start, end = covering_range(period_type, first, last)
                assert start <= period.start_date and period.end_date <= end, (period_id, first)
            # ... and no more than the periods it touches.
            assert covering_range(period_type, inside, inside) == (
                period.start_date,
                period.end_date,
            ), period_id


def test_a_month_of_weekly_data_reaches_into_the_straddling_weeks() -> None:
    # 2026W1 runs Mon 29 December 2025 to Sun 4 January 2026.
    assert covering_range("Weekly", date(2025, 12, 1), date(2025, 12, 31)) == (
        date(2025, 12, 1),
        date(2026, 1, 4),
    )
    assert covering_range("Monthly", date(2025, 12, 15), date(2026, 1, 2)) == (
        date(2025, 12, 1),
        date(2026, 1, 31),
    )


def test_an_unknown_period_type_is_named() -> None:
    with pytest.raises(PeriodError, match="'Fortnightly' is not a DHIS2 period type"):
        covering_range("Fortnightly", date(2025, 1, 1), date(2025, 1, 2))


def test_a_data_interval_becomes_the_days_it_touches() -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    assert Window.of_interval(start, datetime(2025, 4, 1, tzinfo=UTC)) == Window(
        date(2025, 3, 1), date(2025, 3, 31)
    )
    daily = Window.of_interval(start.replace(hour=2), start.replace(day=2, hour=2))
    assert daily == Window(date(2025, 3, 1), date(2025, 3, 2))
    assert str(Window.parse(" 2025-03-01/2025-03-31 ")) == "2025-03-01/2025-03-31"


@pytest.mark.parametrize("text", ["2025-03-01", "2025-03-01/March", "2025-04-01/2025-03-01"])
def test_a_malformed_window_says_what_is_expected(text: str) -> None:
    with pytest.raises(ConfigError, match="window"):
        Window.parse(text)


def test_backfill_runs_and_the_window_param_pull_a_window_scheduled_runs_do_not() -> None:
    start = datetime(2025, 3, 1, 2, tzinfo=UTC)
    end = datetime(2025, 3, 2, 2, tzinfo=UTC)
    interval = Window(date(2025, 3, 1), date(2025, 3, 2))
    assert run_window("scheduled", None, start, end) is None
    assert run_window("manual", "", start, end) is None
    assert run_window("asset_triggered", None, start, end) is None
    assert run_window("backfill", None, start, end) == interval
    assert run_window("manual", "interval", start, end) == interval
    assert run_window("manual", "2025-01-01/2025-01-31", start, end) == Window(
        date(2025, 1, 1), date(2025, 1, 31)
    )
    with pytest.raises(ConfigError, match="has none"):
        run_window("manual", "interval", None, None)


def test_only_dhis2_web_api_sources_can_be_pulled_by_window(tmp_path: Path) -> None:
    config = make_config(f"duckdb:///{tmp_path / 'w.duckdb'}", tmp_path / "drop", tmp_path)
    window = Window(date(2025, 3, 1), date(2025, 3, 31))
    folder = config.source("hmis")
    tabular = folder.model_copy(update={"name": "reports", "type": "tabular"})
    with open_warehouse(config) as warehouse:
        with pytest.raises(ConfigError, match=r"source hmis: .*needs a DHIS2 Web API source"):
            ingest_source(warehouse, folder, config, run_id="r", window=window)
        with pytest.raises(ConfigError, match=r"source reports: .*not tabular sources"):
            ingest_source(warehouse, tabular, config, run_id="r", window=window)
        assert warehouse.fetchall("select * from audit.source_state") == []
