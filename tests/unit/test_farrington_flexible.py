"""Farrington flexible against R `surveillance`: the package's own reference values and more.

Sources of the expected numbers:

- ``tests/testthat/test-farringtonFlexible.R`` of the CRAN package ``surveillance`` (1.26.0):
  the weights, the two threshold functions, the reference weeks, the blocks, the GLM data
  and the structural checks, transcribed as data (inputs and expected numbers).
- End-to-end runs of ``farringtonFlexible`` computed with R 4.2.2 and surveillance 1.20.3
  (Debian's package; its farringtonFlexible.R differs from 1.26.0 only in refactoring) on
  the package's ``salmonella.agona`` data (inst/extdata/salmonella.agona.txt, weeks from
  Monday 1990-01-01), and on the deterministic series below standing in for the random
  series of the package's "NA" test.
"""

from __future__ import annotations

import io
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines.alerts import _farrington as F
from pipelines.alerts import detect

pytestmark = pytest.mark.unit

# salmonella.agona$observed (312 weeks, 1990 week 1 to 1995 week 52).
SALMONELLA_AGONA = [
    1,
    0,
    5,
    2,
    1,
    2,
    0,
    4,
    0,
    0,
    0,
    3,
    1,
    1,
    0,
    0,
    2,
    2,
    0,
    2,
    6,
    3,
    2,
    1,
    2,
    0,
    1,
    1,
    3,
    5,
    3,
    4,
    3,
    6,
    5,
    8,
    6,
    3,
    6,
    2,
    5,
    2,
    1,
    5,
    7,
    1,
    10,
    3,
    4,
    0,
    0,
    1,
    6,
    0,
    2,
    2,
    0,
    0,
    2,
    2,
    0,
    6,
    7,
    1,
    0,
    0,
    0,
    1,
    1,
    4,
    3,
    1,
    3,
    2,
    6,
    3,
    4,
    4,
    8,
    12,
    9,
    17,
    16,
    8,
    6,
    13,
    4,
    7,
    10,
    3,
    11,
    4,
    6,
    4,
    7,
    6,
    2,
    9,
    2,
    3,
    4,
    1,
    2,
    2,
    0,
    0,
    1,
    2,
    2,
    2,
    5,
    0,
    0,
    4,
    2,
    1,
    3,
    2,
    0,
    1,
    1,
    3,
    0,
    1,
    3,
    2,
    3,
    6,
    2,
    1,
    3,
    3,
    2,
    2,
    2,
    1,
    3,
    3,
    2,
    3,
    0,
    2,
    4,
    6,
    7,
    3,
    1,
    4,
    1,
    2,
    5,
    1,
    3,
    1,
    0,
    1,
    3,
    3,
    0,
    0,
    1,
    1,
    0,
    1,
    4,
    1,
    1,
    0,
    0,
    1,
    1,
    4,
    1,
    0,
    1,
    2,
    1,
    4,
    3,
    3,
    0,
    3,
    5,
    3,
    3,
    4,
    3,
    3,
    3,
    4,
    5,
    7,
    6,
    5,
    3,
    2,
    1,
    3,
    2,
    1,
    2,
    1,
    1,
    0,
    0,
    1,
    1,
    0,
    1,
    4,
    3,
    2,
    0,
    1,
    0,
    3,
    1,
    1,
    4,
    4,
    0,
    1,
    4,
    2,
    0,
    1,
    1,
    0,
    1,
    1,
    2,
    5,
    4,
    0,
    2,
    1,
    1,
    3,
    6,
    1,
    7,
    6,
    2,
    5,
    7,
    5,
    4,
    5,
    6,
    6,
    1,
    2,
    2,
    5,
    4,
    1,
    6,
    2,
    5,
    3,
    4,
    7,
    6,
    10,
    2,
    4,
    0,
    3,
    0,
    1,
    3,
    0,
    1,
    1,
    0,
    1,
    0,
    1,
    0,
    1,
    2,
    2,
    4,
    7,
    6,
    1,
    4,
    6,
    4,
    2,
    4,
    5,
    5,
    9,
    8,
    6,
    3,
    2,
    3,
    4,
    3,
    3,
    4,
    4,
    2,
    1,
    2,
    3,
    2,
    2,
    0,
    4,
]
SALMONELLA_WEEKS = pd.date_range("1990-01-01", periods=len(SALMONELLA_AGONA), freq="7D")

