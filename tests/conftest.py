"""Shared fixtures: warehouses (a DuckDB file per test, a fresh PostgreSQL database per
test), the demo country's files, and configs pointing at them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import HealthpipeConfig, parse_config
from pipelines.simulate import build_country, simulate
from pipelines.simulate.country import Country
from tests.reliability.results import Results, results_path

SAMPLES = Path(__file__).parent / "fixtures" / "samples"


def small_country() -> Country:
    """Four districts of three facilities: big enough for every level, fast to run."""
    return build_country(7, districts=4, regions=2, facilities_per_district=(3, 3))


POSTGRES_URL_ENV = "HEALTHPIPE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _server_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's admin URL. In CI (CI=true) an unreachable server fails the
    tests; elsewhere they skip, saying why, so `make test` passes on a laptop without one."""
    import psycopg

    url = _server_url()
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("select 1")
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at {url} ({str(exc).strip().splitlines()[0]})"
        if in_ci():
            pytest.fail(f"{message}: PostgreSQL tests must run in CI")
        pytest.skip(f"{message}; set {POSTGRES_URL_ENV} to run the PostgreSQL tests")
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test (schemas are fixed names, so tests need their
    own database rather than their own schema)."""
    import psycopg
    from psycopg import sql

    name = f"healthpipe_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    base, _, _ = postgres_server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on DuckDB and once on PostgreSQL."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return str(request.getfixturevalue("postgres_url"))


SMALL_WINDOW_WEEKS = 60
"""Weeks ending 2026W5: every month of 2025 is in the window."""


@pytest.fixture(scope="session")
def demo_country(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated country's DHIS2 payloads (seed 7), written once per session."""
    root = tmp_path_factory.mktemp("country")
    simulate(root, country=small_country(), weeks=SMALL_WINDOW_WEEKS, sources=["dhis2"])
    return root / "dhis2"


def make_config(
    warehouse: str, dhis2_folder: Path, state_dir: Path, **extra: Any
) -> HealthpipeConfig:
    data: dict[str, Any] = {
        "warehouse": warehouse,
        "state_dir": str(state_dir),
        "sources": [{"name": "hmis", "type": "dhis2", "path": str(dhis2_folder)}],
        **extra,
    }
    env = {k: v for k, v in os.environ.items() if k != "HEALTHPIPE_WAREHOUSE"}
    return parse_config(data, origin="test config", base_dir=state_dir, env=env)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `pytest -m unit` picks the fast ones."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for marker in ("unit", "integration", "e2e", "reliability"):
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
        if "airflow" in parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """Where reliability figures go (RELIABILITY.md): tests/reliability and the few tests
    elsewhere marked ``reliability`` record into it."""
    return Results(results_path(tmp_path_factory.mktemp("reliability") / "results.jsonl"))
