"""DHIS2 sources: metadata and data values, validated against the source's own metadata."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pandas as pd

from connectors import dhis2 as dhis2_connector
from connectors.base import Cursor, Page, Record
from connectors.dhis2_api import DEFAULT_START, Dhis2ApiSettings, PeriodRangeOf, read_api
from connectors.http import Credentials, HttpClient
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError
from pipelines.periods import PeriodError, covering_range, parse_period, period_type_of
from pipelines.privacy import Pseudonymiser
from pipelines.tables import RawTable, text_columns
from pipelines.warehouse import Warehouse
from pipelines.window import Window

NUMERIC_VALUE_TYPES = (
    "NUMBER",
    "INTEGER",
    "INTEGER_POSITIVE",
    "INTEGER_NEGATIVE",
    "INTEGER_ZERO_OR_POSITIVE",
    "PERCENTAGE",
    "UNIT_INTERVAL",
)


_TABLES: tuple[RawTable, ...] = (
    RawTable(
        "dhis2",
        "organisation_units",
        text_columns(
            "id",
            "code",
            "name",
            "short_name",
            "level",
            "path",
            "parent_id",
            "opening_date",
            "closed_date",
            "geometry",
            "group_ids",
            "last_updated",
        ),
        key=("id",),
    ),
    RawTable(
        "dhis2",
        "organisation_unit_groups",
        text_columns(
            "id", "code", "name", "short_name", "group_set_ids", "org_unit_ids", "last_updated"
        ),
        key=("id",),
    ),
    RawTable(
        "dhis2",
        "organisation_unit_group_sets",
        text_columns("id", "code", "name", "group_ids", "last_updated"),
        key=("id",),
    ),
    RawTable(
        "dhis2",
        "data_sets",
        text_columns(
            "id",
            "code",
            "name",
            "short_name",
            "period_type",
            "timely_days",
            "expiry_days",
            "data_element_ids",
            "org_unit_ids",
            "last_updated",
        ),
        key=("id",),
    ),
    RawTable(
        "dhis2",
        "complete_registrations",
        text_columns(
            "data_set",
            "period",
            "org_unit",
            "attribute_option_combo",
            "date",
            "stored_by",
            "completed",
        ),
        key=("data_set", "period", "org_unit", "attribute_option_combo"),
    ),
    RawTable(
        "dhis2",
        "data_elements",
        text_columns(
            "id",
            "code",
            "name",
            "short_name",
            "value_type",
            "aggregation_type",
            "domain_type",
            "category_combo_id",
            "last_updated",
        ),
        key=("id",),
    ),
    RawTable(
        "dhis2",
        "category_option_combos",
        text_columns("id", "code", "name", "category_combo_id", "last_updated"),
        key=("id",),
    ),
    RawTable(
        "dhis2",
        "data_values",
        (
            *text_columns(
                "data_element",
                "period",
                "org_unit",
                "category_option_combo",
                "attribute_option_combo",
                "value",
                "stored_by",
                "created",
                "last_updated",
                "comment",
            ),
            ("followup", "boolean"),
            ("data_set", "text"),
        ),
        key=(
            "data_element",
            "period",
            "org_unit",
            "category_option_combo",
            "attribute_option_combo",
        ),
        period_column="period",
    ),
)
# DHIS2 exports carry many documented fields healthpipe does not map: kept, not reported.
TABLES: tuple[RawTable, ...] = tuple(
    replace(table, documented_extras=dhis2_connector.DOCUMENTED_UNMAPPED_FIELDS)
    for table in _TABLES
)


class Dhis2Adapter:
    source_type = "dhis2"
    cursor_entity = "files"
    tables = TABLES
    patient_level = False
    helper_columns: tuple[str, ...] = ("period_type", "value_type", "period_in_future")

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        if source.base_url is None:
            assert source.path is not None  # the config requires one of the two
            return dhis2_connector.read_payload_folder(
                source.path,
                cursor,
                source_name=source.name,
                page_size=source.page_size,
                max_file_bytes=source.max_file_bytes,
            )
        return self._read_api(source, cursor)

    def window_pages(
        self, source: SourceConfig, window: Window, config: HealthpipeConfig
    ) -> Iterator[Page]:
        """The data values and registrations of every period overlapping ``window`` (and
        the metadata, whole, to validate them against); the cursor is neither read nor moved.

        Only the Web API can be asked for periods; a file drop holds what was dropped."""
        if source.base_url is None:
            raise ConfigError(
                f"source {source.name}: a window pull ({window}) needs a DHIS2 Web API source "
                "(base_url); a folder of payloads cannot be asked for periods: drop the "
                "periods' files again instead"
            )

        def period_range(period_type: str) -> tuple[date, date]:
            try:
                return covering_range(period_type, window.first, window.last)
            except PeriodError as exc:
                raise ConfigError(f"source {source.name}: window {window}: {exc}") from None

        return self._read_api(source, None, window=period_range)

    def _read_api(
        self,
        source: SourceConfig,
        cursor: Cursor | None,
        *,
        window: PeriodRangeOf | None = None,
    ) -> Iterator[Page]:
        credentials = Credentials.from_env(
            os.environ,
            username_env=source.username_env,
            password_env=source.password_env,
            token_env=source.token_env,
            token_scheme="apitoken",
            source=source.name,
        )
        settings = Dhis2ApiSettings(
            source_name=source.name,
            data_sets=source.data_sets,
            org_units=source.org_units,
            start_date=source.start_date or DEFAULT_START,
            value_format=source.format,
            page_size=min(source.page_size, 1000),
            overlap=timedelta(seconds=source.overlap_seconds),
            registration_sweep=timedelta(hours=source.registration_sweep_hours),
        )
        base_url = f"{source.base_url}".rstrip("/") + "/"
        with HttpClient(
            base_url,
            source=source.name,
            credentials=credentials,
            timeout=(10.0, source.timeout_seconds),
        ) as client:
            yield from read_api(client, settings, cursor, window=window)

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        return list(records)  # aggregate data: nothing identifies a person

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        if entity not in ("data_values", "complete_registrations"):
            return {}

        def ids(table: str) -> list[str]:
            rows = warehouse.fetchall(
                f"select id from raw.dhis2__{table} where source_name = $source "
                "and validation_status = 'valid' and not is_deleted",
                {"source": source_name},
            )
            return sorted(row[0] for row in rows)

        combos = set(ids("category_option_combos"))
        combos.add(dhis2_connector.DEFAULT_CATEGORY_OPTION_COMBO)
        if entity == "complete_registrations":
            return {
                "org_units": ids("organisation_units"),
                "data_sets": ids("data_sets"),
                "category_option_combos": sorted(combos),
            }
        return {
            "org_units": ids("organisation_units"),
            "data_elements": ids("data_elements"),
            "category_option_combos": sorted(combos),
            "numeric_value_types": list(NUMERIC_VALUE_TYPES),
            "value_type_of": dict(
                warehouse.fetchall(
                    "select id, value_type from raw.dhis2__data_elements "
                    "where source_name = $source and validation_status = 'valid'",
                    {"source": source_name},
                )
            ),
        }

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        """Data values and registrations get their period's type (None when the period does
        not parse); data values also their data element's value type."""
        if entity not in ("data_values", "complete_registrations"):
            return frame
        enriched = frame.copy()
        periods = enriched["period"].astype(object)
        types = {p: period_type_of(p) for p in periods.dropna().unique()}
        enriched["period_type"] = periods.map(types).astype(object)
        starts = {p: parse_period(p).start_date for p, kind in types.items() if kind}
        extracted = pd.to_datetime(enriched["extracted_at"]).dt.date
        enriched["period_in_future"] = [
            None if starts.get(period) is None else starts[period] > day
            for period, day in zip(periods, extracted, strict=True)
        ]
        if entity == "complete_registrations":
            return enriched
        value_types = references.get("value_type_of", {})
        enriched["value_type"] = enriched["data_element"].astype(object).map(value_types)
        return enriched
