"""Receiving HL7 v2 laboratory results over MLLP: every message is landed, validated and
committed before it is acknowledged.

``serve_mllp(config, source_name)`` listens on the source's ``listen: host:port`` (what
``healthpipe listen --source NAME`` runs). For each framed message (``0x0B`` message
``0x1C 0x0D``) it parses, prepares (pseudonymises) and, in one transaction, lands the
message row and its result rows with :func:`pipelines.land.land_records` and validates them
with the source's suites, exactly as a file drop would. Only after the commit does it answer:

- ``AA``: the message is stored. A second delivery of a message already stored (same MSH-10,
  same content; senders resend when an ACK is lost) is acknowledged ``AA`` too, and stored
  once: the copy is recorded in quarantine under ``duplicate``.
- ``AE``: the message is stored in quarantine with the reason (malformed, no test code, a
  test code that is not LOINC, an ordering facility outside the hierarchy ...). ERR and
  MSA-3 say why.
- ``AR``: the message cannot be accepted at all (not ORU^R01, an unsupported version,
  unusable MSH encoding characters); it is in quarantine with the reason as well. ``AR``
  also answers a message that could not be stored because of an internal error: nothing of
  it was committed, and the sender should send it again later.

MSA-2 always echoes the message's MSH-10.

One writer thread owns the warehouse connection (DuckDB allows one writer; it also keeps
PostgreSQL transactions short and ordered). Messages that arrive while it is busy, from
several connections, are landed together in one transaction (group commit) and each is
acknowledged only once that transaction has committed; a lone message gets a transaction of
its own. If a group fails, its messages are retried one by one, so one bad message cannot
hold the others back. While the listener runs on DuckDB it holds the file's single writer
lock: run ``healthpipe run`` against the same file only when it is stopped (or use
PostgreSQL).
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors import hl7v2
from connectors.base import Record
from pipelines.audit import finish_step, new_run_id, start_step, utc_now
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError
from pipelines.land import land_records
from pipelines.privacy import Pseudonymiser
from pipelines.run import open_warehouse
from pipelines.schema_changes import NewField, warn_new_fields
from pipelines.sources import adapter_for
from pipelines.sources.hl7v2 import MESSAGES, RESULTS
from pipelines.tables import RawTable
from pipelines.validate import validate_pending
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

MAX_GROUP = 200
"""Most messages landed in one transaction."""
POLL_SECONDS = 0.2
"""How often blocking waits look at the stop event."""
RECEIVE_BYTES = 65536

DUPLICATE_RULE = "duplicate"
# ERR-3 (HL7 table 0357) for the validation rules of the hl7v2 suites.
RULE_ERRORS = {
    "test_code_present": hl7v2.ERROR_REQUIRED_MISSING,
    "loinc_known": hl7v2.ERROR_TABLE_VALUE,
    "org_unit_present": hl7v2.ERROR_REQUIRED_MISSING,
    "org_unit_known": hl7v2.ERROR_TABLE_VALUE,
    "msh10_present": hl7v2.ERROR_REQUIRED_MISSING,
}
RULE_LOCATIONS = {
    "test_code_present": "OBX-3",
    "loinc_known": "OBX-3",
    "org_unit_present": "ORC-21",
    "org_unit_known": "ORC-21",
}


@dataclass(frozen=True)
class Decision:
    """What to answer for one message."""

    code: str
    """MSA-1: AA, AE or AR."""
    problem: hl7v2.Problem | None = None
    duplicate: bool = False

    @property
    def text(self) -> str | None:
        """MSA-3: the reason, or a note that a duplicate was not stored again."""
        if self.problem is not None:
            return self.problem.describe()
        if self.duplicate:
            return "duplicate of a message already received: stored once"
        return None


@dataclass
class Arrival:
    """One received frame, from arrival until its acknowledgement is ready."""

    message: hl7v2.Hl7Message
    delivery: hl7v2.Delivery
    done: threading.Event = field(default_factory=threading.Event)
    decision: Decision | None = None
    ack: bytes = b""


@dataclass
class ListenerSummary:
    connections: int = 0
    received: int = 0
    accepted: int = 0
    errors: int = 0
    rejected: int = 0
    duplicates: int = 0

    def count(self, decision: Decision) -> None:
        self.received += 1
        if decision.code == "AA":
            self.accepted += 1
        elif decision.code == "AE":
            self.errors += 1
        else:
            self.rejected += 1
        if decision.duplicate:
            self.duplicates += 1


def parse_frame(payload: bytes) -> hl7v2.Hl7Message:
    """The message of one MLLP frame. A frame holding more than one message (a batch) is
    refused: MLLP acknowledges messages one by one, batches travel as files."""
    split = hl7v2.split_messages(hl7v2.decode_bytes(payload))
    lines = split.messages[0] if split.messages else []
    message = hl7v2.parse_message(lines)
    extra = len(split.messages) - 1
    if extra > 0 or split.problems:
        message.problems.append(
            hl7v2.Problem(
                hl7v2.RULE_MESSAGE_SUPPORTED,
                "MLLP frame",
                f"the frame holds {len(split.messages)} messages or a batch envelope: MLLP "
                "carries one message per frame (send batches as files)",
                hl7v2.ERROR_MESSAGE_TYPE,
                reject=True,
            )
        )
    return message


class MllpIntake:
    """Lands groups of received messages and decides their acknowledgements.

    Owns nothing but the warehouse connection it is given; every call happens on one thread.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        source: SourceConfig,
        pseudonymiser: Pseudonymiser,
        run_id: str,
    ) -> None:
        self.warehouse = warehouse
        self.source = source
        self.adapter = adapter_for(source.type)
        self.pseudonymiser = pseudonymiser
        self.run_id = run_id
        self._batches = itertools.count(1)

    def store(self, arrivals: Sequence[Arrival]) -> list[Decision]:
        """Land and validate ``arrivals`` in one transaction and return their decisions,
        once committed. Never raises: a failing group is retried message by message, and a
        message that still cannot be stored is answered AR (send again later)."""
        try:
            return self._store(arrivals)
        except Exception as exc:  # the sender must get an answer whatever went wrong
            if len(arrivals) > 1:
                log.warning(
                    "source %s: a group of %d messages could not be stored (%s); retrying "
                    "one by one",
                    self.source.name,
                    len(arrivals),
                    type(exc).__name__,
                )
                return [self.store([arrival])[0] for arrival in arrivals]
            log.exception(
                "source %s: message %s could not be stored",
                self.source.name,
                arrivals[0].message.control_id or "(no MSH-10)",
            )
            return [_internal_error(exc)]

    def _store(self, arrivals: Sequence[Arrival]) -> list[Decision]:
        batch_id = f"{self.run_id}:{self.source.name}:{next(self._batches)}"
        message_rows: list[Record] = []
        result_rows: list[Record] = []
        for arrival in arrivals:
            message_rows.append(hl7v2.message_record(arrival.message, arrival.delivery))
            result_rows.extend(hl7v2.result_records(arrival.message))
        prepared = {
            MESSAGES.entity: self.adapter.prepare(
                MESSAGES.entity, message_rows, self.pseudonymiser
            ),
            RESULTS.entity: self.adapter.prepare(RESULTS.entity, result_rows, self.pseudonymiser),
        }
        with self.warehouse.transaction():
            new_fields = {
                table.entity: self._land_and_validate(table, prepared[table.entity], batch_id)
                for table in (MESSAGES, RESULTS)
            }
            decisions = self._decide(arrivals, batch_id)
        for entity, fields in new_fields.items():
            warn_new_fields(self.source.name, entity, fields)
        return decisions  # committed: only now may the senders be answered

    def _land_and_validate(
        self, table: RawTable, records: list[Record], batch_id: str
    ) -> tuple[NewField, ...]:
        now = utc_now()
        landed = land_records(
            self.warehouse,
            table,
            self.source.name,
            records,
            run_id=self.run_id,
            batch_id=batch_id,
            extracted_at=now,
            now=now,
        )
        references = self.adapter.references(self.warehouse, self.source.name, table.entity)
        validate_pending(
            self.warehouse,
            table,
            self.source.name,
            references=references,
            enrich=lambda frame: self.adapter.enrich(table.entity, frame, references),
            run_id=self.run_id,
            batch_id=batch_id,
            now=utc_now(),
        )
        return landed.new_fields

    def _decide(self, arrivals: Sequence[Arrival], batch_id: str) -> list[Decision]:
        message_rules = self._message_rules(batch_id)
        result_rules = self._result_rules(
            [a.message.control_id for a in arrivals if a.message.control_id]
        )
        decisions = []
        for arrival in arrivals:
            rules = message_rules.get(arrival.delivery.delivery_id, [])
            duplicate = any(rule == DUPLICATE_RULE for rule, _ in rules)
            others = [(rule, reason) for rule, reason in rules if rule != DUPLICATE_RULE]
            problem = arrival.message.problem
            if problem is not None:
                decisions.append(Decision("AR" if problem.reject else "AE", problem, duplicate))
            elif others:
                rule, reason = others[0]
                decisions.append(Decision("AE", _rule_problem(rule, reason, "MSH"), duplicate))
            elif arrival.message.control_id in result_rules:
                rule, reason, position = result_rules[arrival.message.control_id][0]
                location = f"{RULE_LOCATIONS.get(rule, 'segment')} (segment {position})"
                decisions.append(Decision("AE", _rule_problem(rule, reason, location), duplicate))
            else:
                decisions.append(Decision("AA", None, duplicate))
        return decisions

    def _message_rules(self, batch_id: str) -> dict[str, list[tuple[str, str]]]:
        rows = self.warehouse.fetchall(
            "select record_key, rule, reason from audit.quarantine where source_name = $source "
            "and raw_table = $table and batch_id = $batch order by rule",
            {"source": self.source.name, "table": MESSAGES.name, "batch": batch_id},
        )
        rules: dict[str, list[tuple[str, str]]] = {}
        for key, rule, reason in rows:
            rules.setdefault(key, []).append((rule, reason))
        return rules

    def _result_rules(self, control_ids: list[str]) -> dict[str, list[tuple[str, str, str]]]:
        """Open quarantine entries of the results of these messages, whenever they were
        made: a duplicate of a message whose results were quarantined gets the same AE."""
        if not control_ids:
            return {}
        names = {f"m{i}": control_id for i, control_id in enumerate(sorted(set(control_ids)))}
        placeholders = ", ".join(f"${name}" for name in names)
        rows = self.warehouse.fetchall(
            "select q.record_key, q.rule, q.reason, r.message_control_id, r.segment_position "
            f"from audit.quarantine q join {RESULTS.qualified_name} r "
            "on r.source_name = q.source_name and r.record_hash = q.record_hash "
            f"where q.source_name = $source and q.raw_table = $table and q.released_at is null "
            f"and r.validation_status = 'quarantined' and r.message_control_id in ({placeholders}) "
            "order by r.message_control_id, cast(r.segment_position as integer), q.rule",
            {"source": self.source.name, "table": RESULTS.name, **names},
        )
        rules: dict[str, list[tuple[str, str, str]]] = {}
        for _key, rule, reason, control_id, position in rows:
            rules.setdefault(control_id, []).append((rule, reason, position))
        return rules


