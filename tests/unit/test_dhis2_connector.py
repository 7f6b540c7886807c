"""The DHIS2 payload reader on the real public samples and on malformed variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from connectors.dhis2 import (
    DEFAULT_CATEGORY_OPTION_COMBO,
    load_json,
    parse_data_value_csv,
    parse_data_value_set,
    parse_document,
    read_payload_folder,
)
from connectors.errors import SourceFormatError
from tests.conftest import SAMPLES

DHIS2 = SAMPLES / "dhis2"


def parse_file(name: str) -> dict[str, list[dict[str, object]]]:
    path = DHIS2 / name
    return parse_document(load_json(path, str(path)), str(path))


def test_reads_the_public_data_value_set() -> None:
    records = parse_file("dataValueSet_bulk.json")["data_values"]
    assert len(records) == 231
    first = records[0]
    assert first["data_element"] == "tpz77FcntKx"
    assert first["period"] == "2018"
    assert first["org_unit"] == "O6uvpzGd5pu"
    assert first["category_option_combo"] == DEFAULT_CATEGORY_OPTION_COMBO
    assert first["value"] == "500000"
    assert first["followup"] is False
    assert first["deleted"] is False
    assert {r["period"] for r in records} == {"2018", "201912"}


def test_reads_the_public_metadata_and_skips_collections_it_does_not_use() -> None:
    entities = parse_file("metadata_dataElements_categoryOptionCombos.json")
    assert set(entities) == {"data_elements", "category_option_combos", "data_sets"}
    assert len(entities["data_sets"]) == 2
    data_set = entities["data_sets"][0]
    assert data_set["period_type"] and json.loads(str(data_set["data_element_ids"]))
    assert len(entities["data_elements"]) == 75
    assert len(entities["category_option_combos"]) == 12
    aggregation = {r["aggregation_type"] for r in entities["data_elements"]}
    assert aggregation == {"SUM", "NONE", "AVERAGE_SUM_ORG_UNIT"}


def test_reads_the_public_organisation_units_with_hierarchy() -> None:
    units = {u["id"]: u for u in parse_file("organisationUnits.json")["organisation_units"]}
    assert len(units) == 3
    badjia = units["YuQRtpLP10I"]
    assert badjia["path"] == "/ImspTQPwCqd/O6uvpzGd5pu/YuQRtpLP10I"
    assert badjia["level"] == "3"
    assert badjia["parent_id"] == "O6uvpzGd5pu"
    assert json.loads(str(badjia["geometry"]))["type"] == "Point"
    # Fields the reader does not map are kept, not dropped.
    assert "displayName" in json.loads(str(badjia["extras"]))


def test_rejects_an_import_summary_with_a_clear_reason() -> None:
    with pytest.raises(SourceFormatError) as error:
        parse_file("importSummary_dataValueSet_warning.json")
    message = str(error.value)
    assert "importSummary_dataValueSet_warning.json" in message
    assert "not a DHIS2 Web API payload" in message
    assert "httpStatus" in message


def test_header_fields_are_defaults_for_each_value() -> None:
    document = {
        "dataSet": "pBOMPrpg1QX",
        "period": "202601",
        "orgUnit": "DiszpKrYNg8",
        "attributeOptionCombo": "bRowv6yZOF2",
        "dataValues": [
            {"dataElement": "f7n9E0hX8qk", "value": 12},
            {"dataElement": "f7n9E0hX8qk", "period": "202602", "value": "3", "deleted": True},
        ],
    }
    first, second = parse_document(document, "inline")["data_values"]
    assert (first["period"], first["org_unit"]) == ("202601", "DiszpKrYNg8")
    assert first["attribute_option_combo"] == "bRowv6yZOF2"
    assert first["category_option_combo"] == DEFAULT_CATEGORY_OPTION_COMBO
    assert first["value"] == "12"  # numbers are accepted on import and kept as text
    assert first["data_set"] == "pBOMPrpg1QX"
    assert second["period"] == "202602"
    assert second["deleted"] is True


def test_truncated_json_names_file_line_and_column(tmp_path: Path) -> None:
    text = (DHIS2 / "dataValueSet_bulk.json").read_text(encoding="utf-8")
    broken = tmp_path / "values.json"
    broken.write_text(text[:500], encoding="utf-8")
    with pytest.raises(SourceFormatError) as error:
        load_json(broken, f"hmis: {broken}")
    message = str(error.value)
    assert str(broken) in message
    assert "not valid JSON" in message
    assert "line" in message and "column" in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"dataValues": {"dataElement": "x"}}, "field dataValues: expected a JSON list, got dict"),
        (
            {"dataValues": [{"dataElement": "a"}, "oops"]},
            "field dataValues[1]: expected a JSON object, got str",
        ),
        (
            {"organisationUnits": [{"id": "a"}, 7]},
            "field organisationUnits[1]: expected a JSON object, got int",
        ),
        ([1, 2], "field (document): expected a JSON object, got list"),
    ],
)
def test_malformed_documents_name_the_field(document: object, expected: str) -> None:
    with pytest.raises(SourceFormatError) as error:
        parse_document(document, "hmis: values.json")
    assert str(error.value) == f"hmis: values.json: {expected}"


def test_folder_cursor_skips_unchanged_files(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(DHIS2 / "organisationUnits.json", folder / "organisationUnits.json")
    shutil.copy(DHIS2 / "dataValueSet_bulk.json", folder / "values.json")

    pages = list(read_payload_folder(folder, None, page_size=100))
    assert [(p.entity, len(p.records)) for p in pages] == [
        ("organisation_units", 3),
        ("data_values", 100),
        ("data_values", 100),
        ("data_values", 31),
    ]
    # A file counts as read only on its last page.
    assert "values.json" not in pages[1].cursor["files"]
    cursor = pages[-1].cursor
    assert set(cursor["files"]) == {"organisationUnits.json", "values.json"}

    assert list(read_payload_folder(folder, cursor)) == []

    document = json.loads((folder / "values.json").read_text(encoding="utf-8"))
    document["dataValues"] = document["dataValues"][:5]
    (folder / "values.json").write_text(json.dumps(document), encoding="utf-8")
    changed = list(read_payload_folder(folder, cursor))
    assert [(p.entity, len(p.records)) for p in changed] == [("data_values", 5)]


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceFormatError, match="does not exist"):
        list(read_payload_folder(tmp_path / "absent", None, source_name="hmis"))


def test_the_cursor_keeps_the_latest_last_updated_whatever_its_format() -> None:
    """The incremental cursor is the latest ``lastUpdated`` of a pull (or the one it had):
    compared as times, not as text, and a value without one is ignored."""
    from connectors.dhis2_api import _latest

    records = [
        {"last_updated": "2024-01-02T09:00:00.000"},
        {"last_updated": "2024-01-02T10:30:00Z"},
        {"last_updated": None},
        {"last_updated": "2024-01-02T10:00:00.000"},
        {"last_updated": "2024-01-02T09:00:00.000"},
    ]
    assert _latest(records, "last_updated", None) == "2024-01-02T10:30:00Z"
    assert _latest(records, "last_updated", "2024-01-03T00:00:00") == "2024-01-03T00:00:00"
    assert _latest(records, "last_updated", "2023-12-31T00:00:00") == "2024-01-02T10:30:00Z"
    assert _latest([{"last_updated": None}], "last_updated", None) is None
    # as text "2024-01-05T01:00:00" sorts after "2024-01-05 23:00:00"; as times it is earlier
    mixed = [{"last_updated": "2024-01-05T01:00:00"}, {"last_updated": "2024-01-05 23:00:00"}]
    assert _latest(mixed, "last_updated", None) == "2024-01-05 23:00:00"


def test_a_csv_export_gives_the_records_of_the_same_values_as_json() -> None:
    """DHIS2's CSV export (either header spelling, any case, a byte-order mark, quoted cells)
    gives the records the JSON data value set gives: empty cells are missing fields, the
    default combos fill missing combos, flags are booleans, unknown columns go to extras."""
    text = (
        "\ufeffDataElement,Period,OrgUnit,CatOptCombo,AttrOptCombo,Value,StoredBy,"
        "LastUpdated,Comment,FollowUp,Deleted,Source\n"
        'dA,202401,ouA,cocA,aocA,5,nurse,2024-02-01T10:00:00.000,"late, checked",TRUE,false,x\n'
        "\n"
        ",,,,,,,,,,,\n"
        "dB,2024W3,ouB,,,7,,,,,true,\n"
        "dC,202402\n"
    )
    records = parse_data_value_csv(text, "test.csv")
    as_json = parse_data_value_set(
        {
            "dataValues": [
                {
                    "dataElement": "dA", "period": "202401", "orgUnit": "ouA",
                    "categoryOptionCombo": "cocA", "attributeOptionCombo": "aocA", "value": "5",
                    "storedBy": "nurse", "lastUpdated": "2024-02-01T10:00:00.000",
                    "comment": "late, checked", "followup": True, "deleted": False,
                    "source": "x",
                },
                {"dataElement": "dB", "period": "2024W3", "orgUnit": "ouB", "value": "7",
                 "deleted": True, "source": ""},
                {"dataElement": "dC", "period": "202402"},
            ]
        },
        "test.json",
    )  # fmt: skip
    assert records == as_json
    assert [r["extras"] for r in records] == ['{"source":"x"}', '{"source":""}', None]
    assert records[1]["category_option_combo"] == DEFAULT_CATEGORY_OPTION_COMBO
    assert [r["followup"] for r in records] == [True, None, None]
    assert [r["deleted"] for r in records] == [False, True, False]


def test_a_csv_row_longer_than_its_header_is_refused_with_its_line() -> None:
    with pytest.raises(SourceFormatError, match="line 3 has 3 cells, the header 2"):
        parse_data_value_csv("dataelement,value\nA,1\nB,2,3\n", "test.csv")
    # a row of empty cells is skipped, however long
    assert len(parse_data_value_csv("dataelement,value\n,,,,\nA,1\n", "test.csv")) == 1
