"""Account-level Mailchimp resources of the sandbox: `GET /lists`, every audience of the account.

What `reconcile --import` reads to find the audiences. Apart from mailchimp_lists.py (one
audience's resources) so each stays small; registered through `ROUTES` in mailchimp.py.

Modelled (OpenAPI `getLists`, `SubscriberLists`): `count` (default 10, at most 1,000) and `offset`
paging, `fields` / `exclude_fields`, `sort_field=date_created` with `sort_dir` ASC|DESC, and the
`email` filter (audiences the address is a member of, archived members left out). Without
`sort_field`, audiences come in creation order. `constraints` says creation is allowed, without
limit (-1): the sandbox has no plan limits. The date filters and `has_ecommerce_store` are ignored.
"""

from __future__ import annotations

from typing import Any, Mapping

from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox.http import Request, Response
from reconciler.sandbox.mailchimp_common import ok, paging, partial
from reconciler.sandbox.mailchimp_render import list_json
from reconciler.sandbox.mailchimp_state import MailchimpState, subscriber_hash

LIST_KEYS = ("id", "web_id", "name", "contact", "permission_reminder", "use_archive_bar", "campaign_defaults",
             "notify_on_subscribe", "notify_on_unsubscribe", "date_created", "list_rating", "email_type_option",
             "subscribe_url_short", "subscribe_url_long", "beamer_address", "visibility", "double_optin",
             "has_welcome", "marketing_permissions", "modules", "stats", "_links")


def get_lists(state: MailchimpState, variants: Mapping[str, Any], request: Request) -> Response:
    count, offset = paging(request, variants)
    audiences = list(state.audiences.values())
    sort_field, sort_dir = request.arg("sort_field"), (request.arg("sort_dir") or "ASC").upper()
    if sort_field not in (None, "", "date_created"):
        raise err.field_error("sort_field", f"sort_field must be date_created ({sort_field!r} given).")
    if sort_dir not in ("ASC", "DESC"):
        raise err.field_error("sort_dir", f"sort_dir must be ASC or DESC ({sort_dir!r} given).")
    if sort_field:
        audiences.sort(key=lambda a: a.date_created, reverse=sort_dir == "DESC")
    email = (request.arg("email") or "").strip()
    if email:
        wanted = subscriber_hash(email)
        audiences = [a for a in audiences if wanted in a.members and a.members[wanted].status != "archived"]
    body = {
        "lists": [list_json(state, a) for a in audiences[offset:offset + count]],
        "total_items": len(audiences),
        "constraints": {"may_create": True, "max_instances": -1, "current_total_instances": len(state.audiences)},
        "_links": [],
    }
    return ok(partial(request, body, {"lists": LIST_KEYS}))


ROUTES = [("GET", "/3.0/lists", get_lists)]
