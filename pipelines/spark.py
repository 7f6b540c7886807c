"""The dbt project on Spark (dbt-spark's session method, a local pyspark) beside a DuckDB
warehouse: the tables dbt reads are exported from DuckDB, loaded into Spark's metastore, built
there with the same models, and the marts compared with DuckDB's row for row.

Spark runs from its own venv (``.venv-spark``: ``make spark-parity`` installs it from
constraints-spark.txt), in subprocesses: dbt-spark's session method keeps one SparkSession,
with its Derby metastore locked, for the life of the process that made it.

Layout of a Spark folder (``HEALTHPIPE_SPARK_DIR`` for profiles.yml's ``spark`` output)::

    exports/<schema>.<table>.parquet   what DuckDB exported
    warehouse/<schema>.db/<table>/     Spark's tables (parquet files)
    metastore_db/                      the embedded Derby metastore
    dbt/                               dbt's target and logs
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import HealthpipeError
from pipelines.paths import DBT_PROJECT_DIR, PROJECT_DIR

SPARK_VENV = PROJECT_DIR / ".venv-spark"
LOADER = Path(__file__).with_name("spark_loader.py")
SOURCE_TABLES = """
    select table_schema, table_name
    from information_schema.tables
    where table_type = 'BASE TABLE'
      and (table_schema = 'raw' or (table_schema = 'marts' and table_name = 'alerts'))
    order by 1, 2
"""
"""What the dbt project reads (its sources): the landed raw tables and the alerts."""


class SparkError(HealthpipeError):
    """The Spark venv is missing, or loading or building on Spark failed."""


def spark_bin(name: str) -> Path:
    """A program of the Spark venv (python, dbt)."""
    path = SPARK_VENV / "bin" / name
    if not path.exists():
        raise SparkError(
            f"{path} not found: the Spark engine runs from its own venv; "
            "`make spark-parity` installs it (constraints-spark.txt)"
        )
    return path


@dataclass(frozen=True)
class SparkFolder:
    """One Spark warehouse on local disk (see the module docstring for its layout)."""

    root: Path
    conf: dict[str, str] = field(default_factory=dict)

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    def table_dir(self, schema: str, table: str) -> Path:
        return self.root / "warehouse" / f"{schema}.db" / table

    def env(self) -> dict[str, str]:
        return {"HEALTHPIPE_DBT_TARGET": "spark", "HEALTHPIPE_SPARK_DIR": str(self.root)}


def export_sources(duckdb_path: Path, folder: SparkFolder) -> list[dict[str, str]]:
    """Every table the dbt project reads, from the DuckDB warehouse to parquet files."""
    import duckdb

    folder.exports.mkdir(parents=True, exist_ok=True)
    tables = []
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        for schema, table in con.execute(SOURCE_TABLES).fetchall():
            path = folder.exports / f"{schema}.{table}.parquet"
            con.execute(f'copy (select * from "{schema}"."{table}") to \'{path}\' (format parquet)')
            tables.append({"schema": schema, "table": table, "path": str(path)})
    return tables


def load_sources(folder: SparkFolder, tables: Sequence[dict[str, str]]) -> None:
    """The exported tables into Spark's metastore, in their own schemas."""
    args = folder.root / "load.json"
    args.write_text(
        json.dumps({"spark_dir": str(folder.root), "conf": folder.conf, "tables": list(tables)}),
        encoding="utf-8",
    )
    _run([str(spark_bin("python")), str(LOADER), str(args)], folder, "loading the sources")


def build(folder: SparkFolder, variables: dict[str, object], args: Sequence[str] = ()) -> str:
    """``dbt build`` of the project on Spark; dbt's output (the log a failure points at)."""
    dbt_dir = folder.root / "dbt"
    command = [
        str(spark_bin("dbt")), "build", *args,
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(dbt_dir / "target"), "--log-path", str(dbt_dir / "logs"),
        "--vars", json.dumps(variables),
    ]  # fmt: skip
    return _run(command, folder, "dbt build on Spark")


