"""The tables healthpipe's Python side owns: ``raw.*`` landing tables and ``audit.*``.

dbt owns ``staging``, ``intermediate`` and ``marts``; the tables here exist before dbt runs
(created by :meth:`pipelines.warehouse.Warehouse.ensure_schemas`) so staging models can
always select from them, even for a source type a deployment does not use. Each source type
declares its raw tables in its adapter module (``pipelines/sources/<type>.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMAS = ("raw", "audit", "staging", "intermediate", "marts")

# Columns every raw table carries after its entity's own columns.
RAW_META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("source_name", "text not null"),
    ("extras", "text"),
    ("is_deleted", "boolean not null"),
    ("record_hash", "text not null"),
    ("batch_id", "text not null"),
    ("extracted_at", "timestamp not null"),
    ("landed_at", "timestamp not null"),
    ("validation_status", "text not null"),
    ("validated_at", "timestamp"),
)


@dataclass(frozen=True)
class RawTable:
    """A landing table for one entity of one source type, e.g. ``raw.dhis2__data_values``."""

    source_type: str
    entity: str
    columns: tuple[tuple[str, str], ...]
    """The entity's own columns (name, SQL type), as the connector names them."""
    key: tuple[str, ...]
    """The natural key within a source; ``source_name`` is prepended to it."""
    documented_extras: frozenset[str] = frozenset()
    """Fields of the source's documented schema that healthpipe deliberately does not map:
    kept in ``extras`` like any other, but not reported as schema drift."""
    period_column: str | None = None
    """The column holding a DHIS2 period id, for the large tables kept by period year: on
    PostgreSQL such a table is partitioned by range of that column, one partition per year
    (DHIS2 period ids start with their year: ``2025W5``, ``202503``, ``2025April``) and a
    default one for ids that do not."""

    @property
    def name(self) -> str:
        return f"{self.source_type}__{self.entity}"

    @property
    def qualified_name(self) -> str:
        return f"raw.{self.name}"

    @property
    def entity_columns(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def full_key(self) -> tuple[str, ...]:
        return ("source_name", *self.key)

    def ddl(self, kind: str = "duckdb") -> str:
        """The table's ``create table``; partitioned by period year on PostgreSQL (the
        primary key holds the period column, as PostgreSQL requires of a partition key)."""
        columns = [*self.columns, *RAW_META_COLUMNS]
        lines = [f"    {name} {sql_type}" for name, sql_type in columns]
        lines.append(f"    primary key ({', '.join(self.full_key)})")
        body = f"create table if not exists {self.qualified_name} (\n" + ",\n".join(lines) + "\n)"
        if self.partitioned_on(kind):
            body += f" partition by range ({self.period_column})"
        return body

    def partitioned_on(self, kind: str) -> bool:
        return kind == "postgres" and self.period_column is not None

    def default_partition_ddl(self) -> str:
        return (
            f"create table if not exists raw.{self.name}_default "
            f"partition of {self.qualified_name} default"
        )

    def year_partition_ddl(self, year: int) -> str:
        # every id of a year sorts from the bare year ('2025') to before the next ('2026')
        return (
            f"create table if not exists raw.{self.name}_y{year} partition of "
            f"{self.qualified_name} for values from ('{year}') to ('{year + 1}')"
        )


def text_columns(*names: str) -> tuple[tuple[str, str], ...]:
    """Raw tables keep source values as text: typing them is staging's job, after validation."""
    return tuple((name, "text") for name in names)


AUDIT_DDL: tuple[str, ...] = (
    """create table if not exists audit.pipeline_runs (
    step_id text primary key,
    run_id text not null,
    step text not null,
    source text,
    entity text,
    batch_id text,
    started_at timestamp not null,
    finished_at timestamp,
    status text not null,
    rows_in bigint,
    rows_out bigint,
    rows_quarantined bigint,
    rows_duplicate bigint,
    message text
)""",
    # one row per dbt node of a transform step (pipeline_runs.step_id): where its time went
    """create table if not exists audit.dbt_node_runs (
    step_id text not null,
    run_id text not null,
    unique_id text not null,
    status text not null,
    seconds double precision not null,
    message text
)""",
    """create table if not exists audit.source_state (
    source_name text not null,
    entity text not null,
    cursor text not null,
    run_id text not null,
    updated_at timestamp not null,
    primary key (source_name, entity)
)""",
    """create table if not exists audit.validation_results (
    run_id text not null,
    batch_id text not null,
    source_name text not null,
    raw_table text not null,
    suite text not null,
    expectation text not null,
    rule text not null,
    column_name text,
    severity text not null,
    success boolean not null,
    element_count bigint,
    unexpected_count bigint,
    unexpected_percent double precision,
    validated_at timestamp not null
)""",
    """create table if not exists audit.quarantine (
    source_name text not null,
    raw_table text not null,
    record_key text not null,
    record_hash text not null,
    rule text not null,
    field text,
    severity text not null,
    reason text not null,
    record_json text not null,
    run_id text not null,
    batch_id text not null,
    quarantined_at timestamp not null,
    released_at timestamp,
    primary key (source_name, raw_table, record_key, record_hash, rule)
)""",
    # Schema drift: a field a source sends that its raw table has no column for, recorded the
    # first time it lands (the values themselves stay in the raw row's `extras`).
    """create table if not exists audit.schema_changes (
    source_name text not null,
    raw_table text not null,
    field text not null,
    change text not null,
    first_seen_run_id text not null,
    first_seen_batch_id text not null,
    records bigint not null,
    first_seen_at timestamp not null,
    primary key (source_name, raw_table, field, change)
)""",
)

# Indicator definitions, compiled from the YAML files by pipelines.indicators and read by
# dbt (source `healthpipe`). They live in raw because dbt does not produce them.
DEFINITION_DDL: tuple[str, ...] = (
    """create table if not exists raw.healthpipe__indicators (
    indicator_id text primary key,
    name text not null,
    domain text not null,
    description text,
    numerator text not null,
    denominator text not null,
    numerator_sql text not null,
    denominator_sql text not null,
    factor double precision not null,
    unit text,
    target double precision,
    direction text,
    source_file text not null,
    is_computable boolean not null,
    problem text
)""",
    """create table if not exists raw.healthpipe__indicator_operands (
    indicator_id text not null,
    operand_alias text not null,
    data_element_id text not null,
    category_option_combo_id text,
    attribute_option_combo_id text,
    primary key (indicator_id, operand_alias)
)""",
    """create table if not exists raw.healthpipe__derived_data_elements (
    data_element_id text primary key,
    name text not null,
    domain text not null,
    description text,
    source_model text not null,
    filter_sql text not null,
    value_sql text not null,
    period_type text not null,
    date_column text,
    period_column text,
    org_unit_column text not null,
    disaggregate_by text,
    aggregation_type text not null,
    source_file text not null
)""",
)

# Alerts: written by pipelines.alerts (not by dbt, which never touches tables it does not own).
ALERT_DDL: tuple[str, ...] = (
    """create table if not exists marts.alerts (
    alert_id text primary key,
    disease text not null,
    org_unit_id text not null,
    org_unit_level integer,
    period_id text not null,
    last_period_id text not null,
    method text not null,
    rule text not null,
    severity text not null,
    observed double precision,
    expected double precision,
    threshold double precision,
    total_cases double precision,
    peak_cases double precision,
    weeks integer not null,
    status text not null,
    emerged_on date not null,
    detected_at timestamp not null,
    notified_at timestamp,
    responded_at timestamp,
    closed_at timestamp,
    days_to_detect integer,
    days_to_notify integer,
    days_to_respond integer,
    created_at timestamp not null,
    updated_at timestamp not null,
    run_id text not null
)""",
    """create table if not exists audit.alert_transitions (
    alert_id text not null,
    from_status text,
    to_status text not null,
    changed_at timestamp not null,
    actor text not null,
    note text
)""",
    """create table if not exists audit.notifications (
    alert_id text not null,
    channel text not null,
    status text not null,
    attempts integer not null,
    last_error text,
    first_attempt_at timestamp not null,
    sent_at timestamp,
    primary key (alert_id, channel)
)""",
)
