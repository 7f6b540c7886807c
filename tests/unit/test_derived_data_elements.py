"""Derived data element definitions: the filter grammar, validation errors that name the
file and entry, and the built-in library (every domain, documented, every operand defined)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.derived import (
    RECORD_SOURCES,
    DerivedDataElementDefinition,
    compile_condition,
    compile_derived,
)
from pipelines.errors import IndicatorDefinitionError
from pipelines.indicators import DOMAINS, data_quality_elements, load_definitions
from pipelines.paths import PROJECT_DIR
from pipelines.simulate.catalogue import ALL_DATA_ELEMENTS, DATA_SETS

LAB = RECORD_SOURCES["fct_lab_results"]


@pytest.mark.parametrize(
    ("condition", "sql"),
    [
        ("test_code = '70569-9'", "r.test_code = '70569-9'"),
        ("turnaround_hours <= 24", "r.turnaround_hours <= 24"),
        ("is_positive = TRUE", "r.is_positive = true"),
        ("units <> 'x'", "r.units != 'x'"),
        ("test_code in ('a', 'b''c')", "r.test_code in ('a', 'b''c')"),
        ("test_code not in ('a')", "r.test_code not in ('a')"),
        ("value_code is null", "r.value_code is null"),
        ("value_code is not null", "r.value_code is not null"),
    ],
)
def test_filter_grammar_compiles_to_quoted_sql(condition: str, sql: str) -> None:
    assert compile_condition(condition, LAB) == sql


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("test_code = '1'; drop table x", "not `column op value`"),
        ("test_code = 1 or 1 = 1", "not `column op value`"),
        ("lower(test_code) = 'a'", "not `column op value`"),
        ("secret = 'a'", "unknown column secret"),
        ("test_code like 'a%'", "not `column op value`"),
    ],
)
def test_anything_outside_the_grammar_is_refused(condition: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        compile_condition(condition, LAB)


def element(**overrides: object) -> DerivedDataElementDefinition:
    entry: dict[str, object] = {
        "id": "my_count",
        "name": "Mine",
        "domain": "laboratory",
        "source": "fct_lab_results",
        "period_type": "Weekly",
        "date_column": "collected_date",
        "aggregation": "count",
        **overrides,
    }
    return DerivedDataElementDefinition.model_validate(entry)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"source": "raw.hl7v2__results"}, "is not a record source"),
        ({"date_column": None}, "exactly one of date_column and period_column"),
        ({"period_column": "period_id"}, "exactly one of date_column and period_column"),
        ({"date_column": "birth_date"}, "date_column 'birth_date' is not a column"),
        ({"aggregation": "sum"}, "aggregation sum needs a `column`"),
        ({"filter": ["nope"]}, "filter 'nope'"),
        ({"disaggregate_by": "name"}, "disaggregate_by 'name' is not a column"),
    ],
)
def test_definition_errors_name_the_file_and_entry(
    overrides: dict[str, object], problem: str
) -> None:
    with pytest.raises(IndicatorDefinitionError) as error:
        compile_derived(element(**overrides), Path("lab.yml"), 3)
    message = str(error.value)
    assert "lab.yml: derived_data_elements[3] (my_count)" in message
    assert problem in message


def test_value_sql_per_aggregation() -> None:
    compiled = compile_derived(
        element(aggregation="count_distinct", column="patient_key", filter="is_positive = true"),
        Path("x.yml"),
        0,
    )
    assert compiled.value_sql == "count(distinct r.patient_key)"
    assert compiled.filter_sql == "r.is_positive = true"
    summed = compile_derived(
        element(aggregation="sum", column="turnaround_hours"), Path("x.yml"), 0
    )
    assert summed.value_sql == "sum(cast(r.turnaround_hours as double precision))"
    assert summed.filter_sql == "true"


def test_a_file_with_a_bad_derived_element_is_named(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yml"
    extra.write_text(
        "derived_data_elements:\n  - id: x\n    name: X\n    domain: nowhere\n"
        "    source: fct_stock\n    period_type: Monthly\n    period_column: period_id\n"
        "    aggregation: count\n",
        encoding="utf-8",
    )
    with pytest.raises(IndicatorDefinitionError, match=r"mine\.yml.*domain 'nowhere'"):
        load_definitions([extra])


def test_dbt_reads_exactly_the_record_sources_python_validates() -> None:
    macro = (PROJECT_DIR / "macros" / "derived_data_values.sql").read_text(encoding="utf-8")
    listed = re.search(r"return\(\[(.*?)\]\)", macro, re.DOTALL)
    assert listed
    assert set(re.findall(r"'(\w+)'", listed.group(1))) == set(RECORD_SOURCES)
    # the facts are split between the values aggregated before the alerts and those over the
    # alert records, aggregated after them (pipelines/run.py)
    alert_sources = re.search(r"hp_alert_record_sources\(\) %}\s*{{ return\(\[(.*?)\]\)", macro)
    assert alert_sources
    after_alerts = set(re.findall(r"'(\w+)'", alert_sources.group(1)))
    assert after_alerts == {"fct_alert_timeliness"}
    intermediate = PROJECT_DIR / "models" / "intermediate"
    for model, expected in (
        ("int_derived_data_values", set(RECORD_SOURCES) - after_alerts),
        ("int_alert_data_values", after_alerts),
    ):
        text = (intermediate / f"{model}.sql").read_text(encoding="utf-8")
        assert set(re.findall(r"ref\('(fct_\w+)'\)", text)) == expected, model
    for source in RECORD_SOURCES:
        assert list(PROJECT_DIR.glob(f"models/marts/**/{source}.sql")), source


CITED = re.compile(
    r"\b(WHO|UNICEF|UNAIDS|USAID|OpenLMIS|PEFA|SDG|IDSR|GTFCC|ISO|iCCM|HL7|DHIS2|Frieden)\b"
)


def test_the_library_covers_every_domain_with_documented_indicators() -> None:
    definitions = load_definitions()
    per_domain = {domain: 0 for domain in DOMAINS}
    for indicator in definitions.indicators:
        per_domain[indicator.definition.domain] += 1
        description = indicator.definition.description
        assert description.strip(), indicator.definition.id
        assert CITED.search(description), f"{indicator.definition.id} cites no standard"
    assert all(count >= 4 for count in per_domain.values()), per_domain
    assert sum(per_domain.values()) >= 40


def test_every_operand_of_the_library_is_defined() -> None:
    """Built-in indicators read simulated DHIS2 data elements, reporting counts of simulated
    data sets, or built-in derived data elements: none is silently not computable."""
    definitions = load_definitions()
    known = {de.uid for de in ALL_DATA_ELEMENTS} | {d.definition.id for d in definitions.derived}
    known |= data_quality_elements()  # the dbt data-quality models' counts ("DQ_...")
    known |= {
        f"R:{ds.uid}:{m}"
        for ds in DATA_SETS
        for m in ("ACTUAL_REPORTS", "EXPECTED_REPORTS", "ACTUAL_REPORTS_ON_TIME")
    }
    for indicator in definitions.indicators:
        for operand in indicator.aliases:
            assert operand.data_element_id in known, (indicator.definition.id, operand.text)
    derived_ids = {d.definition.id for d in definitions.derived}
    assert not derived_ids & {de.uid for de in ALL_DATA_ELEMENTS}
