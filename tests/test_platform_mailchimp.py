"""MailchimpClient over real HTTP against the sandbox: paging, archived members, batches, refusals."""

from __future__ import annotations

import math

import pytest

from reconciler.errors import PermanentVendorError
from reconciler.model import Member
from reconciler.platforms.mailchimp import MailchimpClient, NewMember
from reconciler.platforms.results import ALREADY, APPLIED, FAILED, REFUSED
from reconciler.sandbox import Sandbox, SandboxOptions
from reconciler.settings import MailchimpSettings

LIST = "abc123def4"
N_LIVE = 2100  # three pages of 1,000


def _seed() -> dict:
    members = [{"email": f"Member{i:04d}@Example.com", "status": "subscribed",
                "merge_fields": {"FNAME": f"M{i}"}, "tags": ["Recruitment"] if i % 2 else []}
               for i in range(N_LIVE)]
    members += [
        {"email": "left@example.org", "status": "unsubscribed", "merge_fields": {}, "tags": []},
        {"email": "bounced@example.org", "status": "cleaned", "merge_fields": {}, "tags": []},
        {"email": "archived1@example.org", "status": "archived", "merge_fields": {"FNAME": "A"}, "tags": []},
        {"email": "archived2@example.org", "status": "archived", "merge_fields": {}, "tags": []},
    ]
    return {
        "hubspot": {"token": "hs-token-mc-tests", "lists": [], "contacts": []},
        "mailchimp": {
            "api_key": "mc-secret-key-us1",
            "audiences": [{
                "id": LIST, "name": "Main", "double_optin": True,
                "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"},
                                 {"tag": "JOINED", "type": "date", "required": False}],
                "members": members,
            }],
        },
    }


def _client(box: Sandbox) -> MailchimpClient:
    return MailchimpClient(MailchimpSettings(api_key=box.mailchimp_api_key, base_url=box.mailchimp_base_url,
                                             max_connections=4))


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(_seed()).start()
    yield box
    box.stop()


@pytest.fixture()
def client(sandbox):
    mailchimp = _client(sandbox)
    yield mailchimp
    mailchimp.close()


def _requests(box: Sandbox, endpoint: str) -> int:
    return box.counters().get(endpoint, 0)


def test_ping_list_and_merge_fields(client):
    assert client.ping() == "Everything's Chimpy!"
    info = client.get_list(LIST)
    assert (info.id, info.name, info.double_optin) == (LIST, "Main", True)
    fields = {f.tag: f.type for f in client.merge_fields(LIST)}
    assert fields["FNAME"] == "text" and fields["JOINED"] == "date"


def test_members_are_read_1000_a_page_and_archived_ones_separately(client, sandbox):
    before = _requests(sandbox, "GET /3.0/lists/{list_id}/members")
    members = client.all_members(LIST)
    sent = _requests(sandbox, "GET /3.0/lists/{list_id}/members") - before
    assert len(members) == N_LIVE + 4
    assert sent == math.ceil((N_LIVE + 2) / 1000) + math.ceil(2 / 1000)
    assert members["member0001@example.com"] == Member("member0001@example.com", "subscribed",
                                                       {"FNAME": "M1", "LNAME": "", "JOINED": ""}, ("Recruitment",))
    assert members["archived1@example.org"].status == "archived"
    assert members["left@example.org"].status == "unsubscribed"
    assert members["bounced@example.org"].status == "cleaned"


def test_archived_members_listed_unfiltered_too_are_kept_once():
    box = Sandbox(_seed(), options=SandboxOptions(variants={"mailchimp_archived_in_unfiltered_list": True})).start()
    try:
        client = _client(box)
        unfiltered = client.members(LIST)
        assert any(m.status == "archived" for m in unfiltered)  # the variant is in force
        members = client.all_members(LIST)
        assert len(members) == N_LIVE + 4
        assert members["archived2@example.org"].status == "archived"
    finally:
        box.stop()


def test_members_read_concurrently_match_a_sequential_read(client):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        parallel = client.members(LIST, executor=pool)
    assert sorted(m.email for m in parallel) == sorted(m.email for m in client.members(LIST))


def test_batch_subscribe_creates_without_touching_existing_members(sandbox):
    client = _client(sandbox)
    new = [NewMember(f"new{i}@example.net", {"FNAME": f"N{i}"}) for i in range(520)]
    existing = [NewMember("left@example.org", {"FNAME": "Again"})]
    before = _requests(sandbox, "POST /3.0/lists/{list_id}")
    results = client.subscribe_members(LIST, new + existing, status="pending")
    assert _requests(sandbox, "POST /3.0/lists/{list_id}") - before == 2  # 500 a call
    outcome = {r.key: r.outcome for r in results}
    assert outcome["new0@example.net"] == APPLIED and outcome["new519@example.net"] == APPLIED
    assert outcome["left@example.org"] == ALREADY
    members = client.all_members(LIST)
    assert members["new3@example.net"].status == "pending"
    assert members["new3@example.net"].merge_fields["FNAME"] == "N3"
    assert members["left@example.org"].status == "unsubscribed"  # never resubscribed
    repeat = client.subscribe_members(LIST, new[:2], status="pending")
    assert [r.outcome for r in repeat] == [ALREADY, ALREADY]


