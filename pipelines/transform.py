"""Running the dbt project (``dbt build``, ``dbt source freshness``) against the configured
warehouse.

dbt runs in-process through its programmatic runner, so dbt's start-up is paid once per
run, not per model. ``profiles.yml`` reads the warehouse from environment variables that
:meth:`pipelines.warehouse.Warehouse.dbt_env` derives from the one warehouse URL.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.errors import TransformError
from pipelines.paths import DBT_PROJECT_DIR

log = logging.getLogger(__name__)


NodeCallback = Callable[[str, int, int], None]
"""Called as dbt finishes each node with (unique id, nodes finished, nodes selected)."""


@dataclass(frozen=True)
class NodeRun:
    """One dbt node's result in an invocation: where a slow build's time went."""

    unique_id: str
    status: str  # dbt's: success, pass, warn, fail, error, skipped
    seconds: float  # dbt's execution time of the node
    message: str = ""


@dataclass
class DbtOutcome:
    command: str
    succeeded: int = 0
    failed: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    skipped: int = 0
    nodes: list[NodeRun] = field(default_factory=list)

    def combined(self, later: DbtOutcome) -> DbtOutcome:
        """This build and a later one of the same run, counted together."""
        return DbtOutcome(
            command=self.command,
            succeeded=self.succeeded + later.succeeded,
            failed=[*self.failed, *later.failed],
            warned=[*self.warned, *later.warned],
            skipped=self.skipped + later.skipped,
            nodes=[*self.nodes, *later.nodes],
        )


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def list_nodes(args: Sequence[str], *, dbt_env: Mapping[str, str], state_dir: Path) -> set[str]:
    """The unique ids ``dbt ls`` selects with ``args`` (selectors, ``--indirect-selection``)."""
    result, _, _ = _invoke(
        ["ls", "--output", "json", "--output-keys", "unique_id", *args],
        dbt_env=dbt_env,
        state_dir=state_dir,
        quiet=True,
    )
    if not result.success:
        raise TransformError(f"dbt ls {' '.join(args)} failed: {result.exception}")
    return {json.loads(line)["unique_id"] for line in result.result}


@dataclass(frozen=True)
class FreshnessResult:
    """One raw table's ``dbt source freshness`` outcome."""

    source: str  # the dbt source: the source type (dhis2, fhir ...)
    table: str  # the raw table, schema-qualified
    status: str  # pass | warn | error | runtime error
    max_loaded_at: datetime | None
    age_seconds: float | None
    message: str = ""


def run_dbt(
    args: Sequence[str],
    *,
    dbt_env: Mapping[str, str],
    state_dir: Path,
    quiet: bool = True,
    on_node: NodeCallback | None = None,
    variables: Mapping[str, Any] | None = None,
) -> DbtOutcome:
    """Invoke dbt with ``args`` (for example ``["build"]``) and report per-node results.

    Target and log folders live under ``state_dir/dbt/<target>`` so runs against different
    warehouses never share dbt's partial-parse state. ``variables`` go to ``--vars``: give
    every invocation on one state_dir the same ones, since dbt parses the whole project
    again (seconds) whenever they differ from the previous invocation's.
    """
    result, target, work = _invoke(
        args,
        dbt_env=dbt_env,
        state_dir=state_dir,
        quiet=quiet,
        on_node=on_node,
        variables=variables,
    )
    outcome = DbtOutcome(command=" ".join(args))
    for node in _node_results(result.result):
        status = str(getattr(node, "status", "")).lower()
        name = getattr(getattr(node, "node", None), "unique_id", "?")
        lines = (getattr(node, "message", "") or "").strip().splitlines()
        first_line = lines[0] if lines else ""
        seconds = float(getattr(node, "execution_time", 0.0) or 0.0)
        outcome.nodes.append(NodeRun(name, status, seconds, first_line))
        if status in ("success", "pass"):
            outcome.succeeded += 1
        elif status == "warn":
            outcome.warned.append(name)
        elif status == "skipped":
            outcome.skipped += 1
        else:
            outcome.failed.append(f"{name}: {first_line or status}")
    if not result.success or outcome.failed:
        first = outcome.failed[0] if outcome.failed else _first_line(result.exception)
        more = f" (and {len(outcome.failed) - 1} more)" if len(outcome.failed) > 1 else ""
        raise TransformError(
            f"dbt {' '.join(args)} failed on {target}: {first}{more}; "
            f"full log: {work / 'logs' / 'dbt.log'}",
            nodes=outcome.nodes,
        )
    return outcome


