"""`make spark-parity`: a small simulated country through the whole pipeline into DuckDB, its
sources loaded into Spark (local mode, dbt-spark's session method), the same dbt models built
there, and the marts compared with DuckDB's row for row.

Outside `make test` (`norecursedirs` in pyproject.toml): it needs the Spark venv, which
`make spark-parity` installs, and about ten minutes of a JVM."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.spark import Comparison, SparkFolder, build, compare, export_sources, load_sources
from pipelines.transform import run_dbt
from pipelines.warehouse import Warehouse

SMALL_CELL_THRESHOLD = 5  # the demo's healthpipe.yml default


@pytest.fixture(scope="module")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("demo")
    completed = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--workdir", str(workdir),
         "--districts", "2", "--weeks", "30"],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return workdir / "healthpipe.duckdb"


@pytest.fixture(scope="module")
def spark(demo_warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> SparkFolder:
    folder = SparkFolder(tmp_path_factory.mktemp("spark"))
    load_sources(folder, export_sources(demo_warehouse, folder))
    build(folder, {"healthpipe_small_cell_threshold": SMALL_CELL_THRESHOLD})
    return folder


def _explain(result: Comparison) -> str:
    rows = "\n".join(
        str(dict(zip(result.columns, row, strict=False))) for row in result.differing[:10]
    )
    return (
        f"{result.table}: {result.duckdb_rows} rows on DuckDB, {result.spark_rows} on Spark, "
        f"{len(result.differing)} differing, e.g.\n{rows}"
    )


def test_indicator_values_are_identical(demo_warehouse: Path, spark: SparkFolder) -> None:
    result = compare(demo_warehouse, spark, "marts", "indicator_values")
    assert result.duckdb_rows > 1000
    assert result.identical, _explain(result)


@pytest.mark.parametrize(
    ("schema", "table"),
    [
        ("marts", "dim_org_unit"),
        ("marts", "dim_period"),
        ("marts", "fct_data_values"),
        ("marts", "fct_surveillance_weekly"),
        ("intermediate", "int_suppression_masks"),
        ("marts", "pub_indicator_values"),
        ("marts", "pub_surveillance_weekly"),
        ("marts", "pub_data_values"),
    ],
)
def test_the_other_marts_are_identical(
    demo_warehouse: Path, spark: SparkFolder, schema: str, table: str
) -> None:
    result = compare(demo_warehouse, spark, schema, table)
    assert result.duckdb_rows > 0
    assert result.identical, _explain(result)


# Last in the module: it changes the Spark warehouse the tests above compare.
def test_fct_data_values_rewrites_only_the_changed_year_on_spark(
    demo_warehouse: Path, spark: SparkFolder, tmp_path: Path
) -> None:
    """fct_data_values is a parquet table partitioned by period_year. One raw value changes;
    the incremental build overwrites that year's partition only (its files are new, the
    others' untouched), and the table equals DuckDB's own incremental build of the change."""
    import duckdb

    table_dir = spark.table_dir("marts", "fct_data_values")

    def partition_files() -> dict[str, list[str]]:
        return {
            partition.name: sorted(file.name for file in partition.glob("*.parquet"))
            for partition in table_dir.glob("period_year=*")
        }

    before = partition_files()
    assert len(before) >= 2, before
    changed = tmp_path / "changed.duckdb"
    shutil.copy(demo_warehouse, changed)
    with duckdb.connect(str(changed)) as con:
        element, period, unit = con.execute(
            "select data_element, period, org_unit from raw.dhis2__data_values "
            "where validation_status = 'valid' and try_cast(value as integer) is not null "
            "order by period desc, data_element, org_unit limit 1"
        ).fetchall()[0]
        con.execute(
            "update raw.dhis2__data_values set value = cast(cast(value as integer) + 1000 as varchar) "
            "where data_element = ? and period = ? and org_unit = ?",
            [element, period, unit],
        )
    with Warehouse.open(f"duckdb:///{changed}") as warehouse:
        env = warehouse.dbt_env()
    run_dbt(["run", "--select", "fct_data_values"], dbt_env=env, state_dir=tmp_path / "duck")

    load_sources(spark, export_sources(changed, spark))
    build(spark, {"healthpipe_small_cell_threshold": SMALL_CELL_THRESHOLD},
          ["--select", "fct_data_values"])  # fmt: skip
    after = partition_files()
    assert set(after) == set(before)
    assert {name for name in before if after[name] != before[name]} == {f"period_year={period[:4]}"}
    result = compare(changed, spark, "marts", "fct_data_values")
    assert result.identical, _explain(result)


def test_the_benchmark_harness_times_the_build_on_spark(
    demo_warehouse: Path, tmp_path: Path
) -> None:
    """`python -m benchmarks.run --spark`: the transform_spark stage loads a landed DuckDB
    warehouse into Spark, builds there and reports the time and indicator_values' rows."""
    import duckdb

    from benchmarks.run import run_stage

    result = run_stage(
        "transform_spark", duckdb_path=str(demo_warehouse), spark_dir=str(tmp_path / "spark")
    )
    with duckdb.connect(str(demo_warehouse), read_only=True) as con:
        expected = con.execute("select count(*) from marts.indicator_values").fetchall()[0][0]
    assert result["rows"] == expected
    assert result["seconds"] > 0 and result["load_seconds"] > 0
