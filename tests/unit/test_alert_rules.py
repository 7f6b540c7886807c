"""Fixed-threshold alert rules on hand-made weekly series."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.alerts.rules import Rule, apply_rule, load_rules
from pipelines.errors import ConfigError

LAB_RULE = Rule(
    rule="measles_lab",
    kind="rolling_count",
    diseases=["measles"],
    measure="lab_confirmed",
    weeks=4,
    alert_cases=3,
)


def weeks(confirmed: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cases": [0] * len(confirmed),
            "lab_confirmed": confirmed,
            "population": [50_000] * len(confirmed),
            "reporting_completeness": [100.0] * len(confirmed),
            "week_start_date": pd.date_range("2026-01-05", periods=len(confirmed), freq="7D"),
        }
    )


def test_three_confirmations_within_four_weeks_alarm() -> None:
    signals = apply_rule(weeks([1, 0, 1, 1, 0, 0, 0, 1]), LAB_RULE, 50)
    assert signals["alarm"].tolist() == [False, False, False, True, False, False, False, False]
    assert signals["observed"].tolist()[:4] == [1, 1, 2, 3]
    assert (signals["threshold"] == 3).all()


def test_confirmations_spread_over_five_weeks_do_not_alarm() -> None:
    signals = apply_rule(weeks([1, 0, 0, 0, 1, 0, 0, 0, 1]), LAB_RULE, 50)
    assert not signals["alarm"].any()


def test_a_rolling_count_without_a_number_is_a_config_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "rules:\n  - rule: lab\n    kind: rolling_count\n    diseases: [measles]\n"
        "    measure: lab_confirmed\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="rule lab: needs alert_cases"):
        load_rules(rules)


def test_an_unknown_measure_names_the_key(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "rules:\n  - rule: lab\n    kind: rolling_count\n    diseases: [measles]\n"
        "    measure: rumours\n    alert_cases: 3\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"rules\.0\.measure"):
        load_rules(rules)


def test_the_built_in_rules_hold_the_lab_confirmed_measles_rule() -> None:
    rule = next(r for r in load_rules().rules if r.rule == "idsr_measles_lab_confirmed")
    assert (rule.kind, rule.measure, rule.weeks, rule.alert_cases) == (
        "rolling_count",
        "lab_confirmed",
        4,
        3,
    )
