"""HL7 v2 lab results end to end on a small simulated country: the laboratories' files are
landed from a file drop and, separately, 1,000 messages are sent over a real MLLP socket to the
listener. Every defect truth.json records ends in quarantine under its rule and nothing clean
does; a message delivered twice is stored once; corrections replace originals in staging
(DuckDB and PostgreSQL); an ACK is only sent once its message is committed; and no patient
identifier from the source messages appears in any raw or audit table or in the logs."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors import hl7v2
from pipelines.config import HealthpipeConfig, parse_config
from pipelines.mllp_listener import ListenerSummary, serve_mllp
from pipelines.run import SourceSummary, ingest_source, open_warehouse
from pipelines.sandbox.mllp import Hl7Message, iter_hl7_messages, send_messages
from pipelines.simulate import SimulationResult, simulate
from pipelines.transform import run_dbt
from pipelines.warehouse import Warehouse
from tests.conftest import small_country

KEY_ENV = "HEALTHPIPE_PSEUDONYM_KEY"
KEY = "hl7v2-integration-test-key-0123"
FILE_SOURCE = "lab"
MLLP_SOURCE = "lab_mllp"
MLLP_MESSAGES = 1000
MLLP_CONNECTIONS = 100
"""Concurrent senders: labs' interface engines; the listener lands what waits together."""
MESSAGE_RULES = ("message_complete", "msh10_present", "segment_valid", "duplicate")
RESULT_RULES = ("test_code_present", "loinc_known", "org_unit_known")


# --- fixtures -------------------------------------------------------------------------------------
class LogCapture(logging.Handler):
    """Every log record of the module's runs, formatted, for the privacy scan."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)


@pytest.fixture(scope="module")
def key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, KEY)
        yield


@pytest.fixture(scope="module")
def country(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    root = tmp_path_factory.mktemp("hl7_country")
    return simulate(root, country=small_country(), weeks=30, sources=["dhis2", "hl7"])


def make_config(warehouse: str, country: SimulationResult, state: Path) -> HealthpipeConfig:
    # The org-unit codes are all the HL7 suites need from DHIS2: the other metadata would
    # only slow the test down.
    org_units = state / "dhis2_org_units"
    org_units.mkdir(exist_ok=True)
    name = "organisationUnits.json"
    (org_units / name).write_bytes((country.out_dir / "dhis2" / "metadata" / name).read_bytes())
    data = {
        "warehouse": warehouse,
        "state_dir": str(state),
        "sources": [
            {"name": "hmis", "type": "dhis2", "path": str(org_units)},
            {"name": FILE_SOURCE, "type": "hl7v2", "path": str(country.out_dir / "hl7")},
            {"name": MLLP_SOURCE, "type": "hl7v2", "listen": "127.0.0.1:0"},
        ],
    }
    env = {k: v for k, v in os.environ.items() if k != "HEALTHPIPE_WAREHOUSE"}
    return parse_config(data, origin="test config", base_dir=state, env=env)


@dataclass
class FileDrop:
    config: HealthpipeConfig
    first: SourceSummary
    again: SourceSummary
    counts_first: dict[str, int]
    counts_refreshed: dict[str, int]


def table_counts(warehouse: Warehouse) -> dict[str, int]:
    return {
        table: warehouse.row_count(table)
        for table in ("raw.hl7v2__messages", "raw.hl7v2__results", "audit.quarantine")
    }


@pytest.fixture(scope="module")
def file_drop(
    country: SimulationResult,
    tmp_path_factory: pytest.TempPathFactory,
    key: None,
    logs: LogCapture,
) -> FileDrop:
    state = tmp_path_factory.mktemp("hl7_state")
    config = make_config(f"duckdb:///{state / 'warehouse.duckdb'}", country, state)
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="run_dhis2")
        first = ingest_source(warehouse, config.source(FILE_SOURCE), config, run_id="run_1")
        counts_first = table_counts(warehouse)
        again = ingest_source(warehouse, config.source(FILE_SOURCE), config, run_id="run_2")
        ingest_source(
            warehouse, config.source(FILE_SOURCE), config, run_id="run_3", full_refresh=True
        )
        counts_refreshed = table_counts(warehouse)
        dbt_env = warehouse.dbt_env()
    outcome = run_dbt(["build", "--select", "stg_hl7v2__results"], dbt_env=dbt_env, state_dir=state)
    assert not outcome.failed, outcome
    return FileDrop(config, first, again, counts_first, counts_refreshed)


def truth_defects(country: SimulationResult) -> list[dict[str, Any]]:
    truth = json.loads((country.out_dir / "truth.json").read_text(encoding="utf-8"))
    return [d for d in truth["defects"] if d["source"] == "hl7"]


def truth_notes(country: SimulationResult) -> dict[str, Any]:
    truth = json.loads((country.out_dir / "truth.json").read_text(encoding="utf-8"))
    notes: dict[str, Any] = truth["notes"]
    return notes


def delivery_of(record: dict[str, Any]) -> str:
    """The delivery id the connector gives the message truth points at."""
    return f"{record['file'].removeprefix('hl7/')}#{record['position']}"


def quarantined(warehouse: Warehouse, source: str) -> list[tuple[str, str, str]]:
    """(raw table, record key, rule) of every quarantine entry of a source."""
    rows = warehouse.fetchall(
        "select raw_table, record_key, rule from audit.quarantine where source_name = $source",
        {"source": source},
    )
    return [(table, key, rule) for table, key, rule in rows]


# --- file drop --------------------------------------------------------------------------------------
def defect_scores(
    defects: list[dict[str, Any]], entries: list[tuple[str, str, str]]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Truth and found, both as (message, rule); a message is its MSH-10, or its delivery
    (file and position) when it has none or the defect is about the delivery."""
    expected = set()
    for defect in defects:
        record, rule = defect["record"], defect["expected_rule"]
        by_delivery = record["msh10"] is None or rule == "duplicate"
        expected.add((delivery_of(record) if by_delivery else record["msh10"], rule))
    found = {(key.split("|")[0], rule) for _, key, rule in entries}
    return expected, found


