"""A DHIS2 Web API subset over the simulator's ``dhis2/`` folder, mounted at ``/dhis2``.

Endpoints (every path also answers with an API version, ``/dhis2/api/40/...``):

``GET /dhis2/api/system/info``, ``GET /dhis2/api/me``
    Who and what the server is: for a connector's start-up check.

``GET /dhis2/api/<collection>`` (``.json`` optional) for every ``dhis2/metadata/<collection>.json``
    (organisationUnits, organisationUnitGroups, organisationUnitGroupSets, categoryOptions,
    categories, categoryCombos, categoryOptionCombos, dataElements, dataSets ...).
    ``page`` (from 1) and ``pageSize`` (default 50) or ``paging=false``; the answer is
    ``{"pager": {"page", "pageCount", "total", "pageSize", "nextPage"?, "prevPage"?},
    "<collection>": [...]}`` (no pager with ``paging=false``). ``fields`` is accepted: top-level
    names select properties (``id,name,parent[id]`` keeps ``id``, ``name``, ``parent``, nested
    objects whole), ``*`` and presets such as ``:all`` / ``:owner`` keep everything, ``!name``
    drops one; without ``fields`` objects are returned whole (real DHIS2 would send only
    ``id`` and ``displayName``). ``filter=<property>:<operator>[:<value>]`` (repeatable,
    dotted properties such as ``parent.id``) with ``eq !eq ne like !like $like like$ ilike
    !ilike $ilike ilike$ in !in gt ge lt le null !null``, and ``rootJunction=AND|OR``;
    ``order=<property>[:asc|:desc]``.

``GET /dhis2/api/<collection>/<id>``
    One object (``fields`` as above).

``GET /dhis2/api/dataValueSets`` (``.json`` or ``.csv``; ``Accept: application/csv`` or
``text/csv`` also selects CSV)
    ``dataSet`` (repeatable) and/or ``dataElement`` (repeatable); ``period`` (repeatable,
    exact identifiers) or ``startDate`` + ``endDate`` (periods lying wholly inside the
    range, as DHIS2's ``getPeriodsBetweenDates``); ``lastUpdated`` (values updated at or
    after); ``orgUnit`` (repeatable) or ``orgUnitGroup``, with ``children=true`` for the
    subtrees (by ``path``); ``includeDeleted=true``; ``limit``. A data set (or data element
    group, or data element), a period, date range or ``lastUpdated``, and an org unit are
    required: otherwise 409 with DHIS2's message and error code (E2001, E2002, E2003, E2006).
    No paging, as in DHIS2. JSON is ``{"dataValues": [...]}`` (plus ``dataSet``, ``period``
    and ``orgUnit`` when exactly one of each was asked for without children); CSV has DHIS2's
    header ``dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value,
    storedby,lastupdated,comment,followup,deleted``.

``GET /dhis2/api/completeDataSetRegistrations``
    ``dataSet``, ``period`` or ``startDate``/``endDate`` (or ``created``: registered at or
    after), ``orgUnit`` + ``children``; answers ``{"completeDataSetRegistrations": [...]}``.

What is served is what the files hold, as a DHIS2 server would hold it. A value belongs to the
data set of the file it is in. Values a DHIS2 server could not store at all, because their org
unit is missing or not in the hierarchy or their period is not a DHIS2 period (planted defects
of the files), are never served; the other planted defects (unknown data element or category
option combo, a missing or non-numeric value, an exact duplicate) come through as a
misconfigured server would export them.

Increments: the simulator writes what changes after its window under
``increments/<n>/dhis2/`` (new weeks, corrections, deletions). The sandbox starts with the base
data; applying increment ``n`` (``Sandbox.apply_increment(n)``, or ``POST
/_sandbox/increments/<n>``) serves the server as it is afterwards: corrected values replace
the old ones, deleted ones come only with ``includeDeleted=true``, so an incremental pull by
``lastUpdated`` sees exactly the changes.

Auth: HTTP Basic (``admin`` / ``district`` by default) or ``Authorization: ApiToken
d2pat_...``. Errors are DHIS2's ``{"httpStatus", "httpStatusCode", "status", "message"}``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple

from pipelines.periods import Period, PeriodError, parse_period
from pipelines.sandbox.auth import Credentials, basic_matches, token_matches
from pipelines.sandbox.dhis2_values import (
    DataSetValues,
    Key,
    Selection,
    compact_json,
    epoch_seconds,
    merged_rows,
)
from pipelines.sandbox.routing import (
    ApiError,
    Request,
    Response,
    Route,
    json_response,
    route,
)

JSON = "application/json;charset=UTF-8"
CSV = "application/csv; charset=UTF-8"  # DHIS2 ContextUtils.CONTENT_TYPE_CSV
CSV_HEADER = (
    "dataelement", "period", "orgunit", "categoryoptioncombo", "attributeoptioncombo", "value",
    "storedby", "lastupdated", "comment", "followup", "deleted",
)  # fmt: skip
CSV_KEYS = (
    "dataElement", "period", "orgUnit", "categoryOptionCombo", "attributeOptionCombo", "value",
    "storedBy", "lastUpdated", "comment", "followup", "deleted",
)  # fmt: skip
DEFAULT_PAGE_SIZE = 50
API = r"/api(?:/\d{2})?"
FIELD_PRESETS = {"*", ":all", ":owner", ":simple", ":identifiable", ":nameable", ":persisted"}


# --- the files -----------------------------------------------------------------------------


def parse_timestamp(text: str) -> datetime | None:
    """DHIS2 timestamps and date parameters (``2026-01-05``, ``2026-01-05T10:00:00.000``,
    with or without a zone); compared without zone, as DHIS2 stores server-local time."""
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return None


def _period(period_id: str | None) -> Period | None:
    if not period_id:
        return None
    try:
        return parse_period(period_id)
    except PeriodError:
        return None


def _value_key(value: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a data value in DHIS2: a later copy replaces the earlier one."""
    return tuple(
        value.get(k)
        for k in ("dataElement", "period", "orgUnit", "categoryOptionCombo", "attributeOptionCombo")
    )


