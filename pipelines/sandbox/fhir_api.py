"""FHIR R4 REST and Bulk Data servers over the simulator's ``fhir/<server>/ndjson/`` files,
mounted at ``/fhir/<server>`` (``/fhir/emr``, ``/fhir/ihris``). Resources are served in the
files' order (by ``meta.lastUpdated``, then ``id``).

Endpoints (``[base]`` = ``/fhir/<server>``):

``GET [base]/metadata``
    A CapabilityStatement: the resource types the server has files for, read, search-type
    and history-type interactions, the ``_lastUpdated`` and ``_id`` search parameters and the
    Bulk Data ``export`` operations. Never needs a token.

``GET [base]/<Type>?...`` (and ``POST [base]/<Type>/_search`` with a form body)
    A ``searchset`` Bundle: ``total``, ``link`` ``self`` / ``next`` / ``previous``,
    ``entry[]`` with ``fullUrl``, ``resource`` and ``search.mode`` ``match``. Parameters:
    ``_lastUpdated`` (repeatable; prefixes ``eq ne gt ge lt le sa eb``, precision from a year
    to fractions of a second, the value's implicit range as the FHIR spec defines it),
    ``_id`` (comma-separated), ``_count`` (default 50, at most 1000; ``0`` gives only the
    total), ``_sort`` (``_lastUpdated``, ``-_lastUpdated``, ``_id``, ``-_id``),
    ``_summary=count``, ``_total=none``; ``_format`` and ``_pretty`` are accepted and ignored.
    Other parameters are ignored, unless the request says ``Prefer: handling=strict`` (then
    400). The results are a snapshot taken when the search runs; ``next`` links are opaque
    (``[base]?_getpages=<id>&_getpagesoffset=<n>&_count=<n>``) and answer 410 once the
    snapshot has been evicted (the last 500 searches are kept).

``GET [base]/<Type>/_history?_since=<instant>``
    The type's history as a ``history`` Bundle, newest first, in one page: each resource's
    current version changed at or after ``_since`` (``request`` ``POST`` for version 1, else
    ``PUT``) and each deletion (``request`` ``DELETE <Type>/<id>``, ``response.status`` ``410
    Gone``, ``response.lastModified`` when). Older versions are not kept (the files hold only
    the latest), so this is the history a client syncing changes needs, not an audit trail.

``GET [base]/<Type>/<id>``
    One resource, with ``ETag`` (``W/"<versionId>"``) and ``Last-Modified``; 410 once deleted.

``GET [base]/$export``, ``[base]/Patient/$export``, ``[base]/Group/<id>/$export``
    Bulk Data kick-off: needs ``Prefer: respond-async``; ``_outputFormat``
    (``application/fhir+ndjson``, ``application/ndjson`` or ``ndjson``), ``_since`` (resources
    whose ``meta.lastUpdated`` is after it), ``_type`` (comma-separated, repeatable). Patient
    and Group exports hold the Patients (all, or the Group's ``member`` entities) and the
    resources that reference them. Answers 202 with ``Content-Location``.

``GET [base]/$export-poll-status/<job>`` (``DELETE`` cancels)
    202 with ``X-Progress`` and ``Retry-After`` for the first polls (two by default), then
    200 with ``{"transactionTime", "request", "requiresAccessToken", "output": [{"type",
    "url", "count"}], "deleted": [...], "error": []}``. ``transactionTime`` is the latest
    ``meta.lastUpdated`` (or deletion) on the server, so it is the next export's ``_since``.
    ``deleted`` is empty without ``_since``; with it, one file (``type`` ``Bundle``) when
    resources of the exported types were deleted after ``_since``: a ``transaction`` Bundle
    a line, each entry a ``DELETE <Type>/<id>`` request, as the Bulk Data spec says.

``GET [base]/$export-file/<job>/<Type>-<n>.ndjson``
    An output file (``application/fhir+ndjson``).

Increments: the simulator writes what changes after its window under
``increments/<n>/fhir/<server>/`` (new resources and new versions in ``ndjson/``, deletions in
``deleted.ndjson``). ``Sandbox.apply_increment(n)`` serves the servers as they are afterwards:
searches see the latest version of each resource and no deleted one (as a FHIR server's
search does), ``_history`` and exports (with ``_since``) list the deletions.

Auth: open by default; with ``Credentials.fhir_token`` set, every endpoint but ``metadata``
needs ``Authorization: Bearer <token>`` (and the manifest says ``requiresAccessToken``).
Errors are OperationOutcome resources.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from pipelines.sandbox.auth import Credentials, token_matches
from pipelines.sandbox.routing import (
    ApiError,
    Request,
    Response,
    Route,
    build_url,
    json_response,
    route,
)

FHIR_JSON = "application/fhir+json;charset=utf-8"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
SEARCH_PARAMS = {
    "_lastUpdated",
    "_id",
    "_count",
    "_sort",
    "_summary",
    "_total",
    "_format",
    "_pretty",
}
MAX_SNAPSHOTS = 500
DELETED_FILE = "Deleted-1"  # the one output file of an export's deletions
SERVER = r"/(?P<server>[A-Za-z0-9_-]+)"
TYPE = r"(?P<type>[A-Z][A-Za-z]+)"
ISSUE_CODES = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    406: "not-supported", 410: "not-found", 429: "throttled", 503: "transient",
}  # fmt: skip


@dataclass(frozen=True)
class FhirSettings:
    """Paging and Bulk Data behaviour (tests shorten the waits)."""

    default_count: int = 50
    max_count: int = 1000
    bulk_polls: int = 2  # polls answered 202 before the manifest
    bulk_retry_after: int = 1  # seconds, the Retry-After of those polls
    bulk_file_size: int = 0  # resources per output file; 0 = one file per type


# --- the files -----------------------------------------------------------------------------


class _Resource(NamedTuple):
    last_updated: datetime | None
    stamp: str | None
    id: str
    raw: str


def parse_instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Deletion(NamedTuple):
    resource_type: str
    id: str
    deleted_at: datetime | None
    raw: str
    """The Bulk Data ``deleted`` line: a transaction Bundle with one ``DELETE`` entry."""


def _read_rows(path: Path) -> list[_Resource]:
    rows: list[_Resource] = []
    if not path.is_file():
        return rows
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            resource = json.loads(line)
            stamp = resource.get("meta", {}).get("lastUpdated")
            moment = parse_instant(stamp) if isinstance(stamp, str) else None
            rows.append(_Resource(moment, stamp, str(resource.get("id")), line))
    return rows


def _read_deletions(path: Path) -> list[_Deletion]:
    deletions: list[_Deletion] = []
    if not path.is_file():
        return deletions
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        bundle = json.loads(line)
        stamp = bundle.get("meta", {}).get("lastUpdated")
        moment = parse_instant(stamp) if isinstance(stamp, str) else None
        for entry in bundle.get("entry", []):
            kind, _, rid = str(entry.get("request", {}).get("url", "")).partition("/")
            deletions.append(_Deletion(kind, rid, moment, line.strip()))
    return deletions


class FhirServerStore:
    """One server's ``ndjson/`` folder, each type read on first use, plus the simulator's
    increments applied so far (``increments/<n>/fhir/<server>/``): their resources replace
    the versions with the same id or add new ones, and their ``deleted.ndjson`` removes
    resources (remembered, with when, for a Bulk Data export's ``deleted`` files)."""

    def __init__(self, name: str, folder: Path, layers: Callable[[], list[Path]] = list) -> None:
        self.name = name
        self.folder = folder
        self.layers = layers
        self._lock = threading.Lock()
        self._resources: dict[str, list[_Resource]] = {}
        self._by_id: dict[str, dict[str, _Resource]] = {}
        self._deletions: list[_Deletion] | None = None
        self._snapshot_stamp: str | None = None

    def reset(self) -> None:
        """Forget what was read: the increment served has changed."""
        with self._lock:
            self._resources.clear()
            self._by_id.clear()
            self._deletions = None
            self._snapshot_stamp = None

    def types(self) -> list[str]:
        return sorted(path.stem for path in self.folder.glob("*.ndjson"))

    def deletions(self) -> list[_Deletion]:
        """Resources deleted by the applied increments (and not re-created since)."""
        with self._lock:
            if self._deletions is None:
                found: dict[tuple[str, str], _Deletion] = {}
                for layer in self.layers():
                    for row in _read_rows_of_layer(layer):
                        found.pop(row, None)
                    for deletion in _read_deletions(layer / "deleted.ndjson"):
                        found[(deletion.resource_type, deletion.id)] = deletion
                self._deletions = list(found.values())
            return self._deletions

    def resources(self, resource_type: str) -> list[_Resource]:
        gone = {d.id for d in self.deletions() if d.resource_type == resource_type}
        with self._lock:
            if resource_type not in self._resources:
                rows = _read_rows(self.folder / f"{resource_type}.ndjson")
                layers = self.layers()
                if layers:
                    merged = {row.id: row for row in rows}
                    for layer in layers:
                        for row in _read_rows(layer / "ndjson" / f"{resource_type}.ndjson"):
                            merged[row.id] = row
                    floor = datetime.min.replace(tzinfo=UTC)
                    rows = sorted(
                        (row for row in merged.values() if row.id not in gone),
                        key=lambda row: (row.last_updated or floor, row.id),
                    )
                self._resources[resource_type] = rows
                self._by_id[resource_type] = {row.id: row for row in rows}
            return self._resources[resource_type]

    def get(self, resource_type: str, resource_id: str) -> _Resource | None:
        self.resources(resource_type)
        return self._by_id[resource_type].get(resource_id)

    def snapshot_stamp(self) -> str | None:
        """The latest ``meta.lastUpdated`` (or deletion) on the server: its "now", as the
        data says."""
        if self._snapshot_stamp is None:
            latest: tuple[datetime, str] | None = None
            stamps = [
                (row.last_updated, row.stamp)
                for resource_type in self.types()
                for row in self.resources(resource_type)
            ]
            stamps += [(d.deleted_at, _format_instant(d.deleted_at)) for d in self.deletions()]
            for moment, stamp in stamps:
                if moment and stamp and (latest is None or moment > latest[0]):
                    latest = (moment, stamp)
            self._snapshot_stamp = latest[1] if latest else ""
        return self._snapshot_stamp or None


def _read_rows_of_layer(layer: Path) -> set[tuple[str, str]]:
    """(type, id) of every resource an increment writes (a re-created resource is not
    deleted any more)."""
    folder = layer / "ndjson"
    return {
        (path.stem, row.id) for path in sorted(folder.glob("*.ndjson")) for row in _read_rows(path)
    }


def _format_instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FhirStore:
    """Every server folder under ``fhir/``; ``increments`` is the simulator's
    ``increments/`` folder, of which ``set_increment(n)`` applies ``1..n``."""

    def __init__(self, root: Path, increments: Path | None = None) -> None:
        self.increments_root = increments
        self.increment = 0
        self.servers = {
            folder.name: FhirServerStore(
                folder.name, folder / "ndjson", self._layers_of(folder.name)
            )
            for folder in sorted(root.glob("*"))
            if (folder / "ndjson").is_dir()
        }

    def available_increments(self) -> list[int]:
        """The increment numbers with a ``fhir/`` folder (``increments/<n>/fhir``)."""
        if self.increments_root is None or not self.increments_root.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.increments_root.iterdir()
            if p.name.isdigit() and (p / "fhir").is_dir()
        )

    def set_increment(self, number: int) -> None:
        """Serve the base data plus increments 1..``number`` (0: the base alone)."""
        self.increment = number
        for server in self.servers.values():
            server.reset()

    def _layers_of(self, server: str) -> Callable[[], list[Path]]:
        def layers() -> list[Path]:
            if self.increments_root is None:
                return []
            return [
                self.increments_root / str(n) / "fhir" / server
                for n in self.available_increments()
                if n <= self.increment
                and (self.increments_root / str(n) / "fhir" / server).is_dir()
            ]

        return layers


