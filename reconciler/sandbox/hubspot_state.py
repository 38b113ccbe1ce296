"""In-memory HubSpot portal of the sandbox: contacts, lists and memberships, subscription types and statuses.

Kept apart from the routes so the threaded server, journal replay and tests act on one state object
with one lock; it knows HubSpot's data rules (unique emails, read-only properties) but no HTTP.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .hubspot_common import ApiError, iso

SUBSCRIBED = "SUBSCRIBED"
NOT_SUBSCRIBED = "NOT_SUBSCRIBED"
PROCESSING_TYPES = ("MANUAL", "DYNAMIC", "SNAPSHOT")
TIERS = ("free", "starter", "professional", "enterprise")  # the seed's `hubspot.tier` (Marketing Hub)
# HubSpot's standard contact properties the product touches (name -> (type, fieldType, label)).
STANDARD_PROPERTIES: dict[str, tuple[str, str, str]] = {
    "email": ("string", "text", "Email"),
    "firstname": ("string", "text", "First Name"),
    "lastname": ("string", "text", "Last Name"),
    "phone": ("string", "phonenumber", "Phone Number"),
    "company": ("string", "text", "Company Name"),
    "jobtitle": ("string", "text", "Job Title"),
    "city": ("string", "text", "City"),
    "country": ("string", "text", "Country/Region"),
    "lifecyclestage": ("enumeration", "radio", "Lifecycle Stage"),
    "createdate": ("datetime", "date", "Create Date"),
    "lastmodifieddate": ("datetime", "date", "Last Modified Date"),
    "hs_object_id": ("number", "number", "Record ID"),
    "hs_email_optout": ("bool", "booleancheckbox", "Unsubscribed from all email"),
}
# Maintained by HubSpot itself; writes are refused with READ_ONLY_VALUE.
READ_ONLY = {"createdate", "lastmodifieddate", "hs_object_id", "hs_email_optout"}
OPTOUT_PREFIX = "hs_email_optout_"
DATE_PROPERTIES = {"createdate", "lastmodifieddate"}


@dataclass(slots=True)
class SubscriptionStatus:
    status: str  # SUBSCRIBED | NOT_SUBSCRIBED
    at_ms: int
    legal_basis: str | None = None
    explanation: str | None = None


@dataclass(slots=True)
class ContactRecord:
    id: str
    properties: dict[str, str]  # stored values; computed ones (ids, dates, opt-outs) are added on read
    created_ms: int
    updated_ms: int
    statuses: dict[str, SubscriptionStatus] = field(default_factory=dict)
    opted_out_of_all: bool = False


@dataclass(slots=True)
class ListRecord:
    id: str
    name: str
    processing_type: str
    created_ms: int
    updated_ms: int
    members: dict[str, int] = field(default_factory=dict)  # record id -> membership timestamp (ms)
    version: int = 1
    last_added_ms: int | None = None
    last_removed_ms: int | None = None
    _sorted: list[int] | None = None  # record ids as ints, ascending; rebuilt after a change

    def sorted_ids(self) -> list[int]:
        if self._sorted is None:
            self._sorted = sorted(int(record_id) for record_id in self.members)
        return self._sorted

    def touched(self, now: int) -> None:
        self._sorted = None
        self.updated_ms = now
        self.version += 1


class HubSpotState:
    """One HubSpot portal. Every public method takes the (re-entrant) lock; handlers hold it for a whole request."""

    def __init__(self, token: str = "sandbox-token", portal_id: int = 12345678, scopes: list[str] | None = None) -> None:
        self.lock = threading.RLock()
        self.token = token
        self.portal_id = portal_id
        self.scopes = scopes  # None: the token has every scope
        self.gdpr = False  # when True, v3 subscribe/unsubscribe require legalBasis
        self.tier = "enterprise"  # Marketing Hub tier: below enterprise, no batch status scopes (hubspot_dated.py)
        self.contacts: dict[str, ContactRecord] = {}
        self.by_email: dict[str, str] = {}
        self.lists: dict[str, ListRecord] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}  # id -> {id, name, description, created_ms}
        self.custom_properties: dict[str, int] = {}  # name -> created ms
        self.next_id = 1

    # ----- construction and persistence -------------------------------------------------------

    @classmethod
    def from_seed(cls, seed: Mapping[str, Any]) -> HubSpotState:
        """State from the `hubspot:` part of a seed (SPEC §7); raises ValueError naming the bad entry."""
        now = int(time.time() * 1000)
        state = cls(str(seed.get("token", "sandbox-token")), int(seed.get("portal_id", 12345678)),
                    list(seed["scopes"]) if seed.get("scopes") is not None else None)
        state.gdpr = bool(seed.get("gdpr", False))
        state.tier = str(seed.get("tier") or "enterprise").lower()
        if state.tier not in TIERS:
            raise ValueError(f"hubspot.tier: {state.tier!r} is not one of {', '.join(TIERS)}")
        for sub in seed.get("subscriptions") or []:
            sid = str(sub["id"])
            if not sid.isdigit():
                raise ValueError(f"hubspot.subscriptions: id {sid!r} must be numeric")
            state.subscriptions[sid] = {"id": sid, "name": str(sub.get("name", f"Subscription {sid}")),
                                        "description": str(sub.get("description", "")), "created_ms": now}
        for name in seed.get("properties") or []:
            state.custom_properties.setdefault(str(name), now)
        known = STANDARD_PROPERTIES.keys()
        max_id = 0
        for index, raw in enumerate(seed.get("contacts") or []):
            cid = str(raw.get("id") or "")
            if not cid.isdigit():
                raise ValueError(f"hubspot.contacts[{index}]: id {cid!r} must be a numeric string")
            props = {str(k): str(v) for k, v in (raw.get("properties") or {}).items() if v is not None}
            email = str(raw.get("email") or props.get("email") or "").strip().lower()
            if email:
                props["email"] = email
                if email in state.by_email:
                    raise ValueError(f"hubspot.contacts[{index}]: email {email} is already used by contact {state.by_email[email]}")
                state.by_email[email] = cid
            for name in props:
                if name not in known and name not in state.custom_properties:
                    state.custom_properties[name] = now
            record = ContactRecord(cid, props, now, now, opted_out_of_all=bool(raw.get("opted_out_of_all", False)))
            for key, status in (("subscribed", SUBSCRIBED), ("unsubscribed", NOT_SUBSCRIBED)):
                for sid in raw.get(key) or []:
                    if str(sid) not in state.subscriptions:
                        raise ValueError(f"hubspot.contacts[{index}].{key}: unknown subscription {sid}")
                    record.statuses[str(sid)] = SubscriptionStatus(status, now)
            if cid in state.contacts:
                raise ValueError(f"hubspot.contacts[{index}]: duplicate id {cid}")
            state.contacts[cid] = record
            max_id = max(max_id, int(cid))
        state.next_id = max_id + 1
        for index, raw in enumerate(seed.get("lists") or []):
            lid = str(raw["id"])
            kind = str(raw.get("processing_type", "MANUAL")).upper()
            if kind not in PROCESSING_TYPES:
                raise ValueError(f"hubspot.lists[{index}]: processing_type {kind} is not one of {PROCESSING_TYPES}")
            hub_list = ListRecord(lid, str(raw.get("name", f"List {lid}")), kind, now, now)
            for member in raw.get("members") or []:
                if str(member) not in state.contacts:
                    raise ValueError(f"hubspot.lists[{index}] ({lid}): member {member} is not a seeded contact")
                hub_list.members[str(member)] = now
            state.lists[lid] = hub_list
        return state

    def to_json(self) -> dict[str, Any]:
        """A deep, JSON-able copy (taken under the lock, so it can be written out after release)."""
        with self.lock:
            return {
                "token": self.token, "portal_id": self.portal_id, "scopes": self.scopes, "gdpr": self.gdpr,
                "tier": self.tier,
                "next_id": self.next_id,
                "subscriptions": [dict(sub) for sub in self.subscriptions.values()],
                "custom_properties": dict(self.custom_properties),
                "contacts": [
                    {"id": c.id, "properties": dict(c.properties), "created": c.created_ms, "updated": c.updated_ms,
                     "opted_out_of_all": c.opted_out_of_all,
                     "statuses": {sid: [s.status, s.at_ms, s.legal_basis, s.explanation] for sid, s in c.statuses.items()}}
                    for c in self.contacts.values()
                ],
                "lists": [
                    {"id": h.id, "name": h.name, "processing_type": h.processing_type, "created": h.created_ms,
                     "updated": h.updated_ms, "version": h.version, "last_added": h.last_added_ms,
                     "last_removed": h.last_removed_ms, "members": list(h.members.items())}
                    for h in self.lists.values()
                ],
            }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HubSpotState:
        state = cls(data["token"], data["portal_id"], data.get("scopes"))
        state.gdpr = bool(data.get("gdpr", False))
        state.tier = str(data.get("tier") or "enterprise")  # state files written before tiers: enterprise
        state.next_id = int(data["next_id"])
        state.subscriptions = {sub["id"]: dict(sub) for sub in data["subscriptions"]}
        state.custom_properties = dict(data["custom_properties"])
        for raw in data["contacts"]:
            record = ContactRecord(raw["id"], dict(raw["properties"]), raw["created"], raw["updated"],
                                   {sid: SubscriptionStatus(*s) for sid, s in raw["statuses"].items()},
                                   raw["opted_out_of_all"])
            state.contacts[record.id] = record
            if "email" in record.properties:
                state.by_email[record.properties["email"]] = record.id
        for raw in data["lists"]:
            state.lists[raw["id"]] = ListRecord(raw["id"], raw["name"], raw["processing_type"], raw["created"],
                                                raw["updated"], {rid: ms for rid, ms in raw["members"]},
                                                raw["version"], raw["last_added"], raw["last_removed"])
        return state

    # ----- contacts --------------------------------------------------------------------------

    def find_contact(self, key: str, id_property: str | None = None) -> ContactRecord | None:
        with self.lock:
            if id_property in (None, "", "hs_object_id"):
                return self.contacts.get(key)
            if id_property == "email":
                cid = self.by_email.get(key.strip().lower())
                return self.contacts.get(cid) if cid else None
            raise ApiError(400, f"Property {id_property} is not a unique identifier property for CONTACT objects")

    def is_defined(self, name: str) -> bool:
        return (name in STANDARD_PROPERTIES or name in self.custom_properties
                or (name.startswith(OPTOUT_PREFIX) and name[len(OPTOUT_PREFIX):] in self.subscriptions))

    def property_names(self) -> list[str]:
        with self.lock:
            return (list(STANDARD_PROPERTIES) + [OPTOUT_PREFIX + sid for sid in self.subscriptions]
                    + sorted(self.custom_properties))

    def status_of(self, contact: ContactRecord, sid: str) -> str | None:
        """The v3 status of one subscription type, or None when the contact has none for it."""
        if contact.opted_out_of_all:
            return NOT_SUBSCRIBED
        status = contact.statuses.get(sid)
        return status.status if status else None

    def value(self, contact: ContactRecord, name: str, unset_optout: str | None = "") -> str | None:
        """A property as HubSpot reads it back: stored, or maintained by HubSpot (ids, dates, opt-outs)."""
        if name == "hs_object_id":
            return contact.id
        if name == "createdate":
            return iso(contact.created_ms)
        if name == "lastmodifieddate":
            return iso(contact.updated_ms)
        if name.startswith(OPTOUT_PREFIX) and name[len(OPTOUT_PREFIX):] in self.subscriptions:
            opted_out = self.status_of(contact, name[len(OPTOUT_PREFIX):]) == NOT_SUBSCRIBED
            return "true" if opted_out else unset_optout
        if name == "hs_email_optout":
            every = bool(self.subscriptions) and all(self.status_of(contact, s) == NOT_SUBSCRIBED for s in self.subscriptions)
            return "true" if contact.opted_out_of_all or every else unset_optout
        return contact.properties.get(name)

    def check_properties(self, props: Any) -> dict[str, str | None]:
        """Validated writable values (None clears); raises HubSpot's 400 listing every bad property."""
        if not isinstance(props, dict):
            raise ApiError(400, "Invalid input JSON: 'properties' must be an object")
        problems: list[tuple[str, str, str]] = []
        clean: dict[str, str | None] = {}
        for name, raw in props.items():
            if not self.is_defined(name):
                problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            elif name in READ_ONLY or name.startswith(OPTOUT_PREFIX):
                problems.append((name, "READ_ONLY_VALUE", f'Property "{name}" is a read only property; its value cannot be set.'))
            elif raw is not None and not isinstance(raw, (str, int, float, bool)):
                problems.append((name, "INVALID_VALUE", f'Property "{name}" must be a string'))
            else:
                value = None if raw is None or raw == "" else (str(raw).lower() if isinstance(raw, bool) else str(raw))
                if name == "email" and value is not None:
                    value = value.strip().lower()
                    if "@" not in value or value.startswith("@") or value.endswith("@"):
                        problems.append((name, "INVALID_EMAIL", f"Email address {raw} is invalid"))
                clean[name] = value
        if problems:
            raise property_error(problems, self.portal_id)
        return clean

    def create_contact(self, props: dict[str, str | None], now: int) -> ContactRecord:
        with self.lock:
            email = props.get("email")
            if email and email in self.by_email:
                raise ApiError(409, f"Contact already exists. Existing ID: {self.by_email[email]}", "CONFLICT")
            cid = str(self.next_id)
            self.next_id += 1
            record = ContactRecord(cid, {k: v for k, v in props.items() if v is not None}, now, now)
            self.contacts[cid] = record
            if email:
                self.by_email[email] = cid
            return record

    def update_contact(self, contact: ContactRecord, props: dict[str, str | None], now: int) -> None:
        with self.lock:
            email = props.get("email", contact.properties.get("email"))
            if email != contact.properties.get("email"):
                owner = self.by_email.get(email) if email else None
                if owner is not None and owner != contact.id:
                    raise ApiError(409, f"Contact already exists. Existing ID: {owner}", "CONFLICT")
                self.by_email.pop(contact.properties.get("email", ""), None)
                if email:
                    self.by_email[email] = contact.id
            for name, value in props.items():
                if value is None:
                    contact.properties.pop(name, None)
                else:
                    contact.properties[name] = value
            contact.updated_ms = now

    def set_status(self, contact: ContactRecord, sid: str, status: str, now: int,
                   legal_basis: str | None = None, explanation: str | None = None) -> None:
        with self.lock:
            contact.statuses[sid] = SubscriptionStatus(status, now, legal_basis, explanation)
            contact.updated_ms = now  # the hs_email_optout_* properties changed with it

    # ----- lists -----------------------------------------------------------------------------

    def add_members(self, hub_list: ListRecord, ids: Iterable[str], now: int) -> tuple[list[str], list[str]]:
        """(added, missing): existing members and unknown records are not added."""
        with self.lock:
            added, missing = [], []
            for rid in ids:
                if rid not in self.contacts:
                    missing.append(rid)
                elif rid not in hub_list.members:
                    hub_list.members[rid] = now
                    added.append(rid)
            if added:
                hub_list.last_added_ms = now
                hub_list.touched(now)
            return added, missing

    def remove_members(self, hub_list: ListRecord, ids: Iterable[str], now: int) -> tuple[list[str], list[str]]:
        """(removed, missing): an existing non-member is in neither (reference: inferred)."""
        with self.lock:
            removed, missing = [], []
            for rid in ids:
                if rid in hub_list.members:
                    del hub_list.members[rid]
                    removed.append(rid)
                elif rid not in self.contacts:
                    missing.append(rid)
            if removed:
                hub_list.last_removed_ms = now
                hub_list.touched(now)
            return removed, missing

    def members_page(self, hub_list: ListRecord, after: int | None, before: int | None, limit: int) -> tuple[list[int], bool, bool]:
        """(ids, more_in_direction, more_behind): ascending after `after`, or descending before `before`."""
        with self.lock:
            ids = hub_list.sorted_ids()
            if before is not None and after is None:
                end = bisect.bisect_left(ids, before)
                start = max(0, end - limit)
                return ids[start:end][::-1], start > 0, end < len(ids)
            start = bisect.bisect_right(ids, after) if after is not None else 0
            end = start + limit
            return ids[start:end], end < len(ids), start > 0

    # ----- helpers for tests ----------------------------------------------------------------

    def contact_by_email(self, email: str) -> dict[str, Any] | None:
        """Every property of a contact as HubSpot reads it back (None when unknown)."""
        with self.lock:
            contact = self.find_contact(email, "email")
            if contact is None:
                return None
            return {"id": contact.id, **{n: self.value(contact, n) for n in self.property_names()}}

    def subscription_status(self, email: str, sid: str) -> str | None:
        with self.lock:
            contact = self.find_contact(email, "email")
            return self.status_of(contact, str(sid)) if contact else None

    def list_members(self, list_id: str) -> list[str]:
        with self.lock:
            return [str(i) for i in self.lists[str(list_id)].sorted_ids()]


def property_error(problems: list[tuple[str, str, str]], portal_id: int) -> ApiError:
    """HubSpot's 400 for invalid property values: the details JSON-encoded inside the message."""
    details = [{"isValid": False, "message": msg, "error": code, "name": name, "localizedErrorMessage": msg,
                "portalId": portal_id} for name, code, msg in problems]
    return ApiError(400, "Property values were not valid: " + json.dumps(details, separators=(",", ":")),
                    errors=[{"message": msg, "code": code, "context": {"propertyName": [name]}} for name, code, msg in problems])
