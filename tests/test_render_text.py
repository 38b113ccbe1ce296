"""The rich text plan (SPEC §5): summary first, grouping, truncation, field-level diffs, masking."""

from __future__ import annotations

import io

from rich.console import Console

from reconciler.plan import MAILCHIMP, HUBSPOT, STEP_CRITICAL, STEP_MEMBERS, STEP_CLEANUP, Change, Plan, Report
from reconciler.render.diff import ABSENT, field_diffs
from reconciler.render.summary import reason_group, summary_rows
from reconciler.render.text import (
    NO_CHANGES,
    SECTION_LIMIT,
    SUMMARY_LIMIT,
    render_plan,
    render_safety_violations,
    render_stale_diff,
)


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=160, color_system=None, force_terminal=False), buffer


def render(plan: Plan, **options: object) -> str:
    console, buffer = _console()
    render_plan(console, plan, **{"redact": False, **options})  # type: ignore[arg-type]
    return buffer.getvalue()


def update(email: str, before: dict, after: dict, reason: str = "R6 merge fields differ") -> Change:
    return Change.make(MAILCHIMP, "update_member", "main", email, before, after, reason, STEP_MEMBERS)


def archive(email: str, list_id: str) -> Change:
    return Change.make(MAILCHIMP, "archive_member", "main", email, {"status": "subscribed"},
                       {"status": "archived"}, f"R2 critical list {list_id}", STEP_CRITICAL)


def add_tags(email: str, tag: str, reason: str) -> Change:
    return Change.make(MAILCHIMP, "add_tags", "main", email, {tag: False}, {tag: True}, reason, STEP_MEMBERS)


def test_empty_plan_says_no_changes() -> None:
    out = render(Plan(()))
    assert out.strip() == NO_CHANGES == "No changes."


def test_empty_plan_still_lists_reported_items() -> None:
    out = render(Plan((), (Report("refused", "main", "ann@example.com", "R8 refused on 2026-01-02"),)))
    assert out.startswith(NO_CHANGES)
    assert "refused (1)" in out and "R8 refused on 2026-01-02" in out


def test_summary_table_comes_first_with_counts_per_target_action_reason() -> None:
    changes = (archive("ann@example.com", "762"), archive("bob@example.com", "762"),
               archive("cat@example.com", "773"), update("dee@example.com", {"FNAME": "D"}, {"FNAME": "Dee"}))
    out = render(Plan(changes))
    summary_at = out.index("Plan: 4 changes")
    assert summary_at < out.index("archive_member (3)") < out.index("ann@example.com")
    summary = out[summary_at:out.index("Checksum:")]
    rows = [line for line in summary.splitlines() if "R2 critical list" in line]
    # three critical changes from two lists: two rows, with their counts
    assert len(rows) == 2
    assert any("762" in row and row.rstrip(" │").endswith("2") for row in rows)
    assert any("773" in row and row.rstrip(" │").endswith("1") for row in rows)
    assert Plan(changes).checksum in out


def test_many_distinct_reasons_collapse_into_reason_groups() -> None:
    changes = tuple(
        add_tags(f"user{i}@example.com", "Recruitment", f"R3 stream general source 719 contact {1000 + i}")
        for i in range(5000)
    )
    rows = summary_rows(changes)
    assert [(row.reason, row.count) for row in rows] == [("R3 stream general source … contact …", 5000)]
    out = render(Plan(changes))
    summary = out[:out.index("Checksum:")]
    assert "5000" in summary and "contact 1000" not in summary
    assert len(summary.splitlines()) < 15


def test_a_long_summary_keeps_its_biggest_rows_unless_verbose() -> None:
    changes = tuple(
        Change.make(HUBSPOT, "remove_from_list", f"{900 + i}", f"user{i}@example.com", {"member": True},
                    {"member": False}, "R3 clean-up", STEP_CLEANUP)
        for i in range(SUMMARY_LIMIT + 3)
    ) + tuple(archive(f"crit{i}@example.com", "762") for i in range(4))
    out = render(Plan(changes))
    summary = out[:out.index("Checksum:")]
    assert "R2 critical list 762" in summary  # the biggest row survives the cut
    assert "… and 4 more rows (use --verbose)" in summary
    assert sum(f" {900 + i} " in summary for i in range(SUMMARY_LIMIT + 3)) == SUMMARY_LIMIT - 1
    verbose = render(Plan(changes), verbose=True)
    assert "more rows" not in verbose[:verbose.index("Checksum:")]