# --- search parameter values ---------------------------------------------------------------

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})"
    r"(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


def date_range(text: str) -> tuple[datetime, datetime]:
    """A FHIR date/dateTime/instant as its implicit range ``[low, high)``."""
    found = _DATE.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a FHIR date, dateTime or instant")
    parts = found.groupdict()
    tz = UTC
    if parts["tz"] and parts["tz"] != "Z":
        sign = 1 if parts["tz"][0] == "+" else -1
        hours, minutes = parts["tz"][1:].split(":")
        tz = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
    year = int(parts["y"])
    if parts["m"] is None:
        low = datetime(year, 1, 1, tzinfo=tz)
        return low, low.replace(year=year + 1)
    month = int(parts["m"])
    if parts["d"] is None:
        low = datetime(year, month, 1, tzinfo=tz)
        return low, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=tz)
    day = datetime(year, month, int(parts["d"]), tzinfo=tz)
    if parts["H"] is None:
        return day, day + timedelta(days=1)
    low = day.replace(hour=int(parts["H"]), minute=int(parts["M"]))
    if parts["S"] is None:
        return low, low + timedelta(minutes=1)
    low = low.replace(second=int(parts["S"]))
    if not parts["f"]:
        return low, low + timedelta(seconds=1)
    digits = parts["f"][1:]
    low = low.replace(microsecond=int((digits + "000000")[:6]))
    return low, low + timedelta(microseconds=max(1, 10 ** (6 - min(len(digits), 6))))


