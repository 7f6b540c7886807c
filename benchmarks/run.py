"""The benchmark harness: a simulated country at a scale, served over HTTP by the sandbox, the
real pipeline measured stage by stage next to the references its goals are ratios of.

For each run (three by default; medians are reported):
  extract (DHIS2 JSON, DHIS2 CSV) -> the whole pipeline, full refresh, into an empty DuckDB
  warehouse (land, validate, transform = dbt build, alerts, each timed by audit.pipeline_runs)
  -> the limits on the same rows (one hand-written DuckDB aggregation, one hand-written
  validation query, DuckDB's read_csv on the CSV export) -> an incremental run with no change
  and one with 1% of the values changed -> the peers (dlt, requests + pandas) loading the same
  data values into DuckDB.
Once per scale (S and M): the same dbt models on PostgreSQL, the extraction of the other
source types (FHIR, ODK, HL7), and Farrington flexible over many series.

Every stage runs in its own process (:mod:`benchmarks.stages`) so its peak memory is its own.
Results: ``benchmarks/results/<scale>-<time>.json`` and the tables in ``benchmarks/RESULTS.md``.

Usage: ``python -m benchmarks.run --scale S [--runs 3]`` (``make bench SCALE=S``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Scale:
    name: str
    districts: int
    regions: int
    facilities: tuple[int, int]
    sources: tuple[str, ...]
    postgres: bool
    """Also run the dbt models on PostgreSQL (costly at large scales)."""


# About 14,000 DHIS2 values per district of 10-20 facilities over three years.
SCALES: dict[str, Scale] = {
    "S": Scale("S", 4, 2, (3, 3), ("dhis2", "fhir", "hl7", "community"), True),
    "M": Scale("M", 72, 6, (10, 20), ("dhis2", "fhir", "hl7", "community"), True),
    "L": Scale("L", 720, 12, (10, 20), ("dhis2",), False),
    "XL": Scale("XL", 3600, 24, (10, 20), ("dhis2",), False),
}
CHANGED_SHARE = 0.01


def machine() -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions: dict[str, str | None] = {}
    for name in ("duckdb", "dbt-core", "dbt-duckdb", "dbt-postgres", "great-expectations",
                 "pandas", "dlt"):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "calibration_s": calibration(),
    }


def code_version() -> str | None:
    """The commit the harness ran (with ``+changes`` when the work tree differed from it):
    results of one scale laid over each other may come from different code."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "")


def cpu_model() -> str | None:
    """The processor's name as the kernel reports it (None where it does not)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def calibration() -> dict[str, float]:
    """Seconds of two fixed workloads, best of three: machines of one kind have run the same
    code twice as fast as each other (same name, different hosts), so a figure measured on
    another machine is compared through these, never as it stands. ``duckdb``: a grouped sum
    over 20 million generated rows (every core); ``python``: a loop of dict building, what
    the connectors do per value (one core)."""
    import duckdb

    def best(work: Any) -> float:
        work()  # once untimed: the first pass pays for the allocator's arenas and caches
        times = []
        for _ in range(3):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return round(min(times), 3)

    with duckdb.connect() as connection:
        connection.execute("set enable_progress_bar = false")
        query = "select i % 1000 as k, sum(i * 0.5) from range(20000000) t(i) group by k"
        duckdb_s = best(lambda: connection.execute(query).fetchall())

    def dicts() -> None:
        rows = [{"a": str(i), "b": i, "c": None} for i in range(300_000)]
        del rows

    return {"duckdb": duckdb_s, "python": best(dicts)}


# --- the country and its server -----------------------------------------------------------


def country_dir(scale: Scale, cache: Path) -> Path:
    """The simulated country of a scale, written once and kept (L takes minutes to write)."""
    from pipelines.simulate import build_country, simulate

    folder = cache / f"{scale.name}-country"
    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"simulating scale {scale.name} ({scale.districts} districts) ...", flush=True)
        country = build_country(
            7, districts=scale.districts, regions=scale.regions,
            facilities_per_district=scale.facilities,
        )  # fmt: skip
        simulate(folder, country=country, sources=list(scale.sources))
        write_changed_values(folder)
        marker.write_text(datetime.now(UTC).isoformat(), encoding="utf-8")
    return folder


def write_changed_values(folder: Path) -> None:
    """Replace the simulator's increments with one that changes 1% of the DHIS2 values (a new
    value and a later lastUpdated), for the incremental benchmark."""
    import random

    increments = folder / "increments"
    shutil.rmtree(increments, ignore_errors=True)
    target = increments / "1" / "dhis2" / "dataValueSets"
    target.mkdir(parents=True)
    draw = random.Random(7)
    files = sorted((folder / "dhis2" / "dataValueSets").glob("*.json"))

    def load(path: Path) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return document

    # every change is newer than anything in the base, so an incremental pull sees all of them;
    # two passes over the files, one in memory at a time (L holds gigabytes)
    changed_at = later(
        max(
            max(
                (str(v.get("lastUpdated", "")) for v in load(path).get("dataValues", [])),
                default="",
            )
            for path in files
        )
    )
    for path in files:
        document = load(path)
        changed = []
        for value in document.get("dataValues", []):
            if draw.random() < CHANGED_SHARE:
                number = int(float(value["value"])) if value.get("value") else 0
                changed.append({**value, "value": str(number + 1), "lastUpdated": changed_at})
        (target / path.name).write_text(
            json.dumps({"dataSet": document.get("dataSet"), "dataValues": changed}),
            encoding="utf-8",
        )


def later(stamp: str) -> str:
    """A day after a DHIS2 timestamp (the changes happen after everything in the base)."""
    from datetime import timedelta

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (moment + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def sandbox(folder: Path) -> Iterator[str]:
    """``healthpipe sandbox`` in its own process (its memory is not the pipeline's)."""
    port = free_port()
    # its request log goes to a file: an unread pipe fills up and blocks the server
    log_path = folder.parent / f"{folder.name}-sandbox.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "sandbox", "--data", str(folder),
         "--port", str(port)],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = log_path.read_text(encoding="utf-8", errors="replace")
                    raise RuntimeError(f"the sandbox did not start: {error[-2000:]}") from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()


