"""Frozen values for one observation of both platforms (a snapshot), plus the product's memory.

Pure data: no I/O, no vendor shapes. Platform adapters reduce vendor JSON to these values, and
the rules read only these, so the core can be tested in milliseconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

MEMBER_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
WRITABLE_STATUSES = frozenset({"subscribed", "pending", "transactional"})  # R6
OPTED_OUT_STATUSES = frozenset({"unsubscribed", "cleaned"})  # R7
PROCESSING_TYPES = ("MANUAL", "SNAPSHOT", "DYNAMIC")
WRITABLE_LIST_TYPES = frozenset({"MANUAL", "SNAPSHOT"})  # R14

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def normalise_email(raw: str | None) -> str | None:
    """Trimmed and lower-cased, once, at the edge (SPEC §4 Terms). None stays None."""
    if raw is None:
        return None
    return raw.strip().lower()


def is_valid_email(email: str | None) -> bool:
    """One `@`, a non-empty local part, a domain with a dot, and no whitespace (SPEC §4 Terms)."""
    if not email or email.count("@") != 1:
        return False
    if any(ch.isspace() for ch in email):
        return False
    local, domain = email.split("@")
    return bool(local) and "." in domain and not domain.startswith(".") and not domain.endswith(".")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: md5 of the lower-cased email."""
    return hashlib.md5(email.lower().encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Contact:
    """A HubSpot contact as observed."""

    id: str  # numeric string record id
    email: str | None  # normalised; None when the contact has no email
    properties: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    lists: frozenset[str] = frozenset()  # ids of the configured lists that hold it
    unsubscribed: frozenset[str] = frozenset()  # subscription ids explicitly NOT_SUBSCRIBED
    opted_out_of_all: bool = False  # hs_email_optout


@dataclass(frozen=True, slots=True)
class HubList:
    """A HubSpot list (Lists v3, ILS id) as observed. Its members are on `Contact.lists`."""

    id: str
    name: str
    processing_type: str  # MANUAL | SNAPSHOT | DYNAMIC
    size: int = 0

    @property
    def writable(self) -> bool:
        """R14: DYNAMIC lists are never written, and neither is a list whose `processingType` is
        missing or unknown: only MANUAL and SNAPSHOT lists are known to accept membership writes."""
        return self.processing_type in WRITABLE_LIST_TYPES


@dataclass(frozen=True, slots=True)
class Member:
    """A Mailchimp list member as observed (live or archived)."""

    email: str  # normalised
    status: str  # one of MEMBER_STATUSES
    merge_fields: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    tags: tuple[str, ...] = ()  # as Mailchimp spells them; compare case-insensitively

    @property
    def id(self) -> str:
        return subscriber_hash(self.email)


@dataclass(frozen=True, slots=True)
class MergeField:
    tag: str
    type: str  # text, number, phone, url, date, ... (Mailchimp's merge field types)
    required: bool = False


@dataclass(frozen=True, slots=True)
class AudienceState:
    """One Mailchimp audience (list) as observed: settings and its members by email."""

    list_id: str
    name: str = ""
    double_optin: bool = False
    merge_fields: Mapping[str, MergeField] = field(default_factory=lambda: _EMPTY)  # by tag
    members: Mapping[str, Member] = field(default_factory=lambda: _EMPTY)  # by email
    # True for an audience of the config that the run does not plan (`--audience` chose another):
    # only its opted-out (unsubscribed, cleaned) members were read, so that a Mailchimp opt-out
    # keeps the person out of every audience of the config.
    opt_outs_only: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One observation of both platforms (R15). Keys are HubSpot ids and Mailchimp list ids."""

    contacts: Mapping[str, Contact] = field(default_factory=lambda: _EMPTY)  # by contact id
    lists: Mapping[str, HubList] = field(default_factory=lambda: _EMPTY)  # by list id
    audiences: Mapping[str, AudienceState] = field(default_factory=lambda: _EMPTY)  # by list id
    observed_at: str = ""  # ISO-8601 UTC
    # R8 evidence of consent: email -> ids of the subscriptions the HubSpot contact is explicitly
    # SUBSCRIBED to (Communication Preferences status). Read only for restore candidates (archived
    # members of an audience with `restore_archived`, whose email a source contact holds, with no
    # evidence in the audit log); an email absent here was not read or has no such status.
    consent: Mapping[str, frozenset[str]] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A vendor refusal remembered from the audit log (R5, R8)."""

    action: str  # create_member | restore_member
    reason: str  # e.g. "Member In Compliance State", "Forgotten Email Not Subscribed"
    at: str  # ISO-8601 time of the refusal


@dataclass(frozen=True, slots=True)
class Memory:
    """What the product remembers between runs, read from the audit log and passed in explicitly.

    `refusals`: (mailchimp list id, email) -> the latest refusal not followed by a success.
    `archived_by_us`: (mailchimp list id, email) -> the status the member had when this product
    archived it, present only while that archive is the latest recorded word on the member (a
    later restore, create, R4/R11 unsubscribe, or an archive or opt-out by anyone else removes it).
    R8 restores without HubSpot consent only members archived while subscribed or pending.
    `opted_out`: email -> why the product knows this person opted out in Mailchimp (an R11
    unsubscribe it planned, or an archive of an unsubscribed or cleaned member). Such a person
    is kept out of every audience of the config on every later run, even once the member is
    archived and Mailchimp no longer shows the opt-out, until HubSpot reflects it.
    `handovers_unfinished`: see the field.
    """

    refusals: Mapping[tuple[str, str], Refusal] = field(default_factory=lambda: _EMPTY)
    archived_by_us: Mapping[tuple[str, str], str] = field(default_factory=lambda: _EMPTY)
    opted_out: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    # (mailchimp list id, email) -> the R12 reason of a handover whose tags were removed but whose
    # archive is not recorded (an interrupted apply): the next plan finishes it.
    handovers_unfinished: Mapping[tuple[str, str], str] = field(default_factory=lambda: _EMPTY)
    retry_refused: bool = False  # --retry-refused: ignore remembered refusals
