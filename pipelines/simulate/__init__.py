"""A simulated country whose data is written in the source systems' own formats.

``simulate(out_dir, seed=...)`` writes every source (see each generator's module docstring for
its layout) plus ``truth.json`` (injected outbreaks, stockouts and data defects) and
``manifest.json`` (what was written). The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.simulate.community import write_community
from pipelines.simulate.context import DEFAULT_END_WEEK, DEFAULT_WEEKS, Simulation, Truth, Window
from pipelines.simulate.country import Country, build_country
from pipelines.simulate.dhis2_payloads import write_dhis2
from pipelines.simulate.fhir import write_fhir
from pipelines.simulate.hl7 import write_hl7
from pipelines.simulate.tabular import write_tabular

Generator = Callable[[Simulation, Path], dict[str, int]]

# Source name -> generator. Every generator draws from its own random streams, so adding one
# never changes another's output.
GENERATORS: dict[str, Generator] = {
    "dhis2": write_dhis2,
    "fhir": write_fhir,
    "hl7": write_hl7,
    "community": write_community,
    "tabular": write_tabular,
}

__all__ = [
    "GENERATORS",
    "Country",
    "SimulationResult",
    "Truth",
    "Window",
    "build_country",
    "simulate",
]


@dataclass(frozen=True)
class SimulationResult:
    out_dir: Path
    simulation: Simulation
    counts: dict[str, dict[str, int]]


def simulate(
    out_dir: Path,
    *,
    seed: int = 7,
    districts: int = 20,
    weeks: int = DEFAULT_WEEKS,
    end_week: str = DEFAULT_END_WEEK,
    sources: Sequence[str] | None = None,
    country: Country | None = None,
) -> SimulationResult:
    """Write a simulated country's source data under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = Simulation(
        seed=seed,
        country=country or build_country(seed, districts=districts),
        window=Window(end_week=end_week, weeks=weeks),
    )
    counts: dict[str, dict[str, int]] = {}
    for name in sources or GENERATORS:
        counts[name] = GENERATORS[name](sim, out_dir)
    sim.truth.write(out_dir / "truth.json")
    manifest = {
        "seed": seed,
        "country": sim.country.name,
        "org_units": {str(level): len(sim.country.at_level(level)) for level in (1, 2, 3, 4)},
        "window": {
            "start": sim.window.start.isoformat(),
            "end": sim.window.end.isoformat(),
            "weeks": sim.window.weeks,
            "end_week": sim.window.end_week,
        },
        "counts": counts,
    }
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return SimulationResult(out_dir, sim, counts)
