"""Contract tests of the sandbox's Mailchimp emulator: shapes, paging, limits, errors, auth,
compliance refusals and idempotent repeats, as the reference sheet describes the vendor.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from typing import Any

import pytest
import requests

from reconciler.sandbox.http import Request, SandboxOptions
from reconciler.sandbox.mailchimp import MailchimpApi
from reconciler.sandbox.mailchimp_state import MailchimpState
from reconciler.sandbox.server import Sandbox
from mailchimp_client import KEY, LIST, Client, make_client, seed, stop_sandboxes  # noqa: F401 (autouse fixture)

MEMBERS = f"/3.0/lists/{LIST}/members"


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def assert_problem(reply: Any, status: int, title: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    body = reply.body
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["title"] == title and body["status"] == status
    assert body["instance"] and reply.headers["X-Request-Id"] == body["instance"]
    return body


@pytest.fixture
def mc() -> Client:
    return make_client(seed())


# -- health, auth ------------------------------------------------------------------------------


def test_ping_and_root(mc: Client) -> None:
    reply = mc.get("/3.0/ping")
    assert reply.status == 200 and reply.body == {"health_status": "Everything's Chimpy!"}
    assert reply.headers["Content-Type"].startswith("application/json")
    root = mc.get("/3.0/").body
    assert root["account_name"] and root["total_subscribers"] == 3


def test_missing_key_is_401(mc: Client) -> None:
    body = assert_problem(mc.get("/3.0/ping", auth=None), 401, "API Key Missing")
    assert "did not include an API key" in body["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + base64.b64encode(b"anyone:wrongkey-us1").decode(),
        "Basic " + base64.b64encode(b"anyone:sandboxkey-us2").decode(),
        "Bearer sandboxkey-us2",
        "apikey sandboxkey-us1",
        "Basic not-base64!",
    ],
)
def test_wrong_key_is_401(mc: Client, authorization: str) -> None:
    body = assert_problem(mc.get("/3.0/ping", auth=None, headers={"Authorization": authorization}), 401, "API Key Invalid")
    assert "wrong datacenter" in body["detail"]


def test_basic_with_any_username_and_bearer_are_accepted(mc: Client) -> None:
    for authorization in ("Basic " + base64.b64encode(f"whoever:{KEY}".encode()).decode(), f"Bearer {KEY}"):
        assert mc.get("/3.0/ping", auth=None, headers={"Authorization": authorization}).status == 200


def test_host_naming_another_data_centre_is_401(mc: Client) -> None:
    assert_problem(mc.get("/3.0/ping", headers={"Host": "us6.api.mailchimp.com"}), 401, "API Key Invalid")
    assert mc.get("/3.0/ping", headers={"Host": "us1.api.mailchimp.com"}).status == 200
    assert mc.get("/3.0/ping", headers={"Host": "localhost:8025"}).status == 200


# -- audience, merge fields --------------------------------------------------------------------


def test_list_has_double_optin_and_stats(mc: Client) -> None:
    body = mc.get(f"/3.0/lists/{LIST}").body
    assert body["id"] == LIST and body["double_optin"] is True and body["name"] == "Main"
    stats = body["stats"]
    assert (stats["member_count"], stats["unsubscribe_count"], stats["cleaned_count"]) == (3, 1, 1)
    assert_problem(mc.get("/3.0/lists/nosuchlist"), 404, "Resource Not Found")


def test_merge_fields_shape(mc: Client) -> None:
    body = mc.get(f"/3.0/lists/{LIST}/merge-fields").body
    assert body["total_items"] == 3 and body["list_id"] == LIST
    tags = {f["tag"]: f for f in body["merge_fields"]}
    assert tags["FNAME"]["type"] == "text" and tags["REGION"]["options"]["choices"] == ["North", "South"]
    assert tags["LNAME"]["required"] is True and isinstance(tags["FNAME"]["merge_id"], int)


# -- members collection ------------------------------------------------------------------------


def test_members_page_to_the_last_page() -> None:
    emails = [f"user{i:03d}@example.com" for i in range(25)]
    mc = make_client(seed(members=[{"email": e, "status": "subscribed"} for e in emails]))
    seen: list[str] = []
    sizes = []
    for offset in range(0, 40, 10):
        body = mc.get(MEMBERS, params={"count": 10, "offset": offset}).body
        assert body["total_items"] == 25 and body["list_id"] == LIST
        sizes.append(len(body["members"]))
        seen += [m["email_address"] for m in body["members"]]
    assert sizes == [10, 10, 5, 0]
    assert seen == emails  # creation order, nothing skipped or repeated
    assert len(mc.get(MEMBERS).body["members"]) == 10  # count defaults to 10


def test_count_over_1000_is_400_or_clamped_by_variant() -> None:
    body = assert_problem(make_client(seed()).get(MEMBERS, params={"count": 1001}), 400, "Invalid Resource")
    assert body["errors"][0]["field"] == "count"
    clamped = make_client(seed(), SandboxOptions(variants={"mailchimp_count_over_max": "clamp"}))
    assert clamped.get(MEMBERS, params={"count": 1001}).status == 200
    assert_problem(make_client(seed()).get(MEMBERS, params={"count": "ten"}), 400, "Invalid Resource")


def test_member_shape(mc: Client) -> None:
    member = mc.get(f"{MEMBERS}/{md5('Ann@Example.com')}").body
    assert member["id"] == md5("ann@example.com") and member["email_address"] == "ann@example.com"
    assert member["status"] == "subscribed" and member["list_id"] == LIST
    assert member["merge_fields"] == {"FNAME": "Ann", "LNAME": "Lee", "REGION": ""}
    assert member["full_name"] == "Ann Lee" and isinstance(member["web_id"], int)
    assert member["tags"] == [{"id": member["tags"][0]["id"], "name": "Recruitment"}] and member["tags_count"] == 1
    for name in ("unique_email_id", "contact_id", "email_type", "stats", "ip_signup", "timestamp_signup", "last_changed", "_links"):
        assert name in member
    by_contact = mc.get(f"{MEMBERS}/{member['contact_id']}").body
    assert by_contact["id"] == member["id"]


def test_fields_and_exclude_fields(mc: Client) -> None:
    fields = "members.email_address,members.status,total_items"
    body = mc.get(MEMBERS, params={"fields": fields}).body
    assert set(body) == {"members", "total_items"}
    assert all(set(m) == {"email_address", "status"} for m in body["members"])
    nested = mc.get(MEMBERS, params={"fields": "members.merge_fields.FNAME"}).body
    assert nested["members"][0] == {"merge_fields": {"FNAME": "Ann"}}
    excluded = mc.get(MEMBERS, params={"exclude_fields": "members._links,members.merge_fields,_links"}).body
    assert "_links" not in excluded and "merge_fields" not in excluded["members"][0] and "email_address" in excluded["members"][0]
    assert_problem(mc.get(MEMBERS, params={"fields": "total_items", "exclude_fields": "_links"}), 400, "Bad Request")
    assert_problem(mc.get(MEMBERS, params={"fields": "members.no_such_field"}), 400, "Bad Request")
    one = mc.get(f"{MEMBERS}/ann@example.com", params={"fields": "email_address,unsubscribe_reason,merge_fields.LNAME"}).body
    assert one == {"email_address": "ann@example.com", "merge_fields": {"LNAME": "Lee"}}
    assert_problem(mc.get(f"{MEMBERS}/ann@example.com", params={"fields": "nope"}), 400, "Bad Request")


def test_status_filter_and_archived_only_with_status_archived(mc: Client) -> None:
    def emails(**params: Any) -> set[str]:
        return {m["email_address"] for m in mc.get(MEMBERS, params={"count": 1000, **params}).body["members"]}

    assert emails(status="unsubscribed") == {"bob@example.com"}
    assert emails(status="cleaned") == {"carl@example.com"}
    assert "arch@example.com" not in emails()
    assert emails(status="archived") == {"arch@example.com"}
    assert mc.get(MEMBERS).body["total_items"] == 5
    assert_problem(mc.get(MEMBERS, params={"status": "subscribed,unsubscribed"}), 400, "Invalid Resource")
    wide = make_client(seed(), SandboxOptions(variants={"mailchimp_archived_in_unfiltered_list": True}))
    assert wide.get(MEMBERS).body["total_items"] == 6


def test_since_last_changed_and_unsubscribed_since() -> None:
    old = "2020-01-01T00:00:00+00:00"
    mc = make_client(seed(members=[
        {"email": "ann@example.com", "status": "subscribed", "merge_fields": {"LNAME": "Lee"}, "last_changed": old},
        {"email": "bob@example.com", "status": "unsubscribed", "merge_fields": {"LNAME": "Doe"}, "last_changed": old},
    ]))
    assert mc.patch(f"{MEMBERS}/ann@example.com", json={"status": "unsubscribed"}).status == 200
    since = "2021-01-01T00:00:00+00:00"
    body = mc.get(MEMBERS, params={"since_last_changed": since, "status": "unsubscribed"}).body
    assert [m["email_address"] for m in body["members"]] == ["ann@example.com"]
    assert body["members"][0]["unsubscribe_reason"]
    # offsets count: 23:00-02:00 is after bob's change at 00:00Z, 21:00-02:00 is before it
    assert mc.get(MEMBERS, params={"since_last_changed": "2019-12-31T23:00:00-02:00"}).body["total_items"] == 1
    assert mc.get(MEMBERS, params={"since_last_changed": "2019-12-31T21:00:00-02:00"}).body["total_items"] == 2
    assert mc.get(MEMBERS, params={"before_last_changed": since}).body["total_items"] == 1
    body = mc.get(MEMBERS, params={"unsubscribed_since": since, "status": "unsubscribed"}).body
    assert body["total_items"] == 1
    assert_problem(mc.get(MEMBERS, params={"unsubscribed_since": since}), 400, "Invalid Resource")
    assert_problem(mc.get(MEMBERS, params={"since_last_changed": "yesterday"}), 400, "Invalid Resource")
    later = mc.get(MEMBERS, params={"sort_field": "last_changed", "sort_dir": "DESC", "count": 1}).body
    assert later["members"][0]["email_address"] == "ann@example.com"


# -- one member: read, upsert, update ----------------------------------------------------------


def test_get_member_by_hash_and_by_email_and_404(mc: Client) -> None:
    assert mc.get(f"{MEMBERS}/{md5('bob@example.com')}").body["status"] == "unsubscribed"
    assert mc.get(f"{MEMBERS}/bob@example.com").body["id"] == md5("bob@example.com")
    body = assert_problem(mc.get(f"{MEMBERS}/{md5('nobody@example.com')}"), 404, "Resource Not Found")
    assert body["detail"] == "The requested resource could not be found."


def test_put_status_if_new_creates_then_is_idempotent(mc: Client) -> None:
    url = f"{MEMBERS}/{md5('new@example.com')}"
    payload = {"email_address": "new@example.com", "status_if_new": "pending", "merge_fields": {"FNAME": "New", "LNAME": "One"}}
    first = mc.put(url, json=payload)
    assert first.status == 200 and first.body["status"] == "pending" and first.mutated is True
    second = mc.put(url, json=payload)
    assert second.status == 200 and second.body == first.body and second.mutated is False
    assert mc.get(url).body["merge_fields"]["FNAME"] == "New"


def test_status_if_new_is_ignored_for_existing_members(mc: Client) -> None:
    reply = mc.put(f"{MEMBERS}/bob@example.com", json={"email_address": "bob@example.com", "status_if_new": "subscribed", "merge_fields": {"FNAME": "Robert"}})
    assert reply.status == 200
    assert reply.body["status"] == "unsubscribed" and reply.body["merge_fields"]["FNAME"] == "Robert"
    assert reply.body["merge_fields"]["LNAME"] == "Doe"  # per-key merge, not replace


def test_status_overwrites_and_compliance_refuses_resubscribe(mc: Client) -> None:
    # bob@ is a seeded unsubscribe (by himself, the default), carl@ is cleaned
    for email in ("bob@example.com", "carl@example.com"):
        for method in ("put", "patch"):
            reply = getattr(mc, method)(f"{MEMBERS}/{md5(email)}", json={"email_address": email, "status": "subscribed"})
            body = assert_problem(reply, 400, "Member In Compliance State")
            assert body["detail"].startswith(email) and "cannot be subscribed" in body["detail"]
        assert mc.get(f"{MEMBERS}/{md5(email)}").body["status"] != "subscribed"
    # pending (a confirmation email) is the allowed way back
    assert mc.patch(f"{MEMBERS}/bob@example.com", json={"status": "pending"}).body["status"] == "pending"
    unsubscribed = mc.patch(f"{MEMBERS}/ann@example.com", json={"status": "unsubscribed"}).body
    assert unsubscribed["status"] == "unsubscribed" and unsubscribed["unsubscribe_reason"] == "N/A (Unsubscribed by admin)"
    # unsubscribed through the API: Mailchimp lets the API subscribe it again
    assert mc.put(f"{MEMBERS}/ann@example.com", json={"email_address": "ann@example.com", "status": "subscribed"}).body["status"] == "subscribed"


def test_put_create_without_any_status_is_400(mc: Client) -> None:
    body = assert_problem(mc.put(f"{MEMBERS}/x@example.com", json={"email_address": "x@example.com"}), 400, "Invalid Resource")
    assert body["errors"][0]["field"] == "status_if_new"
    assert_problem(mc.put(f"{MEMBERS}/x@example.com", json={"status_if_new": "subscribed"}), 400, "Invalid Resource")


def test_put_hash_mismatch_and_fake_email(mc: Client) -> None:
    wrong = md5("Ann@Example.com".upper() + "x")
    assert_problem(mc.put(f"{MEMBERS}/{wrong}", json={"email_address": "ann@example.com", "status_if_new": "subscribed"}), 400, "Member Exists")
    body = assert_problem(mc.put(f"{MEMBERS}/nope", json={"email_address": "not-an-email", "status_if_new": "subscribed"}), 400, "Invalid Resource")
    assert "looks fake or invalid" in body["detail"]


def test_post_member_and_member_exists(mc: Client) -> None:
    created = mc.post(MEMBERS, json={"email_address": "fresh@example.com", "status": "subscribed", "merge_fields": {"LNAME": "F"}, "tags": ["Vip"]})
    assert created.status == 200 and [t["name"] for t in created.body["tags"]] == ["Vip"]
    body = assert_problem(mc.post(MEMBERS, json={"email_address": "fresh@example.com", "status": "subscribed", "merge_fields": {"LNAME": "F"}}), 400, "Member Exists")
    assert "Use PUT to insert or update list members" in body["detail"]


def test_patch_rules(mc: Client) -> None:
    assert_problem(mc.patch(f"{MEMBERS}/{md5('ghost@example.com')}", json={"status": "unsubscribed"}), 404, "Resource Not Found")
    assert_problem(mc.patch(f"{MEMBERS}/ann@example.com", json={"status": "transactional"}), 400, "Invalid Resource")
    assert_problem(mc.patch(f"{MEMBERS}/ann@example.com", json={"status": "archived"}), 400, "Invalid Resource")
    same = mc.patch(f"{MEMBERS}/ann@example.com", json={"status": "subscribed"})
    assert same.status == 200 and same.mutated is False


def test_merge_field_validation() -> None:
    mc = make_client(seed())
    body = assert_problem(mc.put(f"{MEMBERS}/q@example.com", json={"email_address": "q@example.com", "status_if_new": "subscribed", "merge_fields": {"FNAME": "Q"}}), 400, "Invalid Resource")
    assert body["errors"] == [{"field": "LNAME", "message": "Please enter a value"}]
    skipped = mc.put(f"{MEMBERS}/q@example.com", params={"skip_merge_validation": "true"}, json={"email_address": "q@example.com", "status_if_new": "subscribed"})
    assert skipped.status == 200
    body = assert_problem(mc.patch(f"{MEMBERS}/q@example.com", json={"merge_fields": {"NOPE": "x", "REGION": "East", "FNAME": 3}}), 400, "Invalid Resource")
    assert {e["field"] for e in body["errors"]} == {"merge_fields.NOPE", "merge_fields.REGION", "merge_fields.FNAME"}
    lax = make_client(seed(), SandboxOptions(variants={"mailchimp_unknown_merge_fields": "ignore"}))
    assert lax.patch(f"{MEMBERS}/ann@example.com", json={"merge_fields": {"NOPE": "x"}}).status == 200


def test_malformed_json_is_400(mc: Client) -> None:
    assert_problem(mc.request("PUT", f"{MEMBERS}/ann@example.com", data=b"{not json"), 400, "JSON Parse Exception")


# -- archive, restore, permanent delete --------------------------------------------------------


def test_delete_archives_and_a_repeat_is_405(mc: Client) -> None:
    url = f"{MEMBERS}/{md5('ann@example.com')}"
    first = mc.delete(url)
    assert first.status == 204 and first.raw == b"" and first.mutated is True
    assert mc.get(url).body["status"] == "archived"
    body = assert_problem(mc.delete(url), 405, "Method Not Allowed")
    assert body["detail"] == "This list member cannot be removed. Can not archive a contact that is bounced, pending or archived"
    assert mc.get(url).body["status"] == "archived"
    assert_problem(mc.delete(f"{MEMBERS}/{md5('ghost@example.com')}"), 404, "Resource Not Found")
    for variant, status in (("204", 204), ("404", 404)):
        kind = make_client(seed(), SandboxOptions(variants={"mailchimp_delete_archived": variant}))
        assert kind.delete(url).status == 204
        again = kind.delete(url)
        assert again.status == status and again.mutated is False


def test_delete_of_pending_and_cleaned_is_405_and_unsubscribed_archives(mc: Client) -> None:
    mc.put(f"{MEMBERS}/pat@example.com", json={"email_address": "pat@example.com", "status_if_new": "pending", "merge_fields": {"LNAME": "P"}})
    for email in ("pat@example.com", "carl@example.com"):
        reply = mc.delete(f"{MEMBERS}/{email}")
        assert "bounced, pending or archived" in assert_problem(reply, 405, "Method Not Allowed")["detail"]
        assert reply.mutated is False
    assert mc.delete(f"{MEMBERS}/bob@example.com").status == 204
    strict = make_client(seed(), SandboxOptions(variants={"mailchimp_delete_compliance_405": True}))
    body = assert_problem(strict.delete(f"{MEMBERS}/bob@example.com"), 405, "Method Not Allowed")
    assert body["detail"] == "This list member cannot be removed.  Please contact support."
    assert strict.delete(f"{MEMBERS}/ann@example.com").status == 204


def test_restoring_archived_members(mc: Client) -> None:
    # arch@ was subscribed before its archive: an explicit status restores it
    assert mc.put(f"{MEMBERS}/arch@example.com", json={"email_address": "arch@example.com", "status": "subscribed"}).body["status"] == "subscribed"
    # bob@ unsubscribed himself (a seeded unsubscribe): archived, he cannot come back as subscribed
    assert mc.delete(f"{MEMBERS}/bob@example.com").status == 204
    reply = mc.put(f"{MEMBERS}/bob@example.com", json={"email_address": "bob@example.com", "status": "subscribed"})
    assert_problem(reply, 400, "Member In Compliance State")
    # status_if_new alone does not unarchive (reference, facts added after review): no refusal, no change
    kept = mc.put(f"{MEMBERS}/bob@example.com", json={"email_address": "bob@example.com", "status_if_new": "subscribed"})
    assert kept.status == 200 and kept.body["status"] == "archived" and kept.mutated is False
    assert mc.get(f"{MEMBERS}/bob@example.com").body["status"] == "archived"
    back = mc.patch(f"{MEMBERS}/bob@example.com", json={"status": "unsubscribed"}).body
    assert back["status"] == "unsubscribed" and back["unsubscribe_reason"] == ""  # still his own unsubscribe
    assert_problem(mc.patch(f"{MEMBERS}/bob@example.com", json={"status": "subscribed"}), 400, "Member In Compliance State")


def test_status_if_new_unarchive_variant() -> None:
    for unarchives, expected in ((True, "subscribed"), (False, "archived"), (None, "archived")):
        variants = {} if unarchives is None else {"mailchimp_status_if_new_unarchives": unarchives}  # None: the default
        mc = make_client(seed(), SandboxOptions(variants=variants))
        reply = mc.put(f"{MEMBERS}/arch@example.com", json={"email_address": "arch@example.com", "status_if_new": "subscribed"})
        assert reply.status == 200 and reply.body["status"] == expected


def test_delete_permanent_refuses_reimport(mc: Client) -> None:
    url = f"{MEMBERS}/{md5('ann@example.com')}"
    assert_problem(mc.post(f"{MEMBERS}/ann@example.com/actions/delete-permanent"), 404, "Resource Not Found")
    reply = mc.post(f"{url}/actions/delete-permanent")
    assert reply.status == 204 and reply.mutated is True
    assert_problem(mc.get(url), 404, "Resource Not Found")
    assert_problem(mc.post(f"{url}/actions/delete-permanent"), 404, "Resource Not Found")
    for status in ("subscribed", "pending"):
        body = assert_problem(mc.put(url, json={"email_address": "ann@example.com", "status_if_new": status}), 400, "Forgotten Email Not Subscribed")
        assert "permanently deleted and cannot be re-imported" in body["detail"]
    assert_problem(mc.post(MEMBERS, json={"email_address": "ann@example.com", "status": "subscribed"}), 400, "Forgotten Email Not Subscribed")
    batch = mc.post(f"/3.0/lists/{LIST}", json={"members": [{"email_address": "ann@example.com", "status": "subscribed"}], "update_existing": True}).body
    assert batch["error_count"] == 1 and batch["errors"][0]["error_code"] == "ERROR_GENERIC"
    assert "permanently deleted" in batch["errors"][0]["error"]
    seeded = make_client(seed(permanently_deleted=["gone@example.com"]))
    assert_problem(seeded.put(f"{MEMBERS}/gone@example.com", json={"email_address": "gone@example.com", "status_if_new": "pending"}), 400, "Forgotten Email Not Subscribed")


# -- tags ---------------------------------------------------------------------------------------


def test_member_tags_post_get_and_repeat(mc: Client) -> None:
    url = f"{MEMBERS}/{md5('bob@example.com')}/tags"
    payload = {"tags": [{"name": "Alumni", "status": "active"}, {"name": "Recruitment", "status": "inactive"}]}
    first = mc.post(url, json=payload)
    assert first.status == 204 and first.raw == b"" and first.mutated is True
    second = mc.post(url, json=payload)
    assert second.status == 204 and second.mutated is False
    body = mc.get(url).body
    assert [t["name"] for t in body["tags"]] == ["Alumni"] and body["total_items"] == 1
    assert {"id", "name", "date_added"} <= set(body["tags"][0])
    assert mc.get(f"{MEMBERS}/bob@example.com/tags").body["total_items"] == 1  # GET accepts the email
    assert_problem(mc.post(f"{MEMBERS}/{md5('ghost@example.com')}/tags", json=payload), 404, "Resource Not Found")
    body = assert_problem(mc.post(url, json={"tags": [{"name": "X", "status": "on"}]}), 400, "Invalid Resource")
    assert body["errors"][0]["field"] == "tags.0.status"
    assert mc.post(url, json={"tags": [{"name": "alumni", "status": "inactive"}]}).mutated is True  # names match case-insensitively


# -- batch subscribe ----------------------------------------------------------------------------


def test_batch_subscribe(mc: Client) -> None:
    url = f"/3.0/lists/{LIST}"
    members = [
        {"email_address": "n1@example.com", "status": "subscribed", "merge_fields": {"LNAME": "A"}},
        {"email_address": "ann@example.com", "status": "subscribed", "merge_fields": {"FNAME": "Annie"}},
        {"email_address": "bad-address", "status": "subscribed"},
    ]
    body = mc.post(url, json={"members": members}).body
    assert (body["total_created"], body["total_updated"], body["error_count"]) == (1, 0, 2)
    codes = {e["email_address"]: e["error_code"] for e in body["errors"]}
    assert codes == {"ann@example.com": "ERROR_CONTACT_EXISTS", "bad-address": "ERROR_GENERIC"}
    assert body["new_members"][0]["email_address"] == "n1@example.com"
    again = mc.post(url, json={"members": members[:2] + [{"email_address": "bob@example.com", "status": "subscribed"}], "update_existing": True})
    body = again.body
    assert (body["total_created"], body["total_updated"], body["error_count"]) == (0, 2, 1)
    assert body["errors"][0]["email_address"] == "bob@example.com" and "compliance state" in body["errors"][0]["error"]
    assert mc.get(f"{MEMBERS}/ann@example.com").body["merge_fields"]["FNAME"] == "Annie"
    assert mc.get(f"{MEMBERS}/bob@example.com").body["status"] == "unsubscribed"


def test_batch_subscribe_limit() -> None:
    members = [{"email_address": f"b{i}@example.com", "status": "subscribed", "merge_fields": {"LNAME": "B"}} for i in range(501)]
    body = assert_problem(make_client(seed()).post(f"/3.0/lists/{LIST}", json={"members": members}), 400, "Invalid Resource")
    assert body["errors"][0]["field"] == "members"
    mc = make_client(seed())
    assert mc.post(f"/3.0/lists/{LIST}", json={"members": members[:500]}).body["total_created"] == 500
    truncating = make_client(seed(), SandboxOptions(variants={"mailchimp_batch_over_limit": "truncate"}))
    assert truncating.post(f"/3.0/lists/{LIST}", json={"members": members}).body["total_created"] == 500


# -- segments (tags) ----------------------------------------------------------------------------


def test_segments_create_list_and_page() -> None:
    mc = make_client(seed())
    url = f"/3.0/lists/{LIST}/segments"
    for i in range(12):
        created = mc.post(url, json={"name": f"Tag {i:02d}", "static_segment": ["ann@example.com"] if i == 0 else []})
        assert created.status == 200 and created.body["type"] == "static" and created.mutated is True
    assert_problem(mc.post(url, json={"name": "Tag 00", "static_segment": []}), 400, "Invalid Resource")
    assert_problem(mc.post(url, json={"static_segment": []}), 400, "Invalid Resource")
    names: list[str] = []
    for offset in (0, 10):
        body = mc.get(url, params={"type": "static", "count": 10, "offset": offset}).body
        assert body["total_items"] == 13  # the seeded Recruitment tag plus twelve
        names += [s["name"] for s in body["segments"]]
    assert names[0] == "Recruitment" and len(names) == len(set(names)) == 13
    tag0 = next(s for s in mc.get(url, params={"count": 100}).body["segments"] if s["name"] == "Tag 00")
    assert tag0["member_count"] == 1
    assert mc.get(url, params={"type": "saved"}).body["total_items"] == 0
    assert mc.get(f"{url}/{tag0['id']}").body["name"] == "Tag 00"
    assert_problem(mc.get(f"{url}/999999"), 404, "Resource Not Found")


def test_segment_bulk_add_remove() -> None:
    mc = make_client(seed())
    segments = mc.get(f"/3.0/lists/{LIST}/segments", params={"type": "static"}).body["segments"]
    url = f"/3.0/lists/{LIST}/segments/{segments[0]['id']}"
    body = mc.post(url, json={"members_to_add": ["dana@example.com", "ann@example.com", "ghost@example.com"], "members_to_remove": ["carl@example.com"]}).body
    assert body["total_added"] == 1 and body["members_added"][0]["email_address"] == "dana@example.com"  # ann already tagged
    assert body["total_removed"] == 0 and body["error_count"] == 1
    assert body["errors"] == [{"email_addresses": ["ghost@example.com"], "error": body["errors"][0]["error"]}]
    assert [t["name"] for t in mc.get(f"{MEMBERS}/dana@example.com").body["tags"]] == ["Recruitment"]
    body = mc.post(url, json={"members_to_remove": ["dana@example.com"]}).body
    assert body["total_removed"] == 1 and body["members_removed"][0]["email_address"] == "dana@example.com"
    repeat = mc.post(url, json={"members_to_remove": ["dana@example.com"]})
    assert repeat.body["total_removed"] == 0 and repeat.mutated is False
    too_many = [f"m{i}@example.com" for i in range(501)]
    assert_problem(mc.post(url, json={"members_to_add": too_many}), 400, "Invalid Resource")
    assert mc.post(url, json={"members_to_add": too_many[:500]}).body["error_count"] == 500


# -- routing errors, limits, state --------------------------------------------------------------


def test_unknown_path_404_and_wrong_method_405(mc: Client) -> None:
    assert_problem(mc.get("/3.0/nothing-here"), 404, "Resource Not Found")
    reply = mc.delete(f"/3.0/lists/{LIST}")
    assert_problem(reply, 405, "Method Not Allowed")
    assert "GET" in reply.headers["Allow"]


def test_method_override(mc: Client) -> None:
    reply = mc.post(f"{MEMBERS}/ann@example.com", json={"status": "unsubscribed"}, headers={"X-HTTP-Method-Override": "PATCH"})
    assert reply.status == 200 and reply.body["status"] == "unsubscribed"
    assert_problem(mc.get("/3.0/ping", headers={"X-HTTP-Method-Override": "PATCH"}), 422, "Invalid Method Override")


def test_connection_limit_in_process() -> None:
    api = MailchimpApi(MailchimpState.from_seed(seed()), SandboxOptions(rate_limits=True, mailchimp_max_connections=10))
    header = {"Authorization": f"Bearer {KEY}"}
    held = [Request("GET", "/3.0/ping", headers=_headers(header)) for _ in range(10)]
    assert all(api.admit(r) is None for r in held)
    extra = Request("GET", "/3.0/ping", headers=_headers(header))
    refused = api.admit(extra)
    assert refused is not None and refused.status == 429
    assert refused.body["title"] == "Too Many Requests" and "10 simultaneous connections" in refused.body["detail"]
    assert refused.content_type.startswith("application/problem+json") and "Retry-After" not in refused.headers
    api.release(held[0])
    assert api.admit(extra) is None and api.in_flight() == 10
    for r in held[1:] + [extra]:
        api.release(r)
    assert api.in_flight() == 0
    unlimited = MailchimpApi(MailchimpState.from_seed(seed()), SandboxOptions())
    assert all(unlimited.admit(Request("GET", "/3.0/ping", headers=_headers(header))) is None for _ in range(20))


def _headers(items: dict[str, str]) -> Any:
    from reconciler.sandbox.http import CaseInsensitiveDict

    return CaseInsensitiveDict(items)


def test_error_response_bodies() -> None:
    api = MailchimpApi(MailchimpState.from_seed(seed()))
    for status in (500, 503):
        response = api.error_response(status)
        assert response.status == status and response.body["status"] == status
        assert response.content_type.startswith("application/problem+json") and response.body["title"]


def test_state_round_trip_keeps_members_tags_and_forgotten(mc: Client) -> None:
    mc.post(f"{MEMBERS}/{md5('ann@example.com')}/actions/delete-permanent")
    mc.post(f"{MEMBERS}/{md5('bob@example.com')}/tags", json={"tags": [{"name": "Alumni", "status": "active"}]})
    state = mc.state
    copy = MailchimpState.from_json(state.to_json())
    assert copy.to_json() == state.to_json()
    again = make_client(state=copy, http=False)
    assert again.get(f"{MEMBERS}/bob@example.com").body == mc.get(f"{MEMBERS}/bob@example.com").body
    assert_problem(again.put(f"{MEMBERS}/ann@example.com", json={"email_address": "ann@example.com", "status_if_new": "subscribed"}), 400, "Forgotten Email Not Subscribed")


def test_seed_errors_name_the_entry() -> None:
    with pytest.raises(ValueError, match=r"members\[0\]\.status"):
        MailchimpState.from_seed(seed(members=[{"email": "a@example.com", "status": "gone"}]))
    with pytest.raises(ValueError, match="api_key"):
        MailchimpState.from_seed({"api_key": "nodc", "audiences": []})


def test_concurrent_upserts_are_consistent() -> None:
    mc = make_client(seed())
    errors: list[int] = []

    def work(start: int) -> None:
        for i in range(start, start + 20):
            email = f"t{i}@example.com"
            reply = mc.put(f"{MEMBERS}/{md5(email)}", json={"email_address": email, "status_if_new": "subscribed", "merge_fields": {"LNAME": "T"}})
            if reply.status != 200:
                errors.append(reply.status)

    threads = [threading.Thread(target=work, args=(n * 20,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert mc.get(MEMBERS, params={"status": "subscribed"}).body["total_items"] == 3 + 80


def test_mutated_flag_matches_state_changes_in_process() -> None:
    """The journal replays only requests flagged `mutated`; the in-process client checks each one."""
    mc = make_client(seed(), http=False)
    url = f"{MEMBERS}/{md5('z@example.com')}"
    put = {"email_address": "z@example.com", "status_if_new": "subscribed", "merge_fields": {"LNAME": "Z"}}
    flags = [
        mc.put(url, json=put).mutated,
        mc.put(url, json=put).mutated,
        mc.patch(url, json={"merge_fields": {"FNAME": "Zed"}}).mutated,
        mc.post(f"{url}/tags", json={"tags": [{"name": "New", "status": "active"}]}).mutated,
        mc.post(f"{url}/tags", json={"tags": [{"name": "Gone", "status": "inactive"}]}).mutated,
        mc.delete(url).mutated,
        mc.delete(url).mutated,
        mc.put(f"{MEMBERS}/bob@example.com", json={"email_address": "bob@example.com", "status": "subscribed"}).mutated,
        mc.post(f"/3.0/lists/{LIST}", json={"members": [{"email_address": "ann@example.com", "status": "subscribed"}], "update_existing": True}).mutated,
        mc.post(f"{url}/actions/delete-permanent").mutated,
    ]
    assert flags == [True, False, True, True, False, True, False, False, False, True]


def test_connection_limit_over_http() -> None:
    options = SandboxOptions(rate_limits=True, mailchimp_max_connections=10, latency_ms=1000, variants={"mailchimp_429_retry_after": True})
    mc = make_client(seed(), options)
    assert mc.sandbox is not None
    url = mc.sandbox.base_url + "/3.0/ping"
    replies: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        with requests.Session() as session:
            reply = session.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in replies)
    assert statuses.count(200) >= 10 and statuses.count(429) >= 1 and set(statuses) == {200, 429}
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.json()["title"] == "Too Many Requests" and refused.headers["Retry-After"] == "1"
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert mc.get("/3.0/ping").status == 200 and mc.api.in_flight() == 0


def test_counters_name_the_routes() -> None:
    mc = make_client(seed())
    assert mc.sandbox is not None
    mc.get(MEMBERS)
    mc.put(f"{MEMBERS}/ann@example.com", json={"email_address": "ann@example.com", "status_if_new": "subscribed"})
    counters = mc.sandbox.counters()
    assert counters["GET /3.0/lists/{list_id}/members"] == 1
    assert counters["PUT /3.0/lists/{list_id}/members/{subscriber_hash}"] == 1


def test_state_file_keeps_writes_across_restarts(tmp_path: Any) -> None:
    state_file = str(tmp_path / "state.json")
    first = Sandbox({"mailchimp": seed()}, state_file=state_file).start()
    try:
        with requests.Session() as session:
            base = first.base_url + MEMBERS
            auth = {"Authorization": f"Bearer {KEY}"}
            assert session.patch(f"{base}/ann@example.com", json={"status": "unsubscribed"}, headers=auth).status_code == 200
            assert session.post(f"{base}/{md5('dana@example.com')}/actions/delete-permanent", headers=auth).status_code == 204
            assert session.post(f"{base}/{md5('eve@example.org')}/tags", json={"tags": [{"name": "Kept", "status": "active"}]}, headers=auth).status_code == 204
    finally:
        first.stop()
    expected = first.mailchimp.to_json()
    second = Sandbox(state_file=state_file)
    assert second.mailchimp is not None and second.mailchimp.to_json() == expected
    audience = second.mailchimp.audiences[LIST]
    assert audience.members[md5("ann@example.com")].status == "unsubscribed" and md5("dana@example.com") in audience.forgotten


def test_scale_100k_members_load_and_read() -> None:
    members = [{"email": f"user{i:06d}@example.com", "status": "subscribed", "merge_fields": {"FNAME": "U", "LNAME": str(i)}, "tags": ["Bulk"] if i % 10 == 0 else []} for i in range(100_000)]
    started = time.perf_counter()
    state = MailchimpState.from_seed(seed(members=members))
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    sandbox = Sandbox({"mailchimp": seed(members=members)}).start()
    sandbox_seconds = time.perf_counter() - started
    try:
        fields = "members.id,members.email_address,members.status,members.last_changed,members.merge_fields,total_items"
        seen = 0
        started = time.perf_counter()
        with requests.Session() as session:
            for offset in range(0, 100_000, 1000):
                reply = session.get(sandbox.base_url + MEMBERS, params={"count": 1000, "offset": offset, "fields": fields}, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
                body = reply.json()
                assert reply.status_code == 200 and body["total_items"] == 100_000
                seen += len(body["members"])
        read_seconds = time.perf_counter() - started
    finally:
        sandbox.stop()
    print(f"\nmailchimp scale: MailchimpState.from_seed 100,000 members {load_seconds:.2f} s; "
          f"Sandbox(seed) {sandbox_seconds:.2f} s; 100 pages of 1,000 over HTTP {read_seconds:.2f} s")
    assert seen == 100_000 and len(state.audiences[LIST].members) == 100_000
    assert load_seconds < 10 and sandbox_seconds < 10 and read_seconds < 10
