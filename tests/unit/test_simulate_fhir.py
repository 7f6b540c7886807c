"""The simulated FHIR servers (EMR and iHRIS): valid R4 resources, resolvable references,
correct search paging, determinism, the workforce establishment and the injected defects."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from pipelines.simulate.context import Simulation, Window
from pipelines.simulate.country import CADRES, build_country
from pipelines.simulate.fhir import (
    CADRE_OCCUPATIONS,
    EMR_BASE,
    EMR_TYPES,
    ICD10_INVALID,
    IHRIS_BASE,
    IHRIS_TYPES,
    ISCO08,
    LOINC_NONEXISTENT,
    OPENMRS_ID_ALPHABET,
    OPENMRS_ID_SYSTEM,
    PAGE_SIZE,
    UCUM,
    write_fhir,
)

SERVERS = {"emr": (EMR_BASE, EMR_TYPES), "ihris": (IHRIS_BASE, IHRIS_TYPES)}
# Injected defects that intentionally fail the R4 resource model, by expected rule. None do:
# an unknown LOINC or ICD-10 code, a missing (optional) Observation.subject and a future
# birthDate are all data errors inside well-formed resources.
MODEL_INVALID_RULES: frozenset[str] = frozenset()
VITAL_UNITS = {"8310-5": "Cel", "8867-4": "/min", "29463-7": "kg"}
BLOOD_PRESSURE = {"85354-9": {"8480-6", "8462-4"}}
VIRAL_LOAD = "20447-9"

Resource = dict[str, Any]


def small_simulation(*, seed: int = 7, weeks: int = 20) -> Simulation:
    country = build_country(7, districts=2, regions=1, facilities_per_district=(3, 4))
    return Simulation(seed, country, Window("2026W5", weeks))


@dataclass(frozen=True)
class Output:
    root: Path
    sim: Simulation
    counts: dict[str, int]

    def server_dir(self, server: str) -> Path:
        return self.root / "fhir" / server

    def resources(self, server: str, resource_type: str) -> list[Resource]:
        path = self.server_dir(server) / "ndjson" / f"{resource_type}.ndjson"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def by_id(self, server: str, resource_type: str) -> dict[str, Resource]:
        return {r["id"]: r for r in self.resources(server, resource_type)}

    def pages(self, server: str, resource_type: str) -> list[Resource]:
        folder = self.server_dir(server) / "search" / resource_type
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.iterdir())]


def generate(root: Path, sim: Simulation) -> Output:
    return Output(root, sim, write_fhir(sim, root))


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Output:
    return generate(tmp_path_factory.mktemp("fhir"), small_simulation())


@pytest.fixture(scope="module")
def two_years(tmp_path_factory: pytest.TempPathFactory) -> Output:
    """Long enough for yearly viral loads and for workers to leave."""
    return generate(tmp_path_factory.mktemp("fhir2y"), small_simulation(weeks=104))


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.tzinfo is not None, text
    return moment


def window_bounds(sim: Simulation) -> tuple[datetime, datetime]:
    start = datetime.combine(sim.window.start, time(), UTC)
    return start, datetime.combine(sim.window.end, time(23, 59, 59), UTC)


def defect_ids(out: Output, rules: frozenset[str]) -> set[str]:
    return {d["record"]["id"] for d in out.sim.truth.defects if d["expected_rule"] in rules}


def test_every_resource_type_has_its_files_and_counts(output: Output) -> None:
    for server, (_base, types) in SERVERS.items():
        for resource_type in types:
            resources = output.resources(server, resource_type)
            assert output.counts[f"{server}/{resource_type}"] == len(resources)
            assert all(r["resourceType"] == resource_type for r in resources)
            assert output.pages(server, resource_type), (server, resource_type)
    base = {k for k in output.counts if not k.startswith("increment/")}
    assert base == {f"{s}/{t}" for s, (_b, types) in SERVERS.items() for t in types}
    for resource_type in EMR_TYPES:
        assert output.counts[f"emr/{resource_type}"] > 0, resource_type


def test_every_resource_validates_against_the_r4_model(output: Output) -> None:
    skipped = defect_ids(output, MODEL_INVALID_RULES)
    for server, (_base, types) in SERVERS.items():
        for resource_type in types:
            model = get_fhir_model_class(resource_type)
            for resource in output.resources(server, resource_type):
                if resource["id"] not in skipped:
                    model.model_validate(resource)


def test_ids_are_unique_and_references_resolve(output: Output) -> None:
    for server, (_base, types) in SERVERS.items():
        known: set[str] = set()
        for resource_type in types:
            ids = [r["id"] for r in output.resources(server, resource_type)]
            assert len(ids) == len(set(ids)), resource_type
            known |= {f"{resource_type}/{i}" for i in ids}
        for resource_type in types:
            for resource in output.resources(server, resource_type):
                for reference in references(resource):
                    assert reference in known, (server, resource_type, reference)


def test_search_pages_hold_the_ndjson_in_order_and_chain(output: Output) -> None:
    multi_page = 0
    for server, (base, types) in SERVERS.items():
        for resource_type in types:
            resources = output.resources(server, resource_type)
            pages = output.pages(server, resource_type)
            assert len(pages) == max(1, -(-len(resources) // PAGE_SIZE))
            multi_page += len(pages) > 1
            entries = [e for page in pages for e in page.get("entry", [])]
            assert [e["resource"] for e in entries] == resources
            for entry in entries:
                assert entry["fullUrl"] == f"{base}/{resource_type}/{entry['resource']['id']}"
                assert entry["search"] == {"mode": "match"}
            for number, page in enumerate(pages):
                links = {link["relation"]: link["url"] for link in page["link"]}
                assert page["resourceType"] == "Bundle" and page["type"] == "searchset"
                assert page["total"] == len(resources)
                assert len(page.get("entry", [])) <= PAGE_SIZE
                assert links["self"].startswith(f"{base}/{resource_type}?_count={PAGE_SIZE}")
                if number + 1 < len(pages):
                    next_self = {x["relation"]: x["url"] for x in pages[number + 1]["link"]}
                    assert links["next"] == next_self["self"]
                else:
                    assert "next" not in links
            get_fhir_model_class("Bundle").model_validate(pages[0])
    assert multi_page, "no resource type spans two pages"


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", small_simulation())
    second = generate(tmp_path / "b", small_simulation())
    other = generate(tmp_path / "c", small_simulation(seed=8))
    files = sorted(p.relative_to(first.root) for p in first.root.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(second.root) for p in second.root.rglob("*") if p.is_file()
    )
    for relative in files:
        assert (first.root / relative).read_bytes() == (second.root / relative).read_bytes()
    assert first.sim.truth.to_json() == second.sim.truth.to_json()
    patients = Path("fhir/emr/ndjson/Patient.ndjson")
    assert (first.root / patients).read_bytes() != (other.root / patients).read_bytes()


def test_rewriting_leaves_no_stale_pages(tmp_path: Path) -> None:
    generate(tmp_path, small_simulation(weeks=104))
    out = generate(tmp_path, small_simulation(weeks=20))
    for server, (_base, types) in SERVERS.items():
        for resource_type in types:
            entries = sum(len(p.get("entry", [])) for p in out.pages(server, resource_type))
            assert entries == out.counts[f"{server}/{resource_type}"]


def test_meta_is_versioned_inside_the_window_and_files_are_in_update_order(
    output: Output,
) -> None:
    start, end = window_bounds(output.sim)
    for server, (_base, types) in SERVERS.items():
        for resource_type in types:
            resources = output.resources(server, resource_type)
            keys = [(r["meta"]["lastUpdated"], r["id"]) for r in resources]
            assert keys == sorted(keys), resource_type
            for resource in resources:
                assert resource["meta"]["versionId"] in {"1", "2"}
                assert start <= parse_time(resource["meta"]["lastUpdated"]) <= end


def test_clinical_times_agree_with_their_encounter(output: Output) -> None:
    encounters = output.by_id("emr", "Encounter")

    def period(resource: Resource, key: str) -> tuple[datetime, datetime]:
        encounter = encounters[resource[key]["reference"].removeprefix("Encounter/")]
        return parse_time(encounter["period"]["start"]), parse_time(encounter["period"]["end"])

    for observation in output.resources("emr", "Observation"):
        begin, finish = period(observation, "encounter")
        effective = parse_time(observation["effectiveDateTime"])
        assert begin <= effective <= finish
        assert parse_time(observation["meta"]["lastUpdated"]) >= effective
        if "issued" in observation:
            assert parse_time(observation["issued"]) > finish
    for condition in output.resources("emr", "Condition"):
        begin, finish = period(condition, "encounter")
        assert begin <= parse_time(condition["recordedDate"]) <= finish
        assert date.fromisoformat(condition["onsetDateTime"]) <= begin.date()
    for dispense in output.resources("emr", "MedicationDispense"):
        begin, finish = period(dispense, "context")
        prepared = parse_time(dispense["whenPrepared"])
        assert begin <= prepared <= parse_time(dispense["whenHandedOver"]) <= finish
    for encounter in encounters.values():
        assert parse_time(encounter["period"]["start"]).weekday() < 5  # open Monday to Friday
        assert parse_time(encounter["meta"]["lastUpdated"]) >= parse_time(
            encounter["period"]["end"]
        )


def test_resources_of_an_encounter_share_its_patient(output: Output) -> None:
    encounters = output.by_id("emr", "Encounter")
    for resource_type, key in (
        ("Observation", "encounter"),
        ("Condition", "encounter"),
        ("MedicationDispense", "context"),
    ):
        for resource in output.resources("emr", resource_type):
            encounter = encounters[resource[key]["reference"].removeprefix("Encounter/")]
            if "subject" in resource:
                assert resource["subject"] == encounter["subject"]


def test_patients_carry_synthetic_pii(output: Output) -> None:
    for patient in output.resources("emr", "Patient"):
        name = patient["name"][0]
        assert name["family"] and name["given"]
        assert patient["telecom"][0]["system"] == "phone"
        assert patient["telecom"][0]["value"].startswith("+")
        assert patient["address"][0]["line"] and patient["address"][0]["district"]
        date.fromisoformat(patient["birthDate"])
        identifier = patient["identifier"][0]
        assert identifier["system"] == OPENMRS_ID_SYSTEM
        assert luhn_mod_30_valid(identifier["value"])


def luhn_mod_30_valid(value: str) -> bool:
    """Luhn mod N over the whole identifier, check character included, sums to 0 mod N."""
    n = len(OPENMRS_ID_ALPHABET)
    total = 0
    for position, char in enumerate(reversed(value)):
        addend = OPENMRS_ID_ALPHABET.index(char) * (2 if position % 2 == 1 else 1)
        total += addend // n + addend % n
    return total % n == 0


def test_locations_map_to_dhis2_org_units(output: Output) -> None:
    country = output.sim.country
    for server, expected in (
        ("emr", {f.uid for f in country.facilities if f.has_emr}),
        ("ihris", {f.uid for f in country.facilities}),
    ):
        for resource_type in ("Location", "Organization"):
            seen = set()
            for resource in output.resources(server, resource_type):
                systems = {i["system"]: i["value"] for i in resource["identifier"]}
                uid = systems["https://dhis2.org/org-unit-uid"]
                assert systems["https://dhis2.org/org-unit-code"] == country.by_uid[uid].code
                seen.add(uid)
            assert seen == expected, (server, resource_type)


def active_roles(out: Output) -> Counter[tuple[str, str]]:
    """Active PractitionerRoles per (facility uid, cadre), read back through the Location's
    DHIS2 identifier and the role's ISCO-08 code."""
    facility_of = {
        location["id"]: next(
            i["value"] for i in location["identifier"] if i["system"].endswith("org-unit-uid")
        )
        for location in out.resources("ihris", "Location")
    }
    cadre_of = {occupation.code: cadre for cadre, (occupation, _t) in CADRE_OCCUPATIONS.items()}
    counts: Counter[tuple[str, str]] = Counter()
    for role in out.resources("ihris", "PractitionerRole"):
        coding = role["code"][0]["coding"][0]
        assert coding["system"] == ISCO08
        if role["active"]:
            assert "end" not in role["period"]
            location = role["location"][0]["reference"].removeprefix("Location/")
            counts[(facility_of[location], cadre_of[coding["code"]])] += 1
    return counts


