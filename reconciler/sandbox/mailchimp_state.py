"""In-memory state of the Mailchimp emulator: audiences, members, tags, forgotten emails.

Kept apart from routes and request handling (moto's split) so the seed, the state file and every
handler share one thread-safe store; it knows Mailchimp's records, not HTTP.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
# Statuses from which Mailchimp may refuse a move to `subscribed` (reference §5.1): cleaned always,
# unsubscribed when the person unsubscribed themselves (mailchimp_compliance.py decides).
COMPLIANCE_STATUSES = frozenset({"unsubscribed", "cleaned"})
UNSUBSCRIBED_BY = ("self", "admin", "api")  # who unsubscribed a member (the seed's `unsubscribed_by`)
# `unsubscribe_reason` of a member unsubscribed by the account: both spellings are recorded, with no
# documented rule for which; the app gets one, the API the other. A person's own reason is free text.
UNSUBSCRIBE_REASONS = {"admin": "N/A (Unsubscribed by an admin)", "api": "N/A (Unsubscribed by admin)"}
ARCHIVABLE_FROM = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
MERGE_TYPES = ("text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown", "birthday", "zip")
DEFAULT_MERGE_FIELDS = (("FNAME", "text"), ("LNAME", "text"), ("ADDRESS", "address"), ("PHONE", "phone"))


def subscriber_hash(email: str) -> str:
    """md5 of the lower-cased address; not trimmed (the emulator rejects padded addresses instead)."""
    return hashlib.md5(email.lower().encode("utf-8")).hexdigest()


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def normalise_time(text: str) -> str:
    """An ISO 8601 filter value as the stored UTC form, so strings compare in time order."""
    value = text.strip()
    if "T" in value and " " in value:
        value = value.replace(" ", "+")  # an unescaped '+' in a query string arrives as a space
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass(slots=True)
class Member:
    email: str
    status: str
    merge_fields: dict[str, Any]
    tags: dict[int, str]  # tag id -> date added, in the order added
    web_id: int
    last_changed: str
    timestamp_signup: str = ""
    timestamp_opt: str = ""
    unsubscribed_at: str = ""
    unsubscribe_reason: str = ""
    # Who unsubscribed it (self | admin | api) while it is unsubscribed, or archived from
    # unsubscribed; "" otherwise. Decides whether the API may subscribe it again.
    unsubscribed_by: str = ""
    status_before_archive: str = ""  # what an archived member was, for the restore rule
    email_type: str = "html"
    language: str = ""
    vip: bool = False
    ip_signup: str = ""
    ip_opt: str = ""
    source: str = "API - Generic"


@dataclass(slots=True)
class MergeField:
    tag: str
    type: str
    merge_id: int
    name: str = ""
    required: bool = False
    default_value: str = ""
    public: bool = True
    display_order: int = 0
    choices: list[str] = field(default_factory=list)
    help_text: str = ""


@dataclass(slots=True)
class Tag:
    id: int
    name: str
    created_at: str
    updated_at: str
    members: set[str] = field(default_factory=set)  # subscriber hashes


@dataclass
class Audience:
    id: str
    name: str
    double_optin: bool
    date_created: str
    web_id: int
    merge_fields: list[MergeField]
    members: dict[str, Member] = field(default_factory=dict)  # by subscriber hash, creation order
    forgotten: set[str] = field(default_factory=set)  # hashes permanently deleted
    tags: dict[int, Tag] = field(default_factory=dict)
    version: int = 0  # bumped on every write; keys the read caches
    _tag_names: dict[str, int] = field(default_factory=dict)
    _cache: dict[Any, Any] = field(default_factory=dict)
    _cache_version: int = -1

    def merge_field(self, tag: str) -> MergeField | None:
        for definition in self.merge_fields:
            if definition.tag == tag:
                return definition
        return None

    def tag_by_name(self, name: str) -> Tag | None:
        # Tag names are matched case-insensitively, keeping the first spelling ([UNCONFIRMED]).
        tag_id = self._tag_names.get(name.strip().lower())
        return self.tags.get(tag_id) if tag_id is not None else None

    def add_tag(self, tag: Tag) -> None:
        self.tags[tag.id] = tag
        self._tag_names[tag.name.strip().lower()] = tag.id

    def touch(self) -> None:
        self.version += 1

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Memoise a read until the next write (paging 100,000 members re-filters nothing)."""
        if self._cache_version != self.version:
            self._cache = {}
            self._cache_version = self.version
        if key not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = compute()
        return self._cache[key]


