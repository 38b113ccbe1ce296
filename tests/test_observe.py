"""observe() and preflight() against the sandbox: the snapshot a small seed gives, and the request bar."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from reconciler.errors import PermanentVendorError
from reconciler.model import MergeField
from reconciler.observe import contact_properties, observe, preflight
from reconciler.platforms.hubspot import HubSpotClient
from reconciler.platforms.mailchimp import MailchimpClient
from reconciler.sandbox import Sandbox
from reconciler.settings import (Audience, Config, Exclusions, Handover, HubSpotSettings, MailchimpSettings, OptOuts,
                                 Source, Stream, TagRule, ToHubSpot)
from test_platform_hubspot import ListTypeSandbox, add_duplicate

SUB = "289137112"
LIST = "abc123def4"
C = 260  # source contacts 101..360
MATCHED = 150  # of them with a member
STRANGERS = 1050  # members with no HubSpot contact
ARCHIVED = 3


def _seed() -> dict:
    contacts = [{"id": str(100 + i), "email": f"person{i:03d}@example.com",
                 "properties": {"firstname": f"P{i}", "lastname": "Test", "branches": str(i % 3)}, "subscribed": [SUB]}
                for i in range(1, C + 1)]
    contacts[0]["email"] = "  Person001@Example.COM "  # normalised at the edge
    contacts[2].update(subscribed=[], unsubscribed=[SUB])  # 103 opted out of marketing
    contacts[3]["opted_out_of_all"] = True  # 104
    contacts += [{"id": "900", "email": "outsider@example.org", "properties": {"firstname": "Out"}},
                 {"id": "901", "email": "critical@example.org", "properties": {}},
                 {"id": "902", "email": "not-a-member@example.org", "properties": {}}]
    members = [{"email": f"person{i:03d}@example.com", "status": "subscribed", "merge_fields": {"FNAME": f"P{i}"},
                "tags": ["Recruitment"]} for i in range(1, MATCHED + 1)]
    members += [{"email": f"stranger{i:04d}@example.net", "status": "subscribed", "tags": []} for i in range(STRANGERS)]
    members += [{"email": "outsider@example.org", "status": "unsubscribed", "tags": []},
                {"email": "critical@example.org", "status": "subscribed", "tags": ["Recruitment"]}]
    members += [{"email": f"gone{i}@example.net", "status": "archived", "tags": []} for i in range(ARCHIVED)]
    return {
        "hubspot": {
            "token": "observe-token",
            "subscriptions": [{"id": SUB, "name": "Marketing Information"}],
            "properties": ["branches", "import_list"],
            "lists": [
                {"id": "719", "name": "Recruitment", "processing_type": "MANUAL",
                 "members": [str(100 + i) for i in range(1, C + 1)]},
                {"id": "762", "name": "Compliance Hold", "processing_type": "MANUAL", "members": ["901", "101"]},
                {"id": "717", "name": "Active Deals", "processing_type": "MANUAL", "members": ["102", "902"]},
                {"id": "947", "name": "Sales Handover", "processing_type": "MANUAL", "members": []},
                {"id": "987", "name": "Filtered", "processing_type": "DYNAMIC", "members": ["105"]},
            ],
            "contacts": contacts,
        },
        "mailchimp": {"api_key": "observe-key-us1", "audiences": [{
            "id": LIST, "name": "Main", "double_optin": True,
            "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"},
                             {"tag": "ADDRESS", "type": "address"}, {"tag": "REGION", "type": "text", "required": True}],
            "members": members,
        }]},
    }


def _config(**audience_changes) -> Config:
    fields = dict(
        name="main", mailchimp_list_id=LIST, merge_fields={"FNAME": "firstname", "LNAME": "lastname"},
        streams=(Stream("general", exclude=("deals",), sources=(
            Source("719", "Recruitment", tag_rules=(TagRule("branches", "gt", 1, "General Multi"),)),)),),
        handover=(Handover("Recruitment Finished", "947", ("719",), {"import_list": "{source_list_name}"}),),
        opt_outs=OptOuts(to_hubspot=ToHubSpot(subscriptions=(SUB,)), from_hubspot=(SUB,), from_hubspot_enabled=True),
    )
    fields.update(audience_changes)
    return Config(version=1, hubspot=HubSpotSettings(token="unused"), mailchimp=MailchimpSettings(api_key="unused"),
                  subscriptions={"marketing": SUB},
                  exclusions=Exclusions(critical=("762",), hard={"deals": ("717",)}),
                  audiences={"main": Audience(**fields)})


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(_seed()).start()
    yield box
    box.stop()


@pytest.fixture()
def clients(sandbox):
    hubspot = HubSpotClient(HubSpotSettings(token=sandbox.hubspot_token, base_url=sandbox.base_url))
    mailchimp = MailchimpClient(MailchimpSettings(api_key=sandbox.mailchimp_api_key,
                                                  base_url=sandbox.mailchimp_base_url))
    yield hubspot, mailchimp
    hubspot.close()
    mailchimp.close()


def test_observe_reduces_both_platforms_to_the_snapshot(clients):
    hubspot, mailchimp = clients
    steps: dict[str, tuple[int, int | None]] = {}
    snap = observe(_config(), hubspot, mailchimp, ["main"], progress=lambda s, d, t: steps.__setitem__(s, (d, t)))

    assert {lid: (l.name, l.processing_type, l.size) for lid, l in snap.lists.items()} == {
        "719": ("Recruitment", "MANUAL", C), "762": ("Compliance Hold", "MANUAL", 2),
        "717": ("Active Deals", "MANUAL", 2), "947": ("Sales Handover", "MANUAL", 0)}
    # Source contacts by id, plus the contacts of members outside the sources (by email); not 902.
    assert set(snap.contacts) == {str(100 + i) for i in range(1, C + 1)} | {"900", "901"}
    c101, c102, c103, c104 = (snap.contacts[i] for i in ("101", "102", "103", "104"))
    assert c101.email == "person001@example.com"
    assert c101.lists == {"719", "762"} and c102.lists == {"719", "717"}
    assert c101.properties["firstname"] == "P1" and c101.properties["branches"] == "1"
    assert (c101.unsubscribed, c101.opted_out_of_all) == (frozenset(), False)
    assert c103.unsubscribed == {SUB}
    assert c104.opted_out_of_all is True
    assert snap.contacts["901"].lists == {"762"} and snap.contacts["900"].lists == frozenset()
    assert snap.contacts["105"].lists == {"719"}  # DYNAMIC 987 is not configured, so not read

    audience = snap.audiences[LIST]
    assert (audience.name, audience.double_optin) == ("Main", True)
    assert audience.merge_fields["ADDRESS"] == MergeField("ADDRESS", "address", False)
    assert audience.merge_fields["REGION"].required is True
    assert len(audience.members) == MATCHED + STRANGERS + 2 + ARCHIVED
    assert audience.members["person001@example.com"].tags == ("Recruitment",)
    assert audience.members["person001@example.com"].merge_fields["FNAME"] == "P1"
    assert audience.members["outsider@example.org"].status == "unsubscribed"
    assert {m.status for e, m in audience.members.items() if e.startswith("gone")} == {"archived"}
    assert steps["hubspot list 719 Recruitment"] == (C, C)
    assert steps["hubspot source contacts"] == (C, C)
    assert steps["mailchimp main members"][0] == MATCHED + STRANGERS + 2


def test_observe_stays_within_the_request_bar(sandbox, clients):
    hubspot, mailchimp = clients
    sandbox.reset_counters()
    observe(_config(), hubspot, mailchimp, ["main"])
    counters = sandbox.counters()
    sizes = {"719": C, "762": 2, "717": 2, "947": 0}
    live, unmatched = MATCHED + STRANGERS + 2, STRANGERS + 2
    # R1 searches, 500 emails each: the source emails but 101's (critical), then the live members'
    # emails no source contact has, but critical@ (its only holder, 901, is critical).
    searches = math.ceil((C - 1) / 500) + math.ceil((STRANGERS + 1) / 500)
    bar = (sum(math.ceil(s / 250) for s in sizes.values()) + math.ceil(C / 100) + math.ceil(unmatched / 100)
           + math.ceil(live / 1000) + math.ceil(ARCHIVED / 1000) + searches)
    handful = 5  # lists by id, audience, merge fields, an empty list's one page, spare
    assert sum(counters.values()) <= bar + handful, counters
    assert counters["POST /crm/v3/objects/contacts/search"] == searches == 4
    assert counters["POST /crm/v3/objects/contacts/batch/read"] == math.ceil(C / 100) + math.ceil(unmatched / 100)
    assert counters["GET /3.0/lists/{list_id}/members"] == math.ceil(live / 1000) + math.ceil(ARCHIVED / 1000)
    assert sandbox.write_requests() == 0


def test_contact_properties_asked_for_are_the_opt_outs_and_the_mapped_ones():
    props = contact_properties(_config())
    assert set(props) == {"email", "hs_email_optout", f"hs_email_optout_{SUB}", "firstname", "lastname", "branches",
                          "import_list"}


def test_preflight_names_every_live_problem(clients):
    hubspot, mailchimp = clients
    config = _config(
        merge_fields={"FNAME": "firstname", "ADDRESS": "lastname", "NOPE": "no_such_property"},
        streams=(Stream("general", exclude=("deals",), sources=(Source("719", "Recruitment"), Source("555", "Other"))),),
        handover=(Handover("Recruitment Finished", "987", ("719",), {}),),
    )
    config = Config(**{**config.__dict__, "subscriptions": {"marketing": SUB, "news": "424242"}})
    problems, warnings = preflight(config, hubspot, mailchimp, ["main"])
    text = "\n".join(problems)
    assert "hubspot list 555" in text and "does not exist" in text
    assert "hubspot list 987 'Filtered' is DYNAMIC and cannot be a handover to_list" in text
    assert "subscriptions.news: HubSpot has no subscription type 424242" in text
    assert "HubSpot has no contact property 'no_such_property'" in text
    assert "audiences.main.merge_fields.NOPE: the audience 'Main' has no merge field NOPE" in text
    assert "merge_fields.ADDRESS: merge field type 'address' is not supported" in text
    assert "requires merge field REGION" in text
    assert len(problems) == 7, problems
    assert any("new_member_status: subscribed skips the double opt-in" in w for w in warnings)


def test_preflight_of_a_sound_config_has_no_problems(clients):
    hubspot, mailchimp = clients
    config = _config(merge_fields={"FNAME": "firstname", "LNAME": "lastname", "REGION": "branches"},
                     new_member_status="pending")
    problems, warnings = preflight(config, hubspot, mailchimp, ["main"])
    assert problems == []
    assert warnings == []


# -- compliance reads: other holders of an email (R1), consent (R8), other audiences' opt-outs ----

OTHER = "fff000aaa1"


def _clients_of(box: Sandbox) -> tuple[HubSpotClient, MailchimpClient]:
    return (HubSpotClient(HubSpotSettings(token=box.hubspot_token, base_url=box.base_url)),
            MailchimpClient(MailchimpSettings(api_key=box.mailchimp_api_key, base_url=box.mailchimp_base_url)))


@pytest.fixture()
def own_box():
    """make(change_seed, untyped): a sandbox of the test's own from `_seed()` as `change_seed` edits it."""
    started: list[tuple[Sandbox, HubSpotClient, MailchimpClient]] = []

    def make(change_seed=None, untyped=()) -> tuple[Sandbox, HubSpotClient, MailchimpClient]:
        seed = _seed()
        if change_seed is not None:
            change_seed(seed)
        box = ListTypeSandbox(seed, untyped=untyped).start()
        started.append((box, *_clients_of(box)))
        return started[-1]

    yield make
    for box, hubspot, mailchimp in started:
        hubspot.close()
        mailchimp.close()
        box.stop()


