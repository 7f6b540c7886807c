"""Landing: connector pages into ``raw.<type>__<entity>``, as an idempotent upsert.

A page lands all or nothing, in one transaction:
- records without a complete natural key cannot be upserted; they go to quarantine;
- records repeated within the page collapse to the last one (and are counted);
- a record whose content hash is unchanged is left alone, so re-landing changes nothing;
- a new or changed record is written with ``validation_status = 'pending'`` and is not
  published by the staging models until :mod:`pipelines.validate` has passed it;
- a deleted record (DHIS2 ``deleted: true``) is kept as a tombstone (``is_deleted``);
- a field the raw table has no column for (in ``extras``) that this source never sent before
  is recorded in ``audit.schema_changes`` (:mod:`pipelines.schema_changes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from connectors.base import Record
from pipelines.quarantine import (
    QuarantinedRecord,
    content_hash,
    quarantine_records,
    record_json,
    record_key,
)
from pipelines.schema_changes import NewField, record_new_fields
from pipelines.tables import RawTable
from pipelines.warehouse import Warehouse

_INCOMING = "_healthpipe_incoming"
_BATCH = "_healthpipe_batch"
_NULL_MARK = "chr(30)"
_SEPARATOR = "chr(31)"


@dataclass(frozen=True)
class LandResult:
    raw_table: str
    received: int
    inserted: int
    updated: int
    unchanged: int
    duplicates: int
    quarantined: int
    new_fields: tuple[NewField, ...] = ()
    """Fields first seen in this batch (recorded in ``audit.schema_changes``); the caller
    warns about them once the batch has committed (``warn_new_fields``)."""

    @property
    def landed(self) -> int:
        """Records now in raw from this page: new, changed and unchanged (re-sent) ones."""
        return self.inserted + self.updated + self.unchanged


def _arrow_type(sql_type: str) -> pa.DataType:
    return pa.bool_() if sql_type.startswith("boolean") else pa.string()


def _to_arrow(table: RawTable, records: Sequence[Record]) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name, sql_type in table.columns:
        columns[name] = pa.array([r.get(name) for r in records], _arrow_type(sql_type))
    columns["extras"] = pa.array([r.get("extras") for r in records], pa.string())
    columns["is_deleted"] = pa.array([bool(r.get("deleted")) for r in records], pa.bool_())
    columns["_ord"] = pa.array(range(len(records)), pa.int64())
    return pa.table(columns)


def _hash_expression(table: RawTable) -> str:
    parts = [
        f"coalesce(cast({name} as text), {_NULL_MARK})"
        for name in (*table.entity_columns, "extras", "is_deleted")
    ]
    return f"md5(concat_ws({_SEPARATOR}, {', '.join(parts)}))"


def land_records(
    warehouse: Warehouse,
    table: RawTable,
    source_name: str,
    records: Sequence[Record],
    *,
    run_id: str,
    batch_id: str,
    extracted_at: datetime,
    now: datetime,
) -> LandResult:
    """Upsert one page of records into ``table``; see the module docstring."""
    keyless = [r for r in records if any(r.get(k) in (None, "") for k in table.key)]
    keyed = [r for r in records if not any(r.get(k) in (None, "") for k in table.key)]

    incoming_columns = [*table.columns, ("extras", "text"), ("is_deleted", "boolean")]
    key_match = " and ".join(f"r.{k} = b.{k}" for k in table.key)
    partition = ", ".join(table.key)
    entity_cols = [*table.entity_columns, "extras", "is_deleted"]
    insert_cols = [
        *entity_cols,
        "source_name",
        "record_hash",
        "batch_id",
        "extracted_at",
        "landed_at",
        "validation_status",
        "validated_at",
    ]
    update_cols = [c for c in insert_cols if c not in table.key and c != "source_name"]
    conflict = ", ".join(table.full_key)
    params: dict[str, Any] = {
        "source": source_name,
        "batch": batch_id,
        "extracted": extracted_at,
        "landed": now,
    }

    with warehouse.transaction():
        quarantine_records(
            warehouse,
            [_missing_key(table, source_name, r) for r in keyless],
            run_id=run_id,
            batch_id=batch_id,
            now=now,
        )
        new_fields = record_new_fields(
            warehouse, table, source_name, keyed, run_id=run_id, batch_id=batch_id, now=now
        )
        warehouse.create_temp_table(_INCOMING, [*incoming_columns, ("_ord", "bigint")])
        warehouse.load_arrow(_INCOMING, _to_arrow(table, keyed))
        warehouse.execute(f"drop table if exists {_BATCH}")
        warehouse.execute(
            f"create temporary table {_BATCH} as "
            f"select {', '.join(entity_cols)}, {_hash_expression(table)} as record_hash "
            f"from (select *, row_number() over (partition by {partition} order by _ord desc) "
            f"as _rank from {_INCOMING}) ranked where _rank = 1"
        )
        distinct = warehouse.row_count(_BATCH)
        _add_year_partitions(warehouse, table)
        inserted, updated = warehouse.fetchall(
            "select count(*) filter (where r.source_name is null), "
            "count(*) filter (where r.source_name is not null "
            "and r.record_hash <> b.record_hash) "
            f"from {_BATCH} b left join {table.qualified_name} r "
            f"on r.source_name = $source and {key_match}",
            {"source": source_name},
        )[0]
        select_list = ", ".join(
            [
                *entity_cols,
                "$source",
                "record_hash",
                "$batch",
                "$extracted",
                "$landed",
                "'pending'",
                "cast(null as timestamp)",
            ]
        )
        warehouse.execute(
            f"insert into {table.qualified_name} as existing ({', '.join(insert_cols)}) "
            f"select {select_list} from {_BATCH} "
            f"on conflict ({conflict}) do update set "
            + ", ".join(f"{c} = excluded.{c}" for c in update_cols)
            + " where existing.record_hash <> excluded.record_hash",
            params,
        )
        warehouse.execute(f"drop table {_INCOMING}")
        warehouse.execute(f"drop table {_BATCH}")

    return LandResult(
        raw_table=table.name,
        received=len(records),
        inserted=int(inserted),
        updated=int(updated),
        unchanged=distinct - int(inserted) - int(updated),
        duplicates=len(keyed) - distinct,
        quarantined=len(keyless),
        new_fields=new_fields,
    )


def _add_year_partitions(warehouse: Warehouse, table: RawTable) -> None:
    """On a table partitioned by period year (PostgreSQL), a partition for every year of the
    batch that has none yet, before its rows arrive: a year's rows left in the default
    partition would forbid that year's partition later. Creations are serialised (two
    batches of a new year may land at once); ids not starting with a year go to default."""
    if not table.partitioned_on(warehouse.kind) or not warehouse.is_partitioned("raw", table.name):
        return
    years = warehouse.fetchall(
        f"select distinct cast(substr({table.period_column}, 1, 4) as integer) from {_BATCH} "
        f"where {table.period_column} ~ '^[0-9]{{4}}' order by 1"
    )
    if not years:
        return
    warehouse.execute(
        "select pg_advisory_xact_lock(hashtext($name))", {"name": f"partitions {table.name}"}
    )
    for (year,) in years:
        warehouse.execute(table.year_partition_ddl(year))


def _missing_key(table: RawTable, source_name: str, record: Record) -> QuarantinedRecord:
    missing = [k for k in table.key if record.get(k) in (None, "")]
    return QuarantinedRecord(
        source_name=source_name,
        raw_table=table.name,
        record_key=record_key(record, table.key),
        record_hash=content_hash(record),
        rule="natural_key_present",
        field=", ".join(missing),
        severity="quarantine",
        reason=f"missing {', '.join(missing)}: the record cannot be identified, so it "
        f"cannot be landed in {table.qualified_name}",
        record_json=record_json(record),
    )
