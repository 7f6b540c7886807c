"""KoboToolbox sources: survey results, scrubbed by their form spec, then validated.

Like ODK sources, Kobo sources are patient-level: they need the pseudonymisation key and a
spec per asset in ``community_forms/`` (matched on the asset's name, which the connector
reads from the asset before any result). An asset without a spec stops the source before
any result is read.

``raw.kobo__submissions`` holds one row per asset and ``_id``. The suite
``expectations/kobo__submissions.yml`` checks the helper columns of
:func:`community_forms.helper_columns` plus ``duplicate_of``: Kobo stores a result the
device sent twice under a new ``_id`` (same ``meta/instanceID``), so the later copy is held
back as a duplicate of the first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pandas as pd

from connectors.base import Cursor, Page, Record
from connectors.http import Credentials, HttpClient
from connectors.kobo import KoboSettings, fetch_asset, list_assets, read_submissions
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser
from pipelines.sources import community_forms as forms
from pipelines.tables import RawTable, text_columns
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

ENTITY = "submissions"
TABLE = RawTable(
    "kobo",
    ENTITY,
    text_columns(
        "asset_uid",
        "submission_id",
        "asset_name",
        "instance_id",
        "uuid",
        "form_version",
        "submission_time",
        "review_state",
        "payload",
        "field_paths",
    ),
    key=("asset_uid", "submission_id"),
)
TABLES: tuple[RawTable, ...] = (TABLE,)
HELPER_COLUMNS = (*forms.HELPER_COLUMNS, "duplicate_of")


def prepare_result(
    record: Record, pseudonymiser: Pseudonymiser, undeclared: dict[str, set[str]]
) -> Record:
    """The landed form of one result: the spec applied to its answers."""
    name = str(record.get("asset_name"))
    spec = forms.require_spec("kobo", name, where=f"Kobo asset {record.get('asset_uid')}")
    scrubbed = forms.scrub(spec, record.get("answers") or {}, pseudonymiser)
    if scrubbed.undeclared:
        undeclared.setdefault(spec.label, set()).update(scrubbed.undeclared)
    return {
        "asset_uid": forms.text(record.get("asset_uid")),
        "submission_id": forms.text(record.get("submission_id")),
        "asset_name": name,
        "instance_id": forms.text(record.get("instance_id")),
        "uuid": forms.text(record.get("uuid")),
        "form_version": forms.text(record.get("form_version")),
        "submission_time": forms.text(record.get("submission_time")),
        "review_state": forms.text(record.get("validation_status")),
        "payload": forms.payload_json(scrubbed.payload),
        "field_paths": ",".join(scrubbed.paths),
        "deleted": bool(record.get("deleted")),
    }


def find_duplicates(warehouse: Warehouse, source_name: str) -> dict[forms.SourceKey, str]:
    """(asset uid, _id) of every later copy of a result, with the ``_id`` of the first copy
    (the earliest submitted; ties by ``_id``). Copies share ``meta/instanceID``."""
    rows = warehouse.fetchall(
        "select asset_uid, submission_id, instance_key, submission_time from ("
        "select asset_uid, submission_id, submission_time, "
        "coalesce(instance_id, 'uuid:' || uuid) as instance_key, "
        "count(*) over (partition by asset_uid, coalesce(instance_id, 'uuid:' || uuid)) "
        "as copies from raw.kobo__submissions where source_name = $source and not is_deleted"
        ") counted where copies > 1 and instance_key is not null",
        {"source": source_name},
    )
    copies: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
    for asset, submission, instance, submitted in rows:
        copies.setdefault((asset, instance), []).append(
            (str(submitted or ""), len(submission), submission)
        )
    duplicates: dict[forms.SourceKey, str] = {}
    for (asset, _), group in copies.items():
        first, *later = sorted(group)
        for _, _, submission in later:
            duplicates[(asset, submission)] = first[2]
    return duplicates


class KoboAdapter:
    source_type = "kobo"
    cursor_entity = "assets"
    tables = TABLES
    patient_level = True
    helper_columns: tuple[str, ...] = HELPER_COLUMNS

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        base_url = f"{source.base_url}".rstrip("/") + "/"
        where = f"source {source.name}: {base_url}"
        credentials = Credentials.from_env(
            os.environ,
            username_env=source.username_env,
            password_env=source.password_env,
            token_env=source.token_env,
            token_scheme="token",
            source=source.name,
        )
        with HttpClient(
            base_url,
            source=source.name,
            credentials=credentials,
            timeout=(10.0, source.timeout_seconds),
        ) as client:
            assets = [fetch_asset(client, uid) for uid in source.assets] or list_assets(client)
            if not source.assets:
                where += " (every survey the token sees is read unless assets: lists some)"
            for asset in assets:  # every spec is checked before the first result is read
                forms.require_spec("kobo", asset.name, where=f"{where}: asset {asset.uid}")
            settings = KoboSettings(
                source_name=source.name,
                page_size=source.page_size,
                overlap=timedelta(seconds=source.overlap_seconds),
            )
            yield from read_submissions(client, settings, assets, cursor)

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        if pseudonymiser is None:
            raise ConfigError("Kobo results are patient-level: they need a pseudonymiser")
        undeclared: dict[str, set[str]] = {}
        prepared = [prepare_result(r, pseudonymiser, undeclared) for r in records]
        forms.warn_undeclared(log, undeclared)
        return prepared

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        """``$org_unit_codes`` for the suite; ``drift`` and ``duplicates`` for the helper
        columns."""
        # Raw rows group by asset uid; specs are found by the asset's name.
        names = dict(
            warehouse.fetchall(
                "select distinct asset_uid, asset_name from raw.kobo__submissions "
                "where source_name = $source",
                {"source": source_name},
            )
        )
        drift = forms.DriftQuery(
            TABLE.qualified_name,
            "asset_uid",
            "submission_time",
            lambda uid: forms.load_specs().get(("kobo", str(names.get(uid)))),
        )
        return {
            "org_unit_codes": forms.org_unit_codes(warehouse),
            "drift": forms.find_drift(warehouse, drift, source_name),
            "duplicates": find_duplicates(warehouse, source_name),
        }

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        specs = [
            forms.require_spec("kobo", str(name), where="raw.kobo__submissions")
            for name in frame["asset_name"].tolist()
        ]
        enriched = forms.helper_columns(frame, specs, references.get("drift", {}), "asset_uid")
        duplicates: Mapping[forms.SourceKey, str] = references.get("duplicates", {})
        keys = zip(frame["asset_uid"].tolist(), frame["submission_id"].tolist(), strict=True)
        enriched["duplicate_of"] = pd.Series(
            [duplicates.get((str(a), str(s))) for a, s in keys], index=frame.index, dtype=object
        )
        return enriched