def test_contacts_sharing_a_source_or_member_email_are_read_with_their_lists_and_opt_outs(own_box):
    box, hubspot, mailchimp = own_box()
    add_duplicate(box, "9101", "PERSON005@example.com", lists=["762"])  # source 105's email, critical
    add_duplicate(box, "9102", "Person006@Example.com", opted_out_of_all=True)  # source 106's, on no list
    add_duplicate(box, "9103", "person007@example.COM", lists=["717"], unsubscribed=[SUB])  # 107's, excluded
    add_duplicate(box, "9104", "STRANGER0001@example.net", lists=["762"])  # a member's email nobody else has
    add_duplicate(box, "9105", "Outsider@Example.org", unsubscribed=[SUB])  # member-contact 900's email
    add_duplicate(box, "9106", "person001@EXAMPLE.com", lists=["717"])  # 101 is critical: nothing to add
    add_duplicate(box, "9107", "gone0@example.net", lists=["762"])  # an archived member's: no write to decide
    steps: dict[str, tuple[int, int | None]] = {}
    box.reset_counters()
    snap = observe(_config(), hubspot, mailchimp, ["main"], progress=lambda s, d, t: steps.__setitem__(s, (d, t)))

    found = {cid: snap.contacts[cid] for cid in ("9101", "9102", "9103", "9104", "9105") if cid in snap.contacts}
    assert set(found) == {"9101", "9102", "9103", "9104", "9105"}
    assert "9106" not in snap.contacts and "9107" not in snap.contacts
    assert found["9101"].email == "person005@example.com" and found["9101"].lists == {"762"}
    assert found["9102"].opted_out_of_all is True and found["9102"].lists == frozenset()
    assert found["9103"].lists == {"717"} and found["9103"].unsubscribed == {SUB}
    assert found["9104"].email == "stranger0001@example.net" and found["9104"].lists == {"762"}
    assert found["9105"].unsubscribed == {SUB}
    assert snap.contacts["105"].lists == {"719"}  # the source contact itself is unchanged
    # Searches: 259 source emails (not 101's: critical) in one request, 1,051 member emails in three.
    assert box.counters()["POST /crm/v3/objects/contacts/search"] == 4
    assert steps["hubspot other contacts sharing a source contact's email"] == (C - 1, C - 1)
    assert steps["hubspot other contacts sharing a member's email"] == (STRANGERS + 1, STRANGERS + 1)


