"""`tag_rules` conditions (SPEC §3): which tag a source gives a contact, from its properties.

Separate because the comparison semantics (decimals for gt/gte/lt/lte, a null or non-numeric value
making the condition false) are a small language of their own, shared with HubSpot's text values.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Mapping

from reconciler.settings import Source, TagRule


def is_true(value: Any) -> bool:
    """HubSpot booleans arrive as strings: `"true"`."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def tag_for(source: Source, properties: Mapping[str, Any]) -> str:
    """The first matching `tag_rules` entry replaces the source's `tag`."""
    for rule in source.tag_rules:
        if rule_matches(rule, properties.get(rule.property)):
            return rule.tag
    return source.tag


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


@lru_cache(maxsize=256)
def _constant_decimal(value: Any) -> Decimal | None:
    """A config value as a decimal, converted once (tag rules run once per contact)."""
    return _decimal(value)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def rule_matches(rule: TagRule, actual: Any) -> bool:
    """SPEC §3: gt/gte/lt/lte compare as decimals (null or non-numeric: false); eq/ne/in compare
    as decimals when both sides are numbers, otherwise as trimmed text (case-sensitive)."""
    op, expected = rule.op, rule.value
    if op == "is_set":
        is_set = _text(actual) != ""
        return is_set if expected is None or expected is True else is_set == _truthy(expected)
    if op in ("gt", "gte", "lt", "lte"):
        if actual is None:
            return False
        left, right = _decimal(actual), _constant_decimal(expected)
        if left is None or right is None:
            return False
        return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]
    if op in ("in", "not_in"):
        values = expected if isinstance(expected, (list, tuple)) else (expected,)
        found = any(_equal(actual, v) for v in values)
        return found if op == "in" else not found
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    return False


def _truthy(value: Any) -> bool:
    return is_true(value) or value == 1


def _equal(actual: Any, expected: Any) -> bool:
    if actual is None:
        return expected is None
    left, right = _decimal(actual), _decimal(expected)
    if left is not None and right is not None:
        return left == right
    return _text(actual) == _text(expected)

