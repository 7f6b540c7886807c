"""The simulated country: org-unit hierarchy (country, regions, districts, facilities) with
geometry, facility types and ownership, catchment populations, EMR and laboratory sites,
community health workers and the health-worker establishment."""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

_UID_FIRST = string.ascii_letters
_UID_REST = string.ascii_letters + string.digits

REGION_NAMES = (
    "Northern", "Southern", "Eastern", "Western", "Central", "Coastal", "Highland",
    "Lakeside", "Savannah", "Riverside",
)  # fmt: skip
DISTRICT_ROOTS = (
    "Amani", "Baraka", "Chemba", "Dodo", "Elimu", "Faraja", "Gando", "Hodari", "Imara",
    "Jabali", "Kilima", "Lulu", "Mvua", "Neema", "Ongoza", "Pwani", "Rafiki", "Samaki",
    "Tumaini", "Upendo", "Vumbi", "Wema", "Yombo", "Zawadi",
)  # fmt: skip
PLACE_SUFFIXES = (
    "",
    " Kati",
    " Juu",
    " Chini",
    " Mashariki",
    " Magharibi",
    " Kusini",
    " Kaskazini",
)

FACILITY_TYPES = ("District Hospital", "Health Centre", "Health Post")
FACILITY_TYPE_CODES = {"District Hospital": "DH", "Health Centre": "HC", "Health Post": "HP"}
OWNERSHIPS = ("Public", "Faith-based", "Private")
BASE_YEAR = 2023
POPULATION_GROWTH = 0.027  # per year, typical of sub-Saharan Africa

# Cadres of the health-worker establishment (WHO NHWA groupings) and the approved posts per
# facility type.
CADRES = ("medical_doctor", "clinical_officer", "nurse", "midwife", "lab_technician", "pharmacist")
APPROVED_POSTS = {
    "District Hospital": {"medical_doctor": 6, "clinical_officer": 8, "nurse": 40,
                          "midwife": 14, "lab_technician": 6, "pharmacist": 3},
    "Health Centre": {"medical_doctor": 0, "clinical_officer": 3, "nurse": 8, "midwife": 4,
                      "lab_technician": 2, "pharmacist": 1},
    "Health Post": {"medical_doctor": 0, "clinical_officer": 0, "nurse": 2, "midwife": 1,
                    "lab_technician": 0, "pharmacist": 0},
}  # fmt: skip

# The country's bounding box (longitude, latitude): a fictional place in East Africa.
WEST, SOUTH, EAST, NORTH = 30.0, -4.0, 34.0, 0.0


@dataclass(frozen=True)
class OrgUnit:
    uid: str
    code: str
    name: str
    level: int
    parent_uid: str | None
    path: str
    geometry: dict[str, object] | None = None
    facility_type: str | None = None
    ownership: str | None = None
    base_population: int = 0
    """Catchment population in BASE_YEAR (facilities only; others are sums)."""
    has_emr: bool = False
    has_lab: bool = False


@dataclass(frozen=True)
class CommunityHealthWorker:
    chw_id: str
    name: str
    facility_uid: str
    households: int


@dataclass(frozen=True)
class Country:
    seed: int
    name: str
    org_units: tuple[OrgUnit, ...]
    chws: tuple[CommunityHealthWorker, ...] = ()
    establishment: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    """facility uid -> cadre -> (approved posts, filled posts)."""

    @cached_property
    def by_uid(self) -> dict[str, OrgUnit]:
        return {ou.uid: ou for ou in self.org_units}

    def at_level(self, level: int) -> tuple[OrgUnit, ...]:
        return tuple(ou for ou in self.org_units if ou.level == level)

    @property
    def root(self) -> OrgUnit:
        return self.org_units[0]

    @property
    def regions(self) -> tuple[OrgUnit, ...]:
        return self.at_level(2)

    @property
    def districts(self) -> tuple[OrgUnit, ...]:
        return self.at_level(3)

    @property
    def facilities(self) -> tuple[OrgUnit, ...]:
        return self.at_level(4)

    @cached_property
    def children(self) -> dict[str, tuple[OrgUnit, ...]]:
        grouped: dict[str, list[OrgUnit]] = {}
        for ou in self.org_units:
            if ou.parent_uid is not None:
                grouped.setdefault(ou.parent_uid, []).append(ou)
        return {uid: tuple(units) for uid, units in grouped.items()}

    def facilities_in(self, uid: str) -> tuple[OrgUnit, ...]:
        """Facilities in the subtree of ``uid`` (itself if it is a facility)."""
        return tuple(f for f in self.facilities if f"/{uid}" in f.path)

    def district_of(self, facility_uid: str) -> OrgUnit:
        facility = self.by_uid[facility_uid]
        assert facility.parent_uid is not None
        return self.by_uid[facility.parent_uid]

    def population(self, uid: str, year: int) -> int:
        """Population of an org unit's catchment in ``year`` (growing from BASE_YEAR)."""
        growth = (1 + POPULATION_GROWTH) ** (year - BASE_YEAR)
        return sum(round(f.base_population * growth) for f in self.facilities_in(uid))


