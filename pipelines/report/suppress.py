"""Small-cell suppression: a count between 1 and 4 could identify a patient in a small
district, so it is never printed (tables, chart labels, tooltips or map labels); "<5" is
shown instead. Zero is safe and shown. Rates computed from such counts are withheld too,
since rate x population would give the count back."""

from __future__ import annotations

import math

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
