"""The ``healthpipe`` command line: the same pipeline functions the Airflow DAGs call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from connectors.errors import SourceError
from healthpipe import __version__
from pipelines.audit import first_line
from pipelines.errors import HealthpipeError

if TYPE_CHECKING:
    from pipelines.run import RunSummary

console = Console(stderr=False)
errors = Console(stderr=True)
progress_console = Console(stderr=True)
"""Progress bars and chatter go to stderr, so stdout holds only results (and JSON)."""

MAX_ERROR_CHARS = 300
CONFIG_HELP = "config file (default: $HEALTHPIPE_CONFIG or healthpipe.yml)"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _configure_logging(verbose: bool) -> None:
    """healthpipe's own messages at INFO; libraries only at WARNING, and their Python
    warnings (deprecations, pandas hints) only with --verbose. Messages go through the
    progress bars' console, so they print above the bars instead of through them."""
    handler = RichHandler(
        console=progress_console,
        show_time=verbose,
        show_path=verbose,
        show_level=verbose,
        markup=False,
        rich_tracebacks=False,
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(name)s: %(message)s" if verbose else "%(message)s",
        handlers=[handler],
    )
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.ERROR)
    for name in ("pipelines", "connectors"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.json


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.cli_progress import pipeline_progress
    from pipelines.demo import DEMO_YEAR, run_demo

    started = time.monotonic()
    progress_console.print(
        "[bold]healthpipe demo[/]: simulating a country, serving it over the source APIs "
        "and running the whole pipeline"
    )
    with pipeline_progress(progress_console, _show_progress(args)) as progress:
        result = run_demo(
            Path(args.workdir),
            seed=args.seed,
            districts=args.districts,
            weeks=args.weeks,
            on_page=progress.on_page,
            on_node=progress.on_node,
        )
    if args.json:
        _print_json(
            {
                "run_id": result.run.run_id,
                "warehouse": result.config.warehouse,
                "sources": [{"source": n, "type": t, "records": r} for n, t, r in result.sources],
                "alerts": dict(result.alerts),
                "bulletin": None if result.bulletin is None else str(result.bulletin),
                "bulletin_pdf": None if result.bulletin_pdf is None else str(result.bulletin_pdf),
                "dbt_docs": None if result.docs is None else str(result.docs.dbt_docs),
                "data_docs": None if result.docs is None else str(result.docs.data_docs),
            }
        )
        return 0

    sources = Table(title="Sources landed")
    for column in ("source", "type", "records"):
        sources.add_column(column, justify="right" if column == "records" else "left")
    for name, kind, received in result.sources:
        sources.add_row(name, kind, f"{received:,}")
    console.print(sources)

    levels: dict[int, int] = {}
    indicators: set[str] = set()
    for indicator, level, rows in result.levels:
        levels[level] = levels.get(level, 0) + rows
        indicators.add(indicator)
    table = Table(
        title=f"marts.indicator_values: {len(indicators)} indicators, rows per org-unit level"
    )
    for level in sorted(levels):
        table.add_column(f"level {level}", justify="right")
    table.add_row(*(f"{levels[level]:,}" for level in sorted(levels)))
    console.print(table)

    national = Table(title=f"National values, {DEMO_YEAR}")
    national.add_column("indicator")
    national.add_column("value", justify="right")
    national.add_column("unit")
    for name, unit, value in result.national:
        national.add_row(name, "-" if value is None else f"{value:,.1f}", unit)
    console.print(national)
    alerts = ", ".join(f"{disease} {count}" for disease, count in result.alerts) or "none"
    console.print(f"Alerts raised (marts.alerts): {alerts}")

    state = result.config.state_dir
    console.print(f"Warehouse: [bold]{result.config.warehouse}[/]")
    if result.bulletin is not None:
        console.print(
            f"Weekly bulletin ({result.bulletin_week}): [bold]{result.bulletin}[/]", soft_wrap=True
        )
    if result.bulletin_pdf is not None:
        console.print(f"Weekly bulletin, PDF: {result.bulletin_pdf}", soft_wrap=True)
    if result.docs is not None:
        console.print(f"dbt docs (models, lineage): {result.docs.dbt_docs}", soft_wrap=True)
    data_docs_index = (
        result.docs.data_docs
        if result.docs is not None and result.docs.data_docs is not None
        else state / "site" / "data-docs" / "index.html"
    )
    console.print(f"Data Docs (validation results): {data_docs_index}", soft_wrap=True)
    console.print(f"Simulated source files and truth.json: {result.country_dir}", soft_wrap=True)
    console.print(
        "Query it: .venv/bin/python -c \"import duckdb; print(duckdb.connect('"
        f"{_duckdb_path(result.config.warehouse)}', read_only=True).sql("
        "'select * from marts.indicator_values limit 10'))\"",
        soft_wrap=True,
    )
    console.print(f"Done in {time.monotonic() - started:.1f} s (run {result.run.run_id}).")
    return 0


def _duckdb_path(url: str) -> str:
    return url.removeprefix("duckdb:///") if url.startswith("duckdb:///") else url


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.cli_progress import pipeline_progress
    from pipelines.config import load_config
    from pipelines.run import run_pipeline

    config = load_config(args.config)
    with pipeline_progress(progress_console, _show_progress(args)) as progress:
        summary = run_pipeline(
            config,
            source_names=args.source or None,
            full_refresh=args.full_refresh,
            on_page=progress.on_page,
            on_node=progress.on_node,
        )
    if args.json:
        _print_json(
            {
                "run_id": summary.run_id,
                "sources": {
                    source.source: {
                        entity: {
                            "received": c.received,
                            "inserted": c.inserted,
                            "updated": c.updated,
                            "unchanged": c.unchanged,
                            "duplicates": c.duplicates,
                            "quarantined": c.quarantined,
                            "new_fields": c.new_fields,
                        }
                        for entity, c in source.entities.items()
                    }
                    for source in summary.sources
                },
                "dbt_nodes_passed": None if summary.dbt is None else summary.dbt.succeeded,
            }
        )
        return 0
    table = Table(title=f"Run {summary.run_id}")
    headers = ("source", "entity", "received", "new", "changed", "same", "dupl.", "quarant.")
    for column in headers:
        table.add_column(column, justify="left" if column in ("source", "entity") else "right")
    for source in summary.sources:
        for entity, counts in source.entities.items():
            numbers = (
                counts.received,
                counts.inserted,
                counts.updated,
                counts.unchanged,
                counts.duplicates,
                counts.quarantined,
            )
            table.add_row(source.source, entity, *(f"{n:,}" for n in numbers))
    if table.row_count:
        console.print(table)
    else:
        console.print(f"Run {summary.run_id}: no new or changed source files since the last run")
    note = new_fields_note(summary)
    if note is not None:
        console.print(f"[yellow]{escape(note)}[/]")
    if summary.dbt is not None:
        console.print(f"dbt build: {summary.dbt.succeeded} nodes passed")
    return 0


def new_fields_note(summary: RunSummary) -> str | None:
    """The run summary's line on fields first seen in this run (schema drift), if any."""
    per_entity = [
        (f"{source.source} {entity}", counts.new_fields)
        for source in summary.sources
        for entity, counts in source.entities.items()
        if counts.new_fields
    ]
    if not per_entity:
        return None
    count = sum(len(fields) for _, fields in per_entity)
    listed = "; ".join(f"{where}: {', '.join(fields)}" for where, fields in per_entity)
    return (
        f"Schema changes: {count} new field{'' if count == 1 else 's'} kept in raw extras "
        f"({listed}); `healthpipe status` lists them"
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from pipelines.simulate import GENERATORS, simulate

    started = time.monotonic()
    sources = args.source or None
    unknown = sorted(set(sources or []) - set(GENERATORS))
    if unknown:
        raise HealthpipeError(
            f"--source {', '.join(unknown)}: unknown (available: {', '.join(GENERATORS)})"
        )
    result = simulate(
        Path(args.out),
        seed=args.seed,
        districts=args.districts,
        weeks=args.weeks,
        end_week=args.end_week,
        sources=sources,
    )
    truth = result.simulation.truth
    if args.json:
        _print_json(
            {
                "out": str(result.out_dir),
                "counts": result.counts,
                "outbreaks": len(truth.outbreaks),
                "stockouts": len(truth.stockouts),
                "defects": len(truth.defects),
            }
        )
        return 0
    table = Table(title=f"Simulated {result.simulation.country.name} (seed {args.seed})")
    table.add_column("source")
    table.add_column("what")
    table.add_column("count", justify="right")
    for source, counts in result.counts.items():
        for what, count in counts.items():
            table.add_row(source, what, f"{count:,}")
    console.print(table)
    console.print(
        f"truth.json: {len(truth.outbreaks)} outbreaks, {len(truth.stockouts)} stockouts, "
        f"{len(truth.defects)} injected defects"
    )
    console.print(f"Written to {result.out_dir} in {time.monotonic() - started:.1f} s")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from pipelines.audit import new_run_id
    from pipelines.config import load_config
    from pipelines.quarantine import open_quarantine
    from pipelines.run import open_warehouse, replay_quarantine, transform

    config = load_config(args.config)
    if args.action == "replay":
        counts = replay_quarantine(config, source_names=args.source or None)
        table = Table(title="Quarantine replay")
        for column in ("raw table", "re-validated", "released", "still held"):
            table.add_column(column, justify="left" if column == "raw table" else "right")
        for name, c in counts.items():
            table.add_row(name, f"{c.retried:,}", f"{c.released:,}", f"{c.still_held:,}")
        if args.json:
            _print_json({name: c.__dict__ for name, c in counts.items()})
        else:
            console.print(table if counts else "Nothing is held in quarantine.")
        if any(c.released for c in counts.values()) and not args.no_transform:
            outcome = transform(config, run_id=new_run_id())
            console.print(
                f"dbt build: {outcome.succeeded} nodes passed; released rows are published"
            )
        return 0
    with open_warehouse(config) as warehouse:
        groups = []
        for source in args.source or [None]:
            groups += open_quarantine(warehouse, source)
    if args.json:
        _print_json([g.__dict__ for g in groups])
        return 0
    if not groups:
        console.print("Nothing is held in quarantine.")
        return 0
    table = Table(title="Records held in quarantine (audit.quarantine, not released)")
    for column in ("source", "raw table", "rule", "field", "records", "example reason"):
        table.add_column(
            column, justify="right" if column == "records" else "left", overflow="fold"
        )
    for g in groups:
        table.add_row(
            g.source_name, g.raw_table, g.rule, g.field or "", f"{g.records:,}", g.example
        )
    console.print(table)
    console.print(
        "Fix the cause at the source (or its metadata), then: healthpipe quarantine replay"
    )
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from pipelines.alerts.engine import AlertError, set_status
    from pipelines.audit import utc_now
    from pipelines.config import load_config
    from pipelines.run import open_warehouse

    config = load_config(args.config)
    with open_warehouse(config) as warehouse:
        if args.action == "list":
            return _list_alerts(warehouse, args)
        if not args.alert_id:
            raise HealthpipeError(
                f"healthpipe alerts {args.action} needs an ALERT_ID (see `healthpipe alerts list`)"
            )
        if args.action == "show":
            return _show_alert(warehouse, args.alert_id, args.json)
        target = "closed" if args.action == "close" else args.status
        try:
            before = set_status(
                warehouse, args.alert_id, target, actor=args.actor, note=args.note, now=utc_now()
            )
        except AlertError as exc:
            raise HealthpipeError(str(exc)) from None
    if args.json:
        _print_json({"alert_id": args.alert_id, "from": before, "to": target, "by": args.actor})
    else:
        console.print(f"{args.alert_id}: {before} -> {target} (by {args.actor})")
    return 0


def _list_alerts(warehouse: Any, args: argparse.Namespace) -> int:
    conditions = ["1 = 1"]
    params: dict[str, Any] = {}
    if not args.all:
        conditions.append("a.status not in ('discarded', 'closed')")
    if args.disease:
        conditions.append("a.disease = $disease")
        params["disease"] = args.disease
    rows = warehouse.fetchall(
        "select a.alert_id, a.disease, coalesce(o.name, a.org_unit_id), a.period_id, "
        "a.last_period_id, a.severity, a.rule, a.total_cases, a.status, a.days_to_detect "
        "from marts.alerts a left join marts.dim_org_unit o on o.org_unit_id = a.org_unit_id "
        f"where {' and '.join(conditions)} order by a.emerged_on desc, a.alert_id limit $limit",
        {**params, "limit": args.limit},
    )
    if args.json:
        keys = ("alert_id", "disease", "org_unit", "period_id", "last_period_id", "severity",
                "rule", "total_cases", "status", "days_to_detect")  # fmt: skip
        _print_json([dict(zip(keys, row, strict=True)) for row in rows])
        return 0
    if not rows:
        console.print(
            "No alerts." if args.all else "No open alerts (--all shows closed and discarded ones)."
        )
        return 0
    table = Table(title="Surveillance alerts (marts.alerts)")
    for column in (
        "alert",
        "disease",
        "org unit",
        "weeks",
        "severity",
        "rule",
        "cases",
        "status",
        "days to detect",
    ):
        table.add_column(
            column, justify="right" if column in ("cases", "days to detect") else "left"
        )
    for alert_id, disease, org_unit, first, last, severity, rule, cases, status, detect in rows:
        weeks = first if first == last else f"{first}-{last}"
        table.add_row(alert_id, disease, org_unit, weeks, severity, rule, f"{cases or 0:.0f}", status,
                      "-" if detect is None else str(detect))  # fmt: skip
    console.print(table)
    return 0


def _show_alert(warehouse: Any, alert_id: str, as_json: bool = False) -> int:
    columns = [
        "alert_id", "disease", "org_unit_id", "org_unit_level", "period_id", "last_period_id",
        "rule", "method", "severity", "observed", "expected", "threshold", "total_cases", "status",
        "emerged_on", "detected_at", "notified_at", "responded_at", "closed_at", "days_to_detect",
        "days_to_notify", "days_to_respond",
    ]  # fmt: skip
    rows = warehouse.fetchall(
        f"select {', '.join(columns)} from marts.alerts where alert_id = $id", {"id": alert_id}
    )
    if not rows:
        raise HealthpipeError(f"no alert {alert_id!r} (see `healthpipe alerts list`)")
    if as_json:
        history = warehouse.fetchall(
            "select changed_at, from_status, to_status, actor, note from audit.alert_transitions "
            "where alert_id = $id order by changed_at",
            {"id": alert_id},
        )
        _print_json(
            {
                **dict(zip(columns, rows[0], strict=True)),
                "history": [
                    dict(zip(("changed_at", "from", "to", "actor", "note"), h, strict=True))
                    for h in history
                ],
            }
        )
        return 0
    table = Table(title=f"Alert {alert_id}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for name, value in zip(columns, rows[0], strict=True):
        table.add_row(name, "" if value is None else str(value))
    console.print(table)
    history = Table(title="History")
    for column in ("when", "from", "to", "by", "note"):
        history.add_column(column)
    for when, old, new, actor, note in warehouse.fetchall(
        "select changed_at, from_status, to_status, actor, note from audit.alert_transitions "
        "where alert_id = $id order by changed_at",
        {"id": alert_id},
    ):
        history.add_row(str(when), old or "", new, actor, note or "")
    console.print(history)
    for channel, status, attempts, error, sent in warehouse.fetchall(
        "select channel, status, attempts, last_error, sent_at from audit.notifications "
        "where alert_id = $id order by channel",
        {"id": alert_id},
    ):
        detail = f"sent {sent}" if status == "sent" else f"failed {attempts}x: {error}"
        console.print(f"notification via {channel}: {detail}")
    return 0


# listen, grant, report, status and docs call no source and send no notification: a pod or
# an analyst's shell should not need every source's credentials to run them.
def cmd_listen(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.mllp_listener import serve_mllp

    config = load_config(args.config, check_credentials=False)
    source = config.source(args.source)
    if source.type != "hl7v2":
        raise HealthpipeError(
            f"source {source.name} is a {source.type} source; listen needs an hl7v2 one"
        )

    def listening(host: str, port: int) -> None:
        console.print(
            f"Receiving HL7 v2 over MLLP for {source.name} on {host}:{port}; Ctrl+C stops."
        )

    summary = serve_mllp(
        config, source.name, host=args.host, port=args.port, on_listening=listening
    )
    console.print(f"Stopped: {summary}")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    from pipelines.access import grant_org_unit_access
    from pipelines.config import load_config
    from pipelines.run import open_warehouse

    config = load_config(args.config, check_credentials=False)
    with open_warehouse(config) as warehouse:
        grant = grant_org_unit_access(
            warehouse, args.role, args.org_unit, password_env=args.password_env
        )
    console.print(
        f"Role {grant.role} reads marts for {grant.org_unit_name} ({grant.org_unit_id}) and "
        f"everything below it; {grant.tables} tables are under row-level security."
    )
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from pipelines.sandbox.server import run_sandbox_cli

    return run_sandbox_cli(Path(args.data) if args.data else None, args.port, args.faults)


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.report import ReportFormat, latest_complete_week, write_bulletin
    from pipelines.run import open_warehouse

    config = load_config(args.config, check_credentials=False)
    out = Path(args.out)
    fmt: ReportFormat = args.format or ("pdf" if out.suffix.lower() == ".pdf" else "html")
    if fmt == "pdf":
        from pipelines.report.pdf import find_chromium

        find_chromium()  # fail before the queries when the browser is missing
    with open_warehouse(config) as warehouse:
        period = args.period or latest_complete_week(warehouse)
        if period is None:
            raise HealthpipeError(
                "the warehouse holds no weekly surveillance data yet; run `healthpipe run` first"
            )
        bulletin = write_bulletin(warehouse, period, out, fmt=fmt)
    if args.json:
        _print_json(
            {
                "period": bulletin.period_id,
                "out": str(out.resolve()),
                "format": fmt,
                "alerts": len(bulletin.alerts),
                "epidemic_curves": len(bulletin.curves),
                "maps": len(bulletin.maps),
                "scorecard_indicators": len(bulletin.scorecard),
            }
        )
    else:
        console.print(
            f"Bulletin for {bulletin.period_id} ({bulletin.country}): [bold]{out.resolve()}[/]",
            soft_wrap=True,
        )
    return 0


FRESHNESS_STYLE = {
    "fresh": "green",
    "late": "yellow",
    "stale": "bold red",
    "never": "bold red",
    "unscheduled": "dim",
}


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines.audit import utc_now
    from pipelines.config import load_config
    from pipelines.run import open_warehouse
    from pipelines.status import pipeline_status

    config = load_config(args.config, check_credentials=False)
    with open_warehouse(config) as warehouse:
        report = pipeline_status(warehouse, config, utc_now())
    if args.json:
        _print_json(report.as_dict())
        return 0
    table = Table(title=f"Sources ({report.warehouse})")
    for column in ("source", "type", "schedule", "last pull (UTC)", "freshness", "received",
                   "landed", "quarant.", "held now"):  # fmt: skip
        table.add_column(column, justify="right" if column in NUMERIC_STATUS else "left")
    for s in report.sources:
        age = "" if s.age_hours is None else f" ({_age(s.age_hours)})"
        style = FRESHNESS_STYLE.get(s.freshness, "")
        table.add_row(
            s.name,
            s.type,
            s.schedule or "-",
            (s.last_success_at or "never")[:16],
            f"[{style}]{s.freshness}[/]{age}",
            f"{s.received:,}",
            f"{s.landed:,}",
            f"{s.quarantined:,}",
            f"{s.held_in_quarantine:,}",
        )
    console.print(table)
    for s in report.sources:
        if s.last_error:
            console.print(f"[red]{s.name}: last pull failed:[/] {escape(s.last_error)}")
    for s in report.sources:
        if s.schema_changes:
            fields = [f"{c.raw_table}.{c.field} ({c.change} {c.first_seen_at[:10]})"
                      for c in s.schema_changes]  # fmt: skip
            shown = ", ".join(fields[:SCHEMA_CHANGES_SHOWN])
            more = len(fields) - SCHEMA_CHANGES_SHOWN
            console.print(
                f"[yellow]{s.name}: schema changes, kept in raw extras:[/] {escape(shown)}"
                + (f" and {more} more (--json lists all)" if more > 0 else "")
            )
    alerts = ", ".join(f"{d} {n}" for d, n in report.open_alerts.items()) or "none"
    console.print(f"Open alerts: {report.open_alerts_total} ({alerts}); `healthpipe alerts list`")
    console.print(f"Last dbt build: {report.last_transform_at or 'never'}")
    return 0


NUMERIC_STATUS = ("received", "landed", "quarant.", "held now")
SCHEMA_CHANGES_SHOWN = 10
"""A drop with ragged rows can add many fields at once; status stays one line per source."""


def _age(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def cmd_docs(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.docs import build_docs

    config = load_config(args.config, check_credentials=False)
    sites = build_docs(config, Path(args.out))
    if args.json:
        _print_json({"dbt_docs": str(sites.dbt_docs), "data_docs": sites.data_docs})
        return 0
    console.print(
        f"dbt docs (models, columns, lineage): {sites.dbt_docs.resolve()}", soft_wrap=True
    )
    if sites.data_docs is not None:
        console.print(
            f"Data Docs (validation results): {sites.data_docs.resolve()}", soft_wrap=True
        )
    else:
        console.print("Data Docs: nothing validated yet (run `healthpipe run` first)")
    return 0


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def _add_json(parser: argparse.ArgumentParser) -> None:
    # Also accepted after the subcommand (`healthpipe status --json`); SUPPRESS keeps the
    # global flag's value when it is not repeated here.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healthpipe",
        description="A DHIS2-style health information and surveillance pipeline: pull sources, "
        "validate, build the warehouse with dbt, raise alerts and write the weekly bulletin.",
        epilog="`healthpipe COMMAND --help` describes each command. Errors print one or two "
        "lines; --verbose adds debug logs and the full traceback.",
    )
    parser.add_argument("--version", action="version", version=f"healthpipe {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logs and full tracebacks"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable JSON on stdout (no progress bars; errors as JSON on stderr)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="simulate a country and run the whole pipeline on the embedded warehouse",
        description="Simulate a country, serve it over the source APIs, run every source "
        "through the pipeline into a DuckDB warehouse under --workdir, then write the weekly "
        "bulletin for the latest complete week and the dbt docs, and print where they are.",
    )
    demo.add_argument(
        "--workdir", default="var", help="where the demo writes its data (default: var)"
    )
    demo.add_argument("--seed", type=int, default=7, help="simulation seed (default: 7)")
    demo.add_argument(
        "--districts",
        type=int,
        default=20,
        help="size of the simulated country (default 20 districts)",
    )
    demo.add_argument("--weeks", type=int, default=156, help="weeks of history (default 156)")
    _add_json(demo)
    demo.set_defaults(handler=cmd_demo)

    run = commands.add_parser(
        "run",
        help="extract, land, validate and transform the configured sources",
        description="Pull every enabled source (or --source NAME) incrementally, land and "
        "validate each page, publish indicator definitions, run dbt build and evaluate the "
        "alert rules. Progress bars show records per source and dbt nodes.",
    )
    _add_config(run)
    run.add_argument(
        "--source", action="append", metavar="NAME", help="only this source (repeatable)"
    )
    run.add_argument(
        "--full-refresh", action="store_true", help="ignore saved cursors and re-read everything"
    )
    _add_json(run)
    run.set_defaults(handler=cmd_run)

    simulate = commands.add_parser(
        "simulate",
        help="write a simulated country's source data in the sources' own formats, plus truth.json",
        description="Write a simulated country (org units, DHIS2 payloads, FHIR, HL7 v2, ODK, "
        "Kobo and spreadsheet drops) and truth.json listing the injected outbreaks, stockouts "
        "and data defects. The same seed gives byte-identical files.",
    )
    simulate.add_argument("--out", required=True, metavar="DIR", help="output folder")
    simulate.add_argument("--seed", type=int, default=7, help="simulation seed (default: 7)")
    simulate.add_argument(
        "--districts", type=int, default=20, help="districts (about 15 facilities each; default 20)"
    )
    simulate.add_argument(
        "--weeks", type=int, default=156, help="weeks of history (default: 156, three years)"
    )
    simulate.add_argument(
        "--end-week", default="2026W5", help="last ISO week simulated (default: 2026W5)"
    )
    simulate.add_argument(
        "--source", action="append", metavar="NAME", help="only this source (repeatable)"
    )
    _add_json(simulate)
    simulate.set_defaults(handler=cmd_simulate)

    report = commands.add_parser(
        "report",
        help="write the weekly epidemiological bulletin (HTML or PDF)",
        description="Write the weekly bulletin of an ISO week: alerts with 7-1-7 timeliness, "
        "epidemic curves against thresholds, a district incidence map, the indicator "
        "scorecard and data quality by district. One self-contained HTML file (no network "
        "needed) or a PDF printed by headless Chromium. Counts from 1 to 4 are shown as <5.",
    )
    _add_config(report)
    report.add_argument(
        "--period",
        metavar="WEEK",
        help="ISO week such as 2026W5 (default: the latest week with complete reporting)",
    )
    report.add_argument("--out", required=True, metavar="FILE", help="file to write")
    report.add_argument(
        "--format",
        choices=["html", "pdf"],
        help="html or pdf (default: from --out's extension; pdf needs Chromium on PATH)",
    )
    _add_json(report)
    report.set_defaults(handler=cmd_report)

    status = commands.add_parser(
        "status",
        help="freshness, rows landed and quarantined per source, and open alerts",
        description="Per source: the last successful pull, its freshness against the "
        "source's `schedule:` (fresh up to 1.5 intervals, late up to 3, then stale), what "
        "the last pull received, landed and quarantined, and what is held in quarantine "
        "now; then the open alerts.",
    )
    _add_config(status)
    _add_json(status)
    status.set_defaults(handler=cmd_status)

    docs = commands.add_parser(
        "docs",
        help="build the dbt docs and the Data Docs into one folder",
        description="Generate dbt docs (models, columns, tests, lineage) from the warehouse's "
        "catalog and copy the Great Expectations Data Docs beside them. `make docs` writes "
        "site/.",
    )
    _add_config(docs)
    docs.add_argument("--out", default="site", metavar="DIR", help="output folder (default: site)")
    _add_json(docs)
    docs.set_defaults(handler=cmd_docs)

    alerts = commands.add_parser(
        "alerts",
        help="list, show, acknowledge and close surveillance alerts",
        description="Alerts move triggered -> verified or discarded -> responding or monitoring "
        "-> closed; every change is recorded with its time, actor and note "
        "(audit.alert_transitions) and feeds the 7-1-7 timeliness figures.",
    )
    alerts.add_argument(
        "action",
        choices=["list", "show", "ack", "close"],
        help="list open alerts, show one, ack (change its status) or close it",
    )
    alerts.add_argument("alert_id", nargs="?", help="the alert (for show, ack and close)")
    _add_config(alerts)
    alerts.add_argument(
        "--status",
        default="verified",
        choices=["verified", "discarded", "responding", "monitoring", "triggered"],
        help="ack: the new status (default: verified)",
    )
    alerts.add_argument(
        "--actor", default=os.environ.get("USER", "unknown"), help="who acts (default: $USER)"
    )
    alerts.add_argument("--note", help="why (kept with the change)")
    alerts.add_argument("--disease", help="list: only this disease")
    alerts.add_argument(
        "--all", action="store_true", help="list: include closed and discarded alerts"
    )
    alerts.add_argument(
        "--limit", type=int, default=50, help="list: at most this many (default 50)"
    )
    _add_json(alerts)
    alerts.set_defaults(handler=cmd_alerts)

    quarantine = commands.add_parser(
        "quarantine",
        help="list records held back by validation, or re-validate them after a fix",
        description="`list` shows audit.quarantine grouped by source, table and rule; `replay` "
        "validates quarantined rows again (for example after an org unit was added in DHIS2), "
        "publishes those that now pass and rebuilds the warehouse.",
    )
    quarantine.add_argument(
        "action", choices=["list", "replay"], help="list held records, or replay them"
    )
    _add_config(quarantine)
    quarantine.add_argument(
        "--source", action="append", metavar="NAME", help="only this source (repeatable)"
    )
    quarantine.add_argument(
        "--no-transform", action="store_true", help="replay without rebuilding the dbt models"
    )
    _add_json(quarantine)
    quarantine.set_defaults(handler=cmd_quarantine)

    listen = commands.add_parser(
        "listen",
        help="receive HL7 v2 lab results over MLLP for an hl7v2 source",
        description="A long-running MLLP receiver: each message is stored (pseudonymised, "
        "validated) and only then acknowledged AA; malformed ones are quarantined and answered "
        "AE or AR. On the DuckDB warehouse it holds the single-writer lock while it runs.",
    )
    listen.add_argument("--source", required=True, help="the hl7v2 source (its `listen:` address)")
    _add_config(listen)
    listen.add_argument("--host", help="override the source's listen host")
    listen.add_argument("--port", type=int, help="override the source's listen port")
    listen.set_defaults(handler=cmd_listen)

    grant = commands.add_parser(
        "grant",
        help="create a PostgreSQL read-only role that sees one org unit's subtree",
        description="Create (or extend) a login role that can SELECT the marts schema and sees "
        "only rows of the given org unit and the units below it, enforced by forced row-level "
        "security on every mart with an org_unit_id (policies are re-applied after every "
        "run). Repeat with another --org-unit to add a subtree. PostgreSQL warehouse only.",
    )
    grant.add_argument("--role", required=True, help="role name (lower case, digits, _)")
    grant.add_argument("--org-unit", required=True, help="DHIS2 UID of the subtree's root")
    grant.add_argument(
        "--password-env", metavar="VAR", help="set the role's password from this env variable"
    )
    _add_config(grant)
    grant.set_defaults(handler=cmd_grant)

    sandbox = commands.add_parser(
        "sandbox",
        help="serve a simulated country over the real source APIs (DHIS2, FHIR, ODK, Kobo)",
        description="Serve a `healthpipe simulate` folder on localhost over the DHIS2 Web API, "
        "FHIR R4 (search and Bulk Data), ODK Central OData and KoboToolbox v2, with optional "
        "fault injection. Prints the base URLs and credentials, then serves until Ctrl+C.",
    )
    sandbox.add_argument(
        "--data", help="a folder written by `healthpipe simulate` (default: simulate one now)"
    )
    sandbox.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    sandbox.add_argument(
        "--faults",
        metavar="SPEC",
        help="inject faults, e.g. 429:0.05,503:0.05,reset:0.02,slow:0.02,truncate:0.01,seed=1",
    )
    sandbox.set_defaults(handler=cmd_sandbox)
    return parser


def _report_error(args: argparse.Namespace, message: str, hint: str | None = None) -> None:
    if args.json:
        print(json.dumps({"error": message, "hint": hint}), file=sys.stderr)
        return
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        errors.print(f"[dim]{escape(hint)}[/]", highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args))
    except (HealthpipeError, SourceError) as exc:
        if args.verbose:
            errors.print_exception()
        _report_error(args, str(exc))
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    except Exception as exc:
        # An error healthpipe did not anticipate: one line of what happened and how to get
        # the details, rather than a wall of library frames (or of a library's message).
        summary = f"{type(exc).__name__}: {first_line(exc)}"
        if len(summary) > MAX_ERROR_CHARS:
            summary = summary[: MAX_ERROR_CHARS - 3] + "..."
        if args.verbose:
            errors.print_exception()
            _report_error(args, summary)
        else:
            _report_error(
                args,
                summary,
                f"run again with --verbose for the traceback (healthpipe --verbose {args.command} ...)",
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
