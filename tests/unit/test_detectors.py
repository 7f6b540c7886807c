"""Detectors on small hand-computed series, R's earsC reference values, and properties."""

from __future__ import annotations

import math
from statistics import mean, stdev

import numpy as np
import pandas as pd
import pytest
from scipy import stats  # type: ignore[import-untyped]

from pipelines.alerts import METHODS, detect, detect_frame

pytestmark = pytest.mark.unit

Z_0999 = 3.090232306167813  # qnorm(0.999)


def weekly(values: list[float], start: str = "2024-01-01") -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="7D"))


# ---------------------------------------------------------------------------------------
# EARS
# ---------------------------------------------------------------------------------------


def test_ears_c1_hand_computed() -> None:
    result = detect(weekly([1, 2, 3, 4, 5, 6, 7, 20]), "ears_c1")
    last = result.iloc[7]
    assert last["expected"] == pytest.approx(4.0)
    assert last["sd"] == pytest.approx(math.sqrt(28 / 6))
    assert last["threshold"] == pytest.approx(10.675664758038842)
    assert last["score"] == pytest.approx(7.406560798180411)
    assert bool(last["alarm"])
    # weeks 0..6 have no complete 7-week baseline
    assert result["threshold"].iloc[:7].isna().all()
    assert not result["alarm"].iloc[:7].any()


def test_ears_c1_matches_r_reference_values() -> None:
    """R test-earsC.R: salmNewport aggregated over units, C1, alpha 0.05, first 4 weeks of
    2011 (the 7 weeks before them start 2010-11-15)."""
    counts = weekly([1, 1, 1, 3, 3, 1, 2, 1, 0, 3, 3], start="2010-11-15")
    result = detect(counts, "ears_c1", alpha=0.05)
    np.testing.assert_allclose(
        result["threshold"].iloc[7:], [3.278854, 3.278854, 3.436517, 3.855617], atol=1e-6
    )


def test_ears_c2_uses_a_two_week_guard_band() -> None:
    values = [1, 2, 3, 4, 5, 6, 7, 100, 100, 9]
    result = detect(weekly(values), "ears_c2")
    last = result.iloc[9]  # baseline weeks 0..6, the two 100s are the guard band
    assert last["expected"] == pytest.approx(4.0)
    assert last["threshold"] == pytest.approx(4.0 + Z_0999 * math.sqrt(28 / 6))
    assert not bool(last["alarm"])
    assert result["threshold"].iloc[:9].isna().all()


def test_ears_flat_baseline_sd_zero() -> None:
    result = detect(weekly([2] * 7 + [3, 2]), "ears_c1")
    above, equal = result.iloc[7], result.iloc[8]
    assert above["threshold"] == 2.0 and above["sd"] == 0.0
    assert bool(above["alarm"]) and above["score"] == math.inf
    # week 8's baseline holds the 3: no longer flat
    assert not bool(equal["alarm"])
    flat = detect(weekly([2] * 8), "ears_c1").iloc[7]
    assert flat["score"] == 0.0 and not bool(flat["alarm"])


def test_ears_min_sigma_floors_the_sd() -> None:
    result = detect(weekly([2] * 7 + [3]), "ears_c1", min_sigma=0.5).iloc[7]
    assert result["threshold"] == pytest.approx(2 + Z_0999 * 0.5)
    assert not bool(result["alarm"])


def test_ears_missing_weeks() -> None:
    values = [1, 2, np.nan, 4, 5, 6, 7, 20]
    result = detect(weekly(values), "ears_c1").iloc[7]
    baseline = [1, 2, 4, 5, 6, 7]
    assert result["expected"] == pytest.approx(mean(baseline))
    assert result["threshold"] == pytest.approx(mean(baseline) + Z_0999 * stdev(baseline))
    # only two observed baseline weeks: cannot judge
    sparse = detect(weekly([np.nan] * 5 + [1, 2, 20]), "ears_c1").iloc[7]
    assert math.isnan(sparse["threshold"]) and not bool(sparse["alarm"])
    # a missing current week is never an alarm, but its threshold is known
    missing_now = detect(weekly([1, 2, 3, 4, 5, 6, 7, np.nan]), "ears_c1").iloc[7]
    assert not bool(missing_now["alarm"])
    assert missing_now["threshold"] == pytest.approx(10.675664758038842)


