"""What changes on the simulated FHIR servers after the window: ``increments/1/fhir/``.

Layout, per server (``emr``, ``ihris``), mirroring the base folder::

    increments/1/fhir/<server>/ndjson/<ResourceType>.ndjson   new resources and new versions
    increments/1/fhir/<server>/deleted.ndjson                 deletions

- New resources have ``meta.versionId`` "1"; a corrected resource comes back whole with the
  next ``versionId`` and a later ``meta.lastUpdated`` (an Observation's value amended, status
  ``amended``; a patient's or worker's phone changed; a worker leaving, their role ended).
  Lines are ordered by ``meta.lastUpdated`` then ``id``, as in the base files.
- ``deleted.ndjson`` holds one ``transaction`` Bundle a line, in the Bulk Data manifest's
  ``deleted`` format: one entry whose ``request`` is ``DELETE <Type>/<id>``;
  ``Bundle.meta.lastUpdated`` is when the resource was deleted.
- Every change is dated in the four weeks after the window, but one: a correction stamped
  at exactly the base data's latest ``meta.lastUpdated`` (the instant an incremental
  reader's cursor holds), committed after a reader could have seen the base data. Only a
  pull that re-reads from before its cursor catches it.

``truth.json`` ``notes.fhir_increment`` lists, per server and resource type, the ids of the
new, corrected (with their new version) and deleted resources, their counts, and the
at-cursor correction. Injected defects are never changed, so the defect truth still holds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.simulate.context import Simulation

Resource = dict[str, Any]
Servers = dict[str, dict[str, list[Resource]]]
"""Server name -> resource type -> resources (the base data, not modified here)."""

INCREMENT = 1
FOLDER = f"increments/{INCREMENT}/fhir"
INCREMENT_DAYS = 28
NEW_ENCOUNTERS = 2
AMENDED_OBSERVATIONS = 3
DELETED_OBSERVATIONS = 2
ENDED_ROLES = 2


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _uuid(rng: np.random.Generator) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _phone(rng: np.random.Generator) -> str:
    # +999 is an ITU code reserved for future use: no real subscriber can be reached.
    return "+9997" + "".join(str(int(d)) for d in rng.integers(0, 10, size=8))


def _reference_id(resource: Resource, name: str) -> str | None:
    reference = (resource.get(name) or {}).get("reference")
    return reference.split("/", 1)[1] if isinstance(reference, str) and "/" in reference else None


class _Changes:
    """One server's increment: new versions, deletions, and what truth.json says of them."""

    def __init__(self, resources: dict[str, list[Resource]], untouchable: set[str]) -> None:
        self.resources = resources
        self.taken = set(untouchable)
        self.written: list[Resource] = []
        self.deleted: list[Resource] = []
        self.truth: dict[str, dict[str, list[Any]]] = {"new": {}, "corrected": {}, "deleted": {}}
        self.at_cursor: dict[str, str] | None = None

    def candidates(self, resource_type: str, test: Callable[[Resource], bool]) -> list[Resource]:
        found = [
            r
            for r in self.resources.get(resource_type, [])
            if r["id"] not in self.taken and test(r)
        ]
        return sorted(found, key=lambda r: str(r["id"]))

    def choose(self, rng: np.random.Generator, options: list[Resource], n: int) -> list[Resource]:
        picked = [options[int(i)] for i in sorted(rng.permutation(len(options))[:n])]
        self.taken |= {r["id"] for r in picked}
        return picked

    def add(self, resource: Resource) -> None:
        self.taken.add(resource["id"])
        self.written.append(resource)
        self.truth["new"].setdefault(resource["resourceType"], []).append(resource["id"])

    def correct(
        self, resource: Resource, when: datetime, change: Callable[[Resource], None]
    ) -> Resource:
        """The resource's next version, changed by ``change``, last updated ``when``."""
        self.taken.add(resource["id"])
        version = copy.deepcopy(resource)
        change(version)
        number = str(int(resource["meta"]["versionId"]) + 1)
        version["meta"] = {**version["meta"], "versionId": number, "lastUpdated": _instant(when)}
        self.written.append(version)
        record = {"id": resource["id"], "version": number}
        self.truth["corrected"].setdefault(resource["resourceType"], []).append(record)
        return version

    def delete(self, resource: Resource, when: datetime) -> None:
        self.taken.add(resource["id"])
        kind, rid = resource["resourceType"], resource["id"]
        self.deleted.append(
            {
                "resourceType": "Bundle",
                "id": f"deleted-{rid}",
                "meta": {"lastUpdated": _instant(when)},
                "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": f"{kind}/{rid}"}}],
            }
        )
        self.truth["deleted"].setdefault(kind, []).append(rid)


# --- what changes --------------------------------------------------------------------------


