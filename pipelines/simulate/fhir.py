"""The simulated country's FHIR R4 servers: an OpenMRS-style EMR and an iHRIS-style
health-workforce registry, each written both as a Bulk Data export and as search pages.

Layout under ``<out>/fhir``::

    fhir/emr/     OpenMRS FHIR2 module, base https://emr.demoland.example/openmrs/ws/fhir2/R4
    fhir/ihris/   iHRIS 5,              base https://ihris.demoland.example/fhir

and in each server folder:

- ``ndjson/<ResourceType>.ndjson`` — the Bulk Data export (``$export`` output files): one
  resource per line, compact UTF-8 JSON, ``\\n`` line ends. Every resource type of the
  server has a file, possibly empty.
- ``search/<ResourceType>/page-0001.json``, ``page-0002.json`` ... — the unfiltered search
  ``GET [base]/<ResourceType>?_count=100`` as ``Bundle`` documents (``type`` ``searchset``)
  of at most 100 entries: ``total`` (the number of resources of that type, the NDJSON line
  count), ``link`` ``self`` and, on every page but the last, ``next``; ``entry[].fullUrl``
  (``[base]/<ResourceType>/<id>``), ``entry[].resource`` and ``entry[].search.mode``
  ``match``. Page ``n`` has ``self`` ``[base]/<ResourceType>?_count=100`` for ``n = 1`` and
  ``[base]/<ResourceType>?_count=100&_getpagesoffset=<100 (n - 1)>`` after; ``next`` is the
  following page's ``self``. A type with no resources has one page with ``total`` 0 and no
  ``entry``. ``Bundle.meta.lastUpdated`` is the snapshot time, the window's last second.

What changes after the window (new resources, corrections, deletions) is written under
``<out>/increments/1/fhir/<server>/`` by :mod:`pipelines.simulate.fhir_increment`.

Resources in the NDJSON files and the pages are in the same order: by ``meta.lastUpdated``
then ``id``, as a server's history would list them (so ``_lastUpdated`` / ``_since`` filters
are a prefix cut). Every resource has ``id`` (a UUID), ``meta.versionId`` ("1", or "2" for
records edited after creation) and ``meta.lastUpdated`` (UTC, ``...Z``) inside the window
(``Window.start`` 00:00:00Z to ``Window.end`` 23:59:59Z). Clinical times are local
(East Africa Time, ``+03:00``). References are relative (``Patient/<id>``) and resolve on
the same server.

EMR resources (facilities with ``has_emr``; tens of patients a site, scaled by the site's
catchment population and the window's length):

- ``Organization`` and ``Location``, one each per EMR facility; their ``identifier`` carries
  the DHIS2 org-unit code (system ``https://dhis2.org/org-unit-code``) and UID (system
  ``https://dhis2.org/org-unit-uid``). ``Location.managingOrganization`` points at the
  Organization; ``Location.position`` is the facility's point.
- ``Patient`` — synthetic but realistic PII on purpose (``name``, mobile ``telecom`` (+999
  numbers: no real subscriber), home ``address``, exact ``birthDate``, and an identifier
  typed ``OpenMRS ID``, system ``https://emr.demoland.example/openmrs/identifier-type/
  openmrs-id``, base-30 with a Luhn mod-30 check character): the pipeline must pseudonymise
  or drop it.
- ``Encounter`` — ``status`` finished, ``class`` AMB, ``subject``, ``period``,
  ``location[0].location`` and ``serviceProvider``. Outpatient consultations, and HIV care
  visits (monthly, then three-monthly refills).
- ``Observation`` — vital signs (category ``vital-signs``; LOINC 8310-5 body temperature
  ``Cel``, 8867-4 heart rate ``/min``, 85354-9 blood-pressure panel with components 8480-6
  systolic and 8462-4 diastolic ``mm[Hg]``, 29463-7 body weight ``kg``) timed inside their
  encounter; HIV-1 viral load (category ``laboratory``, LOINC 20447-9, UCUM ``{copies}/mL``;
  below 1,000 copies/mL is suppressed; ``comparator`` ``<`` for results under the assay's limit)
  with ``effectiveDateTime`` the specimen collection inside the encounter and ``issued`` the
  result, days later. Each references ``subject`` (Patient) and ``encounter``
  (but for the defect below).
- ``Condition`` — encounter diagnoses in WHO ICD-10 (system
  ``http://hl7.org/fhir/sid/icd-10``): B50.9 and B54 malaria, J06.9 upper respiratory
  infection, A09.0 diarrhoea, J18.9 pneumonia, A01.0 typhoid, I10 hypertension, B24 HIV
  disease. Acute ones are resolved by a second version (``abatementDateTime``); HIV disease
  and hypertension stay active.
- ``MedicationDispense`` — ART (TLD, ATC J05AR27) at every HIV visit and
  artemether/lumefantrine (ATC P01BF01) for malaria; ``context`` is the encounter,
  ``location`` the facility.

iHRIS resources (every facility):

- ``Organization`` and ``Location`` per facility, identified as in the EMR.
- ``Practitioner`` (staff number, system
  ``https://ihris.demoland.example/identifier/staff-number``; name, phone, gender, birth
  date) and one ``PractitionerRole`` each: ``code`` an ISCO-08 unit group (system
  ``urn:oid:2.16.840.1.113883.2.9.6.2.7``; 2211 medical doctors, 2240 clinical officers,
  2221 nurses, 2222 midwives, 3212 laboratory technicians, 2262 pharmacists),
  ``period.start``, ``practitioner``, ``organization`` and ``location``. A worker who left
  has ``active`` false on both resources, a ``period.end`` inside the window (attrition) and
  ``versionId`` "2". For each facility and cadre, the roles with ``active`` true (and no
  ``period.end``) number the establishment's filled posts.

Injected data defects (recorded in ``truth.json`` with ``source`` "fhir"): an Observation
with a LOINC code that does not exist (8310-6, ``loinc_known``), a Condition with an invalid
ICD-10 code (B5O.9, ``icd10_known``), an Observation without ``subject`` (``subject_present``) and a
Patient born in the future (``date_not_in_future``). All four still validate against the R4
resource model: they are data errors, not syntax errors.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.simulate.context import Simulation
from pipelines.simulate.country import CADRES, Country, OrgUnit
from pipelines.simulate.fhir_increment import write_fhir_increment

Resource = dict[str, Any]

EMR_BASE = "https://emr.demoland.example/openmrs/ws/fhir2/R4"
IHRIS_BASE = "https://ihris.demoland.example/fhir"
EMR_TYPES = (
    "Patient", "Encounter", "Observation", "Condition", "MedicationDispense", "Location",
    "Organization",
)  # fmt: skip
IHRIS_TYPES = ("Practitioner", "PractitionerRole", "Location", "Organization")
# OpenMRS answers at most 100 resources a page (larger requests fail), so the pages are full.
PAGE_SIZE = 100

# Code systems.
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"  # WHO ICD-10, not the US ICD-10-CM
# ISCO-08 by its HL7-registered OID (as HL7 Europe and IHE use it).
ISCO08 = "urn:oid:2.16.840.1.113883.2.9.6.2.7"
ATC = "http://www.whocc.no/atc"  # WHO ATC classification of medicines
DHIS2_ORG_UNIT_CODE = "https://dhis2.org/org-unit-code"
DHIS2_ORG_UNIT_UID = "https://dhis2.org/org-unit-uid"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
LOCATION_PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
OPENMRS_ID_SYSTEM = "https://emr.demoland.example/openmrs/identifier-type/openmrs-id"
IHRIS_STAFF_NUMBER_SYSTEM = "https://ihris.demoland.example/identifier/staff-number"


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> Resource:
        # A fresh dict each time: resources never share mutable parts, so injecting a
        # defect into one cannot leak into another.
        return {"system": self.system, "code": self.code, "display": self.display}

    def concept(self, text: str | None = None) -> Resource:
        """A CodeableConcept; ``text`` (what the user saw) only where it says more than the
        display, which keeps the files small."""
        concept: Resource = {"coding": [self.coding()]}
        if text and text != self.display:
            concept["text"] = text
        return concept


# LOINC (verified against the FHIR vital-signs value set, hl7.org/fhir/R4B
# valueset-observation-vitalsignresult, and the HIV viral-load value sets of the Zimbabwe
# and NACHC implementation guides).
LOINC_BODY_TEMPERATURE = Code(LOINC, "8310-5", "Body temperature")
LOINC_HEART_RATE = Code(LOINC, "8867-4", "Heart rate")
LOINC_BLOOD_PRESSURE = Code(LOINC, "85354-9", "Blood pressure panel with all children optional")
LOINC_SYSTOLIC = Code(LOINC, "8480-6", "Systolic blood pressure")
LOINC_DIASTOLIC = Code(LOINC, "8462-4", "Diastolic blood pressure")
LOINC_BODY_WEIGHT = Code(LOINC, "29463-7", "Body weight")
LOINC_HIV1_VIRAL_LOAD = Code(
    LOINC,
    "20447-9",
    "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA with probe detection",
)
# The defect: 8310-5 mistyped. LOINC's last digit is a mod-10 check digit (8310 -> 5), so
# 8310-6 cannot be a LOINC code.
LOINC_NONEXISTENT = "8310-6"

# UCUM units (FHIR's ucum-vitals-common value set; {copies}/mL as viral-load IGs use it).
UCUM_CELSIUS = "Cel"
UCUM_PER_MINUTE = "/min"
UCUM_MM_HG = "mm[Hg]"
UCUM_KILOGRAM = "kg"
UCUM_COPIES_PER_ML = "{copies}/mL"
UCUM_DAY = "d"

# Viral load below this is "suppressed" (WHO; DOMAIN.md, quality improvement).
VIRAL_SUPPRESSION_THRESHOLD = 1000
VIRAL_LOAD_DETECTION_LIMIT = 50  # copies/mL: results under it are reported as "<50"


@dataclass(frozen=True)
class Diagnosis:
    code: Code
    text: str
    share: float  # of outpatient consultations
    febrile: bool = False
    adults_only: bool = False
    antimalarial: bool = False
    chronic: bool = False


# ICD-10 (WHO edition; checked in the NHS ICD-10 5th edition class browser and ICD-10 code
# references: B50.9, B54, J06.9, A09.0, J18.9, A01.0, I10, B24).
MALARIA_FALCIPARUM = Code(ICD10, "B50.9", "Plasmodium falciparum malaria, unspecified")
MALARIA_UNSPECIFIED = Code(ICD10, "B54", "Unspecified malaria")
UPPER_RESPIRATORY_INFECTION = Code(ICD10, "J06.9", "Acute upper respiratory infection, unspecified")
DIARRHOEA_INFECTIOUS = Code(
    ICD10, "A09.0", "Other and unspecified gastroenteritis and colitis of infectious origin"
)
PNEUMONIA = Code(ICD10, "J18.9", "Pneumonia, unspecified")
TYPHOID = Code(ICD10, "A01.0", "Typhoid fever")
HYPERTENSION = Code(ICD10, "I10", "Essential (primary) hypertension")
HIV_DISEASE = Code(ICD10, "B24", "Unspecified human immunodeficiency virus [HIV] disease")
# The defect: B50.9 typed with a letter O for the zero; no ICD-10 code has a letter there.
ICD10_INVALID = "B5O.9"

OUTPATIENT_DIAGNOSES = (
    Diagnosis(MALARIA_FALCIPARUM, "Malaria (RDT positive)", 0.25, febrile=True, antimalarial=True),
    Diagnosis(MALARIA_UNSPECIFIED, "Malaria (clinical)", 0.10, febrile=True, antimalarial=True),
    Diagnosis(UPPER_RESPIRATORY_INFECTION, "Upper respiratory tract infection", 0.20),
    Diagnosis(DIARRHOEA_INFECTIOUS, "Diarrhoea", 0.15),
    Diagnosis(PNEUMONIA, "Pneumonia", 0.12, febrile=True),
    Diagnosis(TYPHOID, "Typhoid fever", 0.06, febrile=True),
    Diagnosis(HYPERTENSION, "Hypertension", 0.12, adults_only=True, chronic=True),
)
HIV = Diagnosis(HIV_DISEASE, "HIV disease", 0.0, chronic=True)

# WHO ATC (J05AR27 per the WHO INN/ATC infobox of TLD; P01BF01 in WHO essential-medicine
# catalogues).
TLD = Code(ATC, "J05AR27", "lamivudine, tenofovir disoproxil and dolutegravir")
TLD_TEXT = "Tenofovir/lamivudine/dolutegravir (TLD) 300/300/50 mg tablet"
ARTEMETHER_LUMEFANTRINE = Code(ATC, "P01BF01", "artemether and lumefantrine")
ARTEMETHER_LUMEFANTRINE_TEXT = "Artemether/lumefantrine 20/120 mg tablet"

# ISCO-08 unit groups of the establishment's cadres (ILO/WHO "Classifying health workers":
# clinical officers are paramedical practitioners, 2240).
CADRE_OCCUPATIONS: dict[str, tuple[Code, str]] = {
    "medical_doctor": (Code(ISCO08, "2211", "Generalist medical practitioners"), "Medical officer"),
    "clinical_officer": (Code(ISCO08, "2240", "Paramedical practitioners"), "Clinical officer"),
    "nurse": (Code(ISCO08, "2221", "Nursing professionals"), "Nurse"),
    "midwife": (Code(ISCO08, "2222", "Midwifery professionals"), "Midwife"),
    "lab_technician": (
        Code(ISCO08, "3212", "Medical and pathology laboratory technicians"),
        "Laboratory technician",
    ),
    "pharmacist": (Code(ISCO08, "2262", "Pharmacists"), "Pharmacist"),
}
FEMALE_SHARE = {
    "medical_doctor": 0.35, "clinical_officer": 0.40, "nurse": 0.75, "midwife": 0.95,
    "lab_technician": 0.45, "pharmacist": 0.45,
}  # fmt: skip

# Sizes and rates.
PATIENTS_PER_1000_POPULATION_A_YEAR = 0.25  # registered in the EMR: tens per site
MIN_PATIENTS_PER_SITE = 6
HIV_SHARE = 0.25  # EMR sites are where ART clinics are
ESTABLISHED_ON_ART_SHARE = 0.7  # already on ART when the EMR went live
LOST_TO_FOLLOW_UP_PER_VISIT = 0.03
ADHERENT_SHARE = 0.88
EXTRA_EPISODES_A_YEAR = 0.3
FAST_TRACK_SHARE = 0.6  # stable ART clients' refill visits skip the clinical review
PATIENT_EDIT_SHARE = 0.15
ANNUAL_ATTRITION = 0.06
ANNUAL_HIRING = 0.07

EAT = timezone(timedelta(hours=3))  # clinics record East Africa Time

FEMALE_NAMES = (
    "Amina", "Neema", "Rehema", "Zawadi", "Halima", "Upendo", "Grace", "Mary", "Esther",
    "Joyce", "Faith", "Mwanaidi", "Asha", "Salma", "Winnie", "Agnes", "Rose", "Lucy", "Janeth",
    "Happiness", "Subira", "Imani", "Pendo", "Mariam", "Fatuma", "Editha", "Scholastica",
)  # fmt: skip
MALE_NAMES = (
    "Juma", "Baraka", "Emmanuel", "John", "Joseph", "Hassan", "Ali", "Daudi", "Musa", "Peter",
    "Richard", "Said", "Hamisi", "Frank", "Godfrey", "Elias", "Omari", "Rashidi", "Salim",
    "Kassim", "Paulo", "Yusuf", "Abdallah", "Jabiri", "Erasto", "Festo", "Onesmo",
)  # fmt: skip
FAMILY_NAMES = (
    "Mwangi", "Otieno", "Mushi", "Massawe", "Kimaro", "Mollel", "Njau", "Mrema", "Swai",
    "Lema", "Shirima", "Mbwana", "Ochieng", "Odhiambo", "Makame", "Mohamed", "Komba", "Haule",
    "Mapunda", "Ngowi", "Lyimo", "Temba", "Kweka", "Mwakyusa", "Mwasonga", "Chande", "Kombo",
    "Nyambura", "Wafula", "Barasa", "Kiprono", "Chepkoech", "Mutua", "Ndunguru", "Mtui",
)  # fmt: skip
NEIGHBOURHOODS = (
    "Majengo", "Mji Mpya", "Kijiweni", "Sokoni", "Mnarani", "Bondeni", "Kilimani", "Mtoni",
    "Shuleni", "Stendi", "Kanisani", "Msikitini", "Mabatini", "Uwanjani", "Relini",
)  # fmt: skip
# OpenMRS ID characters: digits and letters without easily confused ones.
OPENMRS_ID_ALPHABET = "0123456789ACDEFGHJKLMNPRTUVWXY"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://healthpipe.example/simulate/fhir")


# --- time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    """The window as instants: resources are last updated inside it."""

    first_day: date
    last_day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(), UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last_day, time(23, 59, 59), UTC)

    @property
    def years(self) -> float:
        return ((self.last_day - self.first_day).days + 1) / 365.25

    def day(self, rng: np.random.Generator, lo: date | None = None, hi: date | None = None) -> date:
        """A uniformly drawn day in [lo, hi] (the window by default)."""
        lo, hi = lo or self.first_day, hi or self.last_day
        return lo + timedelta(days=int(rng.integers(0, (hi - lo).days + 1)))


def _at(day: date, hour: float) -> datetime:
    """Local clinic time ``hour`` hours after midnight of ``day``."""
    return datetime.combine(day, time(), EAT) + timedelta(minutes=round(hour * 60))


def _local(moment: datetime) -> str:
    return moment.astimezone(EAT).isoformat(timespec="seconds")


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _weekday(rng: np.random.Generator, day: date, clock: _Clock) -> date:
    """Clinics see patients Monday to Friday: a visit falling on a weekend moves to a day of
    the next week (of the same week when that is past the window), so weekdays stay even."""
    if day.weekday() < 5:
        return day
    monday = day - timedelta(days=day.weekday())
    following = monday + timedelta(days=7 + int(rng.integers(0, 5)))
    if following <= clock.last_day:
        return following
    return monday + timedelta(days=int(rng.integers(0, 5)))


def _age(birth: date, day: date) -> float:
    return (day - birth).days / 365.25


def _years_before(day: date, years: float) -> date:
    return day - timedelta(days=round(years * 365.25))


# --- identifiers and small builders ---------------------------------------------------------


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _stable_id(*parts: str) -> str:
    """The same facility keeps the same Location/Organization id on every run."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _luhn_mod_n_check(payload: str, alphabet: str) -> str:
    """The Luhn mod-N check character (OpenMRS IDs use N = 30)."""
    n = len(alphabet)
    total = 0
    for position, char in enumerate(reversed(payload)):
        addend = alphabet.index(char) * (2 if position % 2 == 0 else 1)
        total += addend // n + addend % n
    return alphabet[(n - total % n) % n]


