"""Member writes of the Mailchimp emulator: upsert, update, archive, forget, tag; with the vendor's
compliance rules. Separate from HTTP handling so single and batch endpoints share one rule set.

Callers hold `state.lock`. Every function raises `Problem` for what Mailchimp refuses and returns
whether the state changed (for `Response.mutated` and the journal).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox.mailchimp_compliance import check_archivable, new_unsubscribed, set_status
from reconciler.sandbox.mailchimp_state import Audience, MailchimpState, Member, subscriber_hash

WRITABLE = {
    "POST": ("subscribed", "unsubscribed", "cleaned", "pending", "transactional"),
    "PUT": ("subscribed", "unsubscribed", "cleaned", "pending", "transactional"),
    "PATCH": ("subscribed", "unsubscribed", "cleaned", "pending"),  # the spec's PATCH enum has no transactional
}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
HASH = re.compile(r"^[0-9a-f]{32}$")
DATE = re.compile(r"^(\d{4}[-/]\d{2}[-/]\d{2}|\d{2}-\d{2}-\d{4}|\d{2}/\d{2}/\d{4})$")
BIRTHDAY = re.compile(r"^\d{2}/\d{2}$")
ANYOF = "Data did not match any of the schemas described in anyOf."


def contact_id(key: str) -> str:
    """A stable contact id that cannot be mistaken for a subscriber hash (it is not 32 hex digits)."""
    return "c" + key[::-1][:20]


def resolve(audience: Audience, ref: str, hash_only: bool = False) -> tuple[str, Member | None]:
    """The path's member reference: an md5 hash, or (where the spec allows) an email or contact_id."""
    if HASH.match(ref):
        return ref, audience.members.get(ref)
    if hash_only:
        return ref, None
    if "@" in ref:
        key = subscriber_hash(ref)
        return key, audience.members.get(key)
    index = audience.cached(("contact_ids",), lambda: {contact_id(k): k for k in audience.members})
    key = index.get(ref, ref)
    return key, audience.members.get(key)


def check_email(email: Any) -> str:
    if email is None or email == "":
        raise err.field_error("email_address", "This value should not be blank.")
    if not isinstance(email, str) or not EMAIL.match(email):
        raise err.fake_email(str(email))
    return email


def check_status(value: Any, method: str, field: str) -> str:
    allowed = WRITABLE[method]
    if value not in allowed:
        raise err.field_error(field, f"Value must be one of: {', '.join(allowed)} ({value!r} given)")
    return value


def clean_merge_fields(audience: Audience, values: Any, variants: Mapping[str, Any]) -> dict[str, Any]:
    """Type-checked merge values; unknown tags refused unless variant mailchimp_unknown_merge_fields='ignore'."""
    if not isinstance(values, dict):
        raise err.field_error("merge_fields", "Schema describes object, " + type(values).__name__ + " found instead")
    out: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for tag, value in values.items():
        definition = audience.merge_field(tag)
        if definition is None:
            if variants.get("mailchimp_unknown_merge_fields") != "ignore":
                errors.append({"field": f"merge_fields.{tag}", "message": f"Merge field {tag} does not exist on this audience."})
            continue
        problem = _merge_value_problem(definition.type, definition.choices, value)
        if problem:
            errors.append({"field": f"merge_fields.{tag}", "message": problem})
        elif definition.type == "text" and isinstance(value, str):
            out[tag] = value.encode("utf-8")[:255].decode("utf-8", "ignore")
        else:
            out[tag] = value
    if errors:
        raise err.invalid(errors)
    return out


def _merge_value_problem(kind: str, choices: list[str], value: Any) -> str | None:
    if value == "":
        return None
    if kind == "number":
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (isinstance(value, str) and _is_number(value))
        return None if ok else ANYOF
    if kind == "address":
        if not isinstance(value, dict):
            return ANYOF
        missing = [k for k in ("addr1", "city", "state", "zip") if not isinstance(value.get(k), str)]
        return f"Address is missing {', '.join(missing)}" if missing else None
    if not isinstance(value, str):
        return ANYOF
    if kind in ("radio", "dropdown") and choices and value not in choices:
        return f"Value must be one of: {', '.join(choices)}"
    if kind == "date" and not DATE.match(value):
        return "Please enter a date (YYYY-MM-DD)"
    if kind == "birthday" and not BIRTHDAY.match(value):
        return "Please enter a birthday (MM/DD)"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def missing_required(audience: Audience, merge: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"field": d.tag, "message": "Please enter a value"}
        for d in audience.merge_fields
        if d.required and merge.get(d.tag, "") in ("", None)
    ]