# R's farringtonFlexible defaults (control list of the package), under our names.
R_DEFAULTS = {
    "b": 5,
    "w": 3,
    "no_periods": 1,
    "past_weeks_not_included": 3,
    "alpha": 0.05,
    "threshold_method": "delta",
    "powertrans": "2/3",
}
# The control lists of the end-to-end reference runs (R names: noPeriods, pastWeeksNotIncluded,
# thresholdMethod, pThresholdTrend, populationOffset).
R_CASES: dict[str, dict[str, object]] = {
    "A_test_alarms": {"threshold_method": "nbPlugin", "alpha": 0.1},
    "B_noufaily": {
        "no_periods": 10,
        "past_weeks_not_included": 26,
        "alpha": 0.01,
        "threshold_method": "nbPlugin",
    },
    "C_muan": {
        "no_periods": 10,
        "past_weeks_not_included": 26,
        "alpha": 0.05,
        "threshold_method": "muan",
    },
    "D_delta": {"alpha": 0.05, "threshold_method": "delta"},
    # populationOffset = TRUE with population 1000 + 10 t
    "E_pop": {
        "b": 3,
        "w": 2,
        "no_periods": 4,
        "past_weeks_not_included": 10,
        "alpha": 0.05,
        "threshold_method": "nbPlugin",
    },
    # observed[c(200:205, 160)] <- NA
    "F_missing": {
        "b": 3,
        "w": 3,
        "no_periods": 10,
        "past_weeks_not_included": 26,
        "alpha": 0.05,
        "threshold_method": "nbPlugin",
    },
    "G_notrend_noreweight": {
        "trend": False,
        "reweight": False,
        "no_periods": 10,
        "alpha": 0.05,
        "threshold_method": "nbPlugin",
        "past_weeks_not_included": 26,
    },
    "H_delta_half": {
        "alpha": 0.01,
        "threshold_method": "delta",
        "powertrans": "1/2",
        "no_periods": 5,
        "past_weeks_not_included": 10,
    },
    "I_trend_loose": {
        "alpha": 0.05,
        "threshold_method": "nbPlugin",
        "p_threshold_trend": 1.0,
        "b": 4,
        "no_periods": 3,
        "past_weeks_not_included": 4,
    },
}
# case, k (1-based week), upperbound, expected, pvalue, phiVector, trend, alarm (R output).
R_REFERENCE = """case,k,upperbound,expected,pvalue,phi,trend,alarm
A_test_alarms,264,3,1.47058823532855,0.000592689941258284,1.53455595536433,0,1
A_test_alarms,274,4,1.51428571503967,0.63493443960381,2.1510112712048,0,0
A_test_alarms,289,6,2.26993226420396,0.231235762864542,3.61858739224526,1,0
A_test_alarms,296,8,4.70982694004613,0.33369623356928,1.01727957930929,0,0
A_test_alarms,301,6,3.25160078421702,0.58412870153807,1.44229083065217,1,0
A_test_alarms,304,5,2.63711398610839,0.283096913430494,1.48039688797576,1,0
A_test_alarms,312,8,4.3125240871789,0.557139450606142,1.80299981138199,1,0
B_noufaily,264,6,1.08584142118187,0.000273359670069678,1.58729718185396,1,1
B_noufaily,274,6,1.16905373478139,0.597053667048961,1.62229956436357,1,0
B_noufaily,289,9,2.76044111428034,0.306056296247511,1.64858157745828,1,0
B_noufaily,293,11,3.7348988868161,0.326595577999038,1.65290405439633,1,0
B_noufaily,296,11,3.86664918624429,0.22978356430223,1.67170531657196,1,0
B_noufaily,304,9,2.32963076593707,0.235299577131779,1.8384357439881,1,0
B_noufaily,312,7,1.72234833290898,0.138124080180755,1.67518492014414,1,0
C_muan,264,4,1.08584142118187,0.000615428756925721,1.58729718185396,1,1
C_muan,274,4,1.16905373478139,0.683771017429612,1.62229956436357,1,0
C_muan,289,8,2.76044111428034,0.401323808993333,1.64858157745828,1,0
C_muan,293,9,3.7348988868161,0.427930261122255,1.65290405439633,1,0
C_muan,296,10,3.86664918624429,0.321997493778257,1.67170531657196,1,0
C_muan,304,7,2.32963076593707,0.319072381718306,1.8384357439881,1,0
C_muan,312,6,1.72234833290898,0.199986815847168,1.67518492014414,1,0
D_delta,264,4.5757384965619,1.47058823532855,8.33973828468788e-05,1.53455595536433,0,1
D_delta,274,5.34830774609145,1.51428571503967,0.618414712093139,2.1510112712048,0,0
D_delta,289,8.45295496191137,2.26993226420396,0.295212315129246,3.61858739224526,1,0
D_delta,296,8.74934909026088,4.70982694004613,0.286500899682689,1.01727957930929,0,0
D_delta,301,7.47728156202809,3.25160078421702,0.546114150079366,1.44229083065217,1,0
D_delta,304,6.56720438138274,2.63711398610839,0.264690868350912,1.48039688797576,1,0
D_delta,312,10.0262151605501,4.3125240871789,0.542435933784397,1.80299981138199,1,0
E_pop,172,3,0.874105013165439,0.0497749231162519,1.96366085948715,1,1
E_pop,197,6,2.37698808789234,0.818500110720321,1.87729233321955,1,0
E_pop,218,3,0.789018010266628,0.456724274598702,1.63872502131035,1,0
E_pop,233,4,1.23104937913872,0.0710929064570197,1.5660914176124,1,0
E_pop,257,5,1.796982349765,0.0228254578897606,1.28765997492987,1,1
E_pop,289,8,3.91274853801173,0.523748191287393,1.32707838794239,0,0
E_pop,312,7,3.21038961038962,0.390281750153844,1.41137575740256,0,0
F_missing,240,6,2.32417423572801,0.84719960648961,1.50916518730198,1,0
F_missing,241,6,2.39558638838188,0.031009505929768,1.43221506921162,1,1
F_missing,253,7,3.625,0.856538949762763,1.16467961334947,0,0
F_missing,265,4,1.55000000000948,0.446744130257732,1.14153823853483,0,0
F_missing,287,7,3.67465417424298,0.490825843379277,1.14718486914103,1,0
F_missing,292,9,5.08603468934398,0.558305900600553,1.19030889097588,1,0
F_missing,299,12,6.87661915771806,0.950526715616808,1.27484226584731,1,0
F_missing,312,9,4.40732492994392,0.616055520221507,1.23615044888845,1,0
G_notrend_noreweight,264,5,1.47058823532855,0.00228650855754341,1.95470896848298,0,1
G_notrend_noreweight,274,5,1.51428571503967,0.649404302698976,2.00514229432924,0,0
G_notrend_noreweight,289,9,3.91428571429351,0.48607753165961,2.02466354811861,0,0
G_notrend_noreweight,296,11,4.9142857142857,0.366443046016312,1.97229019723666,0,0
G_notrend_noreweight,304,8,3.45714285714288,0.416081480207071,2.01956038167981,0,0
G_notrend_noreweight,312,6,2.28571428572595,0.229424663008413,1.91586098945651,0,0
H_delta_half,264,6.6922271614646,1.17141430086683,0.000650156279693002,1.64997567439241,1,1
H_delta_half,274,7.63425613981083,1.51428571503967,0.636833523497992,1.71473800134064,0,0
H_delta_half,289,10.1106720878119,2.64699278139172,0.288118963142952,1.75162843893754,1,0
H_delta_half,294,12.2122251106369,3.81039090942154,0.0570023165773286,1.72135757383504,1,0
H_delta_half,296,12.424289845975,3.93170962509762,0.240712396314193,1.71893754787678,1,0
H_delta_half,304,10.3534759532541,2.81346229620883,0.313019470375546,1.72027834577668,1,0
H_delta_half,312,8.52557431904388,1.94117384657596,0.177587855123946,1.69527257480906,1,0
I_trend_loose,212,4,1.15009319195005,0.293696771296247,1.87980371078199,1,0
I_trend_loose,236,6,2.21215031142924,0.802814106522109,1.80350088816016,1,0
I_trend_loose,253,6,2.06083902018949,0.538600339698231,1.67045855840314,1,0
I_trend_loose,257,4,1.37794918434037,0.0191997591586841,1.62478006531812,1,1
I_trend_loose,262,3,0.895371562445722,0.00305736687346677,1.65095395325963,1,1
I_trend_loose,271,5,1.52936804754355,0.221381468330247,2.07829155512019,1,0
I_trend_loose,295,10,4.61049415502051,0.143118779633513,1.62559445821321,1,0
I_trend_loose,312,7,3.18294503476089,0.38657067586087,1.34175143036907,1,0
"""


