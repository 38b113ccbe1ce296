"""Mailchimp client: audiences, merge fields, members, batch subscribe and tags (static segments).

Separate from observe and the apply engine so that every Mailchimp path, page size, batch size and
refusal text lives in one place; callers get model values and WriteResults, not JSON.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from reconciler.errors import PermanentVendorError
from reconciler.model import Member, MergeField, normalise_email, subscriber_hash
from reconciler.platforms.http import ConcurrencyLimiter, RetryPolicy, VendorSession, basic_auth_header
from reconciler.platforms.results import ALREADY, APPLIED, FAILED, REFUSED, WriteResult
from reconciler.settings import MailchimpSettings

MEMBER_PAGE = 1000  # `count` maximum
BATCH_SUBSCRIBE = 500  # "Up to 500 members may be added or updated with each API call"
SEGMENT_BATCH = 500  # members_to_add / members_to_remove, each
MEMBER_FIELDS = ",".join([
    "members.email_address", "members.status", "members.merge_fields", "members.tags", "members.tags_count",
    "total_items",
])
# Vendor titles (and batch error texts) that mean "refused for compliance", not "failed".
REFUSAL_MARKERS = ("member in compliance state", "compliance state", "forgotten email not subscribed",
                   "permanently deleted")


# Statuses Mailchimp will not archive (405): not a failure of the write, the vendor's rule.
UNARCHIVABLE = ("pending", "cleaned")


def _refusal(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in REFUSAL_MARKERS)


@dataclass(frozen=True, slots=True)
class AudienceInfo:
    id: str
    name: str
    double_optin: bool
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MergeFieldInfo:
    """A merge field's definition with its display name (what `reconcile --import` matches)."""

    tag: str
    name: str
    type: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class NewMember:
    email: str
    merge_fields: Mapping[str, Any] = field(default_factory=dict)


def mailchimp_session(settings: MailchimpSettings, *, retry: RetryPolicy = RetryPolicy(),
                      timeout: tuple[float, float] = (10.0, 120.0)) -> VendorSession:
    """A VendorSession with Basic auth and at most `max_connections` requests in flight."""
    base_url = settings.resolved_base_url()
    if not settings.api_key or not base_url:
        raise PermanentVendorError(
            "mailchimp: no API key with a data-centre suffix (e.g. ...-us21) and no base_url configured",
            system="mailchimp",
        )
    header = basic_auth_header("reconciler", settings.api_key)
    connections = max(1, min(10, settings.max_connections))
    return VendorSession(
        "mailchimp",
        base_url,
        authorization=header,
        secrets=(settings.api_key,),
        limiter=ConcurrencyLimiter(connections),
        pool_size=connections,
        timeout=timeout,
        retry=retry,
    )


