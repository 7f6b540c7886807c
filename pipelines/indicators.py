"""Indicator definitions: YAML files compiled for the dbt indicator engine.

Each file holds a top-level ``indicators:`` list (DESIGN.md) and may hold a
``derived_data_elements:`` list (pipelines/derived.py), whose ids indicators use as data
elements. Numerators and denominators
use DHIS2's expression syntax: ``#{dataElement}``, ``#{dataElement.categoryOptionCombo}``,
``#{de.coc.aoc}`` with ``*`` as a wildcard, reporting items ``R{dataSet.ACTUAL_REPORTS}``,
``EXPECTED_REPORTS``, ``ACTUAL_REPORTS_ON_TIME``, ``REPORTING_RATE`` and
``REPORTING_RATE_ON_TIME``, numbers, ``+ - * /`` and parentheses.

The compiler turns an expression into SQL over per-indicator operand columns ``o1, o2 ...``
(each the operand's value already aggregated to the org unit and period, as DHIS2 does), and
lists the operands. Following DHIS2, a missing operand counts as 0 unless every operand of the
expression is missing, in which case the expression has no value; division by zero gives
NULL. The compiled rows go to ``raw.healthpipe__indicators`` and
``raw.healthpipe__indicator_operands``, which the dbt model ``indicator_values`` reads.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.derived import (
    CompiledDerivedDataElement,
    DerivedDataElementDefinition,
    compile_derived,
    publish_derived,
)
from pipelines.errors import IndicatorDefinitionError
from pipelines.paths import DBT_PROJECT_DIR, INDICATORS_DIR
from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

DOMAINS = (
    "infrastructure",
    "workforce",
    "supply_chain",
    "health_information",
    "quality_improvement",
    "community_engagement",
    "governance",
    "cross_sectoral",
    "surveillance",
    "laboratory",
)
Domain = Literal[
    "infrastructure",
    "workforce",
    "supply_chain",
    "health_information",
    "quality_improvement",
    "community_engagement",
    "governance",
    "cross_sectoral",
    "surveillance",
    "laboratory",
]


class IndicatorDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=80)
    name: str = Field(min_length=1)
    domain: Domain
    description: str = Field(min_length=1)
    numerator: str
    denominator: str
    factor: float
    unit: str
    target: float | None = None
    direction: Literal["higher_is_better", "lower_is_better"] | None = None

    @field_validator("numerator", "denominator", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        # `denominator: 1` is natural YAML for a count indicator.
        return str(value) if isinstance(value, int | float) else value


# --- expressions -------------------------------------------------------------------------

_UID = r"[A-Za-z0-9][A-Za-z0-9_-]*"

# Reporting-rate operands (DHIS2's R{dataSet.METRIC}) read the counts the dbt model
# int_reporting_facts derives per data set, org unit and period, stored in fct_data_values
# under the pseudo data element "R:<data set>:<metric>".
REPORTING_PREFIX = "R:"
REPORTING_COUNTS = ("ACTUAL_REPORTS", "EXPECTED_REPORTS", "ACTUAL_REPORTS_ON_TIME")
REPORTING_RATES = {
    "REPORTING_RATE": "ACTUAL_REPORTS",
    "REPORTING_RATE_ON_TIME": "ACTUAL_REPORTS_ON_TIME",
}


def reporting_operand(data_set: str, metric: str) -> Operand:
    return Operand(f"{REPORTING_PREFIX}{data_set}:{metric}", None, None)


_TOKEN = re.compile(
    rf"""
    (?P<space>\s+)
  | (?P<operand>\#\{{(?P<de>{_UID})(?:\.(?P<coc>{_UID}|\*))?(?:\.(?P<aoc>{_UID}|\*))?\}})
  | (?P<reporting>R\{{(?P<ds>{_UID})\.(?P<metric>[A-Z_]+)\}})
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<op>[-+*/()])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Operand:
    data_element_id: str
    category_option_combo_id: str | None  # None: every combo (the data element total)
    attribute_option_combo_id: str | None

    @property
    def text(self) -> str:
        if self.data_element_id.startswith(REPORTING_PREFIX):
            _, data_set, metric = self.data_element_id.split(":")
            return f"R{{{data_set}.{metric}}}"
        parts = [self.data_element_id]
        if self.category_option_combo_id or self.attribute_option_combo_id:
            parts.append(self.category_option_combo_id or "*")
        if self.attribute_option_combo_id:
            parts.append(self.attribute_option_combo_id)
        return "#{" + ".".join(parts) + "}"


@dataclass(frozen=True)
class Token:
    kind: str  # operand | number | op | end
    text: str
    position: int  # 1-based character position in the expression
    operand: Operand | None = None


class ExpressionError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


