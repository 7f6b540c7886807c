"""Farrington flexible (Noufaily et al. 2013) as the R package ``surveillance`` computes it.

The reference is ``surveillance::farringtonFlexible`` (R/farringtonFlexible.R and the helpers
it shares with R/algo_farrington.R, package version 1.26.0). This module re-derives each step
from that description, batched over many series that share the same weeks; the public entry
point and its documentation are :func:`pipelines.alerts.detectors.farrington_flexible`.

Steps for one judged week k (numbers are positions in the weekly series):

1. Reference weeks (``algo.farrington.referencetimepoints``): the calendar date of week k
   moved back 0..b years (29 February becomes 1 March, as R's ``seq(by = "-1 year")``
   normalises it), then the week of the series starting on the nearest same weekday.
2. Blocks (``blocks``): the current window k-w..k and every past window ref-w..ref+w get the
   level ``no_periods``; the weeks between two consecutive windows are cut into
   ``no_periods - 1`` blocks of nearly equal length (the first ``period mod (p - 1)`` blocks
   one week longer) labelled 1..p-1, the oldest first.
3. Rows (``algo.farrington.data.glm``): weeks with a level, minus ``k - past_weeks_not_included
   .. k``, minus missing counts; ``wtime`` counts weeks from the first such row before
   missing counts are dropped.
4. Fit (``algo.farrington.fitGLM.flexible``): quasi-Poisson log-link GLM (IRLS exactly as
   R's ``glm.fit``: start ``mu = y + 0.1``, at most 25 iterations, converged when the relative
   deviance change is below 1e-8), retried without trend if it does not converge; dispersion
   ``phi = max(1, Pearson X^2 / df)``; with ``reweight``, Anscombe residuals scaled by
   ``sqrt(phi (1 - h))``, weights ``gamma * s^-2`` above ``weights_threshold`` and ``gamma``
   below, ``gamma`` making them average 1, a refit with those weights and phi again.
5. Trend (``algo.farrington.glm``): kept when its t-test p-value (``summary.glm``: t with
   the residual degrees of freedom and the dispersion of :class:`FlexibleFit`) is below
   ``p_threshold_trend``, b >= 3 and the predicted count for week k does not exceed the
   largest baseline count; otherwise the whole fit (4.) is redone without trend.
6. Prediction for week k at level ``no_periods`` and the threshold (``threshold.noufaily`` or
   ``threshold.farrington``), the 5-cases-in-4-weeks rule and the alarm.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar

import numpy as np
from scipy import special, stats  # type: ignore[import-untyped]  # no scipy-stubs in the env

from pipelines.alerts._weeks import BoolArray, FloatArray, IntArray

MAX_ITERATIONS = 25  # glm.control()$maxit
# (series, week) rows fitted in one batch: large enough to amortise numpy's per-call cost,
# small enough that the IRLS arrays (rows x baseline weeks, a dozen of them) stay tens of MB.
MAX_BATCH_ROWS = 20_000
# Threads judging batches at once: one per core the process may use (a few at most; each
# batch holds a dozen arrays of MAX_BATCH_ROWS x baseline weeks).
WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
_T = TypeVar("_T")
EPSILON = 1e-8  # glm.control()$epsilon
# R's discrete quantile search takes the smallest x with F(x) >= p (1 - 64 eps): keeps
# exact ties on the left (qpois, qnbinom).
QUANTILE_FUZZ = 1 - 64 * np.finfo(np.float64).eps
POWER_TRANSFORMS = {"none": 1.0, "1/2": 0.5, "2/3": 2.0 / 3.0}
THRESHOLD_METHODS = ("nbPlugin", "muan", "delta")


@dataclass(frozen=True)
class FarringtonParams:
    """The ``control`` list of ``farringtonFlexible`` under Python names."""

    b: int = 5
    w: int = 3
    reweight: bool = True
    weights_threshold: float = 2.58
    past_weeks_not_included: int = 26
    no_periods: int = 10
    trend: bool = True
    p_threshold_trend: float = 0.05
    alpha: float = 0.01
    threshold_method: str = "nbPlugin"
    powertrans: str = "2/3"
    limit54: tuple[int, int] = (5, 4)


# ---------------------------------------------------------------------------------------
# Reference weeks and blocks
# ---------------------------------------------------------------------------------------


def shift_years(day: date, years: int) -> date:
    """``day`` moved back ``years`` calendar years; 29 February becomes 1 March (R's
    ``as.Date`` normalisation of an impossible date)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return date(day.year - years, 3, 1)


def reference_time_points(day: date, b: int) -> list[date]:
    """The week-k start date and the nearest same weekday 1..b years back (b + 1 dates).

    The nearest same weekday is unique: the candidates lie 0..3 days on one side and 4..6
    days on the other, which is what R's choice between its two candidates amounts to.
    """
    points = []
    for years in range(b + 1):
        target = shift_years(day, years)
        offset = (day.weekday() - target.weekday()) % 7
        points.append(target + timedelta(days=offset if offset <= 3 else offset - 7))
    return points


