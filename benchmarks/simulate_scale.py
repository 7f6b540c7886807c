"""How fast the simulator writes DHIS2 data at national scale, and with how much memory.

Usage: ``python -m benchmarks.simulate_scale --districts 750`` (about 10 million DHIS2 data
values over the default three years). The country is written to a temporary folder and
deleted; the figures go to ``benchmarks/results/simulate-<districts>d-<time>.json``.
Peak memory is the process's own maximum resident set size: the generator streams values to
disk district by district, so it should not grow with the country.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.run import HERE, machine
from pipelines.simulate import simulate


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--districts", type=int, default=750)
    parser.add_argument("--weeks", type=int, default=156)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="healthpipe-simulate-"))
    try:
        started = time.perf_counter()
        result = simulate(workdir, districts=args.districts, weeks=args.weeks, sources=["dhis2"])
        seconds = time.perf_counter() - started
        size = folder_bytes(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    counts = result.counts["dhis2"]
    values = sum(n for what, n in counts.items() if what.startswith("data_values"))
    record = {
        "benchmark": "simulate_dhis2",
        "districts": args.districts,
        "facilities": len(result.simulation.country.facilities),
        "weeks": args.weeks,
        "data_values": values,
        "seconds": round(seconds, 2),
        "values_per_second": round(values / seconds),
        "bytes_written": size,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
    }
    name = f"simulate-{args.districts}d-{record['recorded_at'].replace(':', '')}.json"
    (HERE / "results" / name).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
