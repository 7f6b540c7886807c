"""Every source type in one run, as the demo does it (file drops and the sandbox's APIs):
every simulated record arrives and reconciles, and no patient identifier reaches the
warehouse, the logs or the Data Docs."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest

from pipelines.demo import DemoResult, run_demo
from pipelines.warehouse import Warehouse

KEY = "all-sources-test-key-0123456789"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, str]:
    workdir = tmp_path_factory.mktemp("all_sources")
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEALTHPIPE_PSEUDONYM_KEY", KEY)
        patch.delenv("HEALTHPIPE_WAREHOUSE", raising=False)
        try:
            result = run_demo(workdir, seed=7, districts=2, weeks=30)
        finally:
            root.removeHandler(handler)
            root.setLevel(previous)
    return result, "\n".join(records)


def file_counts(country: Path) -> dict[str, int]:
    """Records each source's files hold that a pull must deliver."""
    counts: dict[str, int] = {}
    for server in ("emr", "ihris"):
        total = 0
        for path in (country / "fhir" / server / "ndjson").glob("*.ndjson"):
            total += sum(
                1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            )
        counts["emr" if server == "emr" else "ihris"] = total
    odk = 0
    for path in (country / "odk").rglob("submissions.json"):
        odk += sum(
            1
            for row in json.loads(path.read_text())["value"]
            if not row["__system"].get("deletedAt")
        )
    counts["chw"] = odk
    counts["nutrition"] = sum(
        len(json.loads(path.read_text())["results"])
        for path in (country / "kobo").rglob("data.json")
    )
    return counts


def test_every_source_type_lands_and_reconciles(demo_run: Any) -> None:
    result, _ = demo_run
    received = {name: count for name, _, count in result.sources}
    assert {kind for _, kind, _ in result.sources} == {
        "dhis2",
        "fhir",
        "hl7v2",
        "odk",
        "kobo",
        "tabular",
    }
    assert all(count > 0 for count in received.values()), received
    for source, expected in file_counts(result.country_dir).items():
        assert received[source] >= expected, (source, received[source], expected)
    with Warehouse.open(result.config.warehouse) as warehouse:
        statuses = warehouse.fetchall(
            "select source, entity, status, message from audit.pipeline_runs "
            "where step = 'reconcile' and run_id = $run",
            {"run": result.run.run_id},
        )
    assert statuses and all(status == "success" for _, _, status, _ in statuses), statuses


def _place_words(country: Path) -> set[str]:
    """Words of org-unit names: the simulator's person names share some of them (Amani,
    Baraka ...), and a district name in the warehouse is not a leak."""
    units = json.loads((country / "dhis2" / "metadata" / "organisationUnits.json").read_text())
    return {word for unit in units["organisationUnits"] for word in unit["name"].split()}


