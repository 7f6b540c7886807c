"""The one small interface every connector offers.

A connector is given its source's settings and the cursor saved after the last committed
batch, and yields :class:`Page` objects. Each page carries raw records of one entity and the
cursor to save once that page (and every page before it) is committed. Connectors never
touch the warehouse: committing and saving cursors is the caller's job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.errors import SourceFormatError

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


DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
"""The largest file a drop reader parses whole (DHIS2 JSON and CSV payloads, HL7 batch
files): the same bound as an HTTP body. JSON and HL7 files are parsed in one piece, so a
larger file (or one that is mostly a single huge string) would cost its size in memory
several times over; it is refused before a byte of it is read."""


def check_file_size(path: Path, origin: str, limit: int) -> None:
    """Refuse ``path`` when it is larger than ``limit`` bytes, saying how to get it in."""
    size = path.stat().st_size
    if size > limit:
        raise SourceFormatError(
            origin,
            f"the file is {size:,} bytes; files in a drop are read whole, up to {limit:,} "
            "bytes (the source's max_file_bytes): split the export (by period or org unit) "
            "or raise max_file_bytes if the machine has the memory",
        )


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks (drops' cursors remember it per file)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
