"""KoboToolbox's v2 API over the simulator's ``kobo/assets/`` folder, mounted at ``/kobo``
(a client's server URL is ``http://host:port/kobo``).

Endpoints (``.json`` suffixes and ``?format=json`` accepted; other formats are 404, as in
Django REST framework):

``GET /kobo/api/v2/assets/``
    ``{"count", "next", "previous", "results": [asset, ...]}``; ``limit`` (default 100) and
    ``offset``. Each asset is its ``asset.json`` with ``url`` and ``data`` pointing at the
    sandbox instead of the original server (so clients can follow them).

``GET /kobo/api/v2/assets/<uid>/``
    One asset.

``GET /kobo/api/v2/assets/<uid>/data/``
    ``{"count", "next", "previous", "results": [...]}``, results exactly as ``data.json``
    holds them, by ``_id``. ``limit`` (default 100, at most 1000: larger values are cut to
    1000, as Kobo does), ``start`` (offset), ``query`` (a MongoDB filter document, see
    :mod:`pipelines.sandbox.kobo_query`), ``sort`` (``{"field": 1 | -1}``), ``fields`` (a JSON
    list of keys to keep). ``next`` / ``previous`` are this query with ``start`` moved.

Auth: ``Authorization: Token <token>`` or HTTP Basic with the Kobo username and password.
Errors are ``{"detail": "..."}``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.sandbox.auth import Credentials, basic_matches, scheme_and_value, token_matches
from pipelines.sandbox.kobo_query import QueryError, compile_query
from pipelines.sandbox.routing import ApiError, Request, Response, Route, json_response, route

ASSETS = r"/api/v2/assets"
UID = r"(?P<uid>[A-Za-z0-9]+)"


@dataclass(frozen=True)
class KoboSettings:
    default_limit: int = 100
    max_limit: int = 1000


class KoboStore:
    """The ``kobo/assets/`` folder; each asset's data is read on first use.

    ``increment`` (0 by default) serves Kobo as it is after the simulator's
    ``increments/1`` ... ``increments/<n>`` folders (``increments/<n>/kobo/assets/<uid>/
    data.json``): their results replace the results with the same ``_id`` or are added."""

    def __init__(self, root: Path, increments: Path | None = None) -> None:
        self.root = root
        self.increments_root = increments
        self.increment = 0
        self._lock = threading.Lock()
        self._data: dict[str, list[dict[str, Any]]] = {}

    def available_increments(self) -> list[int]:
        """The increment numbers with a ``kobo/`` folder (``increments/<n>/kobo``)."""
        if self.increments_root is None or not self.increments_root.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.increments_root.iterdir()
            if p.name.isdigit() and (p / "kobo").is_dir()
        )

    def set_increment(self, number: int) -> None:
        """Serve the base data plus increments 1..``number`` (0: the base alone)."""
        with self._lock:
            self.increment = number
            self._data.clear()

    def _layers(self) -> list[Path]:
        if self.increments_root is None:
            return []
        return [
            self.increments_root / str(n) / "kobo" / "assets"
            for n in self.available_increments()
            if n <= self.increment
        ]

    def uids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "asset.json").is_file())

    def asset(self, uid: str) -> dict[str, Any] | None:
        path = self.root / uid / "asset.json"
        if not path.is_file():
            return None
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return document

    def results(self, uid: str) -> list[dict[str, Any]]:
        with self._lock:
            if uid not in self._data:
                merged: dict[Any, dict[str, Any]] = {}
                for root in [self.root, *self._layers()]:
                    path = root / uid / "data.json"
                    document = (
                        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
                    )
                    merged |= {row.get("_id"): row for row in document.get("results", [])}
                # Kobo lists results by _id; later ones (new submissions) have larger ids.
                self._data[uid] = sorted(merged.values(), key=lambda row: int(row.get("_id") or 0))
            return self._data[uid]


class KoboApi:
    """KoboToolbox's v2 API subset; see the module docstring."""

    name = "kobo"
    prefix = "/kobo"

    def __init__(
        self, store: KoboStore, credentials: Credentials, settings: KoboSettings | None = None
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.settings = settings or KoboSettings()
        self._routes = [
            route("GET", rf"{ASSETS}(?:/|\.json)?", self.asset_list),
            route("GET", rf"{ASSETS}/{UID}(?:/|\.json)?", self.asset_detail),
            route("GET", rf"{ASSETS}/{UID}/data(?:/|\.json)?", self.data),
        ]

    def routes(self) -> list[Route]:
        return self._routes

    # --- protocol ----------------------------------------------------------------------

    def error(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        return json_response({"detail": message}, status, headers=headers)

    def fail(self, status: int, message: str) -> ApiError:
        return ApiError(self.error(status, message))

    def authenticate(self, request: Request) -> Response | None:
        header = request.header("Authorization")
        creds = self.credentials
        if token_matches(header, "Token", creds.kobo_token):
            return None
        if basic_matches(header, creds.kobo_username, creds.kobo_password):
            return None
        message = (
            "Authentication credentials were not provided."
            if scheme_and_value(header) is None
            else "Invalid token."
            if (header or "").lower().startswith("token")
            else "Invalid username/password."
        )
        return self.error(401, message, [("WWW-Authenticate", 'Token realm="api"')])

    # --- endpoints ---------------------------------------------------------------------

    def asset_list(self, request: Request) -> Response:
        """``GET /api/v2/assets/``."""
        self._format(request)
        assets = [self._asset(request, uid) for uid in self.store.uids()]
        limit = self._int(request, "limit", self.settings.default_limit, minimum=1)
        offset = self._int(request, "offset", 0, minimum=0)
        return json_response(self._page(request, assets, offset, limit, "offset"))

    def asset_detail(self, request: Request) -> Response:
        """``GET /api/v2/assets/<uid>/``."""
        self._format(request)
        return json_response(self._asset(request, request.params["uid"]))

    def data(self, request: Request) -> Response:
        """``GET /api/v2/assets/<uid>/data/``."""
        self._format(request)
        uid = request.params["uid"]
        self._asset(request, uid)
        rows = self.store.results(uid)
        query = self._json(request, "query")
        if query is not None:
            try:
                test = compile_query(query)
            except QueryError as exc:
                raise self.fail(400, f"Invalid query: {exc}") from None
            rows = [row for row in rows if test(row)]
        sort = self._json(request, "sort")
        if sort is not None:
            rows = self._sorted(rows, sort)
        limit = min(
            self._int(request, "limit", self.settings.default_limit, minimum=1),
            self.settings.max_limit,
        )
        start = self._int(request, "start", 0, minimum=0)
        page = self._page(request, rows, start, limit, "start")
        fields = self._json(request, "fields")
        if fields is not None:
            if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
                raise self.fail(400, "fields must be a JSON list of field names")
            page["results"] = [
                {k: v for k, v in row.items() if k in fields} for row in page["results"]
            ]
        return json_response(page)

    # --- helpers -----------------------------------------------------------------------

    def _asset(self, request: Request, uid: str) -> dict[str, Any]:
        asset = self.store.asset(uid)
        if asset is None:
            raise self.fail(404, "Not found.")
        url = f"{request.base_url}{self.prefix}/api/v2/assets/{uid}/"
        if "url" in asset:
            asset["url"] = url
        if "data" in asset:
            asset["data"] = f"{url}data/"
        return asset

    def _format(self, request: Request) -> None:
        wanted = request.arg("format")
        if wanted and wanted != "json":
            raise self.fail(404, "Not found.")

    def _int(self, request: Request, name: str, default: int, *, minimum: int) -> int:
        text = request.arg(name)
        if text is None or text == "":
            return default
        try:
            number = int(text)
        except ValueError:
            raise self.fail(400, f"{name} must be a whole number") from None
        if number < minimum:
            raise self.fail(400, f"{name} must be at least {minimum}")
        return number

    def _json(self, request: Request, name: str) -> Any:
        text = request.arg(name)
        if text is None or text.strip() == "":
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise self.fail(400, f"{name} is not valid JSON: {text}") from None

    def _sorted(self, rows: list[dict[str, Any]], sort: Any) -> list[dict[str, Any]]:
        if not isinstance(sort, dict) or not all(v in (1, -1) for v in sort.values()):
            raise self.fail(400, 'sort must be a JSON object such as {"_id": -1}')
        ordered = list(rows)
        for key, direction in reversed(list(sort.items())):
            # Missing values first, then numbers, then text: close to MongoDB's type order.
            def sort_key(row: dict[str, Any], key: str = key) -> tuple[int, float, str]:
                value = row.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return (1, float(value), "")
                return (0, 0.0, "") if value is None else (2, 0.0, str(value))

            ordered.sort(key=sort_key, reverse=direction == -1)
        return ordered

    @staticmethod
    def _page(
        request: Request, rows: list[dict[str, Any]], start: int, limit: int, offset_name: str
    ) -> dict[str, Any]:
        page = rows[start : start + limit]
        following = request.url_with({offset_name: start + limit, "limit": limit})
        before = max(0, start - limit)
        previous = request.url_with({offset_name: before or None, "limit": limit})
        return {
            "count": len(rows),
            "next": following if start + limit < len(rows) else None,
            "previous": previous if start > 0 else None,
            "results": page,
        }
