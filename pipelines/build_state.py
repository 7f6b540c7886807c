"""Skip ``dbt build`` when nothing it reads has changed since the last successful build.

A scheduled incremental run usually finds nothing new (the overlap window re-reads a few
records that land unchanged). Rebuilding every mart then costs the better part of a minute
for the same tables, so the run compares a fingerprint of everything the models read with
the one recorded after the last successful build:

- the alert records (their count, latest update and notification);
- every raw table's row count, latest landing and latest validation (a landed change, a
  tombstone, a quarantine release all move one of them; an unchanged re-landing moves none:
  landing updates a row only when its content hash changed);
- the dbt project (models, macros, seeds, tests, dbt_project.yml), the indicator and
  derived-data-element files, and the dbt environment (target, variables);
so a changed model file or indicator YAML rebuilds as surely as new data does.

The fingerprint has two parts (:class:`Fingerprint`): what the build before the alerts reads
(everything but the alert records) and the whole. When only the alert records changed (an
alert acknowledged or closed, a notification sent), a run builds only the models after the
alerts (``pipelines.run``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.paths import DBT_PROJECT_DIR
from pipelines.warehouse import Warehouse

PROJECT_PARTS = ("models", "macros", "seeds", "data-tests", "dbt_project.yml")
WATCHED_SCHEMAS = ("raw",)
"""Schemas whose tables the dbt models read."""
WATCHED_TABLES = (("marts", "alerts"),)
"""Tables outside them that the models read (the 7-1-7 timeliness of alerts)."""
STATE_DDL = (
    """create table if not exists audit.build_state (
    fingerprint text not null,
    run_id text not null,
    built_at timestamp not null,
    before_alerts text
)""",
    # warehouses built before the fingerprint had two parts
    "alter table audit.build_state add column if not exists before_alerts text",
)


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            )
        elif path.is_file():
            found.append(path)
    return found


def _table_stats(warehouse: Warehouse) -> list[tuple[bool, str]]:
    """One line per table the models read, flagged True for the alert records."""
    schemas = ", ".join(f"'{schema}'" for schema in WATCHED_SCHEMAS)
    watched = " or ".join(
        f"(t.table_schema = '{schema}' and t.table_name = '{name}')"
        for schema, name in WATCHED_TABLES
    )
    tables = warehouse.fetchall(
        "select t.table_schema, t.table_name, count(c.column_name) "
        "from information_schema.tables as t left join information_schema.columns as c "
        "on c.table_schema = t.table_schema and c.table_name = t.table_name "
        "and c.column_name in ('landed_at', 'validated_at') "
        f"where (t.table_schema in ({schemas}) or {watched}) and t.table_type = 'BASE TABLE' "
        "group by 1, 2 order by 1, 2"
    )
    stats = []
    for schema, name, marks in tables:
        # landed raw tables carry their change marks; published definitions are summarised by
        # their size (their content is in the files hashed below); alerts by their updates
        if marks == 2:
            measures = "count(*), max(landed_at), max(validated_at)"
        elif (schema, name) in WATCHED_TABLES:
            measures = "count(*), max(updated_at), max(notified_at)"
        else:
            measures = "count(*)"
        row = warehouse.fetchall(f"select {measures} from {schema}.{name}")[0]
        line = f"{schema}.{name}:" + "|".join(str(value) for value in row)
        stats.append(((schema, name) in WATCHED_TABLES, line))
    return stats


@dataclass(frozen=True)
class Fingerprint:
    """What the models read: ``before_alerts`` all but the alert records, ``whole`` all."""

    before_alerts: str
    whole: str


def fingerprint(
    warehouse: Warehouse, indicator_paths: Iterable[Path], dbt_env: Mapping[str, str]
) -> Fingerprint:
    digest = hashlib.sha256()
    stats = _table_stats(warehouse)
    for _, line in (stat for stat in stats if not stat[0]):
        digest.update(line.encode() + b"\n")
    project = [DBT_PROJECT_DIR / part for part in PROJECT_PARTS]
    for path in _files([*project, *indicator_paths]):
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    for key in sorted(dbt_env):
        digest.update(f"{key}={dbt_env[key]}\n".encode())
    whole = digest.copy()
    for _, line in (stat for stat in stats if stat[0]):
        whole.update(line.encode() + b"\n")
    return Fingerprint(before_alerts=digest.hexdigest(), whole=whole.hexdigest())


def _ensure_table(warehouse: Warehouse) -> None:
    for statement in STATE_DDL:
        warehouse.execute(statement)


def last_fingerprint(warehouse: Warehouse) -> Fingerprint | None:
    """The fingerprint of the last successful build, if the marts it built still exist."""
    _ensure_table(warehouse)
    if not warehouse.table_exists("marts", "indicator_values"):
        return None
    rows = warehouse.fetchall(
        "select before_alerts, fingerprint from audit.build_state order by built_at desc limit 1"
    )
    if not rows:
        return None
    # a build recorded before the two parts existed matches no first part: built again once
    return Fingerprint(before_alerts=str(rows[0][0] or ""), whole=str(rows[0][1]))


def record_build(warehouse: Warehouse, value: Fingerprint, run_id: str, now: object) -> None:
    _ensure_table(warehouse)
    warehouse.execute(
        "insert into audit.build_state (fingerprint, before_alerts, run_id, built_at) "
        "values ($f, $before, $run, $now)",
        {"f": value.whole, "before": value.before_alerts, "run": run_id, "now": now},
    )
