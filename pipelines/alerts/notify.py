"""Sending alerts to people: email over SMTP and JSON webhooks (Slack-compatible ``text``).

Each alert is notified once per channel however often the pipeline runs: deliveries are
recorded in ``audit.notifications`` (alert, channel, status, attempts, last error). A failed
delivery is retried a few times at once and, if the channel stays down, again on the next run
(never silently dropped). Channels choose diseases, an org-unit subtree, a minimum severity,
and ``immediate`` (one message per alert) or ``digest`` (one message a day listing them).
"""

from __future__ import annotations

import logging
import os
import smtplib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from connectors.http import Credentials, HttpClient, RetryPolicy
from pipelines.config import HealthpipeConfig, NotificationChannel
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

SMTP_ATTEMPTS = 3
MAX_ATTEMPTS = 20
"""After this many failed attempts over runs, a delivery stays failed (and visible)."""
DIGEST_EVERY = timedelta(days=1)
SEVERITY_RANK = {"alert": 1, "epidemic": 2}


@dataclass(frozen=True)
class AlertMessage:
    alert_id: str
    disease: str
    disease_name: str
    org_unit_id: str
    org_unit_name: str
    path: str
    period_id: str
    last_period_id: str
    severity: str
    rule: str
    method: str
    observed: float | None
    threshold: float | None
    total_cases: float | None
    status: str
    detected_at: datetime

    def subject(self) -> str:
        cases = f"{self.total_cases:.0f} cases" if self.total_cases is not None else "cases"
        return (
            f"[healthpipe] {self.severity.upper()}: {self.disease_name} in {self.org_unit_name}, "
            f"{self.period_id} ({cases})"
        )

    def text(self) -> str:
        weeks = (
            self.period_id
            if self.period_id == self.last_period_id
            else f"{self.period_id} to {self.last_period_id}"
        )
        threshold = f"{self.threshold:.1f}" if self.threshold is not None else "-"
        observed = f"{self.observed:.0f}" if self.observed is not None else "-"
        return (
            f"{self.severity.capitalize()} {self.alert_id}: {self.disease_name} in {self.org_unit_name}, "
            f"weeks {weeks}: {observed} cases in the first week against a threshold of "
            f"{threshold} (rule {self.rule}, method {self.method}); {self.total_cases or 0:.0f} cases so far. "
            f"Status: {self.status}. Verify and record the outcome with: "
            f"healthpipe alerts ack {self.alert_id} --status verified (or discarded)."
        )


def pending_alerts(warehouse: Warehouse, channel: NotificationChannel) -> list[AlertMessage]:
    """Alerts the channel wants and has not been sent yet."""
    rows = warehouse.fetchall(
        "select a.alert_id, a.disease, coalesce(d.disease_name, a.disease), a.org_unit_id, "
        "coalesce(o.name, a.org_unit_id), coalesce(o.path, ''), a.period_id, a.last_period_id, "
        "a.severity, a.rule, a.method, a.observed, a.threshold, a.total_cases, a.status, "
        "a.detected_at "
        "from marts.alerts a "
        "left join marts.dim_org_unit o on o.org_unit_id = a.org_unit_id "
        "left join (select distinct disease, disease_name from marts.fct_surveillance_weekly) d "
        "on d.disease = a.disease "
        "left join audit.notifications n on n.alert_id = a.alert_id and n.channel = $channel "
        "where a.status not in ('discarded', 'closed') "
        "and (n.status is null or (n.status = 'failed' and n.attempts < $max)) "
        "order by a.detected_at, a.alert_id",
        {"channel": channel.name, "max": MAX_ATTEMPTS},
    )
    messages = [AlertMessage(*row) for row in rows]
    wanted = []
    for message in messages:
        if channel.diseases and message.disease not in channel.diseases:
            continue
        if channel.org_units and not any(f"/{root}" in message.path for root in channel.org_units):
            continue
        if SEVERITY_RANK.get(message.severity, 1) < SEVERITY_RANK[channel.min_severity]:
            continue
        wanted.append(message)
    return wanted


def _record(
    warehouse: Warehouse,
    channel: str,
    alert_ids: Sequence[str],
    *,
    sent: bool,
    error: str | None,
    now: datetime,
) -> None:
    for alert_id in alert_ids:
        warehouse.execute(
            "insert into audit.notifications (alert_id, channel, status, attempts, last_error, "
            "first_attempt_at, sent_at) values ($id, $channel, $status, 1, $error, $now, $sent_at) "
            "on conflict (alert_id, channel) do update set status = excluded.status, "
            "attempts = audit.notifications.attempts + 1, last_error = excluded.last_error, "
            "sent_at = excluded.sent_at",
            {
                "id": alert_id,
                "channel": channel,
                "status": "sent" if sent else "failed",
                "error": error,
                "now": now,
                "sent_at": now if sent else None,
            },
        )
        if sent:
            warehouse.execute(
                "update marts.alerts set notified_at = coalesce(notified_at, $now), "
                "days_to_notify = coalesce(days_to_notify, "
                "cast(cast($now as date) - cast(detected_at as date) as integer)) "
                "where alert_id = $id",
                {"now": now, "id": alert_id},
            )


