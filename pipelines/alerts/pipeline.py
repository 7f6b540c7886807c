"""The alerting step of a run: evaluate the rules, record alerts, notify (the CLI and the
alerts DAG call this)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipelines.alerts import state
from pipelines.alerts.engine import group_events, record_alerts, signals, surveillance_frame
from pipelines.alerts.notify import NotifyCounts, notify
from pipelines.alerts.rules import load_rules
from pipelines.audit import record_step, utc_now
from pipelines.config import HealthpipeConfig
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass
class AlertRun:
    new: list[str] = field(default_factory=list)
    extended: list[str] = field(default_factory=list)
    signals: int = 0
    notifications: dict[str, NotifyCounts] = field(default_factory=dict)
    skipped: bool = False
    """The rules were not evaluated: nothing they read changed since the last evaluation."""


def run_alerts(
    warehouse: Warehouse, config: HealthpipeConfig, *, run_id: str, force: bool = False
) -> AlertRun:
    """Evaluate the rules and record the alerts (unless nothing they read changed since the
    last evaluation, see :mod:`pipelines.alerts.state`; ``force`` evaluates regardless), then
    send the notifications due."""
    rules = load_rules(config.alert_rules)
    outcome = AlertRun()
    with record_step(warehouse, run_id, "alerts") as step:
        if not warehouse.table_exists("marts", "fct_surveillance_weekly"):
            step.message = "no marts.fct_surveillance_weekly yet: nothing to evaluate"
            return outcome
        frame = surveillance_frame(warehouse, rules.level)
        step.rows_in = len(frame)
        before = state.fingerprint(warehouse, frame, rules)
        if not force and before == state.last_fingerprint(warehouse):
            outcome.skipped = True
            step.message = (
                "skipped: the surveillance weeks, the rules and the alerts are as the last "
                "evaluation left them"
            )
        else:
            alarms = signals(frame, rules)
            outcome.signals = len(alarms)
            changes = record_alerts(
                warehouse, group_events(alarms, rules), run_id=run_id, now=utc_now()
            )
            outcome.new, outcome.extended = changes.new, changes.extended
            step.rows_out = len(changes.new)
            step.message = f"{len(alarms)} signal weeks, {len(changes.new)} new alerts"
            after = state.fingerprint(warehouse, frame, rules)
            state.record_evaluation(warehouse, after, run_id, utc_now())
    if config.notifications:
        with record_step(warehouse, run_id, "notify") as step:
            outcome.notifications = notify(warehouse, config, now=utc_now())
            step.rows_out = sum(c.sent for c in outcome.notifications.values())
            step.rows_quarantined = sum(c.failed for c in outcome.notifications.values())
    log.info("alerts: %d new, %d updated", len(outcome.new), len(outcome.extended))
    return outcome
