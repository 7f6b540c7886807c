"""healthpipe.yml: valid files load; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "healthpipe.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_resolves_paths_from_the_config_folder(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
warehouse: duckdb:///var/wh.duckdb
indicator_paths: [my_indicators]
sources:
  - name: hmis
    type: dhis2
    path: exports/hmis
  - name: emr
    type: fhir
    base_url: https://emr.example.org/fhir
    token_env: EMR_TOKEN
""",
    )
    config = load_config(path, env={"EMR_TOKEN": "secret"})
    assert config.warehouse == f"duckdb:///{tmp_path / 'var' / 'wh.duckdb'}"
    assert config.source("hmis").path == tmp_path / "exports" / "hmis"
    assert config.indicator_paths == [tmp_path / "my_indicators"]
    assert config.source("emr").token_env == "EMR_TOKEN"
    assert config.config_path == path


def test_environment_overrides_the_warehouse(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: [{name: a, type: dhis2, path: x}]\n")
    config = load_config(path, env={"HEALTHPIPE_WAREHOUSE": "postgresql://u@db:5432/hp"})
    assert config.warehouse == "postgresql://u@db:5432/hp"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "warehose: duckdb:///x.duckdb\nsources: [{name: a, type: dhis2, path: x}]\n",
            "warehose: unknown key",
        ),
        (
            "sources:\n  - name: a\n    type: dhis2\n    path: x\n    pasword_env: P\n",
            "sources[0].pasword_env: unknown key",
        ),
        (
            "sources:\n  - name: a\n    type: dhsi2\n    path: x\n",
            "sources[0].type: input should be 'dhis2', 'fhir', 'hl7v2', 'odk', 'kobo' or 'tabular'",
        ),
        (
            "sources:\n  - name: a\n    type: dhis2\n    path: x\n    page_size: many\n",
            "sources[0].page_size",
        ),
        ("warehouse: duckdb:///x.duckdb\n", "sources: required key is missing"),
        (
            "sources:\n  - {name: a, type: dhis2, path: x}\n  - {name: a, type: dhis2, path: y}\n",
            "source names must be unique; repeated: a",
        ),
        (
            "sources:\n  - {name: emr, type: fhir, path: x}\n",
            "sources[0]: a fhir source needs base_url",
        ),
        (
            "sources:\n  - {name: hmis, type: dhis2, path: x, forms: [household_visit]}\n",
            "sources[0]: forms applies to odk sources, not dhis2",
        ),
        ("sources: [\n", "not valid YAML at line 2"),
        ("- just\n- a list\n", "expected a mapping of keys"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    message = str(error.value)
    assert message.startswith(str(path)), message
    assert expected in message, message


def test_missing_credential_variables_are_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
sources:
  - name: hmis
    type: dhis2
    base_url: https://dhis2.example.org
    username_env: DHIS2_USER
    password_env: DHIS2_PASSWORD
""",
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, env={"DHIS2_USER": "admin"})
    message = str(error.value)
    assert (
        f"{path}: sources[0].password_env: environment variable DHIS2_PASSWORD is not set"
        in message
    )
    assert "DHIS2_USER" not in message


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yml", env={})


def test_the_shipped_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "healthpipe.yml", env={})
    assert [s.name for s in config.sources] == ["demo_hmis"]
