"""Spreadsheet drops: a folder of CSV and XLSX files read against a declared schema per entity.

District offices, stores and programmes send tables as files. Each entity (``lmis_stock``,
``workforce`` ...) has a declared schema: the file name patterns it owns (globs relative to the
drop folder) and its columns, each matched to a header title. A record holds every declared
column (``None`` when the file lacks the column or the cell is empty) plus:

- ``source_file``: the file's path relative to the drop folder (POSIX separators);
- ``source_row``: the 1-based data row (the row under the header is 1; in a workbook, data row
  ``n`` is sheet row ``n + 1``); blank rows are skipped but still counted, so the number is the
  one a person sees in the file;
- ``missing_columns``: the required declared columns the header lacks (comma separated), or
  ``None``: a renamed or dropped column is schema drift, which validation reports;
- ``extras``: the columns the schema does not declare, as JSON (``None`` when there are none),
  so a new column is kept and visible, never dropped.

Values are text exactly as written: nothing is trimmed, typed or evaluated. CSV is UTF-8 (with
or without BOM), comma separated, with a header row; an empty field is ``None``. XLSX is read
with openpyxl in read-only mode (streamed); a cell's stored value becomes text (numbers as
written, booleans ``TRUE``/``FALSE``, date-formatted numbers as ISO dates) and a cell holding a
formula is read as its formula text (``=SUM(A1:A3)``), never as its result. Anything healthpipe
later writes to CSV or XLSX goes through :func:`neutralise_cell`.

Twins: when a folder holds both ``name.csv`` and ``name.xlsx`` claimed by the same entity (many
export tools, and ``healthpipe simulate``, write both with the same rows), the CSV is read and
the XLSX skipped; an XLSX without a CSV twin is read. A drop of workbooks therefore needs no
setting: point the source at a folder of ``.xlsx`` files.

Hostile input is refused with a :class:`SourceFormatError` naming the file: workbooks whose zip
entries would expand beyond :class:`Limits` (zip bombs), whose entry names escape the archive,
or whose XML declares a DTD; files whose content is neither CSV nor XLSX; files reached through
a link that leads out of the drop folder. Memory stays bounded: rows are streamed and a CSV line
longer than ``Limits.max_line_bytes`` is refused instead of being read whole.

Cursor: ``{"files": {relative path: {"mtime_ns", "size", "sha256", "last_row"}}}``. A file whose
modification time and size are unchanged is skipped without reading it; otherwise its sha256
decides. A changed file is re-read whole (its rows are keyed by file and row, so unchanged rows
re-land as no-ops) and rows that held data before but no longer do (the file shrank, or a row
was blanked) are sent as deletions. A file's entry advances only with its last page. Files that
disappear from the folder keep their rows: drop folders are often emptied after processing.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree.ElementTree import ParseError

from connectors.base import Cursor, Page, Record, file_sha256
from connectors.errors import SourceFormatError

log = logging.getLogger(__name__)

SOURCE_COLUMNS = ("source_file", "source_row", "missing_columns")
"""Columns every record carries besides the declared ones (and ``extras``)."""

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make Excel, LibreOffice or Google Sheets read a cell as a formula."""

Cells = list[str | None]


@dataclass(frozen=True)
class DeclaredColumn:
    name: str
    """The column's name in records and in the warehouse."""
    header: str
    """The header title that identifies it in a file (matched ignoring case and surrounding
    spaces)."""
    required: bool = False


@dataclass(frozen=True)
class DeclaredSchema:
    """What the connector needs of an entity's schema (types and ranges are validation's)."""

    entity: str
    patterns: tuple[str, ...]
    """Glob patterns relative to the drop folder (``lmis_stock/lmis_stock_*.csv``)."""
    columns: tuple[DeclaredColumn, ...]
    sheet: str | None = None
    """The worksheet to read in a workbook; default: the sheet named after the entity, or the
    only sheet."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one file may cost to read."""

    max_uncompressed_bytes: int = 1 << 30
    """Total size a workbook's zip entries may expand to."""
    max_compression_ratio: float = 500.0
    """Expanded / compressed size of one entry; spreadsheet XML stays far below this."""
    ratio_floor_bytes: int = 1 << 20
    """Entries smaller than this are not held to the ratio (tiny XML parts compress well)."""
    max_zip_entries: int = 10_000
    max_line_bytes: int = 1 << 20
    """Longest CSV line accepted; a longer one is refused rather than read whole."""
    xml_prolog_bytes: int = 1 << 16
    """How much of each XML part is checked for a DTD (which must precede the root)."""


