"""ODK Central and KoboToolbox sources against the sandbox serving a small simulated country:
full and incremental pulls, paging, auth failures, faults, cut-off bodies, every community
defect of truth.json caught, the staging models, and no personal data anywhere."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import connectors.http
from connectors import kobo, odk
from connectors.http import Credentials, HttpClient, RetryPolicy, SourceAuthError, SourceHTTPError
from pipelines.config import HealthpipeConfig, parse_config
from pipelines.errors import ConfigError
from pipelines.run import SourceSummary, ingest_source, open_warehouse
from pipelines.sandbox.auth import Credentials as SandboxCredentials
from pipelines.sandbox.server import Sandbox, start_sandbox
from pipelines.simulate import simulate
from pipelines.simulate.community import FAMILY_NAMES, FIRST_NAMES
from pipelines.transform import run_dbt
from pipelines.warehouse import Warehouse
from tests.conftest import small_country

SANDBOX = SandboxCredentials()
KEY_ENV = "HEALTHPIPE_PSEUDONYM_KEY"
ENV = {
    KEY_ENV: "integration-test-pseudonym-key",
    "ODK_USER": SANDBOX.odk_email,
    "ODK_PASSWORD": SANDBOX.odk_password,
    "KOBO_TOKEN": SANDBOX.kobo_token,
}
FORMS = ("household_visit", "referral_followup", "cebs_signal")
COMMUNITY_TABLES = ("odk__submissions", "kobo__submissions")
SECRET_KINDS = ("names", "phones", "households", "referrals", "places", "people")


@dataclass
class Expected:
    """What the files hold, as a server shows it."""

    visible: dict[str, set[str]] = field(default_factory=dict)
    deleted: dict[str, set[str]] = field(default_factory=dict)
    repeated: dict[str, int] = field(default_factory=dict)
    kobo_ids: set[str] = field(default_factory=set)
    secrets: dict[str, set[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def country(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("community_country")
    simulate(root, country=small_country(), weeks=30, sources=["dhis2", "community"])
    metadata = root / "dhis2_metadata"
    shutil.copytree(root / "dhis2" / "metadata", metadata / "metadata")
    return root


@pytest.fixture(scope="module")
def expected(country: Path) -> Expected:
    result = Expected()
    found: dict[str, list[Any]] = {kind: [] for kind in SECRET_KINDS}
    for form in FORMS:
        path = country / "odk" / "projects" / "1" / "forms" / form / "submissions.json"
        rows = json.loads(path.read_text())["value"]
        live = [r["__id"] for r in rows if not r["__system"]["deletedAt"]]
        result.visible[form] = set(live)
        result.repeated[form] = len(live) - len(set(live))
        result.deleted[form] = {r["__id"] for r in rows if r["__system"]["deletedAt"]}
        for row in rows:
            household = row.get("household") or {}
            found["names"].append(household.get("head_name"))
            found["phones"].append(household.get("head_phone"))
            found["households"].append(household.get("household_id"))
            found["referrals"].append(
                row.get("referral_id") or (row.get("referral") or {}).get("referral_id")
            )
            found["people"].append(row["__system"]["deviceId"])
    for data in (country / "kobo" / "assets").glob("*/data.json"):
        results = json.loads(data.read_text())["results"]
        result.kobo_ids |= {str(r["_id"]) for r in results}
        found["places"] += [r.get("site/gps") for r in results]
        found["people"] += [r["_submitted_by"] for r in results]
    result.secrets = {kind: {str(v) for v in values if v} for kind, values in found.items()}
    return result


@pytest.fixture(scope="module")
def truth(country: Path) -> list[dict[str, Any]]:
    defects = json.loads((country / "truth.json").read_text())["defects"]
    return [d for d in defects if d["source"] in ("odk", "kobo")]


def land_metadata(url: str, country: Path, state: Path) -> None:
    """DHIS2 metadata from the folder, so facility codes can be checked."""
    source = {"name": "hmis", "type": "dhis2", "path": str(country / "dhis2_metadata")}
    config = parse_config(
        {"warehouse": url, "state_dir": str(state), "sources": [source]},
        origin="test",
        base_dir=state,
        env={},
    )
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="metadata")


@pytest.fixture(scope="module")
def metadata_warehouse(country: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file holding the DHIS2 metadata; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("metadata_warehouse")
    land_metadata(f"duckdb:///{folder / 'base.duckdb'}", country, folder)
    return folder / "base.duckdb"


@pytest.fixture
def duck_url(metadata_warehouse: Path, tmp_path: Path) -> str:
    shutil.copy(metadata_warehouse, tmp_path / "warehouse.duckdb")
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HEALTHPIPE_WAREHOUSE", raising=False)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same number of attempts, millisecond back-off: the tests wait for nothing."""
    monkeypatch.setattr(
        connectors.http, "RetryPolicy", partial(RetryPolicy, backoff_base=0.001, backoff_max=0.01)
    )


