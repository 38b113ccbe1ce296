"""The Applier on hand-built plans against the sandbox: prerequisites, the member cap, what is partial.

The plans here are built directly (Change/Plan values) so each rule of the apply is checked on
its own, independently of what the rules happen to plan; the vendor is the real sandbox over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import requests

from reconciler.apply import RECHECK_FAILED, Applier, Outcome, partial
from reconciler.audit import AuditLog
from reconciler.plan import (MAILCHIMP, STEP_CRITICAL, STEP_LEAVE, STEP_MEMBERS, STEP_OPT_OUTS_FROM_HUBSPOT, Change,
                             Plan)
from reconciler.platforms.hubspot import HubSpotClient, MembershipChange
from reconciler.platforms.mailchimp import MailchimpClient
from reconciler.model import subscriber_hash
from reconciler.settings import Audience, Config, Exclusions, HubSpotSettings, MailchimpSettings

LIST_ID = "abc123def4"


def _config(sandbox, member_cap: int | None = None) -> Config:
    return Config(
        version=1,
        hubspot=HubSpotSettings(token=sandbox.hubspot_token, base_url=sandbox.base_url),
        mailchimp=MailchimpSettings(api_key=sandbox.mailchimp_api_key, base_url=sandbox.mailchimp_base_url),
        subscriptions={}, exclusions=Exclusions(),
        audiences={"main": Audience(name="main", mailchimp_list_id=LIST_ID, member_cap=member_cap)},
    )


def _apply(sandbox, tmp_path: Path, plan: Plan, member_cap: int | None = None) -> list[Outcome]:
    config = _config(sandbox, member_cap)
    audit = AuditLog.open(str(tmp_path / "audit.sqlite"))
    hubspot, mailchimp = HubSpotClient(config.hubspot), MailchimpClient(config.mailchimp)
    try:
        return Applier(config, hubspot, mailchimp, audit, run_id="r1", operator="test").apply(plan)
    finally:
        hubspot.close()
        mailchimp.close()
        audit.close()


def _status(sandbox, email: str) -> str | None:
    answer = requests.get(f"{sandbox.mailchimp_base_url}/lists/{LIST_ID}/members/{subscriber_hash(email)}",
                          auth=("any", sandbox.mailchimp_api_key), timeout=10)
    return None if answer.status_code == 404 else str(answer.json()["status"])


def _archive(email: str, status: str, reason: str = "R2 critical list 762", step: int = STEP_CRITICAL) -> Change:
    return Change.make(MAILCHIMP, "archive_member", "main", email, {"status": status}, {"status": "archived"},
                       reason, step)


def _unsubscribe(email: str, status: str = "pending", reason: str = "R2 critical list 762: pending member",
                 step: int = STEP_CRITICAL) -> Change:
    return Change.make(MAILCHIMP, "unsubscribe_member", "main", email, {"status": status},
                       {"status": "unsubscribed"}, reason, step)


def _create(email: str) -> Change:
    return Change.make(MAILCHIMP, "create_member", "main", email, {},
                       {"status_if_new": "subscribed", "merge_fields": {}, "tags": {}},
                       "R5 new member (stream general, list 719)", STEP_MEMBERS, "102")


def _observed(subscribed: int, pending: int = 0) -> MappingProxyType:
    return MappingProxyType({"audiences": {"main": {"list_id": LIST_ID,
                                                    "members": {"subscribed": subscribed, "pending": pending}}}})


# -- prerequisites -----------------------------------------------------------------------------


def test_a_pending_members_archive_lists_its_unsubscribe_as_prerequisite() -> None:
    unsubscribe, archive = _unsubscribe("p@example.com"), _archive("p@example.com", "pending")
    other = _unsubscribe("q@example.com")
    plan = Plan((archive, unsubscribe, other))
    assert plan.prerequisites(archive) == (unsubscribe,)
    assert plan.prerequisites(_archive("q@example.com", "subscribed")) == ()


def test_an_archive_whose_unsubscribe_failed_is_deferred_and_never_sent(sandbox, tmp_path: Path) -> None:
    # nobody@ is not on the audience: the PATCH fails (404), so the archive must wait.
    plan = Plan((_archive("nobody@example.net", "pending"), _unsubscribe("nobody@example.net")))
    before = sandbox.counters().get("DELETE /3.0/lists/{list_id}/members/{subscriber_hash}", 0)
    by_action = {o.change.action: o for o in _apply(sandbox, tmp_path, plan)}
    assert by_action["unsubscribe_member"].outcome == "failed"
    assert by_action["archive_member"].outcome == "deferred"
    assert "unsubscribe did not succeed" in by_action["archive_member"].detail
    assert sandbox.counters().get("DELETE /3.0/lists/{list_id}/members/{subscriber_hash}", 0) == before
    assert all(o.partial for o in by_action.values())


def test_an_archive_whose_unsubscribe_succeeded_runs(sandbox, tmp_path: Path) -> None:
    plan = Plan((_archive("ann@example.com", "pending"), _unsubscribe("ann@example.com")))
    outcomes = _apply(sandbox, tmp_path, plan)
    assert [(o.change.action, o.outcome) for o in outcomes] == [("unsubscribe_member", "applied"),
                                                                ("archive_member", "applied")]
    assert _status(sandbox, "ann@example.com") == "archived"
    assert partial(outcomes) == []


# -- R16 -----------------------------------------------------------------------------------------


def test_creates_beyond_the_room_actually_freed_wait(sandbox, tmp_path: Path) -> None:
    # Cap 1, one pending member counted: the plan counts on its unsubscribe and archive, which fail
    # (nobody@ is not on the audience: the PATCH answers 404, and the archive waits for it).
    plan = Plan((_unsubscribe("nobody@example.net"), _archive("nobody@example.net", "pending"),
                 _create("new1@example.com")), observed=_observed(subscribed=0, pending=1))
    outcomes = {o.change.email: o for o in _apply(sandbox, tmp_path, plan, member_cap=1)}
    assert outcomes["new1@example.com"].outcome == "deferred"
    assert outcomes["new1@example.com"].detail.startswith("R16 deferred: room not freed")
    assert _status(sandbox, "new1@example.com") is None


def test_creates_within_the_freed_room_run_and_the_rest_wait(sandbox, tmp_path: Path) -> None:
    plan = Plan((_archive("ann@example.com", "subscribed", "R9 leaving", STEP_LEAVE), _create("new1@example.com"),
                 _create("new2@example.com")), observed=_observed(subscribed=1))
    outcomes = {o.change.email: o.outcome for o in _apply(sandbox, tmp_path, plan, member_cap=1)}
    assert outcomes == {"ann@example.com": "applied", "new1@example.com": "applied", "new2@example.com": "deferred"}
    assert _status(sandbox, "new1@example.com") == "subscribed" and _status(sandbox, "new2@example.com") is None


def test_an_unsubscribe_and_an_archive_of_one_member_free_one_place(sandbox, tmp_path: Path) -> None:
    plan = Plan((_unsubscribe("ann@example.com", "subscribed", "R4 opted out", STEP_OPT_OUTS_FROM_HUBSPOT),
                 _archive("ann@example.com", "subscribed"), _create("new1@example.com"), _create("new2@example.com")),
                observed=_observed(subscribed=1))
    outcomes = {(o.change.action, o.change.email): o.outcome for o in _apply(sandbox, tmp_path, plan, member_cap=1)}
    assert outcomes[("create_member", "new1@example.com")] == "applied"
    assert outcomes[("create_member", "new2@example.com")] == "deferred"


# -- what makes an apply partial ----------------------------------------------------------------


def test_partial_outcomes() -> None:
    critical = _archive("a@example.com", "subscribed")
    r4 = _unsubscribe("a@example.com", "subscribed", "R4 opted out of all email in HubSpot", STEP_OPT_OUTS_FROM_HUBSPOT)
    r9 = _archive("a@example.com", "subscribed", "R9 leaving", STEP_LEAVE)
    create = _create("a@example.com")
    assert Outcome(critical, "refused", "405").partial and Outcome(critical, "deferred", "R7").partial
    assert Outcome(r4, "deferred", "x").partial and Outcome(r9, "failed", "x").partial
    assert not Outcome(critical, "applied").partial and not Outcome(r9, "deferred", "R18 deferred").partial
    assert not Outcome(create, "refused", "Forgotten Email Not Subscribed").partial
    assert Outcome(create, "deferred", f"{RECHECK_FAILED} (HTTP 503)").partial


def test_membership_failures_name_missing_and_failed_ids() -> None:
    change = MembershipChange(added=("1",), missing=("2",), errors=(("3", "INTERNAL_ERROR"),))
    assert change.failures() == {"2": "HubSpot answered recordIdsMissing: this record does not exist in the portal",
                                 "3": "INTERNAL_ERROR"}
    assert MembershipChange(added=("1",)).failures() == {}
