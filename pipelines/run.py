"""The pipeline's steps as plain functions: the CLI and the Airflow DAGs call these.

``ingest_source`` (extract, land, validate one source), ``publish_indicator_definitions``,
``transform`` (dbt build) and ``run_pipeline`` (all of them, in order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from connectors.base import Page
from connectors.errors import SourceError
from pipelines import build_state
from pipelines.access import apply_access_policies
from pipelines.alerts.pipeline import AlertRun, run_alerts
from pipelines.audit import (
    finish_step,
    first_line,
    load_cursor,
    new_run_id,
    record_node_runs,
    record_step,
    save_cursor,
    start_step,
    utc_now,
)
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError, HealthpipeError, TransformError
from pipelines.failpoints import failpoint
from pipelines.indicators import (
    check_operands,
    known_data_elements,
    load_definitions,
    publish_indicators,
)
from pipelines.land import land_records
from pipelines.paths import INDICATORS_DIR
from pipelines.period_facts import drop_outdated_period_facts
from pipelines.privacy import Pseudonymiser
from pipelines.schema_changes import warn_new_fields
from pipelines.sources import adapter_for, raw_table
from pipelines.sources.base import SourceAdapter, WindowedAdapter
from pipelines.transform import (
    DbtOutcome,
    FreshnessResult,
    NodeCallback,
    NodeRun,
    run_dbt,
    source_freshness,
)
from pipelines.validate import DataDocs, build_data_docs, data_docs_stale, validate_pending
from pipelines.warehouse import Warehouse
from pipelines.window import Window

log = logging.getLogger(__name__)

PageCallback = Callable[[str, str, int], None]
"""Called after each landed page with (source name, entity, records received)."""


@dataclass
class EntityCounts:
    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    quarantined: int = 0
    keyless: int = 0
    """Of the quarantined: records without a complete natural key (never landed)."""
    validated: int = 0
    pages_fetched: int = 0
    new_fields: list[str] = field(default_factory=list)
    """Fields first seen in this run, kept in raw ``extras`` (``audit.schema_changes``)."""

    @property
    def clean(self) -> int:
        """Records landed and not held back: unchanged re-sends and those validated clean."""
        return self.inserted + self.updated + self.unchanged - (self.quarantined - self.keyless)

    @property
    def reconciles(self) -> bool:
        """received = landed clean + quarantined + duplicates collapsed."""
        return self.received == self.clean + self.quarantined + self.duplicates


@dataclass
class SourceSummary:
    source: str
    pages: int = 0
    """Batches landed (small pages from the source are landed together)."""
    entities: dict[str, EntityCounts] = field(default_factory=dict)

    @property
    def pages_fetched(self) -> int:
        """Pages the connector received from the source."""
        return sum(counts.pages_fetched for counts in self.entities.values())


@dataclass
class RunSummary:
    run_id: str
    sources: list[SourceSummary] = field(default_factory=list)
    dbt: DbtOutcome | None = None
    alerts: AlertRun | None = None
    freshness: list[FreshnessResult] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Sources that failed (their first error line) while the others were published."""


def data_docs(config: HealthpipeConfig) -> DataDocs:
    """Where the run keeps GX's project and renders the Data Docs site."""
    return DataDocs(
        gx_dir=config.state_dir / "gx", site_dir=config.state_dir / "site" / "data-docs"
    )


def open_warehouse(config: HealthpipeConfig) -> Warehouse:
    """Open the configured warehouse and make sure its schemas and tables exist."""
    warehouse = Warehouse.open(config.warehouse)
    warehouse.ensure_schemas()
    return warehouse


def _counted(pages: Iterable[Page], summary: SourceSummary) -> Iterator[Page]:
    for page in pages:
        summary.entities.setdefault(page.entity, EntityCounts()).pages_fetched += 1
        yield page


