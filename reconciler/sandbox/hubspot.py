"""HubSpot emulator of the sandbox: authentication, scopes, rate limits, routing and the wire envelope.

The resource routes (contacts, search, lists, communication preferences) live in hubspot_*.py and
the portal's data in hubspot_state.py; this module is the one `VendorApi` the server talks to.

Choices where the reference (shared/reference/hubspot-api.md) says [UNCONFIRMED], and the
`SandboxOptions.variants` key that gives the other answer:
- Content type `application/json;charset=utf-8` (no space), as observed.
- 401 for a missing or wrong token, with the observed INVALID_AUTHENTICATION body. 403 MISSING_SCOPES
  only when the seed gives `hubspot.scopes` (the token then has only those).
- Contacts batch with more than 100 inputs: 400 VALIDATION_ERROR, invented message naming the size.
- Missing contact (`GET/PATCH /{id}`, also with `idProperty=email`): 404 with the observed body
  `{"status":"error","message":"resource not found","correlationId":…}` (no category).
- Unknown list: 404 OBJECT_NOT_FOUND "List <id> does not exist.". Membership cursors: opaque base64 tokens.
- Membership writes on a DYNAMIC list: 400 VALIDATION_ERROR, subCategory
  `ListError.INVALID_LIST_PROCESSING_TYPE`, invented text. At most 500 record ids per add/remove
  (`hubspot_membership_id_limit`). `MembershipsUpdateResponse` carries all three arrays, empty ones
  too (`hubspot_memberships_omit_empty`: True drops empty arrays, as one third party observed).
- `GET status/email/{unknown}`: 404 OBJECT_NOT_FOUND like subscribe/unsubscribe
  (`hubspot_status_unknown_email`: "empty" answers 200 with no statuses).
- v3 status of a subscription type the contact has no status for: omitted from `subscriptionStatuses`
  (`hubspot_v3_unset_status`: "not_subscribed" lists it as NOT_SUBSCRIBED).
- Repeated v3 unsubscribe: 400 VALIDATION_ERROR "<email> is already unsubscribed from subscription <id>"
  (`hubspot_already_unsubscribed_wording`: "to" gives HubSpot's own example wording).
- `hs_email_optout` / `hs_email_optout_<id>`: "true" once opted out (v3 NOT_SUBSCRIBED, or opted out of
  all; `hs_email_optout` also when every type is NOT_SUBSCRIBED), "" otherwise, including no status
  (`hubspot_optout_unset`: "null" answers null instead).
- v4 batch: at most 100 inputs (`hubspot_v4_batch_limit`); unknown emails → 207 with one grouped
  OBJECT_NOT_FOUND; a repeated write → 200 with `setStatusSuccessReason: NO_STATUS_CHANGE`;
  SUBSCRIBED on an opt-out re-subscribes it (`RESUBSCRIBE_OCCURRED`; reference, facts added after
  review: v4 can, v3 cannot).
- Date-based version 2026-03 (paths, v4-shaped statuses, re-subscription, batch tier): see hubspot_dated.py.
- Search 429: policyName `SECONDLY`. 429s carry no `Retry-After` (`hubspot_429_retry_after`: True adds it).
- The daily window resets at UTC midnight; a 429 does not use up the window.
"""

from __future__ import annotations

import uuid
from .http import Request, Response, Router, SandboxOptions
from .hubspot_common import CONTENT_TYPE, ApiError
from .hubspot_contacts import ContactRoutes, ContactViews
from .hubspot_dated import SEARCH_PATH as DATED_SEARCH_PATH
from .hubspot_dated import DatedAliases, DatedPreferenceRoutes, dated_scopes, legacy_twin, tier_grants
from .hubspot_limits import HubSpotLimiter
from .hubspot_lists import ListRoutes
from .hubspot_prefs import PreferenceRoutes
from .hubspot_search import SEARCH_PATH, SearchRoutes
from .hubspot_state import HubSpotState

AUTH_MESSAGE = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")
SEARCH_ENDPOINTS = {f"POST {SEARCH_PATH}", f"POST {DATED_SEARCH_PATH}"}


def required_scopes(endpoint: str) -> list[str]:
    """The granular scopes HubSpot's spec lists for an endpoint (checked only when the seed limits scopes)."""
    method, path = endpoint.split(" ", 1)
    dated = dated_scopes(method, path)
    if dated is not None:
        return dated
    path = legacy_twin(path)  # a dated CRM path needs what its v3 twin needs
    reading = method == "GET" or path.endswith("/batch/read") or path.endswith("/search")
    if path.startswith("/crm/v3/objects/contacts"):
        return ["crm.objects.contacts.read" if reading else "crm.objects.contacts.write"]
    if path.startswith("/crm/v3/properties"):
        return ["crm.schemas.contacts.read"]
    if path.startswith("/crm/v3/lists"):
        return ["crm.lists.read"] if reading else ["crm.lists.read", "crm.lists.write"]
    if path.startswith("/communication-preferences/v4/statuses/batch"):
        return ["communication_preferences.statuses.batch." + ("read" if reading else "write")]
    if path.startswith("/communication-preferences"):
        return ["communication_preferences.read" if reading else "communication_preferences.write"]
    return []