def test_ears_c3_hand_computed() -> None:
    """C3(t) = sum of max(0, C2(i) - 1) over i = t-2..t, alarm when C3 > qnorm(0.975)."""
    values = [2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 8, 9, 3]
    result = detect(weekly(values), "ears_c3")
    assert result["score"].iloc[:11].isna().all()
    np.testing.assert_allclose(
        result["score"].iloc[11:], [3.879747322073335, 8.289557813628338, 8.289557813628338]
    )
    assert result["threshold"].iloc[11] == pytest.approx(5.947665284032303)
    # the two previous weeks alone exceed z: every count alarms
    assert result["threshold"].iloc[12] == -math.inf
    assert result["threshold"].iloc[13] == -math.inf
    assert result["alarm"].tolist() == [False] * 11 + [True, True, True]
    # alarm <=> observed > threshold
    judged = result["threshold"].notna()
    assert (result.loc[judged, "alarm"] == (result["observed"] > result["threshold"])[judged]).all()


# ---------------------------------------------------------------------------------------
# CUSUM
# ---------------------------------------------------------------------------------------


def test_nb_cusum_hand_computed_with_reset() -> None:
    """Baseline weeks t-14..t-11 alternate 4 and 6: mean 5, variance 4/3 < mean, so
    Poisson: sigma = sqrt(5), z = (9 - 5) / sqrt(5) for every 9."""
    values = [4, 6] * 7 + [9, 9, 9, 9, 9]
    result = detect(weekly(values), "nb_cusum", baseline="recent", baseline_weeks=4, guard_weeks=10)
    z = 4 / math.sqrt(5)
    step = z - 1.04
    expected = [step, 2 * step, 3 * step, 4 * step, step]  # reset after week 17's alarm
    np.testing.assert_allclose(result["cusum"].iloc[14:], expected)
    assert result["alarm"].tolist() == [False] * 17 + [True, False]
    assert result["expected"].iloc[14] == pytest.approx(5.0)
    assert result["score"].iloc[14] == pytest.approx(z)
    assert result["threshold"].iloc[17] == pytest.approx(
        5 + math.sqrt(5) * (2.26 + 1.04 - 3 * step)
    )
    assert result["size"].iloc[14] == math.inf
    assert result["cusum"].iloc[:14].isna().all()


def test_nb_cusum_missing_week_carries_the_sum() -> None:
    values = [4, 6] * 7 + [9, np.nan, 9]
    result = detect(weekly(values), "nb_cusum", baseline="recent", baseline_weeks=4, guard_weeks=10)
    step = 4 / math.sqrt(5) - 1.04
    np.testing.assert_allclose(result["cusum"].iloc[14:], [step, step, 2 * step])
    assert not result["alarm"].any()


def test_nb_cusum_moment_dispersion() -> None:
    values = [0, 10, 0, 10, 5]
    result = detect(
        weekly(values), "nb_cusum", baseline="recent", baseline_weeks=4, guard_weeks=0
    ).iloc[4]
    variance = stdev([0, 10, 0, 10]) ** 2  # 100/3 > mean 5
    assert result["sd"] == pytest.approx(math.sqrt(variance))
    assert result["size"] == pytest.approx(25 / (variance - 5))


# ---------------------------------------------------------------------------------------
# Same week in earlier years: endemic channel and the IDSR thresholds
# ---------------------------------------------------------------------------------------

HISTORY = [0.0, 1.0, 3.0, 7.0, 15.0]  # ISO week 10 of 2018..2022


def history_series() -> pd.Series:
    """Monday weeks 2018-01-01 .. 2023-12-25: 5 everywhere, HISTORY in ISO week 10 of
    2018-2022, 40 in week 10 of 2023."""
    weeks = pd.date_range("2018-01-01", "2023-12-25", freq="7D")
    iso = weeks.isocalendar()
    values = pd.Series(5.0, index=weeks)
    for year, value in zip(range(2018, 2023), HISTORY, strict=True):
        values[(iso["year"] == year).to_numpy() & (iso["week"] == 10).to_numpy()] = value
    values[(iso["year"] == 2023).to_numpy() & (iso["week"] == 10).to_numpy()] = 40.0
    return values


