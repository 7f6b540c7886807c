"""
### healthpipe: the weekly epidemiological bulletin

Every Monday at 06:00 UTC, the bulletin (HTML) for the ISO week that just ended: the run's
data interval is that week, so a backfilled run writes the bulletin of its own week. The file
goes to `<state_dir>/bulletins/bulletin-<week>.html`.

The bulletin itself is `pipelines.report.write_bulletin`; in a version of healthpipe without
it, the task fails at once (no retries) saying so.
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
        from airflow.sdk.exceptions import AirflowFailException

        try:
            from pipelines.report import write_bulletin as write  # type: ignore[import-not-found]
        except ImportError as exc:
            raise AirflowFailException(
                "the weekly bulletin needs pipelines.report.write_bulletin, which this version "
                f"of healthpipe does not have yet ({exc})"
            ) from exc
        start = get_current_context()["data_interval_start"]
        assert start is not None  # a scheduled timetable always gives an interval
        year, week, _ = start.isocalendar()
        period = f"{year}W{week}"
        settings = config()
        out = settings.state_dir / "bulletins" / f"bulletin-{period}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        write(settings, period=period, out=out)
        return str(out)

    write_bulletin()


healthpipe_bulletin()
