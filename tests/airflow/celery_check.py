"""``make airflow-celery``: the whole DAG chain under Airflow's CeleryExecutor with two
workers, Redis as broker and PostgreSQL as metadata database and warehouse; the marts it
builds must equal those of the LocalExecutor path (``dag_check.py``'s ``dag.test()``, as the
test suite runs the chain) on a second warehouse.

What it starts, on a two-district simulated country (DHIS2 and HL7 file drops, so two
ingest DAGs run side by side):

- fresh PostgreSQL databases: Airflow's metadata (also Celery's result backend), the Celery
  run's warehouse and the LocalExecutor run's warehouse; all dropped at the end;
- an empty Redis database (the highest-numbered free one) as broker, flushed at the end;
- ``airflow api-server``, ``scheduler`` and ``dag-processor``, and two ``airflow celery
  worker`` processes. Each worker has its own ``AIRFLOW_HOME``, working directory, ``TMPDIR``
  and healthpipe ``state_dir``: a task reading a file another task left on a different
  worker's disk would fail or differ here. Data moves through the warehouse, references
  through XCom. Each worker reports its own task-instance ``hostname``
  (:func:`worker_hostname`), so the check can see that both ran tasks.

The ingest DAGs are unpaused one after the other, DHIS2 first (catch-up off: the scheduler
creates one run each, for the latest interval): other sources validate their facilities
against the org units DHIS2 landed. When both have finished, transform is unpaused and triggered once, as the
LocalExecutor run orders it (left unpaused, it would run once per source's Asset event, the
whole chain again for the second); its marts Asset schedules the alerts DAG, which builds the
models reading the alerts after them. When the chain is quiet, the bulletin DAG is unpaused and runs for
the last complete week. Every task instance must succeed at its first try, each DAG must have
run once, and both workers must have run tasks.

The comparison ignores what differs between any two runs: ``marts.alerts``' ``created_at``,
``updated_at`` (wall-clock times of the run), ``run_id`` (the orchestrator's run id) and
``detected_at`` (the run's clock when the source has no report time; see
``ALERT_RUN_COLUMNS``).
``marts.indicator_values`` holds no run-specific column and is compared whole.

Usage: python -m tests.airflow.celery_check [--keep]   (--keep: leave the state directory and databases)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.airflow import standalone_check
from tests.airflow.standalone_check import free_port

ROOT = Path(__file__).resolve().parents[2]
PG = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"
WORKERS = ("celery-check-worker-1", "celery-check-worker-2")
WORKER_ENV = "HEALTHPIPE_CELERY_CHECK_WORKER"
SOURCES = ("hmis", "lab")
CORE_DAGS = ("healthpipe_transform", "healthpipe_alerts")
BULLETIN = "healthpipe_bulletin"
PSEUDONYM_KEY = "celery-check-pseudonym-key-7d1e0b"
ALERT_RUN_COLUMNS = {"created_at", "updated_at", "run_id", "detected_at"}
"""Columns of marts.alerts that hold the run's wall-clock time or id, not its data.
``detected_at`` is the first week's last report time, but the run's clock when the source
gives none (the lab-confirmed measles rule's HL7 results); ``days_to_detect`` is compared."""
TERMINAL = {"success", "failed"}


def worker_hostname() -> str:
    """``[core] hostname_callable`` of every process here: a worker names itself from its
    environment (both run on this machine, whose own name would not tell them apart)."""
    return os.environ.get(WORKER_ENV) or socket.getfqdn()


def log(message: str) -> None:
    print(f"airflow-celery: {message}", flush=True)


def fail(message: str) -> SystemExit:
    return SystemExit(f"airflow-celery: FAILED: {message}")


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 3.0) -> Any:
    return standalone_check.wait_for(what, check, timeout, every, name="airflow-celery: FAILED")