def openmrs_id(number: int) -> str:
    """An OpenMRS-style patient identifier: base-30 digits and a check character."""
    n = len(OPENMRS_ID_ALPHABET)
    value, digits = number + n**5, ""  # six characters, like OpenMRS's default "100000"
    while value:
        value, remainder = divmod(value, n)
        digits = OPENMRS_ID_ALPHABET[remainder] + digits
    return digits + _luhn_mod_n_check(digits, OPENMRS_ID_ALPHABET)


def _meta(version: int, updated: datetime) -> Resource:
    return {"versionId": str(version), "lastUpdated": _instant(updated)}


def _ref(resource_type: str, resource_id: str) -> Resource:
    return {"reference": f"{resource_type}/{resource_id}"}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _phone(rng: np.random.Generator) -> str:
    # +999 is an ITU code reserved for future use: no real subscriber can be reached.
    return "+9997" + "".join(str(int(d)) for d in rng.integers(0, 10, size=8))


def _human_name(rng: np.random.Generator, gender: str) -> Resource:
    given_names = FEMALE_NAMES if gender == "female" else MALE_NAMES
    given = [_pick(rng, given_names)]
    if rng.random() < 0.4:
        given.append(_pick(rng, given_names))
    return {"use": "official", "family": _pick(rng, FAMILY_NAMES), "given": given}


