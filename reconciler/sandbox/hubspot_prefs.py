"""HubSpot Communication Preferences endpoints of the sandbox: v3 definitions/status/subscribe/unsubscribe, v4 batch.

Separate because subscription statuses are the compliance-critical part: repeated unsubscribes,
refused resubscriptions and unknown emails answer exactly as the reference says HubSpot does.
"""

from __future__ import annotations

from typing import Any

from .http import Request, Response, Router
from .hubspot_common import ApiError, batch_answer, iso, json_object, not_found_group, now_ms, ok
from .hubspot_state import NOT_SUBSCRIBED, SUBSCRIBED, ContactRecord, HubSpotState

V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
LEGAL_BASES = {"CONSENT_WITH_NOTICE", "LEGITIMATE_INTEREST_CLIENT", "LEGITIMATE_INTEREST_OTHER",
               "LEGITIMATE_INTEREST_PQL", "NON_GDPR", "PERFORMANCE_OF_CONTRACT", "PROCESS_AND_STORE"}
V4_STATES = {"SUBSCRIBED": SUBSCRIBED, "UNSUBSCRIBED": NOT_SUBSCRIBED}


def status_target(state: HubSpotState, email: str, sid: str, legal: Any, explanation: Any) -> ContactRecord:
    """The contact a status write (v3 or dated) is about, after the checks both generations make:
    a known legal basis (both required on a GDPR portal), a known email, a known subscription."""
    if legal is not None and legal not in LEGAL_BASES:
        raise ApiError(400, f"Invalid legalBasis {legal}; expected one of {sorted(LEGAL_BASES)}")
    if state.gdpr and (not legal or not explanation):
        raise ApiError(400, "legalBasis and legalBasisExplanation are required for GDPR enabled portals")
    contact = state.find_contact(email, "email")
    if contact is None:
        raise _unknown_email(email)
    if sid not in state.subscriptions:
        raise ApiError(400, f"Subscription {sid} does not exist in this portal")
    return contact


def _unknown_email(email: str) -> ApiError:
    return ApiError(404, f"{email} either has no subscriptions associated with this portal or does not exist",
                    "OBJECT_NOT_FOUND")