def _rule_problem(rule: str, reason: str, location: str) -> hl7v2.Problem:
    return hl7v2.Problem(
        rule, location, reason, RULE_ERRORS.get(rule, hl7v2.ERROR_SEGMENT_SEQUENCE)
    )


def _internal_error(exc: BaseException) -> Decision:
    return Decision(
        "AR",
        hl7v2.Problem(
            "stored",
            "receiver",
            f"the message could not be stored ({type(exc).__name__}); nothing of it was "
            "kept: send it again later",
            hl7v2.ERROR_INTERNAL,
            reject=True,
        ),
    )


def acknowledgement(arrival: Arrival, decision: Decision) -> bytes:
    ack = hl7v2.build_ack(
        arrival.message if arrival.message.header is not None else None,
        decision.code,
        control_id=uuid.uuid4().hex[:20],
        timestamp=utc_now().strftime("%Y%m%d%H%M%S+0000"),
        text=decision.text,
        error=decision.problem,
    )
    return hl7v2.frame_message(ack)


class _Receiver:
    """Shared state of one listener: the queue to the writer and the delivery numbering."""

    def __init__(self, source_name: str, run_id: str, stop: threading.Event) -> None:
        self.source_name = source_name
        self.run_id = run_id
        self.stop = stop
        self.queue: queue.Queue[Arrival] = queue.Queue()
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()

    def arrival(self, payload: bytes, peer: str) -> Arrival:
        with self._lock:
            sequence = next(self._sequence)
        received: datetime = utc_now()
        delivery = hl7v2.Delivery(
            delivery_id=f"mllp:{self.run_id}:{sequence:09d}",
            received_order=f"{received:%Y%m%dT%H%M%S.%f}#{sequence:09d}",
            received_from=peer,
            received_at=received.isoformat(sep=" "),
        )
        return Arrival(parse_frame(payload), delivery)

    def serve_connection(self, connection: socket.socket, peer: str) -> None:
        """Read frames, hand each to the writer, send its ACK once it is committed."""
        decoder = hl7v2.MllpFrameDecoder()
        connection.settimeout(POLL_SECONDS)
        log.info("source %s: connection from %s", self.source_name, peer)
        with connection:
            while not self.stop.is_set():
                try:
                    data = connection.recv(RECEIVE_BYTES)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                try:
                    frames = decoder.feed(data)
                except hl7v2.MllpFrameError as exc:
                    log.warning("source %s: %s: %s; closing", self.source_name, peer, exc)
                    break
                for payload in frames:
                    arrival = self.arrival(payload, peer)
                    self.queue.put(arrival)
                    arrival.done.wait()
                    try:
                        connection.sendall(arrival.ack)
                    except OSError:
                        # Stored but unacknowledged: the sender will resend, the copy is
                        # recognised as a duplicate.
                        log.warning(
                            "source %s: %s went away before its ACK", self.source_name, peer
                        )
                        return
        log.info("source %s: %s disconnected", self.source_name, peer)