def set_increment(base: str, number: int) -> None:
    """Serve increment ``number``, its data values read before the next stage's clock starts."""
    url = f"{base}/_sandbox/increments/{number}?warm=1"
    request = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(request, timeout=3600) as response:
        response.read()


def run_stage(name: str, **args: Any) -> dict[str, Any]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.stages", name, json.dumps(args, default=str)],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        error = completed.stderr[-4000:]
        if completed.returncode < 0 or not error.strip():
            # killed (the out-of-memory killer, someone stopping it): its stderr does not say
            error += f"\n{exit_status(completed.returncode)}"
        raise RuntimeError(f"stage {name} failed:\n{error}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    rate = result["rows"] / result["seconds"] if result["seconds"] else 0.0
    print(
        f"  {name:<22} {result['seconds']:8.2f} s  {result['rows']:>12,} rows  "
        f"{rate:>12,.0f}/s  peak {result['peak_rss_mib']:,.0f} MiB",
        flush=True,
    )
    return result


# --- one run ------------------------------------------------------------------------------


def attempt(name: str, **args: Any) -> dict[str, Any]:
    """A stage's figures, or ``{"failed": why}``: at L one stage running out of memory must not
    throw away the hour of figures measured before it."""
    try:
        return run_stage(name, **args)
    except RuntimeError as error:
        print(f"  {name:<22} FAILED: {str(error)[-2000:]}", flush=True)
        return {"failed": failure_reason(str(error))}


def exit_status(returncode: int) -> str:
    """How a stage's process ended, for the failure reason: a process killed by a signal (the
    kernel's out-of-memory killer, or someone stopping it) writes no error of its own."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}" + (
            " (out of memory, or stopped by hand)" if returncode == -9 else ""
        )
    return f"exited with status {returncode}"


def failure_reason(error: str) -> str:
    """The error's last line, fit to commit: absolute paths (this machine's) become file names."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return re.sub(r"(?<![\w.])/(?:[^\s/]+/)+([^\s/]+)", r"\1", lines[-1] if lines else "no message")


def warehouse_url(path: Path, memory_limit: str | None) -> str:
    """The DuckDB warehouse URL, with DuckDB's memory limit when one is set (it spills beyond)."""
    return f"duckdb:///{path}" + (f"?memory_limit={memory_limit}" if memory_limit else "")


