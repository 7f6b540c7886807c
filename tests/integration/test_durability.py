"""Landing survives re-runs and a killed process: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from pipelines.run import ingest_source, open_warehouse
from pipelines.simulate import simulate
from pipelines.simulate.country import build_country
from pipelines.simulate.dhis2_payloads import iter_data_values
from tests.conftest import make_config

RAW_SNAPSHOT = (
    "select data_element, period, org_unit, category_option_combo, attribute_option_combo, "
    "record_hash, batch_id, validation_status from raw.dhis2__data_values order by 1, 2, 3, 4, 5"
)


def test_the_same_batch_three_times_gives_identical_raw_tables(
    warehouse_url: str, demo_country: Path, tmp_path: Path
) -> None:
    config = make_config(warehouse_url, demo_country, tmp_path)
    snapshots = []
    with open_warehouse(config) as warehouse:
        for run in range(3):
            summary = ingest_source(
                warehouse, config.source("hmis"), config, run_id=f"run{run}", full_refresh=True
            )
            assert all(c.reconciles for c in summary.entities.values())
            snapshots.append(warehouse.fetchall(RAW_SNAPSHOT))
            reconciled = warehouse.fetchall(
                "select count(*) filter (where status = 'success'), count(*) "
                "from audit.pipeline_runs where step = 'reconcile' and run_id = $run",
                {"run": f"run{run}"},
            )
            assert reconciled[0][0] == reconciled[0][1] > 0
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert len(snapshots[0]) > 1000


def expected_keys(folder: Path) -> set[tuple[str, ...]]:
    keys = set()
    for v in iter_data_values(folder.parent):
        if v.get("orgUnit"):
            keys.add(
                (
                    v["dataElement"],
                    v["period"],
                    v["orgUnit"],
                    v["categoryOptionCombo"],
                    v["attributeOptionCombo"],
                )
            )
    return keys


def test_a_run_killed_while_landing_is_completed_by_the_next_one(tmp_path: Path) -> None:
    """SIGKILL the pipeline after its first pages of data values have landed; the next run
    lands the rest, and every value is in raw exactly once."""
    root = tmp_path / "country"
    simulate(root, country=build_country(7, districts=8), weeks=80, sources=["dhis2"])
    config_file = tmp_path / "healthpipe.yml"
    warehouse = tmp_path / "warehouse.duckdb"
    config_file.write_text(
        f"warehouse: duckdb:///{warehouse}\nstate_dir: {tmp_path / 'state'}\n"
        f"sources:\n  - name: hmis\n    type: dhis2\n    path: {root / 'dhis2'}\n    page_size: 5000\n"
        # several landing batches, so that the kill falls between two of them
        "    landing_batch: 20000\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "HEALTHPIPE_WAREHOUSE"}
    process = subprocess.Popen(
        [sys.executable, "-m", "healthpipe", "run", "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    pages = 0
    deadline = time.monotonic() + 300
    for line in process.stdout:
        if "data_values:" in line:
            pages += 1
            if pages == 3:
                process.send_signal(signal.SIGKILL)
                break
        assert time.monotonic() < deadline, "the run never reached its data values"
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    with duckdb.connect(str(warehouse)) as connection:
        partial = connection.execute("select count(*) from raw.dhis2__data_values").fetchone()
    assert partial is not None and partial[0] > 0

    finished = subprocess.run(
        [sys.executable, "-m", "healthpipe", "run", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        landed = connection.execute(
            "select data_element, period, org_unit, category_option_combo, attribute_option_combo "
            "from raw.dhis2__data_values"
        ).fetchall()
        stuck = connection.execute(
            "select count(*) from raw.dhis2__data_values where validation_status = 'pending'"
        ).fetchone()
    assert len(landed) == len(set(landed))
    assert set(landed) == expected_keys(root / "dhis2") | set()
    assert partial[0] < len(landed)
    assert stuck == (0,)
    assert json.loads((root / "truth.json").read_text())["defects"]
