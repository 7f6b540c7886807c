"""The DHIS2 connector over the Web API, against the sandbox serving a simulated country:
full pull, incremental pull after new, corrected and deleted values, auth failure, faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.http import SourceAuthError, SourceHTTPError
from pipelines.config import HealthpipeConfig, parse_config
from pipelines.periods import is_period
from pipelines.run import ingest_source, open_warehouse
from pipelines.sandbox.server import Sandbox, start_sandbox
from pipelines.simulate import simulate
from pipelines.simulate.dhis2_payloads import iter_data_values
from tests.conftest import small_country

ENV = {"DHIS2_USER": "admin", "DHIS2_PASSWORD": "district"}


@pytest.fixture(scope="module")
def country_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dhis2_api_country")
    simulate(root, country=small_country(), weeks=30, sources=["dhis2"])
    return root


@pytest.fixture
def sandbox(country_dir: Path) -> Iterator[Sandbox]:
    with start_sandbox(country_dir) as server:
        yield server


def config_for(url: str, warehouse: str, state: Path, **extra: Any) -> HealthpipeConfig:
    source = {
        "name": "hmis",
        "type": "dhis2",
        "base_url": url,
        "username_env": "DHIS2_USER",
        "password_env": "DHIS2_PASSWORD",
        "start_date": "2025-01-01",
        **extra,
    }
    data = {"warehouse": warehouse, "state_dir": str(state), "sources": [source]}
    return parse_config(data, origin="test", base_dir=state, env=ENV)


def keyed(values: Iterator[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The last record per natural key (files may repeat a value; the last one counts).
    Values a DHIS2 server cannot hold (an org unit or period that does not exist) are left
    out: through the Web API they never arrive."""
    units = {ou.uid for ou in small_country().org_units}
    result = {}
    for v in values:
        if v.get("orgUnit") not in units or not is_period(v["period"]):
            continue
        key = (
            v["dataElement"],
            v["period"],
            v["orgUnit"],
            v["categoryOptionCombo"],
            v["attributeOptionCombo"],
        )
        result[key] = v
    return result


def raw_values(warehouse: Any) -> dict[tuple[str, ...], tuple[str | None, bool]]:
    rows = warehouse.fetchall(
        "select data_element, period, org_unit, category_option_combo, attribute_option_combo, "
        "value, is_deleted from raw.dhis2__data_values"
    )
    return {tuple(r[:5]): (r[5], r[6]) for r in rows}


@pytest.mark.parametrize("value_format", ["json", "csv"])
def test_full_then_incremental_pull(
    sandbox: Sandbox,
    country_dir: Path,
    duckdb_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value_format: str,
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = config_for(sandbox.dhis2_url, duckdb_url, tmp_path, format=value_format)
    expected = keyed(iter_data_values(country_dir))
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="full")
        landed = raw_values(warehouse)
        assert set(landed) == set(expected)
        assert all(landed[k][0] == expected[k].get("value") for k in expected)
        units = warehouse.row_count("raw.dhis2__organisation_units")
        assert units == len(small_country().org_units)
        registrations = warehouse.row_count("raw.dhis2__complete_registrations")
        assert registrations > 0
        cursor = warehouse.fetch_scalar(
            "select cursor from audit.source_state where source_name = 'hmis'"
        )
        assert "lastUpdated" in cursor

        sandbox.apply_increment(1)
        summary = ingest_source(warehouse, config.source("hmis"), config, run_id="incremental")
        after = raw_values(warehouse)
    later = keyed(iter_data_values(country_dir / "increments" / "1"))
    for key, value in later.items():
        if value.get("deleted"):
            assert after[key][1] is True, key
        else:
            assert after[key][0] == value["value"], key
    counts = summary.entities["data_values"]
    # The incremental pull asks for what changed since the cursor (minus the overlap), not
    # for everything again.
    assert counts.received < len(expected) / 2
    assert counts.inserted + counts.updated >= len(later) - 1


def registrations_in(folder: Path) -> list[dict[str, Any]]:
    return [
        r
        for path in sorted((folder / "dhis2" / "completeDataSetRegistrations").glob("*.json"))
        for r in json.loads(path.read_text(encoding="utf-8"))["completeDataSetRegistrations"]
    ]


def saved_cursor(warehouse: Any) -> dict[str, Any]:
    text = warehouse.fetch_scalar(
        "select cursor from audit.source_state where source_name = 'hmis'"
    )
    return dict(json.loads(text))


