"""Incremental pulls after the sources changed (issue 4's acceptance): FHIR search, FHIR Bulk
Data, ODK Central and KoboToolbox against the sandbox, which serves the simulator's
``increments/1`` once applied.

One shared run: a full pull of every source, ``apply_increment(1)``, an incremental pull
(no full refresh), a further incremental pull, then the staging models. Each test scores one
connector against ``truth.json``: every new record landed, every corrected record's latest
version is what staging publishes, every deleted record is a tombstone in raw and gone from
staging, nothing else changed, the cursor moved, the further pull landed nothing, and the
change stamped at the saved cursor's very instant was caught (the overlap window).

HL7 v2: a correction (OBX-11 ``C``) arriving in a later drop than the final result it
replaces. Tabular drops (a changed file re-read, rows removed) are covered by
test_tabular_ingest.py::test_spreadsheet_drops_land_validate_and_stage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pipelines.sources.fhir as fhir_adapter
from connectors.fhir import entity_of
from pipelines.config import HealthpipeConfig, parse_config
from pipelines.privacy import Pseudonymiser
from pipelines.run import SourceSummary, ingest_source, open_warehouse
from pipelines.sandbox import FhirSettings, SandboxSettings
from pipelines.sandbox.auth import Credentials
from pipelines.sandbox.server import start_sandbox
from pipelines.simulate import simulate
from pipelines.transform import run_dbt
from pipelines.warehouse import Warehouse
from tests.conftest import small_country

KEY_ENV = "HEALTHPIPE_PSEUDONYM_KEY"
KEY = "increments-integration-test-key-0123456789"
SANDBOX = Credentials()
ENV = {
    KEY_ENV: KEY,
    "ODK_USER": SANDBOX.odk_email,
    "ODK_PASSWORD": SANDBOX.odk_password,
    "KOBO_TOKEN": SANDBOX.kobo_token,
}
SERVERS = ("emr", "ihris")
# Source name -> (FHIR server, Bulk Data?)
FHIR_SOURCES = {
    "emr": ("emr", False),
    "ihris": ("ihris", False),
    "emr_bulk": ("emr", True),
    "ihris_bulk": ("ihris", True),
}
PULLED = (*FHIR_SOURCES, "chw", "nutrition")
STAGED_FORMS = {"household_visit": "household_visits", "cebs_signal": "cebs_signals"}

Snapshot = dict[str, dict[tuple[str, ...], tuple[Any, ...]]]
"""Per raw table, key -> (is_deleted, record_hash, ...) of one source's rows."""


@dataclass
class Run:
    country: Path
    config: HealthpipeConfig
    truth: dict[str, Any]
    before: dict[str, Snapshot] = field(default_factory=dict)
    after: dict[str, Snapshot] = field(default_factory=dict)
    cursors_before: dict[str, Any] = field(default_factory=dict)
    cursors_after: dict[str, Any] = field(default_factory=dict)
    cursors_final: dict[str, Any] = field(default_factory=dict)
    incremental: dict[str, SourceSummary] = field(default_factory=dict)
    again: dict[str, SourceSummary] = field(default_factory=dict)


def pseudonym(resource_type: str, resource_id: str) -> str:
    if resource_type != "Patient":
        return resource_id
    return str(Pseudonymiser(KEY.encode()).pseudonym("patient", resource_id))


def fhir_snapshot(warehouse: Warehouse, source: str) -> Snapshot:
    snapshot: Snapshot = {}
    for table in fhir_adapter.TABLES:
        rows = warehouse.fetchall(
            f"select resource_id, version_id, is_deleted, record_hash from {table.qualified_name} "
            "where source_name = $s",
            {"s": source},
        )
        snapshot[table.name] = {(str(r), str(v)): (bool(d), h) for r, v, d, h in rows}
    return snapshot


def community_snapshot(warehouse: Warehouse, source: str) -> Snapshot:
    table = "odk__submissions" if source == "chw" else "kobo__submissions"
    form = "form_id" if source == "chw" else "asset_uid"
    rows = warehouse.fetchall(
        f"select {form}, submission_id, is_deleted, record_hash, instance_id from raw.{table} "
        "where source_name = $s",
        {"s": source},
    )
    return {table: {(str(f), str(s)): (bool(d), h, i) for f, s, d, h, i in rows}}


