"""The CSV/XLSX drop reader: values as text, extras, cursor, formulas never evaluated, and
hostile files refused with an error naming them."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from connectors.base import Page
from connectors.errors import SourceFormatError
from connectors.tabular import (
    DeclaredColumn,
    DeclaredSchema,
    Limits,
    check_workbook_archive,
    neutralise_cell,
    read_drop_folder,
)

STOCK = DeclaredSchema(
    entity="stock",
    patterns=("stock*.csv", "stock*.xlsx", "stock*.pdf"),
    columns=(
        DeclaredColumn("facility_code", "facility_code", required=True),
        DeclaredColumn("period", "period", required=True),
        DeclaredColumn("stock_on_hand", "stock_on_hand", required=True),
        DeclaredColumn("staff_left", "left"),
        DeclaredColumn("comment", "comment"),
    ),
)
HEADER = "facility_code,period,stock_on_hand,left,comment\n"


def read(folder: Path, cursor: Any = None, **options: Any) -> list[Page]:
    return list(read_drop_folder(folder, [STOCK], cursor, source_name="sheets", **options))


def records(pages: list[Page]) -> list[dict[str, Any]]:
    return [record for page in pages for record in page.records]


def write_xlsx(path: Path, rows: list[list[Any]], title: str = "stock") -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    for row in rows:
        sheet.append(row)
    workbook.save(path)


# --- Reading --------------------------------------------------------------------------------


def test_csv_values_are_text_exactly_as_written(tmp_path: Path) -> None:
    (tmp_path / "stock.csv").write_bytes(
        (
            "\ufeff" + HEADER + "HC01,202501, 12 ,0,\n"
            "\n"  # a blank line is skipped but counted, like an empty sheet row
            'HC02,202501,007,1,"=1+1, said the ""clerk"""\n'
        ).encode("utf-8")
    )
    first, second = records(read(tmp_path))
    assert first == {
        "facility_code": "HC01",
        "period": "202501",
        "stock_on_hand": " 12 ",
        "staff_left": "0",
        "comment": None,
        "source_file": "stock.csv",
        "source_row": "1",
        "missing_columns": None,
        "extras": None,
    }
    assert second["source_row"] == "3"
    assert second["stock_on_hand"] == "007"
    assert second["comment"] == '=1+1, said the "clerk"'


def test_a_new_column_goes_to_extras_and_a_missing_required_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "stock_202512.csv").write_text(
        "facility_code,period,soh,comment,\nHC01,202512,40,,\nHC02,202512,,ok,stray\n",
        encoding="utf-8",
    )
    first, second = records(read(tmp_path))
    assert first["missing_columns"] == "stock_on_hand"
    assert first["stock_on_hand"] is None
    assert json.loads(first["extras"]) == {"soh": "40"}
    # An undeclared column shows on every row, even empty; a cell under no title only when set.
    assert json.loads(second["extras"]) == {"soh": None, "column_5": "stray"}


