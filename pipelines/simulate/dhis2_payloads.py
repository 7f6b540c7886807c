"""The simulated country's DHIS2: Web API metadata, data values and completeness.

Layout under ``<out>/dhis2`` (every JSON document shaped as the DHIS2 Web API returns it):

- ``metadata/<collection>.json`` — ``{"<collection>": [...]}`` for organisationUnits (with
  ``path``, ``level``, ``parent``, ``geometry``, ``organisationUnitGroups``),
  organisationUnitGroups, organisationUnitGroupSets, categoryOptions, categories,
  categoryCombos, categoryOptionCombos, dataElements and dataSets (``periodType``,
  ``timelyDays``, ``dataSetElements``, assigned ``organisationUnits``).
- ``dataValueSets/<data set code>_<year>.json`` — ``{"dataSet": uid, "dataValues": [...]}``,
  one file per data set and year of the values' periods; values are strings; zeros are not
  stored (DHIS2's default for data elements whose zero is not significant).
- ``completeDataSetRegistrations/<data set code>_<year>.json`` — when each facility's report
  was completed (``date``): the basis of reporting completeness and timeliness.

``<out>/increments/1/dhis2/`` (and ``dhis2_csv``) holds what changes after the window, in the
same layout: the next four weeks' values and registrations, corrections of earlier values
(same key, new value, later ``lastUpdated``) and deletions (``"deleted": true``), listed in
``truth.json`` under ``notes.dhis2_increment``. The base files never contain them.

and the same values as DHIS2's CSV export under ``<out>/dhis2_csv/dataValueSets/`` (header
``dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,storedby,
lastupdated,comment,followup,deleted``).

Data: weekly IDSR counts (cases by age group, deaths) for nine diseases, negative binomial
around a population-scaled, seasonal, trending mean, with outbreaks injected at district level
(size k times the baseline's standard deviation, spread over weeks by a log-normal curve, as in
Noufaily et al. 2013); monthly HMIS service data; yearly population estimates. Facilities miss
some reports and send others late. Files are written as a stream, district by district, so
national-scale countries never sit in memory.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipelines.periods import parse_period
from pipelines.simulate.catalogue import (
    ALL_DATA_ELEMENTS,
    ANC1,
    ANC4,
    CATEGORY_COMBOS,
    DATA_SETS,
    DEFAULT_CATEGORY,
    DEFAULT_CATEGORY_COMBO,
    DEFAULT_CATEGORY_OPTION,
    DEFAULT_CATEGORY_OPTION_COMBO,
    DELIVERIES,
    DISEASES,
    EXPECTED_PREGNANCIES,
    EXPECTED_PREGNANCY_RATE,
    HIV_POSITIVE,
    HIV_TESTED,
    HMIS_MONTHLY,
    IDSR_WEEKLY,
    MCV1,
    ON_ART,
    OPD_VISITS,
    ORG_UNIT_GROUP_SETS,
    ORG_UNIT_GROUPS,
    PENTA1,
    PENTA3,
    POPULATION_YEARLY,
    RDT_POSITIVE,
    RDT_TESTED,
    SURVIVING_INFANT_RATE,
    SURVIVING_INFANTS,
    TOTAL_POPULATION,
    VL_SUPPRESSED,
    VL_TESTED,
    DataElementSpec,
    DataSetSpec,
    Disease,
)
from pipelines.simulate.context import Simulation, Window, week_id
from pipelines.simulate.country import BASE_YEAR, POPULATION_GROWTH, Country, OrgUnit

CSV_HEADER = (
    "dataelement", "period", "orgunit", "categoryoptioncombo", "attributeoptioncombo", "value",
    "storedby", "lastupdated", "comment", "followup", "deleted",
)  # fmt: skip
STORED_BY = "simulator"
INCREMENT_WEEKS = 4
BASELINE_WEEKS = 2 * 52 + 4
INCREMENT_FOLDER = "increments/1"
OPENING_DATE = "1990-01-01T00:00:00.000"


def _stamp(day: date, minutes: int = 600) -> str:
    """DHIS2's timestamp format (no zone), at ``minutes`` past midnight."""
    return f"{day.isoformat()}T{minutes // 60:02d}:{minutes % 60:02d}:00.000"


def _write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --- metadata ------------------------------------------------------------------------------


