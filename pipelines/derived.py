"""Derived data elements: counts and sums over record-level facts, defined in YAML.

Like DHIS2 program indicators, a derived data element turns records (lab results, stock
reports, household visits ...) into aggregate values per org unit and period, which land in
``marts.fct_data_values`` beside the DHIS2 values, so indicators use them as ``#{id}``.

An entry of a top-level ``derived_data_elements:`` list names the record source (one of
:data:`RECORD_SOURCES`, never arbitrary SQL), a filter in a small grammar (conditions joined
by AND: ``column = value``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in (v1, v2)``,
``not in (...)``, ``is null``, ``is not null``; values are 'quoted text', numbers, true or
false), the period (``period_type`` with a ``date_column`` or a ``period_column`` already
holding DHIS2 period ids), the org-unit column, optionally a ``disaggregate_by`` column whose
values become category option combos (``#{id.value}``), the aggregation (``count``,
``count_distinct``, ``sum``, ``min``, ``max``) and the ``aggregation_type`` used when rolling
up (SUM, AVERAGE, LAST ...). Columns are checked against the source's known columns, so the
SQL compiled here only ever holds validated names and quoted literals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.errors import IndicatorDefinitionError
from pipelines.warehouse import Warehouse


def columns(names: str) -> frozenset[str]:
    return frozenset(names.split())


# The facts a derived data element may read (dbt models in marts) and their columns. The dbt
# macro hp_derived_data_values_sql holds the same list of models (a test keeps them equal).
RECORD_SOURCES: dict[str, frozenset[str]] = {
    "fct_lab_results": columns(
        "lab_result_key source_name order_key test_code test_name patient_key org_unit_id "
        "specimen_type_code collected_at received_at resulted_at collected_date resulted_date "
        "result_status value_code value_numeric value_comparator units interpretation "
        "is_positive is_suppressed is_specimen_rejected is_corrected turnaround_hours"
    ),
    "fct_stock": columns(
        "org_unit_id period_id item_code item_name unit opening_balance quantity_received "
        "quantity_consumed losses adjustments stock_on_hand stockout_days has_stockout"
    ),
    "fct_workforce": columns(
        "org_unit_id period_id cadre is_core_cadre approved_posts filled_posts vacant_posts "
        "staff_joined staff_left trained_in_quarter supervision_visits"
    ),
    "fct_facility_assessments": columns(
        "org_unit_id period_id assessment_date facility_type inpatient_beds "
        "basic_amenities_score basic_equipment_score standard_precautions_score "
        "diagnostic_capacity_score essential_medicines_score readiness_index"
    ),
    "fct_governance": columns(
        "org_unit_id period_id currency hmc_meetings_planned hmc_meetings_held "
        "budget_allocated budget_spent is_service_charter_displayed"
    ),
    "fct_cross_sectoral": columns(
        "org_unit_id period_id households households_safe_water households_improved_sanitation "
        "school_health_sessions_planned school_health_sessions_held "
        "children_6_59m_screened_muac sam_referred mam_referred"
    ),
    "fct_community_reports": columns(
        "community_report_key report_type org_unit_id chw_id report_date household_key "
        "referral_key is_referred is_completed has_safe_water has_improved_latrine "
        "children_eligible_for_muac children_screened_muac muac_class has_danger_signs "
        "is_verified hours_to_verification"
    ),
    "fct_nutrition_screenings": columns(
        "submission_key org_unit_id screening_date child_sex child_age_months muac_mm "
        "muac_status is_referred has_oedema has_improved_water_source "
        "has_improved_sanitation"
    ),
    "fct_encounters": columns("encounter_key org_unit_id patient_key start_date started_at"),
    "fct_alert_timeliness": columns(
        "alert_id disease rule org_unit_id emerged_on detected_date status days_to_detect "
        "days_to_notify days_to_respond is_detected_within_7_days is_notified_within_1_day "
        "is_responded_within_7_days meets_7_1_7"
    ),
}

PERIOD_TYPES = ("Daily", "Weekly", "Monthly", "Quarterly", "Yearly")
AGGREGATION_TYPES = (
    "SUM",
    "AVERAGE",
    "AVERAGE_SUM_ORG_UNIT",
    "LAST",
    "LAST_AVERAGE_ORG_UNIT",
    "MIN",
    "MAX",
    "COUNT",
)


class DerivedDataElementDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # DHIS2 UIDs (11 characters) or snake ids; never a reporting pseudo element (R:...).
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=80)
    name: str = Field(min_length=1)
    domain: str = Field(min_length=1)
    description: str | None = None
    source: str
    filter: list[str] = Field(default_factory=list)
    period_type: Literal["Daily", "Weekly", "Monthly", "Quarterly", "Yearly"]
    date_column: str | None = None
    period_column: str | None = None
    org_unit_column: str = "org_unit_id"
    # A column whose values become the category option combo (e.g. item_code), so an
    # indicator reads one of them as #{id.AL6X4} and the total as #{id}.
    disaggregate_by: str | None = None
    aggregation: Literal["count", "count_distinct", "sum", "min", "max"]
    column: str | None = None
    aggregation_type: Literal[
        "SUM", "AVERAGE", "AVERAGE_SUM_ORG_UNIT", "LAST", "LAST_AVERAGE_ORG_UNIT", "MIN", "MAX",
        "COUNT",
    ] = "SUM"  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _one_filter_as_list(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("filter"), str):
            return {**data, "filter": [data["filter"]]}
        return data


# --- the filter grammar ------------------------------------------------------------------

_COLUMN = r"(?P<column>[a-z_][a-z0-9_]*)"
_LITERAL = r"'(?:[^']|'')*'|[-+]?\d+(?:\.\d+)?|true|false"
_CONDITION = re.compile(
    rf"""^\s*{_COLUMN}\s*(?:
        (?P<cmp>=|!=|<>|<=|>=|<|>)\s*(?P<value>{_LITERAL})
      | (?P<neg>not\s+)?in\s*\((?P<values>\s*(?:{_LITERAL})\s*(?:,\s*(?:{_LITERAL})\s*)*)\)
      | is\s+(?P<notnull>not\s+)?null
    )\s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_LITERALS = re.compile(_LITERAL, re.IGNORECASE)


