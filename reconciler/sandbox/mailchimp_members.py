"""Handlers for the Mailchimp emulator's member resources: the members collection, one member,
its tags and delete-permanent. Apart from routing so each resource reads on its own.
"""

from __future__ import annotations

from typing import Any, Mapping

from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox.http import Request, Response
from reconciler.sandbox.mailchimp_common import audience_of, body_of, flag, no_content, ok, paging, partial, wanted_items
from reconciler.sandbox.mailchimp_render import MEMBER_FIELDS, member_json
from reconciler.sandbox.mailchimp_state import STATUSES, MailchimpState, normalise_time, select_members
from reconciler.sandbox.mailchimp_writes import archive_member, forget_member, post_tags, resolve, write_member

SORT_FIELDS = ("timestamp_opt", "timestamp_signup", "last_changed")
COLLECTION_KEYS = {"members": list(MEMBER_FIELDS)}


def list_members(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    count, offset = paging(request, variants)
    status = request.arg("status") or None
    if status is not None and status not in STATUSES:
        raise err.field_error("status", f"Value must be one of: {', '.join(STATUSES)} ({status!r} given)")
    unsubscribed_since = _time(request, "unsubscribed_since")
    if unsubscribed_since is not None and status != "unsubscribed":
        raise err.field_error("unsubscribed_since", "Using any status other than unsubscribed with this filter will result in an error.")
    sort_field = request.arg("sort_field") or None
    if sort_field is not None and sort_field not in SORT_FIELDS:
        raise err.field_error("sort_field", f"Value must be one of: {', '.join(SORT_FIELDS)}")
    sort_dir = (request.arg("sort_dir") or "ASC").upper()
    if sort_dir not in ("ASC", "DESC"):
        raise err.field_error("sort_dir", "Value must be one of: ASC, DESC")
    rows = select_members(
        audience,
        status,
        # [UNCONFIRMED] archived members are left out unless asked for; the variant includes them.
        include_archived=bool(variants.get("mailchimp_archived_in_unfiltered_list", False)),
        since_last_changed=_time(request, "since_last_changed"),
        before_last_changed=_time(request, "before_last_changed"),
        unsubscribed_since=unsubscribed_since,
        sort_field=sort_field,
        sort_dir=sort_dir,
    )
    keys = wanted_items(request, "members")
    page = rows[offset : offset + count]
    body = {
        "members": [member_json(audience, key, member, keys) for key, member in page],
        "list_id": audience.id,
        "total_items": len(rows),
        "_links": [],
    }
    return ok(partial(request, body, COLLECTION_KEYS))


def _time(request: Request, name: str) -> str | None:
    raw = request.arg(name)
    if not raw:
        return None
    try:
        return normalise_time(raw)
    except ValueError:
        raise err.field_error(name, f"The value for {name} must be an ISO 8601 time, e.g. 2015-10-21T15:41:36+00:00 ({raw!r} given).") from None


def get_member(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    key, member = resolve(audience, request.params["subscriber_hash"])
    if member is None:
        raise err.not_found()
    return ok(partial(request, member_json(audience, key, member), top_keys=MEMBER_FIELDS))


def add_member(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    return _write(state, variants, request, "POST")


def put_member(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    return _write(state, variants, request, "PUT")


def patch_member(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    return _write(state, variants, request, "PATCH")


def _write(state: MailchimpState, variants: Mapping[str, Any], request: Request, method: str) -> Response:
    audience = audience_of(state, request)
    body = body_of(request)
    ref = None if method == "POST" else request.params["subscriber_hash"]
    key, member, changed = write_member(
        state, audience, ref, body, method, variants, skip_merge_validation=flag(request, "skip_merge_validation")
    )
    response = ok(member_json(audience, key, member))
    response.mutated = changed
    return response


def delete_member(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    return no_content(archive_member(state, audience, request.params["subscriber_hash"], variants))


def delete_permanent(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    forget_member(audience, request.params["subscriber_hash"])
    return no_content(True)


def get_member_tags(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    _key, member = resolve(audience, request.params["subscriber_hash"])
    if member is None:
        raise err.not_found()
    count, offset = paging(request, variants)
    tags = [
        # date_added in the ISO form the spec declares (the docs' sample omits the T and offset)
        {"id": tag_id, "name": audience.tags[tag_id].name, "date_added": added}
        for tag_id, added in list(member.tags.items())[offset : offset + count]
    ]
    body = {"tags": tags, "total_items": len(member.tags), "_links": []}
    return ok(partial(request, body, {"tags": ("id", "name", "date_added")}))


def post_member_tags(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    audience = audience_of(state, request)
    changed = post_tags(state, audience, request.params["subscriber_hash"], body_of(request))
    return no_content(changed)