# --- servers and facilities -----------------------------------------------------------------


@dataclass
class _Server:
    name: str
    base: str
    types: tuple[str, ...]
    resources: dict[str, list[Resource]] = field(default_factory=dict)

    def add(self, resource: Resource) -> None:
        self.resources.setdefault(resource["resourceType"], []).append(resource)

    def of_type(self, resource_type: str) -> list[Resource]:
        return self.resources.get(resource_type, [])


@dataclass(frozen=True)
class _Site:
    facility: OrgUnit
    organization_id: str
    location_id: str


def _facility_identifiers(facility: OrgUnit) -> list[Resource]:
    return [
        {"use": "official", "system": DHIS2_ORG_UNIT_CODE, "value": facility.code},
        {"use": "secondary", "system": DHIS2_ORG_UNIT_UID, "value": facility.uid},
    ]


def _organization(site: _Site, updated: datetime) -> Resource:
    return {
        "resourceType": "Organization",
        "id": site.organization_id,
        "meta": _meta(1, updated),
        "identifier": _facility_identifiers(site.facility),
        "active": True,
        "type": [Code(ORGANIZATION_TYPE, "prov", "Healthcare Provider").concept()],
        "name": site.facility.name,
    }


def _location(site: _Site, country: Country, updated: datetime) -> Resource:
    facility = site.facility
    district = country.district_of(facility.uid)
    region = country.by_uid[district.parent_uid] if district.parent_uid else district
    location: Resource = {
        "resourceType": "Location",
        "id": site.location_id,
        "meta": _meta(1, updated),
        "identifier": _facility_identifiers(facility),
        "status": "active",
        "name": facility.name,
        "mode": "instance",
        "type": [{"text": facility.facility_type or "Health facility"}],
        "address": {
            "district": district.name.removesuffix(" District"),
            "state": region.name,
            "country": country.name,
        },
        "physicalType": Code(LOCATION_PHYSICAL_TYPE, "bu", "Building").concept(),
    }
    geometry = facility.geometry or {}
    coordinates = geometry.get("coordinates")
    if geometry.get("type") == "Point" and isinstance(coordinates, list):
        location["position"] = {"longitude": coordinates[0], "latitude": coordinates[1]}
    location["managingOrganization"] = _ref("Organization", site.organization_id)
    return location


