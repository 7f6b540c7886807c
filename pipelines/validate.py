"""Validation of landed rows with Great Expectations (pandas engine).

Rows land with ``validation_status = 'pending'``. This step reads a source's pending rows of
one raw table, runs the entity's suite from ``expectations/<raw table>.yml``, and in one
transaction writes ``audit.validation_results``, copies every failing row to
``audit.quarantine`` (whole, with rule, field and reason) and marks rows ``valid`` or
``quarantined``. Staging models publish only ``valid`` rows.

Each expectation has a severity: ``quarantine`` (failing rows are held back, the rest go on)
or ``fatal`` (the whole batch stays unpublished and the run stops with an error).

GX's pandas engine is used on purpose: GX 1.24's SQL engine on DuckDB fetches results after
closing its connection and fails every expectation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError, ValidationFailed
from pipelines.paths import EXPECTATIONS_DIR
from pipelines.quarantine import (
    QuarantinedRecord,
    quarantine_records,
    record_json,
    record_key,
    record_key_sql,
)
from pipelines.tables import RawTable
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

Severity = Literal["quarantine", "fatal"]


class ExpectationSpec(BaseModel):
    """One entry of a suite file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: str = Field(pattern=r"^expect_[a-z0-9_]+$")
    column: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = "quarantine"
    reason: str


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    description: str = ""
    expectations: list[ExpectationSpec]


@dataclass
class ValidationOutcome:
    raw_table: str
    validated: int = 0
    valid: int = 0
    quarantined: int = 0
    failed_rules: dict[str, int] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)


def load_suite_spec(table: RawTable, folder: Path = EXPECTATIONS_DIR) -> SuiteSpec:
    path = folder / f"{table.name}.yml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no expectation suite for {table.qualified_name}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return SuiteSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def _class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


def _resolve(value: Any, references: Mapping[str, Any], spec: ExpectationSpec) -> Any:
    """``$name`` strings in a suite file refer to reference data the pipeline supplies
    (for example the org units known from the source's own metadata)."""
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in references:
            raise ConfigError(
                f"expectation {spec.rule}: unknown reference ${name} "
                f"(available: {', '.join('$' + k for k in sorted(references))})"
            )
        return references[name]
    return value


DOCS_SITE = "healthpipe"


@dataclass(frozen=True)
class DataDocs:
    """Where GX keeps its project (suites, validation results) and renders Data Docs."""

    gx_dir: Path
    site_dir: Path


@cache
def _gx_context(docs: DataDocs | None = None) -> Any:
    """One GX context per process (and Data Docs location): importing GX and building a
    context take seconds, so it is done lazily and once. Without ``docs`` the context is
    ephemeral; with it, validation results persist so Data Docs cover every run."""
    for name in (
        "great_expectations",
        "great_expectations.core",
        "great_expectations.data_context",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context: Any
    if docs is None:
        context = gx.get_context(mode="ephemeral")
    else:
        docs.gx_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(docs.gx_dir))
        if DOCS_SITE not in context.list_data_docs_sites():
            context.add_data_docs_site(
                DOCS_SITE,
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs.site_dir),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    try:
        context.data_sources.get("healthpipe_batches")
    except (KeyError, ValueError):
        context.data_sources.add_pandas("healthpipe_batches").add_dataframe_asset(
            "landed_rows"
        ).add_batch_definition_whole_dataframe("whole_batch")
    return context


@dataclass(frozen=True)
class _RegisteredSuite:
    fingerprint: str
    suite: Any
    position_of: dict[str, int]


_registered_suites: dict[tuple[int, str], _RegisteredSuite] = {}
"""The suite last registered per GX context and suite name. A pull validates hundreds of
batches against the same reference sets; GX copies an expectation's whole configuration
(tens of thousands of org unit ids in a value set) each time one is added, so rebuilding the
suite per batch cost about a fifth of validation at M and grew with the country's size."""


