"""A run builds in two parts around the alerts (pipelines.run): everything that does not read
the alert records first, their readers after. Between them, every model, seed and test of the
project must run once: a test that reads models of both parts belongs after the alerts."""

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
    # what alerting reads, and the large aggregation, are built before the alerts
    for model in ("fct_surveillance_weekly", "dim_org_unit", "int_data_values_aggregated"):
        assert f"model.healthpipe.{model}" in before - after
    for model in ("fct_alert_timeliness", "int_alert_data_values", "indicator_values"):
        assert f"model.healthpipe.{model}" in after - before
    # nothing is left out, and nothing runs twice
    assert everything - before - after == set()
    assert before & after == set()
    # a test of a model built before the alerts against one built after runs after them
    mixed = {node for node in after if ".relationships_indicator_values_org_unit_id" in node}
    assert len(mixed) == 1
