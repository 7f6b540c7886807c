"""Runs in a fresh process with its own AIRFLOW_HOME (Airflow reads its config at import):
loads the DAG folder into a DagBag and, with ``--run DAG_ID[,DAG_ID...]``, executes those DAGs
one after the other with dag.test() (Asset schedules do not fire under dag.test, so the test
names the chain); ``--conf DAG_ID=JSON`` passes that DAG's run a conf. Writes what it found
as JSON to the path given as the first argument."""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from typing import Any


def seconds(duration: Any) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


def main() -> None:
    from airflow.dag_processing.dagbag import DagBag

    out_path = sys.argv[1]
    folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    # The DAG processor and task runner put the DAG bundle's folder on sys.path (the DAG
    # files import their shared _wiring module from it); a bare DagBag does not.
    sys.path.append(folder)
    bag = DagBag(dag_folder=folder)
    report: dict[str, Any] = {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "parse_seconds": {str(s.file): seconds(s.duration) for s in bag.dagbag_stats},
        # what parsing pulled in: the DAG files must leave the heavy libraries to the tasks
        "heavy_modules_loaded": sorted(
            name for name in ("great_expectations", "dbt", "pandas") if name in sys.modules
        ),
        "dags": {
            dag_id: {
                "tags": sorted(dag.tags),
                "owner": dag.owner,
                "retries": (dag.default_args or {}).get("retries"),
                "has_doc_md": bool(dag.doc_md),
                "has_failure_callback": bool((dag.default_args or {}).get("on_failure_callback")),
                "tasks": sorted(dag.task_ids),
                "pools": {t.task_id: t.pool for t in dag.tasks},
                "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
                "mapped": sorted(t.task_id for t in dag.tasks if t.is_mapped),
                "timetable": type(dag.timetable).__name__,
                "catchup": dag.catchup,
            }
            for dag_id, dag in bag.dags.items()
        },
        "states": {},
    }
    if "--mask-logs" in sys.argv:
        # dag.test() runs tasks in this process with the scheduler's console logging; a
        # deployed task logs through the task SDK's structlog chain, which redacts every
        # value registered with mask_secret. Use that chain so the test sees what a task
        # log shows.
        from airflow.sdk.log import configure_logging

        configure_logging()
    confs: dict[str, Any] = {}
    for index, arg in enumerate(sys.argv):
        if arg == "--conf":
            dag_id, _, conf = sys.argv[index + 1].partition("=")
            confs[dag_id] = json.loads(conf)
    if "--run" in sys.argv:
        for dag_id in sys.argv[sys.argv.index("--run") + 1].split(","):
            dag = bag.get_dag(dag_id)
            # Airflow 3.3.2's dag.test() looks a successful run's deadline alerts up by id
            # in the metadata DB, but an unserialised DAG holds the alert objects, not ids
            # ('dict' object has no attribute 'hex'). The scheduler path (make airflow-check)
            # runs them for real; here they are left out.
            dag.deadline = None
            run = dag.test(run_conf=confs.get(dag_id))
            report["states"][dag_id] = str(run.state)
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main()