def test_every_truth_defect_is_quarantined_with_its_rule(
    file_drop: FileDrop, country: SimulationResult
) -> None:
    defects = truth_defects(country)
    assert {d["expected_rule"] for d in defects} == {*MESSAGE_RULES, *RESULT_RULES}
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        entries = quarantined(warehouse, FILE_SOURCE)
        deliveries = dict(
            warehouse.fetchall(
                "select delivery_id, message_control_id from raw.hl7v2__messages "
                "where source_name = $source",
                {"source": FILE_SOURCE},
            )
        )
    # Message-level entries are keyed by delivery: name them by MSH-10 where truth does.
    named = []
    for table, key, rule in entries:
        if table == "hl7v2__messages" and rule not in ("duplicate", "msh10_present"):
            key = deliveries[key]
        named.append((table, key, rule))
    expected, found = defect_scores(defects, named)
    true_positives = expected & found
    precision = len(true_positives) / len(found)
    recall = len(true_positives) / len(expected)
    assert (precision, recall) == (1.0, 1.0), (expected - found, found - expected)


def test_no_clean_result_is_quarantined(file_drop: FileDrop, country: SimulationResult) -> None:
    defective = {d["record"]["msh10"] for d in truth_defects(country)}
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        statuses = warehouse.fetchall(
            "select message_control_id, validation_status, count(*) from raw.hl7v2__results "
            "where source_name = $source group by 1, 2",
            {"source": FILE_SOURCE},
        )
    held_back = {msh10 for msh10, status, _ in statuses if status != "valid"}
    assert held_back <= defective
    assert sum(n for _, status, n in statuses if status == "valid") > 450


def test_every_message_of_the_files_is_accounted_for(
    file_drop: FileDrop, country: SimulationResult
) -> None:
    sent = list(iter_hl7_messages(country.out_dir))
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        rows = warehouse.fetchall(
            "select delivery_id, validation_status from raw.hl7v2__messages "
            "where source_name = $source",
            {"source": FILE_SOURCE},
        )
    status = dict(rows)
    for message in sent:
        delivery = f"{message.source.removeprefix('hl7/')}#{message.position}"
        assert status.get(delivery) in ("valid", "quarantined"), delivery
    assert len(status) == len(sent)  # no envelope problems in the simulated batches