def salmonella(case: str) -> pd.Series:
    values = np.asarray(SALMONELLA_AGONA, dtype=float)
    if case == "F_missing":
        values[[*range(199, 205), 159]] = np.nan
    return pd.Series(values, index=SALMONELLA_WEEKS)


def case_params(case: str) -> dict[str, object]:
    params: dict[str, object] = {**R_DEFAULTS, **R_CASES[case]}
    if case == "E_pop":
        population = 1000.0 + 10.0 * np.arange(1, len(SALMONELLA_AGONA) + 1)
        params["population_offset"] = pd.Series(population, index=SALMONELLA_WEEKS)
    return params


# ---------------------------------------------------------------------------------------
# WEIGHTS FUNCTION
# ---------------------------------------------------------------------------------------


def test_weights_are_one_when_everything_is_below_the_threshold() -> None:
    weights = F.assign_weights(np.zeros(10), 0.0)
    np.testing.assert_allclose(weights, np.ones(10))


def test_weights_case_checked_by_hand() -> None:
    s = np.array([0.0] * 5 + [2.0] * 5)
    weights = F.assign_weights(s, 0.0)
    np.testing.assert_allclose(weights, [1.6] * 5 + [0.4] * 5, atol=1e-12)


# ---------------------------------------------------------------------------------------
# RESIDUALS FUNCTION
# ---------------------------------------------------------------------------------------


