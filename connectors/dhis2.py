"""DHIS2 Web API payloads: metadata lists and ``dataValueSets``.

This module reads the JSON documents the DHIS2 Web API returns (``/api/organisationUnits``,
``/api/dataElements``, ``/api/categoryOptionCombos``, a ``/api/metadata`` export holding several
of them, and ``/api/dataValueSets``) from a folder of files. The HTTP client that fetches the
same documents from a live server comes with the connectors issue; both share the parsers here.

Payload shapes follow the DHIS2 developer docs: a data value set is
``{"dataSet", "period", "orgUnit", "attributeOptionCombo", "dataValues": [...]}``, where the
header fields are defaults for values that lack them, values are strings, and a missing
category or attribute option combo means the default one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.base import (
    DEFAULT_MAX_FILE_BYTES,
    Cursor,
    Page,
    Record,
    check_file_size,
    file_sha256,
)
from connectors.errors import SourceFormatError

DEFAULT_CATEGORY_OPTION_COMBO = "HllvX50cXC0"
"""The UID of the default category option combo, the same in every DHIS2 instance."""


@dataclass(frozen=True)
class CollectionSpec:
    """How one Web API metadata collection maps to raw columns."""

    entity: str
    scalars: dict[str, str]
    """API field -> column, kept as text."""
    refs: dict[str, str] = field(default_factory=dict)
    """API reference field (``{"id": ...}`` or a bare id) -> column holding the id."""
    ref_lists: dict[str, str] = field(default_factory=dict)
    """API list of references -> column holding a JSON list of ids."""
    nested_ref_lists: dict[str, tuple[str, str]] = field(default_factory=dict)
    """API list of objects -> (the reference inside each, column of the JSON id list)."""
    json_fields: dict[str, str] = field(default_factory=dict)
    """API field -> column holding its JSON."""

    def known_fields(self) -> set[str]:
        return {
            *self.scalars,
            *self.refs,
            *self.ref_lists,
            *self.nested_ref_lists,
            *self.json_fields,
        }


_COMMON = {"id": "id", "code": "code", "name": "name", "lastUpdated": "last_updated"}

# Metadata collections in the order they land: values are validated against what precedes.
METADATA: dict[str, CollectionSpec] = {
    "organisationUnits": CollectionSpec(
        "organisation_units",
        {**_COMMON, "shortName": "short_name", "level": "level", "path": "path",
         "openingDate": "opening_date", "closedDate": "closed_date"},
        refs={"parent": "parent_id"},
        ref_lists={"organisationUnitGroups": "group_ids"},
        json_fields={"geometry": "geometry"},
    ),
    "organisationUnitGroups": CollectionSpec(
        "organisation_unit_groups",
        {**_COMMON, "shortName": "short_name"},
        ref_lists={"groupSets": "group_set_ids", "organisationUnits": "org_unit_ids"},
    ),
    "organisationUnitGroupSets": CollectionSpec(
        "organisation_unit_group_sets",
        dict(_COMMON),
        ref_lists={"organisationUnitGroups": "group_ids"},
    ),
    "categoryOptionCombos": CollectionSpec(
        "category_option_combos", dict(_COMMON), refs={"categoryCombo": "category_combo_id"}
    ),
    "dataElements": CollectionSpec(
        "data_elements",
        {**_COMMON, "shortName": "short_name", "valueType": "value_type",
         "aggregationType": "aggregation_type", "domainType": "domain_type"},
        refs={"categoryCombo": "category_combo_id"},
    ),
    "dataSets": CollectionSpec(
        "data_sets",
        {**_COMMON, "shortName": "short_name", "periodType": "period_type",
         "timelyDays": "timely_days", "expiryDays": "expiry_days"},
        ref_lists={"organisationUnits": "org_unit_ids"},
        nested_ref_lists={"dataSetElements": ("dataElement", "data_element_ids")},
    ),
}  # fmt: skip
REGISTRATIONS = CollectionSpec(
    "complete_registrations",
    {"period": "period", "date": "date", "storedBy": "stored_by", "completed": "completed"},
    refs={
        "dataSet": "data_set",
        "organisationUnit": "org_unit",
        "attributeOptionCombo": "attribute_option_combo",
    },
)

ENTITIES: tuple[str, ...] = (
    *(spec.entity for spec in METADATA.values()),
    "data_values",
    REGISTRATIONS.entity,
)

# Web API collections this reader recognises but does not land: a file holding only these
# is skipped rather than rejected, since a metadata export legitimately contains them.
RECOGNISED_COLLECTIONS = frozenset(
    {
        "categories", "categoryCombos", "categoryOptions", "dataElementGroups",
        "indicatorGroups", "indicatorTypes", "indicators", "legendSets", "optionSets",
        "options", "organisationUnitLevels", "validationRuleGroups", "validationRules",
    }
)  # fmt: skip
_DATA_VALUE_FIELDS = {
    "dataElement": "data_element",
    "period": "period",
    "orgUnit": "org_unit",
    "categoryOptionCombo": "category_option_combo",
    "attributeOptionCombo": "attribute_option_combo",
    "value": "value",
    "storedBy": "stored_by",
    "created": "created",
    "lastUpdated": "last_updated",
    "comment": "comment",
    "followup": "followup",
    "deleted": "deleted",
}
_DATA_VALUE_FLAGS = ("followup", "deleted")
_DATA_VALUE_TEXT_FIELDS = tuple(
    (key, col) for key, col in _DATA_VALUE_FIELDS.items() if col not in _DATA_VALUE_FLAGS
)
_DATA_VALUE_KEYS = frozenset(_DATA_VALUE_FIELDS)


DOCUMENTED_UNMAPPED_FIELDS = frozenset(
    {
        # identification and display
        "href", "displayName", "displayShortName", "displayFormName", "formName",
        "description", "displayDescription", "url", "dimensionItem", "dimensionItemType",
        # ownership, sharing and translation
        "created", "createdBy", "lastUpdatedBy", "user", "sharing", "publicAccess",
        "externalAccess", "userAccesses", "userGroupAccesses", "access", "favorite",
        "favorites", "translations", "attributeValues",
        # data elements and category combos
        "zeroIsSignificant", "optionSetValue", "optionSet", "commentOptionSet",
        "legendSets", "aggregationLevels", "fieldMask", "style", "categoryCombo",
        "dataElementGroups", "dataSetElements", "isDefault", "dataDimensionType",
        "skipTotal", "categories", "categoryOptions", "categoryOptionCombos",
        "dataDimension", "ignoreApproval", "startDate", "endDate",
        # data sets
        "openFuturePeriods", "compulsoryDataElementOperands", "compulsoryFieldsCompleteOnly",
        "fieldCombinationRequired", "validCompleteOnly", "noValueRequiresComment",
        "skipOffline", "renderAsTabs", "renderHorizontally", "dataInputPeriods", "workflow",
        "notifyCompletingUser", "notificationRecipients", "indicators", "sections",
        "mobile", "version", "formType", "dataEntryForm", "compulsory",
        # organisation units and groups
        "children", "ancestors", "leaf", "hierarchyLevel", "memberCount", "featureType",
        "coordinates", "contactPerson", "address", "email", "phoneNumber", "comment",
        "dataSets", "programs", "users", "color", "symbol", "includeSubhierarchyInAnalytics",
        "organisationUnitGroups", "groupSets", "image",
    }
)  # fmt: skip
"""Fields of DHIS2's documented metadata schema that healthpipe deliberately does not map.
They are kept in ``extras`` like any unmapped field, but they are not schema drift: a full
metadata export carries dozens of them, and a warning for each would hide the field a DHIS2
upgrade really added."""


def _text(value: Any) -> str | None:
    """DHIS2 sends values as strings; numbers and booleans are accepted on import, so they
    are kept as their JSON text. Objects and lists are kept as JSON so validation can name
    them instead of the parser guessing."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True)


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return None


