"""What the pipeline needs to know about a source type beyond its connector."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import pandas as pd

from connectors.base import Cursor, Page
from pipelines.config import SourceConfig
from pipelines.warehouse import Warehouse


class SourceAdapter(Protocol):
    source_type: str
    cursor_entity: str
    """The ``audit.source_state.entity`` under which the connector's cursor is kept."""

    def pages(self, source: SourceConfig, cursor: Cursor | None) -> Iterator[Page]:
        """The connector's pages for this source."""
        ...

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        """Reference sets the entity's suite refers to as ``$name``."""
        ...

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        """Add helper columns the entity's suite checks (the raw rows are not changed)."""
        ...