class PreferenceRoutes:
    def __init__(self, state: HubSpotState, variants: dict[str, Any]) -> None:
        self.state = state
        self.unknown_status = str(variants.get("hubspot_status_unknown_email", "404"))
        self.unset_status = str(variants.get("hubspot_v3_unset_status", "omit"))
        self.wording = str(variants.get("hubspot_already_unsubscribed_wording", "from"))
        self.v4_limit = int(variants.get("hubspot_v4_batch_limit", 100))

    def register(self, router: Router) -> None:
        router.add("GET", V3 + "/definitions", self.definitions)
        router.add("GET", V3 + "/status/email/{emailAddress}", self.status)
        router.add("POST", V3 + "/subscribe", self.subscribe)
        router.add("POST", V3 + "/unsubscribe", self.unsubscribe)
        router.add("POST", V4 + "/statuses/batch/read", self.batch_read)
        router.add("POST", V4 + "/statuses/batch/write", self.batch_write)

    # ----- v3 --------------------------------------------------------------------------------

    def definitions(self, request: Request) -> Response:
        defs = [{"id": s["id"], "name": s["name"], "description": s["description"], "isActive": True,
                 "isDefault": False, "isInternal": False, "createdAt": iso(s["created_ms"]),
                 "updatedAt": iso(s["created_ms"]), "purpose": "Marketing", "communicationMethod": "Email",
                 "businessUnitId": 0} for s in self.state.subscriptions.values()]
        return ok({"subscriptionDefinitions": defs})

    def _v3_status(self, contact: ContactRecord, sid: str, status: str | None) -> dict[str, Any]:
        sub = self.state.subscriptions[sid]
        record = contact.statuses.get(sid)
        return {"id": sid, "name": sub["name"], "description": sub["description"], "status": status or NOT_SUBSCRIBED,
                "sourceOfStatus": "PORTAL_WIDE_STATUS" if contact.opted_out_of_all else "SUBSCRIPTION_STATUS",
                "brandId": None, "preferenceGroupName": None,
                "legalBasis": (record.legal_basis if record else None) or "",
                "legalBasisExplanation": (record.explanation if record else None) or ""}

    def status(self, request: Request) -> Response:
        email = request.params["emailAddress"]
        contact = self.state.find_contact(email, "email")
        if contact is None:
            if self.unknown_status == "empty":
                return ok({"recipient": email, "subscriptionStatuses": []})
            raise _unknown_email(email)
        statuses = []
        for sid in self.state.subscriptions:
            status = self.state.status_of(contact, sid)
            if status is not None or self.unset_status == "not_subscribed":
                statuses.append(self._v3_status(contact, sid, status))
        return ok({"recipient": contact.properties.get("email", email), "subscriptionStatuses": statuses})

    def _v3_target(self, request: Request) -> tuple[ContactRecord, str, str | None, str | None]:
        body = json_object(request)
        email, sid = body.get("emailAddress"), body.get("subscriptionId")
        if not isinstance(email, str) or not email or sid is None:
            raise ApiError(400, "Invalid input JSON: emailAddress and subscriptionId are required")
        sid = str(sid)
        legal, explanation = body.get("legalBasis"), body.get("legalBasisExplanation")
        return status_target(self.state, email, sid, legal, explanation), sid, legal, explanation

    def subscribe(self, request: Request) -> Response:
        contact, sid, legal, explanation = self._v3_target(request)
        email = contact.properties["email"]
        status = self.state.status_of(contact, sid)
        if status == SUBSCRIBED:
            raise ApiError(400, f"{email} is already subscribed to subscription {sid}")
        if status == NOT_SUBSCRIBED:
            # HubSpot refuses API re-subscription of an explicit opt-out.
            raise ApiError(400, f"subscription {sid} for {email} cannot be updated because they have unsubscribed")
        self.state.set_status(contact, sid, SUBSCRIBED, now_ms(request), legal, explanation)
        return ok(self._v3_status(contact, sid, SUBSCRIBED), mutated=True)

    def unsubscribe(self, request: Request) -> Response:
        contact, sid, legal, explanation = self._v3_target(request)
        email = contact.properties["email"]
        if self.state.status_of(contact, sid) == NOT_SUBSCRIBED:
            raise ApiError(400, f"{email} is already unsubscribed {self.wording} subscription {sid}")
        self.state.set_status(contact, sid, NOT_SUBSCRIBED, now_ms(request), legal, explanation)
        return ok(self._v3_status(contact, sid, NOT_SUBSCRIBED), mutated=True)

    # ----- v4 batch --------------------------------------------------------------------------

    def _v4_status(self, contact: ContactRecord, email: str, sid: str, reason: str | None = None) -> dict[str, Any]:
        status = self.state.status_of(contact, sid)
        record = contact.statuses.get(sid)
        out: dict[str, Any] = {
            "subscriberIdString": email, "subscriptionId": int(sid), "subscriptionName": self.state.subscriptions[sid]["name"],
            "channel": "EMAIL", "status": {SUBSCRIBED: "SUBSCRIBED", NOT_SUBSCRIBED: "UNSUBSCRIBED"}.get(status or "", "NOT_SPECIFIED"),
            "source": "PORTAL_WIDE_STATUS" if contact.opted_out_of_all else "SUBSCRIPTION_STATUS",
            "timestamp": iso(record.at_ms if record else contact.created_ms), "businessUnitId": 0,
        }
        if record and record.legal_basis:
            out["legalBasis"] = record.legal_basis
            out["legalBasisExplanation"] = record.explanation or ""
        if reason:
            out["setStatusSuccessReason"] = reason
        return out

    def _v4_inputs(self, request: Request) -> list[Any]:
        if request.path.endswith("/read") and request.arg("channel") != "EMAIL":
            raise ApiError(400, "channel is required and must be EMAIL")
        body = json_object(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise ApiError(400, "Invalid input JSON: 'inputs' is required and must be an array")
        if len(inputs) > self.v4_limit:  # HubSpot's v4 batch limit is [UNCONFIRMED]
            raise ApiError(400, f"Batch input size {len(inputs)} exceeds the maximum of {self.v4_limit} inputs")
        return inputs

    def batch_read(self, request: Request) -> Response:
        started = now_ms()
        results, missing = [], []
        for email in self._v4_inputs(request):
            contact = self.state.find_contact(str(email), "email")
            if contact is None:
                missing.append(str(email))
                continue
            statuses = [self._v4_status(contact, str(email), sid) for sid in self.state.subscriptions]
            results.append({"subscriberIdString": str(email), "statuses": statuses})
        return batch_answer(results, [not_found_group("CONTACT", missing)] if missing else [], started)

    def batch_write(self, request: Request) -> Response:
        started = now_ms()
        results, errors = [], []
        changed = False
        for item in self._v4_inputs(request):
            try:
                result, did_change = self._v4_write(request, item)
            except ApiError as exc:
                errors.append({**exc.body, "context": {"subscriberIdString": [str(item.get("subscriberIdString", ""))
                                                                                 if isinstance(item, dict) else ""]}})
                continue
            results.append(result)
            changed = changed or did_change
        return batch_answer(results, errors, started, mutated=changed)

    def _v4_write(self, request: Request, item: Any) -> tuple[dict[str, Any], bool]:
        if not isinstance(item, dict):
            raise ApiError(400, "every input must be an object")
        email, sid = str(item.get("subscriberIdString", "")), str(item.get("subscriptionId", ""))
        wanted = V4_STATES.get(str(item.get("statusState")))
        if item.get("channel") != "EMAIL" or wanted is None:
            raise ApiError(400, "channel must be EMAIL and statusState SUBSCRIBED or UNSUBSCRIBED")
        legal = item.get("legalBasis")
        if legal is not None and legal not in LEGAL_BASES:
            raise ApiError(400, f"Invalid legalBasis {legal}")
        contact = self.state.find_contact(email, "email")
        if contact is None:
            raise _unknown_email(email)
        if sid not in self.state.subscriptions:
            raise ApiError(400, f"Subscription {sid} does not exist in this portal")
        current = self.state.status_of(contact, sid)
        if current == wanted:
            # v4 answers a repeat with 200 and NO_STATUS_CHANGE (suggested by the reason enum, [UNCONFIRMED]).
            return self._v4_status(contact, email, sid, "NO_STATUS_CHANGE"), False
        reason = "REQUESTED_CHANGE_OCCURRED"
        if current == NOT_SUBSCRIBED and wanted == SUBSCRIBED:
            # Unlike v3, v4 re-subscribes an opt-out (reference, facts added after review); the
            # product must never send it. A portal-wide opt-out is lifted with it, as in hubspot_dated.py.
            reason = "RESUBSCRIBE_OCCURRED"
            contact.opted_out_of_all = False
        self.state.set_status(contact, sid, wanted, now_ms(request), legal, item.get("legalBasisExplanation"))
        return self._v4_status(contact, email, sid, reason), True
