"""Validation of the merged configuration against `schemas/config.schema.json`, with located messages.

Separate from the loader because it owns one job: turning jsonschema's errors into one line each,
pointing at the offending key or value and saying what to do, never echoing a resolved value.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema

from reconciler.config_yaml import Document, KeyPath, problem

# `reconciler/data/config.schema.json` is a symlink to the repository's `schemas/` copy, so a
# checkout reads the one file, and a wheel (which copies the link's target) ships it as package data.
SCHEMA_PATH = (Path(__file__).resolve().parent / "data" / "config.schema.json").resolve()

_TYPE_WORDS = {
    "string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "array": "a list", "object": "a mapping", "null": "null",
}

# What a failed pattern means, and what to do, for the patterns the schema uses.
_PATTERN_HINTS = {
    "^[0-9]+$": ("is not an id made of digits", "write the HubSpot id as quoted digits, e.g. \"719\""),
    "^https?://": ("is not an http(s) URL", "write a URL starting with https://"),
    "^[0-9A-Za-z]+$": ("is not a Mailchimp list id", "use the audience id from Mailchimp's audience settings, e.g. \"abc123def4\""),
    "^\\S(.*\\S)?$": ("has leading or trailing spaces", "remove the spaces around the tag name"),
    "^[A-Za-z0-9_]+$": ("is not a HubSpot property internal name", "use the property's internal name, e.g. firstname"),
    "^[A-Z][A-Z0-9_]{0,9}$": ("is not a Mailchimp merge tag", "use the merge tag as Mailchimp shows it: upper case, at most 10 characters, e.g. FNAME"),
    "^[A-Za-z][A-Za-z0-9_-]*$": ("is not a valid name", "start with a letter and use only letters, digits, - and _"),
    "^[A-Za-z0-9][A-Za-z0-9_ -]*$": ("is not a valid stream name", "use letters, digits, spaces, - and _"),
}


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    with SCHEMA_PATH.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


def describe_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "null (empty)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def shown(value: Any) -> str:
    """A short rendering of a value as written in the file (never a resolved one)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