def _with_archived_source_members(seed: dict) -> None:
    members = seed["mailchimp"]["audiences"][0]["members"]
    members += [{"email": f"person{i:03d}@example.com", "status": "archived", "tags": ["Recruitment"]}
                for i in (201, 202, 203)]
    for member in members:
        if member["email"] == "person003@example.com":  # contact 103, opted out of marketing
            member["status"] = "archived"
    for contact in seed["hubspot"]["contacts"]:
        if contact["id"] == "303":  # person203
            contact.update(subscribed=[], unsubscribed=[])  # never asked


def test_consent_is_read_for_restore_candidates_without_evidence_in_the_audit_log(own_box):
    box, hubspot, mailchimp = own_box(_with_archived_source_members)
    asked: list[tuple[str, str]] = []

    def known(list_id: str, email: str) -> bool:
        asked.append((list_id, email))
        return email == "person202@example.com"

    steps: dict[str, tuple[int, int | None]] = {}
    box.reset_counters()
    snap = observe(_config(restore_archived=True), hubspot, mailchimp, ["main"], consent_known=known,
                   progress=lambda s, d, t: steps.__setitem__(s, (d, t)))
    assert snap.consent == {"person201@example.com": {SUB}}
    # Candidates: archived members held by a source contact (not gone*@, who have no contact).
    assert sorted(asked) == [(LIST, f"person{i:03d}@example.com") for i in (3, 201, 202, 203)]
    assert box.counters()["GET /communication-preferences/v3/status/email/{emailAddress}"] == 3  # not 202
    assert steps["hubspot consent of restore candidates"] == (3, 3)

    box.reset_counters()
    assert observe(_config(), hubspot, mailchimp, ["main"], consent_known=known).consent == {}  # restore off
    assert "GET /communication-preferences/v3/status/email/{emailAddress}" not in box.counters()