def _fit_exp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones_like(x), x])
    fit = F.fit_quasipoisson(design, y[None], np.zeros((1, len(y))), np.ones((1, len(y))))
    return F.anscombe_residuals(y[None], fit.mu, fit.hat_values(design), fit.phi)[0]


def test_anscombe_residuals_are_zero_for_an_exact_fit() -> None:
    x = np.array([0, 2, 1, 3, 1, 0, 2, 4, 1, 2], dtype=float)  # R: rpois(10, 1)
    np.testing.assert_allclose(_fit_exp(x, np.exp(x)), 0.0, atol=1.5e-8)


def test_anscombe_residuals_are_not_zero_for_a_shifted_fit() -> None:
    x = np.random.default_rng(1).poisson(1.0, 1000).astype(float)
    assert _fit_exp(x, np.exp(x) + 0.3).mean() > 0


# ---------------------------------------------------------------------------------------
# REFERENCE TIME POINTS FUNCTION
# ---------------------------------------------------------------------------------------


def test_reference_time_points_with_weekly_data() -> None:
    points = F.reference_time_points(date(2013, 6, 6), 3)
    assert all(p.weekday() == date(2013, 6, 6).weekday() for p in points)
    assert sorted(points) == sorted(
        [date(2010, 6, 3), date(2013, 6, 6), date(2012, 6, 7), date(2011, 6, 9)]
    )


def test_a_week_without_its_reference_weeks_is_not_judged() -> None:
    days = [date(2010, 1, 4) + timedelta(weeks=i) for i in range(200)]
    assert F.reference_positions(days, 199, 8) is None
    counts = pd.Series(5.0, index=pd.DatetimeIndex(days))
    result = detect(counts, "farrington_flexible", b=8)
    assert result["expected"].isna().all()
    assert not result["alarm"].any()


# ---------------------------------------------------------------------------------------
# BLOCKS FUNCTION
# ---------------------------------------------------------------------------------------

