"""One benchmark stage per process: ``python -m benchmarks.stages NAME ARGS_JSON``.

Each stage runs in a fresh interpreter so that its peak memory (``VmHWM``, the process's
own accounting) is its own and not the high-water mark of an earlier stage. It prints one
JSON object: ``seconds`` (wall time of the measured work, imports excluded), ``rows``,
``peak_rss_mib`` and stage-specific figures.

Stages:
  extract          the DHIS2 connector pulls every data value from the sandbox (JSON or CSV)
                   and parses it into records, landing nothing
  extract_source   the same for another source type (FHIR, ODK, HL7 drop)
  pipeline         ``run_pipeline`` (full refresh or incremental) into a DuckDB warehouse;
                   per-step times come from ``audit.pipeline_runs``
  limit_aggregate  the aggregation dbt does (sum per data element x org unit x week, rolled
                   up every org-unit level) as one hand-written DuckDB query
  limit_validate   the data-value suite's checks as one hand-written DuckDB query
  limit_read_csv   DuckDB's read_csv on the DHIS2 CSV export files
  peer_pandas      requests + json + pandas, loaded into DuckDB with an upsert
  peer_dlt         dlt loading the same data values into DuckDB (merge on the natural key)
  transform        ``dbt build`` alone on an already-landed warehouse (DuckDB or PostgreSQL)
  transform_spark  the same dbt project on Spark local mode (``pipelines.spark``): a run's
                   landed tables exported and loaded, then ``dbt build`` timed
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Stage = Callable[[dict[str, Any]], dict[str, Any]]
STAGES: dict[str, Stage] = {}
SANDBOX_USER = "admin"
SANDBOX_PASSWORD = "district"  # the sandbox's documented demo login (pipelines/sandbox/auth.py)


def stage(function: Stage) -> Stage:
    STAGES[function.__name__] = function
    return function


def peak_rss_mib() -> float:
    """This process's peak resident set. Linux keeps ``ru_maxrss`` across exec, so a stage
    started by a harness that had just simulated a 3 GiB country reported 3 GiB for every
    stage; the memory map's own high-water mark (VmHWM) starts afresh with the program."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dhis2_source(args: dict[str, Any], value_format: str = "json") -> dict[str, Any]:
    return {
        "name": "bench",
        "type": "dhis2",
        "base_url": args["dhis2_url"],
        "username_env": "BENCH_DHIS2_USER",
        "password_env": "BENCH_DHIS2_PASSWORD",
        "format": value_format,
    }


def config_for(args: dict[str, Any], sources: list[dict[str, Any]], warehouse: str) -> Any:
    from pipelines.config import parse_config

    os.environ.setdefault("BENCH_DHIS2_USER", SANDBOX_USER)
    os.environ.setdefault("BENCH_DHIS2_PASSWORD", SANDBOX_PASSWORD)
    return parse_config(
        {"warehouse": warehouse, "state_dir": args["state_dir"], "sources": sources},
        origin="benchmark",
        base_dir=Path(args["workdir"]),
        env=dict(os.environ),
    )


def _pull(config: Any, entity: str | None) -> tuple[int, dict[str, int]]:
    """Pull every page of the configured source; returns (rows of ``entity``, rows per
    entity). Its caller imports pipelines.sources before starting the clock."""
    from pipelines.sources import adapter_for

    source = config.sources[0]
    counts: dict[str, int] = {}
    for page in adapter_for(source.type).pages(source, None, config):
        counts[page.entity] = counts.get(page.entity, 0) + len(page.records)
    rows = counts.get(entity, 0) if entity else sum(counts.values())
    return rows, counts


@stage
def extract(args: dict[str, Any]) -> dict[str, Any]:
    import pipelines.sources  # noqa: F401  (pandas and the adapters: an import, not the pull)

    config = config_for(args, [dhis2_source(args, args["format"])], "duckdb:///unused.duckdb")
    started = time.perf_counter()
    rows, counts = _pull(config, "data_values")
    return {"seconds": time.perf_counter() - started, "rows": rows, "entities": counts}


