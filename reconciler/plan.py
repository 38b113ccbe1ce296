"""The plan (SPEC §5): typed changes and reported items, their order, counts and checksum.

Pure values: rules produce a Plan, renderers format it, the engine applies it. Nothing here
talks to a platform or prints.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

FORMAT_VERSION = 1

MAILCHIMP = "mailchimp"
HUBSPOT = "hubspot"

ACTIONS = (
    "create_member",
    "update_member",
    "add_tags",
    "remove_tags",
    "archive_member",
    "restore_member",
    "unsubscribe_member",
    "unsubscribe_contact",
    "create_contact",
    "add_to_list",
    "remove_from_list",
    "set_contact_properties",
)

# R18: apply order. Every change carries one of these steps; the plan sorts by
# (step, target, email, action) so that equal inputs always give the same plan.
STEP_OPT_OUTS_CREATE_CONTACTS = 5  # R11 create_contact (create_missing_contacts), before its unsubscribes
STEP_OPT_OUTS_TO_HUBSPOT = 10  # R11 unsubscribe_contact (after the create_contact of step 5)
STEP_OPT_OUTS_FROM_HUBSPOT = 20  # R4 unsubscribe_member
STEP_CRITICAL = 30  # R2 archive_member
STEP_HANDOVER_HUBSPOT = 40  # R12 add_to_list, remove_from_list, set_contact_properties
STEP_HANDOVER_MAILCHIMP = 45  # R12 remove_tags, archive_member (after the HubSpot writes)
STEP_LEAVE = 50  # R9 archive_member / remove_tags
STEP_MEMBERS = 60  # R5 create, R8 restore, R6 update_member / add_tags / remove_tags
STEP_CLEANUP = 70  # R2/R3 remove_from_list


# Within one R18 step, the order in which action groups run (create a contact before its
# unsubscribe; HubSpot handover writes before the Mailchimp ones; unsubscribe a pending member
# before its archive; untag before archive). The apply and `simulate` both follow it.
APPLY_ACTION_ORDER = (
    "create_contact", "unsubscribe_contact", "unsubscribe_member", "add_to_list", "set_contact_properties",
    "remove_tags", "archive_member", "restore_member", "create_member", "update_member", "add_tags",
    "remove_from_list",
)


def in_apply_order(changes: Iterable["Change"]) -> list["Change"]:
    """The changes in the order the apply sends them: by R18 step, then by action group."""
    return sorted(changes, key=lambda c: (c.step, APPLY_ACTION_ORDER.index(c.action)))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(_freeze(v) for v in value))
    return value


def _thaw(value: Any) -> Any:
    """Plain JSON-able values (dicts, lists) from frozen ones."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Change:
    """One write the apply will make.

    `target`: the audience name for Mailchimp changes, the list id for list membership changes,
    the subscription id for `unsubscribe_contact`, `contacts` for `create_contact` and
    `set_contact_properties`. `before` holds only the fields the change writes, as observed;
    `after` the values it writes. For tags, the keys are tag names and the values presence
    (`{"Recruitment": False}` -> `{"Recruitment": True}`); for list membership `{"member": bool}`;
    for statuses `{"status": ...}`; for merge fields the merge tags.

    Shapes by action (what the rules produce; the engine and renderers rely on them):

    - create_member: before `{}`; after `{"status_if_new": s, "merge_fields": {TAG: v}, "tags": {tag: True}}`.
    - update_member: before `{TAG: observed}`; after `{TAG: normalised value}` (only differing fields,
      never `status`).
    - add_tags / remove_tags: before `{tag: False}` / `{tag: True}`; after the opposite presence.
    - archive_member: before `{"status": observed}`; after `{"status": "archived"}`.
    - restore_member: before `{"status": "archived", "merge_fields": {TAG: observed}, "tags": {tag: observed
      presence}}`; after `{"status": new_member_status, "merge_fields": {TAG: v}, "tags": {tag: bool}}`:
      every desired merge field (as a create would send), and only the tags that change.
    - unsubscribe_member (R4): before `{"status": "subscribed"|"pending"}`; after `{"status": "unsubscribed"}`.
    - unsubscribe_contact (R11): target the subscription id; before `{"unsubscribed": False}`; after
      `{"unsubscribed": True, "legal_basis": ..., "explanation": ...}`. Sent by email (Communication
      Preferences API); `contact_id` is None when the contact is created in the same plan.
    - create_contact (R11 `create_missing_contacts`): target `contacts`; before `{}`; after `{"email": e}`.
    - add_to_list / remove_from_list: target the list id; `{"member": bool}`; `contact_id` set.
    - set_contact_properties (R12): target `contacts`; before `{prop: observed}`; after `{prop: value}`.

    R18's wait is derived, not stored: an `archive_member` whose `before.status` is unsubscribed or
    cleaned waits for every `unsubscribe_contact` change with the same email in the plan
    (`Plan.prerequisites`); if any of them fails, the archive is deferred and reported.
    """

    system: str
    action: str
    target: str
    email: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    reason: str
    step: int
    contact_id: str | None = None

    @staticmethod
    def make(
        system: str,
        action: str,
        target: str,
        email: str,
        before: Mapping[str, Any],
        after: Mapping[str, Any],
        reason: str,
        step: int,
        contact_id: str | None = None,
    ) -> "Change":
        return Change(system, action, target, email, _freeze(before), _freeze(after), reason, step, contact_id)

    @property
    def rule(self) -> str:
        """The rule named at the start of the reason (`R2 critical list 762` -> `R2`)."""
        return self.reason.split(" ", 1)[0]

    def sort_key(self) -> tuple:
        # contact_id last: duplicates by email (R1) may each be removed from one list.
        return (self.step, self.target, self.email, ACTIONS.index(self.action), self.reason, self.contact_id or "")

    def canonical(self) -> dict[str, Any]:
        """The JSON-able form used by the checksum and the JSON plan (no derived fields)."""
        return {
            "system": self.system,
            "action": self.action,
            "target": self.target,
            "email": self.email,
            "contact_id": self.contact_id,
            "before": _thaw(self.before),
            "after": _thaw(self.after),
            "reason": self.reason,
            "step": self.step,
        }

    def identity(self) -> tuple:
        """What makes two plans' changes 'the same change' (used by the stale-plan check): every
        field a write depends on, so a reviewed change whose record id, `before` or `after` differs
        from the re-plan's is not the change that was reviewed. (The audit's `change_key` keeps the
        shorter identity without `contact_id`, so keys stay stable across the log's history.)"""
        return (self.system, self.action, self.target, self.email, self.contact_id or "",
                canonical_json(self.before), canonical_json(self.after))


