"""
### healthpipe: the weekly epidemiological bulletin

Every Monday at 06:00 UTC, the bulletin (HTML) for the ISO week that just ended: the run's
data interval is that week, so a backfilled run writes the bulletin of its own week (when the
warehouse holds no data for the week yet, the latest complete week). The file goes to
`<state_dir>/bulletins/bulletin-<week>.html` (`pipelines.report.write_weekly_bulletin`).
"""

from __future__ import annotations

from _wiring import START, config, default_args, pool
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

DAG_ID = "healthpipe_bulletin"


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("0 6 * * 1", "UTC"),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["healthpipe", "bulletin", "report"],
    doc_md=__doc__,
    default_args=default_args(),
)
def healthpipe_bulletin() -> None:
    # DuckDB refuses even a reader while another process writes: the bulletin queues too.
    @task(pool=pool())
    def write_bulletin() -> str:
        from pipelines.report import write_weekly_bulletin

        start = get_current_context()["data_interval_start"]
        assert start is not None  # a scheduled timetable always gives an interval
        return str(write_weekly_bulletin(config(), start.date()))

    write_bulletin()


healthpipe_bulletin()