def _write_loop(
    intake: MllpIntake,
    receiver: _Receiver,
    finished: threading.Event,
    summary: ListenerSummary,
    max_group: int,
) -> None:
    """Take what is waiting (up to ``max_group`` messages), land it, answer it; until told
    to finish once every connection has closed."""
    while True:
        try:
            first = receiver.queue.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if finished.is_set():
                return
            continue
        group = [first]
        while len(group) < max_group:
            try:
                group.append(receiver.queue.get_nowait())
            except queue.Empty:
                break
        _answer(group, intake.store(group), receiver.source_name, summary)


def _answer(
    group: Sequence[Arrival],
    decisions: Sequence[Decision],
    source_name: str,
    summary: ListenerSummary,
) -> None:
    """Hand each arrival its ACK; whatever happens, every waiting connection is released
    (a connection left waiting would hang its sender)."""
    try:
        for arrival, decision in zip(group, decisions, strict=True):
            arrival.decision = decision
            arrival.ack = acknowledgement(arrival, decision)
            summary.count(decision)
            _log_decision(source_name, arrival, decision)
            arrival.done.set()
    except Exception as exc:
        log.exception("source %s: acknowledgements could not be built", source_name)
        for arrival in group:
            if not arrival.done.is_set():
                arrival.decision = _internal_error(exc)
                arrival.ack = acknowledgement(arrival, arrival.decision)
                arrival.done.set()


