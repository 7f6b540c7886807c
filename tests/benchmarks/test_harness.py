"""`make bench SCALE=S` works: every stage runs and reports sane figures (not their speed,
which belongs to benchmarks/RESULTS.md, never to a timed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_STAGES = ("full_refresh", "incremental_no_change", "incremental_1pct")


@pytest.fixture(scope="module")
def harness_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--scale", "S", "--runs", "1",
         "--cache", str(tmp / "cache"), "--results-dir", str(tmp / "results"),
         "--memory-limit", "2GB"],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=900, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (result_file,) = (tmp / "results").glob("S-*.json")
    result: dict[str, object] = json.loads(result_file.read_text(encoding="utf-8"))
    return result


def test_every_stage_ran_and_reported(harness_result: dict[str, object]) -> None:
    medians = harness_result["medians"]
    assert isinstance(medians, dict)
    expected = {
        "extract_json", "extract_csv", "full_refresh", "limit_aggregate", "limit_validate",
        "limit_read_csv", "incremental_no_change", "incremental_1pct", "peer_pandas", "peer_dlt",
    }  # fmt: skip
    assert set(medians) == expected
    for name, stage in medians.items():
        assert stage["seconds"] > 0 and stage["peak_rss_mib"] > 0, name
        assert stage["rows"] > 0, name
    # the full refresh's profile: dbt's slowest nodes, from audit.dbt_node_runs
    full = medians["full_refresh"]
    assert full["dbt_nodes"] > 100 and full["dbt_node_s"] > 0
    slowest = [seconds for _, seconds in full["slowest_nodes"]]
    assert slowest == sorted(slowest, reverse=True) and len(slowest) == 12
    kinds = {node.split(".")[0] for node, _ in full["slowest_nodes"]}
    assert kinds <= {"model", "test", "unit_test", "seed", "snapshot"} and "model" in kinds


def test_every_source_of_values_saw_the_same_values(harness_result: dict[str, object]) -> None:
    medians = harness_result["medians"]
    assert isinstance(medians, dict)
    values = medians["extract_json"]["rows"]
    # JSON and CSV over HTTP, the pipeline, both peers and the raw table: one count
    assert medians["extract_csv"]["rows"] == values
    assert medians["full_refresh"]["data_values"] == values
    # the simulator's CSV export files differ from its JSON by a few injected defects
    assert abs(medians["limit_read_csv"]["rows"] - values) <= 0.001 * values
    assert medians["peer_pandas"]["rows"] == values
    assert medians["peer_dlt"]["rows"] == values
    # raw holds each natural key once: the simulator's injected duplicates collapse
    assert 0.999 * values <= medians["limit_validate"]["rows"] <= values


def test_incremental_runs_pull_the_change_and_only_it(harness_result: dict[str, object]) -> None:
    medians = harness_result["medians"]
    assert isinstance(medians, dict)
    values = medians["extract_json"]["rows"]
    nothing = medians["incremental_no_change"]["data_values"]
    changed = medians["incremental_1pct"]["data_values"]
    # the overlap window re-reads the last few minutes' values; the 1% run adds about 1%
    assert nothing < 0.01 * values
    assert 0.005 * values < changed - nothing < 0.02 * values
    assert (
        medians["incremental_no_change"]["step_transform_s"]
        < medians["full_refresh"]["step_transform_s"]
    )


def test_the_warehouse_ran_under_the_memory_limit(harness_result: dict[str, object]) -> None:
    # the pipeline rejects a malformed limit, so a recorded run shows it was applied
    # this run did not ask for the Spark stage, so the settings say so too
    assert harness_result["settings"] == {"memory_limit": "2GB", "spark": False}


def test_once_per_scale_stages(harness_result: dict[str, object]) -> None:
    once = harness_result["once"]
    assert isinstance(once, dict)
    assert {"extract_fhir", "extract_hl7", "extract_odk", "alerts_farrington"} <= set(once)
    assert all(stage["rows"] > 0 for stage in once.values())
    gappy, complete = once["alerts_farrington_missing"], once["alerts_farrington"]
    assert gappy["missing_share"] == 0.02 and complete["missing_share"] == 0.0
    # the missing weeks are judged too (where their baselines allow), not dropped series
    assert 0.5 * complete["series_weeks_judged"] < gappy["series_weeks_judged"]
    if os.environ.get("CI"):
        assert "postgres_full_refresh" in once
