"""Outbreak detectors for weekly counts: ``detect(counts, method, **params)``.

``counts`` is a pandas Series indexed by week start dates (ascending, exactly 7 days apart;
a missing week is a NaN value, never an absent row). The answer has one row per week with
at least ``observed``, ``expected``, ``threshold`` and ``alarm``; ``alarm`` is False, and
``expected``/``threshold`` are NaN, wherever the method cannot judge (not enough history,
missing baseline weeks, a model that does not converge). Where a method can judge a week
whose own count is missing, it still reports ``expected``/``threshold`` but never alarms.
Every method is deterministic. ``detect_frame`` runs one method on many series sharing the
same weeks (columns of a DataFrame) in one vectorised pass.

Methods (details in each function's docstring):

- ``ears_c1``, ``ears_c2``, ``ears_c3``: CDC EARS as R ``surveillance::earsC`` (C3: see
  :func:`ears`).
- ``farrington_flexible``: Noufaily et al. (2013), matching R
  ``surveillance::farringtonFlexible`` (see :func:`farrington_flexible`).
- ``nb_cusum``: CUSUM of standardised counts against a negative-binomial in-control model.
- ``endemic_channel``: Bortman's endemic channel (geometric mean and its t interval).
- ``historical_percentile``, ``historical_mean_2sd``, ``csum``: the IDSR malaria thresholds
  (WHO AFRO IDSR technical guidelines, 3rd edition, 2019).

Week of year, for the methods comparing the same week across years, is the DHIS2/ISO rule:
a week belongs to the year holding its fourth day and week 1 holds 4 January. Those methods
use up to ``years`` earlier years and judge a week when at least 3 earlier years lie in the
series and at least 3 baseline values are observed (column ``n_values``).

Every method accepts ``judge_from`` (a date or None): weeks before it are returned without
judgement (NaN expected/threshold, no alarm); history before it is still used, and the
Farrington fits for those weeks are skipped, which is what makes a "judge only the latest
weeks" run cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]  # no scipy-stubs in the env

from pipelines.alerts import _farrington
from pipelines.alerts._weeks import (
    MISSING,
    BoolArray,
    FloatArray,
    IntArray,
    count_mean_sd,
    gather,
    lagged_positions,
    same_week_positions,
    widen,
)

Arrays = dict[str, FloatArray | BoolArray]
# The fewest observed baseline values a method judges with: R's earsC refuses baselines
# shorter than 3, and an SD from fewer than 3 values says little.
MIN_VALUES = 3
CORE_COLUMNS = ("observed", "expected", "threshold", "alarm")


@dataclass(frozen=True)
class _Weeks:
    """The validated weekly axis shared by all series of one call."""

    days: npt.NDArray[np.datetime64]  # datetime64[D]
    index: pd.DatetimeIndex

    @property
    def dates(self) -> list[date]:
        return [d.date() for d in self.index]


# ---------------------------------------------------------------------------------------
# Small numeric helpers
# ---------------------------------------------------------------------------------------


def _standardise(y: FloatArray, mean: FloatArray, sigma: FloatArray) -> FloatArray:
    """``(y - mean) / sigma`` with a zero sigma giving 0 for y == mean and +-inf otherwise."""
    diff = y - mean
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, diff / sigma, np.sign(diff) * np.inf)
    z = np.where((sigma == 0) & (diff == 0), 0.0, z)
    out: FloatArray = np.where(np.isnan(diff) | np.isnan(sigma), np.nan, z)
    return out


def _exceeds(observed: FloatArray, threshold: FloatArray) -> BoolArray:
    """observed > threshold, False where either is NaN."""
    with np.errstate(invalid="ignore"):
        alarm: BoolArray = np.nan_to_num(observed, nan=-np.inf) > np.nan_to_num(
            threshold, nan=np.inf
        )
    return alarm


def _judged_where(ok: BoolArray, **columns: FloatArray) -> Arrays:
    """Blank (NaN) every column where the method cannot judge."""
    return {name: np.where(ok, array, np.nan) for name, array in columns.items()}


def _history_ok(positions: IntArray) -> BoolArray:
    """Weeks with at least MIN_VALUES earlier years inside the series (shape (T,)).

    Fewer than ``years`` are accepted so that a series a little shorter than the look-back,
    or one with skipped epidemic years, is still judged; ``n_values`` says how much was used.
    """
    ok: BoolArray = (positions != MISSING).sum(axis=1) >= MIN_VALUES
    return ok


# ---------------------------------------------------------------------------------------
# EARS C1, C2, C3
# ---------------------------------------------------------------------------------------


def _ears_baseline(
    values: FloatArray, baseline: int, guard: int, min_sigma: float
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Mean and sigma = max(SD, min_sigma) of weeks t-baseline-guard .. t-1-guard."""
    positions = lagged_positions(values.shape[1], 1 + guard, baseline + guard)
    count, mean, sd = count_mean_sd(gather(values, positions))
    ok = (positions[:, 0] != MISSING)[None, :] & (count >= MIN_VALUES)
    sigma = np.maximum(sd, min_sigma)
    return np.where(ok, mean, np.nan), np.where(ok, sigma, np.nan), ok