def _registered_suite(
    context: Any, spec: SuiteSpec, references: Mapping[str, Any]
) -> tuple[Any, dict[str, int]]:
    """The GX suite for ``spec`` with ``references`` filled in, rebuilt only when the spec or
    the references it uses changed since the last call (reference sets change between pulls
    and when metadata lands). Returns the suite and each expectation id's position in the
    spec (the spec object may be a fresh copy of the same file, so positions, not objects)."""
    import great_expectations as gx

    resolved = []
    for item in spec.expectations:
        kwargs = {k: _resolve(v, references, item) for k, v in item.kwargs.items()}
        if item.column is not None:
            kwargs["column"] = item.column
        if "row_condition" in kwargs:
            kwargs.setdefault("condition_parser", "pandas")
        resolved.append((item, kwargs))
    fingerprint = hashlib.sha256(
        json.dumps(
            [[item.model_dump(), kwargs] for item, kwargs in resolved], sort_keys=True, default=str
        ).encode()
    ).hexdigest()
    key = (id(context), spec.suite)
    registered = _registered_suites.get(key)
    if registered is not None and registered.fingerprint == fingerprint:
        return registered.suite, registered.position_of
    try:
        context.suites.delete(spec.suite)
    except Exception:  # a stale suite of an earlier process or spec is replaced
        log.debug("suite %s not registered yet", spec.suite)
    suite = context.suites.add(gx.ExpectationSuite(name=spec.suite))
    position_of: dict[str, int] = {}
    for position, (item, kwargs) in enumerate(resolved):
        expectation_class = getattr(gx.expectations, _class_name(item.type), None)
        if expectation_class is None:
            raise ConfigError(
                f"suite {spec.suite}: rule {item.rule}: unknown expectation {item.type}"
            )
        added = suite.add_expectation(expectation_class(**kwargs))
        position_of[str(added.id)] = position
    _registered_suites[key] = _RegisteredSuite(fingerprint, suite, position_of)
    return suite, position_of


def run_suite(
    spec: SuiteSpec,
    frame: pd.DataFrame,
    references: Mapping[str, Any],
    *,
    docs: DataDocs | None = None,
    run_id: str = "adhoc",
    batch_id: str = "batch",
    now: datetime | None = None,
) -> list[tuple[ExpectationSpec, dict[str, Any], bool]]:
    """Run the suite on ``frame`` and return, per expectation, GX's result dict and success.
    With ``docs``, the result is also stored for the Data Docs site."""
    context = _gx_context(docs)
    suite, position_of = _registered_suite(context, spec, references)
    batch = (
        context.data_sources.get("healthpipe_batches")
        .get_asset("landed_rows")
        .get_batch_definition("whole_batch")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    if docs is not None:
        _store_result(context, spec.suite, result, run_id, batch_id, now)
    # GX groups results by column, not in suite order: match each result to its rule by the
    # expectation's id.
    outcomes = sorted(
        (position_of[str(expectation_result.expectation_config.id)], expectation_result)
        for expectation_result in result.results
    )
    return [
        (spec.expectations[position], dict(outcome.result), bool(outcome.success))
        for position, outcome in outcomes
    ]


def _store_result(
    context: Any, suite: str, result: Any, run_id: str, batch_id: str, now: datetime | None
) -> None:
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite),
        run_id=RunIdentifier(run_name=run_id, run_time=now),
        batch_identifier=re.sub(r"[^A-Za-z0-9_.-]+", "_", batch_id),
    )
    context.validation_results_store.set(key, result)


def data_docs_stale(docs: DataDocs) -> bool:
    """Whether the Data Docs site is older than a suite or validation result GX stored (or
    missing): a run that validated nothing new leaves it as it is (rendering it again costs
    seconds, the better part of a run with nothing new)."""
    index = docs.site_dir / "index.html"
    if not index.exists():
        return docs.gx_dir.exists()
    rendered = index.stat().st_mtime_ns
    stores = [
        docs.gx_dir / "gx" / "expectations",
        docs.gx_dir / "gx" / "uncommitted" / "validations",
    ]
    return any(
        path.stat().st_mtime_ns > rendered
        for store in stores
        if store.exists()
        for path in store.rglob("*")
        if path.is_file()
    )


