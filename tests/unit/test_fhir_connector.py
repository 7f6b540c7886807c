"""The FHIR connector and adapter without a warehouse: the public samples (each read or
rejected with a reason), search paging against a local server, Bulk Data polling with
Retry-After, deletions, cut-off files, and the privacy scrub done before landing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from connectors.base import Page
from connectors.errors import SourceFormatError
from connectors.fhir import (
    FhirSettings,
    entity_of,
    parse_deleted,
    parse_ndjson,
    parse_search_bundle,
    read_fhir,
    since_for,
)
from connectors.fhir_history import parse_history_deletions
from connectors.http import HttpClient, RetryPolicy, TruncatedResponse
from pipelines.config import parse_config
from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser
from pipelines.sources.fhir import TABLES, FhirAdapter, flatten, resource_types
from tests.conftest import SAMPLES

FHIR = SAMPLES / "fhir"
FAST = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05)
KEY = Pseudonymiser(b"unit-test-key-0123456789")
ADAPTER = FhirAdapter()


def sample(name: str) -> Any:
    return json.loads((FHIR / name).read_text(encoding="utf-8"))


def client_for(server: HTTPServer, path: str = "/fhir/") -> HttpClient:
    return HttpClient(server.url_for(path), source="emr", policy=FAST)


def bundle(resources: list[dict[str, Any]], total: int | None, next_url: str | None) -> str:
    document: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        document["total"] = total
    document["link"] = [{"relation": "next", "url": next_url}] if next_url else []
    document["entry"] = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    return json.dumps(document)


def observation(number: int, updated: str = "2026-01-10T08:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{number}",
        "meta": {"versionId": "1", "lastUpdated": updated},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p-1", "display": "Juma Lyimo"},
        "effectiveDateTime": "2026-01-10T01:30:00+03:00",
    }


def patient() -> dict[str, Any]:
    """A patient shaped like the simulator's (and OpenMRS's) output."""
    return {
        "resourceType": "Patient",
        "id": "c8b0a907-7172-4cff-aa71-af785d0cd596",
        "meta": {"versionId": "2", "lastUpdated": "2025-07-10T08:39:00Z", "source": "#x"},
        "text": {"status": "generated", "div": "<div>Juma Lyimo, +999780839807</div>"},
        "identifier": [
            {
                "use": "official",
                "type": {"text": "OpenMRS ID"},
                "system": "https://emr.demoland.example/openmrs/identifier-type/openmrs-id",
                "value": "100009C",
            }
        ],
        "active": True,
        "name": [{"use": "official", "family": "Lyimo", "given": ["Juma"]}],
        "telecom": [{"system": "phone", "value": "+999780839807", "use": "mobile"}],
        "gender": "male",
        "birthDate": "1970-10-03",
        "address": [{"line": ["Plot 107, Mtaa wa Mabatini"], "city": "Mabatini"}],
        "contact": [{"name": {"family": "Mushi"}, "telecom": [{"value": "+999711111111"}]}],
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": "Kimaro",
            },
        ],
        "link": [{"other": {"reference": "Patient/older-record", "display": "Juma L."}}],
    }


def capability(history: list[str]) -> dict[str, Any]:
    """A CapabilityStatement offering search on Observation, and history-type on ``history``."""
    interactions = [{"code": "search-type"}] + [{"code": "history-type"}] * (
        "Observation" in history
    )
    return {
        "resourceType": "CapabilityStatement",
        "rest": [
            {"mode": "server", "resource": [{"type": "Observation", "interaction": interactions}]}
        ],
    }


# --- the public samples --------------------------------------------------------------------


def test_the_searchset_sample_is_read_with_its_next_link_and_total() -> None:
    page = parse_search_bundle(sample("bundle-example.json"), "MedicationRequest", "sample")
    # The included Medication is not a match: it neither lands nor counts towards total.
    assert [r["id"] for r in page.resources] == ["3123"]
    assert page.total == 3
    assert page.next_url == (
        "https://example.com/base/MedicationRequest?patient=347"
        "&searchId=ff15fd40-ff71-4b48-b366-09c706bed9d0&page=2"
    )


def test_a_search_answering_another_type_is_rejected_naming_the_entry() -> None:
    with pytest.raises(SourceFormatError, match=r"entry\[0\].*expected a Observation, got a Med"):
        parse_search_bundle(sample("bundle-example.json"), "Observation", "sample")


def test_medication_request_is_refused_before_any_request() -> None:
    source = parse_config(
        {
            "sources": [
                {
                    "name": "emr",
                    "type": "fhir",
                    "base_url": "http://emr.invalid/fhir",
                    "resource_types": ["Observation", "MedicationRequest"],
                }
            ]
        },
        origin="test",
        base_dir=FHIR,
        env={},
    ).source("emr")
    with pytest.raises(ConfigError, match="MedicationRequest cannot be landed"):
        resource_types(source)


def test_the_single_observation_sample_is_not_a_search_result() -> None:
    document = sample("observation-example-f001-glucose.json")
    with pytest.raises(SourceFormatError, match="expected a Bundle of type searchset, got Obs"):
        parse_search_bundle(document, "Observation", "sample")


def test_the_single_observation_sample_reads_as_an_ndjson_line_and_is_scrubbed() -> None:
    line = json.dumps(sample("observation-example-f001-glucose.json"))
    [resource] = parse_ndjson(line + "\n", "Observation", "sample")
    [row] = ADAPTER.prepare("observation", [resource], KEY)
    assert row["code_system"] == "http://loinc.org" and row["code"] == "15074-8"
    assert row["value_quantity"] == "6.3" and row["value_unit"] == "mmol/L"
    assert row["interpretation_code"] == "H"
    assert row["effective_at"] == "2013-04-02T08:30:10Z"  # +01:00 in the sample
    assert row["effective_date"] == "2013-04-02"
    assert row["subject_reference"] == f"Patient/{KEY.pseudonym('patient', 'f001')}"
    # The reference displays are people's names.
    assert "van de Heuvel" not in row["resource_json"]
    assert "Langeveld" not in row["resource_json"]
    assert "Patient/f001" not in row["resource_json"]
    # No meta.versionId or lastUpdated: the record has no version, so landing quarantines
    # it (natural_key_present) rather than guessing.
    assert row["version_id"] is None


def test_the_transaction_bundle_sample_is_rejected_as_not_a_search() -> None:
    document = sample("synthea_derived_transaction_bundle_urn_ref.json")
    with pytest.raises(SourceFormatError, match="got a transaction Bundle"):
        parse_search_bundle(document, "Patient", "sample")


def test_the_synthea_patient_and_its_urn_references_are_pseudonymised() -> None:
    document = sample("synthea_derived_transaction_bundle_urn_ref.json")
    patient_resource, observation_resource = (e["resource"] for e in document["entry"])
    [patient_row] = ADAPTER.prepare("patient", [patient_resource], KEY)
    [observation_row] = ADAPTER.prepare("observation", [observation_resource], KEY)
    landed = json.dumps([patient_row, observation_row])
    raw_id = "437a1b3e-1b17-ae3c-24f8-6079abe1ddc4"
    for personal in (raw_id, "Swift555", "Abdul218", "555-792-8239", "Labadie", "Rockport",
                     "01966", "1991-10-16"):  # fmt: skip
        assert personal not in landed, personal
    assert patient_row["resource_id"] == KEY.pseudonym("patient", raw_id)
    assert patient_row["birth_year"] == "1991"
    assert observation_row["subject_reference"] == f"urn:uuid:{KEY.pseudonym('patient', raw_id)}"
    # The code is not a LOINC code: the suite will quarantine it (loinc_known).
    assert observation_row["code"] == "5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


# --- privacy -------------------------------------------------------------------------------


def test_prepare_leaves_no_name_phone_address_birth_date_or_raw_id() -> None:
    [row] = ADAPTER.prepare("patient", [patient()], KEY)
    landed = json.dumps(row)
    for personal in ("Lyimo", "Juma", "+999780839807", "Plot 107", "Mabatini", "1970-10-03",
                     "c8b0a907-7172-4cff-aa71-af785d0cd596", "100009C", "Mushi",
                     "+999711111111", "Kimaro", "older-record"):  # fmt: skip
        assert personal not in landed, personal
    resource = json.loads(row["resource_json"])
    assert resource["birthDate"] == "1970"
    assert resource["gender"] == "male"
    assert resource["identifier"][0]["system"].endswith("openmrs-id")
    assert row["resource_id"] == KEY.pseudonym("patient", "c8b0a907-7172-4cff-aa71-af785d0cd596")
    assert row["identifier_value"] == KEY.pseudonym("patient", "100009C")
    assert row["birth_year"] == "1970" and row["age_band"] == "55-59"
    assert {"name", "telecom", "address", "contact", "extension", "text"}.isdisjoint(resource)


def test_records_of_one_patient_still_link_after_pseudonymisation() -> None:
    [patient_row] = ADAPTER.prepare("patient", [{**patient(), "id": "p-1"}], KEY)
    [observation_row] = ADAPTER.prepare("observation", [observation(1)], KEY)
    assert observation_row["subject_reference"] == f"Patient/{patient_row['resource_id']}"
    assert "Juma" not in observation_row["resource_json"]


def test_references_by_display_or_identifier_and_contained_patients_are_scrubbed() -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "enc-1",
        "meta": {"versionId": "1", "lastUpdated": "2026-01-10T08:00:00Z"},
        "status": "finished",
        "subject": {"display": "Juma Lyimo"},
        "participant": [{"individual": {"reference": "Practitioner/pr-1", "display": "Dr Otieno"}}],
        "contained": [{**patient(), "id": "p1"}],
        "account": [{"type": "Patient", "identifier": {"value": "100009C"}}],
    }
    [row] = ADAPTER.prepare("encounter", [encounter], KEY)
    landed = row["resource_json"]
    for personal in ("Juma", "Lyimo", "Otieno", "100009C", "+999780839807", "1970-10-03"):
        assert personal not in landed, personal
    resource = json.loads(landed)
    assert resource["contained"][0]["id"] == "p1"  # local to the container: no one's id
    assert resource["participant"][0]["individual"] == {"reference": "Practitioner/pr-1"}
    assert row["subject_reference"] is None  # the suite's subject_present holds it back


def test_birth_years_are_top_coded_at_ninety() -> None:
    old = {**patient(), "birthDate": "1921-05-01"}
    [row] = ADAPTER.prepare("patient", [old], KEY)
    assert row["birth_year"] == "1935" and row["age_band"] == "85+"


def test_practitioners_keep_role_data_but_no_name_contact_or_birth_date() -> None:
    practitioner = {
        "resourceType": "Practitioner",
        "id": "pr-1",
        "meta": {"versionId": "1", "lastUpdated": "2025-07-10T08:39:00Z"},
        "identifier": [{"system": "https://ihris.example/staff", "value": "HRH-000001"}],
        "active": True,
        "name": [{"family": "Otieno", "given": ["Grace"]}],
        "telecom": [{"system": "phone", "value": "+999722222222"}],
        "gender": "female",
        "birthDate": "1990-02-03",
        "qualification": [{"code": {"coding": [{"system": "urn:isco", "code": "2221"}]}}],
    }
    [row] = ADAPTER.prepare("practitioner", [practitioner], KEY)
    landed = json.dumps(row)
    for personal in ("Otieno", "Grace", "+999722222222", "1990-02-03", "HRH-000001"):
        assert personal not in landed
    assert row["identifier_value"] == KEY.pseudonym("practitioner", "HRH-000001")
    assert row["resource_id"] == "pr-1" and row["gender"] == "female"
    assert row["birth_year"] == "1990" and row["qualification_codes"] == '["urn:isco|2221"]'


def test_prepare_refuses_to_run_without_a_pseudonymiser() -> None:
    with pytest.raises(Exception, match="pseudonymisation key"):
        ADAPTER.prepare("patient", [patient()], None)


def test_every_raw_table_keys_on_resource_id_and_version() -> None:
    assert {t.name for t in TABLES} == {
        "fhir__patient", "fhir__encounter", "fhir__observation", "fhir__condition",
        "fhir__medication_dispense", "fhir__location", "fhir__organization",
        "fhir__practitioner", "fhir__practitioner_role",
    }  # fmt: skip
    for table in TABLES:
        assert table.key == ("resource_id", "version_id")
        assert "resource_json" in table.entity_columns
        assert all(sql_type == "text" for _, sql_type in table.columns)


# --- search paging -------------------------------------------------------------------------


def settings(**extra: Any) -> FhirSettings:
    return FhirSettings(source_name="emr", resource_types=["Observation"], **extra)


def pull(client: HttpClient, config: FhirSettings, cursor: Any = None) -> list[Page]:
    return list(read_fhir(client, config, cursor))


def test_search_follows_opaque_next_links_as_given_and_moves_the_cursor_last(
    httpserver: HTTPServer,
) -> None:
    base = httpserver.url_for("/fhir")
    page2 = f"{base}?_getpages=a1b2&_getpagesoffset=2&_count=2&_bundletype=searchset"
    page3 = f"{base}?_getpages=a1b2&_getpagesoffset=4&_count=2&_bundletype=searchset"
    # An incremental pull reads the CapabilityStatement: no history-type, no _history asked.
    httpserver.expect_ordered_request("/fhir/metadata").respond_with_json(capability([]))
    httpserver.expect_ordered_request(
        "/fhir/Observation", query_string={"_count": "2", "_lastUpdated": "ge2026-01-01T23:55:00Z"}
    ).respond_with_data(bundle([observation(1), observation(2)], 5, page2))
    httpserver.expect_ordered_request(
        "/fhir", query_string="_getpages=a1b2&_getpagesoffset=2&_count=2&_bundletype=searchset"
    ).respond_with_data(bundle([observation(3), observation(4, "2026-01-20T09:00:00Z")], 5, page3))
    httpserver.expect_ordered_request(
        "/fhir", query_string="_getpages=a1b2&_getpagesoffset=4&_count=2&_bundletype=searchset"
    ).respond_with_data(bundle([observation(5, "2026-01-12T00:00:00Z")], 5, None))
    cursor = {"lastUpdated": {"Observation": "2026-01-02T00:00:00Z"}}
    pages = pull(client_for(httpserver), settings(page_size=2), cursor)
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert {p.entity for p in pages} == {"observation"}
    assert [p.cursor for p in pages[:2]] == [cursor, cursor]
    assert pages[-1].cursor == {"lastUpdated": {"Observation": "2026-01-20T09:00:00Z"}}


def test_a_search_that_sends_fewer_than_its_total_fails_before_the_cursor_moves(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/fhir/Observation").respond_with_data(
        bundle([observation(1), observation(2)], 3, None)
    )
    pages: list[Page] = []
    with pytest.raises(TruncatedResponse, match="reported 3 matches but sent 2"):
        for page in read_fhir(client_for(httpserver), settings(), None):
            pages.append(page)
    assert pages == []


def test_first_pull_asks_for_the_configured_start_and_the_default_page_limit(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request(
        "/fhir/Observation", query_string={"_count": "100", "_lastUpdated": "ge2025-01-01"}
    ).respond_with_data(bundle([], 0, None))
    pages = pull(client_for(httpserver), settings(start=date(2025, 1, 1)))
    assert [len(p.records) for p in pages] == [0]
    assert since_for(None, settings()) is None


def test_resource_types_come_from_the_capability_statement_when_not_configured(
    httpserver: HTTPServer,
) -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "rest": [{"resource": [{"type": "Observation"}, {"type": "Binary"}, {"type": "Patient"}]}],
    }
    httpserver.expect_request("/fhir/metadata").respond_with_json(statement)
    for kind in ("Patient", "Observation"):
        httpserver.expect_request(f"/fhir/{kind}").respond_with_data(bundle([], 0, None))
    config = FhirSettings(source_name="emr", known_types=("Patient", "Encounter", "Observation"))
    assert [p.entity for p in pull(client_for(httpserver), config)] == ["patient", "observation"]


def test_a_next_link_pointing_back_is_a_format_error_not_a_loop(httpserver: HTTPServer) -> None:
    loop = httpserver.url_for("/fhir/page")
    httpserver.expect_request("/fhir/Observation").respond_with_data(
        bundle([observation(1)], None, loop)
    )
    httpserver.expect_request("/fhir/page").respond_with_data(bundle([observation(2)], None, loop))
    with pytest.raises(SourceFormatError, match="repeats an earlier page"):
        pull(client_for(httpserver), settings())


# --- Bulk Data -----------------------------------------------------------------------------


def sequence(*responses: Response) -> Callable[[Request], Response]:
    remaining = list(responses)

    def handler(_: Request) -> Response:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return handler


def ndjson(*resources: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in resources)


def export_server(
    server: HTTPServer, *, output: str, deleted: str | None = None, polls: int = 1
) -> None:
    status = server.url_for("/fhir/status/1")
    server.expect_request(
        "/fhir/$export",
        headers={"Prefer": "respond-async", "Accept": "application/fhir+json"},
        query_string={"_type": "Observation", "_outputFormat": "application/fhir+ndjson"},
    ).respond_with_response(Response(status=202, headers={"Content-Location": status}))
    manifest = {
        "transactionTime": "2026-02-01T00:00:00Z",
        "request": server.url_for("/fhir/$export"),
        "requiresAccessToken": True,
        "output": [{"type": "Observation", "url": server.url_for("/fhir/files/obs.ndjson")}],
        "deleted": (
            [{"type": "Bundle", "url": server.url_for("/fhir/files/del.ndjson")}]
            if deleted is not None
            else []
        ),
        "error": [],
    }
    waiting = Response(
        status=202, headers={"Retry-After": "1", "X-Progress": "exporting Observation"}
    )
    server.expect_request("/fhir/status/1", method="GET").respond_with_handler(
        sequence(*[waiting] * polls, Response(json.dumps(manifest), status=200))
    )
    server.expect_request("/fhir/status/1", method="DELETE").respond_with_data("", status=202)
    server.expect_request("/fhir/files/obs.ndjson").respond_with_data(output)
    if deleted is not None:
        server.expect_request("/fhir/files/del.ndjson").respond_with_data(deleted)


def test_bulk_export_polls_as_retry_after_asks_and_lands_every_line(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    export_server(httpserver, output=ndjson(*(observation(n) for n in range(5))), polls=2)
    caplog.set_level(logging.INFO, logger="connectors.fhir")
    started = time.monotonic()
    pages = pull(client_for(httpserver), settings(bulk=True, bulk_page_size=2))
    waited = time.monotonic() - started
    assert 2.0 <= waited < 6.0, waited  # two polls answered 202 with Retry-After: 1
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert pages[0].cursor == {"lastUpdated": {}}
    assert pages[-1].cursor == {"lastUpdated": {"Observation": "2026-02-01T00:00:00Z"}}
    assert "exporting Observation" in caplog.text  # X-Progress shown while waiting
    methods = [request.method for request, _ in httpserver.log]
    assert methods[-1] == "DELETE"  # the server may drop the files once they are read


def test_bulk_since_starts_from_the_cursor_minus_the_overlap(httpserver: HTTPServer) -> None:
    status = httpserver.url_for("/fhir/status/2")
    httpserver.expect_request(
        "/fhir/$export", query_string={"_type": "Observation",
        "_outputFormat": "application/fhir+ndjson", "_since": "2026-01-31T23:55:00Z"},
    ).respond_with_response(Response(status=202, headers={"Content-Location": status}))  # fmt: skip
    manifest = {"transactionTime": "2026-02-02T00:00:00Z", "output": [], "error": []}
    httpserver.expect_request("/fhir/status/2", method="GET").respond_with_json(manifest)
    httpserver.expect_request("/fhir/status/2", method="DELETE").respond_with_data("")
    cursor = {"lastUpdated": {"Observation": "2026-02-01T00:00:00Z"}}
    pages = pull(client_for(httpserver), settings(bulk=True), cursor)
    # Nothing changed, but the type's cursor still moves to the new transaction time.
    assert [(len(p.records), p.cursor) for p in pages] == [
        (0, {"lastUpdated": {"Observation": "2026-02-02T00:00:00Z"}})
    ]


def test_bulk_deleted_entries_become_tombstones(httpserver: HTTPServer) -> None:
    deletions = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": "Observation/obs-9"}},
            {"request": {"method": "DELETE", "url": "Observation/obs-8/_history/3"}},
        ],
    }
    export_server(httpserver, output=ndjson(observation(1)), deleted=ndjson(deletions), polls=0)
    pages = pull(client_for(httpserver), settings(bulk=True, poll_interval=0.0))
    records = [r for p in pages for r in p.records]
    tombstones = [r for r in records if r.get("deleted")]
    assert [(r["id"], r["meta"]["versionId"]) for r in tombstones] == [
        ("obs-9", None),
        ("obs-8", "3"),
    ]
    rows = ADAPTER.prepare("observation", tombstones, KEY)
    assert [(r["resource_id"], r["version_id"], r["deleted"]) for r in rows] == [
        ("obs-9", "deleted", True),
        ("obs-8", "3", True),
    ]
    assert rows[0]["last_updated"] == "2026-02-01T00:00:00Z"


def test_a_cut_off_last_ndjson_line_fails_the_pull(httpserver: HTTPServer) -> None:
    cut = ndjson(observation(1)) + json.dumps(observation(2))[:40]
    export_server(httpserver, output=cut, polls=0)
    pages: list[Page] = []
    with pytest.raises(TruncatedResponse, match="line 2 is cut off"):
        for page in read_fhir(client_for(httpserver), settings(bulk=True), None):
            pages.append(page)
    assert pages == []


def test_ndjson_lines_must_be_the_announced_type_and_deletions_must_be_deletes() -> None:
    with pytest.raises(SourceFormatError, match="line 1: expected a Observation, got Patient"):
        parse_ndjson(ndjson(patient()), "Observation", "file")
    put = {"resourceType": "Bundle", "entry": [{"request": {"method": "PUT", "url": "X/1"}}]}
    with pytest.raises(SourceFormatError, match="expected method DELETE"):
        parse_deleted(ndjson(put), "file", "2026-02-01T00:00:00Z")


def test_a_kick_off_without_content_location_is_a_clear_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/fhir/$export").respond_with_data("{}", status=200)
    with pytest.raises(SourceFormatError, match="must answer 202 with Content-Location, got 200"):
        pull(client_for(httpserver), settings(bulk=True))


# --- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "entity"),
    [("Patient", "patient"), ("MedicationDispense", "medication_dispense"),
     ("PractitionerRole", "practitioner_role")],
)  # fmt: skip
def test_entities_are_snake_case_types(resource_type: str, entity: str) -> None:
    assert entity_of(resource_type) == entity


def test_overlap_is_subtracted_in_utc() -> None:
    config = settings(overlap=timedelta(minutes=10))
    assert since_for("2026-01-02T00:05:00+03:00", config) == "2026-01-01T20:55:00Z"


def test_a_server_without_versions_keys_on_last_updated() -> None:
    row = flatten({**observation(1), "meta": {"lastUpdated": "2026-01-10T08:00:00+00:00"}})
    assert row["version_id"] == "2026-01-10T08:00:00Z"


def test_an_incremental_search_learns_deletions_from_the_type_history(
    httpserver: HTTPServer,
) -> None:
    """A search never lists deleted resources: with history-type offered, the pull asks
    ``_history`` since the same instant and lands its DELETE entries as tombstones (other
    history entries are versions the search brought already); the cursor takes the
    deletion's moment."""
    since = "2026-01-01T23:55:00Z"
    httpserver.expect_ordered_request("/fhir/metadata").respond_with_json(
        capability(["Observation"])
    )
    httpserver.expect_ordered_request(
        "/fhir/Observation", query_string={"_count": "100", "_lastUpdated": f"ge{since}"}
    ).respond_with_data(bundle([observation(1)], 1, None))
    history = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {
                "request": {"method": "DELETE", "url": "Observation/obs-7"},
                "response": {"status": "410 Gone", "lastModified": "2026-01-15T10:00:00Z"},
            },
            {
                "resource": observation(1),
                "request": {"method": "PUT", "url": "Observation/obs-1"},
                "response": {"status": "200 OK", "lastModified": "2026-01-10T08:00:00Z"},
            },
        ],
    }
    httpserver.expect_ordered_request(
        "/fhir/Observation/_history", query_string={"_since": since, "_count": "100"}
    ).respond_with_json(history)
    cursor = {"lastUpdated": {"Observation": "2026-01-02T00:00:00Z"}}
    pages = pull(client_for(httpserver), settings(), cursor)
    httpserver.check_assertions()
    records = [r for p in pages for r in p.records]
    assert [(r["id"], bool(r.get("deleted"))) for r in records] == [
        ("obs-1", False),
        ("obs-7", True),
    ]
    assert records[1]["meta"]["lastUpdated"] == "2026-01-15T10:00:00Z"
    assert pages[-1].cursor == {"lastUpdated": {"Observation": "2026-01-15T10:00:00Z"}}
    assert flatten(records[1])["version_id"] == "deleted"


def test_a_history_deletion_without_its_moment_is_refused() -> None:
    document = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"request": {"method": "DELETE", "url": "Observation/obs-7"}}],
    }
    with pytest.raises(SourceFormatError, match=r"response\.lastModified"):
        parse_history_deletions(document, "Observation", "emr: Observation/_history")
