"""
### healthpipe: ingest every source, then build the warehouse

The whole pipeline as one DAG, on the same `pipelines` functions the `healthpipe run`
command calls:

1. **list_sources** reads `healthpipe.yml` (`$HEALTHPIPE_CONFIG`; the warehouse may be
   overridden by `$HEALTHPIPE_WAREHOUSE`);
2. **ingest** (one mapped task per source): extract, land into `raw`, validate with Great
   Expectations, quarantine failing rows; the source's cursor advances with each committed page;
3. **source_freshness** runs `dbt source freshness` on the raw tables of the configured
   source types and records each table's status in `audit.validation_results` (a stale
   source warns; the run goes on);
4. **publish_indicators** compiles the indicator YAML files for the dbt models;
5. **transform** runs `dbt build` and updates the `indicator_values` Asset.

Ingest tasks run one at a time because the embedded DuckDB warehouse has a single writer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

INDICATOR_VALUES = Asset("healthpipe://warehouse/marts/indicator_values")


@dag(
    dag_id="healthpipe_slice",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["healthpipe", "ingest", "transform"],
    doc_md=__doc__,
    default_args={
        "owner": "healthpipe",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(hours=2),
    },
)
def healthpipe_slice() -> None:
    @task
    def list_sources() -> list[str]:
        from pipelines.config import load_config

        return [source.name for source in load_config().sources if source.enabled]

    @task(map_index_template="{{ source_label }}", max_active_tis_per_dag=1)
    def ingest(source_name: str) -> dict[str, int]:
        from pipelines.config import load_config
        from pipelines.run import ingest_source, open_warehouse

        context = get_current_context()
        context["source_label"] = source_name  # type: ignore[typeddict-unknown-key]
        config = load_config()
        with open_warehouse(config) as warehouse:
            summary = ingest_source(
                warehouse, config.source(source_name), config, run_id=str(context["run_id"])
            )
        return {entity: counts.received for entity, counts in summary.entities.items()}

    @task
    def publish_indicators() -> int:
        from pipelines.config import load_config
        from pipelines.run import open_warehouse, publish_indicator_definitions

        config = load_config()
        with open_warehouse(config) as warehouse:
            return publish_indicator_definitions(warehouse, config)

    @task
    def source_freshness() -> dict[str, str]:
        from pipelines.config import load_config
        from pipelines.run import check_freshness

        context = get_current_context()
        config = load_config()
        types = sorted({source.type for source in config.sources if source.enabled})
        results = check_freshness(config, run_id=str(context["run_id"]), source_types=types)
        return {result.table: result.status for result in results}

    @task(outlets=[INDICATOR_VALUES])
    def transform() -> dict[str, Any]:
        from pipelines.config import load_config
        from pipelines.run import transform as run_transform

        context = get_current_context()
        outcome = run_transform(load_config(), run_id=str(context["run_id"]))
        return {"nodes_passed": outcome.succeeded, "warnings": len(outcome.warned)}

    ingested = ingest.expand(source_name=list_sources())
    ingested >> source_freshness() >> publish_indicators() >> transform()


healthpipe_slice()
