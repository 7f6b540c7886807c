"""Simulated weekly surveillance series with outbreaks, after Noufaily et al. (2013).

Baseline (Noufaily et al. 2013, section 3; Bédubourg and Le Strat 2017 use the same design):
counts are negative binomial with mean mu_t and variance phi mu_t (size mu_t / (phi - 1);
Poisson when phi = 1), where

    mu_t = exp(theta + beta t + sum_{j=1..m} [gamma1 cos(2 pi j t / 52) + gamma2 sin(2 pi j t / 52)])

for weeks t = 1..624 (12 years). Weeks 576-624 (the last 49) are the current weeks on which
the detectors are judged, as in both papers.

Outbreaks: an outbreak starting in week s has Poisson(k sd_s) cases, sd_s = sqrt(phi mu_s) the
baseline SD at the start week; each case falls floor(L) weeks after s with L log-normal
(meanlog 0, sdlog 0.5), so an outbreak lasts one to about four weeks. Four outbreaks are
placed in the baseline weeks 313-575 (the ones a 5-year look-back sees), with k drawn
uniformly from 2..10, to exercise the detectors' down-weighting of past outbreaks; one outbreak
of size k in {2, 3, 5, 10} starts in the current weeks. Its start is drawn from weeks
576-620 (not the last four, so that most of every outbreak is seen); cases falling after
week 624 are dropped. Each base series (baseline + past outbreaks) is reused for the four
values of k (common random numbers: the differences between k are not noise).

Scenarios: 8 of Noufaily's 42. Her 42 combine 7 parameter groups (theta, phi, beta,
gamma1, gamma2) with trend on/off and m = 0, 1, 2. The groups are taken as published in a
public replication of the study (theta 0.1, -2, 1.5, 0.5, 2.5, 3.75, 5; phi 1.5, 2, 1, 5, 3,
1.1, 1.2; beta 0.0025, 0.005, 0.003, 0.002, 0.001, 0.001, 0.0001; gamma1 0.6, 0.1, 0.2, 0.5,
1, 0.1, 0.05; gamma2 0.6, 0.3, -0.4, 0.5, 0.1, -0.1, 0.01); they were not re-checked against
the paper's table here. The subset spans mean counts from below 1 to about 150, Poisson to
strongly overdispersed, flat, trending and seasonal series.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

WEEKS = 624
CURRENT_WEEKS = 49  # weeks 576..624
FIRST_CURRENT = WEEKS - CURRENT_WEEKS  # 0-based position of week 576
LAST_START = 620  # 1-based: current outbreaks start in weeks 576..620
BASELINE_OUTBREAK_WEEKS = (313, 575)  # 1-based, inclusive
BASELINE_OUTBREAKS = 4
K_VALUES = (2, 3, 5, 10)
FIRST_WEEK = "2012-01-02"  # a Monday; only the dates' spacing matters

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Scenario:
    """One of Noufaily's scenarios: her group number, trend switch and harmonics m."""

    name: str
    theta: float
    phi: float
    beta: float
    gamma1: float
    gamma2: float
    m: int

    def mean(self) -> FloatArray:
        t = np.arange(1, WEEKS + 1, dtype=np.float64)
        season = sum(
            self.gamma1 * np.cos(2 * np.pi * j * t / 52)
            + self.gamma2 * np.sin(2 * np.pi * j * t / 52)
            for j in range(1, self.m + 1)
        )
        mean: FloatArray = np.exp(self.theta + self.beta * t + season)
        return mean


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("g1_flat", 0.1, 1.5, 0.0, 0.0, 0.0, 0),
    Scenario("g1_trend_m1", 0.1, 1.5, 0.0025, 0.6, 0.6, 1),
    Scenario("g2_trend_m1", -2.0, 2.0, 0.005, 0.1, 0.3, 1),
    Scenario("g3_m2", 1.5, 1.0, 0.0, 0.2, -0.4, 2),
    Scenario("g4_trend_m1", 0.5, 5.0, 0.002, 0.5, 0.5, 1),
    Scenario("g5_m1", 2.5, 3.0, 0.0, 1.0, 0.1, 1),
    Scenario("g6_trend_m2", 3.75, 1.1, 0.001, 0.1, -0.1, 2),
    Scenario("g7_flat", 5.0, 1.2, 0.0, 0.0, 0.0, 0),
)


