"""The simulated country is deterministic and its DHIS2 side is shaped like the Web API."""

from __future__ import annotations

import json
import re
from pathlib import Path

from connectors.dhis2 import load_json, parse_document
from pipelines.periods import parse_period
from pipelines.simulate import simulate
from pipelines.simulate.catalogue import ALL_DATA_ELEMENTS, CATEGORY_COMBOS, DATA_SETS
from tests.conftest import small_country

UID = re.compile(r"^[A-Za-z][A-Za-z0-9]{10}$")


def run(folder: Path, seed: int = 7, weeks: int = 30) -> Path:
    simulate(folder, seed=seed, country=small_country(), weeks=weeks, sources=["dhis2"])
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = files_of(run(tmp_path / "a"))
    second = files_of(run(tmp_path / "b"))
    assert first == second
    assert "truth.json" in first and "dhis2/metadata/organisationUnits.json" in first
    other = files_of(run(tmp_path / "c", seed=8))
    assert (
        other["dhis2/dataValueSets/idsr_weekly_2025.json"]
        != first["dhis2/dataValueSets/idsr_weekly_2025.json"]
    )


def test_metadata_uids_and_hierarchy(tmp_path: Path) -> None:
    folder = run(tmp_path)
    metadata = folder / "dhis2" / "metadata"
    units = json.loads((metadata / "organisationUnits.json").read_text())["organisationUnits"]
    by_id = {u["id"]: u for u in units}
    assert {u["level"] for u in units} == {1, 2, 3, 4}
    for unit in units:
        assert UID.match(unit["id"])
        parts = unit["path"].strip("/").split("/")
        assert parts[-1] == unit["id"] and len(parts) == unit["level"]
        if unit["level"] > 1:
            assert by_id[unit["parent"]["id"]]["path"] == "/" + "/".join(parts[:-1])
        assert unit["geometry"]["type"] in ("Point", "Polygon", "MultiPolygon")
    fixed_uids = [de.uid for de in ALL_DATA_ELEMENTS] + [ds.uid for ds in DATA_SETS]
    fixed_uids += [uid for combo in CATEGORY_COMBOS for uid in (combo.uid, *combo.combo_uids)]
    assert all(UID.match(uid) for uid in fixed_uids), [u for u in fixed_uids if not UID.match(u)]
    combos = json.loads((metadata / "categoryOptionCombos.json").read_text())[
        "categoryOptionCombos"
    ]
    assert "HllvX50cXC0" in {c["id"] for c in combos}


def test_values_parse_and_periods_match_their_data_set(tmp_path: Path) -> None:
    folder = run(tmp_path)
    types = {"idsr_weekly": "Weekly", "hmis_monthly": "Monthly", "population_yearly": "Yearly"}
    truth = json.loads((folder / "truth.json").read_text())
    bad_periods = {
        d["record"]["period"] for d in truth["defects"] if d["expected_rule"] == "period_valid"
    }
    for path in sorted((folder / "dhis2" / "dataValueSets").glob("*.json")):
        values = parse_document(load_json(path, str(path)), str(path))["data_values"]
        assert values
        expected = next(t for prefix, t in types.items() if path.name.startswith(prefix))
        for value in values:
            if value["period"] in bad_periods:
                continue
            assert parse_period(value["period"]).period_type == expected, value


def test_truth_records_outbreaks_and_defects(tmp_path: Path) -> None:
    folder = run(tmp_path, weeks=60)
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["outbreaks"], "no outbreak injected"
    for outbreak in truth["outbreaks"]:
        assert outbreak["extra_cases"] == sum(outbreak["weekly_extra_cases"].values())
        assert outbreak["k"] > 0 and outbreak["org_unit_level"] == 3
    rules = {d["expected_rule"] for d in truth["defects"]}
    assert {"org_unit_known", "data_element_known", "value_present", "period_valid",
            "value_numeric", "natural_key_present", "duplicate"} <= rules  # fmt: skip


def test_increment_holds_later_weeks_corrections_and_deletions(tmp_path: Path) -> None:
    folder = run(tmp_path, weeks=30)
    truth = json.loads((folder / "truth.json").read_text())["notes"]["dhis2_increment"]
    base = {}
    for path in (folder / "dhis2" / "dataValueSets").glob("*.json"):
        for v in json.loads(path.read_text())["dataValues"]:
            key = (v["dataElement"], v["period"], v.get("orgUnit"), v["categoryOptionCombo"])
            base[key] = v
    later = []
    for path in (folder / "increments" / "1" / "dhis2" / "dataValueSets").glob("*.json"):
        later.extend(json.loads(path.read_text())["dataValues"])
    new_weeks = set(truth["new_weeks"])
    assert len(new_weeks) == 4
    assert not any(key[1] in new_weeks for key in base), "base files hold increment weeks"
    assert any(v["period"] in new_weeks for v in later)

    def key_of(record: dict) -> tuple:
        return (
            record["dataElement"],
            record["period"],
            record["orgUnit"],
            record["categoryOptionCombo"],
        )

    corrected = {key_of(k) for k in truth["corrected"]}
    deleted = {key_of(k) for k in truth["deleted"]}
    assert corrected and deleted and corrected <= set(base) and deleted <= set(base)
    for v in later:
        key = key_of(v)
        if key in corrected:
            assert v["value"] != base[key]["value"] and v["lastUpdated"] > base[key]["lastUpdated"]
        if key in deleted:
            assert v["deleted"] is True


def test_every_generator_is_deterministic(tmp_path: Path) -> None:
    """All sources together, twice with the same seed: byte-identical trees."""
    for name in ("a", "b"):
        simulate(tmp_path / name, seed=11, country=small_country(), weeks=20)
    first, second = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert first == second
    for source in ("dhis2", "dhis2_csv", "fhir", "hl7", "odk", "kobo", "tabular"):
        assert any(path.startswith(f"{source}/") for path in first), source


def test_dhis2_documents_have_the_web_api_shapes(tmp_path: Path) -> None:
    folder = run(tmp_path)
    metadata = folder / "dhis2" / "metadata"
    required = {
        "organisationUnits": {"id", "name", "shortName", "level", "path", "openingDate"},
        "dataElements": {
            "id",
            "name",
            "valueType",
            "aggregationType",
            "domainType",
            "categoryCombo",
        },
        "categoryOptionCombos": {"id", "name", "categoryCombo", "categoryOptions"},
        "dataSets": {
            "id",
            "name",
            "periodType",
            "timelyDays",
            "dataSetElements",
            "organisationUnits",
        },
        "organisationUnitGroups": {"id", "name", "organisationUnits"},
    }
    for collection, keys in required.items():
        items = json.loads((metadata / f"{collection}.json").read_text())[collection]
        assert items and all(keys <= set(item) for item in items), collection
    value_keys = {"dataElement", "period", "orgUnit", "categoryOptionCombo", "attributeOptionCombo"}
    for path in (folder / "dhis2" / "dataValueSets").glob("*.json"):
        document = json.loads(path.read_text())
        assert set(document) == {"dataSet", "dataValues"}
        for value in document["dataValues"]:
            assert isinstance(value.get("value", ""), str)
            assert value_keys - {"orgUnit"} <= set(value)
    for path in (folder / "dhis2" / "completeDataSetRegistrations").glob("*.json"):
        for registration in json.loads(path.read_text())["completeDataSetRegistrations"]:
            assert {"dataSet", "period", "organisationUnit", "date", "completed"} <= set(
                registration
            )
