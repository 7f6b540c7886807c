"""ODK Central over its OData feed: form submissions, incremental, with deletions.

``GET /v1/projects/{id}/forms/{xmlFormId}.svc/Submissions``:

- ``$count=true``: every page says how many rows match; the rows received are reconciled
  with the count of the last page and a shortfall fails the pull (a feed cut short looks
  like a quiet week).
- Paging is server-driven: ``$top`` asks for a page size and ``@odata.nextLink`` (with
  Central's ``$skiptoken``) is followed exactly as given, never rebuilt. A next link to
  another server is refused: it would receive the credentials.
- ``$orderby=__system/submissionDate asc``: oldest first, so the first submission of a new
  form version lands before the later ones (schema drift is reported on it).
- Incremental pulls ask for ``__system/submissionDate`` or ``__system/updatedAt`` after the
  saved cursor minus an overlap window. Both are needed: Central leaves ``updatedAt`` null
  until a submission is edited or reviewed, so a filter on ``updatedAt`` alone never sees
  new submissions.
- Deleted submissions are hidden unless asked for: a second query per form,
  ``__system/deletedAt ne null`` (full pull) or ``__system/deletedAt gt <cursor>``
  (incremental), brings them as tombstones (``deleted: true``).
- The cursor, per form, is the largest ``updatedAt`` (or ``submissionDate`` when never
  updated) and the largest ``deletedAt`` received. It moves only on the form's last page, so
  an interrupted pull starts again from the old cursor (re-landing changes nothing).

Auth: HTTP Basic, or a session: ``POST /v1/sessions`` with the email and password once, then
``Authorization: Bearer <token>`` (Central checks a password hash on every Basic request).

Records: ``submission_id`` (``__id``, stable across edits: the key), ``instance_id``
(``meta/instanceID``, the current version's), the ``__system`` fields and ``answers`` (the
form fields, groups nested as objects, exactly as sent). ``submitterName`` and ``deviceId``
are not passed on: healthpipe has no use for them and they name people and phones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from connectors.base import Cursor, Page, Record
from connectors.errors import SourceError, SourceFormatError
from connectors.http import Credentials, HttpClient, TruncatedResponse, read_json

log = logging.getLogger(__name__)

ENTITY = "submissions"
MAX_PAGE_SIZE = 1000  # Central's own page limit; larger $top values are cut to it
PROTOCOL_KEYS = frozenset({"__id", "meta", "__system"})
ORDER = "__system/submissionDate asc"

AuthMode = Literal["session", "basic"]


@dataclass(frozen=True)
class OdkSettings:
    source_name: str
    project_id: int
    forms: Sequence[str]
    page_size: int = MAX_PAGE_SIZE
    overlap: timedelta = field(default_factory=lambda: timedelta(minutes=5))


@dataclass(frozen=True)
class FeedPage:
    """One OData page of a Submissions feed, parsed."""

    records: list[Record]
    count: int | None
    next_link: str | None


# --- auth ----------------------------------------------------------------------------------


def open_session(client: HttpClient) -> None:
    """Trade the client's Basic credentials for a Central session token (a bearer header).
    The token lives in the client's headers only; it is never logged or put in a URL."""
    credentials = client.credentials
    if credentials.scheme != "basic":
        return
    document = client.request(
        "POST",
        "v1/sessions",
        json_body={"email": credentials.username, "password": credentials.password},
        parse=read_json,
    )
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise SourceFormatError(
            f"{client.source}: {client.url('v1/sessions')}",
            "expected a session object with a token",
            field="token",
        )
    client.session.auth = None
    client.credentials = Credentials("bearer", token=token, env_names=credentials.env_names)
    client.credentials.apply(client.session)


# --- parsing -------------------------------------------------------------------------------


def submissions_path(project_id: int, form: str) -> str:
    return f"v1/projects/{project_id}/forms/{quote(form, safe='')}.svc/Submissions"


