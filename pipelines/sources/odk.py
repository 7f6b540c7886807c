"""ODK Central sources: form submissions, scrubbed by their form spec, then validated.

Submissions identify households and people, so an ODK source is patient-level: it needs the
pseudonymisation key, and each form needs a spec in ``community_forms/`` (fields that
identify someone are pseudonymised, personal ones dropped, undeclared ones dropped). A form
without a spec stops the source before anything is read.

``raw.odk__submissions`` holds one row per form and submission ``__id`` (an edit replaces
the row; a deletion turns it into a tombstone). The suite ``expectations/odk__submissions.yml``
checks the helper columns :func:`community_forms.helper_columns` adds: the facility code
against the DHIS2 org units landed, required fields, value ranges and schema drift.
Submissions repeated within a pull (same ``__id``) collapse at landing and are counted.
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
from connectors.odk import OdkSettings, list_forms, open_session, read_submissions
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser
from pipelines.sources import community_forms as forms
from pipelines.tables import RawTable, text_columns
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

ENTITY = "submissions"
TABLE = RawTable(
    "odk",
    ENTITY,
    text_columns(
        "form_id",
        "submission_id",
        "instance_id",
        "form_version",
        "submission_date",
        "updated_at",
        "deleted_at",
        "submitter_id",
        "review_state",
        "edits",
        "payload",
        "field_paths",
    ),
    key=("form_id", "submission_id"),
)
TABLES: tuple[RawTable, ...] = (TABLE,)


def _spec_of(form: str) -> forms.FormSpec | None:
    return forms.load_specs().get(("odk", form))


DRIFT = forms.DriftQuery(TABLE.qualified_name, "form_id", "submission_date", _spec_of)


def prepare_submission(
    record: Record, pseudonymiser: Pseudonymiser, undeclared: dict[str, set[str]]
) -> Record:
    """The landed form of one submission: the spec applied to its answers."""
    form = str(record.get("form_id"))
    spec = forms.require_spec("odk", form, where="ODK submissions")
    scrubbed = forms.scrub(spec, record.get("answers") or {}, pseudonymiser)
    if scrubbed.undeclared:
        undeclared.setdefault(spec.label, set()).update(scrubbed.undeclared)
    return {
        "form_id": form,
        "submission_id": record.get("submission_id"),
        "instance_id": forms.text(record.get("instance_id")),
        "form_version": forms.text(record.get("form_version")),
        "submission_date": forms.text(record.get("submission_date")),
        "updated_at": forms.text(record.get("updated_at")),
        "deleted_at": forms.text(record.get("deleted_at")),
        "submitter_id": forms.text(record.get("submitter_id")),
        "review_state": forms.text(record.get("review_state")),
        "edits": forms.text(record.get("edits")),
        "payload": forms.payload_json(scrubbed.payload),
        "field_paths": ",".join(scrubbed.paths),
        "deleted": bool(record.get("deleted")),
    }


class OdkAdapter:
    source_type = "odk"
    cursor_entity = "forms"
    tables = TABLES
    patient_level = True
    helper_columns: tuple[str, ...] = forms.HELPER_COLUMNS

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        if source.project_id is None:
            raise ConfigError(
                f"source {source.name}: an odk source needs project_id (the number of the "
                "ODK Central project, as in /v1/projects/<id>)"
            )
        base_url = f"{source.base_url}".rstrip("/") + "/"
        where = f"source {source.name}: {base_url}"
        for form in source.forms:  # refuse before the first request when forms are listed
            forms.require_spec("odk", form, where=where)
        credentials = Credentials.from_env(
            os.environ,
            username_env=source.username_env,
            password_env=source.password_env,
            token_env=source.token_env,
            token_scheme="bearer",
            source=source.name,
        )
        with HttpClient(
            base_url,
            source=source.name,
            credentials=credentials,
            timeout=(10.0, source.timeout_seconds),
        ) as client:
            open_session(client)
            form_ids = list(source.forms) or list_forms(client, source.project_id)
            if not source.forms:
                where += " (every form of the project is read unless forms: lists some)"
            for form in form_ids:
                forms.require_spec("odk", form, where=where)
            settings = OdkSettings(
                source_name=source.name,
                project_id=source.project_id,
                forms=form_ids,
                page_size=source.page_size,
                overlap=timedelta(seconds=source.overlap_seconds),
            )
            yield from read_submissions(client, settings, cursor)

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        if pseudonymiser is None:
            raise ConfigError("ODK submissions are patient-level: they need a pseudonymiser")
        undeclared: dict[str, set[str]] = {}
        prepared = [prepare_submission(r, pseudonymiser, undeclared) for r in records]
        forms.warn_undeclared(log, undeclared)
        return prepared

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        """``$org_unit_codes`` for the suite; ``drift`` for the helper columns."""
        return {
            "org_unit_codes": forms.org_unit_codes(warehouse),
            "drift": forms.find_drift(warehouse, DRIFT, source_name),
        }

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        specs = [
            forms.require_spec("odk", str(form), where="raw.odk__submissions")
            for form in frame["form_id"].tolist()
        ]
        return forms.helper_columns(frame, specs, references.get("drift", {}), "form_id")
