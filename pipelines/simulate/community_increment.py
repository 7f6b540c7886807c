"""What changes in ODK Central and KoboToolbox after the window: ``increments/1/``.

Written from the base files just written (so it never disturbs their random streams), in
the same layout::

    increments/1/odk/projects/1/forms/<xmlFormId>/submissions.json   OData document
    increments/1/kobo/assets/<uid>/data.json                          Kobo data response

ODK Central (``household_visit`` and ``cebs_signal``; ``referral_followup`` is unchanged):

- new submissions: a CHW's revisit of a household (a copy of a recent visit that made no
  referral, with a new ``__id`` and the day of the revisit), dated after the window;
- edits, as Central records them: the same ``__id``, a new ``meta.instanceID`` with the
  previous one as ``meta.deprecatedID``, ``__system.edits`` plus one, ``reviewState``
  "edited" and a later ``__system.updatedAt``; a household's member count corrected (a CEBS
  signal's number affected). One edit is stamped at exactly the latest ``updatedAt`` (or
  ``submissionDate``) of the base data: the instant an incremental reader's cursor holds;
- deletions: the row with ``__system.deletedAt`` set (visits that made no referral, so no
  follow-up is orphaned).

KoboToolbox: new results only. Kobo's v2 data API gives an edited result no marker a filter
can use (``_submission_time`` stays, there is no last-modified field to query) and a deleted
result simply disappears, so an incremental pull can only see new submissions (the Kobo
connector, connectors/kobo.py, documents the same limitation). New results have larger
``_id`` values, one of them the base data's latest ``_submission_time`` to the second.

``truth.json`` ``notes.community_increment`` lists the ids (ODK ``__id``, Kobo ``_id``) of
what is new, edited (with the new ``meta.instanceID``) and deleted, their counts, and the
at-cursor edit. Rows that carry an injected defect are never changed.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.simulate.context import Simulation

Record = dict[str, Any]

INCREMENT = 1
FOLDER = f"increments/{INCREMENT}"
INCREMENT_DAYS = 28
LOCAL = timedelta(hours=3)  # East Africa Time, as in the base files
ODK_CHANGES = {
    # form: (new, edited, deleted)
    "household_visit": (4, 3, 2),
    "cebs_signal": (0, 1, 1),
}
KOBO_NEW = 4


def _uuid4(rng: np.random.Generator) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _odk_stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _later(rng: np.random.Generator, end: datetime) -> datetime:
    """A moment in the increment's weeks, to the millisecond."""
    ms = int(rng.integers(3_600_000, (INCREMENT_DAYS - 1) * 86_400_000))
    return end.replace(microsecond=0) + timedelta(milliseconds=ms)


def _read(path: Path, key: str) -> list[Record]:
    rows: list[Record] = json.loads(path.read_text(encoding="utf-8"))[key]
    return rows


def _write(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")


def _pick(
    rng: np.random.Generator, rows: list[Record], taken: set[str], n: int, key: str = "__id"
) -> list[Record]:
    options = sorted((r for r in rows if str(r[key]) not in taken), key=lambda r: str(r[key]))
    picked = [options[int(i)] for i in sorted(rng.permutation(len(options))[:n])]
    taken |= {str(r[key]) for r in picked}
    return picked


# --- ODK -----------------------------------------------------------------------------------


def _changeable(row: Record) -> bool:
    """Live and (for visits) with no referral a follow-up could point at."""
    referral = row.get("referral")
    no_referral = not isinstance(referral, dict) or referral.get("referred") == "no"
    return row["__system"]["deletedAt"] is None and no_referral


def _cursor_instant(rows: list[Record]) -> datetime:
    """What an incremental reader of the base data holds as its cursor."""
    return max(_parse(r["__system"]["updatedAt"] or r["__system"]["submissionDate"]) for r in rows)


def _edit(rng: np.random.Generator, row: Record, when: datetime) -> Record:
    edited = copy.deepcopy(row)
    if isinstance(edited.get("household"), dict):
        edited["household"]["members"] += 1  # a member missed at the first visit
    elif isinstance(edited.get("affected"), int):
        edited["affected"] += 1
    edited["meta"] = {
        "instanceID": f"uuid:{_uuid4(rng)}",
        "deprecatedID": row["meta"]["instanceID"],
    }
    system = edited["__system"]
    system.update(updatedAt=_odk_stamp(when), edits=system["edits"] + 1, reviewState="edited")
    return edited


def _revisit(rng: np.random.Generator, row: Record, when: datetime) -> Record:
    visit = copy.deepcopy(row)
    visit["__id"] = f"uuid:{_uuid4(rng)}"
    visit["meta"] = {"instanceID": visit["__id"]}
    if "visit_date" in visit:
        visit["visit_date"] = (when + LOCAL - timedelta(hours=2)).date().isoformat()
    visit["__system"].update(
        submissionDate=_odk_stamp(when), updatedAt=None, reviewState=None, edits=0
    )
    return visit


def _odk_form_changes(
    rng: np.random.Generator,
    rows: list[Record],
    counts: tuple[int, int, int],
    end: datetime,
    defects: set[str],
    at_cursor: bool,
) -> tuple[list[Record], dict[str, Any]]:
    new_count, edit_count, delete_count = counts
    seen = Counter(r["__id"] for r in rows)  # one pass: the rows run to tens of thousands
    repeated = {instance for instance, times in seen.items() if times > 1}
    taken = defects | repeated
    candidates = [r for r in rows if _changeable(r)]
    changed: list[Record] = []
    truth: dict[str, Any] = {"new": [], "edited": [], "deleted": [], "at_cursor": None}
    edits = _pick(rng, candidates, taken, edit_count)
    for number, row in enumerate(edits):
        when = _cursor_instant(rows) if at_cursor and number == 0 else _later(rng, end)
        edited = _edit(rng, row, when)
        changed.append(edited)
        record = {"id": row["__id"], "instance_id": edited["meta"]["instanceID"]}
        truth["edited"].append(record)
        if at_cursor and number == 0:
            truth["at_cursor"] = {**record, "updated_at": edited["__system"]["updatedAt"]}
    for row in _pick(rng, candidates, taken, delete_count):
        gone = copy.deepcopy(row)
        gone["__system"]["deletedAt"] = _odk_stamp(_later(rng, end))
        changed.append(gone)
        truth["deleted"].append(row["__id"])
    # Revisits copy recent visits (the form's current version) and keep their household.
    recent = [r for r in candidates[-50:] if r["__id"] not in defects | repeated]
    for row in _pick(rng, recent, set(), new_count):
        visit = _revisit(rng, row, _later(rng, end))
        changed.append(visit)
        truth["new"].append(visit["__id"])
    truth["counts"] = {k: len(truth[k]) for k in ("new", "edited", "deleted")}
    changed.sort(key=lambda r: (r["__system"]["submissionDate"], r["__id"]))
    return changed, truth


def _write_odk_increment(
    sim: Simulation, out_dir: Path, end: datetime, defects: set[str]
) -> dict[str, Any]:
    notes: dict[str, Any] = {}
    forms = out_dir / "odk" / "projects"
    for folder in sorted(forms.glob("*/forms/*")):
        counts = ODK_CHANGES.get(folder.name)
        if counts is None or not (folder / "submissions.json").is_file():
            continue
        path = folder / "submissions.json"
        document = json.loads(path.read_text(encoding="utf-8"))
        rows = document["value"]
        if not rows:
            continue
        rng = sim.rng("odk", "increment", folder.name)
        at_cursor = folder.name == "household_visit"
        changed, truth = _odk_form_changes(rng, rows, counts, end, defects, at_cursor)
        target = out_dir / FOLDER / path.relative_to(out_dir)
        _write(target, {"@odata.context": document["@odata.context"], "value": changed})
        notes[folder.name] = truth
    return notes


# --- Kobo ----------------------------------------------------------------------------------


def _kobo_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _local(moment: datetime) -> str:
    local = moment.astimezone(UTC) + LOCAL
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}+03:00"