def test_xlsx_cells_become_text_and_formulas_stay_formula_text(tmp_path: Path) -> None:
    path = tmp_path / "stock.xlsx"
    write_xlsx(
        path,
        [
            ["facility_code", "period", "stock_on_hand", "left", "comment"],
            ["HC01", "202501", 12, 0, "=SUM(C2:C3)"],
            ["HC02", "202501", 2.5, True, "@SUM(1,1)"],
            [],
            ["HC03", "202501", None, None, "+1"],
        ],
    )
    # Give the formula a cached result, as Excel would: it must still be read as its text.
    patched = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(patched, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data, count = re.subn(rb"(<f>SUM\(C2:C3\)</f>)<v\s*/>", rb"\1<v>14.5</v>", data)
                assert count == 1
            target.writestr(item, data)
    path.write_bytes(patched.getvalue())

    rows = records(read(tmp_path))
    assert [(r["source_row"], r["stock_on_hand"], r["staff_left"], r["comment"]) for r in rows] == [
        ("1", "12", "0", "=SUM(C2:C3)"),
        ("2", "2.5", "TRUE", "@SUM(1,1)"),
        ("4", None, None, "+1"),
    ]


def test_csv_and_xlsx_twins_read_the_csv_and_a_lone_xlsx_is_read(tmp_path: Path) -> None:
    (tmp_path / "stock_a.csv").write_text(HEADER + "HC01,202501,5,0,\n", encoding="utf-8")
    write_xlsx(tmp_path / "stock_a.xlsx", [HEADER.strip().split(","), ["HC01", "202501", 5, 0]])
    write_xlsx(tmp_path / "stock_b.xlsx", [HEADER.strip().split(","), ["HC09", "202501", 1, 0]])
    (tmp_path / "~$stock_b.xlsx").write_bytes(b"lock file")  # Excel's lock file: ignored
    assert [(p.origin.rsplit("/", 1)[-1], len(p.records)) for p in read(tmp_path)] == [
        ("stock_a.csv", 1),
        ("stock_b.xlsx", 1),
    ]


def test_pages_are_bounded_and_a_file_is_done_only_with_its_last_page(tmp_path: Path) -> None:
    body = "".join(f"HC{n:02d},202501,{n},0,\n" for n in range(1, 6))
    (tmp_path / "stock.csv").write_text(HEADER + body, encoding="utf-8")
    pages = read(tmp_path, page_size=2)
    assert [len(page.records) for page in pages] == [2, 2, 1]
    assert [page.cursor["files"].get("stock.csv") is not None for page in pages] == [
        False,
        False,
        True,
    ]
    assert pages[-1].cursor["files"]["stock.csv"]["last_row"] == 5


def test_the_cursor_skips_unchanged_files_and_rereads_changed_ones(tmp_path: Path) -> None:
    path = tmp_path / "stock.csv"
    path.write_text(HEADER + "HC01,202501,5,0,\nHC02,202501,6,0,\nHC03,202501,7,0,\n")
    cursor = read(tmp_path)[-1].cursor
    assert read(tmp_path, cursor) == []

    # Touched but unchanged: nothing to read (the content hash decides).
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert read(tmp_path, cursor) == []

    # Changed and shorter: the file is re-read; rows that are gone come as deletions.
    path.write_text(HEADER + "HC01,202501,5,0,\n\n", encoding="utf-8")
    pages = read(tmp_path, cursor)
    rows = [(r["source_row"], r["facility_code"], bool(r.get("deleted"))) for r in records(pages)]
    assert rows == [("1", "HC01", False), ("2", None, True), ("3", None, True)]
    entry = pages[-1].cursor["files"]["stock.csv"]
    assert entry["last_row"] == 1
    assert entry["sha256"] != cursor["files"]["stock.csv"]["sha256"]
    assert read(tmp_path, pages[-1].cursor) == []


def test_a_header_only_file_gives_one_empty_page_that_saves_its_cursor(tmp_path: Path) -> None:
    (tmp_path / "stock.csv").write_text(HEADER, encoding="utf-8")
    (page,) = read(tmp_path)
    assert page.records == []
    assert "stock.csv" in page.cursor["files"]


def test_neutralise_cell() -> None:
    for risky in ("=1+1", "+SUM(1,1)", "-2+3", "@SUM(1,1)", "\t=1", "\r=1"):
        assert neutralise_cell(risky) == "'" + risky
    for safe in ("", "Stocked out", "12", "a=b", " =1"):
        assert neutralise_cell(safe) == safe


# --- Refusals -------------------------------------------------------------------------------


def refused(folder: Path, match: str, **options: Any) -> SourceFormatError:
    with pytest.raises(SourceFormatError, match=match) as caught:
        read(folder, **options)
    return caught.value


def minimal_zip(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<Types/>")
        for name, data in entries.items():
            archive.writestr(name, data)


def test_a_zip_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "stock.xlsx"
    minimal_zip(path, {"xl/worksheets/sheet1.xml": b"\0" * (8 << 20)})  # ~8 KB compressed
    error = refused(tmp_path, "zip bomb")
    assert str(path) in str(error) and "expand" in str(error)
    # The total expanded size is bounded too, whatever the ratio.
    with pytest.raises(SourceFormatError, match="more than 1000 bytes"):
        check_workbook_archive(path, "x", Limits(max_uncompressed_bytes=1000))


def test_zip_entries_escaping_the_archive_are_refused(tmp_path: Path) -> None:
    for name in ("../../evil.xml", "/etc/evil.xml", "xl\\..\\..\\evil.xml", "C:/evil.xml"):
        path = tmp_path / "stock.xlsx"
        minimal_zip(path, {name: b"<x/>"})
        error = refused(tmp_path, "escapes the archive")
        assert str(path) in str(error)


def test_xml_with_a_dtd_is_refused(tmp_path: Path) -> None:
    laughs = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><worksheet/>'
    minimal_zip(tmp_path / "stock.xlsx", {"xl/worksheets/sheet1.xml": laughs})
    refused(tmp_path, "declares a DTD")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("stock.pdf", b"%PDF-1.7", "neither CSV nor XLSX"),
        ("stock.csv", b"PK\x03\x04rest of a zip", "not a CSV file: the content is a zip"),
        ("stock.csv", b"\xd0\xcf\x11\xe0legacy", "legacy Excel"),
        ("stock.csv", b"\xff\xfef\x00", "UTF-16"),
        ("stock.xlsx", b"facility_code,period\n", "not an XLSX workbook: not a zip"),
        ("stock.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy .xls or an encrypted"),
        ("stock.csv", b"", "the file is empty"),
    ],
)
def test_files_that_are_not_csv_or_xlsx_are_refused(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    (tmp_path / name).write_bytes(content)
    error = refused(tmp_path, match)
    assert name in str(error)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (HEADER.encode() + b"HC01,202501,\xe9t\xe9,0,\n", r"line 2 is not UTF-8"),
        (b"facility_code;period;stock_on_hand\nHC01;202501;4\n", "separated by ';'"),
        (b"facility_code,period,Facility_Code\n", "holds column 'Facility_Code' twice"),
        (HEADER.encode() + b"HC01,2025\x00,1,0,\n", "line 2 holds a NUL byte"),
        (HEADER.encode() + b"x" * 5000 + b"\n", "line 2 is longer than 4096 bytes"),
    ],
)
def test_malformed_csv_is_refused_naming_the_line(
    tmp_path: Path, content: bytes, match: str
) -> None:
    (tmp_path / "stock.csv").write_bytes(content)
    error = refused(tmp_path, match, limits=Limits(max_line_bytes=4096))
    assert "stock.csv" in str(error)


def test_a_link_out_of_the_drop_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text(HEADER, encoding="utf-8")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "stock.csv").symlink_to(outside)
    refused(drop, "leading out of the drop folder")


def test_a_file_claimed_by_two_entities_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "stock.csv").write_text(HEADER, encoding="utf-8")
    other = DeclaredSchema("other", ("*.csv",), STOCK.columns)
    with pytest.raises(SourceFormatError, match="both stock and other"):
        list(read_drop_folder(tmp_path, [STOCK, other]))


def test_a_workbook_without_the_entity_sheet_must_have_one_sheet(tmp_path: Path) -> None:
    path = tmp_path / "stock.xlsx"
    workbook = openpyxl.Workbook()
    workbook.create_sheet("notes")
    workbook.save(path)
    refused(tmp_path, "no worksheet named 'stock'")
