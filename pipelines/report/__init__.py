"""The weekly epidemiological bulletin: ``healthpipe report --period 2026W5 --out FILE``.

``data`` reads the warehouse, ``svg`` draws charts and the map, ``html`` lays out the page
(small cells suppressed by ``suppress``), ``pdf`` prints it with headless Chromium.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from pipelines.config import HealthpipeConfig
from pipelines.errors import HealthpipeError
from pipelines.report.data import Bulletin, latest_complete_week, load_bulletin
from pipelines.report.html import render_html
from pipelines.report.pdf import html_to_pdf
from pipelines.warehouse import Warehouse

ReportFormat = Literal["html", "pdf"]


def write_bulletin(
    warehouse: Warehouse,
    period_id: str,
    out: Path,
    *,
    fmt: ReportFormat = "html",
    generated_at: datetime | None = None,
) -> Bulletin:
    """Write the bulletin of ``period_id`` to ``out`` as HTML or PDF; returns its content."""
    bulletin = load_bulletin(warehouse, period_id)
    page = render_html(bulletin, generated_at=generated_at or datetime.now(UTC))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        out.write_text(page, encoding="utf-8")
        return bulletin
    with tempfile.TemporaryDirectory(prefix="healthpipe-bulletin-") as folder:
        html_file = Path(folder) / "bulletin.html"
        html_file.write_text(page, encoding="utf-8")
        html_to_pdf(html_file, out)
    return bulletin


def write_weekly_bulletin(config: HealthpipeConfig, week_start: date) -> Path:
    """The scheduled bulletin (the Airflow bulletin DAG): the week starting ``week_start``, or,
    when the warehouse holds no surveillance data for that week yet, the latest week that is
    complete enough; written as HTML under ``<state_dir>/bulletins/``."""
    from pipelines.run import open_warehouse

    year, week, _ = week_start.isocalendar()
    period: str | None = f"{year}W{week}"
    with open_warehouse(config) as warehouse:
        held = warehouse.fetch_scalar(
            "select count(*) from marts.fct_surveillance_weekly where period_id = $p "
            "and org_unit_level = 1 and cases is not null",
            {"p": period},
        )
        if not held:
            period = latest_complete_week(warehouse)
        if period is None:
            raise HealthpipeError("no weekly surveillance data in the warehouse: nothing to report")
        out = config.state_dir / "bulletins" / f"bulletin-{period}.html"
        write_bulletin(warehouse, period, out)
    return out


__all__ = ["Bulletin", "latest_complete_week", "write_bulletin", "write_weekly_bulletin"]