def _with_other_audience(seed: dict) -> None:
    members = [{"email": f"o{i}@example.com", "status": status, "tags": []}
               for i, status in enumerate(["subscribed", "unsubscribed", "cleaned", "pending", "archived",
                                           "unsubscribed"])]
    seed["mailchimp"]["audiences"].append({"id": OTHER, "name": "Other", "merge_fields": [], "members": members})


def _two_audiences(other_list: str = OTHER) -> Config:
    config = _config()
    other = Audience(name="other", mailchimp_list_id=other_list,
                     streams=(Stream("general", sources=(Source("719", "Other"),)),))
    return replace(config, audiences={**config.audiences, "other": other})


def test_an_audience_the_run_does_not_plan_is_read_for_its_opt_outs_only(own_box):
    box, hubspot, mailchimp = own_box(_with_other_audience)
    steps: dict[str, tuple[int, int | None]] = {}
    box.reset_counters()
    snap = observe(_two_audiences(), hubspot, mailchimp, ["main"], progress=lambda s, d, t: steps.__setitem__(s, (d, t)))
    other = snap.audiences[OTHER]
    assert other.opt_outs_only is True and snap.audiences[LIST].opt_outs_only is False
    assert {e: m.status for e, m in other.members.items()} == {
        "o1@example.com": "unsubscribed", "o2@example.com": "cleaned", "o5@example.com": "unsubscribed"}
    assert len(snap.audiences[LIST].members) == MATCHED + STRANGERS + 2 + ARCHIVED
    # Main: one list read, one merge-field read, its member pages; other: one page per opt-out status.
    counters = box.counters()
    assert counters["GET /3.0/lists/{list_id}"] == 1 and counters["GET /3.0/lists/{list_id}/merge-fields"] == 1
    assert counters["GET /3.0/lists/{list_id}/members"] == math.ceil((MATCHED + STRANGERS + 2) / 1000) + 1 + 2
    assert steps["mailchimp other unsubscribed members (opt-outs only)"] == (2, 2)
    assert steps["mailchimp other cleaned members (opt-outs only)"] == (1, 1)

    both = observe(_two_audiences(), hubspot, mailchimp, ["main", "other"])
    assert both.audiences[OTHER].opt_outs_only is False and len(both.audiences[OTHER].members) == 6


