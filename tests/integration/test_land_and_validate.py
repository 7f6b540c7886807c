"""Landing is an idempotent upsert; validation quarantines bad rows with their reason."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.audit import utc_now
from pipelines.errors import ValidationFailed
from pipelines.land import land_records
from pipelines.run import ingest_source, open_warehouse
from pipelines.sources import raw_table
from pipelines.warehouse import Warehouse
from tests.conftest import SAMPLES, make_config

VALUES = raw_table("dhis2", "data_values")
NOW = datetime(2026, 1, 1, 12, 0)


def value(**overrides: Any) -> dict[str, Any]:
    record = {
        "data_element": "deAAAAAAAAA",
        "period": "202601",
        "org_unit": "ouAAAAAAAAA",
        "category_option_combo": "HllvX50cXC0",
        "attribute_option_combo": "HllvX50cXC0",
        "value": "10",
        "deleted": False,
    }
    record.update(overrides)
    return record


def land(warehouse: Warehouse, records: list[dict[str, Any]], batch: str = "b1") -> Any:
    return land_records(
        warehouse, VALUES, "hmis", records, run_id="r", batch_id=batch, extracted_at=NOW, now=NOW
    )


def test_landing_is_an_idempotent_upsert(warehouse_url: str) -> None:
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.ensure_schemas()
        first = land(warehouse, [value(), value(period="202602")])
        assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
        snapshot = warehouse.fetchall(
            "select period, record_hash, batch_id from raw.dhis2__data_values order by period"
        )

        again = land(warehouse, [value(), value(period="202602")], batch="b2")
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
        assert (
            warehouse.fetchall(
                "select period, record_hash, batch_id from raw.dhis2__data_values order by period"
            )
            == snapshot
        )

        changed = land(warehouse, [value(value="11")], batch="b3")
        assert (changed.inserted, changed.updated) == (0, 1)
        assert warehouse.fetchall(
            "select value, batch_id, validation_status from raw.dhis2__data_values "
            "where period = '202601'"
        ) == [("11", "b3", "pending")]

        deleted = land(warehouse, [value(value="11", deleted=True)], batch="b4")
        assert deleted.updated == 1
        assert (
            warehouse.fetch_scalar(
                "select is_deleted from raw.dhis2__data_values where period = '202601'"
            )
            is True
        )
        assert warehouse.row_count("raw.dhis2__data_values") == 2


def test_duplicates_collapse_and_keyless_records_go_to_quarantine(warehouse_url: str) -> None:
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.ensure_schemas()
        result = land(
            warehouse,
            [value(value="1"), value(value="1"), value(value="2"), value(org_unit=None)],
        )
        assert (result.received, result.inserted, result.duplicates, result.quarantined) == (
            4,
            1,
            2,
            1,
        )
        # The last of the repeated records wins, as in a DHIS2 import.
        assert warehouse.fetch_scalar("select value from raw.dhis2__data_values") == "2"
        rule, field, reason, record = warehouse.fetchall(
            "select rule, field, reason, record_json from audit.quarantine"
        )[0]
        assert (rule, field) == ("natural_key_present", "org_unit")
        assert "missing org_unit" in reason
        assert json.loads(record)["value"] == "10"


def test_new_extras_fields_are_recorded_once_with_their_batch(warehouse_url: str) -> None:
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.ensure_schemas()
        first = land(
            warehouse,
            [
                value(extras='{"newField":"a"}'),
                value(period="202602", extras='{"newField":"b","other":1}'),
                value(period="202603"),
                value(org_unit=None, extras='{"keyless":"x"}'),  # quarantined, not in raw
            ],
        )
        assert [(f.name, f.records) for f in first.new_fields] == [("newField", 2), ("other", 1)]
        again = land(
            warehouse, [value(period="202604", extras='{"newField":"c","third":"x"}')], batch="b2"
        )
        assert [(f.name, f.records) for f in again.new_fields] == [("third", 1)]
        # A batch that rolls back (its cursor could not be saved, say) records nothing.
        with pytest.raises(RuntimeError), warehouse.transaction():
            land(warehouse, [value(period="202605", extras='{"lost":"x"}')], batch="b3")
            raise RuntimeError("the batch fails after landing")
        # Another source sending the same field has its own report.
        other = land_records(
            warehouse, VALUES, "hmis2", [value(extras='{"other":1}')],
            run_id="r", batch_id="c1", extracted_at=NOW, now=NOW,
        )  # fmt: skip
        assert [f.name for f in other.new_fields] == ["other"]
        rows = warehouse.fetchall(
            "select source_name, raw_table, field, change, first_seen_run_id, "
            "first_seen_batch_id, records, first_seen_at from audit.schema_changes "
            "order by source_name, field"
        )
    assert rows == [
        ("hmis", "dhis2__data_values", "newField", "added", "r", "b1", 2, NOW),
        ("hmis", "dhis2__data_values", "other", "added", "r", "b1", 1, NOW),
        ("hmis", "dhis2__data_values", "third", "added", "r", "b2", 1, NOW),
        ("hmis2", "dhis2__data_values", "other", "added", "r", "c1", 1, NOW),
    ]


def write_drop(folder: Path, org_units: list[dict[str, Any]], values: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "organisationUnits.json").write_text(
        json.dumps({"organisationUnits": org_units}), encoding="utf-8"
    )
    (folder / "metadata.json").write_text(
        (SAMPLES / "dhis2" / "metadata_dataElements_categoryOptionCombos.json").read_text(
            encoding="utf-8"
        ),
        encoding="utf-8",
    )
    (folder / "values.json").write_text(json.dumps({"dataValues": values}), encoding="utf-8")


def test_invalid_values_are_quarantined_with_rule_and_reason(
    warehouse_url: str, tmp_path: Path
) -> None:
    org_unit = {"id": "DiszpKrYNg8", "name": "Ngelehun CHC", "path": "/DiszpKrYNg8", "level": 1}
    good = {
        "dataElement": "tpz77FcntKx",  # INTEGER_ZERO_OR_POSITIVE in the sample metadata
        "period": "202601",
        "orgUnit": "DiszpKrYNg8",
        "value": "5",
    }
    bad = [
        {**good, "orgUnit": "NoSuchUnit1"},
        {**good, "period": "202613"},
        {**good, "period": "2026-01"},
        {**good, "value": "five", "period": "202602"},
        {**good, "dataElement": "unknownDE00", "period": "202603"},
        {**good, "categoryOptionCombo": "NoSuchCombo", "period": "202604"},
        {**good, "period": "209901"},
    ]
    drop = tmp_path / "drop"
    write_drop(drop, [org_unit], [good, *bad])
    config = make_config(warehouse_url, drop, tmp_path)
    with open_warehouse(config) as warehouse:
        summary = ingest_source(warehouse, config.source("hmis"), config, run_id="run1")
        counts = summary.entities["data_values"]
        assert (counts.received, counts.quarantined) == (8, 7)
        statuses = dict(
            warehouse.fetchall(
                "select validation_status, count(*) from raw.dhis2__data_values group by 1"
            )
        )
        assert statuses == {"valid": 1, "quarantined": 7}
        reasons: dict[tuple[str, str], str] = {}
        for rule, field, reason in warehouse.fetchall(
            "select rule, field, reason from audit.quarantine "
            "where raw_table = 'dhis2__data_values' order by reason"
        ):
            reasons[(rule, field)] = reasons.get((rule, field), "") + reason
        assert "NoSuchUnit1" in reasons[("org_unit_known", "org_unit")]
        assert "202613" in reasons[("period_valid", "period_type")]
        assert "2026-01" in reasons[("period_valid", "period_type")]
        assert "five" in reasons[("value_numeric", "value")]
        assert "INTEGER_ZERO_OR_POSITIVE" in reasons[("value_numeric", "value")]
        assert "unknownDE00" in reasons[("data_element_known", "data_element")]
        assert "NoSuchCombo" in reasons[("category_option_combo_known", "category_option_combo")]
        assert "209901" in reasons[("period_not_in_future", "period_in_future")]
        periods = {
            json.loads(r[0])["period"]
            for r in warehouse.fetchall(
                "select record_json from audit.quarantine where rule = 'period_valid'"
            )
        }
        assert periods == {"202613", "2026-01"}
        results = warehouse.fetchall(
            "select rule, success, unexpected_count from audit.validation_results "
            "where raw_table = 'dhis2__data_values' and rule = 'org_unit_known'"
        )
        assert results == [("org_unit_known", False, 1)]

        # A re-run lands nothing new and quarantines nothing twice.
        before = warehouse.row_count("audit.quarantine")
        again = ingest_source(warehouse, config.source("hmis"), config, run_id="run2")
        assert again.pages == 0
        assert warehouse.row_count("audit.quarantine") == before


def test_the_public_samples_land_and_unknown_org_units_are_quarantined(
    duckdb_url: str, tmp_path: Path
) -> None:
    drop = tmp_path / "samples"
    drop.mkdir()
    for name in (
        "organisationUnits.json",
        "metadata_dataElements_categoryOptionCombos.json",
        "dataValueSet_bulk.json",
    ):
        (drop / name).write_bytes((SAMPLES / "dhis2" / name).read_bytes())
    config = make_config(duckdb_url, drop, tmp_path)
    with open_warehouse(config) as warehouse:
        summary = ingest_source(warehouse, config.source("hmis"), config, run_id="run1")
        landed = {entity: c.received for entity, c in summary.entities.items()}
        assert landed == {
            "organisation_units": 3,
            "data_elements": 75,
            "category_option_combos": 12,
            "data_sets": 2,
            "data_values": 231,
        }
        # The sample values are reported for Bo (O6uvpzGd5pu), a unit the sample org-unit
        # payload does not include: every value is held back, none is lost.
        assert warehouse.fetchall("select rule, count(*) from audit.quarantine group by rule") == [
            ("org_unit_known", 231)
        ]
        assert warehouse.row_count("raw.dhis2__data_values") == 231


def test_a_fatal_expectation_stops_the_batch(
    duckdb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "dhis2__organisation_units.yml").write_text(
        "suite: strict_units\nexpectations:\n"
        "  - rule: code_required\n    type: expect_column_values_to_not_be_null\n"
        "    column: code\n    severity: fatal\n    reason: organisation unit {id} has no code\n",
        encoding="utf-8",
    )
    import pipelines.validate as validate

    original = validate.load_suite_spec
    monkeypatch.setattr(validate, "load_suite_spec", lambda table: original(table, suites))
    drop = tmp_path / "drop"
    write_drop(drop, [{"id": "DiszpKrYNg8", "name": "No code", "path": "/DiszpKrYNg8"}], [])
    config = make_config(duckdb_url, drop, tmp_path)
    with open_warehouse(config) as warehouse:
        with pytest.raises(ValidationFailed, match="code_required"):
            ingest_source(warehouse, config.source("hmis"), config, run_id="run1")
        assert warehouse.fetchall(
            "select validation_status from raw.dhis2__organisation_units"
        ) == [("pending",)]
        assert warehouse.fetchall(
            "select step, status, message like '%code_required%' from audit.pipeline_runs "
            "where step = 'validate'"
        ) == [("validate", "failed", True)]
    assert utc_now() > NOW


def test_replay_releases_records_once_their_metadata_arrives(
    warehouse_url: str, tmp_path: Path
) -> None:
    """Values for an org unit DHIS2 had not exported yet are held back; once the unit is
    in the metadata, `quarantine replay` publishes them and releases their entries."""
    from pipelines.quarantine import open_quarantine
    from pipelines.run import replay_quarantine

    known = {"id": "DiszpKrYNg8", "name": "Ngelehun CHC", "path": "/DiszpKrYNg8", "level": 1}
    late = {"id": "YuQRtpLP10I", "name": "Badjia", "path": "/YuQRtpLP10I", "level": 1}
    value = {"dataElement": "tpz77FcntKx", "period": "202601", "value": "5"}
    drop = tmp_path / "drop"
    write_drop(
        drop, [known], [{**value, "orgUnit": "DiszpKrYNg8"}, {**value, "orgUnit": "YuQRtpLP10I"}]
    )
    config = make_config(warehouse_url, drop, tmp_path)
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="run1")
        groups = open_quarantine(warehouse)
        assert [(g.rule, g.records) for g in groups] == [("org_unit_known", 1)]

        (drop / "organisationUnits.json").write_text(
            json.dumps({"organisationUnits": [known, late]}), encoding="utf-8"
        )
        ingest_source(warehouse, config.source("hmis"), config, run_id="run2")
    counts = replay_quarantine(config, run_id="replay1")
    assert (counts["dhis2__data_values"].released, counts["dhis2__data_values"].still_held) == (
        1,
        0,
    )
    with open_warehouse(config) as warehouse:
        assert open_quarantine(warehouse) == []
        assert warehouse.fetchall(
            "select validation_status, count(*) from raw.dhis2__data_values group by 1"
        ) == [("valid", 2)]
        released = warehouse.fetchall("select rule, released_at is not null from audit.quarantine")
        assert released == [("org_unit_known", True)]


def test_a_full_pull_far_smaller_than_usual_is_flagged(
    duckdb_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unit = {"id": "DiszpKrYNg8", "name": "Ngelehun CHC", "path": "/DiszpKrYNg8", "level": 1}
    values = [
        {
            "dataElement": "tpz77FcntKx",
            "period": f"2025{m:02d}",
            "orgUnit": "DiszpKrYNg8",
            "value": str(m),
        }
        for m in range(1, 13)
    ]
    drop = tmp_path / "drop"
    write_drop(drop, [unit], values)
    config = make_config(duckdb_url, drop, tmp_path)
    with open_warehouse(config) as warehouse:
        for run in ("run1", "run2"):
            ingest_source(warehouse, config.source("hmis"), config, run_id=run, full_refresh=True)
        write_drop(drop, [unit], values[:3])
        ingest_source(warehouse, config.source("hmis"), config, run_id="run3", full_refresh=True)
        checks = warehouse.fetchall(
            "select run_id, success, element_count from audit.validation_results "
            "where rule = 'volume_in_range' and raw_table = 'data_values' order by run_id"
        )
    assert checks == [("run2", True, 12), ("run3", False, 3)]
    assert "under half the usual 12" in caplog.text
