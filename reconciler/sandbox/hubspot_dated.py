"""HubSpot's date-based API version `2026-03` in the sandbox: CRM paths and v4-shaped communication preferences.

The dated versions serve the same portal as the legacy v3 APIs, so every route here acts on the one
`HubSpotState` (same contacts, lists, statuses). Paths and shapes follow HubSpot's public OpenAPI
collection (`PublicApiSpecs/CRM/Contacts/Rollouts/424/2026-03/contacts.json`,
`CRM/Lists/Rollouts/144891/2026-03/lists.json`, `CRM/Properties/Rollouts/145899/2026-03/properties.json`,
`Communication Preferences/Subscriptions/Rollouts/176901/2026-03/subscriptions.json`): the CRM
requests and answers are v3's at new paths (`/crm/objects/2026-03/contacts`, `/crm/lists/2026-03`,
`/crm/properties/2026-03`), so those routes are v3's handlers registered a second time.

Communication preferences (`/communication-preferences/2026-03`): `GET definitions` (`results`),
`GET|POST statuses/{subscriberIdString}`, `POST statuses/batch/read?channel=EMAIL`, `POST
statuses/batch/write`. Statuses are `PublicStatus` (subscriberIdString, subscriptionId as an integer,
channel, status SUBSCRIBED | UNSUBSCRIBED | NOT_SPECIFIED, source, timestamp, legalBasis,
legalBasisExplanation, setStatusSuccessReason).

Choices where the reference says [UNCONFIRMED] (and the `SandboxOptions.variants` key for the other answer):
- Unlike v3, a `statusState: SUBSCRIBED` write re-subscribes an opted-out contact (the reference's
  "Facts added after review": v4 and the dated versions can re-subscribe), answering
  `RESUBSCRIBE_OCCURRED`; a portal-wide opt-out is lifted with it. The product must never send it.
- A repeated unsubscribe answers 200 with `setStatusSuccessReason: NO_STATUS_CHANGE`
  (`hubspot_dated_repeat_unsubscribe`: "400" answers v3's 400 "already unsubscribed").
- Unknown email: 404 OBJECT_NOT_FOUND like v3, on GET and POST statuses (`hubspot_status_unknown_email`:
  "empty" makes the GET answer 200 with no results). Unknown subscription id: 400.
- `statuses/batch/write` answers 200 (the only success status the spec lists) with `errors` and
  `numErrors` for failed inputs, each error naming its input in `context.subscriberIdString`;
  `statuses/batch/read` answers 207 with one grouped OBJECT_NOT_FOUND for unknown emails (as v4).
- Batch endpoints take at most 100 inputs (`hubspot_v4_batch_limit`), an unconfirmed limit.
- `statusState: NOT_SPECIFIED` is refused with 400 (what HubSpot does with it is unknown).
- Scopes: the single-contact endpoints need `subscriptions-definition-read`, `subscriptions-status-read`,
  `subscriptions-status-write` and the batch ones `subscription-status-batch-read`/`-write` (the
  reference's docs-based names; HubSpot's generated spec file still lists `communication_preferences.*`).
- Tier: the batch status scopes exist only on Marketing Hub Enterprise portals, so on a portal whose
  seed says `hubspot.tier: free | starter | professional` the batch endpoints answer the ordinary
  403 MISSING_SCOPES whatever `hubspot.scopes` holds. `hubspot.tier` defaults to `enterprise`
  (every seed written before it behaves as before).
"""

from __future__ import annotations

from typing import Any

from .http import Request, Response, Router
from .hubspot_common import ApiError, batch_answer, iso, json_object, now_ms, ok
from .hubspot_prefs import PreferenceRoutes, _unknown_email, status_target
from .hubspot_state import NOT_SUBSCRIBED, SUBSCRIBED, ContactRecord, HubSpotState

VERSION = "2026-03"
PREFS = f"/communication-preferences/{VERSION}"
# v3 CRM prefix -> its dated twin (same handler, same answers).
CRM_ALIASES = (("/crm/v3/objects/contacts", f"/crm/objects/{VERSION}/contacts"),
               ("/crm/v3/lists", f"/crm/lists/{VERSION}"),
               ("/crm/v3/properties", f"/crm/properties/{VERSION}"))
SEARCH_PATH = f"/crm/objects/{VERSION}/contacts/search"
ENTERPRISE_ONLY_SCOPES = frozenset({"subscription-status-batch-read", "subscription-status-batch-write"})
STATES = {"SUBSCRIBED": SUBSCRIBED, "UNSUBSCRIBED": NOT_SUBSCRIBED}


def dated_scopes(method: str, path: str) -> list[str] | None:
    """The scopes a dated communication-preferences endpoint needs, None for any other path."""
    if not path.startswith(PREFS + "/"):
        return None
    rest = path[len(PREFS):]
    if rest.startswith("/statuses/batch/"):
        return ["subscription-status-batch-" + ("read" if rest.endswith("/read") else "write")]
    if rest.startswith("/definitions"):
        return ["subscriptions-definition-read"]
    return ["subscriptions-status-" + ("read" if method == "GET" else "write")]


def legacy_twin(path: str) -> str:
    """A dated CRM path as its v3 twin (for the scope table); any other path unchanged."""
    for legacy, dated in CRM_ALIASES:
        if path == dated or path.startswith(dated + "/"):
            return legacy + path[len(dated):]
    return path


def tier_grants(tier: str, scope: str) -> bool:
    """Whether a portal of `tier` can hold `scope` at all (batch status scopes: Enterprise only)."""
    return tier == "enterprise" or scope not in ENTERPRISE_ONLY_SCOPES