DEFAULT_LIMITS = Limits()


def neutralise_cell(value: str) -> str:
    """Make a value safe to write into a CSV or XLSX cell that a person may open in a
    spreadsheet: a value starting with ``= + - @``, tab or carriage return gets a leading
    apostrophe, so it is shown as text instead of being run as a formula (CSV injection)."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


# --- Finding the files ----------------------------------------------------------------------


def _is_ignored(relative: str) -> bool:
    """Office lock files (``~$book.xlsx``) and hidden files are not data."""
    name = relative.rsplit("/", 1)[-1]
    return name.startswith(("~$", "."))


def _twin_key(relative: str) -> str:
    return relative.rsplit(".", 1)[0].casefold()


def _suffix(relative: str) -> str:
    return relative.rsplit(".", 1)[-1].casefold() if "." in relative else ""


def claimed_files(
    folder: Path, schemas: Iterable[DeclaredSchema], source_name: str
) -> list[tuple[DeclaredSchema, str, Path]]:
    """(schema, relative path, path) of every file the schemas claim, entity by entity and
    sorted by path, without the XLSX twins of CSV files."""
    root = folder.resolve()
    owners: dict[str, str] = {}
    claimed: list[tuple[DeclaredSchema, str, Path]] = []
    for schema in schemas:
        matched: dict[str, Path] = {}
        for pattern in schema.patterns:
            for path in folder.glob(pattern):
                relative = path.relative_to(folder).as_posix()
                if path.is_file() and not _is_ignored(relative):
                    matched[relative] = path
        csv_stems = {_twin_key(r) for r in matched if _suffix(r) == "csv"}
        for relative in sorted(matched):
            path = matched[relative]
            if relative in owners:
                raise SourceFormatError(
                    f"{source_name}: {path}",
                    f"claimed by the file patterns of both {owners[relative]} and "
                    f"{schema.entity}; make the schemas' patterns disjoint",
                )
            owners[relative] = schema.entity
            if _suffix(relative) == "xlsx" and _twin_key(relative) in csv_stems:
                log.debug("%s: %s skipped, its CSV twin is read", source_name, relative)
                continue
            if not path.resolve().is_relative_to(root):
                raise SourceFormatError(
                    f"{source_name}: {path}",
                    f"a link leading out of the drop folder {folder}; copy the file in instead",
                )
            claimed.append((schema, relative, path))
    return claimed


# --- Checking what a file is ----------------------------------------------------------------

_MAGIC = {
    b"PK\x03\x04": "a zip archive (an XLSX workbook saved under a .csv name?)",
    b"\xd0\xcf\x11\xe0": "a legacy Excel .xls or an encrypted workbook",
    b"%PDF": "a PDF document",
    b"\xff\xfe": "UTF-16 text",
    b"\xfe\xff": "UTF-16 text",
}


def _refuse_binary_csv(path: Path, origin: str) -> None:
    with path.open("rb") as handle:
        head = handle.read(8)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise SourceFormatError(
                origin,
                f"not a CSV file: the content is {what}; expected UTF-8 comma-separated text",
            )


def _escapes_archive(name: str) -> bool:
    normalised = name.replace("\\", "/")
    return (
        not normalised
        or "\x00" in normalised
        or normalised.startswith("/")
        or re.match(r"^[A-Za-z]:", normalised) is not None
        or ".." in normalised.split("/")
    )


def check_workbook_archive(path: Path, origin: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse a workbook before openpyxl parses it: not a zip, a zip bomb, entry names that
    escape the archive, or XML with a DTD (spreadsheet XML never declares one; a DTD is how
    entity-expansion attacks start)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        with path.open("rb") as handle:
            legacy = handle.read(4) == b"\xd0\xcf\x11\xe0"
        what = "a legacy .xls or an encrypted workbook" if legacy else f"not a zip archive ({exc})"
        raise SourceFormatError(
            origin, f"not an XLSX workbook: {what}; save it as .xlsx (unencrypted) or .csv"
        ) from None
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_zip_entries:
            raise SourceFormatError(
                origin,
                f"refused: the workbook has {len(entries)} zip entries "
                f"(at most {limits.max_zip_entries} accepted)",
            )
        total = 0
        for entry in entries:
            if _escapes_archive(entry.filename):
                raise SourceFormatError(
                    origin,
                    f"refused: zip entry name {entry.filename!r} escapes the archive "
                    "(absolute path or '..')",
                )
            total += entry.file_size
            if total > limits.max_uncompressed_bytes:
                raise SourceFormatError(
                    origin,
                    "refused as a possible zip bomb: its entries would expand to more than "
                    f"{limits.max_uncompressed_bytes} bytes",
                )
            ratio = entry.file_size / max(entry.compress_size, 1)
            if entry.file_size >= limits.ratio_floor_bytes and ratio > limits.max_compression_ratio:
                raise SourceFormatError(
                    origin,
                    f"refused as a possible zip bomb: entry {entry.filename!r} would expand "
                    f"{ratio:.0f} times (at most {limits.max_compression_ratio:.0f} accepted)",
                )
        if "[Content_Types].xml" not in {entry.filename for entry in entries}:
            raise SourceFormatError(
                origin, "not an XLSX workbook: a zip archive without [Content_Types].xml"
            )
        for entry in entries:
            if entry.filename.endswith((".xml", ".rels")):
                with archive.open(entry) as part:
                    prolog = part.read(limits.xml_prolog_bytes).upper()
                if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
                    raise SourceFormatError(
                        origin, f"refused: zip entry {entry.filename!r} declares a DTD"
                    )


# --- Reading rows ---------------------------------------------------------------------------


def _decoded_lines(handle: BinaryIO, limit: int, origin: str) -> Iterator[str]:
    """Lines for the csv module, decoded one at a time so an encoding error names its line,
    and refusing a line longer than ``limit`` bytes (a file without line breaks would
    otherwise be read into memory whole)."""
    number = 0
    while line := handle.readline(limit + 1):
        number += 1
        if len(line) > limit:
            raise SourceFormatError(origin, f"line {number} is longer than {limit} bytes; refused")
        if b"\x00" in line:
            # Python's csv module accepts NUL, but no text column of a warehouse can hold it.
            raise SourceFormatError(
                origin, f"line {number} holds a NUL byte: binary content, not CSV text"
            )
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceFormatError(
                origin,
                f"line {number} is not UTF-8 text (byte {exc.start + 1} of the line: "
                f"{exc.reason}); save the file as CSV UTF-8",
            ) from None


def _csv_text(value: str) -> str | None:
    return value if value != "" else None


def _csv_rows(path: Path, origin: str, limits: Limits) -> Iterator[tuple[int, Cells]]:
    """(row number, cells), the header as row 0."""
    _refuse_binary_csv(path, origin)
    with path.open("rb") as handle:
        reader = csv.reader(_decoded_lines(handle, limits.max_line_bytes, origin))
        number = -1
        try:
            for number, row in enumerate(reader):
                yield number, [_csv_text(value) for value in row]
        except csv.Error as exc:
            where = "the header" if number < 0 else f"data row {number + 1}"
            raise SourceFormatError(
                origin, f"not readable as CSV at {where} (line {reader.line_num}): {exc}"
            ) from None


def _cell_text(value: Any) -> str | None:
    """A workbook value as text. Formula cells arrive as their formula text (the workbook is
    opened with ``data_only=False``); array formulas carry it in ``.text``."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    text = getattr(value, "text", None)
    return str(text) if text is not None else str(value)


