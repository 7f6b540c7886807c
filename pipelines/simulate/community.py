"""Community reporting of the simulated country, written the way ODK Central and
KoboToolbox serve it: community health worker (CHW) household visits, referral follow-ups and
community event-based surveillance (CEBS) signals collected with ODK, and a nutrition NGO's
MUAC and WASH screening collected with KoboToolbox.

Output layout (``out_dir`` is the folder given to ``healthpipe simulate --out``)::

    odk/projects/1/project.json                        ODK Central Project object
    odk/projects/1/forms/<xmlFormId>/form.json         ODK Central Form object
    odk/projects/1/forms/<xmlFormId>/submissions.json  OData data document, ALL submissions
    kobo/assets/<asset uid>/asset.json                 Kobo v2 asset (one survey)
    kobo/assets/<asset uid>/data.json                  Kobo v2 data response, ALL results

JSON is written compactly (one line), UTF-8, with a final newline. What changes after the
window is written under ``increments/1/odk`` and ``increments/1/kobo`` in the same layout by
:mod:`pipelines.simulate.community_increment`.

ODK Central (``https://central.demoland.example``, project 1 "Demoland community health")
----------------------------------------------------------------------------------------
``project.json``: ``id`` (1), ``name``, ``description``, ``archived`` (false), ``keyId``
(null), ``createdAt``, ``updatedAt``. Forms: ``household_visit``, ``referral_followup``,
``cebs_signal``.

``form.json``: ``projectId``, ``xmlFormId``, ``name``, ``version`` (the current version),
``enketoId``, ``hash``, ``keyId`` (null), ``state`` ("open"), ``publishedAt``, ``createdAt``,
``updatedAt``, ``submissions`` (rows in submissions.json, duplicates included),
``lastSubmission``.

``submissions.json``: ``{"@odata.context": "<base>/v1/projects/1/forms/<xmlFormId>.svc/
$metadata#Submissions", "value": [...]}``, oldest submission first (a sandbox may reorder and
page it). Each row, as Central's OData returns it (groups nested as objects, unanswered
fields null, select_multiple answers one space-separated string):

- ``__id``: the submission's logical id (``uuid:...``), stable across edits: the key to use.
- form fields (below), then ``meta`` {``instanceID``} and ``__system``.
- ``meta.instanceID`` equals ``__id`` unless the submission was edited: then it is the
  current version's instance id and ``meta.deprecatedID`` the previous one, as in Central.
- ``__system``: ``submissionDate``, ``updatedAt`` (null until reviewed or edited),
  ``submitterId`` (app user id, a string), ``submitterName`` (the CHW id), ``attachmentsPresent``,
  ``attachmentsExpected`` (a CEBS photo: expected 1, sometimes not uploaded yet), ``status``
  (null), ``reviewState`` (null, "approved", "hasIssues" or "edited"), ``deviceId``
  (``collect:...``, one per CHW), ``edits``, ``formVersion``, ``deletedAt``.
- Deleted submissions ARE in the file, with ``deletedAt`` set: a server hides them unless
  asked (Central's ``$filter=__system/deletedAt ...`` / deleted listing).
Timestamps are UTC ``YYYY-MM-DDTHH:MM:SS.sssZ``; dates ``YYYY-MM-DD``; the country's local
time is UTC+3.

``household_visit`` ("CHW household visit"; version ``YYYYMMDD01`` of the window's first day,
then, from 60% of the window on, a second version named after its publication day):
``chw_id``, ``facility_code`` (DHIS2 org-unit code of the CHW's facility, where referrals
go), ``visit_date``, ``household`` {``household_id``, ``head_name``, ``head_phone`` (synthetic
PII on purpose: the pipeline must pseudonymise or drop it), ``members``, ``pregnant_women``,
``children_under5``}, ``danger_signs`` (null or some of fever convulsions fast_breathing
unable_to_feed vomiting_everything lethargy pregnancy_bleeding severe_headache), ``muac``
{``eligible`` (children 6-59 months in the household), ``screened`` (of them, measured),
``muac`` (lowest MUAC measured, mm; renamed ``muac_mm`` from the second version on), ``class``
(``sam`` < 115 mm, ``mam`` 115-124 mm, ``normal``; null if nobody was measured)},
``referral`` {``referred`` yes/no, ``referral_id`` (``REF-<chw>-<nnnn>``), ``reason``
(danger_sign, sam or mam)}, ``wash`` {``safe_water`` yes/no, ``improved_latrine`` yes/no}.

``referral_followup`` ("CHW referral follow-up"): ``referral_id`` (always one made in a
household_visit that is not deleted), ``chw_id``, ``facility_code``, ``followup_date``,
``completed`` yes/no, ``completion_date`` (the day the household reached the facility, null
if not completed), ``reason_not_completed`` (null or distance, cost, felt_better, refused,
no_caregiver). Referrals with no follow-up yet have no row: completion rate = completed /
referrals made.

``cebs_signal`` ("Community event-based surveillance signal"): ``chw_id``,
``facility_code``, ``signal_type`` (death_cluster, afp_like, bloody_diarrhoea_cluster,
animal_deaths, fever_rash_cluster, other_unusual_event), ``reported_at`` (UTC timestamp),
``affected`` (people or animals), ``photo`` (file name or null), ``verification``
{``verified`` yes/no, ``verified_at``, ``is_event`` yes/no (null until verified)},
``escalation`` {``escalated`` yes/no, ``escalated_at``}. A supervisor records the
verification by editing the submission, so verified signals have ``edits`` >= 1.

KoboToolbox (``https://kobo.demoland.example``, a nutrition NGO in some districts)
-------------------------------------------------------------------------------
``asset.json``: ``uid`` (22 characters starting with ``a``), ``name``
("nutrition_muac_wash_screening"), ``asset_type`` ("survey"), ``owner__username``,
``date_created``, ``date_modified``, ``date_deployed``, ``deployment__active``,
``deployment_status``, ``has_deployment``, ``deployment__submission_count``,
``deployment__last_submission_time``, ``version_id``, ``deployed_version_id``, ``url``,
``data``, ``settings`` {``sector``, ``country``, ``description``}.

``data.json``: ``{"count": N, "next": null, "previous": null, "results": [...]}``, ordered by
``_id``. Each result (one child screened) has ``_id`` (int), ``formhub/uuid``, ``start``,
``end`` (local time with offset), ``today``, the fields below keyed by their group path and,
as Kobo does, as strings and absent when unanswered, then ``__version__``,
``meta/instanceID``, ``_xform_id_string``, ``_uuid``, ``_attachments`` ([]), ``_status``
("submitted_via_web"), ``_geolocation`` ([lat, lon] or [null, null]), ``_submission_time``
(UTC, no zone), ``_tags``, ``_notes``, ``_validation_status`` ({} or {``timestamp``, ``uid``,
``by_whom``, ``color``, ``label``}), ``_submitted_by``.
Fields: ``site/district_code``, ``site/facility_code``, ``site/gps`` ("lat lon alt acc"),
``child/sex``, ``child/age_months``, ``child/muac_mm``, ``child/muac_status`` (sam, mam,
normal), ``child/referred`` yes/no, ``child/oedema`` yes/no (second version only),
``wash/water_source`` (improved: piped, borehole, protected_well, protected_spring, rainwater;
unimproved: unprotected_well, unprotected_spring, surface_water), ``wash/sanitation``
(improved: flush, pit_slab, vip, composting; unimproved: pit_no_slab, bucket, hanging,
open_defecation).

Defects (``truth.json``; ``record`` = {"instance_id": ODK ``__id`` / Kobo ``meta/instanceID``})
------------------------------------------------------------------------------------------
- ``unknown_code`` / ``org_unit_known``: ``facility_code`` of two household visits and one
  CEBS signal, ``site/facility_code`` of one Kobo result, set to a code that does not exist
  (same district, facility number ``HP99`` or the next free one down).
- ``missing_field`` / ``required_field_present``: ``visit_date`` null in one household visit;
  ``child/age_months`` absent from one Kobo result.
- ``invalid_value`` / ``value_in_range``: lowest MUAC 900 mm in one household visit and in one
  Kobo result.
- ``duplicate`` / ``duplicate``: one household visit appears twice (identical rows, same
  ``__id``); one Kobo result was sent twice (same ``_uuid``, ``meta/instanceID`` and answers,
  its own later ``_id`` and ``_submission_time``).
- ``schema_drift`` / ``schema_drift``: household_visit's second version renames ``muac/muac``
  to ``muac/muac_mm``; the Kobo asset's second version adds ``child/oedema``. The record is
  the first visible submission of the new version; the detail names both versions.
Defects are planted only in visible (not deleted), unedited rows, one defect per row.

Volumes: each CHW records about three household visits a week, unless the run would exceed
``HOUSEHOLD_VISIT_BUDGET`` visits: then the weekly rate is scaled down for every CHW (at the
default country, about 1,070 CHWs over 156 weeks, 0.29 a week: 45,600 visits, 2,100
follow-ups, 4,200 CEBS signals, 8,300 Kobo results, about 53 MB, a few seconds). The rate
used is in ``truth.json`` under ``notes.community``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import string
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.simulate.community_increment import write_community_increment
from pipelines.simulate.context import Simulation, Window
from pipelines.simulate.country import CommunityHealthWorker, Country, OrgUnit

ODK_BASE_URL = "https://central.demoland.example"
ODK_PROJECT_ID = 1
ODK_PROJECT_NAME = "Demoland community health"
KOBO_BASE_URL = "https://kobo.demoland.example"
KOBO_ASSET_NAME = "nutrition_muac_wash_screening"
KOBO_ENTITY = f"kobo_{KOBO_ASSET_NAME}"

HOUSEHOLD_VISIT = "household_visit"
REFERRAL_FOLLOWUP = "referral_followup"
CEBS_SIGNAL = "cebs_signal"

VISITS_PER_CHW_WEEK = 3.0
# Each visit row is about 800 bytes; this keeps the default country near 50 MB in all.
HOUSEHOLD_VISIT_BUDGET = 48_000
CEBS_SIGNALS_PER_CHW_WEEK = 1 / 39
KOBO_DISTRICT_SHARE = 0.25
KOBO_SCREENINGS_PER_DISTRICT_WEEK = 12.0

# Share of households that agree to a referral (CHWs also skip some MAM referrals), share
# of referrals the CHW goes back to check, and share of referrals completed, by reason.
REFERRAL_PROBABILITY = {"danger_sign": 0.92, "sam": 0.97, "mam": 0.88}
FOLLOWUP_SHARE = 0.85
COMPLETION_PROBABILITY = {"danger_sign": 0.78, "sam": 0.8, "mam": 0.62}
MUAC_SAM_MM = 115
MUAC_MAM_MM = 125

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LOCAL_OFFSET_MS = 3 * HOUR_MS  # East Africa Time, UTC+3, no daylight saving
# The ODK project and its forms were set up early on the window's first day.
PROJECT_CREATED_MS = HOUR_MS
FORMS_CREATED_MS = 2 * HOUR_MS

FIRST_NAMES = (
    "Amina", "Baraka", "Neema", "Juma", "Rehema", "Hamisi", "Zawadi", "Musa", "Halima", "Said",
    "Grace", "Joseph", "Mwanaisha", "Daudi", "Fatuma", "Peter", "Esther", "Omari", "Upendo",
    "Yusuf", "Mary", "John", "Sauda", "Elia", "Asha", "Ramadhani", "Rose", "Salim",
)  # fmt: skip
FAMILY_NAMES = (
    "Mwangi", "Otieno", "Mushi", "Kimaro", "Njoroge", "Mollel", "Swai", "Massawe", "Okello",
    "Wanjiru", "Lyimo", "Mbwambo", "Achieng", "Temba", "Shirima", "Nyambura", "Minja", "Kariuki",
    "Mrema", "Chacha", "Laizer", "Ndege",
)  # fmt: skip
DANGER_SIGNS_CHILD = ("fever", "convulsions", "fast_breathing", "unable_to_feed",
                      "vomiting_everything", "lethargy")  # fmt: skip
DANGER_SIGNS_PREGNANCY = ("pregnancy_bleeding", "severe_headache")
NOT_COMPLETED_REASONS = ("distance", "cost", "felt_better", "refused", "no_caregiver")
SIGNAL_TYPES = ("death_cluster", "afp_like", "bloody_diarrhoea_cluster", "animal_deaths",
                "fever_rash_cluster", "other_unusual_event")  # fmt: skip
SIGNAL_WEIGHTS = (0.06, 0.05, 0.25, 0.2, 0.2, 0.24)
IMPROVED_WATER = ("piped", "borehole", "protected_well", "protected_spring", "rainwater")
UNIMPROVED_WATER = ("unprotected_well", "unprotected_spring", "surface_water")
IMPROVED_SANITATION = ("flush", "pit_slab", "vip", "composting")
UNIMPROVED_SANITATION = ("pit_no_slab", "bucket", "hanging", "open_defecation")
KOBO_VALIDATION = {
    "validation_status_approved": ("#00ff00", "Approved"),
    "validation_status_not_approved": ("#ff0000", "Not Approved"),
}

_ALNUM = string.ascii_letters + string.digits
Record = dict[str, Any]


# --- time ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Clock:
    """Times are integer milliseconds since the window's first Monday, 00:00 UTC: exact,
    cheap to draw in bulk, and formatted the same way on every machine."""

    origin: datetime
    end_ms: int
    """The last millisecond of the window (Sunday 23:59:59.999 UTC)."""

    @classmethod
    def of(cls, window: Window) -> _Clock:
        origin = datetime(window.start.year, window.start.month, window.start.day, tzinfo=UTC)
        return cls(origin, (window.end - window.start).days * DAY_MS + DAY_MS - 1)

    def at(self, ms: int) -> datetime:
        return self.origin + timedelta(milliseconds=ms)

    def odk(self, ms: int) -> str:
        return f"{self._stamp(ms)}.{ms % 1000:03d}Z"

    def kobo(self, ms: int) -> str:
        return self._stamp(ms)

    def _stamp(self, ms: int) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` by integer arithmetic: this runs ~10^5 times a country."""
        day, rest = divmod(ms, DAY_MS)
        seconds = rest // 1000
        hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
        return f"{_iso_day(self.origin.date(), day)}T{hh:02d}:{mm:02d}:{ss:02d}"

    def kobo_asset(self, ms: int) -> str:
        return f"{self.at(ms):%Y-%m-%dT%H:%M:%S.%f}Z"

    def local(self, ms: int) -> str:
        t = self.at(ms + LOCAL_OFFSET_MS)
        return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}+03:00"

    def local_date(self, ms: int) -> str:
        return _iso_day(self.origin.date(), (ms + LOCAL_OFFSET_MS) // DAY_MS)

    def epoch_ms(self, ms: int) -> int:
        return int(self.origin.timestamp()) * 1000 + ms

    def epoch_seconds(self, ms: int) -> int:
        return self.epoch_ms(ms) // 1000

    def week_ms(self, week: int) -> int:
        return week * 7 * DAY_MS


@functools.lru_cache(maxsize=4096)
def _iso_day(origin: date, day: int) -> str:
    return (origin + timedelta(days=day)).isoformat()


def _day_ms(clock: _Clock, day: date) -> int:
    return (day - clock.origin.date()).days * DAY_MS


# --- shared helpers ------------------------------------------------------------------------


def _token(rng: np.random.Generator, length: int, alphabet: str = _ALNUM) -> str:
    return "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=length))


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _muac_class(muac_mm: int) -> str:
    if muac_mm < MUAC_SAM_MM:
        return "sam"
    return "mam" if muac_mm < MUAC_MAM_MM else "normal"


def _lean_season_dip(clock: _Clock, ms: int) -> float:
    """Children are thinner before the main harvest (March to June here)."""
    return 4.0 if clock.at(ms).month in (3, 4, 5, 6) else 0.0


def _write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def _facility_codes(country: Country) -> dict[str, str]:
    return {f.uid: f.code for f in country.facilities}


def _unknown_code(known: set[str], near: str) -> str:
    """A plausible mistyped code: the same district, a facility number that does not exist."""
    district = near.rsplit("_", 1)[0]
    for number in range(99, 0, -1):
        code = f"{district}_HP{number:02d}"
        if code not in known:
            return code
    raise ValueError(f"no free facility code in {district}")


# --- ODK Central submissions ---------------------------------------------------------------


@dataclass(frozen=True)
class _Submitter:
    """A CHW's ODK Collect app user on Central."""

    actor_id: str
    chw_id: str
    device_id: str


@dataclass(frozen=True)
class _Lifecycle:
    """How often a form's submissions are reviewed, edited or deleted after arrival."""

    approved: float
    has_issues: float
    edited: float
    deleted: float


VISIT_LIFECYCLE = _Lifecycle(approved=0.25, has_issues=0.01, edited=0.03, deleted=0.004)
FOLLOWUP_LIFECYCLE = _Lifecycle(approved=0.2, has_issues=0.01, edited=0.02, deleted=0.003)
SIGNAL_LIFECYCLE = _Lifecycle(approved=0.0, has_issues=0.0, edited=0.0, deleted=0.01)


def _submitters(sim: Simulation) -> dict[str, _Submitter]:
    submitters = {}
    for index, chw in enumerate(sorted(sim.country.chws, key=lambda c: c.chw_id)):
        rng = sim.rng("odk", "device", chw.chw_id)
        submitters[chw.chw_id] = _Submitter(
            actor_id=str(100 + index),
            chw_id=chw.chw_id,
            device_id=f"collect:{_token(rng, 16)}",
        )
    return submitters


@dataclass(frozen=True)
class _Draft:
    """A submission's answers and arrival, before Central wraps them."""

    fields: Record
    submitted: int
    version: str
    edited_at: int | None = None
    """A forced edit (a supervisor completing the form) at this time."""
    attachments: tuple[int, int] = (0, 0)
    """(present, expected)."""


def _uuid4(raw: bytes) -> str:
    """A version-4 UUID from 16 random bytes, as ODK Collect and Enketo generate them."""
    h = raw.hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def _uuid(raw: bytes) -> str:
    return f"uuid:{_uuid4(raw)}"


def _odk_rows(
    rng: np.random.Generator,
    clock: _Clock,
    drafts: list[_Draft],
    submitter: _Submitter,
    lifecycle: _Lifecycle,
) -> list[Record]:
    """OData rows: each draft's fields wrapped in Central's ``__id``/``meta``/``__system``.
    Random numbers are drawn for the whole batch at once (scalar draws dominate the run)."""
    n = len(drafts)
    ids = rng.bytes(48 * n)
    draws = rng.random((n, 3))
    later = rng.integers(HOUR_MS, 14 * DAY_MS, n)
    deleted_after = rng.integers(DAY_MS, 20 * DAY_MS, n)
    rows = []
    for i, (draft, (draw, double_edit, delete), after_ms, deleted_ms) in enumerate(
        zip(drafts, draws.tolist(), later.tolist(), deleted_after.tolist(), strict=True)
    ):
        review_state: str | None = None
        updated: int | None = None
        edits = 0
        after = draft.submitted + after_ms
        if draft.edited_at is not None:
            edits, review_state = 1, "edited"
            updated = min(max(draft.edited_at, draft.submitted + 1000), clock.end_ms)
        elif draw < lifecycle.edited:
            edits, updated, review_state = 1 + int(double_edit < 0.2), after, "edited"
        elif draw < lifecycle.edited + lifecycle.approved:
            updated, review_state = after, "approved"
        elif draw < lifecycle.edited + lifecycle.approved + lifecycle.has_issues:
            updated, review_state = after, "hasIssues"
        if updated is not None and updated > clock.end_ms:
            # Not reviewed or edited yet when the window closes.
            edits, updated, review_state = 0, None, None
        raw = ids[48 * i : 48 * i + 48]
        instance_id = _uuid(raw[:16])
        meta: Record = {"instanceID": instance_id}
        if edits:
            # Central keeps the first instanceID as __id; meta shows the current version.
            meta = {"instanceID": _uuid(raw[16:32]), "deprecatedID": _uuid(raw[32:])}
        deleted = draft.submitted + deleted_ms
        is_deleted = delete < lifecycle.deleted and deleted <= clock.end_ms
        system = {
            "submissionDate": clock.odk(draft.submitted),
            "updatedAt": None if updated is None else clock.odk(updated),
            "submitterId": submitter.actor_id,
            "submitterName": submitter.chw_id,
            "attachmentsPresent": draft.attachments[0],
            "attachmentsExpected": draft.attachments[1],
            "status": None,
            "reviewState": review_state,
            "deviceId": submitter.device_id,
            "edits": edits,
            "formVersion": draft.version,
            "deletedAt": clock.odk(deleted) if is_deleted else None,
        }
        rows.append({"__id": instance_id, **draft.fields, "meta": meta, "__system": system})
    return rows


def _sync_delay(rng: np.random.Generator, size: int) -> np.ndarray:
    """Phones sync when there is network: mostly within hours, sometimes days later."""
    delay = rng.exponential(6 * HOUR_MS, size) + 10 * 60_000
    offline = rng.random(size) < 0.1
    delay[offline] += rng.uniform(DAY_MS, 7 * DAY_MS, int(offline.sum()))
    return delay.astype(np.int64)


def _is_live(row: Record) -> bool:
    return row["__system"]["deletedAt"] is None


# --- household visits ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Households:
    """A CHW's catchment households: who lives there does not change between visits."""

    ids: list[str]
    heads: list[str]
    phones: list[str]
    members: list[int]
    under5: list[int]
    safe_water: list[bool]
    improved_latrine: list[bool]


def _households(sim: Simulation, chw: CommunityHealthWorker) -> _Households:
    rng = sim.rng("odk", "households", chw.chw_id)
    n = chw.households
    first = rng.integers(len(FIRST_NAMES), size=n)
    family = rng.integers(len(FAMILY_NAMES), size=n)
    numbers = rng.integers(10_000_000, 100_000_000, size=n)
    members = 1 + rng.poisson(4.2, n)
    under5 = np.minimum(rng.poisson(0.9, n), members - 1)
    # WASH coverage differs between villages more than between households of a village.
    water_share, latrine_share = rng.uniform(0.35, 0.85), rng.uniform(0.2, 0.7)
    suffix = chw.chw_id.removeprefix("CHW-")
    return _Households(
        ids=[f"HH-{suffix}-{i + 1:03d}" for i in range(n)],
        heads=[f"{FIRST_NAMES[a]} {FAMILY_NAMES[b]}" for a, b in zip(first, family, strict=True)],
        # +999 is reserved by the ITU: no synthetic number can ring a real phone.
        phones=[f"+9997{int(number)}" for number in numbers],
        members=members.tolist(),
        under5=under5.tolist(),
        safe_water=(rng.random(n) < water_share).tolist(),
        improved_latrine=(rng.random(n) < latrine_share).tolist(),
    )


@dataclass(frozen=True)
class _Referral:
    referral_id: str
    chw_id: str
    facility_code: str
    visit_ms: int
    reason: str


@dataclass(frozen=True)
class _VersionPlan:
    """Two published versions of a form; each phone picks up the new one some days later."""

    first: str
    second: str
    published_ms: int

    def versions(self, rng: np.random.Generator, at: np.ndarray) -> list[str]:
        """The version a phone filled in at each time in ``at``."""
        updated = self.published_ms + int(rng.integers(0, 14 * DAY_MS))
        return [self.second if t >= updated else self.first for t in at]


def _version_plan(clock: _Clock, window: Window, share: float) -> _VersionPlan:
    published = clock.week_ms(int(window.weeks * share)) + 2 * DAY_MS + 7 * HOUR_MS
    start = clock.at(0).date()
    return _VersionPlan(
        first=f"{start:%Y%m%d}01",
        second=f"{clock.at(published).date():%Y%m%d}01",
        published_ms=published,
    )


def _visit_rate(sim: Simulation) -> float:
    chw_weeks = len(sim.country.chws) * sim.window.weeks
    if chw_weeks == 0:
        return VISITS_PER_CHW_WEEK
    return min(VISITS_PER_CHW_WEEK, HOUSEHOLD_VISIT_BUDGET / chw_weeks)


def _household_visits(
    sim: Simulation,
    clock: _Clock,
    chw: CommunityHealthWorker,
    facility_code: str,
    submitter: _Submitter,
    versions: _VersionPlan,
    rate: float,
) -> tuple[list[Record], list[_Referral]]:
    rng = sim.rng("odk", HOUSEHOLD_VISIT, chw.chw_id)
    homes = _households(sim, chw)
    # Some CHWs are more active than others, and some weeks nobody visits (leave, campaigns).
    activity = rng.gamma(4.0, 0.25)
    per_week = rng.poisson(rate * activity, sim.window.weeks)
    per_week[rng.random(sim.window.weeks) < 0.05] = 0
    n = int(per_week.sum())
    weeks = np.repeat(np.arange(sim.window.weeks), per_week)
    local = (
        weeks * 7 * DAY_MS
        + rng.integers(0, 6, n) * DAY_MS
        + rng.integers(7 * 3600, 17 * 3600, n) * 1000
    )
    visit = np.sort(local - LOCAL_OFFSET_MS)
    submitted = visit + _sync_delay(rng, n)
    home = rng.integers(chw.households, size=n)
    pregnant = (rng.random(n) < 0.07) & (np.array(homes.members)[home] > 1)
    under5 = np.array(homes.under5)[home]
    eligible = rng.binomial(under5, 0.9)
    screened = rng.binomial(eligible, 0.88)
    lowest = rng.normal(146.0, 11.0, n) - 4.0 * np.maximum(screened - 1, 0)
    child_danger = (under5 > 0) & (rng.random(n) < 0.05)
    mother_danger = pregnant & (rng.random(n) < 0.1)
    refer_draw = rng.random(n)
    sign_draw = rng.integers(len(DANGER_SIGNS_CHILD), size=(n, 2))
    form_versions = versions.versions(rng, visit)

    # Plain lists: indexing numpy arrays element by element is what makes loops slow.
    columns = zip(
        visit.tolist(), submitted.tolist(), home.tolist(), pregnant.tolist(), under5.tolist(),
        eligible.tolist(), screened.tolist(), lowest.tolist(), child_danger.tolist(),
        mother_danger.tolist(), refer_draw.tolist(), sign_draw.tolist(), form_versions,
        strict=True,
    )  # fmt: skip
    drafts: list[_Draft] = []
    referrals: list[_Referral] = []
    for (
        visit_ms, submitted_ms, h, is_pregnant, children, n_eligible, n_screened, lowest_mm,
        child_signs, mother_signs, refer, sign_ids, version,
    ) in columns:  # fmt: skip
        if submitted_ms > clock.end_ms:
            continue  # still on the phone when the window closes
        signs = sorted(
            ({DANGER_SIGNS_CHILD[s] for s in sign_ids} if child_signs else set())
            | ({DANGER_SIGNS_PREGNANCY[sign_ids[0] % 2]} if mother_signs else set())
        )
        muac_mm: int | None = None
        muac_class: str | None = None
        if n_screened:
            muac_mm = round(lowest_mm - _lean_season_dip(clock, visit_ms))
            muac_class = _muac_class(muac_mm)
        reason = "danger_sign" if signs else muac_class if muac_class in ("sam", "mam") else None
        # Not every household agrees to go, and CHWs sometimes skip MAM referrals.
        referred = reason is not None and refer < REFERRAL_PROBABILITY[reason]
        referral_id = None
        if referred and reason is not None:
            referral_id = f"REF-{chw.chw_id.removeprefix('CHW-')}-{len(referrals) + 1:04d}"
            referrals.append(_Referral(referral_id, chw.chw_id, facility_code, visit_ms, reason))
        fields: Record = {
            "chw_id": chw.chw_id,
            "facility_code": facility_code,
            "visit_date": clock.local_date(visit_ms),
            "household": {
                "household_id": homes.ids[h],
                "head_name": homes.heads[h],
                "head_phone": homes.phones[h],
                "members": homes.members[h],
                "pregnant_women": int(is_pregnant),
                "children_under5": children,
            },
            "danger_signs": " ".join(signs) or None,
            "muac": {
                "eligible": n_eligible,
                "screened": n_screened,
                ("muac" if version == versions.first else "muac_mm"): muac_mm,
                "class": muac_class,
            },
            "referral": {
                "referred": _yes_no(referred),
                "referral_id": referral_id,
                "reason": reason if referred else None,
            },
            "wash": {
                "safe_water": _yes_no(homes.safe_water[h]),
                "improved_latrine": _yes_no(homes.improved_latrine[h]),
            },
        }
        drafts.append(_Draft(fields, submitted_ms, version))
    return _odk_rows(rng, clock, drafts, submitter, VISIT_LIFECYCLE), referrals


# --- referral follow-ups -------------------------------------------------------------------


def _referral_followups(
    sim: Simulation,
    clock: _Clock,
    referrals: list[_Referral],
    submitters: dict[str, _Submitter],
    version: str,
) -> list[Record]:
    rows: list[Record] = []
    for referral in referrals:
        rng = sim.rng("odk", REFERRAL_FOLLOWUP, referral.referral_id)
        if rng.random() >= FOLLOWUP_SHARE:
            continue  # the CHW never went back
        urgent = referral.reason in ("danger_sign", "sam")
        completed = bool(rng.random() < COMPLETION_PROBABILITY[referral.reason])
        # Urgent referrals reach the facility sooner; some households wait over a week.
        delay_days = int(rng.geometric(0.55 if urgent else 0.3)) - 1
        followup_days = max(delay_days + 1, int(rng.integers(2, 11)))
        referral_day = date.fromisoformat(clock.local_date(referral.visit_ms))
        followup_ms = (
            _day_ms(clock, referral_day + timedelta(days=followup_days))
            + int(rng.integers(5, 14)) * HOUR_MS
        )
        submitted = followup_ms + int(_sync_delay(rng, 1)[0])
        if submitted > clock.end_ms:
            continue  # not followed up yet
        fields: Record = {
            "referral_id": referral.referral_id,
            "chw_id": referral.chw_id,
            "facility_code": referral.facility_code,
            "followup_date": clock.local_date(followup_ms),
            "completed": _yes_no(completed),
            "completion_date": (referral_day + timedelta(days=delay_days)).isoformat()
            if completed
            else None,
            "reason_not_completed": None
            if completed
            else NOT_COMPLETED_REASONS[int(rng.integers(len(NOT_COMPLETED_REASONS)))],
        }
        draft = _Draft(fields, submitted, version)
        rows += _odk_rows(rng, clock, [draft], submitters[referral.chw_id], FOLLOWUP_LIFECYCLE)
    return rows


# --- CEBS signals --------------------------------------------------------------------------


def _verification_delay_ms(rng: np.random.Generator) -> int:
    """Log-normal, median 10 h: about 80% of signals verified within 24 h, a few after days."""
    return int(math.exp(rng.normal(math.log(10.0), 1.1)) * HOUR_MS)


def _cebs_signals(
    sim: Simulation,
    clock: _Clock,
    chw: CommunityHealthWorker,
    facility_code: str,
    submitter: _Submitter,
    version: str,
) -> list[Record]:
    rng = sim.rng("odk", CEBS_SIGNAL, chw.chw_id)
    n = int(rng.poisson(CEBS_SIGNALS_PER_CHW_WEEK * sim.window.weeks))
    reported = np.sort(rng.integers(0, clock.end_ms + 1, n))
    drafts = []
    for at in reported:
        reported_ms = int(at)
        submitted = reported_ms + int(rng.integers(5 * 60_000, 6 * HOUR_MS))
        if submitted > clock.end_ms:
            continue
        signal_type = SIGNAL_TYPES[int(rng.choice(len(SIGNAL_TYPES), p=SIGNAL_WEIGHTS))]
        verified_ms: int | None = reported_ms + _verification_delay_ms(rng)
        forgotten = bool(rng.random() < 0.05)
        if forgotten or verified_ms is None or verified_ms > clock.end_ms:
            verified_ms = None  # nobody has checked it (yet)
        # About 40% of verified signals are true events; most of those go up to the district.
        is_event = bool(rng.random() < 0.4) and verified_ms is not None
        escalated_ms = None
        if is_event and verified_ms is not None and rng.random() < 0.9:
            escalated_ms = verified_ms + int(rng.integers(15 * 60_000, 12 * HOUR_MS))
            escalated_ms = escalated_ms if escalated_ms <= clock.end_ms else None
        has_photo = bool(rng.random() < 0.3)
        photo_present = int(has_photo and rng.random() < 0.9)
        affected = (
            int(rng.integers(2, 40)) if signal_type == "animal_deaths" else int(rng.integers(1, 8))
        )
        fields: Record = {
            "chw_id": chw.chw_id,
            "facility_code": facility_code,
            "signal_type": signal_type,
            "reported_at": clock.odk(reported_ms),
            "affected": affected,
            # Collect names a photo after the capture time in epoch milliseconds.
            "photo": f"{clock.epoch_ms(reported_ms)}.jpg" if has_photo else None,
            "verification": {
                "verified": _yes_no(verified_ms is not None),
                "verified_at": None if verified_ms is None else clock.odk(verified_ms),
                "is_event": None if verified_ms is None else _yes_no(is_event),
            },
            "escalation": {
                "escalated": _yes_no(escalated_ms is not None),
                "escalated_at": None if escalated_ms is None else clock.odk(escalated_ms),
            },
        }
        edit = escalated_ms if escalated_ms is not None else verified_ms
        drafts.append(_Draft(fields, submitted, version, edit, (photo_present, int(has_photo))))
    return _odk_rows(rng, clock, drafts, submitter, SIGNAL_LIFECYCLE)


# --- ODK defects ---------------------------------------------------------------------------


def _pick(rng: np.random.Generator, rows: list[Record], taken: set[str]) -> Record | None:
    """A random row a defect may be planted in: visible, unedited and not already defective
    (a deleted row is hidden from the pipeline, so a defect there could never be found)."""
    for index in rng.permutation(len(rows)).tolist():
        row: Record = rows[index]
        if _is_live(row) and row["__system"]["edits"] == 0 and row["__id"] not in taken:
            taken.add(row["__id"])
            return row
    return None


def _odk_defect(sim: Simulation, form: str, row: Record, kind: str, rule: str, detail: str) -> None:
    sim.truth.add_defect(
        source="odk",
        entity=form,
        kind=kind,
        record={"instance_id": row["__id"]},
        expected_rule=rule,
        detail=detail,
    )


def _lowest_muac_field(row: Record) -> str:
    return "muac" if "muac" in row["muac"] else "muac_mm"


def _plant_odk_defects(
    sim: Simulation, forms: dict[str, list[Record]], known: set[str], versions: _VersionPlan
) -> None:
    rng = sim.rng("odk", "defects")
    taken: set[str] = set()
    visits, signals = forms[HOUSEHOLD_VISIT], forms[CEBS_SIGNAL]

    drifted = [r for r in visits if r["__system"]["formVersion"] == versions.second]
    drift = next((r for r in drifted if _is_live(r)), None)  # rows are oldest first
    if drift is not None:
        taken.add(drift["__id"])
        _odk_defect(
            sim, HOUSEHOLD_VISIT, drift, "schema_drift", "schema_drift",
            f"form version {versions.second} renames muac/muac to muac/muac_mm "
            f"(rows of version {versions.first} keep muac/muac)",
        )  # fmt: skip

    for form, rows in (
        (HOUSEHOLD_VISIT, visits),
        (HOUSEHOLD_VISIT, visits),
        (CEBS_SIGNAL, signals),
    ):
        row = _pick(rng, rows, taken)
        if row is not None:
            wrong = _unknown_code(known, row["facility_code"])
            row["facility_code"] = wrong
            _odk_defect(
                sim, form, row, "unknown_code", "org_unit_known",
                f"facility_code {wrong} is not an org-unit code of the country",
            )  # fmt: skip

    row = _pick(rng, visits, taken)
    if row is not None:
        row["visit_date"] = None
        _odk_defect(
            sim, HOUSEHOLD_VISIT, row, "missing_field", "required_field_present",
            "required field visit_date is null",
        )  # fmt: skip

    screened = [r for r in visits if r["muac"][_lowest_muac_field(r)] is not None]
    row = _pick(rng, screened, taken)
    if row is not None:
        field = _lowest_muac_field(row)
        row["muac"][field], row["muac"]["class"] = 900, "normal"
        _odk_defect(
            sim, HOUSEHOLD_VISIT, row, "invalid_value", "value_in_range",
            f"muac/{field} = 900 mm: impossible (MUAC of children 6-59 months is 70-250 mm)",
        )  # fmt: skip

    row = _pick(rng, visits, taken)
    if row is not None:
        # Collect re-sent it and the copy was served again: an identical row.
        visits.insert(visits.index(row) + 1, json.loads(json.dumps(row)))
        _odk_defect(
            sim, HOUSEHOLD_VISIT, row, "duplicate", "duplicate",
            "the same submission appears twice (identical rows, same __id)",
        )  # fmt: skip


# --- ODK files -----------------------------------------------------------------------------


ODK_FORM_NAMES = {
    HOUSEHOLD_VISIT: "CHW household visit",
    REFERRAL_FOLLOWUP: "CHW referral follow-up",
    CEBS_SIGNAL: "Community event-based surveillance signal",
}


def _odk_form(
    sim: Simulation, clock: _Clock, form: str, rows: list[Record], versions: _VersionPlan
) -> Record:
    rng = sim.rng("odk", "form", form)
    # Only household_visit was republished (the schema drift); the others keep version one.
    drifted = form == HOUSEHOLD_VISIT
    version = versions.second if drifted else versions.first
    published = versions.published_ms if drifted else FORMS_CREATED_MS
    last = max((r["__system"]["submissionDate"] for r in rows), default=None)
    return {
        "projectId": ODK_PROJECT_ID,
        "xmlFormId": form,
        "name": ODK_FORM_NAMES[form],
        "version": version,
        "enketoId": _token(rng, 8),
        "hash": hashlib.md5(f"{form}:{version}".encode(), usedforsecurity=False).hexdigest(),
        "keyId": None,
        "state": "open",
        "publishedAt": clock.odk(published),
        "createdAt": clock.odk(FORMS_CREATED_MS),
        "updatedAt": clock.odk(published) if drifted else None,
        "submissions": len(rows),
        "lastSubmission": last,
    }


def _odk_project(clock: _Clock) -> Record:
    return {
        "id": ODK_PROJECT_ID,
        "name": ODK_PROJECT_NAME,
        "description": "CHW household visits, referral follow-ups and CEBS signals",
        "archived": False,
        "keyId": None,
        "createdAt": clock.odk(PROJECT_CREATED_MS),
        "updatedAt": None,
    }


def _odata_document(form: str, rows: list[Record]) -> Record:
    context = f"{ODK_BASE_URL}/v1/projects/{ODK_PROJECT_ID}/forms/{form}.svc/$metadata#Submissions"
    return {"@odata.context": context, "value": rows}


def _odk_submissions(
    sim: Simulation, clock: _Clock, versions: _VersionPlan
) -> dict[str, list[Record]]:
    """Every form's rows, oldest first, defects not yet planted."""
    codes = _facility_codes(sim.country)
    submitters = _submitters(sim)
    rate = _visit_rate(sim)
    forms: dict[str, list[Record]] = {HOUSEHOLD_VISIT: [], REFERRAL_FOLLOWUP: [], CEBS_SIGNAL: []}
    referrals: list[_Referral] = []
    for chw in sorted(sim.country.chws, key=lambda c: c.chw_id):
        code, submitter = codes[chw.facility_uid], submitters[chw.chw_id]
        visits, made = _household_visits(sim, clock, chw, code, submitter, versions, rate)
        forms[HOUSEHOLD_VISIT] += visits
        # A deleted visit is hidden from the API, so no follow-up may point at its referral.
        live = {v["referral"]["referral_id"] for v in visits if _is_live(v)}
        referrals += [r for r in made if r.referral_id in live]
        forms[CEBS_SIGNAL] += _cebs_signals(sim, clock, chw, code, submitter, versions.first)
    forms[REFERRAL_FOLLOWUP] = _referral_followups(
        sim, clock, referrals, submitters, versions.first
    )
    for rows in forms.values():
        rows.sort(key=lambda r: (r["__system"]["submissionDate"], r["__id"]))
    return forms


def _write_odk(
    sim: Simulation, clock: _Clock, out_dir: Path
) -> tuple[dict[str, int], _VersionPlan]:
    versions = _version_plan(clock, sim.window, 0.6)
    forms = _odk_submissions(sim, clock, versions)
    _plant_odk_defects(sim, forms, set(_facility_codes(sim.country).values()), versions)
    project = out_dir / "odk" / "projects" / str(ODK_PROJECT_ID)
    _write_json(project / "project.json", _odk_project(clock))
    counts = {}
    for form, rows in forms.items():
        folder = project / "forms" / form
        _write_json(folder / "form.json", _odk_form(sim, clock, form, rows, versions))
        _write_json(folder / "submissions.json", _odata_document(form, rows))
        counts[form] = len(rows)
    return counts, versions


# --- KoboToolbox ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _KoboAsset:
    uid: str
    formhub_uuid: str
    versions: tuple[str, str]
    published_ms: int
    """When the second version (adding child/oedema) was deployed."""
    start_ms: int
    """When the NGO's programme started screening."""


@dataclass
class _Screening:
    """One child screened, before the server gives it an ``_id``."""

    submitted: int
    instance: str
    fields: Record
    version: str
    submitted_by: str


def _kobo_asset_plan(sim: Simulation, clock: _Clock) -> _KoboAsset:
    rng = sim.rng("kobo", "asset")
    return _KoboAsset(
        uid="a" + _token(rng, 21),
        formhub_uuid=_token(rng, 32, "0123456789abcdef"),
        versions=("v" + _token(rng, 21), "v" + _token(rng, 21)),
        published_ms=clock.week_ms(int(sim.window.weeks * 0.7)) + DAY_MS + 6 * HOUR_MS,
        start_ms=clock.week_ms(int(sim.window.weeks * 0.1)),
    )


def _kobo_districts(sim: Simulation) -> list[OrgUnit]:
    rng = sim.rng("kobo", "districts")
    districts = sorted(sim.country.districts, key=lambda d: d.code)
    k = max(1, round(len(districts) * KOBO_DISTRICT_SHARE))
    chosen = rng.choice(len(districts), size=k, replace=False)
    return [districts[int(i)] for i in sorted(chosen)]


def _point(unit: OrgUnit) -> tuple[float, float]:
    """(latitude, longitude) of a facility's GeoJSON point."""
    coordinates = (unit.geometry or {}).get("coordinates")
    if not isinstance(coordinates, list | tuple) or len(coordinates) != 2:
        raise ValueError(f"facility {unit.code} has no point geometry")
    return float(coordinates[1]), float(coordinates[0])


def _kobo_fields(
    clock: _Clock, facility: OrgUnit, district_code: str, start: int, draw: dict[str, Any]
) -> Record:
    """The form answers in form order, serialised as Kobo does: strings, absent if unanswered.
    ``draw`` holds this child's share of the district's bulk random draws."""
    fields: Record = {
        "start": clock.local(start),
        "end": clock.local(start + int(draw["duration"])),
        "today": clock.local_date(start),
        "site/district_code": district_code,
        "site/facility_code": facility.code,
    }
    if draw["gps"]:  # the rest had no GPS fix
        lat, lon = _point(facility)
        lat, lon = round(lat + float(draw["dlat"]), 6), round(lon + float(draw["dlon"]), 6)
        fields["site/gps"] = f"{lat} {lon} {int(draw['altitude'])}.0 {int(draw['accuracy'])}.0"
    age = int(draw["age"])
    with_oedema = bool(draw["new_version"])
    muac = round(140.0 + 0.3 * (age - 6) + float(draw["muac"]) - _lean_season_dip(clock, start))
    # Bilateral oedema is severe acute malnutrition whatever the MUAC.
    status = "sam" if with_oedema and draw["oedema"] else _muac_class(muac)
    fields |= {
        "child/sex": "female" if draw["female"] else "male",
        "child/age_months": str(age),
        "child/muac_mm": str(muac),
        "child/muac_status": status,
        "child/referred": _yes_no(status != "normal" and bool(draw["referred"])),
    }
    if with_oedema:
        fields["child/oedema"] = _yes_no(bool(draw["oedema"]))
    water = IMPROVED_WATER if draw["improved_water"] else UNIMPROVED_WATER
    sanitation = IMPROVED_SANITATION if draw["improved_sanitation"] else UNIMPROVED_SANITATION
    fields["wash/water_source"] = water[int(draw["water"]) % len(water)]
    fields["wash/sanitation"] = sanitation[int(draw["sanitation"]) % len(sanitation)]
    return fields


def _kobo_screenings(
    sim: Simulation, clock: _Clock, asset: _KoboAsset, district: OrgUnit
) -> list[_Screening]:
    """One district's children screened: sessions on weekdays, about a dozen a week."""
    rng = sim.rng("kobo", "screenings", district.code)
    facilities = sorted(sim.country.facilities_in(district.uid), key=lambda f: f.code)
    water_share, sanitation_share = rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.65)
    enumerators = [f"nutri_{district.code.lower()}_{i + 1:02d}" for i in range(3)]
    # Tablets update to the new version within a week of its deployment.
    updated = asset.published_ms + int(rng.integers(0, 7 * DAY_MS))
    per_week = rng.poisson(KOBO_SCREENINGS_PER_DISTRICT_WEEK, sim.window.weeks)
    per_week[: asset.start_ms // (7 * DAY_MS)] = 0
    n = int(per_week.sum())
    weeks = np.repeat(np.arange(sim.window.weeks), per_week)
    local = rng.integers(0, 5, n) * DAY_MS + rng.integers(8 * 3600, 16 * 3600, n) * 1000
    start = weeks * 7 * DAY_MS + local - LOCAL_OFFSET_MS
    duration = rng.integers(3 * 60_000, 15 * 60_000, n)
    draws = {
        "duration": duration,
        "gps": rng.random(n) < 0.93,
        "dlat": rng.normal(0, 0.02, n),
        "dlon": rng.normal(0, 0.02, n),
        "altitude": rng.integers(1100, 1600, n),
        "accuracy": rng.integers(3, 25, n),
        "age": rng.integers(6, 60, n),
        "muac": rng.normal(0.0, 10.0, n),
        "oedema": rng.random(n) < 0.004,
        "female": rng.random(n) < 0.5,
        "referred": rng.random(n) < 0.95,
        "improved_water": rng.random(n) < water_share,
        "improved_sanitation": rng.random(n) < sanitation_share,
        # 60 is a multiple of every choice list length, so the modulo below stays uniform.
        "water": rng.integers(0, 60, n),
        "sanitation": rng.integers(0, 60, n),
        "new_version": start >= updated,
    }
    facility = rng.integers(len(facilities), size=n)
    enumerator = rng.integers(len(enumerators), size=n)
    submitted = start + duration + _sync_delay(rng, n)
    instances = rng.bytes(16 * n)
    screenings = []
    for i in range(n):
        if submitted[i] > clock.end_ms:
            continue  # still on the tablet when the window closes
        draw = {key: values[i] for key, values in draws.items()}
        fields = _kobo_fields(
            clock, facilities[int(facility[i])], district.code, int(start[i]), draw
        )
        screenings.append(
            _Screening(
                submitted=int(submitted[i]),
                instance=_uuid4(instances[16 * i : 16 * i + 16]),
                fields=fields,
                version=asset.versions[1] if draw["new_version"] else asset.versions[0],
                submitted_by=enumerators[int(enumerator[i])],
            )
        )
    return screenings


def _kobo_defect(sim: Simulation, instance: str, kind: str, rule: str, detail: str) -> None:
    sim.truth.add_defect(
        source="kobo",
        entity=KOBO_ENTITY,
        kind=kind,
        record={"instance_id": f"uuid:{instance}"},
        expected_rule=rule,
        detail=detail,
    )


def _plant_kobo_defects(
    sim: Simulation, clock: _Clock, screenings: list[_Screening], known: set[str], asset: _KoboAsset
) -> None:
    rng = sim.rng("kobo", "defects")
    new = [s for s in screenings if s.version == asset.versions[1]]
    drift = min(new, key=lambda s: (s.submitted, s.instance)) if new else None
    if drift is not None:
        _kobo_defect(
            sim, drift.instance, "schema_drift", "schema_drift",
            f"asset version {asset.versions[1]} adds child/oedema "
            f"(results of version {asset.versions[0]} have no such field)",
        )  # fmt: skip
    pool = sorted((s for s in screenings if s is not drift), key=lambda s: s.instance)
    if len(pool) < 4:
        return
    chosen = rng.choice(len(pool), size=4, replace=False)
    unknown, missing, impossible, duplicate = (pool[int(i)] for i in chosen)

    wrong = _unknown_code(known, unknown.fields["site/facility_code"])
    unknown.fields["site/facility_code"] = wrong
    _kobo_defect(
        sim, unknown.instance, "unknown_code", "org_unit_known",
        f"site/facility_code {wrong} is not an org-unit code of the country",
    )  # fmt: skip
    del missing.fields["child/age_months"]
    _kobo_defect(
        sim, missing.instance, "missing_field", "required_field_present",
        "required field child/age_months is absent",
    )  # fmt: skip
    impossible.fields["child/muac_mm"] = "900"
    impossible.fields["child/muac_status"] = "normal"
    _kobo_defect(
        sim, impossible.instance, "invalid_value", "value_in_range",
        "child/muac_mm = 900 mm: impossible (MUAC of children 6-59 months is 70-250 mm)",
    )  # fmt: skip
    # The tablet sent the same instance again later; the server stored it under a new _id.
    resent = min(clock.end_ms, duplicate.submitted + int(rng.integers(HOUR_MS, 3 * DAY_MS)))
    screenings.append(
        _Screening(resent, duplicate.instance, dict(duplicate.fields), duplicate.version,
                   duplicate.submitted_by)
    )  # fmt: skip
    _kobo_defect(
        sim, duplicate.instance, "duplicate", "duplicate",
        "the same meta/instanceID was submitted twice: two results, same _uuid and answers, "
        "different _id and _submission_time",
    )  # fmt: skip


def _kobo_validation(rng: np.random.Generator, clock: _Clock, submitted: int) -> Record:
    """The NGO's data manager approves most results within two weeks, rejects a few."""
    draw = float(rng.random())
    stamp = submitted + int(rng.integers(DAY_MS, 14 * DAY_MS))
    if draw >= 0.61 or stamp > clock.end_ms:
        return {}
    uid = "validation_status_approved" if draw < 0.6 else "validation_status_not_approved"
    color, label = KOBO_VALIDATION[uid]
    return {
        "timestamp": clock.epoch_seconds(stamp),
        "uid": uid,
        "by_whom": "nutri_datamanager",
        "color": color,
        "label": label,
    }


def _kobo_result(
    rng: np.random.Generator, clock: _Clock, asset: _KoboAsset, screening: _Screening, row_id: int
) -> Record:
    gps = screening.fields.get("site/gps")
    geolocation: list[float | None] = [None, None]
    if gps:
        geolocation = [float(v) for v in gps.split()[:2]]
    return {
        "_id": row_id,
        "formhub/uuid": asset.formhub_uuid,
        **screening.fields,
        "__version__": screening.version,
        "meta/instanceID": f"uuid:{screening.instance}",
        "_xform_id_string": asset.uid,
        "_uuid": screening.instance,
        "_attachments": [],
        "_status": "submitted_via_web",
        "_geolocation": geolocation,
        "_submission_time": clock.kobo(screening.submitted),
        "_tags": [],
        "_notes": [],
        "_validation_status": _kobo_validation(rng, clock, screening.submitted),
        "_submitted_by": screening.submitted_by,
    }


def _kobo_asset_json(clock: _Clock, asset: _KoboAsset, results: list[Record]) -> Record:
    url = f"{KOBO_BASE_URL}/api/v2/assets/{asset.uid}/"
    last = max((r["_submission_time"] for r in results), default=None)
    created = max(0, asset.start_ms - 5 * DAY_MS)
    return {
        "uid": asset.uid,
        "name": KOBO_ASSET_NAME,
        "asset_type": "survey",
        "owner__username": "nutri_ngo",
        "date_created": clock.kobo_asset(created),
        "date_modified": clock.kobo_asset(asset.published_ms),
        "date_deployed": clock.kobo_asset(asset.published_ms),
        "deployment__active": True,
        "deployment_status": "deployed",
        "has_deployment": True,
        "deployment__submission_count": len(results),
        "deployment__last_submission_time": None if last is None else f"{last}Z",
        "version_id": asset.versions[1],
        "deployed_version_id": asset.versions[1],
        "url": url,
        "data": f"{url}data/",
        "settings": {
            "sector": "Health",
            "country": "Demoland",
            "description": "Community MUAC screening of children 6-59 months with household WASH",
        },
    }


def _write_kobo(sim: Simulation, clock: _Clock, out_dir: Path) -> tuple[int, list[str]]:
    asset = _kobo_asset_plan(sim, clock)
    districts = _kobo_districts(sim)
    screenings = [s for d in districts for s in _kobo_screenings(sim, clock, asset, d)]
    _plant_kobo_defects(sim, clock, screenings, set(_facility_codes(sim.country).values()), asset)
    screenings.sort(key=lambda s: (s.submitted, s.instance))
    rng = sim.rng("kobo", "results")
    # Other projects on the same server take ids in between: ours increase, with gaps.
    row_id = int(rng.integers(100_000_000, 200_000_000))
    results = []
    for screening in screenings:
        row_id += 1 + int(rng.geometric(0.3))
        results.append(_kobo_result(rng, clock, asset, screening, row_id))
    folder = out_dir / "kobo" / "assets" / asset.uid
    _write_json(folder / "asset.json", _kobo_asset_json(clock, asset, results))
    document = {"count": len(results), "next": None, "previous": None, "results": results}
    _write_json(folder / "data.json", document)
    return len(results), [d.code for d in districts]


# --- entry point ---------------------------------------------------------------------------


def write_community(sim: Simulation, out_dir: Path) -> dict[str, int]:
    """Write the ODK Central forms and the Kobo asset under ``out_dir`` and what changes
    after the window under ``increments/1/`` (see :mod:`pipelines.simulate.community_increment`),
    record the injected defects in ``sim.truth``, and return the number of rows written per
    entity."""
    clock = _Clock.of(sim.window)
    counts, versions = _write_odk(sim, clock, out_dir)
    counts[KOBO_ENTITY], kobo_districts = _write_kobo(sim, clock, out_dir)
    sim.truth.notes["community"] = {
        "household_visits_per_chw_week": round(_visit_rate(sim), 4),
        "household_visit_versions": [versions.first, versions.second],
        "kobo_districts": kobo_districts,
    }
    counts |= write_community_increment(sim, out_dir)
    return counts
