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


def test_the_notes_status_comes_first_and_their_history_last() -> None:
    status, history = report.split_notes("**Status.** now\n\n## History\n\n- older\n")
    assert status == "**Status.** now"
    assert history == "## History\n\n- older"
    assert report.split_notes("only a status\n") == ("only a status", "")


def test_only_the_stages_asked_for_run_and_the_rest_must_be_known(
    tmp_path: Any, monkeypatch: Any
) -> None:
    import pytest

    from benchmarks import run

    called: list[str] = []
    served: list[int] = []
    monkeypatch.setattr(run, "attempt", lambda name, **args: called.append(name) or {"n": name})
    monkeypatch.setattr(run, "set_increment", lambda base, number: served.append(number))
    monkeypatch.setattr(run, "postgres_url", lambda: None)
    scale = run.SCALES["S"]
    every = run.one_run(scale, tmp_path, "http://sandbox", tmp_path / "w")
    every_once = run.once_per_scale(scale, tmp_path, "http://sandbox", tmp_path / "w", spark=True)
    # the names --stages accepts are the harness's own
    assert tuple(every) == run.ONE_RUN_STAGES
    assert served == [0, 1, 0]  # the 1% run pulls increment 1, the peers the base again
    served.clear()
    assert set(every_once) == set(run.ONCE_STAGES) - {"postgres_full_refresh"}

    only = run.selected_stages("peer_dlt, alerts_farrington")
    called.clear()
    assert set(run.one_run(scale, tmp_path, "http://sandbox", tmp_path / "w", only=only)) == {
        "peer_dlt"
    }
    assert set(
        run.once_per_scale(scale, tmp_path, "http://sandbox", tmp_path / "w", only=only)
    ) == {"alerts_farrington"}
    assert called == ["peer_dlt", "alerts_farrington"]
    assert served == [0]  # switching the sandbox costs minutes at L: only what is pulled
    assert run.selected_stages(None) is None
    with pytest.raises(SystemExit, match="unknown peer_dl"):
        run.selected_stages("peer_dl")
    with pytest.raises(SystemExit, match="incremental_1pct need full_refresh"):
        run.selected_stages("incremental_1pct")
    # the limits only read the warehouse: without full_refresh, the one the cache holds
    limits = run.selected_stages("limit_aggregate,limit_validate,extract_csv")
    assert run.reuses_warehouse(limits)
    assert not run.reuses_warehouse(run.selected_stages("full_refresh,limit_aggregate"))
    assert not run.reuses_warehouse(run.selected_stages("extract_csv"))
    assert not run.reuses_warehouse(None)


def test_a_partial_run_is_laid_over_the_last_whole_run(tmp_path: Any) -> None:
    import json

    def write(name: str, medians: dict[str, Any], once: dict[str, Any], **extra: Any) -> None:
        result = {"scale": "L", "runs": 1, "recorded_at": name, "medians": medians,
                  "once": once, **extra}  # fmt: skip
        (tmp_path / f"L-{name}.json").write_text(json.dumps(result), encoding="utf-8")

    write("1", {"full_refresh": {"seconds": 1.0}, "peer_dlt": {"seconds": 9.0}}, {})
    write("2", {"peer_dlt": {"seconds": 8.0}}, {}, stages=["peer_dlt"])  # before the last whole
    write("3", {"full_refresh": {"seconds": 3.0}}, {"alerts_farrington": {"seconds": 5.0}})
    write("4", {"peer_dlt": {"seconds": 7.0}}, {"alerts_farrington": {"seconds": 4.0}},
          stages=["alerts_farrington", "peer_dlt"])  # fmt: skip
    merged = report.latest_results(tmp_path)["L"]
    assert merged["medians"] == {"full_refresh": {"seconds": 3.0}, "peer_dlt": {"seconds": 7.0}}
    assert merged["once"] == {"alerts_farrington": {"seconds": 4.0}}
    assert merged["file"] == "L-3.json"
    assert [added["file"] for added in merged["added"]] == ["L-4.json"]
    assert merged["base_kept"] == ["full_refresh"]
    assert merged["added"][0]["kept"] == ["peer_dlt", "alerts_farrington"]


def test_the_report_says_which_figures_each_laid_over_run_still_gives(tmp_path: Any) -> None:
    import json

    def write(name: str, medians: dict[str, Any], **extra: Any) -> None:
        result = {"scale": "L", "runs": 1, "recorded_at": name, "medians": medians,
                  "once": {}, **extra}  # fmt: skip
        (tmp_path / f"L-{name}.json").write_text(json.dumps(result), encoding="utf-8")

    write("1", {"full_refresh": {"seconds": 1.0}, "peer_dlt": {"seconds": 9.0}})
    write("2", {"peer_dlt": {"seconds": 8.0}}, stages=["peer_dlt"])
    write("3", {"full_refresh": {"seconds": 2.0}, "peer_dlt": {"seconds": 7.0}},
          stages=["full_refresh", "peer_dlt"], code="abc1234")  # fmt: skip
    merged = report.latest_results(tmp_path)["L"]
    assert merged["base_kept"] == []
    first, last = (report.added_line(added, {}, False) for added in merged["added"])
    assert "none of its figures remain (peer_dlt measured again later)" in first
    assert "code abc1234): full_refresh, peer_dlt." in last


def test_a_partial_run_on_another_machine_is_compared_by_calibration() -> None:
    """Machines of one kind have run the same code twice as fast as each other: a partial
    run laid over a whole one says how their calibration workloads compare."""
    base = {"calibration_s": {"duckdb": 0.4, "python": 0.1}}
    faster = {"calibration_s": {"duckdb": 0.2, "python": 0.08}}
    assert report.machine_note(base, faster) == (
        " Its machine against the whole run's (calibration, higher is faster): "
        "duckdb 2.00x, python 1.25x."
    )
    assert "predates the calibration" in report.machine_note({}, faster)
    assert "this run predates" in report.machine_note(base, {})


def test_the_machine_record_names_the_processor_and_times_the_calibration() -> None:
    from benchmarks import run

    record = run.machine()
    assert record["cpu"]
    assert set(record["calibration_s"]) == {"duckdb", "python"}
    assert all(0 < seconds < 30 for seconds in record["calibration_s"].values())


def test_a_result_names_the_commit_it_measured() -> None:
    import re

    from benchmarks import run

    version = run.code_version()
    assert version is not None and re.fullmatch(r"[0-9a-f]{4,40}(\+changes)?", version)