def metadata_documents(country: Country) -> dict[str, dict[str, list[dict[str, Any]]]]:
    facilities = country.facilities
    group_members: dict[str, list[str]] = {uid: [] for uid in ORG_UNIT_GROUPS.values()}
    unit_groups: dict[str, list[str]] = {}
    for facility in facilities:
        for dimension, value in (
            ("facility_type", facility.facility_type),
            ("ownership", facility.ownership),
        ):
            group = ORG_UNIT_GROUPS[(dimension, str(value))]
            group_members[group].append(facility.uid)
            unit_groups.setdefault(facility.uid, []).append(group)

    units = []
    for ou in country.org_units:
        unit: dict[str, Any] = {
            "id": ou.uid,
            "code": ou.code,
            "name": ou.name,
            "shortName": ou.name[:50],
            "level": ou.level,
            "path": ou.path,
            "openingDate": OPENING_DATE,
        }
        if ou.parent_uid:
            unit["parent"] = {"id": ou.parent_uid}
        if ou.geometry:
            unit["geometry"] = ou.geometry
        unit["organisationUnitGroups"] = [{"id": g} for g in unit_groups.get(ou.uid, [])]
        units.append(unit)

    groups = [
        {
            "id": uid,
            "code": f"{dimension.upper()}_{value.upper().replace(' ', '_').replace('-', '_')}",
            "name": value,
            "shortName": value,
            "groupSets": [{"id": ORG_UNIT_GROUP_SETS[dimension][0]}],
            "organisationUnits": [{"id": member} for member in group_members[uid]],
        }
        for (dimension, value), uid in ORG_UNIT_GROUPS.items()
    ]
    group_sets = [
        {
            "id": uid,
            "code": dimension.upper(),
            "name": name,
            "compulsory": True,
            "dataDimension": True,
            "organisationUnitGroups": [
                {"id": g} for (d, _), g in ORG_UNIT_GROUPS.items() if d == dimension
            ],
        }
        for dimension, (uid, name) in ORG_UNIT_GROUP_SETS.items()
    ]

    options = [{"id": DEFAULT_CATEGORY_OPTION, "code": "default", "name": "default"}]
    categories = [
        {
            "id": DEFAULT_CATEGORY,
            "code": "default",
            "name": "default",
            "dataDimensionType": "DISAGGREGATION",
            "categoryOptions": [{"id": DEFAULT_CATEGORY_OPTION}],
        }
    ]
    combos = [
        {
            "id": DEFAULT_CATEGORY_COMBO,
            "code": "default",
            "name": "default",
            "dataDimensionType": "DISAGGREGATION",
            "categories": [{"id": DEFAULT_CATEGORY}],
        }
    ]
    option_combos = [
        {
            "id": DEFAULT_CATEGORY_OPTION_COMBO,
            "code": "default",
            "name": "default",
            "categoryCombo": {"id": DEFAULT_CATEGORY_COMBO},
            "categoryOptions": [{"id": DEFAULT_CATEGORY_OPTION}],
        }
    ]
    for combo in CATEGORY_COMBOS:
        category = combo.category
        options += [{"id": o.uid, "code": o.code, "name": o.name} for o in category.options]
        categories.append(
            {
                "id": category.uid,
                "code": category.code,
                "name": category.name,
                "dataDimensionType": "DISAGGREGATION",
                "categoryOptions": [{"id": o.uid} for o in category.options],
            }
        )
        combos.append(
            {
                "id": combo.uid,
                "code": combo.code,
                "name": combo.name,
                "dataDimensionType": "DISAGGREGATION",
                "categories": [{"id": category.uid}],
            }
        )
        option_combos += [
            {
                "id": uid,
                "code": f"{combo.code}_{option.code}",
                "name": option.name,
                "categoryCombo": {"id": combo.uid},
                "categoryOptions": [{"id": option.uid}],
            }
            for uid, option in combo.option_combos
        ]

    data_elements = [
        {
            "id": de.uid,
            "code": de.code,
            "name": de.name,
            "shortName": de.name[:50],
            "valueType": de.value_type,
            "aggregationType": de.aggregation_type,
            "domainType": "AGGREGATE",
            "zeroIsSignificant": False,
            "categoryCombo": {"id": de.category_combo_uid},
        }
        for de in ALL_DATA_ELEMENTS
    ]
    data_sets = [
        {
            "id": ds.uid,
            "code": ds.code,
            "name": ds.name,
            "shortName": ds.name[:50],
            "periodType": ds.period_type,
            "timelyDays": ds.timely_days,
            "expiryDays": 0,
            "openFuturePeriods": 0,
            "categoryCombo": {"id": DEFAULT_CATEGORY_COMBO},
            "dataSetElements": [
                {"dataElement": {"id": de.uid}, "dataSet": {"id": ds.uid}}
                for de in ds.data_elements
            ],
            "organisationUnits": [{"id": f.uid} for f in facilities],
        }
        for ds in DATA_SETS
    ]
    return {
        "organisationUnits": {"organisationUnits": units},
        "organisationUnitGroups": {"organisationUnitGroups": groups},
        "organisationUnitGroupSets": {"organisationUnitGroupSets": group_sets},
        "categoryOptions": {"categoryOptions": options},
        "categories": {"categories": categories},
        "categoryCombos": {"categoryCombos": combos},
        "categoryOptionCombos": {"categoryOptionCombos": option_combos},
        "dataElements": {"dataElements": data_elements},
        "dataSets": {"dataSets": data_sets},
    }


