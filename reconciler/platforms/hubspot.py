"""HubSpot client: Lists, CRM contacts and Communication Preferences (v3, or a date-based version), at the vendor's limits.

Separate from observe and the apply engine so that every HubSpot path, batch size and error text
lives in one place; callers get small values (ListInfo, ContactRecord, WriteResult), not JSON.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Iterator, Mapping, Sequence

from reconciler.errors import PermanentVendorError
from reconciler.platforms.http import RetryPolicy, RollingWindowLimiter, VendorSession
from reconciler.platforms.hubspot_paths import api_paths
from reconciler.platforms.hubspot_prefs import OptOut, Preferences
from reconciler.platforms.hubspot_search import (SEARCH_GROUPS, SEARCH_PAGE, SEARCH_PER_SECOND,
                                                 SEARCH_RESULT_CAP, halves, search_groups)
from reconciler.platforms.results import ALREADY, APPLIED, FAILED, WriteResult
from reconciler.settings import HubSpotSettings

CONTACT_BATCH = 100  # "Batch operations are limited to 100 records at a time."
MEMBERSHIP_PAGE = 250  # Lists v3 memberships: max `limit`
MEMBERSHIP_BATCH = 500  # ids per memberships add/remove: the cap is [UNCONFIRMED]; v1 took 500, as does the sandbox
LIST_IDS_PER_READ = 100  # listIds per GET /crm/v3/lists (keeps the URL short)
LIST_SEARCH_PAGE = 500  # `count` maximum of POST /crm/v3/lists/search
RETRY_ITEM_CATEGORIES = ("INTERNAL_ERROR", "RATE_LIMITS", "TIMEOUT")  # 207 item errors worth reading again
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(frozen=True, slots=True)
class ListInfo:
    id: str
    name: str
    # MANUAL | SNAPSHOT | DYNAMIC as HubSpot spells them; anything else is kept as sent (upper-cased)
    # and "" when HubSpot leaves it out, so that R14 never writes a list of unknown type.
    processing_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ContactRecord:
    id: str
    properties: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class BatchRead:
    """Contacts found by a batch read, and the requested ids (or emails) HubSpot did not find."""

    found: list[ContactRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """What a memberships add/remove did: ids added, removed, ids that do not exist, and ids the
    answer names as failed (with HubSpot's words)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()  # (record id, vendor text)

    def failures(self) -> dict[str, str]:
        """Record id -> why it was not written: every id not done as asked. An id that did not
        exist was not added (nor removed: for a handover, the contact is not where R12 put it)."""
        out = {i: "HubSpot answered recordIdsMissing: this record does not exist in the portal" for i in self.missing}
        out.update(dict(self.errors))
        return out


def _item_errors(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Per-id errors in a batch answer (`errors: [{message, context: {ids}}]`), should HubSpot add
    them to a memberships answer as it does to its CRM batch answers (207)."""
    out: list[tuple[str, str]] = []
    for error in body.get("errors") or []:
        if isinstance(error, Mapping):
            message = str(error.get("message") or error.get("category") or "HubSpot reported an error")
            out += [(str(i), message) for i in (error.get("context") or {}).get("ids") or []]
    return out


def hubspot_session(settings: HubSpotSettings, *, concurrency: int = 8, retry: RetryPolicy = RetryPolicy(),
                    timeout: tuple[float, float] = (10.0, 60.0), search: bool = False) -> VendorSession:
    """A VendorSession with the Bearer token and one rolling-window limiter shared by all threads.

    `search`: the session for CRM search, which HubSpot limits apart (5 requests a second per
    account) and exempts from the ten-secondly window, so it gets a limiter of its own.
    """
    if not settings.token:
        raise PermanentVendorError("hubspot: no token configured (hubspot.token: ${HUBSPOT_TOKEN})", system="hubspot")
    limit = settings.rate_limit
    requests, window = (SEARCH_PER_SECOND, 1.0) if search else (limit.requests, limit.per_seconds)
    return VendorSession(
        "hubspot",
        settings.base_url,
        authorization=f"Bearer {settings.token}",
        secrets=(settings.token,),
        limiter=RollingWindowLimiter(requests, window),
        pool_size=concurrency,
        timeout=timeout,
        retry=retry,
        rate_window=window,
    )


class HubSpotClient:
    """Reads and writes HubSpot for the reconciler. Thread-safe: share one client between workers."""

    system = "hubspot"

    def __init__(self, settings: HubSpotSettings, *, session: VendorSession | None = None,
                 search_session: VendorSession | None = None) -> None:
        self.paths = api_paths(settings.api_version)  # `legacy` (v3) or a date-based version's paths
        self.session = session or hubspot_session(settings)
        self.search_session = search_session or hubspot_session(settings, retry=self.session.retry, search=True)
        self.prefs = Preferences(self.session, self.paths)
        # Workers worth running at once: at the rate limit more threads only queue on the limiter.
        self.concurrency = max(1, min(8, settings.rate_limit.requests // 10 or 1))

    def __repr__(self) -> str:
        return f"HubSpotClient({self.session.base_url!r})"

    def close(self) -> None:
        self.session.close()
        self.search_session.close()

    # ----- lists ------------------------------------------------------------------------------

    def get_lists(self, list_ids: Iterable[str]) -> dict[str, ListInfo]:
        """The lists that exist among `list_ids`, by id (one GET per 100 ids); unknown ids are absent."""
        wanted = list(dict.fromkeys(str(i) for i in list_ids))
        found: dict[str, ListInfo] = {}
        for part in chunks(wanted, LIST_IDS_PER_READ):
            params = [("listIds", i) for i in part] + [("includeFilters", "false")]
            body = self.session.call("GET", self.paths.lists, params=params).body or {}
            for item in body.get("lists") or []:
                info = ListInfo(
                    id=str(item.get("listId")),
                    name=str(item.get("name") or ""),
                    processing_type=str(item.get("processingType") or "").strip().upper(),
                    size=int(item.get("size") or (item.get("additionalProperties") or {}).get("hs_list_size") or 0),
                )
                if info.id in part:
                    found[info.id] = info
        return found

    def all_lists(self) -> list[ListInfo]:
        """Every contact list of the portal, by `POST /crm/v3/lists/search` or its dated twin (offset
        paging, 500 a page), in HubSpot's order; what `reconcile --import` matches Mailchimp tags against."""
        found: dict[str, ListInfo] = {}
        offset = 0
        while True:
            body = {"query": "", "offset": offset, "count": LIST_SEARCH_PAGE, "objectTypeId": "0-1"}
            answer = self.session.call("POST", f"{self.paths.lists}/search", json=body).body or {}
            page = answer.get("lists") or []
            for item in page:
                if str(item.get("objectTypeId") or "0-1") == "0-1" and item.get("listId") is not None:
                    found.setdefault(str(item["listId"]), ListInfo(
                        id=str(item["listId"]), name=str(item.get("name") or ""),
                        processing_type=str(item.get("processingType") or "").strip().upper(),
                        size=int(item.get("size") or (item.get("additionalProperties") or {}).get("hs_list_size") or 0)))
            following = int(answer.get("offset") or offset + len(page))
            if not page or not answer.get("hasMore") or following <= offset:
                return list(found.values())
            offset = following

    def iter_list_members(self, list_id: str) -> Iterator[list[str]]:
        """Record ids of the list's members, one page (≤ 250) at a time, to the last page."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": MEMBERSHIP_PAGE}
            if after:
                params["after"] = after
            body = self.session.call("GET", f"{self.paths.lists}/{list_id}/memberships", params=params).body or {}
            yield [str(r["recordId"]) for r in body.get("results") or [] if r.get("recordId") is not None]
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return

    def list_member_ids(self, list_id: str) -> list[str]:
        return [record_id for page in self.iter_list_members(list_id) for record_id in page]

    def add_to_list(self, list_id: str, record_ids: Sequence[str]) -> MembershipChange:
        """PUT memberships/add in batches. Idempotent: members already on the list are ignored.

        A DYNAMIC list is refused by HubSpot: PermanentVendorError with the vendor's text.
        """
        return self._memberships(list_id, "add", record_ids)

    def remove_from_list(self, list_id: str, record_ids: Sequence[str]) -> MembershipChange:
        """PUT memberships/remove in batches. Idempotent: non-members are ignored."""
        return self._memberships(list_id, "remove", record_ids)

    def _memberships(self, list_id: str, verb: str, record_ids: Sequence[str]) -> MembershipChange:
        added: list[str] = []
        removed: list[str] = []
        missing: list[str] = []
        errors: list[tuple[str, str]] = []
        for part in chunks(list(dict.fromkeys(record_ids)), MEMBERSHIP_BATCH):
            body = self.session.call("PUT", f"{self.paths.lists}/{list_id}/memberships/{verb}", json=list(part)).body or {}
            # HubSpot spells it `recordsIdsAdded`; one reference page says `recordIdsAdded`; empty
            # arrays may be left out.
            added += [str(i) for i in body.get("recordsIdsAdded") or body.get("recordIdsAdded") or []]
            removed += [str(i) for i in body.get("recordIdsRemoved") or []]
            missing += [str(i) for i in body.get("recordIdsMissing") or []]
            errors += _item_errors(body)
        return MembershipChange(tuple(added), tuple(removed), tuple(missing), tuple(errors))

    # ----- contacts ---------------------------------------------------------------------------

    def read_contacts(self, ids: Sequence[str], properties: Iterable[str]) -> BatchRead:
        """Contacts by record id, 100 a call; ids HubSpot does not know are returned as missing."""
        return self._batch_read(ids, properties, id_property=None)

    def read_contacts_by_email(self, emails: Sequence[str], properties: Iterable[str]) -> BatchRead:
        """Contacts by email (`idProperty: email`), 100 a call; unknown emails come back as missing."""
        return self._batch_read(emails, properties, id_property="email")

    def _batch_read(self, keys: Sequence[str], properties: Iterable[str], id_property: str | None) -> BatchRead:
        props = sorted(set(properties) | {"email"})
        result = BatchRead()
        for part in chunks(list(dict.fromkeys(keys)), CONTACT_BATCH):
            pending = list(part)
            for attempt in range(1, self.session.retry.max_attempts + 1):
                pending = self._read_part(pending, props, id_property, result, last=attempt == self.session.retry.max_attempts)
                if not pending:
                    break
                time.sleep(self.session.retry.backoff(attempt))
        return result

    def _read_part(self, part: Sequence[str], props: list[str], id_property: str | None, result: BatchRead, *,
                   last: bool) -> list[str]:
        """One batch read into `result`; returns the keys whose items failed and are worth reading again.

        A 207 lists each failed item with a category: OBJECT_NOT_FOUND is a result (the id is
        missing); other item errors (HubSpot's INTERNAL_ERROR and the like) are transient like a
        500, so those keys are read again; on the last attempt, or without their ids, they raise."""
        body: dict[str, Any] = {"properties": props, "propertiesWithHistory": [], "inputs": [{"id": key} for key in part]}
        if id_property:
            body["idProperty"] = id_property
        answer = self.session.call("POST", f"{self.paths.contacts}/batch/read", json=body).body or {}
        for item in answer.get("results") or []:
            result.found.append(ContactRecord(str(item["id"]), dict(item.get("properties") or {})))
        again: list[str] = []
        for error in answer.get("errors") or []:
            ids = [str(i) for i in (error.get("context") or {}).get("ids") or []]
            if error.get("category") == "OBJECT_NOT_FOUND":
                result.missing.extend(ids)
                continue
            if last or not ids or error.get("category") not in RETRY_ITEM_CATEGORIES:
                message = str(error.get("message") or error)
                raise PermanentVendorError(f"hubspot: POST {self.paths.contacts}/batch/read: {message}", system=self.system,
                                           status=207, detail=message)
            again += ids
        return again

    def search_other_contacts(self, emails: Mapping[str, Collection[str]], properties: Iterable[str]) -> list[ContactRecord]:
        """Every contact whose email is a key of `emails` (normalised) and whose record id is not
        among the ids given with it: the other holders of an email (R1), by CRM search.

        Search compares text case-insensitively, so a contact stored with another case is found
        too. Each request holds up to 5 filter groups of `email IN [<= 100 emails]` AND
        `hs_object_id NOT_IN [their known ids]`, so it asks about up to 500 emails and, when nobody
        shares an email, answers one empty page. Recently written contacts may take a few moments
        to appear in search (HubSpot's note); archived ones never do.
        """
        props = sorted(set(properties) | {"email"})
        groups = search_groups(emails)
        found: dict[str, ContactRecord] = {}
        for start in range(0, len(groups), SEARCH_GROUPS):
            for record in self._search(groups[start:start + SEARCH_GROUPS], props):
                found.setdefault(record.id, record)
        return list(found.values())

    def _search(self, groups: list[dict[str, Any]], props: list[str]) -> list[ContactRecord]:
        """Every result of one search, page by page; a query over HubSpot's 10,000-result cap is
        asked again in halves (its pages beyond the cap could not be read)."""
        body: dict[str, Any] = {"filterGroups": groups, "properties": props, "limit": SEARCH_PAGE,
                                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]}
        records: list[ContactRecord] = []
        after = "0"
        while True:
            answer = self.search_session.call("POST", self.paths.search, json={**body, "after": after}).body or {}
            if int(answer.get("total") or 0) > SEARCH_RESULT_CAP:
                return [r for half in halves(groups) for r in self._search(half, props)]
            records += [ContactRecord(str(item["id"]), dict(item.get("properties") or {}))
                        for item in answer.get("results") or [] if item.get("id") is not None]
            after = ((answer.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return records

    def contact_properties(self) -> dict[str, str]:
        """Every contact property name with its type (`GET /crm/v3/properties/contacts`, or its dated twin)."""
        body = self.session.call("GET", self.paths.properties).body or {}
        return {str(p["name"]): str(p.get("type") or "") for p in body.get("results") or [] if p.get("name")}

    def contact_property_labels(self) -> dict[str, str]:
        """Every contact property name with its label (`GET /crm/v3/properties/contacts`, or its dated twin), for --import."""
        body = self.session.call("GET", self.paths.properties).body or {}
        return {str(p["name"]): str(p.get("label") or "") for p in body.get("results") or [] if p.get("name")}

    def create_contacts(self, contacts: Sequence[Mapping[str, str]]) -> list[WriteResult]:
        """Create contacts (each a property map with `email`), 100 a call; one WriteResult per email.

        Safe to repeat: a contact that already exists (for example created by an earlier attempt
        whose answer was lost) is `already`, with its id in `data["id"]`. Each input carries a unique
        `objectWriteTraceId` so that HubSpot answers per item (207) rather than refusing the batch.
        """
        results: list[WriteResult] = []
        for part in chunks(list(contacts), CONTACT_BATCH):
            inputs = [{"properties": dict(c), "objectWriteTraceId": str(c["email"]).strip().lower()} for c in part]
            try:
                answer = self.session.call("POST", f"{self.paths.contacts}/batch/create", json={"inputs": inputs}).body or {}
            except PermanentVendorError as exc:
                if exc.status != 409:
                    raise
                results += self._create_after_conflict(part)
                continue
            results += self._created(part, answer)
        return results

    def _created(self, part: Sequence[Mapping[str, str]], answer: Mapping[str, Any]) -> list[WriteResult]:
        by_email: dict[str, WriteResult] = {}
        for item in answer.get("results") or []:
            email = str((item.get("properties") or {}).get("email") or "").strip().lower()
            by_email[email] = WriteResult(email, APPLIED, data={"id": str(item["id"])})
        for error in answer.get("errors") or []:
            message = str(error.get("message") or "")
            traces = (error.get("context") or {}).get("objectWriteTraceId") or []
            existing = _EXISTING_ID.search(message)
            for trace in traces:
                key = str(trace).strip().lower()
                if existing:
                    by_email[key] = WriteResult(key, ALREADY, message, {"id": existing.group(1)})
                else:
                    by_email[key] = WriteResult(key, FAILED, message)
        out = []
        for contact in part:
            email = str(contact["email"]).strip().lower()
            out.append(by_email.get(email) or WriteResult(email, FAILED, "HubSpot did not answer for this contact"))
        return out

    def _create_after_conflict(self, part: Sequence[Mapping[str, str]]) -> list[WriteResult]:
        """The batch was refused whole (409): read which exist, then create only the others."""
        emails = [str(c["email"]).strip().lower() for c in part]
        found = {str(r.properties.get("email") or "").strip().lower(): r.id
                 for r in self.read_contacts_by_email(emails, ["email"]).found}
        results = {e: WriteResult(e, ALREADY, data={"id": found[e]}) for e in emails if e in found}
        rest = [c for c in part if str(c["email"]).strip().lower() not in found]
        if rest:
            answer = self.session.call("POST", f"{self.paths.contacts}/batch/create", json={"inputs": [
                {"properties": dict(c), "objectWriteTraceId": str(c["email"]).strip().lower()} for c in rest]}).body
            results.update({r.key: r for r in self._created(rest, answer or {})})
        return [results[e] for e in emails]

    def update_contacts(self, updates: Mapping[str, Mapping[str, str]]) -> list[WriteResult]:
        """Set properties by record id (`batch/update`, 100 a call). Idempotent. One result per id."""
        results: list[WriteResult] = []
        items = list(updates.items())
        for part in chunks(items, CONTACT_BATCH):
            body = {"inputs": [{"id": cid, "properties": dict(props)} for cid, props in part]}
            answer = self.session.call("POST", f"{self.paths.contacts}/batch/update", json=body).body or {}
            done = {str(item["id"]) for item in answer.get("results") or []}
            failed: dict[str, str] = {}
            for error in answer.get("errors") or []:
                for cid in (error.get("context") or {}).get("ids") or []:
                    failed[str(cid)] = str(error.get("message") or "")
            for cid, _ in part:
                if cid in done:
                    results.append(WriteResult(cid, APPLIED))
                else:
                    results.append(WriteResult(cid, FAILED, failed.get(cid, "HubSpot did not update this contact")))
        return results

    # ----- communication preferences ------------------------------------------------------------
    # In hubspot_prefs.py: v3 under `legacy`, the v4-shaped statuses under a date-based version;
    # every status write there passes the one guard that refuses anything but an unsubscribe.

    def subscription_definitions(self) -> dict[str, str]:
        """Subscription id -> name (`GET /communication-preferences/<version>/definitions`)."""
        return self.prefs.definitions()

    def subscribed_to(self, email: str) -> frozenset[str]:
        """Ids of the subscriptions `email` is explicitly SUBSCRIBED to (R8's evidence of consent),
        from v3 `status/email/{email}` or the dated `statuses/{email}`. An unknown email has none."""
        return self.prefs.subscribed_to(email)

    def unsubscribe(self, email: str, subscription_id: str, *, legal_basis: str, explanation: str,
                    not_found_retries: int = 0, not_found_delay: float = 1.0) -> WriteResult:
        """Unsubscribe one email from one subscription type, with the legal basis (R11).

        Idempotent: HubSpot's 400 "already unsubscribed" (or the dated 200 NO_STATUS_CHANGE) is the
        outcome `already`. A 404 (no such contact) is retried `not_found_retries` times, for a
        contact created moments before, then raised as PermanentVendorError like any other refusal.
        """
        return self.prefs.unsubscribe(OptOut(email, str(subscription_id), legal_basis, explanation,
                                             not_found_retries, not_found_delay))

    def unsubscribe_many(self, items: Sequence[OptOut], *, workers: int = 4) -> list[WriteResult]:
        """R11's opt-outs, one WriteResult per item in order: batch writes (≤ 100 a request) under a
        date-based version where the portal allows them, else one request per contact (`workers`
        at once). See `Preferences.unsubscribe_many`."""
        return self.prefs.unsubscribe_many(items, workers=workers)