class Databases:
    """Fresh PostgreSQL databases with unique names, dropped (connections and all) at exit."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.created: list[str] = []

    def create(self, role: str) -> str:
        import psycopg

        name = f"hp_celery_{self.tag}_{role}"
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as connection:
            connection.execute(f'create database "{name}"')
        self.created.append(name)
        return f"{PG}/{name}"

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(f"{PG}/postgres", autocommit=True) as connection:
            for name in self.created:
                connection.execute(f'drop database if exists "{name}" with (force)')
        self.created.clear()


def free_redis_db() -> int:
    """The highest-numbered empty Redis database: the broker's queues start empty and
    nothing else on the machine is touched."""
    import redis

    for number in range(15, 0, -1):
        if redis.Redis.from_url(f"{REDIS}/{number}").dbsize() == 0:
            return number
    raise fail("no empty Redis database (1-15) for the broker")


def write_config(path: Path, warehouse: str, state_dir: Path, country: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "warehouse": warehouse,
                "state_dir": str(state_dir),
                "sources": [
                    {"name": "hmis", "type": "dhis2", "path": str(country / "dhis2")},
                    {"name": "lab", "type": "hl7v2", "path": str(country / "hl7")},
                ],
            }
        ),
        encoding="utf-8",
    )
    return path


class Processes:
    """Airflow's processes, each in its own session with its log file; stopped at exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        with open(self.logs / f"{name}.log", "wb") as out:
            self.running[name] = subprocess.Popen(
                [str(Path(sys.executable).parent / "airflow"), *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: stopping it stops the task processes it forked too.
                start_new_session=True,
            )

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise fail(f"{name} exited ({process.returncode}); see {self.logs / name}.log")

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for process in self.running.values():
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Api:
    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self.password = password
        self.session = requests.Session()

    def login(self) -> None:
        token = requests.post(
            f"{self.base}/auth/token",
            json={"username": "admin", "password": self.password},
            timeout=10,
        )
        token.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(f"{self.base}/api/v2/{path}", params=params, timeout=20)
        response.raise_for_status()
        return response.json()

    def unpause(self, dag_id: str) -> None:
        response = self.session.patch(
            f"{self.base}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=10
        )
        response.raise_for_status()

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"dags/{dag_id}/dagRuns", limit=100)["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=500)["task_instances"]
        )


def run_chain(api: Api, processes: Processes) -> list[dict[str, Any]]:
    """Unpause the DAGs, wait for the chain to finish, and return every task instance."""
    ingest = [f"healthpipe_ingest_{name}" for name in SOURCES]
    every = [*ingest, *CORE_DAGS, BULLETIN]

    def parsed() -> bool:
        processes.check_alive()
        return all(api.session.get(f"{api.base}/api/v2/dags/{d}", timeout=10).ok for d in every)

    wait_for("every DAG to be parsed", parsed, timeout=300)

    def finished(dag_ids: list[str]) -> Callable[[], bool]:
        def check() -> bool:
            processes.check_alive()
            runs = {d: api.runs(d) for d in dag_ids}
            return all(r and all(x["state"] in TERMINAL for x in r) for r in runs.values())

        return check

    # The ingest DAGs first, transform and alerts still paused: one transform run then
    # follows both sources, as in the LocalExecutor run. (With transform unpaused, each
    # source's Asset event starts its own transform run, and the alerts of the first run feed
    # the alert-based indicators of the second: other marts than one run after both.)
    # One source after the other, DHIS2 first: the HL7 suite checks each result's facility
    # against the org units DHIS2 landed, so a lab pull validated before the first DHIS2
    # pull quarantines what it cannot place (the LocalExecutor run keeps this order too).
    for dag_id in ingest:
        api.unpause(dag_id)
        wait_for(f"the {dag_id} run", finished([dag_id]), timeout=900)
    log("ingest runs finished")
    for dag_id in CORE_DAGS:
        api.unpause(dag_id)
    created = api.session.post(
        f"{api.base}/api/v2/dags/{CORE_DAGS[0]}/dagRuns", json={"logical_date": None}, timeout=10
    )
    if not created.ok:
        raise fail(f"trigger {CORE_DAGS[0]} refused: {created.status_code} {created.text}")

    # The marts Asset event reaches the scheduler a heartbeat or two after transform ends:
    # the chain is done when transform and alerts have runs, none is pending, and that holds
    # for 20 s.
    def quiet() -> bool:
        if not finished(list(CORE_DAGS))():
            return False
        before = {d: len(api.runs(d)) for d in CORE_DAGS}
        time.sleep(20)
        return finished(list(CORE_DAGS))() and before == {d: len(api.runs(d)) for d in CORE_DAGS}

    wait_for("transform and alerts runs", quiet, timeout=1200, every=5.0)
    log("transform and alerts runs finished")
    # Unpaused now (catch-up off), the bulletin runs once, for the last complete week.
    api.unpause(BULLETIN)
    wait_for("the bulletin run", finished([BULLETIN]), timeout=600)
    instances = []
    for dag_id in every:
        for run in api.runs(dag_id):
            for ti in api.task_instances(dag_id, run["dag_run_id"]):
                instances.append({**ti, "dag_id": dag_id, "run_state": run["state"]})
    return instances


