"""From weekly surveillance data to alert records that follow how outbreaks are managed.

1. Every rule is applied to every disease and org unit at the rules' level
   (``marts.fct_surveillance_weekly``), giving weekly signals.
2. Consecutive signals of one disease, org unit and rule (at most one quiet week between
   them) form one event.
3. Each event is one row of ``marts.alerts``. Its ``alert_id`` is a hash of the disease, org
   unit, rule and first week, and an event that overlaps an existing alert keeps that
   alert's id, so re-running the pipeline (or receiving one more week) never duplicates an
   alert. New alerts start ``triggered``; people move them on with ``healthpipe alerts``.
4. 7-1-7 timeliness (Frieden et al. 2021): days from emergence (the first signalled week's
   start) to detection (when that week's figures reached the source, as the system could not
   have known earlier), to notification (first notification sent) and to response (status
   ``responding``).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from pipelines.alerts.rules import Rule, RuleSet, apply_rule
from pipelines.warehouse import Warehouse

STATUSES = ("triggered", "verified", "discarded", "responding", "monitoring", "closed")
# Which status may follow which (IDSR alert management: verify, then respond or monitor).
NEXT_STATUSES: dict[str, tuple[str, ...]] = {
    "triggered": ("verified", "discarded", "closed"),
    "verified": ("responding", "monitoring", "discarded", "closed"),
    "responding": ("monitoring", "closed"),
    "monitoring": ("responding", "closed"),
    "discarded": ("triggered",),
    "closed": ("triggered",),
}
MAX_QUIET_WEEKS = 1


@dataclass(frozen=True)
class Event:
    disease: str
    org_unit_id: str
    org_unit_level: int
    rule: Rule
    weeks: pd.DataFrame
    """The event's alarm weeks (period_id, week_start_date, observed, expected, threshold,
    severity, last_reported_at)."""

    @property
    def first(self) -> pd.Series:
        return self.weeks.iloc[0]

    @property
    def last(self) -> pd.Series:
        return self.weeks.iloc[-1]

    @property
    def severity(self) -> str:
        return "epidemic" if (self.weeks["severity"] == "epidemic").any() else "alert"


def alert_id(disease: str, org_unit_id: str, rule: str, first_week: str) -> str:
    digest = hashlib.sha1(f"{disease}|{org_unit_id}|{rule}|{first_week}".encode()).hexdigest()
    return f"{disease[:4].upper()}-{digest[:12]}"


def surveillance_frame(warehouse: Warehouse, level: int) -> pd.DataFrame:
    table = warehouse.fetch_arrow(
        "select disease, org_unit_id, org_unit_level, period_id, week_start_date, cases, "
        "population, reporting_completeness, lab_confirmed, last_reported_at "
        "from marts.fct_surveillance_weekly where org_unit_level = $level "
        "order by disease, org_unit_id, week_start_date",
        {"level": level},
    )
    frame: pd.DataFrame = table.to_pandas()
    frame["week_start_date"] = pd.to_datetime(frame["week_start_date"])
    return frame


def signals(frame: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """Every alarm week of every rule, disease and org unit."""
    found: list[pd.DataFrame] = []
    for rule in rules.rules:
        subset = frame[frame["disease"].isin(rule.diseases)]
        if rule.kind == "detector":
            for name, disease_weeks in subset.groupby("disease", sort=True):
                found.append(
                    _detector_alarms(str(name), disease_weeks, rule, rules.min_completeness)
                )
            continue
        for (disease, org_unit), weeks in subset.groupby(["disease", "org_unit_id"], sort=True):
            weeks = weeks.reset_index(drop=True)
            result = apply_rule(weeks, rule, rules.min_completeness)
            alarms = result[result["alarm"].astype(bool)]
            if alarms.empty:
                continue
            rows = weeks.loc[alarms.index, _KEPT]
            found.append(
                rows.assign(
                    disease=str(disease),
                    org_unit_id=str(org_unit),
                    rule=rule.rule,
                    observed=alarms["observed"].astype(float),
                    expected=pd.to_numeric(alarms["expected"], errors="coerce"),
                    threshold=pd.to_numeric(alarms["threshold"], errors="coerce"),
                    severity=alarms["severity"],
                )
            )
    found = [f for f in found if not f.empty]
    if not found:
        return pd.DataFrame()
    return pd.concat(found, ignore_index=True)


_KEPT = ["period_id", "week_start_date", "org_unit_level", "last_reported_at"]


def _detector_alarms(
    disease: str, weeks: pd.DataFrame, rule: Rule, min_completeness: float
) -> pd.DataFrame:
    """A statistical method over every org unit's series of one disease at once (the
    detectors batch the work), weeks reported by too few facilities treated as missing."""
    from pipelines.alerts.detectors import detect_frame

    judged = weeks.assign(
        cases=weeks["cases"]
        .astype(float)
        .where(
            weeks["reporting_completeness"].isna()
            | (weeks["reporting_completeness"].astype(float) >= min_completeness)
        )
    )
    wide = judged.pivot(index="week_start_date", columns="org_unit_id", values="cases")
    wide = wide.asfreq("7D")  # a week nobody reported is a missing (NaN) week, not a gap
    result = detect_frame(wide, str(rule.method), **rule.params)
    alarms = result[result["alarm"].fillna(False).astype(bool)].reset_index()
    if alarms.empty:
        return pd.DataFrame()
    alarms = alarms.rename(columns={"series": "org_unit_id", "week": "week_start_date"})
    keyed = weeks.set_index(["org_unit_id", "week_start_date"])
    context = keyed.loc[list(zip(alarms["org_unit_id"], alarms["week_start_date"], strict=True))]
    return pd.DataFrame(
        {
            "period_id": context["period_id"].to_numpy(),
            "week_start_date": alarms["week_start_date"].to_numpy(),
            "org_unit_level": context["org_unit_level"].to_numpy(),
            "last_reported_at": context["last_reported_at"].to_numpy(),
            "disease": disease,
            "org_unit_id": alarms["org_unit_id"].astype(str).to_numpy(),
            "rule": rule.rule,
            "observed": alarms["observed"].astype(float).to_numpy(),
            "expected": pd.to_numeric(alarms["expected"], errors="coerce").to_numpy(),
            "threshold": pd.to_numeric(alarms["threshold"], errors="coerce").to_numpy(),
            "severity": "alert",
        }
    )


def group_events(alarms: pd.DataFrame, rules: RuleSet) -> list[Event]:
    if alarms.empty:
        return []
    by_name = {rule.rule: rule for rule in rules.rules}
    events: list[Event] = []
    for (disease, org_unit, rule), weeks in alarms.groupby(
        ["disease", "org_unit_id", "rule"], sort=True
    ):
        weeks = weeks.sort_values("week_start_date").reset_index(drop=True)
        gaps = weeks["week_start_date"].diff().dt.days.fillna(0) / 7
        event_number = (gaps > MAX_QUIET_WEEKS + 1).cumsum()
        for _, event_weeks in weeks.groupby(event_number):
            events.append(
                Event(
                    disease=str(disease),
                    org_unit_id=str(org_unit),
                    org_unit_level=int(event_weeks["org_unit_level"].iloc[0]),
                    rule=by_name[str(rule)],
                    weeks=event_weeks.reset_index(drop=True),
                )
            )
    return events


def _days(later: Any, earlier: Any) -> int | None:
    if later is None or earlier is None or pd.isna(later) or pd.isna(earlier):
        return None
    return int((pd.Timestamp(later).normalize() - pd.Timestamp(earlier).normalize()).days)


@dataclass
class _Existing:
    """An alert already recorded, as matching and the change check read it."""

    alert_id: str
    emerged_on: date
    last_week: date
    last_period_id: str
    weeks: int
    severity: str


def _existing(warehouse: Warehouse) -> dict[tuple[str, str, str], list[_Existing]]:
    """Recorded alerts by disease, org unit and rule, in table order (the first that
    overlaps an event keeps it)."""
    frame: pd.DataFrame = warehouse.fetch_arrow(
        "select alert_id, disease, org_unit_id, rule, last_period_id, emerged_on, weeks, "
        "severity from marts.alerts"
    ).to_pandas()
    found: dict[tuple[str, str, str], list[_Existing]] = {}
    columns: dict[str, list[Any]] = {name: frame[name].tolist() for name in frame.columns}
    for position, identifier in enumerate(columns["alert_id"]):
        emerged = columns["emerged_on"][position]
        last_period = str(columns["last_period_id"][position])
        key = (
            str(columns["disease"][position]),
            str(columns["org_unit_id"][position]),
            str(columns["rule"][position]),
        )
        found.setdefault(key, []).append(
            _Existing(
                alert_id=str(identifier),
                emerged_on=emerged if isinstance(emerged, date) else pd.Timestamp(emerged).date(),
                last_week=_week_start(last_period),
                last_period_id=last_period,
                weeks=int(columns["weeks"][position]),
                severity=str(columns["severity"][position]),
            )
        )
    return found


def _matching_alert(
    existing: dict[tuple[str, str, str], list[_Existing]], event: Event
) -> _Existing | None:
    """An existing alert of the same disease, org unit and rule whose weeks overlap or
    adjoin the event's keeps its id."""
    start = event.first["week_start_date"].date()
    end = event.last["week_start_date"].date()
    slack = timedelta(weeks=MAX_QUIET_WEEKS + 1)
    for alert in existing.get((event.disease, event.org_unit_id, event.rule.rule), ()):
        if alert.emerged_on <= end + slack and start <= alert.last_week + slack:
            return alert
    return None


