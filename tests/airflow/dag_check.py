"""Runs in a fresh process with its own AIRFLOW_HOME (Airflow reads its config at import):
loads the DAG folder into a DagBag and, with --run, executes the slice DAG with dag.test().
Writes what it found as JSON to the path given as the first argument."""

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
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    report: dict[str, Any] = {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "parse_seconds": {str(s.file): seconds(s.duration) for s in bag.dagbag_stats},
        "dags": {
            dag_id: {
                "tags": sorted(dag.tags),
                "owner": dag.owner,
                "retries": (dag.default_args or {}).get("retries"),
                "has_doc_md": bool(dag.doc_md),
                "tasks": sorted(dag.task_ids),
            }
            for dag_id, dag in bag.dags.items()
        },
    }
    if "--run" in sys.argv:
        dag = bag.get_dag("healthpipe_slice")
        run = dag.test()
        report["state"] = str(run.state)
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main()