@dataclass
class Simulation:
    """Series as rows: counts, the current outbreak's cases, and what generated them."""

    counts: FloatArray  # (N, WEEKS)
    outbreak: FloatArray  # (N, WEEKS) cases of the current outbreak only
    start: npt.NDArray[np.int64]  # (N,) 0-based start week of the current outbreak
    k: npt.NDArray[np.int64]  # (N,)
    scenario: npt.NDArray[np.int64]  # (N,) index into the scenarios
    mean: FloatArray  # (N, WEEKS) baseline mean
    phi: FloatArray  # (N,)

    def frame(self) -> pd.DataFrame:
        """Counts as a DataFrame: weeks as index, one column per series."""
        weeks = pd.date_range(FIRST_WEEK, periods=WEEKS, freq="7D")
        return pd.DataFrame(self.counts.T, index=weeks)

    @property
    def first_current_week(self) -> pd.Timestamp:
        return pd.Timestamp(FIRST_WEEK) + pd.Timedelta(weeks=FIRST_CURRENT)


def negative_binomial(rng: np.random.Generator, mean: FloatArray, phi: float) -> FloatArray:
    """Counts with the given means and variance phi * mean (Poisson when phi = 1)."""
    if phi == 1.0:
        return rng.poisson(mean).astype(np.float64)
    size = mean / (phi - 1.0)
    return rng.negative_binomial(size, 1.0 / phi).astype(np.float64)


def outbreak_cases(
    rng: np.random.Generator, start: int, k: float, sd: float, length: int
) -> FloatArray:
    """Cases of one outbreak by week: Poisson(k sd) cases, each floor(LogNormal(0, 0.5))
    weeks after ``start``; cases after the last week are dropped."""
    cases = np.zeros(length)
    n = int(rng.poisson(k * sd))
    if n:
        weeks = start + np.floor(rng.lognormal(0.0, 0.5, n)).astype(np.int64)
        np.add.at(cases, weeks[weeks < length], 1.0)
    return cases


def simulate(
    series_per_scenario: int, seed: int, scenarios: tuple[Scenario, ...] = SCENARIOS
) -> Simulation:
    """``series_per_scenario`` base series per scenario, each with one current outbreak per k."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[FloatArray, FloatArray, int, int, int, FloatArray, float]] = []
    for index, scenario in enumerate(scenarios):
        mean = scenario.mean()
        sd = np.sqrt(scenario.phi * mean)
        for _ in range(series_per_scenario):
            base = negative_binomial(rng, mean, scenario.phi)
            low, high = BASELINE_OUTBREAK_WEEKS
            for start in rng.choice(np.arange(low - 1, high), BASELINE_OUTBREAKS, replace=False):
                k_past = int(rng.integers(2, 11))
                cases = outbreak_cases(rng, int(start), k_past, float(sd[start]), WEEKS)
                cases[FIRST_CURRENT:] = 0  # past outbreaks stay in the past
                base = base + cases
            start = int(rng.integers(FIRST_CURRENT, LAST_START))
            for k in K_VALUES:
                current = outbreak_cases(rng, start, k, float(sd[start]), WEEKS)
                rows.append((base + current, current, start, k, index, mean, scenario.phi))
    return Simulation(
        counts=np.stack([r[0] for r in rows]),
        outbreak=np.stack([r[1] for r in rows]),
        start=np.array([r[2] for r in rows], dtype=np.int64),
        k=np.array([r[3] for r in rows], dtype=np.int64),
        scenario=np.array([r[4] for r in rows], dtype=np.int64),
        mean=np.stack([r[5] for r in rows]),
        phi=np.array([r[6] for r in rows]),
    )


def describe(scenarios: tuple[Scenario, ...] = SCENARIOS) -> list[dict[str, object]]:
    """The scenarios with their mean count range, for the results file."""
    out = []
    for scenario in scenarios:
        mean = scenario.mean()
        out.append(
            {**asdict(scenario), "mean_min": float(mean.min()), "mean_max": float(mean.max())}
        )
    return out