@functools.lru_cache(maxsize=4096)
def _week_start(period_id: str) -> date:
    from pipelines.periods import parse_period

    return parse_period(period_id).start_date


@dataclass(frozen=True)
class AlertChanges:
    new: list[str]
    extended: list[str]


_UPDATE_COLUMNS = (
    ("alert_id", "text"),
    ("last_period_id", "text"),
    ("weeks", "integer"),
    ("total_cases", "double precision"),
    ("peak_cases", "double precision"),
    ("severity", "text"),
)
_UPDATES = "_healthpipe_alert_updates"


def record_alerts(
    warehouse: Warehouse, events: list[Event], *, run_id: str, now: datetime
) -> AlertChanges:
    """Insert new alerts and extend existing ones, in one transaction. An existing alert is
    rewritten only when its last week, length or severity changed (so a re-run with nothing
    new touches nothing), all of them in one statement."""
    existing = _existing(warehouse)
    new_rows: list[dict[str, Any]] = []
    extended: list[str] = []
    updates: dict[str, dict[str, Any]] = {}
    for event in events:
        first, last = event.first, event.last
        emerged = first["week_start_date"].date()
        detected = first["last_reported_at"]
        detected_at = (
            pd.Timestamp(detected).to_pydatetime()
            if detected is not None and not pd.isna(detected)
            else now
        )
        observed = event.weeks["observed"].fillna(0)
        values: dict[str, Any] = {
            "last_period_id": str(last["period_id"]),
            "weeks": len(event.weeks),
            "total_cases": float(observed.sum()),
            "peak_cases": float(observed.max()),
            "severity": event.severity,
        }
        matched = _matching_alert(existing, event)
        if matched is not None:
            extended.append(matched.alert_id)
            if (matched.last_period_id, matched.weeks, matched.severity) != (
                values["last_period_id"],
                values["weeks"],
                values["severity"],
            ):
                # a later event matching the same alert sees this one's change, as it would
                # one row update after another
                matched.last_period_id = values["last_period_id"]
                matched.weeks = values["weeks"]
                matched.severity = values["severity"]
                updates[matched.alert_id] = {"alert_id": matched.alert_id, **values}
            continue
        identifier = alert_id(
            event.disease, event.org_unit_id, event.rule.rule, str(first["period_id"])
        )
        new_rows.append(
            {
                "alert_id": identifier,
                "disease": event.disease,
                "org_unit_id": event.org_unit_id,
                "org_unit_level": event.org_unit_level,
                "period_id": str(first["period_id"]),
                "method": event.rule.label,
                "rule": event.rule.rule,
                "observed": _float(first["observed"]),
                "expected": _float(first["expected"]),
                "threshold": _float(first["threshold"]),
                **values,
                "status": "triggered",
                "emerged_on": emerged,
                "detected_at": detected_at,
                "days_to_detect": _days(detected_at, emerged),
                "created_at": now,
                "updated_at": now,
                "run_id": run_id,
            }
        )
    with warehouse.transaction():
        if updates:
            _update_alerts(warehouse, list(updates.values()), now=now, run_id=run_id)
        if new_rows:
            _insert_alerts(warehouse, new_rows)
            transitions = pa.table(
                {
                    "alert_id": [r["alert_id"] for r in new_rows],
                    "from_status": pa.array([None] * len(new_rows), pa.string()),
                    "to_status": ["triggered"] * len(new_rows),
                    "changed_at": pa.array([now] * len(new_rows), pa.timestamp("us")),
                    "actor": ["healthpipe"] * len(new_rows),
                    "note": [f"raised by rule {r['rule']} ({r['method']})" for r in new_rows],
                }
            )
            warehouse.load_arrow("audit.alert_transitions", transitions)
    return AlertChanges(new=[r["alert_id"] for r in new_rows], extended=extended)