# --- streaming writers ---------------------------------------------------------------------


class _ValueFile:
    """One data set's values for one year, as a dataValueSet JSON and DHIS2 CSV, streamed."""

    def __init__(self, json_path: Path, csv_path: Path, data_set: DataSetSpec) -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._json: IO[str] = json_path.open("w", encoding="utf-8", newline="\n")
        self._json.write(f'{{"dataSet":"{data_set.uid}","dataValues":[\n')
        self._csv_handle: IO[str] = csv_path.open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_handle, lineterminator="\n")
        self._csv.writerow(CSV_HEADER)
        self.count = 0

    def write(self, value: dict[str, Any]) -> None:
        prefix = ",\n" if self.count else ""
        self._json.write(prefix + json.dumps(value, separators=(",", ":")))
        self._csv.writerow(
            [
                value.get("dataElement", ""),
                value.get("period", ""),
                value.get("orgUnit", ""),
                value.get("categoryOptionCombo", ""),
                value.get("attributeOptionCombo", ""),
                value.get("value", ""),
                value.get("storedBy", ""),
                value.get("lastUpdated", ""),
                value.get("comment", ""),
                "true" if value.get("followup") else "false",
                "true" if value.get("deleted") else "",
            ]
        )
        self.count += 1

    def close(self) -> None:
        self._json.write("\n]}\n")
        self._json.close()
        self._csv_handle.close()


class _RegistrationFile:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self._handle.write('{"completeDataSetRegistrations":[\n')
        self.count = 0

    def write(self, registration: dict[str, Any]) -> None:
        prefix = ",\n" if self.count else ""
        self._handle.write(prefix + json.dumps(registration, separators=(",", ":")))
        self.count += 1

    def close(self) -> None:
        self._handle.write("\n]}\n")
        self._handle.close()


