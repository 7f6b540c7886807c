"""The data-quality definitions that are data: the validation-rule seed, the DQ pseudo data
elements and the health_information indicators that read them."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from pipelines.config import parse_config
from pipelines.errors import ConfigError
from pipelines.indicators import (
    check_operands,
    compile_expression,
    data_quality_elements,
    load_indicators,
)
from pipelines.paths import DBT_PROJECT_DIR, INDICATORS_DIR
from pipelines.simulate.catalogue import ALL_DATA_ELEMENTS

RULES = DBT_PROJECT_DIR / "seeds" / "validation_rules.csv"
SUM_OF_OPERANDS = re.compile(r"^\s*#\{[^}]+\}(\s*\+\s*#\{[^}]+\})*\s*$")


def rules() -> list[dict[str, str]]:
    with RULES.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["rule_id"])
def test_rule_sides_are_dhis2_sums_of_known_operands(rule: dict[str, str]) -> None:
    known = {de.uid: set(de.combo_uids) for de in ALL_DATA_ELEMENTS}
    for side in ("left_side", "right_side"):
        expression = rule[side]
        # The dbt model only adds operands; the DHIS2 compiler must accept the same text.
        assert SUM_OF_OPERANDS.match(expression), f"{rule['rule_id']}.{side}: {expression}"
        compiled = compile_expression(expression)
        assert compiled.operands
        for operand in compiled.operands:
            assert operand.data_element_id in known, f"{rule['rule_id']}: {operand.text}"
            if operand.category_option_combo_id:
                assert operand.category_option_combo_id in known[operand.data_element_id]


def test_rule_ids_are_unique() -> None:
    ids = [rule["rule_id"] for rule in rules()]
    assert len(ids) == len(set(ids))


def test_dq_indicators_read_only_dq_pseudo_elements_and_are_computable() -> None:
    elements = data_quality_elements()
    assert {"DQ_OUTLIER_VALUES_CHECKED", "DQ_RULES_VIOLATED", "DQ_CONSISTENCY_CHECKED"} <= elements
    definitions = yaml.safe_load(
        (INDICATORS_DIR / "health_information.yml").read_text(encoding="utf-8")
    )["indicators"]
    dq_ids = {d["id"] for d in definitions if d["id"].startswith("dq_")}
    assert {
        "dq_outlier_rate_extreme",
        "dq_validation_rule_violation_rate",
        "dq_consistency_over_time",
    } <= dq_ids
    for definition in definitions:
        if definition["id"] in dq_ids:
            assert "Data Quality Review" in definition["description"]
    # With any DHIS2 data element present, the DQ operands count as known.
    compiled = [i for i in load_indicators() if i.definition.id in dq_ids]
    checked = check_operands(compiled, {"hpANC1Visit"} | elements)
    assert all(indicator.is_computable for indicator in checked)


def test_small_cell_threshold_is_configurable(tmp_path: Path) -> None:
    base = {"sources": [{"name": "hmis", "type": "dhis2", "path": "drop"}]}
    assert parse_config(base, origin="t", base_dir=tmp_path, env={}).small_cell_threshold == 5
    config = parse_config(
        {**base, "small_cell_threshold": 11}, origin="t", base_dir=tmp_path, env={}
    )
    assert config.small_cell_threshold == 11
    with pytest.raises(ConfigError, match="small_cell_threshold"):
        parse_config({**base, "small_cell_threshold": 0}, origin="t", base_dir=tmp_path, env={})
