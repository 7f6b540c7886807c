"""What the weekly bulletin shows, read from the warehouse's public tables.

Only ``marts`` and ``audit`` tables are read (the contract in DESIGN.md), with SQL that runs
unchanged on DuckDB and PostgreSQL. Everything is returned as plain values; formatting and
small-cell suppression happen when the page is rendered.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import pandas as pd

from pipelines.errors import HealthpipeError
from pipelines.periods import PeriodError, parse_period
from pipelines.report.suppress import withheld
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

CURVE_WEEKS = 26
MAP_WEEKS = 4
"""Incidence on the map and "recent" alerts cover the bulletin week and the 3 before it."""
MAX_MAPS = 6
MAX_ALERTS = 15
DISTRICT_LEVEL = 3
ORG_UNIT_KEYS = re.compile(r'"(?:org_unit|org_unit_id|orgUnit)"\s*:\s*"([A-Za-z0-9]{11})"')


@dataclass(frozen=True)
class AlertRow:
    alert_id: str
    disease: str
    org_unit: str
    first_week: str
    last_week: str
    rule: str
    method: str
    severity: str
    status: str
    total_cases: float | None
    days_to_detect: int | None
    days_to_notify: int | None
    days_to_respond: int | None


@dataclass(frozen=True)
class Curve:
    disease: str
    name: str
    weeks: list[str]
    cases: list[float | None]
    threshold: list[float | None]
    alert_weeks: set[str]
    threshold_note: str


@dataclass(frozen=True)
class DistrictRate:
    org_unit_id: str
    name: str
    geometry: dict[str, Any] | None
    cases: float | None
    population: float | None
    withheld: bool = False
    """Neither the count nor the rate may be shown: a small count, or the complement that
    keeps one from being worked out from the national total (see
    :func:`pipelines.report.suppress.withheld`)."""

    @property
    def rate(self) -> float | None:
        if self.cases is None or not self.population:
            return None
        return 100_000.0 * self.cases / self.population


@dataclass(frozen=True)
class IncidenceMap:
    disease: str
    name: str
    districts: list[DistrictRate]


@dataclass(frozen=True)
class ScoreCell:
    value: float | None
    numerator: float | None


@dataclass(frozen=True)
class ScoreRow:
    indicator_id: str
    name: str
    domain: str
    unit: str
    target: float | None
    direction: str | None
    period_id: str
    cells: list[ScoreCell]
    """National first, then one per district in :attr:`Bulletin.districts` order."""


@dataclass(frozen=True)
class QualityRow:
    district: str
    reports_received: float | None
    reports_expected: float | None
    completeness: float | None
    timeliness: float | None
    quarantined: int


@dataclass
class Bulletin:
    period_id: str
    week_start: date
    week_end: date
    country: str
    districts: list[tuple[str, str]]
    """(org_unit_id, name) of every district, by name."""
    alerts: list[AlertRow] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    maps: list[IncidenceMap] = field(default_factory=list)
    scorecard: list[ScoreRow] = field(default_factory=list)
    quality: list[QualityRow] = field(default_factory=list)
    quarantine_outside_districts: int = 0


def bulletin_week(period_id: str) -> tuple[date, date]:
    try:
        period = parse_period(period_id)
    except PeriodError as exc:
        raise HealthpipeError(f"--period: {exc}; the bulletin needs an ISO week") from None
    if period.period_type != "Weekly":
        raise HealthpipeError(
            f"--period {period_id} is a {period.period_type} period; the bulletin is weekly "
            "(for example 2026W5)"
        )
    return period.start_date, period.end_date


def latest_complete_week(warehouse: Warehouse, min_completeness: float = 80.0) -> str | None:
    """The latest week whose national IDSR reporting reached ``min_completeness`` percent
    (late reports make the newest weeks look quiet), else the latest week with data."""
    for condition in ("and reporting_completeness >= $min", ""):
        rows = warehouse.fetchall(
            "select period_id from marts.fct_surveillance_weekly where org_unit_level = 1 "
            f"and cases is not null {condition} order by week_start_date desc limit 1",
            {"min": min_completeness} if condition else None,
        )
        if rows:
            return str(rows[0][0])
    return None


def load_bulletin(warehouse: Warehouse, period_id: str) -> Bulletin:
    """Everything the bulletin of ``period_id`` (an ISO week) shows."""
    start, end = bulletin_week(period_id)
    for table in ("dim_org_unit", "fct_surveillance_weekly", "alerts"):
        if not warehouse.table_exists("marts", table):
            raise HealthpipeError(f"the warehouse has no marts.{table}; run `healthpipe run` first")
    present = warehouse.fetchall(
        "select count(*) from marts.fct_surveillance_weekly where period_id = $p",
        {"p": period_id},
    )[0][0]
    if not present:
        latest = latest_complete_week(warehouse)
        hint = f"the latest complete week is {latest}" if latest else "it holds no IDSR data yet"
        raise HealthpipeError(
            f"no surveillance data for {period_id} in marts.fct_surveillance_weekly; {hint}"
        )
    country = warehouse.fetchall(
        "select name from marts.dim_org_unit where level = 1 order by name limit 1"
    )
    districts = [
        (str(i), str(n))
        for i, n in warehouse.fetchall(
            "select org_unit_id, name from marts.dim_org_unit where level = $level order by name",
            {"level": DISTRICT_LEVEL},
        )
    ]
    bulletin = Bulletin(
        period_id, start, end, str(country[0][0]) if country else "National", districts
    )
    every_alert = _alerts(warehouse, period_id, start, end)
    recent_from = start - timedelta(weeks=MAP_WEEKS - 1)
    bulletin.alerts = [a for a in every_alert if _week_start(a.last_week) >= recent_from]
    bulletin.curves = _curves(warehouse, start, every_alert)
    bulletin.maps = _maps(warehouse, start, end)
    bulletin.scorecard = _scorecard(warehouse, end, districts)
    bulletin.quality, bulletin.quarantine_outside_districts = _quality(
        warehouse, period_id, districts
    )
    return bulletin


def _week_start(period_id: str) -> date:
    return parse_period(period_id).start_date


def _alerts(warehouse: Warehouse, period_id: str, start: date, end: date) -> list[AlertRow]:
    """Alerts that emerged by the week's end, most urgent first, as they stood that week:
    an alert still signalling afterwards ends at the bulletin's week, with the cases of its
    weeks up to then (a past week's bulletin does not show later weeks)."""
    cases_by_then = {
        str(alert): _finite(cases)
        for alert, cases in warehouse.fetchall(
            "select a.alert_id, sum(s.cases) from marts.alerts a "
            "join marts.fct_surveillance_weekly s on s.disease = a.disease "
            "and s.org_unit_id = a.org_unit_id and s.week_start_date >= a.emerged_on "
            "and s.week_start_date <= $start "
            "where a.emerged_on <= $end group by a.alert_id",
            {"start": start, "end": end},
        )
    }
    rows = warehouse.fetchall(
        "select a.alert_id, coalesce(d.disease_name, a.disease), coalesce(o.name, a.org_unit_id), "
        "a.period_id, a.last_period_id, a.rule, a.method, a.severity, a.status, a.total_cases, "
        "a.days_to_detect, a.days_to_notify, a.days_to_respond "
        "from marts.alerts a "
        "left join marts.dim_org_unit o on o.org_unit_id = a.org_unit_id "
        "left join (select distinct disease, disease_name from marts.fct_surveillance_weekly) d "
        "on d.disease = a.disease "
        "where a.emerged_on <= $end",
        {"end": end},
    )
    chosen = []
    for row in rows:
        later = _week_start(str(row[4])) > start
        chosen.append(
            AlertRow(
                alert_id=str(row[0]),
                disease=str(row[1]),
                org_unit=str(row[2]),
                first_week=str(row[3]),
                last_week=period_id if later else str(row[4]),
                rule=str(row[5]),
                method=str(row[6]),
                severity=str(row[7]),
                status=str(row[8]),
                total_cases=cases_by_then.get(str(row[0])) if later else _finite(row[9]),
                days_to_detect=row[10],
                days_to_notify=row[11],
                days_to_respond=row[12],
            )
        )
    # Epidemics first, then the most recent signals, then open before closed.
    chosen.sort(key=lambda a: (a.severity != "epidemic", -_week_start(a.last_week).toordinal(),
                               a.status in ("closed", "discarded"), a.disease, a.org_unit))  # fmt: skip
    return chosen


def _curves(warehouse: Warehouse, start: date, alerts: list[AlertRow]) -> list[Curve]:
    from pipelines.alerts.detectors import detect

    rows = warehouse.fetchall(
        "select disease, disease_name, period_id, week_start_date, cases, "
        "is_immediately_notifiable from marts.fct_surveillance_weekly "
        "where org_unit_level = 1 and week_start_date <= $start order by disease, week_start_date",
        {"start": start},
    )
    by_disease: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_disease[str(row[0])].append(row)
    shown_from = start - timedelta(weeks=CURVE_WEEKS - 1)
    alert_weeks: dict[str, set[date]] = defaultdict(set)
    for alert in alerts:
        week = _week_start(alert.first_week)
        while week <= _week_start(alert.last_week):
            alert_weeks[alert.disease].add(week)
            week += timedelta(weeks=1)
    curves = []
    for disease, series in by_disease.items():
        name, notifiable = str(series[0][1]), bool(series[0][5])
        counts = pd.Series(
            [math.nan if r[4] is None else float(r[4]) for r in series],
            index=pd.to_datetime([r[3] for r in series]),
            dtype="float64",
        )
        if notifiable:
            threshold = pd.Series(1.0, index=counts.index)
            note = "any suspected case is an alert (immediately notifiable)"
        else:
            threshold, note = _threshold(detect, counts)
        recent = [r for r in series if r[3] >= shown_from]
        if not any((r[4] or 0) > 0 for r in recent):
            continue
        curves.append(
            Curve(
                disease=disease,
                name=name,
                weeks=[str(r[2]) for r in recent],
                cases=[None if r[4] is None else float(r[4]) for r in recent],
                threshold=[_finite(threshold.get(pd.Timestamp(r[3]))) for r in recent],
                alert_weeks={str(r[2]) for r in recent if r[3] in alert_weeks[name]},
                threshold_note=note,
            )
        )
    return curves


def _threshold(detect: Any, counts: pd.Series) -> tuple[pd.Series, str]:
    """The IDSR C-SUM threshold (mean + 2 SD of the same and adjacent weeks of previous
    years) where the history allows it, else EARS C2 (the 7 weeks before a 2-week guard)."""
    csum = detect(counts, "csum")["threshold"]
    if csum.notna().iloc[-CURVE_WEEKS:].any():
        return (
            csum,
            "C-SUM: mean plus two standard deviations of the same and adjacent weeks of previous years",
        )
    ears = detect(counts, "ears_c2")["threshold"]
    return (
        ears,
        "EARS C2: mean plus three standard deviations of a seven-week baseline ending two weeks earlier",
    )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _maps(warehouse: Warehouse, start: date, end: date) -> list[IncidenceMap]:
    first = start - timedelta(weeks=MAP_WEEKS - 1)
    rows = warehouse.fetchall(
        "select s.disease, max(s.disease_name), s.org_unit_id, max(o.name), max(o.geometry), "
        "sum(s.cases), count(s.cases), max(case when s.week_start_date = $start "
        "then s.population end) "
        "from marts.fct_surveillance_weekly s "
        "join marts.dim_org_unit o on o.org_unit_id = s.org_unit_id "
        "where s.org_unit_level = $level and s.week_start_date between $first and $start "
        "group by s.disease, s.org_unit_id order by s.disease, max(o.name)",
        {"start": start, "first": first, "level": DISTRICT_LEVEL},
    )
    maps: dict[str, IncidenceMap] = {}
    for disease, name, org_unit, district, geometry, cases, reported, population in rows:
        entry = maps.setdefault(str(disease), IncidenceMap(str(disease), str(name), []))
        entry.districts.append(
            DistrictRate(
                str(org_unit),
                str(district),
                _geometry(geometry, str(district)),
                float(cases) if reported else None,
                None if population is None else float(population),
            )
        )
    for entry in maps.values():
        # The national total of these weeks is the sum of the curve's last bars: one small
        # district among them would be the total minus the others.
        hidden = withheld([d.cases for d in entry.districts])
        entry.districts[:] = [
            replace(d, withheld=h) for d, h in zip(entry.districts, hidden, strict=True)
        ]
    with_cases = [m for m in maps.values() if sum(d.cases or 0 for d in m.districts) > 0]
    # The diseases with the highest incidence first: those a reader looks for. Only shown
    # rates rank them, or the order would hint at a withheld one.
    with_cases.sort(
        key=lambda m: -max((d.rate or 0 for d in m.districts if not d.withheld), default=0.0)
    )
    return with_cases[:MAX_MAPS]


def _geometry(text: Any, district: str) -> dict[str, Any] | None:
    if text is None or text == "":
        return None
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(str(text))
    except json.JSONDecodeError:
        log.warning("%s: geometry in marts.dim_org_unit is not GeoJSON; left off the map", district)
        return None
    return value if isinstance(value, dict) else None


SCORE_PERIOD_TYPES = ("Monthly", "Quarterly", "Yearly")


def _scorecard(warehouse: Warehouse, end: date, districts: list[tuple[str, str]]) -> list[ScoreRow]:
    """Each indicator's latest month (else quarter, else year) ending by the bulletin
    week, nationally and per district."""
    if not warehouse.table_exists("marts", "indicator_values"):
        return []
    latest = warehouse.fetchall(
        "select v.indicator_id, v.period_id, v.period_type, p.end_date "
        "from marts.indicator_values v join marts.dim_period p on p.period_id = v.period_id "
        "where v.org_unit_level = 1 and v.value is not null and p.end_date <= $end "
        "and v.period_type in ('Monthly', 'Quarterly', 'Yearly')",
        {"end": end},
    )
    best: dict[str, tuple[date, int, str]] = {}
    for indicator, period, period_type, period_end in latest:
        rank = (period_end, -SCORE_PERIOD_TYPES.index(str(period_type)), str(period))
        if indicator not in best or rank[:2] > best[indicator][:2]:
            best[str(indicator)] = rank
    if not best:
        return []
    definitions = warehouse.fetchall(
        "select indicator_id, name, domain, unit, target, direction from marts.dim_indicator "
        "order by domain, name"
    )
    values = warehouse.fetchall(
        "select indicator_id, org_unit_id, period_id, value, numerator "
        "from marts.indicator_values where org_unit_level in (1, $level)",
        {"level": DISTRICT_LEVEL},
    )
    cell: dict[tuple[str, str, str], ScoreCell] = {
        (str(i), str(o), str(p)): ScoreCell(_finite(v), _finite(n)) for i, o, p, v, n in values
    }
    national = warehouse.fetchall("select org_unit_id from marts.dim_org_unit where level = 1")
    national_id = str(national[0][0]) if national else ""
    rows = []
    for indicator, name, domain, unit, target, direction in definitions:
        if indicator not in best:
            continue
        period = best[indicator][2]
        empty = ScoreCell(None, None)
        cells = [cell.get((indicator, national_id, period), empty)] + [
            cell.get((indicator, org_unit, period), empty) for org_unit, _ in districts
        ]
        rows.append(
            ScoreRow(str(indicator), str(name), str(domain), str(unit or ""), _finite(target),
                     None if direction is None else str(direction), period, cells)
        )  # fmt: skip
    return rows


def _quality(
    warehouse: Warehouse, period_id: str, districts: list[tuple[str, str]]
) -> tuple[list[QualityRow], int]:
    """IDSR reporting per district for the week, and records held in quarantine (not
    released) counted against the district of the org unit they name."""
    reporting = {
        str(o): (r, e, c)
        for o, r, e, c in warehouse.fetchall(
            "select org_unit_id, max(reports_received), max(reports_expected), "
            "max(reporting_completeness) from marts.fct_surveillance_weekly "
            "where org_unit_level = $level and period_id = $p group by org_unit_id",
            {"level": DISTRICT_LEVEL, "p": period_id},
        )
    }
    timeliness: dict[str, float | None] = {}
    if warehouse.table_exists("marts", "indicator_values"):
        timeliness = {
            str(o): _finite(v)
            for o, v in warehouse.fetchall(
                "select org_unit_id, value from marts.indicator_values "
                "where indicator_id = 'idsr_reporting_timeliness' and period_id = $p "
                "and org_unit_level = $level",
                {"p": period_id, "level": DISTRICT_LEVEL},
            )
        }
    district_of = {
        str(o): str(d)
        for o, d in warehouse.fetchall(
            f"select org_unit_id, level_{DISTRICT_LEVEL}_id from marts.dim_org_unit "
            f"where level_{DISTRICT_LEVEL}_id is not null"
        )
    }
    held: dict[str, int] = defaultdict(int)
    outside = 0
    if warehouse.table_exists("audit", "quarantine"):
        for (record,) in warehouse.fetchall(
            "select record_json from audit.quarantine where released_at is null"
        ):
            match = ORG_UNIT_KEYS.search(str(record))
            district = district_of.get(match.group(1)) if match else None
            if district is None:
                outside += 1
            else:
                held[district] += 1
    rows = []
    for org_unit, name in districts:
        received, expected, completeness = reporting.get(org_unit, (None, None, None))
        rows.append(
            QualityRow(name, _finite(received), _finite(expected), _finite(completeness),
                       timeliness.get(org_unit), held.get(org_unit, 0))
        )  # fmt: skip
    return rows, outside
