"""Fixtures of the reliability suite: a small country with the file sources (DHIS2 payloads,
HL7 lab files, spreadsheets) written once per session. Where figures go: ``results`` in
tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.simulate import simulate
from pipelines.simulate.country import build_country

PSEUDONYM_KEY = "reliability-suite-pseudonym-key-0123"


@pytest.fixture(scope="session")
def file_country(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two districts of two facilities, 20 weeks: every file source type, small enough that
    one whole run (landing and dbt) takes well under a minute."""
    root = tmp_path_factory.mktemp("reliability_country")
    simulate(
        root,
        country=build_country(7, districts=2, regions=1, facilities_per_district=(2, 2)),
        weeks=20,
        sources=["dhis2", "hl7", "tabular"],
    )
    return root
