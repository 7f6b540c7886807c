"""DHIS2 over its Web API: metadata, data value sets and complete data set registrations.

- Metadata lists page with DHIS2's ``pager``; the number received is reconciled with
  ``pager.total`` and a shortfall fails the pull (a silently truncated list looks like a
  smaller country).
- ``/api/dataValueSets`` has no paging, so requests are chunked per data set and per
  org-unit subtree (``orgUnit`` + ``children=true``). A full pull asks for every period
  between ``startDate`` and ``endDate`` in one range: DHIS2 returns only periods lying wholly
  inside the range, so splitting it by year would lose the weeks and financial years that
  straddle a year end. Incremental pulls ask for ``lastUpdated`` since the saved cursor minus
  an overlap window, with ``includeDeleted=true`` so deletions arrive as tombstones. Values
  come as JSON or as DHIS2's CSV (``format: csv``).
- The cursor is the largest ``lastUpdated`` received. It moves only on the last page of a
  pull, so a pull interrupted half way starts again from the old cursor (re-landing what was
  already landed changes nothing).
- Registrations have no ``lastUpdated`` filter in DHIS2's API. An incremental pull asks for
  those registered since the cursor (``created``, which DHIS2 compares with the
  registration's ``date``) and, once per ``registration_sweep``, for every registration of
  the periods of the last 400 days (a sweep): only a sweep sees a report un-completed or
  imported with an older ``date``. The cursor records when the last sweep ended
  (``registrationsSweptAt``, the pipeline's clock), on the last registration page.
- A window pull (a backfill of past periods) asks each data set for a ``startDate``/``endDate``
  range the caller computes from the data set's ``periodType`` (whole periods, since DHIS2
  returns only periods lying inside the range), ignores the cursor, and moves none: its pages
  carry the cursor they were given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from connectors.base import Cursor, Page, Record
from connectors.dhis2 import (
    METADATA,
    REGISTRATIONS,
    CollectionSpec,
    parse_collection,
    parse_data_value_csv,
    parse_data_value_set,
    parse_registrations,
)
from connectors.errors import SourceFormatError
from connectors.http import HttpClient, TruncatedResponse

DEFAULT_START = date(2010, 1, 1)


@dataclass(frozen=True)
class Dhis2ApiSettings:
    source_name: str
    data_sets: Sequence[str] = ()
    """Data set UIDs to pull; empty: every data set in the metadata."""
    org_units: Sequence[str] = ()
    """Roots of the subtrees to pull; empty: the top-level org units."""
    start_date: date = DEFAULT_START
    end_date: date = field(default_factory=lambda: date.today() + timedelta(days=366))
    value_format: str = "json"
    page_size: int = 1000
    """Metadata page size (DHIS2's pager)."""
    chunk_level: int = 2
    """Data values are requested one subtree at a time, rooted at this hierarchy level."""
    overlap: timedelta = timedelta(minutes=5)
    registration_sweep: timedelta = timedelta(hours=24)
    """How often an incremental pull re-reads every registration of the last
    ``REGISTRATION_LOOKBACK`` of periods; zero: on every pull."""


REGISTRATION_LOOKBACK = timedelta(days=400)
"""A sweep asks for the periods starting this long before the cursor: a yearly data set's
last year and more."""
SWEPT_AT = "registrationsSweptAt"


def _fields(spec: CollectionSpec) -> str:
    parts = [*spec.scalars, *spec.json_fields]
    parts += [f"{name}[id]" for name in (*spec.refs, *spec.ref_lists)]
    parts += [f"{name}[{inner}[id]]" for name, (inner, _) in spec.nested_ref_lists.items()]
    return ",".join(parts)


def fetch_collection(
    client: HttpClient, collection: str, spec: CollectionSpec, page_size: int
) -> list[Record]:
    """Every item of a metadata list, page by page, reconciled with the pager's total."""
    records: list[Record] = []
    page, total = 1, None
    while True:
        params = {"fields": _fields(spec), "page": page, "pageSize": page_size, "order": "id:asc"}
        document = client.get_json(f"api/{collection}", params=params)
        origin = f"{client.source}: {client.url('api/' + collection)} page {page}"
        if not isinstance(document, dict) or not isinstance(document.get(collection), list):
            raise SourceFormatError(origin, f"expected a JSON object with a {collection} list")
        records += parse_collection(spec, document[collection], origin, collection)
        pager = document.get("pager") or {}
        total = pager.get("total", total)
        page_count = int(pager.get("pageCount") or 1)
        if page >= page_count:
            break
        page += 1
    if total is not None and len(records) < int(total):
        raise TruncatedResponse(
            f"{client.source}: {collection}: the server reported {total} items but sent "
            f"{len(records)}; nothing was landed from this pull"
        )
    return records


def _subtree_roots(settings: Dhis2ApiSettings, org_units: list[Record]) -> list[str]:
    """The org units whose subtrees are requested one by one: the configured roots' units
    at ``chunk_level`` (or the roots themselves when they sit deeper)."""
    roots = list(settings.org_units) or [
        str(u["id"]) for u in org_units if str(u.get("level")) == "1"
    ]
    chosen: list[str] = []
    for root in roots:
        below = [
            str(u["id"])
            for u in org_units
            if f"/{root}/" in f"{u.get('path')}/"
            and str(u.get("level")) == str(settings.chunk_level)
        ]
        chosen += below or [root]
    return sorted(set(chosen))


def _since(cursor: Cursor | None, overlap: timedelta) -> str | None:
    value = (cursor or {}).get("lastUpdated")
    if not value:
        return None
    moment = _sortable(str(value)) - overlap
    return moment.isoformat(timespec="milliseconds")


def _latest(records: list[Record], key: str, current: str | None) -> str | None:
    # distinct stamps first: values imported together share one, and parsing every value's
    # stamp cost a fifth of a page's parse
    candidates = {str(stamp) for r in records if (stamp := r.get(key))}
    if current:
        candidates.add(current)
    return max(candidates, key=_sortable) if candidates else None


def _sortable(stamp: str) -> datetime:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return datetime.min


def fetch_data_values(
    client: HttpClient,
    settings: Dhis2ApiSettings,
    data_set: str,
    org_unit: str,
    *,
    since: str | None,
    period_range: tuple[date, date] | None,
) -> list[Record]:
    params: list[tuple[str, Any]] = [
        ("dataSet", data_set),
        ("orgUnit", org_unit),
        ("children", "true"),
        ("includeDeleted", "true"),
    ]
    if since:
        params.append(("lastUpdated", since))
    if period_range:
        params += [
            ("startDate", period_range[0].isoformat()),
            ("endDate", period_range[1].isoformat()),
        ]
    origin = (
        f"{client.source}: {client.url('api/dataValueSets')} dataSet={data_set} orgUnit={org_unit}"
    )
    if settings.value_format == "csv":
        text = client.get_text("api/dataValueSets.csv", params=params)
        return parse_data_value_csv(text, origin)
    document = client.get_json("api/dataValueSets.json", params=params)
    if not isinstance(document, dict):
        raise SourceFormatError(origin, "expected a data value set (a JSON object)")
    if "dataValues" not in document:  # DHIS2 leaves the list out when nothing matched
        return []
    return parse_data_value_set(document, origin)


def fetch_registrations(
    client: HttpClient,
    data_set: str,
    org_unit: str,
    period_range: tuple[date, date] | None,
    *,
    created: str | None = None,
) -> list[Record]:
    """The registrations of the periods in ``period_range``, or (without one) those whose
    ``date`` is at or after ``created``."""
    params = [("dataSet", data_set), ("orgUnit", org_unit), ("children", "true")]
    if period_range is not None:
        params += [
            ("startDate", period_range[0].isoformat()),
            ("endDate", period_range[1].isoformat()),
        ]
    if created is not None:
        params.append(("created", created))
    document = client.get_json("api/completeDataSetRegistrations", params=params)
    origin = f"{client.source}: {client.url('api/completeDataSetRegistrations')}"
    if not isinstance(document, dict):
        raise SourceFormatError(origin, "expected a JSON object")
    items = document.get("completeDataSetRegistrations") or []
    if not isinstance(items, list):
        raise SourceFormatError(origin, "expected a list", field="completeDataSetRegistrations")
    return parse_registrations(items, origin)


PeriodRangeOf = Callable[[str], tuple[date, date]]
"""Given a data set's ``periodType``, the ``startDate``/``endDate`` range to ask it for."""


def read_api(
    client: HttpClient,
    settings: Dhis2ApiSettings,
    cursor: Cursor | None,
    *,
    window: PeriodRangeOf | None = None,
) -> Iterator[Page]:
    """Metadata (whole lists: they are small), then data values and registrations by chunk.

    With ``window``, only each data set's range is pulled and the cursor is left as it was.
    """
    base = dict(cursor or {})
    collections: dict[str, list[Record]] = {}
    for collection, spec in METADATA.items():
        records = fetch_collection(client, collection, spec, settings.page_size)
        collections[collection] = records
        yield Page(spec.entity, records, client.url(f"api/{collection}"), base)

    data_sets = list(settings.data_sets) or sorted(str(d["id"]) for d in collections["dataSets"])
    roots = _subtree_roots(settings, collections["organisationUnits"])
    if window is not None:
        yield from _read_window(client, settings, data_sets, roots, collections, window, base)
        return
    since = _since(cursor, settings.overlap)
    # A full pull asks for the whole period range; an incremental one for what changed.
    ranges: list[tuple[date, date] | None] = (
        [None] if since else [(settings.start_date, settings.end_date)]
    )
    latest = base.get("lastUpdated")
    chunks = [(ds, ou, r) for ds in data_sets for ou in roots for r in ranges]
    for number, (data_set, org_unit, period_range) in enumerate(chunks, start=1):
        records = fetch_data_values(
            client, settings, data_set, org_unit, since=since, period_range=period_range
        )
        latest = _latest(records, "last_updated", latest)
        if not records and number < len(chunks):
            continue
        done = number == len(chunks)
        cursor_now = {**base, "lastUpdated": latest} if done and latest else base
        yield Page("data_values", records, client.url("api/dataValueSets"), cursor_now)

    clock = datetime.now(UTC)
    sweep = since is None or _sweep_due(base.get(SWEPT_AT), clock, settings.registration_sweep)
    registration_range: tuple[date, date] | None = None
    if since is None:
        registration_range = (settings.start_date, settings.end_date)
    elif sweep:
        start = datetime.fromisoformat(since).date() - REGISTRATION_LOOKBACK
        registration_range = (start, settings.end_date)
    cursor_after = {**base, "lastUpdated": latest} if latest else dict(base)
    registration_chunks = [(ds, ou) for ds in data_sets for ou in roots]
    for number, (data_set, org_unit) in enumerate(registration_chunks, start=1):
        records = fetch_registrations(
            client,
            data_set,
            org_unit,
            registration_range,
            created=None if sweep else since,
        )
        done = number == len(registration_chunks)
        if not records and not done:
            continue
        page_cursor = dict(cursor_after)  # each page its own: pages are landed later
        if done and sweep:
            # only the last page says a sweep ended: an interrupted one is done again
            page_cursor[SWEPT_AT] = clock.isoformat(timespec="seconds")
        yield Page(
            REGISTRATIONS.entity,
            records,
            client.url("api/completeDataSetRegistrations"),
            page_cursor,
        )


def _sweep_due(swept_at: object, now: datetime, every: timedelta) -> bool:
    if not swept_at:
        return True
    try:
        last = datetime.fromisoformat(str(swept_at))
    except ValueError:
        return True  # a cursor written by hand or by another version: sweep to be safe
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return now - last >= every


def _read_window(
    client: HttpClient,
    settings: Dhis2ApiSettings,
    data_sets: list[str],
    roots: list[str],
    collections: dict[str, list[Record]],
    window: PeriodRangeOf,
    cursor: dict[str, Any],
) -> Iterator[Page]:
    period_types = {str(d["id"]): d.get("period_type") for d in collections["dataSets"]}
    ranges: dict[str, tuple[date, date]] = {}
    for data_set in data_sets:
        period_type = period_types.get(data_set)
        if not period_type:
            raise SourceFormatError(
                f"{client.source}: {client.url('api/dataSets')}",
                f"data set {data_set} is not in the metadata or has no periodType, so its "
                "periods in the window cannot be worked out",
                field="periodType",
            )
        ranges[data_set] = window(str(period_type))
    for data_set in data_sets:
        for org_unit in roots:
            records = fetch_data_values(
                client, settings, data_set, org_unit, since=None, period_range=ranges[data_set]
            )
            if records:
                yield Page("data_values", records, client.url("api/dataValueSets"), cursor)
    for data_set in data_sets:
        for org_unit in roots:
            records = fetch_registrations(client, data_set, org_unit, ranges[data_set])
            if records:
                origin = client.url("api/completeDataSetRegistrations")
                yield Page(REGISTRATIONS.entity, records, origin, cursor)
