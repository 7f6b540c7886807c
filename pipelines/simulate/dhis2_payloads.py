"""Write a simulated country as DHIS2 Web API payloads (metadata lists and a data value set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.simulate.catalogue import (
    DEFAULT_CATEGORY_COMBO,
    DEFAULT_CATEGORY_OPTION_COMBO,
    HMIS_MONTHLY_DATA_SET,
    MONTHLY_HMIS,
)
from pipelines.simulate.country import Country

MISSING_REPORT_RATE = 0.05


def _write(path: Path, document: Any, *, compact: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if compact:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(document, indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def organisation_units_payload(country: Country) -> dict[str, Any]:
    units = []
    for ou in country.org_units:
        entry: dict[str, Any] = {
            "id": ou.uid,
            "code": ou.code,
            "name": ou.name,
            "shortName": ou.name[:50],
            "level": ou.level,
            "path": ou.path,
            "openingDate": "1990-01-01T00:00:00.000",
        }
        if ou.parent_uid is not None:
            entry["parent"] = {"id": ou.parent_uid}
        units.append(entry)
    return {"organisationUnits": units}


def data_elements_payload() -> dict[str, Any]:
    return {
        "dataElements": [
            {
                "id": de.uid,
                "code": de.code,
                "name": de.name,
                "shortName": de.name,
                "valueType": de.value_type,
                "aggregationType": de.aggregation_type,
                "domainType": "AGGREGATE",
                "categoryCombo": {"id": DEFAULT_CATEGORY_COMBO},
            }
            for de in MONTHLY_HMIS
        ]
    }


def category_option_combos_payload() -> dict[str, Any]:
    return {
        "categoryOptionCombos": [
            {
                "id": DEFAULT_CATEGORY_OPTION_COMBO,
                "code": "default",
                "name": "default",
                "categoryCombo": {"id": DEFAULT_CATEGORY_COMBO},
            }
        ]
    }


def monthly_values(country: Country, year: int) -> list[dict[str, Any]]:
    """Monthly HMIS counts per facility: Poisson volumes around a facility's own size, ANC4
    a share of ANC1 and positives a share of tests, and about 5% of reports never sent."""
    rng = np.random.default_rng([country.seed, year])
    values: list[dict[str, Any]] = []
    for facility in country.facilities:
        size = {"District Hospital": 3.0, "Health Centre": 1.5}.get(
            facility.facility_type or "", 1.0
        )
        anc_rate = rng.uniform(15, 35) * size
        opd_rate = rng.uniform(250, 600) * size
        test_rate = rng.uniform(60, 140) * size
        anc4_share = rng.uniform(0.4, 0.7)
        positivity = rng.uniform(0.02, 0.08)
        for month in range(1, 13):
            anc1 = int(rng.poisson(anc_rate))
            anc4 = int(rng.binomial(anc1, anc4_share))
            tested = int(rng.poisson(test_rate))
            positive = int(rng.binomial(tested, positivity))
            opd = int(rng.poisson(opd_rate))
            if rng.random() < MISSING_REPORT_RATE:
                continue
            period = f"{year}{month:02d}"
            stamp = f"{year + (month == 12)}-{month % 12 + 1:02d}-0{1 + int(rng.integers(0, 9))}T08:00:00.000"
            for spec, count in zip(MONTHLY_HMIS, (anc1, anc4, tested, positive, opd), strict=True):
                values.append(
                    {
                        "dataElement": spec.uid,
                        "period": period,
                        "orgUnit": facility.uid,
                        "categoryOptionCombo": DEFAULT_CATEGORY_OPTION_COMBO,
                        "attributeOptionCombo": DEFAULT_CATEGORY_OPTION_COMBO,
                        "value": str(count),
                        "storedBy": "simulator",
                        "created": stamp,
                        "lastUpdated": stamp,
                        "followup": False,
                    }
                )
    return values


def write_dhis2_payloads(country: Country, out_dir: Path, *, year: int = 2025) -> dict[str, Path]:
    """Write metadata and one data value set per year under ``out_dir``; return the files."""
    files = {
        "organisation_units": out_dir / "metadata" / "organisationUnits.json",
        "data_elements": out_dir / "metadata" / "dataElements.json",
        "category_option_combos": out_dir / "metadata" / "categoryOptionCombos.json",
        "data_values": out_dir / "dataValueSets" / f"hmis_monthly_{year}.json",
    }
    _write(files["organisation_units"], organisation_units_payload(country))
    _write(files["data_elements"], data_elements_payload())
    _write(files["category_option_combos"], category_option_combos_payload())
    _write(
        files["data_values"],
        {"dataSet": HMIS_MONTHLY_DATA_SET, "dataValues": monthly_values(country, year)},
        compact=True,
    )
    return files
