"""
### secret_probe (tests only)

Resolves the `probe` source's credentials as the ingest DAGs do, then writes them to the
task log on purpose: the test checks that the log shows them masked.
"""

from __future__ import annotations

import logging
import os

from _wiring import START, config, default_args, use_source_credentials
from airflow.sdk import dag, task


@dag(
    dag_id="secret_probe",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["test"],
    doc_md=__doc__,
    default_args=default_args("probe"),
)
def secret_probe() -> None:
    @task
    def leak() -> None:
        source = config().source("probe")
        names = use_source_credentials(source)
        for name in names:
            logging.getLogger("healthpipe.probe").warning("PROBE %s=%s", name, os.environ[name])
            print(f"PROBE-PRINT {name}={os.environ[name]}")

    leak()


secret_probe()