def tokenize(expression: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    while index < len(expression):
        match = _TOKEN.match(expression, index)
        if not match:
            snippet = expression[index : index + 12]
            hint = ""
            if expression.startswith(("C{", "OUG{", "I{", "D{", "A{"), index):
                hint = (
                    " (constants, org-unit group counts and other item types are not supported yet)"
                )
            raise ExpressionError(f"unexpected text {snippet!r}{hint}", index + 1)
        kind = match.lastgroup or ""
        if kind == "operand":
            coc = match.group("coc")
            aoc = match.group("aoc")
            operand = Operand(
                match.group("de"),
                None if coc in (None, "*") else coc,
                None if aoc in (None, "*") else aoc,
            )
            tokens.append(Token("operand", match.group(0), index + 1, operand))
        elif kind == "reporting":
            metric = match.group("metric")
            if metric not in REPORTING_COUNTS and metric not in REPORTING_RATES:
                known = ", ".join((*REPORTING_COUNTS, *REPORTING_RATES))
                raise ExpressionError(
                    f"unknown reporting metric {metric} (known: {known})", index + 1
                )
            tokens.append(
                Token(
                    "reporting",
                    match.group(0),
                    index + 1,
                    reporting_operand(match.group("ds"), metric),
                )
            )
        elif kind in ("number", "op"):
            tokens.append(Token(kind, match.group(0), index + 1))
        index = match.end()
    tokens.append(Token("end", "", len(expression) + 1))
    return tokens


class _Parser:
    """Recursive descent over ``expr := term (('+'|'-') term)*``,
    ``term := unary (('*'|'/') unary)*``, ``unary := ('-'|'+') unary | atom``."""

    def __init__(self, expression: str) -> None:
        self.tokens = tokenize(expression)
        self.index = 0
        self.operands: list[Operand] = []

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def parse(self) -> str:
        if self.current.kind == "end":
            raise ExpressionError("the expression is empty", 1)
        sql = self.expr()
        if self.current.kind != "end":
            raise ExpressionError(f"unexpected {self.current.text!r}", self.current.position)
        return sql

    def expr(self) -> str:
        sql = self.term()
        while self.current.kind == "op" and self.current.text in "+-":
            op = self.current.text
            self.index += 1
            sql = f"({sql} {op} {self.term()})"
        return sql

    def term(self) -> str:
        sql = self.unary()
        while self.current.kind == "op" and self.current.text in "*/":
            op = self.current.text
            self.index += 1
            right = self.unary()
            sql = f"({sql} / nullif({right}, 0))" if op == "/" else f"({sql} * {right})"
        return sql

    def unary(self) -> str:
        if self.current.kind == "op" and self.current.text in "+-":
            op = self.current.text
            self.index += 1
            operand = self.unary()
            return f"(-{operand})" if op == "-" else operand
        return self.atom()

    def use(self, operand: Operand) -> str:
        if operand not in self.operands:
            self.operands.append(operand)
        return f"coalesce({{{operand.text}}}, 0)"

    def atom(self) -> str:
        token = self.current
        if token.kind == "number":
            self.index += 1
            return f"cast({token.text} as double precision)"
        if token.kind == "operand":
            assert token.operand is not None
            self.index += 1
            return self.use(token.operand)
        if token.kind == "reporting":
            assert token.operand is not None
            self.index += 1
            _, data_set, metric = token.operand.data_element_id.split(":")
            if metric not in REPORTING_RATES:
                return self.use(token.operand)
            # A rate is its two counts, so it aggregates like DHIS2's: summed reports over
            # summed expected reports, never an average of rates.
            actual = self.use(reporting_operand(data_set, REPORTING_RATES[metric]))
            expected = self.use(reporting_operand(data_set, "EXPECTED_REPORTS"))
            return f"({actual} * cast(100 as double precision) / nullif({expected}, 0))"
        if token.kind == "op" and token.text == "(":
            self.index += 1
            inner = self.expr()
            if not (self.current.kind == "op" and self.current.text == ")"):
                raise ExpressionError("missing ')'", self.current.position)
            self.index += 1
            return inner
        if token.kind == "end":
            raise ExpressionError("the expression ends too early", token.position)
        raise ExpressionError(f"unexpected {token.text!r}", token.position)


@dataclass(frozen=True)
class CompiledExpression:
    sql_template: str
    """SQL with ``{#{operand}}`` placeholders (filled with column aliases per indicator)."""
    operands: tuple[Operand, ...]


def compile_expression(expression: str) -> CompiledExpression:
    parser = _Parser(expression)
    sql = parser.parse()
    return CompiledExpression(sql, tuple(parser.operands))


# --- loading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledIndicator:
    definition: IndicatorDefinition
    source_file: Path
    numerator_sql: str
    denominator_sql: str
    aliases: dict[Operand, str]
    problem: str | None = None

    @property
    def is_computable(self) -> bool:
        return self.problem is None


def _guard_all_missing(sql: str, aliases: Sequence[str]) -> str:
    if not aliases:
        return sql
    all_null = " and ".join(f"{alias} is null" for alias in aliases)
    return f"case when {all_null} then null else {sql} end"


def _fill(template: str, aliases: dict[Operand, str]) -> str:
    for operand, alias in aliases.items():
        template = template.replace("{" + operand.text + "}", alias)
    return template


def compile_indicator(definition: IndicatorDefinition, source_file: Path) -> CompiledIndicator:
    compiled: dict[str, CompiledExpression] = {}
    for side in ("numerator", "denominator"):
        expression = getattr(definition, side)
        try:
            compiled[side] = compile_expression(expression)
        except ExpressionError as exc:
            raise IndicatorDefinitionError(
                f"{source_file}: indicator {definition.id}: {side} {expression!r}: "
                f"{exc} at position {exc.position}"
            ) from None
    if not compiled["numerator"].operands and not compiled["denominator"].operands:
        raise IndicatorDefinitionError(
            f"{source_file}: indicator {definition.id}: neither numerator nor denominator "
            "refers to a data element (#{...}), so it can have no values"
        )
    aliases: dict[Operand, str] = {}
    for side in ("numerator", "denominator"):
        for operand in compiled[side].operands:
            aliases.setdefault(operand, f"o{len(aliases) + 1}")
    sides = {
        side: _guard_all_missing(
            _fill(compiled[side].sql_template, aliases),
            [aliases[o] for o in compiled[side].operands],
        )
        for side in ("numerator", "denominator")
    }
    return CompiledIndicator(
        definition, source_file, sides["numerator"], sides["denominator"], aliases
    )


def indicator_files(extra_paths: Iterable[Path] = ()) -> list[Path]:
    """The built-in ``indicators/`` folder, then every extra folder or file, in order."""
    files: list[Path] = []
    for path in [INDICATORS_DIR, *extra_paths]:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml")))
        elif path.is_file():
            files.append(path)
        else:
            raise IndicatorDefinitionError(f"{path}: indicator path does not exist")
    return list(dict.fromkeys(files))


@dataclass(frozen=True)
class Definitions:
    indicators: list[CompiledIndicator]
    derived: list[CompiledDerivedDataElement]


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
    )