class MailchimpState:
    """All audiences of one account. Handlers hold `lock` for a whole request."""

    def __init__(self, api_key: str, clock: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.audiences: dict[str, Audience] = {}
        self.lock = threading.RLock()
        self.clock = clock
        self.next_tag_id = 10001
        self.next_web_id = 100001
        self.next_merge_id = 1
        self.at: float | None = None  # the handled request's time, so journal replays keep timestamps
        # Opt-in confirmation emails Mailchimp would have sent (a member becoming pending), by
        # lower-cased email, since this process started; not kept in the state file.
        self.confirmations: Counter[str] = Counter()

    @property
    def dc(self) -> str:
        return self.api_key.rsplit("-", 1)[1] if "-" in self.api_key else "us1"

    def now(self) -> str:
        return iso(self.at if self.at is not None else self.clock())

    def new_web_id(self) -> int:
        self.next_web_id += 1
        return self.next_web_id

    def new_tag(self, audience: Audience, name: str) -> Tag:
        now = self.now()
        tag = Tag(self.next_tag_id, name.strip(), now, now)
        self.next_tag_id += 1
        audience.add_tag(tag)
        return tag

    def audience(self, list_id: str) -> Audience | None:
        return self.audiences.get(list_id)

    # -- seed ------------------------------------------------------------------------------

    @classmethod
    def from_seed(cls, seed: Mapping[str, Any], clock: Callable[[], float] = time.time) -> "MailchimpState":
        """The `mailchimp:` mapping of a SPEC §7 seed; raises ValueError naming the bad entry."""
        api_key = seed.get("api_key")
        if not isinstance(api_key, str) or "-" not in api_key:
            raise ValueError("mailchimp.api_key: expected a key ending in a data centre, e.g. 'sandboxkey-us1'")
        state = cls(api_key, clock)
        for index, raw in enumerate(seed.get("audiences") or []):
            state._seed_audience(raw, f"mailchimp.audiences[{index}]")
        return state

    def _seed_audience(self, raw: Mapping[str, Any], where: str) -> None:
        list_id = str(raw.get("id") or "")
        if not list_id or list_id in self.audiences:
            raise ValueError(f"{where}.id: missing or duplicate audience id {list_id!r}")
        now = self.now()
        fields = raw.get("merge_fields")
        if fields is None:
            fields = [{"tag": tag, "type": kind} for tag, kind in DEFAULT_MERGE_FIELDS]
        definitions = []
        for order, spec in enumerate(fields):
            kind = spec.get("type", "text")
            if kind not in MERGE_TYPES:
                raise ValueError(f"{where}.merge_fields[{order}].type: {kind!r} is not one of {', '.join(MERGE_TYPES)}")
            tag = str(spec["tag"])
            definitions.append(
                MergeField(
                    tag=tag, type=kind, merge_id=self.next_merge_id, name=str(spec.get("name", tag.title())),
                    required=bool(spec.get("required", False)), display_order=order + 2,
                    choices=[str(c) for c in spec.get("choices", [])],
                )
            )
            self.next_merge_id += 1
        audience = Audience(
            id=list_id, name=str(raw.get("name", list_id)), double_optin=bool(raw.get("double_optin", False)),
            date_created=now, web_id=self.new_web_id(), merge_fields=definitions,
        )
        self.audiences[list_id] = audience
        known = {d.tag for d in definitions}
        tags_by_name: dict[str, Tag] = {}
        for index, member in enumerate(raw.get("members") or []):
            self._seed_member(audience, member, known, tags_by_name, f"{where}.members[{index}]", now)
        for email in raw.get("permanently_deleted") or []:
            audience.forgotten.add(subscriber_hash(email))

    def _seed_member(self, audience: Audience, raw: Mapping[str, Any], known: set[str], tags_by_name: dict[str, Tag], where: str, now: str) -> None:
        email = raw.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise ValueError(f"{where}.email: expected an email address, got {email!r}")
        key = subscriber_hash(email)
        if key in audience.members:
            raise ValueError(f"{where}.email: {email} appears twice in audience {audience.id}")
        status = raw.get("status", "subscribed")
        if status not in STATUSES:
            raise ValueError(f"{where}.status: {status!r} is not one of {', '.join(STATUSES)}")
        merge = dict(raw.get("merge_fields") or {})
        unknown = set(merge) - known
        if unknown:
            raise ValueError(f"{where}.merge_fields: {', '.join(sorted(unknown))} not defined on audience {audience.id}")
        changed = str(raw.get("last_changed") or now)
        before = _seed_before_archive(raw, status, where)
        unsubscribed = status == "unsubscribed" or before == "unsubscribed"
        by = _seed_unsubscribed_by(raw, unsubscribed, where)
        member = Member(
            email=email, status=status, merge_fields=merge, tags={}, web_id=self.new_web_id(),
            last_changed=changed, timestamp_opt=changed if status == "subscribed" else "",
            unsubscribed_at=changed if unsubscribed else "",
            unsubscribe_reason=str(raw.get("unsubscribe_reason") or UNSUBSCRIBE_REASONS.get(by, "")) if unsubscribed else "",
            unsubscribed_by=by, status_before_archive=before, source="Import",
        )
        audience.members[key] = member
        for name in raw.get("tags") or []:
            tag = tags_by_name.get(name.lower())
            if tag is None:
                tag = audience.tag_by_name(name) or self.new_tag(audience, name)
                tags_by_name[name.lower()] = tag
            member.tags[tag.id] = changed
            tag.members.add(key)

    # -- state file ------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "api_key": self.api_key,
                "next_tag_id": self.next_tag_id,
                "next_web_id": self.next_web_id,
                "next_merge_id": self.next_merge_id,
                "audiences": [
                    {
                        "id": a.id, "name": a.name, "double_optin": a.double_optin, "date_created": a.date_created,
                        "web_id": a.web_id, "merge_fields": [asdict(d) for d in a.merge_fields],
                        "forgotten": sorted(a.forgotten),
                        "tags": [{"id": t.id, "name": t.name, "created_at": t.created_at, "updated_at": t.updated_at} for t in a.tags.values()],
                        "members": [_member_json(m) for m in a.members.values()],
                    }
                    for a in self.audiences.values()
                ],
            }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], clock: Callable[[], float] = time.time) -> "MailchimpState":
        state = cls(data["api_key"], clock)
        state.next_tag_id = data["next_tag_id"]
        state.next_web_id = data["next_web_id"]
        state.next_merge_id = data["next_merge_id"]
        for raw in data["audiences"]:
            audience = Audience(
                id=raw["id"], name=raw["name"], double_optin=raw["double_optin"], date_created=raw["date_created"],
                web_id=raw["web_id"], merge_fields=[MergeField(**d) for d in raw["merge_fields"]],
                forgotten=set(raw["forgotten"]),
            )
            for t in raw["tags"]:
                audience.add_tag(Tag(t["id"], t["name"], t["created_at"], t["updated_at"]))
            for m in raw["members"]:
                member = Member(**{**m, "tags": {int(k): v for k, v in m["tags"]}})
                if not member.unsubscribed_by and "unsubscribed" in (member.status, member.status_before_archive):
                    member.unsubscribed_by = "self"  # a state file from before provenance: the safe reading
                key = subscriber_hash(member.email)
                audience.members[key] = member
                for tag_id in member.tags:
                    audience.tags[tag_id].members.add(key)
            state.audiences[audience.id] = audience
        return state