class HubSpotApi:
    name = "hubspot"

    def __init__(self, state: HubSpotState, options: SandboxOptions = SandboxOptions()) -> None:
        self.state = state
        self.options = options
        variants = dict(options.variants)
        unset = None if variants.get("hubspot_optout_unset") == "null" else ""
        views = ContactViews(state, unset)
        self.router = Router()
        # Search and the fixed batch paths first, so `{contactId}`/`{listId}` never swallow them.
        # Each CRM route is also served at its 2026-03 path (DatedAliases), on the same state.
        crm = DatedAliases(self.router)
        SearchRoutes(state, views).register(crm)  # type: ignore[arg-type]
        ContactRoutes(state, views).register(crm)  # type: ignore[arg-type]
        ListRoutes(state, int(variants.get("hubspot_membership_id_limit", 500)),
                   bool(variants.get("hubspot_memberships_omit_empty", False))).register(crm)  # type: ignore[arg-type]
        preferences = PreferenceRoutes(state, variants)
        preferences.register(self.router)
        DatedPreferenceRoutes(state, preferences, variants).register(self.router)
        self.limiter = HubSpotLimiter(options, state.portal_id)

    def owns(self, path: str) -> bool:
        return path.startswith("/crm/") or path.startswith("/communication-preferences/")

    def endpoint(self, request: Request) -> str:
        """The route name the request counters use (`METHOD /pattern`), or `METHOD <unknown>`."""
        found = self.router.match(request.method, request.path)
        return found[2] if found else f"{request.method} <unknown hubspot path>"

    def admit(self, request: Request) -> Response | None:
        endpoint = self.endpoint(request)
        header = request.headers.get("Authorization", "") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.state.token:
            return self._finish(Response(401, {"status": "error", "message": AUTH_MESSAGE,
                                               "category": "INVALID_AUTHENTICATION"}), endpoint)
        refusal, headers = self.limiter.admit(token.strip(), endpoint in SEARCH_ENDPOINTS)
        if refusal is not None:
            if refusal["policyName"] == "DAILY":
                refusal["requestId"] = str(uuid.uuid4())
            return self._finish(Response(429, refusal, headers=headers), endpoint)
        request.context["hubspot_headers"] = headers
        missing = self._missing_scopes(endpoint)
        if missing:
            return self._finish(Response(403, {
                "status": "error",
                "message": "This app hasn't been granted all required scopes to make this call. Read more about "
                           "required scopes here: https://developers.hubspot.com/scopes.",
                "errors": [{"message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": missing}}],
                "links": {"scopes": "https://developers.hubspot.com/scopes"},
                "category": "MISSING_SCOPES"}, headers=dict(headers)), endpoint)
        return None

    def _missing_scopes(self, endpoint: str) -> list[str]:
        """The endpoint's scopes when the token lacks one: not among the seed's `scopes`, or one the
        portal's tier cannot hold (the dated batch status scopes need Marketing Hub Enterprise)."""
        needed = required_scopes(endpoint)
        held = self.state.scopes
        lacking = [s for s in needed if (held is not None and s not in held) or not tier_grants(self.state.tier, s)]
        return needed if lacking else []

    def handle(self, request: Request) -> Response:
        found = self.router.match(request.method, request.path)
        if found is None:
            allowed = self.router.allows(request.path)
            if allowed:
                response = Response(405, {"status": "error", "message": f"HTTP {request.method} is not supported by this endpoint",
                                          "category": "VALIDATION_ERROR"}, headers={"Allow": ", ".join(allowed)})
            else:
                response = Response(404, {"status": "error", "message": f"No route for {request.method} {request.path}",
                                          "category": "OBJECT_NOT_FOUND"})
            return self._finish(response, f"{request.method} <unknown hubspot path>", request)
        handler, params, endpoint = found
        request.params = params
        try:
            with self.state.lock:
                response = handler(request)
        except ApiError as exc:
            response = Response(exc.status, dict(exc.body))
        return self._finish(response, endpoint, request)

    def release(self, request: Request) -> None:
        """Nothing to release: HubSpot limits requests per window, not concurrent connections."""

    def error_response(self, status: int) -> Response:
        message = {500: "internal error", 503: "Service Unavailable"}.get(status, "error")
        return self._finish(Response(status, {"status": "error", "message": message, "category": "INTERNAL_ERROR"
                                              if status == 500 else "SERVICE_UNAVAILABLE"}), "")

    def _finish(self, response: Response, endpoint: str, request: Request | None = None) -> Response:
        """The envelope every HubSpot answer has: correlation id (header and error body), content type, limits."""
        correlation = str(uuid.uuid4())
        if isinstance(response.body, dict) and response.status >= 400:
            response.body.setdefault("correlationId", correlation)
            if request is not None and request.path.startswith("/communication-preferences/"):
                response.body.setdefault("requestId", str(uuid.uuid4()))  # comm-prefs errors carry one
        response.headers["X-HubSpot-Correlation-Id"] = correlation
        if request is not None and not request.replay:
            for name, value in request.context.get("hubspot_headers", {}).items():
                response.headers.setdefault(name, value)
        response.content_type = CONTENT_TYPE
        response.endpoint = endpoint
        return response