def _plus_restored(text: str) -> str:
    """``+03:00`` sent unencoded arrives as `` 03:00`` after form decoding: restore it."""
    return re.sub(r" (\d{2}:\d{2})$", r"+\1", text)


def last_updated_test(value: str) -> Callable[[datetime | None], bool]:
    prefix, rest = ("eq", value) if value[:2] not in PREFIXES else (value[:2], value[2:])
    low, high = date_range(_plus_restored(rest))
    tests: dict[str, Callable[[datetime], bool]] = {
        "eq": lambda t: low <= t < high,
        "ne": lambda t: not low <= t < high,
        "gt": lambda t: t >= high,
        "sa": lambda t: t >= high,
        "ge": lambda t: t >= low,
        "lt": lambda t: t < low,
        "eb": lambda t: t < low,
        "le": lambda t: t < high,
    }
    check = tests[prefix]
    return lambda moment: moment is not None and check(moment)


# --- search snapshots and export jobs ------------------------------------------------------


@dataclass
class _Snapshot:
    server: str
    resource_type: str
    rows: list[_Resource]


@dataclass
class _Job:
    server: str
    request_url: str
    transaction_time: str
    files: dict[str, tuple[str, list[_Resource]]] = field(default_factory=dict)
    deleted: list[_Deletion] = field(default_factory=list)
    """Resources deleted after ``_since`` (none without it: the spec lets a server omit them)."""
    polls: int = 0