BLOCK_DAYS = [date(1990, 6, 7) + timedelta(weeks=i) for i in range(1301)]
BLOCK_REFERENCES = [date(2013, 6, 6), date(2012, 6, 7), date(2011, 6, 9), date(2010, 6, 3)]


def _blocks(p: int, b: int = 3, w: int = 3) -> np.ndarray:
    reference = np.array([BLOCK_DAYS.index(d) for d in BLOCK_REFERENCES], dtype=np.int64)
    return F.blocks(reference, len(BLOCK_DAYS), w, p)


@pytest.mark.parametrize("p", [1, 8])
def test_reference_windows_have_the_right_length(p: int) -> None:
    b, w = 3, 3
    assert int(np.sum(_blocks(p) == p)) == w + 1 + b * (2 * w + 1)


@pytest.mark.parametrize("p", [1, 8])
def test_there_are_as_many_levels_as_expected(p: int) -> None:
    levels = _blocks(p)
    assert len(np.unique(levels[~np.isnan(levels)])) == p


def test_periods_have_roughly_the_same_length_each_year() -> None:
    p, b = 8, 3
    levels = _blocks(p)
    sizes = np.array([np.sum(levels == level) for level in range(1, p)])
    assert np.all(np.abs(np.diff(sizes)) <= b)


def test_too_many_periods_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no_periods"):
        _blocks(60)


# ---------------------------------------------------------------------------------------
# DATA GLM FUNCTION
# ---------------------------------------------------------------------------------------

GLM_PARAMS = F.FarringtonParams(b=3, w=3, no_periods=10, past_weeks_not_included=3)
GLM_K = 1199  # R: k = 1200, dayToConsider 2013-05-30


def test_the_glm_data_have_a_unit_time_step_and_all_levels() -> None:
    assert BLOCK_DAYS[GLM_K] == date(2013, 5, 30)
    design = F.baseline_design(BLOCK_DAYS, GLM_K, GLM_PARAMS)
    assert design is not None
    assert np.all(np.diff(design.wtime) == 1)
    assert len(np.unique(design.levels)) == 10


def test_the_glm_data_have_the_right_dimensions_with_a_missing_week() -> None:
    observed = np.ones(len(BLOCK_DAYS))
    observed[1149] = np.nan  # R: observed[1150] <- NA
    design = F.baseline_design(BLOCK_DAYS, GLM_K, GLM_PARAMS)
    assert design is not None
    assert int(np.sum(~np.isnan(observed[design.rows]))) == 156


# ---------------------------------------------------------------------------------------
# FIT GLM FUNCTION
# ---------------------------------------------------------------------------------------


def _fit_salmonella_120(weights_threshold: float) -> tuple[F.FlexibleFit, np.ndarray]:
    response = np.asarray(SALMONELLA_AGONA[:120], dtype=float)[None]
    seasgroups = np.tile(np.arange(1, 13), 10)
    dummies = [(seasgroups == level).astype(float) for level in range(2, 13)]
    design = np.column_stack([np.ones(120), np.arange(1, 121), *dummies])
    population = 50.0 + 40.0 * np.sin(np.arange(120))  # R: runif(120) * 100
    offset = np.log(population)[None]
    return F.fit_flexible(design, response, offset, True, weights_threshold), design


def test_the_fit_has_as_many_coefficients_as_expected() -> None:
    fit, _ = _fit_salmonella_120(0.5)
    assert fit.glm.coef.shape[1] == 12 - 1 + 1 + 1
    assert bool(fit.ok[0])


def test_reweighting_was_done() -> None:
    fit, _ = _fit_salmonella_120(0.5)
    assert np.all(fit.omega != 1)


def test_there_are_no_weights_with_a_very_high_threshold() -> None:
    fit, _ = _fit_salmonella_120(100000.0)
    assert np.all(fit.omega == 1)


def test_there_is_no_overdispersion_below_one() -> None:
    fit, _ = _fit_salmonella_120(0.5)
    assert np.all(fit.phi >= 1)


# ---------------------------------------------------------------------------------------
# THRESHOLD FUNCTIONS (reference values from the package's tests)
# ---------------------------------------------------------------------------------------


