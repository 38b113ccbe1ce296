"""Loading sandbox seeds (SPEC §7 format, YAML or JSON) and checking their top-level shape.

Separate from the vendor states, which each build themselves from their part of the seed; this
module only reads files fast (C YAML loader, plain `json` for big seeds) and names what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from .hubspot_state import TIERS as HUBSPOT_TIERS

try:  # the C loader is ~10x faster; pyyaml ships it whenever libyaml is present
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how pyyaml was built
    _Loader = yaml.SafeLoader


class SeedError(ValueError):
    """A seed that cannot be loaded; the message names the file and what to fix."""


def load_seed(path: str | Path) -> dict[str, Any]:
    """The seed in `path` as a mapping (JSON when the file ends in .json or starts with `{`, else YAML)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedError(f"{file}: cannot read the sandbox seed ({exc.strerror})") from None
    try:
        if file.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SeedError(f"{file}: not valid YAML or JSON: {exc}") from None
    return check_seed(data if data is not None else {}, str(file))


def check_seed(data: Any, where: str = "seed") -> dict[str, Any]:
    """The seed itself when its top level is right; SeedError naming every problem otherwise."""
    if not isinstance(data, Mapping):
        raise SeedError(f"{where}: the seed must be a mapping with `hubspot:` and/or `mailchimp:`")
    # `rehearsal:` (a snapshot's audit memory, from `reconcile --plan --snapshot-out`) is the
    # reconciler's; the sandbox ignores it.
    problems = [f"unknown top-level key {key!r} (expected hubspot, mailchimp, rehearsal)"
                for key in data if key not in ("hubspot", "mailchimp", "rehearsal")]
    hubspot = data.get("hubspot") or {}
    if not isinstance(hubspot, Mapping):
        problems.append("hubspot: must be a mapping")
    else:
        for key in ("subscriptions", "properties", "lists", "contacts", "scopes"):
            if hubspot.get(key) is not None and not isinstance(hubspot[key], list):
                problems.append(f"hubspot.{key}: must be a list")
        tier = hubspot.get("tier")  # optional (default enterprise): the portal's Marketing Hub tier
        if tier is not None and str(tier).lower() not in HUBSPOT_TIERS:
            problems.append(f"hubspot.tier: {tier!r} is not one of {', '.join(HUBSPOT_TIERS)}")
    mailchimp = data.get("mailchimp") or {}
    if not isinstance(mailchimp, Mapping):
        problems.append("mailchimp: must be a mapping")
    elif mailchimp.get("audiences") is not None and not isinstance(mailchimp["audiences"], list):
        problems.append("mailchimp.audiences: must be a list")
    if data.get("rehearsal") is not None and not isinstance(data["rehearsal"], Mapping):
        problems.append("rehearsal: must be a mapping")
    if problems:
        raise SeedError(f"{where}: " + "; ".join(problems))
    return dict(data)


def hubspot_part(seed: Mapping[str, Any]) -> Mapping[str, Any]:
    return seed.get("hubspot") or {}


def mailchimp_part(seed: Mapping[str, Any]) -> Mapping[str, Any]:
    return seed.get("mailchimp") or {}


def write_json_seed(seed: Mapping[str, Any], path: str | Path) -> None:
    """Writes a seed as compact JSON: the fast format for big (100,000-record) seeds."""
    Path(path).write_text(json.dumps(seed, separators=(",", ":")), encoding="utf-8")
