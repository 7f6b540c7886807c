"""ODK Central's REST and OData API over the simulator's ``odk/projects/`` folder, mounted at
``/odk`` (so a client's base URL is ``http://host:port/odk`` and paths start ``/v1``).

Endpoints:

``POST /odk/v1/sessions`` (JSON ``{"email", "password"}``)
    A session: ``{"createdAt", "expiresAt", "token", "csrf"}``, valid 24 hours; wrong
    credentials answer 401. ``DELETE /odk/v1/sessions/<token>`` logs out.

``GET /odk/v1/users/current``
    The authenticated user.

``GET /odk/v1/projects``, ``GET /odk/v1/projects/<id>``
    The projects (a folder per project id).

``GET /odk/v1/projects/<id>/forms``, ``GET /odk/v1/projects/<id>/forms/<xmlFormId>``
    The forms' ``form.json``.

``GET /odk/v1/projects/<id>/forms/<xmlFormId>.svc``
    The OData service document (one entity set, ``Submissions``).

``GET /odk/v1/projects/<id>/forms/<xmlFormId>.svc/Submissions``
    ``{"@odata.context", "value": [...], "@odata.count"?, "@odata.nextLink"?}``, rows exactly
    as ``submissions.json`` holds them, newest submission first (Central's order).
    ``$filter`` (see :mod:`pipelines.sandbox.odata_filter`): deleted submissions
    (``__system.deletedAt`` set) are left out unless the filter mentions
    ``__system/deletedAt`` (``__system/deletedAt ne null`` lists only them);
    ``$orderby`` (``__system/submissionDate``, ``__system/updatedAt`` or ``__id``, ``asc`` or
    ``desc``); ``$top``, ``$skip``; ``$count=true`` adds the number of rows that match;
    ``$select`` (comma-separated paths such as ``__id,__system/submissionDate,meta``);
    ``$expand`` and ``$wkt`` are accepted and ignored (the forms have no repeats). Paging is
    server-driven: a page holds at most ``$top`` rows and never more than the server's page
    size (1000 by default); when rows remain, ``@odata.nextLink`` is this query with
    ``$skiptoken`` (Central's format: ``01`` + base64 of ``{"instanceId": ...}``, the last
    row sent) in place of ``$skip``.

Auth: HTTP Basic with the email and password, or ``Authorization: Bearer <session token>``.
Errors are Central's ``{"code", "message"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.sandbox.auth import Credentials, basic_matches, same, scheme_and_value
from pipelines.sandbox.odata_filter import FilterError, compile_filter, field_value
from pipelines.sandbox.routing import ApiError, Request, Response, Route, json_response, route

ODATA_JSON = "application/json; charset=utf-8; odata.metadata=minimal"
SESSION_HOURS = 24
PROJECT = r"/v1/projects/(?P<project>\d+)"
FORM = PROJECT + r"/forms/(?P<form>[A-Za-z0-9_.\-]+?)"
ORDERABLE = ("__system/submissionDate", "__system/updatedAt", "__id")


@dataclass(frozen=True)
class OdkSettings:
    page_size: int = 1000  # the most rows one Submissions page holds


class OdkStore:
    """The ``odk/projects/`` folder; submissions are read per form on first use.

    ``increment`` (0 by default) serves Central as it is after the simulator's
    ``increments/1`` ... ``increments/<n>`` folders (``increments/<n>/odk/projects/...``, the
    same layout): their rows replace the rows with the same ``__id`` (edits, deletions) or
    are added (new submissions)."""

    def __init__(self, root: Path, increments: Path | None = None) -> None:
        self.root = root
        self.increments_root = increments
        self.increment = 0
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, str], list[dict[str, Any]]] = {}

    def available_increments(self) -> list[int]:
        """The increment numbers with an ``odk/`` folder (``increments/<n>/odk``)."""
        if self.increments_root is None or not self.increments_root.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.increments_root.iterdir()
            if p.name.isdigit() and (p / "odk").is_dir()
        )

    def set_increment(self, number: int) -> None:
        """Serve the base data plus increments 1..``number`` (0: the base alone)."""
        with self._lock:
            self.increment = number
            self._rows.clear()

    def _layers(self) -> list[Path]:
        if self.increments_root is None:
            return []
        return [
            self.increments_root / str(n) / "odk" / "projects"
            for n in self.available_increments()
            if n <= self.increment
        ]

    def projects(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())

    def project(self, project: int) -> dict[str, Any] | None:
        if project not in self.projects():
            return None
        described = self.root / str(project) / "project.json"
        if described.is_file():
            document: dict[str, Any] = json.loads(described.read_text(encoding="utf-8"))
            return document
        return {"id": project, "name": f"Project {project}", "archived": None, "keyId": None}

    def forms(self, project: int) -> list[dict[str, Any]]:
        folder = self.root / str(project) / "forms"
        return [
            json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(folder.glob("*/form.json"))
        ]

    def form(self, project: int, xml_form_id: str) -> dict[str, Any] | None:
        path = self.root / str(project) / "forms" / xml_form_id / "form.json"
        if not path.is_file():
            return None
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return document

    def submissions(self, project: int, xml_form_id: str) -> list[dict[str, Any]]:
        key = (project, xml_form_id)
        with self._lock:
            if key not in self._rows:
                rows: list[dict[str, Any]] = []
                for root in [self.root, *self._layers()]:
                    path = root / str(project) / "forms" / xml_form_id / "submissions.json"
                    document = (
                        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
                    )
                    rows = _merged(rows, list(document.get("value", [])))
                self._rows[key] = rows
            return self._rows[key]


def _merged(rows: list[dict[str, Any]], changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each change in place of the row(s) of its ``__id``, new ones after."""
    if not changes:
        return rows
    by_id = {change.get("__id"): change for change in changes}
    merged = [by_id.get(row.get("__id"), row) for row in rows]
    seen = {row.get("__id") for row in rows}
    return merged + [c for c in changes if c.get("__id") not in seen]