def _update_alerts(
    warehouse: Warehouse, rows: list[dict[str, Any]], *, now: datetime, run_id: str
) -> None:
    types = {"weeks": pa.int32(), "total_cases": pa.float64(), "peak_cases": pa.float64()}
    warehouse.create_temp_table(_UPDATES, _UPDATE_COLUMNS)
    warehouse.load_arrow(
        _UPDATES,
        pa.table(
            {
                c: pa.array([r[c] for r in rows], types.get(c, pa.string()))
                for c, _ in _UPDATE_COLUMNS
            }
        ),
    )
    assigned = ", ".join(f"{column} = u.{column}" for column, _ in _UPDATE_COLUMNS[1:])
    warehouse.execute(
        f"update marts.alerts set {assigned}, updated_at = $now, run_id = $run "
        f"from {_UPDATES} as u where marts.alerts.alert_id = u.alert_id",
        {"now": now, "run": run_id},
    )
    warehouse.execute(f"drop table {_UPDATES}")


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(number) else number


def _insert_alerts(warehouse: Warehouse, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    types = {
        "org_unit_level": pa.int32(),
        "weeks": pa.int32(),
        "days_to_detect": pa.int32(),
        "observed": pa.float64(),
        "expected": pa.float64(),
        "threshold": pa.float64(),
        "total_cases": pa.float64(),
        "peak_cases": pa.float64(),
        "emerged_on": pa.date32(),
        "detected_at": pa.timestamp("us"),
        "created_at": pa.timestamp("us"),
        "updated_at": pa.timestamp("us"),
    }
    table = pa.table(
        {c: pa.array([r[c] for r in rows], types.get(c, pa.string())) for c in columns}
    )
    warehouse.load_arrow("marts.alerts", table)


class AlertError(ValueError):
    """An alert action that cannot be done (unknown alert, transition not allowed)."""


def set_status(
    warehouse: Warehouse,
    identifier: str,
    to_status: str,
    *,
    actor: str,
    note: str | None,
    now: datetime,
) -> str:
    """Move an alert along its lifecycle, recording who, when and why; returns the old status."""
    if to_status not in STATUSES:
        raise AlertError(f"unknown status {to_status!r} (one of {', '.join(STATUSES)})")
    rows = warehouse.fetchall(
        "select status, notified_at, responded_at from marts.alerts where alert_id = $id",
        {"id": identifier},
    )
    if not rows:
        raise AlertError(f"no alert {identifier!r} (see `healthpipe alerts list`)")
    current, notified_at, responded_at = rows[0]
    allowed = NEXT_STATUSES.get(str(current), ())
    if to_status not in allowed:
        raise AlertError(
            f"alert {identifier} is {current}; it can move to {', '.join(allowed) or 'nothing'}, "
            f"not {to_status}"
        )
    responded = responded_at
    if to_status == "responding" and responded_at is None:
        responded = now
    with warehouse.transaction():
        warehouse.execute(
            "update marts.alerts set status = $status, updated_at = $now, "
            "responded_at = $responded, "
            "closed_at = case when $status = 'closed' then $now else closed_at end, "
            "days_to_respond = $days where alert_id = $id",
            {
                "status": to_status,
                "now": now,
                "responded": responded,
                "days": _days(responded, notified_at) if responded is not None else None,
                "id": identifier,
            },
        )
        warehouse.execute(
            "insert into audit.alert_transitions (alert_id, from_status, to_status, changed_at, actor, note) "
            "values ($id, $from, $to, $now, $actor, $note)",
            {
                "id": identifier,
                "from": current,
                "to": to_status,
                "now": now,
                "actor": actor,
                "note": note,
            },
        )
    return str(current)
