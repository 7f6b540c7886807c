"""HL7 v2 laboratory results (ORU^R01) from a file drop; the MLLP listener
(:mod:`pipelines.mllp_listener`) lands the same records through the same adapter.

Two raw tables:

- ``raw.hl7v2__messages``: one row per message *as received* (key ``delivery_id``: the file
  and the message's place in it, or the MLLP receipt). It holds the header, the message's
  parse problem if it has one, and a keyed digest of its content, so a second delivery of
  the same message is quarantined as ``duplicate`` instead of being stored twice.
- ``raw.hl7v2__results``: one row per OBX (and one per order reported without any, such as a
  rejected specimen), key ``(message_control_id, segment_position)``: MSH-10 and the
  segment's position in the message, since OBX-1 repeats (the NIST sample sends three OBX
  with set id 1). The same message delivered twice lands once; a correction is a new message
  (new MSH-10), so raw keeps the history and staging keeps the latest result per order
  and test.

Privacy: before anything lands, every PID-3 identifier becomes a keyed pseudonym
(``Pseudonymiser.pseudonym("patient", "<assigning authority>|<id>")``; the first is the
``patient_key``), the birth date becomes a birth year and a five-year age band at
collection (no birth year at 90 or older), and only allow-listed columns are kept: names,
addresses, phone numbers, next of kin and free-text comments (NTE) never reach the
warehouse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import pandas as pd

from connectors import hl7v2 as hl7v2_connector
from connectors.base import Cursor, Page, Record
from pipelines.codes import is_loinc
from pipelines.config import HealthpipeConfig, SourceConfig
from pipelines.errors import ConfigError
from pipelines.privacy import Pseudonymiser, age_band, birth_year
from pipelines.tables import RawTable, text_columns
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

MESSAGES = RawTable(
    "hl7v2",
    "messages",
    text_columns(
        "delivery_id",
        "received_order",
        "received_from",
        "received_at",
        "message_index",
        "message_control_id",
        "message_type",
        "hl7_version",
        "processing_id",
        "sending_application",
        "sending_facility",
        "sending_facility_id",
        "receiving_application",
        "receiving_facility",
        "message_sent_at",
        "character_set",
        "segment_count",
        "order_count",
        "observation_count",
        "message_digest",
        "parse_rule",
        "parse_location",
        "parse_problem",
    ),
    key=("delivery_id",),
)
RESULTS = RawTable(
    "hl7v2",
    "results",
    text_columns(
        # ids
        "message_control_id",
        "segment_position",
        "obx_index",
        "obx_set_id",
        # message
        "hl7_version",
        "sending_application",
        "sending_facility",
        "sending_facility_id",
        "message_sent_at",
        # patient (pseudonymised)
        "patient_key",
        "patient_identifiers",
        "patient_birth_year",
        "patient_age_band",
        "patient_sex",
        # order
        "placer_order_number",
        "placer_order_namespace",
        "filler_order_number",
        "filler_order_namespace",
        "order_test_code",
        "order_test_name",
        "order_test_system",
        "collected_at",
        "results_reported_at",
        "order_status",
        "ordering_facility_code",
        "ordering_facility_name",
        # specimen
        "specimen_type_code",
        "specimen_type_name",
        "specimen_type_system",
        "specimen_collected_at",
        "specimen_received_at",
        "specimen_reject_reason_code",
        "specimen_reject_reason",
        # observation
        "value_type",
        "test_code",
        "test_name",
        "test_system",
        "value",
        "units",
        "reference_range",
        "abnormal_flags",
        "result_status",
        "observed_at",
        "analysed_at",
        "performing_lab_code",
    ),
    key=("message_control_id", "segment_position"),
)
TABLES: tuple[RawTable, ...] = (MESSAGES, RESULTS)

OLDEST_EXACT_AGE = 89
"""Birth years of people older than this are not kept: the year alone would say they are
90 or more, an age HIPAA Safe Harbor does not show (the age band says 85+)."""


def prepare_messages(records: Sequence[Record], pseudonymiser: Pseudonymiser) -> list[Record]:
    """Message rows: the table's columns only, and the content digest keyed, so that it
    cannot be matched against messages guessed by someone without the key."""
    prepared = []
    for record in records:
        row = {column: record.get(column) for column in MESSAGES.entity_columns}
        row["message_digest"] = pseudonymiser.pseudonym(
            "hl7v2_message", record.get("content_sha256")
        )
        prepared.append(row)
    return prepared


def prepare_results(records: Sequence[Record], pseudonymiser: Pseudonymiser) -> list[Record]:
    """Result rows with pseudonymised patients; every column not in the table is dropped."""
    prepared = []
    for record in records:
        row = {column: record.get(column) for column in RESULTS.entity_columns}
        row.update(_patient(record, pseudonymiser))
        prepared.append(row)
    return prepared


def _patient(record: Record, pseudonymiser: Pseudonymiser) -> Record:
    identifiers = []
    for identifier in record.get("pid3_identifiers") or []:
        authority = identifier.get("authority") or ""
        value = f"{authority}|{identifier['id']}"
        identifiers.append(
            {
                "pseudonym": pseudonymiser.pseudonym("patient", value),
                "type": identifier.get("type"),
                "authority": identifier.get("authority"),
            }
        )
    born = birth_year(record.get("pid7_birth_date"))
    on = _collection_date(record)
    band = age_band(born, on) if on is not None else None
    if born is not None and on is not None and on.year - born > OLDEST_EXACT_AGE:
        born = None
    return {
        "patient_key": identifiers[0]["pseudonym"] if identifiers else None,
        "patient_identifiers": json.dumps(identifiers, sort_keys=True) if identifiers else None,
        "patient_birth_year": str(born) if born is not None else None,
        "patient_age_band": band,
    }


def _collection_date(record: Record) -> date | None:
    """The day the specimen was taken (OBR-7, else SPM-17, else the message time)."""
    for column in ("collected_at", "specimen_collected_at", "message_sent_at"):
        text = record.get(column) or ""
        if len(text) >= 8 and text[:8].isdigit():
            try:
                return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
            except ValueError:
                continue
    return None


class Hl7v2Adapter:
    source_type = "hl7v2"
    cursor_entity = "files"
    tables = TABLES
    patient_level = True
    helper_columns: tuple[str, ...] = ("first_delivery",)

    def pages(
        self, source: SourceConfig, cursor: Cursor | None, config: HealthpipeConfig
    ) -> Iterator[Page]:
        if source.path is None:
            # An MLLP source lands messages as they arrive (healthpipe listen), not in a run.
            log.info(
                "source %s receives HL7 over MLLP (%s): nothing to read", source.name, source.listen
            )
            return iter(())
        return hl7v2_connector.read_hl7_folder(
            source.path,
            cursor,
            source_name=source.name,
            page_size=source.page_size,
            max_file_bytes=source.max_file_bytes,
        )

    def prepare(
        self, entity: str, records: Sequence[Record], pseudonymiser: Pseudonymiser | None
    ) -> list[Record]:
        if pseudonymiser is None:
            raise ConfigError("hl7v2 records identify patients: a pseudonymiser is required")
        if entity == MESSAGES.entity:
            return prepare_messages(records, pseudonymiser)
        return prepare_results(records, pseudonymiser)

    def references(self, warehouse: Warehouse, source_name: str, entity: str) -> Mapping[str, Any]:
        if entity == MESSAGES.entity:
            duplicates = duplicate_deliveries(warehouse, source_name)
            return {"duplicate_deliveries": sorted(duplicates), "duplicate_of": duplicates}
        return {
            "loinc_codes": pending_loinc_codes(warehouse, source_name),
            "org_unit_codes": known_org_unit_codes(warehouse),
        }

    def enrich(
        self, entity: str, frame: pd.DataFrame, references: Mapping[str, Any]
    ) -> pd.DataFrame:
        """Messages get ``first_delivery`` (the copy a duplicate repeats), for its reason."""
        if entity != MESSAGES.entity:
            return frame
        enriched = frame.copy()
        first = references.get("duplicate_of", {})
        enriched["first_delivery"] = enriched["delivery_id"].astype(object).map(first)
        return enriched


def duplicate_deliveries(warehouse: Warehouse, source_name: str) -> dict[str, str]:
    """Pending deliveries that repeat a message already received (same MSH-10, same content),
    each with the delivery it repeats. The first copy is the one already validated, or among
    pending ones the one received first. A copy that was held back (as a duplicate, or
    because the message is malformed) never counts as an original: re-reading a file cannot
    turn an original into a duplicate, and every copy of a malformed message is held back
    for what is wrong with it, not as a duplicate."""
    rows = warehouse.fetchall(
        "select p.delivery_id, e.delivery_id, e.received_order "
        f"from {MESSAGES.qualified_name} p join {MESSAGES.qualified_name} e "
        "on e.source_name = p.source_name and e.message_control_id = p.message_control_id "
        "and e.message_digest = p.message_digest and e.delivery_id <> p.delivery_id "
        "where p.source_name = $source and p.validation_status = 'pending' "
        "and (e.validation_status = 'valid' or (e.validation_status = 'pending' "
        "and e.parse_rule is null and e.received_order < p.received_order))",
        {"source": source_name},
    )
    first: dict[str, tuple[str, str]] = {}
    for delivery, original, order in rows:
        if delivery not in first or order < first[delivery][1]:
            first[delivery] = (original, order)
    return {delivery: original for delivery, (original, _) in first.items()}


def pending_loinc_codes(warehouse: Warehouse, source_name: str) -> list[str]:
    """The test codes of the pending results that are well-formed LOINC codes."""
    rows = warehouse.fetchall(
        f"select distinct test_code from {RESULTS.qualified_name} "
        "where source_name = $source and validation_status = 'pending' and test_code is not null",
        {"source": source_name},
    )
    return sorted(code for (code,) in rows if is_loinc(code))


def known_org_unit_codes(warehouse: Warehouse) -> list[str]:
    """Org-unit codes of every DHIS2 source's validated hierarchy: HL7 messages name the
    ordering facility by its code (ORC-21 XON-10), not by its DHIS2 UID."""
    rows = warehouse.fetchall(
        "select distinct code from raw.dhis2__organisation_units "
        "where validation_status = 'valid' and not is_deleted and code is not null"
    )
    return sorted(code for (code,) in rows)
