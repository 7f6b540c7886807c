"""KoboToolbox's ``query`` parameter: a MongoDB filter document, evaluated like MongoDB.

Supported: ``{"field": value}`` (equality; ``null`` also matches a missing field),
``{"field": {"$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$in" | "$nin" | "$exists" |
"$regex": ...}}``, and ``$and`` / ``$or`` / ``$nor`` lists. As in MongoDB, comparisons only
hold between values of the same kind (numbers with numbers, strings with strings), so
``_submission_time`` (stored as the string ``2026-01-31T08:00:00``) compares as text:
``{"_submission_time": {"$gte": "2026-01-31"}}`` works, a number does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

MISSING = object()
Test = Callable[[Mapping[str, Any]], bool]


class QueryError(ValueError):
    pass


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _ordered(op: str, actual: Any, expected: Any) -> bool:
    if actual is MISSING or _kind(actual) is None or _kind(actual) != _kind(expected):
        return False
    if op == "$gt":
        return bool(actual > expected)
    if op == "$gte":
        return bool(actual >= expected)
    if op == "$lt":
        return bool(actual < expected)
    return bool(actual <= expected)


def _equal(actual: Any, expected: Any) -> bool:
    if expected is None:
        return actual is MISSING or actual is None
    if isinstance(actual, list) and not isinstance(expected, list):
        return expected in actual
    return actual is not MISSING and _kind(actual) == _kind(expected) and bool(actual == expected)


def _operator(op: str, argument: Any) -> Callable[[Any], bool]:
    if op == "$eq":
        return lambda actual: _equal(actual, argument)
    if op == "$ne":
        return lambda actual: not _equal(actual, argument)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return lambda actual: _ordered(op, actual, argument)
    if op in ("$in", "$nin"):
        if not isinstance(argument, list):
            raise QueryError(f"{op} needs a list")
        hit: Callable[[Any], bool] = lambda actual: any(_equal(actual, v) for v in argument)  # noqa: E731
        return hit if op == "$in" else (lambda actual: not hit(actual))
    if op == "$exists":
        return lambda actual: (actual is not MISSING) == bool(argument)
    if op == "$regex":
        if not isinstance(argument, str):
            raise QueryError("$regex needs a string")
        pattern = re.compile(argument)
        return lambda actual: isinstance(actual, str) and pattern.search(actual) is not None
    raise QueryError(f"unsupported operator {op}")


def _field_test(field: str, condition: Any) -> Test:
    if (
        isinstance(condition, Mapping)
        and condition
        and all(str(k).startswith("$") for k in condition)
    ):
        checks = [_operator(op, argument) for op, argument in condition.items()]
        return lambda row: all(check(row.get(field, MISSING)) for check in checks)
    return lambda row: _equal(row.get(field, MISSING), condition)


def _junction(kind: str, parts: list[Test]) -> Test:
    if kind == "$and":
        return lambda row: all(part(row) for part in parts)
    if kind == "$or":
        return lambda row: any(part(row) for part in parts)
    return lambda row: not any(part(row) for part in parts)


def compile_query(query: Any) -> Test:
    """Compile a filter document; raises :class:`QueryError` for what it cannot evaluate."""
    if not isinstance(query, Mapping):
        raise QueryError("query must be a JSON object")
    tests: list[Test] = []
    for key, condition in query.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(condition, list) or not condition:
                raise QueryError(f"{key} needs a non-empty list")
            tests.append(_junction(key, [compile_query(part) for part in condition]))
        elif key.startswith("$"):
            raise QueryError(f"unsupported operator {key}")
        else:
            tests.append(_field_test(key, condition))
    return lambda row: all(test(row) for test in tests)