def test_a_duplicate_delivery_is_stored_once(
    file_drop: FileDrop, country: SimulationResult
) -> None:
    (duplicate,) = [d for d in truth_defects(country) if d["expected_rule"] == "duplicate"]
    msh10 = duplicate["record"]["msh10"]
    copies = [m for m in iter_hl7_messages(country.out_dir) if m.control_id == msh10]
    assert len(copies) == 2 and copies[0].data == copies[1].data
    expected_rows = len(
        hl7v2.result_records(hl7v2.parse_message(hl7v2.segment_lines(copies[0].data.decode())))
    )
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        rows = warehouse.fetch_scalar(
            "select count(*) from raw.hl7v2__results where source_name = $source "
            "and message_control_id = $msh10 and validation_status = 'valid'",
            {"source": FILE_SOURCE, "msh10": msh10},
        )
        deliveries = warehouse.fetchall(
            "select validation_status, count(*) from raw.hl7v2__messages "
            "where source_name = $source and message_control_id = $msh10 group by 1 order by 1",
            {"source": FILE_SOURCE, "msh10": msh10},
        )
    assert rows == expected_rows
    assert deliveries == [("quarantined", 1), ("valid", 1)]


def test_rerunning_the_drop_changes_nothing(file_drop: FileDrop) -> None:
    assert file_drop.again.pages == 0  # every file's fingerprint is in the cursor
    assert file_drop.counts_refreshed == file_drop.counts_first
    results = file_drop.first.entities["results"]
    assert results.duplicates == 1 and results.received > 500


def test_corrections_replace_originals_in_staging(
    file_drop: FileDrop, country: SimulationResult
) -> None:
    corrections = truth_notes(country)["hl7_corrections"]
    assert corrections
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        for correction in corrections:
            rows = warehouse.fetchall(
                "select message_control_id, value_text, result_status, is_corrected "
                "from staging.stg_hl7v2__results where source_name = $source "
                "and filler_order_number = $filler and filler_order_namespace = $lab "
                "and test_code = $test",
                {
                    "source": FILE_SOURCE,
                    "filler": correction["filler_order"],
                    "lab": correction["lab"],
                    "test": correction["test"],
                },
            )
            assert rows == [(correction["corrected_msh10"], correction["new_value"], "C", True)]
            history = warehouse.fetch_scalar(
                "select count(*) from raw.hl7v2__results where source_name = $source "
                "and filler_order_number = $filler and test_code = $test "
                "and message_control_id = $original",
                {
                    "source": FILE_SOURCE,
                    "filler": correction["filler_order"],
                    "test": correction["test"],
                    "original": correction["original_msh10"],
                },
            )
            assert history == 1  # the original stays in raw


def test_staging_types_times_as_utc(file_drop: FileDrop, country: SimulationResult) -> None:
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        raw = warehouse.fetchall(
            "select message_control_id, segment_position, collected_at, message_sent_at "
            "from raw.hl7v2__results where source_name = $source and validation_status = 'valid'",
            {"source": FILE_SOURCE},
        )
        typed = {
            (m, str(p)): (c, s)
            for m, p, c, s in warehouse.fetchall(
                "select message_control_id, segment_position, collected_at, message_sent_at "
                "from staging.stg_hl7v2__results where source_name = $source",
                {"source": FILE_SOURCE},
            )
        }
        rejected = warehouse.fetch_scalar(
            "select count(*) from staging.stg_hl7v2__results "
            "where source_name = $source and is_specimen_rejected",
            {"source": FILE_SOURCE},
        )

    checked = 0
    for msh10, position, collected, sent in raw:
        if (msh10, position) not in typed:
            continue  # superseded by a correction
        local = datetime.strptime(collected[:12], "%Y%m%d%H%M")
        assert collected.endswith("+0300")
        assert typed[(msh10, position)][0] == local - timedelta(hours=3)
        assert typed[(msh10, position)][1] == datetime.strptime(
            sent[:14], "%Y%m%d%H%M%S"
        ) - timedelta(hours=3)
        checked += 1
    assert checked > 450
    assert 0 < rejected <= truth_notes(country)["hl7_summary"]["rejected_specimens"]


# --- MLLP -----------------------------------------------------------------------------------------
@dataclass
class Outgoing:
    """A message to send and the answer it must get."""

    data: bytes
    control_id: str
    code: str
    rule: str | None = None
    """The quarantine rule an AE/AR message must be held under."""