def local_executor_run(config: Path, home: Path, env: dict[str, str]) -> None:
    """The chain with dag.test() (tests/airflow/dag_check.py), as the test suite runs it."""
    local_env = {
        **env,
        "AIRFLOW_HOME": str(home),
        "HEALTHPIPE_CONFIG": str(config),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    for key in list(local_env):
        if key.startswith(("AIRFLOW__DATABASE__", "AIRFLOW__CELERY__")) or key in (
            "AIRFLOW__CORE__EXECUTOR",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE",
        ):
            del local_env[key]
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=local_env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    chain = [f"healthpipe_ingest_{name}" for name in SOURCES] + [*CORE_DAGS, BULLETIN]
    report_path = home / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "airflow" / "dag_check.py"),
            str(report_path),
            "--run",
            ",".join(chain),
        ],
        env=local_env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise fail(f"the LocalExecutor run failed:\n{result.stderr[-4000:]}")
    states = json.loads(report_path.read_text(encoding="utf-8"))["states"]
    failed = {d: s for d, s in states.items() if not s.endswith("success")}
    if failed:
        raise fail(f"the LocalExecutor run's DAGs did not all succeed: {failed}")


def table_rows(url: str, table: str, skip: set[str]) -> tuple[list[str], Counter[tuple[Any, ...]]]:
    import psycopg

    with psycopg.connect(url) as connection:
        columns = [
            name
            for (name,) in connection.execute(
                "select column_name from information_schema.columns "
                "where table_schema = %s and table_name = %s order by ordinal_position",
                table.split("."),
            ).fetchall()
            if name not in skip
        ]
        if not columns:
            raise fail(f"{url}: no table {table}")
        rows = connection.execute(f"select {', '.join(columns)} from {table}").fetchall()
    return columns, Counter(tuple(row) for row in rows)


def compare(celery_url: str, local_url: str) -> dict[str, int]:
    counts = {}
    for table, skip in (("marts.indicator_values", set()), ("marts.alerts", ALERT_RUN_COLUMNS)):
        columns, celery_rows = table_rows(celery_url, table, skip)
        _, local_rows = table_rows(local_url, table, skip)
        if celery_rows != local_rows:
            per_first = Counter()
            for row, n in (celery_rows - local_rows).items():
                per_first[f"celery:{row[0]}"] += n
            for row, n in (local_rows - celery_rows).items():
                per_first[f"local:{row[0]}"] += n
            log(f"{table}: rows only on one side, by {columns[0]}: {dict(per_first)}")
            only_celery = list((celery_rows - local_rows).elements())[:5]
            only_local = list((local_rows - celery_rows).elements())[:5]
            raise fail(
                f"{table} differs ({sum(celery_rows.values())} rows under Celery, "
                f"{sum(local_rows.values())} under the LocalExecutor); columns {columns}; "
                f"only under Celery (first 5): {only_celery}; only local: {only_local}"
            )
        if not celery_rows:
            raise fail(f"{table} is empty: nothing was compared")
        counts[table] = sum(celery_rows.values())
    return counts