def source_freshness(
    sources: Sequence[str],
    *,
    dbt_env: Mapping[str, str],
    state_dir: Path,
    variables: Mapping[str, Any] | None = None,
) -> list[FreshnessResult]:
    """``dbt source freshness`` on the raw tables of the given dbt sources (source types).

    A stale table is a finding, not a failure of the run: every table's status comes back
    (``warn`` or ``error`` past the thresholds in the sources' YAML). Only a dbt that cannot
    run at all (the project does not parse, the warehouse is unreachable) raises.
    """
    if not sources:
        return []
    select = ["--select", *(f"source:{name}" for name in sorted(set(sources)))]
    result, target, work = _invoke(
        ["source", "freshness", *select],
        dbt_env=dbt_env,
        state_dir=state_dir,
        quiet=True,
        variables=variables,
    )
    if result.exception is not None:
        raise TransformError(
            f"dbt source freshness failed on {target}: {_first_line(result.exception)}; "
            f"full log: {work / 'logs' / 'dbt.log'}"
        )
    results = []
    for node_result in _node_results(result.result):
        node = getattr(node_result, "node", None)
        age = getattr(node_result, "age", None)
        results.append(
            FreshnessResult(
                source=str(getattr(node, "source_name", "?")),
                table=f"{getattr(node, 'schema', '?')}.{getattr(node, 'identifier', '?')}",
                status=str(getattr(node_result, "status", "")).lower(),
                max_loaded_at=getattr(node_result, "max_loaded_at", None),
                age_seconds=float(age) if age is not None else None,
                message=(getattr(node_result, "message", "") or "").strip(),
            )
        )
    return results


def _invoke(
    args: Sequence[str],
    *,
    dbt_env: Mapping[str, str],
    state_dir: Path,
    quiet: bool,
    on_node: NodeCallback | None = None,
    variables: Mapping[str, Any] | None = None,
) -> tuple[Any, str, Path]:
    from dbt.cli.main import dbtRunner

    target = dbt_env.get("HEALTHPIPE_DBT_TARGET", "duckdb")
    work = state_dir / "dbt" / target
    work.mkdir(parents=True, exist_ok=True)
    command = [
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
    ]
    if variables is not None:
        command += ["--vars", json.dumps(dict(variables), sort_keys=True)]
    if quiet:
        command.insert(0, "--quiet")
    env = {**dbt_env, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    log.info("dbt %s on %s", " ".join(args), target)
    with _environment(env):
        try:
            callbacks = [] if on_node is None else [_node_progress(on_node)]
            result = dbtRunner(callbacks=callbacks).invoke(command)
        finally:
            _release_duckdb(target)
    return result, target, work


def _node_progress(on_node: NodeCallback) -> Callable[[Any], None]:
    """A dbt event callback: dbt announces how many nodes it will run (ConcurrencyLine),
    then each one as it finishes (NodeFinished)."""
    state = {"done": 0, "total": 0}

    def callback(event: Any) -> None:
        name = event.info.name
        if name == "ConcurrencyLine":
            state["total"] = int(getattr(event.data, "node_count", 0) or 0)
        elif name == "NodeFinished":
            state["done"] += 1
            unique_id = str(getattr(event.data.node_info, "unique_id", ""))
            on_node(unique_id, state["done"], max(state["total"], state["done"]))

    return callback


def _release_duckdb(target: str) -> None:
    """dbt-duckdb keeps its database open in-process after a run; close it so another
    process (the next CLI command, an Airflow task) can open the single-writer file."""
    if target != "duckdb":
        return
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()  # type: ignore[no-untyped-call]


def _node_results(result: Any) -> list[Any]:
    return list(getattr(result, "results", None) or [])


def _first_line(exception: BaseException | None) -> str:
    if exception is None:
        return "no result"
    text = str(exception).strip()
    return text.splitlines()[0] if text else type(exception).__name__
