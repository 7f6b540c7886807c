"""Small-cell suppression: a count between 1 and 4 could identify a patient in a small
district, so it is never printed (tables, chart labels, tooltips or map labels); "<5" is
shown instead. Zero is safe and shown. Rates computed from such counts are withheld too,
since rate x population would give the count back.

A hidden count can also be worked out by subtraction when the page prints (or lets a reader
add up) the total of a group it belongs to: :func:`withheld` picks a second count to hide
with it (complementary suppression)."""

from __future__ import annotations

import math
from collections.abc import Sequence

SMALL_CELL_MAX = 4
SUPPRESSED = "<5"


def is_small(count: float | None) -> bool:
    """True for a count that must not be shown (1..4 after rounding)."""
    if count is None or math.isnan(count):
        return False
    return 1 <= round(count) <= SMALL_CELL_MAX


def count_label(count: float | None, missing: str = "\u2013") -> str:
    """A count as printed in the bulletin: thousands separated, small ones as "<5"."""
    if count is None or math.isnan(count):
        return missing
    if is_small(count):
        return SUPPRESSED
    return f"{round(count):,}"


def rate_label(
    rate: float | None, numerator: float | None, digits: int = 1, suppressed: str = "suppressed"
) -> str:
    """A rate, withheld when its numerator is a small cell."""
    if rate is None or math.isnan(rate):
        return "\u2013"
    if is_small(numerator):
        return suppressed
    return f"{rate:,.{digits}f}"


def withheld(counts: Sequence[float | None]) -> list[bool]:
    """Which of a group of counts to withhold when a reader can know the group's total.

    Every small count (:func:`is_small`) is withheld. If that leaves exactly one withheld,
    the total minus the shown counts would give it back, so the smallest other count is
    withheld with it: the smallest above zero, else a zero (the first of equal ones). A lone
    small count with no other to pair is left alone. ``None`` (or NaN: nothing reported)
    is never withheld and never chosen."""
    reported = [c is not None and not math.isnan(c) for c in counts]
    hidden = [is_small(c) for c in counts]
    if sum(hidden) == 1:
        others = [
            (round(c) <= 0, c, i)
            for i, c in enumerate(counts)
            if c is not None and reported[i] and not hidden[i]
        ]
        if others:
            hidden[min(others)[2]] = True
    return hidden
