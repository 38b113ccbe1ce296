"""R1 emails, R2 critical, R3 streams and clean-up, R4 HubSpot opt-outs: one table per rule."""

from __future__ import annotations

import pytest

from reconciler.plan import in_apply_order

from reconciler.settings import OptOuts, TagRule
from tests.core_builders import (
    MARKETING,
    audience,
    brief,
    config,
    contact,
    member,
    of,
    plan,
    reasons,
    snapshot,
    source,
    stream,
)

ANN = "ann@example.com"

# -- R1 Emails --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "ann", "ann@example", "a@@example.com", "an n@example.com", "@example.com",
                                 "ann@.com", "ann@example.com."])
def test_r1_contact_without_a_valid_email_is_skipped_and_reported(raw: str | None) -> None:
    result = plan(config(), snapshot([contact("101", raw, ["719"])]))
    assert result.changes == ()
    assert [r.reason for r in result.reports] == ["R1 contact 101 has no valid email"]


@pytest.mark.parametrize("signal, other, expected", [
    # The duplicate (higher id) carries the compliance signal; it must still apply.
    ("critical", {"lists": ["719", "762"]}, ("archive_member", "R2 critical list 762")),
    ("opt-out", {"lists": ["719"], "unsub": [MARKETING]}, ("unsubscribe_member", "R4 opted out in HubSpot of marketing")),
    ("opted out of all", {"lists": ["719"], "opted_out_of_all": True}, ("unsubscribe_member", "R4 opted out of all")),
    ("exclusion", {"lists": ["717"]}, ("archive_member", "R9 excluded from every stream holding it")),
    ("handover list", {"lists": ["947"]}, ("archive_member", "R9 excluded from every stream holding it")),
])
def test_r1_duplicates_by_email_carry_every_contacts_compliance_signals(signal: str, other: dict, expected) -> None:
    lists = other.pop("lists")
    contacts = [contact("101", ANN, ["719"], firstname="Ann"), contact("205", ANN, lists, firstname="Other", **other)]
    result = plan(config(), snapshot(contacts, [member(ANN, "subscribed", "Recruitment", FNAME="Ann")]))
    action, reason = expected
    mailchimp = [c for c in result.changes if c.system == "mailchimp"]
    assert [c.action for c in mailchimp] == [action], signal
    assert mailchimp[0].reason.startswith(reason)
    assert any("R1 contact 205 shares its email with contact 101" in r for r in reasons(result, ANN))


def test_r1_lowest_numeric_id_supplies_properties() -> None:
    contacts = [contact("1000", ANN, ["719"], firstname="Later"), contact("99", ANN, [], firstname="First")]
    result = plan(config(), snapshot(contacts, [member(ANN, "subscribed", "Recruitment", FNAME="Old")]))
    (update,) = of(result, "update_member")
    assert dict(update.after) == {"FNAME": "First"}
    assert update.contact_id == "99"


# -- R2 Critical ------------------------------------------------------------------------------


@pytest.mark.parametrize("status, tags", [
    ("subscribed", ("Recruitment",)),
    ("transactional", ()),  # unmanaged members neither
    ("unsubscribed", ("Manual_x",)),
])
def test_r2_critical_beats_every_stream_and_exemption(status: str, tags: tuple[str, ...]) -> None:
    # In the manual-override stream's list too, which excludes nothing.
    snap = snapshot([contact("101", ANN, ["719", "784", "762"])], [member(ANN, status, *tags)])
    result = plan(config(), snap)
    mailchimp = [c for c in result.changes if c.system == "mailchimp"]
    assert [(c.action, c.reason) for c in mailchimp] == [("archive_member", "R2 critical list 762")]
    assert dict(mailchimp[0].before) == {"status": status}


def test_r2_pending_member_is_unsubscribed_then_archived_whatever_its_exemptions() -> None:
    # Mailchimp answers 405 to archiving a pending member, and a pending member could still confirm.
    snap = snapshot([contact("101", ANN, ["719", "784", "762"])], [member(ANN, "pending", "VIP", "DoNotArchive")])
    result = plan(config(), snap)
    mailchimp = in_apply_order(c for c in result.changes if c.system == "mailchimp")
    assert [(c.action, c.rule, dict(c.after)) for c in mailchimp] == [
        ("unsubscribe_member", "R2", {"status": "unsubscribed"}), ("archive_member", "R2", {"status": "archived"})]
    archive = mailchimp[1]
    assert result.prerequisites(archive) == (mailchimp[0],)


def test_r2_cleaned_member_is_reported_not_written() -> None:
    snap = snapshot([contact("101", ANN, ["719", "762"])], [member(ANN, "cleaned", "Recruitment")])
    result = plan(config(), snap)
    assert [c for c in result.changes if c.system == "mailchimp"] == []
    assert any(r.email == ANN and r.reason.startswith("R2 critical list 762") and "cleaned" in r.reason
               for r in result.reports)


def test_r2_critical_contact_is_never_created_or_restored() -> None:
    snap = snapshot([contact("101", ANN, ["719", "773"]), contact("102", "bob@example.com", ["987", "762"])],
                    [member("bob@example.com", "archived", "General Single")])
    result = plan(config(), snap)
    assert [c.action for c in result.changes if c.system == "mailchimp"] == []


def test_r2_removes_from_every_source_list_of_audiences_with_cleanup() -> None:
    snap = snapshot([contact("101", ANN, ["719", "987", "784", "762", "717"])])
    result = plan(config(), snap)
    assert brief(of(result, "remove_from_list")) == {("remove_from_list", l, ANN) for l in ("719", "987", "784")}
    assert {c.reason for c in of(result, "remove_from_list")} == {"R2 critical list 762"}


