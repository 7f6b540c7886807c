"""Telling people a pipeline step failed, through the channels that carry outbreak alerts
(``notifications:`` in healthpipe.yml): a broken run is as urgent as an alert, because it
means alerts stop. Unlike alerts, failures are not filtered by disease or org unit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.config import HealthpipeConfig

# Airflow imports this module when it parses a DAG with a deadline alert, so the senders
# (and pipelines.alerts, which loads the detectors' numerical stack) are imported on use.

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    dag_id: str
    task_id: str
    source: str | None
    error: str
    """The error's first line only: tracebacks stay in the task log."""
    run_id: str | None = None
    log_url: str | None = None

    def subject(self) -> str:
        where = f" (source {self.source})" if self.source else ""
        return f"[healthpipe] FAILED: {self.dag_id}.{self.task_id}{where}"

    def text(self) -> str:
        parts = [
            f"healthpipe task {self.task_id} in {self.dag_id} failed",
            f"source: {self.source}" if self.source else None,
            f"run: {self.run_id}" if self.run_id else None,
            f"error: {self.error}",
            f"log: {self.log_url}" if self.log_url else None,
        ]
        return "; ".join(part for part in parts if part)


def first_line(error: BaseException | str | None) -> str:
    if error is None:
        return "no error recorded"
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if isinstance(error, BaseException) else "no message"


def notify_failure(
    config: HealthpipeConfig, failure: Failure, *, env: Mapping[str, str] | None = None
) -> dict[str, bool]:
    """Send ``failure`` to every channel; returns whether each delivery worked. A channel
    that is down is logged, not raised: the task has failed already and must stay failed
    for its own reason."""
    from pipelines.alerts.notify import send_email, send_webhook

    environment = os.environ if env is None else env
    delivered: dict[str, bool] = {}
    for channel in config.notifications:
        try:
            if channel.type == "email":
                send_email(channel, failure.subject(), failure.text(), environment)
            else:
                payload = {
                    "text": f"{failure.subject()}\n{failure.text()}",
                    "failure": {
                        "dag_id": failure.dag_id,
                        "task_id": failure.task_id,
                        "source": failure.source,
                        "run_id": failure.run_id,
                        "error": failure.error,
                    },
                }
                send_webhook(channel, payload, environment)
            delivered[channel.name] = True
        except Exception as exc:  # one channel down must not hide the others
            log.error(
                "channel %s: could not report the failure of %s.%s: %s",
                channel.name, failure.dag_id, failure.task_id, first_line(exc),
            )  # fmt: skip
            delivered[channel.name] = False
    return delivered


def deadline_missed(dag_id: str, source: str | None = None, hours: float = 0.0) -> None:
    """An Airflow deadline alert's callback (run by the executor, outside any task): a run
    still not finished ``hours`` after it was queued is reported like a failure, because a
    hung pull stops alerts as surely as a failed one."""
    from pipelines.config import load_config

    failure = Failure(
        dag_id=dag_id,
        task_id="(run)",
        source=source,
        error=f"the run has not finished {hours:g} hours after it was queued",
    )
    notify_failure(load_config(check_credentials=False), failure)
