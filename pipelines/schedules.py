"""Source schedules (``schedule:`` in a source's config): how often a source is expected to
be pulled, which ``healthpipe status`` compares with its last successful pull."""

from __future__ import annotations

import re
from datetime import timedelta

PRESETS = {
    "@hourly": timedelta(hours=1),
    "@daily": timedelta(days=1),
    "@weekly": timedelta(weeks=1),
    "@monthly": timedelta(days=31),
}
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DURATION = re.compile(r"^(\d+)([mhdw])$")


def schedule_interval(schedule: str) -> timedelta:
    """``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` or a duration such as ``30m``,
    ``6h``, ``2d``, ``1w``; ValueError otherwise."""
    if schedule in PRESETS:
        return PRESETS[schedule]
    match = DURATION.match(schedule.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"{schedule!r} is not a schedule (expected @hourly, @daily, @weekly, @monthly or "
            "a duration like 30m, 6h, 1d, 1w)"
        )
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
