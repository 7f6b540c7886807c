"""The one HTTP client every HTTP connector uses: timeouts, bounded retries, auth, clear errors.

- Every request has a connect and a read timeout; nothing waits forever.
- 429, 502, 503 and 504 and dropped or cut-off connections are retried a bounded number of
  times with exponential backoff and full jitter; a ``Retry-After`` header (seconds or an
  HTTP date) is honoured instead of the backoff when the server gives one.
- Other 4xx answers cannot succeed by retrying and fail at once (401/403 say which
  environment variables hold the credentials, never their values).
- Bodies are streamed and refused past ``max_body_bytes`` (announced or as they arrive, after
  decompression) without being held whole; JSON nested too deeply for the parser, or a body
  in XML or HTML where JSON was asked for, fails at once with a message naming the URL.
- Credentials come from environment variables named in the config; they are sent as HTTP
  headers only and never appear in logs, errors or results.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from connectors.errors import SourceError

log = logging.getLogger(__name__)

AuthScheme = Literal["basic", "apitoken", "bearer", "token"]
RETRY_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "healthpipe/0.1 (+https://github.com/healthpipe)"


class SourceHTTPError(SourceError):
    """The server answered with an error status; ``status`` holds it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SourceAuthError(SourceHTTPError):
    """401 or 403: the credentials were refused (not retried)."""


class ResponseRefused(SourceHTTPError):
    """The body is too large, too deeply nested or not the format asked for (not retried:
    asking again brings the same body)."""


class UnexpectedContent(Exception):
    """Raised by a body parser for a body that retrying cannot fix."""


DEFAULT_MAX_BODY_BYTES = 512 * 1024 * 1024
"""Larger than any page a source should send (the biggest are DHIS2 data value sets of a
whole district-year); a deployment with bigger bulk files raises it per client."""
_CHUNK = 1 << 16


class TruncatedResponse(SourceError):
    """The body ended before the length the server announced, or did not parse."""


@dataclass(frozen=True)
class Credentials:
    """Credentials read from the environment. ``repr`` never shows them."""

    scheme: AuthScheme | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    env_names: tuple[str, ...] = ()
    """The variables they came from, for error messages."""

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        username_env: str | None = None,
        password_env: str | None = None,
        token_env: str | None = None,
        token_scheme: AuthScheme = "bearer",
        source: str = "source",
    ) -> Credentials:
        names = tuple(n for n in (username_env, password_env, token_env) if n)
        missing = [name for name in names if not env.get(name)]
        if missing:
            raise SourceError(
                f"{source}: environment variable {', '.join(missing)} is not set "
                "(the config names it as holding the credentials)"
            )
        if token_env:
            return cls(token_scheme, token=env[token_env], env_names=names)
        if username_env and password_env:
            return cls("basic", env[username_env], env[password_env], env_names=names)
        return cls()

    def apply(self, session: requests.Session) -> None:
        if self.scheme == "basic":
            session.auth = (self.username or "", self.password or "")
        elif self.scheme == "apitoken":  # DHIS2 personal access tokens
            session.headers["Authorization"] = f"ApiToken {self.token}"
        elif self.scheme == "bearer":
            session.headers["Authorization"] = f"Bearer {self.token}"
        elif self.scheme == "token":  # KoboToolbox
            session.headers["Authorization"] = f"Token {self.token}"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries in all, the first included."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 300.0
    """A longer Retry-After than this fails the request rather than stalling the run."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: an integer, or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def redact_url(url: str) -> str:
    """A URL without user:password, for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


