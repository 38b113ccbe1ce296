"""Table tests that kill the compliance mutations of bench/mutations.py that nothing else caught.

Each test names, in its docstring, the mutation it must fail on. They are deterministic and fast,
so they run first in every mutant's test subset; the property tests catch some of the same breaks,
but only on the examples they happen to draw.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from reconciler.audit import AuditLog
from reconciler.errors import StalePlan
from reconciler.model import HubList, Memory
from reconciler.plan import (
    HUBSPOT,
    MAILCHIMP,
    STEP_LEAVE,
    STEP_MEMBERS,
    STEP_OPT_OUTS_FROM_HUBSPOT,
    STEP_OPT_OUTS_TO_HUBSPOT,
    Change,
    checksum_of,
)
from reconciler.platforms.mailchimp import MailchimpClient
from reconciler.platforms.results import APPLIED
from reconciler.render.json_plan import plan_to_document
from reconciler.review import check_reviewed
from reconciler.sandbox import Sandbox
from reconciler.settings import MailchimpSettings, OptOuts, frozen_map
from tests.core_builders import (
    LIST_ID,
    MARKETING,
    audience,
    config,
    contact,
    member,
    of,
    plan,
    reasons,
    snapshot,
    to_hubspot,
)

ANN = "ann@example.com"
NEWSLETTER = "289137199"


def two_subscriptions(*audiences):
    """The example config with a second subscription (newsletter) beside marketing."""
    return replace(config(*audiences), subscriptions=frozen_map({"marketing": MARKETING, "newsletter": NEWSLETTER}))


def mailchimp_changes(result) -> list[Change]:
    return [c for c in result.changes if c.system == MAILCHIMP]


# -- opt-outs stop every write (issue 11 point 6) ---------------------------------------------------


@pytest.mark.parametrize("optout", [{"unsub": [NEWSLETTER]}, {f"hs_email_optout_{NEWSLETTER}": "true"}])
@pytest.mark.parametrize("from_hubspot_enabled", [True, False])
def test_opted_out_of_a_subscription_r4_does_not_use_gets_no_write(optout: dict, from_hubspot_enabled: bool) -> None:
    """Kills `opted_out_gets_writes`: no merge fields or tags for someone opted out of any
    configured subscription, even one R4 does not unsubscribe from."""
    aud = audience(opt_outs=OptOuts(None, (MARKETING,), from_hubspot_enabled))
    snap = snapshot([contact("101", ANN, ["719"], firstname="New", **optout)], [member(ANN, "subscribed", FNAME="Old")])
    result = plan(two_subscriptions(aud), snap)
    assert mailchimp_changes(result) == []
    assert any("no data written to its subscribed member" in r for r in reasons(result, ANN))


@pytest.mark.parametrize("optout", [{"opted_out_of_all": True}, {"hs_email_optout": "true"}, {"unsub": [MARKETING]},
                                    {f"hs_email_optout_{MARKETING}": "true"}])
@pytest.mark.parametrize("status", ["subscribed", "pending", "transactional"])
def test_from_hubspot_off_an_opted_out_person_still_gets_no_write(optout: dict, status: str) -> None:
    """Kills `opted_out_gets_writes_when_from_hubspot_off`: turning R4's unsubscribe off does not
    turn the opt-out into consent to update the member."""
    aud = audience(opt_outs=OptOuts(None, (), False))
    snap = snapshot([contact("101", ANN, ["719"], firstname="New", **optout)], [member(ANN, status, FNAME="Old")])
    result = plan(config(aud), snap)
    assert mailchimp_changes(result) == []
    assert any("from_hubspot is off" in r for r in reasons(result, ANN))


def test_a_duplicates_hs_email_optout_property_unsubscribes_the_member() -> None:
    """Kills `r1_duplicate_hs_email_optout_ignored`: the property, on the duplicate (not the contact
    supplying properties), is an opt-out of all email."""
    contacts = [contact("101", ANN, ["719"], firstname="Ann"),
                contact("205", ANN, ["719"], firstname="Other", hs_email_optout="true")]
    result = plan(config(), snapshot(contacts, [member(ANN, "subscribed", "Recruitment", FNAME="Ann")]))
    (change,) = mailchimp_changes(result)
    assert (change.action, dict(change.after)) == ("unsubscribe_member", {"status": "unsubscribed"})
    assert change.reason.startswith("R4 opted out of all email")


# -- R9 on a pending member (point 4) -------------------------------------------------------------


def test_r9_pending_member_is_reported_not_archived() -> None:
    """Kills `r9_archives_pending`: Mailchimp answers 405 to archiving a pending member."""
    result = plan(config(audience(on_leave="archive")), snapshot([], [member(ANN, "pending", "Recruitment")]))
    assert result.changes == ()
    assert any("pending members cannot be archived" in r for r in reasons(result, ANN))
    # A subscribed member in the same place is archived: the table can fail both ways.
    result = plan(config(audience(on_leave="archive")), snapshot([], [member(ANN, "subscribed", "Recruitment")]))
    assert [(c.action, c.step) for c in result.changes] == [("archive_member", STEP_LEAVE)]


# -- R11 carries opt-outs with the configured legal basis (points 8, 14) ----------------------------


@pytest.mark.parametrize("status", ["unsubscribed", "cleaned"])
def test_r11_carries_unsubscribed_and_cleaned_members_with_the_configured_legal_basis(status: str) -> None:
    """Kills `r11_cleaned_not_carried` and `r11_default_legal_basis`."""
    aud = audience(opt_outs=OptOuts(to_hubspot(statuses=("unsubscribed", "cleaned"), legal_basis="PERFORMANCE_OF_CONTRACT",
                                               explanation="Opted out of Main (ticket 4711)"), (MARKETING,), True))
    result = plan(config(aud), snapshot([contact("101", ANN, ["719"])], [member(ANN, status, "Recruitment")]))
    (change,) = of(result, "unsubscribe_contact", ANN)
    assert (change.system, change.target, change.step) == (HUBSPOT, MARKETING, STEP_OPT_OUTS_TO_HUBSPOT)
    assert dict(change.after) == {"unsubscribed": True, "legal_basis": "PERFORMANCE_OF_CONTRACT",
                                  "explanation": "Opted out of Main (ticket 4711)"}


def test_r11_of_an_r4_unsubscribe_in_the_same_plan_carries_the_configured_legal_basis() -> None:
    """Kills `r11_of_this_plan_default_legal_basis`: R4 unsubscribes the member (opted out of
    marketing in HubSpot) and the same plan carries that opt-out to the newsletter subscription."""
    aud = audience(opt_outs=OptOuts(to_hubspot(subscriptions=(MARKETING, NEWSLETTER), legal_basis="CONSENT_WITHDRAWN",
                                               explanation="Left via HubSpot"), (MARKETING,), True))
    snap = snapshot([contact("101", ANN, ["719"], unsub=[MARKETING])], [member(ANN, "subscribed", "Recruitment")])
    result = plan(two_subscriptions(aud), snap)
    assert [c.action for c in mailchimp_changes(result)] == ["unsubscribe_member"]
    (change,) = of(result, "unsubscribe_contact", ANN)
    assert change.target == NEWSLETTER
    assert dict(change.after) == {"unsubscribed": True, "legal_basis": "CONSENT_WITHDRAWN",
                                  "explanation": "Left via HubSpot"}


# -- R14 lists of unknown type (point 12) ----------------------------------------------------------


@pytest.mark.parametrize("processing_type, written", [("", False), ("SOMETHING_NEW", False), ("DYNAMIC", False),
                                                      ("MANUAL", True), ("SNAPSHOT", True)])
def test_r14_only_manual_and_snapshot_lists_are_written(processing_type: str, written: bool) -> None:
    """Kills `r14_unknown_list_type_written`: the R2 clean-up of source list 719 happens only when
    719 is known to take membership writes."""
    snap = snapshot([contact("101", ANN, ["719", "762"])], [],
                    lists=[HubList("719", "Recruitment", processing_type, 1)])
    result = plan(config(), snap)
    assert len(of(result, "remove_from_list", ANN)) == int(written)
    warnings = [r.reason for r in result.reports if r.kind == "warning"]
    assert bool(warnings) != written
    if not written:
        assert warnings[0].startswith("R14 list 719 is ") and "never written" in warnings[0]


# -- the stale check covers `after` (point 13) ------------------------------------------------------


def test_a_reviewed_change_whose_after_was_edited_and_rechecksummed_is_stale(tmp_path: Path) -> None:
    """Kills `stale_check_ignores_after`: the file's checksum is recomputed after the edit, so only
    the comparison of each change with the re-plan's can see it."""
    snap = snapshot([contact("101", ANN, ["719"], firstname="Ann")], [member(ANN, "subscribed", "Recruitment", FNAME="Old")])
    live = plan(config(), snap)
    assert [c.action for c in live.changes] == ["update_member"]
    document = plan_to_document(live, config_checksum="c", audiences=["main"], options={}, redact=False)
    document["changes"][0]["after"] = {"FNAME": "Zed"}
    document["checksum"] = checksum_of(Change.make(**{k: c[k] for k in (
        "system", "action", "target", "email", "before", "after", "reason", "step", "contact_id")})
        for c in document["changes"])
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    args = SimpleNamespace(plan_file=str(path), checksum=None, retry_refused=False)
    console = Console(file=io.StringIO(), width=200)
    with pytest.raises(StalePlan, match="1 change"):
        check_reviewed(args, live, console, redact=False)
    # The unedited file is the live plan: not stale.
    path.write_text(json.dumps(plan_to_document(live, config_checksum="c", audiences=["main"], options={},
                                                redact=False)), encoding="utf-8")
    check_reviewed(args, live, console, redact=False)


