"""HubSpot CRM contact search of the sandbox (`POST /crm/v3/objects/contacts/search`): filters, sorts, paging.

Separate from the other contact routes because search has its own limits (5 requests/s, 200 a page,
10,000 results, filter-group counts) and its own filter language.
"""

from __future__ import annotations

from typing import Any, Callable

from .http import Request, Response, Router
from .hubspot_common import ApiError, json_object, ok, parse_time_ms
from .hubspot_contacts import BASE, ContactViews
from .hubspot_state import DATE_PROPERTIES, ContactRecord, HubSpotState

SEARCH_PATH = BASE + "/search"
PAGE_MAX = 200
RESULT_CAP = 10_000
SEARCH_DEFAULTS = ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"]
QUERY_PROPERTIES = ("email", "firstname", "lastname", "phone", "company")


def _comparable(name: str, value: str | None) -> Any:
    """Dates compare as epoch ms, numeric-looking values as numbers, everything else case-insensitively."""
    if value is None:
        return None
    if name in DATE_PROPERTIES:
        return parse_time_ms(value)
    try:
        return float(value)
    except ValueError:
        return value.lower()


def _sort_key(name: str, value: str | None) -> tuple[int, Any, str]:
    """Numbers (and dates) before text, so mixed values never compare a float with a str."""
    comparable = _comparable(name, value)
    return (0, comparable, "") if isinstance(comparable, (int, float)) else (1, 0, str(comparable))


def _matcher(state: HubSpotState, views: ContactViews, spec: Any) -> Callable[[ContactRecord], bool]:
    if not isinstance(spec, dict) or not isinstance(spec.get("propertyName"), str):
        raise ApiError(400, "Invalid input JSON: every filter needs a propertyName and an operator")
    name, operator = spec["propertyName"], str(spec.get("operator", "EQ")).upper()
    value = spec.get("value")
    values = spec.get("values") or []
    high = spec.get("highValue")

    def current(contact: ContactRecord) -> Any:
        return _comparable(name, state.value(contact, name, views.unset_optout) or None)

    if operator == "HAS_PROPERTY":
        return lambda c: current(c) is not None
    if operator == "NOT_HAS_PROPERTY":
        return lambda c: current(c) is None
    if operator in ("IN", "NOT_IN"):
        wanted = {_comparable(name, str(v)) for v in values}
        if operator == "IN":
            return lambda c: current(c) in wanted
        return lambda c: current(c) not in wanted
    if value is None:
        raise ApiError(400, f"Filter on {name} with operator {operator} requires a value")
    target = _comparable(name, str(value))
    if target is None:
        raise ApiError(400, f"{value} is not a valid value for {name}")
    if operator == "EQ":
        return lambda c: current(c) == target
    if operator == "NEQ":
        return lambda c: current(c) != target
    if operator == "CONTAINS_TOKEN":
        token = str(value).lower().strip("*")
        return lambda c: token in str(state.value(c, name) or "").lower()
    if operator == "NOT_CONTAINS_TOKEN":
        token = str(value).lower().strip("*")
        return lambda c: token not in str(state.value(c, name) or "").lower()
    compare: dict[str, Callable[[Any], bool]] = {
        "GT": lambda v: v > target, "GTE": lambda v: v >= target,
        "LT": lambda v: v < target, "LTE": lambda v: v <= target,
    }
    if operator == "BETWEEN":
        upper = _comparable(name, str(high)) if high is not None else None
        if upper is None:
            raise ApiError(400, f"Filter on {name} with operator BETWEEN requires a highValue")
        compare["BETWEEN"] = lambda v: target <= v <= upper
    if operator not in compare:
        raise ApiError(400, f"Unknown filter operator {operator}")
    test = compare[operator]

    def check(contact: ContactRecord) -> bool:
        have = current(contact)
        try:
            return have is not None and test(have)
        except TypeError:  # a text value against a numeric bound never matches
            return False
    return check


