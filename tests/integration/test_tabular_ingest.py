"""Spreadsheet drops end to end: the simulator's CSV (and, as a second source, XLSX) files are
landed, validated against the DHIS2 org units landed before them, and staged; every row is
accounted for and every defect in truth.json ends where it should."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import HealthpipeConfig, parse_config
from pipelines.run import ingest_source, open_warehouse
from pipelines.simulate import SimulationResult, build_country, simulate
from pipelines.simulate.tabular import DRIFTED_NAMES
from pipelines.sources.tabular import SCHEMAS
from pipelines.transform import run_dbt
from pipelines.warehouse import Warehouse

ROW_RULES = ("org_unit_known", "required_field_present", "value_in_range", "duplicate")
"""Rules truth.json expects for row defects (``duplicate``: exact copies, which share no
natural key with their original, since rows are keyed by file and row, so the suite flags them)."""


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    country = build_country(7, districts=2, regions=1, facilities_per_district=(3, 4))
    root = tmp_path_factory.mktemp("tabular_country")
    return simulate(root, country=country, weeks=30, sources=["dhis2", "tabular"])


def workbook_copy(drop: SimulationResult, folder: Path) -> Path:
    """The simulator's workbooks alone, in the same layout: a drop of XLSX files."""
    source = drop.out_dir / "tabular"
    for path in source.rglob("*.xlsx"):
        target = folder / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return folder


def make_config(warehouse: str, drop: SimulationResult, state: Path) -> HealthpipeConfig:
    data = {
        "warehouse": warehouse,
        "state_dir": str(state),
        "sources": [
            # The DHIS2 metadata is what the spreadsheet suites need (the org-unit codes);
            # its data values would only slow the test down.
            {"name": "hmis", "type": "dhis2", "path": str(drop.out_dir / "dhis2" / "metadata")},
            {"name": "sheets", "type": "tabular", "path": str(drop.out_dir / "tabular")},
            {"name": "workbooks", "type": "tabular", "path": str(workbook_copy(drop, state / "x"))},
        ],
    }
    env = {k: v for k, v in os.environ.items() if k != "HEALTHPIPE_WAREHOUSE"}
    return parse_config(data, origin="test config", base_dir=state, env=env)


def csv_rows(drop: SimulationResult) -> dict[str, dict[str, int]]:
    """Data rows per entity and CSV file (path relative to the tabular folder)."""
    rows: dict[str, dict[str, int]] = defaultdict(dict)
    for path, count in drop.counts["tabular"].items():
        if path.endswith(".csv"):
            relative = path.removeprefix("tabular/")
            entity = "lmis_stock" if relative.startswith("lmis_stock/") else relative[:-4]
            rows[entity][relative] = count
    return rows


def quarantined(warehouse: Warehouse, source: str) -> set[tuple[str, str, str]]:
    """(entity, record key ``file|row``, rule) of every quarantined row of a source."""
    rows = warehouse.fetchall(
        "select raw_table, record_key, rule from audit.quarantine where source_name = $source",
        {"source": source},
    )
    return {(table.removeprefix("tabular__"), key, rule) for table, key, rule in rows}


def raw_rows(warehouse: Warehouse, source: str, entity: str) -> dict[str, dict[str, Any]]:
    table = f"raw.tabular__{entity}"
    arrow = warehouse.fetch_arrow(
        f"select * from {table} where source_name = $source", {"source": source}
    )
    return {f"{r['source_file']}|{r['source_row']}": r for r in arrow.to_pylist()}


def defect_key(defect: dict[str, Any]) -> str:
    return f"{defect['record']['file'].removeprefix('tabular/')}|{defect['record']['row']}"


