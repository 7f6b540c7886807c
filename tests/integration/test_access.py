"""Access by org unit: a district role connected to PostgreSQL sees every row of its district's
subtree in every mart, and nothing else, also after dbt has rebuilt the marts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from pipelines.access import AccessError, grant_org_unit_access
from pipelines.cli import main
from pipelines.run import run_pipeline
from pipelines.warehouse import Warehouse
from tests.conftest import make_config
from tests.reliability.results import Results

pytestmark = pytest.mark.postgres


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
def role(postgres_url: str) -> Iterator[str]:
    name = f"hp_district_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        exists = admin.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
        if exists:
            admin.execute(f'drop owned by "{name}"')
            admin.execute(f'drop role "{name}"')


def org_unit_tables(url: str) -> list[str]:
    with Warehouse.open(url) as warehouse:
        return [
            name
            for (name,) in warehouse.fetchall(
                "select table_name from information_schema.columns where table_schema = 'marts' "
                "and column_name = 'org_unit_id' order by table_name"
            )
        ]


def check_subtree_only(
    admin_url: str, role_url: str, district: str, outside_rows: list[int] | None = None
) -> dict[str, int]:
    """Rows per mart the role sees; asserts they are exactly the district subtree's rows.
    Rows seen outside the subtree are added to ``outside_rows`` (for RELIABILITY.md) first."""
    seen: dict[str, int] = {}
    with Warehouse.open(admin_url) as admin, Warehouse.open(role_url) as reader:
        inside = {
            row[0]
            for row in admin.fetchall(
                "select org_unit_id from marts.dim_org_unit where path || '/' like $p",
                {"p": f"%/{district}/%"},
            )
        }
        for table in org_unit_tables(admin_url):
            everything = admin.fetchall(
                f"select org_unit_id, count(*) from marts.{table} group by 1"
            )
            expected = sum(n for unit, n in everything if unit in inside)
            visible = reader.fetchall(f"select org_unit_id, count(*) from marts.{table} group by 1")
            outside = [unit for unit, _ in visible if unit not in inside]
            if outside_rows is not None:
                outside_rows.append(sum(n for unit, n in visible if unit not in inside))
            assert outside == [], f"{table}: the role sees rows outside its district: {outside[:3]}"
            assert sum(n for _, n in visible) == expected, table
            seen[table] = expected
    return seen


@pytest.mark.reliability
def test_a_district_role_sees_its_subtree_and_nothing_else(
    demo_country: Path, postgres_url: str, role: str, tmp_path: Path, results: Results
) -> None:
    config = make_config(postgres_url, demo_country, tmp_path)
    run_pipeline(config)
    with Warehouse.open(postgres_url) as warehouse:
        district, region = warehouse.fetchall(
            "select org_unit_id, parent_id from marts.dim_org_unit where level = 3 order by 1 limit 1"
        )[0]
        grant = grant_org_unit_access(warehouse, role, district)
    assert grant.tables >= 4

    reader_url = as_role(postgres_url, role)
    outside_rows: list[int] = []
    seen = check_subtree_only(postgres_url, reader_url, district, outside_rows)
    assert {
        "dim_org_unit",
        "fct_data_values",
        "indicator_values",
        "fct_surveillance_weekly",
    } <= set(seen)
    assert all(seen[t] > 0 for t in ("dim_org_unit", "fct_data_values", "indicator_values"))

    with psycopg.connect(reader_url, autocommit=True) as reader:
        attributes = reader.execute(
            "select rolsuper, rolbypassrls from pg_roles where rolname = current_user"
        ).fetchone()
        assert attributes == (False, False)
        assert reader.execute(
            "select count(*) from pg_class c join pg_roles r on r.oid = c.relowner "
            "where r.rolname = current_user"
        ).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("select count(*) from raw.dhis2__data_values")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("select count(*) from audit.access_grants")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("delete from marts.indicator_values")
        # the region above the district is outside its subtree
        assert reader.execute(
            "select count(*) from marts.indicator_values where org_unit_id = %s", (region,)
        ).fetchone() == (0,)

    # a full refresh rebuilds every mart; the policies come back with them
    assert run_pipeline(config, full_refresh=True).dbt is not None
    # (the rebuild also counts the first run's alerts in the 7-1-7 marts: sizes may grow)
    rebuilt = check_subtree_only(postgres_url, reader_url, district, outside_rows)
    results.record(
        "access",
        "a district role from healthpipe grant reads every mart with an org unit, before and "
        "after a full refresh rebuilds the marts",
        len(outside_rows),
        sum(outside_rows),
        marts=len(seen),
        rows_in_subtree=sum(rebuilt.values()),
        rows_seen_outside=sum(outside_rows),
    )
    assert set(rebuilt) == set(seen) and all(
        rebuilt[t] >= seen[t] > 0 for t in ("dim_org_unit", "fct_data_values")
    )


def test_the_command_line_grants_a_second_subtree(
    demo_country: Path, postgres_url: str, role: str, tmp_path: Path
) -> None:
    run_pipeline(make_config(postgres_url, demo_country, tmp_path))
    with Warehouse.open(postgres_url) as warehouse:
        first, second = (
            row[0]
            for row in warehouse.fetchall(
                "select org_unit_id from marts.dim_org_unit where level = 3 order by 1 limit 2"
            )
        )
    config_file = tmp_path / "healthpipe.yml"
    config_file.write_text(
        f"warehouse: {postgres_url}\nstate_dir: {tmp_path}\n"
        f"sources:\n  - name: hmis\n    type: dhis2\n    path: {demo_country}\n",
        encoding="utf-8",
    )
    for district in (first, second):
        assert (
            main(["grant", "--role", role, "--org-unit", district, "--config", str(config_file)])
            == 0
        )
    with psycopg.connect(as_role(postgres_url, role)) as reader:
        visible = {
            row[0]
            for row in reader.execute(
                "select org_unit_id from marts.dim_org_unit where level = 3"
            ).fetchall()
        }
    assert visible == {first, second}
    assert (
        main(["grant", "--role", role, "--org-unit", "noSuchUnit1", "--config", str(config_file)])
        == 2
    )


def test_duckdb_refuses_with_a_reason(tmp_path: Path) -> None:
    with (
        Warehouse.open(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse,
        pytest.raises(AccessError, match="needs the PostgreSQL warehouse"),
    ):
        grant_org_unit_access(warehouse, "district_a", "anything")


def test_role_names_are_checked(postgres_url: str) -> None:
    with (
        Warehouse.open(postgres_url) as warehouse,
        pytest.raises(AccessError, match="lower-case letters"),
    ):
        grant_org_unit_access(warehouse, 'x"; drop table marts.alerts; --', "anything")