def _as_list(bounds: F.Bounds) -> list[float]:
    return [float(bounds.lower), float(bounds.upper), float(bounds.prob), float(bounds.score)]


def test_farrington_threshold_rejects_wrong_exponents() -> None:
    with pytest.raises(ValueError, match="powertrans"):
        F.threshold_farrington(
            np.array(5.0), np.array(0.2), np.array(1.0), "2/88", 0.05, np.array(8.0)
        )


@pytest.mark.parametrize(
    ("powertrans", "expected"),
    [
        ("none", [1.3073128, 8.6926872, 0.0907246, 0.8124165]),
        ("1/2", [1.9891097, 9.3744842, 0.1189986, 0.6857951]),
        ("2/3", [1.8084477, 9.1154825, 0.1094727, 0.7289546]),
    ],
)
def test_farrington_threshold_reference_values(powertrans: str, expected: list[float]) -> None:
    bounds = F.threshold_farrington(
        np.array(5.0), np.array(0.2), np.array(1.0), powertrans, 0.05, np.array(8.0)
    )
    values = _as_list(bounds)
    assert values[2] <= 1 and values[0] >= 0 and values[1] > values[0]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("phi", "method", "expected"),
    [
        (1.5, "muan", [8.0, 24.0, 0.8597797, 0.4193982]),
        (1.0, "muan", [9.0, 22.0, 0.9093099, 0.4605347]),
        (1.5, "nbPlugin", [1.0, 10.0, 0.03763657, 1.11918153]),
        (1.0, "nbPlugin", [2.0, 9.0, 0.01369527, 1.27061541]),
    ],
)
def test_noufaily_threshold_reference_values(
    phi: float, method: str, expected: list[float]
) -> None:
    bounds = F.threshold_noufaily(
        np.array(np.log(5)), np.array(np.log(2)), np.array(phi), 0.05, np.array(11.0), method
    )
    values = _as_list(bounds)
    assert values[0] >= 0 and values[1] > values[0]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------
# GLM FUNCTION, ALARMS, NO CONVERGENCE, NA, population offsets
# ---------------------------------------------------------------------------------------


def test_no_time_trend_with_fewer_than_three_years() -> None:
    result = detect(salmonella("A"), "farrington_flexible", **{**R_DEFAULTS, "b": 2})
    assert result["expected"].notna().any()
    assert not result["trend"].any()


def test_there_are_only_alarms_when_expected() -> None:
    params = {**R_DEFAULTS, "threshold_method": "nbPlugin", "alpha": 0.1}
    result = detect(salmonella("A"), "farrington_flexible", **params)
    assert not result.loc[result["observed"] == 0, "alarm"].any()
    above = (result["observed"] > result["threshold"]) & result["enough_cases"]
    pd.testing.assert_series_equal(above, result["alarm"], check_names=False)
    assert result["alarm"].sum() > 0


def test_no_convergence_gives_no_result_and_no_error() -> None:
    series = np.zeros(698)
    series[695] = 1
    weeks = pd.date_range("2001-01-01", periods=698, freq="7D")
    result = detect(
        pd.Series(series, index=weeks),
        "farrington_flexible",
        no_periods=10,
        alpha=0.01,
        b=5,
        w=4,
        weights_threshold=2.58,
        past_weeks_not_included=26,
        p_threshold_trend=1.0,
        threshold_method="nbPlugin",
        limit54=(4, 5),
        judge_from=weeks[696],
    )
    assert result["expected"].isna().all()
    assert not result["alarm"].any()


NA_PARAMS: dict[str, object] = {
    "no_periods": 10,
    "alpha": 0.01,
    "b": 5,
    "w": 4,
    "weights_threshold": 2.58,
    "past_weeks_not_included": 4,  # R: NULL, i.e. w
    "p_threshold_trend": 1.0,
    "threshold_method": "nbPlugin",
    "limit54": (4, 5),
}


def na_series() -> pd.Series:
    """round(30 + 100 ((t 37) mod 11) / 11 + 10 sin(t)), t = 1..698: R's NA test used
    rnorm/runif; this deterministic series keeps its shape and lets R give numbers."""
    t = np.arange(1, 699)
    values = np.round(30 + 100 * ((t * 37) % 11) / 11 + 10 * np.sin(t))
    return pd.Series(values, index=pd.date_range("2001-01-01", periods=698, freq="7D"))


