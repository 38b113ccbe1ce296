"""simulate(): the vendors' behaviour the rules are checked against, refusals included."""

from __future__ import annotations

from dataclasses import replace

from reconciler.plan import Change, Plan
from reconciler.simulate import COMPLIANCE, FORGOTTEN, NOT_ARCHIVABLE, VendorHidden, simulate, simulate_apply
from tests.core_builders import LIST_ID, MARKETING, audience, config, contact, member, of, plan, reasons, snapshot

ANN = "ann@example.com"


def test_simulate_applies_every_kind_of_change_and_the_replan_is_empty() -> None:
    cfg = config(audience(on_leave="untag"))
    snap = snapshot(
        [contact("1", ANN, ["719"], firstname="Ann"), contact("2", "bob@example.com", ["719", "717"]),
         contact("3", "cat@example.com", ["719"]), contact("4", "dan@example.com", ["987"], unsub=[MARKETING])],
        [member("bob@example.com", "subscribed", "Recruitment"), member("cat@example.com", "unsubscribed"),
         member("dan@example.com", "subscribed", "General Single"),
         member("eve@example.com", "subscribed", "Recruitment", "Recruitment Finished")],
    )
    first = plan(cfg, snap)
    assert {c.action for c in first.changes} >= {"create_member", "remove_tags", "unsubscribe_contact",
                                                 "unsubscribe_member", "remove_from_list"}
    after = simulate(snap, first)
    assert plan(cfg, after).changes == ()
    contacts = after.contacts
    assert MARKETING in contacts["3"].unsubscribed
    assert contacts["3"].properties[f"hs_email_optout_{MARKETING}"] == "true"
    assert "719" not in contacts["2"].lists
    members = after.audiences[LIST_ID].members
    assert members[ANN].status == "subscribed" and members[ANN].tags == ("Recruitment",)
    assert members["dan@example.com"].status == "unsubscribed"


def test_simulate_refuses_restoring_to_subscribed_a_member_archived_after_an_opt_out() -> None:
    # Evidence of consent in HubSpot, yet the person had unsubscribed themselves before the archive.
    snap = replace(snapshot([contact("1", ANN, ["719"])], [member(ANN, "archived")]),
                   consent={ANN: frozenset({MARKETING})})
    first = plan(config(), snap)
    result = simulate_apply(snap, first, VendorHidden(archived_after_opt_out=frozenset({(LIST_ID, ANN)})))
    assert [(r.change.action, r.reason) for r in result.refused] == [("restore_member", COMPLIANCE)]
    assert result.snapshot.audiences[LIST_ID].members[ANN].status == "archived"
    memory = result.memory(at="2024-06-01T00:00:00Z")
    again = plan(config(), result.snapshot, memory)
    assert again.changes == ()
    assert reasons(again, ANN) == [f"R8 restore_member refused on 2024-06-01 ({COMPLIANCE}); "
                                   "--retry-refused tries again"]


def test_simulate_refuses_creating_a_forgotten_email() -> None:
    snap = snapshot([contact("1", ANN, ["719"])])
    result = simulate_apply(snap, plan(config(), snap), VendorHidden(forgotten=frozenset({(LIST_ID, ANN)})))
    assert [r.reason for r in result.refused] == [FORGOTTEN]
    assert ANN not in result.snapshot.audiences[LIST_ID].members
    assert of(plan(config(), result.snapshot, result.memory()), "create_member") == []


def test_simulate_repeated_hubspot_unsubscribe_counts_as_done() -> None:
    snap = snapshot([contact("1", ANN, [], unsub=[MARKETING])])
    change = Change.make("hubspot", "unsubscribe_contact", MARKETING, ANN, {"unsubscribed": False},
                         {"unsubscribed": True}, "R11 test", 10, "1")
    result = simulate_apply(snap, Plan((change,)))
    assert result.refused == ()
    assert result.snapshot.contacts["1"].unsubscribed == frozenset({MARKETING})


def test_simulate_records_archives_for_memory_and_dynamic_list_writes_are_refused() -> None:
    snap = snapshot([contact("1", ANN, ["719"])], [member("bob@example.com", "subscribed", "Recruitment")],
                    dynamic=["719"])
    archive = Change.make("mailchimp", "archive_member", "main", "bob@example.com", {"status": "subscribed"},
                          {"status": "archived"}, "R9 test", 50)
    remove = Change.make("hubspot", "remove_from_list", "719", ANN, {"member": True}, {"member": False},
                         "R3 test", 70, "1")
    result = simulate_apply(snap, Plan((archive, remove), audience_lists={"main": LIST_ID}))
    assert result.archived == ((LIST_ID, "bob@example.com", "subscribed"),)
    assert result.memory().archived_by_us == {(LIST_ID, "bob@example.com"): "subscribed"}
    assert [r.change.action for r in result.refused] == ["remove_from_list"]


def test_simulate_answers_405_to_archiving_a_pending_or_cleaned_member() -> None:
    snap = snapshot([], [member("bob@example.com", "pending"), member("cat@example.com", "cleaned")])
    changes = tuple(Change.make("mailchimp", "archive_member", "main", email, {"status": status},
                                {"status": "archived"}, "R9 test", 50)
                    for email, status in (("bob@example.com", "pending"), ("cat@example.com", "cleaned")))
    result = simulate_apply(snap, Plan(changes, audience_lists={"main": LIST_ID}))
    assert [(r.change.email, r.reason) for r in result.refused] == [("bob@example.com", NOT_ARCHIVABLE),
                                                                    ("cat@example.com", NOT_ARCHIVABLE)]
    assert {m.status for m in result.snapshot.audiences[LIST_ID].members.values()} == {"pending", "cleaned"}


def test_simulate_lets_the_api_resubscribe_an_api_unsubscribed_member_archived_since() -> None:
    # The unkind vendor: only a person's own unsubscribe is protected by Mailchimp.
    snap = snapshot([], [member(ANN, "subscribed"), member("bob@example.com", "unsubscribed")])
    unsub = Change.make("mailchimp", "unsubscribe_member", "main", ANN, {"status": "subscribed"},
                        {"status": "unsubscribed"}, "R4 test", 20)
    archives = tuple(Change.make("mailchimp", "archive_member", "main", email, {"status": "unsubscribed"},
                                 {"status": "archived"}, "R2 test", 30) for email in (ANN, "bob@example.com"))
    first = simulate_apply(snap, Plan((unsub, *archives), audience_lists={"main": LIST_ID}))
    restores = tuple(Change.make("mailchimp", "restore_member", "main", email, {"status": "archived"},
                                 {"status": "subscribed"}, "R8 test", 60) for email in (ANN, "bob@example.com"))
    second = simulate_apply(first.snapshot, Plan(restores, audience_lists={"main": LIST_ID}),
                            VendorHidden(archived_after_opt_out=frozenset({(LIST_ID, "bob@example.com")})))
    assert [(r.change.email, r.reason) for r in second.refused] == [("bob@example.com", COMPLIANCE)]
    assert second.snapshot.audiences[LIST_ID].members[ANN].status == "subscribed"
    # ...which is why the product keeps its own memory: both opted out, neither has restore evidence.
    memory = first.memory()
    assert set(memory.opted_out) == {ANN, "bob@example.com"} and memory.archived_by_us == {}
