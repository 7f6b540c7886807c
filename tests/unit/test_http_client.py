"""The shared HTTP client against real local servers: retries, Retry-After, auth, cut-offs."""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from connectors.errors import SourceError
from connectors.http import (
    Credentials,
    HttpClient,
    RetryPolicy,
    SourceAuthError,
    SourceHTTPError,
    retry_after_seconds,
)

FAST = RetryPolicy(attempts=4, backoff_base=0.01, backoff_max=0.05)


def sequence(*responses: Response) -> Callable[[Request], Response]:
    """A handler answering with the given responses in turn (the last one repeats)."""
    remaining = list(responses)

    def handler(_: Request) -> Response:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return handler


def test_retry_after_in_seconds_is_honoured(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/data").respond_with_handler(
        sequence(
            Response("busy", status=503, headers={"Retry-After": "1"}),
            Response('{"ok": true}', content_type="application/json"),
        )
    )
    client = HttpClient(httpserver.url_for("/"), source="hmis", policy=FAST)
    started = time.monotonic()
    assert client.get_json("api/data") == {"ok": True}
    waited = time.monotonic() - started
    assert 1.0 <= waited < 3.0, waited
    assert client.retries == 1


def test_retry_after_as_an_http_date_is_honoured(httpserver: HTTPServer) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    httpserver.expect_request("/x").respond_with_handler(
        sequence(
            Response("slow down", status=429, headers={"Retry-After": when}),
            Response("[]", content_type="application/json"),
        )
    )
    client = HttpClient(httpserver.url_for("/"), source="odk", policy=FAST)
    started = time.monotonic()
    assert client.get_json("x") == []
    # The date has one-second resolution, so the wait is between 1 and 2 seconds.
    assert time.monotonic() - started >= 0.9


def test_retries_are_bounded_and_the_error_says_so(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_data("down", status=502)
    client = HttpClient(httpserver.url_for("/"), source="fhir", policy=FAST)
    with pytest.raises(SourceHTTPError, match="still failing after 4 attempts: HTTP 502"):
        client.get_json("x")
    assert len(httpserver.log) == 4


def test_auth_failure_is_not_retried_and_names_the_variables(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/me").respond_with_data("nope", status=401)
    credentials = Credentials.from_env(
        {"HP_USER": "admin", "HP_PASS": "s3cret-value"},
        username_env="HP_USER",
        password_env="HP_PASS",
        source="hmis",
    )
    client = HttpClient(
        httpserver.url_for("/"), source="hmis", credentials=credentials, policy=FAST
    )
    with pytest.raises(SourceAuthError) as error:
        client.get_json("api/me")
    assert len(httpserver.log) == 1
    message = str(error.value)
    assert "401" in message and "HP_USER, HP_PASS" in message
    assert "s3cret-value" not in message and "s3cret-value" not in repr(credentials)


def test_other_client_errors_fail_at_once(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_data("Bad request: no data set", status=409)
    client = HttpClient(httpserver.url_for("/"), source="hmis", policy=FAST)
    with pytest.raises(SourceHTTPError, match="answered 409: Bad request: no data set"):
        client.get_json("x")
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    ("scheme", "header"),
    [("apitoken", "ApiToken d2pat_abc"), ("bearer", "Bearer abc"), ("token", "Token abc")],
)
def test_token_schemes(httpserver: HTTPServer, scheme: str, header: str) -> None:
    token = "d2pat_abc" if scheme == "apitoken" else "abc"
    httpserver.expect_request("/x", headers={"Authorization": header}).respond_with_json({})
    credentials = Credentials.from_env({"TOKEN": token}, token_env="TOKEN", token_scheme=scheme)  # type: ignore[arg-type]
    HttpClient(httpserver.url_for("/"), source="s", credentials=credentials).get_json("x")


def test_missing_credential_variable_is_named() -> None:
    with pytest.raises(SourceError, match="environment variable DHIS2_TOKEN is not set"):
        Credentials.from_env({}, token_env="DHIS2_TOKEN", source="hmis")


def test_next_links_are_followed_as_given(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/other/page2").respond_with_json({"page": 2})
    client = HttpClient(httpserver.url_for("/base/"), source="fhir")
    assert client.get_json(httpserver.url_for("/other/page2")) == {"page": 2}


@pytest.fixture
def raw_server() -> Iterator[Callable[[list[bytes]], str]]:
    """A TCP server that answers successive connections with the given raw bytes (and then
    closes), for faults an HTTP framework will not produce: resets and cut-off bodies."""
    servers: list[socket.socket] = []

    def start(answers: list[bytes]) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        servers.append(listener)

        def serve() -> None:
            for answer in answers:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                with connection:
                    connection.recv(65536)
                    if answer:
                        connection.sendall(answer)
                    else:  # reset: close with RST instead of a reply
                        connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}/"

    yield start
    for listener in servers:
        listener.close()


def ok(body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def test_a_connection_reset_is_retried(raw_server: Callable[[list[bytes]], str]) -> None:
    url = raw_server([b"", ok(b'{"n": 1}')])
    client = HttpClient(url, source="kobo", policy=FAST)
    assert client.get_json("data") == {"n": 1}
    assert client.retries == 1


def test_a_cut_off_body_is_detected_and_fails_when_it_persists(
    raw_server: Callable[[list[bytes]], str],
) -> None:
    body = b'{"dataValues": [{"value": "1"}, {"value": "2"}]}'
    url = raw_server([ok(body[:20], length=len(body))] * 4)
    client = HttpClient(url, source="hmis", policy=FAST)
    with pytest.raises(SourceHTTPError, match="still failing after 4 attempts"):
        client.get_json("api/dataValueSets")


def test_a_cut_off_body_then_a_whole_one(raw_server: Callable[[list[bytes]], str]) -> None:
    body = b'{"rows": [1, 2, 3]}'
    url = raw_server([ok(body[:5], length=len(body)), ok(body)])
    assert HttpClient(url, source="hmis", policy=FAST).get_json("x") == {"rows": [1, 2, 3]}


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30
    assert retry_after_seconds("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0
    assert retry_after_seconds("soon") is None
