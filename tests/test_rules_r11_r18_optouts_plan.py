"""R11 opt-outs to HubSpot, R12 handover, R14 dynamic lists, R15 one snapshot, R16 cap, R17 safety, R18 order."""

from __future__ import annotations

import pytest

from reconciler.plan import (
    STEP_CLEANUP,
    STEP_CRITICAL,
    STEP_HANDOVER_HUBSPOT,
    STEP_HANDOVER_MAILCHIMP,
    STEP_OPT_OUTS_CREATE_CONTACTS,
    STEP_OPT_OUTS_FROM_HUBSPOT,
    STEP_OPT_OUTS_TO_HUBSPOT,
)
from reconciler.model import Memory
from reconciler.safety import check_safety
from reconciler.settings import Handover, Limit, OptOuts, frozen_map
from tests.core_builders import (
    LIST_ID,
    MARKETING,
    audience,
    brief,
    config,
    contact,
    limits,
    member,
    of,
    plan,
    reasons,
    snapshot,
    to_hubspot,
)

ANN = "ann@example.com"
BOB = "bob@example.com"

# -- R11 Opt-outs to HubSpot ------------------------------------------------------------------


@pytest.mark.parametrize("status, tags, unsub, expected", [
    ("unsubscribed", ("Recruitment",), [], True),
    ("unsubscribed", (), [], True),  # managed or not
    ("unsubscribed", (), [MARKETING], False),  # already unsubscribed: nothing to do
    ("cleaned", (), [], False),  # not in `statuses`
    ("subscribed", (), [], False),
])
def test_r11_members_opted_out_in_mailchimp_are_unsubscribed_in_hubspot(status, tags, unsub, expected) -> None:
    result = plan(config(), snapshot([contact("101", ANN, [], unsub=unsub)], [member(ANN, status, *tags)]))
    changes = of(result, "unsubscribe_contact")
    assert len(changes) == int(expected)
    if expected:
        (change,) = changes
        assert (change.target, change.step, change.contact_id) == (MARKETING, STEP_OPT_OUTS_TO_HUBSPOT, "101")
        assert dict(change.after) == {"unsubscribed": True, "legal_basis": "LEGITIMATE_INTEREST_OTHER",
                                      "explanation": "Contact unsubscribed in Mailchimp"}


def test_r11_member_without_contact_is_reported_or_its_contact_created() -> None:
    snap = snapshot([], [member(ANN, "unsubscribed")])
    reported = plan(config(), snap)
    assert reported.changes == ()
    assert reasons(reported, ANN) == ["R11 unsubscribed member of audience main has no HubSpot contact"]
    created = plan(config(audience(opt_outs=OptOuts(to_hubspot(create_missing_contacts=True), (MARKETING,), True))),
                   snap)
    assert [(c.action, c.step, c.contact_id) for c in created.changes] == [
        ("create_contact", STEP_OPT_OUTS_CREATE_CONTACTS, None), ("unsubscribe_contact", STEP_OPT_OUTS_TO_HUBSPOT, None)]


def test_r11_before_r4_in_the_same_plan_across_two_audiences() -> None:
    # Unsubscribed in audience "news"; subscribed and eligible in "main": R11 carries the opt-out
    # to HubSpot, and R4 then unsubscribes the "main" member in the same plan (R15).
    news = audience("news", "news00001", streams=(), handover=())
    cfg = config(audience(), news)
    snap = snapshot([contact("101", ANN, ["719"])],
                    {LIST_ID: [member(ANN, "subscribed", "Recruitment")], "news00001": [member(ANN, "unsubscribed")]})
    result = plan(cfg, snap)
    assert [(c.action, c.target) for c in result.changes] == [("unsubscribe_contact", MARKETING),
                                                              ("unsubscribe_member", "main")]
    assert result.changes[0].step < result.changes[1].step == STEP_OPT_OUTS_FROM_HUBSPOT
    assert result.changes[1].reason == "R4 unsubscribed in HubSpot by this plan (R11 from audience news)"


