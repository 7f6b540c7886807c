"""Indicator numerators and denominators recomputed in plain Python from a simulated
country's own files (CSV drops, ODK/FHIR/DHIS2 JSON, HL7 messages) and truth.json, never
from the warehouse: the independent side of tests/integration/test_indicators_all_domains.py.

Each recompute returns per-facility totals keyed by (org unit, period); ``roll_up`` adds them
to every ancestor. A key is absent when no record contributed (the warehouse then has no
value for that operand, as in DHIS2)."""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.periods import parse_period

Key = tuple[str, str]  # (org unit id, period id)
# Defects the pipeline holds back (quarantine; a schema drift waits there for review, a
# drifted spreadsheet as a whole); a formula is neutralised and kept, an outlier is only
# flagged, and the first copy of a duplicate is kept.
HELD_BACK = {"invalid_value", "missing_field", "unknown_code", "malformed_message", "schema_drift"}


@dataclass
class Country:
    folder: Path
    truth: dict[str, Any] = field(init=False)
    units: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.truth = json.loads((self.folder / "truth.json").read_text(encoding="utf-8"))
        metadata = self.folder / "dhis2" / "metadata" / "organisationUnits.json"
        self.units = json.loads(metadata.read_text(encoding="utf-8"))["organisationUnits"]

    @property
    def by_code(self) -> dict[str, str]:
        return {u["code"]: u["id"] for u in self.units}

    @property
    def paths(self) -> dict[str, list[str]]:
        return {u["id"]: u["path"].strip("/").split("/") for u in self.units}

    def defects(self, source: str, kinds: Iterable[str] = HELD_BACK) -> list[dict[str, Any]]:
        wanted = set(kinds)
        return [d for d in self.truth["defects"] if d["source"] == source and d["kind"] in wanted]


@dataclass
class Totals:
    """Sums of one operand per (facility, period); periods as the caller lists them."""

    values: dict[Key, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, org_unit: str, periods: Iterable[str], value: float) -> None:
        for period in periods:
            self.values[(org_unit, period)] += value


def roll_up(totals: Totals, paths: dict[str, list[str]]) -> dict[Key, float]:
    """Facility totals summed into every ancestor (SUM over org units)."""
    rolled: dict[Key, float] = defaultdict(float)
    for (org_unit, period), value in totals.values.items():
        for ancestor in paths[org_unit]:
            rolled[(ancestor, period)] += value
    return dict(rolled)


# --- periods -------------------------------------------------------------------------------


def month_periods(month: str) -> list[str]:
    """A month id (202511) and the quarter and year holding it."""
    year, number = int(month[:4]), int(month[4:])
    return [month, f"{year}Q{(number - 1) // 3 + 1}", str(year)]


def day_month_periods(day: date) -> list[str]:
    return month_periods(f"{day.year}{day.month:02d}")


def week_periods(day: date) -> list[str]:
    """The ISO week holding a day, and the year holding that week's Thursday (DHIS2)."""
    iso_year, week, _ = day.isocalendar()
    thursday = date.fromisocalendar(iso_year, week, 4)
    return [f"{iso_year}W{week}", str(thursday.year)]


def quarter_periods(quarter: str) -> list[str]:
    return [quarter, quarter[:4]]


# --- tabular drops ---------------------------------------------------------------------------


def tabular_rows(country: Country, relative: str) -> Iterator[dict[str, str]]:
    """Rows of one CSV drop that the pipeline keeps, each once (none of a drifted file)."""
    skipped = {
        d["record"]["row"]
        for d in country.defects("tabular", (*HELD_BACK, "duplicate"))
        if d["record"]["file"] == relative
    }
    if 0 in skipped:
        return
    with (country.folder / relative).open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            if number not in skipped and row["facility_code"] in country.by_code:
                yield row


def lmis_rows(country: Country) -> Iterator[tuple[str, dict[str, str]]]:
    for path in sorted((country.folder / "tabular" / "lmis_stock").glob("*.csv")):
        relative = path.relative_to(country.folder).as_posix()
        for row in tabular_rows(country, relative):
            yield relative, row


# --- DHIS2 data values -----------------------------------------------------------------------


def dhis2_values(country: Country, data_elements: set[str]) -> Iterator[dict[str, Any]]:
    """Data values the pipeline keeps: held-back defects out, the first copy of a duplicate."""
    held = {
        tuple(sorted(d["record"].items()))
        for d in country.defects("dhis2")
        if isinstance(d["record"], dict)
    }
    paths = country.paths
    seen: set[tuple[str, ...]] = set()
    for path in sorted((country.folder / "dhis2" / "dataValueSets").glob("*.json")):
        for value in json.loads(path.read_text(encoding="utf-8"))["dataValues"]:
            if value.get("dataElement") not in data_elements or "value" not in value:
                continue
            record = {
                k: value.get(k)
                for k in (
                    "attributeOptionCombo",
                    "categoryOptionCombo",
                    "dataElement",
                    "orgUnit",
                    "period",
                )
            }
            key = tuple(sorted(record.items()))
            if key in held or value.get("orgUnit") not in paths or key in seen:
                continue
            seen.add(key)
            yield value


