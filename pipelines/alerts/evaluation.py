"""Scoring alerts against known outbreaks (the simulator's ``truth.json``).

An outbreak counts as detected when an alert for its disease and org unit covers a week from
its first week to one week after its last (the week its last cases were reported in); the
delay is the number of weeks from the outbreak's first week to the alert's first week.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipelines.periods import parse_period


@dataclass(frozen=True)
class KScore:
    k: float
    outbreaks: int
    detected: int
    median_delay_weeks: float | None

    @property
    def rate(self) -> float:
        return self.detected / self.outbreaks if self.outbreaks else float("nan")


def score_alerts(
    outbreaks: Sequence[Mapping[str, Any]], alerts: Iterable[Mapping[str, Any]]
) -> dict[float, KScore]:
    """Detection rate and median delay per outbreak size k."""
    spans: dict[tuple[str, str], list[tuple[Any, Any]]] = {}
    for alert in alerts:
        first = parse_period(str(alert["period_id"])).start_date
        last = parse_period(str(alert["last_period_id"])).start_date
        spans.setdefault((str(alert["disease"]), str(alert["org_unit_id"])), []).append(
            (first, last)
        )
    by_k: dict[float, list[float | None]] = {}
    for outbreak in outbreaks:
        start = parse_period(str(outbreak["start_week"])).start_date
        end = start + timedelta(weeks=int(outbreak["duration_weeks"]))
        delays = [
            (first - start).days / 7
            for first, last in spans.get(
                (str(outbreak["disease"]), str(outbreak["org_unit_id"])), []
            )
            if first <= end and last >= start
        ]
        by_k.setdefault(float(outbreak["k"]), []).append(max(0.0, min(delays)) if delays else None)
    scores = {}
    for k, results in sorted(by_k.items()):
        found = [d for d in results if d is not None]
        scores[k] = KScore(
            k=k,
            outbreaks=len(results),
            detected=len(found),
            median_delay_weeks=statistics.median(found) if found else None,
        )
    return scores