def main() -> None:
    keep = "--keep" in sys.argv
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="healthpipe-airflow-celery-")).resolve()
    tag = f"{int(time.time())}_{secrets.token_hex(3)}"
    databases = Databases(tag)
    logs = state / "logs"
    logs.mkdir()
    processes = Processes(logs)
    redis_db: int | None = None
    ok = False
    try:
        from pipelines.simulate import simulate
        from pipelines.simulate.country import build_country

        country = state / "country"
        # 110 weeks: enough baseline for the outbreak detectors to raise alerts to compare.
        simulate(
            country, country=build_country(7, districts=2), weeks=110, sources=["dhis2", "hl7"]
        )
        metadata = databases.create("airflow")
        celery_warehouse = databases.create("warehouse_celery")
        local_warehouse = databases.create("warehouse_local")
        redis_db = free_redis_db()
        port = free_port()
        base = f"http://localhost:{port}"
        password = secrets.token_urlsafe(12)
        passwords = state / "passwords.json"
        passwords.write_text(json.dumps({"admin": password}), encoding="utf-8")
        sqlalchemy = metadata.replace("postgresql://", "postgresql+psycopg2://")
        common = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "HEALTHPIPE_PSEUDONYM_KEY": PSEUDONYM_KEY,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy,
            # Airflow derives its async engine's URL as postgresql+asyncpg, a driver
            # healthpipe does not install; psycopg 3 (installed) does async too.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata.replace(
                "postgresql://", "postgresql+psycopg://"
            ),
            "AIRFLOW__CELERY__BROKER_URL": f"{REDIS}/{redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{sqlalchemy}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.airflow.celery_check.worker_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base,
            # The scheduler signs the workers' task tokens; the API server checks them.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }
        common.pop("HEALTHPIPE_WAREHOUSE", None)
        common.pop(WORKER_ENV, None)

        def node(name: str) -> tuple[dict[str, str], Path]:
            """One machine's worth of local state: AIRFLOW_HOME, cwd, TMPDIR, state_dir."""
            home = state / name
            (home / "tmp").mkdir(parents=True)
            config = write_config(home / "healthpipe.yml", celery_warehouse, home / "var", country)
            env = {
                **common,
                "AIRFLOW_HOME": str(home / "airflow"),
                "HEALTHPIPE_CONFIG": str(config),
                "TMPDIR": str(home / "tmp"),
            }
            return env, home

        control_env, control = node("control")
        t0 = time.monotonic()
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=control_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if migrate.returncode != 0:
            raise fail(f"airflow db migrate: {migrate.stderr[-3000:]}")
        log(f"metadata database migrated in {time.monotonic() - t0:.0f} s")
        processes.start("api-server", ["api-server", "--port", str(port)], control_env, control)
        processes.start("scheduler", ["scheduler"], control_env, control)
        processes.start("dag-processor", ["dag-processor"], control_env, control)
        for worker in WORKERS:
            env, home = node(worker)
            env[WORKER_ENV] = worker
            processes.start(
                worker,
                [
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{worker}@%h",
                    "--concurrency",
                    "1",
                    # Task logs stay on the worker's disk (under its AIRFLOW_HOME); both
                    # workers' log servers would otherwise want the same port.
                    "--skip-serve-logs",
                ],
                env,
                home,
            )
        api = Api(base, password)

        def healthy() -> bool:
            processes.check_alive()
            body = requests.get(f"{base}/api/v2/monitor/health", timeout=5).json()
            return all(
                body.get(part, {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "dag_processor")
            )

        wait_for("the health endpoint", healthy, timeout=300)
        api.login()
        log(f"Airflow healthy after {time.monotonic() - started:.0f} s; broker {REDIS}/{redis_db}")
        t0 = time.monotonic()
        instances = run_chain(api, processes)
        chain_seconds = time.monotonic() - t0

        not_ok = [
            (ti["dag_id"], ti["task_id"], ti.get("map_index"), ti["state"])
            for ti in instances
            if ti["state"] != "success"
        ]
        if not_ok:
            raise fail(f"task instances did not succeed: {not_ok} (logs under {state}/*/airflow)")
        # Retries hide failures a single machine never shows (two tasks creating the
        # warehouse's schemas at once did): with every service local, none should be needed.
        retried = [
            (ti["dag_id"], ti["task_id"], ti.get("map_index"), ti.get("try_number"))
            for ti in instances
            if int(ti.get("try_number") or 1) > 1
        ]
        if retried:
            raise fail(f"task instances needed retries: {retried} (logs under {state}/*/airflow)")
        by_host = Counter(str(ti.get("hostname")) for ti in instances)
        runs = Counter(
            ti["dag_id"]
            for ti in instances
            if ti["task_id"] in ("plan", "source_freshness", "detect_and_record", "write_bulletin")
        )
        log(
            f"{len(instances)} task instances succeeded in {chain_seconds:.0f} s; "
            f"by worker: {dict(by_host)}; runs per DAG: {dict(runs)}"
        )
        if set(runs.values()) != {1} or set(runs) != {
            *(f"healthpipe_ingest_{name}" for name in SOURCES),
            *CORE_DAGS,
            BULLETIN,
        }:
            raise fail(f"expected one run of every DAG: {dict(runs)}")
        if set(by_host) != set(WORKERS):
            raise fail(f"tasks did not run on both workers (and only there): {dict(by_host)}")

        t0 = time.monotonic()
        (state / "local").mkdir()
        local_config = write_config(
            state / "local" / "healthpipe.yml", local_warehouse, state / "local" / "var", country
        )
        local_executor_run(local_config, state / "local" / "airflow", common)
        log(f"LocalExecutor (dag.test) run took {time.monotonic() - t0:.0f} s")
        counts = compare(celery_warehouse, local_warehouse)
        log(
            "marts equal the LocalExecutor run's: "
            + ", ".join(f"{table} {n} rows" for table, n in counts.items())
            + f" (marts.alerts without {', '.join(sorted(ALERT_RUN_COLUMNS))})"
        )
        ok = True
        log(f"OK in {time.monotonic() - started:.0f} s")
    finally:
        processes.stop_all()
        if not keep:
            databases.drop_all()
        else:
            log(f"databases kept: {', '.join(databases.created)}")
        if redis_db is not None:
            import redis

            redis.Redis.from_url(f"{REDIS}/{redis_db}").flushdb()
        if keep or not ok:
            log(f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