@dataclass
class _Outputs:
    root: Path
    base_end: date
    """Last day of the base window: later periods go to ``increments/1``."""
    values: dict[tuple[str, int, bool], _ValueFile] = field(default_factory=dict)
    changeable: list[dict[str, Any]] = field(default_factory=list)
    """Base values the increment later corrects or deletes."""
    unreported: list[tuple[str, int, int]] = field(default_factory=list)
    """(facility uid, year, month) of monthly reports never sent: injected defect records go
    there, so none of them shares a natural key with a real value."""
    registrations: dict[tuple[str, int, bool], _RegistrationFile] = field(default_factory=dict)

    def folder(self, later: bool) -> Path:
        return self.root / INCREMENT_FOLDER if later else self.root

    def value_file(self, data_set: DataSetSpec, year: int, later: bool = False) -> _ValueFile:
        key = (data_set.code, year, later)
        if key not in self.values:
            name = f"{data_set.code.lower()}_{year}"
            root = self.folder(later)
            self.values[key] = _ValueFile(
                root / "dhis2" / "dataValueSets" / f"{name}.json",
                root / "dhis2_csv" / "dataValueSets" / f"{name}.csv",
                data_set,
            )
        return self.values[key]

    def registration_file(
        self, data_set: DataSetSpec, year: int, later: bool = False
    ) -> _RegistrationFile:
        key = (data_set.code, year, later)
        if key not in self.registrations:
            name = f"{data_set.code.lower()}_{year}.json"
            self.registrations[key] = _RegistrationFile(
                self.folder(later) / "dhis2" / "completeDataSetRegistrations" / name
            )
        return self.registrations[key]

    def close(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (code, _, later), file in sorted(self.values.items()):
            file.close()
            key = f"{'increment_' if later else ''}data_values:{code.lower()}"
            counts[key] = counts.get(key, 0) + file.count
        for (code, _, later), reg in sorted(self.registrations.items()):
            reg.close()
            key = f"{'increment_' if later else ''}registrations:{code.lower()}"
            counts[key] = counts.get(key, 0) + reg.count
        return counts


def _value(
    de: DataElementSpec, period: str, org_unit: str, coc: str, value: int | str, stamp: str
) -> dict[str, Any]:
    return {
        "dataElement": de.uid,
        "period": period,
        "orgUnit": org_unit,
        "categoryOptionCombo": coc,
        "attributeOptionCombo": DEFAULT_CATEGORY_OPTION_COMBO,
        "value": str(value),
        "storedBy": STORED_BY,
        "created": stamp,
        "lastUpdated": stamp,
        "followup": False,
    }


# --- reporting behaviour -------------------------------------------------------------------


@dataclass(frozen=True)
class _Reporting:
    """Which reports a facility sends and how late, for one data set."""

    sent: np.ndarray  # bool [facilities, periods]
    delay_days: np.ndarray  # int [facilities, periods], days after the period ends


def _reporting(
    rng: np.random.Generator, n_facilities: int, n_periods: int, timely_days: int
) -> _Reporting:
    completeness = rng.beta(18, 1.6, size=n_facilities)  # mean about 0.92
    timeliness = rng.beta(8, 2, size=n_facilities)  # mean about 0.8
    sent = rng.random((n_facilities, n_periods)) < completeness[:, None]
    on_time = rng.random((n_facilities, n_periods)) < timeliness[:, None]
    early = rng.integers(0, timely_days + 1, size=(n_facilities, n_periods))
    late = rng.integers(timely_days + 1, timely_days + 22, size=(n_facilities, n_periods))
    return _Reporting(sent=sent, delay_days=np.where(on_time, early, late))


def _registration(
    data_set: DataSetSpec, period: str, org_unit: str, completed: date
) -> dict[str, Any]:
    return {
        "dataSet": data_set.uid,
        "period": period,
        "organisationUnit": org_unit,
        "attributeOptionCombo": DEFAULT_CATEGORY_OPTION_COMBO,
        "date": _stamp(completed, 9 * 60),
        "storedBy": STORED_BY,
        "completed": True,
    }


# --- IDSR weekly ---------------------------------------------------------------------------


def _population_growth(years: np.ndarray) -> np.ndarray:
    return np.asarray((1 + POPULATION_GROWTH) ** (years - BASE_YEAR), dtype=float)


def _weekly_means(
    disease: Disease, populations: np.ndarray, week_starts: list[date], start: date
) -> np.ndarray:
    """Expected weekly cases [facilities, weeks]: population-scaled, seasonal, trending."""
    thursdays = [w + timedelta(days=3) for w in week_starts]
    iso_weeks = np.array([w.isocalendar()[1] for w in week_starts], dtype=float)
    years = np.array([t.year for t in thursdays], dtype=float)
    elapsed = np.array([(w - start).days / 365.25 for w in week_starts])
    season = 1 + disease.amplitude * np.cos(2 * math.pi * (iso_weeks - disease.peak_week) / 52)
    trend = np.exp(disease.trend_per_year * elapsed)
    pop = populations[:, None] * _population_growth(years)[None, :]
    return np.asarray(pop / 1000 * disease.rate * (season * trend)[None, :], dtype=float)


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, size: float) -> np.ndarray:
    mean = np.maximum(mean, 0.0)
    return np.asarray(rng.negative_binomial(size, size / (size + mean)), dtype=np.int64)


@dataclass(frozen=True)
class Outbreak:
    disease: Disease
    district: OrgUnit
    start_index: int
    weekly_extra: dict[int, int]  # week index -> extra cases
    k: float
    baseline_mean: float
    baseline_sd: float