def ears(values: FloatArray, weeks: _Weeks, params: Mapping[str, Any], variant: str) -> Arrays:
    """CDC EARS C1, C2 and C3 (Hutwagner et al. 2003; R ``surveillance::earsC``).

    - C1: baseline weeks t-7..t-1 (``baseline`` = 7); C2: t-9..t-3 (a 2-week guard band).
      ``expected`` = baseline mean, ``sd`` = max(sample SD (n - 1), ``min_sigma``),
      ``threshold`` = mean + z sd with z = the normal (1 - alpha) quantile (alpha 0.001:
      z = 3.09), ``score`` = (y - mean) / sd, alarm when y > threshold (strictly, as R's
      ``observed > upperbound``).
    - C3: score C3(t) = sum over i = t-2, t-1, t of max(0, C2(i) - 1), alarm when C3(t) > z,
      z from alpha (default 0.025: z = 1.96, which is Hutwagner's "C3 >= 2" up to rounding).
      This is the published statistic (Hutwagner 2003; Fricker et al. 2008; the R man page's
      formula for C3). It is *not* R's code, whose upper bound ``y_t + sd (z - lag)`` makes
      the alarm independent of the current count (alarm iff the two previous weeks' parts
      exceed z), nor the man page's bound ``mean + sd (z - lag)``, which drops the "- 1" for
      week t. ``expected`` is C2's mean for week t; ``threshold`` is the count that would make
      C3(t) exceed z given the two previous weeks, mean + sd (1 + z - lag) with
      lag = the parts of t-2 and t-1; when lag alone exceeds z every count alarms and the
      threshold is -inf. C3 needs C2 at t-2, t-1 and t.
    - SD = 0 (a flat baseline): with the default ``min_sigma`` = 0 (R's default) the threshold
      is the baseline mean, so any count above a perfectly flat baseline alarms and the score
      is +inf (0 when y equals the mean). Burkom suggests ``min_sigma`` 0.5 or 1 for sparse
      counts.
    - Missing weeks: a baseline with at least 3 observed weeks (R's minimum baseline) is used
      as it is; fewer, or a window reaching before the first week, cannot judge.
    """
    alpha, baseline, min_sigma = params["alpha"], params["baseline"], params["min_sigma"]
    z = float(stats.norm.ppf(1 - alpha))
    guard = 0 if variant == "c1" else 2
    mean, sigma, ok = _ears_baseline(values, baseline, guard, min_sigma)
    score = _standardise(values, mean, sigma)
    if variant != "c3":
        threshold = mean + z * sigma
        return {
            **_judged_where(ok, expected=mean, threshold=threshold, score=score, sd=sigma),
            "alarm": _exceeds(values, threshold),
        }
    part = np.maximum(0.0, score - 1.0)  # NaN stays NaN
    lag = np.full_like(part, np.nan)
    lag[:, 2:] = part[:, :-2] + part[:, 1:-1]
    c3 = lag + part
    with np.errstate(invalid="ignore"):
        threshold = np.where(lag <= z, mean + sigma * (1.0 + z - lag), -np.inf)
    threshold = np.where(np.isnan(lag) | np.isnan(mean), np.nan, threshold)
    alarm = np.nan_to_num(c3, nan=-np.inf) > z
    return {
        "expected": np.where(np.isnan(threshold), np.nan, mean),
        "threshold": threshold,
        "alarm": alarm,
        "score": c3,
        "sd": np.where(np.isnan(threshold), np.nan, sigma),
    }


# ---------------------------------------------------------------------------------------
# Farrington flexible
# ---------------------------------------------------------------------------------------


