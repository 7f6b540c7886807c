"""The weekly epidemiological bulletin: ``healthpipe report --period 2026W5 --out FILE``.

``data`` reads the warehouse, ``svg`` draws charts and the map, ``html`` lays out the page
(small cells suppressed by ``suppress``), ``pdf`` prints it with headless Chromium.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

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


__all__ = ["Bulletin", "latest_complete_week", "write_bulletin"]
