"""Requests, responses and routing shared by the sandbox's APIs.

Each API (DHIS2, FHIR, ODK Central, KoboToolbox) is an :class:`Api`: a path prefix, its
routes, how it authenticates a request and how it words an error (every protocol has its own
error document). The server matches a request to an API by prefix and to a route by regular
expression, then checks auth, draws a fault (see :mod:`pipelines.sandbox.faults`) and calls
the handler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

JSON_UTF8 = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One HTTP request as the handlers see it.

    ``path`` is percent-decoded and has no query string; ``query`` keeps every value of a
    repeated parameter in order; ``headers`` are keyed by lower-case name; ``base_url`` is
    ``http://<Host header>``, so links the sandbox writes work with whatever host name the
    client used; ``params`` are the route's named groups.
    """

    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    headers: Mapping[str, str]
    body: bytes
    base_url: str
    params: Mapping[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter (the usual web-framework rule)."""
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        """Every value of a repeatable parameter, in order."""
        return list(self.query.get(name, ()))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def url_with(self, changes: Mapping[str, str | int | None] | None = None) -> str:
        """This request's URL with some parameters replaced (``None`` removes one): how
        paging links are built, keeping every other parameter the client sent."""
        query: dict[str, list[str]] = {key: list(values) for key, values in self.query.items()}
        for key, value in (changes or {}).items():
            query.pop(key, None)
            if value is not None:
                query[key] = [str(value)]
        return build_url(self.base_url + self.path, query)


def build_url(base: str, query: Mapping[str, Sequence[str]]) -> str:
    pairs = [(key, value) for key, values in query.items() for value in values]
    # Keep "$", "/", ":" and "," readable in links (OData and FHIR clients log them).
    return f"{base}?{urlencode(pairs, safe='$/:,')}" if pairs else base


@dataclass
class Response:
    """A complete response: status, body bytes, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(
    document: Any,
    status: int = 200,
    content_type: str = JSON_UTF8,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, content_type, headers or [])


class ApiError(Exception):
    """Raised by a handler to answer with a ready error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """``pattern`` is matched against the whole path (``fullmatch``). ``public`` routes
    skip auth (sessions, discovery documents); ``faultable`` routes are the data endpoints
    that fault injection may hit."""

    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: Handler
    public: bool = False
    faultable: bool = True


def route(
    methods: str | tuple[str, ...],
    pattern: str,
    handler: Handler,
    *,
    public: bool = False,
    faultable: bool = True,
) -> Route:
    wanted = (methods,) if isinstance(methods, str) else methods
    return Route(wanted, re.compile(pattern), handler, public, faultable)


class Api(Protocol):
    """What the server needs from one source API."""

    name: str
    prefix: str

    def routes(self) -> list[Route]: ...

    def authenticate(self, request: Request) -> Response | None:
        """``None`` when the request may proceed, else the protocol's 401 response."""
        ...

    def error(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        """The protocol's error document for ``status``."""
        ...


@dataclass(frozen=True)
class Match:
    api: Api
    route: Route
    params: dict[str, str]


def match(apis: Sequence[Api], method: str, path: str) -> Match | Response | None:
    """The API and route for a request; an error response (404 or 405 in the API's own
    words) when the prefix is known but no route fits; ``None`` for an unknown prefix."""
    for api in apis:
        if path != api.prefix and not path.startswith(api.prefix + "/"):
            continue
        rest = path[len(api.prefix) :]
        allowed: set[str] = set()
        for candidate in api.routes():
            found = candidate.pattern.fullmatch(rest)
            if not found:
                continue
            if method in candidate.methods:
                return Match(api, candidate, found.groupdict())
            allowed.update(candidate.methods)
        if allowed:
            return api.error(
                405,
                f"Method {method} is not allowed on {path}",
                [("Allow", ", ".join(sorted(allowed)))],
            )
        return api.error(404, f"No such resource: {path}")
    return None
