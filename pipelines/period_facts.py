"""The facts dbt keeps by period year (see macros/period_partitions.sql), and the one step
the pipeline owes them before a build: a table left by an older healthpipe, without the
year column (or, on PostgreSQL, not partitioned), cannot be updated year by year, so it is
dropped and dbt builds it whole again. Nothing is lost: the facts are derived from raw."""

from __future__ import annotations

import logging

from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

PERIOD_FACTS = {("marts", "fct_data_values"): "period_year"}
"""(schema, table) -> the column holding the period's year."""


def drop_outdated_period_facts(warehouse: Warehouse) -> list[str]:
    """Drop the period facts whose layout predates partitioning; returns their names."""
    dropped = []
    for (schema, table), year_column in PERIOD_FACTS.items():
        if not warehouse.table_exists(schema, table) or _up_to_date(
            warehouse, schema, table, year_column
        ):
            continue
        # cascade: views a user made on the old table go with it, as on any dbt rebuild
        warehouse.execute(f"drop table {schema}.{table} cascade")
        log.info("%s.%s predates period partitions: dropped, dbt builds it whole", schema, table)
        dropped.append(f"{schema}.{table}")
    return dropped


def _up_to_date(warehouse: Warehouse, schema: str, table: str, year_column: str) -> bool:
    has_year = warehouse.fetch_scalar(
        "select count(*) from information_schema.columns "
        "where table_schema = $schema and table_name = $table and column_name = $column",
        {"schema": schema, "table": table, "column": year_column},
    )
    if not has_year:
        return False
    return warehouse.kind != "postgres" or warehouse.is_partitioned(schema, table)
