"""Request-handling helpers shared by the Mailchimp emulator's handlers: body parsing, paging,
audience lookup and partial responses; apart so each resource module stays small.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox.http import Request, Response
from reconciler.sandbox.mailchimp_render import check_tree, drop, field_tree, keep
from reconciler.sandbox.mailchimp_state import Audience, MailchimpState

MAX_COUNT = 1000
DEFAULT_COUNT = 10


def ok(body: Any, status: int = 200) -> Response:
    return Response(status, body)


def no_content(mutated: bool) -> Response:
    # The real API sends application/json even on these empty 204s (reference §2).
    return Response(204, None, mutated=mutated)


def audience_of(state: MailchimpState, request: Request) -> Audience:
    audience = state.audience(request.params.get("list_id", ""))
    if audience is None:
        raise err.not_found()
    return audience


def body_of(request: Request) -> Any:
    """The JSON body, parsed whatever the Content-Type says (Mailchimp's curl examples send none)."""
    try:
        return request.json()
    except (ValueError, UnicodeDecodeError):
        raise err.json_parse() from None


def flag(request: Request, name: str) -> bool:
    return (request.arg(name) or "").lower() == "true"


def paging(request: Request, variants: Mapping[str, Any]) -> tuple[int, int]:
    """count (default 10, max 1000; over it 400, or clamped with variant mailchimp_count_over_max='clamp') and offset."""
    count = _integer(request, "count", DEFAULT_COUNT)
    offset = _integer(request, "offset", 0)
    if count > MAX_COUNT:
        if variants.get("mailchimp_count_over_max") == "clamp":
            count = MAX_COUNT
        else:
            raise err.field_error("count", f"The value for count must be between 0 and {MAX_COUNT} ({count} given).")
    return count, offset


def _integer(request: Request, name: str, default: int) -> int:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise err.field_error(name, f"The value for {name} must be an integer ({raw!r} given).") from None
    if value < 0:
        raise err.field_error(name, f"The value for {name} must not be negative ({value} given).")
    return value


def wanted_items(request: Request, collection: str) -> list[str] | None:
    """Item keys a `fields=` request keeps, so the handler renders only those (None: all)."""
    paths = request.args("fields")
    if not paths:
        return None
    sub = field_tree(paths).get(collection, {})
    return None if sub is None else list(sub)


def partial(
    request: Request,
    body: dict[str, Any],
    item_keys: Mapping[str, Iterable[str]] | None = None,
    top_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """Apply `fields` / `exclude_fields` (mutually exclusive; names neither in the body nor known refused)."""
    fields, excluded = request.args("fields"), request.args("exclude_fields")
    if fields and excluded:
        raise err.Problem(400, "Bad Request", "The fields and exclude_fields parameters are mutually exclusive.")
    if fields:
        tree = field_tree(fields)
        check_tree(tree, body, dict(item_keys or {}), top_keys)
        return keep(body, tree)
    if excluded:
        tree = field_tree(excluded)
        check_tree(tree, body, dict(item_keys or {}), top_keys)
        return drop(body, tree)
    return body