def test_tags_are_written_through_the_segment_in_bulk(sandbox):
    client = _client(sandbox)
    emails = [f"member{i:04d}@example.com" for i in range(0, 1200, 2)]  # 600 without the tag
    before = _requests(sandbox, "POST /3.0/lists/{list_id}/segments/{segment_id}")
    results = client.tag_members(LIST, "Brand New Tag", add=emails, remove=[])
    assert _requests(sandbox, "POST /3.0/lists/{list_id}/segments/{segment_id}") - before == 2
    assert {r.outcome for r in results} == {APPLIED}
    assert "Brand New Tag" in client.segments(LIST)
    members = client.all_members(LIST)
    assert "Brand New Tag" in members["member0000@example.com"].tags
    again = client.tag_members(LIST, "brand new tag", add=emails[:3], remove=["member0000@example.com"])
    assert [r.outcome for r in again] == [ALREADY, ALREADY, ALREADY, APPLIED]
    assert "Brand New Tag" not in client.all_members(LIST)["member0000@example.com"].tags
    missing = client.tag_members(LIST, "No Such Tag", remove=["member0001@example.com"])
    assert missing[0].outcome == ALREADY
    unknown = client.tag_members(LIST, "Brand New Tag", add=["stranger@example.net"])
    assert unknown[0].outcome == FAILED and "do not belong" in unknown[0].detail


def test_member_writes_patch_unsubscribe_archive_restore(sandbox):
    client = _client(sandbox)
    email = "member0100@example.com"
    assert client.update_member(LIST, email, {"LNAME": "Smith"}).outcome == APPLIED
    member = client.all_members(LIST)[email]
    assert member.merge_fields["LNAME"] == "Smith" and member.status == "subscribed"

    assert client.archive_member(LIST, email).outcome == APPLIED
    assert client.all_members(LIST)[email].status == "archived"
    assert client.archive_member(LIST, email).ok  # a repeat is done, whatever the vendor answers
    restored = client.restore_member(LIST, email, status="subscribed", merge_fields={"FNAME": "Back"})
    assert restored.outcome == APPLIED
    member = client.all_members(LIST)[email]
    assert (member.status, member.merge_fields["FNAME"]) == ("subscribed", "Back")

    assert client.unsubscribe_member(LIST, email).outcome == APPLIED
    assert client.all_members(LIST)[email].status == "unsubscribed"
    assert client.archive_member(LIST, email).outcome == APPLIED
    # Mailchimp lets the API put back a member the API unsubscribed: nothing here may rely on a
    # refusal (R8 restores only with evidence of consent).
    again = client.restore_member(LIST, email, status="subscribed", merge_fields={})
    assert again.outcome == APPLIED and client.all_members(LIST)[email].status == "subscribed"

    # Only a member who unsubscribed themselves (the seed's default) is refused.
    assert client.archive_member(LIST, "left@example.org").outcome == APPLIED
    refused = client.restore_member(LIST, "left@example.org", status="subscribed", merge_fields={})
    assert refused.outcome == REFUSED
    assert "Member In Compliance State" in refused.detail
    assert client.all_members(LIST)["left@example.org"].status == "archived"


def test_patch_of_an_unknown_member_is_not_retried_and_carries_the_vendor_message(sandbox):
    client = _client(sandbox)
    before = _requests(sandbox, "PATCH /3.0/lists/{list_id}/members/{subscriber_hash}")
    with pytest.raises(PermanentVendorError) as caught:
        client.update_member(LIST, "nobody@example.net", {"FNAME": "X"})
    assert caught.value.status == 404
    assert "Resource Not Found: The requested resource could not be found." in str(caught.value)
    assert _requests(sandbox, "PATCH /3.0/lists/{list_id}/members/{subscriber_hash}") - before == 1


@pytest.mark.parametrize("variant", ["405", "204", "404"])
def test_archive_of_an_archived_member_is_done_whatever_the_vendor_answers(variant):
    box = Sandbox(_seed(), options=SandboxOptions(variants={"mailchimp_delete_archived": variant})).start()
    try:
        result = _client(box).archive_member(LIST, "archived1@example.org")
        assert result.outcome in (APPLIED, ALREADY)
        assert result.ok
        if variant == "405":  # read again: archived, so done
            assert result.outcome == ALREADY and "read again: archived" in result.detail
            assert _requests(box, "GET /3.0/lists/{list_id}/members/{subscriber_hash}") == 1
    finally:
        box.stop()


def test_archive_answered_405_for_a_cleaned_member_is_a_refusal_after_reading_it():
    box = Sandbox(_seed()).start()
    try:
        result = _client(box).archive_member(LIST, "bounced@example.org")
        assert result.outcome == REFUSED
        assert "cannot be removed" in result.detail and "the member is cleaned" in result.detail
        assert result.data["status"] == "cleaned"
    finally:
        box.stop()


def test_archive_answered_405_for_an_unsubscribed_member_is_a_failure_not_a_refusal():
    """The older recorded 405 ("Please contact support") for a member Mailchimp should archive: the
    member is still there, unsubscribed, and the write did not happen. Failed, so the apply says so."""
    box = Sandbox(_seed(), options=SandboxOptions(variants={"mailchimp_delete_compliance_405": True})).start()
    try:
        result = _client(box).archive_member(LIST, "left@example.org")
        assert result.outcome == FAILED
        assert "cannot be removed" in result.detail and "the member is unsubscribed" in result.detail
    finally:
        box.stop()

def test_forgotten_email_is_refused_on_create(sandbox):
    client = _client(sandbox)
    email = "member0200@example.com"
    client.session.call("POST", f"/lists/{LIST}/members/{Member(email, 'subscribed').id}/actions/delete-permanent")
    results = client.subscribe_members(LIST, [NewMember(email, {})], status="subscribed")
    assert results[0].outcome == REFUSED
    assert "permanently deleted" in results[0].detail
