"""KoboToolbox over its v2 API: the results (submissions) of survey assets, incremental.

``GET /api/v2/assets/{uid}/data/?format=json&limit=<n>&start=<offset>&sort={"_id": 1}``:

- ``limit`` is at most 1,000 (Kobo cuts larger values to 1,000 without saying so, so asking
  for more would only look like a short page); ``next`` is followed exactly as given, and
  the results received are reconciled with ``count`` (of the last page): a shortfall fails
  the pull. A ``next`` link to another server is refused: it would receive the token.
- Sorted by ``_id`` so offset paging is stable while new results arrive (they get larger
  ids and join the end).
- Incremental pulls add ``query={"_submission_time": {"$gte": <cursor minus overlap>}}``;
  Kobo stores ``_submission_time`` as UTC text (``2026-01-31T08:00:00``), compared as text.
- The cursor, per asset, is the largest ``_submission_time`` received, moved only on the
  asset's last page.
- Incremental pulls see new submissions only. An edit keeps the result's ``_id`` and
  ``_submission_time`` and the data API exposes no last-modified field to query, and a
  deleted result is simply gone (no tombstone): edits and deletions reach the warehouse
  only through a full refresh.

Auth: ``Authorization: Token <token>`` (or HTTP Basic).

Records: ``submission_id`` (``_id``, the server's key), ``uuid``, ``instance_id``
(``meta/instanceID``), ``form_version`` (``__version__``), ``submission_time``, the
validation status, and ``answers``: the form's answers (every key that is not Kobo's own
``_...``, ``formhub/...`` or ``meta/...`` bookkeeping), with group paths such as
``child/muac_mm`` nested as objects (``{"child": {"muac_mm": "125"}}``) as ODK does, values
as sent (Kobo sends strings and leaves unanswered questions out). ``_submitted_by`` and
``_geolocation`` are not passed on: they name people and places.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from connectors.base import Cursor, Page, Record
from connectors.errors import SourceError, SourceFormatError
from connectors.http import HttpClient, TruncatedResponse

log = logging.getLogger(__name__)

ENTITY = "submissions"
MAX_PAGE_SIZE = 1000
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"
BOOKKEEPING_PREFIXES = ("_", "formhub/", "meta/")


@dataclass(frozen=True)
class KoboAsset:
    uid: str
    name: str
    version_id: str | None = None
    deployed_version_id: str | None = None


@dataclass(frozen=True)
class KoboSettings:
    source_name: str
    page_size: int = MAX_PAGE_SIZE
    overlap: timedelta = field(default_factory=lambda: timedelta(minutes=5))


# --- assets --------------------------------------------------------------------------------


def asset_path(uid: str) -> str:
    return f"api/v2/assets/{quote(uid, safe='')}/"


def parse_asset(document: Any, origin: str) -> KoboAsset:
    if not isinstance(document, dict):
        raise SourceFormatError(origin, "expected an asset (a JSON object)")
    uid, name = document.get("uid"), document.get("name")
    if not isinstance(uid, str) or not uid:
        raise SourceFormatError(origin, "expected the asset's uid", field="uid")
    if not isinstance(name, str) or not name:
        raise SourceFormatError(origin, "expected the asset's name", field="name")
    return KoboAsset(
        uid=uid,
        name=name,
        version_id=document.get("version_id"),
        deployed_version_id=document.get("deployed_version_id"),
    )


def fetch_asset(client: HttpClient, uid: str) -> KoboAsset:
    path = asset_path(uid)
    document = client.get_json(path, params={"format": "json"})
    return parse_asset(document, f"{client.source}: Kobo asset {uid}: {client.url(path)}")


def list_assets(client: HttpClient) -> list[KoboAsset]:
    """Every deployed survey the token can see (``GET /api/v2/assets/``, paged)."""
    assets: list[KoboAsset] = []
    url: str | None = "api/v2/assets/"
    params: dict[str, Any] | None = {"format": "json", "limit": 100}
    while url is not None:
        origin = f"{client.source}: {client.url(url)}"
        document = client.get_json(url, params=params)
        if not isinstance(document, dict) or not isinstance(document.get("results"), list):
            raise SourceFormatError(origin, "expected a JSON object with a results list")
        for item in document["results"]:
            if isinstance(item, dict) and item.get("asset_type", "survey") == "survey":
                assets.append(parse_asset(item, origin))
        url, params = _next_link(client, document, origin), None
    if not assets:
        raise SourceError(f"{client.source}: {client.url('api/v2/assets/')}: no survey assets")
    return sorted(assets, key=lambda a: a.uid)


# --- results -------------------------------------------------------------------------------


def data_path(uid: str) -> str:
    return f"{asset_path(uid)}data/"


def nest_answers(flat: Mapping[str, Any], origin: str, prefix: str = "") -> dict[str, Any]:
    """``{"child/muac_mm": "125"}`` as ``{"child": {"muac_mm": "125"}}``. Repeat groups (lists
    of objects whose keys carry the full path) are nested the same way, item by item."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        path = key.removeprefix(prefix) if prefix and key.startswith(prefix) else key
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [nest_answers(item, origin, prefix=f"{key}/") for item in value]
        node = nested
        parts = path.split("/")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SourceFormatError(origin, "a group and a question share a name", field=key)
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise SourceFormatError(origin, "a group and a question share a name", field=key)
        node[parts[-1]] = value
    return nested