class DatedAliases:
    """Stands in for the Router while the v3 CRM routes register: each is also registered under
    its dated path, right after it, so first-match order holds within each generation."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def add(self, method: str, pattern: str, handler: Any, name: str | None = None) -> None:
        self.router.add(method, pattern, handler, name)
        twin = next((dated + pattern[len(legacy):] for legacy, dated in CRM_ALIASES
                     if pattern == legacy or pattern.startswith(legacy + "/")), None)
        if twin is not None:
            self.router.add(method, twin, handler)


class DatedPreferenceRoutes:
    def __init__(self, state: HubSpotState, v4: PreferenceRoutes, variants: dict[str, Any]) -> None:
        self.state = state
        self.v4 = v4  # PublicStatus rendering and the v4 batch read, shared
        self.limit = int(variants.get("hubspot_v4_batch_limit", 100))
        self.repeat = str(variants.get("hubspot_dated_repeat_unsubscribe", "200"))

    def register(self, router: Router) -> None:
        router.add("GET", PREFS + "/definitions", self.definitions)
        router.add("POST", PREFS + "/statuses/batch/read", self.v4.batch_read)
        router.add("POST", PREFS + "/statuses/batch/write", self.batch_write)
        router.add("GET", PREFS + "/statuses/{subscriberIdString}", self.status)
        router.add("POST", PREFS + "/statuses/{subscriberIdString}", self.write_one)

    @staticmethod
    def _envelope(results: list[Any], started: int) -> dict[str, Any]:
        return {"status": "COMPLETE", "results": results, "startedAt": iso(started), "completedAt": iso(now_ms())}

    def definitions(self, request: Request) -> Response:
        started = now_ms()
        defs = [{"id": s["id"], "name": s["name"], "description": s["description"], "isActive": True,
                 "isDefault": False, "isInternal": False, "createdAt": iso(s["created_ms"]),
                 "updatedAt": iso(s["created_ms"]), "purpose": "Marketing", "communicationMethod": "Email",
                 "businessUnitId": 0} for s in self.state.subscriptions.values()]
        return ok(self._envelope(defs, started))

    def status(self, request: Request) -> Response:
        started = now_ms()
        if request.arg("channel") != "EMAIL":
            raise ApiError(400, "channel is required and must be EMAIL")
        email = request.params["subscriberIdString"]
        contact = self.state.find_contact(email, "email")
        if contact is None:
            if self.v4.unknown_status == "empty":
                return ok(self._envelope([], started))
            raise _unknown_email(email)
        return ok(self._envelope([self.v4._v4_status(contact, email, sid) for sid in self.state.subscriptions], started))

    def write_one(self, request: Request) -> Response:
        started = now_ms()
        body = json_object(request)
        result, changed = self._write(request, request.params["subscriberIdString"], body)
        return ok(self._envelope([result], started), mutated=changed)

    def batch_write(self, request: Request) -> Response:
        started = now_ms()
        inputs = json_object(request).get("inputs")
        if not isinstance(inputs, list):
            raise ApiError(400, "Invalid input JSON: 'inputs' is required and must be an array")
        if len(inputs) > self.limit:  # HubSpot's limit is [UNCONFIRMED]
            raise ApiError(400, f"Batch input size {len(inputs)} exceeds the maximum of {self.limit} inputs")
        results, errors, changed = [], [], False
        for item in inputs:
            email = str(item.get("subscriberIdString") or "") if isinstance(item, dict) else ""
            try:
                if not email:
                    raise ApiError(400, "every input needs a subscriberIdString")
                result, did_change = self._write(request, email, item)
            except ApiError as exc:
                errors.append({**exc.body, "context": {"subscriberIdString": [email]}})
                continue
            results.append(result)
            changed = changed or did_change
        response = batch_answer(results, errors, started, mutated=changed)
        response.status = 200  # the spec gives batch/write no 207: errors ride in a 200
        return response

    def _write(self, request: Request, email: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One PartialPublicStatusRequest for `email`: (PublicStatus answered, whether state changed)."""
        if body.get("channel") != "EMAIL":
            raise ApiError(400, "channel is required and must be EMAIL")
        wanted = STATES.get(str(body.get("statusState")))
        if wanted is None:
            raise ApiError(400, f"statusState {body.get('statusState')!r} cannot be set; use SUBSCRIBED or UNSUBSCRIBED")
        raw_sid = body.get("subscriptionId")
        if isinstance(raw_sid, bool) or not isinstance(raw_sid, (int, str)) or not str(raw_sid).isdigit():
            raise ApiError(400, "subscriptionId is required and must be an integer")
        sid = str(int(raw_sid))
        legal, explanation = body.get("legalBasis"), body.get("legalBasisExplanation")
        contact = status_target(self.state, email, sid, legal, explanation)
        return self._set(request, contact, email, sid, wanted, legal, explanation)

    def _set(self, request: Request, contact: ContactRecord, email: str, sid: str, wanted: str,
             legal: str | None, explanation: str | None) -> tuple[dict[str, Any], bool]:
        current = self.state.status_of(contact, sid)
        if current == wanted:
            if wanted == NOT_SUBSCRIBED and self.repeat == "400":
                raise ApiError(400, f"{email} is already unsubscribed from subscription {sid}")
            return self.v4._v4_status(contact, email, sid, "NO_STATUS_CHANGE"), False
        reason = "REQUESTED_CHANGE_OCCURRED"
        if wanted == SUBSCRIBED and current == NOT_SUBSCRIBED:
            # The unkind truth: the dated API re-subscribes an opt-out (v3 refuses). Never sent by the product.
            reason = "RESUBSCRIBE_OCCURRED"
            contact.opted_out_of_all = False
        self.state.set_status(contact, sid, wanted, now_ms(request), legal, explanation)
        return self.v4._v4_status(contact, email, sid, reason), True
