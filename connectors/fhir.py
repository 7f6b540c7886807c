"""FHIR R4 servers (an OpenMRS EMR, iHRIS 5 ...): paged search, or a Bulk Data export.

**Search** (the default): ``GET [base]/<Type>?_count=<n>&_lastUpdated=ge<since>`` per resource
type, then every ``link[next]`` exactly as the server gave it (next links are opaque: a
rebuilt one may skip or repeat resources, or outlive the server's snapshot). The matches
received are reconciled with ``Bundle.total`` when the server sends one, and a shortfall
fails the pull (a silently truncated search looks like a quieter clinic). ``_count``
defaults to 100, OpenMRS's maximum (larger requests fail there).

**Bulk Data** (``bulk: true``): ``GET [base]/$export`` with ``Prefer: respond-async`` gives
202 and a status URL; it is polled, honouring ``Retry-After`` (``X-Progress`` goes to the
log), until the manifest arrives; each NDJSON output file is read line by line (a cut-off
line fails the pull) and the ``deleted`` files become tombstones (``deleted: true``).

Records are the resources as the server sent them (names, identifiers and all): the
pipeline's FHIR adapter pseudonymises them before anything is stored. Error messages and
logs therefore never show a Patient's id; they name the entry's position instead.

The cursor is ``{"lastUpdated": {<Type>: <instant>}}``: per resource type, the largest
``meta.lastUpdated`` received (search) or the export's ``transactionTime`` (bulk). A type's
cursor moves only with the last page of that type's pull, so an interrupted pull starts
again from the old cursor (re-landing what was landed changes nothing). Incremental pulls
ask from the cursor minus an overlap window. A search never lists deleted resources: an
incremental search pull asks ``[base]/<Type>/_history?_since=`` for them when the server's
CapabilityStatement offers ``history-type`` for the type (:mod:`connectors.fhir_history`);
Bulk Data lists them in the manifest's ``deleted`` files.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from connectors.base import Cursor, Page, Record
from connectors.errors import SourceError, SourceFormatError
from connectors.fhir_history import deletions_since, history_types
from connectors.http import (
    HttpClient,
    TruncatedResponse,
    read_complete_text,
    read_json,
    redact_url,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

SEARCH_PAGE_LIMIT = 100
"""OpenMRS answers at most 100 resources a page and fails larger requests."""
BULK_LINES_PER_PAGE = 1000
FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
CURSOR_KEY = "lastUpdated"
PERSON_TYPES = frozenset({"Patient", "RelatedPerson", "Person"})
"""Resources whose id must not appear in messages or logs (it identifies a person)."""
_HISTORY = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[^/]+))?$"
)
"""``<Type>/<id>`` or ``<Type>/<id>/_history/<version>`` (a deleted entry's request url)."""


@dataclass(frozen=True)
class FhirSettings:
    source_name: str
    resource_types: Sequence[str] = ()
    """Types to pull, in this order; empty: those the server's CapabilityStatement lists
    among ``known_types`` (in that order)."""
    known_types: Sequence[str] = ()
    page_size: int = SEARCH_PAGE_LIMIT
    """``_count`` of a search."""
    bulk_page_size: int = BULK_LINES_PER_PAGE
    """Resources per page when reading a Bulk Data file."""
    bulk: bool = False
    start: date | None = None
    """The first pull asks for resources updated from this day on (none: everything)."""
    overlap: timedelta = timedelta(minutes=5)
    export_wait_limit: float = 6 * 3600.0
    """Seconds an export may take before the pull gives up (and cancels it)."""
    poll_interval: float = 5.0
    """Seconds between polls when the server sends no ``Retry-After``."""
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


def entity_of(resource_type: str) -> str:
    """``MedicationDispense`` -> ``medication_dispense``: the raw table's entity."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", resource_type).lower()


def describe(resource: Mapping[str, Any], position: str) -> str:
    """A resource for messages: type and id, except for people, whose id is personal data."""
    kind = str(resource.get("resourceType") or "resource")
    if kind in PERSON_TYPES or not resource.get("id"):
        return f"{position} (a {kind})"
    return f"{position} ({kind}/{resource.get('id')})"


# --- cursor --------------------------------------------------------------------------------


def parse_instant(text: str) -> datetime | None:
    """A FHIR instant (or a date) as an aware datetime; None when it does not parse."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_instant(moment: datetime) -> str:
    """UTC with a ``Z``: a ``+hh:mm`` offset would need escaping in every query string."""
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def cursor_stamps(cursor: Cursor | None) -> dict[str, str]:
    stamps = (cursor or {}).get(CURSOR_KEY) or {}
    return {str(k): str(v) for k, v in stamps.items() if v} if isinstance(stamps, dict) else {}


def since_for(stamp: str | None, settings: FhirSettings) -> str | None:
    """Where an incremental pull starts: the cursor minus the overlap, or the start date."""
    if stamp:
        moment = parse_instant(stamp)
        if moment is not None:
            return format_instant(moment - settings.overlap)
    if settings.start is not None:
        return settings.start.isoformat()
    return None


def latest_stamp(resources: Sequence[Mapping[str, Any]], current: str | None) -> str | None:
    """The largest ``meta.lastUpdated`` among ``resources`` and ``current``."""
    best, best_moment = current, parse_instant(current) if current else None
    for resource in resources:
        meta = resource.get("meta")
        stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
        moment = parse_instant(stamp) if isinstance(stamp, str) else None
        if moment is not None and (best_moment is None or moment > best_moment):
            best, best_moment = stamp, moment
    return best


def _cursor(stamps: Mapping[str, str]) -> dict[str, Any]:
    return {CURSOR_KEY: dict(sorted(stamps.items()))}


# --- resource types ------------------------------------------------------------------------


def capability_statement(client: HttpClient) -> dict[str, Any]:
    """The server's CapabilityStatement (``[base]/metadata``)."""
    document = client.get_json("metadata", headers={"Accept": FHIR_JSON})
    origin = f"{client.source}: {redact_url(client.url('metadata'))}"
    if not isinstance(document, dict) or document.get("resourceType") != "CapabilityStatement":
        raise SourceFormatError(origin, "expected a CapabilityStatement")
    return document


def server_resource_types(client: HttpClient) -> list[str]:
    """The resource types the server's CapabilityStatement (``[base]/metadata``) lists."""
    document = capability_statement(client)
    types: list[str] = []
    for rest in document.get("rest") or []:
        for resource in (rest or {}).get("resource") or []:
            if isinstance(resource, dict) and isinstance(resource.get("type"), str):
                types.append(resource["type"])
    return types


def resolve_types(client: HttpClient, settings: FhirSettings) -> list[str]:
    if settings.resource_types:
        return list(settings.resource_types)
    offered = set(server_resource_types(client))
    types = [t for t in settings.known_types if t in offered]
    if not types:
        raise SourceError(
            f"{settings.source_name}: {redact_url(client.url('metadata'))} lists none of the "
            f"resource types healthpipe reads ({', '.join(settings.known_types)}); "
            "set resource_types in the source's config"
        )
    return types


# --- search --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPage:
    resources: list[Record]
    next_url: str | None
    total: int | None


def parse_search_bundle(document: Any, resource_type: str, origin: str) -> SearchPage:
    """One page of a search: the ``match`` entries (``include`` entries are other types the
    search pulled in, and do not count towards ``total``), the next link and the total."""
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        found = document.get("resourceType") if isinstance(document, dict) else type(document)
        raise SourceFormatError(origin, f"expected a Bundle of type searchset, got {found}")
    if document.get("type") != "searchset":
        raise SourceFormatError(
            origin,
            f"expected a searchset Bundle (a search result), got a {document.get('type')} "
            "Bundle; healthpipe reads searches and Bulk Data exports",
            field="type",
        )
    entries = document.get("entry") or []
    if not isinstance(entries, list):
        raise SourceFormatError(origin, "expected a list", field="entry")
    resources: list[Record] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        mode = (entry.get("search") or {}).get("mode", "match") if isinstance(entry, dict) else None
        if mode in ("include", "outcome"):
            continue
        if not isinstance(resource, dict):
            raise SourceFormatError(origin, "expected a resource", field=f"entry[{index}].resource")
        if resource.get("resourceType") != resource_type:
            raise SourceFormatError(
                origin,
                f"expected a {resource_type}, got a {resource.get('resourceType')} "
                f"{describe(resource, f'entry[{index}]')}",
                field=f"entry[{index}].resource.resourceType",
            )
        resources.append(resource)
    total = document.get("total")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise SourceFormatError(origin, f"expected a count, got {total!r}", field="total")
    return SearchPage(resources, next_link(document, origin), total)


def next_link(document: Mapping[str, Any], origin: str) -> str | None:
    for link in document.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if not isinstance(url, str) or not url:
                raise SourceFormatError(origin, "next link without a url", field="link")
            return url
    return None


def search_pages(
    client: HttpClient, settings: FhirSettings, resource_type: str, since: str | None
) -> Iterator[tuple[str, SearchPage]]:
    """Every page of one search, with the URL it came from; the last one is checked
    against the server's total."""
    params: dict[str, Any] = {"_count": settings.page_size}
    if since:
        params["_lastUpdated"] = f"ge{since}"
    url: str | None = resource_type
    seen: set[str] = set()
    received, total = 0, None
    first = True
    while url is not None:
        # Only the first request is built here; next links are followed exactly as given.
        document = client.get_json(
            url, params=params if first else None, headers={"Accept": FHIR_JSON}
        )
        origin = redact_url(client.url(url))
        if first:
            origin += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        page = parse_search_bundle(document, resource_type, f"{client.source}: {origin}")
        total = page.total if first else total if total is not None else page.total
        received += len(page.resources)
        if page.next_url is not None:
            if page.next_url in seen:
                raise SourceFormatError(
                    f"{client.source}: {origin}", "the next link repeats an earlier page"
                )
            seen.add(page.next_url)
        if page.next_url is None and total is not None and received < total:
            raise TruncatedResponse(
                f"{client.source}: {resource_type} search at {redact_url(client.url(resource_type))}: "
                f"the server reported {total} matches but sent {received}; "
                f"the {resource_type} cursor was not moved"
            )
        if page.next_url is None and total is not None and received > total:
            log.warning(
                "%s: %s search: received %d resources, more than the %d the server reported "
                "(resources updated while paging)", client.source, resource_type, received, total,
            )  # fmt: skip
        yield origin, page
        url, first = page.next_url, False


def marking_last(items: Iterator[Any]) -> Iterator[tuple[bool, Any]]:
    """``(is_last, item)``: the next item is fetched before the current one is handed on,
    so a type's last page can carry its new cursor (and a failure on the last request
    comes before it)."""
    previous: Any = None
    started = False
    for item in items:
        if started:
            yield False, previous
        previous, started = item, True
    if started:
        yield True, previous


def read_search(
    client: HttpClient,
    settings: FhirSettings,
    types: Sequence[str],
    cursor: Cursor | None,
    history: Collection[str] = frozenset(),
) -> Iterator[Page]:
    """Each type's search pages; on an incremental pull of a type in ``history`` (the
    server offers ``history-type`` for it), then the deletions since the same instant."""
    stamps = cursor_stamps(cursor)
    for resource_type in types:
        latest = stamps.get(resource_type)
        since = since_for(latest, settings)
        chunks: Iterator[tuple[str, list[Record]]] = (
            (origin, page.resources)
            for origin, page in search_pages(client, settings, resource_type, since)
        )
        if latest and since and resource_type in history:
            deleted = deletions_since(client, resource_type, since, settings.page_size)
            chunks = itertools.chain(chunks, deleted)
        for is_last, (origin, records) in marking_last(chunks):
            # A deletion's moment counts too: it is the latest change the server reported.
            latest = latest_stamp(records, latest)
            if is_last and latest:
                stamps[resource_type] = latest
            if records or is_last:
                yield Page(entity_of(resource_type), records, origin, _cursor(stamps))


# --- Bulk Data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFile:
    type: str
    url: str


@dataclass(frozen=True)
class Manifest:
    transaction_time: str
    output: list[ExportFile]
    deleted: list[ExportFile]
    errors: list[ExportFile]
    requires_access_token: bool


def kick_off(client: HttpClient, types: Sequence[str], since: str | None) -> str:
    """Start a system-level export; return its status URL (``Content-Location``)."""
    params: dict[str, str] = {"_type": ",".join(types), "_outputFormat": NDJSON}
    if since:
        params["_since"] = since if "T" in since else f"{since}T00:00:00Z"
    response = client.request(
        "GET",
        "$export",
        params=params,
        headers={"Prefer": "respond-async", "Accept": FHIR_JSON},
    )
    shown = redact_url(client.url("$export"))
    location = response.headers.get("Content-Location")
    if response.status_code != 202 or not location:
        raise SourceFormatError(
            f"{client.source}: GET {shown}",
            f"a Bulk Data kick-off must answer 202 with Content-Location, got "
            f"{response.status_code}{'' if location else ' without Content-Location'}",
        )
    return str(location)


def _poll_once(response: requests.Response) -> tuple[int, Mapping[str, str], Any]:
    """Status, headers and (when finished) the manifest; a cut-off manifest raises
    ValueError, which the client retries."""
    manifest = read_json(response) if response.status_code == 200 else None
    return response.status_code, response.headers, manifest


def wait_for_manifest(client: HttpClient, status_url: str, settings: FhirSettings) -> Any:
    """Poll the export until it is finished, sleeping as ``Retry-After`` asks."""
    shown = redact_url(status_url)
    waited = 0.0
    while True:
        status, headers, manifest = client.request(
            "GET", status_url, headers={"Accept": "application/json"}, parse=_poll_once
        )
        if status == 200:
            return manifest
        if status != 202:
            raise SourceFormatError(
                f"{client.source}: GET {shown}",
                f"an export status answers 202 (in progress) or 200 (done), got {status}",
            )
        wait = retry_after_seconds(headers.get("Retry-After"))
        wait = settings.poll_interval if wait is None else wait
        if waited + wait > settings.export_wait_limit:
            cancel_export(client, status_url)
            raise SourceError(
                f"{client.source}: the export at {shown} was still running after "
                f"{waited:.0f} s (limit {settings.export_wait_limit:.0f} s); it was cancelled"
            )
        log.info(
            "%s: export %s in progress (%s); polling again in %.1f s",
            client.source, shown, headers.get("X-Progress") or "no progress reported", wait,
        )  # fmt: skip
        settings.sleep(wait)
        waited += wait


def cancel_export(client: HttpClient, status_url: str) -> None:
    """Tell the server it may delete the export's files (best effort: the data is in)."""
    try:
        client.request("DELETE", status_url)
    except SourceError as exc:
        log.info("%s: could not delete export %s: %s", client.source, redact_url(status_url), exc)


def _export_files(manifest: Mapping[str, Any], key: str, origin: str) -> list[ExportFile]:
    items = manifest.get(key) or []
    if not isinstance(items, list):
        raise SourceFormatError(origin, "expected a list", field=key)
    files = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("url") or not item.get("type"):
            raise SourceFormatError(origin, "expected {type, url}", field=f"{key}[{index}]")
        files.append(ExportFile(str(item["type"]), str(item["url"])))
    return files


def parse_manifest(document: Any, origin: str) -> Manifest:
    if not isinstance(document, dict):
        raise SourceFormatError(origin, "expected a Bulk Data manifest (a JSON object)")
    stamp = document.get("transactionTime")
    if not isinstance(stamp, str) or parse_instant(stamp) is None:
        raise SourceFormatError(
            origin, f"expected an instant, got {stamp!r}", field="transactionTime"
        )
    return Manifest(
        transaction_time=stamp,
        output=_export_files(document, "output", origin),
        deleted=_export_files(document, "deleted", origin),
        errors=_export_files(document, "error", origin),
        requires_access_token=bool(document.get("requiresAccessToken", True)),
    )


def ndjson_lines(text: str, origin: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` per non-empty line. A last line that does not parse
    and has no line end was cut off in transit."""
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except RecursionError:
            raise SourceFormatError(
                origin, f"line {number}: JSON nested deeper than the parser allows"
            ) from None
        except ValueError:
            if number == len(lines):
                raise TruncatedResponse(
                    f"{origin}: line {number} is cut off (no line end, not complete JSON); "
                    "nothing of this file was landed"
                ) from None
            raise SourceFormatError(origin, f"line {number} is not JSON") from None


def parse_ndjson(text: str, resource_type: str, origin: str) -> list[Record]:
    """The resources of one output file; each line must be a ``resource_type``."""
    resources: list[Record] = []
    for number, resource in ndjson_lines(text, origin):
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            found = resource.get("resourceType") if isinstance(resource, dict) else "no resource"
            raise SourceFormatError(
                origin, f"line {number}: expected a {resource_type}, got {found}"
            )
        resources.append(resource)
    return resources


def parse_deleted(text: str, origin: str, transaction_time: str) -> list[Record]:
    """Tombstones from a ``deleted`` file: transaction Bundles whose entries are
    ``DELETE <Type>/<id>`` requests."""
    tombstones: list[Record] = []
    for number, bundle in ndjson_lines(text, origin):
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise SourceFormatError(origin, f"line {number}: expected a Bundle of deletions")
        for index, entry in enumerate(bundle.get("entry") or []):
            request = entry.get("request") if isinstance(entry, dict) else None
            where = f"line {number} entry[{index}].request"
            if not isinstance(request, dict) or str(request.get("method")).upper() != "DELETE":
                raise SourceFormatError(origin, "expected method DELETE", field=where)
            found = _HISTORY.match(str(request.get("url") or "").split("?")[0])
            if found is None:
                raise SourceFormatError(origin, "expected url <Type>/<id>", field=f"{where}.url")
            response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
            tombstones.append(
                {
                    "resourceType": found["type"],
                    "id": found["id"],
                    "meta": {
                        "versionId": found["version"],
                        "lastUpdated": response.get("lastModified") or transaction_time,
                    },
                    "deleted": True,
                }
            )
    return tombstones


def download(client: HttpClient, url: str) -> str:
    """An output file, refused (and retried) when shorter than its Content-Length."""
    text: str = client.request("GET", url, headers={"Accept": NDJSON}, parse=read_complete_text)
    return text


def oldest_stamp(stamps: Mapping[str, str], types: Sequence[str]) -> str | None:
    """One export serves every type, so it starts from the oldest of their cursors (none
    when a type has never been pulled)."""
    known = [stamps.get(t) for t in types]
    if not all(known):
        return None
    floor = datetime.min.replace(tzinfo=UTC)
    return min((s for s in known if s), key=lambda s: parse_instant(s) or floor)


def _file_client(client: HttpClient, manifest: Manifest) -> HttpClient:
    """Files that need no access token may sit on another host (a storage bucket): they
    are fetched without the source's credentials."""
    if manifest.requires_access_token:
        return client
    return HttpClient(
        client.base_url, source=client.source, timeout=client.timeout, policy=client.policy
    )


def read_bulk(
    client: HttpClient, settings: FhirSettings, types: Sequence[str], cursor: Cursor | None
) -> Iterator[Page]:
    """One export for every type; each type's files, then its tombstones, in pages."""
    stamps = cursor_stamps(cursor)
    status_url = kick_off(client, types, since_for(oldest_stamp(stamps, types), settings))
    origin = f"{client.source}: {redact_url(status_url)}"
    manifest = parse_manifest(wait_for_manifest(client, status_url, settings), origin)
    if manifest.errors:
        log.warning(
            "%s: the export reported %d error file(s) (%s): resources the server could not "
            "export are missing from this pull", client.source, len(manifest.errors),
            ", ".join(redact_url(f.url) for f in manifest.errors),
        )  # fmt: skip
    unknown = sorted({f.type for f in manifest.output} - set(types))
    if unknown:
        raise SourceFormatError(origin, f"the export holds types not asked for: {unknown}")
    files = _file_client(client, manifest)
    try:
        tombstones = read_tombstones(files, manifest, types)
        for resource_type in types:
            chunks = type_chunks(files, settings, manifest, resource_type, tombstones)
            for is_last, (where, records) in marking_last(chunks):
                if is_last:
                    stamps[resource_type] = manifest.transaction_time
                yield Page(entity_of(resource_type), records, where, _cursor(stamps))
    finally:
        if files is not client:
            files.close()
    cancel_export(client, status_url)


def read_tombstones(
    client: HttpClient, manifest: Manifest, types: Sequence[str]
) -> dict[str, list[Record]]:
    tombstones: dict[str, list[Record]] = {}
    for deleted in manifest.deleted:
        where = f"{client.source}: {redact_url(deleted.url)}"
        for record in parse_deleted(
            download(client, deleted.url), where, manifest.transaction_time
        ):
            if record["resourceType"] in types:
                tombstones.setdefault(record["resourceType"], []).append(record)
    return tombstones


def type_chunks(
    client: HttpClient,
    settings: FhirSettings,
    manifest: Manifest,
    resource_type: str,
    tombstones: Mapping[str, list[Record]],
) -> Iterator[tuple[str, list[Record]]]:
    """``(origin, records)`` pages of one type: its files, then its tombstones; one empty
    page when the export had nothing of the type (its cursor still moves)."""
    empty = True
    for export in (f for f in manifest.output if f.type == resource_type):
        shown = redact_url(export.url)
        text = download(client, export.url)
        resources = parse_ndjson(text, resource_type, f"{client.source}: {shown}")
        for start in range(0, len(resources), settings.bulk_page_size):
            chunk = resources[start : start + settings.bulk_page_size]
            empty = False
            yield f"{shown} lines {start + 1}-{start + len(chunk)}", chunk
    if tombstones.get(resource_type):
        empty = False
        yield (
            f"{redact_url(client.url('$export'))} deleted {resource_type}",
            tombstones[resource_type],
        )
    if empty:
        yield f"{redact_url(client.url('$export'))} ({resource_type}: nothing new)", []


# --- entry point ---------------------------------------------------------------------------


def read_fhir(
    client: HttpClient,
    settings: FhirSettings,
    cursor: Cursor | None,
) -> Iterator[Page]:
    """Pages of every configured (or offered) resource type, one type at a time."""
    types = resolve_types(client, settings)
    if settings.bulk:
        yield from read_bulk(client, settings, types, cursor)
    else:
        # Only an incremental pull has deletions to learn: a full one asks for nothing more.
        history = history_types(capability_statement(client)) if cursor_stamps(cursor) else set()
        yield from read_search(client, settings, types, cursor, history)
