"""The weekly bulletin as a reader gets it: written by the real command line from a real
pipeline run, opened in headless Chromium, looked at (screenshot pixels), and checked for
network requests and for small counts."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines import cli
from pipelines.audit import utc_now
from pipelines.config import HealthpipeConfig
from pipelines.run import open_warehouse, run_pipeline
from pipelines.schema_changes import record_new_fields
from pipelines.sources import adapter_for
from tests.conftest import in_ci, make_config

WEEK = "2026W4"
# A standalone integer 1..4: not part of a larger number, date, decimal, week id ("2026W4"),
# range ("7-1-7") or code. What a small count would look like on the page.
SMALL_NUMBER = re.compile(r"(?<![\w.,\-/:<])[1-4](?![\w.,\-/%:])")


@pytest.fixture(scope="module")
def pipeline(demo_country: Path, tmp_path_factory: pytest.TempPathFactory) -> HealthpipeConfig:
    """The small simulated country run through the whole pipeline once for this module."""
    root = tmp_path_factory.mktemp("bulletin")
    config = make_config(f"duckdb:///{root / 'warehouse.duckdb'}", demo_country, root)
    run_pipeline(config)
    (root / "healthpipe.yml").write_text(
        f"warehouse: {config.warehouse}\nstate_dir: {root}\nsources:\n"
        f"  - {{name: hmis, type: dhis2, path: {demo_country}, schedule: '@daily'}}\n",
        encoding="utf-8",
    )
    return config


REPO = Path(__file__).resolve().parents[2]


def healthpipe(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """The command line of this checkout (not whatever `healthpipe` is installed)."""
    base = {k: v for k, v in os.environ.items() if k not in ("HEALTHPIPE_WAREHOUSE",)}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "healthpipe", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def config_file(config: HealthpipeConfig) -> Path:
    return config.state_dir / "healthpipe.yml"


@pytest.fixture(scope="module")
def bulletin_html(pipeline: HealthpipeConfig) -> Path:
    out = pipeline.state_dir / "bulletin.html"
    result = healthpipe(
        "report", "--config", str(config_file(pipeline)), "--period", WEEK, "--out", str(out),
        cwd=pipeline.state_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    return out


def _browser_tools() -> tuple[str, str]:
    """Chromium and chromedriver from PATH. Missing tools skip the test on a laptop and fail
    it in CI, where `make install` puts them in place."""
    from pipelines.errors import HealthpipeError
    from pipelines.report.pdf import find_chromium

    try:
        chromium = find_chromium()
    except HealthpipeError:
        chromium = ""
    driver = shutil.which("chromedriver") or ""
    if not chromium or not driver:
        reason = "headless Chromium and chromedriver are needed: apt-get install chromium chromium-driver"
        if in_ci():
            pytest.fail(f"{reason}: the browser test must run in CI")
        pytest.skip(reason)
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_tools()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--force-device-scale-factor=1", "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(flag)
    # Chrome's DevTools network events, to list every request the page makes.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="module")
def rendered(browser: Any, bulletin_html: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The bulletin loaded, the window sized to the whole page, and a full-page screenshot."""
    from PIL import Image

    browser.get(bulletin_html.as_uri())
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, int(height) + 100)
    shot = tmp_path_factory.mktemp("screens") / "bulletin.png"
    browser.save_screenshot(str(shot))
    keep = os.environ.get("HEALTHPIPE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "bulletin.png")
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("L")
    return browser, image


def _region_stats(image: Any, rect: dict[str, float]) -> tuple[float, float]:
    """Pixel standard deviation and the share of pixels that are not the page's white
    inside ``rect``."""
    box = (int(rect["x"]), int(rect["y"]), int(rect["x"] + rect["width"]),
           int(rect["y"] + rect["height"]))  # fmt: skip
    pixels = list(image.crop(box).getdata())
    inked = sum(1 for p in pixels if p < 252) / len(pixels)
    return statistics.pstdev(pixels), inked


def _rects(browser: Any, selector: str) -> list[dict[str, Any]]:
    return list(
        browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => {"
            "const r = e.getBoundingClientRect();"
            "return {x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width,"
            " height: r.height, bars: e.querySelectorAll('rect.bar').length,"
            " areas: e.querySelectorAll('path.area').length,"
            " disease: e.closest('figure') ? e.closest('figure').dataset.disease : ''}})",
            selector,
        )
    )


def test_every_chart_and_map_draws(rendered: Any, pipeline: HealthpipeConfig) -> None:
    browser, image = rendered
    curves = _rects(browser, "#epidemic-curves svg.epi-curve")
    maps = _rects(browser, "#map svg.choropleth")
    assert curves, "no epidemic curve on the page"
    assert maps, "no incidence map on the page"
    with open_warehouse(pipeline) as warehouse:
        districts = warehouse.fetch_scalar(
            "select count(*) from marts.dim_org_unit where level = 3 and geometry is not null"
        )
    for chart in curves:
        assert chart["width"] > 200 and chart["height"] > 100, chart
        assert chart["bars"] > 0, chart
        spread, inked = _region_stats(image, chart)
        assert spread > 10 and inked > 0.03, (chart["disease"], spread, inked)
    for area in maps:
        assert area["areas"] == districts, area
        spread, inked = _region_stats(image, area)
        # Filled polygons cover most of a map's box.
        assert spread > 10 and inked > 0.25, (area["disease"], spread, inked)


def test_the_page_makes_no_network_request(rendered: Any) -> None:
    browser, _ = rendered
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    urls += browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls, "the request log is empty: the page itself should be listed"
    outside = [u for u in urls if not u.startswith(("file://", "data:"))]
    assert outside == [], outside


def test_no_count_from_one_to_four_is_shown(rendered: Any, pipeline: HealthpipeConfig) -> None:
    browser, _ = rendered
    visible = browser.find_element("tag name", "body").text
    svg_text = browser.execute_script(
        "return [...document.querySelectorAll('svg text, svg title')].map(e => e.textContent)"
    )
    # Indicator names are definitions, not counts ("mean +/- 2 SD", "Penta 3"): left out.
    with open_warehouse(pipeline) as warehouse:
        names = sorted(
            (str(n) for (n,) in warehouse.fetchall("select name from marts.dim_indicator")),
            key=len,
            reverse=True,
        )

    def without_names(text: str) -> str:
        for name in names:
            text = text.replace(name, " ")
        return text

    small = [
        (text, match.group())
        for text in [*visible.splitlines(), *svg_text]
        for match in SMALL_NUMBER.finditer(without_names(text))
    ]
    assert small == [], small[:10]
    # The check is not vacuous: the small country has small counts, shown suppressed.
    assert "<5" in visible
    counts = browser.execute_script(
        "return [...document.querySelectorAll('.count')].map(e => e.textContent.trim())"
    )
    for text in counts:
        for part in re.split(r"\s+of\s+", text):
            assert part in ("<5", "0", "\u2013") or int(part.replace(",", "")) >= 5, text
    # A withheld scorecard value is not hinted at by its colour either.
    coloured = browser.execute_script(
        "return [...document.querySelectorAll('td.cell')].filter(e => "
        "e.textContent.trim() === 'n<5' && !e.classList.contains('neutral')).length"
    )
    assert coloured == 0


def test_the_pdf_is_printed_by_chromium(pipeline: HealthpipeConfig) -> None:
    _browser_tools()
    out = pipeline.state_dir / "bulletin.pdf"
    result = healthpipe(
        "report", "--config", str(config_file(pipeline)), "--period", WEEK, "--out", str(out),
        cwd=pipeline.state_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2


def test_pdf_without_chromium_says_how_to_install_it(
    pipeline: HealthpipeConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = pipeline.state_dir / "no-browsers"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("HEALTHPIPE_CHROMIUM", raising=False)
    out = pipeline.state_dir / "x.pdf"
    code = cli.main(["report", "--config", str(config_file(pipeline)), "--out", str(out)])
    assert code == 2 and not out.exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "apt-get install chromium" in lines[0] and "--format html" in lines[0]


@pytest.mark.parametrize(
    ("period", "expected"),
    [("202601", "is a Monthly period"), ("2030W5", "no surveillance data for 2030W5")],
)
def test_a_bad_period_is_one_clear_line(
    pipeline: HealthpipeConfig, period: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["report", "--config", str(config_file(pipeline)), "--period", period,
         "--out", str(pipeline.state_dir / "x.html")]
    )  # fmt: skip
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in lines[0]


def test_status_reports_each_source_and_the_open_alerts(
    pipeline: HealthpipeConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_warehouse(pipeline) as warehouse:
        # The demo's DHIS2 export carries only documented fields (no drift); a field a DHIS2
        # upgrade added is recorded the way landing records it, for status to show.
        assert warehouse.fetch_scalar("select count(*) from audit.schema_changes") == 0
        record_new_fields(
            warehouse, adapter_for("dhis2").tables[-1], "hmis",
            [{"extras": '{"upgradeField": 1}'}, {"extras": '{"upgradeField": 2}'}],
            run_id="status-test", batch_id="status-test:1", now=utc_now(),
        )  # fmt: skip
    result = healthpipe("--json", "status", "--config", str(config_file(pipeline)),
                        cwd=pipeline.state_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (source,) = report["sources"]
    with open_warehouse(pipeline) as warehouse:
        received = warehouse.fetch_scalar(
            "select sum(rows_in) from audit.pipeline_runs where step = 'reconcile' and source = 'hmis'"
        )
        held = warehouse.fetch_scalar(
            "select count(*) from audit.quarantine where released_at is null"
        )
        open_alerts = warehouse.fetch_scalar(
            "select count(*) from marts.alerts where status not in ('closed', 'discarded')"
        )
    assert source["name"] == "hmis" and source["schedule"] == "@daily"
    assert source["freshness"] == "fresh"
    assert source["received"] == received > 0
    assert source["landed"] + source["quarantined"] <= source["received"]
    assert source["held_in_quarantine"] == held
    assert report["open_alerts_total"] == open_alerts == sum(report["open_alerts"].values())
    table = adapter_for("dhis2").tables[-1].name
    listed = [(c["raw_table"], c["field"], c["records"]) for c in source["schema_changes"]]
    assert listed == [(table, "upgradeField", 2)]
    assert cli.main(["status", "--config", str(config_file(pipeline))]) == 0
    text = capsys.readouterr().out
    assert "hmis" in text and "fresh" in text and f"Open alerts: {open_alerts}" in text
    assert "hmis: schema changes, kept in raw extras:" in text
    assert f"{table}.upgradeField" in text


def test_a_past_week_shows_alerts_as_they_stood_then(rendered: Any) -> None:
    from pipelines.periods import parse_period

    browser, _ = rendered
    cells = browser.execute_script(
        "return [...document.querySelectorAll('table.alerts tbody tr td:nth-child(3)')]"
        ".map(e => e.textContent)"
    )
    weeks = [w for cell in cells for w in re.findall(r"\d{4}W\d{1,2}", cell)]
    assert weeks, "no alert in the bulletin's four weeks"
    last = parse_period(WEEK).start_date
    assert all(parse_period(w).start_date <= last for w in weeks), weeks


def test_alerts_and_quarantine_lists_as_json(
    pipeline: HealthpipeConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(config_file(pipeline))
    assert cli.main(["--json", "alerts", "list", "--config", config, "--limit", "500"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert cli.main(["quarantine", "list", "--config", config, "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)
    with open_warehouse(pipeline) as warehouse:
        open_alerts = warehouse.fetch_scalar(
            "select count(*) from marts.alerts where status not in ('closed', 'discarded')"
        )
        held = warehouse.fetch_scalar(
            "select count(*) from audit.quarantine where released_at is null"
        )
    assert len(listed) == open_alerts
    assert all(a["status"] not in ("closed", "discarded") for a in listed)
    assert sum(g["records"] for g in groups) == held
