"""Network faults, through the DHIS2 Web API connector against the sandbox (429 and 503 with
Retry-After, resets, cut-off bodies, hanging responses) and against small local servers (a
body of 1 GB streamed at a client with a limit far below it, JSON nested 10,000 deep, XML
where JSON was asked for): retries are bounded, memory stays bounded, nothing partial is
committed, and whatever eventually arrives arrives once."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from connectors.http import HttpClient, ResponseRefused, RetryPolicy, SourceHTTPError
from pipelines.config import HealthpipeConfig, parse_config
from pipelines.periods import is_period
from pipelines.run import ingest_source, open_warehouse
from pipelines.sandbox.server import start_sandbox
from pipelines.simulate.dhis2_payloads import iter_data_values
from tests.reliability.results import Results

ENV = {"REL_NET_USER": "admin", "REL_NET_PASSWORD": "district"}


def config_for(url: str, state: Path, **extra: Any) -> HealthpipeConfig:
    source = {
        "name": "hmis",
        "type": "dhis2",
        "base_url": url,
        "username_env": "REL_NET_USER",
        "password_env": "REL_NET_PASSWORD",
        "start_date": "2025-01-01",
        **extra,
    }
    data = {
        "warehouse": f"duckdb:///{state / 'warehouse.duckdb'}",
        "state_dir": str(state),
        "sources": [source],
    }
    return parse_config(data, origin="reliability", base_dir=state, env=ENV)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def expected_keys(country: Path) -> set[tuple[str, ...]]:
    """What a DHIS2 server holding the files would serve (values it cannot hold, for an
    unknown org unit or an impossible period, never arrive through the API)."""
    metadata = country / "dhis2" / "metadata" / "organisationUnits.json"
    units = {unit["id"] for unit in json.loads(metadata.read_text())["organisationUnits"]}
    keys = set()
    for v in iter_data_values(country):
        if v.get("orgUnit") in units and is_period(v["period"]):
            keys.add(
                (
                    v["dataElement"],
                    v["period"],
                    v["orgUnit"],
                    v["categoryOptionCombo"],
                    v["attributeOptionCombo"],
                )
            )
    return keys


def landed_keys(config: HealthpipeConfig) -> list[tuple[str, ...]]:
    with open_warehouse(config) as warehouse:
        rows = warehouse.fetchall(
            "select data_element, period, org_unit, category_option_combo, "
            "attribute_option_combo from raw.dhis2__data_values"
        )
    return [tuple(str(part) for part in row) for row in rows]


FAULTS = "429:0.08,503:0.08,reset:0.06,truncate:0.06,slow:0.06,retry_after=0,slow_seconds=3"


def test_flaky_api_loses_nothing_and_doubles_nothing(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    """About a third of data requests fail (429/503 with Retry-After, resets, bodies cut
    off, answers held back past the read timeout): the pull retries within its bounds and
    lands every value once."""
    with start_sandbox(file_country, faults=f"{FAULTS},seed=11") as sandbox:
        config = config_for(sandbox.dhis2_url, tmp_path, timeout_seconds=1.5)
        with open_warehouse(config) as warehouse:
            ingest_source(warehouse, config.source("hmis"), config, run_id="flaky")
        assert sandbox.app.injector is not None
        drawn = dict(sandbox.app.injector.drawn)
    landed = landed_keys(config)
    expected = expected_keys(file_country)
    assert sum(drawn.values()) >= 5, drawn
    assert len(landed) == len(set(landed))
    assert set(landed) == expected
    results.record(
        "network",
        "429 and 503 with Retry-After, resets, cut-off bodies, answers held past the read "
        "timeout (about a third of data requests)",
        sum(drawn.values()),
        len(expected - set(landed)),
        faults=drawn,
        values_expected=len(expected),
        values_landed=len(landed),
        duplicates=len(landed) - len(set(landed)),
    )


@pytest.mark.parametrize("fault", ["truncate", "slow", "503"])
def test_a_fault_that_persists_fails_in_bounded_time_and_commits_nothing(
    file_country: Path, tmp_path: Path, results: Results, fault: str
) -> None:
    spec = f"{fault}:1.0,retry_after=0,slow_seconds=4"
    started = time.monotonic()
    with start_sandbox(file_country, faults=spec) as sandbox:
        config = config_for(sandbox.dhis2_url, tmp_path, timeout_seconds=1.0)
        with open_warehouse(config) as warehouse:
            with pytest.raises(SourceHTTPError, match="still failing after 5 attempts"):
                ingest_source(warehouse, config.source("hmis"), config, run_id="r")
            values = warehouse.row_count("raw.dhis2__data_values")
            cursors = warehouse.row_count("audit.source_state")
        assert sandbox.app.injector is not None
        drawn = sandbox.app.injector.drawn[fault]
    seconds = time.monotonic() - started
    # five attempts: read timeouts of 1 s and backoffs of at most 0.5 + 1 + 2 + 4 s
    assert seconds < 60
    assert (values, cursors) == (0, 0)
    results.record(
        "network",
        {
            "truncate": "every body cut off after half its bytes",
            "slow": "every answer held back 4 s, read timeout 1 s (a hanging server)",
            "503": "every request answered 503 with Retry-After",
        }[fault],
        drawn,
        values,
        attempts=5,
        seconds=round(seconds, 1),
        rows_committed=values,
        cursor_saved=cursors,
    )


class Endless(BaseHTTPRequestHandler):
    """Streams zeros in 1 MiB chunks (chunked encoding, no length announced) until the
    client hangs up or ``TOTAL`` bytes have gone."""

    TOTAL = 1 << 30
    sent = 0

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"0" * (1 << 20)
        try:
            for _ in range(self.TOTAL // len(chunk)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                type(self).sent += len(chunk)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def endless_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_1_gb_body_is_refused_past_the_limit_in_bounded_memory(
    endless_server: str, results: Results
) -> None:
    limit = 8 << 20
    client = HttpClient(endless_server, source="hmis", max_body_bytes=limit)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ResponseRefused, match=r"larger than the 8,388,608 bytes allowed"):
            client.get_json("api/dataValueSets.json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
    seconds = time.monotonic() - started
    assert peak < 4 * limit, f"peak {peak:,} bytes for a limit of {limit:,}"
    assert seconds < 30
    assert Endless.sent < Endless.TOTAL // 4  # the transfer stopped early
    results.record(
        "hostile input",
        "a 1 GB JSON body streamed (chunked) at a client allowing 8 MiB",
        1,
        0,
        peak_python_memory_mib=round(peak / 2**20, 1),
        seconds=round(seconds, 2),
        refused_after_mib=round(limit / 2**20),
    )


def test_an_announced_oversized_body_is_refused_before_reading(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/big").respond_with_data(
        b"[" + b"1," * 600_000 + b"1]", content_type="application/json"
    )
    client = HttpClient(httpserver.url_for("/"), source="kobo", max_body_bytes=1 << 20)
    with pytest.raises(ResponseRefused, match=r"kobo: GET .*/big: the response is larger"):
        client.get_json("big")
    assert client.retries == 0


FAST = RetryPolicy(attempts=3, backoff_base=0.0)


def test_json_nested_10000_deep_is_refused_clearly(
    httpserver: HTTPServer, results: Results
) -> None:
    httpserver.expect_request("/deep").respond_with_data(
        b"[" * 10_000 + b"]" * 10_000, content_type="application/json"
    )
    client = HttpClient(httpserver.url_for("/"), source="odk", policy=FAST)
    with pytest.raises(ResponseRefused, match=r"odk: GET .*/deep: the JSON body nests deeper"):
        client.get_json("deep")
    assert client.retries == 0
    results.record(
        "hostile input", "JSON nested 10,000 deep from an API", 1, 0, error="ResponseRefused"
    )


def test_xml_where_json_was_asked_for_is_refused_clearly(
    httpserver: HTTPServer, results: Results
) -> None:
    """healthpipe reads no XML from an API: an XML answer (with an entity-expansion DTD, as
    an attacker would send) is refused without being parsed."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><d>&lol2;</d>'
    )
    httpserver.expect_request("/x").respond_with_data(bomb, content_type="application/xml")
    client = HttpClient(httpserver.url_for("/"), source="hmis", policy=FAST)
    with pytest.raises(ResponseRefused, match="answered application/xml where JSON was expected"):
        client.get_json("x")
    assert client.retries == 0
    results.record(
        "hostile input", "an XML entity-expansion document where JSON was asked for", 1, 0
    )