# openpyxl reports malformed parts with whatever its XML and zip layers raise.
_WORKBOOK_ERRORS = (
    ParseError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    EOFError,
    zipfile.BadZipFile,
)


def _pick_sheet(workbook: Any, wanted: str, origin: str) -> Any:
    names = list(workbook.sheetnames)
    if wanted in names:
        sheet = workbook[wanted]
    elif len(names) == 1:
        sheet = workbook[names[0]]
    else:
        raise SourceFormatError(
            origin,
            f"no worksheet named {wanted!r} and several to choose from ({', '.join(names)})",
        )
    if not hasattr(sheet, "iter_rows"):
        raise SourceFormatError(origin, f"sheet {sheet.title!r} is a chart, not a worksheet")
    return sheet


def _xlsx_rows(
    path: Path, origin: str, sheet_name: str, limits: Limits
) -> Iterator[tuple[int, Cells]]:
    """(row number, cells), the header (sheet row 1) as row 0."""
    import openpyxl  # imported when a workbook is read: it costs a few hundred milliseconds

    check_workbook_archive(path, origin, limits)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=False, keep_links=False)
    except _WORKBOOK_ERRORS as exc:
        raise SourceFormatError(origin, f"not a readable XLSX workbook: {exc}") from None
    try:
        sheet = _pick_sheet(workbook, sheet_name, origin)
        # A workbook's declared dimension can lie; without it rows are as wide as their cells.
        sheet.reset_dimensions()
        number = -1
        try:
            for number, row in enumerate(sheet.iter_rows(values_only=True)):
                yield number, [_cell_text(value) for value in row]
        except _WORKBOOK_ERRORS as exc:
            raise SourceFormatError(
                origin,
                f"worksheet {sheet.title!r} is malformed after sheet row {number + 1}: {exc}",
            ) from None
    finally:
        workbook.close()