def _retag(data: bytes, control_id: str) -> bytes:
    text = data.decode("ascii")
    fields = text.split("\r", 1)[0].split("|")
    return text.replace("|".join(fields[:10]), "|".join([*fields[:9], control_id]), 1).encode()


def _edit_segment(data: bytes, segment: str, edit: Any) -> bytes:
    lines = data.decode("ascii").split("\r")
    for index, line in enumerate(lines):
        if line.startswith(segment + "|"):
            lines[index] = edit(line)
            break
    return "\r".join(lines).encode()


def _set_field(line: str, number: int, value: str) -> str:
    fields = line.split("|")
    fields[number] = value
    return "|".join(fields)


CRAFTED: dict[str, tuple[str, str, Any]] = {
    # kind: (ACK, rule, edit of a clean message)
    "truncated": ("AE", "message_complete", lambda d: d[: d.index(b"\rOBR|") + 40] + b"\r"),
    "no_msh10": ("AE", "msh10_present", lambda d: _retag(d, "")),
    "garbage": (
        "AE",
        "segment_valid",
        lambda d: _edit_segment(d, "PID", lambda _: "#@!%*?$=+;:#@"),
    ),
    "no_test_code": (
        "AE",
        "test_code_present",
        lambda d: _edit_segment(d, "OBX", lambda s: _set_field(s, 3, "")),
    ),
    "local_code": (
        "AE",
        "loinc_known",
        lambda d: _edit_segment(d, "OBX", lambda s: _set_field(s, 3, "LOCAL-7^Local test^LN")),
    ),
    "unknown_facility": (
        "AE",
        "org_unit_known",
        lambda d: _edit_segment(
            d, "ORC", lambda s: _set_field(s, 21, "Elsewhere^L^^^^DHIS2^XX^^^NOWHERE_01")
        ),
    ),
    "adt": (
        "AR",
        "message_supported",
        lambda d: d.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01", 1),
    ),
    "old_version": ("AR", "message_supported", lambda d: d.replace(b"|P|2.5.1", b"|P|2.2", 1)),
    "bad_encoding": ("AR", "segment_valid", lambda d: d.replace(b"MSH|^~\\&|", b"MSH|^~&|", 1)),
}
TRUTH_CODES = {
    "message_complete": "AE", "msh10_present": "AE", "segment_valid": "AE",
    "test_code_present": "AE", "loinc_known": "AE", "org_unit_known": "AE", "duplicate": "AA",
}  # fmt: skip


def mllp_plan(country: SimulationResult) -> list[Outgoing]:
    """The simulator's messages (their own defects included), ten of each crafted defect, and
    enough resends of them all to make 1,000, shuffled."""
    rng = random.Random(2026)
    rules = {
        (d["record"]["file"], d["record"]["position"]): d["expected_rule"]
        for d in truth_defects(country)
    }
    plan: list[Outgoing] = []
    clean: list[Hl7Message] = []
    for message in iter_hl7_messages(country.out_dir):
        rule = rules.get((message.source, message.position))
        code = TRUTH_CODES[rule] if rule else "AA"
        plan.append(
            Outgoing(message.data, message.control_id, code, None if code == "AA" else rule)
        )
        if rule is None and b"\rOBX|" in message.data:  # clean, with a result
            clean.append(message)
    for kind, (code, rule, edit) in CRAFTED.items():
        for number in range(10):
            base = rng.choice(clean).data
            control_id = "" if kind == "no_msh10" else f"X-{kind}-{number}"
            data = edit(base if kind == "no_msh10" else _retag(base, control_id))
            plan.append(Outgoing(data, control_id, code, rule))
    originals = list(plan)
    while len(plan) < MLLP_MESSAGES:
        resend = rng.choice(originals)
        plan.append(Outgoing(resend.data, resend.control_id, resend.code, resend.rule))
    rng.shuffle(plan)
    return plan


@dataclass
class MllpRun:
    plan: list[Outgoing]
    acks: list[tuple[str, str]]
    commit_checks: list[tuple[str, str, int]] = field(default_factory=list)
    summary: ListenerSummary | None = None