def test_missing_weeks_reference_values() -> None:
    """R (range 690:698): upperbound and expected, then with observed[680:690] <- NA."""
    series = na_series()
    judge_from = series.index[689]
    full = detect(series, "farrington_flexible", judge_from=judge_from, **NA_PARAMS).iloc[689:]
    np.testing.assert_array_equal(full["threshold"], [160, 166, 159, 163, 163, 160, 165, 161, 162])
    np.testing.assert_allclose(
        full["expected"],
        [
            74.5024170951,
            78.5203814136,
            73.4595246756,
            75.8981884384,
            76.0026570236,
            74.1001851938,
            77.6179494886,
            74.9473228448,
            75.4701613756,
        ],
        rtol=0,
        atol=1e-6,
    )
    gappy = series.copy()
    gappy.iloc[679:690] = np.nan
    result = detect(gappy, "farrington_flexible", judge_from=judge_from, **NA_PARAMS).iloc[689:]
    # R blanks the weeks failing the 4-in-5 rule (a missing week makes the sum NA).
    assert not result["enough_cases"].iloc[:5].any()
    assert not result["alarm"].iloc[:5].any()
    np.testing.assert_array_equal(result["threshold"].iloc[5:], [160, 165, 162, 163])
    np.testing.assert_allclose(
        result["expected"].iloc[5:],
        [74.3429976333, 77.7465050993, 74.9129160085, 75.6860298163],
        rtol=0,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        result["phi"],
        [
            12.0273316984,
            12.0436872401,
            12.0740190371,
            12.0660269336,
            12.1685782081,
            12.0766046454,
            12.0706134322,
            12.1626613053,
            12.1194553477,
        ],
        rtol=0,
        atol=1e-6,
    )
    assert result["trend"].all()


def test_population_offsets_only_rescale_the_intercept() -> None:
    series = na_series()
    params = {**NA_PARAMS, "judge_from": series.index[689]}
    small = detect(series, "farrington_flexible", population_offset=series * 0 + 10000, **params)
    large = detect(series, "farrington_flexible", population_offset=series * 0 + 20000, **params)
    np.testing.assert_allclose(small["threshold"], large["threshold"], equal_nan=True)
    np.testing.assert_allclose(small["expected"], large["expected"], rtol=1e-9, equal_nan=True)


