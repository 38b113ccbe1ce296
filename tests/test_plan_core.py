"""The plan values the rules produce: checksum over changes only, order, R18 prerequisites, counts."""

from __future__ import annotations

from reconciler.plan import Change, Plan, Report
from tests.core_builders import LIST_ID, MARKETING, config, contact, member, of, plan, snapshot

ANN = "ann@example.com"


def _change(before: dict, reason: str = "R9 test") -> Change:
    return Change.make("mailchimp", "archive_member", "main", ANN, before, {"status": "archived"}, reason, 50)


def test_checksum_covers_changes_and_their_before_values_not_reports() -> None:
    base = Plan((_change({"status": "subscribed"}),))
    assert Plan(base.changes, reports=(Report("warning", "719", None, "R14"),), observed={"x": 1}).checksum \
        == base.checksum
    assert Plan((_change({"status": "pending"}),)).checksum != base.checksum
    assert Plan((_change({"status": "subscribed"}, "R2 critical list 762"),)).checksum != base.checksum


def test_duplicates_by_email_are_each_removed_in_a_stable_order() -> None:
    snap = snapshot([contact("30", ANN, ["719", "762"]), contact("4", ANN, ["719"])])
    result = plan(config(), snap)
    removals = of(result, "remove_from_list")
    assert [(c.target, c.contact_id) for c in removals] == [("719", "30"), ("719", "4")]
    assert plan(config(), snapshot([contact("4", ANN, ["719"]), contact("30", ANN, ["719", "762"])])).changes \
        == result.changes


def test_archive_of_an_opted_out_member_lists_its_r11_prerequisites() -> None:
    snap = snapshot([contact("1", ANN, ["762"]), contact("2", "bob@example.com", ["762"], unsub=[MARKETING])],
                    [member(ANN, "unsubscribed"), member("bob@example.com", "unsubscribed")])
    result = plan(config(), snap)
    archives = {c.email: c for c in of(result, "archive_member")}
    (unsubscribe,) = of(result, "unsubscribe_contact")
    assert result.prerequisites(archives[ANN]) == (unsubscribe,)
    assert result.prerequisites(archives["bob@example.com"]) == ()  # already unsubscribed in HubSpot


def test_plan_carries_observed_counts_safety_bases_and_audience_lists() -> None:
    snap = snapshot([contact("1", ANN, ["719", "717"])],
                    [member(ANN, "subscribed", "Recruitment"), member("b@example.com", "archived")])
    result = plan(config(), snap)
    assert result.audiences == ("main",)
    assert dict(result.audience_lists) == {"main": LIST_ID}
    assert result.observed["contacts"] == 1
    assert result.observed["audiences"]["main"]["members"] == {"archived": 1, "subscribed": 1}
    assert result.safety_bases["audiences"] == {"main": 1}
    assert result.safety_bases["lists"] == {"719": 1}
