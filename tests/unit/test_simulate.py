"""The simulated country is deterministic and shaped like DHIS2's Web API payloads."""

from __future__ import annotations

import json
import re
from pathlib import Path

from connectors.dhis2 import load_json, parse_document
from pipelines.simulate import build_country, write_dhis2_payloads

UID = re.compile(r"^[A-Za-z][A-Za-z0-9]{10}$")


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = write_dhis2_payloads(build_country(7), tmp_path / "a")
    second = write_dhis2_payloads(build_country(7), tmp_path / "b")
    other = write_dhis2_payloads(build_country(8), tmp_path / "c")
    for entity in first:
        assert first[entity].read_bytes() == second[entity].read_bytes(), entity
    assert first["data_values"].read_bytes() != other["data_values"].read_bytes()


def test_hierarchy_has_four_levels_with_paths(tmp_path: Path) -> None:
    files = write_dhis2_payloads(build_country(7), tmp_path)
    units = json.loads(files["organisation_units"].read_text())["organisationUnits"]
    by_id = {u["id"]: u for u in units}
    assert {u["level"] for u in units} == {1, 2, 3, 4}
    for unit in units:
        assert UID.match(unit["id"])
        parts = unit["path"].strip("/").split("/")
        assert parts[-1] == unit["id"] and len(parts) == unit["level"]
        if unit["level"] > 1:
            assert by_id[unit["parent"]["id"]]["path"] == "/" + "/".join(parts[:-1])


def test_payloads_parse_with_the_connector(tmp_path: Path) -> None:
    files = write_dhis2_payloads(build_country(7), tmp_path)
    values = parse_document(load_json(files["data_values"], "x"), "x")["data_values"]
    assert values and all(v["value"].isdigit() for v in values)
    assert {v["period"] for v in values} == {f"2025{m:02d}" for m in range(1, 13)}
