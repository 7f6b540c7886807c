"""FHIR sources end to end against the sandbox serving a small simulated country: full and
incremental pulls in search and Bulk Data mode, paging, auth failure, faults, a cut-off
response, every injected defect quarantined (and nothing else), the pseudonymisation key
required, and no personal data in raw, audit or the logs."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pipelines.sources.fhir as fhir_adapter
from connectors.http import RetryPolicy, SourceAuthError, SourceHTTPError
from pipelines.audit import utc_now
from pipelines.config import HealthpipeConfig, parse_config
from pipelines.errors import ConfigError
from pipelines.land import land_records
from pipelines.privacy import Pseudonymiser
from pipelines.run import SourceSummary, ingest_source, open_warehouse
from pipelines.sandbox import Credentials, FhirSettings, SandboxSettings
from pipelines.sandbox.server import start_sandbox
from pipelines.simulate import simulate
from pipelines.transform import run_dbt
from pipelines.validate import validate_pending
from pipelines.warehouse import Warehouse
from tests.conftest import small_country

KEY_ENV = "HEALTHPIPE_PSEUDONYM_KEY"
KEY = "fhir-integration-test-key-0123456789"
PSEUDONYMS = Pseudonymiser(KEY.encode())
SERVERS = ("emr", "ihris")
FAST_RETRIES = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture(scope="module")
def country_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fhir_country")
    simulate(root, country=small_country(), weeks=30, sources=["dhis2", "fhir"])
    return root


def make_config(
    country_dir: Path, warehouse: str, state: Path, *fhir_sources: dict[str, Any]
) -> HealthpipeConfig:
    # DHIS2 metadata (org units with their codes) comes from the simulator's folder.
    hmis = {"name": "hmis", "type": "dhis2", "path": str(country_dir / "dhis2" / "metadata")}
    data = {"warehouse": warehouse, "state_dir": str(state), "sources": [hmis, *fhir_sources]}
    return parse_config(data, origin="test", base_dir=state, env={"FHIR_TOKEN": "wrong-token"})


@pytest.fixture(scope="module")
def metadata_file(country_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse holding the DHIS2 metadata (org units and their codes), landed once and
    copied by each test."""
    state = tmp_path_factory.mktemp("fhir_metadata")
    file = state / "warehouse.duckdb"
    config = make_config(country_dir, f"duckdb:///{file}", state)
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="metadata")
    return file


@pytest.fixture
def metadata_url(metadata_file: Path, tmp_path: Path) -> str:
    file = tmp_path / "warehouse.duckdb"
    shutil.copy(metadata_file, file)
    return f"duckdb:///{file}"


def fhir_source(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "fhir", "base_url": url, **extra}


def pseudonymised(resource_type: str, resource_id: str) -> str:
    if resource_type != "Patient":
        return resource_id
    return str(PSEUDONYMS.pseudonym("patient", resource_id))


def ndjson(country_dir: Path, server: str, resource_type: str) -> list[dict[str, Any]]:
    path = country_dir / "fhir" / server / "ndjson" / f"{resource_type}.ndjson"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def expected_keys(country_dir: Path, server: str) -> dict[str, set[tuple[str, str]]]:
    """Per raw table, the (resource_id, version_id) of every resource in the NDJSON files."""
    result = {}
    for resource_type in fhir_adapter.RESOURCE_TYPES:
        resources = ndjson(country_dir, server, resource_type)
        if resources:
            result[f"fhir__{fhir_adapter.entity_of(resource_type)}"] = {
                (pseudonymised(resource_type, r["id"]), r["meta"]["versionId"]) for r in resources
            }
    return result


def landed_keys(warehouse: Warehouse, source: str) -> dict[str, set[tuple[str, str]]]:
    result = {}
    for table in fhir_adapter.TABLES:
        rows = warehouse.fetchall(
            f"select resource_id, version_id from {table.qualified_name} where source_name = $s",
            {"s": source},
        )
        if rows:
            result[table.name] = {(str(a), str(b)) for a, b in rows}
    return result