def _label(entry: object, index: int) -> object:
    return entry.get("id", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"


def load_definitions(extra_paths: Iterable[Path] = ()) -> Definitions:
    """Every indicator and derived data element of the built-in and extra files. A file holds
    an ``indicators:`` list, a ``derived_data_elements:`` list, or both; ids are unique."""
    indicators: list[CompiledIndicator] = []
    derived: list[CompiledDerivedDataElement] = []
    seen: dict[str, Path] = {}
    seen_derived: dict[str, Path] = {}
    for path in indicator_files(extra_paths):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise IndicatorDefinitionError(f"{path}: not valid YAML: {exc}") from None
        lists = ("indicators", "derived_data_elements")
        if (
            not isinstance(document, dict)
            or not any(key in document for key in lists)
            or not all(isinstance(document.get(key, []), list) for key in lists)
        ):
            raise IndicatorDefinitionError(
                f"{path}: expected a top-level `indicators:` or `derived_data_elements:` list"
            )
        for index, entry in enumerate(document.get("derived_data_elements", [])):
            try:
                element = DerivedDataElementDefinition.model_validate(entry)
            except ValidationError as exc:
                raise IndicatorDefinitionError(
                    f"{path}: derived_data_elements[{index}] ({_label(entry, index)}): "
                    f"{_problems(exc)}"
                ) from None
            if element.domain not in DOMAINS:
                raise IndicatorDefinitionError(
                    f"{path}: derived_data_elements[{index}] ({element.id}): domain "
                    f"{element.domain!r} is not one of {', '.join(DOMAINS)}"
                )
            if element.id in seen_derived:
                raise IndicatorDefinitionError(
                    f"{path}: derived data element {element.id} is already defined in "
                    f"{seen_derived[element.id]}"
                )
            seen_derived[element.id] = path
            derived.append(compile_derived(element, path, index))
        for index, entry in enumerate(document.get("indicators", [])):
            try:
                definition = IndicatorDefinition.model_validate(entry)
            except ValidationError as exc:
                raise IndicatorDefinitionError(
                    f"{path}: indicators[{index}] ({_label(entry, index)}): {_problems(exc)}"
                ) from None
            if definition.id in seen:
                raise IndicatorDefinitionError(
                    f"{path}: indicator {definition.id} is already defined in {seen[definition.id]}"
                )
            seen[definition.id] = path
            indicators.append(compile_indicator(definition, path))
    return Definitions(indicators, derived)


def load_indicators(extra_paths: Iterable[Path] = ()) -> list[CompiledIndicator]:
    return load_definitions(extra_paths).indicators


def check_operands(
    indicators: Sequence[CompiledIndicator], known_data_elements: set[str]
) -> list[CompiledIndicator]:
    """An operand no data element defines makes its indicator yield no values (a deployment
    need not hold every data element the built-in library knows); each is logged."""
    checked = []
    for indicator in indicators:
        missing = [
            op.text for op in indicator.aliases if op.data_element_id not in known_data_elements
        ]
        if missing:
            problem = f"unknown data element in {', '.join(missing)}"
            log.warning("indicator %s yields no values: %s", indicator.definition.id, problem)
            indicator = CompiledIndicator(
                indicator.definition,
                indicator.source_file,
                indicator.numerator_sql,
                indicator.denominator_sql,
                indicator.aliases,
                problem,
            )
        checked.append(indicator)
    return checked


def known_data_elements(
    warehouse: Warehouse, derived: Sequence[CompiledDerivedDataElement] = ()
) -> set[str]:
    """Data elements the warehouse holds, the reporting counts of its data sets, and the
    derived data elements (a derived id that a DHIS2 data element already uses is an error:
    both would land in fct_data_values under one id)."""
    rows = warehouse.fetchall(
        "select distinct id from raw.dhis2__data_elements "
        "where validation_status = 'valid' and not is_deleted"
    )
    data_sets = warehouse.fetchall(
        "select distinct id from raw.dhis2__data_sets "
        "where validation_status = 'valid' and not is_deleted"
    )
    known = {row[0] for row in rows}
    for element in derived:
        if element.definition.id in known:
            raise IndicatorDefinitionError(
                f"{element.source_file}: derived data element {element.definition.id} has the "
                "id of a DHIS2 data element in the warehouse; choose another id"
            )
        known.add(element.definition.id)
    known |= {
        reporting_operand(row[0], m).data_element_id for row in data_sets for m in REPORTING_COUNTS
    }
    if known:
        # The data-quality models count checks on whatever data values the warehouse holds.
        known |= data_quality_elements()
    return known


DATA_QUALITY_ELEMENTS_SEED = DBT_PROJECT_DIR / "seeds" / "data_quality_elements.csv"


def data_quality_elements() -> set[str]:
    """The pseudo data elements ("DQ_...") through which the dbt data-quality models feed
    indicators; the seed is the one list both dbt and the compiler read."""
    with DATA_QUALITY_ELEMENTS_SEED.open(newline="", encoding="utf-8") as handle:
        return {row["data_element_id"] for row in csv.DictReader(handle)}


def publish_indicators(
    warehouse: Warehouse,
    indicators: Sequence[CompiledIndicator],
    derived: Sequence[CompiledDerivedDataElement] = (),
) -> None:
    """Replace the definitions the dbt models read, in one transaction."""
    definitions = pa.table(
        {
            "indicator_id": [i.definition.id for i in indicators],
            "name": [i.definition.name for i in indicators],
            "domain": [i.definition.domain for i in indicators],
            "description": [i.definition.description for i in indicators],
            "numerator": [i.definition.numerator for i in indicators],
            "denominator": [i.definition.denominator for i in indicators],
            "numerator_sql": [i.numerator_sql for i in indicators],
            "denominator_sql": [i.denominator_sql for i in indicators],
            "factor": pa.array([i.definition.factor for i in indicators], pa.float64()),
            "unit": [i.definition.unit for i in indicators],
            "target": pa.array([i.definition.target for i in indicators], pa.float64()),
            "direction": pa.array([i.definition.direction for i in indicators], pa.string()),
            "source_file": [str(i.source_file) for i in indicators],
            "is_computable": [i.is_computable for i in indicators],
            "problem": pa.array([i.problem for i in indicators], pa.string()),
        }
    )
    operand_rows = [
        (i.definition.id, alias, op) for i in indicators for op, alias in i.aliases.items()
    ]
    operands = pa.table(
        {
            "indicator_id": [row[0] for row in operand_rows],
            "operand_alias": [row[1] for row in operand_rows],
            "data_element_id": [row[2].data_element_id for row in operand_rows],
            "category_option_combo_id": pa.array(
                [row[2].category_option_combo_id for row in operand_rows], pa.string()
            ),
            "attribute_option_combo_id": pa.array(
                [row[2].attribute_option_combo_id for row in operand_rows], pa.string()
            ),
        }
    )
    with warehouse.transaction():
        warehouse.execute("delete from raw.healthpipe__indicator_operands")
        warehouse.execute("delete from raw.healthpipe__indicators")
        warehouse.load_arrow("raw.healthpipe__indicators", definitions)
        warehouse.load_arrow("raw.healthpipe__indicator_operands", operands)
        publish_derived(warehouse, derived)