def _ref_id(value: Any) -> str | None:
    """A DHIS2 reference is ``{"id": "..."}``; older exports sometimes give the bare id."""
    if isinstance(value, Mapping):
        return _text(value.get("id"))
    return _text(value)


def _extras(obj: Mapping[str, Any], known: Iterable[str]) -> str | None:
    """Fields the parser does not map are kept whole (as JSON) so nothing is lost and a
    new field in a later DHIS2 version shows up in raw instead of vanishing."""
    known_set = set(known)
    rest = {k: v for k, v in obj.items() if k not in known_set}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")) if rest else None


def _require_object(value: Any, origin: str, field: str, record: int | None = None) -> None:
    if not isinstance(value, Mapping):
        got = type(value).__name__ if value is not None else "null"
        raise SourceFormatError(
            origin, f"expected a JSON object, got {got}", field=field, record=record
        )


def _require_list(value: Any, origin: str, field: str) -> list[Any]:
    if not isinstance(value, list):
        got = type(value).__name__ if value is not None else "null"
        raise SourceFormatError(origin, f"expected a JSON list, got {got}", field=field)
    return value


def _id_list(value: Any, inner: str | None = None) -> str | None:
    if not isinstance(value, list):
        return None
    items = [item.get(inner) if inner and isinstance(item, Mapping) else item for item in value]
    return json.dumps([_ref_id(item) for item in items if item is not None])


