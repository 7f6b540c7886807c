"""The sandbox's fault injection, its CLI entry point, and the MLLP sender against a tiny
receiver written here."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from pipelines.sandbox import FaultConfig, FaultSpecError, run_sandbox_cli, start_sandbox
from pipelines.sandbox.mllp import (
    END_BLOCK,
    START_BLOCK,
    FrameReader,
    MllpSendError,
    iter_hl7_messages,
    msh_field,
    send_hl7_files,
    split_messages,
)
from tests.integration.test_sandbox import DHIS2_AUTH, ODK_AUTH, simulate_small_country

TIMEOUT = 10


@pytest.fixture(scope="module")
def country(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_small_country(tmp_path_factory.mktemp("sandbox-faults-country"))


def data_url(base: str) -> str:
    return f"{base}/dhis2/api/dataElements"


# --- fault spec ----------------------------------------------------------------------------


def test_fault_spec_parsing() -> None:
    config = FaultConfig.parse("429:0.05,503:0.05,reset:0.02,slow:0.02,truncate:0.01,seed=1")
    assert config.rates == {"429": 0.05, "503": 0.05, "reset": 0.02, "slow": 0.02, "truncate": 0.01}
    assert config.seed == 1 and config.active
    assert FaultConfig.parse("retry_after=3,slow_seconds=0.5").retry_after == 3
    for bad in ("418:0.1", "429:2", "429:0.7,503:0.7", "429", "seed=x", "color=blue"):
        with pytest.raises(FaultSpecError):
            FaultConfig.parse(bad)


# --- 429 / 503 -----------------------------------------------------------------------------


def test_429_and_503_carry_retry_after(country: Path) -> None:
    with start_sandbox(country, faults="429:0.5,503:0.5,seed=3") as sandbox:
        statuses = []
        for _ in range(30):
            response = requests.get(data_url(sandbox.url), auth=DHIS2_AUTH, timeout=TIMEOUT)
            statuses.append(response.status_code)
            assert response.status_code in (429, 503)
            body = response.json()  # still the API's own error document
            assert body["httpStatusCode"] == response.status_code
            retry_after = response.headers["Retry-After"]
            if retry_after.isdigit():
                assert int(retry_after) >= 0
            else:
                assert parsedate_to_datetime(retry_after).tzinfo is not None
        assert {429, 503} <= set(statuses)
        # Faults never hit test set-up, sessions, or discovery documents.
        off = {"X-Sandbox-Faults": "off"}
        assert requests.get(data_url(sandbox.url), auth=DHIS2_AUTH, headers=off).status_code == 200
        session = requests.post(
            f"{sandbox.odk_url}/v1/sessions", json={"email": ODK_AUTH[0], "password": ODK_AUTH[1]}
        )
        assert session.status_code == 200
        assert requests.get(f"{sandbox.fhir_url('emr')}/metadata").status_code == 200
        fhir = requests.get(f"{sandbox.fhir_url('emr')}/Patient")
        assert fhir.status_code in (429, 503)
        assert fhir.json()["resourceType"] == "OperationOutcome"


def test_faults_are_deterministic_by_seed(country: Path) -> None:
    def sequence(seed: int) -> list[int]:
        spec = f"429:0.3,503:0.3,seed={seed}"
        with start_sandbox(country, faults=spec) as sandbox, requests.Session() as session:
            codes = []
            for index in range(25):
                if index % 5 == 0:  # interleaved set-up requests do not shift the sequence
                    session.get(
                        data_url(sandbox.url), auth=DHIS2_AUTH, headers={"X-Sandbox-Faults": "off"}
                    )
                codes.append(session.get(data_url(sandbox.url), auth=DHIS2_AUTH).status_code)
            return codes

    first = sequence(11)
    assert first == sequence(11)
    assert first != sequence(12)
    assert 200 in first and (429 in first or 503 in first)


# --- truncated and reset bodies, slow answers ----------------------------------------------


def raw_get(host: str, port: int, path: str) -> tuple[int, int, bytes, Exception | None]:
    """Status, announced Content-Length, the bytes that came, and the read error if any."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    connection.request("GET", path, headers={"Authorization": "Basic YWRtaW46ZGlzdHJpY3Q="})
    response = connection.getresponse()
    announced = int(response.getheader("Content-Length") or 0)
    received = b""
    error: Exception | None = None
    try:
        while chunk := response.read1(65536):
            received += chunk
    except (OSError, http.client.HTTPException) as exc:
        error = exc
    connection.close()
    return response.status, announced, received, error


