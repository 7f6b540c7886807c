"""Alert records on a simulated country: IDSR fixed thresholds raise alerts for the injected
outbreaks, re-runs raise nothing twice, and the lifecycle is enforced and recorded."""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.alerts.engine import AlertError, Event, record_alerts, set_status
from pipelines.alerts.pipeline import run_alerts
from pipelines.alerts.rules import Rule
from pipelines.audit import utc_now
from pipelines.config import HealthpipeConfig
from pipelines.run import open_warehouse, run_pipeline
from pipelines.simulate import simulate
from pipelines.simulate.country import build_country
from pipelines.warehouse import Warehouse
from tests.conftest import make_config

FIXED_RULES = """
level: 3
rules:
  - rule: idsr_single_case
    kind: single_case
    diseases: [cholera, afp, yellow_fever, sari]
  - rule: idsr_measles
    kind: rolling_rate
    diseases: [measles]
    weeks: 4
    alert_per_100k: 5
"""


@pytest.fixture(scope="module")
def alerting_country(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[HealthpipeConfig, dict[str, Any]]:
    root = tmp_path_factory.mktemp("alerting")
    simulate(root / "country", country=build_country(7, districts=6), weeks=80, sources=["dhis2"])
    rules = root / "rules.yml"
    rules.write_text(FIXED_RULES, encoding="utf-8")
    config = make_config(
        f"duckdb:///{root / 'warehouse.duckdb'}",
        root / "country" / "dhis2",
        root,
        alert_rules=str(rules),
    )
    run_pipeline(config)
    truth = json.loads((root / "country" / "truth.json").read_text())
    return config, truth


def alerts(config: HealthpipeConfig) -> list[tuple[Any, ...]]:
    with open_warehouse(config) as warehouse:
        return warehouse.fetchall(
            "select alert_id, disease, org_unit_id, period_id, last_period_id, rule, status, "
            "emerged_on, detected_at, days_to_detect from marts.alerts order by alert_id"
        )


def test_cholera_outbreaks_raise_single_case_alerts(alerting_country: Any) -> None:
    config, truth = alerting_country
    with open_warehouse(config) as warehouse:
        run_alerts(warehouse, config, run_id="alerts1")
    rows = alerts(config)
    assert rows, "no alert raised"
    raised = {(r[1], r[2]) for r in rows}
    for outbreak in truth["outbreaks"]:
        if outbreak["disease"] == "cholera":
            assert ("cholera", outbreak["org_unit_id"]) in raised, outbreak
    for row in rows:
        assert row[6] == "triggered"
        assert row[9] is not None and row[9] >= 0  # detection is never before emergence


def test_a_rerun_raises_no_duplicate(alerting_country: Any) -> None:
    config, _ = alerting_country
    with open_warehouse(config) as warehouse:
        run_alerts(warehouse, config, run_id="alerts1")
        first = warehouse.fetchall("select alert_id from marts.alerts order by 1")
        # forced: evaluated again, not skipped as unchanged (the test below covers skipping)
        outcome = run_alerts(warehouse, config, run_id="alerts2", force=True)
        second = warehouse.fetchall("select alert_id from marts.alerts order by 1")
    assert not outcome.skipped
    assert outcome.new == []
    assert first == second


def _alert_rows(warehouse: Any) -> list[tuple[Any, ...]]:
    return warehouse.fetchall(
        "select alert_id, disease, org_unit_id, period_id, last_period_id, weeks, severity "
        "from marts.alerts order by alert_id"
    )


def test_an_evaluation_with_nothing_changed_is_skipped_and_any_change_is_judged(
    alerting_country: Any, tmp_path: Path
) -> None:
    config, _ = alerting_country
    # a copy of the warehouse: this test edits the weeks, the alerts and the rules
    with open_warehouse(config) as warehouse:
        warehouse.execute("checkpoint")
    source = Path(config.warehouse.removeprefix("duckdb:///"))
    shutil.copy(source, tmp_path / "copy.duckdb")
    copy = config.model_copy(update={"warehouse": f"duckdb:///{tmp_path / 'copy.duckdb'}"})
    with open_warehouse(copy) as warehouse:
        run_alerts(warehouse, copy, run_id="first")
        raised = _alert_rows(warehouse)
        again = run_alerts(warehouse, copy, run_id="unchanged")
        assert again.skipped and again.new == [] and again.signals == 0
        message = warehouse.fetch_scalar(
            "select message from audit.pipeline_runs where run_id = 'unchanged' and step = 'alerts'"
        )
        assert str(message).startswith("skipped:")

        # an alert deleted by hand is raised again, with the same id
        gone = raised[0][0]
        warehouse.execute("delete from marts.alerts where alert_id = $id", {"id": gone})
        redone = run_alerts(warehouse, copy, run_id="after-delete")
        assert not redone.skipped and redone.new == [gone]
        assert _alert_rows(warehouse) == raised

        # a status change alone does not make the rules run again
        set_status(warehouse, gone, "verified", actor="dso", note=None, now=utc_now())
        assert run_alerts(warehouse, copy, run_id="after-status").skipped

        # a corrected weekly count is judged again: a case where there was none is an alert
        before = _alert_rows(warehouse)
        warehouse.execute(
            "update marts.fct_surveillance_weekly set cases = 1 where (disease, org_unit_id, "
            "period_id) in (select disease, org_unit_id, period_id "
            "from marts.fct_surveillance_weekly where disease = 'cholera' "
            "and org_unit_level = 3 and coalesce(cases, 0) = 0 "
            "order by org_unit_id, period_id limit 1)"
        )
        corrected = run_alerts(warehouse, copy, run_id="after-correction")
        assert not corrected.skipped and corrected.signals > 0
        assert _alert_rows(warehouse) != before

    # changed rules are judged at once
    rules = tmp_path / "rules.yml"
    rules.write_text(FIXED_RULES.replace("alert_per_100k: 5", "alert_per_100k: 1"), "utf-8")
    stricter = copy.model_copy(update={"alert_rules": rules})
    with open_warehouse(stricter) as warehouse:
        outcome = run_alerts(warehouse, stricter, run_id="new-rules")
        assert not outcome.skipped
        assert run_alerts(warehouse, stricter, run_id="new-rules-again").skipped


def test_the_lifecycle_is_enforced_and_recorded(alerting_country: Any) -> None:
    config, _ = alerting_country
    with open_warehouse(config) as warehouse:
        run_alerts(warehouse, config, run_id="alerts1")
        identifier = warehouse.fetch_scalar("select min(alert_id) from marts.alerts")
        with pytest.raises(AlertError, match="can move to verified, discarded, closed"):
            set_status(warehouse, identifier, "responding", actor="dso", note=None, now=utc_now())
        set_status(
            warehouse, identifier, "verified", actor="dso", note="confirmed by RRT", now=utc_now()
        )
        set_status(
            warehouse, identifier, "responding", actor="dso", note="team deployed", now=utc_now()
        )
        set_status(warehouse, identifier, "closed", actor="dso", note="no new cases", now=utc_now())
        status, responded, closed = warehouse.fetchall(
            "select status, responded_at, closed_at from marts.alerts where alert_id = $id",
            {"id": identifier},
        )[0]
        history = warehouse.fetchall(
            "select from_status, to_status, actor from audit.alert_transitions "
            "where alert_id = $id order by changed_at",
            {"id": identifier},
        )
    assert (status, responded is not None, closed is not None) == ("closed", True, True)
    assert history == [
        (None, "triggered", "healthpipe"),
        ("triggered", "verified", "dso"),
        ("verified", "responding", "dso"),
        ("responding", "closed", "dso"),
    ]
    with pytest.raises(AlertError, match="no alert"), open_warehouse(config) as warehouse:
        set_status(warehouse, "NOPE-1", "verified", actor="x", note=None, now=utc_now())


@pytest.fixture
def smtp_server() -> Any:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[Any] = []

    class Collect(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    with socket.socket() as probe:  # aiosmtpd checks readiness on the port it was given
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def with_channels(config: HealthpipeConfig, *channels: dict[str, Any]) -> HealthpipeConfig:
    from pipelines.config import NotificationChannel

    return config.model_copy(
        update={"notifications": [NotificationChannel.model_validate(c) for c in channels]}
    )


def test_each_alert_is_emailed_once(alerting_country: Any, smtp_server: Any) -> None:
    from pipelines.alerts.notify import notify

    port, received = smtp_server
    base, _ = alerting_country
    config = with_channels(
        base,
        {
            "name": "district-team",
            "type": "email",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "sender": "alerts@moh.example",
            "recipients": ["dso@moh.example"],
        },
    )
    with open_warehouse(config) as warehouse:
        # The alerting step notifies the configured channels itself.
        first = run_alerts(warehouse, config, run_id="alerts1").notifications
        open_alerts = warehouse.fetch_scalar(
            "select count(*) from marts.alerts where status not in ('discarded', 'closed')"
        )
        second = notify(warehouse, config, now=utc_now())
        recorded = warehouse.fetchall(
            "select status, count(*) from audit.notifications where channel = 'district-team' group by 1"
        )
        notified = warehouse.fetch_scalar(
            "select count(*) from marts.alerts where notified_at is not null and days_to_notify >= 0"
        )
    assert first["district-team"].sent == open_alerts > 0
    assert second["district-team"].sent == 0
    assert len(received) == open_alerts
    assert recorded == [("sent", open_alerts)]
    assert notified >= open_alerts
    subject = received[0]["Subject"]
    assert subject.startswith("[healthpipe] ") and " in " in subject


def test_a_failing_webhook_is_recorded_and_retried_until_it_works(
    alerting_country: Any, httpserver: Any
) -> None:
    from werkzeug import Response

    from pipelines.alerts.notify import notify

    state = {"up": False}
    payloads: list[Any] = []

    def handler(request: Any) -> Response:
        if not state["up"]:
            return Response("down", status=500)
        payloads.append(request.get_json())
        return Response("ok")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    base, _ = alerting_country
    config = with_channels(
        base,
        {
            "name": "ops",
            "type": "webhook",
            "url": httpserver.url_for("/hook"),
            "diseases": ["cholera"],
        },
    )
    with open_warehouse(config) as warehouse:
        down = run_alerts(warehouse, config, run_id="alerts1").notifications
        cholera = warehouse.fetch_scalar(
            "select count(*) from marts.alerts where disease = 'cholera' and status not in ('discarded', 'closed')"
        )
        failed = warehouse.fetchall(
            "select status, attempts, last_error is not null from audit.notifications where channel = 'ops'"
        )
        state["up"] = True
        up = notify(warehouse, config, now=utc_now())
        again = notify(warehouse, config, now=utc_now())
        final = warehouse.fetchall(
            "select status, attempts from audit.notifications where channel = 'ops' group by 1, 2"
        )
    assert cholera > 0
    assert down["ops"].failed == cholera and down["ops"].sent == 0
    assert set(failed) == {("failed", 1, True)}
    assert up["ops"].sent == cholera and again["ops"].sent == 0
    assert final == [("sent", 2)]
    assert len(payloads) == cholera
    assert all("text" in p and p["alerts"][0]["disease"] == "cholera" for p in payloads)


def test_the_command_line_lists_acknowledges_and_closes(
    alerting_country: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    config, _ = alerting_country
    with open_warehouse(config) as warehouse:
        run_alerts(warehouse, config, run_id="alerts1")
        identifier = warehouse.fetch_scalar(
            "select max(alert_id) from marts.alerts where status = 'triggered'"
        )
    config_file = tmp_path / "healthpipe.yml"
    config_file.write_text(
        f"warehouse: {config.warehouse}\nstate_dir: {config.state_dir}\n"
        f"sources:\n  - {{name: hmis, type: dhis2, path: {config.source('hmis').path}}}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "HEALTHPIPE_WAREHOUSE"}
    env["COLUMNS"] = "250"  # rich wraps tables to the terminal width

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "healthpipe", "alerts", *args, "--config", str(config_file)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    listed = cli("list", "--limit", "1000")
    assert listed.returncode == 0 and identifier in listed.stdout
    acked = cli(
        "ack", identifier, "--status", "verified", "--actor", "dso", "--note", "lab confirmed"
    )
    assert acked.returncode == 0 and "triggered -> verified" in acked.stdout
    wrong = cli("ack", identifier, "--status", "triggered", "--actor", "dso")
    assert wrong.returncode == 2 and "can move to" in wrong.stderr
    closed = cli("close", identifier, "--actor", "dso", "--note", "contained")
    assert closed.returncode == 0
    shown = cli("show", identifier)
    assert shown.returncode == 0 and "lab confirmed" in shown.stdout and "closed" in shown.stdout


def test_7_1_7_timeliness_feeds_the_surveillance_indicators(alerting_country: Any) -> None:
    """After alerts were verified, responded to and notified, the next run rebuilds and the
    7-1-7 indicators count them as marts.alerts says, at every level."""
    config, _ = alerting_country
    with open_warehouse(config) as warehouse:
        # a notified alert is verified and a response starts: its "respond" segment is known
        notified = warehouse.fetch_scalar(
            "select min(alert_id) from marts.alerts where notified_at is not null "
            "and status = 'triggered'"
        )
        assert notified is not None, "the notification tests above notified no alert"
        for status in ("verified", "responding"):
            set_status(warehouse, notified, status, actor="dso", note=None, now=utc_now())
        alerts = warehouse.fetchall(
            "select status, days_to_detect, days_to_notify, days_to_respond from marts.alerts"
        )
    kept = [a for a in alerts if a[0] != "discarded"]
    expected = {
        "alert_events": len(kept),
        "alert_detected_7d": sum(1 for a in kept if a[1] is not None and a[1] <= 7),
        "alert_notified_1d": sum(1 for a in kept if a[2] is not None and a[2] <= 1),
        "alert_responded_7d": sum(1 for a in kept if a[3] is not None and a[3] <= 7),
    }
    assert expected["alert_events"] > 0 and expected["alert_responded_7d"] > 0

    summary = run_pipeline(config)
    assert summary.dbt is not None, "alerts changed since the last build: the run must rebuild"
    with open_warehouse(config) as warehouse:
        totals = dict(
            warehouse.fetchall(
                "select data_element_id, sum(value) from marts.fct_data_values "
                "where data_element_id like 'alert_%' group by 1"
            )
        )
        levels = warehouse.fetchall(
            "select org_unit_level, sum(numerator), sum(denominator) from marts.indicator_values "
            "where indicator_id = 'alert_response_within_7_days' and period_type = 'Yearly' "
            "group by 1 order by 1"
        )
    assert {k: int(v) for k, v in totals.items() if k in expected} == {
        k: v for k, v in expected.items() if v
    }
    assert [level for level, _, _ in levels] == [1, 2, 3]  # alerts are raised for districts
    for _, numerator, denominator in levels:
        assert (numerator, denominator) == (
            expected["alert_responded_7d"],
            expected["alert_events"],
        )


@pytest.fixture(scope="module")
def built_in_rules_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[HealthpipeConfig, dict[str, Any]]:
    """Three years of a six-district country, alerted with the built-in IDSR rules."""
    root = tmp_path_factory.mktemp("built_in_alerting")
    simulate(root / "country", country=build_country(7, districts=6), sources=["dhis2"])
    config = make_config(f"duckdb:///{root / 'warehouse.duckdb'}", root / "country" / "dhis2", root)
    run_pipeline(config)
    return config, json.loads((root / "country" / "truth.json").read_text())


def test_large_outbreaks_raise_alerts_while_they_last(built_in_rules_run: Any) -> None:
    """Issue 7's bar: at least 90% of outbreaks of size k >= 10 alerted while they last;
    smaller ones are reported (detection rate and median delay per k)."""
    from pipelines.alerts.evaluation import score_alerts

    config, truth = built_in_rules_run
    with open_warehouse(config) as warehouse:
        rows = warehouse.fetchall(
            "select disease, org_unit_id, period_id, last_period_id from marts.alerts"
        )
    alerts = [
        dict(zip(("disease", "org_unit_id", "period_id", "last_period_id"), r, strict=True))
        for r in rows
    ]
    scores = score_alerts(truth["outbreaks"], alerts)
    for score in scores.values():
        print(
            f"k={score.k:g}: {score.detected}/{score.outbreaks} detected, "
            f"median delay {score.median_delay_weeks} weeks"
        )
    large = [s for k, s in scores.items() if k >= 10]
    detected = sum(s.detected for s in large)
    total = sum(s.outbreaks for s in large)
    assert total >= 5
    assert detected / total >= 0.9, scores


def test_a_second_run_adds_no_alert_and_no_notification(built_in_rules_run: Any) -> None:
    config, _ = built_in_rules_run
    with open_warehouse(config) as warehouse:
        before = warehouse.fetchall("select alert_id, last_period_id from marts.alerts order by 1")
        outcome = run_alerts(warehouse, config, run_id="again")
        after = warehouse.fetchall("select alert_id, last_period_id from marts.alerts order by 1")
    assert outcome.new == [] and before == after and before


LAB_RULES = """
level: 3
rules:
  - rule: idsr_measles_lab_confirmed
    kind: rolling_count
    diseases: [measles]
    measure: lab_confirmed
    weeks: 4
    alert_cases: 3
"""


@pytest.fixture(scope="module")
def lab_country(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HealthpipeConfig, dict[str, Any], Path]]:
    """IDSR weekly reports and the laboratories' HL7 results of one country."""
    root = tmp_path_factory.mktemp("lab_alerting")
    simulate(
        root / "country", country=build_country(7, districts=4), weeks=60, sources=["dhis2", "hl7"]
    )
    rules = root / "rules.yml"
    rules.write_text(LAB_RULES, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEALTHPIPE_PSEUDONYM_KEY", "lab-alerting-test-key-0123456789")
        config = make_config(
            f"duckdb:///{root / 'warehouse.duckdb'}",
            root / "country" / "dhis2",
            root,
            alert_rules=str(rules),
            sources=[
                {"name": "hmis", "type": "dhis2", "path": str(root / "country" / "dhis2")},
                {"name": "lab", "type": "hl7v2", "path": str(root / "country" / "hl7")},
            ],
        )
        run_pipeline(config)
        yield config, json.loads((root / "country" / "truth.json").read_text()), root


def _utc_day(stamp: str) -> date | None:
    """The UTC day of an HL7 timestamp YYYYMMDD[HHMM[SS]][+/-ZZZZ] (no offset: UTC)."""
    match = re.fullmatch(r"(\d{8})(\d{0,6})(?:\.\d+)?([+-]\d{4})?", stamp)
    if not match:
        return None
    digits = (match.group(1) + match.group(2)).ljust(14, "0")
    moment = datetime.strptime(digits, "%Y%m%d%H%M%S")
    if offset := match.group(3):
        sign = 1 if offset[0] == "+" else -1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    return moment.date()


def _measles_igm_positives(hl7_dir: Path) -> dict[tuple[str, date], int]:
    """Positive measles IgM orders per (ordering facility code, UTC collection day), read from
    the laboratories' files with plain string handling: the latest message of each order wins,
    a rejected specimen (ORC-5 X) confirms nothing."""
    latest: dict[str, tuple[str, bool, str, date | None]] = {}
    for path in sorted(p for p in hl7_dir.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8", errors="replace")
        segments = [line.split("|") for line in re.split(r"\r\n|\r|\n", text) if line]
        sent = lab = facility = order = ""
        collected: date | None = None
        rejected = False
        for fields in segments:
            kind = fields[0]
            if kind == "MSH":
                sent = fields[6] if len(fields) > 6 else ""
                lab = fields[3]
            elif kind == "ORC":
                xon = fields[21].split("^") if len(fields) > 21 else []
                facility = xon[9] if len(xon) > 9 and xon[9] else xon[2] if len(xon) > 2 else ""
                rejected = len(fields) > 5 and fields[5] == "X"
            elif kind == "OBR":
                # filler order number with its namespace, else the placer's: unique per lab
                order = lab + "|" + (fields[3] or fields[2])
                collected = _utc_day(fields[7]) if len(fields) > 7 else None
            elif kind == "OBX" and len(fields) > 5 and fields[3].split("^")[0] == "21503-8":
                positive = fields[5].split("^")[0] == "10828004" and not rejected
                previous = latest.get(order)
                if previous is None or sent > previous[0]:
                    latest[order] = (sent, positive, facility, collected)
    counts: dict[tuple[str, date], int] = {}
    for _sent, positive, facility, day in latest.values():
        if positive and facility and day:
            counts[(facility, day)] = counts.get((facility, day), 0) + 1
    return counts


def test_lab_confirmed_measles_are_counted_per_district_and_week(lab_country: Any) -> None:
    config, _, root = lab_country
    positives = _measles_igm_positives(root / "country" / "hl7")
    assert sum(positives.values()) > 0, "the simulated labs confirmed no measles case"
    with open_warehouse(config) as warehouse:
        facilities = dict(
            warehouse.fetchall("select code, level_3_id from marts.dim_org_unit where level = 4")
        )
        weekly = warehouse.fetchall(
            "select org_unit_id, period_id, lab_confirmed from marts.fct_surveillance_weekly "
            "where disease = 'measles' and org_unit_level = 3 and lab_confirmed > 0"
        )
        first, last = warehouse.fetchall(
            "select min(week_start_date), max(week_end_date) from marts.fct_surveillance_weekly"
        )[0]
    expected: dict[tuple[str, str], int] = {}
    for (facility, when), count in positives.items():
        if facility not in facilities or not first <= when <= last:
            continue
        year, week, _ = when.isocalendar()
        key = (facilities[facility], f"{year}W{week}")
        expected[key] = expected.get(key, 0) + count
    assert {(o, p): int(n) for o, p, n in weekly} == expected


def test_three_lab_confirmed_measles_in_a_month_raise_an_alert(lab_country: Any) -> None:
    config, _, _ = lab_country
    with open_warehouse(config) as warehouse:
        months = warehouse.fetchall(
            "select org_unit_id, period_id, sum(lab_confirmed) over ("
            "  partition by org_unit_id order by week_start_date rows between 3 preceding and current row"
            ") as in_month, lab_confirmed from marts.fct_surveillance_weekly "
            "where disease = 'measles' and org_unit_level = 3"
        )
        raised = warehouse.fetchall(
            "select a.org_unit_id, p.period_id from marts.alerts as a "
            "join marts.fct_surveillance_weekly as p on p.org_unit_id = a.org_unit_id "
            "and p.disease = a.disease and p.org_unit_level = 3 "
            "and p.week_start_date between a.emerged_on and "
            "(select week_end_date from marts.fct_surveillance_weekly as l where l.disease = a.disease "
            " and l.org_unit_id = a.org_unit_id and l.period_id = a.last_period_id) "
            "where a.rule = 'idsr_measles_lab_confirmed'"
        )
    due = {(o, p) for o, p, in_month, week in months if in_month >= 3 and week > 0}
    assert due, "no district reached three lab-confirmed measles cases in four weeks"
    assert due <= set(raised), sorted(due - set(raised))[:5]


CHOLERA = Rule(rule="idsr_single_case", kind="single_case", diseases=["cholera"])


def _event(org_unit: str, weeks: list[tuple[int, float, str]]) -> Event:
    """An event of ``(ISO week of 2026, cases, severity)`` weeks."""
    starts = [pd.Timestamp(date.fromisocalendar(2026, week, 1)) for week, _, _ in weeks]
    frame = pd.DataFrame(
        {
            "period_id": [f"2026W{week}" for week, _, _ in weeks],
            "week_start_date": starts,
            "org_unit_level": 3,
            "last_reported_at": [start + pd.Timedelta(days=8) for start in starts],
            "observed": [cases for _, cases, _ in weeks],
            "expected": float("nan"),
            "threshold": 1.0,
            "severity": [severity for _, _, severity in weeks],
        }
    )
    return Event("cholera", org_unit, 3, CHOLERA, frame)


def test_alerts_are_extended_in_place_and_untouched_when_nothing_changed(
    warehouse_url: str,
) -> None:
    """On both engines: a longer event updates its alert (one bulk update), a separate one is
    a new alert, and recording the same events again rewrites no row."""
    first_run = datetime(2026, 3, 2, 8)
    with Warehouse.open(warehouse_url) as warehouse:
        warehouse.ensure_schemas()
        raised = record_alerts(
            warehouse,
            [_event("OU_A", [(1, 2, "alert"), (2, 1, "alert")]), _event("OU_B", [(3, 1, "alert")])],
            run_id="one",
            now=first_run,
        )
        assert len(raised.new) == 2 and raised.extended == []
        longer = [
            _event("OU_A", [(1, 2, "alert"), (2, 1, "alert"), (4, 6, "epidemic")]),
            _event("OU_B", [(3, 1, "alert")]),
            _event("OU_B", [(9, 1, "alert")]),
        ]
        second = record_alerts(warehouse, longer, run_id="two", now=first_run + timedelta(days=7))
        rows = warehouse.fetchall(
            "select org_unit_id, period_id, last_period_id, weeks, total_cases, peak_cases, "
            "severity, run_id from marts.alerts order by org_unit_id, period_id"
        )
        assert len(second.new) == 1 and sorted(second.extended) == sorted(raised.new)
        assert [tuple(row) for row in rows] == [
            ("OU_A", "2026W1", "2026W4", 3, 9.0, 6.0, "epidemic", "two"),
            ("OU_B", "2026W3", "2026W3", 1, 1.0, 1.0, "alert", "one"),
            ("OU_B", "2026W9", "2026W9", 1, 1.0, 1.0, "alert", "two"),
        ]
        stamps = warehouse.fetchall("select alert_id, updated_at from marts.alerts order by 1")
        third = record_alerts(warehouse, longer, run_id="three", now=first_run + timedelta(days=14))
        assert third.new == [] and len(third.extended) == 3
        assert warehouse.fetchall("select alert_id, updated_at from marts.alerts order by 1") == (
            stamps
        )