def table_rows(
    path: Path, origin: str, sheet_name: str, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[int, Cells]]:
    """The rows of a CSV or XLSX file as (row number, cells); the header is row 0."""
    suffix = path.suffix.casefold()
    if suffix == ".csv":
        return _csv_rows(path, origin, limits)
    if suffix == ".xlsx":
        return _xlsx_rows(path, origin, sheet_name, limits)
    raise SourceFormatError(
        origin, f"neither CSV nor XLSX ({path.suffix or 'no extension'}); save it as .csv or .xlsx"
    )


# --- Records --------------------------------------------------------------------------------


def _normal(title: str) -> str:
    return title.strip().casefold()


@dataclass(frozen=True)
class HeaderMap:
    declared: dict[int, str]
    """Position -> declared column name."""
    extra: dict[int, str]
    """Position -> name of a column the schema does not declare."""
    missing_required: tuple[str, ...]


def map_header(header: Cells, schema: DeclaredSchema, origin: str) -> HeaderMap:
    if not any(header):
        raise SourceFormatError(origin, "the first row is empty: expected a header row")
    titles = [title for title in header if title]
    if len(titles) == 1 and (";" in titles[0] or "\t" in titles[0]):
        separator = "';'" if ";" in titles[0] else "tab"
        raise SourceFormatError(
            origin, f"the header is separated by {separator}; expected comma-separated values"
        )
    by_title = {_normal(column.header): column.name for column in schema.columns}
    declared: dict[int, str] = {}
    extra: dict[int, str] = {}
    for position, title in enumerate(header):
        if title is None or not title.strip():
            continue
        name = by_title.get(_normal(title))
        if name is None:
            extra[position] = title.strip()
        elif name in declared.values():
            raise SourceFormatError(
                origin, f"the header holds column {title.strip()!r} twice", field=title.strip()
            )
        else:
            declared[position] = name
    missing = tuple(
        column.name
        for column in schema.columns
        if column.required and column.name not in declared.values()
    )
    return HeaderMap(declared, extra, missing)


def _extras(cells: Cells, header: HeaderMap) -> str | None:
    """Undeclared header columns are always listed (a new column shows on every row); cells
    beyond the header only when they hold something."""
    found: dict[str, str | None] = {}
    for position, name in header.extra.items():
        key = name if name not in found else f"{name}_{position + 1}"
        found[key] = cells[position] if position < len(cells) else None
    for position in range(len(cells)):
        if position not in header.declared and position not in header.extra and cells[position]:
            found[f"column_{position + 1}"] = cells[position]
    return json.dumps(found, ensure_ascii=False, separators=(",", ":")) if found else None


