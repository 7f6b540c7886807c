"""A window of days a pull is limited to (a backfill of one past interval).

A window is a range of whole days, both ends included, because sources query by date
(DHIS2 ``startDate``/``endDate``). A scheduler's data interval is a half-open range of
instants, ``[start, end)``: its window holds every day the interval touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pipelines.errors import ConfigError


@dataclass(frozen=True)
class Window:
    first: date
    last: date
    """Included."""

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ConfigError(f"window {self.first}/{self.last}: the end is before the start")

    def __str__(self) -> str:
        return f"{self.first.isoformat()}/{self.last.isoformat()}"

    @classmethod
    def of_interval(cls, start: datetime, end: datetime) -> Window:
        """The days a data interval ``[start, end)`` touches (an empty interval: its day)."""
        last = end - timedelta(microseconds=1) if end > start else end
        return cls(start.date(), last.date())

    @classmethod
    def parse(cls, text: str) -> Window:
        """``FIRST/LAST`` (ISO dates, both included), e.g. ``2025-03-01/2025-03-31``."""
        first, sep, last = text.strip().partition("/")
        try:
            if not sep:
                raise ValueError("no '/'")
            return cls(date.fromisoformat(first.strip()), date.fromisoformat(last.strip()))
        except ValueError as exc:
            raise ConfigError(
                f"window {text!r} is not FIRST/LAST in ISO dates, e.g. 2025-03-01/2025-03-31 "
                f"({exc})"
            ) from None
