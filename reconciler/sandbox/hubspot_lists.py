"""HubSpot Lists v3 endpoints of the sandbox: list reads, list search, membership paging and writes.

Request handling only, over `HubSpotState`. Choices where the reference is [UNCONFIRMED] are listed
in `hubspot.py`'s docstring (DYNAMIC refusal text, unknown-list body, cursor format, id limit).
"""

from __future__ import annotations

import base64
from typing import Any

from .http import Request, Response, Router
from .hubspot_common import ApiError, iso, json_body, json_object, now_ms, ok
from .hubspot_state import PROCESSING_TYPES, HubSpotState, ListRecord

BASE = "/crm/v3/lists"
MEMBERSHIP_PAGE_MAX = 250


def encode_cursor(record_id: int) -> str:
    """Opaque offset token (HubSpot's format is [UNCONFIRMED]; clients must pass it back unchanged)."""
    return base64.urlsafe_b64encode(f"r:{record_id}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not text.startswith("r:"):
            raise ValueError(token)
        return int(text[2:])
    except ValueError:
        raise ApiError(400, f"Invalid offset token: {token}") from None


class ListRoutes:
    def __init__(self, state: HubSpotState, membership_id_limit: int, omit_empty: bool) -> None:
        self.state = state
        self.id_limit = membership_id_limit
        self.omit_empty = omit_empty

    def register(self, router: Router) -> None:
        router.add("GET", BASE, self.get_many)
        router.add("POST", BASE + "/search", self.search)
        router.add("GET", BASE + "/{listId}", self.get_one)
        router.add("GET", BASE + "/{listId}/memberships", self.memberships)
        router.add("PUT", BASE + "/{listId}/memberships/add", self.add)
        router.add("PUT", BASE + "/{listId}/memberships/remove", self.remove)
        router.add("PUT", BASE + "/{listId}/memberships/add-and-remove", self.add_and_remove)

    # ----- reads -----------------------------------------------------------------------------

    def _find(self, list_id: str) -> ListRecord:
        hub_list = self.state.lists.get(list_id)
        if hub_list is None:
            raise ApiError(404, f"List {list_id} does not exist.", "OBJECT_NOT_FOUND")  # body [UNCONFIRMED]
        return hub_list

    def view(self, hub_list: ListRecord) -> dict[str, Any]:
        return {
            "listId": hub_list.id, "listVersion": hub_list.version, "name": hub_list.name, "objectTypeId": "0-1",
            "processingType": hub_list.processing_type, "processingStatus": "COMPLETE", "size": len(hub_list.members),
            "createdAt": iso(hub_list.created_ms), "createdById": "1", "updatedAt": iso(hub_list.updated_ms),
            "updatedById": "1", "filtersUpdatedAt": iso(hub_list.created_ms),
        }

    def get_one(self, request: Request) -> Response:
        return ok({"list": self.view(self._find(request.params["listId"]))})

    def get_many(self, request: Request) -> Response:
        ids = request.args("listIds")
        return ok({"lists": [self.view(self.state.lists[i]) for i in dict.fromkeys(ids) if i in self.state.lists]})

    def search(self, request: Request) -> Response:
        body = json_object(request)
        offset, count = body.get("offset", 0), body.get("count", 20)
        if not isinstance(offset, int) or offset < 0 or not isinstance(count, int) or count < 0:
            raise ApiError(400, "offset and count must be non-negative integers")
        if count > 500:
            raise ApiError(400, "count must be less than or equal to 500")
        query = str(body.get("query") or "").lower()
        kinds = body.get("processingTypes") or list(PROCESSING_TYPES)
        wanted = set(str(i) for i in body.get("listIds") or [])
        found = [h for h in sorted(self.state.lists.values(), key=lambda h: int(h.id) if h.id.isdigit() else 0)
                 if query in h.name.lower() and h.processing_type in kinds and (not wanted or h.id in wanted)]
        page = found[offset:offset + count]
        lists = [{**self.view(h), "additionalProperties": self._additional(h)} for h in page]
        return ok({"lists": lists, "hasMore": offset + count < len(found), "offset": offset + len(page),
                   "total": len(found)})

    def _additional(self, hub_list: ListRecord) -> dict[str, str | None]:
        return {
            "hs_list_size": str(len(hub_list.members)),
            "hs_last_record_added_at": str(hub_list.last_added_ms) if hub_list.last_added_ms else None,
            "hs_last_record_removed_at": str(hub_list.last_removed_ms) if hub_list.last_removed_ms else None,
            "hs_folder_name": None, "hs_list_reference_count": "0",
        }

    def memberships(self, request: Request) -> Response:
        hub_list = self._find(request.params["listId"])
        raw_limit = request.arg("limit") or "100"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MEMBERSHIP_PAGE_MAX:
            raise ApiError(400, f"limit must be between 1 and {MEMBERSHIP_PAGE_MAX}")
        after, before = request.arg("after"), request.arg("before")
        after_id = decode_cursor(after) if after else None
        before_id = decode_cursor(before) if before and not after else None  # `after` wins if both
        ids, more, behind = self.state.members_page(hub_list, after_id, before_id, int(raw_limit))
        link = f"{BASE}/{hub_list.id}/memberships?limit={raw_limit}"
        paging: dict[str, Any] = {}
        if before_id is not None:
            # Descending page: `prev` keeps walking down, `next` returns upwards.
            if more and ids:
                paging["prev"] = {"before": encode_cursor(ids[-1]), "link": f"{link}&before={encode_cursor(ids[-1])}"}
            if behind and ids:
                paging["next"] = {"after": encode_cursor(ids[0]), "link": f"{link}&after={encode_cursor(ids[0])}"}
        else:
            if more and ids:
                paging["next"] = {"after": encode_cursor(ids[-1]), "link": f"{link}&after={encode_cursor(ids[-1])}"}
            if behind and ids:
                paging["prev"] = {"before": encode_cursor(ids[0]), "link": f"{link}&before={encode_cursor(ids[0])}"}
        results = [{"recordId": str(i), "membershipTimestamp": iso(hub_list.members[str(i)])} for i in ids]
        body: dict[str, Any] = {"results": results, "total": len(hub_list.members)}
        if paging:
            body["paging"] = paging
        return ok(body)

    # ----- membership writes -----------------------------------------------------------------

    def _writable(self, list_id: str) -> ListRecord:
        hub_list = self._find(list_id)
        if hub_list.processing_type == "DYNAMIC":
            # HubSpot's exact answer is [UNCONFIRMED]; status and category per the reference, text invented.
            raise ApiError(400, f"List {list_id} is a DYNAMIC list; memberships can only be changed on MANUAL or "
                                "SNAPSHOT lists.", subCategory="ListError.INVALID_LIST_PROCESSING_TYPE")
        return hub_list

    def _ids(self, raw: Any, what: str) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in raw):
            raise ApiError(400, f"Invalid input JSON: {what} must be an array of record id strings")
        if len(raw) > self.id_limit:
            raise ApiError(400, f"{what} holds {len(raw)} record ids; the maximum is {self.id_limit}")
        return [str(v) for v in raw]

    def _answer(self, added: list[str], removed: list[str], missing: list[str]) -> Response:
        # `recordsIdsAdded` is HubSpot's own spelling.
        body = {"recordsIdsAdded": added, "recordIdsRemoved": removed, "recordIdsMissing": missing}
        if self.omit_empty:
            body = {k: v for k, v in body.items() if v}
        return ok(body, mutated=bool(added or removed))

    def add(self, request: Request) -> Response:
        hub_list = self._writable(request.params["listId"])
        added, missing = self.state.add_members(hub_list, self._ids(json_body(request), "body"), now_ms(request))
        return self._answer(added, [], missing)

    def remove(self, request: Request) -> Response:
        hub_list = self._writable(request.params["listId"])
        removed, missing = self.state.remove_members(hub_list, self._ids(json_body(request), "body"), now_ms(request))
        return self._answer([], removed, missing)

    def add_and_remove(self, request: Request) -> Response:
        hub_list = self._writable(request.params["listId"])
        body = json_object(request)
        if "recordIdsToAdd" not in body or "recordIdsToRemove" not in body:
            raise ApiError(400, "Invalid input JSON: recordIdsToAdd and recordIdsToRemove are both required")
        to_add = self._ids(body["recordIdsToAdd"], "recordIdsToAdd")
        to_remove = self._ids(body["recordIdsToRemove"], "recordIdsToRemove")
        now = now_ms(request)
        removed, missing_r = self.state.remove_members(hub_list, to_remove, now)
        added, missing_a = self.state.add_members(hub_list, to_add, now)
        return self._answer(added, removed, list(dict.fromkeys(missing_a + missing_r)))
