"""Hostile input in file drops, each refused with an error naming the file, or neutralised,
within a memory and time budget: XML entity expansion and external entities inside XLSX,
ZIP bombs and path traversal, formula cells, HL7 fields carrying raw separators and segment
terminators, JSON nested 10,000 deep, 1 GB strings in JSON and HL7 files (refused unread) and
values too long for DHIS2 (held back), periods and dates out of range, SQL-like text in free
text (landed verbatim, nothing executed)."""

from __future__ import annotations

import csv
import shutil
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import openpyxl.xml
import pytest

from connectors.errors import SourceFormatError
from connectors.tabular import FORMULA_TRIGGERS, neutralise_cell
from pipelines.run import ingest_source, open_warehouse
from tests.reliability.conftest import PSEUDONYM_KEY
from tests.reliability.drops import dhis2_drop, drop_config, some_values
from tests.reliability.results import Results

MEMORY_BUDGET = 64 << 20
TIME_BUDGET = 30.0


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHPIPE_PSEUDONYM_KEY", PSEUDONYM_KEY)


def within_budget(action: Callable[[], Any]) -> tuple[BaseException | None, int, float]:
    """Run ``action``; return what it raised, its peak Python memory and its seconds."""
    tracemalloc.start()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        action()
    except Exception as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, peak, time.monotonic() - started


LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY l0 "lol">'
    + b"".join(
        b'<!ENTITY l%d "%s">' % (i, b"".join(b"&l%d;" % (i - 1) for _ in range(10)))
        for i in range(1, 10)
    )
    + b"]>"
)
"""A billion laughs: ten levels of ten references, 10^9 'lol's once expanded."""
XXE = b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


