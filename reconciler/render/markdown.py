"""The pull-request comment (SPEC §5 `--format markdown`): summary, a capped sample per action.

Separate from the text renderer because its limit is hard: GitHub refuses comments over 65,535
characters, so every section has a character budget and the whole is cut to `max_chars` at worst.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from reconciler.plan import Change, Plan
from reconciler.render.diff import detail_lines
from reconciler.render.mask import mask_text, show_email
from reconciler.render.summary import SummaryRow, biggest_first, by_action, report_rows, shorten, summary_rows

MAX_CHARS = 60_000  # SPEC §5; GitHub's own limit is 65,535
SAMPLE_PER_ACTION = 10
LINE_WIDTH = 400
_NOTE_ROOM = 200  # kept free in every section for its "… N more" line

# Shares of max_chars: header and footer are small and fixed; the rest is split so that a huge
# summary cannot crowd out the samples or the reported items.
_SUMMARY_SHARE, _SAMPLES_SHARE, _REPORTS_SHARE = 0.36, 0.36, 0.15
_HEADER_BUDGET, _FOOTER_BUDGET = 2_000, 1_500


def code(text: str, width: int = LINE_WIDTH // 2) -> str:
    """Data as an inline code span: no Markdown, no HTML and no @-mentions can come out of it."""
    flat = shorten(text.replace("`", "'"), width)
    return f"`{flat}`" if flat else "` `"


def _cell(text: str) -> str:
    return code(text).replace("|", "\\|")  # GFM splits table rows on | even inside code spans


class _Section:
    """Lines that fit in a character budget; what does not fit is counted, not written."""

    def __init__(self, budget: int) -> None:
        self.lines: list[str] = []
        self.budget = max(budget - _NOTE_ROOM, 0)
        self.used = 0
        self.omitted = 0

    def add(self, line: str) -> bool:
        line = shorten(line, LINE_WIDTH) if len(line) > LINE_WIDTH else line
        if self.omitted or self.used + len(line) + 1 > self.budget:
            self.omitted += 1
            return False
        self.lines.append(line)
        self.used += len(line) + 1
        return True

    def note(self, text: str) -> None:
        self.lines.append(text[: _NOTE_ROOM - 1])


def _table(rows: Sequence[SummaryRow], second: str, budget: int) -> tuple[list[str], int]:
    section = _Section(budget)
    section.add(f"| Target | {second} | Reason | Count |")
    section.add("|---|---|---|---:|")
    for row in rows:
        section.add(f"| {_cell(row.target)} | {_cell(row.action)} | {_cell(row.reason)} | {row.count:,} |")
    if section.omitted:
        section.note(f"\n*… {section.omitted:,} more rows not shown.*")
    return section.lines, section.omitted


def _sample_line(change: Change, redact: bool) -> str:
    parts = [code(show_email(change.email, redact)), code(change.target),
             code(mask_text(change.reason, LINE_WIDTH) if redact else change.reason)]
    details = "; ".join(detail_lines(change, redact))
    if details:
        parts.append(code(details))
    line = "- " + " · ".join(parts)
    return shorten(line, LINE_WIDTH) if len(line) > LINE_WIDTH else line


def _shares(needs: list[int], budget: int) -> list[int]:
    """Split `budget` so small needs are met in full and big ones share what is left equally."""
    shares = [0] * len(needs)
    left, waiting = budget, len(needs)
    for index in sorted(range(len(needs)), key=lambda i: needs[i]):
        shares[index] = min(needs[index], left // waiting)
        left -= shares[index]
        waiting -= 1
    return shares


def _samples(plan: Plan, redact: bool, sample: int, budget: int) -> tuple[list[str], int]:
    groups = list(by_action(plan.changes).items())
    candidates = [[f"\n#### {action} ({len(group):,})\n", *(_sample_line(c, redact) for c in group[:sample])]
                  for action, group in groups]
    needs = [sum(len(line) + 1 for line in lines) + _NOTE_ROOM for lines in candidates]
    lines: list[str] = []
    hidden = 0
    for (_, group), wanted, share in zip(groups, candidates, _shares(needs, budget)):
        section = _Section(share)
        for line in wanted:
            section.add(line)
        shown = max(len(section.lines) - 1, 0)
        if len(group) > shown:
            section.note(f"- *… and {len(group) - shown:,} more*")
            hidden += len(group) - shown
        lines.extend(section.lines)
    return lines, hidden


def render_markdown(plan: Plan, *, redact: bool, sample: int = SAMPLE_PER_ACTION, max_chars: int = MAX_CHARS) -> str:
    """The comment for `plan`; never longer than `max_chars` (default 60,000) characters."""
    body_budget = max_chars - _HEADER_BUDGET - _FOOTER_BUDGET
    head = _Section(_HEADER_BUDGET)
    head.add("## Reconciler plan\n")
    audiences = ", ".join(code(name) for name in plan.audiences)
    head.add(f"**{len(plan.changes):,} changes**, {len(plan.reports):,} reported items"
             + (f" · audiences {audiences}" if audiences else ""))
    if plan.changes:
        totals = Counter(change.action for change in plan.changes)
        head.add("\nBy action: " + " · ".join(f"{action} {count:,}" for action, count in totals.items()))
    head.add(f"\nChecksum: `{plan.checksum}`")
    if redact:
        head.add("\nEmails are masked (`a***@example.com`).")
    lines = head.lines
    omitted: list[str] = []
    if plan.empty:
        lines.append("\n**No changes.**")
    else:
        table, rows_hidden = _table(biggest_first(summary_rows(plan.changes)), "Action",
                                    int(body_budget * _SUMMARY_SHARE))
        lines += ["\n### Summary\n", *table, f"\n### Sample of changes (at most {sample} per action)"]
        samples, changes_hidden = _samples(plan, redact, sample, int(body_budget * _SAMPLES_SHARE))
        lines += samples
        if rows_hidden:
            omitted.append(f"{rows_hidden:,} summary rows")
        if changes_hidden:
            omitted.append(f"{changes_hidden:,} changes beyond the sample")
    if plan.reports:
        table, rows_hidden = _table(biggest_first(report_rows(plan.reports)), "Kind",
                                    int(body_budget * _REPORTS_SHARE))
        lines += [f"\n### Reported items ({len(plan.reports):,}, not changes)\n", *table]
        if rows_hidden:
            omitted.append(f"{rows_hidden:,} reported-item rows")
    if omitted:
        lines.append(f"\n*Not shown here: {', '.join(omitted)}. The JSON plan (`--out FILE`) has every change.*")
    text = "\n".join(lines) + "\n"
    # The budgets above keep well inside the limit; this cut only guards against a mistake in them.
    return text if len(text) <= max_chars else text[: max_chars - 40] + "\n\n*… comment cut to fit.*\n"