def _registration_key(registration: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        registration.get(k)
        for k in ("dataSet", "period", "organisationUnit", "attributeOptionCombo")
    )


class Dhis2Store:
    """The ``dhis2/`` folder, read lazily and cached: metadata on first use, data values one
    data set at a time.

    ``increment`` (0 by default) serves the server as it is after the simulator's
    ``increments/1`` ... ``increments/<n>`` folders: their values replace base values with
    the same key (corrections, deletions marked ``"deleted": true``) or add new ones; their
    registrations likewise. Metadata does not change.
    """

    def __init__(self, root: Path, increments: Path | None = None) -> None:
        self.root = root
        self.increments_root = increments
        self.increment = 0
        # Re-entrant: loading values reads the metadata (data set codes) under the same lock.
        self._lock = threading.RLock()
        self._metadata: dict[str, list[dict[str, Any]]] | None = None
        self._values: dict[str, DataSetValues] = {}
        self._registrations: dict[str, list[dict[str, Any]]] = {}
        self._registrations_by_date: dict[str, tuple[list[datetime], list[dict[str, Any]]]] = {}

    @property
    def available(self) -> bool:
        return self.root.is_dir()

    def available_increments(self) -> list[int]:
        """The increment numbers with a ``dhis2/`` folder (``increments/<n>/dhis2``)."""
        if self.increments_root is None or not self.increments_root.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.increments_root.iterdir()
            if p.name.isdigit() and (p / "dhis2").is_dir()
        )

    def set_increment(self, number: int) -> None:
        """Serve the base data plus increments 1..``number`` (0: the base alone)."""
        if number and number not in self.available_increments():
            raise ValueError(f"no DHIS2 increment {number} (have {self.available_increments()})")
        with self._lock:
            self.increment = number
            self.close()
            self._registrations.clear()
            self._registrations_by_date.clear()

    def close(self) -> None:
        """Forget the loaded values (and free their files)."""
        with self._lock:
            for values in self._values.values():
                values.close()
            self._values.clear()

    def warm(self) -> None:
        """Read every data set's values now rather than on the first request that needs them
        (the benchmarks time requests, not the sandbox reading its files)."""
        for data_set in self.by_id("dataSets"):
            self.values(data_set)
            self.registrations_created_since(data_set, datetime.max)

    def _roots(self) -> list[Path]:
        roots = [self.root]
        if self.increments_root is not None:
            roots += [
                self.increments_root / str(n) / "dhis2"
                for n in self.available_increments()
                if n <= self.increment
            ]
        return roots

    def metadata(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            if self._metadata is None:
                self._metadata = {}
                for path in sorted((self.root / "metadata").glob("*.json")):
                    document = json.loads(path.read_text(encoding="utf-8"))
                    self._metadata[path.stem] = list(document.get(path.stem, []))
            return self._metadata

    def collection(self, name: str) -> list[dict[str, Any]] | None:
        return self.metadata().get(name)

    def by_id(self, collection: str) -> dict[str, dict[str, Any]]:
        return {item["id"]: item for item in self.metadata().get(collection, []) if "id" in item}

    def _files_by_data_set(self, folder: Path) -> dict[str, list[Path]]:
        """Files are named ``<data set code>_<year>.json``; a name that matches no data set
        code is opened to read its ``dataSet``."""
        codes = {
            str(ds.get("code", "")).lower(): ds["id"]
            for ds in self.metadata().get("dataSets", [])
            if "id" in ds
        }
        files: dict[str, list[Path]] = {}
        for path in sorted(folder.glob("*.json")):
            uid = codes.get(path.stem.rsplit("_", 1)[0].lower())
            if uid is None:
                document = json.loads(path.read_text(encoding="utf-8"))
                uid = document.get("dataSet") if isinstance(document, dict) else None
            if uid:
                files.setdefault(uid, []).append(path)
        return files

    def _files(self, root: Path, folder: str, data_set: str, key: str) -> Iterator[list[Any]]:
        """The rows of one layer's files for one data set, a file at a time."""
        for path in self._files_by_data_set(root / folder).get(data_set, []):
            yield json.loads(path.read_text(encoding="utf-8")).get(key, [])

    def _merged(
        self, folder: str, data_set: str, key: str, identity: Callable[[dict[str, Any]], Key]
    ) -> Iterator[dict[str, Any]]:
        """One data set's rows as served: the base files (streamed) after every applied
        increment (read whole: they are small)."""
        base, *increments = self._roots()
        changes = [
            [row for rows in self._files(root, folder, data_set, key) for row in rows]
            for root in increments
        ]
        return merged_rows(self._files(base, folder, data_set, key), changes, identity)

    def values(self, data_set: str) -> DataSetValues:
        with self._lock:
            if data_set not in self._values:
                rows = self._merged("dataValueSets", data_set, "dataValues", _value_key)
                self._values[data_set] = self._load(rows)
            return self._values[data_set]

    def _load(self, rows: Iterator[dict[str, Any]]) -> DataSetValues:
        stamps: dict[str, float] = {}
        valid_periods: dict[str, bool] = {}
        values = DataSetValues()
        units = self.by_id("organisationUnits")
        line = _CsvLine()
        for value in rows:
            org_unit, period = value.get("orgUnit"), value.get("period")
            if not isinstance(period, str):
                continue
            if period not in valid_periods:
                valid_periods[period] = _period(period) is not None
            if org_unit not in units or not valid_periods[period]:
                continue  # a DHIS2 server cannot hold it (see the module docstring)
            stamp = value.get("lastUpdated")
            if isinstance(stamp, str):
                if stamp not in stamps:
                    stamps[stamp] = epoch_seconds(parse_timestamp(stamp))
                updated = stamps[stamp]
            else:
                updated = float("nan")
            values.append(
                org_unit,
                period,
                value.get("dataElement"),
                updated,
                value.get("deleted") is True,
                compact_json(value),
                line(value).encode("utf-8"),
            )
        return values.finish()

    def registrations(self, data_set: str) -> list[dict[str, Any]]:
        with self._lock:
            if data_set not in self._registrations:
                base = self._merged(
                    "completeDataSetRegistrations",
                    data_set,
                    "completeDataSetRegistrations",
                    _registration_key,
                )
                units = self.by_id("organisationUnits")
                self._registrations[data_set] = [
                    r
                    for r in base
                    if r.get("organisationUnit") in units and _period(r.get("period")) is not None
                ]
            return self._registrations[data_set]

    def registrations_created_since(self, data_set: str, moment: datetime) -> list[dict[str, Any]]:
        """The registrations whose ``date`` is at or after ``moment`` (``created=``), from a list
        sorted by date, as a server answers from an index: scanning and parsing every
        registration cost a third of a second per request at L scale, which then timed the
        sandbox rather than the pull. Registrations without a readable date never match."""
        with self._lock:
            if data_set not in self._registrations_by_date:
                dated = sorted(
                    (
                        (stamp, registration)
                        for registration in self.registrations(data_set)
                        if (stamp := parse_timestamp(str(registration.get("date", ""))))
                    ),
                    key=lambda pair: pair[0],
                )
                self._registrations_by_date[data_set] = (
                    [stamp for stamp, _ in dated],
                    [registration for _, registration in dated],
                )
            stamps, ordered = self._registrations_by_date[data_set]
        return ordered[bisect_left(stamps, moment) :]


# --- selection helpers ---------------------------------------------------------------------


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() == "true"


class _PeriodSelection(NamedTuple):
    periods: set[str] | None
    start: date | None
    end: date | None

    @property
    def selects_all(self) -> bool:
        return self.periods is None and (self.start is None or self.end is None)

    def matches(self, period_id: str | None) -> bool:
        if self.periods is not None:
            return period_id in self.periods
        if self.start is None or self.end is None:
            return True
        period = _period(period_id)
        return (
            period is not None and period.start_date >= self.start and period.end_date <= self.end
        )


class Dhis2Api:
    """The DHIS2 Web API subset; see the module docstring."""

    name = "dhis2"
    prefix = "/dhis2"

    def __init__(self, store: Dhis2Store, credentials: Credentials) -> None:
        self.store = store
        self.credentials = credentials
        self._routes = [
            route("GET", rf"{API}/system/info(?:\.json)?", self.system_info, faultable=False),
            route("GET", rf"{API}/me(?:\.json)?", self.me, faultable=False),
            route("GET", rf"{API}/dataValueSets(?P<ext>\.json|\.csv)?", self.data_value_sets),
            route(
                "GET",
                rf"{API}/completeDataSetRegistrations(?:\.json)?",
                self.complete_registrations,
            ),
            route("GET", rf"{API}/(?P<collection>[A-Za-z]+)(?:\.json)?", self.metadata_list),
            route(
                "GET",
                rf"{API}/(?P<collection>[A-Za-z]+)/(?P<uid>[A-Za-z0-9]+)(?:\.json)?",
                self.metadata_object,
            ),
        ]

    def routes(self) -> list[Route]:
        return self._routes

    # --- protocol ----------------------------------------------------------------------

    def error(
        self,
        status: int,
        message: str,
        headers: list[tuple[str, str]] | None = None,
        error_code: str | None = None,
    ) -> Response:
        document: dict[str, Any] = {
            "httpStatus": HTTPStatus(status).phrase,
            "httpStatusCode": status,
            "status": "ERROR",
            "message": message,
        }
        if error_code:
            document["errorCode"] = error_code
        return json_response(document, status, JSON, headers)

    def conflict(self, message: str, error_code: str | None = None) -> ApiError:
        return ApiError(self.error(409, message, error_code=error_code))

    def authenticate(self, request: Request) -> Response | None:
        header = request.header("Authorization")
        creds = self.credentials
        if basic_matches(header, creds.dhis2_username, creds.dhis2_password):
            return None
        if token_matches(header, "ApiToken", creds.dhis2_api_token):
            return None
        return self.error(401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="DHIS2"')])

    def _require_data(self) -> None:
        if not self.store.available:
            raise ApiError(self.error(404, "This sandbox holds no DHIS2 data"))

    # --- endpoints ---------------------------------------------------------------------

    def system_info(self, request: Request) -> Response:
        """``GET /api/system/info``: version and context path (no data)."""
        return json_response(
            {
                "contextPath": request.base_url + self.prefix,
                "version": "2.40.0",
                "calendar": "iso8601",
                "dateFormat": "yyyy-mm-dd",
                "systemName": "healthpipe sandbox",
            },
            content_type=JSON,
        )

    def me(self, request: Request) -> Response:
        """``GET /api/me``: the authenticated user."""
        return json_response(
            {"username": self.credentials.dhis2_username, "name": "Sandbox administrator"},
            content_type=JSON,
        )

    def metadata_list(self, request: Request) -> Response:
        """``GET /api/<collection>``: a metadata collection, paged (see module docstring)."""
        self._require_data()
        name = request.params["collection"]
        items = self.store.collection(name)
        if items is None:
            return self.error(404, f"No such resource: {request.path}")
        selected = _filter_objects(items, request.args("filter"), request.arg("rootJunction"))
        if request.arg("order"):
            selected = _order_objects(selected, request.arg("order") or "")
        project = _projector(request.arg("fields"))
        if (request.arg("paging") or "").lower() == "false":
            return json_response({name: [project(item) for item in selected]}, content_type=JSON)
        page = self._positive_int(request.arg("page"), "page", 1)
        size = self._positive_int(request.arg("pageSize"), "pageSize", DEFAULT_PAGE_SIZE)
        total = len(selected)
        page_count = math.ceil(total / size)
        pager: dict[str, Any] = {
            "page": page,
            "pageCount": page_count,
            "total": total,
            "pageSize": size,
        }
        if page < page_count:
            pager["nextPage"] = request.url_with({"page": page + 1})
        if page > 1:
            pager["prevPage"] = request.url_with({"page": min(page - 1, max(page_count, 1))})
        chunk = selected[(page - 1) * size : page * size]
        return json_response(
            {"pager": pager, name: [project(item) for item in chunk]}, content_type=JSON
        )

    def metadata_object(self, request: Request) -> Response:
        """``GET /api/<collection>/<id>``: one metadata object."""
        self._require_data()
        name, uid = request.params["collection"], request.params["uid"]
        if self.store.collection(name) is None:
            return self.error(404, f"No such resource: {request.path}")
        found = self.store.by_id(name).get(uid)
        if found is None:
            kind = name[:1].upper() + name[1:].rstrip("s")
            return self.error(404, f"{kind} with id {uid} could not be found.")
        return json_response(_projector(request.arg("fields"))(found), content_type=JSON)

    def data_value_sets(self, request: Request) -> Response:
        """``GET /api/dataValueSets``: data values (JSON or CSV), see module docstring."""
        self._require_data()
        data_sets = self._data_sets(request)
        elements = set(request.args("dataElement")) or None
        if not data_sets and elements is None:
            raise self.conflict(
                "At least one valid data set or data element group must be specified", "E2001"
            )
        last_updated = self._timestamp(request, "lastUpdated")
        periods = self._periods(request, allow_last_updated=last_updated is not None)
        units = self._org_units(request)
        include_deleted = _truthy(request.arg("includeDeleted"))
        limit = (
            self._positive_int(request.arg("limit"), "limit", 0) if request.arg("limit") else None
        )
        pools = data_sets or list(self.store.by_id("dataSets"))
        selection = Selection(
            org_units=units,
            data_elements=elements,
            include_deleted=include_deleted,
            updated_since=None if last_updated is None else epoch_seconds(last_updated),
            period_matches=None if periods.selects_all else periods.matches,
        )
        chosen: list[tuple[DataSetValues, Any]] = []
        left = limit
        for data_set in pools:
            values = self.store.values(data_set)
            positions = values.select(selection)
            if left is not None:
                positions = positions[:left]
                left -= len(positions)
            chosen.append((values, positions))
            if left == 0:
                break
        if self._wants_csv(request):
            lines = (line for values, positions in chosen for line in values.csv_lines(positions))
            body = (",".join(CSV_HEADER) + "\n").encode("utf-8") + b"".join(lines)
            return Response(200, body, CSV)
        head = ""
        org_units = request.args("orgUnit")
        single = (
            len(data_sets) == 1
            and periods.periods is not None
            and len(periods.periods) == 1
            and len(org_units) == 1
            and not _truthy(request.arg("children"))
        )
        if single and periods.periods is not None:
            head = (
                f'"dataSet":{json.dumps(data_sets[0])},'
                f'"period":{json.dumps(next(iter(periods.periods)))},'
                f'"orgUnit":{json.dumps(org_units[0])},'
            )
        objects = (item for values, positions in chosen for item in values.json_objects(positions))
        body = ("{" + head + '"dataValues":[').encode("utf-8") + b",".join(objects) + b"]}"
        return Response(200, body, JSON)

    def complete_registrations(self, request: Request) -> Response:
        """``GET /api/completeDataSetRegistrations``: when reports were completed."""
        self._require_data()
        data_sets = self._data_sets(request)
        if not data_sets:
            raise self.conflict("At least one valid data set must be specified", "E2001")
        created = self._timestamp(request, "created")
        periods = self._periods(request, allow_last_updated=created is not None)
        units = self._org_units(request)
        chosen = []
        for data_set in data_sets:
            candidates = (
                self.store.registrations(data_set)
                if created is None
                else self.store.registrations_created_since(data_set, created)
            )
            for registration in candidates:
                if registration.get("organisationUnit") not in units:
                    continue
                if not periods.matches(registration.get("period")):
                    continue
                chosen.append(registration)
        return json_response({"completeDataSetRegistrations": chosen}, content_type=JSON)

    # --- parameter parsing -------------------------------------------------------------

    def _positive_int(self, text: str | None, name: str, default: int) -> int:
        if text is None or text == "":
            return default
        try:
            number = int(text)
        except ValueError:
            raise self.conflict(f"{name} must be a whole number, got {text!r}") from None
        if number < 1:
            raise self.conflict(f"{name} must be at least 1, got {number}")
        return number

    def _timestamp(self, request: Request, name: str) -> datetime | None:
        text = request.arg(name)
        if not text:
            return None
        stamp = parse_timestamp(text)
        if stamp is None:
            raise self.conflict(f"Invalid {name}: {text}")
        return stamp

    def _data_sets(self, request: Request) -> list[str]:
        known = self.store.by_id("dataSets")
        return [uid for uid in request.args("dataSet") if uid in known]

    def _periods(self, request: Request, *, allow_last_updated: bool) -> _PeriodSelection:
        # Exact identifiers, as DHIS2 matches them: 2025Q3 does not select weekly values.
        requested = request.args("period")
        if requested:
            return _PeriodSelection(set(requested), None, None)
        start_text, end_text = request.arg("startDate"), request.arg("endDate")
        if start_text or end_text:
            if not (start_text and end_text):
                raise self.conflict("Start date and end date must be specified", "E2002")
            start, end = parse_timestamp(start_text), parse_timestamp(end_text)
            if start is None or end is None:
                raise self.conflict(f"Invalid start or end date: {start_text}, {end_text}")
            if start > end:
                raise self.conflict("Start date must be before end date", "E2003")
            return _PeriodSelection(None, start.date(), end.date())
        if allow_last_updated:
            return _PeriodSelection(None, None, None)
        raise self.conflict(
            "At least one valid period, start/end dates, relative period or last updated "
            "must be specified",
            "E2002",
        )

    def _org_units(self, request: Request) -> set[str]:
        units = self.store.by_id("organisationUnits")
        requested = [uid for uid in request.args("orgUnit") if uid in units]
        groups = self.store.by_id("organisationUnitGroups")
        for group in request.args("orgUnitGroup"):
            members = groups.get(group, {}).get("organisationUnits", [])
            requested += [m["id"] for m in members if isinstance(m, dict) and m.get("id") in units]
        if not requested:
            raise self.conflict(
                "At least one valid organisation unit or organisation unit group must be specified",
                "E2006",
            )
        roots = set(requested)
        if not _truthy(request.arg("children")):
            return roots
        return {
            uid
            for uid, unit in units.items()
            if uid in roots or any(f"/{root}/" in f"{unit.get('path', '')}/" for root in roots)
        }

    @staticmethod
    def _wants_csv(request: Request) -> bool:
        if request.params.get("ext") == ".csv":
            return True
        if request.params.get("ext") == ".json":
            return False
        accept = (request.header("Accept") or "").lower()
        return "application/csv" in accept or "text/csv" in accept


class _CsvLine:
    """One data value as a line of DHIS2's CSV export (the csv module's quoting)."""

    def __init__(self) -> None:
        self._out = io.StringIO()
        self._writer = csv.writer(self._out, lineterminator="\n")

    def __call__(self, value: dict[str, Any]) -> str:
        row = []
        for key in CSV_KEYS:
            item = value.get(key)
            if key == "followup":
                row.append("true" if item else "false")
            elif key == "deleted":
                row.append("true" if item else "")
            else:
                row.append("" if item is None else str(item))
        self._out.seek(0)
        self._out.truncate()
        self._writer.writerow(row)
        return self._out.getvalue()


# --- metadata fields, filters and order ---------------------------------------------------


def _top_level_fields(spec: str) -> list[str]:
    """``id,name,parent[id,name]`` -> ``["id", "name", "parent"]`` (brackets skipped)."""
    names, depth, current = [], 0, ""
    for char in spec:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            names.append(current.strip())
            current = ""
        elif depth == 0:
            current += char
    names.append(current.strip())
    return [name for name in names if name]


def _projector(spec: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    if not spec:
        return lambda item: item
    names = _top_level_fields(spec)
    everything = any(name in FIELD_PRESETS for name in names)
    wanted = [n for n in names if n not in FIELD_PRESETS and not n.startswith("!")]
    dropped = {n[1:] for n in names if n.startswith("!")}

    def project(item: dict[str, Any]) -> dict[str, Any]:
        if everything:
            return {k: v for k, v in item.items() if k not in dropped}
        return {k: item[k] for k in wanted if k in item and k not in dropped}

    return project


def _resolve(item: Any, path: Sequence[str]) -> list[Any]:
    """Every value at a dotted path, flattening lists (``organisationUnitGroups.id``)."""
    if isinstance(item, list):
        return [found for element in item for found in _resolve(element, path)]
    if not path:
        return [item]
    if not isinstance(item, dict) or path[0] not in item:
        return []
    return _resolve(item[path[0]], path[1:])


_FILTER = re.compile(r"^(?P<prop>[A-Za-z0-9_.]+):(?P<op>!?\$?[a-z]+\$?)(?::(?P<value>.*))?$")


def _compare(actual: Any, op: str, expected: str) -> bool:
    if isinstance(actual, bool):
        left: Any = "true" if actual else "false"
        right: Any = expected.lower()
    elif isinstance(actual, int | float):
        try:
            left, right = float(actual), float(expected)
        except ValueError:
            return False
    else:
        left, right = str(actual), expected
    if op == "eq":
        return bool(left == right)
    if op in ("gt", "ge", "lt", "le"):
        checks: dict[str, Callable[[Any, Any], bool]] = {
            "gt": lambda a, b: a > b,
            "ge": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "le": lambda a, b: a <= b,
        }
        return checks[op](left, right)
    text, pattern = str(actual), expected
    if "ilike" in op:
        text, pattern = text.lower(), pattern.lower()
    kind = op.replace("ilike", "like")
    if kind == "like":
        return pattern in text
    if kind == "$like":
        return text.startswith(pattern)
    if kind == "like$":
        return text.endswith(pattern)
    raise ValueError(op)


def _filter_objects(
    items: list[dict[str, Any]], filters: list[str], junction: str | None
) -> list[dict[str, Any]]:
    if not filters:
        return items
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for text in filters:
        found = _FILTER.match(text)
        if not found:
            raise ApiError(_error_409(f"Invalid filter: {text}"))
        prop, op, value = found["prop"], found["op"], found["value"] or ""
        tests.append(_filter_test(prop.split("."), op, value, text))
    any_of = (junction or "AND").upper() == "OR"
    return [
        item
        for item in items
        if (any(t(item) for t in tests) if any_of else all(t(item) for t in tests))
    ]


def _filter_test(
    path: list[str], op: str, value: str, text: str
) -> Callable[[dict[str, Any]], bool]:
    negated = op.startswith("!") or op in ("ne", "neq")
    bare = {"ne": "eq", "neq": "eq"}.get(op, op.lstrip("!"))
    known = {
        "eq",
        "like",
        "$like",
        "like$",
        "ilike",
        "$ilike",
        "ilike$",
        "in",
        "gt",
        "ge",
        "lt",
        "le",
        "null",
    }
    if bare not in known:
        raise ApiError(_error_409(f"Unsupported filter operator in: {text}"))
    if bare == "in":
        options = [v.strip() for v in value.strip("[]").split(",") if v.strip()]

    def test(item: dict[str, Any]) -> bool:
        found = _resolve(item, path)
        if bare == "null":
            hit = not found or all(v is None for v in found)
        elif bare == "in":
            hit = any(any(_compare(v, "eq", option) for option in options) for v in found)
        else:
            hit = any(v is not None and _compare(v, bare, value) for v in found)
        return hit != negated

    return test


def _order_objects(items: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    ordered = list(items)
    # Apply the last key first: Python's sort is stable, so earlier keys win.
    for part in reversed([p for p in spec.split(",") if p.strip()]):
        prop, _, direction = part.strip().partition(":")
        path = prop.split(".")

        def key(item: dict[str, Any], path: list[str] = path) -> tuple[int, Any]:
            found = _resolve(item, path)
            value = found[0] if found else None
            if value is None:
                return (1, "")
            return (0, value if isinstance(value, int | float) else str(value).lower())

        ordered.sort(key=key, reverse=direction.lower().startswith("desc"))
    return ordered


def _error_409(message: str) -> Response:
    document = {
        "httpStatus": "Conflict",
        "httpStatusCode": 409,
        "status": "ERROR",
        "message": message,
    }
    return json_response(document, 409, JSON)
