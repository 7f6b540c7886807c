"""``healthpipe sandbox``: the simulated country over the real source APIs.

A small country is simulated once; a sandbox on port 0 serves it. Every API is paged through
with ``requests`` and compared with the files (the sandbox serves what the files hold and
nothing else), then filters, auth failures, DHIS2's 409s and the Bulk Data flow are checked.
Fault injection and the MLLP sender are tested in ``test_sandbox_faults.py``.
"""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from pipelines.periods import is_period, parse_period
from pipelines.sandbox import Credentials, FhirSettings, OdkSettings, SandboxSettings, start_sandbox
from pipelines.sandbox.server import Sandbox
from pipelines.simulate import build_country, simulate
from pipelines.simulate.dhis2_payloads import iter_data_values

TIMEOUT = 10
DHIS2_AUTH = ("admin", "district")
ODK_AUTH = (Credentials().odk_email, Credentials().odk_password)
# Generators that write each source folder; used when ``simulate`` does not run them itself.
EXTRA_WRITERS = {
    "fhir": ("pipelines.simulate.fhir", "write_fhir"),
    "odk": ("pipelines.simulate.community", "write_community"),
    "hl7": ("pipelines.simulate.hl7", "write_hl7"),
}


def simulate_small_country(out: Path) -> Path:
    """Two districts, 30 weeks: every source, small enough for fast tests."""
    country = build_country(7, districts=2, regions=1, facilities_per_district=(3, 4))
    result = simulate(out, country=country, weeks=30)
    for folder, (module, function) in EXTRA_WRITERS.items():
        if not (out / folder).is_dir():
            writer = getattr(importlib.import_module(module), function)
            writer(result.simulation, out)
    return out


def fhir_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def odk_rows(country: Path, form: str) -> list[dict[str, Any]]:
    path = country / "odk" / "projects" / "1" / "forms" / form / "submissions.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["value"]
    return rows


def kobo_results(country: Path, uid: str) -> list[dict[str, Any]]:
    path = country / "kobo" / "assets" / uid / "data.json"
    results: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["results"]
    return results


@pytest.fixture(scope="module")
def country(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_small_country(tmp_path_factory.mktemp("sandbox-country"))


@pytest.fixture(scope="module")
def sandbox(country: Path) -> Iterator[Sandbox]:
    settings = SandboxSettings(
        fhir=FhirSettings(bulk_polls=2, bulk_retry_after=0), odk=OdkSettings(page_size=600)
    )
    with start_sandbox(country, settings=settings) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def canonical(items: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True) for item in items)


# --- DHIS2 ---------------------------------------------------------------------------------


def dhis2_metadata(country: Path, collection: str) -> list[dict[str, Any]]:
    path = country / "dhis2" / "metadata" / f"{collection}.json"
    items: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))[collection]
    return items


def root_org_unit(country: Path) -> str:
    units = dhis2_metadata(country, "organisationUnits")
    return str(next(u["id"] for u in units if u["level"] == 1))


