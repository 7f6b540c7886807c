"""Spreadsheet sources (``type: tabular``): CSV and XLSX drops read against declared schemas.

Each entity's schema is a YAML file in ``tabular_schemas/`` (format in its README): the file
patterns it owns, its columns with type, required flag and range, and its business key. The
connector (:mod:`connectors.tabular`) reads every column as text; the raw table
``raw.tabular__<entity>`` keeps the declared columns as text, keyed by ``source_file`` and
``source_row``. Types, ranges and periods are checked here, as helper columns for the entity's
suite (``expectations/tabular__<entity>.yml``); staging casts and keeps the latest row per
business key.

A source reads the entities its ``entities:`` key lists (default: every schema).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors import tabular as tabular_connector
from connectors.base import Cursor, Page, Record
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError, HealthpipeError
from pipelines.periods import PERIOD_TYPES, period_type_of
from pipelines.privacy import Pseudonymiser
from pipelines.tables import RAW_META_COLUMNS, RawTable, text_columns
from pipelines.warehouse import Warehouse

SCHEMA_DIR = Path(__file__).resolve().parent / "tabular_schemas"

HELPER_COLUMNS = (
    "missing_required",
    "unparsable",
    "out_of_range",
    "invalid_period",
    "duplicate_of_row",
)
"""Columns :meth:`TabularAdapter.enrich` adds for the suites (never stored): each is null when
the row passes and otherwise says what is wrong, naming the column and the value."""

RESERVED_NAMES = frozenset(
    {*tabular_connector.SOURCE_COLUMNS, *(name for name, _ in RAW_META_COLUMNS), *HELPER_COLUMNS}
)
ColumnType = Literal["text", "integer", "number", "date", "period", "boolean"]
NUMERIC_TYPES = ("integer", "number")
BOOLEAN_WORDS = {"yes": True, "no": False, "true": True, "false": False}
"""What a boolean cell may hold (any case, surrounding spaces ignored); staging maps the same."""

_PATTERNS = {
    # At most 15 digits: any such number is exact as a double and fits a bigint in staging.
    "integer": re.compile(r"^\s*[-+]?\d{1,15}\s*$"),
    "number": re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*$"),
    "date": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
}
_EXPECTED = {
    "integer": "a whole number (at most 15 digits)",
    "number": "a number",
    "date": "a date YYYY-MM-DD",
    "boolean": "yes or no",
}


class ColumnSpec(BaseModel):
    """One declared column of an entity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    header: str | None = None
    """The column's title in the files, when it differs from ``name`` (matched ignoring case
    and surrounding spaces)."""
    type: ColumnType = "text"
    required: bool = False
    min: float | None = None
    max: float | None = None
    period_type: str | None = None
    """For ``period`` columns: the DHIS2 period type every value must have."""
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        if self.name in RESERVED_NAMES:
            raise ValueError(f"column name {self.name!r} is reserved for healthpipe's own columns")
        if (self.min is not None or self.max is not None) and self.type not in NUMERIC_TYPES:
            raise ValueError(f"{self.name}: min and max apply to integer and number columns")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.name}: min {self.min} is above max {self.max}")
        if self.period_type is not None and self.type != "period":
            raise ValueError(f"{self.name}: period_type applies to period columns")
        if self.period_type is not None and self.period_type not in PERIOD_TYPES:
            raise ValueError(
                f"{self.name}: period_type {self.period_type!r} is not a DHIS2 period type "
                f"({', '.join(PERIOD_TYPES)})"
            )
        return self

    @property
    def title(self) -> str:
        return self.header or self.name