def plan_outbreaks(sim: Simulation) -> list[Outbreak]:
    """Outbreaks at district level, k times the district baseline's standard deviation at the
    start week, spread over weeks by a log-normal curve (Noufaily et al. 2013); recorded in
    the truth. Two years of baseline precede each one when the window allows."""
    rng = sim.rng("dhis2", "outbreaks")
    country, window = sim.country, sim.window
    week_starts = window.week_starts()
    n_weeks = len(week_starts)
    prone = [d for d in DISEASES if d.outbreak_k]
    if n_weeks < 8 or not prone:
        return []
    # Three rounds over the outbreak-prone diseases at least, so every disease meets each of
    # its outbreak sizes.
    wanted = max(3 * len(prone), round(0.6 * len(country.districts)))
    # Outbreaks start once two years of baseline precede them (what Farrington flexible with
    # b = 2 needs to judge a week, as in Noufaily's evaluation), or half way through a shorter
    # window.
    earliest = BASELINE_WEEKS if n_weeks >= BASELINE_WEEKS + 12 else n_weeks // 2
    latest = n_weeks - 4
    outbreaks: list[Outbreak] = []
    taken: set[tuple[str, str, int]] = set()
    for number in range(wanted):
        disease = prone[number % len(prone)]
        k = float(disease.outbreak_k[(number // len(prone)) % len(disease.outbreak_k)])
        district = country.districts[int(rng.integers(len(country.districts)))]
        start = int(rng.integers(earliest, latest + 1))
        if any((disease.key, district.uid, s) in taken for s in range(start - 8, start + 9)):
            continue
        taken.add((disease.key, district.uid, start))
        populations = np.array(
            [f.base_population for f in country.facilities_in(district.uid)], dtype=float
        )
        means = _weekly_means(disease, populations, [week_starts[start]], window.start)[:, 0]
        mean = float(means.sum())
        sd = math.sqrt(float((means + means**2 / disease.dispersion).sum()))
        extra = max(1, round(k * sd))
        offsets = np.floor(rng.lognormal(0.0, 0.5, size=extra)).astype(int)
        weekly: dict[int, int] = {}
        for offset in offsets:
            index = min(start + int(offset), n_weeks - 1)
            weekly[index] = weekly.get(index, 0) + 1
        outbreak = Outbreak(disease, district, start, weekly, k, mean, sd)
        outbreaks.append(outbreak)
        sim.truth.outbreaks.append(
            {
                "disease": disease.key,
                "disease_name": disease.name,
                "cases_data_element": disease.cases.uid,
                "org_unit_id": district.uid,
                "org_unit_code": district.code,
                "org_unit_name": district.name,
                "org_unit_level": district.level,
                "start_week": week_id(week_starts[start]),
                "start_date": week_starts[start].isoformat(),
                "duration_weeks": max(weekly) - start + 1,
                "extra_cases": extra,
                "k": k,
                "baseline_mean": round(mean, 4),
                "baseline_sd": round(sd, 4),
                "weekly_extra_cases": {
                    week_id(week_starts[i]): n for i, n in sorted(weekly.items())
                },
            }
        )
    return outbreaks


def _write_idsr_district(
    sim: Simulation, district: OrgUnit, outbreaks: list[Outbreak], outputs: _Outputs
) -> None:
    rng = sim.rng("dhis2", "idsr", district.uid)
    facilities = sim.country.facilities_in(district.uid)
    week_starts = extended_window(sim).week_starts()
    populations = np.array([f.base_population for f in facilities], dtype=float)
    shares = populations / populations.sum()
    reporting = _reporting(rng, len(facilities), len(week_starts), IDSR_WEEKLY.timely_days)

    counts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for disease in DISEASES:
        cases = _negative_binomial(
            rng,
            _weekly_means(disease, populations, week_starts, sim.window.start),
            disease.dispersion,
        )
        for outbreak in outbreaks:
            if outbreak.disease.key == disease.key and outbreak.district.uid == district.uid:
                for index, extra in outbreak.weekly_extra.items():
                    cases[:, index] += rng.multinomial(extra, shares)
        under_5 = rng.binomial(cases, disease.under_5_share)
        deaths = rng.binomial(cases, disease.case_fatality)
        counts[disease.key] = (under_5, cases - under_5, deaths)

    for w, monday in enumerate(week_starts):
        period = week_id(monday)
        year = int(period.split("W")[0])
        sunday = monday + timedelta(days=6)
        for f, facility in enumerate(facilities):
            if not reporting.sent[f, w]:
                continue
            completed = sunday + timedelta(days=int(reporting.delay_days[f, w]))
            # A report completed after the snapshot arrives with the increment.
            later = completed > outputs.base_end
            values = outputs.value_file(IDSR_WEEKLY, year, later)
            registrations = outputs.registration_file(IDSR_WEEKLY, year, later)
            stamp = _stamp(completed, 8 * 60 + int(f % 60))
            for disease in DISEASES:
                under_5, older, deaths = counts[disease.key]
                combos = disease.cases.combo_uids
                for coc, count in ((combos[0], under_5[f, w]), (combos[1], older[f, w])):
                    if count:
                        values.write(
                            _value(disease.cases, period, facility.uid, coc, int(count), stamp)
                        )
                if deaths[f, w]:
                    values.write(
                        _value(disease.deaths, period, facility.uid, DEFAULT_CATEGORY_OPTION_COMBO,
                               int(deaths[f, w]), stamp)
                    )  # fmt: skip
            registrations.write(_registration(IDSR_WEEKLY, period, facility.uid, completed))


# --- HMIS monthly --------------------------------------------------------------------------


def _month_end(year: int, month: int) -> date:
    return date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)


def _hmis_counts(
    rng: np.random.Generator,
    facilities: tuple[OrgUnit, ...],
    months: list[tuple[int, int]],
    start: date,
) -> dict[tuple[DataElementSpec, str], np.ndarray]:
    """Monthly service volumes [facilities, months] per (data element, combo)."""
    n_f, n_m = len(facilities), len(months)
    years = np.array([y for y, _ in months], dtype=float)
    elapsed = np.array([(date(y, m, 15) - start).days / 365.25 for y, m in months])
    pop = (
        np.array([f.base_population for f in facilities], dtype=float)[:, None]
        * _population_growth(years)[None, :]
    )
    malaria_season = 1 + 0.6 * np.cos(2 * math.pi * (np.array([m for _, m in months]) - 5) / 12)
    kind = np.array([f.facility_type for f in facilities])
    hospital = (kind == "District Hospital")[:, None]
    health_post = (kind == "Health Post")[:, None]

    def poisson(mean: np.ndarray) -> np.ndarray:
        return np.asarray(rng.poisson(np.maximum(mean, 0.0)), dtype=np.int64)

    def share(low: float, high: float) -> np.ndarray:
        return np.asarray(rng.uniform(low, high, size=(n_f, 1)), dtype=float)

    default = DEFAULT_CATEGORY_OPTION_COMBO
    counts: dict[tuple[DataElementSpec, str], np.ndarray] = {}
    counts[(OPD_VISITS, default)] = _negative_binomial(
        rng, pop * 0.07 * (0.85 + 0.15 * malaria_season), 20.0
    )
    anc1 = poisson(pop * EXPECTED_PREGNANCY_RATE / 12 * 0.92 * np.ones((1, n_m)))
    counts[(ANC1, default)] = anc1
    counts[(ANC4, default)] = rng.binomial(
        anc1, np.clip(share(0.45, 0.7) + 0.02 * elapsed[None, :], 0, 0.95)
    )
    delivery_share = np.where(hospital, 0.9, np.where(health_post, 0.25, 0.6))
    counts[(DELIVERIES, default)] = poisson(pop * EXPECTED_PREGNANCY_RATE / 12 * delivery_share)
    penta1 = poisson(pop * SURVIVING_INFANT_RATE / 12 * 0.95 * np.ones((1, n_m)))
    counts[(PENTA1, default)] = penta1
    counts[(PENTA3, default)] = rng.binomial(penta1, share(0.8, 0.95) * np.ones((1, n_m)))
    counts[(MCV1, default)] = poisson(pop * SURVIVING_INFANT_RATE / 12 * 0.85 * np.ones((1, n_m)))
    male, female = HIV_TESTED.combo_uids
    for combo_uid, test_rate, positivity in ((male, 0.004, 0.035), (female, 0.006, 0.045)):
        tested = poisson(pop * test_rate)
        declining = positivity * np.exp(-0.08 * elapsed)[None, :] * np.ones((n_f, 1))
        counts[(HIV_TESTED, combo_uid)] = tested
        counts[(HIV_POSITIVE, combo_uid)] = rng.binomial(tested, np.clip(declining, 0, 1))
    on_art_level = np.where(health_post, 0.0, pop * 0.012 * (1 + 0.05 * elapsed)[None, :])
    on_art = np.maximum(np.rint(on_art_level + rng.normal(0, 2, size=(n_f, n_m))), 0).astype(
        np.int64
    )
    on_art[np.broadcast_to(health_post, on_art.shape)] = 0
    counts[(ON_ART, default)] = on_art
    vl = poisson(on_art * 0.08)
    counts[(VL_TESTED, default)] = vl
    counts[(VL_SUPPRESSED, default)] = rng.binomial(vl, share(0.82, 0.93) * np.ones((1, n_m)))
    rdt = poisson(pop * 0.025 * malaria_season[None, :])
    counts[(RDT_TESTED, default)] = rdt
    rdt_positivity = np.clip(0.32 + 0.2 * (malaria_season - 1), 0, 1)[None, :] * np.ones((n_f, 1))
    counts[(RDT_POSITIVE, default)] = rng.binomial(rdt, rdt_positivity)
    return counts


def _write_hmis_district(
    sim: Simulation,
    district: OrgUnit,
    outputs: _Outputs,
    outliers: set[tuple[str, str, str]],
) -> None:
    rng = sim.rng("dhis2", "hmis", district.uid)
    facilities = sim.country.facilities_in(district.uid)
    months = extended_window(sim).months()
    # Corrections and deletions in the increment touch a month long reported by then.
    base_months = sim.window.months()
    changeable_month = base_months[-2] if len(base_months) > 1 else None
    if not months:
        return
    counts = _hmis_counts(rng, facilities, months, sim.window.start)
    reporting = _reporting(rng, len(facilities), len(months), HMIS_MONTHLY.timely_days)
    for m, (year, month) in enumerate(months):
        period = f"{year}{month:02d}"
        for f, facility in enumerate(facilities):
            if not reporting.sent[f, m]:
                if _month_end(year, month) <= outputs.base_end:
                    outputs.unreported.append((facility.uid, year, month))
                continue
            completed = _month_end(year, month) + timedelta(days=int(reporting.delay_days[f, m]))
            # A report completed after the snapshot arrives with the increment.
            later = completed > outputs.base_end
            values = outputs.value_file(HMIS_MONTHLY, year, later)
            registrations = outputs.registration_file(HMIS_MONTHLY, year, later)
            stamp = _stamp(completed, 14 * 60 + int(f % 60))
            for (de, coc), array in counts.items():
                count = int(array[f, m])
                if (de.uid, period, facility.uid) in outliers and count:
                    sim.truth.add_defect(
                        source="dhis2",
                        entity="data_values",
                        kind="outlier",
                        record=_key(de.uid, period, facility.uid, coc),
                        expected_rule="outlier",
                        detail=f"{de.name} reported as {count * 10}, ten times the simulated {count}",
                    )
                    count *= 10
                if count:
                    value = _value(de, period, facility.uid, coc, count, stamp)
                    values.write(value)
                    wanted = (year, month) == changeable_month and len(outputs.changeable) < 40
                    if wanted and not later:
                        outputs.changeable.append(value)
            registrations.write(_registration(HMIS_MONTHLY, period, facility.uid, completed))


def _key(de: str, period: str, org_unit: str | None, coc: str) -> dict[str, Any]:
    return {
        "dataElement": de,
        "period": period,
        "orgUnit": org_unit,
        "categoryOptionCombo": coc,
        "attributeOptionCombo": DEFAULT_CATEGORY_OPTION_COMBO,
    }


def _plan_outliers(sim: Simulation) -> set[tuple[str, str, str]]:
    rng = sim.rng("dhis2", "outliers")
    months = sim.window.months()
    facilities = sim.country.facilities
    if not months:
        return set()
    wanted = max(3, len(facilities) // 25)
    candidates = (OPD_VISITS, ANC1, PENTA1, RDT_TESTED)
    return {
        (
            candidates[i % len(candidates)].uid,
            "{}{:02d}".format(*months[int(rng.integers(len(months)))]),
            facilities[int(rng.integers(len(facilities)))].uid,
        )
        for i in range(wanted)
    }


# --- population ----------------------------------------------------------------------------


def _write_population(sim: Simulation, outputs: _Outputs) -> None:
    for year in sim.window.years():
        values = outputs.value_file(POPULATION_YEARLY, year)
        stamp = _stamp(date(year, 1, 15))
        for facility in sim.country.facilities:
            total = sim.country.population(facility.uid, year)
            for de, number in (
                (TOTAL_POPULATION, total),
                (EXPECTED_PREGNANCIES, round(total * EXPECTED_PREGNANCY_RATE)),
                (SURVIVING_INFANTS, round(total * SURVIVING_INFANT_RATE)),
            ):
                values.write(
                    _value(
                        de, str(year), facility.uid, DEFAULT_CATEGORY_OPTION_COMBO, number, stamp
                    )
                )


# --- injected record defects ---------------------------------------------------------------


def _write_defects(sim: Simulation, outputs: _Outputs) -> None:
    """Records a validating pipeline must hold back, each recorded in the truth with the rule
    that should catch it. Each goes to a facility-month whose real report was never sent, so
    no defect replaces a real value."""
    slots = sorted(outputs.unreported, key=lambda slot: (slot[1], slot[2], slot[0]), reverse=True)
    default = DEFAULT_CATEGORY_OPTION_COMBO
    kinds: list[tuple[str, str, str, DataElementSpec, str]] = [
        # kind, expected rule, what is wrong, data element, category option combo
        ("unknown_code", "org_unit_known", "orgUnit hpNoSuchOrg is not in the metadata", OPD_VISITS, default),
        ("unknown_code", "data_element_known", "dataElement hpNoSuchDat is not in the metadata", OPD_VISITS, default),
        ("unknown_code", "category_option_combo_known", "categoryOptionCombo hpNoSuchCoc is unknown", HIV_TESTED, "hpNoSuchCoc"),
        ("missing_field", "value_present", "the value is missing", ANC4, default),
        ("invalid_value", "period_valid", "the period's month 13 does not exist", DELIVERIES, default),
        ("invalid_value", "value_numeric", "value 'n/a' for an integer data element", PENTA3, default),
        ("missing_field", "natural_key_present", "the orgUnit is missing", MCV1, default),
        ("duplicate", "duplicate", "the same value twice in one data value set", OPD_VISITS, default),
    ]  # fmt: skip
    for (kind, rule, detail, de, coc), (facility, year, month) in zip(kinds, slots, strict=False):
        period = f"{year}13" if rule == "period_valid" else f"{year}{month:02d}"
        values = outputs.value_file(HMIS_MONTHLY, year)
        stamp = _stamp(min(_month_end(year, month) + timedelta(days=3), outputs.base_end))
        record = _value(de, period, facility, coc, 7, stamp)
        if rule == "org_unit_known":
            record["orgUnit"] = "hpNoSuchOrg"
        elif rule == "data_element_known":
            record["dataElement"] = "hpNoSuchDat"
        elif rule == "value_present":
            del record["value"]
        elif rule == "value_numeric":
            record["value"] = "n/a"
        elif rule == "natural_key_present":
            del record["orgUnit"]
        elif rule == "duplicate":
            # DHIS2 repeats a value when one data set is exported twice into one file.
            values.write(record)
        values.write(record)
        sim.truth.add_defect(
            source="dhis2",
            entity="data_values",
            kind=kind,
            record=_key(record["dataElement"], period, record.get("orgUnit"), coc),
            expected_rule=rule,
            detail=detail,
        )


# --- entry point ---------------------------------------------------------------------------


def extended_window(sim: Simulation) -> Window:
    """The base window plus the weeks held back for ``increments/1``."""
    end = parse_period(sim.window.end_week).start_date + timedelta(weeks=INCREMENT_WEEKS)
    return Window(end_week=week_id(end), weeks=sim.window.weeks + INCREMENT_WEEKS)


def _write_increment_changes(sim: Simulation, outputs: _Outputs) -> None:
    """Corrections and deletions of base values, dated after the base window, so an
    incremental pull (``lastUpdated``, ``includeDeleted``) must pick them up."""
    stamp = _stamp(outputs.base_end + timedelta(days=10))
    corrected, deleted = outputs.changeable[0:30:3], outputs.changeable[1:30:3]
    for value in corrected:
        year = int(value["period"][:4])
        changed = {**value, "value": str(int(value["value"]) + 1), "lastUpdated": stamp}
        outputs.value_file(HMIS_MONTHLY, year, later=True).write(changed)
    for value in deleted:
        year = int(value["period"][:4])
        gone = {**value, "lastUpdated": stamp, "deleted": True}
        outputs.value_file(HMIS_MONTHLY, year, later=True).write(gone)

    def keys(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            _key(v["dataElement"], v["period"], v["orgUnit"], v["categoryOptionCombo"])
            for v in values
        ]

    sim.truth.notes["dhis2_increment"] = {
        "folder": f"{INCREMENT_FOLDER}/dhis2",
        "new_weeks": [week_id(w) for w in extended_window(sim).week_starts()[sim.window.weeks :]],
        "corrected": keys(corrected),
        "deleted": keys(deleted),
    }


def write_dhis2(sim: Simulation, out_dir: Path) -> dict[str, int]:
    """Write the country's DHIS2 metadata, data values (JSON and CSV) and registrations,
    and under ``increments/1/`` what changes in the weeks after the window."""
    counts: dict[str, int] = {}
    for collection, document in metadata_documents(sim.country).items():
        _write_json(out_dir / "dhis2" / "metadata" / f"{collection}.json", document)
        counts[f"metadata:{collection}"] = len(document[collection])
    outbreaks = plan_outbreaks(sim)
    outliers = _plan_outliers(sim)
    outputs = _Outputs(out_dir, base_end=sim.window.end)
    try:
        for district in sim.country.districts:
            _write_idsr_district(sim, district, outbreaks, outputs)
            _write_hmis_district(sim, district, outputs, outliers)
        _write_population(sim, outputs)
        _write_defects(sim, outputs)
        _write_increment_changes(sim, outputs)
    finally:
        counts.update(outputs.close())
    return counts


def iter_data_values(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Every data value written under ``out_dir`` (for tests and the sandbox)."""
    for path in sorted((out_dir / "dhis2" / "dataValueSets").glob("*.json")):
        yield from json.loads(path.read_text(encoding="utf-8"))["dataValues"]