def placeable(country: Path, values: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The values a DHIS2 server can hold: a known org unit and a real period (the others
    are planted file defects the sandbox never serves)."""
    units = {u["id"] for u in dhis2_metadata(country, "organisationUnits")}
    return [v for v in values if v.get("orgUnit") in units and is_period(v.get("period") or "")]


def data_set_ids(country: Path) -> list[str]:
    return [ds["id"] for ds in dhis2_metadata(country, "dataSets")]


def test_dhis2_auth(sandbox: Sandbox, http: requests.Session) -> None:
    url = f"{sandbox.dhis2_url}/api/organisationUnits"
    for auth in (None, ("admin", "wrong"), ("nobody", "district")):
        response = http.get(url, auth=auth, timeout=TIMEOUT)
        assert response.status_code == 401
        body = response.json()
        assert body["httpStatusCode"] == 401 and body["status"] == "ERROR"
        assert set(body) >= {"httpStatus", "httpStatusCode", "status", "message"}
    token = sandbox.credentials.dhis2_api_token
    assert token.startswith("d2pat_")
    ok = http.get(url, headers={"Authorization": f"ApiToken {token}"}, timeout=TIMEOUT)
    assert ok.status_code == 200
    bad = http.get(url, headers={"Authorization": "ApiToken d2pat_nope"}, timeout=TIMEOUT)
    assert bad.status_code == 401
    assert http.get(url, auth=DHIS2_AUTH, timeout=TIMEOUT).status_code == 200


def test_dhis2_metadata_paging_matches_files(
    sandbox: Sandbox, http: requests.Session, country: Path
) -> None:
    expected = dhis2_metadata(country, "organisationUnits")
    url: str | None = f"{sandbox.dhis2_url}/api/organisationUnits?pageSize=4"
    served: list[dict[str, Any]] = []
    pages = 0
    while url:
        response = http.get(url, auth=DHIS2_AUTH, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        body = response.json()
        pages += 1
        assert body["pager"]["total"] == len(expected)
        assert body["pager"]["pageCount"] == -(-len(expected) // 4)
        assert body["pager"]["page"] == pages
        served += body["organisationUnits"]
        url = body["pager"].get("nextPage")
    assert pages >= 3
    assert served == expected
    # Every collection the simulator writes, unpaged, equals its file.
    for path in sorted((country / "dhis2" / "metadata").glob("*.json")):
        response = http.get(
            f"{sandbox.dhis2_url}/api/{path.stem}", params={"paging": "false"}, auth=DHIS2_AUTH
        )
        assert response.json() == {path.stem: dhis2_metadata(country, path.stem)}


def test_dhis2_metadata_fields_filter_and_object(
    sandbox: Sandbox, http: requests.Session, country: Path
) -> None:
    units = dhis2_metadata(country, "organisationUnits")
    facilities = [u for u in units if u["level"] == 4]
    response = http.get(
        f"{sandbox.dhis2_url}/api/organisationUnits.json",
        params={"fields": "id,name,parent[id]", "filter": "level:eq:4", "paging": "false"},
        auth=DHIS2_AUTH,
    )
    assert response.json()["organisationUnits"] == [
        {"id": u["id"], "name": u["name"], "parent": u["parent"]} for u in facilities
    ]
    one = facilities[0]
    detail = http.get(f"{sandbox.dhis2_url}/api/organisationUnits/{one['id']}", auth=DHIS2_AUTH)
    assert detail.json() == one
    missing = http.get(f"{sandbox.dhis2_url}/api/organisationUnits/noSuchUnit1", auth=DHIS2_AUTH)
    assert missing.status_code == 404 and missing.json()["httpStatusCode"] == 404


def data_values(sandbox: Sandbox, http: requests.Session, params: dict[str, Any]) -> list[Any]:
    response = http.get(
        f"{sandbox.dhis2_url}/api/dataValueSets", params=params, auth=DHIS2_AUTH, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    values: list[Any] = response.json()["dataValues"]
    return values


def test_dhis2_data_values_are_the_files(
    sandbox: Sandbox, http: requests.Session, country: Path
) -> None:
    everything = {
        "dataSet": data_set_ids(country),
        "orgUnit": root_org_unit(country),
        "children": "true",
        "lastUpdated": "2000-01-01",
    }
    served = data_values(sandbox, http, everything)
    expected = placeable(country, iter_data_values(country))
    assert len(expected) < len(list(iter_data_values(country)))  # the planted defects
    assert len(served) == len(expected) > 1000
    assert canonical(served) == canonical(expected)

    # The same export as CSV (suffix or Accept header) carries the same values.
    csv_suffix = http.get(
        f"{sandbox.dhis2_url}/api/dataValueSets.csv", params=everything, auth=DHIS2_AUTH
    )
    csv_accept = http.get(
        f"{sandbox.dhis2_url}/api/dataValueSets",
        params=everything,
        auth=DHIS2_AUTH,
        headers={"Accept": "application/csv"},
    )
    assert csv_suffix.headers["Content-Type"].startswith("application/csv")
    assert csv_suffix.text == csv_accept.text
    lines = csv_suffix.text.splitlines()
    assert lines[0] == (
        "dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,"
        "storedby,lastupdated,comment,followup,deleted"
    )
    assert len(lines) == len(expected) + 1
    expected_csv = (country / "dhis2_csv" / "dataValueSets").glob("*.csv")
    file_rows = [row for path in expected_csv for row in path.read_text().splitlines()[1:]]
    units = {u["id"] for u in dhis2_metadata(country, "organisationUnits")}
    file_rows = [r for r in file_rows if r.split(",")[2] in units and is_period(r.split(",")[1])]
    assert sorted(lines[1:]) == sorted(file_rows)


def test_dhis2_filters(sandbox: Sandbox, http: requests.Session, country: Path) -> None:
    units = {u["id"]: u for u in dhis2_metadata(country, "organisationUnits")}
    values = placeable(country, iter_data_values(country))
    root = root_org_unit(country)
    all_sets = data_set_ids(country)

    # lastUpdated: values updated at or after the cut.
    stamps = sorted({v["lastUpdated"] for v in values})
    cut = stamps[len(stamps) // 2]
    served = data_values(
        sandbox,
        http,
        {"dataSet": all_sets, "orgUnit": root, "children": "true", "lastUpdated": cut},
    )
    assert canonical(served) == canonical([v for v in values if v["lastUpdated"] >= cut])
    assert 0 < len(served) < len(values)

    # children=true: the district's subtree, by path; without children the district itself.
    district = next(u for u in units.values() if u["level"] == 3)
    in_district = [
        v
        for v in values
        if v.get("orgUnit") in units and f"/{district['id']}/" in units[v["orgUnit"]]["path"] + "/"
    ]
    params = {"dataSet": all_sets, "orgUnit": district["id"], "lastUpdated": "2000-01-01"}
    district_served = data_values(sandbox, http, {**params, "children": "true"})
    assert canonical(district_served) == canonical(in_district)
    # The server reads a district's values by org unit: still in the export's order, and the
    # same values as CSV.
    whole = data_values(sandbox, http, {**params, "orgUnit": root, "children": "true"})
    assert district_served == [
        v for v in whole if v.get("orgUnit") in {d["orgUnit"] for d in in_district}
    ]
    district_csv = http.get(
        f"{sandbox.dhis2_url}/api/dataValueSets.csv",
        params={**params, "children": "true"},
        auth=DHIS2_AUTH,
    ).text.splitlines()
    assert [row.split(",")[:3] for row in district_csv[1:]] == [
        [v["dataElement"], v["period"], v["orgUnit"]] for v in district_served
    ]
    assert data_values(sandbox, http, params) == []  # data are entered at facilities

    # period (repeatable) within one data set.
    idsr = next(ds["id"] for ds in dhis2_metadata(country, "dataSets") if "IDSR" in ds["code"])
    idsr_values = placeable(country, data_set_values(country, idsr))
    weeks = sorted({v["period"] for v in idsr_values})[:2]
    served = data_values(
        sandbox, http, {"dataSet": idsr, "orgUnit": root, "children": "true", "period": weeks}
    )
    assert canonical(served) == canonical([v for v in idsr_values if v["period"] in weeks])

    # startDate/endDate: periods lying inside the range.
    hmis = next(ds["id"] for ds in dhis2_metadata(country, "dataSets") if "HMIS" in ds["code"])
    start, end = "2025-09-01", "2025-11-30"
    served = data_values(
        sandbox,
        http,
        {"dataSet": hmis, "orgUnit": root, "children": "true", "startDate": start, "endDate": end},
    )
    expected = []
    for value in placeable(country, data_set_values(country, hmis)):
        period = parse_period(value["period"])
        if period.start_date.isoformat() >= start and period.end_date.isoformat() <= end:
            expected.append(value)
    assert expected and canonical(served) == canonical(expected)
    assert {v["period"] for v in served} == {"202509", "202510", "202511"}


def data_set_values(country: Path, data_set: str) -> list[dict[str, Any]]:
    """The values of one data set's files (a value belongs to the data set of its file)."""
    values: list[dict[str, Any]] = []
    for path in sorted((country / "dhis2" / "dataValueSets").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if document["dataSet"] == data_set:
            values += document["dataValues"]
    return values


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"period": "2025W30", "orgUnit": "ROOT"}, "E2001", "data set"),
        ({"dataSet": "SET", "orgUnit": "ROOT"}, "E2002", "period"),
        ({"dataSet": "SET", "period": "2025W30"}, "E2006", "organisation unit"),
        ({"dataSet": "SET", "orgUnit": "ROOT", "startDate": "2026-01-01", "endDate": "2025-01-01"}, "E2003", "before"),
        ({"dataSet": "noSuchSet01", "period": "2025W30", "orgUnit": "ROOT"}, "E2001", "data set"),
    ],
)  # fmt: skip
def test_dhis2_data_value_sets_409(
    sandbox: Sandbox,
    http: requests.Session,
    country: Path,
    params: dict[str, str],
    code: str,
    words: str,
) -> None:
    filled = {
        key: {"ROOT": root_org_unit(country), "SET": data_set_ids(country)[0]}.get(value, value)
        for key, value in params.items()
    }
    response = http.get(f"{sandbox.dhis2_url}/api/dataValueSets", params=filled, auth=DHIS2_AUTH)
    assert response.status_code == 409
    body = response.json()
    assert body["httpStatus"] == "Conflict" and body["httpStatusCode"] == 409
    assert body["status"] == "ERROR" and body["errorCode"] == code
    assert words in body["message"]


