"""HubSpotClient over real HTTP against the sandbox: paging, batches, 207s, refusals, idempotent writes."""

from __future__ import annotations

import math

import pytest

from reconciler.errors import PermanentVendorError
from reconciler.platforms.hubspot import HubSpotClient
from reconciler.platforms.results import ALREADY, APPLIED
from reconciler.sandbox import Sandbox
from reconciler.settings import HubSpotSettings, RateLimit

SUB = "289137112"
N_SOURCE = 620  # three membership pages of 250


def _seed() -> dict:
    contacts = [
        {"id": str(1000 + i), "email": f"Person{i:03d}@Example.com", "properties": {"firstname": f"P{i}", "branches": str(i % 4)},
         "subscribed": [SUB]}
        for i in range(1, N_SOURCE + 1)
    ]
    contacts.append({"id": "5000", "email": "optout@example.org", "properties": {}, "unsubscribed": [SUB]})
    return {
        "hubspot": {
            "token": "hs-secret-token-123",
            "subscriptions": [{"id": SUB, "name": "Marketing Information"}],
            "properties": ["branches", "import_list"],
            "lists": [
                {"id": "719", "name": "Recruitment", "processing_type": "MANUAL",
                 "members": [str(1000 + i) for i in range(1, N_SOURCE + 1)]},
                {"id": "947", "name": "Sales Handover", "processing_type": "MANUAL", "members": []},
                {"id": "987", "name": "Active filter", "processing_type": "DYNAMIC", "members": ["1001"]},
            ],
            "contacts": contacts,
        },
        "mailchimp": {"api_key": "mc-secret-key-us1", "audiences": []},
    }


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(_seed()).start()
    yield box
    box.stop()


@pytest.fixture()
def client(sandbox):
    hubspot = HubSpotClient(HubSpotSettings(token=sandbox.hubspot_token, base_url=sandbox.base_url,
                                            rate_limit=RateLimit(1000, 10)))
    yield hubspot
    hubspot.close()


def _requests(sandbox, endpoint: str) -> int:
    return sandbox.counters().get(endpoint, 0)


def test_get_lists_returns_name_type_and_size_and_omits_unknown_ids(client, sandbox):
    lists = client.get_lists(["719", "987", "424242"])
    assert set(lists) == {"719", "987"}
    assert lists["719"].name == "Recruitment"
    assert lists["719"].processing_type == "MANUAL"
    assert lists["719"].size == N_SOURCE
    assert lists["987"].processing_type == "DYNAMIC"


def test_memberships_are_read_250_a_page_to_the_last_page(client, sandbox):
    before = _requests(sandbox, "GET /crm/v3/lists/{listId}/memberships")
    pages = list(client.iter_list_members("719"))
    sent = _requests(sandbox, "GET /crm/v3/lists/{listId}/memberships") - before
    ids = [i for page in pages for i in page]
    assert sorted(ids, key=int) == [str(1000 + i) for i in range(1, N_SOURCE + 1)]
    assert [len(p) for p in pages] == [250, 250, N_SOURCE - 500]
    assert sent == math.ceil(N_SOURCE / 250)


def test_batch_read_by_id_100_a_call_reports_missing_ids_without_failing(client, sandbox):
    ids = [str(1000 + i) for i in range(1, 251)] + ["999999"]
    before = _requests(sandbox, "POST /crm/v3/objects/contacts/batch/read")
    read = client.read_contacts(ids, ["firstname", f"hs_email_optout_{SUB}"])
    sent = _requests(sandbox, "POST /crm/v3/objects/contacts/batch/read") - before
    assert sent == math.ceil(len(ids) / 100)
    assert read.missing == ["999999"]
    found = {r.id: r for r in read.found}
    assert len(found) == 250
    assert found["1001"].properties["firstname"] == "P1"
    assert found["1001"].properties["email"] == "person001@example.com"


