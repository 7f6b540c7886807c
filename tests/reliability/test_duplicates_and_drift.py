"""Duplicate delivery (the same DHIS2 value, HL7 message and FHIR resource version sent two
to five times: stored once) and schema drift (a new column kept and reported; a removed or
retyped required field failing that entity's validation, naming it, while other sources go
on)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from pipelines.audit import utc_now
from pipelines.land import land_records
from pipelines.privacy import Pseudonymiser
from pipelines.run import ingest_source, open_warehouse
from pipelines.sources import adapter_for, raw_table
from pipelines.status import pipeline_status
from tests.reliability.conftest import PSEUDONYM_KEY
from tests.reliability.drops import dhis2_drop, drop_config, some_values
from tests.reliability.results import Results


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHPIPE_PSEUDONYM_KEY", PSEUDONYM_KEY)


def test_dhis2_values_delivered_two_to_five_times_are_stored_once(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    values = some_values(file_country, 4)
    # value i is sent i + 2 times within the file, and the whole file is delivered twice
    repeated = [v for i, v in enumerate(values) for _ in range(i + 2)]
    folder = dhis2_drop(file_country, tmp_path / "dhis2", repeated)
    shutil.copy(folder / "dataValueSets" / "values.json", folder / "dataValueSets" / "again.json")
    config = drop_config(tmp_path, [{"name": "hmis", "type": "dhis2", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        summary = ingest_source(warehouse, config.source("hmis"), config, run_id="dup")
        rows = warehouse.fetchall(
            "select data_element, period, org_unit, category_option_combo, count(*) "
            "from raw.dhis2__data_values group by 1, 2, 3, 4"
        )
    counts = summary.entities["data_values"]
    assert len(rows) == len(values)
    assert all(row[4] == 1 for row in rows)
    assert counts.received == 2 * len(repeated)
    # each extra copy is either collapsed within a page or found unchanged in raw
    assert counts.duplicates + counts.unchanged == counts.received - len(values)
    assert counts.inserted == len(values)
    assert counts.reconciles
    results.record(
        "duplicate delivery",
        "DHIS2 values sent 2, 3, 4 and 5 times in a file, the file delivered twice",
        counts.received - len(values),
        0,
        received=counts.received,
        stored=len(rows),
        collapsed_as_duplicates=counts.duplicates,
        unchanged_on_redelivery=counts.unchanged,
    )


def test_an_hl7_message_delivered_two_to_five_times_is_stored_once(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    source = sorted((file_country / "hl7").rglob("*.hl7"))
    original = next(  # a single message (not a batch file) with results
        p
        for p in source
        if p.read_bytes().startswith(b"MSH|")
        and p.read_bytes().count(b"MSH|") == 1
        and b"\rOBX|" in p.read_bytes()
    )
    data = original.read_bytes()
    folder = tmp_path / "hl7"
    folder.mkdir()
    (folder / "first.hl7").write_bytes(data)
    for copy in range(2, 6):  # deliveries 2 to 5, as separate drops
        (folder / f"again-{copy}.hl7").write_bytes(data)
    control_id = data.split(b"\r")[0].split(b"|")[9].decode()
    config = drop_config(tmp_path, [{"name": "lab", "type": "hl7v2", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("lab"), config, run_id="dup")
        results_rows = warehouse.fetch_scalar(
            "select count(*) from raw.hl7v2__results where message_control_id = $id",
            {"id": control_id},
        )
        deliveries = warehouse.fetchall(
            "select validation_status, count(*) from raw.hl7v2__messages "
            "where message_control_id = $id group by 1 order by 1",
            {"id": control_id},
        )
    # (the results are held for org_unit_known: this drop has no DHIS2 hierarchy; stored
    # once is what counts here)
    observations = data.count(b"\rOBX|")
    assert results_rows == observations
    # every delivery is recorded (an audit of what the lab sent), one is published
    assert dict(deliveries) == {"valid": 1, "quarantined": 4}  # quarantined as duplicates
    results.record(
        "duplicate delivery",
        "one HL7 ORU message delivered 5 times (5 files)",
        4,
        0,
        results_stored=results_rows,
        observations_in_message=observations,
        deliveries_recorded=5,
        deliveries_valid=1,
    )


def test_a_fhir_resource_version_delivered_two_to_five_times_is_stored_once(
    tmp_path: Path, results: Results
) -> None:
    patient = {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"versionId": "3", "lastUpdated": "2026-01-05T10:00:00Z"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": "2026-01-05T09:00:00Z",
        "valueQuantity": {"value": 38.5, "unit": "Cel"},
    }
    adapter = adapter_for("fhir")
    table = raw_table("fhir", "observation")
    pseudonymiser = Pseudonymiser(PSEUDONYM_KEY.encode())
    config = drop_config(tmp_path, [])
    landed = []
    with open_warehouse(config) as warehouse:
        for batch, copies in enumerate((2, 3, 5)):  # three pages, the same version each time
            records = adapter.prepare("observation", [dict(patient)] * copies, pseudonymiser)
            landed.append(
                land_records(
                    warehouse,
                    table,
                    "emr",
                    records,
                    run_id="r",
                    batch_id=f"r:{batch}",
                    extracted_at=utc_now(),
                    now=utc_now(),
                )
            )
        stored = warehouse.fetch_scalar(
            "select count(*) from raw.fhir__observation where resource_id = 'obs-1'"
        )
    assert stored == 1
    assert [r.inserted for r in landed] == [1, 0, 0]
    assert sum(r.duplicates for r in landed) == 2 + 3 + 5 - 3
    results.record(
        "duplicate delivery",
        "one FHIR resource version sent 2, 3 and 5 times in three pages",
        9,
        0,
        stored=stored,
    )


def test_schema_drift_is_kept_reported_or_refused_and_other_sources_go_on(
    file_country: Path, tmp_path: Path, results: Results, caplog: pytest.LogCaptureFixture
) -> None:
    values = some_values(file_country, 6)
    for v in values[:2]:
        v["newField"] = "added by a DHIS2 upgrade"  # a new field: kept in extras
    del values[2]["orgUnit"]  # a required field removed
    values[3]["period"] = {"iso": values[3]["period"]}  # retyped: an object
    values[4]["value"] = ["not", "a", "number"]  # retyped: a list
    dhis2 = dhis2_drop(file_country, tmp_path / "dhis2", values)
    workforce = tmp_path / "sheets" / "workforce.csv"
    workforce.parent.mkdir()
    lines = (file_country / "tabular" / "workforce.csv").read_text().splitlines()[:4]
    gone = lines[0].split(",").index("filled_posts")  # a required column removed ...

    def drifted(line: str, added: str) -> str:
        cells = line.split(",")
        return ",".join([*cells[:gone], *cells[gone + 1 :], added])  # ... and one added

    workforce.write_text(
        "\n".join([drifted(lines[0], "supplier_note"), *(drifted(r, "x") for r in lines[1:])])
        + "\n",
        encoding="utf-8",
    )
    config = drop_config(
        tmp_path,
        [
            {"name": "hmis", "type": "dhis2", "path": str(dhis2)},
            {"name": "sheets", "type": "tabular", "path": str(workforce.parent)},
            {"name": "lab", "type": "hl7v2", "path": str(file_country / "hl7")},
        ],
    )
    caplog.set_level(logging.WARNING, logger="pipelines.schema_changes")
    with open_warehouse(config) as warehouse:
        for name in ("hmis", "sheets", "lab"):
            ingest_source(warehouse, config.source(name), config, run_id="drift")
        first_warnings = [r.getMessage() for r in caplog.records if "new field" in r.getMessage()]
        caplog.clear()
        # the same files again (a full pull, so every record is read and landed again)
        again = {
            name: ingest_source(
                warehouse, config.source(name), config, run_id="again", full_refresh=True
            )
            for name in ("hmis", "sheets", "lab")
        }
        second_warnings = [r.getMessage() for r in caplog.records if "new field" in r.getMessage()]
        changes = warehouse.fetchall(
            "select source_name, raw_table, field, change, first_seen_run_id, records "
            "from audit.schema_changes order by source_name, field"
        )
        status = {s.name: s for s in pipeline_status(warehouse, config, utc_now()).sources}
        kept = warehouse.fetchall(
            "select extras from raw.dhis2__data_values where extras like '%newField%'"
        )
        documented_kept = warehouse.fetch_scalar(
            "select count(*) from raw.dhis2__data_elements where extras like '%zeroIsSignificant%'"
        )
        held = {
            (str(t), str(r), str(f)): str(reason)
            for t, r, f, reason in warehouse.fetchall(
                "select raw_table, rule, field, reason from audit.quarantine where source_name "
                "in ('hmis', 'sheets')"
            )
        }
        sheet_rows = warehouse.fetchall(
            "select validation_status, extras from raw.tabular__workforce"
        )
        lab = warehouse.fetch_scalar("select count(*) from raw.hl7v2__results")
        valid_values = warehouse.fetch_scalar(
            "select count(*) from raw.dhis2__data_values where validation_status = 'valid'"
        )
    assert len(kept) == 2 and json.loads(kept[0][0])["newField"] == "added by a DHIS2 upgrade"
    assert any(t == "dhis2__data_values" and "org_unit" in f for t, _, f in held), held
    assert any(t == "dhis2__data_values" and "period" in f for t, _, f in held), held
    assert any(t == "dhis2__data_values" and "value" in f for t, _, f in held), held
    assert any(
        t == "tabular__workforce" and "filled_posts" in reason and "supplier_note" in reason
        for (t, _, _), reason in held.items()
    ), held
    assert sheet_rows and all(status == "quarantined" for status, _ in sheet_rows)
    assert all("supplier_note" in str(extras) for _, extras in sheet_rows)
    assert valid_values >= 2  # the untouched values went through
    assert lab > 0  # another source went on
    # The new fields are reported once: audited with the batch that first carried them ...
    # (the simulated metadata export also carries documented DHIS2 fields the connector does
    # not map, such as zeroIsSignificant: kept in extras, but not drift)
    assert changes == [
        ("hmis", "dhis2__data_values", "newField", "added", "drift", 2),
        ("sheets", "tabular__workforce", "supplier_note", "added", "drift", len(sheet_rows)),
    ]
    drifted = changes
    assert documented_kept > 0
    # ... with one warning each, naming source, entity, field and count ...
    assert len(first_warnings) == len(changes)
    assert (
        "hmis data_values: new field 'newField' in 2 records, kept in raw extras "
        "(audit.schema_changes)" in first_warnings
    )
    assert (
        f"sheets workforce: new field 'supplier_note' in {len(sheet_rows)} records, kept in "
        "raw extras (audit.schema_changes)" in first_warnings
    )
    # ... and nothing new when the same files land again
    assert second_warnings == []
    assert again["hmis"].entities["data_values"].received == len(values)
    assert all(c.new_fields == [] for s in again.values() for c in s.entities.values())
    assert {(c.raw_table, c.field, c.records) for c in status["hmis"].schema_changes} >= {
        ("dhis2__data_values", "newField", 2)
    }
    assert len(status["hmis"].schema_changes) == 1
    assert [c.field for c in status["sheets"].schema_changes] == ["supplier_note"]
    assert status["lab"].schema_changes == []
    results.record(
        "schema drift",
        "a new field (DHIS2, CSV), a removed required field (DHIS2 orgUnit, CSV filled_posts), "
        "retyped fields (period as an object, value as a list)",
        6,
        0,
        new_fields_kept_in_extras=len(kept) + len(sheet_rows),
        new_fields_reported=len(drifted),
        fields_recorded_in_all=len(changes),
        new_field_warnings=len(first_warnings) + len(second_warnings),
        quarantined_with_field_named=len(held),
        other_source_rows_landed=lab,
    )