def _add_site(
    server: _Server, facility: OrgUnit, country: Country, rng: np.random.Generator, clock: _Clock
) -> _Site:
    """The facility's Organization and Location, created in the window's first hours (before
    any clinic opens)."""
    site = _Site(
        facility,
        _stable_id(server.name, "Organization", facility.uid),
        _stable_id(server.name, "Location", facility.uid),
    )
    created = clock.start + timedelta(minutes=int(rng.integers(0, 240)))
    server.add(_organization(site, created))
    server.add(_location(site, country, created + timedelta(minutes=1)))
    return site


# --- EMR: patients and their visits ---------------------------------------------------------


@dataclass
class _Person:
    id: str
    gender: str
    birth_date: date
    build: float  # body-size factor, so one person's weights agree across visits


@dataclass(frozen=True)
class _Visit:
    """One encounter: what its resources reference and the times they must fall in."""

    site: _Site
    person: _Person
    encounter_id: str
    start: datetime
    end: datetime

    def minutes(self, lo: int, hi: int, rng: np.random.Generator) -> datetime:
        return self.start + timedelta(minutes=int(rng.integers(lo, hi + 1)))


@dataclass
class _ArtHistory:
    """An HIV patient's treatment: when ART started and when the last viral load was drawn."""

    start: date
    last_viral_load: date | None
    adherent: bool


def _patient_count(rng: np.random.Generator, facility: OrgUnit, clock: _Clock) -> int:
    expected = facility.base_population / 1000 * PATIENTS_PER_1000_POPULATION_A_YEAR
    return max(MIN_PATIENTS_PER_SITE, int(rng.poisson(expected * clock.years)))


def _hiv_visit_days(rng: np.random.Generator, clock: _Clock, established: bool) -> list[date]:
    """Monthly visits for new ART patients, then three-monthly refills (multi-month
    dispensing), until the window ends or the patient is lost to follow-up."""
    if established:  # entered when the EMR went live, in its first eight weeks
        first = clock.day(rng, hi=min(clock.last_day, clock.first_day + timedelta(days=55)))
    else:
        first = clock.day(rng)
    days = [_weekday(rng, first, clock)]
    while rng.random() >= LOST_TO_FOLLOW_UP_PER_VISIT:
        monthly = not established and len(days) < 3
        gap = int(rng.integers(28, 36)) if monthly else int(rng.integers(84, 99))
        following = days[-1] + timedelta(days=gap)
        if following > clock.last_day:
            break
        days.append(_weekday(rng, following, clock))
    return sorted(set(days))


def _outpatient_visit_days(rng: np.random.Generator, clock: _Clock) -> list[date]:
    first = clock.day(rng)
    days = {_weekday(rng, first, clock)}
    for _ in range(int(rng.poisson(EXTRA_EPISODES_A_YEAR * clock.years))):
        days.add(_weekday(rng, clock.day(rng, lo=first), clock))
    return sorted(days)


def _new_person(rng: np.random.Generator, hiv: bool, first_visit: date) -> _Person:
    """Women are the majority of ART clients and of outpatients; a third of outpatients are
    children."""
    gender = "female" if rng.random() < (0.62 if hiv else 0.55) else "male"
    if hiv:
        age = float(rng.uniform(18, 65))
    elif rng.random() < 0.35:
        age = float(rng.uniform(0.1, 15))
    else:
        age = float(rng.uniform(15, 85))
    birth = _years_before(first_visit, age)
    return _Person(_uuid(rng), gender, birth, float(rng.normal(1.0, 0.1)))


