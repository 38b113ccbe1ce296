"""Counting and grouping a Plan for display: summary rows, reason groups, changes by action.

Shared by the text, JSON and Markdown renderers so all three count the same way. Grouping is
presentation only: it never changes, drops or reorders what the plan says will happen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

from reconciler.plan import Change, Report
from reconciler.render.mask import EMAIL_PATTERN, clip

# Above this many distinct reasons for one (target, action, rule), the summary shows reason
# groups instead: 5,000 "R3 ... source 719 ..." changes must not make 5,000 rows.
DETAIL_LIMIT = 6
T = TypeVar("T")
REASON_WIDTH = 120

_QUOTES = "'\"`‘“«<"  # opening a data value (a quote, or the `<email>` placeholder)


def shorten(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def _is_data(token: str) -> bool:
    return any(ch.isdigit() for ch in token) or "@" in token or token[:1] in _QUOTES


def reason_group(reason: str) -> str:
    """The reason's words with each data value replaced by `…`, up to any parenthesised detail.

    `R2 critical list 762` -> `R2 critical list …`; `R1 contact 12 has no valid email` ->
    `R1 contact … has no valid email`; `R6 merge fields differ (stream general)` -> `R6 merge
    fields differ`. Data values are words holding a digit or an `@`, or opening with a quote.
    """
    tokens = clip(reason, REASON_WIDTH * 2).split()
    if not tokens:
        return ""
    kept = [tokens[0]]  # the rule (`R2`) is never data
    for token in tokens[1:]:
        if token.startswith("("):
            break
        word = "…" if _is_data(token) else token
        if word != "…" or kept[-1] != "…":
            kept.append(word)
    return shorten(" ".join(kept).rstrip(" :,;=-–—→"), REASON_WIDTH)


def reason_detail(reason: str) -> str:
    """The reason with emails cut out: a summary row is about many people, never one."""
    text = clip(reason, REASON_WIDTH * 2)
    return shorten(EMAIL_PATTERN.sub("<email>", text) if "@" in text else text, REASON_WIDTH)


def _rule(reason: str) -> str:
    return reason.split(" ", 1)[0] if reason else ""


@dataclass(frozen=True)
class SummaryRow:
    target: str
    action: str  # a change's action, or a report's kind
    reason: str
    count: int


def _summarise(items: Sequence[tuple[str, str, str]]) -> list[SummaryRow]:
    """Rows of (target, action-or-kind, reason) counts, collapsing busy rules to reason groups."""
    detailed: Counter[tuple[str, str, str, str]] = Counter()  # (target, action, rule, detail)
    for target, action, reason in items:
        detailed[(target, action, _rule(reason), reason_detail(reason))] += 1
    per_rule = Counter((target, action, rule) for target, action, rule, _ in detailed)
    rows: Counter[tuple[str, str, str]] = Counter()
    groups: dict[str, str] = {}
    for (target, action, rule, detail), count in detailed.items():
        if per_rule[(target, action, rule)] <= DETAIL_LIMIT:
            rows[(target, action, detail)] += count
        else:
            # Grouping the shown detail (emails already cut out) gives the same group as the reason.
            group = groups.setdefault(detail, reason_group(detail))
            rows[(target, action, group)] += count
    return [SummaryRow(t, a, r, n) for (t, a, r), n in rows.items()]


def same_reason_groups(items: Sequence[T], reason: Callable[[T], str]) -> dict[str, list[T]]:
    """`items` (changes or reports of one action or kind) grouped by identical reason, in order of
    first appearance. Reasons are compared with emails cut out; a rule with more than DETAIL_LIMIT
    distinct reasons is grouped by its reason group instead (as the summary table does), so
    10,000 "R1 contact … has no valid email" make one group, not 10,000."""
    details = [reason_detail(reason(item)) for item in items]
    per_rule: dict[str, set[str]] = {}
    for detail in details:
        per_rule.setdefault(_rule(detail), set()).add(detail)
    groups: dict[str, list[T]] = {}
    for item, detail in zip(items, details):
        key = detail if len(per_rule[_rule(detail)]) <= DETAIL_LIMIT else reason_group(detail)
        groups.setdefault(key, []).append(item)
    return groups


def summary_rows(changes: Sequence[Change]) -> list[SummaryRow]:
    """Counts per target (audience, list or subscription), action and reason, in plan order."""
    return _summarise([(c.target, c.action, c.reason) for c in changes])


def report_rows(reports: Sequence[Report]) -> list[SummaryRow]:
    """Counts per target, kind and reason of the reported items."""
    return _summarise([(r.target, r.kind, r.reason) for r in reports])


def biggest_first(rows: Sequence[SummaryRow]) -> list[SummaryRow]:
    """For a table that will be cut: the rows cut are then the smallest (ties keep plan order)."""
    return sorted(rows, key=lambda row: -row.count)


def by_action(changes: Iterable[Change]) -> dict[str, list[Change]]:
    """Changes grouped by action, groups in order of first appearance (the plan's R18 order)."""
    groups: dict[str, list[Change]] = {}
    for change in changes:
        groups.setdefault(change.action, []).append(change)
    return groups


def by_kind(reports: Iterable[Report]) -> dict[str, list[Report]]:
    groups: dict[str, list[Report]] = {}
    for report in reports:
        groups.setdefault(report.kind, []).append(report)
    return groups


def counts(changes: Sequence[Change], reports: Sequence[Report]) -> dict[str, object]:
    """The plan's counts as plain values (JSON document, headers)."""
    per_target: dict[str, dict[str, int]] = {}
    for change in changes:
        actions = per_target.setdefault(change.target, {})
        actions[change.action] = actions.get(change.action, 0) + 1
    return {
        "changes": len(changes),
        "reports": len(reports),
        "by_action": dict(Counter(c.action for c in changes)),
        "by_target": per_target,
        "by_kind": dict(Counter(r.kind for r in reports)),
    }
