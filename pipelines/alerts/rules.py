"""Alert rules (``pipelines/alerts/rules.yml`` or the config's ``alert_rules``) and how each
kind turns a weekly series into signals.

A signal is a week whose count crosses its rule's threshold; :mod:`pipelines.alerts.events`
groups consecutive signals into alerts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError

BUILT_IN_RULES = Path(__file__).with_name("rules.yml")
Kind = Literal["single_case", "attack_rate", "rolling_rate", "rolling_count", "detector"]
# Weekly measures of marts.fct_surveillance_weekly a rule may count.
Measure = Literal["cases", "lab_confirmed"]
SIGNAL_COLUMNS = ["observed", "expected", "threshold", "alarm", "severity"]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Kind
    diseases: list[str] = Field(min_length=1)
    cite: str = ""
    # attack_rate / rolling_rate
    alert_per_100k: float | None = None
    epidemic_per_100k: float | None = None
    small_population: int | None = None
    small_alert_cases: int | None = None
    small_epidemic_cases: int | None = None
    weeks: int = Field(default=1, ge=1)
    # rolling_count
    measure: Measure = "cases"
    alert_cases: int | None = Field(default=None, ge=1)
    # detector
    method: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.method or self.kind


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: int = Field(default=3, ge=1)
    min_completeness: float = Field(default=50.0, ge=0, le=100)
    rules: list[Rule]


def load_rules(path: Path | None = None) -> RuleSet:
    source = path or BUILT_IN_RULES
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
        rules = RuleSet.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"{source}: alert rules file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None
    for rule in rules.rules:
        if rule.kind == "detector" and not rule.method:
            raise ConfigError(f"{source}: rule {rule.rule}: a detector rule needs `method`")
        if rule.kind in ("attack_rate", "rolling_rate") and rule.alert_per_100k is None:
            raise ConfigError(f"{source}: rule {rule.rule}: needs alert_per_100k")
        if rule.kind == "rolling_count" and rule.alert_cases is None:
            raise ConfigError(f"{source}: rule {rule.rule}: needs alert_cases")
    return rules


def _empty(index: pd.Index) -> pd.DataFrame:
    frame = pd.DataFrame(index=index, columns=SIGNAL_COLUMNS)
    frame["alarm"] = False
    return frame


def single_case(weeks: pd.DataFrame) -> pd.DataFrame:
    """One suspected case of an immediately notifiable disease is an alert."""
    signals = _empty(weeks.index)
    cases = weeks["cases"].astype(float)
    signals["observed"] = cases
    signals["threshold"] = 1.0
    signals["alarm"] = cases.fillna(0) >= 1
    signals["severity"] = "alert"
    return signals


def attack_rate(weeks: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """Weekly attack rate per 100,000 against alert and epidemic thresholds; small
    populations use absolute counts, and a doubling over three weeks is an epidemic."""
    signals = _empty(weeks.index)
    cases = weeks["cases"].astype(float)
    population = weeks["population"].astype(float)
    rate = cases * 100_000 / population.where(population > 0)
    small = population < (rule.small_population or 0)
    alert_level = np.where(
        small, rule.small_alert_cases or np.inf, (rule.alert_per_100k or 0) * population / 100_000
    )
    epidemic_level = np.where(
        small,
        rule.small_epidemic_cases or np.inf,
        (rule.epidemic_per_100k or np.inf) * population / 100_000,
    )
    # "Doubling over three weeks": each of the last three weeks has more cases than the one
    # before, and the latest is at least twice the first (which had cases).
    two_back = cases.shift(2)
    doubling = (
        (cases >= 2 * two_back)
        & (cases > cases.shift(1))
        & (cases.shift(1) > two_back)
        & (two_back >= 1)
    )
    epidemic = (cases >= epidemic_level) | (small & doubling)
    alarm = (cases >= alert_level) | epidemic
    signals["observed"] = cases
    signals["threshold"] = alert_level
    signals["expected"] = np.nan
    signals["alarm"] = alarm.fillna(False).astype(bool)
    signals["severity"] = np.where(epidemic.fillna(False), "epidemic", "alert")
    signals["rate_per_100k"] = rate
    return signals


def rolling_rate(weeks: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """Cases over the last ``weeks`` weeks per 100,000 (measles: about a month)."""
    signals = _empty(weeks.index)
    cases = weeks["cases"].astype(float).fillna(0).rolling(rule.weeks, min_periods=rule.weeks).sum()
    population = weeks["population"].astype(float)
    threshold = (rule.alert_per_100k or 0) * population / 100_000
    signals["observed"] = cases
    signals["threshold"] = threshold
    signals["alarm"] = (cases >= threshold) & (cases > 0)
    signals["severity"] = "alert"
    return signals


def rolling_count(weeks: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """A count of ``measure`` over the last ``weeks`` weeks against a fixed number (measles:
    3 laboratory-confirmed cases in a district in a month)."""
    signals = _empty(weeks.index)
    counts = weeks[rule.measure].astype(float).fillna(0)
    window = counts.rolling(rule.weeks, min_periods=1).sum()
    threshold = float(rule.alert_cases or 0)
    signals["observed"] = window
    signals["threshold"] = threshold
    # the week must add to the count itself, so an event ends when confirmations stop
    signals["alarm"] = (window >= threshold) & (counts > 0)
    signals["severity"] = "alert"
    return signals


def detector(weeks: pd.DataFrame, rule: Rule, min_completeness: float) -> pd.DataFrame:
    """A statistical method on the weekly series; weeks reported by too few facilities are
    treated as missing, so a reporting gap is not read as a fall or a rise in cases."""
    from pipelines.alerts.detectors import detect

    cases = weeks["cases"].astype(float)
    completeness = weeks["reporting_completeness"].astype(float)
    cases = cases.where(completeness.isna() | (completeness >= min_completeness))
    series = pd.Series(cases.to_numpy(), index=pd.DatetimeIndex(weeks["week_start_date"]))
    result = detect(series, method=str(rule.method), **rule.params)
    signals = _empty(weeks.index)
    signals["observed"] = weeks["cases"].astype(float).to_numpy()
    signals["expected"] = result["expected"].to_numpy()
    signals["threshold"] = result["threshold"].to_numpy()
    signals["alarm"] = result["alarm"].fillna(False).astype(bool).to_numpy()
    signals["severity"] = "alert"
    return signals


def apply_rule(weeks: pd.DataFrame, rule: Rule, min_completeness: float) -> pd.DataFrame:
    """Signals for one disease and org unit, ``weeks`` sorted by week."""
    if rule.kind == "single_case":
        return single_case(weeks)
    if rule.kind == "attack_rate":
        return attack_rate(weeks, rule)
    if rule.kind == "rolling_rate":
        return rolling_rate(weeks, rule)
    if rule.kind == "rolling_count":
        return rolling_count(weeks, rule)
    return detector(weeks, rule, min_completeness)