def parse_result(row: Any, *, asset: KoboAsset, origin: str, index: int) -> Record:
    if not isinstance(row, dict):
        raise SourceFormatError(origin, "expected a result (a JSON object)", record=index)
    status = row.get("_validation_status")
    status = {} if status is None else status
    if not isinstance(status, dict):
        raise SourceFormatError(
            origin, f"result {index}: expected an object", field="_validation_status", record=index
        )
    answers = {k: v for k, v in row.items() if not k.startswith(BOOKKEEPING_PREFIXES)}
    return {
        "asset_uid": asset.uid,
        "asset_name": asset.name,
        "submission_id": row.get("_id"),
        "uuid": row.get("_uuid"),
        "instance_id": row.get("meta/instanceID"),
        "root_uuid": row.get("meta/rootUuid"),
        "form_version": row.get("__version__"),
        "submission_time": row.get("_submission_time"),
        "validation_status": status.get("uid"),
        "answers": nest_answers(answers, f"{origin} result {index}"),
        "deleted": False,  # Kobo deletes results outright: there are no tombstones to read
    }


def _next_link(client: HttpClient, document: Mapping[str, Any], origin: str) -> str | None:
    link = document.get("next")
    if link is None:
        return None
    if not isinstance(link, str):
        raise SourceFormatError(origin, "expected a URL or null", field="next")
    base, target = urlsplit(client.base_url), urlsplit(client.url(link))
    if (base.scheme, base.netloc) != (target.scheme, target.netloc):
        raise SourceFormatError(
            origin, "the next link points to another server; refusing to send the token"
        )
    return link


def parse_stamp(stamp: str) -> datetime | None:
    """Kobo's ``_submission_time`` (UTC, no zone; sometimes with fractions or a Z)."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "")[:19])
    except ValueError:
        return None


def _latest(current: str | None, records: Sequence[Record]) -> str | None:
    best, best_moment = current, parse_stamp(current) if current else None
    for record in records:
        stamp = record.get("submission_time")
        moment = parse_stamp(stamp) if isinstance(stamp, str) else None
        if moment is not None and (best_moment is None or moment > best_moment):
            best, best_moment = stamp, moment
    return best


def data_params(asset_cursor: Mapping[str, Any], settings: KoboSettings) -> dict[str, Any]:
    params: dict[str, Any] = {
        "format": "json",
        "limit": min(settings.page_size, MAX_PAGE_SIZE),
        "start": 0,
        "sort": json.dumps({"_id": 1}),
    }
    stamp = asset_cursor.get("submissionTime")
    moment = parse_stamp(stamp) if isinstance(stamp, str) else None
    if moment is not None:
        since = (moment - settings.overlap).strftime(STAMP_FORMAT)
        params["query"] = json.dumps({"_submission_time": {"$gte": since}})
    return params


def read_asset(
    client: HttpClient, settings: KoboSettings, asset: KoboAsset, asset_cursor: Mapping[str, Any]
) -> Iterator[tuple[list[Record], dict[str, Any] | None]]:
    """An asset's pages; the last one comes with the asset's new cursor, the others None."""
    path = data_path(asset.uid)
    url: str | None = path
    params: dict[str, Any] | None = data_params(asset_cursor, settings)
    received, count, number = 0, None, 0
    latest = asset_cursor.get("submissionTime")
    while url is not None:
        number += 1
        origin = f"{client.source}: Kobo asset {asset.name} ({asset.uid}): {client.url(url)}"
        document = client.get_json(url, params=params)
        if not isinstance(document, dict) or not isinstance(document.get("results"), list):
            raise SourceFormatError(origin, "expected a JSON object with a results list")
        total = document.get("count")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise SourceFormatError(origin, "expected a whole number", field="count")
        records = [
            parse_result(row, asset=asset, origin=origin, index=index)
            for index, row in enumerate(document["results"])
        ]
        received += len(records)
        count = total if total is not None else count
        url, params = _next_link(client, document, origin), None
        if url is not None and not records:
            raise SourceFormatError(origin, "an empty page with a next link (it would loop)")
        if url is None:
            _reconcile(client, asset, path, received, count)
        latest = _latest(latest, records)
        if url is not None:
            yield records, None
        else:
            yield records, {"submissionTime": latest} if latest else {}


def _reconcile(
    client: HttpClient, asset: KoboAsset, path: str, received: int, count: int | None
) -> None:
    if count is None:
        log.warning("%s: Kobo asset %s: the server sent no count", client.source, asset.uid)
    elif received < count:
        raise TruncatedResponse(
            f"{client.source}: Kobo asset {asset.name} ({asset.uid}): {client.url(path)}: the "
            f"server reported {count} results but sent {received}; the cursor was not moved, "
            "so the next run reads them again"
        )


def read_submissions(
    client: HttpClient, settings: KoboSettings, assets: Sequence[KoboAsset], cursor: Cursor | None
) -> Iterator[Page]:
    """Every asset's results, asset after asset; the source's cursor maps each asset uid to
    its own cursor."""
    saved: dict[str, Any] = {k: dict(v) for k, v in (cursor or {}).items() if isinstance(v, dict)}
    for asset in assets:
        origin = client.url(data_path(asset.uid))
        before = saved.get(asset.uid, {})
        for records, asset_cursor in read_asset(client, settings, asset, before):
            moved = asset_cursor is not None and asset_cursor != before
            if asset_cursor is not None:
                saved[asset.uid] = asset_cursor
            # An empty last page is still sent when it moves the cursor.
            if records or moved:
                yield Page(ENTITY, records, origin, {k: dict(v) for k, v in saved.items()})