WEEK_10_2023 = pd.Timestamp("2023-03-06")


def test_endemic_channel_hand_computed() -> None:
    row = detect(history_series(), "endemic_channel").loc[WEEK_10_2023]
    logs = [math.log1p(x) for x in HISTORY]
    half = stats.t.ppf(0.975, 4) * stdev(logs) / math.sqrt(5)
    assert row["expected"] == pytest.approx(3.0)  # exp(2 log 2) - 1
    assert row["threshold"] == pytest.approx(math.expm1(mean(logs) + half))
    assert row["lower"] == pytest.approx(max(0.0, math.expm1(mean(logs) - half)))
    assert row["n_values"] == 5
    assert bool(row["alarm"])


def test_historical_percentile_hand_computed() -> None:
    row = detect(history_series(), "historical_percentile").loc[WEEK_10_2023]
    assert row["threshold"] == 7.0  # 75th percentile of 0, 1, 3, 7, 15 (type 7)
    assert row["expected"] == 3.0
    assert bool(row["alarm"])


def test_historical_mean_2sd_hand_computed_and_epidemic_years() -> None:
    series = history_series()
    row = detect(series, "historical_mean_2sd").loc[WEEK_10_2023]
    assert row["expected"] == pytest.approx(5.2)
    assert row["threshold"] == pytest.approx(5.2 + 2 * math.sqrt(37.2))
    # 2022 flagged as an epidemic year: the four other years remain
    kept = detect(series, "historical_mean_2sd", epidemic_years=[2022]).loc[WEEK_10_2023]
    assert kept["expected"] == pytest.approx(mean(HISTORY[:4]))
    assert kept["threshold"] == pytest.approx(mean(HISTORY[:4]) + 2 * stdev(HISTORY[:4]))
    assert kept["n_values"] == 4


def test_csum_hand_computed() -> None:
    row = detect(history_series(), "csum").loc[WEEK_10_2023]
    values = [v for x in HISTORY for v in (5.0, x, 5.0)]  # weeks 9, 10, 11 of each year
    assert row["n_values"] == 15
    assert row["expected"] == pytest.approx(mean(values))
    assert row["threshold"] == pytest.approx(mean(values) + 2 * stdev(values))
    assert bool(row["alarm"])


def test_history_methods_need_three_earlier_years() -> None:
    series = history_series()
    result = detect(series, "historical_mean_2sd")
    assert result.loc[:"2020-12-28", "threshold"].isna().all()
    assert result.loc["2021-01-04":, "threshold"].notna().all()


def test_week_53_falls_back_on_week_52() -> None:
    weeks = pd.date_range("2015-01-05", "2021-01-03", freq="7D")  # 2015 and 2020 have W53
    iso = weeks.isocalendar()
    values = pd.Series(iso["week"].to_numpy(dtype=float), index=weeks)
    row = detect(values, "historical_percentile").loc["2020-12-28"]  # 2020-W53
    # 2019, 2018, 2017, 2016 have no week 53: their week 52; 2015 has one
    assert row["n_values"] == 5
    assert row["threshold"] == 52.0


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------


def poisson_series(seed: int, weeks: int = 6 * 52, rate: float = 20.0) -> pd.Series:
    rng = np.random.default_rng(seed)
    return weekly(rng.poisson(rate, weeks).astype(float), start="2015-01-05")


# Parameters at small alpha and the most alarms tolerated on a flat Poisson(20) series.
# The SD-based methods estimate their SD from 5-15 values, so their real rate is above the
# nominal one (on 200 such series: C1 1.8%, C2 1.7%, C3 at alpha 0.001 3.0%, mean + 3 SD
# of 5 years 3.1%); these bounds leave room for one series' noise.
SMALL_ALPHA: dict[str, tuple[dict[str, float], float]] = {
    "ears_c1": ({"alpha": 0.001}, 0.05),
    "ears_c2": ({"alpha": 0.001}, 0.05),
    "ears_c3": ({"alpha": 0.001}, 0.07),
    "farrington_flexible": ({"alpha": 0.001}, 0.01),
    "nb_cusum": ({}, 0.02),
    "historical_mean_2sd": ({"n_sd": 3.0}, 0.06),
    "csum": ({"n_sd": 3.0}, 0.03),
}