def farrington_flexible(
    values: FloatArray, weeks: _Weeks, params: Mapping[str, Any], judge: BoolArray
) -> Arrays:
    """Farrington flexible (Noufaily et al. 2013) as R ``surveillance::farringtonFlexible``.

    Parameters (R ``control`` names in brackets) and defaults: ``b`` = 5 years back, ``w`` = 3
    (half window), ``reweight`` = True, ``weights_threshold`` = 2.58, ``past_weeks_not_included``
    = 26 [pastWeeksNotIncluded], ``no_periods`` = 10 [noPeriods], ``trend`` = True,
    ``p_threshold_trend`` = 0.05, ``alpha`` = 0.01 (one-sided), ``threshold_method`` =
    "nbPlugin" (also "muan" and "delta"), ``powertrans`` = "2/3" (used by "delta" only),
    ``limit54`` = (5, 4), ``population_offset`` = None (a population per week; the model then
    has offset log(population)). The defaults are Noufaily's recommendations, not R's
    (alpha 0.05, noPeriods 1, pastWeeksNotIncluded = w, thresholdMethod "delta").

    The algorithm is described step by step in :mod:`pipelines.alerts._farrington`. Columns:
    ``expected`` (exp of the linear predictor for week k), ``threshold`` (the upper bound
    U), ``lower``, ``score`` ((y - eta0) / (U - eta0) for nbPlugin/muan, (y - mu0) / (U -
    mu0) for delta), ``pvalue`` (P(Y >= y) under the fitted distribution), ``phi`` (the
    dispersion used), ``trend`` (the trend was kept), ``enough_cases`` (the 5-in-4 rule
    holds). ``alarm`` = enough_cases and score > 1 and y != 0.

    Where we follow the R code rather than the paper:

    - Reference weeks are the same calendar date 1..b years back moved to the nearest week
      start (29 February -> 1 March), not "the same week number".
    - The 10-level seasonal factor cuts the gaps between windows into 9 blocks of equal
      length up to one week, the longer blocks first, the block just before each window
      labelled 9; the current and past windows share level 10 (``blocks``).
    - ``past_weeks_not_included`` removes weeks k-26..k (27 weeks, the current one included).
    - ``wtime`` counts weeks from the first baseline week; the prediction uses weeks from the
      first *observed* baseline week (they differ only when that week is missing).
    - phi = max(1, Pearson X^2 / (n - p)), with the working weights of the last IRLS step;
      after reweighting phi is re-estimated on the weighted refit (weights in X^2).
    - Anscombe residuals use phi = max(1, ...) and the hat values of the unweighted fit; the
      weights are gamma s^-2 above 2.58 and gamma below, with gamma making them average 1.
    - The trend's test and the prediction's standard error use ``summary.glm``'s dispersion,
      which is neither phi nor clamped at 1: the package replaces ``model$weights`` (the
      IRLS working weights) by the reweighting weights w, so after reweighting it is
      sum(w ((y - mu) / mu)^2) / (n - p). The trend is kept when that t-test gives p < 0.05
      (t with n - p df), b >= 3 and the predicted count is not above the largest baseline
      count; otherwise the whole fit, reweighting included, is redone without it. (The
      package passes ``dispersion`` inside ``newdata``, so predict() also uses this
      estimate; the SE matters for "muan"/"delta" only.)
    - The score mixes the log-scale prediction with the count-scale bound (nbPlugin, muan).
    - 5 cases in 4 weeks counts the current week; a missing week in those 4 means no alarm.
    - A fit that does not converge with or without trend gives no result for that week.

    Where we differ from the package's *output* (numbers are the same where it has them):
    R blanks expected/upper bound when the 5-in-4 rule fails; we report them with
    ``enough_cases`` False and no alarm. R stops when a reference week is absent or a window
    starts more than one week before the series; we skip the week (cannot judge) or cut the
    window at the first week. R's fits are per week with ``glm``; ours are IRLS in numpy
    with the same start, iteration limit and convergence rule.
    """
    population = params["population_offset"]
    fit_params = _farrington.FarringtonParams(
        **{k: v for k, v in params.items() if k != "population_offset"}
    )
    out = _farrington.farrington_flexible(values, weeks.dates, population, fit_params, judge)
    out.pop("judged")  # the same as "threshold is not NaN"
    return out


# ---------------------------------------------------------------------------------------
# Negative-binomial CUSUM
# ---------------------------------------------------------------------------------------


