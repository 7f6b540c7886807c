"""What the pipeline needs to know about a source type beyond its connector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from connectors.base import Cursor, Page, Record
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.privacy import Pseudonymiser
from pipelines.tables import RawTable
from pipelines.warehouse import Warehouse
from pipelines.window import Window


class SourceAdapter(Protocol):
    source_type: str
    cursor_entity: str
    """The ``audit.source_state.entity`` under which the connector's cursor is kept."""
    tables: tuple[RawTable, ...]
    """The raw landing tables of this source type, one per entity."""
    patient_level: bool
    """True when records identify patients: such a source needs the pseudonymisation key
    and must drop names, phones, addresses and exact birth dates before landing."""
    helper_columns: tuple[str, ...]
    """Columns ``enrich`` adds for the suites to check (never stored in raw)."""

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        """The connector's pages for this source, starting after ``cursor``."""
        ...

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        """Records as they will be landed: pseudonymised and stripped of direct identifiers
        for patient-level sources (the pseudonymiser is never None for those)."""
        ...

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        """Reference sets the entity's suite refers to as ``$name``."""
        ...

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        """Add helper columns the entity's suite checks (the raw rows are not changed)."""
        ...


@runtime_checkable
class WindowedAdapter(Protocol):
    """A source type that can be pulled for a window of past days without its cursor."""

    def window_pages(
        self, source: SourceConfig, window: Window, config: HealthpipeConfig
    ) -> Iterator[Page]:
        """The records of ``window`` only, as pages whose cursors must not be saved."""
        ...


class NotBuiltAdapter:
    """A source type whose connector does not exist yet: configuring one is an error that
    says so, instead of a crash deep in the run."""

    tables: tuple[RawTable, ...] = ()
    patient_level = False
    helper_columns: tuple[str, ...] = ()
    cursor_entity = "cursor"

    def __init__(self, source_type: str) -> None:
        self.source_type = source_type

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        from pipelines.errors import HealthpipeError

        raise HealthpipeError(
            f"source {source.name}: the {self.source_type} connector is not built in this version"
        )

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        return list(records)

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        return {}

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        return frame
