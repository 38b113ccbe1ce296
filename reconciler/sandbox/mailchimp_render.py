"""JSON shapes of the Mailchimp emulator's resources (member, audience, merge field, segment) and
`fields`/`exclude_fields` partial responses; apart so every handler renders a member the same way.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable

from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox.mailchimp_state import Audience, MailchimpState, Member, MergeField, Tag
from reconciler.sandbox.mailchimp_writes import contact_id

LOCATION = {"latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0, "country_code": "", "timezone": "", "region": ""}
MEMBER_TAGS_SHOWN = 50  # "Returns up to 50 tags"; the rest via /tags

Renderer = Callable[[Audience, str, Member], Any]


def _merge_values(audience: Audience, member: Member) -> dict[str, Any]:
    # Mailchimp lists every merge field of the audience, blank ones as "".
    return {d.tag: member.merge_fields.get(d.tag, "") for d in audience.merge_fields}


def _full_name(audience: Audience, member: Member) -> str:
    return " ".join(str(member.merge_fields.get(t, "")) for t in ("FNAME", "LNAME") if member.merge_fields.get(t)).strip()


def _tags(audience: Audience, member: Member) -> list[dict[str, Any]]:
    return [{"id": tag_id, "name": audience.tags[tag_id].name} for tag_id in list(member.tags)[:MEMBER_TAGS_SHOWN]]


MEMBER_FIELDS: dict[str, Renderer] = {
    "id": lambda a, h, m: h,
    "email_address": lambda a, h, m: m.email,
    "unique_email_id": lambda a, h, m: hashlib.md5(("u:" + h).encode()).hexdigest()[:10],
    "contact_id": lambda a, h, m: contact_id(h),
    "full_name": lambda a, h, m: _full_name(a, m),
    "web_id": lambda a, h, m: m.web_id,
    "email_type": lambda a, h, m: m.email_type,
    "status": lambda a, h, m: m.status,
    "unsubscribe_reason": lambda a, h, m: m.unsubscribe_reason,
    "consents_to_one_to_one_messaging": lambda a, h, m: True,
    "merge_fields": lambda a, h, m: _merge_values(a, m),
    "interests": lambda a, h, m: {},
    "stats": lambda a, h, m: {"avg_open_rate": 0, "avg_click_rate": 0},
    "ip_signup": lambda a, h, m: m.ip_signup,
    "timestamp_signup": lambda a, h, m: m.timestamp_signup,
    "ip_opt": lambda a, h, m: m.ip_opt,
    "timestamp_opt": lambda a, h, m: m.timestamp_opt,
    "member_rating": lambda a, h, m: 2,
    "last_changed": lambda a, h, m: m.last_changed,
    "language": lambda a, h, m: m.language,
    "vip": lambda a, h, m: m.vip,
    "email_client": lambda a, h, m: "",
    "location": lambda a, h, m: dict(LOCATION),
    "source": lambda a, h, m: m.source,
    "tags_count": lambda a, h, m: len(m.tags),
    "tags": lambda a, h, m: _tags(a, m),
    "list_id": lambda a, h, m: a.id,
    "_links": lambda a, h, m: [],
}


def member_json(audience: Audience, key: str, member: Member, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The member (reference §4); `keys` limits the work to what a `fields=` request keeps."""
    wanted = MEMBER_FIELDS if keys is None else [k for k in keys if k in MEMBER_FIELDS]
    out = {name: MEMBER_FIELDS[name](audience, key, member) for name in wanted}
    if "unsubscribe_reason" in out and member.status != "unsubscribed":
        del out["unsubscribe_reason"]  # only unsubscribed members carry a reason
    return out


def list_json(state: MailchimpState, audience: Audience) -> dict[str, Any]:
    stats = audience.cached(("stats",), lambda: _stats(audience))
    return {
        "id": audience.id,
        "web_id": audience.web_id,
        "name": audience.name,
        "contact": {"company": "Sandbox", "address1": "1 Example Street", "address2": "", "city": "Atlanta", "state": "GA", "zip": "30308", "country": "US", "phone": ""},
        "permission_reminder": "You signed up on our website.",
        "use_archive_bar": True,
        "campaign_defaults": {"from_name": "Sandbox", "from_email": "sandbox@example.com", "subject": "", "language": "en"},
        "notify_on_subscribe": "",
        "notify_on_unsubscribe": "",
        "date_created": audience.date_created,
        "list_rating": 0,
        "email_type_option": False,
        "subscribe_url_short": f"https://eepurl.com/{audience.id}",
        "subscribe_url_long": f"https://example.{state.dc}.list-manage.com/subscribe?id={audience.id}",
        "beamer_address": f"{audience.id}@inbound.mailchimp.com",
        "visibility": "prv",
        "double_optin": audience.double_optin,
        "has_welcome": False,
        "marketing_permissions": False,
        "modules": [],
        "stats": stats,
        "_links": [],
    }