def one_run(
    scale: Scale,
    folder: Path,
    base: str,
    workdir: Path,
    memory_limit: str | None = None,
    progress: Path | None = None,
    only: frozenset[str] | None = None,
) -> dict[str, Any]:
    """One run of every stage (of the stages in ``only``). ``progress`` gets the figures so far
    after each stage, so that a harness killed late in an L run still leaves what it
    measured."""
    common: dict[str, Any] = {
        "dhis2_url": f"{base}/dhis2",
        "workdir": str(workdir),
        "state_dir": str(workdir),
    }
    warehouse_path = workdir / "warehouse.duckdb"
    warehouse = warehouse_url(warehouse_path, memory_limit)
    stages: dict[str, dict[str, Any]] = {}
    served: list[int] = []

    def measure(key: str, name: str, *, increment: int | None = 0, **args: Any) -> None:
        """Run a stage (when selected); ``increment``: the sandbox state it pulls (switching
        is minutes at L, so only done before a stage that runs and pulls)."""
        if only is not None and key not in only:
            return
        if increment is not None and served[-1:] != [increment]:
            set_increment(base, increment)
            served.append(increment)
        stages[key] = attempt(name, **args)
        if progress is not None:
            progress.write_text(json.dumps(stages, indent=2, default=str) + "\n", encoding="utf-8")

    measure("extract_json", "extract", **common, format="json")
    measure("extract_csv", "extract", **common, format="csv")
    measure("full_refresh", "pipeline", **common, warehouse=warehouse, full_refresh=True)
    # the limits read the warehouse or the files, not the sandbox
    measure("limit_aggregate", "limit_aggregate", increment=None, duckdb_path=str(warehouse_path))
    measure("limit_validate", "limit_validate", increment=None, duckdb_path=str(warehouse_path))
    csv_dir = str(folder / "dhis2_csv" / "dataValueSets")
    measure("limit_read_csv", "limit_read_csv", increment=None, csv_dir=csv_dir)
    measure("incremental_no_change", "pipeline", **common, warehouse=warehouse)
    measure("incremental_1pct", "pipeline", increment=1, **common, warehouse=warehouse)
    measure("peer_pandas", "peer_pandas", **common, duckdb_path=str(workdir / "peer_pandas.duckdb"))
    measure("peer_dlt", "peer_dlt", **common, duckdb_path=str(workdir / "peer_dlt.duckdb"))
    return stages


def once_per_scale(
    scale: Scale,
    folder: Path,
    base: str,
    workdir: Path,
    farrington: int | None = None,
    spark: bool = False,
    only: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The stages run once per scale (those in ``only``); ``spark``: the dbt build on Spark
    local mode too, on the last run's landed warehouse (needs the Spark venv: ``make
    spark-parity`` installs it)."""
    common = {"dhis2_url": f"{base}/dhis2", "workdir": str(workdir), "state_dir": str(workdir)}
    stages: dict[str, dict[str, Any]] = {}

    def measure(key: str, name: str, **args: Any) -> None:
        if only is None or key in only:
            stages[key] = attempt(name, **args)

    if "fhir" in scale.sources:
        measure("extract_fhir", "extract_source", **common, source={
            "name": "emr", "type": "fhir", "base_url": f"{base}/fhir/emr"})  # fmt: skip
    if "hl7" in scale.sources:
        measure("extract_hl7", "extract_source", **common, source={
            "name": "lab", "type": "hl7v2", "path": str(folder / "hl7")})  # fmt: skip
    if "community" in scale.sources:
        os.environ.setdefault("BENCH_ODK_USER", "sandbox@healthpipe.example")
        os.environ.setdefault("BENCH_ODK_PASSWORD", "sandbox-password")
        measure("extract_odk", "extract_source", **common, source={
                "name": "chw", "type": "odk", "base_url": f"{base}/odk", "project_id": 1,
                "username_env": "BENCH_ODK_USER", "password_env": "BENCH_ODK_PASSWORD"},
        )  # fmt: skip
    wanted = only is None or "postgres_full_refresh" in only
    if scale.postgres and wanted and (url := postgres_url()):
        with postgres_database(url) as database:
            measure("postgres_full_refresh", "pipeline", **common, warehouse=database,
                    full_refresh=True)  # fmt: skip
    series = farrington or farrington_series(scale)
    measure("alerts_farrington", "alerts_farrington", series=series)
    # reporting is never complete: the same series with 2% of their weeks missing
    measure(
        "alerts_farrington_missing", "alerts_farrington", series=series, missing_share=MISSING_WEEKS
    )
    if spark:
        measure(
            "transform_spark",
            "transform_spark",
            duckdb_path=str(workdir / "warehouse.duckdb"),
            spark_dir=str(workdir / "spark"),
        )
    return stages


ONE_RUN_STAGES = (
    "extract_json", "extract_csv", "full_refresh", "limit_aggregate", "limit_validate",
    "limit_read_csv", "incremental_no_change", "incremental_1pct", "peer_pandas", "peer_dlt",
)  # fmt: skip
ONCE_STAGES = (
    "extract_fhir", "extract_hl7", "extract_odk", "postgres_full_refresh", "alerts_farrington",
    "alerts_farrington_missing", "transform_spark",
)  # fmt: skip
NEEDS_FULL_REFRESH = (
    "limit_aggregate", "limit_validate", "incremental_no_change", "incremental_1pct",
)  # fmt: skip
"""Stages that read the warehouse the run's full refresh built."""
READ_ONLY_LIMITS = ("limit_aggregate", "limit_validate")
"""Of those, the ones that only read it: without full_refresh they read the warehouse the last
run left in the cache."""


