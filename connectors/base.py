"""The one small interface every connector offers.

A connector is given its source's settings and the cursor saved after the last committed
batch, and yields :class:`Page` objects. Each page carries raw records of one entity and the
cursor to save once that page (and every page before it) is committed. Connectors never
touch the warehouse: committing and saving cursors is the caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
Cursor = Mapping[str, Any]


@dataclass(frozen=True)
class Page:
    """A batch of raw records of one entity, as the source emitted them (fields renamed
    to snake_case, values untouched)."""

    entity: str
    records: list[Record]
    origin: str
    """Where the page came from (file path or URL), for error messages and audit."""
    cursor: dict[str, Any] = field(default_factory=dict)
    """The cursor to save after this page is committed."""
