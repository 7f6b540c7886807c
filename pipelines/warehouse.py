"""One way into the warehouse, DuckDB (embedded default) or PostgreSQL, chosen by one URL.

``duckdb:///relative/file.duckdb``, ``duckdb:////absolute/file.duckdb`` or
``postgresql://user[:password]@host[:port]/database``. A DuckDB URL may end in
``?memory_limit=4GB`` (or ``50%``): healthpipe's connection and dbt's both keep to it, spilling
to ``<file>.tmp`` beyond it (DuckDB's default is 80% of the machine's memory). SQL passed to :meth:`Warehouse.execute`
uses ``$name`` placeholders on both engines. Bulk loads go through Arrow: DuckDB scans the
Arrow table directly and PostgreSQL receives it through ``COPY``, never row by row.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import pyarrow.csv as pa_csv

from pipelines.errors import WarehouseError
from pipelines.tables import ALERT_DDL, AUDIT_DDL, DEFINITION_DDL, SCHEMAS

Params = Mapping[str, Any] | None
_PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
STRUCTURE_LOCK = 0x6865616C7468
"""The PostgreSQL advisory lock key ``ensure_schemas`` holds ("health" in ASCII)."""


@dataclass(frozen=True)
class WarehouseLocation:
    """A parsed warehouse URL."""

    kind: Literal["duckdb", "postgres"]
    url: str
    duckdb_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    dbname: str = "postgres"
    memory_limit: str | None = None
    """DuckDB only: the most memory the engine may use (``4GB``, ``50%``)."""

    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        if self.kind == "duckdb":
            return self.url
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


DUCKDB_DEFAULT_MEMORY_LIMIT = "80%"
"""DuckDB's own default, spelled out because profiles.yml always passes a value."""
DUCKDB_URL_SETTINGS = ("memory_limit",)
"""The settings a DuckDB warehouse URL may carry after ``?``."""
_MEMORY_LIMIT = re.compile(r"^\d+(\.\d+)?\s*(%|[KMGT]i?B|B|bytes)$", re.IGNORECASE)


def parse_warehouse_url(url: str) -> WarehouseLocation:
    if url.startswith("duckdb:///"):
        rest, _, query = url[len("duckdb:///") :].partition("?")
        if not rest:
            raise WarehouseError(f"warehouse URL {url!r}: no DuckDB file path after duckdb:///")
        settings = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(settings) - set(DUCKDB_URL_SETTINGS))
        if unknown:
            raise WarehouseError(
                f"warehouse URL {url!r}: unknown setting(s) {', '.join(unknown)}; "
                f"a DuckDB URL takes {', '.join(DUCKDB_URL_SETTINGS)}"
            )
        memory_limit = settings.get("memory_limit")
        if memory_limit is not None and not _MEMORY_LIMIT.match(memory_limit):
            raise WarehouseError(
                f"warehouse URL {url!r}: memory_limit={memory_limit!r}, expected a size such "
                "as 4GB, 512MB or a share of the machine's memory such as 50%"
            )
        path = Path(rest) if rest.startswith("/") else Path.cwd() / rest
        return WarehouseLocation(
            kind="duckdb",
            url=f"duckdb:///{path}" + (f"?{query}" if query else ""),
            duckdb_path=path,
            memory_limit=memory_limit,
        )
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        dbname = parts.path.lstrip("/")
        if not dbname:
            raise WarehouseError(
                f"warehouse URL {url!r}: no database name (postgresql://user@host:5432/db)"
            )
        return WarehouseLocation(
            kind="postgres",
            url=url,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=dbname,
        )
    raise WarehouseError(
        f"warehouse URL {url!r}: expected duckdb:///path/file.duckdb or "
        "postgresql://user@host:port/database"
    )


