"""HubSpotClient over real HTTP against the sandbox: paging, batches, 207s, refusals, idempotent writes."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import pytest

from reconciler.errors import PermanentVendorError
from reconciler.platforms.hubspot import HubSpotClient
from reconciler.platforms.hubspot_search import SEARCH_VALUES, halves, request_parts, search_groups
from reconciler.platforms.results import ALREADY, APPLIED
from reconciler.sandbox import Sandbox
from reconciler.sandbox.http import Request, Response, SandboxOptions
from reconciler.sandbox.hubspot_state import NOT_SUBSCRIBED, SubscriptionStatus
from reconciler.sandbox.hubspot_state import ContactRecord as StoredContact
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


# -- helpers shared with the observe tests: what the sandbox cannot be seeded with ----------------


def add_duplicate(sandbox: Sandbox, cid: str, email: str, *, lists: Sequence[str] = (), opted_out_of_all: bool = False,
                  unsubscribed: Sequence[str] = ()) -> None:
    """A second contact holding an email another contact has, stored as typed (e.g. other case).

    HubSpot can hold such records (imports, integrations, records from before a merge); the
    sandbox's seeds and API refuse them, so the test adds one behind its uniqueness index."""
    state = sandbox.hubspot
    now = int(time.time() * 1000)
    with state.lock:
        record = StoredContact(cid, {"email": email}, now, now, opted_out_of_all=opted_out_of_all)
        for sid in unsubscribed:
            record.statuses[sid] = SubscriptionStatus(NOT_SUBSCRIBED, now)
        state.contacts[cid] = record
        state.next_id = max(state.next_id, int(cid) + 1)
        for list_id in lists:
            state.add_members(state.lists[list_id], [cid], now)


class ListTypeSandbox(Sandbox):
    """A sandbox whose list reads leave out `processingType` for the ids in `untyped` (the sandbox
    always sends it; HubSpot's list object does not promise it) and log every request."""

    def __init__(self, *args: Any, untyped: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.untyped = set(untyped)
        self.log: list[tuple[str, str, int]] = []
        self._log_lock = threading.Lock()

    def _handle(self, vendor: Any, request: Request) -> Response:
        response = super()._handle(vendor, request)
        with self._log_lock:
            self.log.append((request.method, request.path, response.status))
        if request.method == "GET" and request.path.startswith("/crm/v3/lists") and isinstance(response.body, dict):
            for item in response.body.get("lists") or ([response.body["list"]] if "list" in response.body else []):
                if str(item.get("listId")) in self.untyped:
                    item.pop("processingType", None)
        return response


@pytest.fixture()
def fresh():
    """A sandbox of its own (the module one is written to by other tests)."""
    box = ListTypeSandbox(_seed(), untyped=["947"], options=SandboxOptions(rate_limits=True)).start()
    yield box
    box.stop()


def _client(box: Sandbox) -> HubSpotClient:
    return HubSpotClient(HubSpotSettings(token=box.hubspot_token, base_url=box.base_url, rate_limit=RateLimit(1000, 10)))


# -- R14: a list whose processingType is missing or unknown ------------------------------------


def test_a_missing_or_unknown_processing_type_is_kept_as_unknown_never_defaulted(fresh):
    with fresh.hubspot.lock:
        fresh.hubspot.lists["987"].processing_type = "REALTIME"  # a value this product does not know
    client = _client(fresh)
    try:
        lists = client.get_lists(["719", "947", "987"])
    finally:
        client.close()
    assert {i: info.processing_type for i, info in lists.items()} == {"719": "MANUAL", "947": "", "987": "REALTIME"}


# -- R1: other contacts holding an email -------------------------------------------------------


def _emails(n: int) -> list[str]:
    return [f"person{i:03d}@example.com" for i in range(1, n + 1)]


def test_search_finds_only_the_other_holders_of_the_emails_asked_500_a_request(fresh):
    add_duplicate(fresh, "9001", "PERSON001@Example.COM", opted_out_of_all=True)
    add_duplicate(fresh, "9002", "person602@EXAMPLE.com", lists=["947"])
    add_duplicate(fresh, "9003", "someone.else@example.com")
    known = {email: {str(1000 + i)} for i, email in enumerate(_emails(N_SOURCE), start=1)}
    fresh.reset_counters()
    client = _client(fresh)
    try:
        found = client.search_other_contacts(known, ["hs_email_optout", f"hs_email_optout_{SUB}"])
    finally:
        client.close()
    assert {r.id: r.properties["email"] for r in found} == {"9001": "PERSON001@Example.COM",
                                                            "9002": "person602@EXAMPLE.com"}
    assert {r.id: r.properties["hs_email_optout"] for r in found}["9001"] == "true"
    # 620 emails with one known id each: 7 groups of <= 100 emails and ids, 5 a request.
    assert fresh.counters()["POST /crm/v3/objects/contacts/search"] == 2 == len(request_parts(known))


def test_search_without_known_ids_returns_every_holder_page_by_page(fresh):
    add_duplicate(fresh, "9001", "Person001@example.com")
    fresh.reset_counters()
    client = _client(fresh)
    try:
        found = client.search_other_contacts({e: set() for e in _emails(300)}, [])
    finally:
        client.close()
    assert len(found) == 301 and "9001" in {r.id for r in found} and "1001" in {r.id for r in found}
    assert fresh.counters()["POST /crm/v3/objects/contacts/search"] == 2  # one request, two pages of 200


def test_searches_keep_to_five_a_second_apart_from_the_ten_second_window(fresh):
    client = _client(fresh)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i: client.search_other_contacts({f"person{i:03d}@example.com": set()}, []), range(1, 7)))
    finally:
        client.close()
    assert time.monotonic() - started >= 1.0  # the sixth waits for the first to leave the 1 s window
    searches = [status for method, path, status in fresh.log if path.endswith("/contacts/search")]
    assert searches == [200] * 6  # none answered 429