def _patient(
    rng: np.random.Generator,
    person: _Person,
    identifier: str,
    site: _Site,
    country: Country,
    version: int,
    updated: datetime,
) -> Resource:
    district = country.district_of(site.facility.uid)
    region = country.by_uid[district.parent_uid] if district.parent_uid else district
    neighbourhood = _pick(rng, NEIGHBOURHOODS)
    return {
        "resourceType": "Patient",
        "id": person.id,
        "meta": _meta(version, updated),
        "identifier": [
            {
                "use": "official",
                "type": {"text": "OpenMRS ID"},
                "system": OPENMRS_ID_SYSTEM,
                "value": identifier,
            }
        ],
        "active": True,
        "name": [_human_name(rng, person.gender)],
        "telecom": [{"system": "phone", "value": _phone(rng), "use": "mobile"}],
        "gender": person.gender,
        "birthDate": person.birth_date.isoformat(),
        "address": [
            {
                "use": "home",
                "line": [f"Plot {int(rng.integers(1, 400))}, Mtaa wa {neighbourhood}"],
                "city": neighbourhood,
                "district": district.name.removesuffix(" District"),
                "state": region.name,
                "country": country.name,
            }
        ],
    }


def _encounter(visit: _Visit, hiv_care: bool) -> Resource:
    kind = "HIV Care and Treatment Visit" if hiv_care else "Outpatient Consultation"
    return {
        "resourceType": "Encounter",
        "id": visit.encounter_id,
        "meta": _meta(1, visit.end + timedelta(minutes=1)),
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
        "type": [{"text": kind}],
        "subject": _ref("Patient", visit.person.id),
        "period": {"start": _local(visit.start), "end": _local(visit.end)},
        "location": [{"location": _ref("Location", visit.site.location_id)}],
        "serviceProvider": _ref("Organization", visit.site.organization_id),
    }


def _quantity(value: float, unit: str, code: str) -> Resource:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _observation(
    rng: np.random.Generator,
    visit: _Visit,
    code: Code,
    category: str,
    effective: datetime,
    updated: datetime,
) -> Resource:
    display = "Vital Signs" if category == "vital-signs" else "Laboratory"
    observation: Resource = {
        "resourceType": "Observation",
        "id": _uuid(rng),
        "meta": _meta(1, updated),
        "status": "final",
        "category": [Code(OBSERVATION_CATEGORY, category, display).concept()],
        "code": code.concept(),
        "subject": _ref("Patient", visit.person.id),
        "encounter": _ref("Encounter", visit.encounter_id),
        "effectiveDateTime": _local(effective),
    }
    if category == "laboratory":  # a result is issued after the specimen is taken
        observation["issued"] = _instant(updated)
    return observation


def _weight_kg(person: _Person, day: date) -> float:
    """A rough growth curve times the person's build."""
    age = _age(person.birth_date, day)
    if age < 1:
        typical = 3.3 + 6.6 * age
    elif age < 10:
        typical = 8 + 2.2 * age
    elif age < 18:
        typical = 30 + 4 * (age - 10)
    else:
        typical = 62.0 if person.gender == "female" else 68.0
    return round(max(2.0, typical * person.build), 1)


def _blood_pressure(rng: np.random.Generator, vital: Resource, hypertensive: bool) -> Resource:
    systolic = int(rng.normal(158, 12) if hypertensive else rng.normal(118, 12))
    diastolic = min(systolic - 25, int(rng.normal(98, 8) if hypertensive else rng.normal(76, 8)))
    vital["component"] = [
        {"code": code.concept(), "valueQuantity": _quantity(value, "mmHg", UCUM_MM_HG)}
        for code, value in ((LOINC_SYSTOLIC, systolic), (LOINC_DIASTOLIC, diastolic))
    ]
    return vital


def _vital_signs(
    rng: np.random.Generator,
    visit: _Visit,
    *,
    febrile: bool = False,
    hypertensive: bool = False,
    fast_track: bool = False,
) -> list[Resource]:
    """Triage: weight always; temperature and often heart rate at a consultation; blood
    pressure for most adults (always for hypertensives, less on a fast-track refill)."""
    taken = visit.minutes(5, 15, rng)
    recorded = taken + timedelta(minutes=2)
    age = _age(visit.person.birth_date, taken.date())

    def vital(code: Code) -> Resource:
        return _observation(rng, visit, code, "vital-signs", taken, recorded)

    weight = vital(LOINC_BODY_WEIGHT)
    kilograms = _weight_kg(visit.person, taken.date())
    weight["valueQuantity"] = _quantity(kilograms, "kg", UCUM_KILOGRAM)
    observations = [weight]
    if not fast_track:
        temperature = vital(LOINC_BODY_TEMPERATURE)
        degrees = round(float(rng.normal(38.8, 0.5) if febrile else rng.normal(36.8, 0.3)), 1)
        temperature["valueQuantity"] = _quantity(degrees, "°C", UCUM_CELSIUS)
        observations.append(temperature)
        if rng.random() < 0.6:
            resting = 130 if age < 1 else 110 if age < 5 else 95 if age < 12 else 76
            beats = int(rng.normal(resting + (15 if febrile else 0), 8))
            heart_rate = vital(LOINC_HEART_RATE)
            heart_rate["valueQuantity"] = _quantity(beats, "beats/minute", UCUM_PER_MINUTE)
            observations.append(heart_rate)
    if age >= 18 and (hypertensive or rng.random() < (0.4 if fast_track else 0.6)):
        observations.append(_blood_pressure(rng, vital(LOINC_BLOOD_PRESSURE), hypertensive))
    return observations


def _viral_load(
    rng: np.random.Generator, visit: _Visit, art: _ArtHistory, clock: _Clock
) -> Resource | None:
    """A viral-load result, or None while the result is still at the laboratory."""
    collected = visit.minutes(25, 45, rng)
    issued = _at(collected.astimezone(EAT).date() + timedelta(days=int(rng.integers(7, 29))), 0)
    issued += timedelta(minutes=int(rng.integers(9 * 60, 16 * 60)))
    if issued > clock.end:
        return None
    observation = _observation(rng, visit, LOINC_HIV1_VIRAL_LOAD, "laboratory", collected, issued)
    suppressed = rng.random() < (0.95 if art.adherent else 0.25)
    if suppressed and rng.random() < 0.5:  # target not detected
        value = _quantity(VIRAL_LOAD_DETECTION_LIMIT, "copies/mL", UCUM_COPIES_PER_ML)
        value["comparator"] = "<"
    else:  # log-uniform within the band
        lo, hi = (
            (VIRAL_LOAD_DETECTION_LIMIT, VIRAL_SUPPRESSION_THRESHOLD - 1)
            if suppressed
            else (VIRAL_SUPPRESSION_THRESHOLD, 500_000)
        )
        copies = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        value = _quantity(copies, "copies/mL", UCUM_COPIES_PER_ML)
    observation["valueQuantity"] = value
    return observation


