"""
### healthpipe: ingest one source

One DAG per enabled source in `healthpipe.yml` (`$HEALTHPIPE_CONFIG`), named
`healthpipe_ingest_<source>`:

1. **plan** splits the pull: the whole source, or chunks of a DHIS2 source's org-unit list
   (one mapped task each, labelled by the chunk, with its own cursor);
2. **extract_land_validate** (mapped) reads the source page by page, lands each page into
   `raw` with its cursor in the same transaction, and validates it with Great Expectations;
   failing rows go to `audit.quarantine`;
3. **data_docs** renders the validation results and updates the source's Asset
   (`healthpipe://warehouse/raw/<source>`), which schedules the transform DAG.

A scheduled run pulls what changed since the source's cursor. A **backfill** run
(`airflow backfill create`) pulls its data interval instead: the DHIS2 periods overlapping
it, landed with the usual upsert, validated and reconciled, and the cursor is not moved. A
manual run does the same with the param `window`: `FIRST/LAST` dates (`2025-03-01/2025-03-31`)
or `interval` (the run's data interval). Window pulls are built for DHIS2 Web API sources;
for any other source such a run fails at once saying so.

Credentials come from the environment variables the config names or, when unset, from the
Airflow connection `healthpipe_<source>` (login, password); they are masked in task logs.
Tasks writing a DuckDB warehouse share the one-slot pool `healthpipe_duckdb`.
"""

from __future__ import annotations

from typing import Any

from _wiring import (
    START,
    config,
    deadline,
    default_args,
    ingest_timetable,
    pool,
    run_id,
    source_asset,
    use_source_credentials,
)
from airflow.sdk import Param, dag, get_current_context, task

from pipelines.config import SourceConfig
from pipelines.orchestration import WINDOW_PARAM, run_window


def ingest_dag(source: SourceConfig) -> None:
    dag_id = f"healthpipe_ingest_{source.name}"

    @dag(
        dag_id=dag_id,
        schedule=ingest_timetable(source.schedule),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["healthpipe", "ingest", source.type],
        doc_md=__doc__,
        default_args=default_args(source.name),
        deadline=deadline(dag_id, source.name),
        params={
            WINDOW_PARAM: Param(
                None,
                type=["null", "string"],
                description="Pull only these days' periods, cursor untouched: FIRST/LAST "
                "ISO dates, or 'interval' for the run's data interval. Empty: what changed "
                "since the cursor (backfill runs always pull their data interval).",
            )
        },
    )
    def ingest() -> None:
        @task
        def plan() -> list[dict[str, Any]]:
            from pipelines.orchestration import plan_pulls

            return [dict(pull) for pull in plan_pulls(config().source(source.name))]

        @task(map_index_template="{{ pull_label }}", pool=pool())
        def extract_land_validate(pull: dict[str, Any]) -> dict[str, int]:
            from pipelines.orchestration import Pull, ingest_pull

            context = get_current_context()
            context["pull_label"] = pull["label"]  # type: ignore[typeddict-unknown-key]
            window = run_window(
                str(context["dag_run"].run_type),
                context["params"].get(WINDOW_PARAM),
                context.get("data_interval_start"),
                context.get("data_interval_end"),
            )
            settings = config()
            use_source_credentials(settings.source(source.name))
            return ingest_pull(
                settings,
                source.name,
                Pull(label=pull["label"], org_units=pull["org_units"]),
                run_id=run_id(context),
                window=window,
            )

        @task(outlets=[source_asset(source.name)])
        def data_docs() -> None:
            from pipelines.run import data_docs as docs_location
            from pipelines.validate import build_data_docs

            build_data_docs(docs_location(config()))

        extract_land_validate.expand(pull=plan()) >> data_docs()

    ingest()


for _source in config().sources:
    if _source.enabled:
        ingest_dag(_source)
