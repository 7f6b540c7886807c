"""The command line as a user meets it: real processes, real files, short clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from tests.conftest import SAMPLES


def healthpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HEALTHPIPE_WAREHOUSE", "HEALTHPIPE_CONFIG")
    }
    return subprocess.run(
        [sys.executable, "-m", "healthpipe", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_malformed_config_gives_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "healthpipe.yml"
    config.write_text(
        "sources:\n  - name: hmis\n    type: dhis2\n    path: drop\n    page_sise: 10\n",
        encoding="utf-8",
    )
    result = healthpipe("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0]
    assert "sources[0].page_sise: unknown key" in lines[0]
    assert "Traceback" not in result.stderr


def drop_with_values(tmp_path: Path, values_text: str) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "organisationUnits.json").write_bytes(
        (SAMPLES / "dhis2" / "organisationUnits.json").read_bytes()
    )
    (drop / "values.json").write_text(values_text, encoding="utf-8")
    config = tmp_path / "healthpipe.yml"
    config.write_text(
        "warehouse: duckdb:///warehouse.duckdb\nsources:\n  - {name: hmis, type: dhis2, path: drop}\n",
        encoding="utf-8",
    )
    return config


def test_a_truncated_data_value_set_names_file_line_and_column(tmp_path: Path) -> None:
    text = (SAMPLES / "dhis2" / "dataValueSet_bulk.json").read_text(encoding="utf-8")[:700]
    config = drop_with_values(tmp_path, text)
    result = healthpipe("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert str(tmp_path / "drop" / "values.json") in lines[0]
    assert "not valid JSON" in lines[0] and "line" in lines[0] and "column" in lines[0]


def test_a_data_value_set_of_the_wrong_shape_names_the_field(tmp_path: Path) -> None:
    config = drop_with_values(tmp_path, json.dumps({"dataValues": {"dataElement": "x"}}))
    result = healthpipe("run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "values.json: field dataValues: expected a JSON list, got dict" in lines[0]


def test_demo_runs_and_says_where_the_results_are(tmp_path: Path) -> None:
    result = healthpipe(
        "demo", "--workdir", str(tmp_path / "var"), "--districts", "3", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "Warehouse:" in result.stdout
    assert "indicator_values" in result.stdout
    # It ends by saying where the bulletin, the dbt docs and the Data Docs are, and they are.
    printed = {
        label: line.split(": ", 1)[1].strip()
        for line in result.stdout.splitlines()
        for label in ("Weekly bulletin (", "dbt docs", "Data Docs")
        if line.startswith(label) and ": " in line
    }
    assert set(printed) == {"Weekly bulletin (", "dbt docs", "Data Docs"}, result.stdout
    for path in printed.values():
        assert Path(path).is_file(), path
    assert "<svg" in Path(printed["Weekly bulletin ("]).read_text(encoding="utf-8")
    warehouse = tmp_path / "var" / "healthpipe.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        levels = connection.execute(
            "select distinct org_unit_level from marts.indicator_values order by 1"
        ).fetchall()
    assert levels == [(1,), (2,), (3,), (4,)]


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = healthpipe("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "run", "simulate"):
        assert command in result.stdout