# -- audit memory: the latest word wins (points 3, 8) ----------------------------------------------


def _archive(status: str) -> Change:
    return Change.make(MAILCHIMP, "archive_member", "main", ANN, {"status": status}, {"status": "archived"},
                       "R9 no source list holds the contact", STEP_LEAVE)


def _restore() -> Change:
    return Change.make(MAILCHIMP, "restore_member", "main", ANN, {"status": "archived"}, {"status": "subscribed"},
                       "R8 archived member is eligible again", STEP_MEMBERS, "101")


def _r4_unsubscribe() -> Change:
    return Change.make(MAILCHIMP, "unsubscribe_member", "main", ANN, {"status": "subscribed"},
                       {"status": "unsubscribed"}, "R4 opted out in HubSpot of marketing", STEP_OPT_OUTS_FROM_HUBSPOT)


def _r11_unsubscribe() -> Change:
    return Change.make(HUBSPOT, "unsubscribe_contact", MARKETING, ANN, {"unsubscribed": False},
                       {"unsubscribed": True, "legal_basis": "LEGITIMATE_INTEREST_OTHER", "explanation": "x"},
                       "R11 unsubscribed in Mailchimp audience other: unsubscribe from marketing",
                       STEP_OPT_OUTS_TO_HUBSPOT, "101")