REPORT_KINDS = ("skipped", "refused", "warning", "deferred", "capped", "unchanged")


@dataclass(frozen=True, slots=True)
class Report:
    """A reported item: not a change; never affects the checksum or an exit code."""

    kind: str  # one of REPORT_KINDS
    target: str
    email: str | None
    reason: str  # names the rule and the data, like a change's reason

    def canonical(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "email": self.email, "reason": self.reason}


def canonical_json(value: Any) -> str:
    return json.dumps(_thaw(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def checksum_of(changes: Iterable[Change]) -> str:
    """sha256 over the canonical changes, including their `before` values (SPEC §5)."""
    digest = hashlib.sha256()
    for change in changes:
        digest.update(canonical_json(change.canonical()).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    reports: tuple[Report, ...] = ()
    audiences: tuple[str, ...] = ()  # the audience names this plan covers
    # counts: {"contacts": n, "lists": {id: {name, processing_type, size}},
    #          "audiences": {name: {"list_id": id, "members": {status: n}}}}
    observed: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # what R17's percentages are of: {"audiences": {name: non-archived members},
    #   "lists": {id: size, for lists with removals}, "members": non-archived members of all}
    safety_bases: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # audience name -> Mailchimp list id, for the audiences this plan covers (Mailchimp changes
    # target the audience name; the engine and `simulate` map it to the list).
    audience_lists: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @cached_property
    def checksum(self) -> str:
        return checksum_of(self.changes)

    @property
    def empty(self) -> bool:
        return not self.changes

    @cached_property
    def _changes_by_email(self) -> Mapping[str, tuple[Change, ...]]:
        by_email: dict[str, list[Change]] = {}
        for change in self.changes:
            by_email.setdefault(change.email, []).append(change)
        return {email: tuple(changes) for email, changes in by_email.items()}

    def prerequisites(self, change: Change) -> tuple[Change, ...]:
        """The changes that must succeed before `change` runs (R18); the apply defers it otherwise.

        An archive (R2, R12) of an unsubscribed or cleaned member waits for that member's R11
        unsubscribes (its opt-out reaches HubSpot before the record that shows it is archived). An
        archive of a pending member (R2) waits for the unsubscribe of the same member: Mailchimp
        will not archive a pending member, and one left pending could still confirm. Nothing else
        waits on anything beyond the step order.
        """
        if change.action != "archive_member":
            return ()
        status = change.before.get("status")
        same_email = self._changes_by_email.get(change.email, ())
        if status in ("unsubscribed", "cleaned"):
            return tuple(c for c in same_email if c.action == "unsubscribe_contact")
        if status == "pending":
            return tuple(c for c in same_email if c.action == "unsubscribe_member" and c.system == change.system
                         and c.target == change.target)
        return ()