def reference_positions(days: list[date], k: int, b: int) -> IntArray | None:
    """Positions of week k's reference weeks, most recent first; None if one is absent.

    R stops with "Some reference time points did not exist"; a week that cannot be judged
    is reported as such instead.
    """
    first = days[0]
    out = []
    for point in reference_time_points(days[k], b):
        offset = (point - first).days
        if offset < 0 or offset % 7 or offset // 7 >= len(days):
            return None
        out.append(offset // 7)
    return np.asarray(out, dtype=np.int64)


def blocks(reference: IntArray, length: int, w: int, no_periods: int) -> FloatArray:
    """Seasonal level (1..no_periods) of every week, NaN outside the baseline.

    ``reference`` holds the positions of week k and its b reference weeks, most recent first.
    Windows reaching before the first week are cut at the first week (R silently drops a
    zeroth index and stops on negative ones).
    """
    levels = np.full(length, np.nan)
    k = int(reference[0])
    levels[max(k - w, 0) : k + 1] = no_periods
    for i in range(1, len(reference)):
        ref = int(reference[i])
        levels[max(ref - w, 0) : ref + w + 1] = no_periods
        if no_periods == 1:
            continue
        period = int(reference[i - 1]) - 2 * w - 1 - ref
        if period < no_periods - 1:
            # R's own check (period < p - (2w + 1)) lets through gaps shorter than p - 1,
            # which it then fills with overlapping reversed ranges; refuse them instead.
            raise ValueError(
                f"farrington_flexible: no_periods={no_periods} is too large: the "
                f"{period} weeks between two windows cannot hold {no_periods - 1} blocks"
            )
        lengths = np.full(no_periods - 1, period // (no_periods - 1))
        lengths[: period % (no_periods - 1)] += 1
        start = ref + w + 1
        for level, size in enumerate(lengths.tolist(), start=1):
            levels[start : start + size] = level
            start += size
    return levels


# ---------------------------------------------------------------------------------------
# Quasi-Poisson GLM by IRLS, batched over series sharing one design matrix
# ---------------------------------------------------------------------------------------


@dataclass
class GlmFit:
    """The parts of R's ``glm`` object the algorithm reads, one row per series."""

    coef: FloatArray  # (S, p)
    mu: FloatArray  # (S, n) fitted means
    working_weights: FloatArray  # (S, n) prior * mu of the last iteration (glm's $weights)
    cov_unscaled: FloatArray  # (S, p, p) (X' W X)^-1 with those weights
    converged: BoolArray  # (S,)
    df_residual: FloatArray  # (S,)
    dispersion: FloatArray  # (S,) Pearson X^2 / df, as summary.glm() estimates it

    @property
    def phi(self) -> FloatArray:
        """``max(dispersion, 1)``: the package never lets phi fall below Poisson."""
        return np.maximum(self.dispersion, 1.0)

    def hat_values(self, design: FloatArray) -> FloatArray:
        """Diagonal of the weighted hat matrix ``W^1/2 X (X'WX)^-1 X' W^1/2`` (hatvalues())."""
        quad = np.einsum("ni,sij,nj->sn", design, self.cov_unscaled, design, optimize=True)
        hat: FloatArray = self.working_weights * quad
        return hat


def _y_log_y(y: FloatArray) -> FloatArray:
    """``y log y`` with 0 for y = 0: the part of the Poisson deviance that no fit changes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(y > 0, y * np.log(y), 0.0)
    return out


def _poisson_deviance(
    y: FloatArray, y_log_y: FloatArray, eta: FloatArray, mu: FloatArray, prior: FloatArray
) -> FloatArray:
    """R's ``poisson()$dev.resids`` summed: ``2 sum prior (y log(y / mu) - (y - mu))``, with
    log(mu) taken as the linear predictor that mu = exp(eta) came from (no logarithm of the
    whole array per iteration)."""
    deviance: FloatArray = 2.0 * (prior * (y_log_y - y * eta - y + mu)).sum(axis=1)
    return deviance


def _solve(xtwx: FloatArray, rhs: FloatArray) -> FloatArray:
    try:
        solved = np.asarray(np.linalg.solve(xtwx, rhs[..., None])[..., 0], dtype=np.float64)
    except np.linalg.LinAlgError:
        solved = np.einsum("sij,sj->si", np.asarray(np.linalg.pinv(xtwx), np.float64), rhs)
    return solved


def _absent_columns(design: FloatArray, prior: FloatArray) -> FloatArray:
    """(S, p), 1.0 where a series has no week with prior weight in the column (a seasonal
    level all of whose weeks are missing), else 0.0."""
    absent: FloatArray = (((prior > 0).astype(np.float64) @ (design != 0)) == 0).astype(np.float64)
    return absent


def _with_absent_columns(cross: FloatArray, absent: FloatArray) -> FloatArray:
    """X'WX with 1 on the diagonal of the absent columns: their rows and columns are zero,
    so the system splits into the fit without them and ``coefficient = 0`` for them."""
    if not absent.any():
        return cross
    regular = cross.copy()
    diagonal = np.arange(cross.shape[-1])
    regular[:, diagonal, diagonal] += absent
    return regular


def _inverse(cross: FloatArray) -> FloatArray:
    try:
        return np.asarray(np.linalg.inv(cross), dtype=np.float64)
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(cross), dtype=np.float64)


def fit_quasipoisson(
    design: FloatArray, y: FloatArray, offset: FloatArray, prior: FloatArray
) -> GlmFit:
    """IRLS as ``glm.fit`` runs it for ``quasipoisson(link = "log")``.

    Each series stops iterating at its own convergence, so results equal one-series fits.
    Step halving (R's answer to a non-finite deviance) halves towards the previous
    coefficients; a first step that is not finite leaves the series unconverged (R stops
    with "no valid set of coefficients").

    The series still iterating are kept in compact arrays (``_Irls``), shrunk only when some
    finish: indexing every (series x weeks) array by the active rows at each iteration cost
    more than the fit itself.

    A row of ``prior`` 0 is a missing week of that series: it is left out of the fit, as R's
    ``na.omit`` leaves it out of the model frame. A column with no week left (a seasonal level
    whose weeks are all missing in that series) is left out as R's pivoting leaves it out:
    coefficient 0, no variance, not counted in the rank.
    """
    series, n = y.shape
    p = design.shape[1]
    absent = _absent_columns(design, prior)
    mu = y + 0.1
    coef = np.zeros((series, p))
    working = np.zeros((series, n))
    cross = np.zeros((series, p, p))
    converged = np.zeros(series, dtype=bool)
    started = np.zeros(series, dtype=bool)
    state = _Irls.start(design, y, offset, prior, absent)
    for _ in range(MAX_ITERATIONS):
        if state.rows.size == 0:
            break
        finished = state.step()
        if finished.any():
            state.write(finished, coef, mu, working, cross, converged, started)
            state = state.keep(~finished)
    state.write(np.ones(state.rows.size, dtype=bool), coef, mu, working, cross, converged, started)
    cov_unscaled = _inverse(_with_absent_columns(cross, absent))
    if absent.any():
        present = 1.0 - absent
        cov_unscaled *= present[:, :, None] * present[:, None, :]
    rank = p - absent.sum(axis=1)
    df = (prior > 0).sum(axis=1).astype(np.float64) - rank
    residuals = (y - mu) / mu
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.where(working > 0, working * residuals**2, 0.0).sum(axis=1) / df
    dispersion = np.where(df > 0, dispersion, np.nan)
    return GlmFit(coef, mu, working, cov_unscaled, converged & started, df, dispersion)


@dataclass(frozen=True)
class _Model:
    """What every IRLS iteration of one batch shares: the design and whether the batch has
    offsets and weights other than 1 (so that the usual case skips those passes).

    X'WX is a weighted sum of the products of two columns, and a Farrington design
    (intercept, trend, one 0/1 column per seasonal level) has few distinct products: the
    level columns are disjoint, so most products are zero or repeat another. The weights
    are multiplied with the distinct products only (about 20 of 121 for 11 columns).
    """

    design: FloatArray  # (n, p)
    products: FloatArray  # (n, m): the distinct products of two columns, row by row
    position: IntArray  # (p * p,): the distinct product behind each cell of X'WX
    has_offset: bool
    has_prior: bool

    @classmethod
    def of(cls, design: FloatArray, offset: FloatArray, prior: FloatArray) -> _Model:
        n, p = design.shape
        outer = (design[:, :, None] * design[:, None, :]).reshape(n, p * p).T
        first: dict[bytes, int] = {}  # a product's bytes -> its distinct column
        position = np.asarray(
            [first.setdefault(column.tobytes(), len(first)) for column in outer], dtype=np.int64
        )
        return cls(
            design,
            # the first column of each distinct product, in the order they were numbered
            np.ascontiguousarray(outer[np.unique(position, return_index=True)[1]].T),
            position,
            bool(np.any(offset != 0)),
            bool(np.any(prior != 1)),
        )

    def cross(self, weights: FloatArray) -> FloatArray:
        """X' diag(w) X for every row of ``weights``."""
        p = self.design.shape[1]
        cross: FloatArray = (weights @ self.products)[:, self.position].reshape(-1, p, p)
        return cross


@dataclass
class _Irls:
    """The series of one IRLS batch that are still iterating, one row each.

    Besides the current fit (``coef``, ``eta``, ``mu``) a row holds the IRLS weights of its
    current means (``weights``, prior x mu) and their X'WX (``next_cross``), which the next
    solve uses, and the weights and X'WX of the solve that gave the current fit (``working``,
    ``cross``), which glm reports. Because eta - offset = X beta after every step, the
    right-hand side X'W z of a solve is ``X'WX beta + X'(prior y) - X'(prior mu)`` and the
    deviance is a constant plus ``sum(prior mu) - beta . X'(prior y)``: an iteration makes
    one pass over the (rows x weeks) arrays for the means, not a dozen.
    """

    model: _Model
    rows: IntArray  # their positions in the batch
    y: FloatArray
    offset: FloatArray
    prior: FloatArray
    absent: FloatArray  # (S, p) 1.0 for a column left out of that series' fit
    prior_y_design: FloatArray  # (S, p) X'(prior y)
    deviance_constant: FloatArray  # (S,) sum(prior (y log y - y - y offset))
    eta: FloatArray
    mu: FloatArray
    weights: FloatArray
    next_cross: FloatArray
    coef: FloatArray
    working: FloatArray
    cross: FloatArray
    deviance: FloatArray
    started: BoolArray
    converged: BoolArray

    @classmethod
    def start(
        cls,
        design: FloatArray,
        y: FloatArray,
        offset: FloatArray,
        prior: FloatArray,
        absent: FloatArray,
    ) -> _Irls:
        series, n = y.shape
        p = design.shape[1]
        model = _Model.of(design, offset, prior)
        mu = y + 0.1  # glm.fit's mustart for the Poisson family
        eta = np.log(mu)
        y_log_y = _y_log_y(y)
        prior_y = prior * y
        weights = prior * mu
        return cls(
            model=model,
            rows=np.arange(series),
            y=y,
            offset=offset,
            prior=prior,
            absent=absent,
            prior_y_design=prior_y @ design,
            deviance_constant=(prior * y_log_y - prior_y * (1.0 + offset)).sum(axis=1),
            eta=eta,
            mu=mu,
            weights=weights,
            next_cross=model.cross(weights),
            coef=np.zeros((series, p)),
            working=np.zeros((series, n)),
            cross=np.zeros((series, p, p)),
            deviance=_poisson_deviance(y, y_log_y, eta, mu, prior),
            started=np.zeros(series, dtype=bool),
            converged=np.zeros(series, dtype=bool),
        )

    def step(self) -> BoolArray:
        """One IRLS iteration of every row; returns the rows that stop here (converged, or
        with no valid coefficients)."""
        design = self.model.design
        xtwx, w = self.next_cross, self.weights
        if self.started.all():
            rhs = np.einsum("sij,sj->si", xtwx, self.coef) + self.prior_y_design - w @ design
        else:  # the first step starts from mustart, whose eta is no X beta
            z = self.eta - self.offset + (self.y - self.mu) / self.mu
            rhs = (w * z) @ design
        beta = _solve(_with_absent_columns(xtwx, self.absent), rhs)
        eta_new, mu_new, w_new, dev = self._evaluate(beta)
        bad = ~np.isfinite(dev) | ~self._valid(mu_new)
        for _halving in range(MAX_ITERATIONS):
            fixable = bad & self.started
            if not fixable.any():
                break
            beta[fixable] = (beta[fixable] + self.coef[fixable]) / 2
            eta_new[fixable], mu_new[fixable], w_new[fixable], dev[fixable] = self._evaluate(
                beta[fixable], fixable
            )
            bad = ~np.isfinite(dev) | ~self._valid(mu_new)
        good = ~bad
        if good.all():
            self.coef, self.eta, self.mu = beta, eta_new, mu_new
            self.working, self.cross = w, xtwx
            self.weights, self.next_cross = w_new, self.model.cross(w_new)
        else:
            self.coef[good], self.eta[good], self.mu[good] = beta[good], eta_new[good], mu_new[good]
            self.working[good], self.cross[good] = w[good], xtwx[good]
            self.weights[good] = w_new[good]
            self.next_cross[good] = self.model.cross(w_new[good])
        self.started |= good
        with np.errstate(invalid="ignore"):
            done = good & (np.abs(dev - self.deviance) / (np.abs(dev) + 0.1) < EPSILON)
        self.converged |= done
        self.deviance = np.where(good, dev, self.deviance)
        # No valid coefficients: the series stays unconverged and stops here.
        finished: BoolArray = done | bad
        return finished

    def _evaluate(
        self, beta: FloatArray, where: BoolArray | None = None
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """The linear predictor, means, IRLS weights and deviance of coefficients ``beta``
        (of the rows ``where``, all without it)."""

        def pick(array: FloatArray) -> FloatArray:
            return array if where is None else array[where]

        eta: FloatArray = beta @ self.model.design.T
        if self.model.has_offset:
            eta += pick(self.offset)
        with np.errstate(over="ignore"):
            mu: FloatArray = np.exp(eta)
        with np.errstate(invalid="ignore"):
            w = pick(self.prior) * mu if self.model.has_prior else mu
            deviance: FloatArray = 2.0 * (
                pick(self.deviance_constant)
                - np.einsum("si,si->s", beta, pick(self.prior_y_design))
                + w.sum(axis=1)
            )
        return eta, mu, w, deviance

    def _valid(self, mu: FloatArray) -> BoolArray:
        """glm.fit's validity check: every fitted mean finite and positive at the weeks in
        the fit (a missing week, prior 0, is not in R's model frame)."""
        if self.model.has_prior:
            mu = np.where(self.prior > 0, mu, 1.0)
        valid: BoolArray = (mu.min(axis=1) > 0) & np.isfinite(mu.max(axis=1))
        return valid

    def write(
        self,
        which: BoolArray,
        coef: FloatArray,
        mu: FloatArray,
        working: FloatArray,
        cross: FloatArray,
        converged: BoolArray,
        started: BoolArray,
    ) -> None:
        """Copy the rows ``which`` into the batch's result arrays."""
        rows = self.rows[which]
        coef[rows], mu[rows], working[rows] = self.coef[which], self.mu[which], self.working[which]
        cross[rows] = self.cross[which]
        converged[rows], started[rows] = self.converged[which], self.started[which]

    def keep(self, which: BoolArray) -> _Irls:
        """The rows ``which`` only."""
        fields = {
            name: getattr(self, name)[which]
            for name in self.__dataclass_fields__
            if name != "model"
        }
        return _Irls(model=self.model, **fields)


def anscombe_residuals(
    y: FloatArray, mu: FloatArray, hat: FloatArray, phi: FloatArray
) -> FloatArray:
    """Poisson Anscombe residuals standardised by ``sqrt(phi (1 - h))`` (Farrington 1996)."""
    raw = 1.5 * (np.cbrt(y) ** 2 * mu ** (-1.0 / 6.0) - np.sqrt(mu))
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled: FloatArray = raw / np.sqrt(phi[:, None] * (1.0 - hat))
    return scaled


def assign_weights(
    residuals: FloatArray, threshold: float, kept: BoolArray | None = None
) -> FloatArray:
    """Weights ``gamma s^-2`` where s > threshold and ``gamma`` elsewhere, averaging to 1.

    ``algo.farrington.assign.weights``: gamma = n / sum(s^-2 over outliers + 1 otherwise).
    Works row-wise on a (S, n) array; ``kept`` (S, n) marks the weeks in the fit (a missing
    week gets weight 0 and does not count in n).
    """
    if kept is None:
        outlier = residuals > threshold
        inverse_square = np.ones_like(residuals)
        n: float | FloatArray = float(residuals.shape[-1])
    else:
        outlier = kept & (residuals > threshold)
        inverse_square = kept.astype(np.float64)
        n = kept.sum(axis=-1, keepdims=True).astype(np.float64)
    inverse_square[outlier] = residuals[outlier] ** (-2.0)
    gamma = n / inverse_square.sum(axis=-1, keepdims=True)
    weights: FloatArray = gamma * inverse_square
    return weights


@dataclass
class FlexibleFit:
    """A fitted baseline model: the GLM after optional reweighting, and its phi."""

    glm: GlmFit
    phi: FloatArray
    ok: BoolArray  # False where R's fitGLM returns NULL (no convergence)
    # The dispersion summary.glm() and predict.glm() see. With reweighting the package
    # overwrites model$weights (IRLS working weights) with the prior weights omega, so they
    # estimate sum(omega ((y - mu) / mu)^2) / df instead of the Pearson X^2 / df behind phi.
    summary_dispersion: FloatArray
    omega: FloatArray  # the prior weights of the final fit (1 without reweighting)


def fit_flexible(
    design: FloatArray,
    y: FloatArray,
    offset: FloatArray,
    reweight: bool,
    weights_threshold: float,
    kept: BoolArray | None = None,
) -> FlexibleFit:
    """``algo.farrington.fitGLM.flexible`` for one design (with or without trend column);
    ``kept`` (S, n): the weeks of each series in its fit (all without it).

    The convergence of the reweighted refit is not checked, as in the package.
    """
    prior = np.ones_like(y) if kept is None else kept.astype(np.float64)
    first = fit_quasipoisson(design, y, offset, prior)
    if not reweight:
        return FlexibleFit(first, first.phi, first.converged, first.dispersion, prior)
    residuals = anscombe_residuals(y, first.mu, first.hat_values(design), first.phi)
    omega = assign_weights(residuals, weights_threshold, kept)
    second = fit_quasipoisson(design, y, offset, omega)
    working_residuals = (y - second.mu) / second.mu
    with np.errstate(divide="ignore", invalid="ignore"):
        quirk = np.where(omega > 0, omega * working_residuals**2, 0.0).sum(axis=1) / (
            second.df_residual
        )
    quirk = np.where(second.df_residual > 0, quirk, np.nan)
    return FlexibleFit(second, second.phi, first.converged, quirk, omega)


# ---------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------


@dataclass
class Bounds:
    """What the package's threshold functions return: lower, upper, p-value, score."""

    lower: FloatArray
    upper: FloatArray
    prob: FloatArray
    score: FloatArray


def _count_cdf(x: FloatArray, mean: FloatArray, size: FloatArray | None) -> FloatArray:
    """P(X <= x) for NB(size, mean) or, with ``size`` None, Poisson(mean); x whole numbers.

    Incomplete beta/gamma ufuncs rather than scipy.stats: frozen distributions cost about a
    millisecond each to build, which dominated single-series runs.
    """
    if size is None:
        return np.asarray(special.gammaincc(x + 1, mean), dtype=np.float64)
    return np.asarray(special.betainc(size, x + 1, size / (size + mean)), dtype=np.float64)


def _discrete_quantile(q: float, mean: FloatArray, phi: FloatArray) -> FloatArray:
    """Smallest x with F(x) >= q under NB(size mean / (phi - 1), prob 1 / phi) where
    phi > 1, Poisson(mean) elsewhere (R's qnbinom / qpois)."""
    target = q * QUANTILE_FUZZ
    out = np.full(mean.shape, np.nan)
    nb = phi > 1
    for part, is_nb in ((nb, True), (~nb & ~np.isnan(phi), False)):
        if not part.any():
            continue
        m = mean[part]
        size = m / (phi[part] - 1) if is_nb else None
        if size is not None:
            guess = np.asarray(stats.nbinom.ppf(target, size, 1.0 / phi[part]), dtype=np.float64)
        else:
            guess = np.asarray(stats.poisson.ppf(target, m), dtype=np.float64)
        guess = np.where(np.isfinite(guess), guess, np.nan)
        # scipy's search agrees with R's up to floating ties; settle them one step either way.
        below = np.maximum(guess - 1, 0)
        guess = np.where((guess > 0) & (_count_cdf(below, m, size) >= target), below, guess)
        out[part] = np.where(_count_cdf(guess, m, size) < target, guess + 1, guess)
    return out


def threshold_noufaily(
    pred_fit: FloatArray,
    pred_se: FloatArray,
    phi: FloatArray,
    alpha: float,
    y: FloatArray,
    method: str,
) -> Bounds:
    """``algo.farrington.threshold.noufaily``: negative-binomial quantiles around mu0.

    ``pred_fit``/``pred_se`` are on the link (log) scale. ``nbPlugin`` plugs mu0 = exp(eta0)
    in; ``muan`` uses mu0 = exp(eta0 + z_(1-alpha) se). Size ``mu0 / (phi - 1)``, prob
    ``1 / phi`` (variance phi mu0); Poisson when phi <= 1. The p-value is P(Y >= y). The
    score is ``(y - eta0) / (U - eta0)``: the package mixes the log-scale prediction with the
    count-scale bound, and so do we (an alarm needs score > 1).
    """
    pred_fit, pred_se, phi, y = (
        np.asarray(a, dtype=np.float64) for a in (pred_fit, pred_se, phi, y)
    )
    if method == "nbPlugin":
        mu0 = np.exp(pred_fit)
    else:
        with np.errstate(over="ignore"):
            mu0 = np.exp(stats.norm.ppf(1 - alpha, loc=pred_fit, scale=pred_se))
    finite = np.isfinite(mu0)
    mu0 = np.where(finite, mu0, np.nan)
    lower = np.maximum(_discrete_quantile(alpha, mu0, phi), 0)
    upper = _discrete_quantile(1 - alpha, mu0, phi)
    # P(Y >= y); phi is never below 1, so "phi != 1" (R's test) means negative binomial.
    nb = phi != 1
    with np.errstate(divide="ignore", invalid="ignore"):
        size = mu0 / (phi - 1)
    prob = np.full(mu0.shape, np.nan)
    prob[nb] = stats.nbinom.sf(y[nb] - 1, size[nb], 1.0 / phi[nb])
    prob[~nb] = stats.poisson.sf(y[~nb] - 1, mu0[~nb])
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (y - pred_fit) / (upper - pred_fit)
    return Bounds(lower, upper, np.asarray(prob, dtype=np.float64), score)


def threshold_farrington(
    pred_fit: FloatArray,
    pred_se: FloatArray,
    phi: FloatArray,
    powertrans: str,
    alpha: float,
    y: FloatArray,
) -> Bounds:
    """``algo.farrington.threshold.farrington``: Farrington et al. (1996) power-transformed
    normal interval around mu0 (here on the count scale, ``type = "response"``).

    ``tau = phi + se^2 / mu0``; the SD of the transformed prediction is sqrt(mu0 tau) (none),
    sqrt(tau / 4) (1/2) or sqrt(4/9 mu0^(1/3) tau) (2/3); the bounds are
    ``(mu0^e -/+ z se)^(1/e)`` sorted with impossible (NaN) values first, the lower one cut at
    0. The p-value is P(N(mu0^e, se) > y^e); the score ``(y - mu0) / (U - mu0)``.
    """
    if powertrans not in POWER_TRANSFORMS:
        raise ValueError(
            f"farrington_flexible: powertrans must be one of {sorted(POWER_TRANSFORMS)}, "
            f"got {powertrans!r} (R: 'No proper exponent')"
        )
    mu0, pred_se, phi, y = (np.asarray(a, dtype=np.float64) for a in (pred_fit, pred_se, phi, y))
    tau = phi + pred_se**2 / mu0
    exponent = POWER_TRANSFORMS[powertrans]
    if powertrans == "none":
        se = np.sqrt(mu0 * tau)
    elif powertrans == "1/2":
        se = np.sqrt(tau / 4)
    else:
        se = np.sqrt(4.0 / 9.0 * np.cbrt(mu0) * tau)
    z = stats.norm.ppf(1 - alpha)
    with np.errstate(invalid="ignore"):
        a = (mu0**exponent - z * se) ** (1 / exponent)
        b = (mu0**exponent + z * se) ** (1 / exponent)
    # sort(..., na.last = FALSE): a NaN bound goes first, so the upper is the valid one.
    upper = np.where(np.isnan(a) | np.isnan(b), np.where(np.isnan(a), b, a), np.maximum(a, b))
    lower = np.where(np.isnan(a) | np.isnan(b), np.nan, np.minimum(a, b))
    lower = np.where(np.isnan(lower), 0.0, np.maximum(lower, 0.0))
    prob = stats.norm.sf(y**exponent, loc=mu0**exponent, scale=se)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (y - mu0) / (upper - mu0)
    return Bounds(lower, upper, np.asarray(prob, dtype=np.float64), score)


# ---------------------------------------------------------------------------------------
# One judged week, all series
# ---------------------------------------------------------------------------------------


@dataclass
class WeekResult:
    """Per-series outputs for one judged week (NaN where no model could be fitted)."""

    expected: FloatArray
    upper: FloatArray
    lower: FloatArray
    prob: FloatArray
    score: FloatArray
    phi: FloatArray
    trend: BoolArray
    judged: BoolArray


@dataclass
class _Design:
    """The rows of one baseline and their covariates (before missing counts are dropped)."""

    rows: IntArray
    wtime: FloatArray
    levels: FloatArray


def baseline_design(days: list[date], k: int, params: FarringtonParams) -> _Design | None:
    """Rows, wtime and seasonal levels of week k's baseline; None without reference weeks."""
    reference = reference_positions(days, k, params.b)
    if reference is None:
        return None
    levels = blocks(reference, len(days), params.w, params.no_periods)
    # (k - past_weeks_not_included):k in R: the current week and the weeks just before it.
    levels_used = levels.copy()
    levels_used[max(k - params.past_weeks_not_included, 0) : k + 1] = np.nan
    rows = np.flatnonzero(~np.isnan(levels_used))
    if rows.size == 0:
        return None
    if params.no_periods != 1 and not np.any(levels[rows] == params.no_periods):
        # The prediction is at level no_periods; R's predict() stops when the baseline has
        # no week at that level (past_weeks_not_included reaching the previous year).
        return None
    wtime = (rows - rows[0]).astype(np.float64)
    return _Design(rows, wtime, levels[rows])


def _columns(
    design: _Design, keep: IntArray, params: FarringtonParams, trend: bool
) -> tuple[FloatArray, FloatArray, int | None]:
    """Design matrix for the kept rows, the prediction row for week k, and the trend column.

    Treatment contrasts with the lowest level present as reference, like R's factor();
    a level whose rows are all missing gives a zero column, which R's pivoting leaves out
    (coefficient NA, i.e. 0 in predictions) and so do we.
    """
    levels = design.levels[keep]
    columns = [np.ones(keep.size)]
    row0 = [1.0]
    trend_column = None
    if trend:
        trend_column = 1
        columns.append(design.wtime[keep])
        row0.append(np.nan)  # filled by the caller: it depends on the first kept row
    if params.no_periods != 1:
        present = np.unique(design.levels)
        for level in present[1:]:
            column = (levels == level).astype(np.float64)
            if column.any():
                columns.append(column)
                row0.append(1.0 if level == params.no_periods else 0.0)
    return np.column_stack(columns), np.asarray(row0), trend_column


def _predict(
    fit: FlexibleFit, x0: FloatArray, offset0: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Link-scale prediction and its SE.

    The package passes ``dispersion = model$phi`` inside ``newdata`` rather than as an
    argument of ``predict.glm``, so R uses ``summary.glm``'s dispersion (not max(phi, 1);
    see :class:`FlexibleFit`) for the standard error; so do we.
    """
    if x0.ndim == 1:
        eta0 = fit.glm.coef @ x0 + offset0
        quad = np.einsum("i,sij,j->s", x0, fit.glm.cov_unscaled, x0)
    else:  # one prediction row per series (its trend time depends on its first kept week)
        eta0 = np.einsum("si,si->s", fit.glm.coef, x0) + offset0
        quad = np.einsum("si,sij,sj->s", x0, fit.glm.cov_unscaled, x0)
    return eta0, np.sqrt(quad * fit.summary_dispersion)


def _trend_p_value(fit: FlexibleFit, column: int) -> FloatArray:
    """Two-sided t-test p-value of the trend, as ``summary.glm`` reports it."""
    se = np.sqrt(fit.glm.cov_unscaled[:, column, column] * fit.summary_dispersion)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = fit.glm.coef[:, column] / se
    return np.asarray(2 * stats.t.sf(np.abs(t), fit.glm.df_residual), dtype=np.float64)


@dataclass
class _Job:
    """Judged week k of the series ``members``, which share the baseline rows ``keep``; or,
    with ``keep`` None, whose missing weeks are left out of each series' fit by weight 0."""

    k: int
    members: IntArray
    design: _Design
    keep: IntArray | None


def _signature(job: _Job) -> bytes:
    """Jobs with the same signature have the same design matrix: the baseline rows relative
    to week k, their seasonal levels, and which of them are kept (or that each series keeps
    its own)."""
    relative = (job.design.rows - job.k).astype(np.int64)
    kept = b"own" if job.keep is None else job.keep.tobytes()
    return b"|".join((relative.tobytes(), job.design.levels.tobytes(), kept))


def judge_week(
    response: FloatArray,
    offset: FloatArray,
    offset0: FloatArray,
    observed: FloatArray,
    wtime0: float | FloatArray,
    design: _Design,
    keep: IntArray,
    params: FarringtonParams,
    kept: BoolArray | None = None,
) -> WeekResult:
    """Fit a baseline and threshold its judged week, for rows that share one design.

    Each row is one (series, judged week): ``response`` and ``offset`` (R, n) are its
    baseline counts and log populations at the kept rows (``keep`` indexes ``design.rows``),
    ``offset0`` and ``observed`` (R,) its judged week's. ``wtime0`` is the judged week's
    time: R predicts at (date_k - first kept date) / 7 although wtime starts at the first
    row before missing counts are dropped, and the two differ when that first row is missing.
    With ``kept`` (R, n), every row has its own kept weeks (0 counts elsewhere, weight 0) and
    its own ``wtime0``.
    """
    series = response.shape[0]

    def blank() -> FloatArray:
        return np.full(series, np.nan)

    result = WeekResult(
        expected=blank(),
        upper=blank(),
        lower=blank(),
        prob=blank(),
        score=blank(),
        phi=blank(),
        trend=np.zeros(series, dtype=bool),
        judged=np.zeros(series, dtype=bool),
    )
    # (rows, fit, x0, the fit's rows that count): the fit covers exactly ``rows``
    chosen_fit: list[tuple[IntArray, FlexibleFit, FloatArray, BoolArray]] = []
    need_plain = np.ones(series, dtype=bool)
    if params.trend:
        x_t, x0_t, tcol = _columns(design, keep, params, trend=True)
        assert tcol is not None
        if kept is not None:
            x0_t = np.repeat(x0_t[None, :], series, axis=0)
            x0_t[:, tcol] = wtime0
        else:
            x0_t[tcol] = wtime0
        with_trend = fit_flexible(
            x_t, response, offset, params.reweight, params.weights_threshold, kept
        )
        eta_t, _ = _predict(with_trend, x0_t, offset0)
        significant = _trend_p_value(with_trend, tcol) < params.p_threshold_trend
        no_extrapolation = np.exp(eta_t) <= response.max(axis=1)
        keep_trend = with_trend.ok & significant & no_extrapolation & (params.b >= 3)
        if keep_trend.any():
            chosen_fit.append((np.arange(series), with_trend, x0_t, keep_trend))
            result.trend[keep_trend] = True
        need_plain = ~keep_trend
    if need_plain.any():
        # only the rows whose trend was dropped are refitted without it
        rows = np.flatnonzero(need_plain)
        x_p, x0_p, _ = _columns(design, keep, params, trend=False)
        plain = fit_flexible(
            x_p,
            response[rows],
            offset[rows],
            params.reweight,
            params.weights_threshold,
            None if kept is None else kept[rows],
        )
        chosen_fit.append((rows, plain, x0_p, plain.ok))

    for rows, fit, x0, mask in chosen_fit:
        if not mask.any():
            continue
        eta0, se0 = _predict(fit, x0, offset0[rows])
        # thresholds (quantile searches, the costly part) only for the rows this fit judges
        eta0, se0, phi, target = eta0[mask], se0[mask], fit.phi[mask], rows[mask]
        mean = np.exp(eta0)
        if params.threshold_method == "delta":
            bounds = threshold_farrington(
                mean, se0 * mean, phi, params.powertrans, params.alpha, observed[target]
            )
        else:
            bounds = threshold_noufaily(
                eta0, se0, phi, params.alpha, observed[target], params.threshold_method
            )
        result.expected[target] = mean
        result.upper[target] = bounds.upper
        result.lower[target] = bounds.lower
        result.prob[target] = bounds.prob
        result.score[target] = bounds.score
        result.phi[target] = phi
        result.judged[target] = True
    # R reports expected only where the upper bound exists.
    result.expected[np.isnan(result.upper)] = np.nan
    return result


def farrington_flexible(
    values: FloatArray,
    days: list[date],
    population: FloatArray | None,
    params: FarringtonParams,
    judge: BoolArray,
    *,
    weigh_missing: bool = True,
) -> dict[str, FloatArray | BoolArray]:
    """Run Farrington flexible on every series (rows of ``values``) at the weeks in ``judge``.

    ``weigh_missing``: series with missing baseline weeks are fitted together with the
    complete ones, each missing week given weight 0; without it, only series with the same
    missing weeks are fitted together (the same results, one batch per missing pattern).
    """
    series, length = values.shape
    out: dict[str, FloatArray | BoolArray] = {
        name: np.full((series, length), np.nan)
        for name in ("expected", "threshold", "lower", "score", "pvalue", "phi")
    }
    trend = np.zeros((series, length), dtype=bool)
    judged = np.zeros((series, length), dtype=bool)
    log_population = None if population is None else np.log(population)
    # Weeks whose baselines look alike (same rows relative to the week, same levels, same
    # missing counts) share one design matrix: they are fitted together, as one batch of
    # (series, week) rows, instead of one small fit per week. Most weeks of a regular
    # calendar look alike, so the fits run on large arrays.
    alike: dict[bytes, list[_Job]] = {}
    for k in np.flatnonzero(judge).tolist():
        design = baseline_design(days, k, params)
        if design is None:
            continue
        for job in _jobs(k, design, np.isnan(values[:, design.rows]), params, weigh_missing):
            alike.setdefault(_signature(job), []).append(job)
    batches = [chunk for jobs in alike.values() for chunk in _chunks(jobs, MAX_BATCH_ROWS)]

    def judge_batch(chunk: list[_Job]) -> tuple[IntArray, IntArray, WeekResult]:
        return _judge_batch(values, log_population, chunk, params)

    for series_index, week_index, week in _each_in_parallel(judge_batch, batches):
        for name, array in (
            ("expected", week.expected),
            ("threshold", week.upper),
            ("lower", week.lower),
            ("score", week.score),
            ("pvalue", week.prob),
            ("phi", week.phi),
        ):
            out[name][series_index, week_index] = array
        trend[series_index, week_index] = week.trend
        judged[series_index, week_index] = week.judged
    enough = enough_cases(values, params.limit54)
    score = np.asarray(out["score"], dtype=np.float64)
    observed_nonzero = np.nan_to_num(values, nan=0.0) != 0
    with np.errstate(invalid="ignore"):
        alarm = judged & enough & (np.nan_to_num(score, nan=-np.inf) > 1) & observed_nonzero
    out["alarm"] = alarm
    out["trend"] = trend
    out["enough_cases"] = enough
    out["judged"] = judged
    return out


def _judge_batch(
    values: FloatArray,
    log_population: FloatArray | None,
    chunk: list[_Job],
    params: FarringtonParams,
) -> tuple[IntArray, IntArray, WeekResult]:
    """Judge one batch of jobs sharing a design: (series, weeks, their results)."""
    series_index = np.concatenate([job.members for job in chunk])
    week_index = np.concatenate([np.full(job.members.size, job.k) for job in chunk])
    first = chunk[0]
    if first.keep is None:
        kept = np.concatenate([~np.isnan(values[job.members][:, job.design.rows]) for job in chunk])
        # the judged week's time counts from each row's first kept week
        before = (first.k - first.design.rows).astype(np.float64)
        week = judge_week(
            *_stacked(values, log_population, chunk),
            observed=values[series_index, week_index],
            wtime0=before[np.argmax(kept, axis=1)],
            design=first.design,
            keep=np.arange(first.design.rows.size),
            params=params,
            kept=kept,
        )
    else:
        week = judge_week(
            *_stacked(values, log_population, chunk),
            observed=values[series_index, week_index],
            wtime0=float(first.k - first.design.rows[first.keep][0]),
            design=first.design,
            keep=first.keep,
            params=params,
        )
    return series_index, week_index, week


def _each_in_parallel(
    function: Callable[[list[_Job]], _T], batches: list[list[_Job]]
) -> Iterator[_T]:
    """``function`` of every batch, in order, on up to WORKERS threads: numpy lets go of the
    interpreter lock inside its array operations, which are nearly all of a batch's time, so
    the batches of a large run use every core."""
    workers = min(WORKERS, len(batches))
    if workers <= 1:
        yield from map(function, batches)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="farrington") as pool:
        yield from pool.map(function, batches)


def _chunks(jobs: list[_Job], max_rows: int) -> list[list[_Job]]:
    """Jobs in order, cut into batches of at most ``max_rows`` (series, week) rows (a job
    larger than that is a batch of its own)."""
    batches: list[list[_Job]] = []
    rows = 0
    for job in jobs:
        if not batches or rows + job.members.size > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(job)
        rows += job.members.size
    return batches


def _jobs(
    k: int, design: _Design, missing: BoolArray, params: FarringtonParams, weigh_missing: bool
) -> list[_Job]:
    """Week k's jobs: with ``weigh_missing``, one for every series that keeps a week of the
    reference level (the lowest one, R's first factor level), whatever else it misses; one per
    missing pattern for the rest (without the reference level, the intercept and the other
    levels' columns are collinear, and R's pivoting drops a column the weights cannot)."""
    some = ~missing.all(axis=1)
    if weigh_missing:
        if params.no_periods == 1:
            own = some
        else:
            reference = design.levels == design.levels.min()
            own = some & ~missing[:, reference].all(axis=1)
        jobs = [_Job(k, np.flatnonzero(own), design, None)] if own.any() else []
        rest = np.flatnonzero(~own)
    else:
        jobs, rest = [], np.arange(missing.shape[0])
    for members, keep in _groups_by_missing(missing[rest]):
        if keep.size > 0:
            jobs.append(_Job(k, rest[members], design, keep))
    return jobs


def _kept_rows(job: _Job) -> IntArray:
    return job.design.rows if job.keep is None else job.design.rows[job.keep]


def _stacked(
    values: FloatArray, log_population: FloatArray | None, jobs: list[_Job]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Baseline counts, their offsets and the judged weeks' offsets, one row per (series,
    week) of ``jobs``; a missing count (a job keeping weeks per series) is 0, its offset 0:
    weight 0 leaves them out of the fit."""
    counts = np.concatenate([values[job.members][:, _kept_rows(job)] for job in jobs])
    own = jobs[0].keep is None
    response = np.nan_to_num(counts, nan=0.0) if own else counts
    if log_population is None:
        return response, np.zeros_like(response), np.zeros(response.shape[0])
    offset = np.concatenate([log_population[job.members][:, _kept_rows(job)] for job in jobs])
    if own:
        offset = np.where(np.isnan(counts), 0.0, offset)
    offset0 = np.concatenate([log_population[job.members, job.k] for job in jobs])
    return response, offset, offset0


def _groups_by_missing(missing: BoolArray) -> list[tuple[IntArray, IntArray]]:
    """Series sharing the same missing baseline weeks, fitted together: (members, kept rows)."""
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(missing):
        groups.setdefault(np.packbits(row).tobytes(), []).append(i)
    return [
        (np.asarray(members, dtype=np.int64), np.flatnonzero(~missing[members[0]]))
        for members in groups.values()
    ]


def enough_cases(values: FloatArray, limit54: tuple[int, int]) -> BoolArray:
    """At least ``cases`` counts in the ``weeks`` weeks ending at each week (current week
    included since surveillance 0.9-7). A missing week makes the sum NA: no alarm."""
    cases, weeks = limit54
    series = values.shape[0]
    padded = np.concatenate([np.full((series, weeks - 1), np.nan), values], axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, weeks, axis=1)
    total = windows.sum(axis=-1)
    enough: BoolArray = np.where(np.isnan(total), False, total >= cases)
    return enough