def build_data_docs(docs: DataDocs) -> Path:
    """Render the Data Docs site (every stored validation result) and return its index."""
    context = _gx_context(docs)
    context.build_data_docs(site_names=[DOCS_SITE])
    return docs.site_dir / "index.html"


REASON_VALUE_CHARS = 200
"""How much of a field a quarantine reason quotes: a hostile or broken value may be
megabytes long, and the reason is read in lists, logs and the bulletin."""


def _quoted(value: object) -> str:
    text = str(value)
    if len(text) <= REASON_VALUE_CHARS:
        return text
    return f"{text[:60]}... ({len(text):,} characters)"


def _reason(item: ExpectationSpec, row: Mapping[str, Any], source_name: str) -> str:
    value = row.get(item.column) if item.column else None
    fields = {**row, "value": value, "source": source_name, "column": item.column}
    return re.sub(r"\{(\w+)\}", lambda m: _quoted(fields.get(m.group(1), m.group(0))), item.reason)


def validate_pending(
    warehouse: Warehouse,
    table: RawTable,
    source_name: str,
    *,
    references: Mapping[str, Any],
    enrich: Any = None,
    run_id: str,
    batch_id: str,
    now: datetime,
    docs: DataDocs | None = None,
) -> ValidationOutcome:
    """Validate every pending row of ``source_name`` in ``table``; see the module docstring.

    ``enrich`` may add helper columns (such as a parsed period type) that expectations use.
    """
    outcome = ValidationOutcome(raw_table=table.name)
    rows = warehouse.fetch_arrow(
        f"select * from {table.qualified_name} "
        "where source_name = $source and validation_status = 'pending'",
        {"source": source_name},
    )
    if rows.num_rows == 0:
        return outcome
    frame = rows.to_pandas().reset_index(drop=True)
    frame_for_gx = enrich(frame) if enrich is not None else frame
    spec = load_suite_spec(table)
    results = run_suite(
        spec, frame_for_gx, references, docs=docs, run_id=run_id, batch_id=batch_id, now=now
    )

    failing: dict[int, list[ExpectationSpec]] = {}
    validation_rows = []
    for item, result, success in results:
        unexpected = [
            int(i) for i in result.get("unexpected_index_list") or [] if isinstance(i, int)
        ]
        validation_rows.append(
            {
                "rule": item.rule,
                "expectation": item.type,
                "column_name": item.column,
                "severity": item.severity,
                "success": success,
                "element_count": result.get("element_count", len(frame)),
                "unexpected_count": result.get("unexpected_count", len(unexpected)),
                "unexpected_percent": result.get("unexpected_percent"),
            }
        )
        if success:
            continue
        outcome.failed_rules[item.rule] = int(result.get("unexpected_count") or len(unexpected))
        if item.severity == "fatal":
            outcome.fatal.append(item.rule)
        for index in unexpected:
            failing.setdefault(index, []).append(item)

    # Only the failing rows become dicts: at national scale the batch holds millions of rows,
    # and turning them all into dicts cost minutes and gigabytes for a handful of reasons.
    failing_indexes = sorted(failing)
    records = dict(
        zip(failing_indexes, frame_for_gx.iloc[failing_indexes].to_dict("records"), strict=True)
    )
    quarantined: list[QuarantinedRecord] = []
    entity_columns = [*table.entity_columns, "extras", "is_deleted"]
    for index, items in failing.items():
        row = records[index]
        entity_record = {c: row.get(c) for c in entity_columns}
        for item in items:
            quarantined.append(
                QuarantinedRecord(
                    source_name=source_name,
                    raw_table=table.name,
                    record_key=record_key(row, table.key),
                    record_hash=str(row["record_hash"]),
                    rule=item.rule,
                    field=item.column,
                    severity=item.severity,
                    reason=_reason(item, row, source_name),
                    record_json=record_json(entity_record),
                )
            )

    with warehouse.transaction():
        _write_validation_results(
            warehouse, validation_rows, spec, table, source_name, run_id, batch_id, now
        )
        if outcome.fatal:
            outcome.validated = len(frame)
        else:
            quarantine_records(warehouse, quarantined, run_id=run_id, batch_id=batch_id, now=now)
            _mark_rows(warehouse, table, source_name, frame.iloc[failing_indexes], now)
            outcome.validated = len(frame)
            outcome.quarantined = len(failing)
            outcome.valid = len(frame) - len(failing)
    if outcome.fatal:
        details = ", ".join(f"{rule} ({outcome.failed_rules[rule]} rows)" for rule in outcome.fatal)
        raise ValidationFailed(
            f"{source_name}: {table.qualified_name}: fatal expectation failed: {details}; "
            "nothing of this batch was published (see audit.validation_results)"
        )
    return outcome