def test_reason_group_hides_data_values() -> None:
    assert reason_group("R2 critical list 762") == "R2 critical list …"
    assert reason_group("R1 contact 12 has no valid email") == "R1 contact … has no valid email"
    assert reason_group("R1 duplicate of ann@example.com bob@example.org") == "R1 duplicate of …"
    assert reason_group("R6 merge field FNAME 'Ann' differs") == "R6 merge field FNAME … differs"
    assert reason_group("R6 merge fields differ (stream general, list 719)") == "R6 merge fields differ"
    assert reason_group("R9 no source list holds the contact") == "R9 no source list holds the contact"
    assert reason_group("R12") == "R12"
    assert reason_group("") == ""


def test_summary_never_shows_an_email_even_unmasked() -> None:
    changes = (Change.make(HUBSPOT, "remove_from_list", "719", "ann@example.com", {"member": True},
                           {"member": False}, "R1 duplicate of ann@example.com", STEP_CLEANUP),)
    rows = summary_rows(changes)
    assert all("ann@example.com" not in row.reason for row in rows)


def test_sections_are_truncated_unless_verbose() -> None:
    changes = tuple(update(f"user{i:03}@example.com", {"FNAME": "A"}, {"FNAME": "B"}) for i in range(SECTION_LIMIT + 5))
    short = render(Plan(changes))
    assert "… and 5 more: R6 merge fields differ (all of them: --verbose or --format json)" in short
    assert sum(f"user{i:03}@example.com" in short for i in range(len(changes))) == SECTION_LIMIT
    full = render(Plan(changes), verbose=True)
    assert "more" not in full.split("Checksum")[1]
    assert all(f"user{i:03}@example.com" in full for i in range(len(changes)))


def test_changes_are_grouped_by_action() -> None:
    changes = (archive("ann@example.com", "762"), update("bob@example.com", {"FNAME": "B"}, {"FNAME": "Bo"}),
               archive("cat@example.com", "762"))
    out = render(Plan(changes))
    archive_at, update_at = out.index("archive_member (2)"), out.index("update_member (1)")
    assert archive_at < out.index("ann@example.com") < out.index("cat@example.com") < update_at
    assert update_at < out.index("bob@example.com")


def test_update_shows_field_level_before_and_after() -> None:
    change = update("ann@example.com",
                    {"FNAME": "Ann", "LNAME": "Lee", "ADDRESS": {"city": "Leeds", "zip": "LS1"}},
                    {"FNAME": "Anna", "LNAME": "Lee", "ADDRESS": {"city": "York", "zip": "LS1"}})
    out = render(Plan((change,)))
    assert 'FNAME: "Ann" → "Anna"' in out
    assert 'ADDRESS.city: "Leeds" → "York"' in out
    assert "LNAME" not in out and "zip" not in out  # unchanged fields are not shown


def test_field_diffs_mark_added_and_removed_fields() -> None:
    diffs = field_diffs({"A": 1, "B": "x", "N": {"k": [1, 2]}}, {"A": 1.5, "C": None, "N": {"k": [1, 2, 3]}})
    by_path = {d.path: (d.before, d.after) for d in diffs}
    assert by_path == {"A": (1, 1.5), "B": ("x", ABSENT), "C": (ABSENT, None), "N.k[2]": (ABSENT, 3)}


def test_tag_changes_read_as_plus_and_minus() -> None:
    out = render(Plan((add_tags("ann@example.com", "Manual Inclusion", "R3 extra tag"),)))
    assert "+Manual Inclusion" in out


def test_only_tag_changes_read_as_plus_and_minus() -> None:
    change = Change.make(HUBSPOT, "set_contact_properties", "contacts", "ann@example.com",
                         {"hs_lead": False}, {"hs_lead": True}, "R12 handover tag Done", 40)
    out = render(Plan((change,)))
    assert "hs_lead: false → true" in out and "+hs_lead" not in out


