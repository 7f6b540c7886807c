"""What every generator of the simulated country shares: the seed, the time window, the
country, and the ground truth they record (``truth.json``).

Randomness comes from named streams (``simulation.rng("fhir", "patients")``) derived from the
seed and the names only, so each generator's output depends on nothing but the seed and its
own code: adding a generator or changing another one never changes these files.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.periods import parse_period

if TYPE_CHECKING:
    from pipelines.simulate.country import Country

DEFAULT_END_WEEK = "2026W5"
DEFAULT_WEEKS = 156


@dataclass(frozen=True)
class Window:
    """The simulated weeks: ``weeks`` ISO weeks ending with ``end_week`` (inclusive)."""

    end_week: str = DEFAULT_END_WEEK
    weeks: int = DEFAULT_WEEKS

    def __post_init__(self) -> None:
        if parse_period(self.end_week).period_type != "Weekly":
            raise ValueError(f"end week {self.end_week!r} is not an ISO week such as 2026W5")
        if self.weeks < 1:
            raise ValueError("the window needs at least one week")

    @property
    def start(self) -> date:
        """Monday of the first week."""
        return parse_period(self.end_week).start_date - timedelta(weeks=self.weeks - 1)

    @property
    def end(self) -> date:
        """Sunday of the last week."""
        return parse_period(self.end_week).end_date

    def week_starts(self) -> list[date]:
        return [self.start + timedelta(weeks=i) for i in range(self.weeks)]

    def week_ids(self) -> list[str]:
        return [week_id(start) for start in self.week_starts()]

    def months(self) -> list[tuple[int, int]]:
        """Months lying wholly inside the window, oldest first."""
        months = []
        year, month = self.start.year, self.start.month
        while True:
            first = date(year, month, 1)
            next_first = date(year + month // 12, month % 12 + 1, 1)
            if next_first - timedelta(days=1) > self.end:
                break
            if first >= self.start:
                months.append((year, month))
            year, month = next_first.year, next_first.month
        return months

    def years(self) -> list[int]:
        return list(range(self.start.year, self.end.year + 1))


def week_id(monday: date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}W{week}"


def stream_key(name: str | int) -> int:
    return name if isinstance(name, int) else zlib.crc32(name.encode("utf-8"))


@dataclass
class Truth:
    """What the simulator injected, for tests to score the pipeline against."""

    outbreaks: list[dict[str, Any]] = field(default_factory=list)
    stockouts: list[dict[str, Any]] = field(default_factory=list)
    defects: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add_defect(
        self,
        *,
        source: str,
        entity: str,
        kind: str,
        record: dict[str, Any],
        expected_rule: str,
        detail: str,
    ) -> None:
        """``kind``: duplicate, outlier, unknown_code, missing_field, invalid_value,
        malformed_message or schema_drift. ``record`` identifies the record (its natural key
        fields as the source names them); ``expected_rule`` is the validation rule that
        should catch it (or ``duplicate`` for exact duplicates, collapsed at landing)."""
        self.defects.append(
            {
                "source": source,
                "entity": entity,
                "kind": kind,
                "record": record,
                "expected_rule": expected_rule,
                "detail": detail,
            }
        )

    def to_json(self) -> dict[str, Any]:
        def ordered(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))

        return {
            "outbreaks": ordered(self.outbreaks),
            "stockouts": ordered(self.stockouts),
            "defects": ordered(self.defects),
            "notes": self.notes,
        }

    def write(self, path: Path) -> None:
        path.write_text(
            json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )


@dataclass
class Simulation:
    seed: int
    country: Country
    window: Window
    truth: Truth = field(default_factory=Truth)

    def rng(self, *names: str | int) -> np.random.Generator:
        """An independent random stream for one purpose, fixed by the seed and the names."""
        return np.random.default_rng([self.seed, *(stream_key(n) for n in names)])