class MailchimpClient:
    """Reads and writes Mailchimp for the reconciler. Thread-safe: share one client between workers."""

    system = "mailchimp"

    def __init__(self, settings: MailchimpSettings, *, session: VendorSession | None = None) -> None:
        self.session = session or mailchimp_session(settings)
        self.concurrency = max(1, min(10, settings.max_connections))
        self._segments: dict[str, dict[str, int]] = {}  # list id -> casefolded tag name -> segment id
        self._segments_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MailchimpClient({self.session.base_url!r})"

    def close(self) -> None:
        self.session.close()

    # ----- reads ------------------------------------------------------------------------------

    def ping(self) -> str:
        body = self.session.call("GET", "/ping").body or {}
        return str(body.get("health_status") or "")

    def get_list(self, list_id: str) -> AudienceInfo:
        params = {"fields": "id,name,double_optin,stats.member_count,stats.unsubscribe_count,stats.cleaned_count"}
        body = self.session.call("GET", f"/lists/{list_id}", params=params).body or {}
        return AudienceInfo(str(body.get("id") or list_id), str(body.get("name") or ""),
                            bool(body.get("double_optin")), dict(body.get("stats") or {}))

    def audiences(self) -> list[AudienceInfo]:
        """Every audience of the account (`GET /lists`, 1,000 a page, oldest first), for --import."""
        found: dict[str, AudienceInfo] = {}
        offset = 0
        while True:
            params = {"count": MEMBER_PAGE, "offset": offset, "sort_field": "date_created", "sort_dir": "ASC",
                      "fields": "lists.id,lists.name,lists.double_optin,total_items"}
            body = self.session.call("GET", "/lists", params=params).body or {}
            page = body.get("lists") or []
            for raw in page:
                if raw.get("id"):
                    found.setdefault(str(raw["id"]), AudienceInfo(str(raw["id"]), str(raw.get("name") or ""),
                                                                  bool(raw.get("double_optin"))))
            offset += len(page)
            if not page or offset >= int(body.get("total_items") or 0):
                return list(found.values())

    def merge_field_definitions(self, list_id: str) -> list[MergeFieldInfo]:
        """Every merge field of the audience with its name (paged, 1,000 a page), for --import."""
        out: list[MergeFieldInfo] = []
        while True:
            params = {"count": MEMBER_PAGE, "offset": len(out), "fields": "merge_fields.tag,merge_fields.name,"
                      "merge_fields.type,merge_fields.required,total_items"}
            body = self.session.call("GET", f"/lists/{list_id}/merge-fields", params=params).body or {}
            page = body.get("merge_fields") or []
            out += [MergeFieldInfo(str(f["tag"]), str(f.get("name") or ""), str(f.get("type") or "text"),
                                   bool(f.get("required"))) for f in page]
            if not page or len(out) >= int(body.get("total_items") or 0):
                return out

    def merge_fields(self, list_id: str) -> list[MergeField]:
        """Every merge field of the audience (paged, 1,000 a page)."""
        out: list[MergeField] = []
        while True:
            params = {"count": MEMBER_PAGE, "offset": len(out),
                      "fields": "merge_fields.tag,merge_fields.type,merge_fields.required,total_items"}
            body = self.session.call("GET", f"/lists/{list_id}/merge-fields", params=params).body or {}
            page = body.get("merge_fields") or []
            out += [MergeField(str(f["tag"]), str(f.get("type") or "text"), bool(f.get("required"))) for f in page]
            if not page or len(out) >= int(body.get("total_items") or 0):
                return out

    def member_page(self, list_id: str, offset: int, status: str | None = None,
                    since: str | None = None) -> tuple[list[Member], int]:
        """One page (≤ 1,000) of members, trimmed to what the model needs, and `total_items`;
        with `since` (ISO-8601), only members changed since then."""
        params: dict[str, Any] = {"count": MEMBER_PAGE, "offset": offset, "fields": MEMBER_FIELDS}
        if status:
            params["status"] = status
        if since:
            params["since_last_changed"] = since
        body = self.session.call("GET", f"/lists/{list_id}/members", params=params).body or {}
        members = [self._member(list_id, raw, status) for raw in body.get("members") or []]
        return members, int(body.get("total_items") or 0)

    def members(self, list_id: str, status: str | None = None, *, executor: Executor | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[Member]:
        """Every member with `status` (None: Mailchimp's unfiltered listing). Pages after the first
        run on `executor` when given; offset paging may repeat a row, so callers key by email."""
        first, total = self.member_page(list_id, 0, status)
        done = len(first)
        if progress:
            progress(done, total)
        offsets = range(MEMBER_PAGE, total, MEMBER_PAGE) if first else range(0)
        pages: Iterable[tuple[list[Member], int]]
        if executor is not None:
            pages = executor.map(lambda off: self.member_page(list_id, off, status), offsets)
        else:
            pages = (self.member_page(list_id, off, status) for off in offsets)
        out = list(first)
        for page, _ in pages:
            out += page
            done += len(page)
            if progress:
                progress(done, total)
        return out

    def opted_out_since(self, list_id: str, since: str) -> set[str]:
        """Emails that became unsubscribed or cleaned since `since` (ISO-8601): one page each
        when few changed, which is the usual case between a plan's observe and its writes."""
        emails: set[str] = set()
        for status in ("unsubscribed", "cleaned"):
            offset, total = 0, 1
            while offset < total:
                page, total = self.member_page(list_id, offset, status, since=since)
                if not page:
                    break
                emails.update(m.email for m in page)
                offset += len(page)
        return emails

    def all_members(self, list_id: str, *, executor: Executor | None = None) -> dict[str, Member]:
        """Live and archived members by email. Archived ones are read with `status=archived` because
        the unfiltered listing may or may not include them; an id seen in both is kept once."""
        by_email: dict[str, Member] = {m.email: m for m in self.members(list_id, "archived", executor=executor)}
        for member in self.members(list_id, executor=executor):
            if member.status != "archived" or member.email not in by_email:
                by_email[member.email] = member
        return by_email

    def _member(self, list_id: str, raw: Mapping[str, Any], status_filter: str | None) -> Member:
        email = normalise_email(str(raw.get("email_address") or "")) or ""
        status = "archived" if status_filter == "archived" else str(raw.get("status") or "")
        tags = tuple(str(t.get("name")) for t in raw.get("tags") or [] if t.get("name") is not None)
        if int(raw.get("tags_count") or 0) > len(tags):
            tags = self.member_tags(list_id, email)  # a member lists at most 50 tags inline
        return Member(email=email, status=status, merge_fields=dict(raw.get("merge_fields") or {}), tags=tags)

    def member_status(self, list_id: str, email: str) -> str | None:
        """The member's status (`archived` included), or None when the email is not on the audience."""
        answer = self.session.call("GET", self._member_path(list_id, email), params={"fields": "status"},
                                   ok=(200, 404))
        if answer.status == 404:
            return None
        return str((answer.body or {}).get("status") or "") or None

    def member_tags(self, list_id: str, email: str) -> tuple[str, ...]:
        names: list[str] = []
        while True:
            params = {"count": MEMBER_PAGE, "offset": len(names), "fields": "tags.name,total_items"}
            body = self.session.call("GET", f"/lists/{list_id}/members/{subscriber_hash(email)}/tags",
                                     params=params).body or {}
            page = [str(t.get("name")) for t in body.get("tags") or []]
            names += page
            if not page or len(names) >= int(body.get("total_items") or 0):
                return tuple(names)

    # ----- tags (static segments) ---------------------------------------------------------------

    def segments(self, list_id: str) -> dict[str, int]:
        """Static segments (tags) of the audience: name -> id (and cached for tag writes)."""
        found: dict[str, int] = {}
        while True:
            params = {"type": "static", "count": MEMBER_PAGE, "offset": len(found),
                      "fields": "segments.id,segments.name,total_items"}
            body = self.session.call("GET", f"/lists/{list_id}/segments", params=params).body or {}
            page = body.get("segments") or []
            found.update({str(s["name"]): int(s["id"]) for s in page})
            if not page or len(found) >= int(body.get("total_items") or 0):
                break
        with self._segments_lock:
            self._segments[list_id] = {name.casefold(): sid for name, sid in found.items()}
        return found

    def segment_id(self, list_id: str, tag: str, *, create: bool) -> int | None:
        """The tag's segment id (tag names compare case-insensitively), created when missing if asked.

        Creating is not idempotent at the vendor, so a create whose answer was lost is followed by a
        re-read of the segments rather than a second create.
        """
        with self._segments_lock:
            known = self._segments.get(list_id)
        if known is None or tag.casefold() not in known:
            known = {n.casefold(): i for n, i in self.segments(list_id).items()}
        if tag.casefold() in known or not create:
            return known.get(tag.casefold())
        try:
            body = self.session.call("POST", f"/lists/{list_id}/segments",
                                     json={"name": tag, "static_segment": []}).body or {}
        except PermanentVendorError:
            body = {}
        if "id" not in body:
            again = {n.casefold(): i for n, i in self.segments(list_id).items()}
            if tag.casefold() not in again:
                raise PermanentVendorError(f"mailchimp: could not create the tag {tag!r} on audience {list_id}",
                                           system=self.system)
            return again[tag.casefold()]
        with self._segments_lock:
            self._segments.setdefault(list_id, {})[tag.casefold()] = int(body["id"])
        return int(body["id"])

    def tag_members(self, list_id: str, tag: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[WriteResult]:
        """Add and remove one tag for many members through its segment (500 of each a call).

        Idempotent. Creates the tag's segment when adding and it is missing. One result per email:
        applied, already (Mailchimp reported no change: already tagged or untagged), or failed.
        """
        add = list(dict.fromkeys(normalise_email(e) or "" for e in add))
        remove = list(dict.fromkeys(normalise_email(e) or "" for e in remove))
        segment = self.segment_id(list_id, tag, create=bool(add))
        if segment is None:  # removing a tag nobody has
            return [WriteResult(e, ALREADY, f"no tag {tag!r} on the audience") for e in remove]
        results: dict[tuple[str, str], WriteResult] = {}
        calls = max((len(add) + SEGMENT_BATCH - 1) // SEGMENT_BATCH, (len(remove) + SEGMENT_BATCH - 1) // SEGMENT_BATCH)
        for i in range(calls):
            adds = add[i * SEGMENT_BATCH:(i + 1) * SEGMENT_BATCH]
            removes = remove[i * SEGMENT_BATCH:(i + 1) * SEGMENT_BATCH]
            body = self.session.call("POST", f"/lists/{list_id}/segments/{segment}",
                                     json={"members_to_add": adds, "members_to_remove": removes}).body or {}
            done_add = {normalise_email(m.get("email_address")) for m in body.get("members_added") or []}
            done_remove = {normalise_email(m.get("email_address")) for m in body.get("members_removed") or []}
            errors: dict[str, str] = {}
            for error in body.get("errors") or []:
                for email in error.get("email_addresses") or []:
                    errors[normalise_email(email) or ""] = str(error.get("error") or "")
            for verb, emails, done in (("add", adds, done_add), ("remove", removes, done_remove)):
                for email in emails:
                    if email in done:
                        result = WriteResult(email, APPLIED)
                    elif email in errors:
                        text = errors[email]
                        result = WriteResult(email, ALREADY if "already" in text.lower() else FAILED, text)
                    else:
                        result = WriteResult(email, ALREADY, "Mailchimp reported no change")
                    results[(verb, email)] = result
        return [results[("add", e)] for e in add] + [results[("remove", e)] for e in remove]

    def set_member_tags(self, list_id: str, email: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> WriteResult:
        """POST one member's tags (active/inactive). Idempotent; for a member's own small tag set."""
        tags = [{"name": t, "status": "active"} for t in add] + [{"name": t, "status": "inactive"} for t in remove]
        if not tags:
            return WriteResult(email, ALREADY)
        self.session.call("POST", f"/lists/{list_id}/members/{subscriber_hash(email)}/tags",
                          json={"tags": tags, "is_syncing": False})
        return WriteResult(email, APPLIED)

    # ----- member writes ------------------------------------------------------------------------

    def subscribe_members(self, list_id: str, members: Sequence[NewMember], *, status: str) -> list[WriteResult]:
        """Create members through batch subscribe (`POST /lists/{id}`, 500 a call), never updating.

        `update_existing: false` keeps every existing member's status untouched, which also makes a
        repeat safe: a member created by an earlier attempt comes back as an error entry
        ERROR_CONTACT_EXISTS, reported here as `already`. Forgotten or compliance-state emails are
        `refused`; other per-member errors `failed`, with Mailchimp's text.
        """
        results: list[WriteResult] = []
        for start in range(0, len(members), BATCH_SUBSCRIBE):
            part = members[start:start + BATCH_SUBSCRIBE]
            payload = {"members": [{"email_address": m.email, "status": status, "merge_fields": dict(m.merge_fields)}
                                   for m in part], "update_existing": False}
            body = self.session.call("POST", f"/lists/{list_id}", json=payload).body or {}
            outcome: dict[str, WriteResult] = {}
            for raw in body.get("new_members") or []:
                email = normalise_email(raw.get("email_address")) or ""
                outcome[email] = WriteResult(email, APPLIED)
            for raw in body.get("updated_members") or []:
                email = normalise_email(raw.get("email_address")) or ""
                outcome[email] = WriteResult(email, ALREADY)
            for error in body.get("errors") or []:
                email = normalise_email(error.get("email_address")) or ""
                text = str(error.get("error") or error.get("error_code") or "")
                if error.get("error_code") == "ERROR_CONTACT_EXISTS":
                    outcome[email] = WriteResult(email, ALREADY, text)
                else:
                    outcome[email] = WriteResult(email, REFUSED if _refusal(text) else FAILED, text)
            for m in part:
                email = normalise_email(m.email) or ""
                results.append(outcome.get(email) or WriteResult(email, FAILED, "Mailchimp did not answer for this member"))
        return results

    def update_member(self, list_id: str, email: str, merge_fields: Mapping[str, Any]) -> WriteResult:
        """PATCH merge fields only, never `status` (R6). Idempotent."""
        self.session.call("PATCH", self._member_path(list_id, email), json={"merge_fields": dict(merge_fields)})
        return WriteResult(email, APPLIED)

    def unsubscribe_member(self, list_id: str, email: str) -> WriteResult:
        """PATCH `status: unsubscribed` (R4). Idempotent."""
        self.session.call("PATCH", self._member_path(list_id, email), json={"status": "unsubscribed"})
        return WriteResult(email, APPLIED)

    def restore_member(self, list_id: str, email: str, *, status: str, merge_fields: Mapping[str, Any]) -> WriteResult:
        """PUT an archived member back with `status` (R8). Idempotent. 400 Member In Compliance State
        (opted out before the archive) or Forgotten Email Not Subscribed is `refused`, not an error."""
        body = {"email_address": email, "status": status, "status_if_new": status, "merge_fields": dict(merge_fields)}
        try:
            self.session.call("PUT", self._member_path(list_id, email), json=body)
        except PermanentVendorError as exc:
            if exc.status == 400 and _refusal(exc.detail):
                return WriteResult(email, REFUSED, exc.detail)
            raise
        return WriteResult(email, APPLIED)

    def archive_member(self, list_id: str, email: str) -> WriteResult:
        """DELETE (archive). Idempotent: 404 (already archived, or gone) is `already`.

        Mailchimp answers 405 "This list member cannot be removed" for a pending, cleaned or
        already archived member, so the answer alone says nothing: the member is read again. Archived
        (or gone) by then is `already`; still pending or cleaned is `refused` (the vendor cannot
        archive those); any other status (subscribed, transactional, unsubscribed) is `failed`: the
        member should have been archived and was not. `data["status"]` holds what was read.
        """
        answer = self.session.call("DELETE", self._member_path(list_id, email), ok=(200, 204, 404, 405))
        if answer.status == 404:
            return WriteResult(email, ALREADY, "not on the audience (already archived)")
        if answer.status != 405:
            return WriteResult(email, APPLIED)
        body = answer.body if isinstance(answer.body, Mapping) else {}
        text = f"{body.get('title') or 'Method Not Allowed'}: {body.get('detail') or ''}".strip(": ")
        status = self.member_status(list_id, email)
        if status in (None, "archived"):
            return WriteResult(email, ALREADY, f"{text}; read again: {status or 'not on the audience'}",
                               data={"status": status or ""})
        outcome = REFUSED if status in UNARCHIVABLE else FAILED
        return WriteResult(email, outcome, f"{text} (read again: the member is {status})", data={"status": status})

    @staticmethod
    def _member_path(list_id: str, email: str) -> str:
        return f"/lists/{list_id}/members/{subscriber_hash(normalise_email(email) or email)}"