def test_r11_contact_counts_as_opted_out_in_every_audience_so_it_is_not_created() -> None:
    news = audience("news", "news00001", streams=(), handover=())
    snap = snapshot([contact("101", ANN, ["719"])], {LIST_ID: [], "news00001": [member(ANN, "unsubscribed")]})
    result = plan(config(audience(), news), snap)
    assert [c.action for c in result.changes] == ["unsubscribe_contact"]


# -- R12 Handover -----------------------------------------------------------------------------


def test_r12_handover_writes_hubspot_first_then_untags_and_archives() -> None:
    snap = snapshot([contact("101", ANN, ["719"])],
                    [member(ANN, "subscribed", "Recruitment", "Recruitment Finished", "Other")])
    result = plan(config(), snap)
    assert [(c.step, c.action, c.target) for c in result.changes] == [
        (STEP_HANDOVER_HUBSPOT, "remove_from_list", "719"),
        (STEP_HANDOVER_HUBSPOT, "add_to_list", "947"),
        (STEP_HANDOVER_HUBSPOT, "set_contact_properties", "contacts"),
        (STEP_HANDOVER_MAILCHIMP, "remove_tags", "main"),
        (STEP_HANDOVER_MAILCHIMP, "archive_member", "main"),
    ]
    assert dict(result.changes[2].after) == {"import_list": "Recruitment"}  # {source_list_name}
    assert dict(result.changes[3].before) == {"Recruitment": True, "Recruitment Finished": True}


def test_r12_handover_target_acts_as_an_exclusion_and_triggers_no_cleanup() -> None:
    snap = snapshot([contact("101", ANN, ["719", "987", "947"])])
    result = plan(config(), snap)
    assert result.changes == ()  # not created, not removed from 719/987


def test_r12_exempt_member_is_not_handed_over_and_no_contact_is_reported() -> None:
    exempt = plan(config(), snapshot([contact("101", ANN, ["719"])],
                                     [member(ANN, "subscribed", "Recruitment", "Recruitment Finished", "VIP")]))
    assert of(exempt, "archive_member") == [] and of(exempt, "add_to_list") == []
    orphan = plan(config(), snapshot([], [member(ANN, "subscribed", "Recruitment", "Recruitment Finished")]))
    assert orphan.changes == ()
    assert reasons(orphan, ANN)[0].startswith("R12 handover tag Recruitment Finished but no HubSpot contact")


def test_r12_handover_of_an_unsubscribed_member_waits_for_its_r11_changes() -> None:
    snap = snapshot([contact("101", ANN, ["719"])], [member(ANN, "unsubscribed", "Recruitment Finished")])
    result = plan(config(), snap)
    (archive,) = of(result, "archive_member")
    assert result.prerequisites(archive) == tuple(of(result, "unsubscribe_contact"))
    assert len(result.prerequisites(archive)) == 1


def test_r12_handover_beats_an_opt_out_and_is_beaten_by_critical() -> None:
    snap = snapshot([contact("101", ANN, ["719"], unsub=[MARKETING]), contact("102", BOB, ["719", "762"])],
                    [member(ANN, "subscribed", "Recruitment Finished"), member(BOB, "subscribed",
                                                                               "Recruitment Finished")])
    result = plan(config(), snap)
    assert {(c.email, c.rule) for c in of(result, "archive_member")} == {(ANN, "R12"), (BOB, "R2")}
    assert of(result, "unsubscribe_member") == []
    assert {c.email for c in of(result, "add_to_list")} == {ANN}


# -- R14 Dynamic lists ------------------------------------------------------------------------


def test_r14_dynamic_lists_are_never_written_and_reported() -> None:
    snap = snapshot([contact("101", ANN, ["719", "987", "717"])], dynamic=["719"])
    result = plan(config(), snap)
    assert brief(of(result, "remove_from_list")) == {("remove_from_list", "987", ANN)}
    warnings = [r for r in result.reports if r.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].reason.startswith("R14 list 719 is DYNAMIC (Recruitment)")


