"""DHIS2 period identifiers: parsing and the calendar rules behind them.

The same rules are implemented in SQL by the dbt model ``int_calendar_days`` (every period
of every type, built from a day spine); tests compare the two.

Rules (DHIS2 ``PeriodType`` classes): week numbers have no leading zero; for every week-start
day, week 1 is the week that holds 4 January, so a week belongs to the year of its fourth day
(start + 3 days); a bi-week is two ISO weeks starting on an odd one (26 a year); financial
years and ``AprilS`` six-months are labelled by the year they start in; end dates are
inclusive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

# Week flavours: identifier infix -> (period type, ISO weekday the week starts on).
WEEK_FLAVOURS: dict[str, tuple[str, int]] = {
    "": ("Weekly", 1),
    "Wed": ("WeeklyWednesday", 3),
    "Thu": ("WeeklyThursday", 4),
    "Sat": ("WeeklySaturday", 6),
    "Sun": ("WeeklySunday", 7),
}
FINANCIAL_YEARS: dict[str, tuple[str, int]] = {
    "April": ("FinancialApril", 4),
    "July": ("FinancialJuly", 7),
    "Oct": ("FinancialOct", 10),
    "Nov": ("FinancialNov", 11),
}

# Shortest to longest; a period can roll up only into a type later in this list.
PERIOD_TYPES: tuple[str, ...] = (
    "Daily",
    "Weekly",
    "WeeklyWednesday",
    "WeeklyThursday",
    "WeeklySaturday",
    "WeeklySunday",
    "BiWeekly",
    "Monthly",
    "BiMonthly",
    "Quarterly",
    "SixMonthly",
    "SixMonthlyApril",
    "Yearly",
    "FinancialApril",
    "FinancialJuly",
    "FinancialOct",
    "FinancialNov",
)

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("daily", re.compile(r"^(\d{4})(\d{2})(\d{2})$")),
    ("weekly", re.compile(r"^(\d{4})(Wed|Thu|Sat|Sun)?W([1-9]\d?)$")),
    ("biweekly", re.compile(r"^(\d{4})BiW([1-9]\d?)$")),
    ("monthly", re.compile(r"^(\d{4})(\d{2})$")),
    ("bimonthly", re.compile(r"^(\d{4})(\d{2})B$")),
    ("quarterly", re.compile(r"^(\d{4})Q([1-4])$")),
    ("sixmonthly", re.compile(r"^(\d{4})(April)?S([12])$")),
    ("yearly", re.compile(r"^(\d{4})$")),
    ("financial", re.compile(r"^(\d{4})(April|July|Oct|Nov)$")),
)


@dataclass(frozen=True)
class Period:
    period_id: str
    period_type: str
    start_date: date
    end_date: date


class PeriodError(ValueError):
    """A string is not a DHIS2 period identifier."""


def week_one_start(year: int, start_weekday: int) -> date:
    """The first day of week 1: the week (starting on ``start_weekday``) holding 4 January."""
    jan4 = date(year, 1, 4)
    return jan4 - timedelta(days=(jan4.isoweekday() - start_weekday) % 7)


def _month_end(year: int, month: int) -> date:
    return (date(year + month // 12, month % 12 + 1, 1)) - timedelta(days=1)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


@lru_cache(maxsize=65536)
def parse_period(period_id: str) -> Period:
    """Parse a DHIS2 period identifier such as ``2026W5``, ``202605`` or ``2026AprilS1``."""
    for kind, pattern in _PATTERNS:
        match = pattern.match(period_id)
        if not match:
            continue
        year = int(match.group(1))
        if year < 1:
            break
        try:
            return _build(kind, year, match, period_id)
        except ValueError as exc:
            raise PeriodError(f"{period_id!r} is not a DHIS2 period: {exc}") from None
    raise PeriodError(
        f"{period_id!r} is not a DHIS2 period identifier "
        "(examples: 20260315, 2026W5, 2026WedW5, 202605, 202603B, 2026Q2, 2026S1, "
        "2026AprilS1, 2026, 2026April)"
    )


def _build(kind: str, year: int, match: re.Match[str], period_id: str) -> Period:
    if kind == "daily":
        day = date(year, int(match.group(2)), int(match.group(3)))
        return Period(period_id, "Daily", day, day)
    if kind == "weekly":
        period_type, weekday = WEEK_FLAVOURS[match.group(2) or ""]
        week = int(match.group(3))
        start = week_one_start(year, weekday) + timedelta(weeks=week - 1)
        if (start + timedelta(days=3)).year != year:
            raise ValueError(f"{year} has no week {week} of type {period_type}")
        return Period(period_id, period_type, start, start + timedelta(days=6))
    if kind == "biweekly":
        # Bi-week n is ISO weeks 2n-1 and 2n; DHIS2 generates 26 a year, so in a 53-week
        # year week 53 belongs to no bi-week.
        number = int(match.group(2))
        if number > 26:
            raise ValueError(f"bi-week {number} is not 1 to 26")
        start = week_one_start(year, 1) + timedelta(weeks=2 * (number - 1))
        return Period(period_id, "BiWeekly", start, start + timedelta(days=13))
    if kind == "monthly":
        month = int(match.group(2))
        if not 1 <= month <= 12:
            raise ValueError(f"month {month} is not 01 to 12")
        return Period(period_id, "Monthly", date(year, month, 1), _month_end(year, month))
    if kind == "bimonthly":
        index = int(match.group(2))
        if not 1 <= index <= 6:
            raise ValueError(f"bi-month {index} is not 01 to 06")
        first = 2 * index - 1
        return Period(period_id, "BiMonthly", date(year, first, 1), _month_end(year, first + 1))
    if kind == "quarterly":
        quarter = int(match.group(2))
        first = 3 * quarter - 2
        return Period(period_id, "Quarterly", date(year, first, 1), _month_end(year, first + 2))
    if kind == "sixmonthly":
        half = int(match.group(3))
        if match.group(2):  # April six-months: Apr-Sep, then Oct-Mar
            first_year, first = _add_months(year, 4, 6 * (half - 1))
            last_year, last = _add_months(first_year, first, 5)
            return Period(
                period_id,
                "SixMonthlyApril",
                date(first_year, first, 1),
                _month_end(last_year, last),
            )
        first = 6 * half - 5
        return Period(period_id, "SixMonthly", date(year, first, 1), _month_end(year, first + 5))
    if kind == "yearly":
        return Period(period_id, "Yearly", date(year, 1, 1), date(year, 12, 31))
    period_type, month = FINANCIAL_YEARS[match.group(2)]
    end_year, end_month = _add_months(year, month, 11)
    return Period(period_id, period_type, date(year, month, 1), _month_end(end_year, end_month))


def is_period(period_id: str | None) -> bool:
    if not period_id:
        return False
    try:
        parse_period(period_id)
    except PeriodError:
        return False
    return True


def period_type_of(period_id: str | None) -> str | None:
    """The period's type, or None when the identifier does not parse."""
    if not period_id:
        return None
    try:
        return parse_period(period_id).period_type
    except PeriodError:
        return None