def _stats(audience: Audience) -> dict[str, Any]:
    counts: dict[str, int] = {}
    last_sub = last_unsub = ""
    for member in audience.members.values():
        counts[member.status] = counts.get(member.status, 0) + 1
        if member.timestamp_opt > last_sub:
            last_sub = member.timestamp_opt
        if member.unsubscribed_at > last_unsub:
            last_unsub = member.unsubscribed_at
    return {
        "member_count": counts.get("subscribed", 0),
        "total_contacts": sum(n for s, n in counts.items() if s != "archived"),
        "unsubscribe_count": counts.get("unsubscribed", 0),
        "cleaned_count": counts.get("cleaned", 0),
        "member_count_since_send": counts.get("subscribed", 0),
        "unsubscribe_count_since_send": counts.get("unsubscribed", 0),
        "cleaned_count_since_send": counts.get("cleaned", 0),
        "campaign_count": 0,
        "campaign_last_sent": "",
        "merge_field_count": len(audience.merge_fields),
        "avg_sub_rate": 0,
        "avg_unsub_rate": 0,
        "target_sub_rate": 0,
        "open_rate": 0,
        "click_rate": 0,
        "last_sub_date": last_sub,
        "last_unsub_date": last_unsub,
    }


def merge_field_json(audience: Audience, definition: MergeField) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if definition.type == "text":
        options["size"] = 25
    if definition.choices:
        options["choices"] = list(definition.choices)
    if definition.type == "address":
        options["default_country"] = 164
    return {
        "merge_id": definition.merge_id,
        "tag": definition.tag,
        "name": definition.name,
        "type": definition.type,
        "required": definition.required,
        "default_value": definition.default_value,
        "public": definition.public,
        "display_order": definition.display_order,
        "options": options,
        "help_text": definition.help_text,
        "list_id": audience.id,
        "_links": [],
    }


def segment_json(audience: Audience, tag: Tag, counted: tuple[str, ...] = ("subscribed", "pending")) -> dict[str, Any]:
    """A tag as a static segment; member_count counts the statuses the include_* flags admit."""
    members = audience.members
    return {
        "id": tag.id,
        "name": tag.name,
        "member_count": sum(1 for key in tag.members if members[key].status in counted),
        "type": "static",
        "created_at": tag.created_at,
        "updated_at": tag.updated_at,
        "list_id": audience.id,
        "_links": [],
    }


# -- partial responses ---------------------------------------------------------------------

Tree = dict[str, Any]  # name -> sub-tree, or None for the whole value


def field_tree(paths: list[str]) -> Tree:
    """`members.email_address,total_items` -> {"members": {"email_address": None}, "total_items": None}."""
    tree: Tree = {}
    for path in paths:
        parts = [p for p in path.strip().split(".") if p]
        node = tree
        for index, part in enumerate(parts):
            if index == len(parts) - 1:
                node[part] = None
                break
            child = node.get(part, {})
            if child is None:
                break  # the whole value was already asked for
            node[part] = child
            node = child
    return tree


def check_tree(tree: Tree, response: dict[str, Any], item_keys: dict[str, Iterable[str]], top_keys: Iterable[str] = ()) -> None:
    """Unknown top-level names, or unknown item names of a known collection, are refused."""
    known_top = set(response) | set(top_keys)
    bad = [name for name in tree if name not in known_top]
    for collection, keys in item_keys.items():
        known = set(keys)
        bad += [f"{collection}.{name}" for name in (tree.get(collection) or {}) if name not in known]
    if bad:
        raise err.Problem(400, "Bad Request", f"Some of the fields requested were invalid: {', '.join(bad)}")


def keep(value: Any, tree: Tree | None) -> Any:
    if tree is None:
        return value
    if isinstance(value, list):
        return [keep(item, tree) for item in value]
    if isinstance(value, dict):
        return {name: keep(value[name], sub) for name, sub in tree.items() if name in value}
    return value


def drop(value: Any, tree: Tree) -> Any:
    if isinstance(value, list):
        return [drop(item, tree) for item in value]
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            if name not in tree:
                out[name] = item
            elif tree[name] is not None:
                out[name] = drop(item, tree[name])
        return out
    return value
