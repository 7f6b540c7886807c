"""The PostgreSQL warehouse goes away in the middle of a landing transaction: each batch is
all or nothing, and the next run completes the load.

In ``make test`` the loader's own backend is terminated (``pg_terminate_backend`` from a
second connection), which the loader sees exactly as a server crash: the socket closes
mid-transaction. ``make reliability`` sets ``HEALTHPIPE_RELIABILITY_PG_RESTART=1`` and
restarts the server itself (``pg_ctlcluster ... restart -m immediate``, a crash and
recovery) in the first round instead; other people's tests share the server, so that is
done once, and not on every test run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pipelines.config import HealthpipeConfig
from pipelines.run import ingest_source, open_warehouse
from pipelines.sources import adapter_for
from pipelines.warehouse import Warehouse
from tests.reliability.conftest import PSEUDONYM_KEY
from tests.reliability.drops import drop_config
from tests.reliability.results import Results
from tests.reliability.runs import keys_from_files

RESTART = os.environ.get("HEALTHPIPE_RELIABILITY_PG_RESTART") == "1"
TARGETS = ("dhis2__data_values", "hl7v2__messages", "hl7v2__results")
"""The raw table whose landing transaction is interrupted, one per round, in landing order:
each round resumes from the cursor the previous one committed and reaches the next."""


def restart_server() -> None:
    clusters = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(
        ["pg_ctlcluster", clusters[0], clusters[1], "restart", "-m", "immediate"],
        check=True,
        timeout=120,
    )


def interrupter(
    admin_url: str,
    database: str,
    table: str,
    actions: list[str],
    stop: threading.Event,
    restart: bool,
) -> threading.Thread:
    """Catch the loader inside its landing transaction for ``raw.<table>``, then terminate
    its backend (or restart the server).

    To catch it there every time, not by luck of timing, a second connection to the
    warehouse locks the raw table against writes once it exists: the loader's upsert then
    waits inside its transaction (quarantine rows and temporary tables already written),
    and is interrupted while it waits."""
    url = admin_url.rsplit("/", 1)[0] + "/" + database

    def watch() -> None:
        with (
            psycopg.connect(url, autocommit=True) as blocker,
            psycopg.connect(admin_url, autocommit=True) as admin,
        ):
            while blocker.execute("select to_regclass(%s)", (f"raw.{table}",)).fetchone() == (
                None,
            ):
                time.sleep(0.01)
            with contextlib.suppress(psycopg.OperationalError), blocker.transaction():
                blocker.execute(f"lock table raw.{table} in share row exclusive mode")
                while not stop.is_set():
                    rows = admin.execute(
                        "select pid from pg_stat_activity where datname = %s "
                        "and wait_event_type = 'Lock' and query ilike %s",
                        (database, f"%raw.{table}%"),
                    ).fetchall()
                    if rows:
                        if restart:
                            actions.append(f"server restarted while landing {table}")
                            restart_server()
                        else:
                            admin.execute("select pg_terminate_backend(%s)", (rows[0][0],))
                            actions.append(f"backend terminated while landing {table}")
                        return
                    time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def wait_for_server(url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with psycopg.connect(url, connect_timeout=3) as connection:
                connection.execute("select 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def batches_all_or_nothing(warehouse: Warehouse) -> tuple[int, int]:
    """(batches checked, batches partly landed): every batch's rows in raw equal what its
    successful landing step recorded, and a batch whose step never finished has no rows."""
    warehouse.ensure_schemas()  # an interruption may come before they were first made
    steps = {
        str(batch): (str(status), rows)
        for batch, status, rows in warehouse.fetchall(
            "select batch_id, status, rows_out from audit.pipeline_runs where step = 'land'"
        )
    }
    partial = 0
    for table in [*adapter_for("dhis2").tables, *adapter_for("hl7v2").tables]:
        for batch, count in warehouse.fetchall(
            f"select batch_id, count(*) from {table.qualified_name} group by 1"
        ):
            status, rows = steps.get(str(batch), ("missing", None))
            if status != "success" or rows != count:
                partial += 1
    return len(steps), partial


def ingest_all(config: HealthpipeConfig, run_id: str) -> None:
    warehouse = open_warehouse(config)
    try:
        for name in ("hmis", "lab"):
            ingest_source(warehouse, config.source(name), config, run_id=run_id)
    finally:
        with contextlib.suppress(Exception):  # the connection may be dead
            warehouse.close()


@pytest.mark.postgres
def test_the_database_going_away_mid_batch_loses_nothing(
    postgres_url: str,
    postgres_server: str,
    file_country: Path,
    tmp_path: Path,
    results: Results,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEALTHPIPE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    config = drop_config(
        tmp_path,
        [
            {"name": "hmis", "type": "dhis2", "path": str(file_country / "dhis2")},
            {"name": "lab", "type": "hl7v2", "path": str(file_country / "hl7")},
        ],
    ).model_copy(update={"warehouse": postgres_url})
    database = postgres_url.rsplit("/", 1)[1]
    actions: list[str] = []
    failures: list[str] = []
    for number, table in enumerate(TARGETS):
        stop = threading.Event()
        # one real restart at most (the server is shared); the other rounds terminate
        watcher = interrupter(
            postgres_server, database, table, actions, stop, restart=RESTART and number == 0
        )
        try:
            ingest_all(config, run_id=f"interrupted{number}")
        except psycopg.Error as exc:
            failures.append(type(exc).__name__)
        finally:
            stop.set()  # the run ended without reaching the table: nothing to wait for
            watcher.join(timeout=300)
        wait_for_server(postgres_url)
        with Warehouse.open(postgres_url) as warehouse:
            checked, partial = batches_all_or_nothing(warehouse)
        assert partial == 0, f"round {number}: {partial} batches partly landed"
    assert len(actions) == len(TARGETS), actions
    assert len(failures) == len(TARGETS), failures  # every round was really interrupted
    ingest_all(config, run_id="completing")
    missing = extra = 0
    with Warehouse.open(postgres_url) as warehouse:
        for name in ("hmis", "lab"):
            for qualified, keys in keys_from_files(config, name, None).items():
                table = next(
                    t
                    for t in adapter_for(config.source(name).type).tables
                    if t.qualified_name == qualified
                )
                have = {
                    tuple(row)
                    for row in warehouse.fetchall(
                        f"select {', '.join(table.key)} from {qualified} where source_name = $s",
                        {"s": name},
                    )
                }
                missing += len(set(keys) - have)
                extra += len(have - set(keys))
        pending = sum(
            int(warehouse.fetch_scalar(
                f"select count(*) from {t.qualified_name} where validation_status = 'pending'"
            ))
            for t in [*adapter_for("dhis2").tables, *adapter_for("hl7v2").tables]
        )  # fmt: skip
        checked, partial = batches_all_or_nothing(warehouse)
    assert (missing, extra, pending, partial) == (0, 0, 0, 0)
    results.record(
        "database restart",
        "PostgreSQL server restarted (pg_ctlcluster restart -m immediate) mid-transaction "
        "once, the loader's backend terminated mid-transaction twice"
        if RESTART
        else "the loader's PostgreSQL backend terminated (pg_terminate_backend) mid-transaction",
        len(actions),
        missing,
        interruptions=actions,
        loader_errors=failures,
        batches_checked=checked,
        batches_partly_landed=partial,
        next_run_completed=True,
    )