def _literal_sql(text: str) -> str:
    if text.startswith("'"):
        # Re-quote from the unescaped text, so nothing but a plain SQL string comes out.
        inner = text[1:-1].replace("''", "'")
        return "'" + inner.replace("'", "''") + "'"
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered
    return text


def compile_condition(condition: str, columns: frozenset[str]) -> str:
    """One filter condition as SQL over the record alias ``r``; ValueError says what is wrong."""
    match = _CONDITION.match(condition)
    if not match:
        raise ValueError(
            f"filter {condition!r} is not `column op value` (ops: = != < <= > >= in, not in, "
            "is null, is not null; values: 'text', numbers, true, false)"
        )
    column = match.group("column").lower()
    if column not in columns:
        raise ValueError(
            f"filter {condition!r}: unknown column {column} (known: {', '.join(sorted(columns))})"
        )
    if match.group("cmp"):
        op = "!=" if match.group("cmp") == "<>" else match.group("cmp")
        return f"r.{column} {op} {_literal_sql(match.group('value'))}"
    if match.group("values") is not None:
        values = ", ".join(_literal_sql(v) for v in _LITERALS.findall(match.group("values")))
        return f"r.{column} {'not in' if match.group('neg') else 'in'} ({values})"
    return f"r.{column} is {'not null' if match.group('notnull') else 'null'}"


@dataclass(frozen=True)
class CompiledDerivedDataElement:
    definition: DerivedDataElementDefinition
    source_file: Path
    filter_sql: str
    value_sql: str


def compile_derived(
    definition: DerivedDataElementDefinition, source_file: Path, index: int
) -> CompiledDerivedDataElement:
    label = f"{source_file}: derived_data_elements[{index}] ({definition.id})"
    columns = RECORD_SOURCES.get(definition.source)
    if columns is None:
        raise IndicatorDefinitionError(
            f"{label}: source {definition.source!r} is not a record source "
            f"(known: {', '.join(sorted(RECORD_SOURCES))})"
        )
    if (definition.date_column is None) == (definition.period_column is None):
        raise IndicatorDefinitionError(
            f"{label}: give exactly one of date_column and period_column"
        )
    named = {
        "date_column": definition.date_column,
        "period_column": definition.period_column,
        "org_unit_column": definition.org_unit_column,
        "column": definition.column,
        "disaggregate_by": definition.disaggregate_by,
    }
    for key, column in named.items():
        if column is not None and column not in columns:
            raise IndicatorDefinitionError(
                f"{label}: {key} {column!r} is not a column of {definition.source} "
                f"(known: {', '.join(sorted(columns))})"
            )
    if definition.aggregation == "count":
        value_sql = "count(*)"
    elif definition.column is None:
        raise IndicatorDefinitionError(
            f"{label}: aggregation {definition.aggregation} needs a `column`"
        )
    elif definition.aggregation == "count_distinct":
        value_sql = f"count(distinct r.{definition.column})"
    else:
        value_sql = f"{definition.aggregation}(cast(r.{definition.column} as double precision))"
    try:
        conditions = [compile_condition(c, columns) for c in definition.filter]
    except ValueError as exc:
        raise IndicatorDefinitionError(f"{label}: {exc}") from None
    filter_sql = " and ".join(conditions) if conditions else "true"
    return CompiledDerivedDataElement(definition, source_file, filter_sql, value_sql)


def publish_derived(warehouse: Warehouse, derived: Sequence[CompiledDerivedDataElement]) -> None:
    """Replace the definitions the dbt model int_derived_data_values reads (inside the
    caller's transaction, which replaces the indicators with them)."""
    table = pa.table(
        {
            "data_element_id": [d.definition.id for d in derived],
            "name": [d.definition.name for d in derived],
            "domain": [d.definition.domain for d in derived],
            "description": pa.array([d.definition.description for d in derived], pa.string()),
            "source_model": [d.definition.source for d in derived],
            "filter_sql": [d.filter_sql for d in derived],
            "value_sql": [d.value_sql for d in derived],
            "period_type": [d.definition.period_type for d in derived],
            "date_column": pa.array([d.definition.date_column for d in derived], pa.string()),
            "period_column": pa.array([d.definition.period_column for d in derived], pa.string()),
            "org_unit_column": [d.definition.org_unit_column for d in derived],
            "disaggregate_by": pa.array(
                [d.definition.disaggregate_by for d in derived], pa.string()
            ),
            "aggregation_type": [d.definition.aggregation_type for d in derived],
            "source_file": [str(d.source_file) for d in derived],
        }
    )
    warehouse.execute("delete from raw.healthpipe__derived_data_elements")
    warehouse.load_arrow("raw.healthpipe__derived_data_elements", table)
