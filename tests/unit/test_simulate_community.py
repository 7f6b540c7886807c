"""Community reporting (ODK Central and KoboToolbox) of the simulated country: shaped like
the real APIs, internally consistent, defects recorded in the truth, and deterministic."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.simulate.community import (
    CEBS_SIGNAL,
    HOUSEHOLD_VISIT,
    KOBO_ENTITY,
    REFERRAL_FOLLOWUP,
    _verification_delay_ms,
    write_community,
)
from pipelines.simulate.context import Simulation, Window
from pipelines.simulate.country import Country, build_country

FORMS = (HOUSEHOLD_VISIT, REFERRAL_FOLLOWUP, CEBS_SIGNAL)
WINDOW = Window("2026W5", 20)
ODK_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
KOBO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
INSTANCE_ID = re.compile(
    r"^uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
KOBO_UID = re.compile(r"^a[A-Za-z0-9]{21}$")
SYSTEM_KEYS = {
    "submissionDate", "updatedAt", "submitterId", "submitterName", "attachmentsPresent",
    "attachmentsExpected", "status", "reviewState", "deviceId", "edits", "formVersion",
    "deletedAt",
}  # fmt: skip
KOBO_META_KEYS = {
    "_id", "_uuid", "_submission_time", "_submitted_by", "_status", "_validation_status",
    "_attachments", "_geolocation", "formhub/uuid", "meta/instanceID", "__version__",
    "_xform_id_string", "_tags", "_notes",
}  # fmt: skip
# The shape of ODK Central's documented OData Submissions example (the sample in the shared
# samples folder): a context URL ending in #Submissions and rows keyed by __id, with the
# instance id again under meta.
ODATA_CONTEXT = re.compile(
    r"^https://[^/]+/v1/projects/\d+/forms/(?P<form>[^/]+)\.svc/\$metadata#Submissions$"
)


def small_country() -> Country:
    return build_country(7, districts=2, regions=1, facilities_per_district=(3, 4))


def generate(folder: Path, seed: int = 7) -> tuple[Simulation, dict[str, int]]:
    sim = Simulation(seed=seed, country=small_country(), window=WINDOW)
    return sim, write_community(sim, folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Simulation, dict[str, int]]:
    folder = tmp_path_factory.mktemp("community")
    sim, counts = generate(folder)
    return folder, sim, counts


def odk_document(folder: Path, form: str) -> dict[str, Any]:
    path = folder / "odk" / "projects" / "1" / "forms" / form / "submissions.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def odk_rows(folder: Path, form: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = odk_document(folder, form)["value"]
    return rows


def kobo_folder(folder: Path) -> Path:
    (asset,) = (folder / "kobo" / "assets").iterdir()
    return asset


def kobo_results(folder: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads(
        (kobo_folder(folder) / "data.json").read_text(encoding="utf-8")
    )["results"]
    return results


def defects(sim: Simulation, source: str, entity: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in sim.truth.defects
        if d["source"] == source and (entity is None or d["entity"] == entity)
    ]


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def window_bounds() -> tuple[datetime, datetime]:
    start = datetime.combine(WINDOW.start, time(), tzinfo=UTC)
    return start, datetime.combine(WINDOW.end + timedelta(days=1), time(), tzinfo=UTC)


def odk_time(value: str) -> datetime:
    assert ODK_TIME.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def muac_of(row: dict[str, Any]) -> Any:
    group = row["muac"]
    return group["muac"] if "muac" in group else group["muac_mm"]


# --- layout and shapes ---------------------------------------------------------------------


def test_layout_and_counts(run: tuple[Path, Simulation, dict[str, int]]) -> None:
    folder, _, counts = run
    for form in FORMS:
        base = folder / "odk" / "projects" / "1" / "forms" / form
        assert (base / "form.json").is_file() and (base / "submissions.json").is_file()
        assert counts[form] == len(odk_rows(folder, form)) > 0
    assert counts[KOBO_ENTITY] == len(kobo_results(folder)) > 0
    assert {p.name for p in kobo_folder(folder).iterdir()} == {"asset.json", "data.json"}


def test_odk_documents_are_shaped_like_central_odata(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, _, _ = run
    for form in FORMS:
        document = odk_document(folder, form)
        assert set(document) == {"@odata.context", "value"}
        match = ODATA_CONTEXT.match(document["@odata.context"])
        assert match and match["form"] == form
        assert document["@odata.context"].startswith("https://central.demoland.example/v1/")
        for row in document["value"]:
            assert INSTANCE_ID.match(row["__id"])
            assert INSTANCE_ID.match(row["meta"]["instanceID"])
            assert set(row["__system"]) == SYSTEM_KEYS
            system = row["__system"]
            odk_time(system["submissionDate"])
            assert isinstance(system["submitterId"], str) and system["deviceId"].startswith(
                "collect:"
            )
            assert system["reviewState"] in (None, "approved", "hasIssues", "edited")
        metadata = json.loads((folder / "odk/projects/1/forms" / form / "form.json").read_text())
        assert {
            "xmlFormId",
            "name",
            "version",
            "projectId",
            "state",
            "createdAt",
            "updatedAt",
        } <= set(metadata)
        assert metadata["xmlFormId"] == form and metadata["projectId"] == 1
        assert metadata["submissions"] == len(document["value"])


def test_odk_groups_are_nested_objects(run: tuple[Path, Simulation, dict[str, int]]) -> None:
    folder, _, _ = run
    visit = odk_rows(folder, HOUSEHOLD_VISIT)[0]
    for group in ("household", "muac", "referral", "wash"):
        assert isinstance(visit[group], dict), group
    assert {"household_id", "head_name", "head_phone", "members"} <= set(visit["household"])
    signal = odk_rows(folder, CEBS_SIGNAL)[0]
    assert isinstance(signal["verification"], dict) and isinstance(signal["escalation"], dict)


def test_kobo_is_shaped_like_the_v2_data_endpoint(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, _, _ = run
    asset = json.loads((kobo_folder(folder) / "asset.json").read_text())
    data = json.loads((kobo_folder(folder) / "data.json").read_text())
    assert KOBO_UID.match(asset["uid"]) and kobo_folder(folder).name == asset["uid"]
    assert asset["deployment__active"] is True and asset["asset_type"] == "survey"
    assert asset["deployment__submission_count"] == data["count"]
    assert {"count", "next", "previous", "results"} == set(data)
    assert data["next"] is None and data["previous"] is None
    assert data["count"] == len(data["results"])
    ids = [r["_id"] for r in data["results"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for result in data["results"]:
        assert set(result) >= KOBO_META_KEYS
        assert set(result) >= {"site/facility_code", "child/muac_mm", "wash/water_source"}
        assert isinstance(result["_id"], int) and KOBO_TIME.match(result["_submission_time"])
        assert result["meta/instanceID"] == f"uuid:{result['_uuid']}"
        assert result["_xform_id_string"] == asset["uid"]
        assert len(result["_geolocation"]) == 2
        form_fields = [k for k in result if not k.startswith("_") and "/" in k]
        # Kobo serialises every answer as a string.
        assert all(isinstance(result[k], str) for k in form_fields)


def test_times_fall_inside_the_window(run: tuple[Path, Simulation, dict[str, int]]) -> None:
    folder, _, _ = run
    start, end = window_bounds()
    stamps: list[datetime] = []
    days: list[str] = []
    for form in FORMS:
        for row in odk_rows(folder, form):
            system = row["__system"]
            stamps += [
                odk_time(system[k])
                for k in ("submissionDate", "updatedAt", "deletedAt")
                if system[k]
            ]
    for signal in odk_rows(folder, CEBS_SIGNAL):
        stamps.append(odk_time(signal["reported_at"]))
        for value in (signal["verification"]["verified_at"], signal["escalation"]["escalated_at"]):
            if value:
                stamps.append(odk_time(value))
    days += [v["visit_date"] for v in odk_rows(folder, HOUSEHOLD_VISIT) if v["visit_date"]]
    for followup in odk_rows(folder, REFERRAL_FOLLOWUP):
        days += [d for d in (followup["followup_date"], followup["completion_date"]) if d]
    for result in kobo_results(folder):
        stamps.append(datetime.fromisoformat(result["_submission_time"]).replace(tzinfo=UTC))
        stamps += [datetime.fromisoformat(result[k]) for k in ("start", "end")]
        days.append(result["today"])
    assert all(start <= t < end for t in stamps)
    assert all(WINDOW.start <= date.fromisoformat(d) <= WINDOW.end for d in days)


# --- consistency ---------------------------------------------------------------------------


def test_every_followup_refers_to_an_existing_referral(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, sim, _ = run
    planted = {d["record"]["instance_id"] for d in defects(sim, "odk", HOUSEHOLD_VISIT)}
    visits = [v for v in odk_rows(folder, HOUSEHOLD_VISIT) if not v["__system"]["deletedAt"]]
    referred = {
        v["referral"]["referral_id"]: v for v in visits if v["referral"]["referred"] == "yes"
    }
    assert all(referred), "a referral made without a referral id"
    followups = odk_rows(folder, REFERRAL_FOLLOWUP)
    assert followups and {f["referral_id"] for f in followups} <= set(referred)
    assert len({f["referral_id"] for f in followups}) == len(followups)
    completed = Counter(f["completed"] for f in followups)
    assert completed["yes"] and completed["no"], "some referrals are completed, some not"
    assert len(followups) < len(referred), "not every referral is followed up yet"
    for followup in followups:
        visit = referred[followup["referral_id"]]
        if visit["__id"] in planted:
            continue  # its facility code or visit date was spoiled on purpose
        assert followup["facility_code"] == visit["facility_code"]
        assert visit["visit_date"] < followup["followup_date"]
        if followup["completed"] == "yes":
            assert visit["visit_date"] <= followup["completion_date"] <= followup["followup_date"]
        else:
            assert followup["completion_date"] is None and followup["reason_not_completed"]


def test_muac_classes_and_referrals_follow_the_thresholds(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, sim, _ = run
    planted = {d["record"]["instance_id"] for d in defects(sim, "odk", HOUSEHOLD_VISIT)}
    classes: Counter[str] = Counter()
    for visit in odk_rows(folder, HOUSEHOLD_VISIT):
        muac, group = muac_of(visit), visit["muac"]
        assert 0 <= group["screened"] <= group["eligible"] <= visit["household"]["children_under5"]
        if muac is None or visit["__id"] in planted:
            continue
        expected = "sam" if muac < 115 else "mam" if muac < 125 else "normal"
        assert group["class"] == expected
        classes[expected] += 1
        if visit["referral"]["referred"] == "yes" and not visit["danger_signs"]:
            assert visit["referral"]["reason"] == expected != "normal"
    assert classes["normal"] > classes["mam"] > 0


def test_facility_codes_exist_except_recorded_defects(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, sim, _ = run
    known = {f.code for f in sim.country.facilities}
    unknown = {
        (d["source"], d["record"]["instance_id"])
        for d in sim.truth.defects
        if d["expected_rule"] == "org_unit_known"
    }
    found = set()
    for form in FORMS:
        for row in odk_rows(folder, form):
            if row["facility_code"] not in known:
                found.add(("odk", row["__id"]))
    for result in kobo_results(folder):
        if result["site/facility_code"] not in known:
            found.add(("kobo", result["meta/instanceID"]))
    assert found == unknown
    assert {source for source, _ in found} == {"odk", "kobo"}


def test_cebs_signals_are_verified_then_escalated(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, _, _ = run
    signals = odk_rows(folder, CEBS_SIGNAL)
    assert signals
    for signal in signals:
        verification, escalation = signal["verification"], signal["escalation"]
        reported = odk_time(signal["reported_at"])
        if verification["verified"] == "yes":
            assert odk_time(verification["verified_at"]) > reported
            assert signal["__system"]["edits"] >= 1
        else:
            assert verification["verified_at"] is None and verification["is_event"] is None
        if escalation["escalated"] == "yes":
            assert verification["is_event"] == "yes"
            assert odk_time(escalation["escalated_at"]) > odk_time(verification["verified_at"])


def test_most_signals_are_verified_within_a_day() -> None:
    rng = np.random.default_rng(1)
    delays = np.array([_verification_delay_ms(rng) for _ in range(5000)]) / 3_600_000
    within_day = float((delays <= 24).mean())
    assert 0.7 < within_day < 0.9 and float((delays > 72).mean()) > 0.01


def test_deleted_and_edited_submissions_are_present(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, _, _ = run
    visits = odk_rows(folder, HOUSEHOLD_VISIT)
    deleted = [v for v in visits if v["__system"]["deletedAt"]]
    edited = [v for v in visits if v["__system"]["edits"] > 0]
    assert deleted and edited
    for row in deleted:
        assert row["__system"]["deletedAt"] > row["__system"]["submissionDate"]
    for row in edited:
        system = row["__system"]
        assert system["updatedAt"] > system["submissionDate"] and system["reviewState"] == "edited"
        assert row["meta"]["instanceID"] != row["__id"] and INSTANCE_ID.match(
            row["meta"]["deprecatedID"]
        )


# --- defects -------------------------------------------------------------------------------


def test_schema_drift_is_present_and_recorded(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    folder, sim, _ = run
    visits = odk_rows(folder, HOUSEHOLD_VISIT)
    by_version: dict[str, set[str]] = {}
    for visit in visits:
        by_version.setdefault(visit["__system"]["formVersion"], set()).update(visit["muac"])
    old, new = sorted(by_version)
    assert "muac" in by_version[old] and "muac_mm" not in by_version[old]
    assert "muac_mm" in by_version[new] and "muac" not in by_version[new]
    form = json.loads((folder / "odk/projects/1/forms/household_visit/form.json").read_text())
    assert form["version"] == new
    (odk_drift,) = [d for d in defects(sim, "odk") if d["kind"] == "schema_drift"]
    assert odk_drift["expected_rule"] == "schema_drift" and new in odk_drift["detail"]
    # Rows are oldest first: the record is the first visible row of the new version.
    first_new = next(
        v for v in visits if v["__system"]["formVersion"] == new and not v["__system"]["deletedAt"]
    )
    assert odk_drift["record"]["instance_id"] == first_new["__id"]

    results = kobo_results(folder)
    versions = {r["__version__"]: "child/oedema" in r for r in results}
    assert sorted(versions.values()) == [False, True]
    (kobo_drift,) = [d for d in defects(sim, "kobo") if d["kind"] == "schema_drift"]
    assert kobo_drift["entity"] == KOBO_ENTITY and "child/oedema" in kobo_drift["detail"]
    drifted = next(
        r for r in results if r["meta/instanceID"] == kobo_drift["record"]["instance_id"]
    )
    assert "child/oedema" in drifted


def test_planted_defects_are_in_the_data(run: tuple[Path, Simulation, dict[str, int]]) -> None:
    folder, sim, _ = run
    for source in ("odk", "kobo"):
        kinds = {(d["kind"], d["expected_rule"]) for d in defects(sim, source)}
        assert kinds == {
            ("unknown_code", "org_unit_known"),
            ("missing_field", "required_field_present"),
            ("invalid_value", "value_in_range"),
            ("duplicate", "duplicate"),
            ("schema_drift", "schema_drift"),
        }, source
    visits = {v["__id"]: v for v in odk_rows(folder, HOUSEHOLD_VISIT)}
    copies = Counter(v["__id"] for v in odk_rows(folder, HOUSEHOLD_VISIT))
    results = kobo_results(folder)
    kobo_by_instance = Counter(r["meta/instanceID"] for r in results)
    for defect in sim.truth.defects:
        instance = defect["record"]["instance_id"]
        if defect["source"] == "odk" and defect["entity"] == HOUSEHOLD_VISIT:
            row = visits[instance]
            assert row["__system"]["deletedAt"] is None, "a hidden row hides its defect"
            if defect["kind"] == "missing_field":
                assert row["visit_date"] is None and "visit_date" in defect["detail"]
            if defect["kind"] == "invalid_value":
                assert muac_of(row) == 900
            assert (copies[instance] == 2) == (defect["kind"] == "duplicate")
        if defect["source"] == "kobo":
            (row, *_) = [r for r in results if r["meta/instanceID"] == instance]
            if defect["kind"] == "missing_field":
                assert "child/age_months" not in row
            if defect["kind"] == "invalid_value":
                assert row["child/muac_mm"] == "900"
            assert (kobo_by_instance[instance] == 2) == (defect["kind"] == "duplicate")
    assert sum(n == 2 for n in copies.values()) == 1
    assert sum(n == 2 for n in kobo_by_instance.values()) == 1


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(
    tmp_path: Path, run: tuple[Path, Simulation, dict[str, int]]
) -> None:
    folder, sim, _ = run
    again, counts = generate(tmp_path / "again")
    assert files_of(folder) == files_of(tmp_path / "again")
    assert again.truth.to_json() == sim.truth.to_json()
    generate(tmp_path / "other", seed=8)
    other = files_of(tmp_path / "other")
    household = "odk/projects/1/forms/household_visit/submissions.json"
    assert other[household] != files_of(folder)[household]
    assert counts == run[2]


def test_the_increment_holds_what_truth_says_dated_after_the_window(
    run: tuple[Path, Simulation, dict[str, int]],
) -> None:
    """ODK: new submissions, edits as Central records them (same __id, new instanceID,
    the old one deprecated) and deletions; Kobo: new results with larger ids. Every change
    is dated after the window but the one stamped at the base data's latest instant."""
    folder, sim, _ = run
    notes = sim.truth.notes["community_increment"]
    increment = folder / notes["folder"]
    _, window_end = window_bounds()
    flagged = {str(d["record"]["instance_id"]) for d in sim.truth.defects}
    assert sum(t["counts"]["new"] for t in notes["odk"].values()) > 0
    assert sum(t["counts"]["edited"] for t in notes["odk"].values()) > 0
    assert sum(t["counts"]["deleted"] for t in notes["odk"].values()) > 0
    for form, changes in notes["odk"].items():
        base = {r["__id"]: r for r in odk_rows(folder, form)}
        rows = {r["__id"]: r for r in odk_rows(increment, form)}
        edited = {e["id"]: e["instance_id"] for e in changes["edited"]}
        assert set(rows) == set(changes["new"]) | set(edited) | set(changes["deleted"])
        assert not set(rows) & flagged
        assert not set(changes["new"]) & set(base)
        for submission, instance in edited.items():
            row, old = rows[submission], base[submission]
            assert row["meta"] == {
                "instanceID": instance,
                "deprecatedID": old["meta"]["instanceID"],
            }
            assert row["__system"]["edits"] == old["__system"]["edits"] + 1
            assert row["__system"]["reviewState"] == "edited"
            assert {k: v for k, v in row.items() if k not in ("meta", "__system")} != {
                k: v for k, v in old.items() if k not in ("meta", "__system")
            }
        for submission in changes["deleted"]:
            assert base[submission]["__system"]["deletedAt"] is None
            assert odk_time(rows[submission]["__system"]["deletedAt"]) > window_end
        at = changes["at_cursor"]
        latest = max(
            r["__system"]["updatedAt"] or r["__system"]["submissionDate"] for r in base.values()
        )
        for submission, row in rows.items():
            system = row["__system"]
            stamp = system["deletedAt"] or system["updatedAt"] or system["submissionDate"]
            if at is not None and submission == at["id"]:
                assert stamp == at["updated_at"] == latest
            else:
                assert odk_time(stamp) > window_end
    [(uid, kobo)] = notes["kobo"].items()
    assert uid == kobo_folder(folder).name
    base_results = kobo_results(folder)
    new = json.loads((increment / "kobo" / "assets" / uid / "data.json").read_text())["results"]
    assert [str(r["_id"]) for r in new] == kobo["new"] and new
    assert min(r["_id"] for r in new) > max(r["_id"] for r in base_results)
    assert not {r["_uuid"] for r in new} & {r["_uuid"] for r in base_results}
    assert new[0]["_submission_time"] == max(r["_submission_time"] for r in base_results)
