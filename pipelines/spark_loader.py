"""Load exported tables (parquet) into Spark's metastore as the sources dbt reads there.

Runs in the Spark venv (``.venv-spark``, with pyspark) as a script, not as a healthpipe
module: healthpipe itself is not installed there. ``pipelines/spark.py`` writes the exports
and calls ``python spark_loader.py ARGS.json``, where ARGS.json holds ``spark_dir`` (the
folder of the warehouse and the Derby metastore, as in profiles.yml's spark output),
``conf`` (extra Spark settings) and ``tables``: ``[{"schema", "table", "path"}, ...]``.

DuckDB writes its TIMESTAMP (no zone) to parquet as a local timestamp, which Spark 4 reads as
TIMESTAMP_NTZ; dbt's SQL on Spark compares and subtracts plain timestamps, so such columns
are cast to TIMESTAMP with the session zone set to UTC (the wall-clock values are unchanged).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def session(spark_dir: Path, conf: dict[str, str]):  # type: ignore[no-untyped-def]
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName("healthpipe-spark-loader")
        .enableHiveSupport()
        .config("spark.master", conf.get("spark.master", "local[2]"))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(spark_dir / "warehouse"))
        .config(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={spark_dir / 'metastore_db'};create=true",
        )
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={spark_dir}")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def main(args_path: str) -> None:
    args = json.loads(Path(args_path).read_text(encoding="utf-8"))
    spark_dir = Path(args["spark_dir"]).resolve()
    spark = session(spark_dir, args.get("conf", {}))
    for schema in sorted({t["schema"] for t in args["tables"]}):
        spark.sql(f"create database if not exists `{schema}`")
    for table in args["tables"]:
        frame = spark.read.parquet(str(Path(table["path"]).resolve()))
        columns = []
        for field in frame.schema.fields:
            name = f"`{field.name}`"
            if field.dataType.typeName() == "timestamp_ntz":
                columns.append(f"cast({name} as timestamp) as {name}")
            else:
                columns.append(name)
        target = f"`{table['schema']}`.`{table['table']}`"
        spark.sql(f"drop table if exists {target}")
        frame.createOrReplaceTempView("hp_export")
        spark.sql(
            f"create table {target} using parquet as select {', '.join(columns)} from hp_export"
        )
        print(f"loaded {table['schema']}.{table['table']}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