def _write_validation_results(
    warehouse: Warehouse,
    rows: list[dict[str, Any]],
    spec: SuiteSpec,
    table: RawTable,
    source_name: str,
    run_id: str,
    batch_id: str,
    now: datetime,
) -> None:
    count = len(rows)
    data = pa.table(
        {
            "run_id": [run_id] * count,
            "batch_id": [batch_id] * count,
            "source_name": [source_name] * count,
            "raw_table": [table.name] * count,
            "suite": [spec.suite] * count,
            "expectation": [r["expectation"] for r in rows],
            "rule": [r["rule"] for r in rows],
            "column_name": [r["column_name"] for r in rows],
            "severity": [r["severity"] for r in rows],
            "success": [r["success"] for r in rows],
            "element_count": pa.array([r["element_count"] for r in rows], pa.int64()),
            "unexpected_count": pa.array([r["unexpected_count"] for r in rows], pa.int64()),
            "unexpected_percent": pa.array([r["unexpected_percent"] for r in rows], pa.float64()),
            "validated_at": pa.array([now] * count, pa.timestamp("us")),
        }
    )
    warehouse.load_arrow("audit.validation_results", data)


def _mark_rows(
    warehouse: Warehouse,
    table: RawTable,
    source_name: str,
    failing: pd.DataFrame,
    now: datetime,
) -> None:
    """Failing rows become ``quarantined``, every other pending row ``valid``."""
    params = {"source": source_name, "now": now}
    if len(failing):
        temp = "_healthpipe_failing_keys"
        warehouse.create_temp_table(temp, [(k, "text") for k in table.key])
        keys = pa.table(
            {k: pa.array(failing[k].astype(object).tolist(), pa.string()) for k in table.key}
        )
        warehouse.load_arrow(temp, keys)
        match = " and ".join(f"{table.qualified_name}.{k} = f.{k}" for k in table.key)
        warehouse.execute(
            f"update {table.qualified_name} set validation_status = 'quarantined', "
            f"validated_at = $now from {temp} f "
            f"where {table.qualified_name}.source_name = $source and {match} "
            f"and {table.qualified_name}.validation_status = 'pending'",
            params,
        )
        warehouse.execute(f"drop table {temp}")
    warehouse.execute(
        f"update {table.qualified_name} set validation_status = 'valid', validated_at = $now "
        "where source_name = $source and validation_status = 'pending'",
        params,
    )
    # A record that now passes (corrected at the source, or replayed after its metadata
    # arrived) releases its earlier quarantine entries.
    key = record_key_sql(table, "r")
    warehouse.execute(
        "update audit.quarantine set released_at = $now "
        "where source_name = $source and raw_table = $table and released_at is null "
        f"and record_key in (select {key} from {table.qualified_name} r "
        "where r.source_name = $source and r.validation_status = 'valid' "
        "and r.validated_at = $now)",
        {**params, "table": table.name},
    )