def test_title_names_the_audiences() -> None:
    out = render(Plan((archive("ann@example.com", "762"),), audiences=("main", "second")))
    assert "Plan for main, second: 1 change" in out


def test_masked_output_has_no_raw_email() -> None:
    emails = ["ann@example.com", "bob@example.org", "李雷@example.org"]
    changes = (
        update(emails[0], {"FNAME": "A"}, {"FNAME": "B"}, reason=f"R6 merge fields differ (duplicate {emails[1]})"),
        Change.make(HUBSPOT, "create_contact", "contacts", emails[2], {}, {"email": emails[2]},
                    "R11 member unsubscribed, no contact", 10),
    )
    reports = (Report("warning", "main", emails[1], f"R1 duplicate of {emails[0]}"),)
    masked = render(Plan(changes, reports), redact=True, verbose=True)
    for email in emails:
        assert email not in masked
    assert "a***@example.com" in masked and "李***@example.org" in masked
    shown = render(Plan(changes, reports), redact=False)
    assert all(email in shown for email in emails)


def test_rich_markup_in_data_is_printed_literally() -> None:
    out = render(Plan((archive("ann@example.com", "[bold]762[/bold]"),)))
    assert "R2 critical list [bold]762[/bold]" in out


def test_reported_items_are_grouped_by_kind_and_truncated() -> None:
    reports = tuple(Report("skipped", "contacts", None, f"R1 no valid email for contact {i}") for i in range(30))
    reports += (Report("capped", "main", "ann@example.com", "R16 member cap 5000"),)
    out = render(Plan((archive("bob@example.com", "762"),), reports))
    assert "Reported: 31 items" in out
    assert out.index("skipped (30)") < out.index("capped (1)")
    assert "… and 10 more: R1 no valid email for contact … (all of them: --verbose or --format json)" in out
    assert "(no email)" in out


def test_safety_violations_and_stale_diff() -> None:
    console, buffer = _console()
    render_safety_violations(console, ["max_archives: 312 archives exceed the limit of 100 by 212; re-run with --force"])
    render_stale_diff(console, added=(archive("ann@example.com", "762"),),
                      removed=(update("bob@example.com", {"FNAME": "B"}, {"FNAME": "Bo"}),), redact=True)
    out = buffer.getvalue()
    assert "Unsafe plan: 1 safety limit(s) exceeded" in out and "exceed the limit of 100 by 212" in out
    assert "Not in the reviewed plan (would now be applied): 1" in out
    assert "In the reviewed plan, no longer planned: 1" in out
    assert "a***@example.com" in out and "ann@example.com" not in out


def test_a_big_section_shows_up_to_the_limit_of_each_reason() -> None:
    """10,000 changes stay readable: each group of identical changes shows SECTION_LIMIT rows and
    says how many more it holds; the summary still counts them all."""
    critical = [archive(f"crit{i:05}@example.com", "762") for i in range(9_000)]
    other = [archive(f"deal{i:05}@example.com", "773") for i in range(200)]
    changes = tuple(critical[:4_000] + other + critical[4_000:])
    out = render(Plan(changes))
    assert len(out.splitlines()) < 2 * 2 * SECTION_LIMIT + 20  # two groups of 20, each with its detail line
    assert out.count("- crit") == SECTION_LIMIT and out.count("- deal") == SECTION_LIMIT
    assert f"… and {9_000 - SECTION_LIMIT} more: R2 critical list 762" in out
    assert f"… and {200 - SECTION_LIMIT} more: R2 critical list 773" in out
    assert "9200" in out.replace(",", "")  # the summary table's total


def test_unique_reasons_are_grouped_by_their_words() -> None:
    reports = tuple(Report("skipped", "contacts", None, f"R1 contact {i} has no valid email")
                    for i in range(500))
    out = render(Plan((), reports))
    assert len(out.splitlines()) < 40
    assert "… and 480 more: R1 contact … has no valid email" in out
