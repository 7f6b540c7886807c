"""A stage's peak memory is its own, not the harness's that started it."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.stages import peak_rss_mib


def test_a_stage_does_not_inherit_the_harness_peak() -> None:
    ballast = bytearray(400 * 1024 * 1024)
    for offset in range(0, len(ballast), 4096):  # touch every page: resident, not just mapped
        ballast[offset] = 1
    assert peak_rss_mib() > 400
    child = subprocess.run(
        [sys.executable, "-c", "from benchmarks.stages import peak_rss_mib; print(peak_rss_mib())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert float(child.stdout.strip()) < 300, child.stdout
    del ballast
