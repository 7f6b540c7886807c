"""``audit.pipeline_runs`` and ``audit.source_state``: what ran, when, with how many rows,
and where each source's cursor stands."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.warehouse import Warehouse

if TYPE_CHECKING:
    from pipelines.transform import NodeRun


def utc_now() -> datetime:
    """Naive UTC: every timestamp in the warehouse is UTC without a zone."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_run_id() -> str:
    return utc_now().strftime("run_%Y%m%dT%H%M%SZ_") + uuid.uuid4().hex[:8]


@dataclass
class Step:
    """Counters a step fills in while it runs; written when the step ends."""

    step_id: str
    rows_in: int | None = None
    rows_out: int | None = None
    rows_quarantined: int | None = None
    rows_duplicate: int | None = None
    message: str | None = None


def start_step(
    warehouse: Warehouse,
    run_id: str,
    step: str,
    *,
    source: str | None = None,
    entity: str | None = None,
    batch_id: str | None = None,
) -> Step:
    """Write a ``running`` row for a step and return its counters."""
    current = Step(step_id=uuid.uuid4().hex)
    warehouse.execute(
        "insert into audit.pipeline_runs (step_id, run_id, step, source, entity, batch_id, "
        "started_at, status) values ($id, $run, $step, $source, $entity, $batch, $now, 'running')",
        {
            "id": current.step_id,
            "run": run_id,
            "step": step,
            "source": source,
            "entity": entity,
            "batch": batch_id,
            "now": utc_now(),
        },
    )
    return current


def record_node_runs(
    warehouse: Warehouse, current: Step, run_id: str, nodes: Sequence[NodeRun]
) -> None:
    """One ``audit.dbt_node_runs`` row per dbt node a transform step ran."""
    if not nodes:
        return
    warehouse.load_arrow(
        "audit.dbt_node_runs",
        pa.table(
            {
                "step_id": pa.array([current.step_id] * len(nodes), pa.string()),
                "run_id": pa.array([run_id] * len(nodes), pa.string()),
                "unique_id": pa.array([n.unique_id for n in nodes], pa.string()),
                "status": pa.array([n.status for n in nodes], pa.string()),
                "seconds": pa.array([n.seconds for n in nodes], pa.float64()),
                "message": pa.array([n.message or None for n in nodes], pa.string()),
            }
        ),
    )


def finish_step(warehouse: Warehouse, current: Step, status: str) -> None:
    warehouse.execute(
        "update audit.pipeline_runs set finished_at = $now, status = $status, "
        "rows_in = $rows_in, rows_out = $rows_out, rows_quarantined = $quarantined, "
        "rows_duplicate = $duplicate, message = $message where step_id = $id",
        {
            "now": utc_now(),
            "status": status,
            "rows_in": current.rows_in,
            "rows_out": current.rows_out,
            "quarantined": current.rows_quarantined,
            "duplicate": current.rows_duplicate,
            "message": current.message,
            "id": current.step_id,
        },
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def record_step(
    warehouse: Warehouse,
    run_id: str,
    step: str,
    *,
    source: str | None = None,
    entity: str | None = None,
    batch_id: str | None = None,
) -> Iterator[Step]:
    """Write a ``running`` row now and ``success`` or ``failed`` (with the error's first
    line) when the block ends, so a crashed step is visible as a row stuck in running."""
    current = start_step(warehouse, run_id, step, source=source, entity=entity, batch_id=batch_id)
    try:
        yield current
    except BaseException as exc:
        current.message = first_line(exc)
        finish_step(warehouse, current, "failed")
        raise
    finish_step(warehouse, current, "success")


def load_cursor(warehouse: Warehouse, source_name: str, entity: str) -> dict[str, Any] | None:
    text = warehouse.fetch_scalar(
        "select cursor from audit.source_state where source_name = $source and entity = $entity",
        {"source": source_name, "entity": entity},
    )
    return json.loads(text) if text else None


def save_cursor(
    warehouse: Warehouse, source_name: str, entity: str, cursor: dict[str, Any], run_id: str
) -> None:
    warehouse.execute(
        "insert into audit.source_state (source_name, entity, cursor, run_id, updated_at) "
        "values ($source, $entity, $cursor, $run, $now) on conflict (source_name, entity) "
        "do update set cursor = excluded.cursor, run_id = excluded.run_id, "
        "updated_at = excluded.updated_at",
        {
            "source": source_name,
            "entity": entity,
            "cursor": json.dumps(cursor, sort_keys=True),
            "run": run_id,
            "now": utc_now(),
        },
    )