def make_uid(rng: np.random.Generator, taken: set[str]) -> str:
    """A DHIS2-style UID: 11 characters, a letter first, then letters and digits."""
    while True:
        first = _UID_FIRST[int(rng.integers(len(_UID_FIRST)))]
        rest = "".join(_UID_REST[int(i)] for i in rng.integers(len(_UID_REST), size=10))
        uid = first + rest
        if uid not in taken:
            taken.add(uid)
            return uid


def _district_name(index: int) -> str:
    root = DISTRICT_ROOTS[index % len(DISTRICT_ROOTS)]
    round_ = index // len(DISTRICT_ROOTS)
    suffix = PLACE_SUFFIXES[round_ % len(PLACE_SUFFIXES)]
    extra = f" {round_ // len(PLACE_SUFFIXES) + 1}" if round_ >= len(PLACE_SUFFIXES) else ""
    return f"{root}{suffix}{extra}"


def _region_name(index: int) -> str:
    base = REGION_NAMES[index % len(REGION_NAMES)]
    return base if index < len(REGION_NAMES) else f"{base} {index // len(REGION_NAMES) + 1}"


class _Grid:
    """Districts as cells of a jittered grid, so neighbouring polygons share their corners
    and the country is tiled without gaps (enough for a choropleth without map tiles)."""

    def __init__(self, cells: int, rng: np.random.Generator) -> None:
        self.cols = math.ceil(math.sqrt(cells))
        self.rows = math.ceil(cells / self.cols)
        dx = (EAST - WEST) / self.cols
        dy = (NORTH - SOUTH) / self.rows
        self.vertices: dict[tuple[int, int], tuple[float, float]] = {}
        for r in range(self.rows + 1):
            for c in range(self.cols + 1):
                inner = 0 < r < self.rows and 0 < c < self.cols
                jx = float(rng.uniform(-0.25, 0.25)) * dx if inner else 0.0
                jy = float(rng.uniform(-0.25, 0.25)) * dy if inner else 0.0
                self.vertices[(r, c)] = (
                    round(WEST + c * dx + jx, 5),
                    round(NORTH - r * dy + jy, 5),
                )

    def cell(self, index: int) -> tuple[int, int]:
        return divmod(index, self.cols)

    def corners(self, index: int) -> list[tuple[float, float]]:
        r, c = self.cell(index)
        return [self.vertices[(r, c)], self.vertices[(r, c + 1)],
                self.vertices[(r + 1, c + 1)], self.vertices[(r + 1, c)]]  # fmt: skip

    def polygon(self, index: int) -> dict[str, object]:
        ring = [list(p) for p in self.corners(index)]
        # GeoJSON rings are closed and run counter-clockwise.
        ring = [ring[0], ring[3], ring[2], ring[1], ring[0]]
        return {"type": "Polygon", "coordinates": [ring]}

    def point_inside(self, index: int, u: float, v: float) -> dict[str, object]:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = self.corners(index)
        top = (x0 + (x1 - x0) * u, y0 + (y1 - y0) * u)
        bottom = (x3 + (x2 - x3) * u, y3 + (y2 - y3) * u)
        x = top[0] + (bottom[0] - top[0]) * v
        y = top[1] + (bottom[1] - top[1]) * v
        return {"type": "Point", "coordinates": [round(x, 5), round(y, 5)]}


