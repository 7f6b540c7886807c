"""Errors the pipeline reports to its user: each says what went wrong and what to do."""

from __future__ import annotations


class HealthpipeError(Exception):
    """An error the user can act on; the command line prints its message without a traceback."""


class ConfigError(HealthpipeError):
    """``healthpipe.yml`` is missing, unreadable or invalid; the message names file and key."""


class WarehouseError(HealthpipeError):
    """The warehouse URL is invalid or the warehouse cannot be reached."""


class ValidationFailed(HealthpipeError):
    """A fatal expectation failed: the batch was stopped and nothing of it was published."""


class TransformError(HealthpipeError):
    """dbt failed; the message names the model or test and dbt's first error line."""


class IndicatorDefinitionError(HealthpipeError):
    """An indicator definition does not parse; the message names file, indicator and position."""