# -- R16 Member cap ---------------------------------------------------------------------------


def test_r16_member_cap_restores_first_then_stream_source_and_email_order() -> None:
    contacts = [
        contact("1", "zed@example.com", ["719"]),  # create, stream general, source 719
        contact("2", "amy@example.com", ["784"]),  # create, stream manual_override
        contact("3", "kim@example.com", ["987"]),  # create, stream general, source 987
        contact("4", "bea@example.com", ["719"]),  # create, stream general, source 719
        contact("5", "yan@example.com", ["784"]),  # restore (comes first)
    ]
    members = [member("yan@example.com", "archived"), member("old@example.com", "subscribed", "Other")]
    for cap, admitted in [(1, ["yan"]), (3, ["yan", "bea", "zed"]), (4, ["yan", "bea", "zed", "kim"]),
                          (6, ["yan", "bea", "zed", "kim", "amy"])]:
        memory = Memory(archived_by_us={(LIST_ID, "yan@example.com"): "subscribed"})  # R8 evidence
        result = plan(config(audience(member_cap=cap + 1)), snapshot(contacts, members), memory)  # +1: old counts
        added = [c.email.split("@")[0] for c in sorted(result.changes, key=lambda c: c.action != "restore_member")]
        assert sorted(added) == sorted(admitted), cap
        capped = [r for r in result.reports if r.kind == "capped"]
        assert len(capped) == 5 - len(admitted)
        assert all(r.reason.startswith(f"R16 member cap {cap + 1} of audience main reached") for r in capped)


def test_r16_members_leaving_in_the_same_plan_free_their_place() -> None:
    contacts = [contact("1", ANN, ["719"]), contact("2", BOB, ["719", "717"])]
    result = plan(config(audience(member_cap=1)), snapshot(contacts, [member(BOB, "subscribed", "Recruitment")]))
    assert {c.action for c in result.changes if c.system == "mailchimp"} == {"archive_member", "create_member"}


# -- R17 Safety -------------------------------------------------------------------------------


def _portal_with_everything(n: int):
    """n of each kind of counted change in audience main (plus list removals from 719)."""
    contacts, members = [], []
    for i in range(n):
        contacts.append(contact(f"{100 + i}", f"new{i}@example.com", ["987"]))  # create
        contacts.append(contact(f"{200 + i}", f"out{i}@example.com", ["987"], unsub=[MARKETING]))  # R4
        members.append(member(f"out{i}@example.com", "subscribed", "General Single"))
        members.append(member(f"gone{i}@example.com", "subscribed", "General Single"))  # R9 archive
        contacts.append(contact(f"{300 + i}", f"mc{i}@example.com", ["719", "717"]))  # R3 clean-up of 719
        members.append(member(f"mc{i}@example.com", "unsubscribed"))  # R11
    for i in range(4 * n):
        members.append(member(f"keep{i}@example.com", "subscribed", "Other"))
    return snapshot(contacts, members)


LIMITS = ["max_archives", "max_creates", "max_mailchimp_unsubscribes", "max_hubspot_unsubscribes",
          "max_list_removals"]


@pytest.mark.parametrize("name", LIMITS)
@pytest.mark.parametrize("bound", ["count", "percent"])
def test_r17_every_safety_limit_refuses_by_either_bound(name: str, bound: str) -> None:
    snap = _portal_with_everything(5)
    result = plan(config(), snap)
    assert check_safety(result, config(safety=limits(**{name: Limit(count=5)}))) == []
    limit = Limit(count=4) if bound == "count" else Limit(percent=1.0)
    (violation,) = check_safety(result, config(safety=limits(**{name: limit})))
    assert (violation.limit, violation.count, violation.bound_kind) == (name, 5, bound)
    assert violation.excess == 5 - violation.bound > 0
    assert "re-run with --force to allow 5" in violation.message