def _amend_value(rng: np.random.Generator) -> Callable[[Resource], None]:
    """A result re-entered: the measured value corrected, the status ``amended``."""
    step = float(rng.choice([-1.0, 1.0])) * float(rng.integers(1, 4))

    def change(observation: Resource) -> None:
        quantity = observation["valueQuantity"]
        value = quantity["value"]
        quantity["value"] = (
            int(value + step) if isinstance(value, int) else round(value + step / 10, 1)
        )
        observation["status"] = "amended"

    return change


def _new_phone(rng: np.random.Generator) -> Callable[[Resource], None]:
    phone = _phone(rng)

    def change(person: Resource) -> None:
        for telecom in person.get("telecom") or []:
            if telecom.get("system") == "phone":
                telecom["value"] = phone

    return change


def _end_role(day: str) -> Callable[[Resource], None]:
    def change(role: Resource) -> None:
        role["active"] = False
        role["period"] = {**role.get("period", {}), "end": day}

    return change


def _later_end(minutes: int) -> Callable[[Resource], None]:
    """A visit closed later than first recorded."""

    def change(encounter: Resource) -> None:
        end = encounter.get("period", {}).get("end")
        if end:
            encounter["period"]["end"] = _shifted(end, timedelta(minutes=minutes))

    return change


CORRECTORS: dict[str, Callable[[np.random.Generator, datetime], Callable[[Resource], None]]] = {
    "Observation": lambda rng, _: _amend_value(rng),
    "Encounter": lambda rng, _: _later_end(int(rng.integers(10, 40))),
    "Patient": lambda rng, _: _new_phone(rng),
    "Practitioner": lambda rng, _: _new_phone(rng),
    "PractitionerRole": lambda _, when: _end_role(when.date().isoformat()),
}


def _correctable(resource_type: str) -> Callable[[Resource], bool]:
    if resource_type == "Observation":
        # A result under the assay's limit ("<50") has no value to re-enter.
        return lambda r: (
            isinstance((r.get("valueQuantity") or {}).get("value"), int | float)
            and not r["valueQuantity"].get("comparator")
        )
    if resource_type == "PractitionerRole":
        return lambda r: bool(r.get("active"))
    return lambda r: True


def _shifted(text: str, delta: timedelta) -> str:
    return (datetime.fromisoformat(text) + delta).isoformat(timespec="seconds")


def _new_encounters(rng: np.random.Generator, changes: _Changes, end: datetime, n: int) -> None:
    """Follow-up visits after the window: recent encounters' patients come back on the same
    weekday, with their vital signs taken again (copies with new ids, dates moved on)."""
    recent = changes.candidates(
        "Encounter", lambda e: end - _parse(e["meta"]["lastUpdated"]) < timedelta(days=21)
    )
    observations: dict[str, list[Resource]] = {}
    for observation in changes.resources.get("Observation", []):
        visit_id = _reference_id(observation, "encounter")
        category = observation["category"][0]["coding"][0]["code"]
        if visit_id and category == "vital-signs" and observation["id"] not in changes.taken:
            observations.setdefault(visit_id, []).append(observation)
    for encounter in changes.choose(rng, recent, n):
        start = datetime.fromisoformat(encounter["period"]["start"])
        weeks = (end.date() - start.date()).days // 7 + 1
        delta = timedelta(weeks=weeks)
        visit = copy.deepcopy(encounter)
        visit["id"] = _uuid(rng)
        visit["period"] = {k: _shifted(v, delta) for k, v in encounter["period"].items()}
        updated = max(_parse(encounter["meta"]["lastUpdated"]) + delta, end + timedelta(hours=1))
        visit["meta"] = {"versionId": "1", "lastUpdated": _instant(updated)}
        changes.add(visit)
        for original in observations.get(encounter["id"], []):
            vital = copy.deepcopy(original)
            vital["id"] = _uuid(rng)
            vital["encounter"] = {"reference": f"Encounter/{visit['id']}"}
            vital["effectiveDateTime"] = _shifted(original["effectiveDateTime"], delta)
            vital["meta"] = {"versionId": "1", "lastUpdated": _instant(updated)}
            changes.add(vital)


def _later(rng: np.random.Generator, end: datetime) -> datetime:
    """A moment in the increment's weeks, to the minute."""
    minutes = int(rng.integers(60, (INCREMENT_DAYS - 1) * 24 * 60))
    return end.replace(second=0) + timedelta(minutes=minutes)


def _at_cursor(rng: np.random.Generator, changes: _Changes) -> None:
    """A correction stamped at exactly the latest ``meta.lastUpdated`` of the base data (of
    the type that holds it, so a search's per-type cursor is that instant too)."""
    latest = max(
        (r for rs in changes.resources.values() for r in rs),
        key=lambda r: (_parse(r["meta"]["lastUpdated"]), r["id"]),
    )
    kind = latest["resourceType"]
    when = _parse(latest["meta"]["lastUpdated"])
    if kind not in CORRECTORS:
        kind = "Observation"  # the instant still equals a Bulk Data cursor (transactionTime)
    options = changes.candidates(kind, _correctable(kind))
    if not options:
        return
    [resource] = changes.choose(rng, options, 1)
    version = changes.correct(resource, when, CORRECTORS[kind](rng, when))
    changes.at_cursor = {
        "resource_type": kind,
        "id": resource["id"],
        "version": version["meta"]["versionId"],
        "last_updated": version["meta"]["lastUpdated"],
    }