# ---------------------------------------------------------------------------------------
# End-to-end reference runs of farringtonFlexible on salmonella.agona
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(R_CASES))
def test_farrington_flexible_matches_r_on_salmonella_agona(case: str) -> None:
    reference = pd.read_csv(io.StringIO(R_REFERENCE))
    reference = reference[reference["case"] == case]
    result = detect(salmonella(case), "farrington_flexible", **case_params(case))
    mine = result.iloc[reference["k"].to_numpy() - 1]
    np.testing.assert_allclose(mine["threshold"], reference["upperbound"], rtol=0, atol=1e-6)
    for column in ("expected", "pvalue", "phi"):
        np.testing.assert_allclose(mine[column], reference[column], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(mine["trend"], reference["trend"] == 1)
    np.testing.assert_array_equal(mine["alarm"], reference["alarm"] == 1)


def test_farrington_is_deterministic_and_batched_like_single_series() -> None:
    from pipelines.alerts import detect_frame

    frame = pd.DataFrame({"a": salmonella("A"), "b": salmonella("F_missing")})
    params = case_params("B_noufaily")
    many = detect_frame(frame, "farrington_flexible", **params)
    for name in frame.columns:
        one = detect(frame[name], "farrington_flexible", **params)
        pd.testing.assert_frame_equal(many.loc[name], one, check_names=False)


def test_series_with_missing_weeks_fitted_together_equal_their_own_fits() -> None:
    """Series missing different weeks share one batch, each missing week weighted 0: the same
    results as fitting each missing pattern on its own (R's na.omit), with a seasonal level
    missing whole in some series and the reference level missing whole in one."""
    from datetime import date, timedelta

    from pipelines.alerts import _farrington

    rng = np.random.default_rng(11)
    weeks = 6 * 52
    days = [date(2019, 1, 7) + timedelta(weeks=i) for i in range(weeks)]
    season = 1.0 + 0.5 * np.sin(np.arange(weeks) * 2 * np.pi / 52.18)
    values = rng.poisson(8.0 * season * rng.uniform(0.5, 2.0, size=(24, 1))).astype(float)
    values[:, -60:] += rng.poisson(3.0, size=(24, 60)) * (rng.random((24, 60)) < 0.1)
    for row in range(1, 20):  # scattered missing weeks, a different pattern per series
        values[row, rng.choice(weeks, size=int(weeks * 0.03), replace=False)] = np.nan
    params = _farrington.FarringtonParams(b=4, w=3, no_periods=10, trend=True)
    judge = np.zeros(weeks, dtype=bool)
    judge[-52:] = True
    last = weeks - 1
    design = _farrington.baseline_design(days, last, params)
    assert design is not None
    lowest, middle = design.levels.min(), np.unique(design.levels)[3]
    values[20, design.rows[design.levels == middle]] = np.nan  # a level missing whole
    values[21, design.rows[design.levels == lowest]] = np.nan  # the reference level
    population = 1000.0 + rng.uniform(0, 50, size=(24, weeks))

    together = _farrington.farrington_flexible(values, days, population, params, judge)
    apart = _farrington.farrington_flexible(
        values, days, population, params, judge, weigh_missing=False
    )
    for name in ("judged", "trend", "alarm", "enough_cases"):
        np.testing.assert_array_equal(together[name], apart[name], err_msg=name)
    assert together["judged"][:, -52:].all(), "every series judged every week"
    assert together["trend"].any() and (~together["trend"][:, -52:]).any()
    for name in ("expected", "threshold", "lower", "score", "pvalue", "phi"):
        np.testing.assert_allclose(
            together[name], apart[name], rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name
        )
    # the series missing a level whole were judged at the week that lost it
    assert together["judged"][20, last] and together["judged"][21, last]


@pytest.mark.parametrize("kind", ["seasonal levels and trend", "dense"])
def test_weighted_cross_products_equal_the_dense_ones(kind: str) -> None:
    """X'WX from the distinct column products (a Farrington design repeats most of them)
    equals the plain sum of w x x' over the weeks, for any design."""
    rng = np.random.default_rng(3)
    n = 130
    if kind == "dense":
        design = rng.normal(size=(n, 6))
    else:
        levels = np.repeat(np.arange(1, 11), 13)
        indicators = (levels[:, None] == np.arange(2, 11)[None, :]).astype(float)
        design = np.column_stack([np.ones(n), np.arange(n, dtype=float), indicators])
    weights = rng.uniform(0.1, 30.0, size=(7, n))
    model = F._Model.of(design, np.zeros((7, n)), np.ones((7, n)))
    expected = np.einsum("sn,ni,nj->sij", weights, design, design)
    np.testing.assert_allclose(model.cross(weights), expected, rtol=1e-12)
    if kind != "dense":
        assert model.products.shape[1] < design.shape[1] ** 2 // 4


def test_batches_judged_on_several_threads_give_the_same_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches run on worker threads (one per core) give exactly what one thread gives."""
    rng = np.random.default_rng(5)
    weeks = 5 * 52
    days = [date(2020, 1, 6) + timedelta(weeks=i) for i in range(weeks)]
    values = rng.poisson(rng.uniform(1, 30, size=(40, 1)), size=(40, weeks)).astype(float)
    values[rng.random(values.shape) < 0.02] = np.nan
    params = F.FarringtonParams(b=3, w=3)
    judge = np.ones(weeks, dtype=bool)
    monkeypatch.setattr(F, "MAX_BATCH_ROWS", 500)  # many batches
    monkeypatch.setattr(F, "WORKERS", 1)
    alone = F.farrington_flexible(values, days, None, params, judge)
    monkeypatch.setattr(F, "WORKERS", 3)
    threaded = F.farrington_flexible(values, days, None, params, judge)
    assert alone["judged"].sum() > 1000
    for name, array in alone.items():
        np.testing.assert_array_equal(threaded[name], array, err_msg=name)