class SchemaChecker:
    """Maps each jsonschema error to problem lines; `raw` is the document as written."""

    def __init__(self, doc: Document, raw_value: Callable[[KeyPath], Any], hidden: Callable[[KeyPath], bool]) -> None:
        self.doc = doc
        self.raw_value = raw_value
        self.hidden = hidden

    def value_text(self, path: KeyPath) -> str:
        return "the value" if self.hidden(path) else shown(self.raw_value(path))

    def check(self, data: Any, skip: Callable[[KeyPath, str], bool]) -> list[str]:
        validator = jsonschema.Draft202012Validator(load_schema())
        found: list[str] = []
        for error in validator.iter_errors(data):
            path: KeyPath = tuple(error.absolute_path)
            if skip(path, str(error.validator)):
                continue
            found.extend(self.lines(error, path))
        return found

    def lines(self, error: jsonschema.ValidationError, path: KeyPath) -> Iterable[str]:
        kind = str(error.validator)
        schema = error.schema if isinstance(error.schema, dict) else {}
        if "propertyNames" in error.schema_path:
            name = str(error.instance)
            what, todo = _PATTERN_HINTS.get(str(error.validator_value), ("is not allowed here", "rename it"))
            yield problem(self.doc.key_at(path + (name,)), path + (name,), f"name {shown(name)} {what}", todo)
        elif kind == "additionalProperties":
            yield from self._unknown_keys(error, path, schema)
        elif kind == "required":
            present = error.instance if isinstance(error.instance, dict) else {}
            for name in error.validator_value:
                if name not in present:
                    yield problem(self.doc.at(path), path + (name,), "required key is missing", f"add `{name}:` here")
        elif kind == "type":
            yield self._type(error, path, schema)
        else:
            yield self._value(error, path, kind, schema)

    def _unknown_keys(self, error: jsonschema.ValidationError, path: KeyPath, schema: dict[str, Any]) -> Iterable[str]:
        allowed = list(schema.get("properties", {}))
        for name in error.instance:
            if name in allowed:
                continue
            close = difflib.get_close_matches(name, allowed, n=1)
            todo = f"did you mean `{close[0]}`?" if close else (
                f"remove it (allowed here: {', '.join(allowed)})" if allowed else "remove it")
            yield problem(self.doc.key_at(path + (name,)), path + (name,), f"unknown key `{name}`", todo)

    def _type(self, error: jsonschema.ValidationError, path: KeyPath, schema: dict[str, Any]) -> str:
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in expected)
        got = describe_type(error.instance)
        if "string" in expected and isinstance(error.instance, (int, float)) and not isinstance(error.instance, bool):
            return problem(self.doc.at(path), path, f"expected {words}, got {got}",
                           f"quote it: \"{self.doc.texts.get(path, self.raw_value(path))}\"")
        if error.instance is None:
            return problem(self.doc.at(path), path, f"expected {words}, got nothing", "give it a value or remove the key")
        todo = f"write {words}"
        if isinstance(error.instance, str) and set(expected) & {"integer", "number", "boolean"}:
            todo += " without quotes"
        return problem(self.doc.at(path), path, f"expected {words}, got {got}", todo)

    def _value(self, error: jsonschema.ValidationError, path: KeyPath, kind: str, schema: dict[str, Any]) -> str:
        where, value = self.doc.at(path), self.value_text(path)
        limit = error.validator_value
        if kind == "enum":
            choices = ", ".join(str(c) for c in limit)
            close = difflib.get_close_matches(str(error.instance), [str(c) for c in limit], n=1)
            hint = f"did you mean {close[0]}? (one of: {choices})" if close else f"use one of: {choices}"
            return problem(where, path, f"{value} is not allowed", hint)
        if kind == "const":
            # A `then: {const: ...}` carries its own hint (e.g. `to_hubspot: true`: a mapping or false).
            hint = schema.get("description") if "then" in error.schema_path else None
            return problem(where, path, f"{value} is not supported", str(hint or f"write {shown(limit)}"))
        if kind == "pattern":
            what, todo = _PATTERN_HINTS.get(str(limit), (f"does not match {limit}", _todo_from(schema, "fix the value")))
            return problem(where, path, f"{value} {what}", todo)
        if kind in ("minimum", "exclusiveMinimum"):
            bound = "at least" if kind == "minimum" else "more than"
            return problem(where, path, f"{value} is too small", f"use a value {bound} {limit}")
        if kind in ("maximum", "exclusiveMaximum"):
            bound = "at most" if kind == "maximum" else "less than"
            return problem(where, path, f"{value} is too large", f"use a value {bound} {limit}" + _why(schema))
        if kind in ("minItems", "minProperties", "minLength"):
            types = schema.get("type")
            if kind == "minItems" and isinstance(types, list) and "boolean" in types:
                return problem(where, path, "must not be empty", "list at least one, or write false to turn it off")
            return problem(where, path, "must not be empty", _todo_from(schema, "give it a value or remove the key"))
        if kind == "maxLength":
            return problem(where, path, f"is longer than {limit} characters", "shorten it")
        if kind == "uniqueItems":
            return problem(where, path, "lists the same item twice", "keep each item once")
        return problem(where, path, f"invalid value ({kind})", _todo_from(schema, "fix the value"))


def _todo_from(schema: dict[str, Any], fallback: str) -> str:
    description = schema.get("description")
    return f"expected: {description.split('. ')[0].rstrip('.')}" if description else fallback


def _why(schema: dict[str, Any]) -> str:
    """The description's last sentence, which for bounded keys says where the bound comes from."""
    sentences = [s for s in str(schema.get("description", "")).rstrip(".").split(". ") if s]
    return f" ({sentences[-1]})" if len(sentences) > 1 else ""
