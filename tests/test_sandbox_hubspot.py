"""Contract tests of the sandbox's HubSpot emulator over real HTTP: shapes, paging, limits, error bodies,
authentication, DYNAMIC refusals, subscription rules and the opt-out properties, per the reference sheet.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest
import requests

from conftest import EVENTS, HUBSPOT_TOKEN, MARKETING, small_seed
from reconciler.sandbox import Sandbox, SandboxOptions

CONTACTS = "/crm/v3/objects/contacts"
PREFS = "/communication-preferences/v3"
V4 = "/communication-preferences/v4/statuses/batch"
LIMIT_HEADERS = ("X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining",
                 "X-HubSpot-RateLimit-Interval-Milliseconds", "X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining")


class Hub:
    """A requests session speaking to the sandbox's HubSpot side with the seeded token."""

    def __init__(self, sandbox: Sandbox, token: str | None = HUBSPOT_TOKEN) -> None:
        self.base = sandbox.hubspot_base_url
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return self.session.request(method, self.base + path, data=data, params=params or None, headers=headers,
                                    timeout=10)


@pytest.fixture
def hub(sandbox: Sandbox) -> Iterator[Hub]:
    client = Hub(sandbox)
    yield client
    client.session.close()


def error_of(response: requests.Response, status: int, category: str | None) -> dict[str, Any]:
    """Checks HubSpot's error envelope and returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json;charset=utf-8"
    body = response.json()
    assert body["status"] == "error" and body["message"]
    assert body["correlationId"] == response.headers["X-HubSpot-Correlation-Id"]
    assert body.get("category") == category
    return body


def props_of(hub: Hub, email: str, *names: str) -> dict[str, Any]:
    response = hub.call("GET", f"{CONTACTS}/{email}", idProperty="email", properties=",".join(names))
    assert response.status_code == 200, response.text
    return response.json()["properties"]


# ----- authentication and envelope ---------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_401(sandbox: Sandbox, token: str | None) -> None:
    client = Hub(sandbox, token)
    body = error_of(client.call("GET", "/crm/v3/lists/719"), 401, "INVALID_AUTHENTICATION")
    assert "Authentication credentials not found" in body["message"]
    assert "X-HubSpot-RateLimit-Remaining" not in client.call("GET", "/crm/v3/lists/719").headers


def test_basic_auth_is_not_accepted(sandbox: Sandbox) -> None:
    response = requests.get(sandbox.hubspot_base_url + "/crm/v3/lists/719", auth=("x", HUBSPOT_TOKEN), timeout=10)
    error_of(response, 401, "INVALID_AUTHENTICATION")


def test_success_carries_correlation_id_and_rate_limit_headers(hub: Hub) -> None:
    first = hub.call("GET", "/crm/v3/lists/719")
    second = hub.call("GET", "/crm/v3/lists/719")
    assert first.status_code == 200 and first.headers["Content-Type"] == "application/json;charset=utf-8"
    assert first.headers["X-HubSpot-Correlation-Id"] != second.headers["X-HubSpot-Correlation-Id"]
    for name in LIMIT_HEADERS:
        assert name in first.headers
    assert first.headers["X-HubSpot-RateLimit-Max"] == "100"
    assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert int(first.headers["X-HubSpot-RateLimit-Remaining"]) - 1 == int(second.headers["X-HubSpot-RateLimit-Remaining"])


def test_missing_scope_is_403_with_required_scopes() -> None:
    seed = small_seed()
    seed["hubspot"]["scopes"] = ["crm.lists.read"]
    with Sandbox(seed) as limited:
        client = Hub(limited)
        assert client.call("GET", "/crm/v3/lists/719").status_code == 200
        body = error_of(client.call("PUT", "/crm/v3/lists/719/memberships/add", ["104"]), 403, "MISSING_SCOPES")
        assert body["errors"][0]["context"]["requiredGranularScopes"] == ["crm.lists.read", "crm.lists.write"]
        body = error_of(client.call("POST", f"{CONTACTS}/batch/read", {"inputs": []}), 403, "MISSING_SCOPES")
        assert body["errors"][0]["context"]["requiredGranularScopes"] == ["crm.objects.contacts.read"]
        assert limited.hubspot.list_members("719") == ["101", "102", "103"]


def test_unknown_path_wrong_method_and_bad_json(hub: Hub) -> None:
    error_of(hub.call("GET", "/crm/v3/nothing-here"), 404, "OBJECT_NOT_FOUND")
    response = hub.call("DELETE", "/crm/v3/lists/719/memberships/add")
    error_of(response, 405, "VALIDATION_ERROR")
    assert response.headers["Allow"] == "PUT"
    bad = hub.session.post(hub.base + f"{CONTACTS}/batch/read", data=b"{not json", timeout=10)
    assert "Invalid input JSON" in error_of(bad, 400, "VALIDATION_ERROR")["message"]


# ----- lists ---------------------------------------------------------------------------------------


def test_get_list_shape(hub: Hub) -> None:
    body = hub.call("GET", "/crm/v3/lists/720").json()
    hub_list = body["list"]
    assert hub_list["listId"] == "720" and hub_list["name"] == "Active volunteers"
    assert hub_list["processingType"] == "DYNAMIC" and hub_list["processingStatus"] == "COMPLETE"
    assert hub_list["objectTypeId"] == "0-1" and hub_list["size"] == 2
    assert isinstance(hub_list["listVersion"], int) and hub_list["createdAt"].endswith("Z")


def test_unknown_list_is_404(hub: Hub) -> None:
    error_of(hub.call("GET", "/crm/v3/lists/999"), 404, "OBJECT_NOT_FOUND")
    error_of(hub.call("GET", "/crm/v3/lists/999/memberships"), 404, "OBJECT_NOT_FOUND")
    error_of(hub.call("PUT", "/crm/v3/lists/999/memberships/add", ["101"]), 404, "OBJECT_NOT_FOUND")


def test_get_lists_by_ids_skips_unknown(hub: Hub) -> None:
    response = hub.session.get(hub.base + "/crm/v3/lists?listIds=719&listIds=999&listIds=721", timeout=10)
    assert [item["listId"] for item in response.json()["lists"]] == ["719", "721"]


def test_search_lists(hub: Hub) -> None:
    body = hub.call("POST", "/crm/v3/lists/search", {"query": "", "processingTypes": ["MANUAL", "SNAPSHOT"],
                                                    "count": 1}).json()
    assert body["total"] == 2 and body["hasMore"] is True and body["offset"] == 1
    assert body["lists"][0]["listId"] == "719"
    assert body["lists"][0]["additionalProperties"]["hs_list_size"] == "3"
    rest = hub.call("POST", "/crm/v3/lists/search", {"processingTypes": ["MANUAL", "SNAPSHOT"], "offset": 1}).json()
    assert [item["listId"] for item in rest["lists"]] == ["721"] and rest["hasMore"] is False
    named = hub.call("POST", "/crm/v3/lists/search", {"query": "volunteer"}).json()
    assert [item["name"] for item in named["lists"]] == ["Active volunteers"]


def big_list_seed(members: int) -> dict[str, Any]:
    seed = small_seed()
    contacts = [{"id": str(1000 + i * 7), "email": f"member{i}@example.com"} for i in range(members)]
    seed["hubspot"]["contacts"] += contacts
    seed["hubspot"]["lists"].append({"id": "800", "name": "Big", "members": [c["id"] for c in reversed(contacts)]})
    return seed


def test_memberships_page_to_the_last_page_sorted_by_record_id() -> None:
    with Sandbox(big_list_seed(600)) as big:
        client = Hub(big)
        seen: list[int] = []
        sizes: list[int] = []
        params: dict[str, Any] = {"limit": 250}
        while True:
            body = client.call("GET", "/crm/v3/lists/800/memberships", **params).json()
            assert body["total"] == 600
            sizes.append(len(body["results"]))
            seen.extend(int(item["recordId"]) for item in body["results"])
            assert all(item["membershipTimestamp"].endswith("Z") for item in body["results"])
            nxt = body.get("paging", {}).get("next")
            if nxt is None:
                break
            params = {"limit": 250, "after": nxt["after"]}
        assert sizes == [250, 250, 100]
        assert seen == sorted(seen) and len(set(seen)) == 600
        # Only `before`: the page below it, descending.
        last = client.call("GET", "/crm/v3/lists/800/memberships", **params).json()
        before = last["paging"]["prev"]["before"]
        down = client.call("GET", "/crm/v3/lists/800/memberships", limit=10, before=before).json()
        ids = [int(item["recordId"]) for item in down["results"]]
        assert ids == sorted(ids, reverse=True) and ids[0] < int(last["results"][0]["recordId"])
        assert ids == sorted(seen[:500], reverse=True)[:10]


def test_memberships_default_limit_and_bounds(hub: Hub) -> None:
    body = hub.call("GET", "/crm/v3/lists/719/memberships").json()
    assert [item["recordId"] for item in body["results"]] == ["101", "102", "103"] and "paging" not in body
    error_of(hub.call("GET", "/crm/v3/lists/719/memberships", limit=251), 400, "VALIDATION_ERROR")
    error_of(hub.call("GET", "/crm/v3/lists/719/memberships", after="not-a-token"), 400, "VALIDATION_ERROR")


def test_membership_add_and_remove_are_idempotent(hub: Hub, sandbox: Sandbox) -> None:
    path = "/crm/v3/lists/719/memberships"
    first = hub.call("PUT", path + "/add", ["104", "101", "999999"]).json()
    assert first == {"recordsIdsAdded": ["104"], "recordIdsRemoved": [], "recordIdsMissing": ["999999"]}
    again = hub.call("PUT", path + "/add", ["104"]).json()
    assert again == {"recordsIdsAdded": [], "recordIdsRemoved": [], "recordIdsMissing": []}
    removed = hub.call("PUT", path + "/remove", ["101", "105"]).json()
    assert removed["recordIdsRemoved"] == ["101"] and removed["recordIdsMissing"] == []
    assert hub.call("PUT", path + "/remove", ["101"]).json()["recordIdsRemoved"] == []
    both = hub.call("PUT", path + "/add-and-remove", {"recordIdsToAdd": ["105"], "recordIdsToRemove": ["102"]}).json()
    assert both["recordsIdsAdded"] == ["105"] and both["recordIdsRemoved"] == ["102"]
    assert sandbox.hubspot.list_members("719") == ["103", "104", "105"]
    assert hub.call("GET", "/crm/v3/lists/719").json()["list"]["size"] == 3
    error_of(hub.call("PUT", path + "/add-and-remove", {"recordIdsToAdd": []}), 400, "VALIDATION_ERROR")


def test_snapshot_lists_accept_membership_writes(hub: Hub, sandbox: Sandbox) -> None:
    assert hub.call("PUT", "/crm/v3/lists/721/memberships/add", ["101"]).json()["recordsIdsAdded"] == ["101"]
    assert sandbox.hubspot.list_members("721") == ["101"]


@pytest.mark.parametrize("suffix,body", [("add", ["102"]), ("remove", ["101"]),
                                         ("add-and-remove", {"recordIdsToAdd": ["102"], "recordIdsToRemove": []})])
def test_dynamic_lists_refuse_membership_writes(hub: Hub, sandbox: Sandbox, suffix: str, body: Any) -> None:
    refused = error_of(hub.call("PUT", f"/crm/v3/lists/720/memberships/{suffix}", body), 400, "VALIDATION_ERROR")
    assert "DYNAMIC" in refused["message"]
    assert sandbox.hubspot.list_members("720") == ["101", "104"]


def test_membership_write_id_limit(hub: Hub) -> None:
    body = error_of(hub.call("PUT", "/crm/v3/lists/719/memberships/add", [str(i) for i in range(501)]), 400,
                    "VALIDATION_ERROR")
    assert "501" in body["message"] and "500" in body["message"]
    assert hub.call("PUT", "/crm/v3/lists/719/memberships/add", [str(i) for i in range(500)]).status_code == 200


def test_memberships_omit_empty_variant() -> None:
    with Sandbox(small_seed(), options=SandboxOptions(variants={"hubspot_memberships_omit_empty": True})) as box:
        body = Hub(box).call("PUT", "/crm/v3/lists/719/memberships/add", ["104"]).json()
        assert body == {"recordsIdsAdded": ["104"]}


# ----- contacts --------------------------------------------------------------------------------------


def test_get_contact_by_id_and_by_email(hub: Hub) -> None:
    by_id = hub.call("GET", f"{CONTACTS}/101").json()
    assert by_id["id"] == "101" and by_id["archived"] is False
    assert by_id["properties"]["email"] == "ann@example.com" and by_id["properties"]["lastname"] == "Lee"
    assert set(by_id["properties"]) == {"firstname", "lastname", "email", "createdate", "lastmodifieddate", "hs_object_id"}
    by_email = hub.call("GET", f"{CONTACTS}/ANN@example.com", idProperty="email", properties="branches,region,nope")
    props = by_email.json()["properties"]
    assert by_email.json()["id"] == "101" and props["branches"] == "2"
    assert props["region"] is None and "nope" not in props  # defined-unset → null; undefined → omitted


def test_missing_contact_is_404(hub: Hub) -> None:
    assert error_of(hub.call("GET", f"{CONTACTS}/424242"), 404, None)["message"] == "resource not found"
    error_of(hub.call("GET", f"{CONTACTS}/nobody@example.com", idProperty="email"), 404, None)
    error_of(hub.call("PATCH", f"{CONTACTS}/424242", {"properties": {"firstname": "X"}}), 404, None)


def test_list_contacts_pages_by_record_id(hub: Hub) -> None:
    first = hub.call("GET", CONTACTS, limit=3).json()
    assert [c["id"] for c in first["results"]] == ["101", "102", "103"]
    rest = hub.call("GET", CONTACTS, limit=3, after=first["paging"]["next"]["after"]).json()
    assert [c["id"] for c in rest["results"]] == ["104", "105"] and "paging" not in rest
    error_of(hub.call("GET", CONTACTS, limit=101), 400, "VALIDATION_ERROR")


def test_batch_read_by_email_groups_missing_into_one_207_error(hub: Hub) -> None:
    body = {"idProperty": "email", "properties": ["firstname", f"hs_email_optout_{MARKETING}"],
            "inputs": [{"id": "ann@example.com"}, {"id": "ghost@example.com"}, {"id": "cora@example.org"},
                       {"id": "nobody@example.org"}]}
    response = hub.call("POST", f"{CONTACTS}/batch/read", body)
    assert response.status_code == 207
    data = response.json()
    assert data["status"] == "COMPLETE" and data["numErrors"] == 1
    assert [r["id"] for r in data["results"]] == ["101", "103"]
    assert data["results"][1]["properties"][f"hs_email_optout_{MARKETING}"] == "true"
    error = data["errors"][0]
    assert error["category"] == "OBJECT_NOT_FOUND" and error["status"] == "error"
    assert error["context"] == {"ids": ["ghost@example.com", "nobody@example.org"]}
    assert error["message"].startswith("Could not get some CONTACT objects")


def test_batch_read_by_id_all_found_is_200(hub: Hub) -> None:
    response = hub.call("POST", f"{CONTACTS}/batch/read", {"properties": [], "inputs": [{"id": "101"}, {"id": "102"}]})
    assert response.status_code == 200 and "errors" not in response.json()
    assert {r["properties"]["email"] for r in response.json()["results"]} == {"ann@example.com", "bob@example.com"}


@pytest.mark.parametrize("operation", ["read", "create", "update", "upsert"])
def test_batch_of_101_inputs_is_400(hub: Hub, sandbox: Sandbox, operation: str) -> None:
    inputs = [{"id": f"p{i}@example.com", "idProperty": "email", "properties": {"email": f"p{i}@example.com"}}
              for i in range(101)]
    body = error_of(hub.call("POST", f"{CONTACTS}/batch/{operation}", {"idProperty": "email", "inputs": inputs}),
                    400, "VALIDATION_ERROR")
    assert "101" in body["message"] and "100" in body["message"]
    assert sandbox.hubspot.contact_by_email("p0@example.com") is None
    assert hub.call("POST", f"{CONTACTS}/batch/read", {"idProperty": "email", "inputs": inputs[:100]}).status_code == 207


def test_batch_create_conflict_and_multi_status(hub: Hub, sandbox: Sandbox) -> None:
    created = hub.call("POST", f"{CONTACTS}/batch/create",
                       {"inputs": [{"properties": {"email": "New@Example.com", "firstname": "Nia"}}]})
    assert created.status_code == 201
    record = created.json()["results"][0]
    assert record["properties"]["email"] == "new@example.com" and int(record["id"]) > 105
    conflict = error_of(hub.call("POST", f"{CONTACTS}/batch/create",
                                 {"inputs": [{"properties": {"email": "fresh@example.com"}},
                                             {"properties": {"email": "ann@example.com"}}]}), 409, "CONFLICT")
    assert conflict["message"] == "Contact already exists. Existing ID: 101"
    assert sandbox.hubspot.contact_by_email("fresh@example.com") is None  # all or nothing
    traced = hub.call("POST", f"{CONTACTS}/batch/create",
                      {"inputs": [{"properties": {"email": "fresh@example.com"}, "objectWriteTraceId": "a"},
                                  {"properties": {"email": "ann@example.com"}, "objectWriteTraceId": "b"}]})
    assert traced.status_code == 207 and traced.json()["errors"][0]["context"] == {"objectWriteTraceId": ["b"]}
    assert sandbox.hubspot.contact_by_email("fresh@example.com") is not None


def test_batch_update_and_property_errors(hub: Hub, sandbox: Sandbox) -> None:
    response = hub.call("POST", f"{CONTACTS}/batch/update",
                        {"inputs": [{"id": "101", "properties": {"firstname": "Anne"}},
                                    {"id": "999", "properties": {"firstname": "Ghost"}}]})
    assert response.status_code == 207 and response.json()["errors"][0]["context"] == {"ids": ["999"]}
    assert sandbox.hubspot.contact_by_email("ann@example.com")["firstname"] == "Anne"
    for name, code in (("nope", "PROPERTY_DOESNT_EXIST"), ("hs_email_optout", "READ_ONLY_VALUE"),
                       (f"hs_email_optout_{MARKETING}", "READ_ONLY_VALUE"), ("lastmodifieddate", "READ_ONLY_VALUE")):
        body = error_of(hub.call("POST", f"{CONTACTS}/batch/update",
                                 {"inputs": [{"id": "102", "properties": {"firstname": "B", name: "x"}}]}),
                        400, "VALIDATION_ERROR")
        assert body["message"].startswith("Property values were not valid") and code in body["message"]
        assert body["errors"][0]["code"] == code
    assert sandbox.hubspot.contact_by_email("bob@example.com")["firstname"] == "Bob"
    moved = hub.call("POST", f"{CONTACTS}/batch/update", {"inputs": [{"id": "102", "properties": {"email": "ann@example.com"}}]})
    error_of(moved, 409, "CONFLICT")


def test_batch_upsert_by_email_is_idempotent(hub: Hub) -> None:
    body = {"inputs": [{"id": "ann@example.com", "idProperty": "email", "properties": {"lastname": "Lee-Ray"}},
                       {"id": "zed@example.com", "idProperty": "email", "properties": {"firstname": "Zed"}}]}
    first = hub.call("POST", f"{CONTACTS}/batch/upsert", body).json()["results"]
    assert [(r["properties"]["email"], r["new"]) for r in first] == [("ann@example.com", False), ("zed@example.com", True)]
    second = hub.call("POST", f"{CONTACTS}/batch/upsert", body).json()["results"]
    assert [r["new"] for r in second] == [False, False] and second[1]["id"] == first[1]["id"]


def test_patch_updates_lastmodifieddate_and_clears_with_empty_string(hub: Hub) -> None:
    before = props_of(hub, "bob@example.com", "region", "lastmodifieddate")
    time.sleep(0.01)
    patched = hub.call("PATCH", f"{CONTACTS}/bob@example.com?idProperty=email", {"properties": {"region": ""}})
    assert patched.status_code == 200
    after = props_of(hub, "bob@example.com", "region", "lastmodifieddate")
    assert before["region"] == "south" and after["region"] is None
    assert after["lastmodifieddate"] > before["lastmodifieddate"]


def test_properties_catalogue(hub: Hub) -> None:
    names = {p["name"]: p for p in hub.call("GET", "/crm/v3/properties/contacts").json()["results"]}
    assert {"email", "hs_email_optout", f"hs_email_optout_{MARKETING}", f"hs_email_optout_{EVENTS}", "region",
            "branches"} <= set(names)
    optout = hub.call("GET", f"/crm/v3/properties/contacts/hs_email_optout_{MARKETING}").json()
    assert optout["modificationMetadata"]["readOnlyValue"] is True
    assert optout["label"] == "Opted out of email: Marketing Information"
    error_of(hub.call("GET", "/crm/v3/properties/contacts/hs_email_optout_1"), 404, "OBJECT_NOT_FOUND")


# ----- search --------------------------------------------------------------------------------------


def test_search_by_email_and_no_rate_limit_headers(hub: Hub) -> None:
    response = hub.call("POST", f"{CONTACTS}/search", {"filterGroups": [{"filters": [
        {"propertyName": "email", "operator": "EQ", "value": "cora@example.org"}]}]})
    body = response.json()
    assert body["total"] == 1 and body["results"][0]["id"] == "103" and "paging" not in body
    assert set(body["results"][0]["properties"]) == {"createdate", "email", "firstname", "hs_object_id",
                                                     "lastmodifieddate", "lastname"}
    assert "X-HubSpot-Correlation-Id" in response.headers
    assert not [h for h in response.headers if h.lower().startswith("x-hubspot-ratelimit")]


def test_search_by_lastmodifieddate_sees_changes(hub: Hub) -> None:
    time.sleep(0.01)
    since = int(time.time() * 1000)
    time.sleep(0.01)
    hub.call("POST", f"{PREFS}/unsubscribe", {"emailAddress": "ann@example.com", "subscriptionId": MARKETING})
    body = hub.call("POST", f"{CONTACTS}/search", {"filterGroups": [{"filters": [
        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(since)}]}],
        "properties": [f"hs_email_optout_{MARKETING}"]}).json()
    assert [r["id"] for r in body["results"]] == ["101"]
    assert body["results"][0]["properties"][f"hs_email_optout_{MARKETING}"] == "true"


def test_search_pages_to_the_last_page_and_limits() -> None:
    with Sandbox(big_list_seed(450)) as big:
        client = Hub(big)
        query = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "CONTAINS_TOKEN",
                                                 "value": "member"}]}], "limit": 200}
        ids, after, pages = [], None, 0
        while True:
            body = client.call("POST", f"{CONTACTS}/search", {**query, **({"after": after} if after else {})}).json()
            assert body["total"] == 450
            ids += [r["id"] for r in body["results"]]
            pages += 1
            after = body.get("paging", {}).get("next", {}).get("after")
            if after is None:
                break
            time.sleep(0.21)  # stay under 5 searches a second even if limits were on
        assert pages == 3 and len(set(ids)) == 450
        error_of(client.call("POST", f"{CONTACTS}/search", {**query, "limit": 201}), 400, "VALIDATION_ERROR")
        capped = error_of(client.call("POST", f"{CONTACTS}/search", {**query, "after": "9900", "limit": 200}), 400,
                          "VALIDATION_ERROR")
        assert "10000" in capped["message"]
        many = {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 7}]}
        error_of(client.call("POST", f"{CONTACTS}/search", many), 400, "VALIDATION_ERROR")


# ----- communication preferences --------------------------------------------------------------------


def test_definitions(hub: Hub) -> None:
    defs = hub.call("GET", f"{PREFS}/definitions").json()["subscriptionDefinitions"]
    assert [(d["id"], d["name"], d["isActive"]) for d in defs] == [(MARKETING, "Marketing Information", True),
                                                                  (EVENTS, "Event Invitations", True)]


def test_status_lists_explicit_statuses_only(hub: Hub) -> None:
    bob = hub.call("GET", f"{PREFS}/status/email/bob@example.com").json()
    assert bob["recipient"] == "bob@example.com"
    assert {(s["id"], s["status"]) for s in bob["subscriptionStatuses"]} == {(MARKETING, "SUBSCRIBED"), (EVENTS, "SUBSCRIBED")}
    dev = hub.call("GET", f"{PREFS}/status/email/dev@example.org").json()
    assert dev["subscriptionStatuses"] == []
    eve = hub.call("GET", f"{PREFS}/status/email/eve@example.com").json()["subscriptionStatuses"]
    assert {(s["status"], s["sourceOfStatus"]) for s in eve} == {("NOT_SUBSCRIBED", "PORTAL_WIDE_STATUS")} and len(eve) == 2


def test_status_of_unknown_email_is_404_or_empty_by_variant(hub: Hub) -> None:
    body = error_of(hub.call("GET", f"{PREFS}/status/email/ghost@example.com"), 404, "OBJECT_NOT_FOUND")
    assert "either has no subscriptions" in body["message"] and body["requestId"]
    with Sandbox(small_seed(), options=SandboxOptions(variants={"hubspot_status_unknown_email": "empty"})) as box:
        empty = Hub(box).call("GET", f"{PREFS}/status/email/ghost@example.com")
        assert empty.status_code == 200 and empty.json() == {"recipient": "ghost@example.com", "subscriptionStatuses": []}


def test_unsubscribe_then_repeat_is_400_already_unsubscribed(hub: Hub, sandbox: Sandbox) -> None:
    body = {"emailAddress": "bob@example.com", "subscriptionId": EVENTS, "legalBasis": "LEGITIMATE_INTEREST_OTHER",
            "legalBasisExplanation": "Handed over to the branch"}
    first = hub.call("POST", f"{PREFS}/unsubscribe", body)
    assert first.status_code == 200
    assert first.json()["status"] == "NOT_SUBSCRIBED" and first.json()["id"] == EVENTS
    assert first.json()["legalBasis"] == "LEGITIMATE_INTEREST_OTHER"
    repeat = error_of(hub.call("POST", f"{PREFS}/unsubscribe", body), 400, "VALIDATION_ERROR")
    assert repeat["message"] == f"bob@example.com is already unsubscribed from subscription {EVENTS}"
    assert sandbox.hubspot.subscription_status("bob@example.com", EVENTS) == "NOT_SUBSCRIBED"


def test_already_unsubscribed_wording_variant() -> None:
    with Sandbox(small_seed(), options=SandboxOptions(variants={"hubspot_already_unsubscribed_wording": "to"})) as box:
        body = Hub(box).call("POST", f"{PREFS}/unsubscribe", {"emailAddress": "cora@example.org", "subscriptionId": MARKETING})
        assert body.json()["message"] == f"cora@example.org is already unsubscribed to subscription {MARKETING}"


def test_subscribe_rules(hub: Hub) -> None:
    ok = hub.call("POST", f"{PREFS}/subscribe", {"emailAddress": "dev@example.org", "subscriptionId": MARKETING})
    assert ok.status_code == 200 and ok.json()["status"] == "SUBSCRIBED"
    again = error_of(hub.call("POST", f"{PREFS}/subscribe", {"emailAddress": "dev@example.org", "subscriptionId": MARKETING}),
                     400, "VALIDATION_ERROR")
    assert again["message"] == f"dev@example.org is already subscribed to subscription {MARKETING}"
    opted_out = error_of(hub.call("POST", f"{PREFS}/subscribe", {"emailAddress": "cora@example.org",
                                                                 "subscriptionId": MARKETING}), 400, "VALIDATION_ERROR")
    assert "cannot be updated because they have unsubscribed" in opted_out["message"]
    error_of(hub.call("POST", f"{PREFS}/subscribe", {"emailAddress": "eve@example.com", "subscriptionId": EVENTS}),
             400, "VALIDATION_ERROR")


@pytest.mark.parametrize("path", ["subscribe", "unsubscribe"])
def test_unknown_email_on_writes_is_404(hub: Hub, path: str) -> None:
    body = error_of(hub.call("POST", f"{PREFS}/{path}", {"emailAddress": "ghost@example.com", "subscriptionId": MARKETING}),
                    404, "OBJECT_NOT_FOUND")
    assert body["message"] == "ghost@example.com either has no subscriptions associated with this portal or does not exist"


def test_invalid_legal_basis_and_gdpr_portal(hub: Hub) -> None:
    error_of(hub.call("POST", f"{PREFS}/unsubscribe", {"emailAddress": "ann@example.com", "subscriptionId": MARKETING,
                                                       "legalBasis": "BECAUSE"}), 400, "VALIDATION_ERROR")
    seed = small_seed()
    seed["hubspot"]["gdpr"] = True
    with Sandbox(seed) as box:
        client = Hub(box)
        bare = {"emailAddress": "ann@example.com", "subscriptionId": MARKETING}
        error_of(client.call("POST", f"{PREFS}/unsubscribe", bare), 400, "VALIDATION_ERROR")
        full = {**bare, "legalBasis": "NON_GDPR", "legalBasisExplanation": "left the programme"}
        assert client.call("POST", f"{PREFS}/unsubscribe", full).status_code == 200


def test_optout_properties_follow_statuses(hub: Hub) -> None:
    names = ("hs_email_optout", f"hs_email_optout_{MARKETING}", f"hs_email_optout_{EVENTS}")
    bob = props_of(hub, "bob@example.com", *names)
    assert [bob[n] for n in names] == ["", "", ""]
    assert props_of(hub, "cora@example.org", *names)[f"hs_email_optout_{MARKETING}"] == "true"
    assert props_of(hub, "cora@example.org", *names)["hs_email_optout"] == ""
    assert props_of(hub, "eve@example.com", *names)["hs_email_optout"] == "true"
    for sid in (MARKETING, EVENTS):
        hub.call("POST", f"{PREFS}/unsubscribe", {"emailAddress": "bob@example.com", "subscriptionId": sid})
    bob = props_of(hub, "bob@example.com", *names)
    assert [bob[n] for n in names] == ["true", "true", "true"]
    found = hub.call("POST", f"{CONTACTS}/search", {"filterGroups": [{"filters": [
        {"propertyName": f"hs_email_optout_{EVENTS}", "operator": "EQ", "value": "true"}]}]}).json()
    assert {r["id"] for r in found["results"]} == {"102", "105"}


def test_optout_unset_null_variant() -> None:
    with Sandbox(small_seed(), options=SandboxOptions(variants={"hubspot_optout_unset": "null"})) as box:
        props = props_of(Hub(box), "dev@example.org", f"hs_email_optout_{MARKETING}", "hs_email_optout")
        assert props[f"hs_email_optout_{MARKETING}"] is None and props["hs_email_optout"] is None


def test_v4_batch_read_and_write(hub: Hub) -> None:
    read = hub.call("POST", f"{V4}/read?channel=EMAIL", {"inputs": ["cora@example.org", "ghost@example.com"]})
    assert read.status_code == 207 and read.json()["errors"][0]["context"] == {"ids": ["ghost@example.com"]}
    statuses = {s["subscriptionId"]: s["status"] for s in read.json()["results"][0]["statuses"]}
    assert statuses == {int(MARKETING): "UNSUBSCRIBED", int(EVENTS): "NOT_SPECIFIED"}
    write = {"inputs": [{"subscriberIdString": "ann@example.com", "channel": "EMAIL", "statusState": "UNSUBSCRIBED",
                         "subscriptionId": int(MARKETING), "legalBasis": "NON_GDPR", "legalBasisExplanation": "x"}]}
    first = hub.call("POST", f"{V4}/write", write)
    assert first.status_code == 200
    assert first.json()["results"][0]["setStatusSuccessReason"] == "REQUESTED_CHANGE_OCCURRED"
    assert hub.call("POST", f"{V4}/write", write).json()["results"][0]["setStatusSuccessReason"] == "NO_STATUS_CHANGE"
    # Unlike v3, v4 re-subscribes an opt-out (reference, facts added after review)
    resubscribe = {"inputs": [{**write["inputs"][0], "statusState": "SUBSCRIBED"}]}
    again = hub.call("POST", f"{V4}/write", resubscribe)
    assert again.status_code == 200 and again.json()["results"][0]["status"] == "SUBSCRIBED"
    assert again.json()["results"][0]["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED"
    error_of(hub.call("POST", f"{V4}/read", {"inputs": ["ann@example.com"]}), 400, "VALIDATION_ERROR")
    error_of(hub.call("POST", f"{V4}/read?channel=EMAIL", {"inputs": ["a@example.com"] * 101}), 400, "VALIDATION_ERROR")


# ----- rate limits ----------------------------------------------------------------------------------


def test_rolling_window_refuses_after_the_limit_then_recovers() -> None:
    window = 2.0
    options = SandboxOptions(rate_limits=True, hubspot_limit=100, hubspot_window_seconds=window)
    with Sandbox(small_seed(), options=options) as box:
        client = Hub(box)
        started = time.monotonic()
        replies, sent_at = [], []
        for _ in range(300):
            sent_at.append(time.monotonic() - started)
            replies.append(client.call("GET", "/crm/v3/lists/719"))
        statuses = [r.status_code for r in replies]
        assert statuses[:100] == [200] * 100 and sent_at[100] < window
        assert [r.headers["X-HubSpot-RateLimit-Remaining"] for r in replies[:100]] == [str(99 - i) for i in range(100)]
        # Every request after the 100th sent within the window (which began with the first) is refused.
        within = [status for status, at in zip(statuses[100:], sent_at[100:]) if at < window]
        assert within and set(within) == {429}
        refusal = replies[100]
        body = refusal.json()
        assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT"
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert body["correlationId"] == refusal.headers["X-HubSpot-Correlation-Id"]
        assert refusal.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert refusal.headers["X-HubSpot-RateLimit-Max"] == "100"
        assert refusal.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == str(int(window * 1000))
        assert "Retry-After" not in refusal.headers
        # Rolling: once the 100th success (answered before sent_at[100]) is a window old, all have expired.
        time.sleep(max(0.0, sent_at[100] + window - (time.monotonic() - started)) + 0.05)
        again = client.call("GET", "/crm/v3/lists/719")
        assert again.status_code == 200 and again.headers["X-HubSpot-RateLimit-Remaining"] == "99"


def test_search_is_limited_per_second_without_headers() -> None:
    with Sandbox(small_seed(), options=SandboxOptions(rate_limits=True)) as box:
        client = Hub(box)
        replies = [client.call("POST", f"{CONTACTS}/search", {}) for _ in range(8)]
        statuses = [r.status_code for r in replies]
        assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
        refusal = replies[statuses.index(429)]
        assert refusal.json()["policyName"] == "SECONDLY"
        assert refusal.json()["message"] == "You have reached your secondly limit."
        assert not [h for h in refusal.headers if h.lower().startswith("x-hubspot-ratelimit")]
        # Searches are exempt from the ten-secondly window.
        assert client.call("GET", "/crm/v3/lists/719").headers["X-HubSpot-RateLimit-Remaining"] == "99"


def test_daily_limit_answers_daily_429() -> None:
    options = SandboxOptions(rate_limits=True, hubspot_daily_limit=3)
    with Sandbox(small_seed(), options=options) as box:
        client = Hub(box)
        replies = [client.call("GET", "/crm/v3/lists/719") for _ in range(4)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429]
        assert replies[2].headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
        body = replies[3].json()
        assert body["policyName"] == "DAILY" and body["message"] == "You have reached your daily limit."
        assert body["requestId"] and body["errorType"] == "RATE_LIMIT"


def test_retry_after_variant() -> None:
    options = SandboxOptions(rate_limits=True, hubspot_limit=2, variants={"hubspot_429_retry_after": True})
    with Sandbox(small_seed(), options=options) as box:
        client = Hub(box)
        replies = [client.call("GET", "/crm/v3/lists/719") for _ in range(3)]
        assert replies[2].status_code == 429 and 1 <= int(replies[2].headers["Retry-After"]) <= 10


# ----- scale ----------------------------------------------------------------------------------------


def test_100k_contacts_and_members_load_under_10_seconds(tmp_path: Any) -> None:
    contacts = [{"id": str(200000 + i), "email": f"c{i}@example.com",
                 "properties": {"firstname": f"F{i}", "lastname": "L"}, "subscribed": [MARKETING]}
                for i in range(100_000)]
    seed = {"hubspot": {"token": HUBSPOT_TOKEN, "subscriptions": [{"id": MARKETING, "name": "M"}],
                        "contacts": contacts,
                        "lists": [{"id": "1", "name": "All", "members": [c["id"] for c in contacts]}]}}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(seed))
    from reconciler.sandbox.seed import load_seed

    started = time.perf_counter()
    box = Sandbox(load_seed(path))
    loaded = time.perf_counter() - started
    print(f"\nscale: 100,000 HubSpot contacts + 100,000 list members loaded from a JSON seed in {loaded:.2f} s")
    assert loaded < 10.0
    with box:
        client = Hub(box)
        started = time.perf_counter()
        after, count = None, 0
        while True:
            body = client.call("GET", "/crm/v3/lists/1/memberships", limit=250, **({"after": after} if after else {})).json()
            count += len(body["results"])
            after = body.get("paging", {}).get("next", {}).get("after")
            if after is None:
                break
        print(f"scale: read 100,000 memberships in 400 pages of 250 in {time.perf_counter() - started:.2f} s")
        assert count == 100_000


def test_search_sorts_by_a_property_with_mixed_values(hub: Hub) -> None:
    hub.call("PATCH", f"{CONTACTS}/103", {"properties": {"region": "12"}})
    body = hub.call("POST", f"{CONTACTS}/search", {"sorts": [{"propertyName": "region", "direction": "DESCENDING"}],
                                                   "properties": ["region"]}).json()
    assert [r["properties"]["region"] for r in body["results"]] == ["south", "12", None, None, None]
    ascending = hub.call("POST", f"{CONTACTS}/search", {"sorts": ["region"], "properties": ["region"]}).json()
    assert [r["id"] for r in ascending["results"]][:2] == ["103", "102"]
