"""Skip evaluating the alert rules when nothing they read has changed since the last evaluation.

Evaluating every rule on every series is the costliest part of a run that finds nothing new
(Farrington flexible refits a model per series and week: minutes at national scale), and it
would change nothing: the same surveillance weeks under the same rules give the same events,
which match the alerts they raised last time. So a run compares a fingerprint of what
evaluation reads with the one recorded after the last evaluation:

- the surveillance weeks at the rules' level, by content (every value of the frame the rules
  see, not a count or a timestamp: a corrected count must be judged again);
- the rules, as loaded (a changed threshold or a new rule is judged at once);
- the alerts an event can match (id, disease, org unit, rule, first and last week, length,
  severity): an alert deleted or edited by hand is raised or extended again. Status changes
  do not matter: matching ignores status;
- the alerting code itself, so an upgraded detector re-judges the history.

Notifications are not part of it: pending ones are retried whether or not the rules ran.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pandas as pd

from pipelines.alerts.rules import RuleSet
from pipelines.warehouse import Warehouse

STATE_DDL = """create table if not exists audit.alert_state (
    fingerprint text not null,
    run_id text not null,
    evaluated_at timestamp not null
)"""
_CODE = sorted(Path(__file__).parent.glob("*.py"))
_MATCHED_COLUMNS = (
    "alert_id, disease, org_unit_id, rule, emerged_on, period_id, last_period_id, weeks, severity"
)


def _frame_digest(frame: pd.DataFrame) -> bytes:
    if frame.empty:
        return b"empty:" + ",".join(map(str, frame.columns)).encode()
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return ",".join(map(str, frame.columns)).encode() + hashed.tobytes()


def fingerprint(warehouse: Warehouse, weeks: pd.DataFrame, rules: RuleSet) -> str:
    """What evaluating ``rules`` on ``weeks`` reads, as one hash (see the module's text)."""
    digest = hashlib.sha256()
    digest.update(rules.model_dump_json().encode() + b"\0")
    for path in _CODE:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_frame_digest(weeks) + b"\0")
    alerts: pd.DataFrame = warehouse.fetch_arrow(
        f"select {_MATCHED_COLUMNS} from marts.alerts order by alert_id"
    ).to_pandas()
    digest.update(_frame_digest(alerts))
    return digest.hexdigest()


def last_fingerprint(warehouse: Warehouse) -> str | None:
    warehouse.execute(STATE_DDL)
    rows = warehouse.fetchall(
        "select fingerprint from audit.alert_state order by evaluated_at desc limit 1"
    )
    return str(rows[0][0]) if rows else None


def record_evaluation(warehouse: Warehouse, value: str, run_id: str, now: datetime) -> None:
    warehouse.execute(STATE_DDL)
    warehouse.execute(
        "insert into audit.alert_state (fingerprint, run_id, evaluated_at) values ($f, $run, $now)",
        {"f": value, "run": run_id, "now": now},
    )
