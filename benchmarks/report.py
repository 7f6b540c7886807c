"""``benchmarks/RESULTS.md`` from the recorded result files: the goals of the performance issue
with each figure, its reference and the ratio, then every stage per scale."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCALE_ORDER = ("S", "M", "L", "XL")
GIB = 1024.0
FARRINGTON_GOAL_SERIES = 100_000  # 10,000 org units x 10 diseases


def latest_results(folder: Path = HERE / "results") -> dict[str, dict[str, Any]]:
    """Per scale, the newest run of every stage (files sort by time within a scale), with the
    partial runs recorded after it (``--stages``) laid over it stage by stage."""
    by_scale: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        if "once" in result and "scale" in result:
            by_scale.setdefault(result["scale"], []).append({**result, "file": path.name})
    latest = {scale: laid_over(results) for scale, results in by_scale.items()}
    return {scale: latest[scale] for scale in SCALE_ORDER if scale in latest}


def laid_over(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The last whole run (not ``--stages``) with the later partial runs' stages in place of
    its own; ``added`` says which file each came from."""
    wholes = [i for i, result in enumerate(results) if not result.get("stages")]
    start = wholes[-1] if wholes else 0
    merged = {**results[start], "medians": dict(results[start]["medians"]),
              "once": dict(results[start]["once"]), "added": []}  # fmt: skip
    base_file = results[start].get("file")
    origin = {stage: base_file for stage in (*merged["medians"], *merged["once"])}
    for partial in results[start + 1 :]:
        merged["medians"].update(partial["medians"])
        merged["once"].update(partial["once"])
        origin.update({stage: partial["file"] for stage in (*partial["medians"], *partial["once"])})
        merged["added"].append(
            {
                "file": partial["file"],
                "recorded_at": partial["recorded_at"],
                "runs": partial["runs"],
                "stages": [*partial["medians"], *partial["once"]],
                "machine": partial.get("machine", {}),
                "code": partial.get("code"),
                "reused_warehouse": bool(partial.get("reused_warehouse")),
            }
        )
    # which run each figure now comes from: a later run may replace an earlier one's stages
    merged["origin"] = origin
    for added in merged["added"]:
        added["kept"] = [stage for stage in added["stages"] if origin[stage] == added["file"]]
    merged["base_kept"] = [stage for stage, file in origin.items() if file == base_file]
    return merged


class StageFailed(Exception):
    """A stage the goal needs failed in the recorded run (out of memory, say)."""


def _stage(result: dict[str, Any], name: str) -> dict[str, float]:
    stage: dict[str, Any] = result["medians"].get(name, {})
    if "failed" in stage:
        raise StageFailed(name)
    return stage


def _ingest_seconds(result: dict[str, Any]) -> float:
    full = _stage(result, "full_refresh")
    return (
        full.get("extract_s", 0.0) + full.get("step_land_s", 0.0) + full.get("step_validate_s", 0.0)
    )


