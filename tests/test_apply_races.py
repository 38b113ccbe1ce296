"""The apply against a vendor that moved after the plan was made (real clients, real HTTP).

A create answered "already a member" is either our own earlier attempt (tag it as planned) or a
member that appeared since observing; an opted-out one must not be given tags (R7).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import requests

from reconciler.apply import Applier
from reconciler.audit import AuditLog
from reconciler.model import AudienceState, Member, Snapshot, subscriber_hash
from reconciler.plan import MAILCHIMP, STEP_MEMBERS, Change, Plan
from reconciler.platforms.hubspot import HubSpotClient
from reconciler.platforms.mailchimp import MailchimpClient
from reconciler.settings import Audience, Config, Exclusions, HubSpotSettings, MailchimpSettings

LIST_ID = "abc123def4"


def _config(sandbox, tmp_path: Path) -> Config:
    return Config(
        version=1,
        hubspot=HubSpotSettings(token=sandbox.hubspot_token, base_url=sandbox.base_url),
        mailchimp=MailchimpSettings(api_key=sandbox.mailchimp_api_key, base_url=sandbox.mailchimp_base_url),
        subscriptions={}, exclusions=Exclusions(),
        audiences={"main": Audience(name="main", mailchimp_list_id=LIST_ID)},
    )


def _create(email: str) -> Change:
    return Change.make(MAILCHIMP, "create_member", "main", email, {},
                       {"status_if_new": "subscribed", "merge_fields": {"FNAME": "X"}, "tags": {"Recruitment": True}},
                       "R5 new member (stream general, list 719)", STEP_MEMBERS, "102")


def _member(sandbox, email: str) -> dict:
    answer = requests.get(f"{sandbox.mailchimp_base_url}/lists/{LIST_ID}/members/{subscriber_hash(email)}",
                          auth=("any", sandbox.mailchimp_api_key), timeout=10)
    answer.raise_for_status()
    return answer.json()


def _apply(sandbox, tmp_path: Path, changes: list[Change]):
    config = _config(sandbox, tmp_path)
    audit = AuditLog.open(str(tmp_path / "audit.sqlite"))
    hubspot, mailchimp = HubSpotClient(config.hubspot), MailchimpClient(config.mailchimp)
    try:
        return Applier(config, hubspot, mailchimp, audit, run_id="r1", operator="test").apply(Plan(tuple(changes)))
    finally:
        hubspot.close()
        mailchimp.close()
        audit.close()


def test_a_create_that_meets_an_unsubscribed_member_does_not_tag_it(sandbox, tmp_path: Path) -> None:
    # bob@ is unsubscribed in the seed: as if he unsubscribed between the plan and the apply.
    (outcome,) = _apply(sandbox, tmp_path, [_create("bob@example.com")])
    member = _member(sandbox, "bob@example.com")
    assert member["status"] == "unsubscribed"
    assert [t["name"] for t in member["tags"]] == []
    assert member["merge_fields"]["FNAME"] == "Bob"
    assert outcome.outcome == "deferred" and "unsubscribed" in outcome.detail


def test_a_create_repeated_after_a_lost_answer_still_tags_the_member(sandbox, tmp_path: Path) -> None:
    first = _apply(sandbox, tmp_path, [_create("newcomer@example.com")])
    # The member exists now without its tag, as after a create whose tagging never ran.
    requests.post(f"{sandbox.mailchimp_base_url}/lists/{LIST_ID}/members/{subscriber_hash('newcomer@example.com')}/tags",
                  json={"tags": [{"name": "Recruitment", "status": "inactive"}]},
                  auth=("any", sandbox.mailchimp_api_key), timeout=10).raise_for_status()
    second = _apply(sandbox, tmp_path, [_create("newcomer@example.com")])
    member = _member(sandbox, "newcomer@example.com")
    assert [o.outcome for o in first + second] == ["applied", "applied"]
    assert member["status"] == "subscribed"
    assert [t["name"] for t in member["tags"]] == ["Recruitment"]


def _observed_now(email: str, status: str) -> Snapshot:
    observed_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    state = AudienceState(list_id=LIST_ID, members={email: Member(email=email, status=status)})
    return Snapshot(audiences={LIST_ID: state}, observed_at=observed_at)


def _update_and_tag(email: str) -> list[Change]:
    return [
        Change.make(MAILCHIMP, "update_member", "main", email, {"FNAME": "Ann"}, {"FNAME": "Annie"},
                    "R6 merge fields differ (stream general, list 719)", STEP_MEMBERS, "101"),
        Change.make(MAILCHIMP, "add_tags", "main", email, {"Volunteer": False}, {"Volunteer": True},
                    "R6 tags missing (stream general, list 719)", STEP_MEMBERS, "101"),
    ]


def _apply_observed(sandbox, tmp_path: Path, changes: list[Change], snapshot: Snapshot):
    config = _config(sandbox, tmp_path)
    audit = AuditLog.open(str(tmp_path / "audit.sqlite"))
    hubspot, mailchimp = HubSpotClient(config.hubspot), MailchimpClient(config.mailchimp)
    try:
        return Applier(config, hubspot, mailchimp, audit, run_id="r1", operator="test",
                       snapshot=snapshot).apply(Plan(tuple(changes)))
    finally:
        hubspot.close()
        mailchimp.close()
        audit.close()


def test_member_writes_wait_when_the_member_unsubscribed_after_the_plan_was_observed(sandbox, tmp_path: Path) -> None:
    snapshot = _observed_now("ann@example.com", "subscribed")
    requests.patch(f"{sandbox.mailchimp_base_url}/lists/{LIST_ID}/members/{subscriber_hash('ann@example.com')}",
                   json={"status": "unsubscribed"}, auth=("any", sandbox.mailchimp_api_key), timeout=10).raise_for_status()
    outcomes = _apply_observed(sandbox, tmp_path, _update_and_tag("ann@example.com"), snapshot)
    member = _member(sandbox, "ann@example.com")
    assert [o.outcome for o in outcomes] == ["deferred", "deferred"]
    assert all("opted out in Mailchimp after the plan" in o.detail for o in outcomes)
    assert member["merge_fields"]["FNAME"] == "Ann"
    assert sorted(t["name"] for t in member["tags"]) == ["Recruitment"]


def test_member_writes_go_ahead_when_nobody_opted_out_since(sandbox, tmp_path: Path) -> None:
    snapshot = _observed_now("ann@example.com", "subscribed")
    outcomes = _apply_observed(sandbox, tmp_path, _update_and_tag("ann@example.com"), snapshot)
    member = _member(sandbox, "ann@example.com")
    assert [o.outcome for o in outcomes] == ["applied", "applied"]
    assert member["merge_fields"]["FNAME"] == "Annie"
    assert sorted(t["name"] for t in member["tags"]) == ["Recruitment", "Volunteer"]