def cursor_of(warehouse: Warehouse, source: str) -> str | None:
    value = warehouse.fetch_scalar(
        "select cursor from audit.source_state where source_name = $s", {"s": source}
    )
    return None if value is None else str(value)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class SearchRun:
    """The module's shared search-mode run: a full pull of both servers, then a second
    pull with nothing changed on the servers."""

    warehouse_file: Path
    config: HealthpipeConfig
    full: dict[str, SourceSummary] = field(default_factory=dict)
    again: dict[str, SourceSummary] = field(default_factory=dict)
    pages: dict[tuple[str, str], int] = field(default_factory=dict)
    cursors: dict[str, str | None] = field(default_factory=dict)
    cursors_again: dict[str, str | None] = field(default_factory=dict)
    logs: str = ""


@pytest.fixture(scope="module")
def search_run(
    country_dir: Path, metadata_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SearchRun]:
    state = tmp_path_factory.mktemp("fhir_search")
    file = state / "warehouse.duckdb"
    shutil.copy(metadata_file, file)
    collector = _Collect()
    root = logging.getLogger()
    level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    try:
        with pytest.MonkeyPatch.context() as patch, start_sandbox(country_dir) as sandbox:
            patch.setenv(KEY_ENV, KEY)
            sources = [fhir_source(s, sandbox.fhir_url(s)) for s in SERVERS]
            config = make_config(country_dir, f"duckdb:///{file}", state, *sources)
            run = SearchRun(file, config)

            def count_page(source: str, entity: str, _: int) -> None:
                run.pages[(source, entity)] = run.pages.get((source, entity), 0) + 1

            with open_warehouse(config) as warehouse:
                for name in SERVERS:
                    run.full[name] = ingest_source(
                        warehouse, config.source(name), config, run_id="full", on_page=count_page
                    )
                    run.cursors[name] = cursor_of(warehouse, name)
                for name in SERVERS:
                    run.again[name] = ingest_source(
                        warehouse, config.source(name), config, run_id="again"
                    )
                    run.cursors_again[name] = cursor_of(warehouse, name)
    finally:
        root.removeHandler(collector)
        root.setLevel(level)
    run.logs = "\n".join(collector.lines)
    yield run


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


# --- search mode ---------------------------------------------------------------------------


def test_a_full_search_pull_lands_every_resource(search_run: SearchRun, country_dir: Path) -> None:
    with Warehouse.open(f"duckdb:///{search_run.warehouse_file}") as warehouse:
        for server in SERVERS:
            assert landed_keys(warehouse, server) == expected_keys(country_dir, server), server
    received = search_run.full["ihris"].entities["practitioner"].received
    assert received == len(ndjson(country_dir, "ihris", "Practitioner")) > 300
    # 326 practitioners at OpenMRS's limit of 100 a page.
    assert search_run.full["ihris"].entities["practitioner"].pages_fetched >= 3


def test_an_incremental_pull_after_nothing_changed_lands_nothing_new(
    search_run: SearchRun, country_dir: Path
) -> None:
    for server in SERVERS:
        for entity, counts in search_run.again[server].entities.items():
            assert counts.inserted == counts.updated == 0, (server, entity)
            # Only the overlap window before the cursor is asked for again.
            assert counts.received <= 5, (server, entity, counts.received)
        assert search_run.cursors_again[server] == search_run.cursors[server]
        cursor = json.loads(search_run.cursors[server] or "{}")
        served = {t for t in fhir_adapter.RESOURCE_TYPES if ndjson(country_dir, server, t)}
        assert set(cursor["lastUpdated"]) == served


def test_every_fhir_defect_is_quarantined_with_its_rule_and_nothing_else(
    search_run: SearchRun, country_dir: Path
) -> None:
    truth = json.loads((country_dir / "truth.json").read_text(encoding="utf-8"))
    expected = {
        (
            f"fhir__{d['entity']}",
            f"{pseudonymised(d['record']['resource_type'], d['record']['id'])}|{d['record']['version']}",
            d["expected_rule"],
        )
        for d in truth["defects"]
        if d["source"] == "fhir"
    }
    assert {rule for *_, rule in expected} == {
        "loinc_known", "icd10_known", "subject_present", "date_not_in_future",
    }  # fmt: skip
    with Warehouse.open(f"duckdb:///{search_run.warehouse_file}") as warehouse:
        found = set(
            warehouse.fetchall(
                "select raw_table, record_key, rule from audit.quarantine "
                "where raw_table like 'fhir__%'"
            )
        )
        held_back = warehouse.fetch_scalar(
            "select count(*) from ("
            + " union all ".join(
                f"select 1 from {t.qualified_name} where validation_status <> 'valid'"
                for t in fhir_adapter.TABLES
            )
            + ") q"
        )
    true_positives = found & expected
    precision = len(true_positives) / len(found) if found else 0.0
    recall = len(true_positives) / len(expected)
    assert (precision, recall) == (1.0, 1.0), (found - expected, expected - found)
    assert held_back == len(expected)  # no clean resource is held back


