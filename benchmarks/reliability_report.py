"""Render RELIABILITY.md from the figures the reliability suite recorded.

Each test of ``tests/reliability`` appends one JSON line per injected fault to the file named
by ``HEALTHPIPE_RELIABILITY_RESULTS`` (``make reliability`` uses
``benchmarks/results/reliability.jsonl``): the area, what was injected, how many times, what
was lost, and figures. This script groups them by area into one table each.

Usage: ``python -m benchmarks.reliability_report [results.jsonl] [RELIABILITY.md]``
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path("benchmarks/results/reliability.jsonl")
DEFAULT_OUTPUT = Path("RELIABILITY.md")

AREAS = (
    "re-runs",
    "killed mid-run",
    "database restart",
    "network",
    "duplicate delivery",
    "late and corrected data",
    "schema drift",
    "hostile input",
    "access",
    "secrets",
    "privacy",
    "audit",
)

INTRO = """# Reliability

Issue 10: healthpipe keeps working, loses nothing and leaks nothing when it is re-run,
killed, cut off from its database or its sources, sent the same data again, sent late or
corrected data, sent data in a new shape, or sent hostile input. Every figure below was
written by a test of the reliability suite (`tests/reliability`, and the tests elsewhere
marked `reliability`) in the run recorded here; `make reliability`
runs the suite with 50 random kill points and a real PostgreSQL restart, and regenerates
this page (`python -m benchmarks.reliability_report`). `make test` runs the same tests with
3 kill points and terminates the loader's PostgreSQL backend instead of restarting the
server.

"Lost" counts source records missing (or partly landed batches, or secrets found, or masked
counts recovered, or rows a role saw outside its subtree, or rows without an audit trail)
after the fault and the recovery the test describes.
"""


def _figures(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if value in ({}, []):
            value = "none"
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(str(v) for v in value)
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts).replace("|", "\\|")


def render(rows: list[dict[str, Any]]) -> str:
    by_area: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_area[row["area"]].append(row)
    recorded = sorted(row["recorded_at"] for row in rows)
    lines = [INTRO]
    if recorded:
        lines.append(f"Recorded {recorded[0]} to {recorded[-1]} (UTC).\n")
    total_lost = sum(int(row["lost"]) for row in rows)
    lines.append(f"**{len(rows)} scenarios, lost in all: {total_lost}.**\n")
    for area in [*AREAS, *sorted(set(by_area) - set(AREAS))]:
        if area not in by_area:
            continue
        lines.append(f"## {area[0].upper()}{area[1:]}\n")
        lines.append("| injected | times | lost | figures |")
        lines.append("|---|---:|---:|---|")
        for row in by_area[area]:
            injected = str(row["injected"]).replace("|", "\\|")
            lines.append(
                f"| {injected} | {row['times']:,} | {row['lost']} | {_figures(row['figures'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_RESULTS
    target = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line]
    target.write_text(render(rows), encoding="utf-8")
    print(f"{target}: {len(rows)} results from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
