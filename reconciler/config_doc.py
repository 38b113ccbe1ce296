"""Generates the configuration reference (schemas/README.md) from the schema's descriptions.

Separate so the page is never edited by hand: `python -m reconciler.config_doc > schemas/README.md`,
and a test fails when the committed page differs from what this prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Iterator

from reconciler.config_schema import load_schema

HEADER = """# Configuration reference

Generated from `schemas/config.schema.json` by `python -m reconciler.config_doc > schemas/README.md`;
do not edit by hand. The example `config/reconciler.yaml` uses every key.

`--config PATH` is a YAML file or a directory (every `*.yaml` directly in it, merged deeply).
`${NAME}` in a string is replaced from the environment (`$${` writes a literal `${`).
Ids (HubSpot lists and subscriptions, the Mailchimp audience) are quoted strings.
`<name>` stands for a name you choose; `[]` for each item of a list.

| Key | Type | Required | Default | Description |
|---|---|---|---|---|
"""


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The schema with its `$ref` followed; the referring schema's own keys (description) win."""
    ref = schema.get("$ref")
    if not ref:
        return schema
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    merged = dict(resolve(target, root))
    merged.update({k: v for k, v in schema.items() if k != "$ref"})
    return merged


Entry = tuple[str, dict[str, Any], bool]  # key path, its schema, required


def walk(schema: dict[str, Any], root: dict[str, Any], path: str = "") -> Iterator[Entry]:
    """Every documented key path of the schema, depth first, in schema order."""
    schema = resolve(schema, root)
    required = set(schema.get("required", ()))
    for name, child in schema.get("properties", {}).items():
        yield from _child(f"{path}.{name}" if path else name, child, root, name in required)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _child(f"{path}.<name>", extra, root, False)
    items = schema.get("items")
    if isinstance(items, dict) and path:
        child = resolve(items, root)
        if "properties" in child or "additionalProperties" in child:
            yield from walk(child, root, f"{path}[]")


def _child(path: str, child: dict[str, Any], root: dict[str, Any], required: bool) -> Iterator[Entry]:
    resolved = resolve(child, root)
    yield path, resolved, required
    yield from walk(resolved, root, path)


def type_text(schema: dict[str, Any], root: dict[str, Any]) -> str:
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    types = schema.get("type", "")
    names = types if isinstance(types, list) else [types]
    words = []
    for name in names:
        if name == "array":
            item = resolve(schema.get("items", {}), root)
            inner = type_text(item, root) if item else "any"
            words.append(f"list of {inner}")
        elif name == "object":
            words.append("mapping")
        elif name == "boolean" and "const" in schema.get("then", {}):
            words.append(f"`{json.dumps(schema['then']['const'])}`")  # a boolean allowed only as this value
        elif name:
            words.append(name)
    text = " or ".join(words) or "any"
    bounds = [f"{label} {schema[key]}" for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"))
              if key in schema]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def render() -> str:
    root = load_schema()
    rows = []
    for path, schema, required in walk(root, root):
        default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
        description = " ".join(str(schema.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {type_text(schema, root)} | {'yes' if required else ''} | {default} | {description} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