def _land_validate(result: dict[str, Any]) -> tuple[float, float]:
    full = _stage(result, "full_refresh")
    seconds = full.get("step_land_s", 0.0) + full.get("step_validate_s", 0.0)
    return seconds, full.get("rows", 0.0)


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    measure: Callable[[dict[str, Any]], tuple[float, str, bool | None]]
    """result -> (value, text with its reference and ratio, met?)"""


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def whole(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    seconds = _stage(result, "full_refresh")["seconds"]
    return seconds, f"{seconds:,.1f} s", seconds < 120


def extract_csv(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    ours = _stage(result, "extract_csv")["rows_per_s"]
    limit = _stage(result, "limit_read_csv")["rows_per_s"]
    return (
        ours,
        f"{_rate(ours)}; DuckDB read_csv {_rate(limit)} ({ours / limit:.2f}x)",
        ours >= 800_000,
    )


def extract_json(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    ours = _stage(result, "extract_json")["rows_per_s"]
    return ours, _rate(ours), ours >= 200_000


def land_validate(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    seconds, rows = _land_validate(result)
    limit = _stage(result, "limit_validate")
    rate = rows / seconds if seconds else 0.0
    ratio = seconds / limit["seconds"] if limit["seconds"] else float("inf")
    text = f"{_rate(rate)}; hand-written SQL checks {_rate(limit['rows_per_s'])} ({ratio:.1f}x the time)"
    return rate, text, rate >= 2_000_000 and ratio <= 1.5


def transform(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    seconds = _stage(result, "full_refresh").get("step_transform_s", 0.0)
    limit = _stage(result, "limit_aggregate")["seconds"]
    ratio = seconds / limit if limit else float("inf")
    return (
        ratio,
        f"dbt {seconds:,.1f} s; one DuckDB query {limit:,.2f} s ({ratio:,.0f}x)",
        ratio <= 3,
    )


def no_change(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    seconds = _stage(result, "incremental_no_change")["seconds"]
    return seconds, f"{seconds:,.1f} s", seconds < 15


def one_percent(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    seconds = _stage(result, "incremental_1pct")["seconds"]
    full = _stage(result, "full_refresh")["seconds"]
    share = seconds / full
    return share, f"{seconds:,.1f} s = {share:.0%} of the full refresh", share < 0.10


def memory(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    ours = (
        "extract_json",
        "extract_csv",
        "full_refresh",
        "incremental_no_change",
        "incremental_1pct",
    )
    for name in ours:  # a failed stage's peak is unknown: the goal cannot be judged
        if "failed" in result["medians"].get(name, {}):
            raise StageFailed(name)
    measured = [
        name for name in ours if result["medians"].get(name, {}).get("peak_rss_mib") is not None
    ]
    peak = max(_stage(result, name)["peak_rss_mib"] for name in measured)
    return peak, f"{peak / GIB:.2f} GiB", peak < 2 * GIB


def farrington(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    stage = result["once"]["alerts_farrington"]
    if "failed" in stage:
        raise StageFailed("alerts_farrington")
    per_series = stage["seconds"] / stage["rows"]
    estimate = per_series * FARRINGTON_GOAL_SERIES
    measured = stage["rows"] >= FARRINGTON_GOAL_SERIES
    how = "measured" if measured else f"extrapolated from {stage['rows']:,} series"
    return estimate, f"{estimate:,.0f} s for 100,000 series ({how})", estimate < 60


def versus_dlt(result: dict[str, Any]) -> tuple[float, str, bool | None]:
    ours = _stage(result, "full_refresh")["rows"] / _ingest_seconds(result)
    dlt = _stage(result, "peer_dlt")["rows_per_s"]
    pandas = _stage(result, "peer_pandas")["rows_per_s"]
    ratio = ours / dlt if dlt else float("inf")
    text = f"ours {_rate(ours)}; dlt {_rate(dlt)} ({ratio:.2f}x); requests+pandas {_rate(pandas)}"
    return ratio, text, ratio >= 2


GOALS = (
    Goal(
        "whole pipeline, full refresh (sandbox to indicator_values and alerts)",
        "< 120 s at L",
        whole,
    ),
    Goal("extract DHIS2 CSV over HTTP", ">= 800,000 values/s", extract_csv),
    Goal("extract DHIS2 JSON over HTTP", ">= 200,000 values/s", extract_json),
    Goal("land + validate", ">= 2,000,000 rows/s and <= 1.5x the SQL checks", land_validate),
    Goal("transform (dbt build) vs the hand-written aggregation", "<= 3x", transform),
    Goal("incremental run, nothing changed", "< 15 s", no_change),
    Goal("incremental run, 1% of values changed", "< 10% of full refresh", one_percent),
    Goal("peak memory of any pipeline stage", "< 2 GiB at L", memory),
    Goal("Farrington flexible, 10,000 org units x 10 diseases x 5 years", "< 60 s", farrington),
    Goal("ingest throughput vs dlt (extract + land + validate)", ">= 2x dlt", versus_dlt),
)


def goals_section(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Goals",
        "",
        "Goals are set for the L scale (10 million values) on 2 cores; smaller scales show how",
        "the figures move with size. `yes`/`no` says whether the figure meets the goal's number",
        "at that scale.",
        "",
        "| goal | target | " + " | ".join(results) + " |",
        "|---|---|" + "---|" * len(results),
    ]
    for goal in GOALS:
        cells = []
        for result in results.values():
            try:
                _, text, met = goal.measure(result)
            except StageFailed as failed:
                cells.append(f"**failed** ({STAGE_LABELS.get(str(failed), str(failed))})")
                continue
            except (KeyError, ValueError, ZeroDivisionError):
                cells.append("not measured")
                continue
            verdict = "" if met is None else (" **yes**" if met else " **no**")
            cells.append(f"{text}{verdict}")
        lines.append(f"| {goal.name} | {goal.target} | " + " | ".join(cells) + " |")
    if GOAL_SCALE in results:
        lines += ["", verdicts(results[GOAL_SCALE])]
    return [*lines, ""]


GOAL_SCALE = "L"


def verdicts(result: dict[str, Any]) -> str:
    """The goals met, not met and not measured at the goals' own scale, in one sentence."""
    found: dict[str, list[str]] = {"met": [], "not met": [], "not measured": []}
    for goal in GOALS:
        try:
            _, _, met = goal.measure(result)
        except StageFailed:
            found["not measured"].append(f"{goal.name} (its stage failed)")
            continue
        except (KeyError, ValueError, ZeroDivisionError):
            found["not measured"].append(goal.name)
            continue
        found["met" if met else "not met"].append(goal.name)
    said = "; ".join(
        f"**{kind}** ({len(names)}): {', '.join(names)}" for kind, names in found.items() if names
    )
    return f"At {result['scale']}, the scale the goals are set for: {said}."


PULLING = "pulling pages"
"""The extract step less the landing, validation and reconciliation it spans."""


def full_refresh_steps(full: dict[str, Any]) -> dict[str, float]:
    """The full refresh's steps that do not overlap, in seconds (from ``audit.pipeline_runs``):
    the extract step spans landing, validation and reconciliation, so it counts as the pages'
    pulling alone."""
    steps = {k[5:-2]: float(v) for k, v in full.items() if k.startswith("step_")}
    steps.pop("extract", None)
    if "extract_s" in full:
        steps[PULLING] = float(full["extract_s"])
    return steps


def profile_section(results: dict[str, dict[str, Any]]) -> list[str]:
    """Per scale, the slowest step of the full refresh and, when it is the transform, the dbt
    nodes that took longest (dbt's own time per node, from ``audit.dbt_node_runs``)."""
    lines = ["## Profile of the slowest stage", ""]
    for scale, result in results.items():
        full = result["medians"].get("full_refresh", {})
        steps = full_refresh_steps(full) if "failed" not in full else {}
        if not steps:
            continue
        slowest = max(steps, key=lambda step: steps[step])
        total = float(full["seconds"])
        line = (
            f"- **{scale}**: full refresh {total:,.1f} s; its slowest step is **{slowest}**, "
            f"{steps[slowest]:,.1f} s ({steps[slowest] / total:.0%})"
        )
        nodes = full.get("slowest_nodes")
        if slowest == "transform" and nodes:
            named = ", ".join(
                f"`{node.split('.')[-1]}` ({node.split('.')[0]}) {seconds:,.1f} s"
                for node, seconds in nodes
            )
            line += (
                f". dbt ran {full.get('dbt_nodes', 0):,} nodes for {full.get('dbt_node_s', 0):,.1f}"
                f" s of their own time; the slowest: {named}."
            )
        elif slowest == "transform":
            line += "; this run predates the per-node record (`audit.dbt_node_runs`)."
        else:
            line += "."
        lines.append(line)
    return [*lines, ""] if len(lines) > 2 else []


STAGE_LABELS = {
    "extract_json": "extract DHIS2 JSON (connector, parse, no landing)",
    "extract_csv": "extract DHIS2 CSV (connector, parse, no landing)",
    "full_refresh": "whole pipeline, full refresh",
    "limit_aggregate": "limit: the aggregation as one DuckDB query",
    "limit_validate": "limit: the checks as one DuckDB query",
    "limit_read_csv": "limit: DuckDB read_csv of the CSV export",
    "incremental_after_alerts": "incremental run after the full refresh (its alerts are new)",
    "incremental_no_change": "incremental run, nothing changed",
    "incremental_1pct": "incremental run, 1% changed",
    "peer_pandas": "peer: requests + json + pandas into DuckDB",
    "peer_dlt": "peer: dlt into DuckDB (merge)",
}


def machine_note(base: dict[str, Any], other: dict[str, Any]) -> str:
    """How a partial run's machine compares with the whole run's, by their calibration
    workloads (machines of one kind have differed twofold); empty where either lacks them."""
    mine, theirs = base.get("calibration_s") or {}, other.get("calibration_s") or {}
    shared = [name for name in ("duckdb", "python") if mine.get(name) and theirs.get(name)]
    if not shared:
        missing = "the whole run" if not mine else "this run"
        return f" Its machine cannot be compared with the whole run's ({missing} predates the calibration)."
    ratios = ", ".join(f"{name} {mine[name] / theirs[name]:.2f}x" for name in shared)
    return f" Its machine against the whole run's (calibration, higher is faster): {ratios}."


def added_line(added: dict[str, Any], machine: dict[str, Any], base_counts: bool) -> str:
    """The sentence naming a ``--stages`` run laid over the whole one: its file and code, the
    stages whose figures it still gives, and (when the whole run still gives some figures)
    how the two machines compare."""
    kept = added.get("kept", added["stages"])
    again = [stage for stage in added["stages"] if stage not in kept]
    line = (
        f"\nStages measured later, alone (`--stages`; {added['runs']} run(s), recorded "
        f"{added['recorded_at']}, `results/{added['file']}`"
        + (f", code {added['code']}" if added.get("code") else "")
        + "): "
        + (", ".join(kept) if kept else "none of its figures remain")
        + (f" ({', '.join(again)} measured again later)" if again else "")
        + "."
    )
    if kept and added.get("reused_warehouse"):
        line += " The limits read the warehouse the run before left."
    if kept and base_counts:
        line += machine_note(machine, added.get("machine") or {})
    return line


def scale_section(result: dict[str, Any]) -> list[str]:
    machine = result["machine"]
    limit = (result.get("settings") or {}).get("memory_limit")
    setting = f"; DuckDB memory_limit {limit}" if limit else ""
    if machine.get("cpu"):
        setting += f"; {machine['cpu']}"
    if machine.get("calibration_s"):
        cal = machine["calibration_s"]
        setting += f" (calibration: DuckDB {cal['duckdb']:.2f} s, Python {cal['python']:.2f} s)"
    lines = [
        f"## Scale {result['scale']}",
        "",
        f"{result['runs']} run{'s' if result['runs'] != 1 else ''}, medians; {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}{setting}; recorded {result['recorded_at']}"
        + (f" (code {result['code']})" if result.get("code") else "")
        + (
            f"; the harness took {result['harness_seconds'] / 60:.1f} min."
            if result.get("harness_seconds")
            else "."
        )
        + (f" **Stopped** before its end: {result['stopped']}" if result.get("stopped") else ""),
        *(
            [
                "\nNone of this run's figures remain below: every stage was measured again by the "
                "runs that follow."
            ]
            if result.get("added") and not result.get("base_kept", True)
            else []
        ),
        *(
            added_line(added, machine, bool(result.get("base_kept", True)))
            for added in result.get("added", [])
        ),
        "",
        "| stage | seconds | rows | rows/s | peak memory |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, stage in result["medians"].items():
        label = STAGE_LABELS.get(name, name)
        if "failed" in stage:
            lines.append(f"| {label} | failed: {_reason(stage['failed'])} | | | |")
            continue
        lines.append(
            f"| {label} | {stage['seconds']:,.2f} | {stage['rows']:,.0f} | "
            f"{stage['rows_per_s']:,.0f} | {_peak(stage)} |"
        )
    full = result["medians"].get("full_refresh", {})
    steps = full_refresh_steps(full) if "failed" not in full else {}
    lines.append("")
    if steps:
        lines += [
            "Inside the full refresh (seconds, from `audit.pipeline_runs`; pulling pages is the "
            "extract step less landing, validation and reconciliation): "
            + "; ".join(f"{step} {seconds:,.1f}" for step, seconds in sorted(steps.items()))
            + ".",
            "",
        ]
    if result.get("once"):
        lines += ["Once per scale:", "", "| stage | seconds | rows | rows/s | peak memory |",
                  "|---|---:|---:|---:|---:|"]  # fmt: skip
        for name, stage in result["once"].items():
            if "failed" in stage:
                lines.append(f"| {name} | failed: {_reason(stage['failed'])} | | | |")
                continue
            rate = stage["rows"] / stage["seconds"] if stage["seconds"] else 0
            lines.append(
                f"| {name} | {stage['seconds']:,.2f} | {stage['rows']:,} | {rate:,.0f} | "
                f"{_peak(stage)} |"
            )
        lines.append("")
    return lines


def _reason(failure: str) -> str:
    """The last line of a failed stage's error, fit for a table cell."""
    lines = [line.strip() for line in failure.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no message").replace("|", "/")[:200]


def simulator_section() -> list[str]:
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
    return [*lines, ""]


def _peak(stage: dict[str, Any]) -> str:
    """A stage's peak memory; None where the run recorded a figure known to be wrong."""
    peak = stage.get("peak_rss_mib")
    return "not known" if peak is None else f"{peak:,.0f} MiB"


def write_results_table(notes: str = "") -> None:
    results = latest_results()
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench SCALE=...` (`python -m benchmarks.run`, then",
        "`python -m benchmarks.report`); the raw figures are in `results/`. Each stage runs in",
        "its own process; peak memory is that process's maximum resident set size (VmHWM;",
        "before 2026-11-28 `ru_maxrss`, which Linux carries over from the harness that started",
        "the stage: a stage could not report less than the harness held). Scales: S",
        "(4 districts), M (about 1 million DHIS2 values), L (about 10 million), XL (50 million,",
        "by hand). See `README.md` for what each stage does.",
        "",
    ]
    notes_file = HERE / "NOTES.md"
    notes = notes_file.read_text(encoding="utf-8") if notes_file.exists() else ""
    status, history = split_notes(notes)
    if status:
        lines += [status, ""]
    if results:
        lines += goals_section(results)
        lines += profile_section(results)
        for result in results.values():
            lines += scale_section(result)
    lines += simulator_section()
    if history:
        lines += [history, ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines), encoding="utf-8")


HISTORY = "## History"
"""The heading in NOTES.md after which come the older findings: the report puts the status
before the goals and the history after the tables."""


def split_notes(notes: str) -> tuple[str, str]:
    """NOTES.md's status (before its history heading) and its history (from the heading)."""
    before, found, after = notes.partition(HISTORY)
    return before.strip(), (found + after).strip() if found else ""


if __name__ == "__main__":
    write_results_table()
