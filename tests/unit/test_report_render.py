"""The bulletin's building blocks without a warehouse: small-cell suppression, axis ticks,
the SVG charts and map, schedules and freshness, and the command line's error handling."""

from __future__ import annotations

import argparse
import itertools
import re
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.report.data import Bulletin, Curve
from pipelines.report.html import render_html
from pipelines.report.suppress import count_label, rate_label, withheld
from pipelines.report.svg import EpiWeek, MapArea, choropleth, class_breaks, epi_curve, nice_ticks
from pipelines.schedules import schedule_interval
from pipelines.status import _freshness


@pytest.mark.parametrize(
    ("count", "label"),
    [(0, "0"), (1, "<5"), (4, "<5"), (4.4, "<5"), (5, "5"), (1234, "1,234"), (None, "\u2013")],
)
def test_counts_from_one_to_four_are_suppressed(count: float | None, label: str) -> None:
    assert count_label(count) == label


def test_a_rate_resting_on_a_small_count_is_withheld() -> None:
    assert rate_label(12.5, numerator=3) == "suppressed"
    assert rate_label(12.5, numerator=30) == "12.5"


@pytest.mark.parametrize("maximum", [0, 1, 3, 7, 12, 49, 51, 130, 999, 2400, 123_456])
def test_axis_ticks_cover_the_data_and_never_read_as_small_counts(maximum: float) -> None:
    ticks = nice_ticks(maximum)
    assert ticks[0] == 0 and ticks[-1] >= maximum
    assert all(t >= 5 for t in ticks[1:])
    assert len(ticks) <= 6
    steps = {b - a for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1


def _svg_numbers(svg: str) -> list[str]:
    texts = re.findall(r"<(?:text|title)[^>]*>([^<]*)<", svg)
    return [m for t in texts for m in re.findall(r"(?<![\w.,\-/:<])[1-4](?![\w.,\-/%:])", t)]


def test_an_epi_curve_draws_small_weeks_as_suppressed_bands() -> None:
    weeks = [EpiWeek(f"2026W{i}", c, 2.0, i == 3) for i, c in enumerate([0, 3, 12, 40, None], 1)]
    svg = epi_curve("Cholera", weeks)
    assert svg.count('class="bar"') == 3  # zero and missing weeks draw nothing
    assert "url(#hp-hatch)" in svg  # the week with 3 cases
    assert "2026W2: &lt;5 cases" in svg and "2026W3: 12 cases (alert)" in svg
    assert 'class="threshold"' in svg
    assert _svg_numbers(svg) == []
    # Text elements carry their class (class_= in Python), not an invalid "class-" attribute.
    assert '<text x="' in svg and 'class="tick"' in svg and "class-=" not in svg


def test_the_choropleth_projects_districts_and_suppresses_small_counts() -> None:
    square = {"type": "Polygon", "coordinates": [[[30, 0], [31, 0], [31, -1], [30, -1], [30, 0]]]}
    east = {"type": "Polygon", "coordinates": [[[31, 0], [32, 0], [32, -1], [31, -1], [31, 0]]]}
    areas = [
        MapArea("West District", [[r for r in square["coordinates"]]], 40.0, 80.0),
        MapArea("East District", [[r for r in east["coordinates"]]], 2.0, 4.0),
    ]
    svg = choropleth("Malaria", areas, width=400, height=300)
    paths = re.findall(r'<path class="area" d="([^"]+)" fill="([^"]+)"', svg)
    assert len(paths) == 2
    xs = [float(x) for d, _ in paths for x in re.findall(r"([\d.]+),[\d.]+", d)]
    assert 0 <= min(xs) < max(xs) <= 400
    assert paths[1][1] == "url(#hp-hatch)"  # 2 cases: no colour class that hints at the rate
    assert ">&lt;5 cases<" in svg and ">80.0<" in svg and ">4.0<" not in svg
    assert _svg_numbers(svg) == []


@pytest.mark.parametrize(
    ("counts", "hidden"),
    [
        ([0, 12, 30, None], [False, False, False, False]),  # nothing small
        ([3, 40, 12, 0, 12], [True, False, True, False, False]),  # smallest other non-zero, first tie
        ([3, 2, 40], [True, True, False]),  # two small hide each other
        ([0, 3, None, 0], [True, True, False, False]),  # only zeros besides: the first joins
        ([None, 3, None], [False, True, False]),  # nothing to pair it with
        ([], []),
    ],
)  # fmt: skip
def test_a_lone_small_count_is_withheld_with_a_complement(
    counts: list[float | None], hidden: list[bool]
) -> None:
    assert withheld(counts) == hidden


def _square(x: float) -> list[list[list[tuple[float, float]]]]:
    return [[[(x, 0), (x + 1, 0), (x + 1, -1), (x, -1), (x, 0)]]]


def test_a_complement_district_is_drawn_and_labelled_as_suppressed() -> None:
    counts = [40.0, 2.0, 9.0, 0.0]
    hidden = withheld(counts)
    assert hidden == [False, True, True, False]
    areas = [
        MapArea(f"{name} District", _square(x), cases, cases * 10.0, withheld=h)
        for name, x, cases, h in zip(
            ["West", "East", "North", "South"], range(4), counts, hidden, strict=True
        )
    ]
    svg = choropleth("Malaria", areas, width=400, height=300)
    fills = re.findall(r'<path class="area" d="[^"]+" fill="([^"]+)"', svg)
    assert fills[1] == fills[2] == "url(#hp-hatch)"  # the small one and its complement alike
    assert fills[0] != "url(#hp-hatch)" and fills[3] != "url(#hp-hatch)"
    assert ">North District: suppressed<" in svg  # tooltip: no count, no "<5"
    values = re.findall(r'"map-value">([^<]*)<', svg)
    assert values == ["400.0", "&lt;5 cases", "suppressed", "0.0"]
    assert ">90.0<" not in svg and ">20.0<" not in svg  # neither rate, anywhere
    # Its rate does not shape the classes: the legend is that of West and South alone.
    legend = re.findall(r'<g class="legend">(.*?)</g>', svg)[0]
    assert "90.0" not in legend and "400.0" in legend
    assert _svg_numbers(svg) == []


def _page(curves: list[Curve]) -> str:
    bulletin = Bulletin("2026W4", date(2026, 1, 19), date(2026, 1, 25), "Testland", [])
    bulletin.curves = curves
    return render_html(bulletin, generated_at=datetime(2026, 1, 26, 6, 0))


def _curve(disease: str, cases: list[float | None]) -> Curve:
    weeks = [f"2026W{i}" for i in range(1, len(cases) + 1)]
    return Curve(disease, disease.title(), weeks, cases, [None] * len(cases), set(), "EARS C2")


def _caption(page: str, disease: str) -> str:
    figure = page.split(f'data-disease="{disease}"', 1)[1]
    return re.sub(r"<[^>]+>", "", figure.split("<figcaption", 1)[1].split("</figcaption>")[0])


def test_a_curve_with_a_small_week_prints_no_exact_total() -> None:
    page = _page([_curve("cholera", [10, 3, 20, 0]), _curve("measles", [10, 0, 20, None])])
    cholera = _caption(page, "cholera")
    assert "33" not in cholera  # 33 - 10 - 20 would give the hidden week back
    assert "30 cases in weeks shown" in cholera and "fewer than five cases withheld" in cholera
    assert "30 cases. Threshold" in _caption(page, "measles")  # nothing hidden: exact total


def test_the_cases_kpi_leaves_out_a_small_disease_week() -> None:
    def kpi(page: str) -> tuple[str, str]:
        found = re.search(r'<b class="count">([^<]*)</b><span>(cases of priority[^<]*)<', page)
        assert found, "no cases KPI"
        return found.group(1), found.group(2)

    # Cholera's 3 in the bulletin week is "<5" on its curve: 43 minus measles' 40 would
    # give it back, so the KPI adds up the diseases shown and says so.
    small = _page([_curve("cholera", [10, 12, 20, 3]), _curve("measles", [0, 0, 5, 40])])
    assert kpi(small) == (
        "40",
        "cases of priority diseases in 2026W4 (diseases with fewer than five left out)",
    )
    shown = _page([_curve("cholera", [10, 12, 20, 6]), _curve("measles", [0, 0, 5, 40])])
    assert kpi(shown) == ("46", "cases of priority diseases in 2026W4")


def test_class_breaks_are_increasing_upper_bounds() -> None:
    assert class_breaks([0, 0]) == []
    breaks = class_breaks([1.0, 2.0, 3.0, 4.0, 50.0, 60.0, 70.0, 80.0])
    assert breaks == sorted(set(breaks)) and breaks[-1] == 80.0


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [("@hourly", timedelta(hours=1)), ("@daily", timedelta(days=1)), ("6h", timedelta(hours=6)),
     ("30m", timedelta(minutes=30)), ("2w", timedelta(weeks=2))],
)  # fmt: skip
def test_schedules(schedule: str, interval: timedelta) -> None:
    assert schedule_interval(schedule) == interval