def build_country(
    seed: int = 7,
    *,
    districts: int = 20,
    regions: int | None = None,
    facilities_per_district: tuple[int, int] = (10, 20),
    name: str = "Demoland",
) -> Country:
    """A country of ``districts`` districts grouped into ``regions`` regions (about five
    districts each by default), each district with a hospital, one or more health centres
    and health posts: about 15 facilities per district by default."""
    if districts < 1:
        raise ValueError("a country needs at least one district")
    regions = regions or max(1, round(districts / 5))
    regions = min(regions, districts)
    rng = np.random.default_rng([seed, 1])
    taken: set[str] = set()
    grid = _Grid(districts, rng)

    country_uid = make_uid(rng, taken)
    outline = [list(grid.vertices[(0, c)]) for c in range(grid.cols + 1)]
    outline += [list(grid.vertices[(r, grid.cols)]) for r in range(1, grid.rows + 1)]
    outline += [list(grid.vertices[(grid.rows, c)]) for c in range(grid.cols - 1, -1, -1)]
    outline += [list(grid.vertices[(r, 0)]) for r in range(grid.rows - 1, -1, -1)]
    units: list[OrgUnit] = [
        OrgUnit(
            country_uid, "DL", name, 1, None, f"/{country_uid}",
            geometry={"type": "Polygon", "coordinates": [outline[::-1]]},
        )
    ]  # fmt: skip

    # Districts are dealt to regions in grid order, so each region is a contiguous block.
    per_region = [
        districts // regions + (1 if r < districts % regions else 0) for r in range(regions)
    ]
    chws: list[CommunityHealthWorker] = []
    establishment: dict[str, dict[str, tuple[int, int]]] = {}
    district_index = 0
    for r, count in enumerate(per_region):
        region_uid = make_uid(rng, taken)
        region_path = f"/{country_uid}/{region_uid}"
        region_cells = list(range(district_index, district_index + count))
        units.append(
            OrgUnit(
                region_uid, f"DL_R{r + 1:02d}", f"{_region_name(r)} Region", 2, country_uid,
                region_path,
                geometry={"type": "MultiPolygon",
                          "coordinates": [grid.polygon(i)["coordinates"] for i in region_cells]},
            )
        )  # fmt: skip
        for _ in range(count):
            district_uid = make_uid(rng, taken)
            district_code = f"DL_D{district_index + 1:03d}"
            district_name = _district_name(district_index)
            district_path = f"{region_path}/{district_uid}"
            units.append(
                OrgUnit(
                    district_uid, district_code, f"{district_name} District", 3, region_uid,
                    district_path, geometry=grid.polygon(district_index),
                )
            )  # fmt: skip
            n_facilities = int(
                rng.integers(facilities_per_district[0], facilities_per_district[1] + 1)
            )
            n_centres = max(1, round(n_facilities * 0.3))
            for f in range(n_facilities):
                facility_type = (
                    "District Hospital"
                    if f == 0
                    else "Health Centre"
                    if f <= n_centres
                    else "Health Post"
                )
                ownership = OWNERSHIPS[int(rng.choice(3, p=[0.72, 0.18, 0.10]))]
                if facility_type == "District Hospital":
                    ownership = "Public"
                population = {
                    "District Hospital": rng.integers(25_000, 45_000),
                    "Health Centre": rng.integers(10_000, 25_000),
                    "Health Post": rng.integers(3_000, 10_000),
                }[facility_type]
                facility_uid = make_uid(rng, taken)
                code = f"{district_code}_{FACILITY_TYPE_CODES[facility_type]}{f + 1:02d}"
                has_emr = facility_type == "District Hospital" or (
                    facility_type == "Health Centre" and bool(rng.random() < 0.3)
                )
                units.append(
                    OrgUnit(
                        facility_uid,
                        code,
                        f"{district_name} {facility_type} {f + 1}",
                        4,
                        district_uid,
                        f"{district_path}/{facility_uid}",
                        geometry=grid.point_inside(
                            district_index,
                            float(rng.uniform(0.1, 0.9)),
                            float(rng.uniform(0.1, 0.9)),
                        ),
                        facility_type=facility_type,
                        ownership=ownership,
                        base_population=int(population),
                        has_emr=has_emr,
                        has_lab=facility_type == "District Hospital",
                    )
                )
                establishment[facility_uid] = {
                    cadre: (posts, int(rng.binomial(posts, rng.uniform(0.6, 0.95))) if posts else 0)
                    for cadre, posts in APPROVED_POSTS[facility_type].items()
                }
                if facility_type != "District Hospital":
                    for c in range(int(rng.integers(2, 7))):
                        chws.append(
                            CommunityHealthWorker(
                                chw_id=f"CHW-{code}-{c + 1:02d}",
                                name=f"CHW {c + 1} of {code}",
                                facility_uid=facility_uid,
                                households=int(rng.integers(60, 160)),
                            )
                        )
            district_index += 1
    return Country(
        seed=seed,
        name=name,
        org_units=tuple(units),
        chws=tuple(chws),
        establishment=establishment,
    )
