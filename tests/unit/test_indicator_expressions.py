"""DHIS2 indicator expressions: parsing, errors with positions, and the SQL they compile to."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipelines.errors import IndicatorDefinitionError
from pipelines.indicators import (
    IndicatorDefinition,
    Operand,
    check_operands,
    compile_expression,
    compile_indicator,
    load_indicators,
)


def definition(numerator: str, denominator: str = "1", **extra: object) -> IndicatorDefinition:
    return IndicatorDefinition.model_validate(
        {
            "id": "test_indicator",
            "name": "Test",
            "domain": "surveillance",
            "description": "test",
            "numerator": numerator,
            "denominator": denominator,
            "factor": 100,
            "unit": "%",
            **extra,
        }
    )


def evaluate(sql: str, **operands: float | None) -> float | None:
    """Run compiled SQL in DuckDB with the operand columns bound to values."""
    columns = (
        ", ".join(
            f"cast({'null' if v is None else v} as double) as {k}" for k, v in operands.items()
        )
        or "1 as unused"
    )
    row = duckdb.connect().execute(f"select {sql} from (select {columns})").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_operands_in_all_three_forms() -> None:
    compiled = compile_expression("#{deA} + #{deB.cocB} - #{deC.*.aocC} + #{deA}")
    assert compiled.operands == (
        Operand("deA", None, None),
        Operand("deB", "cocB", None),
        Operand("deC", None, "aocC"),
    )


def test_precedence_parentheses_and_unary_minus() -> None:
    indicator = compile_indicator(definition("(#{a} + #{b}) * 2 - -#{c} / 4"), Path("x.yml"))
    assert evaluate(indicator.numerator_sql, o1=1, o2=2, o3=8) == pytest.approx(8.0)


def test_missing_operands_count_as_zero_unless_all_are_missing() -> None:
    indicator = compile_indicator(definition("#{a} + #{b}"), Path("x.yml"))
    assert evaluate(indicator.numerator_sql, o1=5, o2=None) == 5
    assert evaluate(indicator.numerator_sql, o1=None, o2=None) is None


def test_division_by_zero_gives_null_not_an_error() -> None:
    indicator = compile_indicator(definition("#{a} / #{b}"), Path("x.yml"))
    assert evaluate(indicator.numerator_sql, o1=5, o2=0) is None
    assert evaluate(indicator.numerator_sql, o1=5, o2=2) == 2.5


def test_integer_literals_divide_as_real_numbers() -> None:
    indicator = compile_indicator(definition("#{a} * (1 / 4)"), Path("x.yml"))
    assert evaluate(indicator.numerator_sql, o1=2) == 0.5


@pytest.mark.parametrize(
    ("numerator", "expected"),
    [
        ("#{a} +", "ends too early at position 7"),
        ("(#{a} + #{b}", "missing ')' at position 13"),
        ("#{a} #{b}", "unexpected '#{b}' at position 6"),
        ("#{a} + C{xyz}", "not supported yet"),
        ("#{a} % 2", "unexpected text '% 2' at position 6"),
        ("", "the expression is empty at position 1"),
    ],
)
def test_errors_name_file_indicator_and_position(numerator: str, expected: str) -> None:
    with pytest.raises(IndicatorDefinitionError) as error:
        compile_indicator(definition(numerator), Path("indicators/mine.yml"))
    message = str(error.value)
    assert message.startswith("indicators/mine.yml: indicator test_indicator: numerator"), message
    assert expected in message, message


def test_an_indicator_needs_at_least_one_operand() -> None:
    with pytest.raises(IndicatorDefinitionError, match="neither numerator nor denominator"):
        compile_indicator(definition("1", "2"), Path("x.yml"))


def test_unknown_data_elements_make_an_indicator_not_computable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    indicator = compile_indicator(definition("#{known} + #{unknownDE}"), Path("x.yml"))
    (checked,) = check_operands([indicator], {"known"})
    assert not checked.is_computable
    assert "#{unknownDE}" in str(checked.problem)
    assert "test_indicator" in caplog.text and "#{unknownDE}" in caplog.text


def test_builtin_library_compiles() -> None:
    indicators = load_indicators()
    assert indicators, "indicators/ holds no definitions"
    ids = [i.definition.id for i in indicators]
    assert len(ids) == len(set(ids))


def test_user_files_are_added_and_errors_name_them(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yml"
    extra.write_text(
        "indicators:\n"
        "  - id: my_rate\n    name: Mine\n    domain: governance\n    description: d\n"
        "    numerator: '#{x}'\n    denominator: '#{y}'\n    factor: 1\n    unit: ratio\n",
        encoding="utf-8",
    )
    ids = {i.definition.id for i in load_indicators([extra])}
    assert "my_rate" in ids and "anc4_completion_rate" in ids

    extra.write_text("indicators:\n  - id: BadId\n    name: x\n", encoding="utf-8")
    with pytest.raises(IndicatorDefinitionError) as error:
        load_indicators([extra])
    message = str(error.value)
    assert str(extra) in message and "indicators[0] (BadId)" in message and "domain" in message


def test_reporting_items_are_operands_and_rates_expand_to_their_counts() -> None:
    compiled = compile_expression("R{dsUid.ACTUAL_REPORTS} + R{dsUid.REPORTING_RATE}")
    assert [o.data_element_id for o in compiled.operands] == [
        "R:dsUid:ACTUAL_REPORTS",
        "R:dsUid:EXPECTED_REPORTS",
    ]
    assert compiled.operands[0].text == "R{dsUid.ACTUAL_REPORTS}"
    indicator = compile_indicator(definition("R{ds.REPORTING_RATE_ON_TIME}"), Path("x.yml"))
    # o1 = reports on time, o2 = expected reports
    assert evaluate(indicator.numerator_sql, o1=45, o2=50) == pytest.approx(90.0)


def test_unknown_reporting_metric_is_an_error() -> None:
    with pytest.raises(IndicatorDefinitionError, match="unknown reporting metric REPORTS_LATE"):
        compile_indicator(definition("R{ds.REPORTS_LATE}"), Path("x.yml"))
