"""The pull-request comment (SPEC §5): under 60,000 characters whatever the plan, summary first."""

from __future__ import annotations

import re

from reconciler.plan import ACTIONS, HUBSPOT, MAILCHIMP, Change, Plan, Report
from reconciler.render.markdown import MAX_CHARS, SAMPLE_PER_ACTION, render_markdown


def change(i: int, action: str = "update_member", reason: str = "R6 merge fields differ", target: str = "main") -> Change:
    system = MAILCHIMP if action in ACTIONS[:7] else HUBSPOT
    return Change.make(system, action, target, f"user{i}@example.com", {"FNAME": f"Old {i}"},
                       {"FNAME": f"New {i}"}, reason, 60)


def huge_plan(count: int = 50_000) -> Plan:
    """Every action, thousands of distinct targets, 3,000-character reasons, 1,000-character values."""
    changes = []
    for i in range(count):
        action = ACTIONS[i % len(ACTIONS)]
        changes.append(Change.make(
            MAILCHIMP if action in ACTIONS[:7] else HUBSPOT, action, f"list-{i % 3000}", f"user{i}@example.com",
            {"FNAME": "x" * 1000, "NOTE": f"see user{i}@example.com"}, {"FNAME": "y" * 1000},
            f"R{i % 18 + 1} " + "very long reason | with `pipes` and [links](x) " * 60 + f"user{i}@example.com",
            60,
        ))
    reports = tuple(Report("skipped", f"list-{i}", f"r{i}@example.com", f"R1 report {i} " + "z" * 2000)
                    for i in range(5000))
    return Plan(tuple(changes), reports, audiences=("main", "second"))


def test_a_50000_change_plan_stays_under_60000_characters_and_shows_the_summary() -> None:
    plan = huge_plan()
    comment = render_markdown(plan, redact=True)
    assert len(comment) < MAX_CHARS
    assert "**50,000 changes**, 5,000 reported items" in comment
    assert plan.checksum in comment
    summary = comment[comment.index("### Summary"):comment.index("### Sample of changes")]
    assert "| Target | Action | Reason | Count |" in summary
    assert "more rows not shown" in summary
    by_action = next(line for line in comment.splitlines() if line.startswith("By action: "))
    assert all(f"{action} 4,16" in by_action for action in ACTIONS)  # totals survive the cut table
    assert "### Reported items (5,000, not changes)" in comment
    assert "Not shown here:" in comment
    # every action gets its sample, none starves the others
    for action in ACTIONS:
        assert f"#### {action} ({50_000 // len(ACTIONS) + (ACTIONS.index(action) < 50_000 % len(ACTIONS)):,})" in comment
    assert not re.search(r"user\d+@example\.com", comment) and not re.search(r"r\d+@example\.com", comment)


def test_tight_limits_are_respected_too() -> None:
    plan = huge_plan(2_000)
    for limit in (6_000, 10_000, 30_000):
        assert len(render_markdown(plan, redact=True, max_chars=limit)) <= limit


def test_summary_counts_and_a_capped_sample_per_action() -> None:
    changes = tuple(change(i) for i in range(25)) + tuple(
        change(100 + i, "archive_member", "R2 critical list 762") for i in range(3))
    comment = render_markdown(Plan(changes, audiences=("main",)), redact=True)
    assert "| `main` | `update_member` | `R6 merge fields differ` | 25 |" in comment
    assert "| `main` | `archive_member` | `R2 critical list 762` | 3 |" in comment
    assert "By action: update_member 25 · archive_member 3" in comment
    assert comment.index("### Summary") < comment.index("#### update_member (25)")
    update_section = comment[comment.index("#### update_member"):comment.index("#### archive_member")]
    assert update_section.count("\n- `") == SAMPLE_PER_ACTION
    assert f"… and {25 - SAMPLE_PER_ACTION} more" in update_section
    assert '`FNAME: "Old 0" → "New 0"`' in update_section


def test_a_big_action_uses_the_room_small_ones_leave() -> None:
    long_reason = "R11 unsubscribed in Mailchimp audience main: unsubscribe from marketing " + "x" * 150
    changes = tuple(change(i, "unsubscribe_contact", long_reason, "289137112") for i in range(40))
    changes += tuple(change(100 + i, action) for i, action in enumerate(ACTIONS) if action != "unsubscribe_contact")
    comment = render_markdown(Plan(changes), redact=True)
    section = comment[comment.index("#### unsubscribe_contact"):]
    section = section[:section.index("####", 5)]
    assert section.count("\n- `") == SAMPLE_PER_ACTION
    for action in ACTIONS:
        assert f"#### {action} (" in comment


def test_emails_masked_unless_no_redact() -> None:
    reports = (Report("warning", "main", "dup@example.org", "R1 duplicate of user1@example.com"),)
    plan = Plan((change(1), change(2)), reports)
    masked = render_markdown(plan, redact=True)
    assert "user1@example.com" not in masked and "dup@example.org" not in masked
    assert "`u***@example.com`" in masked
    shown = render_markdown(plan, redact=False)
    assert "user1@example.com" in shown and "user2@example.com" in shown


def test_summary_rows_biggest_first_so_a_cut_loses_the_smallest() -> None:
    changes = tuple(change(i, "archive_member", f"R2 critical list {i}") for i in range(3))
    changes += tuple(change(10 + i) for i in range(7))
    comment = render_markdown(Plan(changes), redact=True)
    rows = [line for line in comment.splitlines() if line.startswith("| `main`")]
    assert "update_member" in rows[0] and rows[0].endswith("| 7 |")
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["7", "1", "1", "1"]


def test_no_changes() -> None:
    comment = render_markdown(Plan((), (Report("refused", "main", "a@example.com", "R8 refused on 2026-01-02"),)),
                              redact=True)
    assert "**No changes.**" in comment
    assert "### Reported items (1, not changes)" in comment and "### Summary" not in comment


def test_table_cells_cannot_break_the_table_or_mention_anyone() -> None:
    plan = Plan((change(1, reason="R2 critical | list `762` @team"),))
    comment = render_markdown(plan, redact=False)
    row = next(line for line in comment.splitlines() if line.startswith("| `main`"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 5  # 4 columns: the pipe in the reason is escaped
    sample = next(line for line in comment.splitlines() if line.startswith("- `user1@example.com`"))
    assert "`R2 critical | list '762' @team`" in sample  # inside a code span: no mention, no markup