def _run(command: list[str], folder: SparkFolder, what: str) -> str:
    folder.root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **folder.env(), "PYSPARK_PYTHON": str(spark_bin("python"))}
    # Spark's own files (derby.log, spark-warehouse/ by default) land in the working folder
    completed = subprocess.run(
        command, cwd=folder.root, env=env, capture_output=True, text=True, check=False
    )
    output = completed.stdout + completed.stderr
    (folder.root / f"{command[1].rsplit('/', 1)[-1]}.log").write_text(output, encoding="utf-8")
    if completed.returncode != 0:
        raise SparkError(f"{what} failed (exit {completed.returncode}):\n{output[-3000:]}")
    return output


@dataclass(frozen=True)
class Comparison:
    """A table on both engines: rows, and the rows (keyed by every non-float column) whose
    count or float values differ beyond the tolerance."""

    table: str
    duckdb_rows: int
    spark_rows: int
    differing: list[tuple[object, ...]]
    columns: list[str]

    @property
    def identical(self) -> bool:
        return self.duckdb_rows == self.spark_rows and not self.differing


FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL")


def compare(
    duckdb_path: Path, folder: SparkFolder, schema: str, table: str, *, tolerance: float = 1e-9
) -> Comparison:
    """``schema.table`` in the DuckDB warehouse against Spark's (read from its parquet files).
    Rows are matched on every column that is not a float, with their number; floats match
    within ``tolerance`` relative to their size, since parallel sums add in no fixed order."""
    import duckdb

    files = folder.table_dir(schema, table)
    with duckdb.connect() as con:
        con.execute(f"attach '{duckdb_path}' as w (read_only)")
        described = con.execute(f'describe w."{schema}"."{table}"').fetchall()
        types = {name: str(kind) for name, kind, *_ in described}
        floats = [n for n, k in types.items() if k in FLOAT_TYPES or k.startswith("DECIMAL")]
        keys = [n for n in types if n not in floats]

        def side(relation: str) -> str:
            key_cols = ", ".join(f'cast("{k}" as {types[k]}) as "{k}"' for k in keys)
            sums = ", ".join(f'sum(cast("{f}" as double)) as "{f}"' for f in floats)
            return (
                f"select {key_cols}, count(*) as n{', ' + sums if sums else ''} "
                f"from {relation} group by all"
            )

        # a partitioned table keeps its files in one folder per value (period_year=2025/)
        partitioned = any(p.is_dir() and "=" in p.name for p in files.iterdir())
        spark_relation = (
            f"read_parquet('{files}/*/*.parquet', hive_partitioning = true)"
            if partitioned
            else f"read_parquet('{files}/*.parquet')"
        )
        joined = " and ".join(f'd."{k}" is not distinct from s."{k}"' for k in keys)
        close = " and ".join(
            # a NULL against a number is a difference (abs() of it would be NULL, not false)
            f'(d."{f}" is not distinct from s."{f}" or coalesce(abs(d."{f}" - s."{f}") '
            f'<= {tolerance} * greatest(1, abs(d."{f}")), false))'
            for f in floats
        )
        query = f"""
            with d as ({side(f'w."{schema}"."{table}"')}),
                 s as ({side(spark_relation)})
            select {", ".join(f'coalesce(d."{k}", s."{k}")' for k in keys)}, d.n, s.n
                {"".join(f', d."{f}", s."{f}"' for f in floats)}
            from d full join s on {joined}
            where d.n is distinct from s.n {("or not (" + close + ")") if close else ""}
        """
        differing = con.execute(query).fetchall()
        duckdb_rows = con.execute(f'select count(*) from w."{schema}"."{table}"').fetchone()
        spark_rows = con.execute(f"select count(*) from {spark_relation}").fetchone()
    columns = [*keys, "duckdb_rows", "spark_rows"]
    for f in floats:
        columns += [f"duckdb_{f}", f"spark_{f}"]
    return Comparison(
        table=f"{schema}.{table}",
        duckdb_rows=int(duckdb_rows[0]) if duckdb_rows else 0,
        spark_rows=int(spark_rows[0]) if spark_rows else 0,
        differing=differing,
        columns=columns,
    )