def _condition(
    rng: np.random.Generator,
    visit: _Visit,
    diagnosis: Diagnosis,
    onset: date,
    clock: _Clock,
) -> Resource:
    """An encounter diagnosis; an acute one is closed later by a second version."""
    recorded = visit.minutes(20, 40, rng)
    condition: Resource = {
        "resourceType": "Condition",
        "id": _uuid(rng),
        "meta": _meta(1, recorded + timedelta(minutes=1)),
        "clinicalStatus": Code(CONDITION_CLINICAL, "active", "Active").concept(),
        "verificationStatus": Code(CONDITION_VERIFICATION, "confirmed", "Confirmed").concept(),
        "category": [
            Code(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis").concept()
        ],
        "code": diagnosis.code.concept(diagnosis.text),
        "subject": _ref("Patient", visit.person.id),
        "encounter": _ref("Encounter", visit.encounter_id),
        "onsetDateTime": onset.isoformat(),
        "recordedDate": _local(recorded),
    }
    if not diagnosis.chronic:
        abated = recorded.astimezone(EAT).date() + timedelta(days=int(rng.integers(5, 15)))
        closed = _at(abated, float(rng.uniform(9, 16)))
        if closed <= clock.end:
            condition["meta"] = _meta(2, closed)
            condition["clinicalStatus"] = Code(CONDITION_CLINICAL, "resolved", "Resolved").concept()
            condition["abatementDateTime"] = abated.isoformat()
    return condition


def _dispense(
    rng: np.random.Generator,
    visit: _Visit,
    medication: Code,
    text: str,
    tablets: int,
    days: int,
    instruction: str,
) -> Resource:
    prepared = visit.minutes(45, 55, rng)
    handed_over = prepared + timedelta(minutes=int(rng.integers(3, 12)))
    return {
        "resourceType": "MedicationDispense",
        "id": _uuid(rng),
        "meta": _meta(1, handed_over + timedelta(minutes=1)),
        "status": "completed",
        "medicationCodeableConcept": medication.concept(text),
        "subject": _ref("Patient", visit.person.id),
        "context": _ref("Encounter", visit.encounter_id),
        "location": _ref("Location", visit.site.location_id),
        "quantity": {"value": tablets, "unit": "tablet"},
        "daysSupply": _quantity(days, "days", UCUM_DAY),
        "whenPrepared": _local(prepared),
        "whenHandedOver": _local(handed_over),
        "dosageInstruction": [{"text": instruction}],
    }


def _antimalarial(rng: np.random.Generator, visit: _Visit) -> Resource:
    # WHO weight bands for artemether/lumefantrine: 1, 2, 3 or 4 tablets twice a day for
    # three days (5-<15, 15-<25, 25-<35, >=35 kg).
    weight = _weight_kg(visit.person, visit.start.date())
    per_dose = 1 if weight < 15 else 2 if weight < 25 else 3 if weight < 35 else 4
    return _dispense(
        rng, visit, ARTEMETHER_LUMEFANTRINE, ARTEMETHER_LUMEFANTRINE_TEXT, per_dose * 6, 3,
        f"{per_dose} tablet(s) twice daily for 3 days",
    )  # fmt: skip


def _choose_diagnosis(rng: np.random.Generator, adult: bool) -> Diagnosis:
    options = [d for d in OUTPATIENT_DIAGNOSES if adult or not d.adults_only]
    shares = np.array([d.share for d in options])
    return options[int(rng.choice(len(options), p=shares / shares.sum()))]


def _visit_at(rng: np.random.Generator, site: _Site, person: _Person, day: date) -> _Visit:
    start = _at(day, float(rng.uniform(8, 15.5)))
    end = start + timedelta(minutes=int(rng.integers(70, 111)))
    return _Visit(site, person, _uuid(rng), start, end)


def _outpatient_resources(
    rng: np.random.Generator, visit: _Visit, chronic_recorded: set[str], clock: _Clock
) -> list[Resource]:
    adult = _age(visit.person.birth_date, visit.start.date()) >= 18
    diagnosis = _choose_diagnosis(rng, adult)
    resources = _vital_signs(
        rng, visit, febrile=diagnosis.febrile, hypertensive=diagnosis.code == HYPERTENSION
    )
    if diagnosis.code.code not in chronic_recorded:  # a chronic one is recorded once
        onset = visit.start.date() - timedelta(days=int(rng.integers(1, 6)))
        resources.append(_condition(rng, visit, diagnosis, onset, clock))
        if diagnosis.chronic:
            chronic_recorded.add(diagnosis.code.code)
    if diagnosis.antimalarial:
        resources.append(_antimalarial(rng, visit))
    return resources


def _viral_load_due(art: _ArtHistory, day: date) -> bool:
    """WHO schedule: first test six months after starting ART, then yearly."""
    if art.last_viral_load is None:
        return (day - art.start).days >= 150
    return (day - art.last_viral_load).days >= 330


def _hiv_resources(
    rng: np.random.Generator,
    visit: _Visit,
    art: _ArtHistory,
    first: bool,
    clock: _Clock,
) -> list[Resource]:
    day = visit.start.date()
    stable = (day - art.start).days >= 180
    resources = _vital_signs(rng, visit, fast_track=stable and rng.random() < FAST_TRACK_SHARE)
    if first:
        diagnosed = art.start - timedelta(days=int(rng.integers(0, 60)))
        resources.append(_condition(rng, visit, HIV, diagnosed, clock))
    if _viral_load_due(art, day):
        result = _viral_load(rng, visit, art, clock)
        if result is not None:
            resources.append(result)
            art.last_viral_load = day
    # Monthly refills while starting ART, three-monthly (multi-month dispensing) after.
    refill_days = 30 if (day - art.start).days < 90 else 90
    resources.append(
        _dispense(rng, visit, TLD, TLD_TEXT, refill_days, refill_days, "1 tablet once daily")
    )
    return resources


def _art_history(rng: np.random.Generator, first_visit: date, established: bool) -> _ArtHistory:
    """New clients start ART at their first visit; established ones started years before and
    had a viral load some months back (so about a third are due for one at once)."""
    adherent = bool(rng.random() < ADHERENT_SHARE)
    if not established:
        return _ArtHistory(first_visit, None, adherent)
    start = first_visit - timedelta(days=int(rng.integers(60, 3650)))
    last_test = first_visit - timedelta(days=int(rng.integers(30, 500)))
    return _ArtHistory(start, last_test if (last_test - start).days >= 150 else None, adherent)


def _simulate_patient(
    rng: np.random.Generator,
    country: Country,
    clock: _Clock,
    site: _Site,
    server: _Server,
    identifier: str,
) -> None:
    """One patient's registration and visits, with everything recorded at each visit."""
    hiv = bool(rng.random() < HIV_SHARE)
    established = hiv and bool(rng.random() < ESTABLISHED_ON_ART_SHARE)
    days = _hiv_visit_days(rng, clock, established) if hiv else _outpatient_visit_days(rng, clock)
    person = _new_person(rng, hiv, days[0])
    art = _art_history(rng, days[0], established) if hiv else None
    visits = [_visit_at(rng, site, person, day) for day in days]
    registered = visits[0].start - timedelta(minutes=int(rng.integers(5, 30)))
    version, updated = 1, registered
    if len(visits) > 1 and rng.random() < PATIENT_EDIT_SHARE:  # phone or address changed
        version, updated = 2, visits[int(rng.integers(1, len(visits)))].start
    server.add(_patient(rng, person, identifier, site, country, version, updated))
    chronic_recorded: set[str] = set()
    for index, visit in enumerate(visits):
        server.add(_encounter(visit, hiv_care=art is not None))
        if art is not None:
            resources = _hiv_resources(rng, visit, art, index == 0, clock)
        else:
            resources = _outpatient_resources(rng, visit, chronic_recorded, clock)
        for resource in resources:
            server.add(resource)


def _emr(sim: Simulation, clock: _Clock) -> _Server:
    server = _Server("emr", EMR_BASE, EMR_TYPES)
    numbers = count(1)
    for facility in sorted(sim.country.facilities, key=lambda f: f.code):
        if not facility.has_emr:
            continue
        rng = sim.rng("fhir", "emr", facility.uid)
        site = _add_site(server, facility, sim.country, rng, clock)
        for _ in range(_patient_count(rng, facility, clock)):
            _simulate_patient(rng, sim.country, clock, site, server, openmrs_id(next(numbers)))
    return server


# --- iHRIS: the workforce -------------------------------------------------------------------


@dataclass(frozen=True)
class _Tenure:
    start: date
    end: date | None  # None: still in post at the window's end
    updated: datetime  # when the record was last touched


def _tenure(rng: np.random.Generator, clock: _Clock, leaver: bool) -> _Tenure:
    if leaver:
        end = clock.day(rng)
        start = end - timedelta(days=int(rng.integers(180, 365 * 12)))
        return _Tenure(start, end, _at(end, float(rng.uniform(14, 16))))
    hired_in_window = rng.random() < 1 - (1 - ANNUAL_HIRING) ** clock.years
    if hired_in_window:  # a replacement: the record is created on the first day
        start = clock.day(rng)
        return _Tenure(start, None, _at(start, float(rng.uniform(8, 10))))
    start = clock.first_day - timedelta(days=int(rng.integers(30, 365 * 15)))
    verified = clock.day(rng)  # the yearly staff audit touched the record
    return _Tenure(start, None, _at(verified, float(rng.uniform(8, 16))))


def _practitioner(
    rng: np.random.Generator, cadre: str, tenure: _Tenure, staff_number: int
) -> Resource:
    gender = "female" if rng.random() < FEMALE_SHARE[cadre] else "male"
    birth = _years_before(tenure.start, float(rng.uniform(22, 35)))
    return {
        "resourceType": "Practitioner",
        "id": _uuid(rng),
        "meta": _meta(1 if tenure.end is None else 2, tenure.updated),
        "identifier": [
            {
                "use": "official",
                "system": IHRIS_STAFF_NUMBER_SYSTEM,
                "value": f"HRH-{staff_number:06d}",
            }
        ],
        "active": tenure.end is None,
        "name": [_human_name(rng, gender)],
        "telecom": [{"system": "phone", "value": _phone(rng), "use": "work"}],
        "gender": gender,
        "birthDate": birth.isoformat(),
    }


def _practitioner_role(
    rng: np.random.Generator, site: _Site, cadre: str, tenure: _Tenure, practitioner_id: str
) -> Resource:
    occupation, title = CADRE_OCCUPATIONS[cadre]
    period = {"start": tenure.start.isoformat()}
    if tenure.end is not None:
        period["end"] = tenure.end.isoformat()
    return {
        "resourceType": "PractitionerRole",
        "id": _uuid(rng),
        "meta": _meta(1 if tenure.end is None else 2, tenure.updated + timedelta(minutes=1)),
        "active": tenure.end is None,
        "period": period,
        "practitioner": _ref("Practitioner", practitioner_id),
        "organization": _ref("Organization", site.organization_id),
        "code": [occupation.concept(title)],
        "location": [_ref("Location", site.location_id)],
    }


def _ihris(sim: Simulation, clock: _Clock) -> _Server:
    server = _Server("ihris", IHRIS_BASE, IHRIS_TYPES)
    staff_numbers = count(1)
    for facility in sorted(sim.country.facilities, key=lambda f: f.code):
        rng = sim.rng("fhir", "ihris", facility.uid)
        site = _add_site(server, facility, sim.country, rng, clock)
        posts = sim.country.establishment.get(facility.uid, {})
        for cadre in CADRES:
            _approved, filled = posts.get(cadre, (0, 0))
            leavers = int(rng.binomial(filled, 1 - (1 - ANNUAL_ATTRITION) ** clock.years))
            for leaver in [False] * filled + [True] * leavers:
                tenure = _tenure(rng, clock, leaver)
                practitioner = _practitioner(rng, cadre, tenure, next(staff_numbers))
                server.add(practitioner)
                server.add(_practitioner_role(rng, site, cadre, tenure, practitioner["id"]))
    return server


# --- defects --------------------------------------------------------------------------------


def _record(resource: Resource) -> dict[str, Any]:
    return {
        "resource_type": resource["resourceType"],
        "id": resource["id"],
        "version": resource["meta"]["versionId"],
    }


def _choose(rng: np.random.Generator, candidates: list[Resource]) -> Resource | None:
    if not candidates:
        return None
    ordered = sorted(candidates, key=lambda r: str(r["id"]))
    return ordered[int(rng.integers(len(ordered)))]


def _inject_defects(sim: Simulation, emr: _Server, clock: _Clock) -> None:
    """Four data errors a validation suite must catch; each keeps the resource's R4 shape."""
    rng = sim.rng("fhir", "defects")
    temperatures = [
        o for o in emr.of_type("Observation") if o["code"]["coding"][0]["code"] == "8310-5"
    ]
    mistyped = _choose(rng, temperatures)
    if mistyped is not None:
        mistyped["code"]["coding"][0]["code"] = LOINC_NONEXISTENT
        sim.truth.add_defect(
            source="fhir", entity="observation", kind="unknown_code", record=_record(mistyped),
            expected_rule="loinc_known",
            detail=f"LOINC {LOINC_NONEXISTENT} does not exist (check digit of 8310-5 mistyped)",
        )  # fmt: skip
    orphan = _choose(rng, [o for o in emr.of_type("Observation") if o is not mistyped])
    if orphan is not None:
        del orphan["subject"]
        sim.truth.add_defect(
            source="fhir", entity="observation", kind="missing_field", record=_record(orphan),
            expected_rule="subject_present", detail="Observation has no subject",
        )  # fmt: skip
    miscoded = _choose(
        rng, [c for c in emr.of_type("Condition") if c["code"]["coding"][0]["code"] == "B50.9"]
    ) or _choose(rng, emr.of_type("Condition"))
    if miscoded is not None:
        miscoded["code"]["coding"][0]["code"] = ICD10_INVALID
        sim.truth.add_defect(
            source="fhir", entity="condition", kind="unknown_code", record=_record(miscoded),
            expected_rule="icd10_known",
            detail=f"ICD-10 {ICD10_INVALID} is not a code (letter O typed for a zero)",
        )  # fmt: skip
    _inject_future_birth(sim, rng, emr, clock)


def _inject_future_birth(
    sim: Simulation, rng: np.random.Generator, emr: _Server, clock: _Clock
) -> None:
    """A century typed wrong (19xx as 20xx), far enough ahead to stay in the future."""

    def shifted(patient: Resource) -> date:
        born = date.fromisoformat(patient["birthDate"])
        day = 28 if (born.month, born.day) == (2, 29) else born.day
        return date(born.year + 100, born.month, day)

    candidates = [
        p
        for p in emr.of_type("Patient")
        if 1900 <= date.fromisoformat(p["birthDate"]).year <= 1999
        and shifted(p).year >= clock.last_day.year + 10
    ]
    patient = _choose(rng, candidates)
    if patient is None:
        return
    original = patient["birthDate"]
    patient["birthDate"] = shifted(patient).isoformat()
    sim.truth.add_defect(
        source="fhir", entity="patient", kind="invalid_value", record=_record(patient),
        expected_rule="date_not_in_future",
        detail=f"birthDate {patient['birthDate']} is in the future (century typo of {original})",
    )  # fmt: skip


# --- writing --------------------------------------------------------------------------------


def _dumps(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _order_key(resource: Resource) -> tuple[str, str]:
    return resource["meta"]["lastUpdated"], resource["id"]


def _page_url(base: str, resource_type: str, offset: int) -> str:
    url = f"{base}/{resource_type}?_count={PAGE_SIZE}"
    return url if offset == 0 else f"{url}&_getpagesoffset={offset}"


def _pages(
    server: _Server, resource_type: str, resources: list[Resource], snapshot: str
) -> Iterator[Resource]:
    """The searchset Bundles of an unfiltered search, PAGE_SIZE entries each."""
    offsets = range(0, max(len(resources), 1), PAGE_SIZE)
    for offset in offsets:
        links = [{"relation": "self", "url": _page_url(server.base, resource_type, offset)}]
        if offset + PAGE_SIZE < len(resources):
            next_url = _page_url(server.base, resource_type, offset + PAGE_SIZE)
            links.append({"relation": "next", "url": next_url})
        bundle: Resource = {
            "resourceType": "Bundle",
            "id": _stable_id(server.name, "search", resource_type, str(offset)),
            "meta": {"lastUpdated": snapshot},
            "type": "searchset",
            "total": len(resources),
            "link": links,
        }
        entries = [
            {
                "fullUrl": f"{server.base}/{resource_type}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
            for resource in resources[offset : offset + PAGE_SIZE]
        ]
        if entries:
            bundle["entry"] = entries
        yield bundle


def _write_server(server: _Server, directory: Path, clock: _Clock) -> dict[str, int]:
    counts: dict[str, int] = {}
    snapshot = _instant(clock.end)
    for resource_type in server.types:
        resources = sorted(server.of_type(resource_type), key=_order_key)
        ndjson = directory / "ndjson" / f"{resource_type}.ndjson"
        ndjson.parent.mkdir(parents=True, exist_ok=True)
        ndjson.write_text(
            "".join(_dumps(r) + "\n" for r in resources), encoding="utf-8", newline="\n"
        )
        pages = directory / "search" / resource_type
        pages.mkdir(parents=True, exist_ok=True)
        for stale in pages.glob("page-*.json"):  # a rerun with fewer pages leaves none behind
            stale.unlink()
        for number, bundle in enumerate(_pages(server, resource_type, resources, snapshot), 1):
            (pages / f"page-{number:04d}.json").write_text(
                _dumps(bundle) + "\n", encoding="utf-8", newline="\n"
            )
        counts[f"{server.name}/{resource_type}"] = len(resources)
    return counts


def write_fhir(sim: Simulation, out_dir: Path) -> dict[str, int]:
    """Write the EMR and iHRIS FHIR servers under ``out_dir/fhir`` (layout in the module
    docstring) and what changes after the window under ``increments/1/fhir`` (see
    :mod:`pipelines.simulate.fhir_increment`); record the injected defects in ``sim.truth``. Returns the number of resources
    per ``<server>/<ResourceType>``."""
    clock = _Clock(sim.window.start, sim.window.end)
    emr = _emr(sim, clock)
    _inject_defects(sim, emr, clock)
    ihris = _ihris(sim, clock)
    counts: dict[str, int] = {}
    for server in (emr, ihris):
        counts |= _write_server(server, out_dir / "fhir" / server.name, clock)
    servers = {server.name: server.resources for server in (emr, ihris)}
    counts |= write_fhir_increment(sim, servers, clock.end, out_dir)
    return counts
