"""SIGKILL a `healthpipe run` at named failpoints and at seeded random moments (extract,
landing, validation, dbt): after every kill the saved cursor is never ahead of committed
data, and a normal run afterwards leaves the warehouse holding exactly what the files hold.

``HEALTHPIPE_KILL_POINTS`` sets how many random kills (3 by default; ``make reliability``
uses 50)."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.failpoints import FAILPOINTS
from pipelines.sources import all_raw_tables
from pipelines.warehouse import Warehouse
from tests.reliability.results import Results
from tests.reliability.runs import (
    FILE_SOURCES,
    all_files,
    check_complete,
    check_cursors,
    killed_phase,
    run_healthpipe,
    write_config,
)

SEED = 20261127
KILLS_PER_WAREHOUSE = 10
"""Killed runs in a row on one warehouse before a normal run completes it and a fresh
warehouse starts: later kills in a row land on a half-built warehouse, the first on an
empty one."""

TIMINGS: dict[str, float] = {}
"""Seconds a complete run took (from the failpoint test), to spread random kills over it."""


def kill_points() -> int:
    return int(os.environ.get("HEALTHPIPE_KILL_POINTS", "3"))


def every_file(config_file: Path) -> dict[str, dict[str, str]]:
    config = load_config(str(config_file))
    return {name: all_files(config, name) for name, _, _ in FILE_SOURCES}


def pending_rows(config_file: Path) -> int:
    """Rows landed but not yet validated (staging does not publish them)."""
    with Warehouse.open(load_config(str(config_file)).warehouse) as warehouse:
        return sum(
            int(warehouse.fetch_scalar(f"select count(*) from {t.qualified_name} "
                                       "where validation_status = 'pending'"))
            for t in all_raw_tables()
        )  # fmt: skip


def phase_of(config_file: Path) -> str:
    with Warehouse.open(load_config(str(config_file)).warehouse) as warehouse:
        warehouse.ensure_schemas()  # a run killed at start-up may not have made them yet
        return killed_phase(warehouse)


@pytest.mark.parametrize("hit", [3])
def test_killed_at_each_failpoint_then_completed(
    file_country: Path, tmp_path: Path, results: Results, hit: int
) -> None:
    """One warehouse, killed at every failpoint in turn (the landing ones on their third
    page, so some pages are committed and some not), then completed by a normal run."""
    config_file = write_config(tmp_path / "failpoints", file_country)
    files = every_file(config_file)
    phases: list[str] = []
    behind = left_pending = 0
    for point in FAILPOINTS:
        name = f"{point}:{hit}" if point.startswith(("land.", "validate.")) else point
        outcome = run_healthpipe(config_file, failpoint=name)
        assert outcome.killed, f"{name}: exit {outcome.returncode}\n{outcome.output[-2000:]}"
        phases.append(f"{point} ({phase_of(config_file)})")
        if point == "land.after_commit":
            # committed with its cursor, never validated: the next run must validate these
            # rows although their file is behind the cursor
            left_pending = pending_rows(config_file)
            assert left_pending > 0
        check = check_cursors(config_file, files)
        assert check.missing == 0, f"{name}: the cursor is ahead of the data: {check}"
        behind += check.records_behind_cursor
    finished = run_healthpipe(config_file)
    assert finished.returncode == 0, finished.output[-3000:]
    TIMINGS["complete"] = finished.seconds
    complete = check_complete(config_file)
    assert complete.expected > 0
    assert (complete.missing, complete.extra, complete.duplicate_keys, complete.pending) == (
        0,
        0,
        0,
        0,
    ), complete
    assert complete.mismatched_groups == 0, complete
    results.record(
        "killed mid-run",
        "SIGKILL at each named failpoint (HEALTHPIPE_FAILPOINT), then a normal run",
        len(FAILPOINTS),
        complete.missing + complete.pending,
        failpoints=phases,
        cursor_checks=len(FAILPOINTS),
        rows_left_pending_by_land_after_commit=left_pending,
        records_behind_saved_cursors=behind,
        cursor_ahead=0,
        source_records=complete.expected,
        duplicate_keys=complete.duplicate_keys,
    )


@pytest.mark.timeout(4 * 3600)  # 50 kill points take most of an hour on a small machine
def test_killed_at_random_moments_then_completed(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    """``kill_points()`` runs killed at seeded random moments spread over a whole run's
    length; every tenth kill a normal run completes the warehouse and a fresh one starts."""
    rng = random.Random(SEED)
    length = TIMINGS.get("complete", 45.0)
    total = kill_points()
    phases: Counter[str] = Counter()
    killed = finished_first = behind = 0
    checked: list[tuple[int, int, int, int]] = []
    cycle = 0
    remaining = total
    while remaining > 0:
        cycle += 1
        config_file = write_config(tmp_path / f"warehouse{cycle}", file_country)
        files = every_file(config_file)
        for _ in range(min(KILLS_PER_WAREHOUSE, remaining)):
            remaining -= 1
            # after the first kill the run starts from a half-built warehouse; a full
            # refresh makes it extract and land every file again, so a kill can still fall
            # in extract or landing rather than only in dbt
            at = rng.uniform(0.5, length)
            outcome = run_healthpipe(config_file, kill_after=at, full_refresh=rng.random() < 0.5)
            if not outcome.killed:
                assert outcome.returncode == 0, outcome.output[-3000:]
                finished_first += 1
                phases["finished before the kill"] += 1
                continue
            killed += 1
            phases[phase_of(config_file)] += 1
            check = check_cursors(config_file, files)
            assert check.missing == 0, f"kill at {at:.1f} s: cursor ahead of data: {check}"
            behind += check.records_behind_cursor
        finished = run_healthpipe(config_file)
        assert finished.returncode == 0, finished.output[-3000:]
        complete = check_complete(config_file)
        assert complete.expected > 0
        checked.append(
            (complete.missing, complete.extra, complete.duplicate_keys, complete.pending)
        )
        assert checked[-1] == (0, 0, 0, 0), complete
        assert complete.mismatched_groups == 0, complete
    assert killed >= total // 2, f"only {killed} of {total} runs were still running at their kill"
    results.record(
        "killed mid-run",
        f"SIGKILL at a seeded random moment (seed {SEED}) within a whole run's length",
        killed,
        sum(sum(c) for c in checked),
        kill_points=total,
        finished_before_kill=finished_first,
        phases=dict(phases),
        warehouses_completed=cycle,
        records_behind_saved_cursors=behind,
        cursor_ahead=0,
    )
