"""An MLLP sender: replays the simulator's HL7 v2 files to a receiver, as a laboratory
information system's interface engine would.

``send_hl7_files(data_dir, host, port)`` reads ``hl7/batches/<lab>/*.hl7`` (``FHS BHS
<messages> BTS FTS``; the envelope segments are dropped, the messages sent one by one) and
``hl7/messages/<lab>/*.hl7`` (one message a file), in path order, and sends each message
framed as MLLP (``0x0B`` message ``0x1C 0x0D``) over one TCP connection, waiting for each
ACK before the next message. It collects MSA-1 (``AA``/``AE``/``AR``, or ``CA``/``CE``/``CR``)
and MSA-2 per message. When the connection drops, or no ACK comes within ``timeout``, it
reconnects and sends the same message again (at-least-once delivery, as real senders do:
receivers must tolerate the duplicate) up to ``retries`` times, then raises
:class:`MllpSendError` carrying what was acknowledged so far.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"
ENVELOPE_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")


@dataclass(frozen=True)
class Hl7Message:
    """One message to send: where it came from and its bytes (segments end with CR)."""

    source: str  # path relative to the data folder
    position: int  # 1-based index of the message in its file
    data: bytes

    @property
    def control_id(self) -> str:
        """MSH-10 (empty if the message has none)."""
        return msh_field(self.data, 10)


def msh_field(message: bytes, number: int) -> str:
    """MSH-``number`` of a message (MSH-1 is the field separator itself)."""
    first = message.split(b"\r", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 4:
        return ""
    separator = first[3:4]
    fields = first.split(separator)
    # fields[0] is "MSH" and fields[1] MSH-2, so MSH-n is fields[n - 1] for n >= 2.
    if number == 1:
        return separator.decode("latin-1")
    return fields[number - 1].decode("latin-1") if len(fields) >= number else ""


def split_messages(content: bytes) -> list[bytes]:
    """The messages in a file: segments (CR, LF or CRLF separated) grouped from one MSH to
    the next, batch and file envelope segments dropped; each returned message ends with CR."""
    segments = content.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    messages: list[list[bytes]] = []
    for segment in segments:
        if not segment.strip() or segment[:3] in ENVELOPE_SEGMENTS:
            continue
        if segment.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return [b"\r".join(parts) + b"\r" for parts in messages]


def iter_hl7_messages(data_dir: Path) -> Iterator[Hl7Message]:
    """Every message under ``data_dir/hl7`` (batches, then single messages, in path order)."""
    root = data_dir / "hl7"
    for folder in ("batches", "messages"):
        for path in sorted((root / folder).rglob("*.hl7")):
            source = path.relative_to(data_dir).as_posix()
            for position, data in enumerate(split_messages(path.read_bytes()), start=1):
                yield Hl7Message(source, position, data)


def frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


def parse_ack(payload: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK; ``("", "")`` if it has no MSA segment."""
    separator = b"|"
    for segment in payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSH") and len(segment) > 3:
            separator = segment[3:4]
        if segment.startswith(b"MSA"):
            fields = segment.split(separator)
            code = fields[1].decode("latin-1") if len(fields) > 1 else ""
            control = fields[2].decode("latin-1") if len(fields) > 2 else ""
            return code, control
    return "", ""


class FrameReader:
    """Reads MLLP frames from a socket, keeping bytes that arrive past a frame's end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(self) -> bytes:
        """The next frame's payload; raises ``ConnectionError`` if the peer closes first."""
        while True:
            start = self.buffer.find(START_BLOCK)
            if start >= 0:
                end = self.buffer.find(END_BLOCK, start + 1)
                if end >= 0:
                    payload = self.buffer[start + 1 : end]
                    self.buffer = self.buffer[end + len(END_BLOCK) :]
                    return payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the receiver closed the connection")
            self.buffer += chunk


@dataclass(frozen=True)
class AckResult:
    source: str
    position: int
    control_id: str
    code: str  # MSA-1
    acked_id: str  # MSA-2
    attempts: int


@dataclass
class SendReport:
    results: list[AckResult] = field(default_factory=list)
    reconnects: int = 0

    def codes(self) -> Counter[str]:
        return Counter(result.code for result in self.results)


class MllpSendError(ConnectionError):
    def __init__(self, message: str, report: SendReport) -> None:
        super().__init__(message)
        self.report = report


class _Connection:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.reader: FrameReader | None = None

    def exchange(self, message: bytes) -> bytes:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.reader = FrameReader(self.sock)
        assert self.reader is not None
        self.sock.sendall(frame(message))
        return self.reader.read()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock, self.reader = None, None


def send_messages(
    messages: Iterable[Hl7Message],
    host: str,
    port: int,
    *,
    timeout: float = 10.0,
    retries: int = 3,
    retry_delay: float = 0.2,
) -> SendReport:
    """Send each message and wait for its ACK; see the module docstring."""
    report = SendReport()
    connection = _Connection(host, port, timeout)
    try:
        for message in messages:
            attempts = 0
            while True:
                attempts += 1
                try:
                    ack = connection.exchange(message.data)
                    break
                except OSError as exc:  # ConnectionError and socket timeouts included
                    connection.close()
                    if attempts > retries:
                        raise MllpSendError(
                            f"{message.source} #{message.position} ({message.control_id or 'no MSH-10'}): "
                            f"no ACK after {attempts} attempts: {exc}",
                            report,
                        ) from exc
                    report.reconnects += 1
                    time.sleep(retry_delay * attempts)
            code, acked = parse_ack(ack)
            report.results.append(
                AckResult(
                    message.source, message.position, message.control_id, code, acked, attempts
                )
            )
    finally:
        connection.close()
    return report


def send_hl7_files(
    data_dir: Path,
    host: str,
    port: int,
    *,
    timeout: float = 10.0,
    retries: int = 3,
    retry_delay: float = 0.2,
) -> SendReport:
    """Send every HL7 message under ``data_dir/hl7`` to ``host:port`` over MLLP."""
    return send_messages(
        iter_hl7_messages(data_dir),
        host,
        port,
        timeout=timeout,
        retries=retries,
        retry_delay=retry_delay,
    )