@pytest.mark.parametrize("schedule", ["daily", "0 6 * * *", "0h", "6 h"])
def test_a_schedule_that_is_not_one_says_what_is_expected(schedule: str) -> None:
    with pytest.raises(ValueError, match="expected @hourly, @daily"):
        schedule_interval(schedule)


def test_freshness_against_the_schedule() -> None:
    day = timedelta(days=1)
    assert _freshness(None, day) == "never"
    assert _freshness(timedelta(hours=30), None) == "unscheduled"
    assert _freshness(timedelta(hours=30), day) == "fresh"
    assert _freshness(timedelta(hours=60), day) == "late"
    assert _freshness(timedelta(hours=80), day) == "stale"


def test_every_command_has_a_description_and_helped_arguments() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"demo", "run", "report", "status", "docs", "alerts", "quarantine"} <= set(commands)
    for name, command in commands.items():
        assert command.description, name
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, (name, action.dest)


def test_an_unexpected_error_is_two_lines_and_the_traceback_needs_verbose(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("disk full\nsecond line of detail")

    monkeypatch.setattr(cli, "cmd_status", broken)
    assert cli.main(["status"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "RuntimeError: disk full" in lines[0] and "--verbose" in lines[1]
    assert cli.main(["--verbose", "status"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_json_errors_are_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from pipelines.errors import HealthpipeError

    def failing(args: argparse.Namespace) -> int:
        raise HealthpipeError("no warehouse")

    monkeypatch.setattr(cli, "cmd_status", failing)
    assert cli.main(["status", "--json"]) == 2
    assert json.loads(capsys.readouterr().err) == {"error": "no warehouse", "hint": None}


def test_the_run_summary_names_the_new_fields_of_the_run() -> None:
    from pipelines.run import EntityCounts, RunSummary, SourceSummary

    quiet = RunSummary(
        run_id="r", sources=[SourceSummary("hmis", entities={"data_values": EntityCounts()})]
    )
    assert cli.new_fields_note(quiet) is None
    drifted = RunSummary(
        run_id="r",
        sources=[
            SourceSummary(
                "hmis",
                entities={
                    "data_elements": EntityCounts(),
                    "data_values": EntityCounts(new_fields=["newField", "storedAt"]),
                },
            ),
            SourceSummary("sheets", entities={"workforce": EntityCounts(new_fields=["note"])}),
        ],
    )
    assert cli.new_fields_note(drifted) == (
        "Schema changes: 3 new fields kept in raw extras (hmis data_values: newField, "
        "storedAt; sheets workforce: note); `healthpipe status` lists them"
    )


def test_commands_that_call_no_source_run_without_the_sources_credentials(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An analyst's shell or a monitoring pod has the warehouse, not every source's secrets;
    a pull still refuses to start without them, naming the variable."""
    import json

    import yaml

    monkeypatch.delenv("HP_TEST_DHIS2_USER", raising=False)
    monkeypatch.delenv("HP_TEST_DHIS2_PASSWORD", raising=False)
    config = tmp_path / "healthpipe.yml"
    source = {"name": "hmis", "type": "dhis2", "base_url": "http://127.0.0.1:9/",
              "username_env": "HP_TEST_DHIS2_USER", "password_env": "HP_TEST_DHIS2_PASSWORD"}  # fmt: skip
    config.write_text(
        yaml.safe_dump({"warehouse": f"duckdb:///{tmp_path / 'w.duckdb'}", "sources": [source]}),
        encoding="utf-8",
    )
    assert cli.main(["status", "--config", str(config), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in status["sources"]] == ["hmis"]
    assert cli.main(["run", "--config", str(config)]) != 0
    assert "environment variable HP_TEST_DHIS2_USER is not set" in capsys.readouterr().err