def test_dhis2_complete_registrations(
    sandbox: Sandbox, http: requests.Session, country: Path
) -> None:
    folder = country / "dhis2" / "completeDataSetRegistrations"
    registrations = [
        r
        for path in sorted(folder.glob("*.json"))
        for r in json.loads(path.read_text())["completeDataSetRegistrations"]
    ]
    hmis = next(ds["id"] for ds in dhis2_metadata(country, "dataSets") if "HMIS" in ds["code"])
    response = http.get(
        f"{sandbox.dhis2_url}/api/completeDataSetRegistrations",
        params={
            "dataSet": hmis,
            "orgUnit": root_org_unit(country),
            "children": "true",
            "startDate": "2025-01-01",
            "endDate": "2026-12-31",
        },
        auth=DHIS2_AUTH,
    )
    expected = [r for r in registrations if r["dataSet"] == hmis]
    assert expected and canonical(response.json()["completeDataSetRegistrations"]) == canonical(
        expected
    )
    missing = http.get(
        f"{sandbox.dhis2_url}/api/completeDataSetRegistrations",
        params={"dataSet": hmis, "period": "202510"},
        auth=DHIS2_AUTH,
    )
    assert missing.status_code == 409


def test_dhis2_increment(country: Path) -> None:
    """After the simulator's increment 1 the server holds the corrected values in place of
    the old ones, the new weeks, and the deletions (served only with includeDeleted=true);
    a ``lastUpdated`` pull from the increment's first change returns exactly what changed
    since then."""
    folder = country / "increments" / "1" / "dhis2" / "dataValueSets"
    changes = [
        v
        for path in sorted(folder.glob("*.json"))
        for v in json.loads(path.read_text())["dataValues"]
    ]
    assert any(v.get("deleted") for v in changes) and any(not v.get("deleted") for v in changes)
    base = placeable(country, iter_data_values(country))
    changed = {key(v): v for v in changes}
    after = [changed.get(key(v), v) for v in base]
    after += [v for v in changes if key(v) not in {key(b) for b in base}]
    cut = min(v["lastUpdated"] for v in changes)
    params = {
        "dataSet": data_set_ids(country),
        "orgUnit": root_org_unit(country),
        "children": "true",
        "lastUpdated": cut,
        "includeDeleted": "true",
    }
    with start_sandbox(country) as sandbox, requests.Session() as http:
        before = data_values(sandbox, http, params)
        assert canonical(before) == canonical([v for v in base if v["lastUpdated"] >= cut])
        # warm=1 reads the increment's values before answering (the benchmarks time requests)
        control = http.post(f"{sandbox.url}/_sandbox/increments/1", params={"warm": "1"}).json()
        assert control == {"current": 1, "available": [1]}
        served = data_values(sandbox, http, params)
        assert canonical(served) == canonical([v for v in after if v["lastUpdated"] >= cut])
        live = data_values(sandbox, http, {**params, "includeDeleted": "false"})
        assert canonical(live) == canonical(
            [v for v in after if v["lastUpdated"] >= cut and not v.get("deleted")]
        )
        everything = data_values(sandbox, http, {**params, "lastUpdated": "2000-01-01"})
        assert canonical(everything) == canonical(after)
        assert http.post(f"{sandbox.url}/_sandbox/increments/7").status_code == 404
        sandbox.apply_increment(0)
        assert canonical(data_values(sandbox, http, params)) == canonical(before)


