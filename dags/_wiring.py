"""What every healthpipe DAG shares: default arguments, Assets, pools, the failure callback,
deadlines and credentials. Not a DAG file (``.airflowignore`` skips it); the DAG files import
it by name because Airflow puts the DAG folder on ``sys.path``.

Only the config and the Airflow SDK are imported here: DAG files must parse in well under a
second, so the warehouse, dbt and Great Expectations are imported inside tasks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    DeltaDataIntervalTimetable,
    ExceptionRetryPolicy,
    RetryAction,
    RetryRule,
    get_current_context,
)
from airflow.sdk.definitions.callback import SyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from pipelines.config import HealthpipeConfig, SourceConfig, load_config
from pipelines.orchestration import warehouse_pool
from pipelines.schedules import PRESETS, schedule_interval

if TYPE_CHECKING:
    from pipelines.run import BuildPart

OWNER = "healthpipe"
START = pendulum.datetime(2025, 1, 1, tz="UTC")
DEFAULT_INGEST_SCHEDULE = "0 2 * * *"
"""Daily at 02:00 UTC, after facilities' end-of-day reporting, unless a source sets one."""
RUN_DEADLINE = timedelta(hours=6)


def ingest_timetable(
    schedule: str | None,
) -> CronDataIntervalTimetable | DeltaDataIntervalTimetable:
    """A source's ``schedule:`` as data intervals (each run knows the period it stands for):
    presets (``@daily``) on the clock, durations (``6h``) as fixed steps from the start date.
    A cron timetable given ``6h`` fails the whole ingest file, every source's DAG with it."""
    if schedule is None:
        return CronDataIntervalTimetable(DEFAULT_INGEST_SCHEDULE, "UTC")
    if schedule in PRESETS:
        return CronDataIntervalTimetable(schedule, "UTC")
    return DeltaDataIntervalTimetable(schedule_interval(schedule))


MARTS = Asset(name="healthpipe_marts", uri="healthpipe://warehouse/marts")
ALERTS = Asset(name="healthpipe_alerts", uri="healthpipe://warehouse/marts/alerts")


def source_asset(source_name: str) -> Asset:
    """Updated when a source's pull has landed and been validated."""
    return Asset(
        name=f"healthpipe_raw_{source_name}", uri=f"healthpipe://warehouse/raw/{source_name}"
    )


def config() -> HealthpipeConfig:
    """``healthpipe.yml`` (``$HEALTHPIPE_CONFIG``). Credentials are not required here: the
    DAG processor may not hold them, and each task resolves its own before it runs."""
    return load_config(check_credentials=False)


def pool() -> str:
    """One slot for a DuckDB warehouse (single writer); the default pool for PostgreSQL."""
    return warehouse_pool(config().warehouse)


def on_failure(source: str | None) -> Callable[[Any], None]:
    """A task failure callback sending the DAG, task, source and the error's first line
    through the alert channels."""

    def notify(context: Any) -> None:
        from pipelines.failures import Failure, first_line, notify_failure

        ti = context["ti"]
        failure = Failure(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            source=source,
            error=first_line(context.get("exception")),
            run_id=str(ti.run_id),
        )
        notify_failure(config(), failure)

    return notify


PERMANENT_ERRORS = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=[
                "pipelines.errors.ConfigError",
                "pipelines.errors.ValidationFailed",
                "pipelines.errors.IndicatorDefinitionError",
                "connectors.errors.SourceFormatError",
            ],
            action=RetryAction.FAIL,
            reason="the config, a file or a payload is wrong: retrying cannot fix it",
        )
    ]
)
"""Errors a retry cannot fix fail (and notify) at once; the rest, network errors and a
source that is down among them, are retried with backoff."""


def default_args(source: str | None = None) -> dict[str, Any]:
    return {
        "owner": OWNER,
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        # Sources that are down for minutes get retried in 1, 2, 4 minutes, not hammered.
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=2),
        "retry_policy": PERMANENT_ERRORS,
        "on_failure_callback": on_failure(source),
    }


def deadline(dag_id: str, source: str | None = None) -> DeadlineAlert:
    """A run still going ``RUN_DEADLINE`` after it was queued is reported like a failure."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=RUN_DEADLINE,
        callback=SyncCallback(
            "pipelines.failures.deadline_missed",
            kwargs={
                "dag_id": dag_id,
                "source": source,
                "hours": RUN_DEADLINE.total_seconds() / 3600,
            },
        ),
    )


def use_source_credentials(source: SourceConfig) -> list[str]:
    """Put the source's credentials in this task's environment (from the environment or the
    Airflow connection ``healthpipe_<source>``) and mask every value in the task logs.
    Returns the names of the variables set."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException
    from airflow.sdk.log import mask_secret

    from pipelines.orchestration import source_credentials

    def lookup(conn_id: str) -> dict[str, Any] | None:
        try:
            connection = Connection.get(conn_id)
        except AirflowNotFoundException:
            return None
        return {"login": connection.login, "password": connection.password}

    values = source_credentials(source, os.environ, lookup)
    for name, value in values.items():
        # No name: Airflow masks a named value only when the name looks secret ("password",
        # "token"), and a username variable like DHIS2_USER would slip through.
        mask_secret(value)
        os.environ[name] = value
    return sorted(values)


def run_id(context: Any) -> str:
    """healthpipe's run id for audit rows: the DAG and Airflow run, so a row leads back to
    its task log."""
    return f"{context['dag'].dag_id}:{context['run_id']}"


def build_models(part: BuildPart) -> dict[str, Any]:
    """``dbt build`` of ``part`` of the project from inside a task, recorded under the task's
    run id; what the task returns to XCom."""
    from pipelines.run import transform

    outcome = transform(config(), run_id=run_id(get_current_context()), part=part)
    return {"nodes_passed": outcome.succeeded, "warnings": len(outcome.warned)}
