"""What a scheduler needs from the pipeline besides the steps: how a source's ingest splits
into pulls, which pool serialises warehouse writers, and where a source's credentials come
from. The Airflow DAGs (``dags/``) call these; nothing here imports Airflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypedDict

from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError
from pipelines.window import Window

# DAG files import this module while they are parsed, so the warehouse, connectors and
# pandas are imported inside the functions that run in tasks.

DUCKDB_POOL = "healthpipe_duckdb"
"""DuckDB allows one writer per file: every task writing a DuckDB warehouse takes the one
slot of this pool (``make airflow`` creates it)."""
DEFAULT_POOL = "default_pool"
ORG_UNIT_CHUNK = 20
"""A DHIS2 API source listing more org-unit roots than this is pulled in chunks of this many,
one mapped task each, so a failed chunk retries alone."""


class Pull(TypedDict):
    """One mapped ingest task: a whole source, or one chunk of a DHIS2 org-unit list."""

    label: str
    org_units: list[str] | None


def warehouse_pool(warehouse_url: str) -> str:
    """The pool of tasks writing this warehouse: one slot for DuckDB, Airflow's default pool
    (tasks in parallel) for PostgreSQL."""
    return DUCKDB_POOL if warehouse_url.startswith("duckdb:") else DEFAULT_POOL


def plan_pulls(source: SourceConfig, chunk: int = ORG_UNIT_CHUNK) -> list[Pull]:
    if source.type == "dhis2" and source.base_url and len(source.org_units) > chunk:
        roots = source.org_units
        return [
            Pull(
                label=f"{source.name} org units {start + 1}-{min(start + chunk, len(roots))}",
                org_units=roots[start : start + chunk],
            )
            for start in range(0, len(roots), chunk)
        ]
    return [Pull(label=source.name, org_units=None)]


def chunk_cursor_key(source: SourceConfig, org_units: list[str]) -> str:
    """A chunk's cursor is keyed by its org units, so reordering chunks keeps each cursor."""
    from pipelines.sources import adapter_for

    digest = hashlib.sha256(",".join(sorted(org_units)).encode()).hexdigest()[:12]
    return f"{adapter_for(source.type).cursor_entity}:org_units:{digest}"


def ingest_pull(
    config: HealthpipeConfig,
    source_name: str,
    pull: Pull,
    *,
    run_id: str,
    window: Window | None = None,
) -> dict[str, int]:
    """Extract, land and validate one pull; returns records received per entity.

    With ``window``, only the periods overlapping those days are pulled and no cursor moves
    (see :func:`pipelines.run.ingest_source`)."""
    from pipelines.run import ingest_source, open_warehouse

    source = config.source(source_name)
    cursor_key = None
    if pull["org_units"] is not None:
        if source.type != "dhis2":
            raise ConfigError(
                f"source {source_name}: org-unit chunks apply to dhis2 sources, not {source.type}"
            )
        cursor_key = chunk_cursor_key(source, pull["org_units"])
        source = source.model_copy(update={"org_units": pull["org_units"]})
    with open_warehouse(config) as warehouse:
        summary = ingest_source(
            warehouse, source, config, run_id=run_id, cursor_key=cursor_key, window=window
        )
    return {entity: counts.received for entity, counts in summary.entities.items()}


BACKFILL_RUN_TYPE = "backfill"
"""Airflow 3's ``DagRun.run_type`` for runs made by ``airflow backfill create`` or the
backfill REST API."""
WINDOW_PARAM = "window"
"""A DAG run parameter: ``FIRST/LAST`` dates to pull, or ``interval`` for the run's own data
interval."""


def run_window(
    run_type: str,
    window_param: str | None,
    interval_start: datetime | None,
    interval_end: datetime | None,
) -> Window | None:
    """What a DAG run pulls: its data interval when it is a backfill or asks for
    ``window=interval``, the dates ``window=FIRST/LAST`` names, or (None) everything new
    since the cursor, as a scheduled run does."""
    param = (window_param or "").strip()
    if param and param != "interval":
        return Window.parse(param)
    if not param and run_type != BACKFILL_RUN_TYPE:
        return None
    if interval_start is None or interval_end is None:
        raise ConfigError(
            f"a {run_type} run asked to pull its data interval, but it has none "
            f"(pass {WINDOW_PARAM}=FIRST/LAST dates instead)"
        )
    return Window.of_interval(interval_start, interval_end)


ConnectionLookup = Callable[[str], Mapping[str, Any] | None]
"""Given a connection id, its ``login`` and ``password`` (or None when there is none)."""


def connection_id(source_name: str) -> str:
    return f"healthpipe_{source_name}"


def source_credentials(
    source: SourceConfig, env: Mapping[str, str], lookup: ConnectionLookup
) -> dict[str, str]:
    """The values of the environment variables the source's config names, each from the
    environment or else from the connection ``healthpipe_<source>`` (login for
    ``username_env``; password for ``password_env`` or ``token_env``).

    A missing value is left out: the connector then stops with an error naming the variable.
    """
    names = source.credential_env_names()
    values = {name: env[name] for name in names.values() if env.get(name)}
    if len(values) == len(names):
        return values
    connection = lookup(connection_id(source.name)) or {}
    field_of = {"username_env": "login", "password_env": "password", "token_env": "password"}
    for key, name in names.items():
        value = connection.get(field_of[key])
        if name not in values and value:
            values[name] = str(value)
    return values
