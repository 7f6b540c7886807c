"""`healthpipe run` as a subprocess that can be killed, and the checks made after a kill:
the saved cursor is never ahead of committed data, and a completed run holds exactly what
the source files hold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.audit import load_cursor
from pipelines.config import HealthpipeConfig, load_config
from pipelines.privacy import Pseudonymiser
from pipelines.sources import adapter_for, raw_table
from pipelines.warehouse import Warehouse
from tests.reliability.conftest import PSEUDONYM_KEY

FILE_SOURCES = (
    ("hmis", "dhis2", "dhis2"),
    ("lab", "hl7v2", "hl7"),
    ("stock", "tabular", "tabular"),
)


def write_config(folder: Path, country: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"warehouse: duckdb:///{folder / 'warehouse.duckdb'}",
        f"state_dir: {folder / 'state'}",
        "sources:",
    ]
    for name, kind, sub in FILE_SOURCES:
        # small pages and landing batches, so a run has many commits for a kill to fall between
        lines.append(
            f"  - {{name: {name}, type: {kind}, path: {country / sub}, page_size: 100, "
            "landing_batch: 20000}"
        )
    path = folder / "healthpipe.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHPIPE_")}
    env.update(
        HEALTHPIPE_PSEUDONYM_KEY=PSEUDONYM_KEY,
        # the phase of a kill is read from the output: nothing may sit in a buffer
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@dataclass
class Outcome:
    returncode: int
    seconds: float
    output: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def run_healthpipe(
    config_file: Path,
    *,
    kill_after: float | None = None,
    failpoint: str | None = None,
    full_refresh: bool = False,
    timeout: float = 600,
) -> Outcome:
    """Run the CLI; SIGKILL it ``kill_after`` seconds in (if it is still running)."""
    log = config_file.parent / f"run-{time.monotonic_ns()}.log"
    extra = {"HEALTHPIPE_FAILPOINT": failpoint} if failpoint else {}
    command = [sys.executable, "-m", "healthpipe", "run", "--config", str(config_file)]
    if full_refresh:
        command.append("--full-refresh")
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=run_env(**extra)
        )
        try:
            process.wait(timeout=kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                process.kill()
                process.wait()
                raise
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
    return Outcome(process.returncode, time.monotonic() - started, log.read_text("utf-8"))


def killed_phase(warehouse: Warehouse) -> str:
    """Where the last run died: the step its audit row still shows as running, or, between
    steps, the work that follows the last finished one."""
    rows = warehouse.fetchall(
        "select step, status from audit.pipeline_runs where run_id = "
        "(select run_id from audit.pipeline_runs order by started_at desc limit 1) "
        "order by started_at desc limit 1"
    )
    if not rows:
        return "start"
    step, status = rows[0]
    if status == "running":
        return {"land": "landing", "validate": "validation"}.get(step, step)
    return {"land": "validation", "validate": "extract", "reconcile": "extract"}.get(
        step, f"after {step}"
    )


def _config(config_file: Path) -> HealthpipeConfig:
    return load_config(str(config_file))


def keys_from_files(
    config: HealthpipeConfig, source_name: str, files: dict[str, str] | None
) -> dict[str, Counter[tuple[Any, ...]]]:
    """The natural keys the source's files hold, per raw table: every file, or (``files``,
    the complement of a saved cursor) only the files that cursor marks done."""
    source = config.source(source_name)
    adapter = adapter_for(source.type)
    pseudonymiser = (
        Pseudonymiser.from_env(config.pseudonym_key_env, purpose=source_name, env=run_env())
        if adapter.patient_level
        else None
    )
    cursor = None if files is None else {"files": files}
    keys: dict[str, Counter[tuple[Any, ...]]] = {}
    for page in adapter.pages(source, cursor, config):
        table = raw_table(source.type, page.entity)
        found = keys.setdefault(table.qualified_name, Counter())
        for record in adapter.prepare(page.entity, page.records, pseudonymiser):
            key = tuple(record.get(k) for k in table.key)
            if all(part not in (None, "") for part in key):  # keyless ones go to quarantine
                found[key] = 1  # repeats within the files collapse to one row (counted)
    return keys


def all_files(config: HealthpipeConfig, source_name: str) -> dict[str, str]:
    """Every file of the source with its fingerprint: the cursor a complete pull ends on."""
    source = config.source(source_name)
    adapter = adapter_for(source.type)
    last: dict[str, Any] = {}
    for page in adapter.pages(source, None, config):
        last = page.cursor
    files: dict[str, str] = last.get("files", {})
    return files


def _raw_keys(warehouse: Warehouse, table: str, key: tuple[str, ...], source: str) -> Counter[Any]:
    rows = warehouse.fetchall(
        f"select {', '.join(key)} from {table} where source_name = $source", {"source": source}
    )
    return Counter(tuple(row) for row in rows)


@dataclass
class CursorCheck:
    files_done: int
    records_behind_cursor: int
    missing: int


def check_cursors(config_file: Path, every_file: dict[str, dict[str, str]]) -> CursorCheck:
    """For each source, every record of every file its saved cursor marks done must be in
    raw: a cursor ahead of the data would skip those records for good."""
    config = _config(config_file)
    done = behind = missing = 0
    with Warehouse.open(config.warehouse) as warehouse:
        warehouse.ensure_schemas()  # a run killed at start-up may not have made them yet
        saved = {
            name: (load_cursor(warehouse, name, "files") or {}).get("files", {})
            for name, _, _ in FILE_SOURCES
        }
        raw = {
            name: {
                table.qualified_name: _raw_keys(warehouse, table.qualified_name, table.key, name)
                for table in adapter_for(kind).tables
            }
            for name, kind, _ in FILE_SOURCES
        }
    for name, _, _ in FILE_SOURCES:
        files = saved[name]
        done += len(files)
        complement = {k: v for k, v in every_file[name].items() if files.get(k) != v}
        for table, keys in keys_from_files(config, name, complement).items():
            behind += len(keys)
            missing += sum(1 for key in keys if key not in raw[name][table])
    return CursorCheck(done, behind, missing)


@dataclass
class Completeness:
    expected: int
    landed: int
    missing: int
    extra: int
    duplicate_keys: int
    pending: int
    mismatched_groups: int


def check_complete(config_file: Path) -> Completeness:
    """After a completed run: per source and raw table, the warehouse holds each key of the
    files exactly once, none is left pending, and counts per org unit and period agree."""
    config = _config(config_file)
    expected_total = landed_total = missing = extra = duplicates = pending = groups = 0
    with Warehouse.open(config.warehouse) as warehouse:
        for name, kind, _ in FILE_SOURCES:
            expected = keys_from_files(config, name, None)
            for table in adapter_for(kind).tables:
                want = expected.get(table.qualified_name, Counter())
                have = _raw_keys(warehouse, table.qualified_name, table.key, name)
                expected_total += len(want)
                landed_total += sum(have.values())
                missing += len(set(want) - set(have))
                extra += len(set(have) - set(want))
                duplicates += sum(n - 1 for n in have.values() if n > 1)
                pending += int(
                    warehouse.fetch_scalar(
                        f"select count(*) from {table.qualified_name} where source_name = "
                        "$source and validation_status = 'pending'",
                        {"source": name},
                    )
                )
                if {"org_unit", "period"} <= set(table.key):
                    at = (table.key.index("org_unit"), table.key.index("period"))
                    by_group = Counter((k[at[0]], k[at[1]]) for k in want)
                    in_raw = Counter((k[at[0]], k[at[1]]) for k in have)
                    groups += sum(1 for g in by_group | in_raw if by_group[g] != in_raw[g])
    return Completeness(expected_total, landed_total, missing, extra, duplicates, pending, groups)