EVENTS = {"archive subscribed": _archive("subscribed"), "archive pending": _archive("pending"),
          "archive unsubscribed": _archive("unsubscribed"), "archive cleaned": _archive("cleaned"),
          "restore": _restore(), "r4 unsubscribe": _r4_unsubscribe(), "r11 unsubscribe": _r11_unsubscribe()}


def _memory(tmp_path: Path, events: list[str]) -> Memory:
    log = AuditLog.open(str(tmp_path / "audit.sqlite"))
    try:
        for index, name in enumerate(events):
            change = EVENTS[name]
            run = f"run-{index}"
            log.record(run, [change], phase="attempted", operator="t", config_checksum="c", list_ids={"main": LIST_ID})
            log.record(run, [change], phase="outcome", operator="t", config_checksum="c",
                       outcomes=[("applied", None)], list_ids={"main": LIST_ID})
        return log.memory()
    finally:
        log.close()


@pytest.mark.parametrize("events, archived_while, opted_out", [
    (["archive subscribed"], "subscribed", False),
    (["archive pending"], "pending", False),
    (["archive subscribed", "r11 unsubscribe"], None, True),  # memory_r11_* mutations
    (["archive subscribed", "restore"], None, False),  # memory_restore_does_not_clear_archive
    (["archive subscribed", "restore", "archive pending"], "pending", False),
    (["archive subscribed", "r4 unsubscribe"], None, False),  # memory_r4_unsubscribe_does_not_clear_archive
    (["archive unsubscribed"], None, True),  # memory_opted_out_archive_not_remembered
    (["archive cleaned"], None, True),
    (["r11 unsubscribe"], None, True),  # memory_r11_not_remembered
    (["r11 unsubscribe", "archive subscribed"], None, True),  # an opt-out on record: never evidence again
])
def test_audit_memory_follows_the_latest_word(tmp_path: Path, events: list[str], archived_while: str | None,
                                              opted_out: bool) -> None:
    """Kills the `memory_*` mutations: R8's evidence (archived by us while subscribed or pending)
    and the remembered Mailchimp opt-outs, as the audit log's events leave them."""
    memory = _memory(tmp_path, events)
    assert memory.archived_by_us.get((LIST_ID, ANN)) == archived_while
    assert (ANN in memory.opted_out) == opted_out


