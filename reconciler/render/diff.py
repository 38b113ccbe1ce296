"""Field-level before -> after of one change, as short display strings (SPEC §5 "for updates").

Separate because it is the one place that uses deepdiff: nested values (an address merge field,
a tag map inside a restore) are compared here, for display only; the core compares on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from reconciler.plan import Change, canonical_json
from reconciler.render.mask import mask_value
from reconciler.render.summary import shorten

VALUE_WIDTH = 80
ABSENT_MARK = "∅"

# The action names say everything about a list membership change; `member: false -> true`
# would only repeat it.
_NO_DETAIL = frozenset({"add_to_list", "remove_from_list"})


class _Absent:
    def __repr__(self) -> str:
        return ABSENT_MARK


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class FieldDiff:
    path: str  # `FNAME`, `ADDRESS.city`, `interests[2]`
    before: Any  # ABSENT when the field was not there
    after: Any


def plain(value: Any) -> Any:
    """JSON-able dicts and lists from the plan's frozen values (what the checksum sees)."""
    return json.loads(canonical_json(value))


def _path(head: str, rest: list[Any]) -> str:
    out = head
    for part in rest:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _same(old: Any, new: Any) -> bool:
    return type(old) is type(new) and old == new  # True == 1, but a type change is a change


def field_diffs(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[FieldDiff]:
    """Every field that differs, nested ones by their path, sorted by path."""
    old_map, new_map = plain(before), plain(after)
    diffs: list[FieldDiff] = []
    for key in sorted(set(old_map) | set(new_map)):
        old, new = old_map.get(key, ABSENT), new_map.get(key, ABSENT)
        if _same(old, new):
            continue
        if isinstance(old, (dict, list)) and isinstance(new, (dict, list)):
            diffs.extend(_nested(key, old, new))
        else:
            diffs.append(FieldDiff(key, old, new))
    return diffs


def _nested(key: str, old: Any, new: Any) -> list[FieldDiff]:
    # Imported here: deepdiff (and the numpy it loads) costs ~0.25 s, and most plans have no
    # nested values to show.
    from deepdiff import DeepDiff
    from deepdiff.helper import notpresent

    found = []
    for levels in DeepDiff(old, new, view="tree").values():
        for level in levels:
            found.append(
                FieldDiff(
                    _path(key, level.path(output_format="list")),
                    ABSENT if level.t1 is notpresent else level.t1,
                    ABSENT if level.t2 is notpresent else level.t2,
                )
            )
    return sorted(found, key=lambda d: d.path)


def show_value(value: Any, redact: bool) -> str:
    if value is ABSENT:
        return ABSENT_MARK
    shown = mask_value(value) if redact else value
    return shorten(json.dumps(shown, ensure_ascii=False, default=str), VALUE_WIDTH)


_TAG_ACTIONS = frozenset({"add_tags", "remove_tags"})


def _is_tag_map(change: Change, diffs: list[FieldDiff]) -> bool:
    """Tag maps (`{"VIP": true}`) read better as `+VIP` / `-VIP`."""
    return change.action in _TAG_ACTIONS and all(d.after is True or d.after is False for d in diffs)


def detail_lines(change: Change, redact: bool) -> list[str]:
    """`FNAME: "Ann" → "Anna"` per changed field; `+Tag` / `-Tag` for tag changes."""
    if change.action in _NO_DETAIL:
        return []
    diffs = field_diffs(change.before, change.after)
    if diffs and _is_tag_map(change, diffs):
        return [("+" if d.after else "-") + (mask_value(d.path) if redact else d.path) for d in diffs]
    return [
        f"{mask_value(d.path) if redact else d.path}: {show_value(d.before, redact)} → {show_value(d.after, redact)}"
        for d in diffs
    ]
