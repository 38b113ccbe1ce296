"""The sandbox's Mailchimp responses, for every operation it serves, validated against Mailchimp's
OpenAPI file (MAILCHIMP_OPENAPI, default ../shared/specs/mailchimp/marketing-api.json).

Skips, saying why, when the file is absent: it is shared reference material, never copied here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from mailchimp_client import LIST, Client, make_client, seed, stop_sandboxes  # noqa: F401 (autouse fixture)
from reconciler.sandbox.mailchimp import ROUTES

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = Path(os.environ.get("MAILCHIMP_OPENAPI", REPO.parent / "shared" / "specs" / "mailchimp" / "marketing-api.json"))
SPEC_URI = "urn:mailchimp-marketing-api"
MEMBERS = f"/3.0/lists/{LIST}/members"


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def spec_path(route: str) -> str:
    """`/3.0/lists/{list_id}/members/{subscriber_hash}` -> the file's `/lists/{listId}/members/{subscriberHash}`."""
    path = route[len("/3.0"):] or "/"
    return re.sub(r"\{(\w+)\}", lambda m: "{" + re.sub(r"_(\w)", lambda c: c.group(1).upper(), m.group(1)) + "}", path)


def openapi_to_jsonschema(node: Any, fixes: list[str]) -> Any:
    """OpenAPI 3.0 schema objects as draft-4 JSON Schema: `nullable` becomes a null type.

    One known defect of the flattened file is relaxed, and counted in `fixes`: member
    `merge_fields` values are typed `object`, while Mailchimp documents strings, numbers and
    address objects (reference §4), so any value is allowed there.
    """
    if isinstance(node, list):
        return [openapi_to_jsonschema(item, fixes) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_jsonschema(value, fixes) for key, value in node.items()}
    if out.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    merge = out.get("properties", {}).get("merge_fields") if isinstance(out.get("properties"), dict) else None
    if isinstance(merge, dict) and merge.get("additionalProperties", {}).get("type") == "object":
        merge["additionalProperties"] = {}
        fixes.append("merge_fields")
    return out


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        pytest.skip(f"Mailchimp OpenAPI file not found at {SPEC_PATH} (set MAILCHIMP_OPENAPI to its path)")
    fixes: list[str] = []
    document = openapi_to_jsonschema(json.loads(SPEC_PATH.read_text(encoding="utf-8")), fixes)
    assert fixes, "the merge_fields relaxation no longer applies; drop it from openapi_to_jsonschema"
    return document


@pytest.fixture(scope="module")
def registry(spec: dict[str, Any]) -> Registry:
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4))


def response_schema(spec: dict[str, Any], method: str, route: str, status: int, content_type: str) -> dict[str, Any] | None:
    """The schema the file gives this answer (None for an empty 204), failing if it gives none."""
    path = spec_path(route)
    assert path in spec["paths"], f"{path} is not in the OpenAPI file"
    operation = spec["paths"][path].get(method.lower())
    assert operation is not None, f"{method} {path} is not an operation of the OpenAPI file"
    responses = operation["responses"]
    answer = responses.get(str(status)) or (responses.get("default") if status >= 400 else None)
    assert answer is not None, f"{method} {path} has no response {status} in the OpenAPI file (has {sorted(responses)})"
    content = answer.get("content") or {}
    if not content:
        return None
    media = content_type.split(";")[0].strip()
    assert media in content, f"{method} {path} {status}: content type {media} not among {sorted(content)}"
    pointer = "/".join(["#/paths", path.replace("~", "~0").replace("/", "~1"), method.lower(), "responses",
                        str(status) if str(status) in responses else "default", "content", media.replace("/", "~1"), "schema"])
    return {"$ref": SPEC_URI + pointer}


def check(spec: dict[str, Any], registry: Registry, reply: Any, method: str, route: str, status: int, checked: set[tuple[str, str]]) -> Any:
    assert reply.status == status, reply.raw[:500]
    schema = response_schema(spec, method, route, status, reply.headers.get("Content-Type", "application/json"))
    if schema is None:
        assert reply.raw == b""
    else:
        errors = sorted(Draft4Validator(schema, registry=registry).iter_errors(reply.body), key=lambda e: list(e.path))
        assert not errors, f"{method} {route} {status}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    checked.add((method, route))
    return reply.body


