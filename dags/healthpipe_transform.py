"""
### healthpipe: build the warehouse

Scheduled on the sources' Assets: whenever a source has landed and validated new data
(any `healthpipe://warehouse/raw/<source>`), this DAG

1. **source_freshness** runs `dbt source freshness` on the raw tables (a stale source warns
   and is recorded in `audit.validation_results`; it does not stop the build);
2. **publish_indicators** compiles the indicator YAML files for the dbt models;
3. **dbt_build** runs `dbt build` in-process (dbt's programmatic runner) on the configured
   warehouse, for every model that does not read the alert records (`--exclude
   source:alerting+`: the marts alerting reads, the aggregation, data quality), and updates
   the `healthpipe://warehouse/marts` Asset, which schedules the alerts DAG. The alerts DAG
   builds the rest (the 7-1-7 timeliness, `indicator_values`, the public layer) after the
   alerts, as `healthpipe run` does: each model is built once per chain, and the marts agree
   with the alerts of the same chain.

`dbt build` recomputes every model from what raw holds, so a run for any interval (a
backfill included) leaves the marts as a normal run would. The tasks write the warehouse and
take the `healthpipe_duckdb` pool's one slot when the warehouse is DuckDB.
"""

from __future__ import annotations

from typing import Any

from _wiring import (
    MARTS,
    START,
    build_models,
    config,
    deadline,
    default_args,
    pool,
    run_id,
    source_asset,
)
from airflow.sdk import AssetAny, dag, get_current_context, task

DAG_ID = "healthpipe_transform"
_assets = [source_asset(s.name) for s in config().sources if s.enabled]


@dag(
    dag_id=DAG_ID,
    schedule=AssetAny(*_assets) if _assets else None,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["healthpipe", "transform", "dbt"],
    doc_md=__doc__,
    default_args=default_args(),
    deadline=deadline(DAG_ID),
)
def healthpipe_transform() -> None:
    @task(pool=pool())
    def source_freshness() -> dict[str, int]:
        from pipelines.run import check_freshness

        settings = config()
        results = check_freshness(
            settings,
            run_id=run_id(get_current_context()),
            source_types=sorted({s.type for s in settings.sources if s.enabled}),
        )
        return {"tables": len(results), "stale": sum(r.status != "pass" for r in results)}

    @task(pool=pool())
    def publish_indicators() -> int:
        from pipelines.run import open_warehouse, publish_indicator_definitions

        settings = config()
        with open_warehouse(settings) as warehouse:
            return publish_indicator_definitions(warehouse, settings)

    @task(pool=pool(), outlets=[MARTS])
    def dbt_build() -> dict[str, Any]:
        from pipelines.run import BEFORE_ALERTS

        return build_models(BEFORE_ALERTS)

    source_freshness() >> publish_indicators() >> dbt_build()


healthpipe_transform()