@pytest.mark.parametrize("method", list(SMALL_ALPHA))
def test_a_flat_poisson_series_raises_few_alarms(method: str) -> None:
    params, most = SMALL_ALPHA[method]
    counts = poisson_series(1, weeks=10 * 52)
    result = detect(counts, method, judge_from="2020-01-06", **params)
    judged = result["threshold"].notna()
    assert judged.sum() >= 250
    assert result.loc[judged, "alarm"].mean() <= most


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_large_spike_raises_an_alarm(method: str) -> None:
    counts = poisson_series(2)
    spike = counts.index[-10]
    counts[spike] = 200.0
    result = detect(counts, method, judge_from="2020-01-06")
    assert bool(result.loc[spike, "alarm"])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_deterministic_and_shaped(method: str) -> None:
    counts = poisson_series(3, weeks=5 * 52 + 20)
    first = detect(counts, method)
    second = detect(counts, method)
    pd.testing.assert_frame_equal(first, second)
    assert list(first.columns[:4]) == ["observed", "expected", "threshold", "alarm"]
    assert first.index.equals(counts.index)
    assert first["alarm"].dtype == bool
    unjudged = first["threshold"].isna()
    assert not first.loc[unjudged, "alarm"].any()
    assert first.loc[unjudged, "expected"].isna().all()


def test_detect_frame_equals_detect_per_series() -> None:
    frame = pd.DataFrame({"a": poisson_series(4), "b": poisson_series(5)})
    frame.iloc[100:103, 1] = np.nan
    for method in ("ears_c3", "nb_cusum", "csum"):
        many = detect_frame(frame, method)
        for name in frame.columns:
            pd.testing.assert_frame_equal(many.loc[name], detect(frame[name], method))


def test_judge_from_blanks_earlier_weeks() -> None:
    counts = poisson_series(6)
    result = detect(counts, "ears_c1", judge_from="2020-01-06")
    assert result.loc[:"2019-12-30", "threshold"].isna().all()
    assert result.loc["2020-01-06":, "threshold"].notna().all()


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_unknown_method_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown method 'ears_c4'"):
        detect(weekly([1.0] * 10), "ears_c4")


@pytest.mark.parametrize(
    ("method", "params", "name"),
    [
        ("ears_c1", {"alpha": 1.5}, "alpha"),
        ("ears_c2", {"baseline": 2}, "baseline"),
        ("ears_c3", {"min_sigma": -1}, "min_sigma"),
        ("farrington_flexible", {"threshold_method": "poisson"}, "threshold_method"),
        ("farrington_flexible", {"b": 0}, "b"),
        ("farrington_flexible", {"limit54": (5,)}, "limit54"),
        ("farrington_flexible", {"powertrans": "2/88"}, "powertrans"),
        ("farrington_flexible", {"reweight": "yes"}, "reweight"),
        ("nb_cusum", {"baseline": "last year"}, "baseline"),
        ("nb_cusum", {"h": 0}, "h"),
        ("endemic_channel", {"years": 0}, "years"),
        ("historical_percentile", {"percentile": 120}, "percentile"),
        ("historical_mean_2sd", {"epidemic_years": "2019"}, "epidemic_years"),
        ("csum", {"n_sd": -2}, "n_sd"),
    ],
)
def test_bad_parameters_name_the_method_and_parameter(
    method: str, params: dict[str, object], name: str
) -> None:
    with pytest.raises(ValueError, match=f"{method}: parameter '{name}'"):
        detect(weekly([1.0] * 10), method, **params)


def test_unknown_parameter_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"ears_c1: unknown parameter\(s\) \['window'\]"):
        detect(weekly([1.0] * 10), "ears_c1", window=3)


def test_irregular_weeks_are_a_value_error() -> None:
    counts = weekly([1.0] * 10).drop(pd.Timestamp("2024-01-15"))
    with pytest.raises(ValueError, match="exactly 7 days apart"):
        detect(counts, "ears_c1")


def test_negative_counts_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        detect(weekly([1.0, -1.0, 2.0]), "ears_c1")
