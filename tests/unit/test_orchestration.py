"""What the DAGs ask of the pipeline: how a source's pull is split, which pool a warehouse
needs, where credentials come from, and how a failure is told to the alert channels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from pipelines.config import parse_config
from pipelines.failures import Failure, first_line, notify_failure
from pipelines.orchestration import (
    DEFAULT_POOL,
    DUCKDB_POOL,
    ORG_UNIT_CHUNK,
    chunk_cursor_key,
    plan_pulls,
    source_credentials,
    warehouse_pool,
)


def config(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config(
        {"sources": sources, **extra}, origin="test", base_dir=tmp_path, env={},
        check_credentials=False,
    )  # fmt: skip


def test_a_large_dhis2_api_pull_is_split_into_org_unit_chunks(tmp_path: Path) -> None:
    roots = [f"OU{i:09d}" for i in range(2 * ORG_UNIT_CHUNK + 5)]
    source = config(
        tmp_path,
        [{"name": "hmis", "type": "dhis2", "base_url": "https://x.org", "org_units": roots}],
    ).sources[0]
    pulls = plan_pulls(source)
    assert len(pulls) == 3
    assert [ou for pull in pulls for ou in pull["org_units"] or []] == roots
    assert pulls[-1]["label"] == f"hmis org units {2 * ORG_UNIT_CHUNK + 1}-{len(roots)}"
    keys = {chunk_cursor_key(source, pull["org_units"] or []) for pull in pulls}
    assert len(keys) == 3 and all(key.startswith("files:org_units:") for key in keys)
    first = pulls[0]["org_units"] or []
    assert chunk_cursor_key(source, first) == chunk_cursor_key(source, list(reversed(first)))


def test_other_sources_are_pulled_whole(tmp_path: Path) -> None:
    sources = config(
        tmp_path,
        [
            {"name": "drop", "type": "dhis2", "path": "drop", "org_units": ["a"] * 50},
            {"name": "few", "type": "dhis2", "base_url": "https://x.org", "org_units": ["a"]},
            {"name": "emr", "type": "fhir", "base_url": "https://emr.org/fhir"},
        ],
    ).sources
    assert [plan_pulls(s) for s in sources] == [
        [{"label": s.name, "org_units": None}] for s in sources
    ]


def test_duckdb_has_one_writer_postgresql_many() -> None:
    assert warehouse_pool("duckdb:////data/w.duckdb") == DUCKDB_POOL
    assert warehouse_pool("postgresql://u@h:5432/db") == DEFAULT_POOL


def test_credentials_come_from_the_environment_then_the_connection(tmp_path: Path) -> None:
    odk, kobo = config(
        tmp_path,
        [
            {"name": "chw", "type": "odk", "base_url": "https://o.org", "project_id": 1,
             "username_env": "ODK_USER", "password_env": "ODK_PASSWORD"},
            {"name": "nut", "type": "kobo", "base_url": "https://k.org", "token_env": "KOBO"},
        ],
    ).sources  # fmt: skip
    asked: list[str] = []

    def lookup(conn_id: str) -> dict[str, Any] | None:
        asked.append(conn_id)
        return {"healthpipe_chw": {"login": "conn-user", "password": "conn-pw"}}.get(conn_id)

    env = {"ODK_USER": "env-user"}
    assert source_credentials(odk, env, lookup) == {
        "ODK_USER": "env-user",  # the environment wins
        "ODK_PASSWORD": "conn-pw",
    }
    assert source_credentials(kobo, {"KOBO": "t"}, lookup) == {"KOBO": "t"}
    assert source_credentials(kobo, {}, lookup) == {}  # the connector will name KOBO as unset
    assert asked == ["healthpipe_chw", "healthpipe_nut"]


def test_a_failure_goes_to_every_channel_and_a_dead_one_is_only_logged(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    httpserver.expect_request("/gone", method="POST").respond_with_data("gone", status=404)
    settings = config(
        tmp_path,
        [{"name": "hmis", "type": "dhis2", "path": "drop"}],
        notifications=[
            {"name": "down", "type": "webhook", "url": httpserver.url_for("/gone")},
            {"name": "ops", "type": "webhook", "url": httpserver.url_for("/hook")},
        ],
    )
    error = RuntimeError("hmis: page 3: HTTP 502 from the server\nTraceback details")
    failure = Failure("healthpipe_ingest_hmis", "extract_land_validate", "hmis", first_line(error))
    assert notify_failure(settings, failure, env={}) == {"down": False, "ops": True}
    body = httpserver.log[-1][0].get_json()
    assert body["failure"]["error"] == "hmis: page 3: HTTP 502 from the server"
    assert body["failure"]["source"] == "hmis"
    assert "healthpipe_ingest_hmis.extract_land_validate (source hmis)" in body["text"]


def test_first_line_of_an_error_without_message() -> None:
    assert first_line(TimeoutError()) == "TimeoutError"
    assert first_line(None) == "no error recorded"
