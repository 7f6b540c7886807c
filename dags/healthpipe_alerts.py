"""
### healthpipe: surveillance alerts

Scheduled on the `healthpipe://warehouse/marts` Asset (after every `dbt build`):

1. **detect_and_record** evaluates the alert rules (`alert_rules:` or the built-in IDSR
   rules) over `marts.fct_surveillance_weekly` and records new or extended alerts in
   `marts.alerts`; an alert is never raised twice;
2. **notify** sends every alert a channel has not had yet (`notifications:`: email or
   webhook) and records each delivery in `audit.notifications`; a channel that is down is
   tried again on the next run;
3. **dbt_build_after_alerts** builds the models that read the alert records (`--select
   source:alerting+`: the 7-1-7 timeliness, `indicator_values`, the public layer with its
   small-cell suppression), which the transform DAG leaves for after the alerts, and updates
   `healthpipe://warehouse/marts/alerts`. It runs after notify because a notification
   stamps the alert (`notified_at`), which the 7-1-7 "notify" interval reads.
"""

from __future__ import annotations

from typing import Any

from _wiring import ALERTS, MARTS, START, build_models, config, deadline, default_args, pool, run_id
from airflow.sdk import dag, get_current_context, task

DAG_ID = "healthpipe_alerts"


@dag(
    dag_id=DAG_ID,
    schedule=[MARTS],
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["healthpipe", "alerts", "surveillance"],
    doc_md=__doc__,
    default_args=default_args(),
    deadline=deadline(DAG_ID),
)
def healthpipe_alerts() -> None:
    @task(pool=pool())
    def detect_and_record() -> dict[str, Any]:
        from pipelines.alerts.pipeline import run_alerts
        from pipelines.run import open_warehouse

        # Notifying is the next task's job, so a channel outage never re-runs detection.
        settings = config().model_copy(update={"notifications": []})
        with open_warehouse(settings) as warehouse:
            outcome = run_alerts(warehouse, settings, run_id=run_id(get_current_context()))
        return {
            "new": len(outcome.new),
            "extended": len(outcome.extended),
            "skipped": outcome.skipped,
        }

    @task(pool=pool())
    def notify() -> dict[str, dict[str, int]]:
        from pipelines.alerts.notify import notify as send_pending
        from pipelines.audit import record_step, utc_now
        from pipelines.run import open_warehouse

        settings = config()
        if not settings.notifications:
            return {}
        with (
            open_warehouse(settings) as warehouse,
            record_step(warehouse, run_id(get_current_context()), "notify") as step,
        ):
            counts = send_pending(warehouse, settings, now=utc_now())
            step.rows_out = sum(c.sent for c in counts.values())
            step.rows_quarantined = sum(c.failed for c in counts.values())
        return {name: {"sent": c.sent, "failed": c.failed} for name, c in counts.items()}

    @task(pool=pool(), outlets=[ALERTS])
    def dbt_build_after_alerts() -> dict[str, Any]:
        from pipelines.run import AFTER_ALERTS

        return build_models(AFTER_ALERTS)

    detect_and_record() >> notify() >> dbt_build_after_alerts()


healthpipe_alerts()