def test_truncated_body_has_a_wrong_content_length(country: Path) -> None:
    with start_sandbox(country, faults="truncate:1") as sandbox:
        status, announced, received, _ = raw_get(
            sandbox.host, sandbox.port, "/dhis2/api/dataElements"
        )
        assert status == 200 and 0 < len(received) < announced
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(data_url(sandbox.url), auth=DHIS2_AUTH, timeout=TIMEOUT)
        # The same request without faults is whole.
        whole = requests.get(
            data_url(sandbox.url), auth=DHIS2_AUTH, headers={"X-Sandbox-Faults": "off"}
        )
        assert len(whole.content) == announced and whole.json()["dataElements"]


def test_reset_mid_body(country: Path) -> None:
    with start_sandbox(country, faults="reset:1") as sandbox:
        status, announced, received, error = raw_get(
            sandbox.host, sandbox.port, "/dhis2/api/dataElements"
        )
        assert status == 200 and len(received) < announced
        assert error is None or isinstance(error, ConnectionError | http.client.IncompleteRead)
        broken = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)
        with pytest.raises(broken):
            requests.get(data_url(sandbox.url), auth=DHIS2_AUTH, timeout=TIMEOUT)


def test_slow_responses(country: Path) -> None:
    with start_sandbox(country, faults="slow:1,slow_seconds=0.3") as sandbox:
        started = time.monotonic()
        response = requests.get(data_url(sandbox.url), auth=DHIS2_AUTH, timeout=TIMEOUT)
        assert response.status_code == 200 and time.monotonic() - started >= 0.3
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(data_url(sandbox.url), auth=DHIS2_AUTH, timeout=0.1)
        assert sandbox.injector is not None and sandbox.injector.drawn["slow"] == 2


# --- CLI entry point -----------------------------------------------------------------------


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_sandbox_cli(tmp_path, 0, "429:oops") == 2
    assert "--faults" in capsys.readouterr().err
    assert run_sandbox_cli(tmp_path / "empty", 0, None) == 2
    assert "no source data" in capsys.readouterr().err


# --- MLLP ----------------------------------------------------------------------------------


class Receiver:
    """A tiny MLLP receiver: ACKs each message with AA (AE when MSH-10 is empty), echoing
    MSH-10 in MSA-2; drops the first connection once, after ``drop_after`` messages,
    without acknowledging the last one."""

    def __init__(self, drop_after: int) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.drop_after = drop_after
        self.received: list[bytes] = []
        self.connections = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                reader = FrameReader(conn)
                while True:
                    try:
                        message = reader.read()
                    except (ConnectionError, OSError):
                        break
                    self.received.append(message)
                    if self.connections == 1 and len(self.received) == self.drop_after:
                        break  # connection lost before the ACK
                    control = msh_field(message, 10)
                    code = "AA" if control else "AE"
                    ack = (
                        f"MSH|^~\\&|HEALTHPIPE|DL_MOH|DemoLIS|LAB|20260201000000||ACK^R01^ACK|"
                        f"ACK{len(self.received)}|P|2.5.1\rMSA|{code}|{control}\r"
                    )
                    conn.sendall(START_BLOCK + ack.encode("ascii") + END_BLOCK)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(drop_after=3)
    yield running
    running.close()


def test_split_messages_drops_batch_envelopes() -> None:
    batch = (
        b"FHS|^~\\&|LIS\rBHS|^~\\&|LIS\r"
        b"MSH|^~\\&|LIS|LAB|||20260101||ORU^R01^ORU_R01|A1|P|2.5.1\rPID|1\r"
        b"MSH|^~\\&|LIS|LAB|||20260101||ORU^R01^ORU_R01|A2|P|2.5.1\nPID|2\n"
        b"BTS|2\rFTS|1\r"
    )
    messages = split_messages(batch)
    assert [msh_field(m, 10) for m in messages] == ["A1", "A2"]
    assert all(m.endswith(b"\r") and b"\n" not in m for m in messages)


def test_mllp_sender_delivers_every_message(country: Path, receiver: Receiver) -> None:
    messages = list(iter_hl7_messages(country))
    assert len(messages) > 50
    report = send_hl7_files(country, "127.0.0.1", receiver.port, timeout=5, retry_delay=0.01)
    assert len(report.results) == len(messages)
    assert report.reconnects == 1 and receiver.connections == 2
    # The message whose ACK was lost was sent again: one extra delivery, nothing missing.
    assert len(receiver.received) == len(messages) + 1
    assert receiver.received[2] == receiver.received[3] == messages[2].data
    assert report.results[2].attempts == 2
    for message, result in zip(messages, report.results, strict=True):
        assert result.control_id == message.control_id == result.acked_id
        assert result.code == ("AA" if message.control_id else "AE")
    assert report.codes()["AE"] >= 1  # the simulator plants a message with no MSH-10


def test_mllp_sender_gives_up(country: Path) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there any more
    with pytest.raises(MllpSendError) as failure:
        send_hl7_files(country, "127.0.0.1", port, timeout=1, retries=1, retry_delay=0.01)
    assert failure.value.report.results == []