def hostile_workbook(path: Path, prolog: bytes, entity: bytes) -> None:
    """A real workbook whose first sheet declares ``prolog`` and uses ``entity`` in a cell."""
    plain = path.with_suffix(".plain.xlsx")
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "workforce"
    sheet.append(["facility_code", "period", "comment"])
    sheet.append(["DL_D001_DH01", "2025Q3", "placeholder"])
    book.save(plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "xl/worksheets/sheet1.xml":
                data = prolog + data.replace(b"placeholder", entity)
            target.writestr(name, data)
    plain.unlink()


def zip_with(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        for name, data in entries.items():
            archive.writestr(name, data)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "XLSX with entity expansion (billion laughs)": (
        lambda p: hostile_workbook(p, LAUGHS, b"&l9;"),
        "declares a DTD",
    ),
    "XLSX with an external entity (file:///etc/passwd)": (
        lambda p: hostile_workbook(p, XXE, b"&x;"),
        "declares a DTD",
    ),
    "XLSX that is a ZIP bomb (64 MiB of zeros)": (
        lambda p: zip_with(p, {"xl/worksheets/sheet1.xml": b"\0" * (64 << 20)}),
        "expand",
    ),
    "XLSX entry with path traversal (../../)": (
        lambda p: zip_with(p, {"../../outside.xml": b"<x/>"}),
        "escapes the archive",
    ),
    "XLSX entry with an absolute path": (
        lambda p: zip_with(p, {"/etc/cron.d/evil": b"<x/>"}),
        "escapes the archive",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_workbooks_are_refused_in_bounded_memory_and_time(
    tmp_path: Path, results: Results, case: str
) -> None:
    build, message = CASES[case]
    folder = tmp_path / "sheets"
    folder.mkdir()
    build(folder / "workforce.xlsx")
    config = drop_config(tmp_path, [{"name": "sheets", "type": "tabular", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        error, peak, seconds = within_budget(
            lambda: ingest_source(warehouse, config.source("sheets"), config, run_id="h")
        )
        landed = warehouse.row_count("raw.tabular__workforce")
        cursor = warehouse.row_count("audit.source_state")
    assert isinstance(error, SourceFormatError), error
    assert message in str(error) and "workforce.xlsx" in str(error)
    assert peak < MEMORY_BUDGET and seconds < TIME_BUDGET, (peak, seconds)
    assert (landed, cursor) == (0, 0)
    results.record(
        "hostile input",
        case,
        1,
        0,
        refused_because=message,
        peak_python_memory_mib=round(peak / 2**20, 2),
        seconds=round(seconds, 2),
    )


def test_openpyxl_itself_refuses_a_dtd_because_defusedxml_is_installed(tmp_path: Path) -> None:
    """Defence in depth: were the connector's DTD check ever bypassed, openpyxl parses
    through defusedxml (when it is importable) and refuses the external entity."""
    assert openpyxl.xml.DEFUSEDXML is True
    path = tmp_path / "workforce.xlsx"
    hostile_workbook(path, XXE, b"&x;")
    with pytest.raises(ValueError, match="Unable to read workbook"):
        list(openpyxl.load_workbook(path, read_only=True).active.values)  # type: ignore[union-attr]


def test_json_nested_10000_deep_in_a_drop_is_a_clear_error(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    folder = dhis2_drop(file_country, tmp_path / "dhis2", [])
    deep = folder / "dataValueSets" / "deep.json"
    deep.write_text('{"dataValues": ' + "[" * 10_000 + "]" * 10_000 + "}", encoding="utf-8")
    config = drop_config(tmp_path, [{"name": "hmis", "type": "dhis2", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        error, peak, seconds = within_budget(
            lambda: ingest_source(warehouse, config.source("hmis"), config, run_id="h")
        )
    assert isinstance(error, SourceFormatError), repr(error)
    assert "deep.json" in str(error) and "nested deeper" in str(error)
    assert peak < MEMORY_BUDGET and seconds < TIME_BUDGET
    results.record("hostile input", "a DHIS2 file drop with JSON nested 10,000 deep", 1, 0)


GIB = 1 << 30


def write_with_huge_string(path: Path, head: bytes, tail: bytes, size: int) -> None:
    """``head``, then a string of ``size`` bytes written in 16 MiB chunks (never held whole
    in memory here either), then ``tail``."""
    chunk = b"A" * (16 << 20)
    with path.open("wb") as handle:
        handle.write(head)
        for _ in range(size // len(chunk)):
            handle.write(chunk)
        handle.write(b"A" * (size % len(chunk)) + tail)


def test_a_1_gb_string_in_a_json_or_hl7_drop_is_refused_unread(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    values = some_values(file_country, 1)
    folder = dhis2_drop(file_country, tmp_path / "dhis2", values)
    huge_json = folder / "dataValueSets" / "huge.json"
    write_with_huge_string(
        huge_json, b'{"dataValues": [{"comment": "', b'"}]}', GIB + 1
    )  # fmt: skip
    lab = tmp_path / "hl7"
    lab.mkdir()
    huge_hl7 = lab / "huge.hl7"
    write_with_huge_string(
        huge_hl7, b"MSH|^~\\&|LAB|FAC|HP|MOH|20260101120000||ORU^R01|HUGE|P|2.5.1\rNTE|1||", b"\r", GIB
    )  # fmt: skip
    config = drop_config(
        tmp_path,
        [
            {"name": "hmis", "type": "dhis2", "path": str(folder)},
            {"name": "lab", "type": "hl7v2", "path": str(lab)},
        ],
    )
    refused = []
    for name, path in (("hmis", huge_json), ("lab", huge_hl7)):
        with open_warehouse(config) as warehouse:
            error, peak, seconds = within_budget(
                lambda name=name: ingest_source(warehouse, config.source(name), config, run_id="h")  # type: ignore[misc]
            )
            landed = warehouse.fetch_scalar(
                "select count(*) from audit.source_state where source_name = $s", {"s": name}
            )
        assert isinstance(error, SourceFormatError), repr(error)
        assert path.name in str(error) and "max_file_bytes" in str(error), str(error)
        assert f"{path.stat().st_size:,} bytes" in str(error)
        assert peak < MEMORY_BUDGET and seconds < TIME_BUDGET, (peak, seconds)
        assert landed == 0  # no cursor moved past the refused file
        refused.append({"file": path.name, "bytes": path.stat().st_size, "peak_bytes": peak})
    results.record(
        "hostile input",
        "a 1 GiB string inside a DHIS2 JSON drop and inside an HL7 file",
        len(refused),
        0,
        refused=refused,
    )


def test_a_value_too_long_for_dhis2_is_held_back_with_a_short_reason(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    values = some_values(file_country, 3)
    values[0]["value"] = "9" * 60_000  # numeric text, only its length is wrong
    values[1]["comment"] = "x" * 2_000_000
    folder = dhis2_drop(file_country, tmp_path / "dhis2", values)
    config = drop_config(tmp_path, [{"name": "hmis", "type": "dhis2", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="h")
        held = warehouse.fetchall(
            "select rule, reason from audit.quarantine where raw_table = 'dhis2__data_values'"
        )
        valid = warehouse.fetch_scalar(
            "select count(*) from raw.dhis2__data_values where validation_status = 'valid'"
        )
    rules = sorted(str(rule) for rule, _ in held)
    assert rules == ["comment_length", "value_length"], held
    assert all("50,000 characters" in str(reason) for _, reason in held)
    assert all(len(str(reason)) < 1_000 for _, reason in held)  # the value is not quoted whole
    assert valid == 1
    results.record(
        "hostile input",
        "DHIS2 values and comments longer than DHIS2's 50,000 characters (60,000 and 2,000,000)",
        2,
        0,
        quarantined=len(held),
    )


def test_formula_cells_stay_text_and_are_neutralised_for_export(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    folder = tmp_path / "sheets"
    folder.mkdir()
    lines = (file_country / "tabular" / "workforce.csv").read_text().splitlines()[:2]
    payloads = [
        '=HYPERLINK("http://evil")',
        "+1+1",
        "-2+3",
        "@SUM(A1)",
        "\tx",
        "=cmd|' /C calc'!A0",
    ]
    with (folder / "workforce.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(lines[0].split(","))
        for payload in payloads:  # the comment column is the last
            writer.writerow([*lines[1].split(",")[:-1], payload])
    config = drop_config(tmp_path, [{"name": "sheets", "type": "tabular", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("sheets"), config, run_id="h")
        landed = [
            str(c)
            for (c,) in warehouse.fetchall(
                "select comment from raw.tabular__workforce order by cast(source_row as int)"
            )
        ]
    assert landed == payloads  # verbatim text: nothing evaluated
    exported = [neutralise_cell(p) for p in landed]
    assert all(not e.startswith(FORMULA_TRIGGERS) for e in exported)
    assert [e[1:] for e in exported] == payloads
    assert neutralise_cell("\rx") == "'\rx" and neutralise_cell("plain") == "plain"
    results.record(
        "hostile input",
        "CSV cells starting with = + - @ tab (formula injection)",
        len(payloads),
        0,
        landed_verbatim=len(landed),
        neutralised_for_export=len(exported),
    )


SQL = "'); drop table raw.dhis2__data_values; --"


def test_out_of_range_periods_and_sql_text_are_held_or_landed_verbatim(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    values = some_values(file_country, 8)
    bad_periods = ["2025W54", "202513", "99999999", "2025Q5", "2025W0"]
    for value, period in zip(values, bad_periods, strict=False):
        value["period"] = period
    sql_value = values[5]
    sql_value.update(comment=SQL, storedBy=f"robert{SQL}", value="12")
    values[6]["lastUpdated"] = "99999-12-31T00:00:00.000"
    values[7]["created"] = "0000-00-00"
    folder = dhis2_drop(file_country, tmp_path / "dhis2", values)
    config = drop_config(tmp_path, [{"name": "hmis", "type": "dhis2", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        started = time.monotonic()
        summary = ingest_source(warehouse, config.source("hmis"), config, run_id="h")
        seconds = time.monotonic() - started
        held = {
            str(f)
            for (f,) in warehouse.fetchall(
                "select record_key from audit.quarantine where rule = 'period_valid'"
            )
        }
        stored = warehouse.fetchall(
            "select comment, stored_by from raw.dhis2__data_values where comment = $c",
            {"c": SQL},
        )
        total = warehouse.row_count("raw.dhis2__data_values")
        dates = warehouse.fetchall(
            "select validation_status from raw.dhis2__data_values "
            "where last_updated like '99999%' or created = '0000-00-00'"
        )
    assert all(any(p in key for key in held) for p in bad_periods), held
    assert stored == [(SQL, f"robert{SQL}")]
    assert total == len(values)  # the table is there, with every row
    assert len(dates) == 2  # landed as text, nothing failed on parsing them
    assert summary.entities["data_values"].reconciles
    assert seconds < 120
    results.record(
        "hostile input",
        "periods out of range (2025W54, 202513, 99999999, 2025Q5, 2025W0), dates 99999-12-31 "
        "and 0000-00-00, SQL text in comment and storedBy",
        len(bad_periods) + 2 + 2,
        0,
        periods_quarantined=len(bad_periods),
        sql_text_landed_verbatim=len(stored),
        rows=total,
    )


def test_hl7_fields_with_raw_separators_and_terminators_stay_in_their_message(
    file_country: Path, tmp_path: Path, results: Results
) -> None:
    source = next(
        p
        for p in sorted((file_country / "hl7").rglob("*.hl7"))
        if p.read_bytes().startswith(b"MSH|")
        and p.read_bytes().count(b"MSH|") == 1
        and b"\rOBX|" in p.read_bytes()
    )
    good = source.read_bytes()
    folder = tmp_path / "hl7"
    folder.mkdir()
    shutil.copy(source, folder / "good.hl7")

    def variant(control: bytes, note: bytes) -> bytes:
        msh, rest = good.split(b"\r", 1)
        fields = msh.split(b"|")
        fields[9] = control
        return b"|".join(fields) + b"\r" + rest.rstrip(b"\r") + b"\rNTE|1||" + note + b"\r"

    hostile = {
        b"HOSTILE-1": b"text | with ^ raw ~ separators & and \\ escapes " + SQL.encode(),
        b"HOSTILE-2": b"a segment terminator\rMSH|^~\\&|FAKE|||||||INJECTED|P|2.5.1",
        b"HOSTILE-3": b"newlines\ninside\r\nthe note" + SQL.encode(),
    }
    for number, (control, note) in enumerate(hostile.items()):
        (folder / f"hostile-{number}.hl7").write_bytes(variant(control, note))
    config = drop_config(tmp_path, [{"name": "lab", "type": "hl7v2", "path": str(folder)}])
    with open_warehouse(config) as warehouse:
        started = time.monotonic()
        summary = ingest_source(warehouse, config.source("lab"), config, run_id="h")
        seconds = time.monotonic() - started
        messages = {
            str(c): str(s)
            for c, s in warehouse.fetchall(
                "select message_control_id, validation_status from raw.hl7v2__messages"
            )
        }
        tables = warehouse.row_count("raw.hl7v2__results")
    assert all(counts.reconciles for counts in summary.entities.values())
    assert {"HOSTILE-1", "HOSTILE-3"} <= set(messages)
    # the injected MSH inside a note cannot pass as a separate well-formed message
    assert messages.get("INJECTED") in (None, "quarantined"), messages
    assert tables > 0
    assert seconds < 120
    results.record(
        "hostile input",
        "HL7 notes with raw | ^ ~ & \\ separators, a segment terminator followed by a forged "
        "MSH, newlines, SQL text",
        len(hostile),
        0,
        messages=len(messages),
        statuses=dict(sorted(messages.items())),
    )