def test_every_served_operation_matches_the_openapi_file(spec: dict[str, Any], registry: Registry) -> None:
    mc: Client = make_client(seed())
    checked: set[tuple[str, str]] = set()
    member = f"{MEMBERS}/{{subscriber_hash}}".replace(MEMBERS, "/3.0/lists/{list_id}/members")
    segment = "/3.0/lists/{list_id}/segments/{segment_id}"
    ann, bob = md5("ann@example.com"), md5("bob@example.com")

    def ok(method: str, route: str, path: str, status: int = 200, **kw: Any) -> Any:
        return check(spec, registry, mc.request(method, path, **kw), method, route, status, checked)

    ok("GET", "/3.0/", "/3.0/")
    ok("GET", "/3.0/ping", "/3.0/ping")
    ok("GET", "/3.0/lists/{list_id}", f"/3.0/lists/{LIST}")
    ok("GET", "/3.0/lists", "/3.0/lists", params={"count": 5, "sort_field": "date_created", "sort_dir": "DESC"})
    ok("GET", "/3.0/lists/{list_id}/merge-fields", f"/3.0/lists/{LIST}/merge-fields")
    for params in ({}, {"status": "archived"}, {"count": 2, "offset": 1, "fields": "members.email_address,total_items"}):
        ok("GET", "/3.0/lists/{list_id}/members", MEMBERS, params=params)
    ok("POST", "/3.0/lists/{list_id}/members", MEMBERS, json={"email_address": "post@example.com", "status": "pending", "merge_fields": {"LNAME": "P"}, "tags": ["T"]})
    ok("GET", member, f"{MEMBERS}/{ann}")
    ok("PUT", member, f"{MEMBERS}/{md5('new@example.com')}", json={"email_address": "new@example.com", "status_if_new": "subscribed", "merge_fields": {"LNAME": "N"}})
    ok("PATCH", member, f"{MEMBERS}/{ann}", json={"merge_fields": {"FNAME": "Annie", "REGION": "North"}})
    ok("POST", member + "/tags", f"{MEMBERS}/{ann}/tags", 204, json={"tags": [{"name": "Alumni", "status": "active"}]})
    ok("GET", member + "/tags", f"{MEMBERS}/{ann}/tags")
    ok("DELETE", member, f"{MEMBERS}/{md5('dana@example.com')}", 204)
    ok("POST", member + "/actions/delete-permanent", f"{MEMBERS}/{md5('eve@example.org')}/actions/delete-permanent", 204)
    batch = ok("POST", "/3.0/lists/{list_id}", f"/3.0/lists/{LIST}", json={
        "members": [
            {"email_address": "b1@example.com", "status": "subscribed", "merge_fields": {"LNAME": "B"}},
            {"email_address": "ann@example.com", "status": "subscribed"},
            {"email_address": "bob@example.com", "status": "subscribed"},
            {"email_address": "nope", "status": "subscribed"},
        ],
        "update_existing": True,
    })
    assert batch["total_created"] == 1 and batch["total_updated"] == 1 and batch["error_count"] == 2
    ok("GET", "/3.0/lists/{list_id}/segments", f"/3.0/lists/{LIST}/segments", params={"type": "static"})
    created = ok("POST", "/3.0/lists/{list_id}/segments", f"/3.0/lists/{LIST}/segments", json={"name": "Fresh", "static_segment": ["ann@example.com"]})
    ok("GET", segment, f"/3.0/lists/{LIST}/segments/{created['id']}")
    bulk = ok("POST", segment, f"/3.0/lists/{LIST}/segments/{created['id']}", json={"members_to_add": ["b1@example.com", "ghost@example.com"], "members_to_remove": ["ann@example.com"]})
    assert bulk["total_added"] == 1 and bulk["total_removed"] == 1 and bulk["error_count"] == 1
    ok("GET", segment + "/members", f"/3.0/lists/{LIST}/segments/{created['id']}/members")
    ok("GET", "/3.0/lists/{list_id}/tag-search", f"/3.0/lists/{LIST}/tag-search", params={"name": "Re"})

    # error answers are the file's ProblemDetailDocument
    ok("GET", member, f"{MEMBERS}/{md5('ghost@example.com')}", 404)
    ok("PUT", member, f"{MEMBERS}/{bob}", 400, json={"email_address": "bob@example.com", "status": "subscribed"})
    ok("PATCH", member, f"{MEMBERS}/{ann}", 400, json={"merge_fields": {"NOPE": 1}})
    refused = ok("DELETE", member, f"{MEMBERS}/{md5('dana@example.com')}", 405)  # archived already
    assert refused["title"] == "Method Not Allowed" and "bounced, pending or archived" in refused["detail"]
    unsubscribed = ok("PATCH", member, f"{MEMBERS}/{ann}", json={"status": "unsubscribed"})
    assert unsubscribed["unsubscribe_reason"] == "N/A (Unsubscribed by admin)"
    ok("GET", "/3.0/ping", "/3.0/ping", 401, auth=None)
    ok("GET", "/3.0/lists/{list_id}/members", MEMBERS, 400, params={"count": 5000})

    served = {(method, route) for method, route, _ in ROUTES}
    assert served - checked == set(), f"operations served but not validated: {sorted(served - checked)}"
