"""``healthpipe demo``: simulate a country, run the whole pipeline on the embedded warehouse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import HealthpipeConfig, parse_config
from pipelines.run import PageCallback, RunSummary, run_pipeline
from pipelines.simulate import simulate
from pipelines.warehouse import Warehouse

DEMO_SOURCE = "demo_hmis"
DEMO_YEAR = 2025


@dataclass(frozen=True)
class DemoResult:
    config: HealthpipeConfig
    run: RunSummary
    country_dir: Path
    levels: list[tuple[str, int, int]]
    """(indicator, org-unit level, rows) in indicator_values."""
    national: list[tuple[str, str, float | None]]
    """(indicator name, unit, national yearly value)."""


def demo_config(workdir: Path, country_dir: Path) -> HealthpipeConfig:
    """The demo's config: one DHIS2 source reading the simulated files, and the embedded
    DuckDB warehouse (``HEALTHPIPE_WAREHOUSE`` still overrides it, as everywhere)."""
    data: dict[str, Any] = {
        "warehouse": "duckdb:///healthpipe.duckdb",
        "state_dir": ".",
        "sources": [
            {"name": DEMO_SOURCE, "type": "dhis2", "path": str((country_dir / "dhis2").resolve())}
        ],
    }
    return parse_config(data, origin="healthpipe demo", base_dir=workdir.resolve())


def run_demo(
    workdir: Path = Path("var"), *, seed: int = 7, on_page: PageCallback | None = None
) -> DemoResult:
    country_dir = workdir / "demo-country"
    simulate(country_dir, seed=seed, sources=["dhis2"])
    config = demo_config(workdir, country_dir)
    summary = run_pipeline(config, on_page=on_page)
    with Warehouse.open(config.warehouse) as warehouse:
        levels = [
            (str(i), int(level), int(rows))
            for i, level, rows in warehouse.fetchall(
                "select indicator_id, org_unit_level, count(*) from marts.indicator_values "
                "group by 1, 2 order by 1, 2"
            )
        ]
        national = [
            (str(name), str(unit), None if value is None else float(value))
            for name, unit, value in warehouse.fetchall(
                "select d.name, d.unit, v.value from marts.indicator_values v "
                "join marts.dim_indicator d using (indicator_id) "
                "where v.org_unit_level = 1 and v.period_id = $year order by d.name",
                {"year": str(DEMO_YEAR)},
            )
        ]
    return DemoResult(config, summary, country_dir, levels, national)
