"""A run builds in two parts around the alerts (pipelines.run): what alerting reads first,
the rest after. Between them, every model, seed and test of the project must run: a test
that reads models of both parts is the one an eager exclusion would silently drop."""

from __future__ import annotations

from pathlib import Path

from pipelines.run import AFTER_ALERTS, BEFORE_ALERTS
from pipelines.transform import list_nodes
from pipelines.warehouse import Warehouse


def test_the_builds_before_and_after_the_alerts_cover_the_project(tmp_path: Path) -> None:
    with Warehouse.open(f"duckdb:///{tmp_path / 'warehouse.duckdb'}") as warehouse:
        env = warehouse.dbt_env()

    def nodes(*args: str) -> set[str]:
        listed = list_nodes(args, dbt_env=env, state_dir=tmp_path / "state")
        return {node for node in listed if not node.startswith("source.")}

    everything = nodes()
    before = nodes(*BEFORE_ALERTS.args())
    after = nodes(*AFTER_ALERTS.args())
    assert "model.healthpipe.fct_surveillance_weekly" in before
    assert "model.healthpipe.indicator_values" in after - before
    # nothing is left out, and no model is built twice
    assert everything - before - after == set()
    assert {node for node in before & after if node.startswith("model.")} == set()
    # a test of a model built before the alerts against one built after runs after them
    mixed = {node for node in after if ".relationships_indicator_values_org_unit_id" in node}
    assert len(mixed) == 1
