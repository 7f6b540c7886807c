"""FHIR R4 sources (an OpenMRS EMR, iHRIS 5 ...): one raw table per resource type.

Each raw row is one version of one resource, keyed by ``resource_id`` and ``version_id``,
with the columns the indicators need flattened out as text (codes with their systems,
values and units, status, references, times) and ``resource_json``, the whole resource as
it was landed.

Privacy, before anything is landed (:meth:`FhirAdapter.prepare`):

- The Patient id, every reference to a Patient (``Patient/<id>``, wherever it sits) and the
  patient's identifiers become keyed pseudonyms (``Pseudonymiser.pseudonym("patient", ...)``),
  so a patient's records still link up.
- A Patient keeps only what the indicators need: pseudonymised ids, gender, birth year
  (top-coded at 90 years, as HIPAA Safe Harbor groups ages over 89), deceased year, active,
  managing organisation and links.
  Names, telecom, address, photo, contacts, exact birth dates and extensions go.
- A Practitioner keeps id, gender, birth year and qualifications; staff and licence numbers
  become pseudonyms (kind ``practitioner``); names, telecom, address and photo go. Roles are
  separate resources and stay whole.
- Everywhere (contained resources included): narratives (``text.div``, which repeat names),
  annotations (``note``: free text), ``contact`` and ``photo``, the ``display`` of every
  reference (``"subject": {"display": "P. van de Heuvel"}``) and extensions carrying a
  name, address, contact point or attachment are dropped.

Times with a clock time are stored in UTC (``...Z``); the clinic's calendar day is kept
beside the main event time (``effective_date`` ...), since a 01:00 visit in East Africa
Time belongs to the local day before its UTC date.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from connectors.base import Cursor, Page, Record
from connectors.fhir import (
    BULK_LINES_PER_PAGE,
    SEARCH_PAGE_LIMIT,
    FhirSettings,
    entity_of,
    parse_instant,
    read_fhir,
)
from connectors.http import Credentials, HttpClient, RetryPolicy
from pipelines.codes import is_icd10, is_loinc
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError, HealthpipeError
from pipelines.privacy import Pseudonymiser, age_band, birth_year
from pipelines.tables import RawTable, text_columns
from pipelines.warehouse import Warehouse

RETRY_POLICY = RetryPolicy()
"""How the FHIR client retries (tests shorten the back-off)."""

LOINC = "http://loinc.org"
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-who")
DHIS2_ORG_UNIT_CODE = "https://dhis2.org/org-unit-code"
DHIS2_ORG_UNIT_UID = "https://dhis2.org/org-unit-uid"
SAFE_HARBOR_AGE = 90
"""Birth years are top-coded at this age (HIPAA Safe Harbor groups ages over 89)."""
FUTURE_SLACK = timedelta(days=1)
"""A date counts as in the future only beyond this (clocks and time zones differ)."""

# Types in landing order: what a resource refers to lands before it, so references resolve.
RESOURCE_TYPES = (
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "MedicationDispense",
)

_HEAD = ("resource_id", "version_id", "last_updated")
_COLUMNS: dict[str, tuple[str, ...]] = {
    "Patient": (
        "active", "gender", "birth_year", "age_band", "deceased", "deceased_year",
        "identifier_system", "identifier_value", "managing_organization_reference",
    ),
    "Encounter": (
        "status", "class_code", "type_code", "type_text", "subject_reference",
        "period_start_at", "period_end_at", "period_start_date", "location_reference",
        "service_provider_reference",
    ),
    "Observation": (
        "status", "category_code", "code_system", "code", "code_display", "code_text",
        "value_quantity", "value_unit", "value_comparator", "value_code", "value_text",
        "components", "interpretation_code", "subject_reference", "encounter_reference",
        "effective_at", "effective_date", "issued_at",
    ),
    "Condition": (
        "clinical_status", "verification_status", "category_code", "code_system", "code",
        "code_display", "code_text", "subject_reference", "encounter_reference", "onset_at",
        "abatement_at", "recorded_at", "recorded_date",
    ),
    "MedicationDispense": (
        "status", "medication_system", "medication_code", "medication_display",
        "medication_text", "medication_reference", "subject_reference", "encounter_reference",
        "location_reference", "quantity_value", "quantity_unit", "days_supply",
        "prepared_at", "handed_over_at", "handed_over_date",
    ),
    "Location": (
        "status", "name", "org_unit_code", "org_unit_uid", "type_code", "type_text",
        "physical_type_code", "managing_organization_reference", "part_of_reference",
        "latitude", "longitude",
    ),
    "Organization": (
        "active", "name", "org_unit_code", "org_unit_uid", "type_code", "part_of_reference",
    ),
    "Practitioner": (
        "active", "gender", "birth_year", "identifier_system", "identifier_value",
        "qualification_codes",
    ),
    "PractitionerRole": (
        "active", "practitioner_reference", "organization_reference", "location_reference",
        "role_system", "role_code", "role_display", "role_text", "period_start", "period_end",
    ),
}  # fmt: skip

TABLES: tuple[RawTable, ...] = tuple(
    RawTable(
        "fhir",
        entity_of(resource_type),
        text_columns(*_HEAD, *_COLUMNS[resource_type], "resource_json"),
        key=("resource_id", "version_id"),
    )
    for resource_type in RESOURCE_TYPES
)
_TYPE_OF_ENTITY = {entity_of(t): t for t in RESOURCE_TYPES}

# Reference columns checked by the suites' reference_known rule, with the types they may
# point at (a reference to another type, such as an Observation about a Group, is not
# checked).
REFERENCE_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "patient": {"managing_organization_reference": ("Organization",)},
    "encounter": {
        "subject_reference": ("Patient",),
        "location_reference": ("Location",),
        "service_provider_reference": ("Organization",),
    },
    "observation": {"subject_reference": ("Patient",), "encounter_reference": ("Encounter",)},
    "condition": {"subject_reference": ("Patient",), "encounter_reference": ("Encounter",)},
    "medication_dispense": {
        "subject_reference": ("Patient",),
        "encounter_reference": ("Encounter",),
        "location_reference": ("Location",),
    },
    "location": {
        "managing_organization_reference": ("Organization",),
        "part_of_reference": ("Location",),
    },
    "organization": {"part_of_reference": ("Organization",)},
    "practitioner_role": {
        "practitioner_reference": ("Practitioner",),
        "organization_reference": ("Organization",),
        "location_reference": ("Location",),
    },
}

# Columns the date_not_in_future rule checks, per entity.
DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": ("birth_year", "deceased_year"),
    "practitioner": ("birth_year",),
    "encounter": ("period_start_at", "period_end_at"),
    "observation": ("effective_at", "issued_at"),
    "condition": ("onset_at", "abatement_at", "recorded_at"),
    "medication_dispense": ("prepared_at", "handed_over_at"),
}

HELPER_COLUMNS = ("future_date", "unresolved_reference", "loinc_valid", "icd10_valid")
"""Columns :meth:`FhirAdapter.enrich` adds for the suites (never stored)."""


# --- privacy -------------------------------------------------------------------------------

_PATIENT_KEEP = frozenset(
    {
        "resourceType", "id", "meta", "identifier", "active", "gender", "birthDate",
        "deceasedBoolean", "deceasedDateTime", "managingOrganization", "generalPractitioner",
        "link",
    }
)  # fmt: skip
_PRACTITIONER_KEEP = frozenset(
    {"resourceType", "id", "meta", "identifier", "active", "gender", "birthDate", "qualification"}
)
_RELATED_PERSON_KEEP = frozenset(
    {"resourceType", "id", "meta", "active", "patient", "relationship", "gender"}
)
_META_KEEP = frozenset({"versionId", "lastUpdated", "profile", "security", "tag"})
_DROPPED_EVERYWHERE = frozenset({"note", "contact", "photo"})
_PERSONAL_VALUES = frozenset(
    {"valueHumanName", "valueAddress", "valueContactPoint", "valueAttachment"}
)
_REFERENCE_KEYS = frozenset({"reference", "type", "identifier", "display", "id", "extension"})
_PATIENT_FIELDS = frozenset({"subject", "patient", "beneficiary"})
"""Reference fields that point at a patient even when the reference is not ``Patient/...``."""
_REFERENCE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)


class Scrubber:
    """Pseudonymises patient identifiers and drops direct identifiers from resources."""

    def __init__(self, pseudonymiser: Pseudonymiser) -> None:
        self._pseudonymiser = pseudonymiser

    def patient(self, value: str | None) -> str | None:
        return self._pseudonymiser.pseudonym("patient", value)

    def resource(self, resource: Mapping[str, Any], *, contained: bool = False) -> dict[str, Any]:
        """The resource as it may be landed. A contained resource's id is local to its
        container (``#p1``) and identifies no one, so it stays as it is."""
        kind = resource.get("resourceType")
        if kind == "Patient":
            scrubbed = self._patient_resource(resource, contained)
        elif kind == "Practitioner":
            scrubbed = self._practitioner(resource)
        elif kind in ("RelatedPerson", "Person"):
            scrubbed = self._person(resource, _RELATED_PERSON_KEEP)
        else:
            return self._object(resource, "")
        # People keep only listed fields: a Bulk Data tombstone's flag must survive that, or
        # a deleted patient or health worker would land as a live record.
        if resource.get("deleted") is True:
            scrubbed["deleted"] = True
        return scrubbed

    def _patient_resource(self, resource: Mapping[str, Any], contained: bool) -> dict[str, Any]:
        scrubbed = self._person(resource, _PATIENT_KEEP)
        if "id" in scrubbed and not contained:
            scrubbed["id"] = self.patient(str(scrubbed["id"]))
        scrubbed["identifier"] = self._identifiers(scrubbed.get("identifier"), "patient")
        if isinstance(scrubbed.get("deceasedDateTime"), str):
            scrubbed["deceasedDateTime"] = str(birth_year(scrubbed["deceasedDateTime"]) or "")
        return {k: v for k, v in scrubbed.items() if v not in (None, "", [])}

    def _practitioner(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Staff and licence numbers identify a health worker as surely as a name does:
        they become pseudonyms of their own kind (linkable with payroll data pseudonymised
        under the same key)."""
        scrubbed = self._person(resource, _PRACTITIONER_KEEP)
        scrubbed["identifier"] = self._identifiers(scrubbed.get("identifier"), "practitioner")
        for qualification in scrubbed.get("qualification") or []:
            if isinstance(qualification, dict) and "identifier" in qualification:
                qualification["identifier"] = self._identifiers(
                    qualification["identifier"], "practitioner"
                )
        return {k: v for k, v in scrubbed.items() if v not in (None, [])}

    def _identifiers(self, items: Any, kind: str) -> list[dict[str, Any]] | None:
        """Identifiers with pseudonymised values (system, use and type kept)."""
        result = [
            {**item, "value": self._pseudonymiser.pseudonym(kind, str(item["value"]))}
            if "value" in item
            else item
            for item in items or []
            if isinstance(item, dict)
        ]
        return result or None

    def _person(self, resource: Mapping[str, Any], keep: frozenset[str]) -> dict[str, Any]:
        kept = {k: v for k, v in resource.items() if k in keep}
        scrubbed = self._object(kept, "")
        if isinstance(scrubbed.get("birthDate"), str):
            year = kept_birth_year(scrubbed["birthDate"], _meta_stamp(resource))
            scrubbed["birthDate"] = str(year) if year is not None else None
        return {k: v for k, v in scrubbed.items() if v is not None}

    def _value(self, value: Any, name: str) -> Any:
        if isinstance(value, dict):
            if "resourceType" in value:  # a contained resource
                return self.resource(value, contained=True)
            return self._object(value, name)
        if isinstance(value, list):
            return [
                self._value(item, name)
                for item in value
                if not (isinstance(item, dict) and _PERSONAL_VALUES & item.keys())
            ]
        return value

    def _object(self, value: Mapping[str, Any], name: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # A Reference: it has a reference, or is made of Reference elements only (an
        # identifier, or just a display naming the person: {"display": "Juma Lyimo"}).
        is_reference = "reference" in value or (
            value.keys() <= _REFERENCE_KEYS and ("identifier" in value or "display" in value)
        )
        for key, item in value.items():
            if key in _DROPPED_EVERYWHERE or (key == "text" and isinstance(item, dict)):
                continue  # free text, people's contacts, narratives
            if key == "meta" and isinstance(item, dict):
                result[key] = {k: v for k, v in item.items() if k in _META_KEEP}
            elif is_reference and key == "display":
                continue  # a reference's display is often the person's name
            elif is_reference and key == "reference" and isinstance(item, str):
                result[key] = self._reference(item, name)
            elif is_reference and key == "identifier" and isinstance(item, dict):
                result[key] = self._reference_identifier(value, item, name)
            else:
                result[key] = self._value(item, key)
        return result

    def _reference(self, reference: str, name: str) -> str:
        found = _REFERENCE.search(reference)
        if found is not None and found["type"] == "Patient":
            return f"Patient/{self.patient(found['id'])}"
        if found is None and name in _PATIENT_FIELDS and not reference.startswith("#"):
            # urn:uuid:... (inside transaction Bundles) or another form: keep no raw id.
            prefix, _, tail = reference.rpartition(":")
            return f"{prefix}:{self.patient(tail)}" if prefix else str(self.patient(reference))
        return reference

    def _reference_identifier(
        self, reference: Mapping[str, Any], identifier: Mapping[str, Any], name: str
    ) -> dict[str, Any]:
        scrubbed = self._object(identifier, "identifier")
        if (reference.get("type") == "Patient" or name in _PATIENT_FIELDS) and "value" in scrubbed:
            scrubbed["value"] = self.patient(str(scrubbed["value"]))
        return scrubbed


def _meta_stamp(resource: Mapping[str, Any]) -> str | None:
    meta = resource.get("meta")
    stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
    return stamp if isinstance(stamp, str) else None


def kept_birth_year(birth_date: str | None, as_of: str | None) -> int | None:
    """The birth year, top-coded: a person 90 or older when the record was last updated
    gets the year they turned 90 then, so the year says "90 or over" and no more."""
    year = birth_year(birth_date)
    moment = parse_instant(as_of) if as_of else None
    if year is None or moment is None:
        return year
    return max(year, moment.year - SAFE_HARBOR_AGE)


# --- flattening ----------------------------------------------------------------------------


def text(value: Any) -> str | None:
    """A JSON value as raw text: strings as they are, numbers as JSON writes them,
    booleans as true/false, objects and lists as compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def get(value: Any, *path: str | int) -> Any:
    """``value[path[0]][path[1]]...``, None when any step is missing."""
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and len(value) > step else None
        else:
            value = value.get(step) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def coding(concept: Any, preferred: Sequence[str] = ()) -> dict[str, Any]:
    """The coding of a CodeableConcept in one of the preferred systems, else the first."""
    codings = [c for c in get(concept, "coding") or [] if isinstance(c, dict)]
    for system in preferred:
        for item in codings:
            if item.get("system") == system:
                return item
    return codings[0] if codings else {}


def first_concept(value: Any) -> Any:
    """The first CodeableConcept of a list (``category``, ``type``), or the value itself."""
    return value[0] if isinstance(value, list) and value else value


def reference(value: Any) -> str | None:
    """A Reference as ``<Type>/<id>`` (absolute URLs and history suffixes removed)."""
    raw = get(value, "reference")
    if not isinstance(raw, str):
        return None
    found = _REFERENCE.search(raw)
    return f"{found['type']}/{found['id']}" if found else raw


def utc(value: Any) -> str | None:
    """A dateTime with a clock time as UTC ``...Z``; dates (no time) stay as they are."""
    if not isinstance(value, str):
        return text(value)
    if "T" not in value:
        return value
    moment = parse_instant(value)
    if moment is None:
        return value
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds") + "Z"


def local_date(value: Any) -> str | None:
    """The calendar day as the source wrote it (the clinic's local day)."""
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value):
        return value[:10]
    return None


def identifier(resource: Mapping[str, Any], system: str) -> str | None:
    for item in resource.get("identifier") or []:
        if isinstance(item, dict) and item.get("system") == system:
            return text(item.get("value"))
    return None


def first_identifier(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The official identifier, else the first one."""
    items = [i for i in resource.get("identifier") or [] if isinstance(i, dict)]
    official = [i for i in items if i.get("use") == "official"]
    return (official or items or [{}])[0]


def _code_columns(concept: Any, preferred: Sequence[str] = ()) -> dict[str, str | None]:
    found = coding(concept, preferred)
    return {
        "code_system": text(found.get("system")),
        "code": text(found.get("code")),
        "code_display": text(found.get("display")),
        "code_text": text(get(concept, "text")),
    }


def _patient(r: Mapping[str, Any]) -> dict[str, str | None]:
    main = first_identifier(r)
    year = birth_year(r.get("birthDate"))
    updated = parse_instant(_meta_stamp(r) or "")
    deceased = r.get("deceasedBoolean")
    return {
        "active": text(r.get("active")),
        "gender": text(r.get("gender")),
        "birth_year": str(year) if year is not None else None,
        "age_band": age_band(year, updated.date()) if updated and year else None,
        "deceased": text(True if r.get("deceasedDateTime") else deceased),
        "deceased_year": text(r.get("deceasedDateTime")),
        "identifier_system": text(main.get("system")),
        "identifier_value": text(main.get("value")),
        "managing_organization_reference": reference(r.get("managingOrganization")),
    }


def _encounter(r: Mapping[str, Any]) -> dict[str, str | None]:
    kind = first_concept(r.get("type"))
    start = get(r, "period", "start")
    return {
        "status": text(r.get("status")),
        "class_code": text(get(r, "class", "code")),
        "type_code": text(coding(kind).get("code")),
        "type_text": text(get(kind, "text")),
        "subject_reference": reference(r.get("subject")),
        "period_start_at": utc(start),
        "period_end_at": utc(get(r, "period", "end")),
        "period_start_date": local_date(start),
        "location_reference": reference(get(r, "location", 0, "location")),
        "service_provider_reference": reference(r.get("serviceProvider")),
    }


def _components(r: Mapping[str, Any]) -> str | None:
    """Panel components (systolic and diastolic of a blood pressure ...) as a JSON list."""
    parts = []
    for component in r.get("component") or []:
        found = coding(get(component, "code"), (LOINC,))
        parts.append(
            {
                "system": found.get("system"),
                "code": found.get("code"),
                "value": get(component, "valueQuantity", "value"),
                "unit": get(component, "valueQuantity", "code")
                or get(component, "valueQuantity", "unit"),
            }
        )
    return text(parts) if parts else None


def _observation_value(r: Mapping[str, Any]) -> dict[str, str | None]:
    quantity = r.get("valueQuantity")
    concept = r.get("valueCodeableConcept")
    value_text = next(
        (
            r[key]
            for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime")
            if key in r
        ),
        get(concept, "text"),
    )
    return {
        "value_quantity": text(get(quantity, "value")),
        "value_unit": text(get(quantity, "code") or get(quantity, "unit")),
        "value_comparator": text(get(quantity, "comparator")),
        "value_code": text(coding(concept).get("code")),
        "value_text": text(value_text),
    }


def _observation(r: Mapping[str, Any]) -> dict[str, str | None]:
    effective = r.get("effectiveDateTime") or get(r, "effectivePeriod", "start")
    return {
        "status": text(r.get("status")),
        "category_code": text(coding(first_concept(r.get("category"))).get("code")),
        **_code_columns(r.get("code"), (LOINC,)),
        **_observation_value(r),
        "components": _components(r),
        "interpretation_code": text(coding(first_concept(r.get("interpretation"))).get("code")),
        "subject_reference": reference(r.get("subject")),
        "encounter_reference": reference(r.get("encounter")),
        "effective_at": utc(effective),
        "effective_date": local_date(effective),
        "issued_at": utc(r.get("issued")),
    }


def _condition(r: Mapping[str, Any]) -> dict[str, str | None]:
    recorded = r.get("recordedDate")
    return {
        "clinical_status": text(coding(r.get("clinicalStatus")).get("code")),
        "verification_status": text(coding(r.get("verificationStatus")).get("code")),
        "category_code": text(coding(first_concept(r.get("category"))).get("code")),
        **_code_columns(r.get("code"), ICD10_SYSTEMS),
        "subject_reference": reference(r.get("subject")),
        "encounter_reference": reference(r.get("encounter")),
        "onset_at": utc(r.get("onsetDateTime") or get(r, "onsetPeriod", "start")),
        "abatement_at": utc(r.get("abatementDateTime") or get(r, "abatementPeriod", "start")),
        "recorded_at": utc(recorded),
        "recorded_date": local_date(recorded),
    }


def _medication_dispense(r: Mapping[str, Any]) -> dict[str, str | None]:
    concept = r.get("medicationCodeableConcept")
    found = coding(concept)
    handed_over = r.get("whenHandedOver")
    return {
        "status": text(r.get("status")),
        "medication_system": text(found.get("system")),
        "medication_code": text(found.get("code")),
        "medication_display": text(found.get("display")),
        "medication_text": text(get(concept, "text")),
        "medication_reference": reference(r.get("medicationReference")),
        "subject_reference": reference(r.get("subject")),
        "encounter_reference": reference(r.get("context")),
        "location_reference": reference(r.get("location")),
        "quantity_value": text(get(r, "quantity", "value")),
        "quantity_unit": text(get(r, "quantity", "code") or get(r, "quantity", "unit")),
        "days_supply": text(get(r, "daysSupply", "value")),
        "prepared_at": utc(r.get("whenPrepared")),
        "handed_over_at": utc(handed_over),
        "handed_over_date": local_date(handed_over),
    }


def _location(r: Mapping[str, Any]) -> dict[str, str | None]:
    kind = first_concept(r.get("type"))
    return {
        "status": text(r.get("status")),
        "name": text(r.get("name")),
        "org_unit_code": identifier(r, DHIS2_ORG_UNIT_CODE),
        "org_unit_uid": identifier(r, DHIS2_ORG_UNIT_UID),
        "type_code": text(coding(kind).get("code")),
        "type_text": text(get(kind, "text")),
        "physical_type_code": text(coding(r.get("physicalType")).get("code")),
        "managing_organization_reference": reference(r.get("managingOrganization")),
        "part_of_reference": reference(r.get("partOf")),
        "latitude": text(get(r, "position", "latitude")),
        "longitude": text(get(r, "position", "longitude")),
    }


def _organization(r: Mapping[str, Any]) -> dict[str, str | None]:
    return {
        "active": text(r.get("active")),
        "name": text(r.get("name")),
        "org_unit_code": identifier(r, DHIS2_ORG_UNIT_CODE),
        "org_unit_uid": identifier(r, DHIS2_ORG_UNIT_UID),
        "type_code": text(coding(first_concept(r.get("type"))).get("code")),
        "part_of_reference": reference(r.get("partOf")),
    }


def _practitioner(r: Mapping[str, Any]) -> dict[str, str | None]:
    main = first_identifier(r)
    codes = [
        f"{found.get('system')}|{found.get('code')}"
        for item in r.get("qualification") or []
        if (found := coding(get(item, "code")))
    ]
    return {
        "active": text(r.get("active")),
        "gender": text(r.get("gender")),
        "birth_year": text(r.get("birthDate")),
        "identifier_system": text(main.get("system")),
        "identifier_value": text(main.get("value")),
        "qualification_codes": text(codes) if codes else None,
    }


def _practitioner_role(r: Mapping[str, Any]) -> dict[str, str | None]:
    role = first_concept(r.get("code"))
    found = coding(role)
    return {
        "active": text(r.get("active")),
        "practitioner_reference": reference(r.get("practitioner")),
        "organization_reference": reference(r.get("organization")),
        "location_reference": reference(get(r, "location", 0)),
        "role_system": text(found.get("system")),
        "role_code": text(found.get("code")),
        "role_display": text(found.get("display")),
        "role_text": text(get(role, "text")),
        "period_start": text(get(r, "period", "start")),
        "period_end": text(get(r, "period", "end")),
    }


FLATTENERS: dict[str, Callable[[Mapping[str, Any]], dict[str, str | None]]] = {
    "Patient": _patient,
    "Encounter": _encounter,
    "Observation": _observation,
    "Condition": _condition,
    "MedicationDispense": _medication_dispense,
    "Location": _location,
    "Organization": _organization,
    "Practitioner": _practitioner,
    "PractitionerRole": _practitioner_role,
}


def version_of(resource: Mapping[str, Any]) -> str | None:
    """``meta.versionId``; a server that keeps no versions gets its ``meta.lastUpdated``
    instead, and a tombstone without a version is the version ``deleted``."""
    version = text(get(resource, "meta", "versionId")) or None
    if version is None and resource.get("deleted"):
        return "deleted"
    return version or utc(_meta_stamp(resource))


def flatten(resource: Mapping[str, Any]) -> Record:
    """One raw row from an already scrubbed resource."""
    kind = str(resource.get("resourceType"))
    deleted = bool(resource.get("deleted"))
    columns = {} if deleted else FLATTENERS[kind](resource)
    return {
        "resource_id": text(resource.get("id")),
        "version_id": version_of(resource),
        "last_updated": utc(_meta_stamp(resource)),
        **columns,
        "resource_json": text(resource),
        "deleted": deleted,
    }


# --- helper columns for the suites ---------------------------------------------------------


def _moment(value: Any) -> datetime | None:
    """A FHIR date, partial date or dateTime as naive UTC (a partial date as its start)."""
    if not isinstance(value, str) or not value:
        return None
    found = re.match(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$", value)
    if found:
        return datetime(int(found[1]), int(found[2] or 1), int(found[3] or 1))
    moment = parse_instant(value)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


def future_dates(frame: pd.DataFrame, columns: Sequence[str]) -> list[str | None]:
    """Per row, the first checked column dated after the extraction (with slack)."""
    extracted = pd.to_datetime(frame["extracted_at"]).tolist()
    found: list[str | None] = [None] * len(frame)
    for column in reversed(columns):
        for index, (value, when) in enumerate(zip(frame[column].tolist(), extracted, strict=True)):
            moment = _moment(value)
            if moment is not None and moment > when.to_pydatetime() + FUTURE_SLACK:
                found[index] = f"{column} {value}"
    return found


def unresolved(
    frame: pd.DataFrame, columns: Mapping[str, tuple[str, ...]], references: Mapping[str, Any]
) -> list[str | None]:
    """Per row, the first reference to a type this source serves that names no resource
    landed from it."""
    known: set[str] = references.get("known_references", set())
    served: set[str] = references.get("served_types", set())
    found: list[str | None] = [None] * len(frame)
    for column, targets in reversed(list(columns.items())):
        for index, value in enumerate(frame[column].tolist()):
            kind = value.split("/", 1)[0] if isinstance(value, str) else None
            if kind in targets and kind in served and value not in known:
                found[index] = f"{column} {value}"
    return found


def code_validity(
    frame: pd.DataFrame, systems: Sequence[str], check: Callable[[str | None], bool]
) -> list[bool | None]:
    """True or False for codes in the given systems, None for other systems (or none)."""
    return [
        check(code) if system in systems else None
        for system, code in zip(frame["code_system"].tolist(), frame["code"].tolist(), strict=True)
    ]


# --- the adapter ---------------------------------------------------------------------------


def resource_types(source: SourceConfig) -> list[str]:
    """The configured types in landing order (every type healthpipe reads when none are
    configured: the server's CapabilityStatement narrows them down)."""
    unknown = sorted(set(source.resource_types) - set(RESOURCE_TYPES))
    if unknown:
        raise ConfigError(
            f"source {source.name}: resource_types: {', '.join(unknown)} cannot be landed "
            f"(healthpipe reads {', '.join(RESOURCE_TYPES)})"
        )
    return [t for t in RESOURCE_TYPES if t in source.resource_types]


def settings_for(source: SourceConfig) -> FhirSettings:
    explicit = "page_size" in source.model_fields_set
    return FhirSettings(
        source_name=source.name,
        resource_types=resource_types(source),
        known_types=RESOURCE_TYPES,
        page_size=source.page_size if explicit else SEARCH_PAGE_LIMIT,
        bulk_page_size=source.page_size if explicit else BULK_LINES_PER_PAGE,
        bulk=source.bulk,
        start=source.start_date,
        overlap=timedelta(seconds=source.overlap_seconds),
    )


class FhirAdapter:
    source_type = "fhir"
    cursor_entity = "resources"
    tables = TABLES
    patient_level = True
    helper_columns: tuple[str, ...] = HELPER_COLUMNS

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        settings = settings_for(source)  # a wrong type fails before any request
        return self._read(source, settings, cursor)

    def _read(
        self, source: SourceConfig, settings: FhirSettings, cursor: Cursor | None
    ) -> Iterator[Page]:
        credentials = Credentials.from_env(
            os.environ,
            username_env=source.username_env,
            password_env=source.password_env,
            token_env=source.token_env,
            token_scheme="bearer",
            source=source.name,
        )
        with HttpClient(
            f"{source.base_url}",
            source=source.name,
            credentials=credentials,
            timeout=(10.0, source.timeout_seconds),
            policy=RETRY_POLICY,
        ) as client:
            yield from read_fhir(client, settings, cursor)

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        if pseudonymiser is None:
            raise HealthpipeError(
                f"fhir {entity}: patient-level records cannot be landed without the "
                "pseudonymisation key"
            )
        scrubber = Scrubber(pseudonymiser)
        return [flatten(scrubber.resource(record)) for record in records]

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        result: dict[str, Any] = {}
        if entity in ("location", "organization"):
            rows = warehouse.fetchall(
                "select distinct code from raw.dhis2__organisation_units "
                "where validation_status = 'valid' and not is_deleted and code is not null"
            )
            result["org_unit_codes"] = sorted(str(row[0]) for row in rows)
        columns = REFERENCE_COLUMNS.get(entity, {})
        targets = sorted({t for types in columns.values() for t in types})
        served = {t for t in targets if _serves(warehouse, source_name, t)}
        known: set[str] = set()
        for column, types in columns.items():
            for target in (t for t in types if t in served):
                known |= _resolved(warehouse, source_name, entity, column, target)
        result["served_types"] = served
        result["known_references"] = known
        return result

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        """Helper columns: ``future_date``, ``unresolved_reference`` and, for observations
        and conditions, ``loinc_valid`` and ``icd10_valid`` (see the suites)."""
        enriched = frame.copy()
        enriched["future_date"] = future_dates(frame, DATE_COLUMNS.get(entity, ()))
        enriched["unresolved_reference"] = unresolved(
            frame, REFERENCE_COLUMNS.get(entity, {}), references
        )
        if entity == "observation":
            enriched["loinc_valid"] = code_validity(frame, (LOINC,), is_loinc)
        if entity == "condition":
            enriched["icd10_valid"] = code_validity(frame, ICD10_SYSTEMS, is_icd10)
        for name in HELPER_COLUMNS:
            if name in enriched:
                enriched[name] = enriched[name].astype(object)
        return enriched


def _serves(warehouse: Warehouse, source_name: str, resource_type: str) -> bool:
    """Whether the source has landed any resource of this type (otherwise references to
    it cannot be checked)."""
    table = f"raw.fhir__{entity_of(resource_type)}"
    return bool(
        warehouse.fetch_scalar(
            f"select count(*) from (select 1 from {table} where source_name = $source limit 1) t",
            {"source": source_name},
        )
    )


def _resolved(
    warehouse: Warehouse, source_name: str, entity: str, column: str, target: str
) -> set[str]:
    """The references in the pending rows' ``column`` that name a landed ``target``."""
    rows = warehouse.fetchall(
        f"select distinct p.{column} from raw.fhir__{entity} p "
        f"join raw.fhir__{entity_of(target)} t on t.source_name = p.source_name "
        f"and p.{column} = '{target}/' || t.resource_id "
        "where p.source_name = $source and p.validation_status = 'pending'",
        {"source": source_name},
    )
    return {str(row[0]) for row in rows}
