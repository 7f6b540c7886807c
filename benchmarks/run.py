"""Measure the pipeline stage by stage on a simulated country and record the medians.

Each run starts from an empty DuckDB warehouse: simulate, then extract + land + validate,
publish indicators, dbt build. Stage times come from ``audit.pipeline_runs`` (what the pipeline
itself records), peak memory from the process's own accounting (``ru_maxrss``). Results go to
``benchmarks/results/<scale>-<timestamp>.json`` and the table in ``benchmarks/RESULTS.md``.

Usage: ``python -m benchmarks.run [--scale S] [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.config import parse_config
from pipelines.run import run_pipeline
from pipelines.simulate import build_country, simulate
from pipelines.warehouse import Warehouse

HERE = Path(__file__).resolve().parent
# Scale -> country shape (districts, regions, facilities per district as a range).
SCALES: dict[str, tuple[int, int, tuple[int, int]]] = {
    "S": (4, 2, (3, 3)),
    "S2": (20, 4, (10, 20)),
}


def machine() -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: metadata.version(name)
            for name in ("duckdb", "dbt-core", "dbt-duckdb", "great-expectations", "pandas")
        },
    }


def one_run(scale: str, workdir: Path) -> dict[str, Any]:
    districts, regions, facilities = SCALES[scale]
    started = time.perf_counter()
    country = build_country(
        7, districts=districts, regions=regions, facilities_per_district=facilities
    )
    simulated = simulate(workdir, country=country, sources=["dhis2"])
    simulate_seconds = time.perf_counter() - started
    config = parse_config(
        {
            "warehouse": "duckdb:///warehouse.duckdb",
            "state_dir": ".",
            "sources": [{"name": "bench", "type": "dhis2", "path": str(workdir / "dhis2")}],
        },
        origin="benchmark",
        base_dir=workdir,
        env={},
    )
    started = time.perf_counter()
    summary = run_pipeline(config)
    total = time.perf_counter() - started
    with Warehouse.open(config.warehouse) as warehouse:
        stages = dict(
            warehouse.fetchall(
                "select step, sum(epoch(finished_at) - epoch(started_at)) from audit.pipeline_runs "
                "where run_id = $run group by step",
                {"run": summary.run_id},
            )
        )
        indicator_rows = warehouse.row_count("marts.indicator_values")
    values = sum(c.received for s in summary.sources for c in s.entities.values())
    data_values = sum(
        count for what, count in simulated.counts["dhis2"].items() if what.startswith("data_values")
    )
    return {
        "simulate_s": simulate_seconds,
        "total_s": total,
        "stages_s": {k: float(v) for k, v in stages.items()},
        "records": values,
        "data_values": data_values,
        "indicator_values_rows": indicator_rows,
    }


def median_of(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def latest_results() -> list[dict[str, Any]]:
    """The most recent result file of each scale."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted((HERE / "results").glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        if "scale" in result:  # pipeline runs, not the simulator's
            latest[result["scale"]] = result  # file names sort by time within a scale
    return [latest[scale] for scale in SCALES if scale in latest]


def results_section(result: dict[str, Any]) -> list[str]:
    medians = result["medians"]
    records = medians["records"]
    lines = [
        f"## Scale {result['scale']}",
        "",
        f"{result['runs']} runs, medians; {result['machine']['cores']} cores, "
        f"{result['machine']['memory_gib']} GiB; recorded {result['recorded_at']}; "
        f"peak memory (max RSS) {result['peak_rss_mib']:.0f} MiB.",
        "",
        "| stage | median seconds | rows | rows per second |",
        "|---|---:|---:|---:|",
    ]
    for stage in ("land", "validate", "indicators", "transform"):
        seconds = medians["stages_s"].get(stage)
        if seconds is None:
            continue
        rows = records if stage in ("land", "validate") else medians["indicator_values_rows"]
        rate = f"{rows / seconds:,.0f}" if seconds else "-"
        lines.append(f"| {stage} | {seconds:.2f} | {rows:,.0f} | {rate} |")
    total = medians["total_s"]
    lines += [f"| whole pipeline | {total:.2f} | {records:,.0f} | {records / total:,.0f} |", ""]
    return lines


def write_results_table() -> None:
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m benchmarks.run`); raw figures in `results/`.",
        "Rows: records landed and validated for land/validate, `indicator_values` rows for",
        "indicators/transform. At these scales fixed costs dominate (dbt's start-up and model",
        "compilation, Great Expectations' context), not the rows; the national-scale goals need",
        "the larger scales that come with the performance issue.",
        "",
    ]
    for result in latest_results():
        lines += results_section(result)
    lines += simulator_section()
    (HERE / "RESULTS.md").write_text("\n".join(lines), encoding="utf-8")


def simulator_section() -> list[str]:
    """The simulator at national scale (``python -m benchmarks.simulate_scale``)."""
    runs = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((HERE / "results").glob("simulate-*.json"))
    ]
    if not runs:
        return []
    lines = [
        "## Simulator at national scale",
        "",
        "`python -m benchmarks.simulate_scale --districts N`: DHIS2 payloads (JSON and CSV)",
        "streamed to disk district by district; one run each (it takes minutes).",
        "",
        "| districts | facilities | data values | seconds | values/s | written | peak memory | recorded |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run['districts']:,} | {run['facilities']:,} | {run['data_values']:,} "
            f"| {run['seconds']:.0f} | {run['values_per_second']:,} "
            f"| {run['bytes_written'] / 2**30:.1f} GiB | {run['peak_rss_mib']} MiB "
            f"| {run['recorded_at']} |"
        )
    lines += [
        "",
        "Memory stays flat as the country grows (values are written as they are drawn). The",
        "2026-11-27 run shared the 2 cores with other work, so its time is an upper bound.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default=os.environ.get("SCALE", "S"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for number in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="healthpipe-bench-") as tmp:
            run = one_run(args.scale, Path(tmp))
        print(f"run {number}: {run['total_s']:.2f} s, {run['records']:,} records")
        runs.append(run)
    stages = sorted({stage for run in runs for stage in run["stages_s"]})
    result = {
        "scale": args.scale,
        "runs": len(runs),
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "medians": {
            "total_s": median_of(runs, "total_s"),
            "records": median_of(runs, "records"),
            "indicator_values_rows": median_of(runs, "indicator_values_rows"),
            "stages_s": {s: median_of(runs, "stages_s", s) for s in stages},
        },
        "all_runs": runs,
    }
    out = HERE / "results" / f"{args.scale}-{result['recorded_at'].replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_results_table()
    print(f"results: {out}")
    print((HERE / "RESULTS.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