def parse_submission(row: Any, *, form_id: str, origin: str, index: int) -> Record:
    """One OData row as a record; ``answers`` holds the form fields as sent."""
    if not isinstance(row, dict):
        raise SourceFormatError(origin, "expected a submission (a JSON object)", record=index)
    system = row.get("__system")
    meta = row.get("meta")
    system = {} if system is None else system  # the public docs' example has no __system
    meta = {} if meta is None else meta
    for name, part in (("__system", system), ("meta", meta)):
        if not isinstance(part, dict):
            raise SourceFormatError(
                origin, f"submission {index}: expected an object", field=name, record=index
            )
    submission_id = row.get("__id")
    if submission_id is not None and not isinstance(submission_id, str):
        raise SourceFormatError(
            origin, f"submission {index}: expected a string id", field="__id", record=index
        )
    answers = {
        key: value
        for key, value in row.items()
        # Repeat groups are separate OData entity sets: their navigation links are not answers.
        if key not in PROTOCOL_KEYS and "@odata." not in key
    }
    deleted_at = system.get("deletedAt")
    return {
        "form_id": form_id,
        "submission_id": submission_id,
        "instance_id": meta.get("instanceID"),
        "deprecated_id": meta.get("deprecatedID"),
        "form_version": system.get("formVersion"),
        "submission_date": system.get("submissionDate"),
        "updated_at": system.get("updatedAt"),
        "deleted_at": deleted_at,
        "submitter_id": system.get("submitterId"),
        "review_state": system.get("reviewState"),
        "edits": system.get("edits"),
        "attachments_present": system.get("attachmentsPresent"),
        "attachments_expected": system.get("attachmentsExpected"),
        "answers": answers,
        "deleted": deleted_at is not None,
    }