def test_an_unreadable_audience_the_run_does_not_plan_stops_the_observation(own_box):
    _, hubspot, mailchimp = own_box(_with_other_audience)
    with pytest.raises(PermanentVendorError, match=r"audience other \(nosuchlist\) could not be read for its opt-outs"):
        observe(_two_audiences("nosuchlist"), hubspot, mailchimp, ["main"])


def test_lists_of_unknown_type_are_never_writable_and_preflight_names_them(own_box):
    box, hubspot, mailchimp = own_box(untyped=["947"])
    with box.hubspot.lock:
        box.hubspot.lists["717"].processing_type = "REALTIME"
    snap = observe(_config(), hubspot, mailchimp, ["main"])
    assert (snap.lists["947"].processing_type, snap.lists["947"].writable) == ("", False)
    assert (snap.lists["717"].processing_type, snap.lists["717"].writable) == ("REALTIME", False)
    assert snap.lists["719"].writable is True
    problems, warnings = preflight(_config(merge_fields={"FNAME": "firstname", "REGION": "branches"}), hubspot,
                                   mailchimp, ["main"])
    assert problems == ["hubspot list 947 'Sales Handover' is of unknown type (HubSpot sent no processingType) and "
                        "cannot be a handover to_list (R14: only MANUAL and SNAPSHOT lists are written): use a MANUAL "
                        "list"]
    assert any(w.startswith("hubspot list 717 'Active Deals' (exclusion set deals) is of unknown type "
                            "(processingType 'REALTIME'): it is read but never written (R14)") for w in warnings), warnings
