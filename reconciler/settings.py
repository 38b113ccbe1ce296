"""Typed, frozen configuration values (SPEC §3), produced by `reconciler.config.load_config`.

Separate from the loader so the pure core can depend on these values without pulling in YAML,
JSON Schema or file handling. Every list id and subscription id is a string, as HubSpot sends them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

TAG_POLICIES = ("first_tag_wins", "follow_source")
ON_LEAVE = ("archive", "untag", "keep")
NEW_MEMBER_STATUSES = ("subscribed", "pending")
TAG_RULE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "is_set")
NOTIFY_EVENTS = ("failed", "unsafe", "stale", "applied", "drift")
HUBSPOT_API_VERSIONS = ("legacy", "2026-03")
LEGAL_BASES = (
    "CONSENT_WITH_NOTICE",
    "LEGITIMATE_INTEREST_CLIENT",
    "LEGITIMATE_INTEREST_OTHER",
    "LEGITIMATE_INTEREST_PQL",
    "NON_GDPR",
    "PERFORMANCE_OF_CONTRACT",
    "PROCESS_AND_STORE",
)
SAFETY_LIMITS = (
    "max_archives",
    "max_untags",
    "max_creates",
    "max_mailchimp_unsubscribes",
    "max_hubspot_unsubscribes",
    "max_list_removals",
)

EMPTY: Mapping[str, Any] = MappingProxyType({})


def frozen_map(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only view of a copy of `values` (config values are never mutated)."""
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class RateLimit:
    requests: int = 100
    per_seconds: float = 10.0


@dataclass(frozen=True)
class HubSpotSettings:
    token: str | None = field(repr=False)  # a secret: never in a repr, log or error
    base_url: str = "https://api.hubapi.com"
    rate_limit: RateLimit = RateLimit()
    api_version: str = "legacy"  # one of HUBSPOT_API_VERSIONS


@dataclass(frozen=True)
class MailchimpSettings:
    api_key: str | None = field(repr=False)  # a secret: never in a repr, log or error
    base_url: str | None = None
    max_connections: int = 8

    @property
    def data_center(self) -> str | None:
        """The data centre from the API key's suffix (`...-us21` -> `us21`)."""
        if not self.api_key or "-" not in self.api_key:
            return None
        return self.api_key.rsplit("-", 1)[1] or None

    def resolved_base_url(self) -> str | None:
        """`base_url` when set, otherwise `https://<dc>.api.mailchimp.com/3.0`."""
        if self.base_url:
            return self.base_url.rstrip("/")
        dc = self.data_center
        return f"https://{dc}.api.mailchimp.com/3.0" if dc else None


@dataclass(frozen=True)
class TagRule:
    """`{when: {property, op, value}, tag}`: the first matching rule replaces the source's tag."""

    property: str
    op: str
    value: Any
    tag: str


@dataclass(frozen=True)
class Source:
    list: str
    tag: str
    tag_rules: tuple[TagRule, ...] = ()
    extra_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stream:
    name: str
    exclude: tuple[str, ...] = ()  # names of exclusion sets (keys of Exclusions.hard)
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True)
class Exempt:
    tags: tuple[str, ...] = ()
    tag_patterns: tuple[str, ...] = ()

    def matches(self, tag: str) -> bool:
        """Case-insensitive name match, or a case-insensitive `re.search` of a pattern."""
        low = tag.casefold()
        if any(low == t.casefold() for t in self.tags):
            return True
        return any(re.search(p, tag, re.IGNORECASE) for p in self.tag_patterns)


@dataclass(frozen=True)
class Handover:
    tag: str
    to_list: str
    remove_from: tuple[str, ...] = ()
    set_properties: Mapping[str, str] = field(default_factory=lambda: EMPTY)


# The statuses of the R11 the loader turns on by itself when an audience leaves `to_hubspot` out and
# `subscriptions` names exactly one subscription: every kind of Mailchimp opt-out reaches HubSpot.
DEFAULT_TO_HUBSPOT_STATUSES = ("unsubscribed", "cleaned")


