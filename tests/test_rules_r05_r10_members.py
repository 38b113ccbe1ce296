"""R5 create, R6 update, R7 Mailchimp opt-outs, R8 restore, R9 leaving, R10 unmanaged: one table per rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.model import Memory, Refusal
from reconciler.plan import STEP_LEAVE, STEP_MEMBERS
from reconciler.settings import OptOuts
from tests.core_builders import LIST_ID, MARKETING, audience, config, contact, member, of, plan, reasons, snapshot

ANN = "ann@example.com"

# -- R5 Create --------------------------------------------------------------------------------


def test_r5_eligible_contact_without_member_is_created_with_status_if_new_merge_fields_and_tags() -> None:
    result = plan(config(audience(new_member_status="pending")),
                  snapshot([contact("101", ANN, ["719"], firstname=" Ann ", lastname="")]))
    (create,) = result.changes
    assert (create.action, create.target, create.step, create.contact_id) == ("create_member", "main", STEP_MEMBERS,
                                                                              "101")
    # Stripped, and an empty value is not sent (R13).
    assert create.canonical()["after"] == {"status_if_new": "pending", "merge_fields": {"FNAME": "Ann"},
                                           "tags": {"Recruitment": True}}
    assert create.reason == "R5 new member (stream general, list 719)"


@pytest.mark.parametrize("retry, expected_changes", [(False, 0), (True, 1)])
def test_r5_remembered_forgotten_email_is_reported_not_tried_again(retry: bool, expected_changes: int) -> None:
    memory = Memory(refusals={(LIST_ID, ANN): Refusal("create_member", "Forgotten Email Not Subscribed",
                                                      "2024-05-01T10:00:00Z")}, retry_refused=retry)
    result = plan(config(), snapshot([contact("101", ANN, ["719"])]), memory)
    assert len(of(result, "create_member")) == expected_changes
    if not retry:
        assert reasons(result, ANN) == ["R5 create_member refused on 2024-05-01 (Forgotten Email Not Subscribed); "
                                        "--retry-refused tries again"]


# -- R6 Update --------------------------------------------------------------------------------


@pytest.mark.parametrize("hubspot, mailchimp, expected", [
    ({"firstname": "Ann"}, {"FNAME": "Ann"}, None),
    ({"firstname": " Ann "}, {"FNAME": "Ann"}, None),  # normalised before comparing (R13)
    ({"firstname": ""}, {"FNAME": "Ann"}, None),  # an empty HubSpot value never blanks Mailchimp's
    ({"firstname": None}, {"FNAME": "Ann"}, None),
    ({"firstname": "Anna"}, {"FNAME": "Ann"}, ({"FNAME": "Ann"}, {"FNAME": "Anna"})),
    ({"firstname": "Ann"}, {}, ({"FNAME": None}, {"FNAME": "Ann"})),
    ({"firstname": "Ann", "lastname": "Lee"}, {"FNAME": "Ann", "LNAME": "Li"}, ({"LNAME": "Li"}, {"LNAME": "Lee"})),
])
def test_r6_only_merge_fields_that_differ_are_written(hubspot, mailchimp, expected) -> None:
    snap = snapshot([contact("101", ANN, ["719"], **hubspot)], [member(ANN, "subscribed", "Recruitment", **mailchimp)])
    updates = of(plan(config(), snap), "update_member")
    if expected is None:
        assert updates == []
    else:
        (update,) = updates
        assert (dict(update.before), dict(update.after)) == expected
        assert "status" not in update.after


@pytest.mark.parametrize("policy, tags, added, removed", [
    # first_tag_wins: a member already on another primary tag keeps it (journey not switched).
    ("first_tag_wins", ("General Single",), [], []),
    ("first_tag_wins", (), ["Recruitment"], []),
    ("first_tag_wins", ("recruitment",), [], []),  # tags compare case-insensitively
    ("follow_source", ("General Single",), ["Recruitment"], ["General Single"]),
    ("follow_source", ("General Single", "VIP", "Other"), ["Recruitment"], ["General Single"]),
    ("follow_source", ("Recruitment", "Manual Inclusion"), [], ["Manual Inclusion"]),
    ("first_tag_wins", ("Recruitment", "Manual Inclusion"), [], []),  # kept: not implied but managed
])
def test_r6_first_tag_wins_vs_follow_source(policy: str, tags, added, removed) -> None:
    snap = snapshot([contact("101", ANN, ["719"])], [member(ANN, "subscribed", *tags)])
    result = plan(config(audience(tag_policy=policy)), snap)
    assert [list(c.after) for c in of(result, "add_tags")] == ([added] if added else [])
    assert [list(c.before) for c in of(result, "remove_tags")] == ([removed] if removed else [])


def test_r6_first_tag_wins_still_adds_extra_tags() -> None:
    snap = snapshot([contact("101", ANN, ["784"])], [member(ANN, "subscribed", "Recruitment")])
    result = plan(config(), snap)
    assert [dict(c.after) for c in of(result, "add_tags")] == [{"Manual Inclusion": True}]


@pytest.mark.parametrize("status", ["subscribed", "pending", "transactional"])
def test_r6_writable_statuses_get_updates_without_status(status: str) -> None:
    snap = snapshot([contact("101", ANN, ["719"], firstname="Ann")], [member(ANN, status)])
    result = plan(config(), snap)
    assert sorted(c.action for c in result.changes) == ["add_tags", "update_member"]
    assert all("status" not in c.after for c in result.changes)


# -- R7 Opted out in Mailchimp ----------------------------------------------------------------


@pytest.mark.parametrize("status", ["unsubscribed", "cleaned"])
@pytest.mark.parametrize("policy", ["first_tag_wins", "follow_source"])
def test_r7_unsubscribed_and_cleaned_members_are_never_written(status: str, policy: str) -> None:
    snap = snapshot([contact("101", ANN, ["719"], firstname="New")],
                    [member(ANN, status, "General Single", "Manual Inclusion", FNAME="Old")])
    result = plan(config(audience(tag_policy=policy, opt_outs=OptOuts())), snap)
    assert result.changes == ()
    assert reasons(result, ANN) == [f"R7 member is {status} in Mailchimp: never resubscribed or written "
                                    "(stream general, list 719)"]


def test_r7_unsubscribed_member_leaving_every_stream_is_not_archived() -> None:
    snap = snapshot([contact("101", ANN, ["719", "717"])], [member(ANN, "unsubscribed", "Recruitment")])
    result = plan(config(audience(opt_outs=OptOuts())), snap)
    assert [c for c in result.changes if c.system == "mailchimp"] == []


# -- R8 Restore -------------------------------------------------------------------------------


def test_r8_restore_resets_tags_as_a_create_would() -> None:
    # first_tag_wins does not reach across an archive; managed tags not implied go; others stay.
    snap = snapshot([contact("101", ANN, ["719"], firstname="Ann")],
                    [member(ANN, "archived", "General Single", "Manual Inclusion", "VIP", "Recruitment Finished",
                            FNAME="Old")])
    (restore,) = plan(config(), snap, Memory(archived_by_us={(LIST_ID, ANN): "subscribed"})).changes
    assert restore.action == "restore_member"
    assert restore.canonical()["after"] == {
        "status": "subscribed", "merge_fields": {"FNAME": "Ann"},
        "tags": {"Recruitment": True, "General Single": False, "Manual Inclusion": False,
                 "Recruitment Finished": False},
    }
    assert restore.canonical()["before"] == {
        "status": "archived", "merge_fields": {"FNAME": "Old"},
        "tags": {"Recruitment": False, "General Single": True, "Manual Inclusion": True, "Recruitment Finished": True},
    }


@pytest.mark.parametrize("mode", ["subscribed", "pending"])
@pytest.mark.parametrize("archived_while, restored", [("subscribed", True), ("pending", True),
                                                      ("unsubscribed", False), ("cleaned", False),
                                                      ("transactional", False), (None, False)])
def test_r8_restores_only_with_evidence_of_consent_in_both_modes(mode, archived_while, restored) -> None:
    # Never relying on Mailchimp to refuse: it re-subscribes members an admin or the API unsubscribed.
    archived = {(LIST_ID, ANN): archived_while} if archived_while else {}
    snap = snapshot([contact("101", ANN, ["719"])], [member(ANN, "archived")])
    result = plan(config(audience(new_member_status=mode)), snap, Memory(archived_by_us=archived))
    assert len(of(result, "restore_member")) == int(restored)
    if not restored:
        assert reasons(result, ANN)[0].startswith("R8 restore needs consent")
    else:
        assert f"archived by this product while {archived_while}" in of(result, "restore_member")[0].reason


@pytest.mark.parametrize("subscribed_to, restored", [({MARKETING}, True), ({"999"}, False), (set(), False)])
def test_r8_hubspot_consent_to_the_audiences_subscription_is_evidence(subscribed_to, restored) -> None:
    snap = replace(snapshot([contact("101", ANN, ["719"])], [member(ANN, "archived")]),
                   consent={ANN: frozenset(subscribed_to)} if subscribed_to else {})
    result = plan(config(), snap)
    assert len(of(result, "restore_member")) == int(restored)
    if restored:
        assert f"explicitly subscribed in HubSpot to {MARKETING}" in of(result, "restore_member")[0].reason


def test_r8_no_restore_for_a_person_who_opted_out_in_mailchimp_even_with_our_archive_on_record() -> None:
    # The audit log remembers the opt-out (an R11 unsubscribe) although the member is now archived.
    snap = snapshot([contact("101", ANN, ["719"])], [member(ANN, "archived")])
    memory = Memory(archived_by_us={(LIST_ID, ANN): "subscribed"},
                    opted_out={ANN: "R11 unsubscribe from audience main on 2026-01-01"})
    result = plan(config(), snap, memory)
    assert result.changes == ()


def test_r8_remembered_compliance_refusal_is_reported_with_its_date() -> None:
    memory = Memory(refusals={(LIST_ID, ANN): Refusal("restore_member", "Member In Compliance State",
                                                      "2024-03-02T08:00:00Z")})
    result = plan(config(), snapshot([contact("101", ANN, ["719"])], [member(ANN, "archived")]), memory)
    assert result.changes == ()
    assert [r.kind for r in result.reports] == ["refused"]
    assert "refused on 2024-03-02 (Member In Compliance State)" in result.reports[0].reason


def test_r8_restore_archived_off_reports_instead() -> None:
    result = plan(config(audience(restore_archived=False)), snapshot([contact("101", ANN, ["719"])],
                                                                     [member(ANN, "archived")]))
    assert result.changes == ()
    assert reasons(result, ANN)[0].startswith("R8 archived member not restored")


# -- R9 Leaving, R10 Unmanaged ----------------------------------------------------------------


@pytest.mark.parametrize("contacts, why", [
    ([], "R9 no HubSpot contact has this email"),
    ([contact("101", ANN, ["555"])], "R9 no source list holds the contact"),
    ([contact("101", ANN, ["719", "717"])],
     "R9 excluded from every stream holding it: stream general by active_deals (list 717)"),
    ([contact("101", ANN, ["719", "947"])],
     "R9 excluded from every stream holding it: stream general by active_deals (list 717)".replace(
         "active_deals (list 717)", "handover list 947")),
])
@pytest.mark.parametrize("on_leave, action", [("archive", "archive_member"), ("untag", "remove_tags"), ("keep", None)])
def test_r9_leaving_member_gets_on_leave(contacts, why: str, on_leave: str, action: str | None) -> None:
    snap = snapshot(contacts, [member(ANN, "subscribed", "General Multi", "Other")])
    result = plan(config(audience(on_leave=on_leave)), snap)
    mailchimp = [c for c in result.changes if c.system == "mailchimp"]
    assert [c.action for c in mailchimp] == ([action] if action else [])
    if action:
        assert mailchimp[0].reason == why
        assert mailchimp[0].step == STEP_LEAVE
    if action == "remove_tags":
        assert dict(mailchimp[0].before) == {"General Multi": True}  # managed tags only


@pytest.mark.parametrize("tags, status", [
    (("Recruitment", "VIP"), "subscribed"),  # exempt by name
    (("Recruitment", "manual_keep"), "subscribed"),  # exempt by pattern, case-insensitive
    (("Other",), "subscribed"),  # R10: unmanaged
    ((), "pending"),
    (("Recruitment",), "unsubscribed"),
    (("Recruitment",), "archived"),
])
def test_r9_r10_exempt_unmanaged_and_opted_out_members_are_left_alone(tags, status: str) -> None:
    result = plan(config(), snapshot([], [member(ANN, status, *tags)]))
    assert [c for c in result.changes if c.system == "mailchimp"] == []
