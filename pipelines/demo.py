"""``healthpipe demo``: simulate a country, serve it over the real source APIs, and run the
whole pipeline on the embedded warehouse with every source type.

DHIS2 payloads, HL7 lab files and spreadsheets are read as file drops; the EMR and iHRIS
(FHIR), ODK Central and KoboToolbox are pulled over HTTP from the sandbox, started in the
background for the length of the run. Patient-level sources need a pseudonymisation key: the
demo uses ``HEALTHPIPE_PSEUDONYM_KEY`` when it is set, otherwise a random key it keeps in the
work folder (demo data only; a deployment sets its own secret).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import HealthpipeConfig, parse_config
from pipelines.docs import DocSites, build_docs
from pipelines.errors import HealthpipeError
from pipelines.report import latest_complete_week, write_bulletin
from pipelines.report.pdf import find_chromium
from pipelines.run import PageCallback, RunSummary, run_pipeline
from pipelines.simulate import simulate
from pipelines.transform import NodeCallback
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

DEMO_YEAR = 2025
KEY_ENV = "HEALTHPIPE_PSEUDONYM_KEY"
# The sandbox's demo credentials, handed to the sources through environment variables as a
# deployment would (the config names the variables, never the values).
DEMO_CREDENTIALS_ENV = {
    "DEMO_ODK_USER": "odk_email",
    "DEMO_ODK_PASSWORD": "odk_password",
    "DEMO_KOBO_TOKEN": "kobo_token",
}


@dataclass(frozen=True)
class DemoResult:
    config: HealthpipeConfig
    run: RunSummary
    country_dir: Path
    levels: list[tuple[str, int, int]]
    """(indicator, org-unit level, rows) in indicator_values."""
    national: list[tuple[str, str, float | None]]
    """(indicator name, unit, national yearly value)."""
    sources: list[tuple[str, str, int]]
    """(source, type, records received)."""
    alerts: list[tuple[str, int]]
    """(disease, alerts raised)."""
    bulletin_week: str | None = None
    bulletin: Path | None = None
    """The weekly bulletin (HTML) of the latest complete week."""
    bulletin_pdf: Path | None = None
    """Its PDF, when Chromium is installed."""
    docs: DocSites | None = None


def _demo_key(workdir: Path) -> str:
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    path = workdir / "demo-pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def demo_config(workdir: Path, country_dir: Path, sandbox_urls: dict[str, str]) -> HealthpipeConfig:
    """Every source type: file drops for DHIS2, HL7 and spreadsheets, HTTP for the rest."""
    country = country_dir.resolve()
    data: dict[str, Any] = {
        "warehouse": "duckdb:///healthpipe.duckdb",
        "state_dir": ".",
        "sources": [
            {"name": "hmis", "type": "dhis2", "path": str(country / "dhis2")},
            {"name": "emr", "type": "fhir", "base_url": sandbox_urls["emr"]},
            {"name": "ihris", "type": "fhir", "base_url": sandbox_urls["ihris"]},
            {"name": "lab", "type": "hl7v2", "path": str(country / "hl7")},
            {
                "name": "chw",
                "type": "odk",
                "base_url": sandbox_urls["odk"],
                "project_id": 1,
                "username_env": "DEMO_ODK_USER",
                "password_env": "DEMO_ODK_PASSWORD",
            },
            {
                "name": "nutrition",
                "type": "kobo",
                "base_url": sandbox_urls["kobo"],
                "token_env": "DEMO_KOBO_TOKEN",
            },
            {"name": "facility_reports", "type": "tabular", "path": str(country / "tabular")},
        ],
    }
    return parse_config(data, origin="healthpipe demo", base_dir=workdir.resolve())


def run_demo(
    workdir: Path = Path("var"),
    *,
    seed: int = 7,
    districts: int = 20,
    weeks: int = 156,
    on_page: PageCallback | None = None,
    on_node: NodeCallback | None = None,
) -> DemoResult:
    from pipelines.sandbox.server import start_sandbox

    country_dir = workdir / "demo-country"
    simulate(country_dir, seed=seed, districts=districts, weeks=weeks)
    with start_sandbox(country_dir) as sandbox:
        credentials = sandbox.credentials
        env = {
            name: str(getattr(credentials, field)) for name, field in DEMO_CREDENTIALS_ENV.items()
        }
        env[KEY_ENV] = _demo_key(workdir)
        urls = {
            "emr": sandbox.fhir_url("emr"),
            "ihris": sandbox.fhir_url("ihris"),
            "odk": sandbox.odk_url,
            "kobo": sandbox.kobo_url,
        }
        with _environment(env):
            config = demo_config(workdir, country_dir, urls)
            summary = run_pipeline(config, on_page=on_page, on_node=on_node)
    with Warehouse.open(config.warehouse) as warehouse:
        levels = [
            (str(i), int(level), int(rows))
            for i, level, rows in warehouse.fetchall(
                "select indicator_id, org_unit_level, count(*) from marts.indicator_values "
                "group by 1, 2 order by 1, 2"
            )
        ]
        national = [
            (str(name), str(unit), None if value is None else float(value))
            for name, unit, value in warehouse.fetchall(
                "select d.name, d.unit, v.value from marts.indicator_values v "
                "join marts.dim_indicator d using (indicator_id) "
                "where v.org_unit_level = 1 and v.period_id = $year order by d.domain, d.name",
                {"year": str(DEMO_YEAR)},
            )
        ]
        alerts = [
            (str(disease), int(count))
            for disease, count in warehouse.fetchall(
                "select disease, count(*) from marts.alerts group by 1 order by 2 desc, 1"
            )
        ]
        week = latest_complete_week(warehouse)
        bulletin = bulletin_pdf = None
        if week is not None:
            bulletin = workdir / "bulletin" / f"bulletin-{week}.html"
            write_bulletin(warehouse, week, bulletin)
            bulletin_pdf = _bulletin_pdf(warehouse, week, bulletin.with_suffix(".pdf"))
    docs = build_docs(config, workdir / "site")
    sources = [
        (s.source, str(config.source(s.source).type), sum(c.received for c in s.entities.values()))
        for s in summary.sources
    ]
    return DemoResult(
        config, summary, country_dir, levels, national, sources, alerts,
        week, bulletin, bulletin_pdf, docs,
    )  # fmt: skip


def _bulletin_pdf(warehouse: Warehouse, week: str, out: Path) -> Path | None:
    """The PDF when Chromium is installed; the demo still runs on a machine without it."""
    try:
        find_chromium()
    except HealthpipeError as exc:
        log.warning("bulletin PDF skipped: %s", exc)
        return None
    write_bulletin(warehouse, week, out, fmt="pdf")
    return out
