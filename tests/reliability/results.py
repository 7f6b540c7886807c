"""Figures the reliability tests produce, appended as JSON lines and rendered into
RELIABILITY.md by ``python -m benchmarks.reliability_report``.

``HEALTHPIPE_RELIABILITY_RESULTS`` names the file (``make reliability`` points it at
``benchmarks/results/reliability.jsonl``); unset, the figures go to a file in pytest's
temporary folder, so ``make test`` never touches the committed results.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENV = "HEALTHPIPE_RELIABILITY_RESULTS"


class Results:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, area: str, injected: str, times: int, lost: int, **figures: Any) -> None:
        """One row of RELIABILITY.md: in ``area``, ``injected`` happened ``times`` times and
        ``lost`` records (or bytes, or leaks) were lost; ``figures`` add detail."""
        row = {
            "area": area,
            "injected": injected,
            "times": times,
            "lost": lost,
            "figures": figures,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, sort_keys=True, default=str) + "\n")


def results_path(default: Path) -> Path:
    named = os.environ.get(ENV)
    return Path(named) if named else default
