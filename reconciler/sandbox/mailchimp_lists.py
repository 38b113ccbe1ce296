"""Handlers for the Mailchimp emulator's audience-level resources: the audience, its merge fields,
batch subscribe, and tags seen as static segments. Apart from member handlers to keep both small.
"""

from __future__ import annotations

from typing import Any, Mapping

from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox.http import Request, Response
from reconciler.sandbox.mailchimp_common import audience_of, body_of, flag, ok, paging, partial
from reconciler.sandbox.mailchimp_errors import Problem
from reconciler.sandbox.mailchimp_render import MEMBER_FIELDS, list_json, member_json, merge_field_json, segment_json
from reconciler.sandbox.mailchimp_state import Audience, MailchimpState, Tag, subscriber_hash
from reconciler.sandbox.mailchimp_writes import set_tag_names, write_member

BATCH_LIMIT = 500
SEGMENT_KEYS = ("id", "name", "member_count", "type", "created_at", "updated_at", "list_id", "_links")
MERGE_KEYS = ("merge_id", "tag", "name", "type", "required", "default_value", "public", "display_order", "options", "help_text", "list_id", "_links")


def get_list(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    return ok(partial(request, list_json(state, audience_of(state, request))))


def get_merge_fields(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    count, offset = paging(request, variants)
    definitions = audience.merge_fields
    if request.arg("type"):
        definitions = [d for d in definitions if d.type == request.arg("type")]
    if request.arg("required"):
        definitions = [d for d in definitions if d.required == flag(request, "required")]
    body = {
        "merge_fields": [merge_field_json(audience, d) for d in definitions[offset : offset + count]],
        "list_id": audience.id,
        "total_items": len(definitions),
        "_links": [],
    }
    return ok(partial(request, body, {"merge_fields": MERGE_KEYS}))


def batch_subscribe(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    """POST /lists/{id}: synchronous, per-member errors; over 500 members 400 (or truncated by variant)."""
    audience = audience_of(state, request)
    body = body_of(request)
    if not isinstance(body, dict) or not isinstance(body.get("members"), list):
        raise err.field_error("members", "This value should not be blank.")
    items = body["members"]
    if len(items) > BATCH_LIMIT:
        if variants.get("mailchimp_batch_over_limit") != "truncate":
            raise err.field_error("members", f"You may only add or update up to {BATCH_LIMIT} members per call ({len(items)} given).")
        items = items[:BATCH_LIMIT]
    update_existing = body.get("update_existing") is True
    skip_duplicates = flag(request, "skip_duplicate_check")
    skip_merge = flag(request, "skip_merge_validation")
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    mutated = False
    for item in items:
        email = item.get("email_address") if isinstance(item, dict) else None
        key = subscriber_hash(email) if isinstance(email, str) else None
        if key is not None and key in seen:
            if not skip_duplicates:
                errors.append(_error(email, f"{email} is a duplicate in this request.", "ERROR_GENERIC"))
            continue
        if key is not None:
            seen.add(key)
        exists = key is not None and key in audience.members
        if exists and not update_existing:
            detail = f"{email} is already a list member, do you want to update? please provide update_existing:true in the request body"
            errors.append(_error(email, detail, "ERROR_CONTACT_EXISTS"))
            continue
        # Per-member `tags` (names) are not in the spec, but recorded: they are added to new and
        # existing members, and `sync_tags: true` makes them replace all of the member's tags.
        payload = {k: v for k, v in item.items() if k != "tags"} if isinstance(item, dict) else item
        names = item.get("tags") if isinstance(item, dict) else None
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names)):
            errors.append(_error(str(email or ""), "tags must be an array of tag names.", "ERROR_GENERIC"))
            continue
        try:
            key, member, changed = write_member(state, audience, key if exists else None, payload, "PUT" if exists else "POST", variants, skip_merge)
        except Problem as problem:
            errors.append(_error(str(email or ""), problem.detail, "ERROR_GENERIC", problem.errors))
            continue
        if names is not None:
            changed |= set_tag_names(state, audience, key, member, names, sync=body.get("sync_tags") is True)
        mutated |= changed
        (updated if exists else created).append(member_json(audience, key, member))
    response = ok({
        "new_members": created,
        "updated_members": updated,
        "errors": errors,
        "total_created": len(created),
        "total_updated": len(updated),
        "error_count": len(errors),
        "_links": [],
    })
    response.mutated = mutated
    return response


def _error(email: str, detail: str, code: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    entry = {"email_address": email, "error": detail, "error_code": code}
    if fields:
        entry["field"] = fields[0]["field"]
        entry["field_message"] = fields[0]["message"]
    return entry


def _counted(request: Request) -> tuple[str, ...]:
    statuses = ["subscribed", "pending"]
    for name in ("cleaned", "transactional", "unsubscribed"):
        if flag(request, f"include_{name}"):
            statuses.append(name)
    return tuple(statuses)


def list_segments(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    """Tags are the audience's static segments; saved and fuzzy segments do not exist here."""
    audience = audience_of(state, request)
    count, offset = paging(request, variants)
    kind = request.arg("type") or None
    if kind not in (None, "static", "saved", "fuzzy"):
        raise err.field_error("type", "Value must be one of: saved, static, fuzzy")
    tags = list(audience.tags.values()) if kind in (None, "static") else []
    counted = _counted(request)
    body = {
        "segments": [segment_json(audience, tag, counted) for tag in tags[offset : offset + count]],
        "list_id": audience.id,
        "total_items": len(tags),
        "_links": [],
    }
    return ok(partial(request, body, {"segments": SEGMENT_KEYS}))


def _segment(audience: Audience, request: Request) -> Tag:
    try:
        tag = audience.tags.get(int(request.params["segment_id"]))
    except ValueError:
        tag = None
    if tag is None:
        raise err.not_found()
    return tag


def get_segment(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    return ok(partial(request, segment_json(audience, _segment(audience, request), _counted(request))))


def create_segment(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    """POST /segments with `static_segment` creates a tag; condition segments are not emulated."""
    audience = audience_of(state, request)
    body = body_of(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        raise err.field_error("name", "This value should not be blank.")
    if "options" in body:
        raise err.field_error("options", "The sandbox emulates static segments (tags) only; send static_segment.")
    emails = body.get("static_segment", [])
    if not isinstance(emails, list):
        raise err.field_error("static_segment", "Schema describes array, " + type(emails).__name__ + " found instead")
    if audience.tag_by_name(body["name"]) is not None:
        raise err.field_error("name", f"A tag named {body['name']!r} already exists in this audience.")
    tag = state.new_tag(audience, body["name"])
    _tag_members(state, audience, tag, [e for e in emails if isinstance(e, str)], add=True)
    audience.touch()
    response = ok(segment_json(audience, tag))
    response.mutated = True
    return response


def segment_members(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    """Bulk tag/untag by email (≤ 500 each); emails not on the audience come back in `errors`."""
    audience = audience_of(state, request)
    tag = _segment(audience, request)
    body = body_of(request)
    if not isinstance(body, dict):
        raise err.field_error("members_to_add", "Schema describes object, NULL found instead")
    lists = {}
    for name in ("members_to_add", "members_to_remove"):
        value = body.get(name, [])
        if not isinstance(value, list):
            raise err.field_error(name, "Schema describes array, " + type(value).__name__ + " found instead")
        if len(value) > BATCH_LIMIT:
            raise err.field_error(name, f"You may only send up to {BATCH_LIMIT} emails in {name} ({len(value)} given).")
        lists[name] = [str(e) for e in value]
    added, missing_add = _tag_members(state, audience, tag, lists["members_to_add"], add=True)
    removed, missing_remove = _tag_members(state, audience, tag, lists["members_to_remove"], add=False)
    errors = [
        {"email_addresses": missing, "error": "Email addresses do not belong to this audience."}
        for missing in (missing_add, missing_remove)
        if missing
    ]
    if added or removed:
        audience.touch()
    response = ok({
        "members_added": [member_json(audience, k, audience.members[k]) for k in added],
        "members_removed": [member_json(audience, k, audience.members[k]) for k in removed],
        "errors": errors,
        "total_added": len(added),
        "total_removed": len(removed),
        "error_count": len(missing_add) + len(missing_remove),
        "_links": [],
    })
    response.mutated = bool(added or removed)
    return response


def _tag_members(state: MailchimpState, audience: Audience, tag: Tag, emails: list[str], add: bool) -> tuple[list[str], list[str]]:
    """(changed hashes, emails not on the audience). Archived members count as not on it."""
    changed: list[str] = []
    missing: list[str] = []
    now = state.now()
    for email in emails:
        key = subscriber_hash(email)
        member = audience.members.get(key)
        if member is None or member.status == "archived":
            missing.append(email)
        elif add and tag.id not in member.tags:
            member.tags[tag.id] = now
            tag.members.add(key)
            changed.append(key)
        elif not add and tag.id in member.tags:
            del member.tags[tag.id]
            tag.members.discard(key)
            changed.append(key)
    for key in changed:
        audience.members[key].last_changed = now
    if changed:
        tag.updated_at = now
    return changed, missing


def list_segment_members(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    tag = _segment(audience, request)
    count, offset = paging(request, variants)
    counted = _counted(request)
    keys = [k for k in audience.members if k in tag.members and audience.members[k].status in counted]
    body = {
        "members": [member_json(audience, k, audience.members[k]) for k in keys[offset : offset + count]],
        "total_items": len(keys),
        "_links": [],
    }
    return ok(partial(request, body, {"members": list(MEMBER_FIELDS)}))


def tag_search(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    prefix = (request.arg("name") or "").lower()
    tags = [{"id": t.id, "name": t.name} for t in audience.tags.values() if t.name.lower().startswith(prefix)]
    return ok(partial(request, {"tags": tags, "total_items": len(tags)}, {"tags": ("id", "name")}))
