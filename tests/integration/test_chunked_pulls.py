"""A DHIS2 API source pulled in org-unit chunks (one mapped Airflow task each) lands what one
whole pull lands, and each chunk keeps its own cursor, against the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import parse_config
from pipelines.orchestration import Pull, ingest_pull, plan_pulls
from pipelines.run import open_warehouse
from pipelines.sandbox.server import start_sandbox
from pipelines.simulate import simulate
from tests.conftest import small_country

ENV = {"DHIS2_USER": "admin", "DHIS2_PASSWORD": "district"}


def test_chunks_land_what_one_pull_lands_with_a_cursor_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    country = small_country()
    districts = [ou.uid for ou in country.org_units if ou.level == 3]
    assert len(districts) == 4
    simulate(tmp_path / "country", country=country, weeks=12, sources=["dhis2"])

    def landed(warehouse_name: str, pulls: int) -> tuple[set[tuple[str, ...]], list[str]]:
        data = {
            "warehouse": f"duckdb:///{tmp_path / warehouse_name}",
            "state_dir": str(tmp_path / warehouse_name.removesuffix(".duckdb")),
            "sources": [
                {
                    "name": "hmis",
                    "type": "dhis2",
                    "base_url": sandbox.dhis2_url,
                    "username_env": "DHIS2_USER",
                    "password_env": "DHIS2_PASSWORD",
                    "org_units": districts,
                }
            ],
        }
        config = parse_config(data, origin="test", base_dir=tmp_path, env=ENV)
        plan = plan_pulls(config.source("hmis"), chunk=len(districts) // pulls)
        assert len(plan) == pulls
        for pull in plan:
            ingest_pull(config, "hmis", Pull(**pull), run_id=f"chunks-{pulls}")
        with open_warehouse(config) as warehouse:
            values = {
                tuple(row)
                for row in warehouse.fetchall(
                    "select data_element, period, org_unit, category_option_combo, "
                    "attribute_option_combo, value from raw.dhis2__data_values"
                )
            }
            cursors = [
                str(row[0])
                for row in warehouse.fetchall(
                    "select entity from audit.source_state where source_name = 'hmis' order by 1"
                )
            ]
        return values, cursors

    with start_sandbox(tmp_path / "country") as sandbox:
        whole, whole_cursors = landed("whole.duckdb", 1)
        chunked, chunk_cursors = landed("chunked.duckdb", 2)
    assert whole, "the sandbox served no data values"
    assert chunked == whole
    assert whole_cursors == ["files"]
    assert len(chunk_cursors) == 2
    assert all(entity.startswith("files:org_units:") for entity in chunk_cursors)
