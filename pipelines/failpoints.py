"""Named failpoints: let a test kill the process at an exact point of a run.

``HEALTHPIPE_FAILPOINT=<name>`` (or ``<name>:<n>`` for the n-th time the point is reached,
default the first) makes :func:`failpoint` send SIGKILL to its own process there: no
``finally`` block, no rollback by Python, no flush, exactly as the kernel's OOM killer or a
pulled plug would end it. Unset (always, outside tests), a failpoint costs one dictionary
look-up. The points are listed in :data:`FAILPOINTS`; the reliability suite
(``tests/reliability``) runs the pipeline once per point.
"""

from __future__ import annotations

import os
import signal

ENV = "HEALTHPIPE_FAILPOINT"

FAILPOINTS = (
    "land.before_cursor",
    "land.after_commit",
    "validate.after",
    "transform.before",
    "transform.after",
)
"""``land.before_cursor``: a page is written but its cursor not yet (same transaction);
``land.after_commit``: a page and its cursor are committed, validation has not run;
``validate.after``: a page is validated, the next not started;
``transform.before`` / ``transform.after``: just before and after ``dbt build``."""

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Kill this process if ``HEALTHPIPE_FAILPOINT`` names this point (and hit count)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