def key(value: dict[str, Any]) -> tuple[Any, ...]:
    return (
        value["dataElement"],
        value["period"],
        value.get("orgUnit"),
        value["categoryOptionCombo"],
    )


# --- FHIR ----------------------------------------------------------------------------------


def search_all(http: requests.Session, url: str, params: dict[str, Any]) -> tuple[list[Any], int]:
    """Every resource of a search, following ``next`` links as given; and the page count."""
    resources: list[Any] = []
    pages = 0
    next_url: str | None = url
    first = True
    while next_url:
        response = http.get(next_url, params=params if first else None, timeout=TIMEOUT)
        first = False
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/fhir+json")
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        pages += 1
        for entry in bundle.get("entry", []):
            assert entry["search"]["mode"] == "match"
            resource = entry["resource"]
            assert entry["fullUrl"].endswith(f"/{resource['resourceType']}/{resource['id']}")
            resources.append(resource)
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        next_url = links.get("next")
        assert bundle["total"] >= len(resources)
    return resources, pages


def test_fhir_search_pages_are_the_ndjson(
    sandbox: Sandbox, http: requests.Session, country: Path
) -> None:
    assert sorted(sandbox.fhir_servers) == ["emr", "ihris"]
    multi_page = 0
    for server in sandbox.fhir_servers:
        for path in sorted((country / "fhir" / server / "ndjson").glob("*.ndjson")):
            expected = fhir_lines(path)
            served, pages = search_all(
                http, f"{sandbox.fhir_url(server)}/{path.stem}", {"_count": 50}
            )
            assert served == expected, f"{server}/{path.stem}"
            multi_page = max(multi_page, pages)
    assert multi_page >= 3  # iHRIS Practitioner and PractitionerRole span several pages