# Period types that start on the first of a month: type -> (months long, first month of the
# first period of a calendar year).
_MONTH_BASED: dict[str, tuple[int, int]] = {
    "Monthly": (1, 1),
    "BiMonthly": (2, 1),
    "Quarterly": (3, 1),
    "SixMonthly": (6, 1),
    "SixMonthlyApril": (6, 4),
    "Yearly": (12, 1),
    **{period_type: (12, month) for period_type, month in FINANCIAL_YEARS.values()},
}


def period_bounds(period_type: str, day: date) -> tuple[date, date]:
    """First and last day of the period of ``period_type`` that holds ``day``."""
    if period_type == "Daily":
        return day, day
    weekdays = dict(WEEK_FLAVOURS.values())
    if period_type in weekdays:
        start = day - timedelta(days=(day.isoweekday() - weekdays[period_type]) % 7)
        return start, start + timedelta(days=6)
    if period_type == "BiWeekly":
        monday = day - timedelta(days=day.isoweekday() - 1)
        # Bi-weeks pair ISO weeks 1-2, 3-4, ...; week 53 is in none and stands alone.
        week = monday.isocalendar().week
        if week == 53:
            return monday, monday + timedelta(days=6)
        start = monday - timedelta(weeks=(week - 1) % 2)
        return start, start + timedelta(days=13)
    if period_type in _MONTH_BASED:
        months, first_month = _MONTH_BASED[period_type]
        index = day.year * 12 + day.month - 1
        offset = (index - (first_month - 1)) % months
        year, month = _add_months(day.year, day.month, -offset)
        end_year, end_month = _add_months(year, month, months - 1)
        return date(year, month, 1), _month_end(end_year, end_month)
    raise PeriodError(
        f"{period_type!r} is not a DHIS2 period type (one of {', '.join(PERIOD_TYPES)})"
    )


def covering_range(period_type: str, first: date, last: date) -> tuple[date, date]:
    """The smallest date range holding every period of ``period_type`` that overlaps the
    days ``first`` to ``last`` (inclusive): a DHIS2 ``startDate``/``endDate`` query returns
    only periods lying wholly inside its range, so asking for exactly this range returns
    exactly the overlapping periods."""
    return period_bounds(period_type, first)[0], period_bounds(period_type, last)[1]