class EntitySchema(BaseModel):
    """``tabular_schemas/<entity>.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    description: str
    files: list[str] = Field(min_length=1)
    """Glob patterns relative to the source's folder."""
    sheet: str | None = None
    business_key: list[str] = Field(min_length=1)
    columns: list[ColumnSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> EntitySchema:
        names = [column.name for column in self.columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"columns declared twice: {', '.join(repeated)}")
        titles = [column.title.strip().casefold() for column in self.columns]
        if len(set(titles)) != len(titles):
            raise ValueError("two columns match the same header title")
        required = {column.name for column in self.columns if column.required}
        for key in self.business_key:
            if key not in required:
                raise ValueError(f"business_key column {key!r} must be a required column")
        for pattern in self.files:
            parts = pattern.replace("\\", "/").split("/")
            if pattern.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                raise ValueError(f"file pattern {pattern!r} must stay inside the drop folder")
        return self

    def column(self, name: str) -> ColumnSpec:
        return next(column for column in self.columns if column.name == name)

    def declared(self) -> tabular_connector.DeclaredSchema:
        """What the connector needs to read the files."""
        return tabular_connector.DeclaredSchema(
            entity=self.entity,
            patterns=tuple(self.files),
            columns=tuple(
                tabular_connector.DeclaredColumn(column.name, column.title, column.required)
                for column in self.columns
            ),
            sheet=self.sheet,
        )


def load_schema(path: Path) -> EntitySchema:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        schema = EntitySchema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
    if schema.entity != path.stem:
        raise ConfigError(f"{path}: entity {schema.entity!r} must match the file name")
    return schema


@cache
def load_schemas(folder: Path = SCHEMA_DIR) -> dict[str, EntitySchema]:
    """Every entity schema in ``folder``, by entity name, in name order."""
    return {path.stem: load_schema(path) for path in sorted(folder.glob("*.yml"))}


def raw_table_for(schema: EntitySchema) -> RawTable:
    return RawTable(
        "tabular",
        schema.entity,
        text_columns(
            *(column.name for column in schema.columns), *tabular_connector.SOURCE_COLUMNS
        ),
        key=("source_file", "source_row"),
    )


SCHEMAS = load_schemas()
TABLES: tuple[RawTable, ...] = tuple(raw_table_for(schema) for schema in SCHEMAS.values())


def selected_schemas(source: SourceConfig) -> list[EntitySchema]:
    """The entities a source reads: its ``entities:`` list, or every schema."""
    if not source.entities:
        return list(SCHEMAS.values())
    unknown = [name for name in source.entities if name not in SCHEMAS]
    if unknown:
        raise ConfigError(
            f"source {source.name}: entities: no schema for {', '.join(unknown)} "
            f"(schemas: {', '.join(SCHEMAS)})"
        )
    return [SCHEMAS[name] for name in source.entities]


# --- Helper columns -------------------------------------------------------------------------


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.astype(str).str.strip().eq("")


def _describe(mask: pd.Series, values: pd.Series, message: str) -> pd.Series:
    """``message`` (with ``{value}``) where ``mask`` holds, else None."""
    texts = values.where(mask).map(
        lambda value: message.format(value=repr(value)), na_action="ignore"
    )
    return texts.astype(object).where(mask, None)


def _missing_required(frame: pd.DataFrame, column: ColumnSpec) -> pd.Series:
    # A column absent from the file's header is schema drift, reported once by its own rule;
    # missing_columns is the same for every row of a file, so few distinct values are checked.
    listed = frame["missing_columns"].dropna().unique()
    absent = frame["missing_columns"].isin([m for m in listed if column.name in m.split(", ")])
    mask = _blank(frame[column.name]) & ~absent
    return pd.Series(column.name, index=frame.index, dtype=object).where(mask, None)


def _parses(values: pd.Series, column: ColumnSpec) -> pd.Series:
    """True where a non-blank value parses as the column's type (periods are checked apart)."""
    text = values.astype(object).fillna("").astype(str)
    if column.type in ("integer", "number"):
        return text.str.fullmatch(_PATTERNS[column.type])
    if column.type == "date":
        shaped = text.str.fullmatch(_PATTERNS["date"])
        parsed = pd.to_datetime(text.where(shaped), format="%Y-%m-%d", errors="coerce")
        return shaped & parsed.notna()
    if column.type == "boolean":
        return text.str.strip().str.casefold().isin(BOOLEAN_WORDS)
    return pd.Series(True, index=values.index)


def _out_of_range(values: pd.Series, parsed: pd.Series, column: ColumnSpec) -> pd.Series:
    numbers = pd.to_numeric(values.where(parsed), errors="coerce")
    problems = pd.Series(None, index=values.index, dtype=object)
    if column.min is not None:
        below = f"{column.name} {{value}} is below the minimum {column.min:g}"
        problems = problems.where(
            ~(numbers < column.min), _describe(numbers < column.min, values, below)
        )
    if column.max is not None:
        above = f"{column.name} {{value}} is above the maximum {column.max:g}"
        problems = problems.where(
            ~(numbers > column.max), _describe(numbers > column.max, values, above)
        )
    return problems


def _invalid_period(values: pd.Series, column: ColumnSpec) -> pd.Series:
    present = ~_blank(values)
    known = {value: period_type_of(value) for value in values[present].unique()}
    types = values.where(present).map(known, na_action="ignore")
    unparsed = present & types.isna()
    problems = _describe(
        unparsed, values, f"{column.name} {{value}} is not a DHIS2 period identifier"
    )
    if column.period_type is not None:
        wrong = present & types.notna() & types.ne(column.period_type)
        problems = problems.where(
            ~wrong,
            _describe(
                wrong, values, f"{column.name} {{value}} is not a {column.period_type} period"
            ),
        )
    return problems


def _join(parts: list[pd.Series], index: pd.Index) -> pd.Series:
    """One text per row: the problems found, separated by '; ', or None."""
    joined = pd.Series(None, index=index, dtype=object)
    if not parts:
        return joined
    combined = pd.concat(parts, axis=1, ignore_index=True)
    flagged = combined.notna().any(axis=1)  # most rows have no problem: join only the others
    joined[flagged] = [
        "; ".join(value for value in row if isinstance(value, str))
        for row in combined[flagged].itertuples(index=False)
    ]
    return joined


def helper_columns(
    schema: EntitySchema, frame: pd.DataFrame, duplicate_of: Mapping[tuple[str, str], int]
) -> pd.DataFrame:
    """The frame with :data:`HELPER_COLUMNS` added; deleted rows (rows gone from a changed
    file) have nothing to check."""
    enriched = frame.copy()
    required, unparsable, out_of_range, periods = [], [], [], []
    for column in schema.columns:
        values = enriched[column.name].astype(object)
        present = ~_blank(values)
        if column.required:
            required.append(_missing_required(enriched, column))
        if column.type == "period":
            periods.append(_invalid_period(values, column))
            continue
        parsed = _parses(values, column) & present
        if column.type != "text":
            expected = _EXPECTED[column.type]
            unparsable.append(
                _describe(present & ~parsed, values, f"{column.name} {{value}} is not {expected}")
            )
        if column.min is not None or column.max is not None:
            out_of_range.append(_out_of_range(values, parsed, column))
    enriched["missing_required"] = _join(required, enriched.index)
    enriched["unparsable"] = _join(unparsable, enriched.index)
    enriched["out_of_range"] = _join(out_of_range, enriched.index)
    enriched["invalid_period"] = _join(periods, enriched.index)
    enriched["duplicate_of_row"] = [
        str(duplicate_of[(file, row)]) if (file, row) in duplicate_of else None
        for file, row in zip(enriched["source_file"], enriched["source_row"], strict=True)
    ]
    deleted = enriched["is_deleted"].astype(bool).tolist()
    for name in HELPER_COLUMNS:
        found = enriched[name].tolist()
        enriched[name] = pd.Series(
            [None if gone or pd.isna(v) else v for v, gone in zip(found, deleted, strict=True)],
            index=enriched.index,
            dtype=object,
        )
    return enriched


def _content_hash_sql(table: RawTable, alias: str) -> str:
    """md5 of a row's content: declared columns and extras, not its position in the file."""
    columns = [c for c in table.entity_columns if c not in ("source_row", "missing_columns")]
    parts = ", ".join(f"coalesce({alias}.{c}, chr(30))" for c in [*columns, "extras"])
    return f"md5(concat_ws(chr(31), {parts}))"


def find_duplicates(
    warehouse: Warehouse, table: RawTable, source_name: str
) -> dict[tuple[str, str], int]:
    """(file, row) of each pending row that repeats an earlier row of the same file exactly,
    with the earlier row's number. The whole file is compared, not just this batch, so a copy
    is found even when its original came in an earlier page or an earlier run."""
    rows = warehouse.fetchall(
        f"""
        with pending_files as (
            select distinct source_file from {table.qualified_name}
            where source_name = $source and validation_status = 'pending'
        ),
        content as (
            select t.source_file, cast(t.source_row as integer) as row_number,
                   t.validation_status, {_content_hash_sql(table, "t")} as content_hash
            from {table.qualified_name} t
            join pending_files f on f.source_file = t.source_file
            where t.source_name = $source and not t.is_deleted
        )
        select later.source_file, later.row_number, min(earlier.row_number)
        from content later
        join content earlier
          on earlier.source_file = later.source_file
         and earlier.content_hash = later.content_hash
         and earlier.row_number < later.row_number
        where later.validation_status = 'pending'
        group by later.source_file, later.row_number
        """,
        {"source": source_name},
    )
    return {(str(file), str(row)): int(first) for file, row, first in rows}


class TabularAdapter:
    source_type = "tabular"
    cursor_entity = "files"
    tables = TABLES
    patient_level = False
    helper_columns: tuple[str, ...] = HELPER_COLUMNS

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        if source.path is None:
            raise HealthpipeError(
                f"source {source.name}: a tabular source reads a folder of CSV and XLSX files; "
                "give `path:` the drop folder"
            )
        schemas = [schema.declared() for schema in selected_schemas(source)]
        return tabular_connector.read_drop_folder(
            source.path, schemas, cursor, source_name=source.name, page_size=source.page_size
        )

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        return list(records)  # facility-level tables: nothing identifies a person

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        """``$org_unit_codes``: the codes of the organisation units landed (and valid) from any
        DHIS2 source; ``duplicate_of`` feeds the ``duplicate_of_row`` helper column."""
        codes = warehouse.fetchall(
            "select distinct code from raw.dhis2__organisation_units "
            "where validation_status = 'valid' and not is_deleted and code is not null"
        )
        table = next(t for t in TABLES if t.entity == entity)
        return {
            "org_unit_codes": sorted(str(row[0]) for row in codes),
            "duplicate_of": find_duplicates(warehouse, table, source_name),
        }

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        return helper_columns(SCHEMAS[entity], frame, references.get("duplicate_of", {}))