def _send_checking_commits(
    host: str, port: int, messages: list[Outgoing], warehouse_url: str
) -> list[tuple[str, str, int]]:
    """Send one message at a time and, the moment each ACK arrives, count from a separate
    connection the committed rows of that message."""
    checks = []
    with (
        socket.create_connection((host, port), timeout=30) as sock,
        Warehouse.open(warehouse_url) as reader,
    ):
        decoder = hl7v2.MllpFrameDecoder()
        for message in messages:
            sock.sendall(hl7v2.frame_message(message.data))
            frames: list[bytes] = []
            while not frames:
                frames = decoder.feed(sock.recv(65536))
            code, acked = hl7v2.ack_fields(frames[0].decode())
            table = "raw.hl7v2__results" if code == "AA" else "raw.hl7v2__messages"
            status = "valid" if code == "AA" else "quarantined"
            committed = reader.fetch_scalar(
                f"select count(*) from {table} where source_name = $source "
                "and message_control_id = $msh10 and validation_status = $status",
                {"source": MLLP_SOURCE, "msh10": acked, "status": status},
            )
            checks.append((code, acked, int(committed)))
    return checks


@pytest.fixture(scope="module")
def mllp_run(file_drop: FileDrop, country: SimulationResult, key: None) -> MllpRun:
    plan = mllp_plan(country)
    assert len(plan) == MLLP_MESSAGES
    config = file_drop.config
    stop = threading.Event()
    bound: dict[str, Any] = {}
    listening = threading.Event()

    def on_listening(host: str, port: int) -> None:
        bound.update(host=host, port=port)
        listening.set()

    def listen() -> None:
        bound["summary"] = serve_mllp(
            config, MLLP_SOURCE, stop_event=stop, on_listening=on_listening
        )

    listener = threading.Thread(target=listen, name="test-mllp-listener")
    listener.start()
    try:
        assert listening.wait(30), "the listener did not start"
        host, port = bound["host"], bound["port"]
        shares = [plan[i::MLLP_CONNECTIONS] for i in range(MLLP_CONNECTIONS)]
        reports: list[Any] = [None] * MLLP_CONNECTIONS

        def send(index: int) -> None:
            messages = [
                Hl7Message(f"plan/{index}", n, o.data) for n, o in enumerate(shares[index], 1)
            ]
            reports[index] = send_messages(messages, host, port, timeout=120, retries=0)

        senders = [threading.Thread(target=send, args=(i,)) for i in range(MLLP_CONNECTIONS)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        acks: list[tuple[str, str]] = [("", "")] * MLLP_MESSAGES
        for index, report in enumerate(reports):
            assert report is not None, f"sender {index} failed"
            for result, position in zip(
                report.results, range(index, MLLP_MESSAGES, MLLP_CONNECTIONS), strict=True
            ):
                acks[position] = (result.code, result.acked_id)
        accepted = [o for o in plan if o.code == "AA"][:8]
        fresh = [Outgoing(_retag(o.data, f"C-{n}"), f"C-{n}", "AA") for n, o in enumerate(accepted)]
        truncate = CRAFTED["truncated"][2]
        fresh.append(Outgoing(truncate(_retag(accepted[0].data, "C-bad")), "C-bad", "AE"))
        checks = _send_checking_commits(host, port, fresh, config.warehouse)
    finally:
        stop.set()
        listener.join(60)
    return MllpRun(plan, acks, checks, bound.get("summary"))


def test_mllp_acknowledges_every_message_as_expected(mllp_run: MllpRun) -> None:
    expected = Counter(o.code for o in mllp_run.plan)
    assert Counter(code for code, _ in mllp_run.acks) == expected
    for outgoing, (code, acked) in zip(mllp_run.plan, mllp_run.acks, strict=True):
        assert (code, acked) == (outgoing.code, outgoing.control_id), outgoing.rule
    summary = mllp_run.summary
    assert summary is not None and summary.received == MLLP_MESSAGES + len(mllp_run.commit_checks)
    assert expected["AE"] >= 60 and expected["AR"] >= 30


def test_mllp_stores_every_well_formed_message_exactly_once(
    mllp_run: MllpRun, file_drop: FileDrop
) -> None:
    accepted: dict[str, bytes] = {o.control_id: o.data for o in mllp_run.plan if o.code == "AA"}
    sends = Counter(o.control_id for o in mllp_run.plan if o.code == "AA")
    # A copy of a message whose results were held back (AE) is a duplicate as well: its own
    # message row was valid. Copies of messages refused whole are refused again instead.
    stored = Counter(
        o.control_id for o in mllp_run.plan if o.code == "AA" or o.rule in RESULT_RULES
    )
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        rows = dict(
            warehouse.fetchall(
                "select message_control_id, count(*) from raw.hl7v2__results "
                "where source_name = $source and validation_status = 'valid' group by 1",
                {"source": MLLP_SOURCE},
            )
        )
        deliveries = defaultdict(Counter)
        for msh10, status, count in warehouse.fetchall(
            "select message_control_id, validation_status, count(*) from raw.hl7v2__messages "
            "where source_name = $source group by 1, 2",
            {"source": MLLP_SOURCE},
        ):
            deliveries[msh10][status] = count
        duplicates = warehouse.fetch_scalar(
            "select count(*) from audit.quarantine where source_name = $source and rule = 'duplicate'",
            {"source": MLLP_SOURCE},
        )
    for control_id, data in accepted.items():
        message = hl7v2.parse_message(hl7v2.segment_lines(data.decode()))
        assert rows.get(control_id) == len(hl7v2.result_records(message)), control_id
        assert deliveries[control_id]["valid"] == 1, control_id
        assert deliveries[control_id]["quarantined"] == sends[control_id] - 1, control_id
    assert duplicates == sum(n - 1 for n in stored.values()) > 100


def test_mllp_quarantines_every_malformed_message_with_its_reason(
    mllp_run: MllpRun, file_drop: FileDrop
) -> None:
    refused = [o for o in mllp_run.plan if o.code != "AA"]
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        entries = warehouse.fetchall(
            "select q.raw_table, q.record_key, q.rule, q.reason, m.message_control_id "
            "from audit.quarantine q left join raw.hl7v2__messages m "
            "on q.raw_table = 'hl7v2__messages' and m.source_name = q.source_name "
            "and m.delivery_id = q.record_key where q.source_name = $source",
            {"source": MLLP_SOURCE},
        )
    held: dict[str, set[str]] = defaultdict(set)
    reasons: dict[str, list[str]] = defaultdict(list)
    for table, key, rule, reason, msh10 in entries:
        control_id = key.split("|")[0] if table == "hl7v2__results" else (msh10 or "")
        held[control_id].add(rule)
        reasons[rule].append(reason)
    for outgoing in refused:
        assert outgoing.rule in held[outgoing.control_id], (outgoing.control_id, outgoing.rule)
    assert len(reasons["msh10_present"]) == sum(1 for o in refused if o.rule == "msh10_present")
    for rule, texts in reasons.items():
        assert all(text and "{" not in text for text in texts), rule


def test_mllp_acknowledges_only_after_the_commit(mllp_run: MllpRun) -> None:
    assert [code for code, _, _ in mllp_run.commit_checks] == ["AA"] * 8 + ["AE"]
    for code, control_id, committed in mllp_run.commit_checks:
        assert committed >= 1, (code, control_id)


# --- privacy --------------------------------------------------------------------------------------
@dataclass
class Identifiers:
    substrings: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)
    """Matched as whole words (dates, phone numbers: digits that also occur inside others)."""
    cells: set[str] = field(default_factory=set)
    """Matched as a whole value (medical record numbers: short counters)."""


