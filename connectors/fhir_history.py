"""Deletions a FHIR search cannot show, from the type-level history interaction.

A search never lists a deleted resource, so an incremental search pull alone would keep
publishing it. Servers that offer ``history-type`` (their CapabilityStatement says so per
resource type; HAPI does, OpenMRS's FHIR2 module does not) answer
``GET [base]/<Type>/_history?_since=<instant>`` with a ``history`` Bundle whose deletion
entries have ``request.method`` ``DELETE``, ``request.url`` ``<Type>/<id>`` (possibly with
``/_history/<version>``), no resource, and ``response.lastModified`` the moment of deletion.
Those entries become tombstones (``deleted: true``); the other entries are versions the
search already brought and are skipped. Without ``history-type`` deletions stay unseen
(a full refresh, or Bulk Data, is then the only way to learn them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from connectors.base import Record
from connectors.errors import SourceFormatError
from connectors.http import HttpClient, redact_url

FHIR_JSON = "application/fhir+json"
_DELETED_URL = re.compile(
    r"^(?:.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[^/?]+))?(?:\?.*)?$"
)


def history_types(capability: Any) -> set[str]:
    """The resource types whose ``history-type`` interaction a CapabilityStatement lists."""
    found: set[str] = set()
    if not isinstance(capability, dict):
        return found
    for rest in capability.get("rest") or []:
        for resource in (rest or {}).get("resource") or []:
            if not isinstance(resource, dict) or not isinstance(resource.get("type"), str):
                continue
            codes = {
                i.get("code") for i in resource.get("interaction") or [] if isinstance(i, dict)
            }
            if "history-type" in codes:
                found.add(resource["type"])
    return found


def parse_history_deletions(document: Any, resource_type: str, origin: str) -> list[Record]:
    """Tombstones for the ``DELETE`` entries of one ``history`` Bundle page."""
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        raise SourceFormatError(origin, "expected a Bundle of type history")
    if document.get("type") != "history":
        raise SourceFormatError(
            origin, f"expected a history Bundle, got {document.get('type')!r}", field="type"
        )
    tombstones: list[Record] = []
    for index, entry in enumerate(document.get("entry") or []):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or str(request.get("method")).upper() != "DELETE":
            continue
        where = f"entry[{index}].request.url"
        found = _DELETED_URL.match(str(request.get("url") or ""))
        if found is None or found["type"] != resource_type:
            raise SourceFormatError(origin, f"expected {resource_type}/<id>", field=where)
        response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
        stamp = response.get("lastModified")
        if not isinstance(stamp, str) or not stamp:
            # Without it the tombstone could not be ordered after the versions it ends.
            raise SourceFormatError(
                origin, "a deletion needs response.lastModified", field=f"entry[{index}].response"
            )
        tombstones.append(
            {
                "resourceType": resource_type,
                "id": found["id"],
                "meta": {"versionId": found["version"], "lastUpdated": stamp},
                "deleted": True,
            }
        )
    return tombstones


def deletions_since(
    client: HttpClient, resource_type: str, since: str, page_size: int
) -> Iterator[tuple[str, list[Record]]]:
    """``(origin, tombstones)`` for each page of ``<Type>/_history?_since=<since>``; next
    links are followed as given."""
    url: str | None = f"{resource_type}/_history"
    params: dict[str, Any] | None = {"_since": since, "_count": page_size}
    seen: set[str] = set()
    while url is not None:
        document = client.get_json(url, params=params, headers={"Accept": FHIR_JSON})
        origin = redact_url(client.url(url))
        if params:
            origin += f"?_since={since}"
        yield origin, parse_history_deletions(document, resource_type, f"{client.source}: {origin}")
        url, params = None, None
        for link in document.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next":
                url = str(link.get("url") or "") or None
        if url is not None and url in seen:
            raise SourceFormatError(f"{client.source}: {origin}", "the next link repeats a page")
        if url is not None:
            seen.add(url)