@stage
def extract_source(args: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("HEALTHPIPE_PSEUDONYM_KEY", "benchmark-pseudonym-key-0123456789")
    import pipelines.sources  # noqa: F401  (imports are not the pull)

    config = config_for(args, [args["source"]], "duckdb:///unused.duckdb")
    started = time.perf_counter()
    rows, counts = _pull(config, None)
    return {"seconds": time.perf_counter() - started, "rows": rows, "entities": counts}


SLOWEST = 12
"""How many of a run's slowest dbt nodes the pipeline stage records."""


@stage
def pipeline(args: dict[str, Any]) -> dict[str, Any]:
    from pipelines.run import run_pipeline
    from pipelines.warehouse import Warehouse

    config = config_for(args, [dhis2_source(args, args.get("format", "json"))], args["warehouse"])
    started = time.perf_counter()
    summary = run_pipeline(config, full_refresh=bool(args.get("full_refresh")))
    seconds = time.perf_counter() - started
    with Warehouse.open(config.warehouse) as warehouse:
        # (PostgreSQL answers numeric, DuckDB double: floats either way)
        steps = {
            str(step): float(seconds)
            for step, seconds in warehouse.fetchall(
                "select step, sum(extract(epoch from finished_at - started_at)) "
                "from audit.pipeline_runs where run_id = $run group by step",
                {"run": summary.run_id},
            )
        }
        indicator_rows = warehouse.row_count("marts.indicator_values")
        raw_rows = warehouse.row_count("raw.dhis2__data_values")
        # where the transform's time went: dbt's own time per node (audit.dbt_node_runs)
        nodes = warehouse.fetchall(
            "select unique_id, sum(seconds) as seconds from audit.dbt_node_runs "
            "where run_id = $run group by unique_id order by seconds desc",
            {"run": summary.run_id},
        )
    received = sum(c.received for s in summary.sources for c in s.entities.values())
    values = sum(
        s.entities["data_values"].received for s in summary.sources if "data_values" in s.entities
    )
    ingest = sum(steps.get(step, 0.0) for step in ("land", "validate", "reconcile"))
    return {
        "seconds": seconds,
        "rows": received,
        "data_values": values,
        "raw_data_values": raw_rows,
        "indicator_values_rows": indicator_rows,
        "alerts": len(summary.alerts.new) if summary.alerts else 0,
        "steps_s": {k: float(v) for k, v in steps.items()},
        # the extract step spans the whole pull; pulling pages is what landing, validating
        # and reconciling inside it did not take
        "extract_s": max(float(steps.get("extract", 0.0)) - ingest, 0.0),
        "ingest_steps_s": ingest,
        "dbt_nodes": len(nodes),
        "dbt_node_s": sum(float(seconds) for _, seconds in nodes),
        "slowest_nodes": [[str(node), float(seconds)] for node, seconds in nodes[:SLOWEST]],
    }


def _duckdb(path: str) -> Any:
    import duckdb

    return duckdb.connect(path, read_only=True)


@stage
def limit_aggregate(args: dict[str, Any]) -> dict[str, Any]:
    """The same result as int_data_values_aggregated's weekly SUM rows, by hand."""
    con = _duckdb(args["duckdb_path"])
    started = time.perf_counter()
    rows = con.execute(
        """
        with ou as (
            select id as org_unit_id, path from raw.dhis2__organisation_units
            where validation_status = 'valid' and not is_deleted
        ),
        v as (
            select data_element, org_unit, period, try_cast(value as double) as value
            from raw.dhis2__data_values
            where validation_status = 'valid' and not is_deleted and period like '%W%'
        ),
        facility as (
            select data_element, org_unit, period, sum(value) as value
            from v group by all
        ),
        rolled as (
            select f.data_element, a.ancestor as org_unit, f.period, sum(f.value) as value
            from facility as f
            join ou on ou.org_unit_id = f.org_unit
            cross join unnest(string_split(trim(ou.path, '/'), '/')) as a(ancestor)
            group by all
        )
        select count(*), sum(value) from rolled
        """
    ).fetchone()
    return {"seconds": time.perf_counter() - started, "rows": int(rows[0]), "checksum": rows[1]}


@stage
def limit_validate(args: dict[str, Any]) -> dict[str, Any]:
    """The data-value suite's row checks (required fields, numeric value, period that parses,
    known org unit, element and combo, unique natural key) in one pass."""
    con = _duckdb(args["duckdb_path"])
    started = time.perf_counter()
    result = con.execute(
        r"""
        with known_ou as (select id as org_unit_id from raw.dhis2__organisation_units),
        known_de as (select id as data_element_id from raw.dhis2__data_elements),
        known_coc as (select id as category_option_combo_id from raw.dhis2__category_option_combos),
        v as (select * from raw.dhis2__data_values)
        select
            count(*) as rows,
            count(*) filter (where data_element is null or period is null or org_unit is null
                              or category_option_combo is null) as missing,
            count(*) filter (where value is not null and try_cast(value as double) is null) as non_numeric,
            count(*) filter (where not regexp_full_match(period,
                '[0-9]{4}([0-9]{2}([0-9]{2}|B)?|W[0-9]{1,2}|BiW[0-9]{1,2}|Q[1-4]|S[12]|April|July|Oct)?'))
                as bad_period,
            count(*) filter (where org_unit not in (select org_unit_id from known_ou)) as unknown_ou,
            count(*) filter (where data_element not in (select data_element_id from known_de)) as unknown_de,
            count(*) filter (where category_option_combo not in
                (select category_option_combo_id from known_coc)) as unknown_coc,
            count(*) - count(distinct (data_element, period, org_unit, category_option_combo,
                attribute_option_combo)) as duplicate_keys
        from v
        """
    ).fetchone()
    return {
        "seconds": time.perf_counter() - started,
        "rows": int(result[0]),
        "failures": list(result[1:]),
    }


@stage
def limit_read_csv(args: dict[str, Any]) -> dict[str, Any]:
    import duckdb

    pattern = str(Path(args["csv_dir"]) / "*.csv")
    con = duckdb.connect()
    started = time.perf_counter()
    found = con.execute(
        f"select count(*), sum(length(value)) from read_csv('{pattern}', all_varchar = true)"
    ).fetchone()
    assert found is not None  # an aggregate always returns its one row
    rows, width = found
    return {"seconds": time.perf_counter() - started, "rows": int(rows), "checksum": width}


def _sandbox_chunks(args: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """The data values, chunk by chunk, as DHIS2's API gives them to a plain script: one
    request per data set and top-level org unit."""
    import requests

    session = requests.Session()
    session.auth = (SANDBOX_USER, SANDBOX_PASSWORD)
    base = args["dhis2_url"].rstrip("/")
    data_sets = session.get(f"{base}/api/dataSets.json", params={"paging": "false"}).json()
    roots = session.get(
        f"{base}/api/organisationUnits.json", params={"paging": "false", "filter": "level:eq:1"}
    ).json()
    for data_set in data_sets["dataSets"]:
        for root in roots["organisationUnits"]:
            response = session.get(
                f"{base}/api/dataValueSets.json",
                params={
                    "dataSet": data_set["id"],
                    "orgUnit": root["id"],
                    "children": "true",
                    "startDate": "2000-01-01",
                    "endDate": "2100-01-01",
                },
            )
            response.raise_for_status()
            yield response.json().get("dataValues", [])


KEY = ["dataElement", "period", "orgUnit", "categoryOptionCombo", "attributeOptionCombo"]


@stage
def peer_pandas(args: dict[str, Any]) -> dict[str, Any]:
    import duckdb
    import pandas as pd

    con = duckdb.connect(args["duckdb_path"])
    started = time.perf_counter()
    rows = 0
    con.execute(
        "create table if not exists data_values (dataElement text, period text, orgUnit text, "
        "categoryOptionCombo text, attributeOptionCombo text, value text, lastUpdated text, "
        "primary key (dataElement, period, orgUnit, categoryOptionCombo, attributeOptionCombo))"
    )
    for values in _sandbox_chunks(args):
        if not values:
            continue
        frame = pd.DataFrame(values).reindex(columns=[*KEY, "value", "lastUpdated"])
        frame = frame.drop_duplicates(KEY, keep="last")
        con.register("page", frame)
        con.execute("insert or replace into data_values select * from page")
        con.unregister("page")
        rows += len(values)
    return {"seconds": time.perf_counter() - started, "rows": rows}


@stage
def peer_dlt(args: dict[str, Any]) -> dict[str, Any]:
    import dlt

    os.environ["DATA_WRITER__DISABLE_COMPRESSION"] = "true"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    counted = {"rows": 0}

    @dlt.resource(name="data_values", write_disposition="merge", primary_key=KEY)
    def data_values() -> Iterator[list[dict[str, Any]]]:
        for values in _sandbox_chunks(args):
            counted["rows"] += len(values)
            yield values

    pipe = dlt.pipeline(
        pipeline_name="bench_dlt",
        destination=dlt.destinations.duckdb(args["duckdb_path"]),
        dataset_name="raw",
        pipelines_dir=str(Path(args["workdir"]) / "dlt"),
    )
    started = time.perf_counter()
    pipe.run(data_values())
    return {"seconds": time.perf_counter() - started, "rows": counted["rows"]}


@stage
def transform(args: dict[str, Any]) -> dict[str, Any]:
    from pipelines.run import transform as run_transform
    from pipelines.warehouse import Warehouse

    config = config_for(args, [dhis2_source(args)], args["warehouse"])
    started = time.perf_counter()
    outcome = run_transform(config, run_id=f"bench-transform-{int(started)}")
    seconds = time.perf_counter() - started
    with Warehouse.open(config.warehouse) as warehouse:
        rows = warehouse.row_count("marts.indicator_values")
    return {"seconds": seconds, "rows": rows, "dbt_nodes": outcome.succeeded}


@stage
def transform_spark(args: dict[str, Any]) -> dict[str, Any]:
    """``dbt build`` on Spark local mode (dbt-spark's session method, the Spark venv) from the
    tables a DuckDB run landed. Loading them into Spark (parquet export, metastore) is timed
    apart. Spark's memory is the JVM's, a grandchild of this process: ``peak_rss_mib`` is this
    process's own, and the JVM is capped by HEALTHPIPE_SPARK_DRIVER_MEMORY (profiles.yml)."""
    import shutil

    import duckdb

    from pipelines.spark import SparkFolder, build, export_sources, load_sources

    folder = SparkFolder(Path(args["spark_dir"]))
    shutil.rmtree(folder.root, ignore_errors=True)  # dbt-spark cannot replace a failed table
    started = time.perf_counter()
    load_sources(folder, export_sources(Path(args["duckdb_path"]), folder))
    loaded = time.perf_counter()
    build(folder, {"healthpipe_small_cell_threshold": args.get("small_cell_threshold", 5)})
    seconds = time.perf_counter() - loaded
    table = folder.table_dir("marts", "indicator_values")
    with duckdb.connect() as con:
        rows = con.execute(f"select count(*) from read_parquet('{table}/*.parquet')").fetchall()
    return {"seconds": seconds, "rows": int(rows[0][0]), "load_seconds": loaded - started}


@stage
def alerts_farrington(args: dict[str, Any]) -> dict[str, Any]:
    """Farrington flexible (b = 3 years back, w = 3, alpha 0.01) over ``series`` negative-
    binomial weekly series of five years, seasonal, in batches as the pipeline runs them;
    ``missing_share`` of the weeks missing at random (unreported weeks), none by default."""
    import numpy as np
    import pandas as pd

    from pipelines.alerts.detectors import detect_frame

    series = int(args["series"])
    missing = float(args.get("missing_share", 0.0))
    weeks = pd.date_range("2021-01-04", periods=5 * 52, freq="7D")
    rng = np.random.default_rng(7)
    t = np.arange(len(weeks))
    batch = 2_000
    started = time.perf_counter()
    judged = alarms = 0
    for first in range(0, series, batch):
        size = min(batch, series - first)
        level = rng.uniform(1, 40, size)[:, None]
        mean = level * (
            1 + 0.4 * np.cos(2 * np.pi * (t[None, :] - rng.integers(0, 52, size)[:, None]) / 52)
        )
        counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(float)
        if missing:
            counts[rng.random(counts.shape) < missing] = np.nan
        frame = pd.DataFrame(counts.T, index=weeks, columns=[f"s{first + i}" for i in range(size)])
        result = detect_frame(frame, "farrington_flexible", b=3, w=3, alpha=0.01)
        judged += int(result["threshold"].notna().sum())
        alarms += int(result["alarm"].fillna(False).astype(bool).sum())
    return {
        "seconds": time.perf_counter() - started,
        "rows": series,
        "series_weeks_judged": judged,
        "alarm_share": alarms / judged if judged else None,
        "missing_share": missing,
    }


def main(argv: list[str]) -> None:
    name, raw = argv[0], argv[1]
    result = STAGES[name](json.loads(raw))
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