def selected_stages(names: str | None) -> frozenset[str] | None:
    """``--stages a,b``: the stages to run, checked; None (every stage) without it."""
    if not names:
        return None
    only = frozenset(name.strip() for name in names.split(",") if name.strip())
    unknown = sorted(only - set(ONE_RUN_STAGES) - set(ONCE_STAGES))
    if unknown:
        raise SystemExit(
            f"--stages: unknown {', '.join(unknown)}; "
            f"known: {', '.join(ONE_RUN_STAGES + ONCE_STAGES)}"
        )
    orphans = sorted(only & set(NEEDS_FULL_REFRESH) - set(READ_ONLY_LIMITS))
    if orphans and "full_refresh" not in only:
        raise SystemExit(f"--stages: {', '.join(orphans)} need full_refresh in the same run")
    return only


def reuses_warehouse(only: frozenset[str] | None) -> bool:
    """Whether the run measures limits on the warehouse an earlier run left in the cache (the
    limits only read it; at L a full refresh to rebuild it costs half an hour)."""
    return only is not None and "full_refresh" not in only and bool(only & set(READ_ONLY_LIMITS))


MISSING_WEEKS = 0.02
"""The share of weeks missing in the second Farrington stage."""


def farrington_series(scale: Scale) -> int:
    """How many weekly series the Farrington benchmark runs: the goal is 10,000 org units x 10
    diseases; the smaller scales run a sample and report the rate (L's tenth alone takes minutes;
    the series are independent, so the time is linear in their number)."""
    return {"S": 200, "M": 2_000, "L": 10_000}.get(scale.name, 100_000)


def postgres_url() -> str | None:
    return os.environ.get("HEALTHPIPE_TEST_POSTGRES_URL") or os.environ.get("BENCH_POSTGRES_URL")


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    import psycopg

    name = f"healthpipe_bench_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')
        admin.execute(f'create database "{name}"')
    try:
        yield f"{server.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


# --- summarising --------------------------------------------------------------------------