def check_every_row_is_accounted_for(
    warehouse: Warehouse, summary: Any, expected: dict[str, dict[str, int]]
) -> None:
    for entity, files in expected.items():
        counts = summary.entities[entity]
        received = sum(files.values())
        # Rows are keyed by file and row, so no key repeats within a page and none lacks a key:
        # every row received lands, then is either published (valid) or held back.
        assert counts.received == received == counts.inserted, entity
        assert counts.duplicates == 0
        rows = raw_rows(warehouse, "sheets", entity).values()
        statuses = Counter(r["validation_status"] for r in rows)
        assert statuses["valid"] + statuses["quarantined"] == received, entity
        held = {key for e, key, _ in quarantined(warehouse, "sheets") if e == entity}
        assert len(held) == statuses["quarantined"] == counts.quarantined, entity


def check_truth(
    warehouse: Warehouse, drop: SimulationResult, expected: dict[str, dict[str, int]]
) -> tuple[set[str], dict[str, float]]:
    """Every defect is held back with its rule; no clean row is. Returns the clean row keys
    and the scores (precision and recall of the quarantine against truth)."""
    truth = json.loads((drop.out_dir / "truth.json").read_text(encoding="utf-8"))
    defects = [d for d in truth["defects"] if d["source"] == "tabular"]
    held = quarantined(warehouse, "sheets")
    rules_of: dict[str, set[str]] = defaultdict(set)
    for _, key, rule in held:
        rules_of[key].add(rule)

    drifted = {
        d["record"]["file"].removeprefix("tabular/") for d in defects if d["kind"] == "schema_drift"
    }
    assert drifted, "the simulation should drift the LMIS header"
    for file in drifted:
        for row in range(1, expected["lmis_stock"][file] + 1):
            assert "schema_drift" in rules_of[f"{file}|{row}"], (file, row)

    renamed = tuple(f"'{name}'" for name in DRIFTED_NAMES.values())
    found = masked = 0
    for defect in defects:
        key, rule = defect_key(defect), defect["expected_rule"]
        if rule in ROW_RULES:
            file = key.split("|")[0]
            if file in drifted and any(name in defect["detail"] for name in renamed):
                # The column holding the defect is the renamed one: it is not read at all, and
                # the whole file is held back for schema drift instead.
                assert "schema_drift" in rules_of[key], defect
                masked += 1
            else:
                assert rule in rules_of[key], defect
                found += 1
        elif rule == "formula_neutralised":
            entity = defect["entity"]
            row = raw_rows(warehouse, "sheets", entity)[key]
            path = drop.out_dir / defect["record"]["file"]
            with path.open(newline="", encoding="utf-8") as handle:
                written = list(csv.DictReader(handle))[defect["record"]["row"] - 1]["comment"]
            assert row["comment"] == written, defect  # stored as plain text, never evaluated
            if key.split("|")[0] not in drifted:
                assert row["validation_status"] == "valid", defect

    defective = {defect_key(d) for d in defects if d["expected_rule"] in ROW_RULES}
    drift_rows = {key for key in rules_of if key.split("|")[0] in drifted}
    clean = (
        {
            f"{file}|{row}"
            for files in expected.values()
            for file, count in files.items()
            for row in range(1, count + 1)
        }
        - defective
        - drift_rows
    )
    assert not clean & set(rules_of), sorted(clean & set(rules_of))
    expected_rules = len([d for d in defects if d["expected_rule"] in ROW_RULES])
    scores = {
        "precision": len(set(rules_of) & (defective | drift_rows)) / len(rules_of),
        "recall_exact_rule": found / expected_rules,
        "recall_held_back": (found + masked) / expected_rules,
    }
    return clean, scores


def check_workbooks_match_csv(warehouse: Warehouse) -> None:
    """The XLSX drop lands the same values and holds back the same rows for the same rules."""
    for entity, schema in SCHEMAS.items():
        from_csv = raw_rows(warehouse, "sheets", entity)
        from_xlsx = raw_rows(warehouse, "workbooks", entity)
        assert {k.replace(".xlsx", ".csv") for k in from_xlsx} == set(from_csv), entity
        columns = [c.name for c in schema.columns] + ["extras", "missing_columns"]
        for key, row in from_xlsx.items():
            twin = from_csv[key.replace(".xlsx", ".csv")]
            assert {c: row[c] for c in columns} == {c: twin[c] for c in columns}, key
    as_csv = {(e, k.replace(".xlsx", ".csv"), r) for e, k, r in quarantined(warehouse, "workbooks")}
    assert as_csv == quarantined(warehouse, "sheets")


