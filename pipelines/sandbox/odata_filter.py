"""The OData ``$filter`` subset ODK Central understands, for the sandbox's Submissions feed.

Central filters on submission metadata only: ``__system/submitterId``,
``__system/submissionDate``, ``__system/updatedAt``, ``__system/reviewState`` and
``__system/deletedAt`` (also written ``$root/Submissions/__system/...``), with ``eq ne gt ge
lt le``, ``and or not``, parentheses, and the functions ``year month day hour minute second
now``. Literals: ``null``, ``true``/``false``, numbers, quoted strings (``'approved'``), dates
(``2026-01-31``, compared as midnight UTC) and timestamps with a zone
(``2026-01-31T23:59:59.999Z``, ``...+03:00``). A field outside that list is a 501, as in
Central; a syntax error is a 400.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

FIELDS = {
    "__system/submitterId",
    "__system/submissionDate",
    "__system/updatedAt",
    "__system/reviewState",
    "__system/deletedAt",
}
TIME_FIELDS = {"__system/submissionDate", "__system/updatedAt", "__system/deletedAt"}
FUNCTIONS = {"year", "month", "day", "hour", "minute", "second", "now"}
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punct>[(),])|(?P<word>[^\s(),']+))")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class FilterError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


Row = Mapping[str, Any]
Evaluator = Callable[[Row], Any]


@dataclass(frozen=True)
class CompiledFilter:
    test: Callable[[Row], bool]
    fields: frozenset[str]

    @property
    def mentions_deleted(self) -> bool:
        return "__system/deletedAt" in self.fields


def _tokens(text: str) -> list[str]:
    # A "+03:00" offset sent unencoded arrives as " 03:00": put the plus back.
    text = re.sub(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:\d{2})\b", r"\1+\2", text)
    tokens, position = [], 0
    while position < len(text):
        found = _TOKEN.match(text, position)
        if not found or found.end() == position:
            if text[position:].strip():
                raise FilterError(f"Cannot read $filter at: {text[position:]!r}")
            break
        tokens.append(found.group("str") or found.group("punct") or found.group("word"))
        position = found.end()
    return tokens


@lru_cache(maxsize=1 << 18)
def parse_time(text: str) -> datetime:
    # Cached: every page of a paged feed filters and sorts the same timestamps again.
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def field_value(row: Row, path: str) -> Any:
    value: Any = row
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, Mapping) else None
    if path in TIME_FIELDS and isinstance(value, str):
        return parse_time(value)
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.position = 0
        self.fields: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise FilterError(f"$filter: expected {expected or 'more'} but found {token!r}")
        self.position += 1
        return token

    def parse(self) -> CompiledFilter:
        expression = self.or_expression()
        if self.peek() is not None:
            raise FilterError(f"$filter: unexpected {self.peek()!r}")
        return CompiledFilter(lambda row: bool(expression(row)), frozenset(self.fields))

    def or_expression(self) -> Evaluator:
        parts = [self.and_expression()]
        while self.peek() == "or":
            self.take()
            parts.append(self.and_expression())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def and_expression(self) -> Evaluator:
        parts = [self.not_expression()]
        while self.peek() == "and":
            self.take()
            parts.append(self.not_expression())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def not_expression(self) -> Evaluator:
        if self.peek() == "not":
            self.take()
            inner = self.not_expression()
            return lambda row: not inner(row)
        return self.comparison()

    def comparison(self) -> Evaluator:
        left = self.operand()
        op = self.peek()
        if op not in COMPARISONS:
            return left
        self.take()
        right = self.operand()
        compare = COMPARISONS[op]

        def test(row: Row) -> bool:
            a, b = _coerce(left(row), right(row))
            if a is None or b is None:
                # Only eq/ne can hold with a null on one side (``deletedAt ne null``).
                if op == "eq":
                    return a is None and b is None
                if op == "ne":
                    return (a is None) != (b is None)
                return False
            try:
                return bool(compare(a, b))
            except TypeError:
                return False

        return test

    def operand(self) -> Evaluator:
        token = self.take()
        if token == "(":
            inner = self.or_expression()
            self.take(")")
            return inner
        if token in FUNCTIONS and self.peek() == "(":
            return self.function(token)
        return self.literal_or_field(token)

    def function(self, name: str) -> Evaluator:
        self.take("(")
        if name == "now":
            self.take(")")
            # The protocol's "now" is the wall clock, as in Central.
            return lambda row: datetime.now(UTC)
        argument = self.or_expression()
        self.take(")")

        def part(row: Row) -> Any:
            value = argument(row)
            return getattr(value, name) if isinstance(value, datetime | date) else None

        return part

    def literal_or_field(self, token: str) -> Evaluator:
        if token.startswith("'"):
            text = token[1:-1].replace("''", "'")
            return lambda row: text
        if token in ("null", "true", "false"):
            constant = {"null": None, "true": True, "false": False}[token]
            return lambda row: constant
        if _NUMBER.match(token):
            number = float(token) if "." in token else int(token)
            return lambda row: number
        if _TIMESTAMP.match(token):
            moment = datetime.fromisoformat(token.replace("Z", "+00:00"))
            return lambda row: moment
        if _DATE.match(token):
            midnight = datetime.fromisoformat(token).replace(tzinfo=UTC)
            return lambda row: midnight
        path = token.removeprefix("$root/Submissions/")
        if path not in FIELDS:
            raise FilterError(
                "The given OData filter expression references fields not supported by this "
                f"server: {token}",
                501,
            )
        self.fields.add(path)
        return lambda row: field_value(row, path)


def _coerce(a: Any, b: Any) -> tuple[Any, Any]:
    """Compare ``submitterId`` (a string in the JSON) with a number literal as numbers."""
    if isinstance(a, str) and isinstance(b, int | float) and _NUMBER.match(a):
        return float(a), b
    if isinstance(b, str) and isinstance(a, int | float) and _NUMBER.match(b):
        return a, float(b)
    return a, b


def compile_filter(text: str) -> CompiledFilter:
    """Compile a ``$filter`` expression; raises :class:`FilterError`."""
    return _Parser(text).parse()
