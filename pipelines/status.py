"""``healthpipe status``: is each source being pulled on time, what did its last run land,
what is held in quarantine, and which alerts are open.

Read from ``audit.pipeline_runs`` (every run records an ``extract`` step per source, even
when nothing was new), ``audit.quarantine``, ``audit.schema_changes`` and ``marts.alerts``.
Freshness compares the time since the last successful pull with the source's optional
``schedule``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipelines.config import HealthpipeConfig
from pipelines.schedules import schedule_interval
from pipelines.schema_changes import SchemaChange, schema_changes
from pipelines.warehouse import Warehouse, parse_warehouse_url

GRACE = 1.5
"""A pull is ``fresh`` up to 1.5 schedule intervals after the last success (runs take
time and schedulers queue), ``late`` up to 3, ``stale`` after that."""
STALE = 3.0


@dataclass
class SourceStatus:
    name: str
    type: str
    schedule: str | None
    last_success_at: str | None
    age_hours: float | None
    freshness: str
    """fresh | late | stale | never (no successful pull) | unscheduled."""
    last_run_id: str | None
    received: int
    landed: int
    quarantined: int
    held_in_quarantine: int
    last_error: str | None = None
    schema_changes: list[SchemaChange] = field(default_factory=list)
    """Fields the source started sending that raw has no column for (kept in ``extras``)."""


@dataclass
class StatusReport:
    warehouse: str
    checked_at: str
    sources: list[SourceStatus] = field(default_factory=list)
    open_alerts: dict[str, int] = field(default_factory=dict)
    """Open alerts (not closed or discarded) per disease."""
    open_alerts_total: int = 0
    last_transform_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _freshness(age: timedelta | None, interval: timedelta | None) -> str:
    if age is None:
        return "never"
    if interval is None:
        return "unscheduled"
    if age <= interval * GRACE:
        return "fresh"
    return "late" if age <= interval * STALE else "stale"


def source_status(
    warehouse: Warehouse, config: HealthpipeConfig, now: datetime
) -> list[SourceStatus]:
    statuses = []
    for source in config.sources:
        interval = schedule_interval(source.schedule) if source.schedule else None
        last = warehouse.fetchall(
            "select run_id, finished_at from audit.pipeline_runs where step = 'extract' "
            "and source = $source and status = 'success' order by finished_at desc limit 1",
            {"source": source.name},
        )
        run_id, finished = (str(last[0][0]), last[0][1]) if last else (None, None)
        received = landed = quarantined = 0
        if run_id is not None:
            totals = warehouse.fetchall(
                "select coalesce(sum(rows_in), 0), coalesce(sum(rows_out), 0), "
                "coalesce(sum(rows_quarantined), 0) from audit.pipeline_runs "
                "where run_id = $run and source = $source and step = 'reconcile'",
                {"run": run_id, "source": source.name},
            )[0]
            received, landed, quarantined = (int(v) for v in totals)
        failure = warehouse.fetchall(
            "select message, started_at from audit.pipeline_runs where source = $source "
            "and step = 'extract' and status = 'failed' order by started_at desc limit 1",
            {"source": source.name},
        )
        last_error = None
        if failure and (finished is None or failure[0][1] > finished):
            last_error = str(failure[0][0] or "failed")
        held = warehouse.fetch_scalar(
            "select count(*) from audit.quarantine where source_name = $source "
            "and released_at is null",
            {"source": source.name},
        )
        age = now - finished if finished is not None else None
        statuses.append(
            SourceStatus(
                name=source.name,
                type=str(source.type),
                schedule=source.schedule,
                last_success_at=None if finished is None else finished.isoformat(sep=" ")[:19],
                age_hours=None if age is None else round(age.total_seconds() / 3600, 2),
                freshness=_freshness(age, interval),
                last_run_id=run_id,
                received=received,
                landed=landed,
                quarantined=quarantined,
                held_in_quarantine=int(held or 0),
                last_error=last_error,
                schema_changes=schema_changes(warehouse, source.name),
            )
        )
    return statuses


def pipeline_status(warehouse: Warehouse, config: HealthpipeConfig, now: datetime) -> StatusReport:
    """Everything ``healthpipe status`` prints. ``now`` is naive UTC, like the audit
    timestamps."""
    report = StatusReport(
        warehouse=parse_warehouse_url(config.warehouse).redacted(),
        checked_at=now.isoformat(sep=" ")[:19],
        sources=source_status(warehouse, config, now),
    )
    if warehouse.table_exists("marts", "alerts"):
        report.open_alerts = {
            str(disease): int(count)
            for disease, count in warehouse.fetchall(
                "select disease, count(*) from marts.alerts "
                "where status not in ('closed', 'discarded') group by disease order by 2 desc, 1"
            )
        }
        report.open_alerts_total = sum(report.open_alerts.values())
    transform = warehouse.fetchall(
        "select max(finished_at) from audit.pipeline_runs "
        "where step = 'transform' and status = 'success'"
    )
    if transform and transform[0][0] is not None:
        report.last_transform_at = transform[0][0].isoformat(sep=" ")[:19]
    return report