def staged(config: HealthpipeConfig, entity: str) -> dict[str, dict[str, Any]]:
    with Warehouse.open(config.warehouse) as warehouse:
        arrow = warehouse.fetch_arrow(
            f"select * from staging.stg_tabular__{entity} where source_name = 'sheets'"
        )
    return {f"{r['source_file']}|{r['source_row']}": r for r in arrow.to_pylist()}


def test_spreadsheet_drops_land_validate_and_stage(
    warehouse_url: str, drop: SimulationResult, tmp_path: Path
) -> None:
    config = make_config(warehouse_url, drop, tmp_path)
    expected = csv_rows(drop)
    with open_warehouse(config) as warehouse:
        ingest_source(warehouse, config.source("hmis"), config, run_id="run1")
        summary = ingest_source(warehouse, config.source("sheets"), config, run_id="run1")
        ingest_source(warehouse, config.source("workbooks"), config, run_id="run1")
        check_every_row_is_accounted_for(warehouse, summary, expected)
        clean, scores = check_truth(warehouse, drop, expected)
        print(f"tabular defects on {warehouse.kind}: {scores}")
        assert scores["precision"] == 1 and scores["recall_held_back"] == 1
        check_workbooks_match_csv(warehouse)
        # The new column of a drifted file is kept, never dropped.
        drifted = warehouse.fetchall(
            "select extras from raw.tabular__lmis_stock where source_name = 'sheets' "
            "and missing_columns = 'stock_on_hand'"
        )
        assert drifted and all("soh" in json.loads(extras) for (extras,) in drifted)

        valid = {
            key
            for entity in SCHEMAS
            for key, row in raw_rows(warehouse, "sheets", entity).items()
            if row["validation_status"] == "valid"
        }
        assert clean <= valid
        before = warehouse.row_count("audit.quarantine")
        again = ingest_source(warehouse, config.source("sheets"), config, run_id="run2")
        assert again.pages == 0
        assert warehouse.row_count("audit.quarantine") == before
        dbt_env = warehouse.dbt_env()

    outcome = run_dbt(
        ["build", "--select", "path:models/staging/tabular"],
        dbt_env=dbt_env,
        state_dir=config.state_dir,
    )
    assert outcome.failed == [] and outcome.succeeded > 0
    # Staging publishes exactly the valid rows (no business key repeats across the simulated
    # files), every clean row among them, with the formula-like comments as plain text.
    staged_keys = {key for entity in SCHEMAS for key in staged(config, entity)}
    assert staged_keys == valid

    # A changed file is re-read: a corrected value replaces the old one, rows that are gone
    # become deletions, and the staging views follow without a rebuild.
    governance = drop.out_dir / "tabular" / "governance.csv"
    with governance.open(newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    first_clean = next(n for n in range(1, len(rows) + 1) if f"governance.csv|{n}" in clean)
    saved = governance.read_bytes()
    try:
        rows[first_clean - 1][header.index("budget_spent")] = "1000"
        with governance.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows([header, *rows[:-2]])
        with open_warehouse(config) as warehouse:
            changed = ingest_source(warehouse, config.source("sheets"), config, run_id="run3")
            counts = changed.entities["governance"]
            assert (counts.received, counts.updated, counts.inserted) == (len(rows), 3, 0)
            gone = warehouse.fetchall(
                "select source_row from raw.tabular__governance where source_name = 'sheets' "
                "and is_deleted order by 1"
            )
            assert gone == [(str(len(rows) - 1),), (str(len(rows)),)]
        now = staged(config, "governance")
        assert now[f"governance.csv|{first_clean}"]["budget_spent"] == 1000
        assert f"governance.csv|{len(rows)}" not in now
    finally:
        governance.write_bytes(saved)