def dhis2_periods(period_id: str) -> list[str]:
    """A monthly or weekly period and the quarter/year (or year) holding it."""
    period = parse_period(period_id)
    if period.period_type == "Weekly":
        return week_periods(period.start_date)
    if period.period_type == "Monthly":
        return month_periods(period_id)
    return [period_id]


# --- ODK household visits --------------------------------------------------------------------


def odk_submissions(country: Country, form: str) -> Iterator[dict[str, Any]]:
    held = {d["record"].get("instance_id") for d in country.defects("odk")}
    path = country.folder / "odk" / "projects" / "1" / "forms" / form / "submissions.json"
    seen: set[str] = set()
    for row in json.loads(path.read_text(encoding="utf-8"))["value"]:
        instance = row.get("meta", {}).get("instanceID") or row["__id"]
        if row["__system"].get("deletedAt") or instance in held or instance in seen:
            continue
        seen.add(instance)
        if row.get("facility_code") in country.by_code:
            yield row


# --- FHIR encounters -------------------------------------------------------------------------


def fhir_resources(country: Country, server: str, kind: str) -> list[dict[str, Any]]:
    path = country.folder / "fhir" / server / "ndjson" / f"{kind}.ndjson"
    latest: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            resource = json.loads(line)
            previous = latest.get(resource["id"])
            version = int(resource.get("meta", {}).get("versionId", "0"))
            if previous is None or int(previous["meta"]["versionId"]) < version:
                latest[resource["id"]] = resource
    return list(latest.values())


# --- HL7 v2 laboratory results ---------------------------------------------------------------

_MESSAGE_START = re.compile(r"(?=MSH\|)")


def hl7_time(text: str) -> datetime:
    """An HL7 DTM with its offset (202601051720+0300) as a naive UTC time."""
    match = re.fullmatch(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?", text)
    assert match, text
    day, hour, minute, second, offset = match.groups()
    moment = datetime.strptime(day, "%Y%m%d") + timedelta(
        hours=int(hour or 0), minutes=int(minute or 0), seconds=int(second or 0)
    )
    if offset:
        sign = 1 if offset[0] == "+" else -1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:]))
    return moment


@dataclass(frozen=True)
class LabResult:
    facility_code: str
    order: str
    test_code: str
    value_code: str | None
    collected: datetime
    sent: datetime
    rejected: bool


def lab_results(country: Country) -> list[LabResult]:
    """The latest result per order and test, from every HL7 file (held-back messages out)."""
    held = {
        (d["record"]["file"], d["record"]["position"])
        for d in country.defects("hl7", (*HELD_BACK, "duplicate"))
    }
    latest: dict[tuple[str, str], LabResult] = {}
    for path in sorted((country.folder / "hl7").rglob("*.hl7")):
        relative = path.relative_to(country.folder).as_posix()
        text = path.read_text(encoding="latin-1")
        messages = [m for m in _MESSAGE_START.split(text) if m.startswith("MSH|")]
        for position, message in enumerate(messages, start=1):
            if (relative, position) in held:
                continue
            for result in _message_results(message):
                key = (result.order, result.test_code)
                if key not in latest or latest[key].sent <= result.sent:
                    latest[key] = result
    return list(latest.values())


def _message_results(message: str) -> list[LabResult]:
    segments = [s.split("|") for s in re.split(r"[\r\n]+", message) if s]
    msh = segments[0]
    sent = hl7_time(msh[6])
    results: list[LabResult] = []
    facility = order = ""
    collected = sent
    status = ""
    order_test = ""
    observed = False
    for fields in segments:
        if fields[0] == "ORC":
            facility = fields[21].split("^")[9]
        elif fields[0] == "OBR":
            order = fields[3]
            order_test = fields[4].split("^")[0]
            collected = hl7_time(fields[7])
            status = fields[25] if len(fields) > 25 else ""
        elif fields[0] == "OBX":
            observed = True
            code = fields[5].split("^")[0] if fields[2] == "CWE" else None
            test = fields[3].split("^")[0]
            results.append(LabResult(facility, order, test, code, collected, sent, False))
    if not observed and status == "X":
        results.append(LabResult(facility, order, order_test, None, collected, sent, True))
    return results