def test_r17_percent_is_of_non_archived_members_and_of_list_size() -> None:
    snap = _portal_with_everything(5)
    result = plan(config(), snap)
    # 35 members, none archived: 5 archives are 14.3%.
    assert check_safety(result, config(safety=limits(max_archives=Limit(percent=15)))) == []
    (violation,) = check_safety(result, config(safety=limits(max_archives=Limit(percent=14))))
    assert (violation.base, violation.bound) == (35, 4)
    # List 719 holds the 5 contacts: removing all is 100%.
    (removals,) = check_safety(result, config(safety=limits(max_list_removals=Limit(percent=99))))
    assert (removals.scope, removals.base, removals.bound) == ("list 719", 5, 4)


def test_r17_untags_count_every_remove_tags() -> None:
    snap = snapshot([], [member(f"u{i}@example.com", "subscribed", "Recruitment") for i in range(3)])
    result = plan(config(audience(on_leave="untag")), snap)
    (violation,) = check_safety(result, config(safety=limits(max_untags=Limit(count=2))))
    assert (violation.count, violation.bound, violation.excess) == (3, 2, 1)
    assert violation.message.startswith("3 untags in audience main exceed max_untags (count 2) by 1")


def test_r17_every_archive_counts_and_handover_removals_count_as_list_removals() -> None:
    snap = snapshot([contact("1", ANN, ["719", "762"]), contact("2", BOB, ["719"])],
                    [member(ANN, "subscribed"), member(BOB, "subscribed", "Recruitment Finished"),
                     member("gone@example.com", "subscribed", "Recruitment")])
    result = plan(config(), snap)
    assert sorted(c.rule for c in of(result, "archive_member")) == ["R12", "R2", "R9"]
    (archives,) = check_safety(result, config(safety=limits(max_archives=Limit(count=2))))
    assert archives.count == 3
    (removals,) = check_safety(result, config(safety=limits(max_list_removals=Limit(count=1))))
    assert removals.count == 2 and {c.rule for c in of(result, "remove_from_list")} == {"R2", "R12"}


# -- R18 Order --------------------------------------------------------------------------------


def test_r18_changes_are_in_apply_order_then_target_then_email() -> None:
    handover = Handover("Done", "947", ("719",), frozen_map({}))
    snap = snapshot(
        [contact("1", ANN, ["719"], firstname="Ann"), contact("2", BOB, ["719", "762"]),
         contact("3", "cat@example.com", ["987"], unsub=[MARKETING]), contact("4", "dan@example.com", ["719"]),
         contact("5", "eve@example.com", ["719", "717"]), contact("6", "fay@example.com", [])],
        [member(BOB, "subscribed"), member("cat@example.com", "subscribed"),
         member("dan@example.com", "subscribed", "Done"), member("fay@example.com", "unsubscribed"),
         member("gus@example.com", "subscribed", "Recruitment")],
    )
    result = plan(config(audience(handover=(handover,))), snap)
    steps = [c.step for c in result.changes]
    assert steps == sorted(steps)
    assert {STEP_OPT_OUTS_TO_HUBSPOT, STEP_OPT_OUTS_FROM_HUBSPOT, STEP_CRITICAL, STEP_HANDOVER_HUBSPOT,
            STEP_HANDOVER_MAILCHIMP, STEP_CLEANUP} <= set(steps)
    assert [c.sort_key() for c in result.changes] == sorted(c.sort_key() for c in result.changes)


def test_r12_finishes_a_handover_an_interrupted_apply_left_untagged_but_live() -> None:
    # The tags are gone (R10 would call the member unmanaged); the audit log remembers the untag.
    snap = snapshot([contact("101", ANN, ["947"])], [member(ANN, "subscribed")])
    memory = Memory(handovers_unfinished={(LIST_ID, ANN): "R12 handover Recruitment Finished to list 947"})
    result = plan(config(), snap, memory)
    assert [(c.action, c.reason) for c in result.changes if c.system == "mailchimp"] == [
        ("archive_member", "R12 handover Recruitment Finished to list 947 "
                           "(finishing a handover an interrupted apply left unarchived)")]
    assert [c for c in plan(config(), snap).changes if c.system == "mailchimp"] == []  # without the memory: R10