def _references(item: Any) -> Iterator[str]:
    """Every ``reference`` string anywhere in a resource."""
    if isinstance(item, dict):
        for key, value in item.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(item, list):
        for value in item:
            yield from _references(value)


def _on_last_updated(check: Callable[[datetime | None], bool]) -> Callable[[_Resource], bool]:
    return lambda row: check(row.last_updated)


def _stamp_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FhirApi:
    """FHIR R4 REST + Bulk Data for every server folder; see the module docstring."""

    name = "fhir"
    prefix = "/fhir"

    def __init__(
        self, store: FhirStore, credentials: Credentials, settings: FhirSettings | None = None
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.settings = settings or FhirSettings()
        self._lock = threading.Lock()
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._jobs: dict[str, _Job] = {}
        self._counter = 0
        self._routes = [
            route(
                "GET",
                rf"{SERVER}/metadata",
                self.capability_statement,
                public=True,
                faultable=False,
            ),
            route("GET", SERVER, self.page),
            route("GET", rf"{SERVER}/\$export", self.export),
            route("GET", rf"{SERVER}/Patient/\$export", self.export),
            route(
                "GET", rf"{SERVER}/Group/(?P<group>[A-Za-z0-9\-.]{{1,64}})/\$export", self.export
            ),
            route(
                ("GET", "DELETE"),
                rf"{SERVER}/\$export-poll-status/(?P<job>[a-f0-9]+)",
                self.export_status,
            ),
            route(
                "GET",
                rf"{SERVER}/\$export-file/(?P<job>[a-f0-9]+)/(?P<file>[A-Za-z]+-\d+)\.ndjson",
                self.export_file,
            ),
            route("GET", rf"{SERVER}/{TYPE}/_history", self.history),
            route("GET", rf"{SERVER}/{TYPE}", self.search),
            route("POST", rf"{SERVER}/{TYPE}/_search", self.search),
            route("GET", rf"{SERVER}/{TYPE}/(?P<id>[A-Za-z0-9\-.]{{1,64}})", self.read),
        ]

    def routes(self) -> list[Route]:
        return self._routes

    # --- protocol ----------------------------------------------------------------------

    def error(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": ISSUE_CODES.get(status, "exception"),
                    "diagnostics": message,
                }
            ],
        }
        return json_response(outcome, status, FHIR_JSON, headers)

    def fail(self, status: int, message: str) -> ApiError:
        return ApiError(self.error(status, message))

    def authenticate(self, request: Request) -> Response | None:
        token = self.credentials.fhir_token
        if token is None or token_matches(request.header("Authorization"), "Bearer", token):
            return None
        return self.error(
            401, "A valid bearer token is required", [("WWW-Authenticate", 'Bearer realm="fhir"')]
        )

    def _server(self, request: Request) -> FhirServerStore:
        server = self.store.servers.get(request.params["server"])
        if server is None:
            raise self.fail(404, f"No FHIR server named {request.params['server']!r} here")
        return server

    def _base(self, request: Request, server: FhirServerStore) -> str:
        return f"{request.base_url}{self.prefix}/{server.name}"

    def _next_id(self, *parts: str) -> str:
        with self._lock:
            self._counter += 1
            number = self._counter
        # Deterministic for a given sequence of requests, opaque to clients.
        return uuid.uuid5(uuid.NAMESPACE_URL, "|".join((*parts, str(number)))).hex

    # --- endpoints ---------------------------------------------------------------------

    def capability_statement(self, request: Request) -> Response:
        """``GET [base]/metadata``."""
        server = self._server(request)
        base = self._base(request, server)
        resources = [
            {
                "type": resource_type,
                "interaction": [
                    {"code": "read"},
                    {"code": "search-type"},
                    {"code": "history-type"},
                ],
                "searchParam": [
                    {"name": "_lastUpdated", "type": "date"},
                    {"name": "_id", "type": "token"},
                ],
            }
            for resource_type in server.types()
        ]
        rest: dict[str, Any] = {
            "mode": "server",
            "resource": resources,
            "operation": [
                {
                    "name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                }
            ],
        }
        if self.credentials.fhir_token is not None:
            rest["security"] = {"description": "Authorization: Bearer <token>"}
        statement = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": server.snapshot_stamp() or _stamp_now(),
            "kind": "instance",
            "software": {"name": "healthpipe sandbox"},
            "implementation": {"description": f"FHIR server {server.name!r}", "url": base},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json", "json"],
            "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
            "rest": [rest],
        }
        return json_response(statement, content_type=FHIR_JSON)

    def read(self, request: Request) -> Response:
        """``GET [base]/<Type>/<id>``."""
        server = self._server(request)
        resource_type = self._type(server, request.params["type"])
        row = server.get(resource_type, request.params["id"])
        if row is None and any(
            d.resource_type == resource_type and d.id == request.params["id"]
            for d in server.deletions()
        ):
            return self.error(410, f"Resource {resource_type}/{request.params['id']} was deleted")
        if row is None:
            return self.error(404, f"Resource {resource_type}/{request.params['id']} is not known")
        version = json.loads(row.raw).get("meta", {}).get("versionId")
        headers = []
        if version:
            headers.append(("ETag", f'W/"{version}"'))
        if row.last_updated:
            headers.append(
                ("Last-Modified", format_datetime(row.last_updated.astimezone(UTC), usegmt=True))
            )
        return Response(200, row.raw.encode("utf-8"), FHIR_JSON, headers)

    def history(self, request: Request) -> Response:
        """``GET [base]/<Type>/_history?_since=...``: a history Bundle, newest first, of the
        type's current versions and deletions at or after ``_since`` (one page)."""
        server = self._server(request)
        resource_type = self._type(server, request.params["type"])
        since = None
        if request.arg("_since"):
            since = parse_instant(_plus_restored(request.arg("_since") or ""))
            if since is None:
                raise self.fail(400, f"_since {request.arg('_since')!r} is not an instant")
        base = f"{self._base(request, server)}/{resource_type}"
        entries: list[tuple[datetime, str, str]] = []
        for row in server.resources(resource_type):
            if row.last_updated is None or (since is not None and row.last_updated < since):
                continue
            version = json.loads(row.raw).get("meta", {}).get("versionId")
            method, status = (
                ("POST", "201 Created") if version in (None, "1") else ("PUT", "200 OK")
            )
            request_part = {"method": method, "url": f"{resource_type}/{row.id}"}
            response_part = {"status": status, "lastModified": row.stamp}
            entries.append(
                (
                    row.last_updated,
                    row.id,
                    '{"fullUrl":' + json.dumps(f"{base}/{row.id}") + ',"resource":' + row.raw
                    + ',"request":' + json.dumps(request_part)
                    + ',"response":' + json.dumps(response_part) + "}",
                )
            )  # fmt: skip
        for deletion in server.deletions():
            moment = deletion.deleted_at
            if deletion.resource_type != resource_type or moment is None:
                continue
            if since is not None and moment < since:
                continue
            entry = {
                "fullUrl": f"{base}/{deletion.id}",
                "request": {"method": "DELETE", "url": f"{resource_type}/{deletion.id}"},
                "response": {"status": "410 Gone", "lastModified": _format_instant(moment)},
            }
            entries.append((moment, deletion.id, json.dumps(entry, separators=(",", ":"))))
        entries.sort(reverse=True)  # newest first, as FHIR's history lists versions
        head = {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(entries),
            "link": [{"relation": "self", "url": request.url_with()}],
        }
        body = json.dumps(head, separators=(",", ":"))
        if entries:
            body = body[:-1] + ',"entry":[' + ",".join(e for _, _, e in entries) + "]}"
        return Response(200, body.encode("utf-8"), FHIR_JSON)

    def search(self, request: Request) -> Response:
        """``GET [base]/<Type>?...``: a searchset Bundle over a fresh snapshot."""
        server = self._server(request)
        resource_type = self._type(server, request.params["type"])
        query: dict[str, list[str]] = {k: list(v) for k, v in request.query.items()}
        if request.method == "POST":
            form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
            for key, values in form.items():
                query.setdefault(key, []).extend(values)
        strict = "handling=strict" in (request.header("Prefer") or "").replace(" ", "")
        unknown = sorted(set(query) - SEARCH_PARAMS)
        if strict and unknown:
            raise self.fail(400, f"Unknown search parameter(s): {', '.join(unknown)}")
        tests: list[Callable[[_Resource], bool]] = []
        for value in query.get("_lastUpdated", []):
            try:
                tests.append(_on_last_updated(last_updated_test(value)))
            except ValueError as exc:
                raise self.fail(400, f"Invalid _lastUpdated: {exc}") from None
        ids = {i.strip() for value in query.get("_id", []) for i in value.split(",") if i.strip()}
        if ids:
            tests.append(lambda row: row.id in ids)
        rows = [row for row in server.resources(resource_type) if all(t(row) for t in tests)]
        rows = self._sorted(rows, (query.get("_sort") or [""])[-1])
        count = self._count(query["_count"][-1] if query.get("_count") else None)
        if (query.get("_summary") or [""])[-1] == "count":
            count = 0
        total = (query.get("_total") or [""])[-1] != "none"
        token = self._next_id(server.name, resource_type, json.dumps(query, sort_keys=True))
        snapshot = _Snapshot(server.name, resource_type, rows)
        with self._lock:
            self._snapshots[token] = snapshot
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        self_url = build_url(f"{self._base(request, server)}/{resource_type}", query)
        return self._bundle(request, server, token, snapshot, 0, count, self_url, total)

    def page(self, request: Request) -> Response:
        """``GET [base]?_getpages=<id>&_getpagesoffset=<n>&_count=<n>``: a page of a search."""
        server = self._server(request)
        token = request.arg("_getpages")
        if not token:
            raise self.fail(400, "Searching at the server base is not supported; use [base]/<Type>")
        with self._lock:
            snapshot = self._snapshots.get(token)
        if snapshot is None or snapshot.server != server.name:
            raise self.fail(410, f"Search {token} has expired or does not exist")
        try:
            offset = int(request.arg("_getpagesoffset") or "0")
        except ValueError:
            raise self.fail(400, "_getpagesoffset must be a whole number") from None
        if offset < 0:
            raise self.fail(400, "_getpagesoffset cannot be negative")
        count = self._count(request.arg("_count"))
        return self._bundle(
            request, server, token, snapshot, offset, count, request.url_with(), True
        )

    def _bundle(
        self,
        request: Request,
        server: FhirServerStore,
        token: str,
        snapshot: _Snapshot,
        offset: int,
        count: int,
        self_url: str,
        with_total: bool,
    ) -> Response:
        base = self._base(request, server)
        rows = snapshot.rows[offset : offset + count]

        def page_url(at: int) -> str:
            query = {"_getpages": [token], "_getpagesoffset": [str(at)], "_count": [str(count)]}
            return build_url(base, {**query, "_bundletype": ["searchset"]})

        links = [{"relation": "self", "url": self_url}]
        if count and offset + count < len(snapshot.rows):
            links.append({"relation": "next", "url": page_url(offset + count)})
        if count and offset > 0:
            links.append({"relation": "previous", "url": page_url(max(0, offset - count))})
        head: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{token}:{offset}").hex,
            "meta": {"lastUpdated": server.snapshot_stamp() or _stamp_now()},
            "type": "searchset",
        }
        if with_total:
            head["total"] = len(snapshot.rows)
        head["link"] = links
        body = json.dumps(head, separators=(",", ":"))
        if rows:
            entries = ",".join(
                '{"fullUrl":'
                + json.dumps(f"{base}/{snapshot.resource_type}/{row.id}")
                + ',"resource":'
                + row.raw
                + ',"search":{"mode":"match"}}'
                for row in rows
            )
            body = body[:-1] + ',"entry":[' + entries + "]}"
        return Response(200, body.encode("utf-8"), FHIR_JSON)

    def export(self, request: Request) -> Response:
        """Bulk Data kick-off (system, Patient or Group level)."""
        server = self._server(request)
        if "respond-async" not in (request.header("Prefer") or ""):
            raise self.fail(400, "Bulk Data export needs the header Prefer: respond-async")
        accept = (request.header("Accept") or "application/fhir+json").lower()
        if "json" not in accept and "*/*" not in accept:
            raise self.fail(400, f"Accept {accept!r} is not supported: use application/fhir+json")
        output_format = request.arg("_outputFormat")
        if output_format and output_format not in OUTPUT_FORMATS:
            raise self.fail(400, f"_outputFormat {output_format!r} is not supported (ndjson only)")
        since = None
        if request.arg("_since"):
            since = parse_instant(_plus_restored(request.arg("_since") or ""))
            if since is None:
                raise self.fail(400, f"_since {request.arg('_since')!r} is not an instant")
        known = server.types()
        wanted = [
            t.strip() for value in request.args("_type") for t in value.split(",") if t.strip()
        ]
        missing = sorted(set(wanted) - set(known))
        if missing:
            raise self.fail(400, f"Resource type(s) not on this server: {', '.join(missing)}")
        types = wanted or known
        patients = self._compartment(request, server)
        job = _Job(server.name, request.url_with(), server.snapshot_stamp() or _stamp_now())
        for resource_type in types:
            rows = [
                row
                for row in server.resources(resource_type)
                if (since is None or (row.last_updated is not None and row.last_updated > since))
                and (patients is None or self._in_compartment(resource_type, row, patients))
            ]
            size = self.settings.bulk_file_size or max(len(rows), 1)
            for number, start in enumerate(range(0, len(rows), size), start=1):
                job.files[f"{resource_type}-{number}"] = (resource_type, rows[start : start + size])
        if since is not None:
            job.deleted = [
                d
                for d in server.deletions()
                if d.resource_type in types and d.deleted_at is not None and d.deleted_at > since
            ]
        job_id = self._next_id(server.name, "export", request.url_with())
        with self._lock:
            self._jobs[job_id] = job
        location = f"{self._base(request, server)}/$export-poll-status/{job_id}"
        return Response(202, b"", None, [("Content-Location", location)])

    def export_status(self, request: Request) -> Response:
        """Poll (``GET``) or cancel (``DELETE``) a Bulk Data export."""
        server = self._server(request)
        job_id = request.params["job"]
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.server != server.name:
                raise self.fail(404, f"No export job {job_id}")
            if request.method == "DELETE":
                del self._jobs[job_id]
                return Response(202, b"", None)
            if job.polls < self.settings.bulk_polls:
                job.polls += 1
                progress = f"in-progress: step {job.polls} of {self.settings.bulk_polls + 1}"
                headers = [
                    ("X-Progress", progress),
                    ("Retry-After", str(self.settings.bulk_retry_after)),
                ]
                return Response(202, b"", None, headers)
        base = self._base(request, server)
        manifest = {
            "transactionTime": job.transaction_time,
            "request": job.request_url,
            "requiresAccessToken": self.credentials.fhir_token is not None,
            "output": [
                {
                    "type": resource_type,
                    "url": f"{base}/$export-file/{job_id}/{name}.ndjson",
                    "count": len(rows),
                }
                for name, (resource_type, rows) in job.files.items()
            ],
            "deleted": (
                [
                    {
                        "type": "Bundle",
                        "url": f"{base}/$export-file/{job_id}/{DELETED_FILE}.ndjson",
                        "count": len(job.deleted),
                    }
                ]
                if job.deleted
                else []
            ),
            "error": [],
        }
        return json_response(manifest)

    def export_file(self, request: Request) -> Response:
        """Download one NDJSON output file of a finished export."""
        server = self._server(request)
        with self._lock:
            job = self._jobs.get(request.params["job"])
        if job is None or job.server != server.name or job.polls < self.settings.bulk_polls:
            raise self.fail(404, "No such export file (unknown job, or the export is not finished)")
        if request.params["file"] == DELETED_FILE and job.deleted:
            lines = dict.fromkeys(d.raw for d in job.deleted)  # one Bundle may delete several
            return Response(200, "".join(f"{line}\n" for line in lines).encode("utf-8"), NDJSON)
        found = job.files.get(request.params["file"])
        if found is None:
            raise self.fail(
                404, f"Export {request.params['job']} has no file {request.params['file']}"
            )
        body = "".join(row.raw + "\n" for row in found[1])
        return Response(200, body.encode("utf-8"), NDJSON)

    # --- helpers -----------------------------------------------------------------------

    def _type(self, server: FhirServerStore, resource_type: str) -> str:
        if resource_type not in server.types():
            raise self.fail(404, f"Resource type {resource_type} is not supported by this server")
        return resource_type

    def _count(self, text: str | None) -> int:
        if text is None or text == "":
            return self.settings.default_count
        try:
            count = int(text)
        except ValueError:
            raise self.fail(400, f"_count must be a whole number, got {text!r}") from None
        if count < 0:
            raise self.fail(400, "_count cannot be negative")
        return min(count, self.settings.max_count)

    def _sorted(self, rows: list[_Resource], spec: str) -> list[_Resource]:
        if not spec:
            return rows
        descending = spec.startswith("-")
        key = spec.lstrip("-")
        if key == "_id":
            return sorted(rows, key=lambda row: row.id, reverse=descending)
        if key == "_lastUpdated":
            floor = datetime.min.replace(tzinfo=UTC)
            return sorted(
                rows, key=lambda row: (row.last_updated or floor, row.id), reverse=descending
            )
        raise self.fail(400, f"Sorting by {key!r} is not supported (_lastUpdated or _id)")

    def _compartment(self, request: Request, server: FhirServerStore) -> set[str] | None:
        """The patient references a Patient or Group export is limited to (``None``: all)."""
        if "group" in request.params:
            group = (
                server.get("Group", request.params["group"]) if "Group" in server.types() else None
            )
            if group is None:
                raise self.fail(404, f"Group/{request.params['group']} is not known")
            members = json.loads(group.raw).get("member", [])
            return {
                ref
                for member in members
                for ref in _references(member.get("entity", {}))
                if ref.startswith("Patient/")
            }
        if request.path.endswith("/Patient/$export"):
            patients = server.resources("Patient") if "Patient" in server.types() else []
            return {f"Patient/{row.id}" for row in patients}
        return None

    @staticmethod
    def _in_compartment(resource_type: str, row: _Resource, patients: set[str]) -> bool:
        if resource_type == "Patient":
            return f"Patient/{row.id}" in patients
        return any(ref in patients for ref in _references(json.loads(row.raw)))