def test_incremental_pulls_ask_for_new_registrations_and_sweep_when_due(
    sandbox: Sandbox,
    country_dir: Path,
    duckdb_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = config_for(sandbox.dhis2_url, duckdb_url, tmp_path)
    base = registrations_in(country_dir)
    added = registrations_in(country_dir / "increments" / "1")
    assert base and added
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="full")
        assert warehouse.row_count("raw.dhis2__complete_registrations") == len(base)
        cursor = saved_cursor(warehouse)
        assert "registrationsSweptAt" in cursor
        since = datetime.fromisoformat(cursor["lastUpdated"]) - timedelta(seconds=300)

        # within a day of the sweep: only what was registered since the cursor (minus the
        # overlap) is asked for, not every registration of the last 400 days again
        sandbox.apply_increment(1)
        summary = ingest_source(warehouse, config.source("hmis"), config, run_id="incremental")
        registered_since = [
            r for r in [*base, *added] if datetime.fromisoformat(r["date"]) >= since
        ]
        assert summary.entities["complete_registrations"].received == len(registered_since)
        assert warehouse.row_count("raw.dhis2__complete_registrations") == len(base) + len(added)

        # a day after the last sweep, the whole recent window is read again
        aged = saved_cursor(warehouse)
        swept_at = datetime.fromisoformat(aged["registrationsSweptAt"])
        aged["registrationsSweptAt"] = (swept_at - timedelta(hours=25)).isoformat()
        warehouse.execute(
            "update audit.source_state set cursor = $cursor where source_name = 'hmis'",
            {"cursor": json.dumps(aged)},
        )
        swept = ingest_source(warehouse, config.source("hmis"), config, run_id="daily")
        assert swept.entities["complete_registrations"].received == len(base) + len(added)
        assert saved_cursor(warehouse)["registrationsSweptAt"] >= cursor["registrationsSweptAt"]
        quiet = ingest_source(warehouse, config.source("hmis"), config, run_id="quiet")
        assert quiet.entities["complete_registrations"].received < len(base)

        # with registration_sweep_hours: 0, every pull sweeps
        sweeping = config_for(sandbox.dhis2_url, duckdb_url, tmp_path, registration_sweep_hours=0)
        again = ingest_source(warehouse, sweeping.source("hmis"), sweeping, run_id="sweep")
        assert again.entities["complete_registrations"].received == len(base) + len(added)


def test_wrong_password_fails_once_with_a_clear_error(
    sandbox: Sandbox, duckdb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHIS2_USER", "admin")
    monkeypatch.setenv("DHIS2_PASSWORD", "not-the-password")
    config = config_for(sandbox.dhis2_url, duckdb_url, tmp_path)
    with open_warehouse(config) as warehouse, pytest.raises(SourceAuthError) as error:
        ingest_source(warehouse, config.source("hmis"), config, run_id="r")
    assert "DHIS2_USER, DHIS2_PASSWORD" in str(error.value)
    assert "not-the-password" not in str(error.value)


def test_faults_are_retried_and_nothing_is_lost_or_doubled(
    country_dir: Path, duckdb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    expected = keyed(iter_data_values(country_dir))
    with start_sandbox(
        country_dir, faults="503:0.15,429:0.1,reset:0.1,retry_after=0,seed=3"
    ) as server:
        config = config_for(server.dhis2_url, duckdb_url, tmp_path)
        with open_warehouse(config) as warehouse:
            ingest_source(warehouse, config.source("hmis"), config, run_id="r")
            landed = raw_values(warehouse)
            duplicates = warehouse.fetch_scalar(
                "select count(*) - count(distinct data_element || period || org_unit || "
                "category_option_combo || attribute_option_combo) from raw.dhis2__data_values"
            )
    assert set(landed) == set(expected)
    assert duplicates == 0


def test_a_persistently_cut_off_response_fails_and_keeps_the_cursor(
    country_dir: Path, duckdb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with start_sandbox(country_dir, faults="truncate:1.0") as server:
        config = config_for(server.dhis2_url, duckdb_url, tmp_path)
        with open_warehouse(config) as warehouse:
            with pytest.raises(SourceHTTPError, match="cut-off"):
                ingest_source(warehouse, config.source("hmis"), config, run_id="r")
            assert warehouse.row_count("audit.source_state") == 0
            assert warehouse.row_count("raw.dhis2__data_values") == 0