@dataclass(frozen=True)
class ToHubSpot:
    """R11: member statuses carried to HubSpot as Communication Preferences unsubscribes.

    These field defaults are those of a `to_hubspot:` mapping that leaves a key out; an absent
    `to_hubspot` is defaulted by the loader (`reconciler.config`), with DEFAULT_TO_HUBSPOT_STATUSES.
    """

    statuses: tuple[str, ...] = ("unsubscribed",)
    subscriptions: tuple[str, ...] = ()  # subscription ids (resolved from names)
    legal_basis: str = "LEGITIMATE_INTEREST_OTHER"
    explanation: str = "Contact unsubscribed in Mailchimp"
    create_missing_contacts: bool = False


@dataclass(frozen=True)
class OptOuts:
    """How opt-outs travel between the platforms (R4, R11), as the rules read them.

    The field defaults mean "both off" and serve code that builds values by hand. A configuration
    gets the safe defaults from the loader instead: `from_hubspot` on unless written `false`, and
    `to_hubspot` on when `subscriptions` names exactly one subscription, unless written `false`.
    """

    to_hubspot: ToHubSpot | None = None  # None: R11 off
    from_hubspot: tuple[str, ...] = ()  # R4: subscription ids whose opt-out counts (opted out of
    # all email, hs_email_optout, always counts, even with ())
    from_hubspot_enabled: bool = False  # False: R4's Mailchimp unsubscribe is off


@dataclass(frozen=True)
class Audience:
    name: str
    mailchimp_list_id: str
    new_member_status: str = "subscribed"
    member_cap: int | None = None
    merge_fields: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # merge tag -> property
    streams: tuple[Stream, ...] = ()
    tag_policy: str = "first_tag_wins"
    on_leave: str = "archive"
    exempt: Exempt = Exempt()
    source_cleanup: bool = False
    restore_archived: bool = False
    handover: tuple[Handover, ...] = ()
    opt_outs: OptOuts = OptOuts()

    @property
    def source_lists(self) -> tuple[str, ...]:
        """Every source list id of the audience, in stream then source order, no repeats."""
        seen: dict[str, None] = {}
        for stream in self.streams:
            for source in stream.sources:
                seen.setdefault(source.list, None)
        return tuple(seen)

    @property
    def primary_tags(self) -> tuple[str, ...]:
        tags: dict[str, str] = {}
        for stream in self.streams:
            for source in stream.sources:
                for tag in (source.tag, *(r.tag for r in source.tag_rules)):
                    tags.setdefault(tag.casefold(), tag)
        return tuple(tags.values())

    @property
    def extra_tags(self) -> tuple[str, ...]:
        tags: dict[str, str] = {}
        for stream in self.streams:
            for source in stream.sources:
                for tag in source.extra_tags:
                    tags.setdefault(tag.casefold(), tag)
        return tuple(tags.values())

    @property
    def managed_tags(self) -> tuple[str, ...]:
        """Primary and extra tags (SPEC §4 Terms)."""
        return self.primary_tags + self.extra_tags


@dataclass(frozen=True)
class Exclusions:
    critical: tuple[str, ...] = ()
    hard: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True)
class Limit:
    """A safety limit (R17): exceeding either bound refuses the apply."""

    percent: float | None = None
    count: int | None = None


@dataclass(frozen=True)
class Safety:
    max_archives: Limit | None = None
    max_untags: Limit | None = None
    max_creates: Limit | None = None
    max_mailchimp_unsubscribes: Limit | None = None
    max_hubspot_unsubscribes: Limit | None = None
    max_list_removals: Limit | None = None


@dataclass(frozen=True)
class Notifier:
    webhook_url: str | None = field(repr=False)  # None when the variable is unset under --sandbox (disabled)
    on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notifications:
    teams: Notifier | None = None
    slack: Notifier | None = None


@dataclass(frozen=True)
class AuditSettings:
    path: str = ".reconciler/audit.sqlite"


@dataclass(frozen=True)
class Config:
    version: int
    hubspot: HubSpotSettings
    mailchimp: MailchimpSettings
    subscriptions: Mapping[str, str]  # name -> HubSpot subscription id
    exclusions: Exclusions
    audiences: Mapping[str, Audience]  # in config order
    safety: Safety = Safety()
    notifications: Notifications = Notifications()
    audit: AuditSettings = AuditSettings()
    files: tuple[str, ...] = ()  # the files the config was read from
    checksum: str = ""  # sha256 of the merged document, with ${NAME} references unresolved

    def audience(self, name: str) -> Audience:
        return self.audiences[name]

    def subscription_name(self, subscription_id: str) -> str:
        for name, sid in self.subscriptions.items():
            if sid == subscription_id:
                return name
        return subscription_id