def _identifiers(country: Path) -> set[str]:
    """Names, phones, addresses, exact birth dates and raw ids of people in the source files."""
    found: set[str] = set()
    for path in (country / "fhir" / "emr" / "ndjson").glob("Patient.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            patient = json.loads(line)
            found.update({patient["id"], patient.get("birthDate", "")})
            for name in patient.get("name", []):
                given = name.get("given", [""])
                found.add(f"{given[0]} {name.get('family', '')}")
                found.add(name.get("family", ""))
            found.update(t.get("value", "") for t in patient.get("telecom", []))
            found.update(i.get("value", "") for i in patient.get("identifier", []))
            for address in patient.get("address", []):
                found.update(address.get("line", []))
    for path in (country / "hl7").rglob("*.hl7"):
        for segment in re.split(r"[\r\n]+", path.read_text(encoding="ascii", errors="replace")):
            fields = segment.split("|")
            if fields[0] != "PID" or len(fields) < 14:
                continue
            found.update(repetition.split("^")[0] for repetition in fields[3].split("~"))
            family, _, rest = fields[5].partition("^")
            found.update({family, f"{rest.split('^')[0]} {family}", fields[7][:8]})
            found.add(fields[11].split("^")[0])
            found.add(fields[13].split("^")[-1])
    for path in (country / "odk").rglob("submissions.json"):
        for row in json.loads(path.read_text())["value"]:
            household = row.get("household") or {}
            found.update(
                str(household.get(k, "")) for k in ("household_id", "head_name", "head_phone")
            )
    places = _place_words(country)
    # Values that would match by chance are left to the checks below: short ones, short
    # numbers (a facility's record number 000057 is also a message's sequence number) and
    # dates (a birth date is also someone's visit date).
    return {
        value
        for value in found
        if len(value) >= 6
        and value not in places
        and not (value.isdigit() and len(value) < 10)
        and not DATE.match(value)
    }


# Every date of the calendar is a DHIS2 daily period id (20150324), so an HL7 birth date
# (YYYYMMDD) "occurs" in these tables without anything having leaked.
CALENDARS = {
    "int_calendar_days",
    "int_calendar_periods",
    "int_periods",
    "int_period_rollups",
    "dim_period",
}
DATE = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")
_TOKEN = re.compile(r"[\w+]+(?:[-.:/][\w+]+)*")


def _found_in(identifiers: set[str], text: str) -> list[str]:
    """Identifiers occurring in ``text`` as whole tokens (a medical record number 000057 is
    not found inside a message id DL_D001_DH01-000057); names with spaces as phrases."""
    tokens = set(_TOKEN.findall(text))
    return [v for v in identifiers if (v in text if " " in v else v in tokens)]


def test_no_person_identifier_reaches_the_warehouse_logs_or_data_docs(demo_run: Any) -> None:
    result, logs = demo_run
    identifiers = _identifiers(result.country_dir)
    assert len(identifiers) > 50
    leaks: dict[str, list[str]] = {}
    with Warehouse.open(result.config.warehouse) as warehouse:
        columns = warehouse.fetchall(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_schema in ('raw', 'audit', 'staging', 'intermediate', 'marts') "
            "and data_type in ('VARCHAR', 'TEXT', 'text', 'character varying', 'JSON')"
        )
        by_table: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in columns:
            by_table.setdefault((schema, table), []).append(column)
        for (schema, table), names in by_table.items():
            if table in CALENDARS:
                continue
            # each column's distinct values: the same verdict, without tokenising a value as
            # often as it repeats (the suppression helpers repeat group ids millions of times)
            text = " ".join(
                str(value)
                for name in names
                for (value,) in warehouse.fetchall(
                    f"select distinct {name} from {schema}.{table} where {name} is not null"
                )
            )
            if found := _found_in(identifiers, text):
                leaks[f"{schema}.{table}"] = found
    docs = result.config.state_dir / "site" / "data-docs"
    pages = " ".join(p.read_text(encoding="utf-8", errors="replace") for p in docs.rglob("*.html"))
    assert pages, "no Data Docs were written"
    if found := _found_in(identifiers, pages):
        leaks["data docs"] = found
    if found := _found_in(identifiers, logs):
        leaks["logs"] = found
    assert KEY not in logs and KEY not in pages
    assert not leaks, {place: values[:5] for place, values in leaks.items()}


def test_exact_birth_dates_are_reduced_to_years(demo_run: Any) -> None:
    result, _ = demo_run
    with Warehouse.open(result.config.warehouse) as warehouse:
        birth_columns = warehouse.fetchall(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where column_name like '%birth%'"
        )
        patients = warehouse.fetchall("select resource_json from raw.fhir__patient")
        births = warehouse.fetchall(
            "select distinct patient_birth_year from raw.hl7v2__results where patient_birth_year is not null"
        )
    assert birth_columns and all("year" in column for _, _, column in birth_columns), birth_columns
    # FHIR allows a year-only birthDate: the resource keeps that and nothing finer.
    kept = [json.loads(row[0]).get("birthDate") for row in patients]
    assert patients and all(day is None or re.fullmatch(r"\d{4}", day) for day in kept), kept[:5]
    assert births and all(len(str(year)) == 4 for (year,) in births)


def readme_sql_blocks() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    return [block.strip().rstrip(";") for block in re.findall(r"```sql\n(.*?)```", readme, re.S)]


def test_readme_queries_run_as_written(demo_run: Any) -> None:
    """Issue 6: the epidemiologists' example queries run as written on the demo warehouse
    and answer something."""
    result, _ = demo_run
    blocks = readme_sql_blocks()
    assert len(blocks) >= 5
    with Warehouse.open(result.config.warehouse) as warehouse:
        for block in blocks:
            assert warehouse.fetchall(block), block


PARITY_COLUMNS = (
    "indicator_id, domain, org_unit_id, org_unit_level, period_id, period_type, "
    "numerator, denominator, factor, value"
)


@pytest.mark.postgres
def test_every_source_gives_the_same_indicators_on_postgres(
    demo_run: Any, postgres_url: str, tmp_path: Path
) -> None:
    """Issue 6's bar: the demo country (every source type, every domain) gives identical
    indicator_values on PostgreSQL and on DuckDB."""
    from pipelines.demo import DEMO_CREDENTIALS_ENV, demo_config
    from pipelines.run import run_pipeline
    from pipelines.sandbox.server import start_sandbox

    result, _ = demo_run
    with start_sandbox(result.country_dir) as sandbox, pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEALTHPIPE_PSEUDONYM_KEY", KEY)
        for name, field in DEMO_CREDENTIALS_ENV.items():
            patch.setenv(name, str(getattr(sandbox.credentials, field)))
        urls = {
            "emr": sandbox.fhir_url("emr"),
            "ihris": sandbox.fhir_url("ihris"),
            "odk": sandbox.odk_url,
            "kobo": sandbox.kobo_url,
        }
        config = demo_config(tmp_path, result.country_dir, urls).model_copy(
            update={"warehouse": postgres_url}
        )
        run_pipeline(config)
    query = f"select {PARITY_COLUMNS} from marts.indicator_values order by 1, 3, 5"
    with Warehouse.open(result.config.warehouse) as duck, Warehouse.open(postgres_url) as pg:
        on_duckdb, on_postgres = duck.fetchall(query), pg.fetchall(query)
        # the README's queries are the same SQL on both engines
        for block in readme_sql_blocks():
            assert len(pg.fetchall(block)) == len(duck.fetchall(block)), block
    assert len(on_duckdb) > 1000
    assert {row[1] for row in on_duckdb} >= {
        "infrastructure", "workforce", "supply_chain", "health_information",
        "quality_improvement", "community_engagement", "governance", "cross_sectoral",
        "surveillance", "laboratory",
    }  # fmt: skip
    # keys exactly; numbers to 1e-9 relative: the engines add doubles in different orders
    assert [row[:6] for row in on_postgres] == [row[:6] for row in on_duckdb]
    for pg_row, duck_row in zip(on_postgres, on_duckdb, strict=True):
        for pg_value, duck_value in zip(pg_row[6:], duck_row[6:], strict=True):
            assert (pg_value is None) == (duck_value is None), (pg_row, duck_row)
            if pg_value is not None:
                assert math.isclose(pg_value, duck_value, rel_tol=1e-9), (pg_row, duck_row)