def test_r2_cleanup_off_leaves_lists_alone() -> None:
    result = plan(config(audience(source_cleanup=False)), snapshot([contact("101", ANN, ["719", "762"])]))
    assert of(result, "remove_from_list") == []


# -- R3 Streams -------------------------------------------------------------------------------


@pytest.mark.parametrize("lists, properties, tags", [
    (["719"], {}, {"Recruitment": True}),
    (["719"], {"branches": "2"}, {"General Multi": True}),  # the tag rule replaces the source's tag
    (["719"], {"branches": "1"}, {"Recruitment": True}),
    (["719"], {"branches": "many"}, {"Recruitment": True}),  # non-numeric: the condition is false
    (["987", "719"], {}, {"Recruitment": True}),  # the first source of the stream wins
    (["784"], {}, {"General Single": True, "Manual Inclusion": True}),
    (["719", "717", "784"], {}, {"General Single": True, "Manual Inclusion": True}),  # manual override
])
def test_r3_contact_joins_the_first_stream_that_holds_and_does_not_exclude_it(lists, properties, tags) -> None:
    result = plan(config(), snapshot([contact("101", ANN, lists, **properties)]))
    (create,) = of(result, "create_member")
    assert dict(create.after["tags"]) == tags


def test_r3_manual_override_keeps_the_list_its_stream_uses_and_cleans_the_others() -> None:
    # general excludes active_deals (717): the contact leaves 719 (general's) but not 784 (its own).
    snap = snapshot([contact("101", ANN, ["719", "987", "717", "784"])])
    result = plan(config(), snap)
    removed = of(result, "remove_from_list")
    assert brief(removed) == {("remove_from_list", "719", ANN), ("remove_from_list", "987", ANN)}
    assert {c.reason for c in removed} == {"R3 excluded by active_deals (list 717) from stream general"}
    assert len(of(result, "create_member")) == 1


def test_r3_cleanup_does_not_remove_a_list_the_joined_stream_uses() -> None:
    streams = (
        stream("general", source("719", "Recruitment"), exclude=["active_deals"]),
        stream("override", source("719", "Recruitment"), source("784", "General Single")),
    )
    snap = snapshot([contact("101", ANN, ["719", "717"])])
    result = plan(config(audience(streams=streams)), snap)
    assert of(result, "remove_from_list") == []
    assert dict(of(result, "create_member")[0].after["tags"]) == {"Recruitment": True}


def test_r3_excluded_from_every_stream_is_not_eligible() -> None:
    result = plan(config(), snapshot([contact("101", ANN, ["719", "717"])]))
    assert of(result, "create_member") == []


@pytest.mark.parametrize("op, value, actual, matches", [
    ("eq", "North", "North", True), ("eq", 2, "2.0", True), ("ne", "North", "South", True), ("ne", "x", None, True),
    ("gt", 1, "2", True), ("gt", 1, None, False), ("gte", 2, "2", True), ("lt", 2, "1.5", True),
    ("lte", 2, "3", False), ("in", ["a", "b"], "b", True), ("not_in", ["a", "b"], "c", True),
    ("is_set", True, "", False), ("is_set", True, "x", True),
])
def test_r3_tag_rule_conditions(op: str, value, actual, matches: bool) -> None:
    rule = TagRule("region", op, value, "Special")
    streams = (stream("general", source("719", "Recruitment", rules=[rule])),)
    result = plan(config(audience(streams=streams)), snapshot([contact("101", ANN, ["719"], region=actual)]))
    tags = dict(of(result, "create_member")[0].after["tags"])
    assert tags == ({"Special": True} if matches else {"Recruitment": True})


# -- R4 HubSpot opt-out -----------------------------------------------------------------------


@pytest.mark.parametrize("optout, status, expected", [
    ({"unsub": [MARKETING]}, "subscribed", "unsubscribe_member"),
    ({"unsub": [MARKETING]}, "pending", "unsubscribe_member"),
    ({"opted_out_of_all": True}, "subscribed", "unsubscribe_member"),
    ({f"hs_email_optout_{MARKETING}": "true"}, "subscribed", "unsubscribe_member"),
    ({"hs_email_optout": "true"}, "pending", "unsubscribe_member"),
    ({"unsub": [MARKETING]}, "transactional", None),
    ({"unsub": [MARKETING]}, "archived", None),  # never restored, never archived for it
    ({"unsub": ["999"]}, "subscribed", None),  # a subscription R4 does not use
])
def test_r4_opted_out_in_hubspot_unsubscribes_the_member(optout: dict, status: str, expected: str | None) -> None:
    snap = snapshot([contact("101", ANN, ["719"], **optout)], [member(ANN, status, "Recruitment")])
    result = plan(config(audience(opt_outs=OptOuts(None, (MARKETING,), True))), snap)
    actions = [c.action for c in result.changes if c.system == "mailchimp"]
    assert actions == ([expected] if expected else [])
    if expected:
        assert dict(result.changes[0].after) == {"status": "unsubscribed"}
        assert result.changes[0].rule == "R4"


def test_r4_opted_out_contact_is_never_created_nor_archived_even_when_r4_writes_are_off() -> None:
    snap = snapshot([contact("101", ANN, ["719"], unsub=[MARKETING]), contact("102", "bob@example.com", ["719"],
                                                                               opted_out_of_all=True)],
                    [member("bob@example.com", "subscribed", "Recruitment")])
    result = plan(config(audience(opt_outs=OptOuts(None, (MARKETING,), False))), snap)
    assert result.changes == ()
