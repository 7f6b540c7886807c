"""The DHIS2 sandbox's compact value store: increments merge as applying them one after
another would, and selections pick the same values as a plain filter, in file order."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.sandbox.dhis2_api import _value_key
from pipelines.sandbox.dhis2_values import DataSetValues, Key, Selection, merged_rows


def _apply_in_turn(
    rows: list[dict[str, Any]], layer: list[dict[str, Any]], key: Callable[[dict[str, Any]], Key]
) -> list[dict[str, Any]]:
    """The oracle, one layer at a time as a DHIS2 import would: a change replaces every row
    with its key where it stands, a new key is appended (and later changes replace it)."""
    positions: dict[Key, list[int]] = {}
    for index, row in enumerate(rows):
        positions.setdefault(key(row), []).append(index)
    merged = list(rows)
    for change in layer:
        found = positions.get(key(change))
        if found:
            for index in found:
                merged[index] = change
        else:
            positions[key(change)] = [len(merged)]
            merged.append(change)
    return merged


def _value(draw: random.Random, serial: int) -> dict[str, Any]:
    return {
        "dataElement": f"de{draw.randrange(3)}",
        "period": f"2025W{draw.randrange(1, 4)}",
        "orgUnit": f"ou{draw.randrange(4)}",
        "categoryOptionCombo": "coc",
        "attributeOptionCombo": "aoc",
        "value": str(serial),
    }


def test_streamed_increments_equal_applying_them_in_turn() -> None:
    draw = random.Random(3)
    for _ in range(200):
        files = [[_value(draw, n) for n in range(draw.randrange(0, 12))] for _ in range(3)]
        layers = [[_value(draw, 100 + n) for n in range(draw.randrange(0, 8))] for _ in range(3)]
        expected = [row for rows in files for row in rows]
        for layer in layers:
            expected = _apply_in_turn(expected, layer, _value_key)
        assert list(merged_rows(files, layers, _value_key)) == expected


def test_a_selection_is_the_plain_filter_in_file_order() -> None:
    draw = random.Random(5)
    rows = []
    store = DataSetValues()
    for n in range(2_000):
        row = {
            "unit": f"ou{draw.randrange(40)}",
            "period": f"2025W{draw.randrange(1, 9)}",
            "element": f"de{draw.randrange(5)}",
            "updated": float(draw.randrange(100)) if draw.random() > 0.1 else float("nan"),
            "deleted": draw.random() < 0.2,
        }
        rows.append(row)
        store.append(
            row["unit"], row["period"], row["element"], row["updated"], row["deleted"],
            f'{{"n":{n}}}'.encode(), f"{n},csv\n".encode(),
        )  # fmt: skip
    store.finish()
    for units in ({"ou1"}, {f"ou{n}" for n in range(0, 40, 2)}, {"nowhere"}):
        selection = Selection(
            org_units=units,
            data_elements={"de1", "de3"},
            include_deleted=False,
            updated_since=50.0,
            period_matches=lambda period: period in {"2025W2", "2025W5"},
        )
        expected = [
            n
            for n, row in enumerate(rows)
            if row["unit"] in units
            and row["element"] in {"de1", "de3"}
            and not row["deleted"]
            and row["updated"] >= 50.0
            and row["period"] in {"2025W2", "2025W5"}
        ]
        chosen = store.select(selection)
        assert chosen.tolist() == expected
        assert [line.decode() for line in store.csv_lines(chosen)] == [
            f"{n},csv\n" for n in expected
        ]
        assert b",".join(store.json_objects(chosen)) == b",".join(
            f'{{"n":{n}}}'.encode() for n in expected
        )
    everything = store.select(
        Selection(org_units={f"ou{n}" for n in range(40)}, include_deleted=True)
    )
    assert np.array_equal(everything, np.arange(2_000))
    store.close()