def test_batch_read_by_email_finds_contacts_and_lists_unknown_emails(client):
    read = client.read_contacts_by_email(["optout@example.org", "nobody@example.net"],
                                         [f"hs_email_optout_{SUB}", "hs_email_optout"])
    assert [r.id for r in read.found] == ["5000"]
    assert read.found[0].properties[f"hs_email_optout_{SUB}"] == "true"
    assert read.missing == ["nobody@example.net"]


def test_properties_and_subscription_definitions(client):
    props = client.contact_properties()
    assert {"email", "branches", "import_list", f"hs_email_optout_{SUB}"} <= set(props)
    assert client.subscription_definitions() == {SUB: "Marketing Information"}


def test_list_membership_writes_are_idempotent(client):
    first = client.add_to_list("947", ["1001", "1002"])
    assert set(first.added) == {"1001", "1002"}
    again = client.add_to_list("947", ["1001", "1002"])
    assert again.added == ()
    assert set(client.list_member_ids("947")) == {"1001", "1002"}
    removed = client.remove_from_list("947", ["1001", "1001", "1003"])
    assert removed.removed == ("1001",)
    assert client.list_member_ids("947") == ["1002"]


def test_membership_write_to_a_dynamic_list_is_refused_with_the_vendor_text(client, sandbox):
    before = _requests(sandbox, "PUT /crm/v3/lists/{listId}/memberships/add")
    with pytest.raises(PermanentVendorError) as caught:
        client.add_to_list("987", ["1002"])
    assert caught.value.status == 400
    assert "DYNAMIC" in str(caught.value)
    assert _requests(sandbox, "PUT /crm/v3/lists/{listId}/memberships/add") - before == 1  # not retried


def test_unsubscribe_then_repeat_counts_as_already(client):
    email = "person010@example.com"
    first = client.unsubscribe(email, SUB, legal_basis="LEGITIMATE_INTEREST_OTHER", explanation="Unsubscribed in Mailchimp")
    assert first.outcome == APPLIED
    again = client.unsubscribe(email, SUB, legal_basis="LEGITIMATE_INTEREST_OTHER", explanation="Unsubscribed in Mailchimp")
    assert again.outcome == ALREADY
    read = client.read_contacts_by_email([email], [f"hs_email_optout_{SUB}"])
    assert read.found[0].properties[f"hs_email_optout_{SUB}"] == "true"


def test_unsubscribe_of_an_unknown_email_is_a_permanent_error_with_the_vendor_message(client):
    with pytest.raises(PermanentVendorError) as caught:
        client.unsubscribe("nobody@example.net", SUB, legal_basis="LEGITIMATE_INTEREST_OTHER", explanation="x")
    assert caught.value.status == 404
    assert "either has no subscriptions" in caught.value.detail


def test_create_contacts_is_safe_to_repeat(client):
    created = client.create_contacts([{"email": "new1@example.org"}, {"email": "New2@Example.org"}])
    assert [r.outcome for r in created] == [APPLIED, APPLIED]
    ids = {r.key: r.data["id"] for r in created}
    assert set(ids) == {"new1@example.org", "new2@example.org"}
    again = client.create_contacts([{"email": "new1@example.org"}, {"email": "new3@example.org"}])
    assert again[0].outcome == ALREADY and again[0].data["id"] == ids["new1@example.org"]
    assert again[1].outcome == APPLIED
    found = client.read_contacts_by_email(["new1@example.org", "new3@example.org"], [])
    assert len(found.found) == 2


def test_update_contacts_sets_properties_and_reports_unknown_ids(client):
    results = client.update_contacts({"1003": {"import_list": "Recruitment"}, "999998": {"import_list": "x"}})
    assert {r.key: r.outcome for r in results} == {"1003": APPLIED, "999998": "failed"}
    read = client.read_contacts(["1003"], ["import_list"])
    assert read.found[0].properties["import_list"] == "Recruitment"