def parse_collection(
    spec: CollectionSpec, items: list[Any], origin: str, label: str
) -> list[Record]:
    """Map a metadata list (or registrations) to raw records; unmapped fields go to extras."""
    records = []
    for index, obj in enumerate(items):
        _require_object(obj, origin, f"{label}[{index}]", index)
        record: Record = {col: _text(obj.get(key)) for key, col in spec.scalars.items()}
        record.update({col: _ref_id(obj.get(key)) for key, col in spec.refs.items()})
        record.update({col: _id_list(obj.get(key)) for key, col in spec.ref_lists.items()})
        for key, (inner, col) in spec.nested_ref_lists.items():
            record[col] = _id_list(obj.get(key), inner)
        for key, col in spec.json_fields.items():
            value = obj.get(key)
            record[col] = json.dumps(value, sort_keys=True) if value is not None else None
        record["extras"] = _extras(obj, spec.known_fields())
        records.append(record)
    return records


def parse_registrations(items: list[Any], origin: str) -> list[Record]:
    records = parse_collection(REGISTRATIONS, items, origin, "completeDataSetRegistrations")
    for record in records:
        if not record["attribute_option_combo"]:
            record["attribute_option_combo"] = DEFAULT_CATEGORY_OPTION_COMBO
    return records


def parse_data_value_set(document: Mapping[str, Any], origin: str) -> list[Record]:
    """Flatten a data value set into one record per value, applying the set's header
    defaults (dataSet, period, orgUnit, attributeOptionCombo) as DHIS2's importer does."""
    values = _require_list(document.get("dataValues"), origin, "dataValues")
    data_set = _text(document.get("dataSet"))
    defaults = {
        "period": _text(document.get("period")),
        "org_unit": _text(document.get("orgUnit")),
        "attribute_option_combo": _text(document.get("attributeOptionCombo")),
    }
    records = []
    for index, obj in enumerate(values):
        _require_object(obj, origin, f"dataValues[{index}]", index)
        get = obj.get
        record: Record = {}
        # (this loop runs once per value, ten million times at national scale: strings, the
        # usual case, skip the call to _text)
        for key, col in _DATA_VALUE_TEXT_FIELDS:
            raw = get(key)
            record[col] = raw if raw is None or type(raw) is str else _text(raw)
        record["followup"] = _flag(get("followup"))
        record["deleted"] = _flag(get("deleted"))
        for col, default in defaults.items():
            if not record[col]:
                record[col] = default
        for col in ("category_option_combo", "attribute_option_combo"):
            if not record[col]:
                record[col] = DEFAULT_CATEGORY_OPTION_COMBO
        record["deleted"] = bool(record["deleted"])
        record["data_set"] = data_set
        record["extras"] = (
            None if obj.keys() <= _DATA_VALUE_KEYS else _extras(obj, _DATA_VALUE_FIELDS)
        )
        records.append(record)
    return records


# DHIS2's CSV export header; older versions wrote catoptcombo/attroptcombo.
_CSV_COLUMNS = {
    "dataelement": "dataElement",
    "period": "period",
    "orgunit": "orgUnit",
    "categoryoptioncombo": "categoryOptionCombo",
    "catoptcombo": "categoryOptionCombo",
    "attributeoptioncombo": "attributeOptionCombo",
    "attroptcombo": "attributeOptionCombo",
    "value": "value",
    "storedby": "storedBy",
    "created": "created",
    "lastupdated": "lastUpdated",
    "comment": "comment",
    "followup": "followup",
    "deleted": "deleted",
}