class Warehouse(ABC):
    """An open connection to the warehouse with the few operations the pipeline needs."""

    location: WarehouseLocation

    @staticmethod
    def open(url: str) -> Warehouse:
        location = parse_warehouse_url(url)
        if location.kind == "duckdb":
            return DuckDBWarehouse(location)
        return PostgresWarehouse(location)

    @property
    def kind(self) -> str:
        return self.location.kind

    # -- statements ---------------------------------------------------------------------
    @abstractmethod
    def execute(self, sql: str, params: Params = None) -> None: ...

    @abstractmethod
    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table: ...

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all."""

    @abstractmethod
    def load_arrow(self, table: str, data: pa.Table) -> int:
        """Append ``data`` to an existing table, matching columns by name."""

    @abstractmethod
    def close(self) -> None: ...

    def fetch_scalar(self, sql: str, params: Params = None) -> Any:
        rows = self.fetchall(sql, params)
        return rows[0][0] if rows else None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- structure ----------------------------------------------------------------------
    def ensure_schemas(self) -> None:
        """Create the five schemas, the audit tables and every raw landing table."""
        from pipelines.sources import all_raw_tables  # sources import this module

        with self.transaction():
            self._lock_structure()
            for schema in SCHEMAS:
                self.execute(f"create schema if not exists {schema}")
            for ddl in AUDIT_DDL + DEFINITION_DDL + ALERT_DDL:
                self.execute(ddl)
            for table in all_raw_tables():
                self.execute(table.ddl(self.kind))
                # a table landed by a healthpipe from before partitioning stays as it was
                if table.partitioned_on(self.kind) and self.is_partitioned("raw", table.name):
                    self.execute(table.default_partition_ddl())

    @abstractmethod
    def _lock_structure(self) -> None:
        """Serialise ``ensure_schemas`` across processes for the current transaction."""

    def table_exists(self, schema: str, table: str) -> bool:
        count = self.fetch_scalar(
            "select count(*) from information_schema.tables "
            "where table_schema = $schema and table_name = $table",
            {"schema": schema, "table": table},
        )
        return bool(count)

    def is_partitioned(self, schema: str, table: str) -> bool:
        """A PostgreSQL partitioned table (never on DuckDB, which has none)."""
        if self.kind != "postgres":
            return False
        count = self.fetch_scalar(
            "select count(*) from pg_partitioned_table p join pg_class c on c.oid = p.partrelid "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = $schema and c.relname = $table",
            {"schema": schema, "table": table},
        )
        return bool(count)

    def row_count(self, qualified_table: str) -> int:
        return int(self.fetch_scalar(f"select count(*) from {qualified_table}"))

    def create_temp_table(self, name: str, columns: Sequence[tuple[str, str]]) -> None:
        """A session-local table dropped at the end of the transaction."""
        body = ", ".join(f"{col} {sql_type.replace(' not null', '')}" for col, sql_type in columns)
        self.execute(f"drop table if exists {name}")
        self.execute(f"create temporary table {name} ({body})")

    def dbt_env(self) -> dict[str, str]:
        """Environment variables that point ``profiles.yml`` at this warehouse."""
        loc = self.location
        if loc.kind == "duckdb":
            return {
                "HEALTHPIPE_DBT_TARGET": "duckdb",
                "HEALTHPIPE_DUCKDB_PATH": str(loc.duckdb_path),
                "HEALTHPIPE_DUCKDB_MEMORY_LIMIT": loc.memory_limit or DUCKDB_DEFAULT_MEMORY_LIMIT,
            }
        return {
            "HEALTHPIPE_DBT_TARGET": "postgres",
            "HEALTHPIPE_PG_HOST": loc.host,
            "HEALTHPIPE_PG_PORT": str(loc.port),
            "HEALTHPIPE_PG_USER": loc.user,
            "HEALTHPIPE_PG_PASSWORD": loc.password,
            "HEALTHPIPE_PG_DBNAME": loc.dbname,
        }


class DuckDBWarehouse(Warehouse):
    def __init__(self, location: WarehouseLocation) -> None:
        import duckdb

        assert location.duckdb_path is not None
        self.location = location
        location.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(
                str(location.duckdb_path),
                config={"memory_limit": location.memory_limit or DUCKDB_DEFAULT_MEMORY_LIMIT},
            )
        except duckdb.IOException as exc:
            raise WarehouseError(
                f"cannot open the DuckDB warehouse {location.duckdb_path}: {exc}. "
                "DuckDB allows one writing process: is another healthpipe or dbt run open?"
            ) from None
        self._con.execute("set TimeZone = 'UTC'")
        self._in_transaction = False

    def execute(self, sql: str, params: Params = None) -> None:
        self._con.execute(sql, dict(params) if params else None)

    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return self._con.execute(sql, dict(params) if params else None).fetchall()

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        table: pa.Table = self._con.sql(
            sql, params=dict(params) if params else None
        ).to_arrow_table()
        return table

    def _lock_structure(self) -> None:
        """DuckDB has one writer per file: nothing else can be creating the schemas."""
        return

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_transaction:  # nested: the outer transaction decides
            yield
            return
        self._con.execute("begin transaction")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._con.execute("rollback")
            raise
        else:
            self._con.execute("commit")
        finally:
            self._in_transaction = False

    def load_arrow(self, table: str, data: pa.Table) -> int:
        view = "_healthpipe_arrow_incoming"
        self._con.register(view, data)
        try:
            columns = ", ".join(data.column_names)
            self._con.execute(f"insert into {table} ({columns}) select {columns} from {view}")
        finally:
            self._con.unregister(view)
        return int(data.num_rows)

    def close(self) -> None:
        self._con.close()


class PostgresWarehouse(Warehouse):
    def __init__(self, location: WarehouseLocation) -> None:
        import psycopg

        self.location = location
        try:
            self._con = psycopg.connect(
                host=location.host,
                port=location.port,
                user=location.user,
                password=location.password or None,
                dbname=location.dbname,
                autocommit=True,
                connect_timeout=10,
                options="-c TimeZone=UTC",
            )
        except psycopg.OperationalError as exc:
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            raise WarehouseError(
                f"cannot connect to the PostgreSQL warehouse {location.redacted()}: {first_line}"
            ) from None
        self._transaction_depth = 0

    @staticmethod
    def _translate(sql: str) -> str:
        # `%` is psycopg's placeholder marker; literal percent signs must be doubled.
        return _PLACEHOLDER.sub(r"%(\1)s", sql.replace("%", "%%"))

    def execute(self, sql: str, params: Params = None) -> None:
        if params:
            self._con.execute(self._translate(sql), dict(params))
        else:
            self._con.execute(sql)

    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        if params:
            cursor = self._con.execute(self._translate(sql), dict(params))
        else:
            cursor = self._con.execute(sql)
        return list(cursor.fetchall())

    def fetch_arrow(self, sql: str, params: Params = None) -> pa.Table:
        if params:
            cursor = self._con.execute(self._translate(sql), dict(params))
        else:
            cursor = self._con.execute(sql)
        names = [column.name for column in cursor.description or []]
        rows = cursor.fetchall()
        columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
        return pa.table({name: list(values) for name, values in zip(names, columns, strict=True)})

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._con.transaction():
            yield

    def _lock_structure(self) -> None:
        # Two tasks opening a fresh warehouse at once (parallel ingest DAGs, on one worker or
        # two) would both run `create schema if not exists raw`: PostgreSQL's catalog check
        # is not atomic, and the loser fails with a unique violation. The later one waits here
        # until the first commits, then finds everything made.
        self._con.execute("select pg_advisory_xact_lock(%s)", (STRUCTURE_LOCK,))

    def load_arrow(self, table: str, data: pa.Table) -> int:
        if data.num_rows == 0:
            return 0
        buffer = io.BytesIO()
        # Strings are always quoted and NULLs left bare, so COPY tells '' from NULL.
        pa_csv.write_csv(
            data, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed")
        )
        columns = ", ".join(data.column_names)
        with (
            self._con.cursor() as cursor,
            cursor.copy(f"copy {table} ({columns}) from stdin with (format csv)") as copy,
        ):
            view = buffer.getbuffer()
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        return int(data.num_rows)

    def close(self) -> None:
        self._con.close()
