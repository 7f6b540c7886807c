"""Per source type: which connector to call, the raw tables it lands into, and the reference
data and helper columns its expectation suites need. A new source type is a module here with
an adapter (see :class:`pipelines.sources.base.SourceAdapter`) registered below."""

from __future__ import annotations

from pipelines.errors import HealthpipeError
from pipelines.sources.base import SourceAdapter
from pipelines.sources.dhis2 import Dhis2Adapter
from pipelines.sources.fhir import FhirAdapter
from pipelines.sources.hl7v2 import Hl7v2Adapter
from pipelines.sources.kobo import KoboAdapter
from pipelines.sources.odk import OdkAdapter
from pipelines.sources.tabular import TabularAdapter
from pipelines.tables import RawTable

ADAPTERS: dict[str, SourceAdapter] = {
    "dhis2": Dhis2Adapter(),
    "fhir": FhirAdapter(),
    "hl7v2": Hl7v2Adapter(),
    "odk": OdkAdapter(),
    "kobo": KoboAdapter(),
    "tabular": TabularAdapter(),
}


def adapter_for(source_type: str) -> SourceAdapter:
    try:
        return ADAPTERS[source_type]
    except KeyError:
        built = ", ".join(sorted(ADAPTERS))
        raise HealthpipeError(
            f"source type {source_type!r} is unknown (available: {built})"
        ) from None


def all_raw_tables() -> list[RawTable]:
    return [table for adapter in ADAPTERS.values() for table in adapter.tables]


def raw_table(source_type: str, entity: str) -> RawTable:
    for table in adapter_for(source_type).tables:
        if table.entity == entity:
            return table
    known = ", ".join(t.name for t in all_raw_tables())
    raise KeyError(f"no raw table for {source_type}.{entity} (known: {known})")