def parse_data_value_csv(text: str, origin: str) -> list[Record]:
    """A data value set in DHIS2's CSV format (header row required, as DHIS2 exports it).

    The records are the ones :func:`parse_data_value_set` makes of the same values: an empty
    cell is a missing field, the default combos fill missing combos, and columns this reader
    does not know go to ``extras``. They are built straight from the cells (this runs once
    per value, ten million times at national scale)."""
    rows = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(rows, None)
    if header is None:
        raise SourceFormatError(origin, "empty CSV: expected DHIS2's data value header row")
    names = [h.strip().lower() for h in header]
    if "dataelement" not in names or "value" not in names:
        raise SourceFormatError(
            origin,
            "not a DHIS2 data value CSV: the header needs at least dataelement, period, orgunit "
            f"and value; found {', '.join(names) or 'nothing'}",
            field="(header)",
        )
    width = len(names)
    # the cells each field is read from, in header order: the last non-empty one wins
    sources: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        if name in _CSV_COLUMNS:
            sources.setdefault(_DATA_VALUE_FIELDS[_CSV_COLUMNS[name]], []).append(index)
    unknown = [(index, name) for index, name in enumerate(names) if name not in _CSV_COLUMNS]
    plain = [(col, cells[0]) for col, cells in sources.items() if len(cells) == 1]
    repeated = [(col, cells) for col, cells in sources.items() if len(cells) > 1]
    empty = dict.fromkeys(_DATA_VALUE_FIELDS.values())
    records = []
    for line, cells in enumerate(rows, start=2):
        if len(cells) != width:
            if not "".join(cells).strip():
                continue
            if len(cells) > width:
                raise SourceFormatError(
                    origin, f"line {line} has {len(cells)} cells, the header {width}", record=line
                )
        elif not cells[0].strip() and not "".join(cells).strip():
            continue
        row: Sequence[str | None] = cells
        if len(cells) < width:  # cells past a short row are absent (None), not empty
            row = [*cells, *[None] * (width - len(cells))]
        record: Record = empty.copy()
        for col, index in plain:
            record[col] = row[index] or None
        for col, indexes in repeated:
            for index in indexes:
                if row[index]:
                    record[col] = row[index]
        followup, deleted = record["followup"], record["deleted"]
        record["followup"] = None if followup is None else str(followup).lower() == "true"
        record["deleted"] = deleted is not None and str(deleted).lower() == "true"
        if not record["category_option_combo"]:
            record["category_option_combo"] = DEFAULT_CATEGORY_OPTION_COMBO
        if not record["attribute_option_combo"]:
            record["attribute_option_combo"] = DEFAULT_CATEGORY_OPTION_COMBO
        record["data_set"] = None
        extras = {name: row[index] for index, name in unknown if row[index] is not None}
        record["extras"] = (
            json.dumps(extras, sort_keys=True, separators=(",", ":")) if extras else None
        )
        records.append(record)
    return records


def parse_document(document: Any, origin: str) -> dict[str, list[Record]]:
    """Split one Web API JSON document into records per entity.

    A document may be a single collection (``{"organisationUnits": [...]}`` with or without a
    ``pager``), a metadata export with several collections, a data value set, or a list of
    complete data set registrations. Collections healthpipe does not land (``indicators``,
    ``legendSets`` ...) are skipped; a document with nothing DHIS2-shaped is an error.
    """
    _require_object(document, origin, "(document)")
    found: dict[str, list[Record]] = {}
    for collection, spec in METADATA.items():
        if collection in document:
            items = _require_list(document[collection], origin, collection)
            found[spec.entity] = parse_collection(spec, items, origin, collection)
    if "dataValues" in document:
        found["data_values"] = parse_data_value_set(document, origin)
    if "completeDataSetRegistrations" in document:
        items = _require_list(
            document["completeDataSetRegistrations"], origin, "completeDataSetRegistrations"
        )
        found[REGISTRATIONS.entity] = parse_registrations(items, origin)
    if not found and RECOGNISED_COLLECTIONS & set(document):
        return {}
    if not found:
        keys = ", ".join(sorted(document)) or "none"
        expected = ", ".join([*METADATA, "dataValues", "completeDataSetRegistrations"])
        raise SourceFormatError(
            origin,
            f"not a DHIS2 Web API payload this connector reads: expected one of the keys "
            f"{expected}; found {keys}",
        )
    return found


