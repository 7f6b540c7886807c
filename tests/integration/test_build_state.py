"""An incremental run that finds nothing new skips dbt; new data, a new indicator file or a
full refresh rebuild."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pipelines import build_state
from pipelines.alerts.engine import set_status
from pipelines.run import AFTER_ALERTS, BEFORE_ALERTS, RunSummary, run_pipeline
from pipelines.warehouse import Warehouse
from tests.conftest import make_config

EXTRA_INDICATOR = """indicators:
  - id: anc1_per_delivery
    name: ANC 1 visits per facility delivery
    domain: quality_improvement
    description: Test indicator (ratio of two HMIS data elements).
    numerator: "#{hpANC1Visit}"
    denominator: "#{hpDelivFacl}"
    factor: 1
    unit: ratio
"""


def transform_step(url: str, summary: RunSummary) -> tuple[str, str | None]:
    with Warehouse.open(url) as warehouse:
        status, message = warehouse.fetchall(
            "select status, message from audit.pipeline_runs where run_id = $run and step = 'transform'",
            {"run": summary.run_id},
        )[0]
    return str(status), message


def indicator_rows(url: str) -> list[tuple[object, ...]]:
    with Warehouse.open(url) as warehouse:
        return warehouse.fetchall(
            "select indicator_id, org_unit_id, period_id, value from marts.indicator_values order by 1, 2, 3"
        )


def transform_builds(url: str, summary: RunSummary) -> list[str | None]:
    """The messages of a run's dbt builds, in order (which models each selected)."""
    with Warehouse.open(url) as warehouse:
        return [
            row[0]
            for row in warehouse.fetchall(
                "select message from audit.pipeline_runs where run_id = $run "
                "and step = 'transform' order by started_at",
                {"run": summary.run_id},
            )
        ]


def node_runs(url: str, summary: RunSummary) -> dict[tuple[str, str], str | None]:
    """A run's dbt nodes as (unique id, status), each with the message of its build step;
    the time is dbt's own (a skipped node has none, the models of a build do)."""
    with Warehouse.open(url) as warehouse:
        rows = warehouse.fetchall(
            "select n.unique_id, n.status, p.message, n.seconds from audit.dbt_node_runs n "
            "join audit.pipeline_runs p on p.step_id = n.step_id where n.run_id = $run",
            {"run": summary.run_id},
        )
    assert all(seconds >= 0 for *_, seconds in rows)
    assert not rows or any(seconds > 0 for *_, seconds in rows)
    return {(unique_id, status): message for unique_id, status, message, _ in rows}


def public_indicators(url: str) -> set[str]:
    with Warehouse.open(url) as warehouse:
        return {
            str(row[0])
            for row in warehouse.fetchall(
                "select distinct indicator_id from marts.pub_indicator_values"
            )
        }


def test_builds_are_skipped_only_when_nothing_changed(demo_country: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dhis2"
    shutil.copytree(demo_country, folder)
    extra = tmp_path / "extra_indicators"
    extra.mkdir()
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    config = make_config(url, folder, tmp_path / "state", indicator_paths=[str(extra)])

    first = run_pipeline(config)
    assert first.dbt is not None and first.dbt.succeeded > 0
    # the first build is everything that does not read the alert records; the run's own
    # alerts then reach the 7-1-7 marts, the indicators and the public layer in the second
    with Warehouse.open(url) as warehouse:
        alerts = warehouse.fetch_scalar("select count(*) from marts.alerts")
    assert alerts > 0
    assert transform_builds(url, first) == [BEFORE_ALERTS.description, AFTER_ALERTS.description]
    built = indicator_rows(url)
    # every node dbt ran is in audit.dbt_node_runs under its build step, with its time
    recorded = node_runs(url, first)
    assert sorted(recorded) == sorted((n.unique_id, n.status) for n in first.dbt.nodes)
    assert recorded[("model.healthpipe.int_data_values_aggregated", "success")] == (
        BEFORE_ALERTS.description
    )
    assert recorded[("model.healthpipe.indicator_values", "success")] == AFTER_ALERTS.description

    site = tmp_path / "state" / "site" / "data-docs" / "index.html"
    rendered = site.stat().st_mtime_ns
    again = run_pipeline(config)
    assert site.stat().st_mtime_ns == rendered  # nothing newly validated: Data Docs left as is
    status, message = transform_step(url, again)
    assert again.dbt is None and status == "success" and "skipped" in str(message)
    assert indicator_rows(url) == built
    # the alerting step still runs (it retries notifications), but nothing it reads changed:
    # the rules are not evaluated again
    assert again.alerts is not None and again.alerts.skipped
    assert node_runs(url, again) == {}

    # an alert verified since: only the models after the alerts read the alert records
    with Warehouse.open(url) as warehouse:
        alert_id = warehouse.fetch_scalar(
            "select min(alert_id) from marts.alerts where status = 'triggered'"
        )
        set_status(warehouse, alert_id, "verified", actor="test", note=None, now=datetime.now(UTC))
    verified = run_pipeline(config)
    assert transform_builds(url, verified) == [
        "skipped before the alerts: only the alert records changed",
        AFTER_ALERTS.description,
    ]
    assert indicator_rows(url) == built
    assert run_pipeline(config).dbt is None

    (extra / "extra.yml").write_text(EXTRA_INDICATOR, encoding="utf-8")
    with_indicator = run_pipeline(config)
    assert with_indicator.dbt is not None
    assert {row[0] for row in indicator_rows(url)} - {row[0] for row in built} == {
        "anc1_per_delivery"
    }
    # the build after alerting publishes the new indicator
    assert transform_builds(url, with_indicator) == [
        BEFORE_ALERTS.description,
        AFTER_ALERTS.description,
    ]
    assert "anc1_per_delivery" in public_indicators(url)

    # a corrected value in a new file version lands as a change, and rebuilds
    path = next(p for p in sorted((folder / "dataValueSets").glob("*.json")))
    document = json.loads(path.read_text(encoding="utf-8"))
    document["dataValues"][0]["value"] = str(int(float(document["dataValues"][0]["value"])) + 7)
    document["dataValues"][0]["lastUpdated"] = "2030-01-01T00:00:00.000"
    path.write_text(json.dumps(document), encoding="utf-8")
    corrected = run_pipeline(config)
    assert corrected.dbt is not None
    assert sum(c.updated for s in corrected.sources for c in s.entities.values()) == 1

    assert run_pipeline(config).dbt is None
    assert run_pipeline(config, full_refresh=True).dbt is not None


def test_a_build_recorded_before_the_fingerprint_had_two_parts_is_built_again(
    tmp_path: Path,
) -> None:
    with Warehouse.open(f"duckdb:///{tmp_path / 'warehouse.duckdb'}") as warehouse:
        for schema in ("marts", "audit"):
            warehouse.execute(f"create schema if not exists {schema}")
        warehouse.execute("create table marts.indicator_values (indicator_id text)")
        warehouse.execute(
            "create table audit.build_state "
            "(fingerprint text not null, run_id text not null, built_at timestamp not null)"
        )
        warehouse.execute(
            "insert into audit.build_state values ('old', 'run_1', timestamp '2026-01-01')"
        )
        last = build_state.last_fingerprint(warehouse)
        assert last == build_state.Fingerprint(before_alerts="", whole="old")
        now = build_state.Fingerprint(before_alerts="b", whole="w")
        build_state.record_build(warehouse, now, "run_2", datetime(2026, 1, 2))
        assert build_state.last_fingerprint(warehouse) == now
