"""Errors the pipeline reports to its user: each says what went wrong and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class HealthpipeError(Exception):
    """An error the user can act on; the command line prints its message without a traceback."""


class ConfigError(HealthpipeError):
    """``healthpipe.yml`` is missing, unreadable or invalid; the message names file and key."""


class WarehouseError(HealthpipeError):
    """The warehouse URL is invalid or the warehouse cannot be reached."""


class ValidationFailed(HealthpipeError):
    """A fatal expectation failed: the batch was stopped and nothing of it was published."""


class TransformError(HealthpipeError):
    """dbt failed; the message names the model or test and dbt's first error line.
    ``nodes``: the results of the nodes dbt did run (``pipelines.transform.NodeRun``), so a
    failed build's timings are recorded too."""

    def __init__(self, message: str, *, nodes: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.nodes = list(nodes)


class IndicatorDefinitionError(HealthpipeError):
    """An indicator definition does not parse; the message names file, indicator and position."""
