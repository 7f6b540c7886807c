"""``audit.quarantine``: every rejected record, kept whole, with the rule and a readable reason."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from pipelines.tables import RawTable
from pipelines.warehouse import Warehouse

KEY_SEPARATOR = "|"

_QUARANTINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("source_name", "text"),
    ("raw_table", "text"),
    ("record_key", "text"),
    ("record_hash", "text"),
    ("rule", "text"),
    ("field", "text"),
    ("severity", "text"),
    ("reason", "text"),
    ("record_json", "text"),
    ("run_id", "text"),
    ("batch_id", "text"),
    ("quarantined_at", "timestamp"),
)


@dataclass(frozen=True)
class QuarantinedRecord:
    source_name: str
    raw_table: str
    record_key: str
    record_hash: str
    rule: str
    field: str | None
    severity: str
    reason: str
    record_json: str


def record_key(record: Mapping[str, Any], key_columns: Sequence[str]) -> str:
    """The natural key as one string (missing parts shown as empty)."""
    return KEY_SEPARATOR.join("" if record.get(c) is None else str(record[c]) for c in key_columns)


def record_key_sql(table: RawTable, alias: str) -> str:
    """SQL for :func:`record_key` over a raw table's key columns (same text as Python's)."""
    parts = [f"coalesce(cast({alias}.{column} as varchar), '')" for column in table.key]
    return f"concat_ws('{KEY_SEPARATOR}', {', '.join(parts)})"


def record_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))


def content_hash(record: Mapping[str, Any]) -> str:
    return hashlib.md5(record_json(record).encode("utf-8"), usedforsecurity=False).hexdigest()


def quarantine_records(
    warehouse: Warehouse,
    records: Sequence[QuarantinedRecord],
    *,
    run_id: str,
    batch_id: str,
    now: datetime,
) -> int:
    """Insert records into ``audit.quarantine``; the same record failing the same rule again
    (a re-run) is kept once. Returns how many new entries were written."""
    if not records:
        return 0
    columns = [name for name, _ in _QUARANTINE_COLUMNS]
    data = pa.table(
        {
            **{
                name: [getattr(r, name) for r in records]
                for name in columns
                if name not in ("run_id", "batch_id", "quarantined_at")
            },
            "run_id": [run_id] * len(records),
            "batch_id": [batch_id] * len(records),
            "quarantined_at": pa.array([now] * len(records), pa.timestamp("us")),
        }
    )
    with warehouse.transaction():
        warehouse.create_temp_table("_healthpipe_quarantine", _QUARANTINE_COLUMNS)
        warehouse.load_arrow("_healthpipe_quarantine", data.select(columns))
        before = warehouse.row_count("audit.quarantine")
        column_list = ", ".join(columns)
        warehouse.execute(
            f"insert into audit.quarantine ({column_list}) "
            f"select distinct {column_list} from _healthpipe_quarantine "
            "on conflict (source_name, raw_table, record_key, record_hash, rule) do nothing"
        )
        added = warehouse.row_count("audit.quarantine") - before
        warehouse.execute("drop table _healthpipe_quarantine")
    return added


@dataclass(frozen=True)
class QuarantineGroup:
    source_name: str
    raw_table: str
    rule: str
    field: str | None
    records: int
    example: str
    first_at: datetime
    last_at: datetime


def open_quarantine(warehouse: Warehouse, source_name: str | None = None) -> list[QuarantineGroup]:
    """Records still held back, grouped by source, table and rule, with an example reason."""
    where = "released_at is null" + (" and source_name = $source" if source_name else "")
    rows = warehouse.fetchall(
        "select source_name, raw_table, rule, field, count(*), min(reason), "
        "min(quarantined_at), max(quarantined_at) from audit.quarantine "
        f"where {where} group by source_name, raw_table, rule, field "
        "order by source_name, raw_table, count(*) desc, rule",
        {"source": source_name} if source_name else None,
    )
    return [QuarantineGroup(*row) for row in rows]
