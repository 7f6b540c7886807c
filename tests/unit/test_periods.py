"""DHIS2 period identifiers: examples from the DHIS2 docs and properties over many dates."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.periods import PeriodError, parse_period, week_one_start


@pytest.mark.parametrize(
    ("period_id", "period_type", "start", "end"),
    [
        ("20260315", "Daily", date(2026, 3, 15), date(2026, 3, 15)),
        ("2026W1", "Weekly", date(2025, 12, 29), date(2026, 1, 4)),
        ("2026W5", "Weekly", date(2026, 1, 26), date(2026, 2, 1)),
        ("2020W53", "Weekly", date(2020, 12, 28), date(2021, 1, 3)),
        ("2026WedW1", "WeeklyWednesday", date(2025, 12, 31), date(2026, 1, 6)),
        ("2026SunW1", "WeeklySunday", date(2026, 1, 4), date(2026, 1, 10)),
        ("2026BiW1", "BiWeekly", date(2025, 12, 29), date(2026, 1, 11)),
        ("2026BiW3", "BiWeekly", date(2026, 1, 26), date(2026, 2, 8)),
        ("2020BiW26", "BiWeekly", date(2020, 12, 14), date(2020, 12, 27)),
        ("202605", "Monthly", date(2026, 5, 1), date(2026, 5, 31)),
        ("202402", "Monthly", date(2024, 2, 1), date(2024, 2, 29)),
        ("202603B", "BiMonthly", date(2026, 5, 1), date(2026, 6, 30)),
        ("2026Q2", "Quarterly", date(2026, 4, 1), date(2026, 6, 30)),
        ("2026S2", "SixMonthly", date(2026, 7, 1), date(2026, 12, 31)),
        ("2026AprilS1", "SixMonthlyApril", date(2026, 4, 1), date(2026, 9, 30)),
        ("2026AprilS2", "SixMonthlyApril", date(2026, 10, 1), date(2027, 3, 31)),
        ("2026", "Yearly", date(2026, 1, 1), date(2026, 12, 31)),
        ("2026April", "FinancialApril", date(2026, 4, 1), date(2027, 3, 31)),
        ("2026July", "FinancialJuly", date(2026, 7, 1), date(2027, 6, 30)),
        ("2026Oct", "FinancialOct", date(2026, 10, 1), date(2027, 9, 30)),
    ],
)
def test_documented_examples(period_id: str, period_type: str, start: date, end: date) -> None:
    period = parse_period(period_id)
    assert (period.period_type, period.start_date, period.end_date) == (period_type, start, end)


@pytest.mark.parametrize(
    "bad",
    [
        "202613",
        "2026W0",
        "2026W05",
        "2021W53",
        "20260230",
        "2026Q5",
        "202607B",
        "2026-05",
        "",
        "W5",
    ],
)
def test_invalid_identifiers_are_rejected(bad: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(bad)


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31)))
def test_every_day_is_in_exactly_one_week_of_each_flavour(day: date) -> None:
    for infix, weekday in (("", 1), ("Wed", 3), ("Thu", 4), ("Sat", 6), ("Sun", 7)):
        start = day - timedelta(days=(day.isoweekday() - weekday) % 7)
        year = (start + timedelta(days=3)).year
        number = (start - week_one_start(year, weekday)).days // 7 + 1
        period = parse_period(f"{year}{infix}W{number}")
        assert period.start_date <= day <= period.end_date
        assert period.start_date.isoweekday() == weekday


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31)))
def test_iso_weeks_match_the_iso_calendar(day: date) -> None:
    year, week, _ = day.isocalendar()
    period = parse_period(f"{year}W{week}")
    assert period.start_date <= day <= period.end_date


@given(st.integers(min_value=1990, max_value=2060))
def test_weeks_of_a_year_tile_it_without_gaps(year: int) -> None:
    weeks = []
    number = 1
    while True:
        try:
            weeks.append(parse_period(f"{year}W{number}"))
        except PeriodError:
            break
        number += 1
    assert len(weeks) in (52, 53)
    assert len(weeks) == date(year, 12, 28).isocalendar()[1]
    for earlier, later in itertools.pairwise(weeks):
        assert later.start_date == earlier.end_date + timedelta(days=1)
