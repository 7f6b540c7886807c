"""Form specs for community data collection (ODK Central forms, KoboToolbox assets).

One YAML file per form in this folder (the format is in README.md here) says which fields
identify a person or household (pseudonymised), which are personal (names, phones, places:
dropped), which are required, which holds the facility's DHIS2 org-unit code, the allowed
range of numbers, and optionally the fields of known form versions.

Privacy by default:
- a form or asset without a spec is refused before anything is read from it: nothing says
  which of its fields name people;
- a field the spec does not declare is dropped before landing (a new version may add a
  ``mother_name``): its name is kept in ``field_paths``, so schema drift reports it.

This module also holds the checks the suites of ``raw.odk__submissions`` and
``raw.kobo__submissions`` read as helper columns (see :func:`helper_columns`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser
from pipelines.warehouse import Warehouse

SPEC_DIR = Path(__file__).resolve().parent
PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*(/[A-Za-z_][A-Za-z0-9_.\-]*)*$"
SourceKind = Literal["odk", "kobo"]
Role = Literal["data", "identifier", "personal"]
FieldType = Literal[
    "text", "integer", "decimal", "date", "datetime", "select_one", "select_multiple", "file"
]
NUMERIC_TYPES = ("integer", "decimal")

HELPER_COLUMNS = (
    "facility_code",
    "facility_field",
    "missing_required",
    "out_of_range",
    "schema_drift",
)
"""Columns :func:`helper_columns` adds for the suites (never stored): ``facility_code`` is
the value of the spec's facility field; the others are null when the row passes and
otherwise say what is wrong, naming fields and values."""

SourceKey = tuple[str, str]
"""(form or asset column value, submission id): a row of a community raw table."""


class FieldSpec(BaseModel):
    """One field of a form, by its group path (``household/head_name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = "data"
    kind: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    """For identifiers: the pseudonym namespace (``household``, ``person``, ``referral``)."""
    type: FieldType = "text"
    required: bool = False
    min: float | None = None
    max: float | None = None
    renamed_from: str | None = Field(default=None, pattern=PATH_PATTERN)
    """The field's name in earlier versions of the form."""
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if (self.role == "identifier") != (self.kind is not None):
            raise ValueError("an identifier needs a kind (and only identifiers have one)")
        if self.role == "personal" and (
            self.required or self.min is not None or self.max is not None
        ):
            raise ValueError("a personal field is dropped before landing: it cannot be checked")
        if (self.min is not None or self.max is not None) and self.type not in NUMERIC_TYPES:
            raise ValueError("min and max apply to integer and decimal fields only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is larger than max")
        return self


class FormSpec(BaseModel):
    """A form's (or Kobo asset's) spec; see README.md in this folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    form: str = Field(min_length=1)
    """ODK: the xmlFormId; Kobo: the asset's name."""
    source: SourceKind
    title: str = ""
    description: str = ""
    facility_field: str = Field(pattern=PATH_PATTERN)
    fields: dict[str, FieldSpec]
    versions: dict[str, list[str]] = Field(default_factory=dict)
    """Known versions and their fields (as published); versions not listed are described by
    the fields their submissions carry."""
    file: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> FormSpec:
        for path in self.fields:
            if not re.match(PATH_PATTERN, path):
                raise ValueError(f"fields.{path}: not a field path such as group/field")
        facility = self.fields.get(self.facility_field)
        if facility is None or facility.role != "data":
            raise ValueError(f"facility_field {self.facility_field} must be a declared data field")
        for path, spec in self.fields.items():
            if spec.renamed_from is not None and spec.renamed_from not in self.fields:
                raise ValueError(
                    f"fields.{path}.renamed_from: {spec.renamed_from} is not a declared field"
                )
        for version, names in self.versions.items():
            unknown = sorted(set(names) - set(self.fields))
            if unknown:
                raise ValueError(f"versions.{version}: undeclared field(s) {', '.join(unknown)}")
        return self

    @property
    def label(self) -> str:
        return f"{'ODK form' if self.source == 'odk' else 'Kobo asset'} {self.form}"

    def aliases(self, path: str) -> list[str]:
        """The field's names across versions (itself and every name it was renamed from or
        to), so a requirement holds whichever name a version uses."""
        group = {path}
        changed = True
        while changed:
            changed = False
            for name, spec in self.fields.items():
                linked = spec.renamed_from
                if linked is None:
                    continue
                if (name in group) != (linked in group):
                    group |= {name, linked}
                    changed = True
        return sorted(group)


# --- loading -------------------------------------------------------------------------------


def _load_file(path: Path) -> FormSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with form, source, facility_field, fields")
    try:
        return FormSpec.model_validate({**data, "file": path.name})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {message}") from None


@cache
def load_specs(folder: Path = SPEC_DIR) -> dict[tuple[str, str], FormSpec]:
    """Every spec in ``folder``, by (source kind, form); a form specified twice is an error."""
    specs: dict[tuple[str, str], FormSpec] = {}
    for path in sorted(folder.glob("*.yml")):
        spec = _load_file(path)
        key = (spec.source, spec.form)
        if key in specs:
            raise ConfigError(f"{path}: {spec.label} is already specified in {specs[key].file}")
        specs[key] = spec
    return specs


def require_spec(source_kind: SourceKind, form: str, *, where: str) -> FormSpec:
    """The form's spec, or an error that says how to write one (``where`` names the source
    and URL)."""
    spec = load_specs().get((source_kind, form))
    if spec is None:
        label = "ODK form" if source_kind == "odk" else "Kobo asset"
        raise ConfigError(
            f"{where}: {label} {form!r} has no form spec, so nothing is read from it (privacy "
            f"by default: nothing says which of its fields name people). Write "
            f"pipelines/sources/community_forms/{_file_name(form)}.yml with form: {form}, "
            f"source: {source_kind}, the facility field and every field with its role "
            "(data, identifier or personal); see README.md in that folder"
        )
    return spec


def _file_name(form: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in form.lower())


# --- scrubbing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrubbed:
    payload: dict[str, Any]
    """The answers as they may be landed: identifiers pseudonymised, personal and undeclared
    fields dropped, groups nested as the source sent them."""
    paths: tuple[str, ...]
    """Every field path the source sent (names only, no values), sorted: schema drift
    compares these between versions."""
    undeclared: tuple[str, ...]


def _is_group(value: Any) -> bool:
    # A GeoJSON point (ODK geopoint) is one answer, not a group of fields.
    return isinstance(value, Mapping) and not ("type" in value and "coordinates" in value)


def _is_repeat(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_group(v) for v in value)


def scrub(spec: FormSpec, answers: Mapping[str, Any], pseudonymiser: Pseudonymiser) -> Scrubbed:
    """Apply the spec to one submission's answers (see :class:`Scrubbed`)."""
    seen: set[str] = set()

    def node(value: Any, path: str) -> tuple[bool, Any]:
        if _is_group(value):
            kept = {}
            for key, inner in value.items():
                keep, result = node(inner, f"{path}/{key}" if path else str(key))
                if keep:
                    kept[str(key)] = result
            return bool(kept) or not value, kept
        if _is_repeat(value):
            items = [node(item, path)[1] for item in value]
            return any(items), items
        seen.add(path)
        field = spec.fields.get(path)
        if field is None or field.role == "personal":
            return False, None
        if field.role == "identifier" and value is not None:
            assert field.kind is not None  # the model requires it for identifiers
            return True, pseudonymiser.pseudonym(field.kind, str(value))
        return True, value

    payload = node(dict(answers), "")[1]
    undeclared = tuple(sorted(p for p in seen if p not in spec.fields))
    return Scrubbed(payload, tuple(sorted(seen)), undeclared)


def payload_json(payload: Mapping[str, Any]) -> str:
    """The landed form of a scrubbed payload: keys sorted, so an unchanged submission hashes
    the same on every pull."""
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def text(value: Any) -> str | None:
    """Raw tables keep source values as text (typing them is staging's job)."""
    return None if value is None else str(value)


def warn_undeclared(log: logging.Logger, undeclared: Mapping[str, set[str]]) -> None:
    """Name (never show the values of) fields dropped because no spec declares them."""
    for label, fields in sorted(undeclared.items()):
        log.warning(
            "%s: field(s) %s are not in the form spec and were dropped before landing; "
            "declare them (with their role) to keep them",
            label,
            ", ".join(sorted(fields)),
        )


# --- checks --------------------------------------------------------------------------------


def value_at(payload: Mapping[str, Any], path: str) -> Any:
    node: Any = payload
    for part in path.split("/"):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def missing_required(spec: FormSpec, payload: Mapping[str, Any]) -> list[str]:
    """Required fields without a value under any of their names."""
    return [
        path
        for path, field in spec.fields.items()
        if field.required and all(_blank(value_at(payload, a)) for a in spec.aliases(path))
    ]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _shown(number: float | None) -> str:
    return "" if number is None else f"{number:g}"


def out_of_range(spec: FormSpec, payload: Mapping[str, Any]) -> list[str]:
    """Numeric fields outside their declared range (or not numbers at all)."""
    problems = []
    for path, field in spec.fields.items():
        if field.min is None and field.max is None:
            continue
        value = value_at(payload, path)
        if _blank(value):
            continue
        number = _number(value)
        expected = f"expected {_shown(field.min) or '-inf'} to {_shown(field.max) or 'inf'}"
        if number is None:
            problems.append(f"{path} = {value!r} is not a number ({expected})")
        elif (field.min is not None and number < field.min) or (
            field.max is not None and number > field.max
        ):
            problems.append(f"{path} = {value} ({expected})")
    return problems


# --- schema drift --------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionLayout:
    """The fields of one form version, as declared or as its submissions carry them."""

    version: str
    first_seen: str
    fields: frozenset[str]
    """Every field any submission of the version carried."""
    always: frozenset[str]
    """Fields every submission carried (Kobo leaves unanswered questions out, so a field
    missing from some rows is not evidence that the version removed it)."""
    first_visible: str | None
    """The submission id of the version's first visible (not deleted) submission."""


def describe_drift(spec: FormSpec, before: VersionLayout, after: VersionLayout) -> str | None:
    """What changed between two consecutive versions, or None when nothing did."""
    added = sorted(after.fields - before.fields)
    removed = sorted(before.always - after.fields)
    renames = []
    for name in list(added):
        field = spec.fields.get(name)
        if field is not None and field.renamed_from in removed:
            renames.append(f"{field.renamed_from} to {name}")
            added.remove(name)
            removed.remove(field.renamed_from)
    parts = [f"renames {', '.join(renames)}"] if renames else []
    if added:
        shown = [
            f"{a} (not in the form spec: dropped before landing)" if a not in spec.fields else a
            for a in added
        ]
        parts.append(f"adds {', '.join(shown)}")
    if removed:
        parts.append(f"removes {', '.join(removed)}")
    if not parts:
        return None
    return (
        f"{spec.label} version {after.version} {'; '.join(parts)} "
        f"(compared with version {before.version})"
    )


def drift_flags(spec: FormSpec, layouts: Sequence[VersionLayout]) -> dict[str, str]:
    """For each version that changed the form's fields: its first visible submission's id
    and what changed. Only that submission is held back: it carries the report, the
    version's other submissions go on (staging reads either name of a renamed field)."""
    ordered = sorted(layouts, key=lambda layout: (layout.first_seen, layout.version))
    flags = {}
    for before, after in pairwise(ordered):
        detail = describe_drift(spec, before, after)
        if detail is not None and after.first_visible is not None:
            flags[after.first_visible] = detail
    return flags


@dataclass(frozen=True)
class DriftQuery:
    """Where a community raw table keeps what drift detection needs."""

    table: str
    form_column: str
    time_column: str
    spec_of: Callable[[str], FormSpec | None]
    """The spec of a form column value (None: not specified, no drift reported)."""


def load_layouts(
    warehouse: Warehouse, query: DriftQuery, source_name: str
) -> dict[str, list[VersionLayout]]:
    """Every form's version layouts from the rows landed so far (any status)."""
    groups = warehouse.fetchall(
        f"select {query.form_column}, form_version, field_paths, min({query.time_column}) "
        f"from {query.table} where source_name = $source and form_version is not null "
        "group by 1, 2, 3",
        {"source": source_name},
    )
    firsts = dict(
        ((row[0], row[1]), row[2])
        for row in warehouse.fetchall(
            f"select {query.form_column}, form_version, submission_id from ("
            f"select {query.form_column}, form_version, submission_id, row_number() over ("
            f"partition by {query.form_column}, form_version order by {query.time_column}, "
            "length(submission_id), submission_id) as position "
            f"from {query.table} where source_name = $source and not is_deleted "
            f"and form_version is not null and {query.time_column} is not null) ranked "
            "where position = 1",
            {"source": source_name},
        )
    )
    seen: dict[tuple[str, str], list[tuple[frozenset[str], str]]] = {}
    for form, version, paths, first in groups:
        fields = frozenset(p for p in str(paths or "").split(",") if p)
        seen.setdefault((form, version), []).append((fields, str(first or "")))
    layouts: dict[str, list[VersionLayout]] = {}
    for (form, version), sets in seen.items():
        spec = query.spec_of(form)
        declared = spec.versions.get(version) if spec is not None else None
        union = frozenset(declared) if declared else frozenset().union(*(s for s, _ in sets))
        always = union if declared else frozenset.intersection(*(s for s, _ in sets))
        layouts.setdefault(form, []).append(
            VersionLayout(
                version, min(f for _, f in sets), union, always, firsts.get((form, version))
            )
        )
    return layouts


def find_drift(warehouse: Warehouse, query: DriftQuery, source_name: str) -> dict[SourceKey, str]:
    """(form, submission id) of each submission that carries a drift report, with it."""
    flags: dict[SourceKey, str] = {}
    for form, layouts in load_layouts(warehouse, query, source_name).items():
        spec = query.spec_of(form)
        if spec is None:
            continue
        for submission, detail in drift_flags(spec, layouts).items():
            flags[(form, submission)] = detail
    return flags


# --- helper columns ------------------------------------------------------------------------


def helper_columns(
    frame: pd.DataFrame,
    specs: Sequence[FormSpec],
    drift: Mapping[SourceKey, str],
    form_column: str,
) -> pd.DataFrame:
    """``frame`` with :data:`HELPER_COLUMNS`; ``specs`` holds each row's spec. Tombstones
    (deleted submissions) get nulls: there is nothing left to publish or to check."""
    enriched = frame.copy()
    values: dict[str, list[Any]] = {name: [] for name in HELPER_COLUMNS}
    rows = zip(
        frame[form_column].tolist(),
        frame["submission_id"].tolist(),
        frame["payload"].tolist(),
        frame["is_deleted"].tolist(),
        specs,
        strict=True,
    )
    for form, submission, payload_text, deleted, spec in rows:
        if deleted:
            for name in HELPER_COLUMNS:
                values[name].append(None)
            continue
        payload = json.loads(payload_text) if payload_text else {}
        facility = value_at(payload, spec.facility_field)
        values["facility_code"].append(None if _blank(facility) else str(facility))
        values["facility_field"].append(spec.facility_field)
        values["missing_required"].append(_joined(missing_required(spec, payload)))
        values["out_of_range"].append(_joined(out_of_range(spec, payload), "; "))
        values["schema_drift"].append(drift.get((str(form), str(submission))))
    for name, column in values.items():
        enriched[name] = pd.Series(column, index=frame.index, dtype=object)
    return enriched


def _joined(items: Iterable[str], separator: str = ", ") -> str | None:
    text = separator.join(items)
    return text or None


def org_unit_codes(warehouse: Warehouse) -> list[str]:
    """Codes of the organisation units landed (and valid) from any DHIS2 source."""
    rows = warehouse.fetchall(
        "select distinct code from raw.dhis2__organisation_units "
        "where validation_status = 'valid' and not is_deleted and code is not null"
    )
    return sorted(str(row[0]) for row in rows)
