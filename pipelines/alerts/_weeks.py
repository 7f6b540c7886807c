"""Week arithmetic shared by the detectors: week-of-year labels and baseline windows.

Every detector works on a regular weekly series held as positions ``0 .. T-1``; a baseline
is a matrix of positions (one row per week, ``-1`` where the baseline week falls outside
the series) from which values are gathered with :func:`gather`.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MISSING = -1


def week_of_year(days: npt.NDArray[np.datetime64]) -> tuple[IntArray, IntArray]:
    """Year and week number of weeks starting on ``days``.

    A week belongs to the year holding its fourth day (start + 3 days) and week 1 is the week
    holding 4 January (DHIS2 and ISO 8601 for Monday weeks, and the same rule for weeks
    starting on any other day), so the week number is ``(day of year of start + 3 - 1) // 7 + 1``.
    """
    fourth = days.astype("datetime64[D]") + np.timedelta64(3, "D")
    year_start = fourth.astype("datetime64[Y]")
    day_of_year = (fourth - year_start.astype("datetime64[D]")).astype(np.int64)
    years = year_start.astype(np.int64) + 1970
    return years.astype(np.int64), (day_of_year // 7 + 1).astype(np.int64)


def same_week_positions(
    days: npt.NDArray[np.datetime64],
    years: int,
    epidemic_years: Collection[int] = (),
) -> IntArray:
    """Positions of the same week of year in up to ``years`` earlier years, shape (T, years).

    Earlier years flagged in ``epidemic_years`` are skipped and the look-back goes one year
    further instead, so the baseline keeps ``years`` years when the series is long enough
    (Cullen et al. 1984: the mean of non-epidemic years). Week 53 is matched with week 53
    where the earlier year has one, otherwise with that year's week 52.
    """
    year, week = week_of_year(days)
    position = {(int(y), int(w)): i for i, (y, w) in enumerate(zip(year, week, strict=True))}
    first_year = int(year.min()) if len(year) else 0
    excluded = {int(y) for y in epidemic_years}
    out = np.full((len(days), years), MISSING, dtype=np.int64)
    for t, (y, w) in enumerate(zip(year.tolist(), week.tolist(), strict=True)):
        found = 0
        earlier = y - 1
        while found < years and earlier >= first_year:
            if earlier not in excluded:
                match = position.get((earlier, w))
                if match is None and w == 53:
                    match = position.get((earlier, 52))
                out[t, found] = MISSING if match is None else match
                found += 1
            earlier -= 1
    return out


def widen(positions: IntArray, half_window: int, length: int) -> IntArray:
    """Each position together with its ``half_window`` neighbours on both sides.

    Shape (T, m) -> (T, m * (2 * half_window + 1)); neighbours outside the series, and
    neighbours of missing positions, are ``MISSING``.
    """
    offsets = np.arange(-half_window, half_window + 1, dtype=np.int64)
    wide = positions[:, :, None] + offsets[None, None, :]
    bad = (positions[:, :, None] == MISSING) | (wide < 0) | (wide >= length)
    wide = np.where(bad, MISSING, wide)
    return wide.reshape(positions.shape[0], -1)


def lagged_positions(length: int, first_lag: int, last_lag: int) -> IntArray:
    """Positions ``t - last_lag .. t - first_lag`` for every week t, shape (T, n)."""
    lags = np.arange(last_lag, first_lag - 1, -1, dtype=np.int64)
    wide = np.arange(length, dtype=np.int64)[:, None] - lags[None, :]
    return np.where(wide < 0, MISSING, wide)


def gather(values: FloatArray, positions: IntArray) -> FloatArray:
    """Values (S, T) at positions (T, m) -> (S, T, m), NaN where the position is missing."""
    safe = np.where(positions == MISSING, 0, positions)
    out = values[:, safe]
    out[:, positions == MISSING] = np.nan
    return out


def count_mean_sd(window: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Count of observed values, mean and sample SD (n - 1) along the last axis, NaN-aware.

    Written out rather than with ``np.nanmean`` so that empty windows give NaN silently.
    """
    present = ~np.isnan(window)
    count = present.sum(axis=-1).astype(np.float64)
    total = np.where(present, window, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        squares = np.where(present, (window - mean[..., None]) ** 2, 0.0).sum(axis=-1)
        sd = np.sqrt(squares / (count - 1))
    mean = np.where(count > 0, mean, np.nan)
    sd = np.where(count > 1, sd, np.nan)
    return count, mean, sd
