"""Alert records on a simulated country: IDSR fixed thresholds raise alerts for the injected
outbreaks, re-runs raise nothing twice, and the lifecycle is enforced and recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.alerts.engine import AlertError, set_status
from pipelines.alerts.pipeline import run_alerts
from pipelines.audit import utc_now
from pipelines.config import HealthpipeConfig
from pipelines.run import open_warehouse, run_pipeline
from pipelines.simulate import simulate
from pipelines.simulate.country import build_country
from tests.conftest import make_config

FIXED_RULES = """
level: 3
rules:
  - rule: idsr_single_case
    kind: single_case
    diseases: [cholera, afp, yellow_fever, sari]
  - rule: idsr_measles
    kind: rolling_rate
    diseases: [measles]
    weeks: 4
    alert_per_100k: 5
"""


@pytest.fixture(scope="module")
def alerting_country(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[HealthpipeConfig, dict[str, Any]]:
    root = tmp_path_factory.mktemp("alerting")
    simulate(root / "country", country=build_country(7, districts=6), weeks=80, sources=["dhis2"])
    rules = root / "rules.yml"
    rules.write_text(FIXED_RULES, encoding="utf-8")
    config = make_config(
        f"duckdb:///{root / 'warehouse.duckdb'}",
        root / "country" / "dhis2",
        root,
        alert_rules=str(rules),
    )
    run_pipeline(config)
    truth = json.loads((root / "country" / "truth.json").read_text())
    return config, truth


def alerts(config: HealthpipeConfig) -> list[tuple[Any, ...]]:
    with open_warehouse(config) as warehouse:
        return warehouse.fetchall(
            "select alert_id, disease, org_unit_id, period_id, last_period_id, rule, status, "
            "emerged_on, detected_at, days_to_detect from marts.alerts order by alert_id"
        )


def test_cholera_outbreaks_raise_single_case_alerts(alerting_country: Any) -> None:
    config, truth = alerting_country
    with open_warehouse(config) as warehouse:
        run_alerts(warehouse, config, run_id="alerts1")
    rows = alerts(config)
    assert rows, "no alert raised"
    raised = {(r[1], r[2]) for r in rows}
    for outbreak in truth["outbreaks"]:
        if outbreak["disease"] == "cholera":
            assert ("cholera", outbreak["org_unit_id"]) in raised, outbreak
    for row in rows:
        assert row[6] == "triggered"
        assert row[9] is not None and row[9] >= 0  # detection is never before emergence


def test_a_rerun_raises_no_duplicate(alerting_country: Any) -> None:
    config, _ = alerting_country
    with open_warehouse(config) as warehouse:
        run_alerts(warehouse, config, run_id="alerts1")
        first = warehouse.fetchall("select alert_id from marts.alerts order by 1")
        outcome = run_alerts(warehouse, config, run_id="alerts2")
        second = warehouse.fetchall("select alert_id from marts.alerts order by 1")
    assert outcome.new == []
    assert first == second


def test_the_lifecycle_is_enforced_and_recorded(alerting_country: Any) -> None:
    config, _ = alerting_country
    with open_warehouse(config) as warehouse:
        run_alerts(warehouse, config, run_id="alerts1")
        identifier = warehouse.fetch_scalar("select min(alert_id) from marts.alerts")
        with pytest.raises(AlertError, match="can move to verified, discarded, closed"):
            set_status(warehouse, identifier, "responding", actor="dso", note=None, now=utc_now())
        set_status(
            warehouse, identifier, "verified", actor="dso", note="confirmed by RRT", now=utc_now()
        )
        set_status(
            warehouse, identifier, "responding", actor="dso", note="team deployed", now=utc_now()
        )
        set_status(warehouse, identifier, "closed", actor="dso", note="no new cases", now=utc_now())
        status, responded, closed = warehouse.fetchall(
            "select status, responded_at, closed_at from marts.alerts where alert_id = $id",
            {"id": identifier},
        )[0]
        history = warehouse.fetchall(
            "select from_status, to_status, actor from audit.alert_transitions "
            "where alert_id = $id order by changed_at",
            {"id": identifier},
        )
    assert (status, responded is not None, closed is not None) == ("closed", True, True)
    assert history == [
        (None, "triggered", "healthpipe"),
        ("triggered", "verified", "dso"),
        ("verified", "responding", "dso"),
        ("responding", "closed", "dso"),
    ]
    with pytest.raises(AlertError, match="no alert"), open_warehouse(config) as warehouse:
        set_status(warehouse, "NOPE-1", "verified", actor="x", note=None, now=utc_now())