def _log_decision(source_name: str, arrival: Arrival, decision: Decision) -> None:
    # MSH-10, the peer and the rule only: never message content.
    control_id = arrival.message.control_id or "(no MSH-10)"
    if decision.code == "AA":
        log.debug(
            "source %s: %s from %s: AA", source_name, control_id, arrival.delivery.received_from
        )
    else:
        rule = decision.problem.rule if decision.problem else "?"
        log.warning(
            "source %s: %s from %s: %s (%s)",
            source_name,
            control_id,
            arrival.delivery.received_from,
            decision.code,
            rule,
        )


def listen_address(source: SourceConfig, host: str | None, port: int | None) -> tuple[str, int]:
    """The address to bind: arguments first, else the source's ``listen: host:port``."""
    if source.listen is not None:
        configured_host, _, configured_port = source.listen.rpartition(":")
        host = host if host is not None else configured_host
        port = port if port is not None else int(configured_port)
    if host is None or port is None:
        raise ConfigError(
            f"source {source.name}: no MLLP address: set listen: host:port in healthpipe.yml"
        )
    return host, port


def serve_mllp(
    config: HealthpipeConfig,
    source_name: str,
    *,
    host: str | None = None,
    port: int | None = None,
    stop_event: threading.Event | None = None,
    on_listening: Callable[[str, int], Any] | None = None,
    max_group: int = MAX_GROUP,
) -> ListenerSummary:
    """Receive HL7 v2 messages over MLLP for ``source_name`` until ``stop_event`` is set (or
    the process is interrupted); see the module docstring. ``port=0`` picks a free port,
    which ``on_listening(host, port)`` is told once the socket is bound."""
    source = config.source(source_name)
    if source.type != "hl7v2":
        raise ConfigError(
            f"{config.origin}: source {source_name} is of type {source.type}: only hl7v2 "
            "sources receive MLLP"
        )
    address = listen_address(source, host, port)
    pseudonymiser = Pseudonymiser.from_env(
        config.pseudonym_key_env, purpose=f"source {source.name}"
    )
    stop = stop_event or threading.Event()
    summary = ListenerSummary()
    warehouse = open_warehouse(config)
    run_id = new_run_id()
    step = start_step(warehouse, run_id, "listen", source=source.name)
    receiver = _Receiver(source.name, run_id, stop)
    finished = threading.Event()
    writer = threading.Thread(
        target=_write_loop,
        args=(
            MllpIntake(warehouse, source, pseudonymiser, run_id),
            receiver,
            finished,
            summary,
            max_group,
        ),
        name=f"mllp-writer-{source.name}",
    )
    connections: list[threading.Thread] = []
    status = "failed"
    try:
        with socket.create_server(address) as server:
            server.settimeout(POLL_SECONDS)
            bound_host, bound_port = server.getsockname()[:2]
            log.info("source %s: listening for MLLP on %s:%d", source.name, bound_host, bound_port)
            writer.start()
            if on_listening is not None:
                on_listening(bound_host, bound_port)
            while not stop.is_set():
                try:
                    connection, peer = server.accept()
                except TimeoutError:
                    continue
                summary.connections += 1
                thread = threading.Thread(
                    target=receiver.serve_connection,
                    args=(connection, f"{peer[0]}:{peer[1]}"),
                    name=f"mllp-{peer[0]}:{peer[1]}",
                    daemon=True,
                )
                thread.start()
                connections.append(thread)
        status = "success"
    finally:
        stop.set()
        for thread in connections:  # they finish the message in hand, the writer answers it
            thread.join()
        finished.set()
        if writer.is_alive():
            writer.join()
        step.rows_in, step.rows_out = summary.received, summary.accepted
        step.rows_quarantined = summary.errors + summary.rejected
        step.rows_duplicate = summary.duplicates
        step.message = f"{summary.connections} connections"
        finish_step(warehouse, step, status)
        warehouse.close()
        log.info(
            "source %s: MLLP listener stopped: %d messages (%d AA, %d AE, %d AR, %d duplicates)",
            source.name,
            summary.received,
            summary.accepted,
            summary.errors,
            summary.rejected,
            summary.duplicates,
        )
    return summary