def nb_cusum(values: FloatArray, weeks: _Weeks, params: Mapping[str, Any]) -> Arrays:
    """CUSUM of standardised counts with a negative-binomial in-control model.

    - In-control model for week t: mean m and sample variance v (n - 1) of the baseline.
      ``baseline`` = "historical" (default): the same week of year and ``half_window`` (3)
      weeks either side in each of the previous ``years`` (5) years, 35 values; it follows
      seasonality, which a recent window cannot. ``baseline`` = "recent": weeks
      t-guard_weeks-baseline_weeks .. t-guard_weeks-1 (defaults 26 and 2). The NB dispersion
      is estimated by moments: size r = m^2 / (v - m) when v > m, otherwise Poisson; the
      variance used is m + m^2 / r = max(v, m) (column ``size``: r, inf for Poisson).
    - z_t = (y_t - m) / sqrt(max(v, m)) (Pearson standardisation under that NB; column
      ``score``); with a zero variance z is 0 at y = m and +-inf otherwise.
    - C_t = max(0, C_{t-1} + z_t - k), alarm when C_t > h (k = 1.04, h = 2.26); after an
      alarm C restarts from 0 the next week (the alarm week reports the crossing value).
      ``threshold`` is the count that would make week t alarm, m + sqrt(max(v, m)) (h + k -
      C_{t-1}). A missing count carries C_{t-1} over (no information, no alarm); a week
      without a baseline (fewer than 3 observed values, or fewer than 3 earlier years in the
      series for "historical") restarts C at 0 and cannot judge.
    """
    k, h = params["k"], params["h"]
    length = values.shape[1]
    if params["baseline"] == "historical":
        centre = same_week_positions(weeks.days, params["years"])
        positions = widen(centre, params["half_window"], length)
        in_series = _history_ok(centre)
    else:
        guard, span = params["guard_weeks"], params["baseline_weeks"]
        positions = lagged_positions(length, guard + 1, guard + span)
        in_series = positions[:, 0] != MISSING
    count, mean, sd = count_mean_sd(gather(values, positions))
    ok = in_series[None, :] & (count >= MIN_VALUES)
    variance = np.maximum(sd**2, mean)
    sigma = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.where(sd**2 > mean, mean**2 / (sd**2 - mean), np.inf)
    z = _standardise(values, mean, sigma)

    series = values.shape[0]
    cusum = np.full((series, length), np.nan)
    threshold = np.full((series, length), np.nan)
    alarm = np.zeros((series, length), dtype=bool)
    previous = np.zeros(series)
    for t in range(length):
        judge = ok[:, t]
        threshold[:, t] = np.where(judge, mean[:, t] + sigma[:, t] * (h + k - previous), np.nan)
        observed = judge & ~np.isnan(values[:, t])
        current = np.where(observed, np.maximum(0.0, previous + z[:, t] - k), previous)
        current = np.where(judge, current, 0.0)
        cusum[:, t] = np.where(judge, current, np.nan)
        alarm[:, t] = observed & (current > h)
        previous = np.where(alarm[:, t], 0.0, current)
    return {
        **_judged_where(ok, expected=mean, sd=sigma, size=size, score=z),
        "threshold": threshold,
        "cusum": cusum,
        "alarm": alarm,
    }


# ---------------------------------------------------------------------------------------
# Endemic channel and IDSR historical thresholds
# ---------------------------------------------------------------------------------------


def _same_week_values(
    values: FloatArray, weeks: _Weeks, params: Mapping[str, Any], half_window: int = 0
) -> tuple[FloatArray, BoolArray]:
    """Same-week values of the previous years (S, T, m) and where the history is complete."""
    centre = same_week_positions(weeks.days, params["years"], params["epidemic_years"])
    positions = widen(centre, half_window, values.shape[1]) if half_window else centre
    return gather(values, positions), _history_ok(centre)


def endemic_channel(values: FloatArray, weeks: _Weeks, params: Mapping[str, Any]) -> Arrays:
    """Bortman's endemic channel (Bortman 1999, PAHO), per week of year.

    For week t, x = the counts of the same week of year in the previous ``years`` (5) years
    (``epidemic_years`` skipped, going further back), n = the number observed (at least 3),
    l = log(x + 1): ``expected`` = exp(mean(l)) - 1 (geometric mean), ``threshold`` =
    exp(mean(l) + t_(n-1, 1 - alpha/2) SD(l) / sqrt(n)) - 1 (SD with n - 1, alpha = 0.05),
    ``lower`` the same with a minus sign (cut at 0); alarm when y > threshold. The interval
    is the confidence interval of the geometric mean, as the channel is usually built, not a
    prediction interval: it is narrow and alarms often on noisy counts.
    """
    window, history = _same_week_values(values, weeks, params)
    count, mean, sd = count_mean_sd(np.log1p(window))
    ok = history[None, :] & (count >= MIN_VALUES)
    with np.errstate(invalid="ignore"):
        quantile = stats.t.ppf(1 - params["alpha"] / 2, count - 1)
    half = quantile * sd / np.sqrt(count)
    threshold = np.expm1(mean + half)
    return {
        **_judged_where(
            ok,
            expected=np.expm1(mean),
            threshold=threshold,
            lower=np.maximum(np.expm1(mean - half), 0.0),
            n_values=count,
        ),
        "alarm": ok & _exceeds(values, threshold),
    }


