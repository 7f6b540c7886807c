"""The alerting benchmark on a tiny configuration: shape of what it records, not its speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.alerting.run import ORACLE, markdown, run_benchmark, write_outputs
from benchmarks.alerting.simulate import (
    CURRENT_WEEKS,
    FIRST_CURRENT,
    K_VALUES,
    SCENARIOS,
    WEEKS,
    simulate,
)
from pipelines.alerts import METHODS

pytestmark = pytest.mark.unit

MEASURES = {
    "false_positive_rate",
    "false_alarms",
    "weeks_without_outbreak",
    "judged_share",
    "outbreaks",
    "detected",
    "probability_of_detection",
    "median_delay_weeks",
}


def test_simulation_shapes_and_outbreaks_in_the_current_weeks() -> None:
    simulation = simulate(2, seed=3, scenarios=SCENARIOS[:2])
    n = 2 * 2 * len(K_VALUES)
    assert simulation.counts.shape == (n, WEEKS)
    assert simulation.outbreak.shape == (n, WEEKS)
    assert np.all(simulation.outbreak[:, :FIRST_CURRENT] == 0)
    assert np.all(simulation.counts >= simulation.outbreak)
    assert np.all((simulation.start >= FIRST_CURRENT) & (simulation.start < WEEKS))
    assert sorted(set(simulation.k.tolist())) == list(K_VALUES)
    # the same seed gives the same series
    again = simulate(2, seed=3, scenarios=SCENARIOS[:2])
    np.testing.assert_array_equal(simulation.counts, again.counts)


def test_harness_records_every_method_and_k(tmp_path: Path) -> None:
    document = run_benchmark(series=1, seed=7, scenarios=SCENARIOS[5:7])
    methods = [*sorted(METHODS), ORACLE]
    assert list(document["results"]) == methods
    for method in methods:
        assert set(document["results"][method]) == {*map(str, K_VALUES), "all"}
        for measures in document["results"][method].values():
            assert set(measures) == MEASURES
            rate = measures["false_positive_rate"]
            assert rate is None or 0 <= rate <= 1
            assert measures["detected"] <= measures["outbreaks"]
        assert set(document["per_scenario"][method]) == {"g5_m1", "g6_trend_m2"}
    assert document["config"]["current_weeks"] == CURRENT_WEEKS
    assert document["config"]["series"] == 2 * len(K_VALUES)
    assert document["farrington_seconds_per_series_week"] > 0

    results_dir = tmp_path / "results"
    path = write_outputs(document, results_dir, tmp_path / "RESULTS.md")
    assert path.parent == results_dir and path.name.startswith("alerting-")
    assert json.loads(path.read_text())["results"].keys() == document["results"].keys()
    table = (tmp_path / "RESULTS.md").read_text()
    assert table == markdown(document)
    assert "Is Farrington flexible's false-positive rate at alpha 0.01 at most 0.01?" in table
    for method in methods:
        assert f"| {method} |" in table
