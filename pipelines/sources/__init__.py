"""Per source type: which connector to call, and the reference data and helper columns its
expectation suites need. Adding a source type means adding a module here and registering it."""

from __future__ import annotations

from pipelines.errors import HealthpipeError
from pipelines.sources.base import SourceAdapter
from pipelines.sources.dhis2 import Dhis2Adapter

ADAPTERS: dict[str, SourceAdapter] = {"dhis2": Dhis2Adapter()}


def adapter_for(source_type: str) -> SourceAdapter:
    try:
        return ADAPTERS[source_type]
    except KeyError:
        built = ", ".join(sorted(ADAPTERS))
        raise HealthpipeError(
            f"source type {source_type!r} has no connector in this version (available: {built})"
        ) from None