def test_fhir_last_updated(sandbox: Sandbox, http: requests.Session, country: Path) -> None:
    path = country / "fhir" / "ihris" / "ndjson" / "Practitioner.ndjson"
    resources = fhir_lines(path)

    def moment(resource: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(resource["meta"]["lastUpdated"].replace("Z", "+00:00"))

    stamps = sorted({r["meta"]["lastUpdated"] for r in resources})
    low, high = stamps[len(stamps) // 4], stamps[3 * len(stamps) // 4]
    low_t = datetime.fromisoformat(low.replace("Z", "+00:00"))
    high_t = datetime.fromisoformat(high.replace("Z", "+00:00"))
    url = f"{sandbox.fhir_url('ihris')}/Practitioner"
    cases = {
        f"ge{low}": [r for r in resources if moment(r) >= low_t],
        f"gt{low}": [r for r in resources if moment(r) > low_t],
        f"lt{low}": [r for r in resources if moment(r) < low_t],
        f"le{low}": [r for r in resources if moment(r) <= low_t],
    }
    for value, expected in cases.items():
        served, _ = search_all(http, url, {"_lastUpdated": value, "_count": 40})
        assert served == expected, value
    served, _ = search_all(http, url, {"_lastUpdated": [f"ge{low}", f"lt{high}"], "_count": 40})
    assert served == [r for r in resources if low_t <= moment(r) < high_t]
    assert 0 < len(served) < len(resources)
    # A date alone is a whole day; an offset is honoured.
    day = low[:10]
    served, _ = search_all(http, url, {"_lastUpdated": day})
    assert served == [r for r in resources if moment(r).date().isoformat() == day]
    bad = http.get(url, params={"_lastUpdated": "ge2025-13-45"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_fhir_read_metadata_and_paging_errors(
    sandbox: Sandbox, http: requests.Session, country: Path
) -> None:
    patient = fhir_lines(country / "fhir" / "emr" / "ndjson" / "Patient.ndjson")[0]
    read = http.get(f"{sandbox.fhir_url('emr')}/Patient/{patient['id']}")
    assert read.status_code == 200 and read.json() == patient
    assert read.headers["ETag"] == f'W/"{patient["meta"]["versionId"]}"'
    missing = http.get(f"{sandbox.fhir_url('emr')}/Patient/no-such-patient")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    statement = http.get(f"{sandbox.fhir_url('emr')}/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    served_types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert served_types == {p.stem for p in (country / "fhir" / "emr" / "ndjson").glob("*")}
    gone = http.get(sandbox.fhir_url("emr"), params={"_getpages": "feedface", "_count": "5"})
    assert gone.status_code == 410
    strict = http.get(
        f"{sandbox.fhir_url('emr')}/Patient",
        params={"name": "x"},
        headers={"Prefer": "handling=strict"},
    )
    assert strict.status_code == 400
    summary = http.get(f"{sandbox.fhir_url('emr')}/Observation", params={"_summary": "count"})
    observations = fhir_lines(country / "fhir" / "emr" / "ndjson" / "Observation.ndjson")
    assert summary.json()["total"] == len(observations) and "entry" not in summary.json()


def bulk_export(
    http: requests.Session, kickoff: str, params: dict[str, str] | None = None, **kwargs: str
) -> dict[str, Any]:
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async", **kwargs}
    response = http.get(kickoff, params=params, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    status_url = response.headers["Content-Location"]
    for polls in range(10):
        poll = http.get(status_url, headers=kwargs, timeout=TIMEOUT)
        if poll.status_code == 200:
            manifest: dict[str, Any] = poll.json()
            assert polls == 2  # the sandbox answers 202 twice first
            return manifest
        assert poll.status_code == 202
        assert poll.headers["X-Progress"]
        time.sleep(int(poll.headers["Retry-After"]))
    raise AssertionError("the export never finished")


def download(
    http: requests.Session, manifest: dict[str, Any], **headers: str
) -> dict[str, list[Any]]:
    files: dict[str, list[Any]] = {}
    for output in manifest["output"]:
        response = http.get(output["url"], headers=headers, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/fhir+ndjson")
        rows = [json.loads(line) for line in response.text.splitlines() if line]
        assert len(rows) == output["count"]
        files.setdefault(output["type"], []).extend(rows)
    return files


def test_fhir_bulk_export(sandbox: Sandbox, http: requests.Session, country: Path) -> None:
    base = sandbox.fhir_url("emr")
    folder = country / "fhir" / "emr" / "ndjson"
    refused = http.get(f"{base}/$export", headers={"Accept": "application/fhir+json"})
    assert refused.status_code == 400

    manifest = bulk_export(http, f"{base}/$export")
    assert set(manifest) >= {"transactionTime", "request", "requiresAccessToken", "output"}
    assert manifest["requiresAccessToken"] is False
    assert manifest["deleted"] == [] and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/emr/$export")
    files = download(http, manifest)
    expected = {p.stem: fhir_lines(p) for p in sorted(folder.glob("*.ndjson")) if fhir_lines(p)}
    assert files == expected
    latest = max(r["meta"]["lastUpdated"] for rows in expected.values() for r in rows)
    assert manifest["transactionTime"] == latest

    # _type and _since: the transaction time is the next _since (nothing newer here).
    typed = bulk_export(http, f"{base}/$export", {"_type": "Patient,Observation"})
    assert set(download(http, typed)) == {"Patient", "Observation"}
    assert (
        bulk_export(http, f"{base}/$export", {"_since": manifest["transactionTime"]})["output"]
        == []
    )
    observations = expected["Observation"]
    since = sorted(r["meta"]["lastUpdated"] for r in observations)[len(observations) // 2]
    newer = download(
        http, bulk_export(http, f"{base}/$export", {"_type": "Observation", "_since": since})
    )
    assert newer["Observation"] == [r for r in observations if r["meta"]["lastUpdated"] > since]

    # Patient-level export: patients and what references them, no facility resources.
    patient_files = download(http, bulk_export(http, f"{base}/Patient/$export"))
    assert patient_files["Patient"] == expected["Patient"]
    assert "Location" not in patient_files and "Organization" not in patient_files
    missing_group = http.get(
        f"{base}/Group/no-such-group/$export", headers={"Prefer": "respond-async"}
    )
    assert missing_group.status_code == 404


# --- ODK Central ---------------------------------------------------------------------------


def odk_pages(
    http: requests.Session, url: str, params: dict[str, str], **kwargs: Any
) -> tuple[list[Any], list[dict[str, Any]]]:
    rows: list[Any] = []
    documents: list[dict[str, Any]] = []
    next_url: str | None = url
    first = True
    while next_url:
        response = http.get(next_url, params=params if first else None, timeout=TIMEOUT, **kwargs)
        first = False
        assert response.status_code == 200, response.text
        document = response.json()
        documents.append(document)
        assert document["@odata.context"].endswith("$metadata#Submissions")
        rows += document["value"]
        next_url = document.get("@odata.nextLink")
        if next_url:
            assert "$skiptoken=" in next_url
    return rows, documents


def test_odk_auth_and_sessions(sandbox: Sandbox, http: requests.Session, country: Path) -> None:
    url = f"{sandbox.odk_url}/v1/projects"
    assert http.get(url).status_code == 401
    assert http.get(url, auth=(ODK_AUTH[0], "wrong")).status_code == 401
    assert http.get(url, headers={"Authorization": "Bearer not-a-session"}).status_code == 401
    project = json.loads((country / "odk" / "projects" / "1" / "project.json").read_text())
    assert http.get(url, auth=ODK_AUTH).json() == [project]
    refused = http.post(
        f"{sandbox.odk_url}/v1/sessions", json={"email": ODK_AUTH[0], "password": "x"}
    )
    assert refused.status_code == 401 and refused.json()["code"] == 401.2
    session = http.post(
        f"{sandbox.odk_url}/v1/sessions", json={"email": ODK_AUTH[0], "password": ODK_AUTH[1]}
    ).json()
    assert set(session) >= {"token", "expiresAt", "createdAt"}
    bearer = {"Authorization": f"Bearer {session['token']}"}
    assert http.get(url, headers=bearer).status_code == 200
    assert http.delete(f"{sandbox.odk_url}/v1/sessions/{session['token']}").status_code == 200
    assert http.get(url, headers=bearer).status_code == 401


def test_odk_submissions_are_the_files(
    sandbox: Sandbox, http: requests.Session, country: Path
) -> None:
    forms_dir = country / "odk" / "projects" / "1" / "forms"
    listed = http.get(f"{sandbox.odk_url}/v1/projects/1/forms", auth=ODK_AUTH).json()
    assert sorted(f["xmlFormId"] for f in listed) == sorted(p.name for p in forms_dir.iterdir())
    for form in forms_dir.iterdir():
        expected = [r for r in odk_rows(country, form.name) if not r["__system"]["deletedAt"]]
        url = f"{sandbox.odk_url}/v1/projects/1/forms/{form.name}.svc/Submissions"
        rows, documents = odk_pages(http, url, {"$top": "500", "$count": "true"}, auth=ODK_AUTH)
        assert canonical(rows) == canonical(expected)
        assert all(d["@odata.count"] == len(expected) for d in documents)
        assert len(documents) == max(1, -(-len(expected) // 500))
        dates = [r["__system"]["submissionDate"] for r in rows]
        assert dates == sorted(dates, reverse=True)  # Central's order: newest first
    # Without $top the server's page size (600 here) drives the paging.
    visits = [r for r in odk_rows(country, "household_visit") if not r["__system"]["deletedAt"]]
    url = f"{sandbox.odk_url}/v1/projects/1/forms/household_visit.svc/Submissions"
    rows, documents = odk_pages(http, url, {}, auth=ODK_AUTH)
    assert len(documents) >= 3 and canonical(rows) == canonical(visits)
    service = http.get(f"{sandbox.odk_url}/v1/projects/1/forms/household_visit.svc", auth=ODK_AUTH)
    assert service.json()["value"] == [
        {"kind": "EntitySet", "name": "Submissions", "url": "Submissions"}
    ]


def test_odk_filter(sandbox: Sandbox, http: requests.Session, country: Path) -> None:
    rows = odk_rows(country, "household_visit")
    live = [r for r in rows if not r["__system"]["deletedAt"]]
    deleted = [r for r in rows if r["__system"]["deletedAt"]]
    assert deleted, "the simulator deletes some submissions"
    url = f"{sandbox.odk_url}/v1/projects/1/forms/household_visit.svc/Submissions"

    def served(expression: str) -> list[Any]:
        found, _ = odk_pages(http, url, {"$filter": expression, "$top": "1000"}, auth=ODK_AUTH)
        return found

    dates = sorted(r["__system"]["submissionDate"] for r in live)
    low, high = dates[len(dates) // 3], dates[2 * len(dates) // 3]
    expression = f"__system/submissionDate ge {low} and __system/submissionDate lt {high}"
    expected = [r for r in live if low <= r["__system"]["submissionDate"] < high]
    assert canonical(served(expression)) == canonical(expected)

    updated = sorted(r["__system"]["updatedAt"] for r in live if r["__system"]["updatedAt"])
    cut = updated[len(updated) // 2]
    expected = [r for r in live if (r["__system"]["updatedAt"] or "") > cut]
    assert canonical(served(f"__system/updatedAt gt {cut}")) == canonical(expected)

    assert canonical(served("__system/deletedAt ne null")) == canonical(deleted)
    assert canonical(served("__system/deletedAt eq null")) == canonical(live)
    unsupported = http.get(url, params={"$filter": "household/members gt 3"}, auth=ODK_AUTH)
    assert unsupported.status_code == 501
    broken = http.get(url, params={"$filter": "__system/updatedAt gt"}, auth=ODK_AUTH)
    assert broken.status_code == 400


# --- KoboToolbox ---------------------------------------------------------------------------


def kobo_headers(sandbox: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Token {sandbox.credentials.kobo_token}"}


def kobo_pages(
    http: requests.Session, url: str, params: dict[str, str], headers: dict[str, str]
) -> tuple[list[Any], list[dict[str, Any]]]:
    results: list[Any] = []
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    first = True
    while next_url:
        response = http.get(next_url, params=params if first else None, headers=headers)
        first = False
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        results += page["results"]
        next_url = page["next"]
    return results, pages


def test_kobo_data_is_the_file(sandbox: Sandbox, http: requests.Session, country: Path) -> None:
    headers = kobo_headers(sandbox)
    assert http.get(f"{sandbox.kobo_url}/api/v2/assets/").status_code == 401
    wrong = http.get(f"{sandbox.kobo_url}/api/v2/assets/", headers={"Authorization": "Token 00"})
    assert wrong.status_code == 401 and "detail" in wrong.json()
    assets = http.get(
        f"{sandbox.kobo_url}/api/v2/assets/", params={"format": "json"}, headers=headers
    )
    (asset,) = assets.json()["results"]
    assert asset["data"] == f"{sandbox.kobo_url}/api/v2/assets/{asset['uid']}/data/"
    expected = kobo_results(country, asset["uid"])
    results, pages = kobo_pages(http, asset["data"], {"format": "json", "limit": "100"}, headers)
    assert results == expected
    assert len(pages) >= 3 and all(p["count"] == len(expected) for p in pages)
    assert pages[0]["previous"] is None and pages[1]["previous"] is not None
    capped = http.get(asset["data"], params={"limit": "5000"}, headers=headers).json()
    assert len(capped["results"]) == min(1000, len(expected))
    default = http.get(asset["data"], headers=headers).json()
    assert len(default["results"]) == min(100, len(expected))


def test_kobo_query(sandbox: Sandbox, http: requests.Session, country: Path) -> None:
    headers = kobo_headers(sandbox)
    uid = next(p.name for p in (country / "kobo" / "assets").iterdir())
    expected_all = kobo_results(country, uid)
    url = f"{sandbox.kobo_url}/api/v2/assets/{uid}/data/"
    times = sorted(r["_submission_time"] for r in expected_all)
    low, high = times[len(times) // 4], times[len(times) // 2]
    query = {"_submission_time": {"$gte": low, "$lt": high}}
    results, _ = kobo_pages(http, url, {"query": json.dumps(query), "limit": "50"}, headers)
    assert results == [r for r in expected_all if low <= r["_submission_time"] < high]
    query2 = {"$and": [{"_submission_time": {"$gt": high}}, {"child/muac_status": "sam"}]}
    results, _ = kobo_pages(http, url, {"query": json.dumps(query2)}, headers)
    assert results == [
        r for r in expected_all if r["_submission_time"] > high and r["child/muac_status"] == "sam"
    ]
    broken = http.get(url, params={"query": "{not json"}, headers=headers)
    assert broken.status_code == 400 and "detail" in broken.json()


# --- auth on the FHIR side, and the index --------------------------------------------------


def test_fhir_bearer_token_and_group_export(tmp_path: Path) -> None:
    """A tiny FHIR server written here (the simulator writes no Group): token auth, Group
    export limited to the group's members."""
    folder = tmp_path / "fhir" / "tiny" / "ndjson"
    folder.mkdir(parents=True)
    stamp = "2026-01-0{}T10:00:00Z"
    patients = [
        {"resourceType": "Patient", "id": f"p{i}", "meta": {"lastUpdated": stamp.format(i)}}
        for i in (1, 2, 3)
    ]
    observations = [
        {
            "resourceType": "Observation",
            "id": f"o{i}",
            "meta": {"lastUpdated": stamp.format(i)},
            "subject": {"reference": f"Patient/p{i}"},
        }
        for i in (1, 2, 3)
    ]
    group = {
        "resourceType": "Group",
        "id": "cohort",
        "meta": {"lastUpdated": stamp.format(4)},
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": "Patient/p1"}},
            {"entity": {"reference": "Patient/p3"}},
        ],
    }
    for name, rows in (("Patient", patients), ("Observation", observations), ("Group", [group])):
        (folder / f"{name}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    credentials = Credentials(fhir_token="secret-token")
    settings = SandboxSettings(fhir=FhirSettings(bulk_retry_after=0))
    with (
        start_sandbox(tmp_path, credentials=credentials, settings=settings) as sandbox,
        requests.Session() as http,
    ):
        base = sandbox.fhir_url("tiny")
        assert http.get(f"{base}/metadata").status_code == 200  # discovery needs no token
        refused = http.get(f"{base}/Patient")
        assert refused.status_code == 401 and refused.json()["resourceType"] == "OperationOutcome"
        assert "Bearer" in refused.headers["WWW-Authenticate"]
        token = {"Authorization": "Bearer secret-token"}
        assert http.get(f"{base}/Patient", headers=token).json()["total"] == 3
        manifest = bulk_export(http, f"{base}/Group/cohort/$export", None, **token)
        assert manifest["requiresAccessToken"] is True
        assert http.get(manifest["output"][0]["url"]).status_code == 401
        files = download(http, manifest, **token)
        assert [p["id"] for p in files["Patient"]] == ["p1", "p3"]
        assert [o["id"] for o in files["Observation"]] == ["o1", "o3"]
        index = http.get(f"{sandbox.url}/").json()
        assert index["apis"] == {"fhir/tiny": f"{sandbox.url}/fhir/tiny"}


def test_describe_names_every_api_and_credential(sandbox: Sandbox) -> None:
    text = sandbox.describe()
    for needle in (
        sandbox.dhis2_url,
        sandbox.odk_url,
        sandbox.kobo_url,
        sandbox.fhir_url("emr"),
        sandbox.credentials.dhis2_api_token,
        sandbox.credentials.kobo_token,
        "admin / district",
    ):
        assert needle in text
    assert Counter(line.split()[0] for line in text.splitlines()[1:])["FHIR"] == 2


def test_one_increment_switches_fhir_odk_and_kobo(country: Path) -> None:
    """``POST /_sandbox/increments/1`` serves the FHIR, ODK and Kobo data as it is after the
    simulator's increment: new and corrected FHIR versions replace the old ones, deleted
    resources answer 410 and are listed by ``_history`` and by an export with ``_since``;
    ODK shows edits in place and deletions only to a ``deletedAt`` filter; Kobo lists the new
    results. Increment 0 restores the base data."""
    notes = json.loads((country / "truth.json").read_text())["notes"]
    emr = notes["fhir_increment"]["servers"]["emr"]
    obs_id = emr["deleted"]["Observation"][0]
    corrected = emr["corrected"]["Observation"][0]
    visits = notes["community_increment"]["odk"]["household_visit"]
    [(uid, new_results)] = notes["community_increment"]["kobo"].items()
    settings = SandboxSettings(fhir=FhirSettings(bulk_polls=0, bulk_retry_after=0))
    with start_sandbox(country, settings=settings) as sandbox, requests.Session() as http:
        fhir = sandbox.fhir_url("emr")
        odk = f"{sandbox.odk_url}/v1/projects/1/forms/household_visit.svc/Submissions"
        kobo = f"{sandbox.kobo_url}/api/v2/assets/{uid}/data/"
        kobo_auth = {"Authorization": f"Token {Credentials().kobo_token}"}

        def odk_ids(flt: str) -> set[str]:
            params = {"$filter": flt, "$top": "5000"}
            rows = http.get(odk, params=params, auth=ODK_AUTH, timeout=TIMEOUT).json()["value"]
            return {r["__id"] for r in rows}

        def export_deleted(since: str) -> list[str]:
            kick = http.get(
                f"{fhir}/$export",
                params={"_type": "Observation", "_since": since},
                headers={"Prefer": "respond-async"},
                timeout=TIMEOUT,
            )
            manifest = http.get(kick.headers["Content-Location"], timeout=TIMEOUT).json()
            lines = [
                json.loads(line)
                for item in manifest["deleted"]
                for line in http.get(item["url"], timeout=TIMEOUT).text.splitlines()
            ]
            return [e["request"]["url"] for b in lines for e in b["entry"]]

        base_kobo = http.get(kobo, headers=kobo_auth, timeout=TIMEOUT).json()["count"]
        assert http.get(f"{fhir}/Observation/{obs_id}", timeout=TIMEOUT).status_code == 200
        assert http.post(f"{sandbox.url}/_sandbox/increments/1").json()["current"] == 1

        assert http.get(f"{fhir}/Observation/{obs_id}", timeout=TIMEOUT).status_code == 410
        read = http.get(f"{fhir}/Observation/{corrected['id']}", timeout=TIMEOUT)
        assert read.headers["ETag"] == f'W/"{corrected["version"]}"'
        assert read.json()["status"] == "amended"
        history = http.get(
            f"{fhir}/Observation/_history", params={"_since": "2026-02-01T00:00:00Z"}
        ).json()
        deletes = [
            e["request"]["url"] for e in history["entry"] if e["request"]["method"] == "DELETE"
        ]
        assert sorted(deletes) == sorted(f"Observation/{i}" for i in emr["deleted"]["Observation"])
        assert sorted(export_deleted("2026-02-01T00:00:00Z")) == sorted(deletes)
        assert export_deleted("2030-01-01T00:00:00Z") == []

        live = odk_ids("__system/submissionDate gt 2026-02-02T00:00:00.000Z")
        assert set(visits["new"]) <= live
        gone = odk_ids("__system/deletedAt gt 2026-02-02T00:00:00.000Z")
        assert gone == set(visits["deleted"])
        assert not gone & odk_ids("__system/submissionDate gt 2000-01-01T00:00:00.000Z")

        results = http.get(kobo, params={"limit": 1000}, headers=kobo_auth, timeout=TIMEOUT)
        assert results.json()["count"] == base_kobo + len(new_results["new"])
        newest = results.json()["results"][-len(new_results["new"]) :]
        assert [str(r["_id"]) for r in newest] == new_results["new"]

        sandbox.apply_increment(0)
        assert http.get(f"{fhir}/Observation/{obs_id}", timeout=TIMEOUT).status_code == 200
        assert http.get(kobo, headers=kobo_auth, timeout=TIMEOUT).json()["count"] == base_kobo
        assert not odk_ids("__system/deletedAt gt 2026-02-02T00:00:00.000Z")