def source_identifiers(country: SimulationResult) -> Identifiers:
    """Names, addresses, phones, birth dates and identifiers of every PID in the drop."""
    found = Identifiers()
    unescape = hl7v2.DEFAULT_SEPARATORS.decode
    for message in iter_hl7_messages(country.out_dir):
        for line in message.data.decode("ascii").split("\r"):
            if not line.startswith("PID|"):
                continue
            fields = line.split("|") + [""] * 20
            for repetition in fields[3].split("~"):
                cx = repetition.split("^")
                found.cells.add(cx[0])
                if len(cx[0]) > 8:
                    found.substrings.add(cx[0])
                found.substrings.add(repetition)
            name = [unescape(part) for part in fields[5].split("^")]
            family, given = name[0], name[1]
            found.substrings.update(
                {
                    fields[5],
                    f"{family}^{given}",
                    f"{given} {family}",
                    f"{family} {given}",
                    f"{family}, {given}",
                }
            )
            street = unescape(fields[11].split("^")[0])
            found.substrings.update({fields[11], street})
            found.tokens.add(fields[7])
            phone = fields[13].split("^")
            if len(phone) >= 7 and phone[6]:
                found.tokens.update({phone[6], phone[5] + phone[6]})
                found.substrings.add(fields[13])
    found.substrings.discard("")
    found.tokens.discard("")
    return found