def _kobo_result(rng: np.random.Generator, row: Record, row_id: int, when: datetime) -> Record:
    """A child screened after the window: a recent result's answers, a new submission."""
    result = copy.deepcopy(row)
    instance = _uuid4(rng)
    started = when - timedelta(hours=2, minutes=int(rng.integers(0, 60)))
    result.update(
        {
            "_id": row_id,
            "start": _local(started),
            "end": _local(started + timedelta(minutes=int(rng.integers(4, 12)))),
            "today": (started + LOCAL).date().isoformat(),
            "meta/instanceID": f"uuid:{instance}",
            "_uuid": instance,
            "_submission_time": _kobo_time(when),
            "_validation_status": {},
        }
    )
    return result


def _write_kobo_increment(
    sim: Simulation, out_dir: Path, end: datetime, defects: set[str]
) -> dict[str, Any]:
    notes: dict[str, Any] = {}
    for path in sorted((out_dir / "kobo" / "assets").glob("*/data.json")):
        results = _read(path, "results")
        if not results:
            continue
        rng = sim.rng("kobo", "increment", path.parent.name)
        uuids = [r["_uuid"] for r in results]
        clean = [
            r
            for r in results[-50:]
            if r["meta/instanceID"] not in defects and uuids.count(r["_uuid"]) == 1
        ]
        latest = max(_parse(r["_submission_time"]) for r in results)
        row_id = max(int(r["_id"]) for r in results)
        new = []
        for number, row in enumerate(_pick(rng, clean, set(), KOBO_NEW, key="_id")):
            row_id += 1 + int(rng.geometric(0.3))  # other projects' results come in between
            # The first arrives in the same second as the base data's latest result.
            when = latest if number == 0 else _later(rng, end)
            new.append(_kobo_result(rng, row, row_id, when))
        document = {"count": len(new), "next": None, "previous": None, "results": new}
        _write(out_dir / FOLDER / path.relative_to(out_dir), document)
        notes[path.parent.name] = {
            "new": [str(r["_id"]) for r in new],
            "counts": {"new": len(new), "edited": 0, "deleted": 0},
            "at_cursor": {"id": str(new[0]["_id"]), "submission_time": new[0]["_submission_time"]}
            if new
            else None,
        }
    return notes


def write_community_increment(sim: Simulation, out_dir: Path) -> dict[str, int]:
    """Write ``increments/1/odk`` and ``increments/1/kobo`` from the base files under
    ``out_dir`` (see the module docstring) and describe them in
    ``sim.truth.notes["community_increment"]``."""
    end = datetime.combine(sim.window.end, time(23, 59, 59, 999_000), UTC)
    defects = {
        str(d["record"].get("instance_id"))
        for d in sim.truth.defects
        if d.get("source") in ("odk", "kobo")
    }
    odk = _write_odk_increment(sim, out_dir, end, defects)
    kobo = _write_kobo_increment(sim, out_dir, end, defects)
    sim.truth.notes["community_increment"] = {"folder": FOLDER, "odk": odk, "kobo": kobo}
    counts = {f"increment/{form}": sum(t["counts"].values()) for form, t in odk.items()}
    counts |= {f"increment/kobo/{uid}": t["counts"]["new"] for uid, t in kobo.items()}
    return counts
