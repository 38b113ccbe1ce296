"""HubSpot CRM contacts and contact-property endpoints of the sandbox (`/crm/v3/objects/contacts`, `/crm/v3/properties`).

Request handling only: reads the wire shapes, calls the in-memory state, answers as HubSpot does.
Search lives in `hubspot_search.py`; every handler runs with the state lock held by `hubspot.py`.
"""

from __future__ import annotations

from typing import Any

from .http import Request, Response, Router
from .hubspot_common import ApiError, batch_answer, batch_inputs, iso, json_object, not_found_group, now_ms, ok
from .hubspot_state import READ_ONLY, STANDARD_PROPERTIES, OPTOUT_PREFIX, ContactRecord, HubSpotState

BASE = "/crm/v3/objects/contacts"
DEFAULT_PROPERTIES = ["firstname", "lastname", "email"]
ALWAYS = ["createdate", "lastmodifieddate", "hs_object_id"]


class ContactViews:
    """Turns contact records into HubSpot's SimplePublicObject shape."""

    def __init__(self, state: HubSpotState, unset_optout: str | None) -> None:
        self.state = state
        self.unset_optout = unset_optout

    def properties(self, contact: ContactRecord, requested: list[str] | None) -> dict[str, str | None]:
        # A requested property that is defined but unset reads back as null; an undefined one is omitted.
        names = (requested or DEFAULT_PROPERTIES) + ALWAYS
        return {n: self.state.value(contact, n, self.unset_optout) for n in dict.fromkeys(names) if self.state.is_defined(n)}

    def view(self, contact: ContactRecord, requested: list[str] | None = None) -> dict[str, Any]:
        return {"id": contact.id, "properties": self.properties(contact, requested),
                "createdAt": iso(contact.created_ms), "updatedAt": iso(contact.updated_ms), "archived": False}

    def written(self, contact: ContactRecord, props: dict[str, str | None]) -> dict[str, Any]:
        """What a write answers: the properties it set, plus the ones HubSpot always returns."""
        return self.view(contact, [n for n in props] or ["email"])


def _not_found() -> ApiError:
    # Observed body for a missing record (numeric id); reused for idProperty=email misses [UNCONFIRMED].
    return ApiError(404, "resource not found", category=None)


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f"Invalid input JSON: '{what}' must be an array of strings")
    return value


def _input_id(item: Any) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("id"), (str, int)) or item.get("id") == "":
        raise ApiError(400, "Invalid input JSON: every input needs an 'id'")
    return str(item["id"])