def medians(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per stage: median seconds, rows, rows/s and peak memory; pipeline steps too. Failed runs
    are left out; a stage that failed in every run keeps the first reason."""
    out: dict[str, Any] = {}
    for name in runs[0]:
        stage_runs = [run[name] for run in runs if "failed" not in run[name]]
        if not stage_runs:
            out[name] = {"failed": runs[0][name]["failed"]}
            continue
        seconds = statistics.median(r["seconds"] for r in stage_runs)
        rows = statistics.median(r["rows"] for r in stage_runs)
        summary = {
            "seconds": seconds,
            "rows": rows,
            "rows_per_s": rows / seconds if seconds else 0.0,
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in stage_runs),
        }
        if "steps_s" in stage_runs[0]:
            steps = {step for r in stage_runs for step in r["steps_s"]}
            for step in steps:
                summary[f"step_{step}_s"] = statistics.median(
                    r["steps_s"].get(step, 0.0) for r in stage_runs
                )
            summary["extract_s"] = statistics.median(r["extract_s"] for r in stage_runs)
            summary["data_values"] = statistics.median(r["data_values"] for r in stage_runs)
        if "slowest_nodes" in stage_runs[0]:
            # a profile is one run's: the run whose time is nearest the median
            middle = min(stage_runs, key=lambda r: abs(r["seconds"] - seconds))
            for key in ("slowest_nodes", "dbt_node_s", "dbt_nodes"):
                summary[key] = middle[key]
        out[name] = summary
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SCALES), default=os.environ.get("SCALE", "S"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", default=str(ROOT / "var" / "bench"), help="countries kept here")
    parser.add_argument(
        "--results-dir",
        default=str(HERE / "results"),
        help="where the result JSON goes (RESULTS.md is rewritten only for the default)",
    )
    parser.add_argument(
        "--memory-limit",
        default=os.environ.get("BENCH_MEMORY_LIMIT"),
        help="DuckDB's memory_limit for the warehouse (e.g. 8GB, 50%%); it spills beyond it",
    )
    parser.add_argument(
        "--farrington-series", type=int, help="series for the Farrington stage (default by scale)"
    )
    parser.add_argument(
        "--spark",
        action="store_true",
        help="also build the dbt models on Spark local mode (the Spark venv of make spark-parity)",
    )
    parser.add_argument(
        "--stages",
        help="run only these stages (comma-separated), recorded as a partial result that the "
        "report lays over the scale's last whole run",
    )
    parser.add_argument(
        "--record-stopped",
        metavar="WHY",
        help="run nothing: record what a stopped one-run harness measured (its progress file "
        "in --cache), saying why it was stopped",
    )
    args = parser.parse_args()
    scale = SCALES[args.scale]
    only = selected_stages(args.stages)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.record_stopped:
        progress = cache / f"{scale.name}-run-1-progress.json"
        stages = json.loads(progress.read_text(encoding="utf-8"))
        record(args, scale, [stages], {}, None, stopped=args.record_stopped)
        return
    started = time.perf_counter()
    code = code_version()  # the code the stages start with, not what main holds at the end
    folder = country_dir(scale, cache)
    runs = []
    with sandbox(folder) as base:
        for number in range(1, args.runs + 1):
            print(f"scale {scale.name}, run {number} of {args.runs}", flush=True)
            workdir = cache / f"{scale.name}-run"
            if reuses_warehouse(only):
                if not (workdir / "warehouse.duckdb").is_file():
                    raise SystemExit(
                        f"--stages: {', '.join(READ_ONLY_LIMITS)} read the "
                        f"warehouse an earlier run left in {workdir}, and there is none: add "
                        "full_refresh"
                    )
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                workdir.mkdir()
            progress = cache / f"{scale.name}-run-{number}-progress.json"
            runs.append(one_run(scale, folder, base, workdir, args.memory_limit, progress, only))
        print(f"scale {scale.name}, once per scale", flush=True)
        once = once_per_scale(
            scale,
            folder,
            base,
            cache / f"{scale.name}-run",
            args.farrington_series,
            args.spark,
            only,
        )
    record(args, scale, runs, once, round(time.perf_counter() - started, 1), code=code)


def record(
    args: argparse.Namespace,
    scale: Scale,
    runs: list[dict[str, Any]],
    once: dict[str, Any],
    harness_seconds: float | None,
    stopped: str | None = None,
    code: str | None = None,
) -> None:
    """Write the result file (and RESULTS.md for the default folder); exit non-zero when a
    stage failed."""
    result: dict[str, Any] = {
        "scale": scale.name,
        "runs": len(runs),
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "harness_seconds": harness_seconds,
        "machine": machine(),
        "code": code or code_version(),
        "settings": {
            "memory_limit": args.memory_limit,
            "spark": bool(getattr(args, "spark", False)),
        },
        "medians": medians(runs),
        "once": once,
        "all_runs": runs,
    }
    if stopped:
        result["stopped"] = stopped
    if getattr(args, "stages", None):
        result["stages"] = sorted(selected_stages(args.stages) or ())
        if reuses_warehouse(selected_stages(args.stages)):
            result["reused_warehouse"] = True
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{scale.name}-{result['recorded_at'].replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {out}")
    if results_dir.resolve() == (HERE / "results").resolve():
        from benchmarks.report import write_results_table

        write_results_table()
        print(f"table: {HERE / 'RESULTS.md'}")
    failed = failed_stages(result)
    if failed:
        sys.exit(f"recorded, but these stages failed: {', '.join(failed)}")


def failed_stages(result: dict[str, Any]) -> list[str]:
    """Stages that failed in any run, or once per scale."""
    names = {name for run in result["all_runs"] for name, stage in run.items() if "failed" in stage}
    names |= {name for name, stage in result["once"].items() if "failed" in stage}
    return sorted(names)


if __name__ == "__main__":
    main()
