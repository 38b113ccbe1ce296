"""The human plan (SPEC §5): summary table first, then changes by action, then reported items.

Writes to the rich Console it is given (the CLI owns it, tests pass their own), never to a global
one. Formatting only: every count and line here comes straight from the Plan.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler.plan import Change, Plan, Report
from reconciler.render.diff import detail_lines
from reconciler.render.mask import mask_text, show_email
from reconciler.render.summary import (
    REASON_WIDTH,
    SummaryRow,
    same_reason_groups,
    biggest_first,
    by_action,
    by_kind,
    report_rows,
    shorten,
    summary_rows,
)

NO_CHANGES = "No changes."
SECTION_LIMIT = 20  # lines per action or report kind, or per reason within a bigger one, unless --verbose
T = TypeVar("T")
SUMMARY_LIMIT = 40  # summary rows unless --verbose (the biggest are kept)
_MARK = {
    "create_member": "+",
    "restore_member": "+",
    "create_contact": "+",
    "add_to_list": "+",
    "add_tags": "+",
    "archive_member": "-",
    "remove_from_list": "-",
    "remove_tags": "-",
}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _summary_table(title: str, rows: Sequence[SummaryRow], second: str, verbose: bool) -> Table:
    table = Table(title=title, title_justify="left", show_footer=len(rows) > 1)
    total = sum(row.count for row in rows)
    table.add_column("Target", footer="Total")
    table.add_column(second)
    table.add_column("Reason", overflow="fold")
    table.add_column("Count", justify="right", footer=str(total))
    shown, hidden = list(rows), []
    if not verbose and len(rows) > SUMMARY_LIMIT:
        ordered = biggest_first(rows)
        shown, hidden = ordered[:SUMMARY_LIMIT], ordered[SUMMARY_LIMIT:]
    for row in shown:
        table.add_row(Text(row.target), Text(row.action), Text(row.reason), str(row.count))
    if hidden:
        table.add_row("", "", Text(f"… and {len(hidden)} more rows (use --verbose)", style="dim"),
                      str(sum(row.count for row in hidden)))
    return table


def _more(console: Console, hidden: int, like: str = "", indent: str = "    ") -> None:
    if hidden > 0:
        what = f": {like}" if like else ""
        console.print(Text(f"{indent}… and {hidden} more{what} (all of them: --verbose or --format json)",
                           style="dim"), soft_wrap=True)


def _shown(group: Sequence[T], reason: Callable[[T], str], verbose: bool, limit: int) -> list[tuple[list[T], int, str]]:
    """What to print of one action's (or kind's) items: all of them with --verbose or when they fit
    in `limit`; otherwise up to `limit` of each group of identical reasons, with how many of the
    group are not shown and the group's reason (for its "… and N more" line)."""
    if verbose or len(group) <= limit:
        return [(list(group), 0, "")]
    return [(items[:limit], len(items) - limit, key if len(items) > limit else "")
            for key, items in same_reason_groups(group, reason).items()]


def _reason(reason: str, redact: bool) -> str:
    return shorten(mask_text(reason, REASON_WIDTH * 3) if redact else reason, REASON_WIDTH * 2)


def change_line(change: Change, redact: bool) -> Text:
    """`  ~ a***@example.com  main  R6 merge fields differ` (one change, without its details)."""
    line = Text("  ")
    line.append(_MARK.get(change.action, "~"), style="bold")
    line.append(" " + show_email(change.email, redact), style="cyan")
    line.append("  " + change.target)
    line.append("  " + _reason(change.reason, redact), style="dim")
    return line


def render_changes(console: Console, changes: Sequence[Change], *, redact: bool, verbose: bool = False,
                   limit: int = SECTION_LIMIT) -> None:
    """Changes grouped by action, each with its field-level before → after."""
    for action, group in by_action(changes).items():
        console.print()
        console.print(Text(f"{action} ({len(group)})", style="bold"), soft_wrap=True)
        for shown, hidden, like in _shown(group, lambda c: c.reason, verbose, limit):
            for change in shown:
                console.print(change_line(change, redact), soft_wrap=True)
                for detail in detail_lines(change, redact):
                    console.print(Text("      " + detail), soft_wrap=True)
            _more(console, hidden, like)


def render_reports(console: Console, reports: Sequence[Report], *, redact: bool, verbose: bool = False,
                   limit: int = SECTION_LIMIT) -> None:
    """Reported items (not changes) grouped by kind."""
    if not reports:
        return
    console.print()
    console.print(Text(f"Reported items: {len(reports)} (not changes)", style="bold"), soft_wrap=True)
    for kind, group in by_kind(reports).items():
        console.print(Text(f"  {kind} ({len(group)})", style="bold"), soft_wrap=True)
        for shown, hidden, like in _shown(group, lambda r: r.reason, verbose, limit):
            for report in shown:
                line = Text("    " + show_email(report.email, redact), style="cyan")
                line.append("  " + report.target)
                line.append("  " + _reason(report.reason, redact), style="dim")
                console.print(line, soft_wrap=True)
            _more(console, hidden, like, indent="      ")


def render_plan(console: Console, plan: Plan, *, redact: bool, verbose: bool = False,
                limit: int = SECTION_LIMIT) -> None:
    """The whole plan: summary first, then the changes, then the reported items."""
    if plan.empty:
        console.print(Text(NO_CHANGES, style="bold green"), soft_wrap=True)
    else:
        covers = f" for {', '.join(plan.audiences)}" if plan.audiences else ""
        title = f"Plan{covers}: {_count(len(plan.changes), 'change')}"
        console.print(_summary_table(title, summary_rows(plan.changes), "Action", verbose))
        console.print(Text(f"Checksum: {plan.checksum}"), soft_wrap=True)
        render_changes(console, plan.changes, redact=redact, verbose=verbose, limit=limit)
    if plan.reports:
        console.print()
        console.print(_summary_table(f"Reported: {_count(len(plan.reports), 'item')}", report_rows(plan.reports),
                                     "Kind", verbose))
        render_reports(console, plan.reports, redact=redact, verbose=verbose, limit=limit)


def render_safety_violations(console: Console, violations: Sequence[str]) -> None:
    """R17: each exceeded limit on its own line (the message says which, by how much, what to do)."""
    console.print(Text(f"Unsafe plan: {len(violations)} safety limit(s) exceeded", style="bold red"), soft_wrap=True)
    for violation in violations:
        console.print(Text("  - " + violation), soft_wrap=True)


def render_stale_diff(console: Console, *, added: Sequence[Change], removed: Sequence[Change], redact: bool,
                      verbose: bool = False, limit: int = SECTION_LIMIT) -> None:
    """SPEC §5 `--apply FILE`: what the re-plan would do that was not reviewed, and the reverse."""
    console.print(Text("Stale plan: the live state no longer gives the reviewed plan", style="bold red"), soft_wrap=True)
    for title, changes in (("Not in the reviewed plan (would now be applied)", added),
                           ("In the reviewed plan, no longer planned", removed)):
        if not changes:
            continue
        console.print(Text(f"{title}: {len(changes)}", style="bold"), soft_wrap=True)
        render_changes(console, changes, redact=redact, verbose=verbose, limit=limit)
