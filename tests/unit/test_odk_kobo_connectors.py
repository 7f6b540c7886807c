"""ODK Central and KoboToolbox connectors and the community form specs: the public ODK
sample parses, server-driven paging, deletions, cursors, reconciliation, schema drift, and
scrubbing that leaves no name, phone or raw household id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from connectors import kobo, odk
from connectors.errors import SourceFormatError
from connectors.http import (
    Credentials,
    HttpClient,
    RetryPolicy,
    SourceAuthError,
    SourceHTTPError,
    TruncatedResponse,
)
from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser
from pipelines.sandbox.auth import Credentials as SandboxCredentials
from pipelines.sandbox.odk_api import OdkSettings as SandboxOdkSettings
from pipelines.sandbox.server import SandboxSettings, start_sandbox
from pipelines.sources import adapter_for, raw_table
from pipelines.sources import community_forms as forms
from pipelines.sources.community_forms import FormSpec, VersionLayout
from pipelines.validate import load_suite_spec
from tests.conftest import SAMPLES

FAST = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.02)
KEY = Pseudonymiser(b"unit-test-key-0123456789")
SANDBOX = SandboxCredentials()


# --- the public ODK Central sample ---------------------------------------------------------


def test_the_public_odk_central_sample_parses() -> None:
    document = json.loads(
        (SAMPLES / "odk" / "central_odata_Submissions_docs_example.json").read_text()
    )
    page = odk.parse_feed(document, form_id="simple", origin="sample")
    assert page.count is None and page.next_link is None
    assert [r["submission_id"] for r in page.records] == [
        "uuid:85cb9aff-005e-4edd-9739-dc9c1a829c44",
        "uuid:297000fd-8eb2-4232-8863-d25f82521b87",
    ]
    first = page.records[0]
    assert first["instance_id"] == first["submission_id"]
    assert first["answers"] == {"age": 25, "name": "Bob"}
    assert first["form_version"] is None and first["deleted"] is False


def test_the_sample_scrubbed_by_a_spec_keeps_no_name() -> None:
    spec = FormSpec.model_validate(
        {
            "form": "simple",
            "source": "odk",
            "facility_field": "site",
            "fields": {"site": {}, "name": {"role": "personal"}, "age": {"type": "integer"}},
        }
    )
    document = json.loads(
        (SAMPLES / "odk" / "central_odata_Submissions_docs_example.json").read_text()
    )
    for record in odk.parse_feed(document, form_id="simple", origin="sample").records:
        scrubbed = forms.scrub(spec, record["answers"], KEY)
        assert "name" not in scrubbed.payload and "name" in scrubbed.paths
        assert "Bob" not in json.dumps(scrubbed.payload)
        assert "Alice" not in json.dumps(scrubbed.payload)


def test_a_malformed_feed_names_the_origin_and_field() -> None:
    with pytest.raises(SourceFormatError, match=r"feed-url: field __system"):
        odk.parse_feed(
            {"value": [{"__id": "uuid:1", "__system": []}]}, form_id="f", origin="feed-url"
        )
    with pytest.raises(SourceFormatError, match="value list"):
        odk.parse_feed({"values": []}, form_id="f", origin="feed-url")


# --- an ODK Central served by the sandbox --------------------------------------------------


def stamp(minute: int) -> str:
    return f"2026-01-05T08:{minute:02d}:00.000Z"


def submission(
    number: int, *, version: str = "1", updated: int | None = None, deleted: int | None = None
) -> dict[str, Any]:
    instance = f"uuid:00000000-0000-4000-8000-{number:012d}"
    return {
        "__id": instance,
        "facility_code": "FAC1",
        "household": {"household_id": f"HH-{number:03d}", "head_name": f"Head {number}"},
        "meta": {"instanceID": instance},
        "__system": {
            "submissionDate": stamp(number),
            "updatedAt": None if updated is None else stamp(updated),
            "submitterId": "7",
            "submitterName": "Collector Name",
            "deviceId": "collect:abc",
            "reviewState": None,
            "edits": 0,
            "formVersion": version,
            "deletedAt": None if deleted is None else stamp(deleted),
        },
    }


def write_odk(root: Path, rows: list[dict[str, Any]], form: str = "visits") -> None:
    folder = root / "odk" / "projects" / "1" / "forms" / form
    folder.mkdir(parents=True)
    (folder / "form.json").write_text(json.dumps({"projectId": 1, "xmlFormId": form}))
    (folder / "submissions.json").write_text(json.dumps({"value": rows}))


@pytest.fixture
def odk_rows() -> list[dict[str, Any]]:
    rows = [submission(n) for n in range(1, 8)]
    rows[2]["__system"]["deletedAt"] = stamp(30)
    rows[5]["__system"]["updatedAt"] = stamp(40)
    # A file-backed server may hold a submission twice: with two rows a page, the copies of
    # submission 2 fall on two pages.
    rows.insert(2, json.loads(json.dumps(rows[1])))
    return rows


@pytest.fixture
def odk_server(tmp_path: Path, odk_rows: list[dict[str, Any]]) -> Iterator[str]:
    write_odk(tmp_path, odk_rows)
    settings = SandboxSettings(odk=SandboxOdkSettings(page_size=1000))
    with start_sandbox(tmp_path, settings=settings) as sandbox:
        yield sandbox.odk_url


def odk_client(url: str, password: str = SANDBOX.odk_password) -> HttpClient:
    credentials = Credentials("basic", SANDBOX.odk_email, password, env_names=("U", "P"))
    return HttpClient(url, source="chw", credentials=credentials, policy=FAST)


def settings(page_size: int = 2) -> odk.OdkSettings:
    return odk.OdkSettings("chw", 1, ["visits"], page_size=page_size, overlap=timedelta(0))


def test_odk_paging_follows_next_links_and_moves_the_cursor_on_the_last_page(
    odk_server: str,
) -> None:
    with odk_client(odk_server) as client:
        odk.open_session(client)
        pages = list(odk.read_submissions(client, settings(page_size=2), None))
    assert len(pages) >= 3
    ids = [r["submission_id"] for p in pages for r in p.records]
    # Every visible submission (6 distinct + the repeated copy), then the deleted one.
    assert len(ids) == 8 and len(set(ids)) == 7
    # The two copies of submission 2 arrive in one page, where landing collapses them.
    copies = [p for p in pages if sum(r["submission_id"].endswith("2") for r in p.records) == 2]
    assert len(copies) == 1
    tombstones = [r for p in pages for r in p.records if r["deleted"]]
    assert [r["submission_id"][-1] for r in tombstones] == ["3"]
    assert all(p.cursor == {} for p in pages[:-1])
    assert pages[-1].cursor == {"visits": {"updatedAt": stamp(40), "deletedAt": stamp(30)}}


def test_odk_incremental_pull_asks_for_changes_and_deletions_since_the_cursor(
    odk_server: str,
) -> None:
    cursor = {"visits": {"updatedAt": stamp(5), "deletedAt": stamp(30)}}
    with odk_client(odk_server) as client:
        odk.open_session(client)
        pages = list(odk.read_submissions(client, settings(page_size=2), cursor))
    ids = sorted({r["submission_id"][-1] for p in pages for r in p.records})
    assert ids == ["6", "7"]  # 6 was submitted at :06 and updated at :40, 7 submitted at :07
    assert pages[-1].cursor["visits"] == {"updatedAt": stamp(40), "deletedAt": stamp(30)}


def test_odk_queries_filter_on_submission_and_update_times_with_the_overlap() -> None:
    config = odk.OdkSettings("chw", 1, ["f"], overlap=timedelta(minutes=5))
    full = odk.form_queries({}, config)
    assert "$filter" not in full[0] and full[1]["$filter"] == "__system/deletedAt ne null"
    later = odk.form_queries({"updatedAt": "2026-01-05T08:10:00.000Z"}, config)
    assert later[0]["$filter"] == (
        "__system/submissionDate gt 2026-01-05T08:05:00.000Z "
        "or __system/updatedAt gt 2026-01-05T08:05:00.000Z"
    )
    assert later[1]["$filter"] == "__system/deletedAt gt 2026-01-05T08:05:00.000Z"
    assert all(q["$count"] == "true" and q["$top"] == 1000 for q in full)


def test_odk_wrong_password_fails_once_naming_the_variables(odk_server: str) -> None:
    with odk_client(odk_server, password="wrong-password") as client:
        with pytest.raises(SourceAuthError) as error:
            odk.open_session(client)
        assert client.retries == 0
    assert "U, P" in str(error.value) and "wrong-password" not in str(error.value)


def test_odk_basic_auth_works_without_a_session(odk_server: str) -> None:
    with odk_client(odk_server) as client:
        pages = list(odk.read_submissions(client, settings(page_size=1000), None))
    assert sum(len(p.records) for p in pages) == 8


def feed(rows: list[dict[str, Any]], count: int, next_link: str | None = None) -> Response:
    body: dict[str, Any] = {"value": rows, "@odata.count": count}
    if next_link:
        body["@odata.nextLink"] = next_link
    return Response(json.dumps(body), content_type="application/json")


def test_an_odk_feed_shorter_than_its_count_fails_without_moving_the_cursor(
    httpserver: HTTPServer,
) -> None:
    path = "/v1/projects/1/forms/visits.svc/Submissions"
    page2 = httpserver.url_for(path) + "?$skiptoken=01abc"

    def handler(request: Request) -> Response:
        if request.args.get("$skiptoken"):
            return feed([submission(3)], 5)
        if "deletedAt" in request.args.get("$filter", ""):
            return feed([], 0)
        return feed([submission(1), submission(2)], 5, page2)

    httpserver.expect_request(path).respond_with_handler(handler)
    old = {"visits": {"updatedAt": stamp(0)}}
    client = HttpClient(httpserver.url_for("/"), source="chw", policy=FAST)
    pages = []
    with pytest.raises(TruncatedResponse, match="reported 5 submissions but sent 3"):
        for page in odk.read_submissions(client, settings(), old):
            pages.append(page)
    assert pages and all(p.cursor == old for p in pages)


def test_a_cut_off_odk_page_fails_without_moving_the_cursor(httpserver: HTTPServer) -> None:
    path = "/v1/projects/1/forms/visits.svc/Submissions"
    page2 = httpserver.url_for(path) + "?$skiptoken=01abc"

    def handler(request: Request) -> Response:
        if request.args.get("$skiptoken"):
            return Response('{"value": [{"__id": ', content_type="application/json")
        return feed([submission(1)], 2, page2)

    httpserver.expect_request(path).respond_with_handler(handler)
    client = HttpClient(httpserver.url_for("/"), source="chw", policy=FAST)
    pages = []
    with pytest.raises(SourceHTTPError, match="cut-off"):
        for page in odk.read_submissions(client, settings(), None):
            pages.append(page)
    assert all(p.cursor == {} for p in pages)


def test_a_next_link_to_another_server_is_refused(httpserver: HTTPServer) -> None:
    path = "/v1/projects/1/forms/visits.svc/Submissions"
    httpserver.expect_request(path).respond_with_response(
        feed([submission(1)], 2, "https://elsewhere.example/v1/x?$skiptoken=01")
    )
    client = HttpClient(httpserver.url_for("/"), source="chw", policy=FAST)
    with pytest.raises(SourceFormatError, match="another server"):
        list(odk.read_submissions(client, settings(), None))


def test_copies_split_across_pages_are_moved_into_one() -> None:
    def rec(i: str) -> dict[str, Any]:
        return {"submission_id": i}

    chunks = [[rec("a"), rec("b")], [rec("b"), rec("b")], [rec("b"), rec("c")], []]
    pages = list(odk._pages_with_last(chunks))
    assert [[r["submission_id"] for r in p] for p, _ in pages] == [["a", "b", "b", "b", "b"], ["c"]]
    assert [last for _, last in pages] == [False, True]


# --- KoboToolbox served by the sandbox -----------------------------------------------------


def write_kobo(root: Path, results: list[dict[str, Any]], uid: str = "aAsset1") -> None:
    folder = root / "kobo" / "assets" / uid
    folder.mkdir(parents=True)
    (folder / "asset.json").write_text(
        json.dumps({"uid": uid, "name": "screening", "version_id": "v2"})
    )
    (folder / "data.json").write_text(json.dumps({"count": len(results), "results": results}))


def result(number: int, *, version: str = "v1", **answers: str) -> dict[str, Any]:
    return {
        "_id": 1000 + number,
        "site/facility_code": "FAC1",
        "site/gps": "-1.0 33.0 1100.0 5.0",
        "child/muac_mm": "130",
        **answers,
        "__version__": version,
        "meta/instanceID": f"uuid:kobo-{number}",
        "_uuid": f"kobo-{number}",
        "_submission_time": f"2026-01-05T08:{number:02d}:00",
        "_geolocation": [-1.0, 33.0],
        "_submitted_by": "enumerator_name",
        "_validation_status": {"uid": "validation_status_approved"},
    }


@pytest.fixture
def kobo_server(tmp_path: Path) -> Iterator[str]:
    write_kobo(tmp_path, [result(n) for n in range(1, 6)])
    with start_sandbox(tmp_path) as sandbox:
        yield sandbox.kobo_url


def kobo_client(url: str, token: str = SANDBOX.kobo_token) -> HttpClient:
    credentials = Credentials("token", token=token, env_names=("KOBO_TOKEN",))
    return HttpClient(url, source="nutrition", credentials=credentials, policy=FAST)


def test_kobo_paging_reconciles_count_and_moves_the_cursor_on_the_last_page(
    kobo_server: str,
) -> None:
    config = kobo.KoboSettings("nutrition", page_size=2, overlap=timedelta(0))
    with kobo_client(kobo_server) as client:
        asset = kobo.fetch_asset(client, "aAsset1")
        pages = list(kobo.read_submissions(client, config, [asset], None))
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert all(p.cursor == {} for p in pages[:-1])
    assert pages[-1].cursor == {"aAsset1": {"submissionTime": "2026-01-05T08:05:00"}}
    first = pages[0].records[0]
    assert first["submission_id"] == 1001 and first["instance_id"] == "uuid:kobo-1"
    assert first["answers"]["site"]["facility_code"] == "FAC1"
    assert "_submitted_by" not in json.dumps(first) and "_geolocation" not in json.dumps(first)


def test_kobo_incremental_pull_asks_from_the_cursor(kobo_server: str) -> None:
    config = kobo.KoboSettings("nutrition", page_size=2, overlap=timedelta(minutes=1))
    cursor = {"aAsset1": {"submissionTime": "2026-01-05T08:04:00"}}
    with kobo_client(kobo_server) as client:
        asset = kobo.fetch_asset(client, "aAsset1")
        pages = list(kobo.read_submissions(client, config, [asset], cursor))
    assert [r["submission_id"] for p in pages for r in p.records] == [1003, 1004, 1005]


def test_kobo_wrong_token_fails_once(kobo_server: str) -> None:
    with kobo_client(kobo_server, token="0" * 40) as client:
        with pytest.raises(SourceAuthError, match="KOBO_TOKEN"):
            kobo.fetch_asset(client, "aAsset1")
        assert client.retries == 0


def test_kobo_answers_nest_by_group_path() -> None:
    flat = {"a": "1", "g/b": "2", "g/h/c": "3", "g/rep": [{"g/rep/x": "4"}, {"g/rep/x": "5"}]}
    assert kobo.nest_answers(flat, "o") == {
        "a": "1",
        "g": {"b": "2", "h": {"c": "3"}, "rep": [{"x": "4"}, {"x": "5"}]},
    }
    with pytest.raises(SourceFormatError, match="share a name"):
        kobo.nest_answers({"g": "1", "g/b": "2"}, "o")


# --- form specs, scrubbing and checks ------------------------------------------------------


def test_every_shipped_spec_loads() -> None:
    specs = forms.load_specs()
    assert {("odk", "household_visit"), ("odk", "referral_followup"), ("odk", "cebs_signal"),
            ("kobo", "nutrition_muac_wash_screening")} <= set(specs)  # fmt: skip
    visit = specs[("odk", "household_visit")]
    assert visit.aliases("muac/muac_mm") == ["muac/muac", "muac/muac_mm"]


def test_a_form_without_a_spec_is_refused_with_a_way_out() -> None:
    with pytest.raises(ConfigError, match=r"ODK form 'mother_register' has no form spec.*README"):
        forms.require_spec("odk", "mother_register", where="source chw: http://x/")


def test_a_bad_spec_names_the_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(
        "form: f\nsource: odk\nfacility_field: fac\nfields:\n  fac: {}\n  hh: {role: identifier}\n"
    )
    with pytest.raises(ConfigError, match=r"bad.yml: fields.hh: .*needs a kind"):
        forms.load_specs(tmp_path)


VISIT = {
    "chw_id": "CHW-1",
    "facility_code": "FAC1",
    "visit_date": "2026-01-05",
    "household": {
        "household_id": "HH-DL_D001_HC01-01-001",
        "head_name": "Amina Mwangi",
        "head_phone": "+999712345678",
        "members": 5,
        "pregnant_women": 0,
        "children_under5": 1,
    },
    "danger_signs": None,
    "muac": {"eligible": 1, "screened": 1, "muac": 143, "class": "normal"},
    "referral": {"referred": "yes", "referral_id": "REF-DL_D001_HC01-01-0001", "reason": "mam"},
    "wash": {"safe_water": "yes", "improved_latrine": "no"},
    "mother": {"mother_name": "Neema Otieno"},
    "gps": {"type": "Point", "coordinates": [33.0, -1.0]},
}


def test_scrubbing_pseudonymises_ids_and_drops_personal_and_undeclared_fields() -> None:
    spec = forms.load_specs()[("odk", "household_visit")]
    scrubbed = forms.scrub(spec, VISIT, KEY)
    text = forms.payload_json(scrubbed.payload)
    for secret in ("Amina Mwangi", "+999712345678", "HH-DL_D001_HC01-01-001",
                   "REF-DL_D001_HC01-01-0001", "Neema Otieno", "33.0"):  # fmt: skip
        assert secret not in text
    household = scrubbed.payload["household"]
    assert household["household_id"] == KEY.pseudonym("household", "HH-DL_D001_HC01-01-001")
    assert set(household) == {"household_id", "members", "pregnant_women", "children_under5"}
    assert scrubbed.undeclared == ("gps", "mother/mother_name")
    assert "household/head_name" in scrubbed.paths and "mother" not in scrubbed.payload
    # The referral pseudonym matches the follow-up form's, so the two still join.
    followup = forms.load_specs()[("odk", "referral_followup")]
    again = forms.scrub(followup, {"referral_id": "REF-DL_D001_HC01-01-0001"}, KEY)
    assert again.payload["referral_id"] == scrubbed.payload["referral"]["referral_id"]


def test_repeat_groups_are_scrubbed_item_by_item() -> None:
    spec = FormSpec.model_validate(
        {
            "form": "f",
            "source": "kobo",
            "facility_field": "fac",
            "fields": {"fac": {}, "people/name": {"role": "personal"}, "people/age": {}},
        }
    )
    scrubbed = forms.scrub(spec, {"fac": "F", "people": [{"name": "A B", "age": "3"}]}, KEY)
    assert scrubbed.payload == {"fac": "F", "people": [{"age": "3"}]}


def test_required_fields_accept_either_name_of_a_renamed_field() -> None:
    spec = FormSpec.model_validate(
        {
            "form": "f",
            "source": "odk",
            "facility_field": "fac",
            "fields": {
                "fac": {"required": True},
                "m/old": {"type": "integer", "required": True},
                "m/new": {"type": "integer", "renamed_from": "m/old", "min": 50, "max": 300},
            },
        }
    )
    assert forms.missing_required(spec, {"fac": "F", "m": {"new": 120}}) == []
    assert forms.missing_required(spec, {"fac": " ", "m": {}}) == ["fac", "m/old"]
    assert forms.out_of_range(spec, {"m": {"new": 900}}) == ["m/new = 900 (expected 50 to 300)"]
    assert forms.out_of_range(spec, {"m": {"new": "abc"}}) == [
        "m/new = 'abc' is not a number (expected 50 to 300)"
    ]


# --- schema drift --------------------------------------------------------------------------


def layout(
    version: str, first: str, fields: set[str], always: set[str] | None = None
) -> VersionLayout:
    return VersionLayout(
        version, first, frozenset(fields), frozenset(always if always is not None else fields),
        f"first-of-{version}",
    )  # fmt: skip


def test_a_renamed_field_is_reported_on_the_new_versions_first_submission() -> None:
    spec = forms.load_specs()[("odk", "household_visit")]
    common = {"chw_id", "facility_code", "visit_date"}
    flags = forms.drift_flags(
        spec,
        [
            layout("2026031201", "2026-03-12", common | {"muac/muac_mm"}),
            layout("2026010101", "2026-01-01", common | {"muac/muac"}),
        ],
    )
    assert flags == {
        "first-of-2026031201": "ODK form household_visit version 2026031201 renames muac/muac "
        "to muac/muac_mm (compared with version 2026010101)"
    }


def test_an_added_field_is_drift_and_an_unanswered_one_is_not() -> None:
    spec = forms.load_specs()[("kobo", "nutrition_muac_wash_screening")]
    before = layout("v1", "1", {"child/muac_mm", "site/gps"}, always={"child/muac_mm"})
    after = layout("v2", "2", {"child/muac_mm", "child/oedema", "child/bracelet"})
    detail = forms.describe_drift(spec, before, after)
    assert detail == (
        "Kobo asset nutrition_muac_wash_screening version v2 adds child/bracelet (not in the "
        "form spec: dropped before landing), child/oedema (compared with version v1)"
    )
    # site/gps was missing from some v1 results (unanswered), so its absence proves nothing.
    assert forms.describe_drift(spec, before, layout("v3", "3", {"child/muac_mm"})) is None
    removed = forms.describe_drift(spec, after, layout("v3", "3", {"child/oedema"}))
    assert removed is not None and "removes child/bracelet, child/muac_mm" in removed


def test_unchanged_versions_are_not_drift() -> None:
    spec = forms.load_specs()[("odk", "cebs_signal")]
    same = {"chw_id", "facility_code"}
    assert forms.drift_flags(spec, [layout("1", "a", same), layout("2", "b", same)]) == {}


# --- the adapters --------------------------------------------------------------------------


def test_prepared_records_hold_only_the_raw_columns_and_nothing_personal() -> None:
    adapter = adapter_for("odk")
    record = odk.parse_submission(
        {**submission(1), **{k: v for k, v in VISIT.items()}},
        form_id="household_visit",
        origin="o",
        index=0,
    )
    [prepared] = adapter.prepare("submissions", [record], KEY)
    table = raw_table("odk", "submissions")
    assert set(prepared) == {*table.entity_columns, "deleted"}
    text = json.dumps(prepared)
    for secret in ("Amina Mwangi", "+999712345678", "HH-DL_D001_HC01-01-001", "Collector Name"):
        assert secret not in text
    with pytest.raises(ConfigError, match="pseudonymiser"):
        adapter.prepare("submissions", [record], None)


def test_kobo_prepared_records_drop_gps_and_submitter() -> None:
    asset = kobo.KoboAsset("aAsset1", "nutrition_muac_wash_screening")
    record = kobo.parse_result(result(1), asset=asset, origin="o", index=0)
    [prepared] = adapter_for("kobo").prepare("submissions", [record], KEY)
    assert prepared["submission_id"] == "1001" and prepared["review_state"]
    text = json.dumps(prepared)
    assert "33.0" not in text and "enumerator_name" not in text


@pytest.mark.parametrize("source_type", ["odk", "kobo"])
def test_suites_check_raw_or_helper_columns_with_the_truth_rule_names(source_type: str) -> None:
    adapter = adapter_for(source_type)
    table = raw_table(source_type, "submissions")
    spec = load_suite_spec(table)
    helpers = set(getattr(adapter, "helper_columns"))  # noqa: B009
    columns = {*table.entity_columns, "extras", "is_deleted", *helpers}
    assert {e.column for e in spec.expectations} <= columns
    rules = {e.rule for e in spec.expectations}
    assert {"org_unit_known", "required_field_present", "value_in_range", "schema_drift"} <= rules
    assert adapter.patient_level is True
