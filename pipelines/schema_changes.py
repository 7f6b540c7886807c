"""``audit.schema_changes``: fields a source started sending that its raw table has no column
for (a new DHIS2 JSON field, an undeclared spreadsheet column).

Such fields are never dropped: connectors keep them in the raw row's ``extras`` JSON. What this
module adds is the report: the first batch of a source and raw table that carries a field not
recorded before writes one row per field (in the landing transaction, so a batch that rolls
back records nothing), and the run logs one warning per field once the batch is committed.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from connectors.base import Record
from pipelines.tables import RawTable
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewField:
    name: str
    records: int
    """Records of the batch that carried it."""


@dataclass(frozen=True)
class SchemaChange:
    """One row of ``audit.schema_changes``, as ``healthpipe status`` shows it."""

    raw_table: str
    field: str
    change: str
    records: int
    first_seen_run_id: str
    first_seen_at: str


def carried_fields(records: Iterable[Record]) -> Counter[str]:
    """How many records carry each ``extras`` key."""
    carried: Counter[str] = Counter()
    for record in records:
        text = record.get("extras")
        if not text:
            continue
        fields = json.loads(text)  # written by our connectors with json.dumps: always valid
        if isinstance(fields, dict):
            carried.update(fields.keys())
    return carried


def record_new_fields(
    warehouse: Warehouse,
    table: RawTable,
    source_name: str,
    records: Sequence[Record],
    *,
    run_id: str,
    batch_id: str,
    now: datetime,
) -> tuple[NewField, ...]:
    """Record the ``extras`` fields of ``records`` this source and table never carried before;
    return them. Call it inside the landing transaction."""
    carried = carried_fields(records)
    for name in table.documented_extras:  # part of the source's schema, not drift
        carried.pop(name, None)
    if not carried:
        return ()
    known = {
        str(row[0])
        for row in warehouse.fetchall(
            "select field from audit.schema_changes where source_name = $source "
            "and raw_table = $table and change = 'added'",
            {"source": source_name, "table": table.name},
        )
    }
    new = tuple(
        NewField(name, count) for name, count in sorted(carried.items()) if name not in known
    )
    for field in new:
        # `do nothing`: a concurrent lander (the MLLP listener beside a run) may have just
        # recorded the same field; the first sighting stays.
        warehouse.execute(
            "insert into audit.schema_changes (source_name, raw_table, field, change, "
            "first_seen_run_id, first_seen_batch_id, records, first_seen_at) values "
            "($source, $table, $field, 'added', $run, $batch, $records, $now) "
            "on conflict (source_name, raw_table, field, change) do nothing",
            {
                "source": source_name,
                "table": table.name,
                "field": field.name,
                "run": run_id,
                "batch": batch_id,
                "records": field.records,
                "now": now,
            },
        )
    return new


def warn_new_fields(source_name: str, entity: str, fields: Iterable[NewField]) -> None:
    """One warning per new field; call it once the batch that recorded them has committed."""
    for field in fields:
        log.warning(
            "%s %s: new field %r in %d record%s, kept in raw extras (audit.schema_changes)",
            source_name, entity, field.name, field.records, "" if field.records == 1 else "s",
        )  # fmt: skip


def schema_changes(warehouse: Warehouse, source_name: str) -> list[SchemaChange]:
    """Every change recorded for a source, oldest first."""
    return [
        SchemaChange(
            raw_table=str(table),
            field=str(field),
            change=str(change),
            records=int(records),
            first_seen_run_id=str(run_id),
            first_seen_at=seen.isoformat(sep=" ")[:19],
        )
        for table, field, change, records, run_id, seen in warehouse.fetchall(
            "select raw_table, field, change, records, first_seen_run_id, first_seen_at "
            "from audit.schema_changes where source_name = $source "
            "order by first_seen_at, raw_table, field",
            {"source": source_name},
        )
    ]