class HttpClient:
    """A requests session bound to one source's base URL, credentials and retry policy."""

    def __init__(
        self,
        base_url: str,
        *,
        source: str,
        credentials: Credentials | None = None,
        timeout: tuple[float, float] = (10.0, 120.0),
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.source = source
        self.credentials = credentials or Credentials()
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.max_body_bytes = max_body_bytes
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.credentials.apply(self.session)
        self.retries = 0
        """How many retries this client has made (for audit and tests)."""

    def url(self, path_or_url: str) -> str:
        """Absolute URLs (such as a server's next-page link) are used as given."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return urljoin(self.base_url, path_or_url.lstrip("/"))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(0, ceiling)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        json_body: Any = None,
        parse: Callable[[requests.Response], Any] | None = None,
    ) -> Any:
        """Send a request, retrying transient failures; return ``parse(response)`` (or the
        response). A body that ``parse`` cannot read counts as a cut-off transfer."""
        url = self.url(path_or_url)
        shown = redact_url(url)
        last_problem = ""
        for attempt in range(1, self.policy.attempts + 1):
            wait: float | None = None
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    headers=dict(headers or {}),
                    data=data,
                    json=json_body,
                    timeout=self.timeout,
                    stream=True,
                )
                if response.status_code in RETRY_STATUSES:
                    response.close()
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                    if wait is not None and wait > self.policy.max_retry_after:
                        raise SourceHTTPError(
                            f"{self.source}: {method} {shown} answered {response.status_code} "
                            f"asking to wait {wait:.0f} s, longer than the {self.policy.max_retry_after:.0f} s allowed",
                            response.status_code,
                        )
                    last_problem = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    self._read_body(response, method, shown)
                    raise self._error(method, shown, response)
                else:
                    self._read_body(response, method, shown)
                    if parse is None:
                        return response
                    try:
                        return parse(response)
                    except RecursionError:
                        raise ResponseRefused(
                            f"{self.source}: {method} {shown}: the JSON body nests deeper than "
                            "the parser allows; refused"
                        ) from None
                    except UnexpectedContent as exc:
                        raise ResponseRefused(f"{self.source}: {method} {shown}: {exc}") from None
                    except (ValueError, requests.exceptions.ChunkedEncodingError) as exc:
                        last_problem = f"unreadable or cut-off body ({_first_line(str(exc), 120)})"
            except requests.exceptions.ChunkedEncodingError as exc:
                # The connection closed before the announced Content-Length: a cut-off body.
                last_problem = f"cut-off body ({_first_line(str(exc), 120)})"
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                last_problem = f"{type(exc).__name__}: {_first_line(str(exc), 120)}"
            if attempt == self.policy.attempts:
                break
            delay = wait if wait is not None else self._backoff(attempt)
            self.retries += 1
            log.warning(
                "%s: %s %s failed (%s); retry %d of %d in %.1f s",
                self.source, method, shown, last_problem, attempt, self.policy.attempts - 1, delay,
            )  # fmt: skip
            self._sleep(delay)
        raise SourceHTTPError(
            f"{self.source}: {method} {shown} still failing after {self.policy.attempts} "
            f"attempts: {last_problem}"
        )

    def _read_body(self, response: requests.Response, method: str, shown: str) -> None:
        """Read a streamed body into the response, refusing it once it passes
        ``max_body_bytes``: memory stays bounded by the limit, whatever the server sends."""
        limit = self.max_body_bytes
        announced = response.headers.get("Content-Length", "")
        too_large = (
            f"{self.source}: {method} {shown}: the response is larger than the "
            f"{limit:,} bytes allowed (max_body_bytes); refused"
        )
        if announced.isdigit() and int(announced) > limit:
            response.close()
            raise ResponseRefused(too_large, response.status_code)
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > limit:
                response.close()
                raise ResponseRefused(too_large, response.status_code)
        response._content = bytes(body)  # what .content and .text return from now on

    def _error(self, method: str, shown: str, response: requests.Response) -> SourceHTTPError:
        status = response.status_code
        detail = _first_line(response.text)
        if status in (401, 403):
            where = (
                f"check the credentials in {', '.join(self.credentials.env_names)}"
                if self.credentials.env_names
                else "the source needs credentials (username_env/password_env or token_env)"
            )
            return SourceAuthError(
                f"{self.source}: {method} {shown} answered {status} "
                f"({'unauthorised' if status == 401 else 'forbidden'}); {where}",
                status,
            )
        return SourceHTTPError(
            f"{self.source}: {method} {shown} answered {status}: {detail or response.reason}",
            status,
        )

    def get_json(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self.request("GET", path_or_url, params=params, headers=headers, parse=read_json)

    def get_text(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        text: str = self.request(
            "GET", path_or_url, params=params, headers=headers, parse=read_complete_text
        )
        return text


def read_complete_text(response: requests.Response) -> str:
    """The body as text, refusing one shorter than its Content-Length (a cut transfer)."""
    body = response.content
    announced = response.headers.get("Content-Length")
    encoding = response.headers.get("Content-Encoding", "identity")
    if announced and announced.isdigit() and encoding == "identity" and len(body) < int(announced):
        raise ValueError(f"body cut off: {len(body)} of {announced} bytes")
    return body.decode(response.encoding or "utf-8")


def read_json(response: requests.Response) -> Any:
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if "xml" in kind or "html" in kind:
        raise UnexpectedContent(f"answered {kind or 'markup'} where JSON was expected; refused")
    return json.loads(read_complete_text(response))