def _emr_changes(rng: np.random.Generator, changes: _Changes, end: datetime) -> None:
    _at_cursor(rng, changes)
    _new_encounters(rng, changes, end, NEW_ENCOUNTERS)
    amendable = changes.candidates("Observation", _correctable("Observation"))
    for observation in changes.choose(rng, amendable, AMENDED_OBSERVATIONS):
        changes.correct(observation, _later(rng, end), _amend_value(rng))
    for patient in changes.choose(rng, changes.candidates("Patient", lambda _: True), 1):
        changes.correct(patient, _later(rng, end), _new_phone(rng))
    # Entered in error: results and diagnoses nothing else refers to.
    for observation in changes.choose(
        rng, changes.candidates("Observation", lambda _: True), DELETED_OBSERVATIONS
    ):
        changes.delete(observation, _later(rng, end))
    for condition in changes.choose(rng, changes.candidates("Condition", lambda _: True), 1):
        changes.delete(condition, _later(rng, end))


def _ihris_changes(rng: np.random.Generator, changes: _Changes, end: datetime) -> None:
    _at_cursor(rng, changes)
    for role in changes.choose(
        rng, changes.candidates("PractitionerRole", _correctable("PractitionerRole")), ENDED_ROLES
    ):
        when = _later(rng, end)
        changes.correct(role, when, _end_role(when.date().isoformat()))
    for worker in changes.choose(rng, changes.candidates("Practitioner", lambda _: True), 1):
        changes.correct(worker, _later(rng, end), _new_phone(rng))
    # A record created twice by mistake: the worker and their role are deleted together.
    roles = changes.candidates(
        "PractitionerRole", lambda r: _reference_id(r, "practitioner") not in changes.taken
    )
    for role in changes.choose(rng, roles, 1):
        when = _later(rng, end)
        practitioner = _reference_id(role, "practitioner")
        for worker in changes.resources.get("Practitioner", []):
            if worker["id"] == practitioner:
                changes.delete(worker, when)
        changes.delete(role, when + timedelta(minutes=1))


PLANS: dict[str, Callable[[np.random.Generator, _Changes, datetime], None]] = {
    "emr": _emr_changes,
    "ihris": _ihris_changes,
}


# --- writing -------------------------------------------------------------------------------


def _dumps(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _lines(items: Iterable[Resource]) -> str:
    return "".join(_dumps(item) + "\n" for item in items)


def _order(resource: Resource) -> tuple[str, str]:
    return resource["meta"]["lastUpdated"], resource["id"]


def write_fhir_increment(
    sim: Simulation, servers: Servers, window_end: datetime, out_dir: Path
) -> dict[str, int]:
    """Write ``increments/1/fhir/<server>/`` for every server (layout in the module
    docstring) and describe it in ``sim.truth.notes["fhir_increment"]``."""
    untouchable = {str(d["record"]["id"]) for d in sim.truth.defects if d.get("source") == "fhir"}
    notes: dict[str, Any] = {"folder": FOLDER, "servers": {}}
    counts: dict[str, int] = {}
    for name, resources in servers.items():
        plan = PLANS.get(name)
        if plan is None:
            continue
        changes = _Changes(resources, untouchable)
        plan(sim.rng("fhir", "increment", name), changes, window_end)
        folder = out_dir / FOLDER / name
        (folder / "ndjson").mkdir(parents=True, exist_ok=True)
        by_type: dict[str, list[Resource]] = {}
        for resource in changes.written:
            by_type.setdefault(resource["resourceType"], []).append(resource)
        for resource_type in sorted(by_type):
            if True:
                path = folder / "ndjson" / f"{resource_type}.ndjson"
                path.write_text(
                    _lines(sorted(by_type[resource_type], key=_order)),
                    encoding="utf-8",
                    newline="\n",
                )
                counts[f"increment/{name}/{resource_type}"] = len(by_type[resource_type])
        deleted = sorted(changes.deleted, key=lambda b: (b["meta"]["lastUpdated"], b["id"]))
        (folder / "deleted.ndjson").write_text(_lines(deleted), encoding="utf-8", newline="\n")
        counts[f"increment/{name}/deleted"] = len(deleted)
        notes["servers"][name] = {
            **changes.truth,
            "counts": {
                kind: {t: len(ids) for t, ids in per_type.items()}
                for kind, per_type in changes.truth.items()
            },
            "at_cursor": changes.at_cursor,
        }
    sim.truth.notes["fhir_increment"] = notes
    return counts