def write_member(
    state: MailchimpState,
    audience: Audience,
    ref: str | None,
    body: Any,
    method: str,
    variants: Mapping[str, Any],
    skip_merge_validation: bool = False,
) -> tuple[str, Member, bool]:
    """POST (add), PUT (upsert) or PATCH (update) one member; returns (hash, member, changed)."""
    if not isinstance(body, dict):
        raise err.invalid([{"field": "", "message": "Schema describes object, NULL found instead"}])
    email = body.get("email_address")
    if method != "PATCH" or email is not None:
        email = check_email(email)
    if ref is None:
        key, member = subscriber_hash(email), audience.members.get(subscriber_hash(email))
    else:
        key, member = resolve(audience, ref)
        if email is not None and subscriber_hash(email) != key:
            # Seen as 400 Member Exists when the hash was computed before lower-casing (§3).
            if subscriber_hash(email) in audience.members:
                raise err.member_exists(email)
            raise err.field_error("email_address", "The email address does not match the subscriber hash in the URL.")
    status = body.get("status")
    if status is not None:
        check_status(status, method, "status")
    status_if_new = body.get("status_if_new") if method == "PUT" else None
    if status_if_new is not None:
        check_status(status_if_new, "PUT", "status_if_new")
    merge = clean_merge_fields(audience, body["merge_fields"], variants) if "merge_fields" in body else {}
    extras = _extras(body)

    if member is None:
        if method == "PATCH":  # a forgotten member is not on the list either
            raise err.not_found()
        if key in audience.forgotten:
            raise err.forgotten(email)
        initial = status or status_if_new
        if initial is None:
            raise err.field_error("status_if_new" if method == "PUT" else "status", "This value should not be blank.")
        if not skip_merge_validation and missing_required(audience, merge):
            raise err.invalid(missing_required(audience, merge), "Your merge fields were invalid.")
        now = state.now()
        member = Member(email=email, status=initial, merge_fields=merge, tags={}, web_id=state.new_web_id(), last_changed=now)
        member.timestamp_signup = str(body.get("timestamp_signup") or "")
        if initial == "subscribed":
            member.timestamp_opt = now
        if initial == "pending":
            state.confirmations[email.lower()] += 1
        if initial == "unsubscribed":
            new_unsubscribed(state, member)
        for name, value in extras.items():
            setattr(member, name, value)
        audience.members[key] = member
        if method == "POST":
            _add_tag_names(state, audience, key, member, body.get("tags") or [])
        audience.touch()
        return key, member, True

    if method == "POST":
        raise err.member_exists(member.email)
    target = status
    if target is None and member.status == "archived" and status_if_new is not None:
        # The reference (facts added after review) records that status_if_new alone does not
        # un-archive; variant mailchimp_status_if_new_unarchives gives the older, riskier answer.
        if variants.get("mailchimp_status_if_new_unarchives", False):
            target = status_if_new
    changed = set_status(state, member, target, variants) if target is not None else False
    if merge:
        if variants.get("mailchimp_merge_fields_replace"):
            updated = dict(merge)
        else:  # [UNCONFIRMED] merge per key (community experience), the default
            updated = {**member.merge_fields, **merge}
        if not skip_merge_validation:
            blanks = [e for e in missing_required(audience, updated) if e["field"] in merge]
            if blanks:
                raise err.invalid(blanks, "Your merge fields were invalid.")
        if updated != member.merge_fields:
            member.merge_fields = updated
            changed = True
    for name, value in extras.items():
        if getattr(member, name) != value:
            setattr(member, name, value)
            changed = True
    if changed:
        member.last_changed = state.now()
        audience.touch()
    return key, member, changed


