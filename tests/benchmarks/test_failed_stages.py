"""A stage that fails at a large scale (out of memory, say) is recorded as failed, with its
reason, and the figures measured around it are kept and reported."""

from __future__ import annotations

from typing import Any

from benchmarks import report
from benchmarks.run import (
    attempt,
    exit_status,
    failed_stages,
    failure_reason,
    medians,
    warehouse_url,
)


def _figures(seconds: float) -> dict[str, Any]:
    return {"seconds": seconds, "rows": 100.0, "peak_rss_mib": 50.0}


def test_a_failing_stage_is_recorded_with_its_reason() -> None:
    outcome = attempt("no_such_stage")
    assert set(outcome) == {"failed"}
    assert "no_such_stage" in outcome["failed"]


def test_the_reason_kept_is_the_last_line_without_this_machines_paths() -> None:
    error = (
        'Traceback (most recent call last):\n  File "/srv/x/benchmarks/stages.py", line 1\n'
        "TransformError: failed in (models/marts/a.sql); full log: /srv/x/var/dbt/dbt.log\n"
    )
    assert (
        failure_reason(error) == "TransformError: failed in (models/marts/a.sql); full log: dbt.log"
    )


def test_a_stage_killed_by_a_signal_says_so() -> None:
    # a killed process writes nothing: the reason is how it ended, not an empty line
    error = f"stage pipeline failed:\n\n{exit_status(-9)}"
    assert failure_reason(error) == "killed by SIGKILL (out of memory, or stopped by hand)"
    assert exit_status(-15) == "killed by SIGTERM"
    assert exit_status(2) == "exited with status 2"


def test_medians_leave_out_failed_runs_and_keep_the_reason() -> None:
    runs = [
        {"peer_dlt": {"failed": "MemoryError"}, "extract_csv": _figures(4.0)},
        {"peer_dlt": _figures(9.0), "extract_csv": _figures(2.0)},
        {"peer_dlt": {"failed": "MemoryError"}, "extract_csv": _figures(3.0)},
    ]
    summary = medians(runs)
    assert summary["peer_dlt"]["seconds"] == 9.0
    assert summary["extract_csv"]["seconds"] == 3.0
    every_run_failed = medians([{"peer_dlt": {"failed": "MemoryError"}}])
    assert every_run_failed == {"peer_dlt": {"failed": "MemoryError"}}


def _result(
    scale: str, medians: dict[str, Any], once: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """A result file as the harness writes it, one run on the benchmark machine."""
    return {
        "scale": scale,
        "runs": 1,
        "recorded_at": "2026-11-28T00:00:00Z",
        "harness_seconds": 60.0,
        "machine": {"cores": 2, "memory_gib": 23.5, "python": "3.11.7"},
        "settings": settings,
        "medians": medians,
        "once": once,
        "all_runs": [],
    }


def test_the_report_says_which_stage_failed_and_keeps_the_rest() -> None:
    result = _result(
        "L",
        {
            "extract_csv": {**_figures(2.0), "rows_per_s": 50.0},
            "limit_read_csv": {**_figures(1.0), "rows_per_s": 100.0},
            "full_refresh": {"failed": "Traceback ...\nduckdb.OutOfMemoryException: | 8GB"},
        },
        once={"alerts_farrington": {"failed": "killed"}},
        settings={"memory_limit": "8GB"},
    )
    goals = "\n".join(report.goals_section({"L": result}))
    assert "50/s; DuckDB read_csv 100/s (0.50x) **no**" in goals
    whole = next(line for line in goals.splitlines() if line.startswith("| whole pipeline"))
    assert "**failed** (whole pipeline, full refresh)" in whole
    # the failed stage's peak is unknown: the memory goal is not judged on the others alone
    peak = next(line for line in goals.splitlines() if line.startswith("| peak memory"))
    assert "**failed**" in peak and "yes" not in peak
    farrington = next(line for line in goals.splitlines() if "Farrington" in line)
    assert "**failed**" in farrington
    section = "\n".join(report.scale_section(result))
    assert "DuckDB memory_limit 8GB" in section
    assert (
        "| whole pipeline, full refresh | failed: duckdb.OutOfMemoryException: / 8GB |" in section
    )
    assert "| alerts_farrington | failed: killed |" in section
    assert failed_stages({**result, "all_runs": [result["medians"]]}) == [
        "alerts_farrington",
        "full_refresh",
    ]


def test_the_memory_limit_reaches_the_warehouse_url(tmp_path: Any) -> None:
    path = tmp_path / "warehouse.duckdb"
    assert warehouse_url(path, None) == f"duckdb:///{path}"
    assert warehouse_url(path, "8GB") == f"duckdb:///{path}?memory_limit=8GB"


def test_a_stopped_run_is_recorded_from_its_progress_file(tmp_path: Any, monkeypatch: Any) -> None:
    import json
    import sys

    from benchmarks import run

    cache, results = tmp_path / "cache", tmp_path / "results"
    cache.mkdir()
    measured = {
        "extract_json": _figures(2.0),
        "full_refresh": {**_figures(60.0), "steps_s": {"transform": 40.0}, "extract_s": 5.0,
                         "data_values": 100},
    }  # fmt: skip
    (cache / "L-run-1-progress.json").write_text(json.dumps(measured), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["run", "--scale", "L", "--cache", str(cache),
                                      "--results-dir", str(results),
                                      "--record-stopped", "machine needed"])  # fmt: skip
    run.main()
    (result_file,) = results.glob("L-*.json")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert result["stopped"] == "machine needed"
    assert result["medians"]["full_refresh"]["seconds"] == 60.0
    assert set(result["medians"]) == {"extract_json", "full_refresh"}
    goals = "\n".join(report.goals_section({"L": result}))
    assert "60.0 s **yes**" in goals and "not measured" in goals
    assert "**Stopped** before its end: machine needed" in "\n".join(report.scale_section(result))


def test_the_spark_stage_runs_only_when_asked(tmp_path: Any, monkeypatch: Any) -> None:
    from benchmarks import run

    called: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(run, "attempt", lambda name, **args: called.append((name, args)) or {})
    monkeypatch.setattr(run, "postgres_url", lambda: None)
    run.once_per_scale(run.SCALES["S"], tmp_path, "http://sandbox", tmp_path / "S-run")
    assert "transform_spark" not in [name for name, _ in called]
    once = run.once_per_scale(
        run.SCALES["S"], tmp_path, "http://sandbox", tmp_path / "S-run", spark=True
    )
    assert "transform_spark" in once
    args = dict(called)["transform_spark"]
    assert args["duckdb_path"] == str(tmp_path / "S-run" / "warehouse.duckdb")


def test_a_peak_known_to_be_wrong_is_shown_as_not_known() -> None:
    """A run whose peaks were recorded wrongly (null in its JSON) says so, and the memory goal
    is judged on the stages that have one."""
    result = _result(
        "M",
        {
            "extract_csv": {**_figures(2.0), "rows_per_s": 50.0, "peak_rss_mib": None},
            "full_refresh": {**_figures(3.0), "rows_per_s": 10.0, "peak_rss_mib": 512.0},
        },
        once={},
        settings={},
    )
    section = "\n".join(report.scale_section(result))
    assert "| 50 | not known |" in section
    peak = next(
        line for line in report.goals_section({"M": result}) if line.startswith("| peak memory")
    )
    assert "0.50 GiB" in peak
