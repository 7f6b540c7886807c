"""The DHIS2 sandbox's data values, one data set at a time, held compactly.

A national country holds ten million values or more. Kept as Python objects (a tuple, its
strings and its encoded answers per value) they took about 1.1 KB each, 11 GB at 10 million:
more than the pipeline being measured beside it. Here a data set's values are columns of
small integers (org unit, period and data element as positions in lists of the distinct
ids), a float timestamp and a flag, and each value's JSON object and CSV line, encoded once
while loading, are appended to an unnamed temporary file read back through ``mmap``: the
operating system keeps the pages it has room for, and frees the file when the process ends,
however it ends (a stopped sandbox leaves nothing behind). Requests are answered by numpy masks over the columns and joins of
byte slices, so the stand-in stays faster than the clients it serves.
"""

from __future__ import annotations

import json
import mmap
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import numpy as np
import numpy.typing as npt

Key = tuple[Any, ...]
EPOCH = datetime(1970, 1, 1)


def epoch_seconds(stamp: datetime | None) -> float:
    """A zone-less timestamp as seconds since 1970 (NaN for none: it compares false)."""
    return float("nan") if stamp is None else (stamp - EPOCH).total_seconds()


class _Ids:
    """Distinct ids numbered in order of first appearance."""

    def __init__(self) -> None:
        self.position: dict[Any, int] = {}
        self.ids: list[Any] = []

    def number(self, item: Any) -> int:
        found = self.position.get(item)
        if found is None:
            found = self.position[item] = len(self.ids)
            self.ids.append(item)
        return found

    def positions(self, items: Iterable[Any]) -> npt.NDArray[np.int32]:
        return np.array(
            [self.position[item] for item in items if item in self.position], dtype=np.int32
        )


@dataclass
class Selection:
    """Which values a request asks for (``None``: no condition)."""

    org_units: set[str]
    data_elements: set[str] | None = None
    include_deleted: bool = False
    updated_since: float | None = None  # epoch seconds
    period_matches: Callable[[str | None], bool] | None = None


class DataSetValues:
    """One data set's values (see the module docstring), in the order the files hold them."""

    def __init__(self) -> None:
        # kept open for the mmap; closed by close()
        self._file: IO[bytes] | None = tempfile.TemporaryFile()  # noqa: SIM115
        self._offset = 0
        self._units, self._periods, self._elements = _Ids(), _Ids(), _Ids()
        self._columns: dict[str, list[Any]] = {
            key: [] for key in ("unit", "period", "element", "updated", "deleted")
        }
        self._raw: list[int] = []  # start of each value's JSON; its CSV line follows it
        self._csv: list[int] = []
        self._map: mmap.mmap | None = None

    def append(
        self,
        org_unit: str | None,
        period: str | None,
        data_element: str | None,
        updated: float,
        deleted: bool,
        raw: bytes,
        csv: bytes,
    ) -> None:
        assert self._file is not None and self._map is None, "appended after finish()"
        columns = self._columns
        columns["unit"].append(self._units.number(org_unit))
        columns["period"].append(self._periods.number(period))
        columns["element"].append(self._elements.number(data_element))
        columns["updated"].append(updated)
        columns["deleted"].append(deleted)
        self._raw.append(self._offset)
        self._csv.append(self._offset + len(raw))
        self._file.write(raw)
        self._file.write(csv)
        self._offset += len(raw) + len(csv)

    def finish(self) -> DataSetValues:
        """Turn the appended values into columns and map the file for reading."""
        assert self._file is not None
        self._file.flush()
        columns = self._columns
        self.unit = np.array(columns["unit"], dtype=np.int32)
        self.period = np.array(columns["period"], dtype=np.int32)
        self.element = np.array(columns["element"], dtype=np.int32)
        self.updated = np.array(columns["updated"], dtype=np.float64)
        self.deleted = np.array(columns["deleted"], dtype=bool)
        self.raw_start = np.array(self._raw, dtype=np.int64)
        self.csv_start = np.array(self._csv, dtype=np.int64)
        # each value's CSV line ends where the next value's JSON starts
        self.csv_end = np.append(self.raw_start[1:], self._offset).astype(np.int64)
        del self._columns, self._raw, self._csv
        # org unit -> its values' positions: a request for one district of ten thousand
        # reads its own values, not the whole data set
        order = np.argsort(self.unit, kind="stable")
        bounds = np.searchsorted(self.unit[order], np.arange(len(self._units.ids) + 1))
        self._by_unit = [order[bounds[i] : bounds[i + 1]] for i in range(len(self._units.ids))]
        if self._offset:
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self

    def __len__(self) -> int:
        return len(self.unit)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def select(self, selection: Selection) -> npt.NDArray[np.int64]:
        """Positions of the selected values, in the files' order."""
        units = self._units.positions(selection.org_units)
        if len(units) * 8 < len(self._units.ids):
            chosen = np.sort(np.concatenate([self._by_unit[u] for u in units] or [[]]))
            chosen = chosen.astype(np.int64)
        else:
            chosen = np.flatnonzero(np.isin(self.unit, units))
        if selection.data_elements is not None:
            wanted = self._elements.positions(selection.data_elements)
            chosen = chosen[np.isin(self.element[chosen], wanted)]
        if not selection.include_deleted:
            chosen = chosen[~self.deleted[chosen]]
        if selection.updated_since is not None:
            chosen = chosen[self.updated[chosen] >= selection.updated_since]
        if selection.period_matches is not None:
            allowed = np.array([selection.period_matches(p) for p in self._periods.ids], bool)
            chosen = chosen[allowed[self.period[chosen]]]
        return chosen

    def json_objects(self, positions: npt.NDArray[np.int64]) -> Iterator[bytes]:
        return self._slices(self.raw_start[positions], self.csv_start[positions])

    def csv_lines(self, positions: npt.NDArray[np.int64]) -> Iterator[bytes]:
        return self._slices(self.csv_start[positions], self.csv_end[positions])

    def _slices(
        self, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
    ) -> Iterator[bytes]:
        data = self._map
        if data is None:
            return iter(())
        return (data[start:end] for start, end in zip(starts.tolist(), ends.tolist(), strict=True))


def merged_rows(
    base: Iterable[Sequence[dict[str, Any]]],
    changes: Sequence[Sequence[dict[str, Any]]],
    key: Callable[[dict[str, Any]], Key],
) -> Iterator[dict[str, Any]]:
    """The base rows (one file's list at a time) after the layers of ``changes``, as applying
    the layers one after another would leave them: a change replaces every row with its key
    where it stands; a key the base lacks is appended, in the order keys first appear, with
    the last change to it. Only the changes are held whole (they are small)."""
    latest: dict[Key, dict[str, Any]] = {}
    for layer in changes:
        for change in layer:
            latest[key(change)] = change
    used: set[Key] = set()
    for rows in base:
        for row in rows:
            row_key = key(row)
            if row_key in latest:
                used.add(row_key)
                yield latest[row_key]
            else:
                yield row
    for row_key, change in latest.items():
        if row_key not in used:
            yield change


def compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