@pytest.mark.parametrize("fixture", ["output", "two_years"])
def test_active_workforce_equals_the_filled_establishment(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    out: Output = request.getfixturevalue(fixture)
    assert set(CADRE_OCCUPATIONS) == set(CADRES)
    expected = Counter(
        {
            (uid, cadre): filled
            for uid, posts in out.sim.country.establishment.items()
            for cadre, (_approved, filled) in posts.items()
            if filled
        }
    )
    assert active_roles(out) == expected


def test_leavers_have_an_end_inside_the_window(two_years: Output) -> None:
    practitioners = two_years.by_id("ihris", "Practitioner")
    leavers = [r for r in two_years.resources("ihris", "PractitionerRole") if not r["active"]]
    assert leavers, "no attrition simulated"
    window = two_years.sim.window
    for role in leavers:
        start = date.fromisoformat(role["period"]["start"])
        end = date.fromisoformat(role["period"]["end"])
        assert start < end and window.start <= end <= window.end
        practitioner = practitioners[
            role["practitioner"]["reference"].removeprefix("Practitioner/")
        ]
        assert practitioner["active"] is False


def test_vital_signs_use_loinc_and_ucum(output: Output) -> None:
    seen = set()
    for observation in output.resources("emr", "Observation"):
        code = observation["code"]["coding"][0]["code"]
        seen.add(code)
        if code in VITAL_UNITS:
            assert observation["valueQuantity"]["system"] == UCUM
            assert observation["valueQuantity"]["code"] == VITAL_UNITS[code]
        elif code in BLOOD_PRESSURE:
            parts = {c["code"]["coding"][0]["code"]: c for c in observation["component"]}
            assert set(parts) == BLOOD_PRESSURE[code]
            assert all(p["valueQuantity"]["code"] == "mm[Hg]" for p in parts.values())
            assert (
                parts["8480-6"]["valueQuantity"]["value"]
                > parts["8462-4"]["valueQuantity"]["value"]
            )
    assert set(VITAL_UNITS) | set(BLOOD_PRESSURE) <= seen


def test_viral_loads_and_medicines_follow_the_diagnoses(two_years: Output) -> None:
    conditions = two_years.resources("emr", "Condition")
    with_hiv = {
        c["subject"]["reference"] for c in conditions if c["code"]["coding"][0]["code"] == "B24"
    }
    malaria_encounters = {
        c["encounter"]["reference"]
        for c in conditions
        if c["code"]["coding"][0]["code"] in {"B50.9", "B54", ICD10_INVALID}
    }
    loads = [
        o
        for o in two_years.resources("emr", "Observation")
        if o["code"]["coding"][0]["code"] == VIRAL_LOAD
    ]
    values = [o["valueQuantity"]["value"] for o in loads]
    assert any(v < 1000 for v in values) and any(v >= 1000 for v in values)
    for observation in loads:
        assert observation["valueQuantity"]["code"] == "{copies}/mL"
        assert (
            observation.get("subject", {"reference": next(iter(with_hiv))})["reference"] in with_hiv
        )
    drugs: Counter[str] = Counter()
    for dispense in two_years.resources("emr", "MedicationDispense"):
        drug = dispense["medicationCodeableConcept"]["coding"][0]["code"]
        drugs[drug] += 1
        if drug == "J05AR27":
            assert dispense["subject"]["reference"] in with_hiv
        else:
            assert drug == "P01BF01" and dispense["context"]["reference"] in malaria_encounters
    assert drugs["J05AR27"] and drugs["P01BF01"]


def test_defects_are_recorded_and_present(output: Output) -> None:
    defects = {d["expected_rule"]: d for d in output.sim.truth.defects}
    assert set(defects) == {"loinc_known", "icd10_known", "subject_present", "date_not_in_future"}
    assert {d["source"] for d in defects.values()} == {"fhir"}

    def resource(rule: str) -> Resource:
        record = defects[rule]["record"]
        found = output.by_id("emr", record["resource_type"])[record["id"]]
        assert found["meta"]["versionId"] == record["version"]
        assert defects[rule]["entity"] == record["resource_type"].lower()
        return found

    assert resource("loinc_known")["code"]["coding"][0]["code"] == LOINC_NONEXISTENT
    assert resource("icd10_known")["code"]["coding"][0]["code"] == ICD10_INVALID
    assert "subject" not in resource("subject_present")
    assert date.fromisoformat(resource("date_not_in_future")["birthDate"]) > output.sim.window.end
    # Each defect is injected once: nothing else carries it.
    observations = output.resources("emr", "Observation")
    assert sum("subject" not in o for o in observations) == 1
    assert sum(o["code"]["coding"][0]["code"] == LOINC_NONEXISTENT for o in observations) == 1
    future = [
        p
        for p in output.resources("emr", "Patient")
        if date.fromisoformat(p["birthDate"]) > output.sim.window.end
    ]
    assert len(future) == 1


@pytest.mark.slow
def test_default_country_stays_small(tmp_path: Path) -> None:
    sim = Simulation(7, build_country(7), Window())
    counts = write_fhir(sim, tmp_path)
    size = sum(p.stat().st_size for p in (tmp_path / "fhir").rglob("*") if p.is_file())
    assert size < 40_000_000
    assert 10 <= counts["emr/Patient"] / counts["emr/Location"] <= 60  # tens per EMR site


def test_the_increment_holds_what_truth_says_dated_after_the_window(output: Output) -> None:
    """New resources, next versions of base ones, and deletions of base ones, each dated
    after the window but the one stamped at the base data's latest instant."""
    notes = output.sim.truth.notes["fhir_increment"]
    window_end = datetime.combine(output.sim.window.end, time(23, 59, 59), UTC)
    defective = {d["record"]["id"] for d in output.sim.truth.defects if d["source"] == "fhir"}
    for server, changes in notes["servers"].items():
        folder = output.root / notes["folder"] / server
        written = {
            (r["resourceType"], r["id"]): r
            for path in (folder / "ndjson").glob("*.ndjson")
            for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())
        }
        deleted = [json.loads(x) for x in (folder / "deleted.ndjson").read_text().splitlines()]
        expected = {(t, i) for t, ids in changes["new"].items() for i in ids}
        expected |= {(t, r["id"]) for t, rs in changes["corrected"].items() for r in rs}
        assert set(written) == expected and expected
        for resource_type, ids in changes["new"].items():
            assert not set(ids) & set(output.by_id(server, resource_type))
        for resource_type, records in changes["corrected"].items():
            base = output.by_id(server, resource_type)
            for record in records:
                old, new = base[record["id"]], written[(resource_type, record["id"])]
                assert int(new["meta"]["versionId"]) == int(old["meta"]["versionId"]) + 1
                assert new["meta"]["lastUpdated"] > old["meta"]["lastUpdated"] or (
                    record["id"] == changes["at_cursor"]["id"]
                )
                assert new != {**old, "meta": new["meta"]}  # something really changed
        gone = {b["entry"][0]["request"]["url"] for b in deleted}
        assert gone == {f"{t}/{i}" for t, ids in changes["deleted"].items() for i in ids}
        for (resource_type, _), resource in written.items():
            get_fhir_model_class(resource_type).model_validate(resource)
        for bundle in deleted:
            get_fhir_model_class("Bundle").model_validate(bundle)
            assert bundle["type"] == "transaction"
            assert bundle["entry"][0]["request"]["method"] == "DELETE"
        assert not defective & ({i for _, i in written} | {u.split("/")[1] for u in gone})
        latest = max(
            r["meta"]["lastUpdated"]
            for t in SERVERS[server][1]
            for r in output.resources(server, t)
        )
        at = changes["at_cursor"]
        assert at["last_updated"] == latest
        stamps = [r["meta"]["lastUpdated"] for r in written.values() if r["id"] != at["id"]]
        stamps += [b["meta"]["lastUpdated"] for b in deleted]
        assert all(datetime.fromisoformat(s) > window_end for s in stamps)
