"""The Spark parity check's comparison (pipelines/spark.compare) finds what differs: a changed
value, a missing row, a duplicated row; and lets float noise from parallel sums through.
Spark's side is stood in by parquet files where Spark would write its table."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipelines.spark import SparkFolder, compare

pytestmark = pytest.mark.unit

ROWS = [("anc", "D1", "2025Q1", 7.5), ("anc", "D2", "2025Q1", 12.25), ("opd", "D1", "2025Q1", None)]


def _warehouse(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        con.execute(
            "create table marts.indicator_values "
            "(indicator_id varchar, org_unit_id varchar, period_id varchar, value double)"
        )
        con.executemany("insert into marts.indicator_values values (?, ?, ?, ?)", ROWS)


def _spark_table(
    folder: SparkFolder, rows: list[tuple[object, ...]], partition_by: str | None = None
) -> Path:
    """The rows as Spark would write the table: one parquet file, or with ``partition_by``
    one folder per value of that column (the value in the folder's name, not in the files)."""
    target = folder.table_dir("marts", "indicator_values")
    target.mkdir(parents=True)
    with duckdb.connect() as con:
        con.execute(
            "create table t (indicator_id varchar, org_unit_id varchar, period_id varchar, "
            "value double)"
        )
        if rows:
            con.executemany("insert into t values (?, ?, ?, ?)", rows)
        if partition_by:
            con.execute(f"copy t to '{target}' (format parquet, partition_by ({partition_by}))")
        else:
            con.execute(f"copy t to '{target / 'part-00000.parquet'}' (format parquet)")
    return target


@pytest.mark.parametrize(
    ("spark_rows", "identical", "differing"),
    [
        (ROWS, True, 0),
        ([(*ROWS[0][:3], 7.5 + 1e-12), *ROWS[1:]], True, 0),  # parallel-sum noise
        ([(*ROWS[0][:3], 7.6), *ROWS[1:]], False, 1),  # a changed value
        (ROWS[:2], False, 1),  # a missing row
        ([*ROWS, ROWS[1]], False, 1),  # a duplicated row
        ([(*ROWS[2][:3], 0.0), *ROWS[:2]], False, 1),  # NULL against a number
    ],
)
def test_compare_finds_what_differs(
    tmp_path: Path, spark_rows: list[tuple[object, ...]], identical: bool, differing: int
) -> None:
    _warehouse(tmp_path / "w.duckdb")
    folder = SparkFolder(tmp_path / "spark")
    _spark_table(folder, spark_rows)
    result = compare(tmp_path / "w.duckdb", folder, "marts", "indicator_values")
    assert result.identical is identical
    assert len(result.differing) == differing
    assert result.duckdb_rows == 3 and result.spark_rows == len(spark_rows)


@pytest.mark.parametrize(("spark_rows", "identical"), [(ROWS, True), (ROWS[:2], False)])
def test_compare_reads_a_table_partitioned_in_folders(
    tmp_path: Path, spark_rows: list[tuple[object, ...]], identical: bool
) -> None:
    """Spark writes a partitioned table (fct_data_values by period_year) as one folder per
    value, the value in the folder's name and not in the files."""
    _warehouse(tmp_path / "w.duckdb")
    folder = SparkFolder(tmp_path / "spark")
    target = _spark_table(folder, spark_rows, partition_by="indicator_id")
    assert sorted(p.name for p in target.iterdir())[0].startswith("indicator_id=")
    result = compare(tmp_path / "w.duckdb", folder, "marts", "indicator_values")
    assert result.identical is identical
    assert result.spark_rows == len(spark_rows)
