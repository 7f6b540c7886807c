"""One failing source does not hold back the others: they are landed and published, and the
run then fails naming the source and its error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.run import SourcesFailed, run_pipeline
from pipelines.warehouse import Warehouse
from tests.conftest import make_config


def test_the_other_sources_are_published_and_the_failure_named(
    demo_country: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(demo_country, broken)
    path = sorted((broken / "dataValueSets").glob("*.json"))[0]
    path.write_text(path.read_text(encoding="utf-8")[:500], encoding="utf-8")  # cut off
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    config = make_config(
        url,
        demo_country,
        tmp_path / "state",
        sources=[
            {"name": "broken_drop", "type": "dhis2", "path": str(broken)},
            {"name": "hmis", "type": "dhis2", "path": str(demo_country)},
        ],
    )
    with pytest.raises(SourcesFailed, match=rf"broken_drop: .*{path.name}") as failed:
        run_pipeline(config)
    summary = failed.value.summary
    assert set(summary.failed) == {"broken_drop"}
    assert [s.source for s in summary.sources] == ["hmis"]
    assert summary.dbt is not None
    with Warehouse.open(url) as warehouse:
        published = warehouse.fetch_scalar("select count(*) from marts.indicator_values")
        sources = warehouse.fetchall("select distinct source_name from raw.dhis2__data_values")
    assert published > 0
    assert ("hmis",) in sources