# --- privacy -------------------------------------------------------------------------------


TOKEN = re.compile(r"[A-Za-z0-9+\-]+")
"""Words, ids, dates and phone numbers as whole tokens (a name inside a longer word, or a
date at the start of a timestamp, is not that name or date)."""


class Text:
    """A body of text searchable for whole words quickly (thousands of words are checked)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = set(TOKEN.findall(text))

    def __contains__(self, word: str) -> bool:
        return word in self.tokens if TOKEN.fullmatch(word) else word in self.text


def personal_data(country_dir: Path) -> set[str]:
    """Names, phones, addresses, exact birth dates and raw patient ids and identifiers from
    the source files. Words and dates that also occur in non-personal source data (a
    facility named like a person, a clinic day equal to a birth date) cannot be told apart
    and are left out of the scan."""
    always: set[str] = set()
    contextual: set[str] = set()
    for server in SERVERS:
        for resource_type in ("Patient", "Practitioner"):
            for person in ndjson(country_dir, server, resource_type):
                if resource_type == "Patient":
                    always.add(person["id"])
                always |= {i["value"] for i in person.get("identifier", [])}
                always |= {t["value"] for t in person.get("telecom", [])}
                for name in person.get("name", []):
                    contextual |= {name["family"], *name.get("given", [])}
                for address in person.get("address", []):
                    always |= set(address.get("line", []))
                    contextual.add(address.get("city", ""))
                contextual.add(person.get("birthDate", ""))
    other = [
        path.read_text(encoding="utf-8")
        for path in sorted(country_dir.rglob("*"))
        if path.is_file()
        and path.suffix in (".json", ".ndjson", ".csv")
        and path.stem not in ("Patient", "Practitioner")
        and "search" not in path.parts
        and path.name != "truth.json"
    ]
    text = Text("\n".join(other))
    return always | {word for word in contextual if word and word not in text}


def warehouse_text(warehouse: Warehouse) -> str:
    tables = warehouse.fetchall(
        "select table_schema, table_name from information_schema.tables "
        "where table_schema in ('raw', 'audit')"
    )
    assert len(tables) > 10
    chunks = []
    for schema, name in tables:
        for row in warehouse.fetchall(f"select * from {schema}.{name}"):
            chunks.append(" ".join("" if v is None else str(v) for v in row))
    return "\n".join(chunks)


def test_no_personal_data_reaches_raw_audit_or_the_logs(
    search_run: SearchRun, country_dir: Path
) -> None:
    personal = personal_data(country_dir)
    assert len(personal) > 500  # names, phones, addresses, dates and ids of ~350 people
    with Warehouse.open(f"duckdb:///{search_run.warehouse_file}") as warehouse:
        stored = warehouse_text(warehouse)
        assert warehouse.row_count("raw.fhir__patient") > 0
    assert search_run.logs  # the pulls did log (pages, validation)
    for where, text in (("warehouse", Text(stored)), ("logs", Text(search_run.logs))):
        leaks = sorted(word for word in personal if word in text)
        assert leaks == [], (where, leaks[:10])


def test_a_patient_level_source_refuses_to_run_without_the_key(
    country_dir: Path, metadata_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with start_sandbox(country_dir) as sandbox:
        source = fhir_source("emr", sandbox.fhir_url("emr"))
        config = make_config(country_dir, metadata_url, tmp_path, source)
        with open_warehouse(config) as warehouse:
            with pytest.raises(ConfigError, match=f"{KEY_ENV}.*nothing was read"):
                ingest_source(warehouse, config.source("emr"), config, run_id="r")
            assert warehouse.row_count("raw.fhir__patient") == 0
            assert cursor_of(warehouse, "emr") is None


# --- Bulk Data -----------------------------------------------------------------------------


def test_a_bulk_pull_lands_every_resource_then_nothing_new(
    country_dir: Path, metadata_url: str, tmp_path: Path, key: None
) -> None:
    quick = SandboxSettings(fhir=FhirSettings(bulk_polls=1, bulk_retry_after=0))
    with start_sandbox(country_dir, settings=quick) as sandbox:
        sources = [fhir_source(s, sandbox.fhir_url(s), bulk=True) for s in SERVERS]
        config = make_config(country_dir, metadata_url, tmp_path, *sources)
        with open_warehouse(config) as warehouse:
            for server in SERVERS:
                summary = ingest_source(warehouse, config.source(server), config, run_id="full")
                expected = expected_keys(country_dir, server)
                assert landed_keys(warehouse, server) == expected, server
                received = {f"fhir__{e}": c.received for e, c in summary.entities.items()}
                assert received == {table: len(keys) for table, keys in expected.items()}
                cursor = json.loads(cursor_of(warehouse, server) or "{}")
                assert len(set(cursor["lastUpdated"].values())) == 1  # the transactionTime
                again = ingest_source(warehouse, config.source(server), config, run_id="again")
                assert all(c.inserted == c.updated == 0 for c in again.entities.values())


# --- failures ------------------------------------------------------------------------------


def test_a_refused_token_fails_at_once_with_a_clear_error(
    country_dir: Path,
    metadata_url: str,
    tmp_path: Path,
    key: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FHIR_TOKEN", "wrong-token")
    caplog.set_level(logging.DEBUG)
    credentials = Credentials(fhir_token="the-right-token")
    with start_sandbox(country_dir, credentials=credentials) as sandbox:
        source = fhir_source("emr", sandbox.fhir_url("emr"), token_env="FHIR_TOKEN")
        config = make_config(country_dir, metadata_url, tmp_path, source)
        started = time.monotonic()
        with open_warehouse(config) as warehouse, pytest.raises(SourceAuthError) as error:
            ingest_source(warehouse, config.source("emr"), config, run_id="r")
    message = str(error.value)
    assert "401" in message and "FHIR_TOKEN" in message and "emr" in message
    assert "wrong-token" not in message and "wrong-token" not in caplog.text
    assert "retry" not in caplog.text  # refused credentials are not retried
    assert time.monotonic() - started < 5


def test_429_503_and_resets_are_retried_as_asked_with_nothing_lost_or_doubled(
    country_dir: Path,
    metadata_url: str,
    tmp_path: Path,
    key: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="connectors.http")
    faults = "429:0.15,503:0.15,reset:0.15,retry_after=2,seed=6"
    with start_sandbox(country_dir, faults=faults) as sandbox:
        source = fhir_source(
            "emr", sandbox.fhir_url("emr"), resource_types=["Patient", "Observation"], page_size=40
        )
        config = make_config(country_dir, metadata_url, tmp_path, source)
        with open_warehouse(config) as warehouse:
            ingest_source(warehouse, config.source("emr"), config, run_id="r")
            landed = landed_keys(warehouse, "emr")
            rows = warehouse.fetch_scalar("select count(*) from raw.fhir__observation")
        assert sandbox.injector is not None
        drawn = sandbox.injector.drawn
    assert drawn["429"] >= 1 and drawn["503"] >= 1 and drawn["reset"] >= 1, drawn
    expected = expected_keys(country_dir, "emr")
    assert landed == {t: expected[t] for t in ("fhir__patient", "fhir__observation")}
    assert rows == len(expected["fhir__observation"])
    # Retry-After (2 s, or an HTTP date about 2 s ahead) was waited for, not the back-off.
    waits = [
        float(found[1])
        for found in re.finditer(r"\(HTTP (?:429|503)\); retry \d of \d in ([\d.]+) s", caplog.text)
    ]
    assert len(waits) == drawn["429"] + drawn["503"]
    assert all(1.0 <= wait <= 2.0 for wait in waits), waits


def test_a_cut_off_response_fails_the_pull_and_keeps_the_cursor(
    search_run: SearchRun,
    country_dir: Path,
    tmp_path: Path,
    key: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fhir_adapter, "RETRY_POLICY", FAST_RETRIES)
    file = tmp_path / "warehouse.duckdb"
    shutil.copy(search_run.warehouse_file, file)
    with start_sandbox(country_dir, faults="truncate:1.0") as sandbox:
        config = make_config(
            country_dir, f"duckdb:///{file}", tmp_path, fhir_source("emr", sandbox.fhir_url("emr"))
        )
        with open_warehouse(config) as warehouse:
            before = landed_keys(warehouse, "emr")
            with pytest.raises(SourceHTTPError, match="cut-off"):
                ingest_source(warehouse, config.source("emr"), config, run_id="cut")
            assert cursor_of(warehouse, "emr") == search_run.cursors["emr"]
            assert landed_keys(warehouse, "emr") == before


# --- staging -------------------------------------------------------------------------------


def land_and_validate(warehouse: Warehouse, entity: str, resources: list[dict[str, Any]]) -> None:
    """One extra page for source emr, as ingest_source would land and validate it."""
    adapter = fhir_adapter.FhirAdapter()
    table = next(t for t in fhir_adapter.TABLES if t.entity == entity)
    now = utc_now()
    rows = adapter.prepare(entity, resources, PSEUDONYMS)
    land_records(
        warehouse, table, "emr", rows, run_id="extra", batch_id="extra", extracted_at=now, now=now
    )
    references = adapter.references(warehouse, "emr", entity)
    validate_pending(
        warehouse,
        table,
        "emr",
        references=references,
        enrich=lambda frame: adapter.enrich(entity, frame, references),
        run_id="extra",
        batch_id="extra",
        now=now,
    )


@pytest.mark.slow  # a dbt build: about 10 s
def test_staging_publishes_the_latest_valid_version_of_each_resource(
    search_run: SearchRun, country_dir: Path, tmp_path: Path
) -> None:
    truth = json.loads((country_dir / "truth.json").read_text(encoding="utf-8"))
    defective = {d["record"]["id"] for d in truth["defects"] if d["source"] == "fhir"}
    resolved = next(
        r
        for r in ndjson(country_dir, "emr", "Condition")
        if r["meta"]["versionId"] == "2" and r["id"] not in defective
    )
    # The same condition as first recorded (still active), and a deleted observation.
    first_version = {
        **resolved,
        "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00Z"},
        "clinicalStatus": {"coding": [{"code": "active"}]},
    }
    deleted = next(r for r in ndjson(country_dir, "emr", "Observation") if r["id"] not in defective)
    tombstone = {
        "resourceType": "Observation",
        "id": deleted["id"],
        "meta": {"lastUpdated": "2026-02-15T00:00:00Z"},
        "deleted": True,
    }
    file = tmp_path / "warehouse.duckdb"
    shutil.copy(search_run.warehouse_file, file)
    with Warehouse.open(f"duckdb:///{file}") as warehouse:
        land_and_validate(warehouse, "condition", [first_version])
        land_and_validate(warehouse, "observation", [tombstone])
        dbt_env = warehouse.dbt_env()
    outcome = run_dbt(["build", "--select", "staging.fhir"], dbt_env=dbt_env, state_dir=tmp_path)
    assert outcome.failed == []
    with Warehouse.open(f"duckdb:///{file}") as warehouse:
        for resource_type in ("Patient", "Observation", "Condition", "PractitionerRole"):
            entity = fhir_adapter.entity_of(resource_type)
            ids = {
                pseudonymised(resource_type, r["id"])
                for server in SERVERS
                for r in ndjson(country_dir, server, resource_type)
                if r["id"] not in defective | {deleted["id"]}
            }
            published = warehouse.fetchall(f"select {entity}_id from staging.stg_fhir__{entity}")
            assert sorted(row[0] for row in published) == sorted(ids), resource_type
        status = warehouse.fetchall(
            "select version_id, clinical_status from staging.stg_fhir__condition "
            "where condition_id = $id",
            {"id": resolved["id"]},
        )
        viral_loads = warehouse.fetchall(
            "select value_numeric, value_unit, effective_date, patient_id "
            "from staging.stg_fhir__observation where code = '20447-9'"
        )
    assert status == [("2", "resolved")]
    assert viral_loads and all(v is not None and u == "{copies}/mL" for v, u, _, _ in viral_loads)
    assert all(day is not None and patient for _, _, day, patient in viral_loads)
