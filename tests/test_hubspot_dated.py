"""HubSpot's date-based version 2026-03: the client over real HTTP against the sandbox's dated endpoints.

Every dated endpoint the product uses, the guard that keeps any subscribe status from being sent,
R11's batch opt-outs (≤ 100 a request, counted by the sandbox) and their fallback to one request
per contact on a portal below Marketing Hub Enterprise; the dated and v3 paths share one portal.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

import pytest
import requests

from e2e_helpers import RecordingSandbox, is_write
from reconciler.errors import ConfigError, PermanentVendorError
from reconciler.platforms.hubspot import HubSpotClient, OptOut
from reconciler.platforms.hubspot_prefs import SubscribeRefused
from reconciler.platforms.results import ALREADY, APPLIED, FAILED
from reconciler.sandbox.http import SandboxOptions
from reconciler.settings import HubSpotSettings, RateLimit

SUB = "289137112"
OTHER_SUB = "289137113"
TOKEN = "dated-token-123"
PREFS = "/communication-preferences/2026-03"
BATCH_WRITE = f"POST {PREFS}/statuses/batch/write"
SINGLE_WRITE = f"POST {PREFS}/statuses/{{subscriberIdString}}"
N = 250
BASIS = "LEGITIMATE_INTEREST_OTHER"
WHY = "Contact unsubscribed in Mailchimp"


def _seed(*, tier: str | None = None, scopes: list[str] | None = None, gdpr: bool = False) -> dict[str, Any]:
    contacts = [{"id": str(1000 + i), "email": f"person{i:03d}@example.com", "properties": {"firstname": f"P{i}"},
                 "subscribed": [SUB]} for i in range(1, N + 1)]
    contacts += [{"id": "5000", "email": "out@example.org", "unsubscribed": [SUB]},
                 {"id": "5001", "email": "both@example.org", "subscribed": [SUB, OTHER_SUB]}]
    hubspot: dict[str, Any] = {
        "token": TOKEN, "gdpr": gdpr,
        "subscriptions": [{"id": SUB, "name": "Marketing Information"}, {"id": OTHER_SUB, "name": "Newsletter"}],
        "properties": ["branches"],
        "lists": [{"id": "719", "name": "Recruitment", "processing_type": "MANUAL",
                   "members": [str(1000 + i) for i in range(1, N + 1)]},
                  {"id": "947", "name": "Sales Handover", "processing_type": "MANUAL", "members": []}],
        "contacts": contacts,
    }
    if tier is not None:
        hubspot["tier"] = tier
    if scopes is not None:
        hubspot["scopes"] = scopes
    return {"hubspot": hubspot}


@pytest.fixture()
def box() -> Iterator[RecordingSandbox]:
    sandbox = RecordingSandbox(_seed()).start()
    yield sandbox
    sandbox.stop()


def client_for(sandbox: RecordingSandbox, version: str = "2026-03") -> HubSpotClient:
    return HubSpotClient(HubSpotSettings(token=TOKEN, base_url=sandbox.base_url, rate_limit=RateLimit(1000, 10),
                                         api_version=version))


@pytest.fixture()
def client(box: RecordingSandbox) -> Iterator[HubSpotClient]:
    hubspot = client_for(box)
    yield hubspot
    hubspot.close()


def raw(sandbox: RecordingSandbox, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
    return requests.request(method, sandbox.base_url + path, json=body, params=params, timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"})


def v3_status(sandbox: RecordingSandbox, email: str, sid: str = SUB) -> dict[str, Any] | None:
    """The status as the legacy v3 API reads it back (the same portal)."""
    answer = raw(sandbox, "GET", f"/communication-preferences/v3/status/email/{email}")
    if answer.status_code == 404:
        return None
    return next((s for s in answer.json()["subscriptionStatuses"] if s["id"] == sid), None)


def opt_outs(emails: list[str], **extra: Any) -> list[OptOut]:
    return [OptOut(e, SUB, legal_basis=BASIS, explanation=WHY, **extra) for e in emails]


# -- reads and plain writes at the dated paths --------------------------------------------------------


def test_every_read_goes_to_the_dated_paths_and_sees_the_same_portal(client: HubSpotClient, box: RecordingSandbox) -> None:
    assert client.get_lists(["719", "424242"])["719"].size == N
    assert sorted(client.list_member_ids("719"), key=int) == [str(1000 + i) for i in range(1, N + 1)]
    read = client.read_contacts([str(1000 + i) for i in range(1, 151)] + ["999999"], ["firstname"])
    assert len(read.found) == 150 and read.missing == ["999999"]
    by_email = client.read_contacts_by_email(["out@example.org", "nobody@example.net"], [f"hs_email_optout_{SUB}"])
    assert by_email.found[0].properties[f"hs_email_optout_{SUB}"] == "true" and by_email.missing == ["nobody@example.net"]
    assert client.search_other_contacts({"person001@example.com": {"1001"}, "out@example.org": set()}, []) \
        and [r.id for r in client.search_other_contacts({"out@example.org": set()}, [])] == ["5000"]
    assert {"email", "branches", f"hs_email_optout_{SUB}"} <= set(client.contact_properties())
    assert client.subscription_definitions() == {SUB: "Marketing Information", OTHER_SUB: "Newsletter"}
    assert client.subscribed_to("both@example.org") == {SUB, OTHER_SUB}
    assert client.subscribed_to("out@example.org") == frozenset()  # UNSUBSCRIBED is no consent
    assert client.subscribed_to("nobody@example.net") == frozenset()  # 404: none
    counts = box.counters()
    assert not [k for k in counts if "/v3/" in k], counts  # nothing at a legacy path
    assert counts["POST /crm/objects/2026-03/contacts/batch/read"] == 3  # 151 ids: 2 calls; by email: 1
    assert counts["GET /crm/lists/2026-03/{listId}/memberships"] == 1
    assert counts["POST /crm/objects/2026-03/contacts/search"] == 2
    assert counts[f"GET {PREFS}/statuses/{{subscriberIdString}}"] == 3


def test_contact_and_membership_writes_at_the_dated_paths(client: HubSpotClient, box: RecordingSandbox) -> None:
    created = client.create_contacts([{"email": "new@example.net"}])
    assert created[0].outcome == APPLIED
    assert client.create_contacts([{"email": "new@example.net"}])[0].outcome == ALREADY
    new_id = created[0].data["id"]
    assert [r.outcome for r in client.update_contacts({new_id: {"firstname": "Nia"}})] == [APPLIED]
    assert client.add_to_list("947", [new_id, "1001"]).added == (new_id, "1001")
    assert client.remove_from_list("947", ["1001"]).removed == ("1001",)
    assert box.hubspot.list_members("947") == [new_id]
    assert box.hubspot.contact_by_email("new@example.net")["firstname"] == "Nia"
    assert {k for k, n in box.counters().items() if n and is_write(k)} == {
        "POST /crm/objects/2026-03/contacts/batch/create", "POST /crm/objects/2026-03/contacts/batch/update",
        "PUT /crm/lists/2026-03/{listId}/memberships/add", "PUT /crm/lists/2026-03/{listId}/memberships/remove"}


def test_an_unknown_api_version_is_a_config_error(box: RecordingSandbox) -> None:
    with pytest.raises(ConfigError, match="hubspot.api_version: '2027-01' is not one of legacy, 2026-03"):
        client_for(box, "2027-01")


# -- one contact: the v4-shaped statuses ---------------------------------------------------------------


def test_unsubscribe_is_applied_then_already_with_the_legal_basis(client: HubSpotClient, box: RecordingSandbox) -> None:
    email = "person010@example.com"
    assert client.unsubscribe(email, SUB, legal_basis=BASIS, explanation=WHY).outcome == APPLIED
    again = client.unsubscribe(email, SUB, legal_basis=BASIS, explanation=WHY)
    assert (again.outcome, again.detail) == (ALREADY, "NO_STATUS_CHANGE")  # a 200, not v3's 400
    status = v3_status(box, email)
    assert (status["status"], status["legalBasis"], status["legalBasisExplanation"]) == ("NOT_SUBSCRIBED", BASIS, WHY)
    assert v3_status(box, email, OTHER_SUB) is None  # the other subscription untouched
    body = [b for m, p, b, _, _ in box.log if p == f"{PREFS}/statuses/{email}" and m == "POST"][0]
    assert body == {"channel": "EMAIL", "statusState": "UNSUBSCRIBED", "subscriptionId": int(SUB),
                    "legalBasis": BASIS, "legalBasisExplanation": WHY}


def test_a_repeat_answered_with_v3s_400_is_already_too() -> None:
    with RecordingSandbox(_seed(), options=SandboxOptions(variants={"hubspot_dated_repeat_unsubscribe": "400"})) as box:
        hubspot = client_for(box)
        assert hubspot.unsubscribe("out@example.org", SUB, legal_basis=BASIS, explanation=WHY).outcome == ALREADY
        results = hubspot.unsubscribe_many(opt_outs(["out@example.org", "person001@example.com"]))
        assert [r.outcome for r in results] == [ALREADY, APPLIED]
        assert box.counters()[BATCH_WRITE] == 1 and box.counters()[SINGLE_WRITE] == 1


def test_an_unknown_email_is_retried_then_raised_like_v3(client: HubSpotClient, box: RecordingSandbox) -> None:
    with pytest.raises(PermanentVendorError) as caught:
        client.unsubscribe("nobody@example.net", SUB, legal_basis=BASIS, explanation=WHY, not_found_retries=1,
                           not_found_delay=0.01)
    assert caught.value.status == 404 and "either has no subscriptions" in caught.value.detail
    assert box.counters()[SINGLE_WRITE] == 2


# -- the guard: never a subscribe status ------------------------------------------------------------------


@pytest.mark.parametrize("path_tail, body", [
    ("/statuses/person001@example.com", {"channel": "EMAIL", "statusState": "SUBSCRIBED", "subscriptionId": int(SUB)}),
    ("/statuses/person001@example.com", {"channel": "EMAIL", "statusState": "NOT_SPECIFIED", "subscriptionId": int(SUB)}),
    ("/statuses/person001@example.com", {"channel": "EMAIL", "subscriptionId": int(SUB)}),
    ("/statuses/batch/write", {"inputs": [
        {"subscriberIdString": "person002@example.com", "channel": "EMAIL", "statusState": "UNSUBSCRIBED", "subscriptionId": int(SUB)},
        {"subscriberIdString": "out@example.org", "channel": "EMAIL", "statusState": "SUBSCRIBED", "subscriptionId": int(SUB)}]}),
    ("/statuses/batch/write", {"inputs": []}),
])
def test_the_guard_refuses_any_status_but_unsubscribed_before_sending(client: HubSpotClient, box: RecordingSandbox,
                                                                        path_tail: str, body: dict[str, Any]) -> None:
    with pytest.raises(SubscribeRefused):
        client.prefs._write(PREFS + path_tail, body)
    assert box.total_requests() == 0  # nothing left the client
    assert box.hubspot.subscription_status("out@example.org", SUB) == "NOT_SUBSCRIBED"


def test_the_guard_refuses_v3_subscribe_and_the_dated_api_would_resubscribe(box: RecordingSandbox) -> None:
    legacy = client_for(box, "legacy")
    with pytest.raises(SubscribeRefused):
        legacy.prefs._write("/communication-preferences/v3/subscribe",
                            {"emailAddress": "out@example.org", "subscriptionId": SUB})
    assert box.total_requests() == 0
    # Why the guard matters: sent by hand, the dated API does re-subscribe an opted-out contact.
    answer = raw(box, "POST", f"{PREFS}/statuses/out@example.org",
                 {"channel": "EMAIL", "statusState": "SUBSCRIBED", "subscriptionId": int(SUB)})
    assert answer.status_code == 200
    assert answer.json()["results"][0]["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED"
    assert box.hubspot.subscription_status("out@example.org", SUB) == "SUBSCRIBED"


# -- many contacts: batch writes and the fallback ---------------------------------------------------------


def test_opt_outs_go_in_batches_of_at_most_100(client: HubSpotClient, box: RecordingSandbox) -> None:
    emails = [f"person{i:03d}@example.com" for i in range(1, N + 1)]
    items = opt_outs(emails + ["out@example.org", "nobody@example.net", "Person001@Example.com"])
    results = client.unsubscribe_many(items)
    assert [r.key for r in results] == [i.email for i in items]  # one result per item, in order
    outcomes = Counter(r.outcome for r in results)
    assert outcomes == {APPLIED: N + 1, ALREADY: 1, FAILED: 1}  # the repeated email shares its first's answer
    assert results[-3].outcome == ALREADY and results[-1].outcome == APPLIED
    assert results[-2].outcome == FAILED and "either has no subscriptions" in results[-2].detail
    sizes = [len(b["inputs"]) for m, p, b, _, _ in box.log if p == f"{PREFS}/statuses/batch/write"]
    assert sizes == [100, 100, 52]  # 252 distinct opt-outs
    assert box.counters().get(SINGLE_WRITE, 0) == 0
    assert all(box.hubspot.subscription_status(e, SUB) == "NOT_SUBSCRIBED" for e in emails)
    assert v3_status(box, "person200@example.com")["legalBasisExplanation"] == WHY
    assert client.prefs.batch_refused == ""


@pytest.mark.parametrize("seed", [_seed(tier="professional"), _seed(tier="starter"),
                                  _seed(scopes=["subscriptions-status-write", "subscriptions-status-read"])],
                         ids=["professional", "starter", "enterprise-without-batch-scope"])
def test_a_refused_batch_falls_back_to_one_request_per_contact_once_per_run(seed: dict[str, Any]) -> None:
    with RecordingSandbox(seed) as box:
        hubspot = client_for(box)
        emails = [f"person{i:03d}@example.com" for i in range(1, 151)]
        first = hubspot.unsubscribe_many(opt_outs(emails[:120]))
        second = hubspot.unsubscribe_many(opt_outs(emails[100:]))  # 20 repeats, 30 new
        assert Counter(r.outcome for r in first) == {APPLIED: 120}
        assert Counter(r.outcome for r in second) == {ALREADY: 20, APPLIED: 30}
        counts = box.counters()
        assert counts[BATCH_WRITE] == 1  # refused once (403), never asked again this run
        assert counts[SINGLE_WRITE] == 170
        assert not [p for _, p, _, _, _ in box.log if p.endswith("/batch/write")]  # refused at admission
        assert "hasn't been granted all required scopes" in hubspot.prefs.batch_refused  # the 403's words
        assert all(box.hubspot.subscription_status(e, SUB) == "NOT_SUBSCRIBED" for e in emails)


def test_per_input_errors_of_a_batch_become_failed_per_email() -> None:
    with RecordingSandbox(_seed(gdpr=True)) as box:
        hubspot = client_for(box)
        items = [OptOut("person001@example.com", SUB, legal_basis=BASIS, explanation=WHY),
                 OptOut("person002@example.com", SUB),  # no legal basis: a GDPR portal refuses this input
                 OptOut("person003@example.com", "999", legal_basis=BASIS, explanation=WHY)]
        results = hubspot.unsubscribe_many(items)
        assert [r.outcome for r in results] == [APPLIED, FAILED, FAILED]
        assert "GDPR" in results[1].detail and "999 does not exist" in results[2].detail
        assert box.counters()[BATCH_WRITE] == 1 and box.counters().get(SINGLE_WRITE, 0) == 0
        assert box.hubspot.subscription_status("person002@example.com", SUB) == "SUBSCRIBED"


def test_an_unknown_contact_with_retries_is_asked_again_on_its_own(client: HubSpotClient, box: RecordingSandbox) -> None:
    items = [OptOut("person001@example.com", SUB, BASIS, WHY),
             OptOut("late@example.net", SUB, BASIS, WHY, not_found_retries=2, not_found_delay=0.01)]
    results = client.unsubscribe_many(items)
    assert [r.outcome for r in results] == [APPLIED, FAILED]
    assert "answered 404" in results[1].detail
    assert box.counters()[BATCH_WRITE] == 1 and box.counters()[SINGLE_WRITE] == 3  # 1 + 2 retries


def test_legacy_sends_one_v3_unsubscribe_per_contact(box: RecordingSandbox) -> None:
    legacy = client_for(box, "legacy")
    results = legacy.unsubscribe_many(opt_outs(["person001@example.com", "person002@example.com", "out@example.org"]))
    assert [r.outcome for r in results] == [APPLIED, APPLIED, ALREADY]
    assert box.counters() == {"POST /communication-preferences/v3/unsubscribe": 3}


# -- the sandbox's dated statuses, raw -----------------------------------------------------------------


def test_dated_status_shapes_batch_read_and_limits(box: RecordingSandbox) -> None:
    got = raw(box, "GET", f"{PREFS}/statuses/out@example.org", channel="EMAIL")
    assert got.status_code == 200 and got.json()["status"] == "COMPLETE"
    by_id = {s["subscriptionId"]: s for s in got.json()["results"]}
    assert by_id[int(SUB)]["status"] == "UNSUBSCRIBED" and by_id[int(OTHER_SUB)]["status"] == "NOT_SPECIFIED"
    assert {"subscriberIdString", "subscriptionId", "channel", "status", "source", "timestamp"} <= set(by_id[int(SUB)])
    assert raw(box, "GET", f"{PREFS}/statuses/out@example.org").status_code == 400  # channel is required
    assert raw(box, "GET", f"{PREFS}/statuses/nobody@example.net", channel="EMAIL").status_code == 404
    read = raw(box, "POST", f"{PREFS}/statuses/batch/read", {"inputs": ["both@example.org", "nobody@example.net"]},
               channel="EMAIL")
    assert read.status_code == 207 and read.json()["results"][0]["subscriberIdString"] == "both@example.org"
    assert read.json()["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    too_many = [{"subscriberIdString": f"person{i:03d}@example.com", "channel": "EMAIL", "statusState": "UNSUBSCRIBED",
                 "subscriptionId": int(SUB)} for i in range(1, 102)]
    assert raw(box, "POST", f"{PREFS}/statuses/batch/write", {"inputs": too_many}).status_code == 400
    assert box.hubspot.subscription_status("person001@example.com", SUB) == "SUBSCRIBED"  # refused whole


def test_dated_scopes_and_the_enterprise_tier() -> None:
    legacy_scopes = ["communication_preferences.read", "communication_preferences.write",
                     "communication_preferences.statuses.batch.write", "crm.objects.contacts.read"]
    with RecordingSandbox(_seed(scopes=legacy_scopes)) as box:
        refused = raw(box, "GET", f"{PREFS}/statuses/out@example.org", channel="EMAIL")
        assert refused.status_code == 403 and refused.json()["category"] == "MISSING_SCOPES"
        assert refused.json()["errors"][0]["context"]["requiredGranularScopes"] == ["subscriptions-status-read"]
        assert raw(box, "POST", "/crm/objects/2026-03/contacts/batch/read", {"inputs": []}).status_code == 200
    dated = ["subscriptions-status-write", "subscription-status-batch-write"]
    with RecordingSandbox(_seed(tier="professional", scopes=dated)) as box:
        body = {"inputs": [{"subscriberIdString": "person001@example.com", "channel": "EMAIL",
                            "statusState": "UNSUBSCRIBED", "subscriptionId": int(SUB)}]}
        assert raw(box, "POST", f"{PREFS}/statuses/batch/write", body).status_code == 403  # scope held, tier not
        assert raw(box, "POST", f"{PREFS}/statuses/person001@example.com", body["inputs"][0]).status_code == 200