@pytest.fixture
def sandbox(country: Path) -> Iterator[Sandbox]:
    with start_sandbox(country) as server:
        yield server


def config_for(
    server: Sandbox, url: str, state: Path, *, odk_extra: Any = None, kobo_extra: Any = None
) -> HealthpipeConfig:
    sources = [
        {
            "name": "chw",
            "type": "odk",
            "base_url": server.odk_url,
            "project_id": 1,
            "username_env": "ODK_USER",
            "password_env": "ODK_PASSWORD",
            "page_size": 1000,
            **(odk_extra or {}),
        },
        {
            "name": "nutrition",
            "type": "kobo",
            "base_url": server.kobo_url,
            "token_env": "KOBO_TOKEN",
            "page_size": 100,
            **(kobo_extra or {}),
        },
    ]
    data = {"warehouse": url, "state_dir": str(state), "sources": sources}
    return parse_config(data, origin="test", base_dir=state, env=ENV)


def ingest(warehouse: Warehouse, config: HealthpipeConfig, name: str, run: str) -> SourceSummary:
    return ingest_source(warehouse, config.source(name), config, run_id=run)


def count_requests(server: Sandbox, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    handle: Callable[..., Any] = server.app.handle

    def counting(request: Any) -> Any:
        seen.append(f"{request.method} {request.path}")
        return handle(request)

    monkeypatch.setattr(server.app, "handle", counting)
    return seen


# --- what landed ---------------------------------------------------------------------------


def odk_rows(warehouse: Warehouse) -> dict[str, dict[str, bool]]:
    rows = warehouse.fetchall("select form_id, submission_id, is_deleted from raw.odk__submissions")
    landed: dict[str, dict[str, bool]] = {}
    for form, submission, deleted in rows:
        landed.setdefault(form, {})[submission] = bool(deleted)
    return landed


def quarantined(warehouse: Warehouse) -> set[tuple[str, str, str]]:
    """(raw table, instance id as truth.json names it, rule) of every quarantined record."""
    rows = warehouse.fetchall(
        "select raw_table, rule, record_json from audit.quarantine "
        "where raw_table in ('odk__submissions', 'kobo__submissions')"
    )
    found = set()
    for table, rule, record in rows:
        fields = json.loads(record)
        instance = fields["submission_id"] if table == "odk__submissions" else fields["instance_id"]
        found.add((table, instance, rule))
    return found


def score(
    warehouse: Warehouse, truth: list[dict[str, Any]], odk_duplicates: int
) -> tuple[int, int, int]:
    """True positives, false positives and misses over the community defects. An ODK
    duplicate (the same __id twice) is caught when landing counted it and raw holds it once."""
    caught = quarantined(warehouse)
    expected = set()
    hits = misses = 0
    for defect in truth:
        table = f"{defect['source']}__submissions"
        instance = defect["record"]["instance_id"]
        key = (table, instance, defect["expected_rule"])
        expected.add(key)
        if defect["source"] == "odk" and defect["expected_rule"] == "duplicate":
            stored = warehouse.fetch_scalar(
                "select count(*) from raw.odk__submissions where submission_id = $id",
                {"id": instance},
            )
            found = odk_duplicates >= 1 and stored == 1
        else:
            found = key in caught
        hits, misses = hits + found, misses + (not found)
    return hits, len(caught - expected), misses


def scan_for_personal_data(warehouse: Warehouse, logs: str, secrets: dict[str, set[str]]) -> None:
    """Every text value of the community raw tables and of every audit table, and the logs,
    hold none of the names, phones, household or referral ids, GPS or user names of the files."""
    texts = [logs]
    for table in [*(f"raw.{t}" for t in COMMUNITY_TABLES), "audit.pipeline_runs",
                  "audit.source_state", "audit.validation_results", "audit.quarantine"]:  # fmt: skip
        for row in warehouse.fetchall(f"select * from {table}"):
            texts.append("\x1f".join(str(v) for v in row if v is not None))
    everything = "\n".join(texts)
    names = re.compile(rf"\b(?:{'|'.join(FIRST_NAMES)}) (?:{'|'.join(FAMILY_NAMES)})\b")
    patterns = {
        "names": names,
        "phones": re.compile(r"\+999\d{6,}"),
        "households": re.compile(r"HH-[A-Za-z0-9_]+-\d+-\d+"),
        "referrals": re.compile(r"REF-[A-Za-z0-9_]+-\d+-\d+"),
        "places": re.compile(r"-?\d+\.\d+ -?\d+\.\d+ \d+\.0 \d+\.0"),
        "people": re.compile(r"collect:[A-Za-z0-9]+|nutri_[a-z0-9_]+_\d\d"),
    }
    for kind, pattern in patterns.items():
        leaked = set(pattern.findall(everything))
        assert not leaked, f"{kind} reached the warehouse or the logs: {sorted(leaked)[:3]}"
        # The patterns must recognise what the files hold, or the scan would prove nothing.
        assert secrets[kind] and all(pattern.fullmatch(s) for s in secrets[kind]), kind


# --- tests ---------------------------------------------------------------------------------


def test_full_and_incremental_pulls_catch_every_defect_and_build_staging(
    warehouse_url: str,
    country: Path,
    metadata_warehouse: Path,
    expected: Expected,
    truth: list[dict[str, Any]],
    sandbox: Sandbox,
    env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    if warehouse_url.startswith("duckdb"):
        shutil.copy(metadata_warehouse, warehouse_url.removeprefix("duckdb:///"))
    else:
        land_metadata(warehouse_url, country, tmp_path / "metadata")
    config = config_for(sandbox, warehouse_url, tmp_path)
    started = time.monotonic()
    with open_warehouse(config) as warehouse:
        chw = ingest(warehouse, config, "chw", "full")
        nutrition = ingest(warehouse, config, "nutrition", "full")
        full_seconds = time.monotonic() - started

        # Every visible submission landed once; deleted ones are tombstones.
        landed = odk_rows(warehouse)
        for form in FORMS:
            assert {k for k, d in landed[form].items() if not d} == expected.visible[form], form
            assert {k for k, d in landed[form].items() if d} == expected.deleted[form], form
        kobo_ids = {
            r[0] for r in warehouse.fetchall("select submission_id from raw.kobo__submissions")
        }
        assert kobo_ids == expected.kobo_ids
        odk_counts = chw.entities["submissions"]
        visible = sum(len(v) for v in expected.visible.values())
        deleted = sum(len(v) for v in expected.deleted.values())
        repeated = sum(expected.repeated.values())
        assert odk_counts.received == visible + deleted + repeated
        assert odk_counts.duplicates == repeated == 1
        # Paging: household_visit alone spans three pages of 1,000; Kobo pages of 100.
        assert chw.pages_fetched >= 5 and nutrition.pages_fetched >= 3

        # Every community defect of truth.json is caught, nothing clean is held back.
        hits, false_alarms, misses = score(warehouse, truth, odk_counts.duplicates)
        assert (hits, false_alarms, misses) == (len(truth), 0, 0)
        reasons = dict(
            warehouse.fetchall(
                "select rule, reason from audit.quarantine where rule = 'schema_drift' "
                "and raw_table = 'odk__submissions'"
            )
        )
        assert "renames muac/muac to muac/muac_mm" in reasons["schema_drift"]

        # Nothing changed: the incremental pull lands nothing new.
        cursors = warehouse.fetchall(
            "select source_name, cursor from audit.source_state order by 1"
        )
        again = [ingest(warehouse, config, name, "again") for name in ("chw", "nutrition")]
        for summary in again:
            counts = summary.entities.get("submissions")
            assert counts is None or (counts.inserted, counts.updated) == (0, 0)
        assert again[0].entities["submissions"].received < visible / 10
        assert (
            warehouse.fetchall("select source_name, cursor from audit.source_state order by 1")
            == cursors
        )

        valid = dict(
            warehouse.fetchall(
                "select form_id, count(*) from raw.odk__submissions "
                "where validation_status = 'valid' and not is_deleted group by 1"
            )
        )
        scan_for_personal_data(warehouse, caplog.text, expected.secrets)
        dbt_env = warehouse.dbt_env()

    run_dbt(
        ["build", "--select", "path:models/staging/odk", "path:models/staging/kobo"],
        dbt_env=dbt_env,
        state_dir=tmp_path / "state",
    )
    with Warehouse.open(warehouse_url) as warehouse:
        for form, model in zip(FORMS, ("household_visits", "referral_followups", "cebs_signals"),
                               strict=True):  # fmt: skip
            assert warehouse.row_count(f"staging.stg_odk__{model}") == valid[form]
        by_version = warehouse.fetchall(
            "select form_version, count(lowest_muac_mm) from staging.stg_odk__household_visits "
            "group by 1 order by 1"
        )
        assert len(by_version) == 2 and all(n > 0 for _, n in by_version)  # both field names
        oedema = warehouse.fetchall(
            "select form_version, count(has_oedema) from staging.stg_kobo__nutrition_screenings "
            "group by 1 order by 2"
        )
        assert [n > 0 for _, n in oedema] == [False, True]
        screened = warehouse.row_count("staging.stg_kobo__nutrition_screenings")
        assert screened == len(expected.kobo_ids) - 5  # four defective results and one copy
    assert full_seconds < 60


def test_wrong_credentials_fail_at_once_with_a_clear_error(
    sandbox: Sandbox,
    duck_url: str,
    env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ODK_PASSWORD", "not-the-password")
    monkeypatch.setenv("KOBO_TOKEN", "0" * 40)
    config = config_for(sandbox, duck_url, tmp_path)
    requests = count_requests(sandbox, monkeypatch)
    with open_warehouse(config) as warehouse:
        with pytest.raises(SourceAuthError) as odk_error:
            ingest(warehouse, config, "chw", "r")
        assert requests == ["POST /odk/v1/sessions"]  # no retry storm
        with pytest.raises(SourceAuthError) as kobo_error:
            ingest(warehouse, config, "nutrition", "r")
        assert len(requests) == 2
        assert warehouse.row_count("raw.odk__submissions") == 0
    assert "ODK_USER, ODK_PASSWORD" in str(odk_error.value)
    assert "not-the-password" not in str(odk_error.value)
    assert "KOBO_TOKEN" in str(kobo_error.value) and "0" * 40 not in str(kobo_error.value)


def test_retry_after_is_honoured(country: Path, expected: Expected) -> None:
    """Through the connectors with a recording sleep: every 429 and 503 waits what its
    Retry-After says (one second, or up to one second when given as an HTTP date)."""
    waits: list[float] = []
    with start_sandbox(country, faults="429:0.2,503:0.2,retry_after=1,seed=11") as server:
        odk_credentials = Credentials("basic", SANDBOX.odk_email, SANDBOX.odk_password)
        with HttpClient(
            server.odk_url, source="chw", credentials=odk_credentials, sleep=waits.append
        ) as client:
            settings = odk.OdkSettings("chw", 1, ["household_visit"], page_size=500)
            pages = list(odk.read_submissions(client, settings, None))
        with HttpClient(
            server.kobo_url,
            source="nutrition",
            credentials=Credentials("token", token=SANDBOX.kobo_token),
            sleep=waits.append,
        ) as client:
            [asset] = kobo.list_assets(client)
            config = kobo.KoboSettings("nutrition", page_size=50, overlap=timedelta(0))
            results = list(kobo.read_submissions(client, config, [asset], None))
        assert server.injector is not None
        drawn = server.injector.drawn["429"] + server.injector.drawn["503"]
    received = {r["submission_id"] for p in pages for r in p.records if not r["deleted"]}
    assert received == expected.visible["household_visit"]
    assert {str(r["submission_id"]) for p in results for r in p.records} == expected.kobo_ids
    assert drawn >= 3 and len(waits) == drawn
    assert all(0.0 <= wait <= 1.0 for wait in waits) and 1.0 in waits


def test_resets_and_busy_answers_are_retried_with_nothing_lost_or_doubled(
    country: Path,
    duck_url: str,
    expected: Expected,
    env: None,
    fast_retries: None,
    tmp_path: Path,
) -> None:
    faults = "reset:0.3,429:0.05,503:0.05,retry_after=0,seed=3"
    with start_sandbox(country, faults=faults) as server:
        config = config_for(server, duck_url, tmp_path)
        with open_warehouse(config) as warehouse:
            chw = ingest(warehouse, config, "chw", "r")
            nutrition = ingest(warehouse, config, "nutrition", "r")
            landed = odk_rows(warehouse)
            kobo_rows = warehouse.row_count("raw.kobo__submissions")
        assert server.injector is not None and server.injector.drawn["reset"] >= 2
    for form in FORMS:
        assert set(landed[form]) == expected.visible[form] | expected.deleted[form]
    counts = chw.entities["submissions"]
    visible = sum(len(v) for v in expected.visible.values())
    deleted = sum(len(v) for v in expected.deleted.values())
    assert counts.received == visible + deleted + 1 and counts.duplicates == 1
    assert nutrition.entities["submissions"].received == kobo_rows == len(expected.kobo_ids)


def test_a_cut_off_response_fails_the_pull_and_keeps_the_cursor(
    country: Path, duck_url: str, env: None, fast_retries: None, tmp_path: Path
) -> None:
    with start_sandbox(country) as server:
        config = config_for(server, duck_url, tmp_path)
        with open_warehouse(config) as warehouse:
            ingest(warehouse, config, "chw", "first")
            before = warehouse.fetch_scalar(
                "select cursor from audit.source_state where source_name = 'chw'"
            )
            rows = warehouse.row_count("raw.odk__submissions")
    with start_sandbox(country, faults="truncate:1.0") as server:
        config = config_for(server, duck_url, tmp_path)
        with open_warehouse(config) as warehouse:
            with pytest.raises(SourceHTTPError, match="cut-off"):
                ingest(warehouse, config, "chw", "cut")
            after = warehouse.fetch_scalar(
                "select cursor from audit.source_state where source_name = 'chw'"
            )
            assert after == before
            assert warehouse.row_count("raw.odk__submissions") == rows


def test_no_pseudonymisation_key_means_nothing_is_read(
    sandbox: Sandbox, duck_url: str, env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    config = config_for(sandbox, duck_url, tmp_path)
    requests = count_requests(sandbox, monkeypatch)
    with open_warehouse(config) as warehouse:
        for name in ("chw", "nutrition"):
            with pytest.raises(ConfigError, match=KEY_ENV):
                ingest(warehouse, config, name, "r")
        assert warehouse.row_count("raw.odk__submissions") == 0
        assert warehouse.row_count("raw.kobo__submissions") == 0
        assert not warehouse.fetchall(
            "select * from audit.source_state where source_name in ('chw', 'nutrition')"
        )
    assert requests == []


def test_a_form_without_a_spec_is_refused_before_any_request(
    sandbox: Sandbox, duck_url: str, env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(
        sandbox, duck_url, tmp_path, odk_extra={"forms": ["household_visit", "mother_register"]}
    )
    requests = count_requests(sandbox, monkeypatch)
    with open_warehouse(config) as warehouse:
        with pytest.raises(ConfigError, match=r"ODK form 'mother_register' has no form spec"):
            ingest(warehouse, config, "chw", "r")
        assert warehouse.row_count("raw.odk__submissions") == 0
    assert requests == []
