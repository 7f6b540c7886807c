"""Small file drops built from the session's simulated country, for the input tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipelines.config import HealthpipeConfig, parse_config
from tests.reliability.conftest import PSEUDONYM_KEY


def dhis2_drop(country: Path, folder: Path, values: list[dict[str, Any]]) -> Path:
    """The country's DHIS2 metadata plus one data value set holding ``values``."""
    shutil.copytree(country / "dhis2" / "metadata", folder / "metadata")
    (folder / "dataValueSets").mkdir(parents=True)
    (folder / "dataValueSets" / "values.json").write_text(
        json.dumps({"dataValues": values}), encoding="utf-8"
    )
    return folder


def some_values(country: Path, count: int) -> list[dict[str, Any]]:
    """Real values of the simulated country (known data elements, org units, periods)."""
    path = country / "dhis2" / "dataValueSets" / "hmis_monthly_2025.json"
    values: list[dict[str, Any]] = json.loads(path.read_text())["dataValues"][:count]
    return values


def drop_config(state: Path, sources: list[dict[str, Any]]) -> HealthpipeConfig:
    data = {
        "warehouse": f"duckdb:///{state / 'warehouse.duckdb'}",
        "state_dir": str(state),
        "sources": sources,
    }
    env = {"HEALTHPIPE_PSEUDONYM_KEY": PSEUDONYM_KEY}
    return parse_config(data, origin="reliability", base_dir=state, env=env)