def send_email(
    channel: NotificationChannel, subject: str, body: str, env: Mapping[str, str]
) -> None:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = str(channel.sender)
    message["To"] = ", ".join(channel.recipients)
    message.set_content(body)
    last: Exception | None = None
    for attempt in range(1, SMTP_ATTEMPTS + 1):
        try:
            with smtplib.SMTP(str(channel.smtp_host), channel.smtp_port, timeout=15) as smtp:
                if channel.starttls:
                    smtp.starttls()
                if channel.username_env and channel.password_env:
                    smtp.login(env[channel.username_env], env[channel.password_env])
                smtp.send_message(message)
            return
        except (OSError, smtplib.SMTPException) as exc:
            last = exc
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                break  # retrying refused credentials only locks the account
            if attempt < SMTP_ATTEMPTS:
                time.sleep(0.5 * 2 ** (attempt - 1))
    raise RuntimeError(f"email via {channel.smtp_host}:{channel.smtp_port} failed: {last}")


def send_webhook(
    channel: NotificationChannel, payload: dict[str, Any], env: Mapping[str, str]
) -> None:
    credentials = Credentials.from_env(
        env, token_env=channel.token_env, source=f"channel {channel.name}"
    )
    with HttpClient(
        str(channel.url),
        source=f"channel {channel.name}",
        credentials=credentials,
        timeout=(5.0, 20.0),
        policy=RetryPolicy(attempts=3, backoff_base=0.5, backoff_max=5.0, max_retry_after=30.0),
    ) as client:
        client.request("POST", str(channel.url), json_body=payload)


Sender = Callable[[NotificationChannel, list[AlertMessage], Mapping[str, str]], None]


def _deliver(
    channel: NotificationChannel, messages: list[AlertMessage], env: Mapping[str, str]
) -> None:
    if channel.type == "email":
        if len(messages) == 1:
            send_email(channel, messages[0].subject(), messages[0].text(), env)
        else:
            subject = f"[healthpipe] Daily digest: {len(messages)} surveillance alerts"
            send_email(channel, subject, "\n\n".join(m.text() for m in messages), env)
        return
    text = "\n".join(m.text() for m in messages)
    send_webhook(
        channel,
        {
            "text": text,
            "alerts": [
                {
                    "alert_id": m.alert_id,
                    "disease": m.disease,
                    "org_unit_id": m.org_unit_id,
                    "org_unit_name": m.org_unit_name,
                    "period_id": m.period_id,
                    "last_period_id": m.last_period_id,
                    "severity": m.severity,
                    "rule": m.rule,
                    "status": m.status,
                }
                for m in messages
            ],
        },
        env,
    )


def _digest_due(warehouse: Warehouse, channel: NotificationChannel, now: datetime) -> bool:
    last = warehouse.fetch_scalar(
        "select max(sent_at) from audit.notifications where channel = $channel",
        {"channel": channel.name},
    )
    return last is None or now - last >= DIGEST_EVERY


@dataclass
class NotifyCounts:
    sent: int = 0
    failed: int = 0


def notify(
    warehouse: Warehouse,
    config: HealthpipeConfig,
    *,
    now: datetime,
    env: Mapping[str, str] | None = None,
    deliver: Sender = _deliver,
) -> dict[str, NotifyCounts]:
    """Send every alert each channel has not sent yet; record the outcome either way."""
    environment = os.environ if env is None else env
    counts: dict[str, NotifyCounts] = {}
    for channel in config.notifications:
        result = counts.setdefault(channel.name, NotifyCounts())
        messages = pending_alerts(warehouse, channel)
        if not messages:
            continue
        batches = [[m] for m in messages]
        if channel.mode == "digest":
            if not _digest_due(warehouse, channel, now):
                continue
            batches = [messages]
        for batch in batches:
            ids = [m.alert_id for m in batch]
            try:
                deliver(channel, batch, environment)
            except Exception as exc:  # any delivery failure is recorded, never raised past here
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning(
                    "channel %s: could not send %s: %s", channel.name, ", ".join(ids), error
                )
                _record(warehouse, channel.name, ids, sent=False, error=error, now=now)
                result.failed += len(ids)
            else:
                _record(warehouse, channel.name, ids, sent=True, error=None, now=now)
                result.sent += len(ids)
    return counts