def test_the_remembered_memory_decides_the_restore(tmp_path: Path) -> None:
    """The same memory, through the rules: evidence restores, a later R11 unsubscribe does not."""
    snap = snapshot([contact("101", ANN, ["719"])], [member(ANN, "archived")])
    restored = plan(config(), snap, _memory(tmp_path / "a", ["archive subscribed"]))
    assert [c.action for c in restored.changes] == ["restore_member"]
    refused = plan(config(), snap, _memory(tmp_path / "b", ["archive subscribed", "r11 unsubscribe"]))
    assert of(refused, "restore_member") == []


# -- the Mailchimp client never sends a status on update (R6) --------------------------------------


def _sandbox_seed() -> dict:
    return {
        "hubspot": {"token": "hs-token-mutants", "lists": [], "contacts": []},
        "mailchimp": {"api_key": "mc-key-mutants-us1", "audiences": [{
            "id": LIST_ID, "name": "Main", "double_optin": True,
            "merge_fields": [{"tag": "FNAME", "type": "text"}],
            "members": [{"email": "pending@example.com", "status": "pending", "merge_fields": {}, "tags": []},
                        {"email": "txn@example.com", "status": "transactional", "merge_fields": {}, "tags": []}],
        }]},
    }


def test_an_update_writes_merge_fields_and_leaves_the_status_alone() -> None:
    """Kills `mailchimp_update_sends_status`: a pending member stays pending (it has not confirmed)
    and a transactional one is not made a marketing subscriber."""
    with Sandbox(_sandbox_seed()) as box:
        client = MailchimpClient(MailchimpSettings(api_key=box.mailchimp_api_key, base_url=box.mailchimp_base_url,
                                                   max_connections=2))
        try:
            for email, status in (("pending@example.com", "pending"), ("txn@example.com", "transactional")):
                assert client.update_member(LIST_ID, email, {"FNAME": "Set"}).outcome == APPLIED
                member_now = client.all_members(LIST_ID)[email]
                assert (member_now.status, member_now.merge_fields.get("FNAME")) == (status, "Set")
        finally:
            client.close()
