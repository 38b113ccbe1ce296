"""The Mailchimp Marketing API v3 emulator: routes under /3.0, authentication, the 10-connection
limit and problem documents; what the sandbox server calls through the VendorApi protocol.

Handlers live in mailchimp_members.py / mailchimp_lists.py, state in mailchimp_state.py, rules in
mailchimp_writes.py and mailchimp_compliance.py. The vendor behaviour modelled where it matters
(by default the recorded, unkind answer a client must never count on being kinder), the choices
made where the reference sheet says [UNCONFIRMED], and the `SandboxOptions.variants` switch
giving the other answer:

- GET members without `status` leaves archived members out; `status=archived` lists them.
  Variant `mailchimp_archived_in_unfiltered_list: True` includes them.
- Unsubscribe provenance (reference, facts added after review): each member records who
  unsubscribed it, `unsubscribed_by` self | admin | api (a seeded unsubscribe defaults to self; an
  unsubscribe through the API, including a create as unsubscribed, is api) and keeps it through an
  archive and the state file. A move to `subscribed` (PUT/PATCH `status`, or a restore of an
  archived member) is refused 400 Member In Compliance State for a self-unsubscribed or cleaned
  member (or one archived while it was), and succeeds for an admin- or API-unsubscribed one.
  `unsubscribe_reason` shows "N/A (Unsubscribed by an admin)" (admin), "N/A (Unsubscribed by
  admin)" (API) or the person's own reason (self; the seed's, blank if none): both "admin"
  spellings are recorded, so a client cannot rely on the text.
  `mailchimp_refuse_all_unsubscribed: True` refuses every unsubscribed member, admin-made or not.
- A move to `pending` from a compliance state is allowed (the reported way back; it sends a
  confirmation email, counted in `MailchimpState.confirmations`). A member already pending set
  to pending again sends none. `mailchimp_refuse_pending_from_compliance: True` refuses it too.
- DELETE (archive) of a pending, cleaned or already archived member: 405 Method Not Allowed,
  "This list member cannot be removed. Can not archive a contact that is bounced, pending or
  archived" (reference). Subscribed, unsubscribed and transactional members archive (204).
  `mailchimp_delete_archived: "204"` makes an archived member's DELETE an idempotent no-op, "404"
  a 404. `mailchimp_delete_compliance_405: True` also refuses unsubscribed members, with the
  older recorded 405 "This list member cannot be removed.  Please contact support." (trigger
  unknown). A never-seen or permanently deleted member: 404 either way.
- An archived member is restored by PUT/PATCH with `status`; a PUT with only `status_if_new`
  leaves it archived (reference, facts added after review: "status_if_new does not unarchive").
  `mailchimp_status_if_new_unarchives: True` restores it as a re-add (the riskier answer once
  assumed). The compliance rule above applies to what the member was before the archive.
- `count` > 1000: 400 Invalid Resource. `mailchimp_count_over_max: "clamp"` serves 1000.
- Batch subscribe over 500 members: 400 Invalid Resource. `mailchimp_batch_over_limit:
  "truncate"` processes the first 500. Compliance refusals there are `ERROR_GENERIC` entries.
  Per-member `tags` (names) are added to new and existing members; with `sync_tags: true` they
  replace all of the member's tags (reference, facts added after review); without `tags` in an
  item its tags are left alone.
- 429 has no Retry-After. `mailchimp_429_retry_after: True` adds `Retry-After: 1`.
- PUT/PATCH `merge_fields` merge per key. `mailchimp_merge_fields_replace: True` replaces.
- Unknown merge tags are refused (400 Invalid Resource, errors per field).
  `mailchimp_unknown_merge_fields: "ignore"` drops them silently.
- A PUT creating a member with neither `status` nor `status_if_new`: 400 Invalid Resource.
  When both are sent for a new member, `status` wins.
- A path hash that does not match md5(lower(email_address)): 400 Member Exists if the email's
  own hash is a member, else 400 Invalid Resource. Addresses are not trimmed before hashing.
- Email in place of the hash: member GET/PUT/PATCH/DELETE and GET tags (as the spec says);
  POST tags and delete-permanent take the hash only (404 otherwise).
- GET members `status` takes one value; a comma-separated list is 400 Invalid Resource. `fields`
  with `exclude_fields` is 400 Bad Request (the docs say only "will throw an error").
- Cleaned members may have merge fields updated. `since_last_changed` is inclusive (>=), at
  one-second resolution. Default member order: creation order (stable for offset paging).
- Tag names match case-insensitively; deactivating a tag a member lacks is a no-op. Bulk segment
  add/remove treats archived members as not on the audience (reported in `errors`).
- Missing key: 401 "API Key Missing"; wrong key or data centre: 401 "API Key Invalid". Accepted
  schemes: Basic (any user, key as password) and Bearer. A Host of `<dc>.api.mailchimp.com` must
  name the key's dc; other hosts (loopback, `api.mailchimp.com`) are accepted.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import uuid
from functools import partial
from typing import Any, Callable, Mapping

from reconciler.sandbox import mailchimp_account as account
from reconciler.sandbox import mailchimp_errors as err
from reconciler.sandbox import mailchimp_lists as lists
from reconciler.sandbox import mailchimp_members as members
from reconciler.sandbox.http import Request, Response, Router, SandboxOptions
from reconciler.sandbox.mailchimp_common import ok
from reconciler.sandbox.mailchimp_errors import Problem
from reconciler.sandbox.mailchimp_state import MailchimpState

PREFIX = "/3.0"
DC_HOST = re.compile(r"^([a-z]+[0-9]+)\.api\.mailchimp\.com$")
MEMBER = "/3.0/lists/{list_id}/members/{subscriber_hash}"
SEGMENT = "/3.0/lists/{list_id}/segments/{segment_id}"
Handler = Callable[[MailchimpState, Mapping[str, Any], Request], Response]

ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/3.0/", lambda s, v, r: ok(_root(s))),
    ("GET", "/3.0/ping", lambda s, v, r: ok({"health_status": "Everything's Chimpy!"})),
    ("GET", "/3.0/lists/{list_id}", lists.get_list),
    ("POST", "/3.0/lists/{list_id}", lists.batch_subscribe),
    ("GET", "/3.0/lists/{list_id}/merge-fields", lists.get_merge_fields),
    ("GET", "/3.0/lists/{list_id}/members", members.list_members),
    ("POST", "/3.0/lists/{list_id}/members", members.add_member),
    ("GET", MEMBER, members.get_member),
    ("PUT", MEMBER, members.put_member),
    ("PATCH", MEMBER, members.patch_member),
    ("DELETE", MEMBER, members.delete_member),
    ("GET", MEMBER + "/tags", members.get_member_tags),
    ("POST", MEMBER + "/tags", members.post_member_tags),
    ("POST", MEMBER + "/actions/delete-permanent", members.delete_permanent),
    ("GET", "/3.0/lists/{list_id}/segments", lists.list_segments),
    ("POST", "/3.0/lists/{list_id}/segments", lists.create_segment),
    ("GET", SEGMENT, lists.get_segment),
    ("POST", SEGMENT, lists.segment_members),
    ("GET", SEGMENT + "/members", lists.list_segment_members),
    ("GET", "/3.0/lists/{list_id}/tag-search", lists.tag_search),
]
ROUTES += account.ROUTES  # GET /3.0/lists (every audience), read by reconcile --import


def _root(state: MailchimpState) -> dict[str, Any]:
    with state.lock:
        total = sum(
            1 for audience in state.audiences.values() for member in audience.members.values() if member.status == "subscribed"
        )
    return {
        "account_id": "sandbox", "login_id": "sandbox", "account_name": "Sandbox", "email": "sandbox@example.com",
        "first_name": "Sandbox", "last_name": "Account", "username": "sandbox", "avatar_url": "", "role": "owner",
        "member_since": "2020-01-01T00:00:00+00:00", "pricing_plan_type": "monthly", "account_timezone": "UTC",
        "account_industry": "", "pro_enabled": False, "last_login": "2020-01-01T00:00:00+00:00",
        "total_subscribers": total, "_links": [],
    }


class MailchimpApi:
    """VendorApi for Mailchimp: `admit` authenticates and counts connections, `handle` routes."""

    name = "mailchimp"

    def __init__(self, state: MailchimpState, options: SandboxOptions | None = None) -> None:
        self.state = state
        self.options = options or SandboxOptions()
        self.router = Router()
        for method, pattern, handler in ROUTES:
            self.router.add(method, pattern, partial(handler, state, self.options.variants))
        self._gate = threading.Lock()
        self._in_flight: dict[str, int] = {}

    def owns(self, path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    # -- admission -------------------------------------------------------------------------

    def admit(self, request: Request) -> Response | None:
        try:
            key = self._authenticate(request)
            trigger = request.headers.get("X-Trigger-Error")
            if trigger:
                factory = err.TRIGGERS.get(trigger)
                raise factory() if factory else Problem(400, "Bad Request", f"Unknown X-Trigger-Error value {trigger!r}.")
            if self.options.rate_limits:
                self._take_connection(request, key)
        except Problem as problem:
            response = problem.response(self.state.dc)
            response.endpoint = self._endpoint(request)
            return response
        return None

    def release(self, request: Request) -> None:
        key = request.context.pop("mailchimp_connection", None)
        if key is not None:
            with self._gate:
                self._in_flight[key] -= 1

    def _take_connection(self, request: Request, key: str) -> None:
        # The limit is on requests open at once (reference §8), held from admit to release.
        limit = self.options.mailchimp_max_connections
        with self._gate:
            if self._in_flight.get(key, 0) >= limit:
                raise err.too_many_requests(limit, bool(self.options.variants.get("mailchimp_429_retry_after", False)))
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            request.context["mailchimp_connection"] = key

    def in_flight(self) -> int:
        """Requests admitted and not yet released (for tests of the connection limit)."""
        with self._gate:
            return sum(self._in_flight.values())

    def _authenticate(self, request: Request) -> str:
        header = (request.headers.get("Authorization") or "").strip()
        if not header:
            raise err.key_missing()
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                raise err.key_invalid() from None
        elif scheme.lower() == "bearer":
            key = value.strip()
        else:
            raise err.key_invalid()
        if not key:
            raise err.key_missing()
        if key != self.state.api_key:
            raise err.key_invalid()
        host = (request.headers.get("Host") or "").lower()
        found = DC_HOST.match(host.rsplit(":", 1)[0] if not host.startswith("[") else host)
        if found and found.group(1) != self.state.dc:
            raise err.key_invalid()
        return key

    # -- handling --------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        method = request.method.upper()
        override = request.headers.get("X-HTTP-Method-Override")
        if override:
            if method != "POST" or override.upper() not in ("PATCH", "PUT", "DELETE"):
                response = Problem(422, "Invalid Method Override", "X-HTTP-Method-Override is only allowed on POST with PATCH, PUT or DELETE.").response(self.state.dc, request_id)
                response.endpoint = self._endpoint(request)
                return response
            method = override.upper()
        found = self.router.match(method, request.path)
        if found is None:
            allowed = self.router.allows(request.path)
            problem = err.method_not_allowed(allow=allowed) if allowed else err.not_found()
            response = problem.response(self.state.dc, request_id)
            response.endpoint = f"{method} {PREFIX}/*"
            return response
        handler, params, endpoint = found
        request.params = params
        if request.time is None:
            request.time = self.state.clock()
        with self.state.lock:
            self.state.at = request.time
            try:
                response = handler(request)
            except Problem as problem:
                response = problem.response(self.state.dc, request_id)
            finally:
                self.state.at = None
        response.endpoint = endpoint
        response.headers.setdefault("X-Request-Id", request_id)
        return response

    def _endpoint(self, request: Request) -> str:
        found = self.router.match(request.method, request.path)
        return found[2] if found else f"{request.method.upper()} {PREFIX}/*"

    def error_response(self, status: int) -> Response:
        title, detail = err.SERVER_ERRORS.get(status, err.SERVER_ERRORS[500])
        return Problem(status, title, detail).response(self.state.dc)