def _seed_before_archive(raw: Mapping[str, Any], status: str, where: str) -> str:
    """An archived seed member's `status_before_archive` (default subscribed); others have none."""
    if status != "archived":
        if raw.get("status_before_archive") is not None:
            raise ValueError(f"{where}.status_before_archive: only an archived member has one (status is {status!r})")
        return ""
    before = str(raw.get("status_before_archive") or "subscribed")
    if before not in ARCHIVABLE_FROM:
        raise ValueError(f"{where}.status_before_archive: {before!r} is not one of {', '.join(ARCHIVABLE_FROM)}")
    return before


def _seed_unsubscribed_by(raw: Mapping[str, Any], unsubscribed: bool, where: str) -> str:
    """`unsubscribed_by` of a seed member: self | admin | api, default self, only when unsubscribed."""
    given = raw.get("unsubscribed_by")
    if given is None:
        return "self" if unsubscribed else ""
    if not unsubscribed:
        raise ValueError(f"{where}.unsubscribed_by: only an unsubscribed member (or one archived from unsubscribed) has one")
    if given not in UNSUBSCRIBED_BY:
        raise ValueError(f"{where}.unsubscribed_by: {given!r} is not one of {', '.join(UNSUBSCRIBED_BY)}")
    return str(given)


def _member_json(member: Member) -> dict[str, Any]:
    out = {name: getattr(member, name) for name in Member.__slots__}  # type: ignore[attr-defined]
    out["tags"] = list(member.tags.items())
    return out


def select_members(
    audience: Audience,
    status: str | None,
    include_archived: bool,
    since_last_changed: str | None = None,
    before_last_changed: str | None = None,
    unsubscribed_since: str | None = None,
    sort_field: str | None = None,
    sort_dir: str = "ASC",
) -> list[tuple[str, Member]]:
    """Members matching a GET filter, in a stable order (creation order unless sorted)."""

    def compute() -> list[tuple[str, Member]]:
        rows: Iterable[tuple[str, Member]] = audience.members.items()
        if status is not None:
            rows = [(h, m) for h, m in rows if m.status == status]
        elif not include_archived:
            rows = [(h, m) for h, m in rows if m.status != "archived"]
        if since_last_changed is not None:
            rows = [(h, m) for h, m in rows if m.last_changed >= since_last_changed]
        if before_last_changed is not None:
            rows = [(h, m) for h, m in rows if m.last_changed <= before_last_changed]
        if unsubscribed_since is not None:
            rows = [(h, m) for h, m in rows if m.unsubscribed_at >= unsubscribed_since]
        rows = list(rows)
        if sort_field:
            rows.sort(key=lambda row: getattr(row[1], sort_field), reverse=sort_dir.upper() == "DESC")
        return rows

    key = (status, include_archived, since_last_changed, before_last_changed, unsubscribed_since, sort_field, sort_dir)
    return audience.cached(("members",) + key, compute)
