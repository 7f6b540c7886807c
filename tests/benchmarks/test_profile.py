"""The report names the slowest step of each scale's full refresh and, for the transform, the
dbt nodes that took longest; and it says in one sentence which goals are met at L."""

from __future__ import annotations

from typing import Any

from benchmarks import report
from benchmarks.run import medians


def _full_refresh(seconds: float, transform: float, nodes: list[list[Any]]) -> dict[str, Any]:
    """One run's full-refresh stage as the pipeline stage records it."""
    return {
        "seconds": seconds,
        "rows": 1000.0,
        "peak_rss_mib": 100.0,
        "steps_s": {"extract": 30.0, "land": 5.0, "validate": 10.0, "transform": transform},
        "extract_s": 15.0,
        "data_values": 900,
        "dbt_nodes": 40,
        "dbt_node_s": sum(s for _, s in nodes),
        "slowest_nodes": nodes,
    }


def test_the_profile_is_the_median_runs_and_names_the_slowest_nodes() -> None:
    runs = [
        {"full_refresh": _full_refresh(90.0, 50.0, [["model.hp.a", 30.0]])},
        {"full_refresh": _full_refresh(70.0, 40.0, [["model.hp.b", 25.0], ["test.hp.t", 2.0]])},
        {"full_refresh": _full_refresh(50.0, 20.0, [["model.hp.c", 10.0]])},
    ]
    full = medians(runs)["full_refresh"]
    assert full["seconds"] == 70.0
    # the profile is the middle run's, not a mixture of runs
    assert full["slowest_nodes"] == [["model.hp.b", 25.0], ["test.hp.t", 2.0]]
    assert full["dbt_node_s"] == 27.0

    result = {"scale": "M", "medians": {"full_refresh": full}, "once": {}}
    (line,) = [ln for ln in report.profile_section({"M": result}) if ln.startswith("- ")]
    assert "full refresh 70.0 s; its slowest step is **transform**, 40.0 s (57%)" in line
    assert "`b` (model) 25.0 s, `t` (test) 2.0 s" in line
    # the extract step spans landing and validation: only its pulling competes as a step
    steps = report.full_refresh_steps(full)
    assert "extract" not in steps and steps[report.PULLING] == 15.0


def test_a_slowest_step_other_than_the_transform_is_named_without_nodes() -> None:
    full = medians([{"full_refresh": _full_refresh(100.0, 5.0, [["model.hp.a", 4.0]])}])[
        "full_refresh"
    ]
    full["step_validate_s"] = 60.0
    result = {"scale": "S", "medians": {"full_refresh": full}, "once": {}}
    (line,) = [ln for ln in report.profile_section({"S": result}) if ln.startswith("- ")]
    assert "slowest step is **validate**, 60.0 s (60%)." in line
    assert "`a`" not in line


def test_the_goals_met_at_l_are_said_in_one_sentence() -> None:
    full = _full_refresh(100.0, 60.0, [])
    result = {
        "scale": "L",
        "medians": {
            "full_refresh": medians([{"full_refresh": full}])["full_refresh"],
            "incremental_no_change": {"seconds": 9.0, "rows": 1.0, "peak_rss_mib": 10.0},
            "incremental_1pct": {"failed": "killed by SIGKILL"},
        },
        "once": {},
    }
    sentence = report.verdicts(result)
    met = sentence.split("**met** (")[1].split(";")[0]
    assert "whole pipeline, full refresh" in met and "nothing changed" in met
    assert "**not measured**" in sentence
    assert "incremental run, 1% of values changed (its stage failed)" in sentence
    section = "\n".join(report.goals_section({"L": result}))
    assert sentence in section