@dataclass
class FileProgress:
    last_row: int = 0
    """The last data row that held something."""


def file_records(
    schema: DeclaredSchema,
    rows: Iterator[tuple[int, Cells]],
    relative: str,
    origin: str,
    previous_last_row: int = 0,
    progress: FileProgress | None = None,
) -> Iterator[Record]:
    """Records of one file's rows; rows that held data in the previous read
    (``previous_last_row``) and are now blank or gone come as deletions."""
    progress = progress if progress is not None else FileProgress()
    first = next(rows, None)
    if first is None:
        raise SourceFormatError(origin, "the file is empty: expected a header row")
    header = map_header(first[1], schema, origin)
    missing = ", ".join(header.missing_required) or None
    names = [column.name for column in schema.columns]
    number = 0
    for number, cells in rows:
        if not any(cells):
            if number <= previous_last_row:
                yield deletion(schema, relative, number)
            continue
        record: Record = dict.fromkeys(names)
        for position, name in header.declared.items():
            if position < len(cells):
                record[name] = cells[position]
        record["source_file"] = relative
        record["source_row"] = str(number)
        record["missing_columns"] = missing
        record["extras"] = _extras(cells, header)
        progress.last_row = number
        yield record
    for gone in range(number + 1, previous_last_row + 1):
        yield deletion(schema, relative, gone)


def deletion(schema: DeclaredSchema, relative: str, number: int) -> Record:
    record: Record = dict.fromkeys(column.name for column in schema.columns)
    record.update(
        source_file=relative,
        source_row=str(number),
        missing_columns=None,
        extras=None,
        deleted=True,
    )
    return record


def _chunks(records: Iterator[Record], size: int) -> Iterator[tuple[list[Record], bool]]:
    """Pages of ``size`` records, each with whether it is the last; a file without data rows
    still gives one (empty) last page, so its cursor is saved."""
    buffer: list[Record] = []
    for record in records:
        if len(buffer) == size:
            yield buffer, False
            buffer = []
        buffer.append(record)
    yield buffer, True


# --- The folder -----------------------------------------------------------------------------


@dataclass
class _FileState:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        # Entries are replaced, never changed in place, so a shallow copy is a true snapshot.
        return {"files": dict(self.entries)}


def _changed(path: Path, saved: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The file's new fingerprint, or None when it is unchanged since ``saved``."""
    stat = path.stat()
    if saved and saved.get("mtime_ns") == stat.st_mtime_ns and saved.get("size") == stat.st_size:
        return None
    return {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size, "sha256": file_sha256(path)}


def read_drop_folder(
    folder: Path,
    schemas: Iterable[DeclaredSchema],
    cursor: Cursor | None = None,
    *,
    source_name: str = "tabular",
    page_size: int = 50_000,
    limits: Limits = DEFAULT_LIMITS,
) -> Iterator[Page]:
    """Yield pages of records from every new or changed file the schemas claim under
    ``folder``, one entity and one file at a time (see the module docstring)."""
    if not folder.is_dir():
        raise SourceFormatError(
            f"{source_name}: {folder}", "the folder does not exist or is not a directory"
        )
    state = _FileState({k: dict(v) for k, v in (cursor or {}).get("files", {}).items()})
    for schema, relative, path in claimed_files(folder, list(schemas), source_name):
        saved = state.entries.get(relative)
        fingerprint = _changed(path, saved)
        if fingerprint is None:
            continue
        previous_last_row = int(saved.get("last_row", 0)) if saved else 0
        if saved and saved.get("sha256") == fingerprint["sha256"]:
            # Touched, not changed: remember the new time so the next run need not hash it.
            state.entries[relative] = {**fingerprint, "last_row": previous_last_row}
            continue
        origin = f"{source_name}: {path}"
        progress = FileProgress()
        rows = table_rows(path, origin, schema.sheet or schema.entity, limits)
        records = file_records(schema, rows, relative, origin, previous_last_row, progress)
        for chunk, last in _chunks(records, page_size):
            if last:
                state.entries[relative] = {**fingerprint, "last_row": progress.last_row}
            yield Page(schema.entity, chunk, origin, state.snapshot())