def snapshot(warehouse: Warehouse, source: str) -> Snapshot:
    return (
        fhir_snapshot(warehouse, source)
        if source in FHIR_SOURCES
        else community_snapshot(warehouse, source)
    )


def cursor_of(warehouse: Warehouse, source: str) -> Any:
    value = warehouse.fetch_scalar(
        "select cursor from audit.source_state where source_name = $s", {"s": source}
    )
    return None if value is None else json.loads(str(value))


def org_units_only(country: Path, folder: Path) -> Path:
    """The DHIS2 org units (their codes are all the suites need from DHIS2): the rest of
    the metadata would only slow the tests down."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "organisationUnits.json"
    shutil.copy(country / "dhis2" / "metadata" / name, folder / name)
    return folder


def make_config(country: Path, url: str, state: Path, sandbox_url: str) -> HealthpipeConfig:
    org_units = org_units_only(country, state / "org_units")
    sources: list[dict[str, Any]] = [{"name": "hmis", "type": "dhis2", "path": str(org_units)}]
    for name, (server, bulk) in FHIR_SOURCES.items():
        source = {"name": name, "type": "fhir", "base_url": f"{sandbox_url}/fhir/{server}"}
        sources.append({**source, "bulk": True} if bulk else source)
    sources += [
        {
            "name": "chw",
            "type": "odk",
            "base_url": f"{sandbox_url}/odk",
            "project_id": 1,
            "username_env": "ODK_USER",
            "password_env": "ODK_PASSWORD",
        },
        {
            "name": "nutrition",
            "type": "kobo",
            "base_url": f"{sandbox_url}/kobo",
            "token_env": "KOBO_TOKEN",
            "page_size": 100,
        },
    ]
    data = {"warehouse": url, "state_dir": str(state), "sources": sources}
    return parse_config(data, origin="test", base_dir=state, env=ENV)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    country = tmp_path_factory.mktemp("increments_country")
    simulate(country, country=small_country(), weeks=16, sources=["dhis2", "fhir", "community"])
    truth = json.loads((country / "truth.json").read_text(encoding="utf-8"))
    state = tmp_path_factory.mktemp("increments_state")
    url = f"duckdb:///{state / 'warehouse.duckdb'}"
    quick = SandboxSettings(fhir=FhirSettings(bulk_polls=1, bulk_retry_after=0))
    with pytest.MonkeyPatch.context() as patch, start_sandbox(country, settings=quick) as sandbox:
        for name, value in ENV.items():
            patch.setenv(name, value)
        config = make_config(country, url, state, sandbox.url)
        result = Run(country, config, truth)
        with open_warehouse(config) as warehouse:
            ingest_source(warehouse, config.source("hmis"), config, run_id="metadata")
            for name in PULLED:
                ingest_source(warehouse, config.source(name), config, run_id="full")
                result.before[name] = snapshot(warehouse, name)
                result.cursors_before[name] = cursor_of(warehouse, name)
            sandbox.apply_increment(1)
            for name in PULLED:
                source = config.source(name)
                result.incremental[name] = ingest_source(warehouse, source, config, run_id="inc")
                result.after[name] = snapshot(warehouse, name)
                result.cursors_after[name] = cursor_of(warehouse, name)
                result.again[name] = ingest_source(warehouse, source, config, run_id="again")
                result.cursors_final[name] = cursor_of(warehouse, name)
            dbt_env = warehouse.dbt_env()
        outcome = run_dbt(
            ["run", "--select", "staging.fhir", "staging.odk", "staging.kobo"],
            dbt_env=dbt_env,
            state_dir=state,
        )
        assert outcome.failed == []
        yield result


def staged(run: Run, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with Warehouse.open(run.config.warehouse) as warehouse:
        return warehouse.fetchall(sql, params)


def assert_further_pull_lands_nothing(run: Run, source: str) -> None:
    for entity, counts in run.again[source].entities.items():
        assert (counts.inserted, counts.updated) == (0, 0), (source, entity)
    assert run.cursors_final[source] == run.cursors_after[source], source


# --- FHIR ----------------------------------------------------------------------------------


def fhir_expected(run: Run, source: str) -> tuple[Snapshot, dict[str, Any]]:
    """The raw rows the incremental pull must leave: the full pull's, plus every new
    resource and corrected version, plus a tombstone per deletion (from the manifest's
    ``deleted`` files in Bulk Data, from ``<Type>/_history`` after a search)."""
    server, _bulk = FHIR_SOURCES[source]
    changes = run.truth["notes"]["fhir_increment"]["servers"][server]
    keys = {table: set(rows) for table, rows in run.before[source].items()}
    for resource_type, ids in changes["new"].items():
        table = f"fhir__{entity_of(resource_type)}"
        keys[table] |= {(pseudonym(resource_type, i), "1") for i in ids}
    for resource_type, records in changes["corrected"].items():
        table = f"fhir__{entity_of(resource_type)}"
        keys[table] |= {(pseudonym(resource_type, r["id"]), r["version"]) for r in records}
    for resource_type, ids in changes["deleted"].items():
        table = f"fhir__{entity_of(resource_type)}"
        keys[table] |= {(pseudonym(resource_type, i), "deleted") for i in ids}
    return {t: dict.fromkeys(k, ()) for t, k in keys.items()}, changes


@pytest.mark.parametrize("source", list(FHIR_SOURCES))
def test_fhir_incremental_pull_reflects_new_corrected_and_deleted_resources(
    run: Run, source: str
) -> None:
    expected, changes = fhir_expected(run, source)
    assert sum(len(v) for kind in ("new", "corrected", "deleted") for v in changes[kind].values())
    after = run.after[source]
    # Every new resource and corrected version landed, deletions became tombstones (Bulk),
    # and nothing else appeared.
    for table, rows in expected.items():
        assert set(after[table]) - set(rows) == set(), (source, table, "unexpected")
        assert set(rows) - set(after[table]) == set(), (source, table, "missing")
    # Nothing that was there changed: same content, same deletion flag.
    for table, rows in run.before[source].items():
        for key, value in rows.items():
            assert after[table][key] == value, (source, table, key)
    for resource_type, ids in changes["deleted"].items():
        table = f"fhir__{entity_of(resource_type)}"
        for resource_id in ids:
            tombstone = after[table].get((pseudonym(resource_type, resource_id), "deleted"))
            assert tombstone is not None and tombstone[0] is True, (source, resource_id)

    # Staging publishes the latest version of every resource, and no deleted one.
    for resource_type in {*changes["new"], *changes["corrected"], *changes["deleted"]}:
        entity = entity_of(resource_type)
        published = dict(
            staged(
                run,
                f"select {entity}_id, version_id from staging.stg_fhir__{entity} "
                "where source_name = $s",
                {"s": source},
            )
        )
        for resource_id in changes["new"].get(resource_type, []):
            assert published.get(pseudonym(resource_type, resource_id)) == "1", resource_id
        for record in changes["corrected"].get(resource_type, []):
            assert published.get(pseudonym(resource_type, record["id"])) == record["version"]
        for resource_id in changes["deleted"].get(resource_type, []):
            assert pseudonym(resource_type, resource_id) not in published

    # The cursor moved past the increment; a further pull lands nothing.
    before, after_cursor = run.cursors_before[source], run.cursors_after[source]
    assert before != after_cursor
    for resource_type in {*changes["new"], *changes["corrected"]}:
        assert after_cursor["lastUpdated"][resource_type] > before["lastUpdated"][resource_type]
    assert_further_pull_lands_nothing(run, source)


@pytest.mark.parametrize("source", list(FHIR_SOURCES))
def test_fhir_change_at_the_cursors_instant_is_caught(run: Run, source: str) -> None:
    server, _bulk = FHIR_SOURCES[source]
    at = run.truth["notes"]["fhir_increment"]["servers"][server]["at_cursor"]
    saved = run.cursors_before[source]["lastUpdated"][at["resource_type"]]
    # The premise: the change is stamped at exactly the instant the full pull saved (a
    # search's per-type cursor, or the export's transactionTime).
    assert saved == at["last_updated"]
    table = f"fhir__{entity_of(at['resource_type'])}"
    key = (pseudonym(at["resource_type"], at["id"]), at["version"])
    assert key not in run.before[source][table] and key in run.after[source][table]


# --- ODK Central ---------------------------------------------------------------------------


def test_odk_incremental_pull_reflects_new_edited_and_deleted_submissions(run: Run) -> None:
    changes = run.truth["notes"]["community_increment"]["odk"]
    before, after = run.before["chw"]["odk__submissions"], run.after["chw"]["odk__submissions"]
    expected_new = {("household_visit", i) for i in changes["household_visit"]["new"]}
    edited = {(form, e["id"]): e["instance_id"] for form, t in changes.items() for e in t["edited"]}
    deleted = {(form, i) for form, t in changes.items() for i in t["deleted"]}
    assert expected_new and edited and deleted
    assert set(after) == set(before) | expected_new
    for new_key in expected_new:
        assert after[new_key][0] is False
    for key, instance in edited.items():
        assert after[key][2] == instance and after[key][1] != before[key][1]
    for gone in deleted:
        assert before[gone][0] is False and after[gone][0] is True  # a tombstone
    for unchanged, value in before.items():
        if unchanged not in edited and unchanged not in deleted:
            assert after[unchanged] == value, unchanged  # nothing else changed

    for form, model in STAGED_FORMS.items():
        published = dict(
            staged(
                run,
                f"select submission_id, instance_id from staging.stg_odk__{model} "
                "where source_name = 'chw'",
                {},
            )
        )
        for submission in changes[form]["new"]:
            assert submission in published
        for edit in changes[form]["edited"]:
            assert published[edit["id"]] == edit["instance_id"]
        for submission in changes[form]["deleted"]:
            assert submission not in published
    members = dict(
        staged(
            run,
            "select submission_id, household_members from staging.stg_odk__household_visits "
            "where source_name = 'chw'",
            {},
        )
    )
    rows = json.loads(
        (
            run.country / "increments/1/odk/projects/1/forms/household_visit/submissions.json"
        ).read_text(encoding="utf-8")
    )["value"]
    for row in rows:
        if row["__system"]["deletedAt"] is None:
            assert members[row["__id"]] == row["household"]["members"]  # the edited answer

    before_cursor, after_cursor = run.cursors_before["chw"], run.cursors_after["chw"]
    for form, truth in changes.items():
        if truth["edited"] or truth["new"]:
            assert after_cursor[form]["updatedAt"] > before_cursor[form]["updatedAt"], form
        if truth["deleted"]:
            assert after_cursor[form]["deletedAt"] > before_cursor[form].get("deletedAt", ""), form
    assert_further_pull_lands_nothing(run, "chw")


def test_odk_edit_at_the_cursors_instant_is_caught(run: Run) -> None:
    at = run.truth["notes"]["community_increment"]["odk"]["household_visit"]["at_cursor"]
    assert run.cursors_before["chw"]["household_visit"]["updatedAt"] == at["updated_at"]
    key = ("household_visit", at["id"])
    assert run.before["chw"]["odk__submissions"][key][2] != at["instance_id"]
    assert run.after["chw"]["odk__submissions"][key][2] == at["instance_id"]


# --- KoboToolbox ---------------------------------------------------------------------------


def test_kobo_incremental_pull_lands_every_new_result(run: Run) -> None:
    """Kobo's data API marks no edit or deletion an incremental query could find, so the
    increment holds new results only (see pipelines/simulate/community_increment.py)."""
    [(uid, changes)] = run.truth["notes"]["community_increment"]["kobo"].items()
    before = run.before["nutrition"]["kobo__submissions"]
    after = run.after["nutrition"]["kobo__submissions"]
    new = {(uid, i) for i in changes["new"]}
    assert new and changes["counts"] == {"new": len(new), "edited": 0, "deleted": 0}
    assert set(after) == set(before) | new
    assert {k: v for k, v in after.items() if k in before} == before
    published = {
        str(r[0])
        for r in staged(
            run,
            "select submission_id from staging.stg_kobo__nutrition_screenings "
            "where source_name = 'nutrition'",
            {},
        )
    }
    assert set(changes["new"]) <= published
    at = changes["at_cursor"]
    assert run.cursors_before["nutrition"][uid]["submissionTime"] == at["submission_time"]
    assert (uid, at["id"]) in after  # submitted in the cursor's very second
    assert run.cursors_after["nutrition"][uid] != run.cursors_before["nutrition"][uid]
    assert run.incremental["nutrition"].entities["submissions"].inserted == len(new)
    assert_further_pull_lands_nothing(run, "nutrition")


# --- HL7 v2 --------------------------------------------------------------------------------


def msh10s(path: Path) -> set[str]:
    """The message control ids (MSH-10) of an HL7 file."""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\n", "\r")
    return {line.split("|")[9] for line in text.split("\r") if line.startswith("MSH|")}


def test_hl7_correction_in_a_later_drop_replaces_the_final_result(tmp_path: Path) -> None:
    """Files carrying corrections are held back from the first pull; when they arrive, the
    incremental pull (new file fingerprints) lands them, staging publishes the corrected
    result in place of the final one, raw keeps the original, and nothing else changed."""
    country = tmp_path / "country"
    simulate(country, country=small_country(), weeks=12, sources=["dhis2", "hl7"])
    corrections = json.loads((country / "truth.json").read_text())["notes"]["hl7_corrections"]
    drop, held = tmp_path / "drop", tmp_path / "held"
    shutil.copytree(country / "hl7", drop)
    files = {path: msh10s(path) for path in sorted(drop.rglob("*.hl7"))}
    # Only corrections whose every copy sits in files without the original can come later.
    later = [
        c
        for c in corrections
        if not any(
            c["corrected_msh10"] in ids and c["original_msh10"] in ids for ids in files.values()
        )
    ]
    assert later, "no correction arrives in a file of its own"
    wanted = {c["corrected_msh10"] for c in later}
    for path, ids in files.items():
        if ids & wanted:
            target = held / path.relative_to(drop)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
    org_units = org_units_only(country, tmp_path / "org_units")
    state = tmp_path / "state"
    data = {
        "warehouse": f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
        "state_dir": str(state),
        "sources": [
            {"name": "hmis", "type": "dhis2", "path": str(org_units)},
            {"name": "lab", "type": "hl7v2", "path": str(drop)},
        ],
    }
    config = parse_config(data, origin="test", base_dir=tmp_path, env={})

    def results(warehouse: Warehouse) -> dict[tuple[str, str], tuple[Any, ...]]:
        rows = warehouse.fetchall(
            "select message_control_id, segment_position, record_hash, is_deleted "
            "from raw.hl7v2__results where source_name = 'lab'"
        )
        return {(str(m), str(p)): (h, bool(d)) for m, p, h, d in rows}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, KEY)
        with open_warehouse(config) as warehouse:
            ingest_source(warehouse, config.source("hmis"), config, run_id="metadata")
            ingest_source(warehouse, config.source("lab"), config, run_id="first")
            before, cursor_before = results(warehouse), cursor_of(warehouse, "lab")
            for path in sorted(held.rglob("*.hl7")):
                target = drop / path.relative_to(held)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, target)
            ingest_source(warehouse, config.source("lab"), config, run_id="later")
            after, cursor_after = results(warehouse), cursor_of(warehouse, "lab")
            again = ingest_source(warehouse, config.source("lab"), config, run_id="again")
            dbt_env = warehouse.dbt_env()
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else changed
    landed_later = {m for m, _ in set(after) - set(before)}
    assert wanted <= landed_later
    assert not {c["original_msh10"] for c in later} & landed_later
    assert cursor_after != cursor_before
    assert again.pages == 0 or all(
        (c.inserted, c.updated) == (0, 0) for c in again.entities.values()
    )
    outcome = run_dbt(["run", "--select", "stg_hl7v2__results"], dbt_env=dbt_env, state_dir=state)
    assert outcome.failed == []
    with Warehouse.open(config.warehouse) as warehouse:
        for correction in later:
            rows = warehouse.fetchall(
                "select message_control_id, value_text, result_status, is_corrected "
                "from staging.stg_hl7v2__results where source_name = 'lab' "
                "and filler_order_number = $filler and filler_order_namespace = $lab "
                "and test_code = $test",
                {
                    "filler": correction["filler_order"],
                    "lab": correction["lab"],
                    "test": correction["test"],
                },
            )
            expected = (correction["corrected_msh10"], correction["new_value"], "C", True)
            assert rows == [expected]
            # The final result it replaced stays in raw as history.
            assert any(m == correction["original_msh10"] for m, _ in after)