def _percentile(window: FloatArray, count: IntArray, q: float) -> FloatArray:
    """Linear-interpolation percentile along the last axis ignoring NaN (numpy's and R's
    type 7 definition), without ``np.nanpercentile``'s per-row Python overhead."""
    ordered = np.sort(window, axis=-1)  # NaN last
    position = np.maximum(count - 1, 0) * (q / 100.0)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, np.maximum(count - 1, 0))
    below = np.take_along_axis(ordered, low[..., None], axis=-1)[..., 0]
    above = np.take_along_axis(ordered, high[..., None], axis=-1)[..., 0]
    value: FloatArray = below + (position - low) * (above - below)
    return np.where(count > 0, value, np.nan)


def historical_percentile(values: FloatArray, weeks: _Weeks, params: Mapping[str, Any]) -> Arrays:
    """IDSR malaria: the ``percentile`` (75th) of the same week in the previous ``years`` (5).

    ``threshold`` = the percentile with linear interpolation between order statistics
    (numpy's default, R's type 7, Excel's PERCENTILE.INC used by the WHO spreadsheets: with
    5 values the 75th percentile is the 4th smallest), ``expected`` = the median; at least 3
    observed values; alarm when y > threshold.
    """
    window, history = _same_week_values(values, weeks, params)
    count = (~np.isnan(window)).sum(axis=-1)
    ok = history[None, :] & (count >= MIN_VALUES)
    threshold = _percentile(window, count, params["percentile"])
    median = _percentile(window, count, 50.0)
    judged = _judged_where(
        ok, expected=median, threshold=threshold, n_values=count.astype(np.float64)
    )
    return {**judged, "alarm": ok & _exceeds(values, threshold)}


def _mean_sd_threshold(
    window: FloatArray, history: BoolArray, values: FloatArray, n_sd: float
) -> Arrays:
    count, mean, sd = count_mean_sd(window)
    ok = history[None, :] & (count >= MIN_VALUES)
    threshold = mean + n_sd * sd
    judged = _judged_where(ok, expected=mean, threshold=threshold, sd=sd, n_values=count)
    return {**judged, "alarm": ok & _exceeds(values, threshold)}


def historical_mean_2sd(values: FloatArray, weeks: _Weeks, params: Mapping[str, Any]) -> Arrays:
    """IDSR malaria (Cullen et al. 1984): mean + ``n_sd`` (2) SD of the same week of year in
    the previous ``years`` (5) years, SD with n - 1; years listed in ``epidemic_years`` are
    skipped and replaced by earlier ones when the series reaches back that far."""
    window, history = _same_week_values(values, weeks, params)
    return _mean_sd_threshold(window, history, values, params["n_sd"])


def csum(values: FloatArray, weeks: _Weeks, params: Mapping[str, Any]) -> Arrays:
    """IDSR malaria C-SUM: mean + ``n_sd`` (2) SD of the same week and the weeks just before
    and after it (``half_window`` = 1) in each of the previous ``years`` (5) years: 15
    values. Neighbours are the adjacent weeks of the series, across year ends."""
    window, history = _same_week_values(values, weeks, params, params["half_window"])
    return _mean_sd_threshold(window, history, values, params["n_sd"])


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


def _fail(method: str, name: str, expected: str, value: object) -> ValueError:
    return ValueError(f"{method}: parameter {name!r} must be {expected}, got {value!r}")