def _groups(state: HubSpotState, views: ContactViews, raw: Any) -> list[list[Callable[[ContactRecord], bool]]]:
    groups = raw or []
    if not isinstance(groups, list):
        raise ApiError(400, "Invalid input JSON: filterGroups must be an array")
    # Current limits per the search guide: 5 groups, 6 filters a group, 18 filters in all.
    if len(groups) > 5:
        raise ApiError(400, f"Too many filter groups ({len(groups)}); the maximum is 5")
    total = 0
    out = []
    for group in groups:
        filters = group.get("filters") or [] if isinstance(group, dict) else None
        if filters is None or not isinstance(filters, list):
            raise ApiError(400, "Invalid input JSON: each filter group needs a filters array")
        if len(filters) > 6:
            raise ApiError(400, f"Too many filters in a group ({len(filters)}); the maximum is 6")
        total += len(filters)
        out.append([_matcher(state, views, f) for f in filters])
    if total > 18:
        raise ApiError(400, f"Too many filters ({total}); the maximum is 18 across all groups")
    return out


class SearchRoutes:
    def __init__(self, state: HubSpotState, views: ContactViews) -> None:
        self.state = state
        self.views = views

    def register(self, router: Router) -> None:
        router.add("POST", SEARCH_PATH, self.search)

    def search(self, request: Request) -> Response:
        body = json_object(request)
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or limit < 0:
            raise ApiError(400, "limit must be a non-negative integer")
        if limit > PAGE_MAX:
            raise ApiError(400, f"limit must be less than or equal to {PAGE_MAX}")
        after_raw = body.get("after") or "0"
        if not str(after_raw).isdigit():
            raise ApiError(400, "You must format the value in the after parameter as an integer")
        offset = int(after_raw)
        if offset + limit > RESULT_CAP:
            raise ApiError(400, f"The search endpoints return at most {RESULT_CAP} results for a query; "
                                f"after={offset} with limit={limit} pages beyond it")
        query = str(body.get("query") or "").lower()
        if len(query) > 3000:
            raise ApiError(400, "query must be at most 3000 characters")
        groups = _groups(self.state, self.views, body.get("filterGroups"))
        requested = [p for p in body.get("properties") or [] if isinstance(p, str)] or None
        matched = [c for c in self.state.contacts.values() if self._matches(c, groups, query)]
        self._sort(matched, body.get("sorts"))
        page = matched[offset:offset + limit]
        out: dict[str, Any] = {"total": len(matched), "results": [self.views.view(c, requested or SEARCH_DEFAULTS) for c in page]}
        if limit and offset + limit < len(matched):
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return ok(out)

    def _matches(self, contact: ContactRecord, groups: list[list[Callable[[ContactRecord], bool]]], query: str) -> bool:
        if query and not any(query in (self.state.value(contact, p) or "").lower() for p in QUERY_PROPERTIES):
            return False
        # Groups are OR-ed, filters inside a group AND-ed.
        return not groups or any(all(f(contact) for f in group) for group in groups)

    def _sort(self, matched: list[ContactRecord], sorts: Any) -> None:
        matched.sort(key=lambda c: int(c.id))
        if not sorts:
            return
        first = sorts[0]
        if isinstance(first, str):
            name, descending = first.lstrip("-"), first.startswith("-")
        elif isinstance(first, dict):
            name, descending = str(first.get("propertyName", "")), str(first.get("direction", "")).upper() == "DESCENDING"
        else:
            raise ApiError(400, "Invalid input JSON: sorts must be strings or {propertyName, direction}")
        # Only one sort rule applies; records without the property sort last either way.
        present = [c for c in matched if self.state.value(c, name) not in (None, "")]
        absent = [c for c in matched if self.state.value(c, name) in (None, "")]
        present.sort(key=lambda c: (_sort_key(name, self.state.value(c, name)), int(c.id)), reverse=descending)
        matched[:] = present + absent
