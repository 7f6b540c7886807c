"""``make airflow-check``: start ``make airflow`` (airflow standalone) on a small simulated
country, wait for its health endpoint, log in through the REST API (simple auth manager
token), unpause and trigger the DHIS2 ingest DAG, and wait for the run to succeed. Too slow
for the test suite (the scheduler, DAG processor, triggerer and API server start for real),
so it is a make target; it prints how long each stage took and stops what it started.

Usage: python -m tests.airflow.standalone_check [--keep STATE_DIR]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "healthpipe_ingest_check_hmis"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    what: str, check: Any, timeout: float, every: float = 2.0, name: str = "airflow-check"
) -> Any:
    """Call ``check`` every ``every`` seconds until it returns something true (an HTTP error
    counts as not yet); exit naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except requests.RequestException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise SystemExit(f"{name}: timed out after {timeout:.0f} s waiting for {what} ({last})")


def prepare(state: Path) -> Path:
    """A two-district country's DHIS2 drop and a config with one source."""
    from pipelines.simulate import simulate
    from pipelines.simulate.country import build_country

    simulate(state / "country", country=build_country(7, districts=2), weeks=30, sources=["dhis2"])
    config = state / "healthpipe.yml"
    config.write_text(
        "warehouse: duckdb:///warehouse.duckdb\nstate_dir: work\nsources:\n"
        f"  - name: check_hmis\n    type: dhis2\n    path: {state / 'country' / 'dhis2'}\n",
        encoding="utf-8",
    )
    return config


def main() -> None:
    keep = sys.argv[sys.argv.index("--keep") + 1] if "--keep" in sys.argv else None
    state = Path(keep or tempfile.mkdtemp(prefix="healthpipe-airflow-check-")).resolve()
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://localhost:{port}"
    started = time.monotonic()
    config = prepare(state)
    log_path = state / "standalone.log"
    # The interpreter running this check has healthpipe installed: a fresh stamp tells make
    # not to reinstall it.
    stamp = state / "installed.stamp"
    stamp.touch()
    make = [
        "make",
        "--no-print-directory",
        "airflow",
        f"AIRFLOW_STATE={state / 'airflow'}",
        f"AIRFLOW_PORT={port}",
        f"HEALTHPIPE_CONFIG={config}",
        f"VENV={Path(sys.executable).parent.parent}",
        f"STAMP={stamp}",
    ]
    with open(log_path, "w", encoding="utf-8") as log:
        # Its own session, so stopping it stops standalone's scheduler and servers too.
        server = subprocess.Popen(
            make, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    timings: dict[str, float] = {}
    try:

        def healthy() -> bool:
            if server.poll() is not None:
                raise SystemExit(f"airflow-check: make airflow exited; see {log_path}")
            body = requests.get(f"{base}/api/v2/monitor/health", timeout=5).json()
            return all(
                body.get(part, {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler")
            )

        wait_for("the health endpoint", healthy, timeout=600)
        timings["healthy"] = time.monotonic() - started
        password = json.loads((state / "airflow" / "passwords.json").read_text())["admin"]
        token = requests.post(
            f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=10
        )
        token.raise_for_status()
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

        wait_for(
            f"DAG {DAG_ID} to be parsed",
            lambda: api.get(f"{base}/api/v2/dags/{DAG_ID}", timeout=10).ok,
            timeout=300,
        )
        api.patch(f"{base}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=10)
        created = api.post(
            f"{base}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None}, timeout=10
        )
        if not created.ok:
            raise SystemExit(
                f"airflow-check: trigger refused: {created.status_code} {created.text}"
            )
        run_id = created.json()["dag_run_id"]
        triggered = time.monotonic()
        timings["triggered"] = triggered - started

        def finished() -> str | None:
            run = api.get(f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=10).json()
            return run["state"] if run["state"] in ("success", "failed") else None

        state_name = wait_for(f"run {run_id}", finished, timeout=900, every=3.0)
        timings["run"] = time.monotonic() - triggered
        timings["total"] = time.monotonic() - started
        print(
            f"airflow-check: {DAG_ID} run {run_id}: {state_name}; healthy after "
            f"{timings['healthy']:.0f} s, run took {timings['run']:.0f} s, "
            f"total {timings['total']:.0f} s (state: {state})"
        )
        if state_name != "success":
            raise SystemExit(f"airflow-check: the run failed; task logs under {state}/airflow/logs")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