def coalesce_pages(pages: Iterable[Page], limit: int) -> Iterator[Page]:
    """Consecutive pages of one entity merged up to ``limit`` records; a merged page carries
    the cursor of its last page, so the cursor still never runs ahead of what was landed."""
    pending: list[Page] = []
    size = 0
    for page in pages:
        if pending and (page.entity != pending[0].entity or size + len(page.records) > limit):
            yield _merged(pending)
            pending, size = [], 0
        pending.append(page)
        size += len(page.records)
    if pending:
        yield _merged(pending)


def _merged(pages: list[Page]) -> Page:
    if len(pages) == 1:
        return pages[0]
    records = [record for page in pages for record in page.records]
    origin = (
        pages[0].origin
        if pages[0].origin == pages[-1].origin
        else f"{pages[0].origin} .. {pages[-1].origin}"
    )
    return Page(pages[0].entity, records, origin, pages[-1].cursor)


def enricher(
    adapter: SourceAdapter, entity: str, references: Mapping[str, Any]
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The adapter's helper columns for one entity, as validation wants them."""

    def enrich(frame: pd.DataFrame) -> pd.DataFrame:
        return adapter.enrich(entity, frame, references)

    return enrich


def ingest_source(
    warehouse: Warehouse,
    source: SourceConfig,
    config: HealthpipeConfig,
    *,
    run_id: str,
    full_refresh: bool = False,
    on_page: PageCallback | None = None,
    cursor_key: str | None = None,
    window: Window | None = None,
) -> SourceSummary:
    """Extract one source page by page; land and validate each page before the next.

    The cursor is saved in the same transaction as the page it belongs to, so it is never
    ahead of committed data; ``full_refresh`` ignores the saved cursor. ``cursor_key`` keeps
    the cursor under another ``audit.source_state.entity`` than the adapter's: a pull of part
    of a source (one chunk of a DHIS2 org-unit list) must not move the others' cursor. The
    whole pull is one ``extract`` step in ``audit.pipeline_runs``, recorded even when nothing
    was new, so ``healthpipe status`` can tell a quiet source from one that was not pulled.

    ``window`` pulls only the periods overlapping those days (a backfill; DHIS2 Web API
    sources) and leaves the cursor alone: the next incremental pull must still see every
    change since its cursor, and the window's data may be older than it.
    """
    with record_step(warehouse, run_id, "extract", source=source.name) as step:
        summary = _ingest_pages(
            warehouse,
            source,
            config,
            run_id=run_id,
            full_refresh=full_refresh,
            on_page=on_page,
            cursor_key=cursor_key,
            window=window,
        )
        entities = summary.entities.values()
        step.rows_in = sum(c.received for c in entities)
        step.rows_out = sum(c.clean for c in entities)
        step.rows_quarantined = sum(c.quarantined for c in entities)
        step.rows_duplicate = sum(c.duplicates for c in entities)
        step.message = f"{summary.pages} pages"
    return summary


def _ingest_pages(
    warehouse: Warehouse,
    source: SourceConfig,
    config: HealthpipeConfig,
    *,
    run_id: str,
    full_refresh: bool,
    on_page: PageCallback | None,
    cursor_key: str | None,
    window: Window | None,
) -> SourceSummary:
    adapter = adapter_for(source.type)
    cursor_entity = cursor_key or adapter.cursor_entity
    # Patient-level sources stop before reading anything when the key is missing.
    pseudonymiser = (
        Pseudonymiser.from_env(config.pseudonym_key_env, purpose=f"source {source.name}")
        if adapter.patient_level
        else None
    )
    summary = SourceSummary(source=source.name)
    if window is None:
        cursor = None if full_refresh else load_cursor(warehouse, source.name, cursor_entity)
        source_pages = adapter.pages(source, cursor, config)
        pull = "full pull" if cursor is None else "incremental pull"
    else:
        cursor = None
        source_pages = _window_pages(adapter, source, window, config)
        pull = f"window pull {window}"
    pages = coalesce_pages(_counted(source_pages, summary), source.landing_batch)
    for number, page in enumerate(pages, start=1):
        table = raw_table(source.type, page.entity)
        batch_id = f"{run_id}:{source.name}:{number}"
        counts = summary.entities.setdefault(page.entity, EntityCounts())
        with record_step(
            warehouse, run_id, "land", source=source.name, entity=page.entity, batch_id=batch_id
        ) as step:
            now = utc_now()
            with warehouse.transaction():
                landed = land_records(
                    warehouse,
                    table,
                    source.name,
                    adapter.prepare(page.entity, page.records, pseudonymiser),
                    run_id=run_id,
                    batch_id=batch_id,
                    extracted_at=now,
                    now=now,
                )
                failpoint("land.before_cursor")
                if window is None:
                    save_cursor(warehouse, source.name, cursor_entity, page.cursor, run_id)
            failpoint("land.after_commit")
            warn_new_fields(source.name, page.entity, landed.new_fields)
            step.rows_in, step.rows_out = landed.received, landed.landed
            step.rows_quarantined, step.rows_duplicate = landed.quarantined, landed.duplicates
            step.message = page.origin
        with record_step(
            warehouse, run_id, "validate", source=source.name, entity=page.entity, batch_id=batch_id
        ) as step:
            references = adapter.references(warehouse, source.name, page.entity)
            outcome = validate_pending(
                warehouse,
                table,
                source.name,
                references=references,
                enrich=enricher(adapter, page.entity, references),
                run_id=run_id,
                batch_id=batch_id,
                now=utc_now(),
                docs=data_docs(config),
            )
            step.rows_in, step.rows_out = outcome.validated, outcome.valid
            step.rows_quarantined = outcome.quarantined
        failpoint("validate.after")
        summary.pages += 1
        counts.received += landed.received
        counts.inserted += landed.inserted
        counts.updated += landed.updated
        counts.unchanged += landed.unchanged
        counts.duplicates += landed.duplicates
        counts.quarantined += landed.quarantined + outcome.quarantined
        counts.keyless += landed.quarantined
        counts.validated += outcome.validated
        counts.new_fields.extend(f.name for f in landed.new_fields)
        log.info(
            "%s %s: %d records landed and validated (batch %s)",
            source.name, page.entity, landed.received, batch_id,
        )  # fmt: skip
        if on_page is not None:
            on_page(source.name, page.entity, landed.received)
    _validate_leftovers(warehouse, adapter, source, config, run_id)
    for entity, entity_counts in summary.entities.items():
        if pull == "full pull":
            _check_volume(warehouse, run_id, source.name, entity, entity_counts.received)
        _record_reconciliation(warehouse, run_id, source.name, entity, entity_counts, pull)
    return summary


def _window_pages(
    adapter: SourceAdapter, source: SourceConfig, window: Window, config: HealthpipeConfig
) -> Iterator[Page]:
    if not isinstance(adapter, WindowedAdapter):
        raise ConfigError(
            f"source {source.name}: a window pull ({window}) is built for DHIS2 Web API "
            f"sources only, not {source.type} sources; run a normal pull instead"
        )
    return adapter.window_pages(source, window, config)


def _validate_leftovers(
    warehouse: Warehouse,
    adapter: SourceAdapter,
    source: SourceConfig,
    config: HealthpipeConfig,
    run_id: str,
) -> None:
    """Validate rows a killed run committed (with their cursor) but never validated.

    Their files or pages are behind the cursor, so no later page of theirs will arrive to
    trigger validation, and staging publishes only validated rows: left ``pending`` they
    would be missing from the marts for good."""
    for table in adapter.tables:
        pending = warehouse.fetch_scalar(
            f"select count(*) from {table.qualified_name} "
            "where source_name = $source and validation_status = 'pending'",
            {"source": source.name},
        )
        if not pending:
            continue
        batch_id = f"{run_id}:{source.name}:leftover:{table.entity}"
        with record_step(
            warehouse,
            run_id,
            "validate",
            source=source.name,
            entity=table.entity,
            batch_id=batch_id,
        ) as step:
            references = adapter.references(warehouse, source.name, table.entity)
            outcome = validate_pending(
                warehouse,
                table,
                source.name,
                references=references,
                enrich=enricher(adapter, table.entity, references),
                run_id=run_id,
                batch_id=batch_id,
                now=utc_now(),
                docs=data_docs(config),
            )
            step.rows_in, step.rows_out = outcome.validated, outcome.valid
            step.rows_quarantined = outcome.quarantined
            step.message = f"{pending} rows left pending by an interrupted run"
        log.warning(
            "%s %s: validated %d rows an interrupted run had landed but not validated",
            source.name, table.entity, outcome.validated,
        )  # fmt: skip


VOLUME_HISTORY = 5
VOLUME_FLOOR = 0.5
"""A full pull bringing less than this share of the median of the previous full pulls is
flagged: a silently truncated extract looks like that."""


def _check_volume(
    warehouse: Warehouse, run_id: str, source: str, entity: str, received: int
) -> None:
    history = [
        int(row[0])
        for row in warehouse.fetchall(
            "select rows_in from audit.pipeline_runs where step = 'reconcile' and status = 'success' "
            "and source = $source and entity = $entity and message like 'full pull:%' "
            "order by started_at desc limit $limit",
            {"source": source, "entity": entity, "limit": VOLUME_HISTORY},
        )
    ]
    if not history:
        return
    usual = sorted(history)[len(history) // 2]
    success = received >= VOLUME_FLOOR * usual
    now = utc_now()
    warehouse.execute(
        "insert into audit.validation_results (run_id, batch_id, source_name, raw_table, suite, "
        "expectation, rule, column_name, severity, success, element_count, unexpected_count, "
        "unexpected_percent, validated_at) values ($run, $run, $source, $entity, 'volume', "
        "'received_at_least_half_the_usual', 'volume_in_range', null, 'warning', $success, "
        "$received, $missing, $percent, $now)",
        {
            "run": run_id,
            "source": source,
            "entity": entity,
            "success": success,
            "received": received,
            "missing": max(0, usual - received),
            "percent": 100.0 * max(0, usual - received) / usual if usual else 0.0,
            "now": now,
        },
    )
    if not success:
        log.error(
            "%s %s: a full pull brought %d records, under half the usual %d; check the source "
            "for a truncated extract (audit.validation_results rule volume_in_range)",
            source, entity, received, usual,
        )  # fmt: skip


def _record_reconciliation(
    warehouse: Warehouse,
    run_id: str,
    source: str,
    entity: str,
    counts: EntityCounts,
    pull: str = "full pull",
) -> None:
    """One ``reconcile`` row per source and entity: received = landed clean + quarantined +
    duplicates collapsed. A mismatch is recorded as failed (something was lost)."""
    step = start_step(warehouse, run_id, "reconcile", source=source, entity=entity)
    step.rows_in, step.rows_out = counts.received, counts.clean
    step.rows_quarantined, step.rows_duplicate = counts.quarantined, counts.duplicates
    step.message = (
        f"{pull}: received {counts.received} = landed {counts.clean} + quarantined "
        f"{counts.quarantined} + duplicates {counts.duplicates}"
    )
    if not counts.reconciles:
        step.message = "MISMATCH: " + step.message
        log.error("%s %s: %s", source, entity, step.message)
    finish_step(warehouse, step, "success" if counts.reconciles else "failed")


def publish_indicator_definitions(warehouse: Warehouse, config: HealthpipeConfig) -> int:
    """Compile the indicator YAML files and store them for the dbt models; returns how many
    indicators can be computed from the data elements the warehouse holds."""
    definitions = load_definitions(config.indicator_paths)
    indicators = check_operands(
        definitions.indicators, known_data_elements(warehouse, definitions.derived)
    )
    publish_indicators(warehouse, indicators, definitions.derived)
    return sum(1 for i in indicators if i.is_computable)


def dbt_variables(config: HealthpipeConfig) -> dict[str, Any]:
    """The dbt vars of every invocation (build, source freshness, docs): the public layer's
    small-cell threshold from healthpipe.yml. The same vars each time keep dbt's partial
    parse: with other vars (or none), dbt parses the whole project again, about 5 seconds
    of a run with nothing new."""
    return {"healthpipe_small_cell_threshold": config.small_cell_threshold}


def check_freshness(
    config: HealthpipeConfig, *, run_id: str, source_types: Sequence[str]
) -> list[FreshnessResult]:
    """``dbt source freshness`` on the raw tables of the given source types, after ingest.
    Each table's outcome is a row of ``audit.validation_results`` (suite ``freshness``) and a
    log line; a stale source warns, it does not stop the run."""
    warehouse = open_warehouse(config)
    try:
        dbt_env = warehouse.dbt_env()
    finally:
        warehouse.close()
    results = source_freshness(
        source_types,
        dbt_env=dbt_env,
        state_dir=config.state_dir,
        variables=dbt_variables(config),
    )
    now = utc_now()
    with Warehouse.open(config.warehouse) as warehouse:
        for result in results:
            age = (
                "never loaded"
                if result.age_seconds is None
                else f"{result.age_seconds / 3600:.1f} h"
            )
            level = logging.DEBUG if result.status == "pass" else logging.WARNING
            log.log(level, "freshness of %s: %s (newest extraction %s, age %s)",
                    result.table, result.status, result.max_loaded_at, age)  # fmt: skip
            warehouse.execute(
                "insert into audit.validation_results (run_id, batch_id, source_name, raw_table, "
                "suite, expectation, rule, column_name, severity, success, element_count, "
                "unexpected_count, unexpected_percent, validated_at) values ($run, $run, $source, "
                "$table, 'freshness', 'dbt_source_freshness', $rule, 'extracted_at', $severity, "
                "$success, null, null, null, $now)",
                {
                    "run": run_id,
                    "source": result.source,
                    "table": result.table,
                    "rule": f"source_freshness: {result.status}, age {age}",
                    "severity": "error" if result.status != "warn" else "warning",
                    "success": result.status == "pass",
                    "now": now,
                },
            )
    return results


def transform(
    config: HealthpipeConfig,
    *,
    run_id: str,
    quiet: bool = True,
    on_node: NodeCallback | None = None,
    part: BuildPart | None = None,
) -> DbtOutcome:
    """``dbt build`` on the configured warehouse (the whole project, or ``part`` of it),
    recorded in ``audit.pipeline_runs``.

    DuckDB allows one writer, so healthpipe's own connection is closed while dbt runs.
    """
    warehouse = open_warehouse(config)
    try:
        step = start_step(warehouse, run_id, "transform")
        if part is not None:
            step.message = part.description
        dbt_env = warehouse.dbt_env()
        drop_outdated_period_facts(warehouse)
    finally:
        warehouse.close()
    status = "failed"
    nodes: list[NodeRun] = []
    try:
        failpoint("transform.before")
        selection = part.args() if part is not None else []
        outcome = run_dbt(
            ["build", *selection],
            dbt_env=dbt_env,
            state_dir=config.state_dir,
            quiet=quiet,
            on_node=on_node,
            variables=dbt_variables(config),
        )
        nodes = outcome.nodes
        step.rows_out = outcome.succeeded
        status = "success"
        return outcome
    except BaseException as exc:
        if isinstance(exc, TransformError):
            nodes = exc.nodes
        step.message = first_line(exc)
        raise
    finally:
        with Warehouse.open(config.warehouse) as warehouse:
            # dbt rebuilt the marts without their row-level security: put it back at once
            # (until then a rebuilt table has no grants either, so nothing is exposed)
            apply_access_policies(warehouse)
            record_node_runs(warehouse, step, run_id, nodes)
            finish_step(warehouse, step, status)


def selected_sources(config: HealthpipeConfig, names: Sequence[str] | None) -> list[SourceConfig]:
    if names:
        return [config.source(name) for name in names]
    return [source for source in config.sources if source.enabled]


def run_pipeline(
    config: HealthpipeConfig,
    *,
    source_names: Sequence[str] | None = None,
    full_refresh: bool = False,
    run_id: str | None = None,
    on_page: PageCallback | None = None,
    quiet_dbt: bool = True,
    on_node: NodeCallback | None = None,
) -> RunSummary:
    """Extract, land and validate every selected source, then publish indicator
    definitions and build the warehouse models (unless nothing they read changed: see
    :mod:`pipelines.build_state`; ``full_refresh`` always rebuilds), then alert."""
    summary = RunSummary(run_id=run_id or new_run_id())
    sources = selected_sources(config, source_names)
    failures: list[tuple[str, Exception]] = []
    with open_warehouse(config) as warehouse:
        for source in sources:
            try:
                summary.sources.append(
                    ingest_source(
                        warehouse,
                        source,
                        config,
                        run_id=summary.run_id,
                        full_refresh=full_refresh,
                        on_page=on_page,
                    )
                )
            except (HealthpipeError, SourceError) as exc:
                # One source's failure (a server down, a retyped required field) must not
                # hold back the others: they are published, then the run fails naming it.
                failures.append((source.name, exc))
        if failures and len(failures) == len(sources):
            raise failures[0][1]
        summary.failed = {name: first_line(exc) for name, exc in failures}
        with record_step(warehouse, summary.run_id, "indicators") as step:
            step.rows_out = publish_indicator_definitions(warehouse, config)
        inputs = _fingerprint(warehouse, config)
        last = None if full_refresh else build_state.last_fingerprint(warehouse)
        # the part before the alerts reads everything but the alert records: an alert
        # acknowledged since the last build changes only what the part after them reads
        build_before = last is None or inputs.before_alerts != last.before_alerts
        if not build_before:
            with record_step(warehouse, summary.run_id, "transform") as step:
                step.message = (
                    "skipped: nothing dbt reads changed since the last build"
                    if last is not None and inputs.whole == last.whole
                    else "skipped before the alerts: only the alert records changed"
                )
    if data_docs_stale(data_docs(config)):
        build_data_docs(data_docs(config))
    summary.freshness = check_freshness(
        config, run_id=summary.run_id, source_types=[source.type for source in sources]
    )
    if build_before:
        # Everything but what reads the alert records: the marts alerting reads, the large
        # aggregation, data quality. The rest (the 7-1-7 timeliness, the indicators, the
        # public layer with its small-cell suppression) is built once, after the alerts.
        summary.dbt = transform(
            config,
            run_id=summary.run_id,
            quiet=quiet_dbt,
            on_node=on_node,
            part=BEFORE_ALERTS,
        )
        failpoint("transform.after")
    with open_warehouse(config) as warehouse:
        summary.alerts = run_alerts(warehouse, config, run_id=summary.run_id, force=full_refresh)
        after_alerts = _fingerprint(warehouse, config)
    if build_before or last is None or after_alerts.whole != last.whole:
        # Built now, after the alerts (or, when nothing else changed, because the alert
        # records did: new alerts, notifications, an alert acknowledged), so a run's marts
        # agree with its own alerts and the next run with nothing new changes nothing.
        after = transform(
            config,
            run_id=summary.run_id,
            quiet=quiet_dbt,
            on_node=on_node,
            part=AFTER_ALERTS,
        )
        summary.dbt = after if summary.dbt is None else summary.dbt.combined(after)
        with open_warehouse(config) as warehouse:
            build_state.record_build(warehouse, after_alerts, summary.run_id, utc_now())
    if failures:
        raise SourcesFailed(summary)
    return summary


class SourcesFailed(HealthpipeError):
    """Some sources failed; the others were landed and published. Carries the run's summary."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        names = "; ".join(f"{name}: {reason}" for name, reason in summary.failed.items())
        super().__init__(
            f"{len(summary.failed)} source(s) failed, the others were published: {names}"
        )


@dataclass(frozen=True)
class BuildPart:
    """Part of the dbt project, as dbt selectors, with eager indirect selection: a test runs
    in a part that builds any model it reads. Selecting a set of models and excluding the
    same set therefore split the tests too: the ones reading a model of the set run with it
    (after the models of the other part they read, built before), the others without it."""

    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def _selectors(self) -> list[tuple[str, tuple[str, ...]]]:
        return [
            (verb, items)
            for verb, items in (("select", self.select), ("exclude", self.exclude))
            if items
        ]

    def args(self) -> list[str]:
        flags = [arg for verb, items in self._selectors() for arg in (f"--{verb}", *items)]
        return [*flags, "--indirect-selection", "eager"]

    @property
    def description(self) -> str:
        return " ".join(arg for verb, items in self._selectors() for arg in (verb, *items))


ALERT_READERS = ("source:alerting+",)
"""What reads the alert records that alerting writes (the 7-1-7 timeliness, and the
indicators and public tables built on it), as a dbt selector."""

BEFORE_ALERTS = BuildPart(exclude=ALERT_READERS)
"""The build before the alerts: everything else, including what alerting reads
(``fct_surveillance_weekly``, ``dim_org_unit``) and every test of those models alone."""

AFTER_ALERTS = BuildPart(select=ALERT_READERS)
"""The build after the alerts: the readers of the alert records with every test that reads
one of them."""


def _fingerprint(warehouse: Warehouse, config: HealthpipeConfig) -> build_state.Fingerprint:
    """What the models read now (see :mod:`pipelines.build_state`)."""
    return build_state.fingerprint(
        warehouse,
        [INDICATORS_DIR, *config.indicator_paths],
        {**warehouse.dbt_env(), "small_cell_threshold": str(config.small_cell_threshold)},
    )


@dataclass
class ReplayCounts:
    retried: int = 0
    released: int = 0
    still_held: int = 0


def replay_quarantine(
    config: HealthpipeConfig,
    *,
    source_names: Sequence[str] | None = None,
    run_id: str | None = None,
) -> dict[str, ReplayCounts]:
    """Validate quarantined raw rows again (after metadata was fixed, e.g. an org unit added
    in DHIS2): rows that now pass are published and release their quarantine entries; the
    others stay held with their reasons. Returns counts per raw table."""
    run_id = run_id or new_run_id()
    counts: dict[str, ReplayCounts] = {}
    with open_warehouse(config) as warehouse:
        for source in selected_sources(config, source_names):
            adapter = adapter_for(source.type)
            for table in adapter.tables:
                params = {"source": source.name}
                held = warehouse.fetch_scalar(
                    f"select count(*) from {table.qualified_name} "
                    "where source_name = $source and validation_status = 'quarantined'",
                    params,
                )
                if not held:
                    continue
                with record_step(
                    warehouse, run_id, "replay", source=source.name, entity=table.entity
                ) as step:
                    warehouse.execute(
                        f"update {table.qualified_name} set validation_status = 'pending' "
                        "where source_name = $source and validation_status = 'quarantined'",
                        params,
                    )
                    references = adapter.references(warehouse, source.name, table.entity)
                    outcome = validate_pending(
                        warehouse,
                        table,
                        source.name,
                        references=references,
                        enrich=enricher(adapter, table.entity, references),
                        run_id=run_id,
                        batch_id=f"{run_id}:replay:{source.name}:{table.entity}",
                        now=utc_now(),
                        docs=data_docs(config),
                    )
                    step.rows_in, step.rows_out = outcome.validated, outcome.valid
                    step.rows_quarantined = outcome.quarantined
                counts[table.name] = ReplayCounts(
                    outcome.validated, outcome.valid, outcome.quarantined
                )
    return counts