def _int_at_least(method: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise _fail(method, name, f"an integer >= {minimum}", value)
    return int(value)


def _real(
    method: str, name: str, value: object, low: float, high: float, closed: bool = False
) -> float:
    """A finite real in (low, high), or [low, high] when ``closed``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _fail(method, name, "a number", value)
    number = float(value)
    inside = low <= number <= high if closed else low < number < high
    if not math.isfinite(number) or not inside:
        bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise _fail(method, name, f"a number in {bounds}", value)
    return number


def _bool(method: str, name: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise _fail(method, name, "True or False", value)
    return bool(value)


def _years(method: str, name: str, value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise _fail(method, name, "a collection of years", value)
    years = tuple(value)
    if not all(isinstance(y, int | np.integer) and not isinstance(y, bool) for y in years):
        raise _fail(method, name, "a collection of integer years", value)
    return tuple(int(y) for y in years)


def _check_ears(method: str, p: dict[str, Any]) -> None:
    p["alpha"] = _real(method, "alpha", p["alpha"], 0.0, 1.0)
    p["baseline"] = _int_at_least(method, "baseline", p["baseline"], 3)
    p["min_sigma"] = _real(method, "min_sigma", p["min_sigma"], 0.0, math.inf, closed=True)


def _check_farrington(method: str, p: dict[str, Any]) -> None:
    p["b"] = _int_at_least(method, "b", p["b"], 1)
    p["w"] = _int_at_least(method, "w", p["w"], 0)
    p["reweight"] = _bool(method, "reweight", p["reweight"])
    p["weights_threshold"] = _real(
        method, "weights_threshold", p["weights_threshold"], 0.0, math.inf, closed=True
    )
    p["past_weeks_not_included"] = _int_at_least(
        method, "past_weeks_not_included", p["past_weeks_not_included"], 0
    )
    p["no_periods"] = _int_at_least(method, "no_periods", p["no_periods"], 1)
    p["trend"] = _bool(method, "trend", p["trend"])
    p["p_threshold_trend"] = _real(method, "p_threshold_trend", p["p_threshold_trend"], 0, 1, True)
    p["alpha"] = _real(method, "alpha", p["alpha"], 0.0, 1.0)
    if p["threshold_method"] not in _farrington.THRESHOLD_METHODS:
        raise _fail(
            method,
            "threshold_method",
            f"one of {_farrington.THRESHOLD_METHODS}",
            p["threshold_method"],
        )
    if p["powertrans"] not in _farrington.POWER_TRANSFORMS:
        raise _fail(
            method, "powertrans", f"one of {tuple(_farrington.POWER_TRANSFORMS)}", p["powertrans"]
        )
    limit = p["limit54"]
    if not isinstance(limit, tuple | list) or len(limit) != 2:
        raise _fail(method, "limit54", "a pair (cases >= 0, weeks > 0)", limit)
    p["limit54"] = (
        _int_at_least(method, "limit54", limit[0], 0),
        _int_at_least(method, "limit54", limit[1], 1),
    )


def _check_cusum(method: str, p: dict[str, Any]) -> None:
    p["k"] = _real(method, "k", p["k"], 0.0, math.inf, closed=True)
    p["h"] = _real(method, "h", p["h"], 0.0, math.inf)
    if p["baseline"] not in ("historical", "recent"):
        raise _fail(method, "baseline", "'historical' or 'recent'", p["baseline"])
    p["years"] = _int_at_least(method, "years", p["years"], 1)
    p["half_window"] = _int_at_least(method, "half_window", p["half_window"], 0)
    p["baseline_weeks"] = _int_at_least(method, "baseline_weeks", p["baseline_weeks"], MIN_VALUES)
    p["guard_weeks"] = _int_at_least(method, "guard_weeks", p["guard_weeks"], 0)


def _check_history(method: str, p: dict[str, Any]) -> None:
    p["years"] = _int_at_least(method, "years", p["years"], 1)
    p["epidemic_years"] = _years(method, "epidemic_years", p["epidemic_years"])
    if "alpha" in p:
        p["alpha"] = _real(method, "alpha", p["alpha"], 0.0, 1.0)
    if "percentile" in p:
        p["percentile"] = _real(method, "percentile", p["percentile"], 0.0, 100.0, closed=True)
    if "n_sd" in p:
        p["n_sd"] = _real(method, "n_sd", p["n_sd"], 0.0, math.inf, closed=True)
    if "half_window" in p:
        p["half_window"] = _int_at_least(method, "half_window", p["half_window"], 0)


@dataclass(frozen=True)
class _Method:
    defaults: Mapping[str, Any]
    check: Callable[[str, dict[str, Any]], None]
    run: Callable[[FloatArray, _Weeks, Mapping[str, Any], BoolArray], Arrays]


def _ignore_judge(
    fn: Callable[[FloatArray, _Weeks, Mapping[str, Any]], Arrays],
) -> Callable[[FloatArray, _Weeks, Mapping[str, Any], BoolArray], Arrays]:
    """Methods too cheap to restrict to the judged weeks compute everything."""

    def run(
        values: FloatArray, weeks: _Weeks, params: Mapping[str, Any], judge: BoolArray
    ) -> Arrays:
        return fn(values, weeks, params)

    return run


def _ears_variant(
    variant: str,
) -> Callable[[FloatArray, _Weeks, Mapping[str, Any], BoolArray], Arrays]:
    return _ignore_judge(lambda values, weeks, params: ears(values, weeks, params, variant))


_HISTORY = {"years": 5, "epidemic_years": ()}
METHODS: dict[str, _Method] = {
    "ears_c1": _Method(
        {"alpha": 0.001, "baseline": 7, "min_sigma": 0.0}, _check_ears, _ears_variant("c1")
    ),
    "ears_c2": _Method(
        {"alpha": 0.001, "baseline": 7, "min_sigma": 0.0}, _check_ears, _ears_variant("c2")
    ),
    "ears_c3": _Method(
        {"alpha": 0.025, "baseline": 7, "min_sigma": 0.0}, _check_ears, _ears_variant("c3")
    ),
    "farrington_flexible": _Method(
        {
            "b": 5,
            "w": 3,
            "reweight": True,
            "weights_threshold": 2.58,
            "past_weeks_not_included": 26,
            "no_periods": 10,
            "trend": True,
            "p_threshold_trend": 0.05,
            "alpha": 0.01,
            "threshold_method": "nbPlugin",
            "powertrans": "2/3",
            "limit54": (5, 4),
            "population_offset": None,
        },
        _check_farrington,
        farrington_flexible,
    ),
    "nb_cusum": _Method(
        {
            "k": 1.04,
            "h": 2.26,
            "baseline": "historical",
            "years": 5,
            "half_window": 3,
            "baseline_weeks": 26,
            "guard_weeks": 2,
        },
        _check_cusum,
        _ignore_judge(nb_cusum),
    ),
    "endemic_channel": _Method(
        {**_HISTORY, "alpha": 0.05}, _check_history, _ignore_judge(endemic_channel)
    ),
    "historical_percentile": _Method(
        {**_HISTORY, "percentile": 75.0}, _check_history, _ignore_judge(historical_percentile)
    ),
    "historical_mean_2sd": _Method(
        {**_HISTORY, "n_sd": 2.0}, _check_history, _ignore_judge(historical_mean_2sd)
    ),
    "csum": _Method(
        {**_HISTORY, "n_sd": 2.0, "half_window": 1}, _check_history, _ignore_judge(csum)
    ),
}


def resolve_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The method's defaults updated with ``params``, checked; ValueError names the problem."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    spec = METHODS[method]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ValueError(
            f"{method}: unknown parameter(s) {unknown}; expected some of {sorted(spec.defaults)}"
            " (and judge_from)"
        )
    resolved = {**spec.defaults, **params}
    spec.check(method, resolved)
    return resolved


# ---------------------------------------------------------------------------------------
# Input validation and the public API
# ---------------------------------------------------------------------------------------


def _weekly_axis(index: pd.Index, what: str) -> _Weeks:
    """Check that ``index`` is ascending week starts exactly 7 days apart."""
    try:
        days = pd.DatetimeIndex(index)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: the index must hold week start dates ({error})") from error
    if days.tz is not None:
        days = days.tz_localize(None)
    if (days != days.normalize()).any():
        raise ValueError(f"{what}: week start dates must be whole days (no time of day)")
    steps = np.diff(days.to_numpy().astype("datetime64[D]").astype(np.int64))
    if len(steps) and not np.all(steps == 7):
        bad = int(np.flatnonzero(steps != 7)[0])
        raise ValueError(
            f"{what}: weeks must be ascending and exactly 7 days apart (a missing week is a "
            f"NaN value, not an absent row); {days[bad].date()} is followed by "
            f"{days[bad + 1].date()}"
        )
    return _Weeks(days.to_numpy().astype("datetime64[D]"), days)


def _count_values(frame: pd.DataFrame, what: str) -> FloatArray:
    """Counts as a float (S, T) array; negative or infinite counts are errors."""
    try:
        values = frame.to_numpy(dtype=np.float64, na_value=np.nan).T.copy()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: counts must be numbers ({error})") from error
    if np.isinf(values).any():
        raise ValueError(f"{what}: counts must be finite (NaN marks a missing week)")
    if (np.nan_to_num(values) < 0).any():
        raise ValueError(f"{what}: counts must not be negative")
    return values


def _population(population: object, frame: pd.DataFrame, method: str) -> FloatArray | None:
    """``population_offset`` as a (S, T) array aligned with the counts."""
    if population is None:
        return None
    if isinstance(population, pd.Series):
        aligned = population.reindex(frame.index)
        matrix = np.tile(aligned.to_numpy(dtype=np.float64, na_value=np.nan), (frame.shape[1], 1))
    elif isinstance(population, pd.DataFrame):
        aligned_frame = population.reindex(index=frame.index, columns=frame.columns)
        matrix = aligned_frame.to_numpy(dtype=np.float64, na_value=np.nan).T
    else:
        raise _fail(
            method,
            "population_offset",
            "a Series (or DataFrame) indexed like the counts",
            population,
        )
    if not (np.isfinite(matrix).all() and (matrix > 0).all()):
        raise _fail(
            method,
            "population_offset",
            "positive populations for every week",
            "missing or <= 0 values",
        )
    return matrix


def _judge_mask(weeks: _Weeks, judge_from: object) -> BoolArray:
    if judge_from is None:
        return np.ones(len(weeks.days), dtype=bool)
    try:
        start = pd.Timestamp(judge_from)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ValueError(f"judge_from must be a date, got {judge_from!r}") from error
    mask: BoolArray = weeks.index >= start
    return np.asarray(mask, dtype=bool)


def _run(
    frame: pd.DataFrame, method: str, params: Mapping[str, Any], what: str
) -> tuple[_Weeks, FloatArray, Arrays, dict[str, Any]]:
    options = dict(params)
    judge_from = options.pop("judge_from", None)
    resolved = resolve_params(method, options)
    weeks = _weekly_axis(frame.index, what)
    values = _count_values(frame, what)
    judge = _judge_mask(weeks, judge_from)
    run_params = dict(resolved)
    if "population_offset" in run_params:
        run_params["population_offset"] = _population(
            run_params["population_offset"], frame, method
        )
    if values.shape[1] == 0:
        return weeks, values, {}, resolved
    out = METHODS[method].run(values, weeks, run_params, judge)
    for array in out.values():
        if array.dtype == np.bool_:
            array[:, ~judge] = False
        else:
            array[:, ~judge] = np.nan
    return weeks, values, out, resolved


def _columns_in_order(out: Arrays) -> list[str]:
    extras = [name for name in out if name not in CORE_COLUMNS]
    return [name for name in CORE_COLUMNS if name != "observed"] + extras


def detect(counts: pd.Series, method: str, **params: Any) -> pd.DataFrame:
    """Run one detector on a weekly series; one row per week of ``counts``.

    ``counts``: pandas Series indexed by week start dates, ascending, 7 days apart, NaN for a
    missing week. ``method``: one of :data:`METHODS`. ``params``: the method's parameters
    (see each method's function) and ``judge_from``. Raises ValueError naming the method and
    parameter for an unknown method, an unknown parameter or a bad value.
    """
    if not isinstance(counts, pd.Series):
        raise ValueError(f"{method}: counts must be a pandas Series, got {type(counts).__name__}")
    frame = counts.to_frame(name=counts.name if counts.name is not None else "counts")
    weeks, values, out, resolved = _run(frame, method, params, method)
    result = pd.DataFrame(
        {"observed": values[0] if values.size else np.empty(0)}, index=weeks.index
    )
    for name in _columns_in_order(out):
        result[name] = out[name][0]
    if not out:
        for name in CORE_COLUMNS[1:]:
            result[name] = pd.Series(dtype=bool if name == "alarm" else np.float64)
    result.index.name = "week"
    result.attrs = {"method": method, "params": _describe(resolved)}
    return result


def detect_frame(frame: pd.DataFrame, method: str, **params: Any) -> pd.DataFrame:
    """Run one detector on every column of ``frame`` (weeks as index, one series a column).

    Same rules as :func:`detect`; the answer is long, indexed by (series, week), series in
    column order. ``population_offset`` may be a Series (shared) or a DataFrame like
    ``frame``. Much faster than looping over :func:`detect`: the Farrington fits of all
    series are batched, a series' missing weeks weighted 0 in its own row of the batch.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{method}: frame must be a pandas DataFrame, got {type(frame).__name__}")
    weeks, values, out, resolved = _run(frame, method, params, method)
    series, length = values.shape
    index = pd.MultiIndex.from_product([frame.columns, weeks.index], names=["series", "week"])
    data: dict[str, Any] = {"observed": values.reshape(-1)}
    for name in _columns_in_order(out):
        data[name] = out[name].reshape(series * length)
    result = pd.DataFrame(data, index=index)
    result.attrs = {"method": method, "params": _describe(resolved)}
    return result


def _describe(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for ``DataFrame.attrs``: the population series summarised, not copied."""
    return {
        name: ("<series>" if isinstance(value, pd.Series | pd.DataFrame) else value)
        for name, value in params.items()
    }
