"""The org-unit hierarchy of a simulated country: country, regions, districts, facilities."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import numpy as np

_UID_FIRST = string.ascii_letters
_UID_REST = string.ascii_letters + string.digits

_REGION_NAMES = (
    "Northern",
    "Southern",
    "Eastern",
    "Western",
    "Central",
    "Coastal",
    "Highland",
    "Lakeside",
    "Savannah",
    "Riverside",
)
_DISTRICT_ROOTS = (
    "Amani",
    "Baraka",
    "Chemba",
    "Dodo",
    "Elimu",
    "Faraja",
    "Gando",
    "Hodari",
    "Imara",
    "Jabali",
    "Kilima",
    "Lulu",
    "Mvua",
    "Neema",
    "Ongoza",
    "Pwani",
    "Rafiki",
    "Samaki",
    "Tumaini",
    "Upendo",
    "Vumbi",
    "Wema",
    "Yombo",
    "Zawadi",
)
_FACILITY_KINDS = (("Health Centre", "HC"), ("Health Post", "HP"), ("District Hospital", "DH"))


@dataclass(frozen=True)
class OrgUnit:
    uid: str
    code: str
    name: str
    level: int
    parent: OrgUnit | None = field(default=None, repr=False)
    facility_type: str | None = None

    @property
    def path(self) -> str:
        return (self.parent.path if self.parent else "") + "/" + self.uid


@dataclass(frozen=True)
class Country:
    seed: int
    org_units: tuple[OrgUnit, ...]

    @property
    def facilities(self) -> tuple[OrgUnit, ...]:
        return tuple(ou for ou in self.org_units if ou.level == 4)


def _facility_kind(index: int) -> tuple[str, str]:
    """Each district has one hospital, one health centre, and health posts after that."""
    return _FACILITY_KINDS[2] if index == 0 else _FACILITY_KINDS[0 if index == 1 else 1]


def make_uid(rng: np.random.Generator, taken: set[str]) -> str:
    """A DHIS2-style UID: 11 characters, a letter first, then letters and digits."""
    while True:
        first = _UID_FIRST[int(rng.integers(len(_UID_FIRST)))]
        rest = "".join(_UID_REST[int(i)] for i in rng.integers(len(_UID_REST), size=10))
        uid = first + rest
        if uid not in taken:
            taken.add(uid)
            return uid


def build_country(
    seed: int = 7,
    *,
    regions: int = 2,
    districts_per_region: int = 2,
    facilities_per_district: int = 3,
    name: str = "Demoland",
) -> Country:
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    country = OrgUnit(make_uid(rng, taken), "DL", name, 1)
    units: list[OrgUnit] = [country]
    district_number = 0
    for r in range(regions):
        region_name = _REGION_NAMES[r % len(_REGION_NAMES)] + (f" {r // 10 + 1}" if r >= 10 else "")
        region = OrgUnit(
            make_uid(rng, taken), f"DL_R{r + 1:02d}", f"{region_name} Region", 2, country
        )
        units.append(region)
        for _ in range(districts_per_region):
            district_number += 1
            root = _DISTRICT_ROOTS[(district_number - 1) % len(_DISTRICT_ROOTS)]
            suffix = (
                f" {(district_number - 1) // len(_DISTRICT_ROOTS) + 1}"
                if district_number > len(_DISTRICT_ROOTS)
                else ""
            )
            district = OrgUnit(
                make_uid(rng, taken),
                f"DL_D{district_number:03d}",
                f"{root}{suffix} District",
                3,
                region,
            )
            units.append(district)
            for f in range(facilities_per_district):
                kind, short = _facility_kind(f)
                units.append(
                    OrgUnit(
                        make_uid(rng, taken),
                        f"{district.code}_F{f + 1:03d}",
                        f"{root}{suffix} {short} {f + 1}",
                        4,
                        district,
                        facility_type=kind,
                    )
                )
    return Country(seed=seed, org_units=tuple(units))