WORD = re.compile(r"\w+")


def leaks(text: str, identifiers: Identifiers) -> list[str]:
    """The identifiers found in ``text``. Its words are indexed first, so only identifiers
    whose first word occurs in it are searched for (not thousands of scans of megabytes)."""
    words = set(WORD.findall(text))
    hits = [token for token in identifiers.tokens if token in words]  # whole words only
    for candidate in identifiers.substrings:
        first = WORD.search(candidate)
        if (first is None or first.group() in words) and candidate in text:
            hits.append(candidate)
    # A record number as a JSON value (quarantine keeps records as JSON).
    hits.extend(cell for cell in identifiers.cells if cell in words and f'"{cell}"' in text)
    return hits


def test_no_patient_identifier_reaches_raw_audit_or_logs(
    file_drop: FileDrop, mllp_run: MllpRun, country: SimulationResult, logs: LogCapture
) -> None:
    identifiers = source_identifiers(country)
    assert len(identifiers.cells) > 300 and len(identifiers.tokens) > 300
    # The scan finds them where they are: in the messages as sent.
    sent = "\x1f".join(m.data.decode("ascii") for m in iter_hl7_messages(country.out_dir))
    assert len(set(leaks(sent, identifiers))) > 1000
    with Warehouse.open(file_drop.config.warehouse) as warehouse:
        tables = warehouse.fetchall(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('raw', 'audit') order by 1, 2"
        )
        assert ("raw", "hl7v2__results") in tables
        for schema, table in tables:
            data = warehouse.fetch_arrow(f"select * from {schema}.{table}")
            cells = [
                str(value)
                for column in data.columns
                for value in column.to_pylist()
                if value is not None
            ]
            assert not leaks("\x1f".join(cells), identifiers), f"{schema}.{table}"
            assert not identifiers.cells & set(cells), f"{schema}.{table}"
    log_text = "\n".join(logs.lines)
    assert "MLLP" in log_text  # the capture saw the runs
    assert not leaks(log_text, identifiers)


# --- PostgreSQL ---------------------------------------------------------------------------------
@pytest.mark.postgres
def test_staging_is_the_same_on_postgres(
    file_drop: FileDrop, postgres_url: str, tmp_path: Path
) -> None:
    """The raw rows of the file drop, copied to PostgreSQL, give the same staging rows."""
    columns = (
        "source_name, message_control_id, segment_position, order_key, test_code, value_text, "
        "value_numeric, result_status, is_specimen_rejected, collected_at, message_sent_at, "
        "received_at, resulted_at"
    )
    query = f"select {columns} from staging.stg_hl7v2__results where source_name = '{FILE_SOURCE}'"
    with Warehouse.open(file_drop.config.warehouse) as duckdb_warehouse:
        raw = duckdb_warehouse.fetch_arrow(
            f"select * from raw.hl7v2__results where source_name = '{FILE_SOURCE}'"
        )
        expected = duckdb_warehouse.fetchall(query)
    config = file_drop.config.model_copy(update={"warehouse": postgres_url})
    with open_warehouse(config) as warehouse:
        warehouse.load_arrow("raw.hl7v2__results", raw)
        dbt_env = warehouse.dbt_env()
    outcome = run_dbt(
        ["build", "--select", "stg_hl7v2__results"], dbt_env=dbt_env, state_dir=tmp_path
    )
    assert not outcome.failed, outcome
    with Warehouse.open(postgres_url) as warehouse:
        rows = warehouse.fetchall(query)
    assert len(rows) == len(expected) > 450

    def ordered(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted(rows, key=lambda row: tuple(str(value) for value in row))

    assert ordered(rows) == ordered(expected)