class ContactRoutes:
    def __init__(self, state: HubSpotState, views: ContactViews) -> None:
        self.state = state
        self.views = views

    def register(self, router: Router) -> None:
        router.add("GET", BASE, self.list_page)
        router.add("POST", BASE, self.create_one)
        router.add("POST", BASE + "/batch/read", self.batch_read)
        router.add("POST", BASE + "/batch/create", self.batch_create)
        router.add("POST", BASE + "/batch/update", self.batch_update)
        router.add("POST", BASE + "/batch/upsert", self.batch_upsert)
        router.add("GET", BASE + "/{contactId}", self.get_one)
        router.add("PATCH", BASE + "/{contactId}", self.patch_one)
        router.add("GET", "/crm/v3/properties/contacts", self.properties)
        router.add("GET", "/crm/v3/properties/contacts/{propertyName}", self.property_one)

    # ----- single records --------------------------------------------------------------------

    def list_page(self, request: Request) -> Response:
        limit = _int_arg(request, "limit", 10, 100)
        after = request.arg("after")
        ordered = sorted(self.state.contacts.values(), key=lambda c: int(c.id))
        if after:
            ordered = [c for c in ordered if int(c.id) >= int(after)] if after.isdigit() else []
        page = ordered[:limit]
        body: dict[str, Any] = {"results": [self.views.view(c, request.args("properties") or None) for c in page]}
        if len(ordered) > limit:
            nxt = ordered[limit].id  # HubSpot: `after` "is the Record ID of the next contact"
            body["paging"] = {"next": {"after": nxt, "link": f"{BASE}?after={nxt}"}}
        return ok(body)

    def get_one(self, request: Request) -> Response:
        contact = self.state.find_contact(request.params["contactId"], request.arg("idProperty"))
        if contact is None:
            raise _not_found()
        return ok(self.views.view(contact, request.args("properties") or None))

    def patch_one(self, request: Request) -> Response:
        contact = self.state.find_contact(request.params["contactId"], request.arg("idProperty"))
        if contact is None:
            raise _not_found()
        props = self.state.check_properties(json_object(request).get("properties"))
        self.state.update_contact(contact, props, now_ms(request))
        return ok(self.views.written(contact, props), mutated=True)

    def create_one(self, request: Request) -> Response:
        props = self.state.check_properties(json_object(request).get("properties"))
        contact = self.state.create_contact(props, now_ms(request))
        return ok(self.views.written(contact, props), status=201, mutated=True)

    # ----- batches ---------------------------------------------------------------------------

    def batch_read(self, request: Request) -> Response:
        started = now_ms()
        body = json_object(request)
        inputs = batch_inputs(body)
        requested = _names(body.get("properties"), "properties") or None
        id_property = body.get("idProperty")
        results, missing, seen = [], [], set()
        for item in inputs:
            key = _input_id(item)
            contact = self.state.find_contact(key, id_property)
            if contact is None:
                missing.append(key)
            elif contact.id not in seen:
                seen.add(contact.id)
                results.append(self.views.view(contact, requested))
        return batch_answer(results, [not_found_group("CONTACT", missing)] if missing else [], started)

    def batch_create(self, request: Request) -> Response:
        started = now_ms()
        inputs = batch_inputs(json_object(request))
        checked = []
        for item in inputs:
            if not isinstance(item, dict):
                raise ApiError(400, "Invalid input JSON: every input must be an object")
            checked.append(self.state.check_properties(item.get("properties")))
        traces = [item.get("objectWriteTraceId") for item in inputs]
        # Multi-status is opt-in: only with a unique objectWriteTraceId on every input.
        multi = bool(inputs) and all(traces) and len(set(traces)) == len(traces)
        if not multi:
            self._refuse_duplicate_emails(checked)
        results, errors = [], []
        for props, trace in zip(checked, traces):
            try:
                contact = self.state.create_contact(props, now_ms(request))
            except ApiError as exc:
                errors.append({**exc.body, "context": {"objectWriteTraceId": [str(trace)]}})
                continue
            results.append(self.views.written(contact, props))
        return batch_answer(results, errors, started, ok_status=201, mutated=bool(results))

    def _refuse_duplicate_emails(self, checked: list[dict[str, str | None]]) -> None:
        seen: set[str] = set()
        for props in checked:
            email = props.get("email")
            if not email:
                continue
            if email in self.state.by_email:
                raise ApiError(409, f"Contact already exists. Existing ID: {self.state.by_email[email]}", "CONFLICT")
            if email in seen:
                raise ApiError(400, f"Duplicate email {email} in batch inputs")
            seen.add(email)

    def batch_update(self, request: Request) -> Response:
        started = now_ms()
        inputs = batch_inputs(json_object(request))
        found: list[tuple[ContactRecord, dict[str, str | None]]] = []
        missing: list[str] = []
        for item in inputs:
            key = _input_id(item)
            props = self.state.check_properties(item.get("properties"))
            contact = self.state.find_contact(key, item.get("idProperty"))
            if contact is None:
                missing.append(key)
            else:
                found.append((contact, props))
        self._refuse_email_moves(found)
        for contact, props in found:
            self.state.update_contact(contact, props, now_ms(request))
        results = [self.views.written(contact, props) for contact, props in found]
        return batch_answer(results, [not_found_group("CONTACT", missing)] if missing else [], started,
                            mutated=bool(found))

    def _refuse_email_moves(self, found: list[tuple[ContactRecord, dict[str, str | None]]]) -> None:
        """All-or-nothing: an email taken by another contact refuses the whole batch before any write."""
        claimed: dict[str, str] = {}
        for contact, props in found:
            email = props.get("email")
            if not email:
                continue
            owner = self.state.by_email.get(email, claimed.get(email))
            if owner is not None and owner != contact.id:
                raise ApiError(409, f"Contact already exists. Existing ID: {owner}", "CONFLICT")
            claimed[email] = contact.id

    def batch_upsert(self, request: Request) -> Response:
        started = now_ms()
        inputs = batch_inputs(json_object(request))
        planned = []
        for item in inputs:
            key = _input_id(item)
            if item.get("idProperty") != "email":
                raise ApiError(400, "Upsert by idProperty other than email is not supported by this emulator; use idProperty: email")
            props = self.state.check_properties(item.get("properties"))
            if props.get("email") not in (None, key.strip().lower()):
                raise ApiError(400, f"Partial upserts are not supported when using email as the idProperty ({key})")
            planned.append((key.strip().lower(), props))
        results = []
        for email, props in planned:
            contact = self.state.find_contact(email, "email")
            created = contact is None
            if contact is None:
                contact = self.state.create_contact({**props, "email": email}, now_ms(request))
            else:
                self.state.update_contact(contact, props, now_ms(request))
            results.append({**self.views.written(contact, {**props, "email": email}), "new": created})
        return batch_answer(results, [], started, mutated=bool(results))

    # ----- property definitions -------------------------------------------------------------

    def properties(self, request: Request) -> Response:
        return ok({"results": [self._definition(name) for name in self.state.property_names()]})

    def property_one(self, request: Request) -> Response:
        name = request.params["propertyName"]
        if not self.state.is_defined(name):
            raise ApiError(404, f"Unable to find property {name} for object type 0-1", "OBJECT_NOT_FOUND")
        return ok(self._definition(name))

    def _definition(self, name: str) -> dict[str, Any]:
        created = self.state.custom_properties.get(name, 0)
        if name in STANDARD_PROPERTIES:
            kind, field_type, label = STANDARD_PROPERTIES[name]
        elif name.startswith(OPTOUT_PREFIX) and name[len(OPTOUT_PREFIX):] in self.state.subscriptions:
            sub = self.state.subscriptions[name[len(OPTOUT_PREFIX):]]
            kind, field_type, label = "enumeration", "booleancheckbox", f"Opted out of email: {sub['name']}"
            created = sub["created_ms"]
        else:
            kind, field_type, label = "string", "text", name
        hubspot_defined = name not in self.state.custom_properties
        read_only = name in READ_ONLY or name.startswith(OPTOUT_PREFIX)
        return {
            "name": name, "label": label, "type": kind, "fieldType": field_type, "description": "",
            "groupName": "emailinformation" if name.startswith("hs_email_optout") else "contactinformation",
            "options": [{"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                        {"label": "No", "value": "false", "displayOrder": 1, "hidden": False}] if field_type == "booleancheckbox" else [],
            "createdAt": iso(created), "updatedAt": iso(created), "displayOrder": -1, "calculated": False,
            "externalOptions": False, "hasUniqueValue": name == "email", "hidden": False,
            "hubspotDefined": hubspot_defined, "archived": False, "formField": not read_only,
            "modificationMetadata": {"archivable": not hubspot_defined, "readOnlyDefinition": hubspot_defined,
                                     "readOnlyValue": read_only},
        }


def _int_arg(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, f"{name} must be a positive integer")
    if int(raw) > maximum:
        raise ApiError(400, f"{name} must be less than or equal to {maximum}")
    return int(raw)
