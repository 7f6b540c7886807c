"""PDF through headless Chromium's ``--print-to-pdf``: the page's own print CSS decides the
layout, so the PDF and the HTML never drift apart."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipelines.errors import HealthpipeError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_ENV = "HEALTHPIPE_CHROMIUM"
TIMEOUT_SECONDS = 120


def find_chromium() -> str:
    """The Chromium executable: ``$HEALTHPIPE_CHROMIUM``, else the first of
    :data:`BROWSERS` on PATH."""
    override = os.environ.get(BROWSER_ENV)
    if override:
        if shutil.which(override) is None:
            raise HealthpipeError(f"{BROWSER_ENV}={override}: no such executable")
        return override
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise HealthpipeError(
        "PDF output needs Chromium and none is on PATH: install it (Debian/Ubuntu: "
        f"`apt-get install chromium`), set {BROWSER_ENV}, or use --format html"
    )


def html_to_pdf(html_file: Path, pdf_file: Path) -> None:
    """Print ``html_file`` to ``pdf_file`` with headless Chromium (no network needed: the
    page is self-contained)."""
    browser = find_chromium()
    with tempfile.TemporaryDirectory(prefix="healthpipe-chromium-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # root in containers and CI cannot use Chromium's sandbox
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={pdf_file.resolve()}",
            html_file.resolve().as_uri(),
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise HealthpipeError(
                f"{browser} did not finish printing {html_file} within {TIMEOUT_SECONDS} s"
            ) from None
    if result.returncode != 0 or not pdf_file.exists() or pdf_file.stat().st_size == 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise HealthpipeError(
            f"{browser} could not print {html_file} to PDF (exit {result.returncode}): "
            f"{detail[-1] if detail else 'no output'}"
        )