def parse_feed(document: Any, *, form_id: str, origin: str) -> FeedPage:
    """An OData Submissions document: ``value`` rows, ``@odata.count``, ``@odata.nextLink``."""
    if not isinstance(document, dict) or not isinstance(document.get("value"), list):
        raise SourceFormatError(origin, "expected an OData document with a value list")
    count = document.get("@odata.count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise SourceFormatError(origin, "expected a whole number", field="@odata.count")
    next_link = document.get("@odata.nextLink")
    if next_link is not None and not isinstance(next_link, str):
        raise SourceFormatError(origin, "expected a URL", field="@odata.nextLink")
    records = [
        parse_submission(row, form_id=form_id, origin=origin, index=index)
        for index, row in enumerate(document["value"])
    ]
    return FeedPage(records, count, next_link)


# --- pulling -------------------------------------------------------------------------------


def _same_server(client: HttpClient, link: str) -> bool:
    base, target = urlsplit(client.base_url), urlsplit(client.url(link))
    return (base.scheme, base.netloc) == (target.scheme, target.netloc)


def fetch_feed(
    client: HttpClient, path: str, params: Mapping[str, Any], *, form_id: str
) -> Iterator[list[Record]]:
    """Every page of one Submissions query, following ``@odata.nextLink``; after the last
    page the rows received are reconciled with ``@odata.count``."""
    url: str | None = path
    request_params: Mapping[str, Any] | None = params
    received, count, number = 0, None, 0
    while url is not None:
        number += 1
        origin = f"{client.source}: ODK form {form_id}: {client.url(url)} (page {number})"
        page = parse_feed(
            client.get_json(url, params=request_params), form_id=form_id, origin=origin
        )
        received += len(page.records)
        count = page.count if page.count is not None else count
        if page.next_link and not _same_server(client, page.next_link):
            raise SourceFormatError(
                origin, "the next link points to another server; refusing to send credentials"
            )
        if page.next_link and not page.records:
            raise SourceFormatError(origin, "an empty page with a next link (the feed would loop)")
        yield page.records
        url, request_params = page.next_link, None  # the link carries the whole query
    if count is None:
        log.warning("%s: ODK form %s: the server sent no @odata.count", client.source, form_id)
    elif received < count:
        raise TruncatedResponse(
            f"{client.source}: ODK form {form_id}: {client.url(path)}: the server reported "
            f"{count} submissions but sent {received}; the cursor was not moved, so the next "
            "run reads them again"
        )


def _pages_with_last(chunks: Iterable[list[Record]]) -> Iterator[tuple[list[Record], bool]]:
    """Non-empty pages as the server sent them, each with a flag saying whether it is the
    last (one page of look-ahead, so the cursor moves with the last page only).

    Central never serves one submission twice, but a file-backed server may (a planted
    duplicate): copies split across two pages are moved into the first, where landing
    collapses and counts them."""
    iterator = (chunk for chunk in chunks if chunk)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        while following is not None:
            last = current[-1].get("submission_id")
            run = 0
            while run < len(following) and following[run].get("submission_id") == last:
                run += 1
            if run == 0:
                break
            current = current + following[:run]
            following = following[run:] or next(iterator, None)
        yield current, following is None
        current = following


def parse_stamp(stamp: str) -> datetime | None:
    """Central's ``2026-01-31T23:59:59.999Z`` as a naive UTC datetime (None if unreadable)."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Kept naive in UTC: cursors from Central and from older runs compare alike.
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def format_stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _latest(current: str | None, stamps: Iterable[Any]) -> str | None:
    """The latest of ``current`` and ``stamps`` (unreadable stamps are ignored)."""
    best, best_moment = current, parse_stamp(current) if current else None
    for stamp in stamps:
        moment = parse_stamp(stamp) if isinstance(stamp, str) else None
        if moment is not None and (best_moment is None or moment > best_moment):
            best, best_moment = stamp, moment
    return best


def _since(stamp: str | None, overlap: timedelta) -> str | None:
    moment = parse_stamp(stamp) if stamp else None
    return format_stamp(moment - overlap) if moment is not None else None


def form_queries(form_cursor: Mapping[str, Any], settings: OdkSettings) -> list[dict[str, Any]]:
    """The two queries of a form: visible submissions, then deleted ones."""
    base = {"$count": "true", "$top": min(settings.page_size, MAX_PAGE_SIZE), "$orderby": ORDER}
    changed = _since(form_cursor.get("updatedAt"), settings.overlap)
    deleted = _since(form_cursor.get("deletedAt") or form_cursor.get("updatedAt"), settings.overlap)
    visible = dict(base)
    if changed:
        visible["$filter"] = (
            f"__system/submissionDate gt {changed} or __system/updatedAt gt {changed}"
        )
    gone = dict(base)
    gone["$filter"] = (
        f"__system/deletedAt gt {deleted}" if deleted else "__system/deletedAt ne null"
    )
    return [visible, gone]


def read_form(
    client: HttpClient, settings: OdkSettings, form: str, form_cursor: Mapping[str, Any]
) -> Iterator[tuple[list[Record], dict[str, Any] | None]]:
    """A form's pages; the last one comes with the form's new cursor, the others with None."""
    path = submissions_path(settings.project_id, form)
    chunks = (
        records
        for params in form_queries(form_cursor, settings)
        for records in fetch_feed(client, path, params, form_id=form)
    )
    updated, deleted = form_cursor.get("updatedAt"), form_cursor.get("deletedAt")
    for records, last in _pages_with_last(chunks):
        updated = _latest(updated, (r["updated_at"] or r["submission_date"] for r in records))
        deleted = _latest(deleted, (r["deleted_at"] for r in records))
        new_cursor = {k: v for k, v in (("updatedAt", updated), ("deletedAt", deleted)) if v}
        yield records, new_cursor if last else None


def read_submissions(
    client: HttpClient, settings: OdkSettings, cursor: Cursor | None
) -> Iterator[Page]:
    """Every configured form's submissions, form after form. The source's cursor maps each
    form to its own cursor; a page carries the cursor as it may be saved once it lands."""
    saved: dict[str, Any] = {k: dict(v) for k, v in (cursor or {}).items() if isinstance(v, dict)}
    for form in settings.forms:
        origin = client.url(submissions_path(settings.project_id, form))
        for records, form_cursor in read_form(client, settings, form, saved.get(form, {})):
            if form_cursor is not None:
                saved[form] = form_cursor
            yield Page(ENTITY, records, origin, {k: dict(v) for k, v in saved.items()})


def list_forms(client: HttpClient, project_id: int) -> list[str]:
    """The xmlFormIds of a project's forms (``GET /v1/projects/{id}/forms``)."""
    path = f"v1/projects/{project_id}/forms"
    document = client.get_json(path)
    origin = f"{client.source}: {client.url(path)}"
    if not isinstance(document, list):
        raise SourceFormatError(origin, "expected a list of forms")
    forms = []
    for index, item in enumerate(document):
        form_id = item.get("xmlFormId") if isinstance(item, dict) else None
        if not isinstance(form_id, str) or not form_id:
            raise SourceFormatError(origin, "expected a form id", field="xmlFormId", record=index)
        forms.append(form_id)
    if not forms:
        raise SourceError(f"{origin}: project {project_id} has no forms")
    return sorted(forms)