def encode_skiptoken(instance_id: str, repeat: int = 0) -> str:
    """Central's ``$skiptoken``: ``01`` + base64 of ``{"instanceId": ...}``. ``repeat``
    (added only when non-zero) says which copy of an instance id the page ended on, for
    files that hold a submission twice (a planted duplicate)."""
    payload: dict[str, Any] = {"instanceId": instance_id}
    if repeat:
        payload["repeat"] = repeat
    data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return "01" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode_skiptoken(token: str) -> tuple[str, int] | None:
    if not token.startswith("01"):
        return None
    data = token[2:]
    try:
        payload = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("instanceId"), str):
        return None
    repeat = payload.get("repeat", 0)
    return payload["instanceId"], repeat if isinstance(repeat, int) else 0


def _position(rows: list[dict[str, Any]], instance_id: str, repeat: int) -> int | None:
    """The index of copy ``repeat`` of ``instance_id`` in ``rows``."""
    seen = 0
    for index, row in enumerate(rows):
        if row.get("__id") == instance_id:
            if seen == repeat:
                return index
            seen += 1
    return None


def _selected(row: Mapping[str, Any], tree: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key not in tree:
            continue
        branch = tree[key]
        out[key] = (
            value if branch is True or not isinstance(value, Mapping) else _selected(value, branch)
        )
    return out


def _select_tree(spec: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in (p.strip() for p in spec.split(",")):
        if not path:
            continue
        node = tree
        parts = path.split("/")
        for part in parts[:-1]:
            child = node.get(part)
            if child is True:
                break
            node = node.setdefault(part, {})
        else:
            node[parts[-1]] = True
    return tree


class OdkApi:
    """ODK Central's API subset; see the module docstring."""

    name = "odk"
    prefix = "/odk"

    def __init__(
        self, store: OdkStore, credentials: Credentials, settings: OdkSettings | None = None
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.settings = settings or OdkSettings()
        self._lock = threading.Lock()
        self._sessions: dict[str, datetime] = {}
        self._orders: dict[tuple[int, int, str, str, bool], list[dict[str, Any]]] = {}
        self._counter = 0
        self._routes = [
            route("POST", r"/v1/sessions", self.login, public=True, faultable=False),
            route(
                "DELETE",
                r"/v1/sessions/(?P<token>[^/]+)",
                self.logout,
                public=True,
                faultable=False,
            ),
            route("GET", r"/v1/users/current", self.current_user, faultable=False),
            route("GET", r"/v1/projects", self.project_list),
            route("GET", PROJECT, self.project_detail),
            route("GET", PROJECT + r"/forms", self.form_list),
            route("GET", FORM + r"\.svc/Submissions", self.submissions),
            route("GET", FORM + r"\.svc/?", self.service_document, faultable=False),
            route("GET", FORM, self.form_detail),
        ]

    def routes(self) -> list[Route]:
        return self._routes

    # --- protocol ----------------------------------------------------------------------

    def error(
        self,
        status: int,
        message: str,
        headers: list[tuple[str, str]] | None = None,
        code: float | None = None,
    ) -> Response:
        document = {"code": code if code is not None else status + 0.1, "message": message}
        return json_response(document, status, headers=headers)

    def not_found(self) -> ApiError:
        return ApiError(
            self.error(404, "Could not find the resource you were looking for.", code=404.1)
        )

    def authenticate(self, request: Request) -> Response | None:
        header = request.header("Authorization")
        creds = self.credentials
        if basic_matches(header, creds.odk_email, creds.odk_password):
            return None
        parsed = scheme_and_value(header)
        if parsed and parsed[0] == "bearer" and self._session_valid(parsed[1]):
            return None
        return self.error(401, "Could not authenticate with the provided credentials.", code=401.2)

    def _session_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._sessions.get(token)
        # Session expiry is wall-clock time by nature.
        return expires is not None and expires > datetime.now(UTC)

    # --- endpoints ---------------------------------------------------------------------

    def login(self, request: Request) -> Response:
        """``POST /v1/sessions``: email and password for a bearer token."""
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return self.error(400, "Could not parse the given data as JSON.", code=400.1)
        email = str(body.get("email", "")) if isinstance(body, dict) else ""
        password = str(body.get("password", "")) if isinstance(body, dict) else ""
        if not (
            same(email, self.credentials.odk_email)
            and same(password, self.credentials.odk_password)
        ):
            return self.error(
                401, "Could not authenticate with the provided credentials.", code=401.2
            )
        with self._lock:
            self._counter += 1
            seed = f"{email}:{self._counter}".encode()
            token = hashlib.sha256(b"token:" + seed).hexdigest()
            csrf = hashlib.sha256(b"csrf:" + seed).hexdigest()
            now = datetime.now(UTC)
            expires = now + timedelta(hours=SESSION_HOURS)
            self._sessions[token] = expires
        return json_response(
            {
                "createdAt": _odk_time(now),
                "expiresAt": _odk_time(expires),
                "token": token,
                "csrf": csrf,
            }
        )

    def logout(self, request: Request) -> Response:
        """``DELETE /v1/sessions/<token>``."""
        token = request.params["token"]
        with self._lock:
            if token not in self._sessions:
                raise self.not_found()
            del self._sessions[token]
        return json_response({"success": True})

    def current_user(self, request: Request) -> Response:
        """``GET /v1/users/current``."""
        return json_response(
            {
                "id": 1,
                "type": "user",
                "displayName": "Sandbox administrator",
                "email": self.credentials.odk_email,
            }
        )

    def project_list(self, request: Request) -> Response:
        """``GET /v1/projects``."""
        return json_response([self.store.project(p) for p in self.store.projects()])

    def project_detail(self, request: Request) -> Response:
        """``GET /v1/projects/<id>``."""
        project = self.store.project(int(request.params["project"]))
        if project is None:
            raise self.not_found()
        return json_response(project)

    def form_list(self, request: Request) -> Response:
        """``GET /v1/projects/<id>/forms``."""
        project = int(request.params["project"])
        if self.store.project(project) is None:
            raise self.not_found()
        return json_response(self.store.forms(project))

    def form_detail(self, request: Request) -> Response:
        """``GET /v1/projects/<id>/forms/<xmlFormId>``."""
        form = self.store.form(int(request.params["project"]), request.params["form"])
        if form is None:
            raise self.not_found()
        return json_response(form)

    def service_document(self, request: Request) -> Response:
        """``GET /v1/projects/<id>/forms/<xmlFormId>.svc``."""
        project, form = self._form(request)
        return json_response(
            {
                "@odata.context": f"{self._form_url(request, project, form)}.svc/$metadata",
                "value": [{"kind": "EntitySet", "name": "Submissions", "url": "Submissions"}],
            },
            content_type=ODATA_JSON,
        )

    def submissions(self, request: Request) -> Response:
        """``GET /v1/projects/<id>/forms/<xmlFormId>.svc/Submissions``."""
        project, form = self._form(request)
        # Order first (cached per form and order), then filter: filtering keeps the order.
        rows = self._ordered(project, form, request.arg("$orderby"))
        mentions_deleted = False
        if request.arg("$filter"):
            try:
                compiled = compile_filter(request.arg("$filter") or "")
            except FilterError as exc:
                code = 501.5 if exc.status == 501 else 400.18
                raise ApiError(self.error(exc.status, str(exc), code=code)) from None
            mentions_deleted = compiled.mentions_deleted
            rows = [row for row in rows if compiled.test(row)]
        if not mentions_deleted:
            rows = [row for row in rows if not row.get("__system", {}).get("deletedAt")]
        start = 0  # index in ``rows`` of this page's first row
        token = request.arg("$skiptoken")
        if token:
            decoded = decode_skiptoken(token)
            position = _position(rows, *decoded) if decoded else None
            if position is None:
                raise ApiError(self.error(400, f"Invalid $skiptoken: {token}", code=400.1))
            start = position + 1
        start += self._count_arg(request, "$skip") or 0
        top = self._count_arg(request, "$top")
        size = min(top, self.settings.page_size) if top is not None else self.settings.page_size
        page = rows[start : start + size]
        document: dict[str, Any] = {
            "@odata.context": f"{self._form_url(request, project, form)}.svc/$metadata#Submissions"
        }
        end = start + len(page)
        if page and end < len(rows):
            last = str(page[-1].get("__id"))
            repeat = sum(1 for row in rows[: end - 1] if row.get("__id") == last)
            changes: dict[str, str | int | None] = {
                "$skiptoken": encode_skiptoken(last, repeat),
                "$skip": None,
            }
            document["@odata.nextLink"] = request.url_with(changes)
        if (request.arg("$count") or "").lower() == "true":
            document["@odata.count"] = len(rows)
        select = request.arg("$select")
        if select and select.strip() != "*":
            tree = _select_tree(select)
            page = [_selected(row, tree) for row in page]
        document["value"] = page
        return json_response(document, content_type=ODATA_JSON)

    # --- helpers -----------------------------------------------------------------------

    def _form(self, request: Request) -> tuple[int, str]:
        project, form = int(request.params["project"]), request.params["form"]
        if self.store.form(project, form) is None:
            raise self.not_found()
        return project, form

    def _form_url(self, request: Request, project: int, form: str) -> str:
        return f"{request.base_url}{self.prefix}/v1/projects/{project}/forms/{form}"

    def _count_arg(self, request: Request, name: str) -> int | None:
        text = request.arg(name)
        if text is None or text == "":
            return None
        if not text.isdigit():
            raise ApiError(
                self.error(400, f"{name} must be a non-negative whole number", code=400.1)
            )
        return int(text)

    def _ordered(self, project: int, form: str, spec: str | None) -> list[dict[str, Any]]:
        if spec:
            path, _, direction = spec.strip().partition(" ")
            descending = direction.strip().lower() == "desc"  # OData's default is ascending
        else:
            path, descending = "__system/submissionDate", True  # Central: newest first
        if path not in ORDERABLE:
            raise ApiError(self.error(501, f"$orderby on {path} is not supported", code=501.1))
        cache_key = (self.store.increment, project, form, path, descending)
        with self._lock:
            cached = self._orders.get(cache_key)
        if cached is not None:
            return cached

        def key(row: dict[str, Any]) -> tuple[int, float, str, str]:
            value = field_value(row, path)
            moment = value.timestamp() if isinstance(value, datetime) else 0.0
            text = "" if value is None or isinstance(value, datetime) else str(value)
            # Nulls (never-updated submissions) sort before any value; ties by __id.
            return (0 if value is None else 1, moment, text, str(row.get("__id", "")))

        ordered = sorted(self.store.submissions(project, form), key=key, reverse=descending)
        with self._lock:
            self._orders[cache_key] = ordered
        return ordered


def _odk_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