def test_search_groups_keep_within_the_value_caps_and_halves_split_a_query():
    emails = {f"a{i:03d}@example.com": {str(i), str(i + 1000)} for i in range(120)}
    emails.update({f"b{i:03d}@example.com": set() for i in range(150)})
    groups = search_groups(emails)
    for group in groups:
        values = [f["values"] for f in group["filters"]]
        assert all(0 < len(v) <= SEARCH_VALUES for v in values)
    with_ids = [g for g in groups if len(g["filters"]) == 2]
    assert sum(len(g["filters"][0]["values"]) for g in with_ids) == 120 and len(with_ids) == 3  # 50 emails, 100 ids
    assert sum(len(g["filters"][0]["values"]) for g in groups if len(g["filters"]) == 1) == 150
    assert sorted(e for part in request_parts(emails) for e in part) == sorted(emails)
    one = halves([groups[0]])
    assert [len(h[0]["filters"][0]["values"]) for h in one] == [25, 25] and one[0][0]["filters"][1] == groups[0]["filters"][1]
    with pytest.raises(PermanentVendorError, match="more than 10000 contacts have the email"):
        halves([{"filters": [{"propertyName": "email", "operator": "IN", "values": ["x@example.com"]}]}])


# -- R8: evidence of consent -------------------------------------------------------------------


@pytest.mark.parametrize("unknown", ["404", "empty"])
def test_subscribed_to_lists_only_explicit_subscriptions_and_nothing_for_an_unknown_email(unknown):
    box = Sandbox(_seed(), options=SandboxOptions(variants={"hubspot_status_unknown_email": unknown})).start()
    client = _client(box)
    try:
        assert client.subscribed_to("person001@example.com") == {SUB}
        assert client.subscribed_to("optout@example.org") == frozenset()
        assert client.subscribed_to("nobody+tag@example.org") == frozenset()
    finally:
        client.close()
        box.stop()