def _extras(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "email_type" in body:
        if body["email_type"] not in ("html", "text"):
            raise err.field_error("email_type", "Value must be one of: html, text")
        out["email_type"] = body["email_type"]
    if "language" in body:
        out["language"] = str(body["language"])
    if "vip" in body:
        if not isinstance(body["vip"], bool):
            raise err.field_error("vip", "Schema describes boolean, " + type(body["vip"]).__name__ + " found instead")
        out["vip"] = body["vip"]
    for name in ("ip_signup", "ip_opt"):
        if name in body:
            out[name] = str(body[name])
    return out


def archive_member(state: MailchimpState, audience: Audience, ref: str, variants: Mapping[str, Any]) -> bool:
    """DELETE: archive, keeping what the member was (and who unsubscribed it) for a later restore.

    Pending, cleaned and archived members are refused with 405 (mailchimp_compliance.check_archivable)."""
    _key, member = resolve(audience, ref)
    if member is None:
        raise err.not_found()
    if not check_archivable(member, variants):
        return False
    member.status_before_archive = member.status
    member.status = "archived"
    member.last_changed = state.now()
    audience.touch()
    return True


def forget_member(audience: Audience, ref: str) -> None:
    """delete-permanent: the hash is remembered so that re-imports are refused."""
    key, member = resolve(audience, ref, hash_only=True)
    if member is None:
        raise err.not_found()
    for tag_id in member.tags:
        audience.tags[tag_id].members.discard(key)
    del audience.members[key]
    audience.forgotten.add(key)
    audience.touch()


def post_tags(state: MailchimpState, audience: Audience, ref: str, body: Any) -> bool:
    """POST member tags: active adds (creating the tag), inactive removes; unknown member 404."""
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise err.field_error("tags", "Schema describes array, " + type((body or {}).get("tags") if isinstance(body, dict) else body).__name__ + " found instead")
    errors = []
    for index, item in enumerate(body["tags"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            errors.append({"field": f"tags.{index}.name", "message": "This value should not be blank."})
        elif item.get("status") not in ("active", "inactive"):
            errors.append({"field": f"tags.{index}.status", "message": "Value must be one of: active, inactive"})
    if errors:
        raise err.invalid(errors)
    key, member = resolve(audience, ref, hash_only=True)
    if member is None:
        raise err.not_found()
    changed = False
    for item in body["tags"]:
        if item["status"] == "active":
            changed |= _add_tag_names(state, audience, key, member, [item["name"]])
        else:
            tag = audience.tag_by_name(item["name"])
            if tag is not None and tag.id in member.tags:  # an absent tag is a no-op ([UNCONFIRMED])
                del member.tags[tag.id]
                tag.members.discard(key)
                tag.updated_at = state.now()
                changed = True
    if changed:
        member.last_changed = state.now()
        audience.touch()
    return changed


def set_tag_names(state: MailchimpState, audience: Audience, key: str, member: Member, names: list[str], sync: bool) -> bool:
    """Batch subscribe's per-member `tags`: added; with `sync`, every other tag of the member is removed."""
    changed = False
    if sync:
        keep = {name.lower() for name in names}
        for tag_id in [t for t in member.tags if audience.tags[t].name.lower() not in keep]:
            del member.tags[tag_id]
            audience.tags[tag_id].members.discard(key)
            audience.tags[tag_id].updated_at = state.now()
            changed = True
    changed |= _add_tag_names(state, audience, key, member, names)
    if changed:
        member.last_changed = state.now()
        audience.touch()
    return changed


def _add_tag_names(state: MailchimpState, audience: Audience, key: str, member: Member, names: list[Any]) -> bool:
    changed = False
    for name in names:
        tag = audience.tag_by_name(str(name))
        if tag is None:
            tag = state.new_tag(audience, str(name))
            changed = True
        if tag.id not in member.tags:
            member.tags[tag.id] = state.now()
            tag.members.add(key)
            tag.updated_at = state.now()
            changed = True
    return changed