def load_csv_text(path: Path, origin: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(origin, f"not UTF-8 text: {exc.reason}") from exc


def load_json(path: Path, origin: str) -> Any:
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise SourceFormatError(
            origin, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise SourceFormatError(origin, f"not UTF-8 text: {exc.reason}") from exc
    except RecursionError:
        # no DHIS2 payload nests more than a few levels; this one is hostile or broken
        raise SourceFormatError(origin, "JSON nested deeper than the parser allows") from None


def read_payload_folder(
    folder: Path,
    cursor: Cursor | None = None,
    *,
    source_name: str = "dhis2",
    page_size: int = 50_000,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[Page]:
    """Yield pages of records from every ``*.json`` payload under ``folder``.

    The cursor is ``{"files": {relative path: sha256}}``: a file whose content is unchanged
    since the cursor was saved is skipped, so a re-run reads only new or changed drops.
    Pages come entity by entity in landing order (metadata before data values), so values
    are validated against the metadata of the same run. A page's cursor marks its file done
    only on the file's last page.
    """
    if not folder.is_dir():
        raise SourceFormatError(
            f"{source_name}: {folder}", "the folder does not exist or is not a directory"
        )
    seen: dict[str, str] = dict((cursor or {}).get("files", {}))
    changed: list[tuple[str, Path, str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".json", ".csv")):
        relative = path.relative_to(folder).as_posix()
        # by size first: hashing a hostile gigabyte would cost seconds before refusing it
        check_file_size(path, f"{source_name}: {path}", max_file_bytes)
        fingerprint = file_sha256(path)
        if seen.get(relative) != fingerprint:
            changed.append((relative, path, fingerprint))

    # Metadata first, from every changed file, so values are validated against the metadata
    # of the same run; data value files are then read one at a time (memory stays bounded by
    # the largest file, not the whole drop).
    metadata: list[tuple[str, str, dict[str, list[Record]]]] = []
    value_files: list[tuple[str, Path, str]] = []
    for relative, path, fingerprint in changed:
        origin = f"{source_name}: {path}"
        if path.suffix.lower() == ".csv":  # DHIS2's CSV export holds data values only
            value_files.append((relative, path, fingerprint))
            continue
        entities = parse_document(load_json(path, origin), origin)
        if "data_values" in entities:
            value_files.append((relative, path, fingerprint))
            del entities["data_values"]
        metadata.append((relative, fingerprint, entities))

    def pages(
        relative: str, entity: str, records: list[Record], done: str | None
    ) -> Iterator[Page]:
        chunks = [records[i : i + page_size] for i in range(0, len(records), page_size)] or [[]]
        for number, chunk in enumerate(chunks, start=1):
            if number == len(chunks) and done is not None:
                seen[relative] = done
            yield Page(entity, chunk, f"{folder / relative}", {"files": dict(seen)})

    # A file is done once its last entity's last page is committed.
    remaining = {relative: len(entities) for relative, _, entities in metadata}
    for relative, _, _ in value_files:
        remaining[relative] = remaining.get(relative, 0) + 1
    for relative, fingerprint, _ in metadata:
        if remaining[relative] == 0:  # only collections this reader does not land
            seen[relative] = fingerprint
    for entity in ENTITIES:
        if entity == "data_values":
            continue
        for relative, fingerprint, entities in metadata:
            if entity in entities:
                remaining[relative] -= 1
                done = fingerprint if remaining[relative] == 0 else None
                yield from pages(relative, entity, entities[entity], done)
    for relative, path, fingerprint in value_files:
        origin = f"{source_name}: {path}"
        if path.suffix.lower() == ".csv":
            records = parse_data_value_csv(load_csv_text(path, origin), origin)
        else:
            records = parse_document(load_json(path, origin), origin)["data_values"]
        yield from pages(relative, "data_values", records, fingerprint)
