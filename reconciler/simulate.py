"""Apply a plan to a snapshot as the vendors would, refusals included (used by tests and properties).

Pure and separate from the engine: it is the model of HubSpot and Mailchimp behaviour that the
rules are checked against ("simulate then plan again gives no changes"). Vendor state that no
snapshot can show (a member archived after an opt-out; a permanently deleted email) is passed in
as `VendorHidden`, as a test would know it and a real run would only learn it from a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from reconciler.model import AudienceState, Contact, HubList, Member, Memory, Refusal, Snapshot
from reconciler.plan import HUBSPOT, Change, Plan, in_apply_order

COMPLIANCE = "Member In Compliance State"
NOT_ARCHIVABLE = "Method Not Allowed"  # 405: a pending or cleaned member cannot be archived
FORGOTTEN = "Forgotten Email Not Subscribed"


@dataclass(frozen=True)
class VendorHidden:
    """Mailchimp state the API does not show, keyed by (Mailchimp list id, email)."""

    # Archived after the person unsubscribed themselves: a restore to subscribed is refused
    # (Member In Compliance State); to pending it goes through (a confirmation email). Members
    # archived from any other status are restored by Mailchimp.
    archived_after_opt_out: frozenset[tuple[str, str]] = frozenset()
    forgotten: frozenset[tuple[str, str]] = frozenset()  # permanently deleted: every create refused
    # Unsubscribed by an admin or the API rather than by the person: Mailchimp lets the API set
    # these back to subscribed or pending (and an archive keeps that). Other unsubscribes are the
    # person's own, and every re-subscription of them is refused.
    unsubscribed_by_api: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Refused:
    change: Change
    list_id: str | None  # Mailchimp list id for Mailchimp changes
    reason: str


@dataclass(frozen=True)
class Simulation:
    """The snapshot after the plan, what was refused or deferred, and what was archived from which status."""

    snapshot: Snapshot
    refused: tuple[Refused, ...] = ()
    deferred: tuple[Change, ...] = ()  # R18: archives whose R11 prerequisites were refused
    archived: tuple[tuple[str, str, str], ...] = ()  # (list id, email, status before)

    done: tuple[tuple[Change, str | None], ...] = ()  # every change sent, with its list id, in order

    def memory(self, previous: Memory = Memory(), at: str = "2000-01-01T00:00:00Z") -> Memory:
        """`previous` plus this run's refusals, archives and opt-outs, as the audit log would
        remember them (for a next run without --retry-refused): the latest word on a member wins."""
        refusals = dict(previous.refusals)
        archived = dict(previous.archived_by_us)
        opted_out = dict(previous.opted_out)
        unfinished = dict(previous.handovers_unfinished)
        for refused in self.refused:
            if refused.list_id is not None and refused.change.action in ("create_member", "restore_member"):
                refusals[(refused.list_id, refused.change.email)] = Refusal(refused.change.action, refused.reason, at)
        # The audit log remembers an R11 opt-out once its unsubscribe is sent, whatever the answer
        # (the person opted out in Mailchimp either way); R11 runs before every Mailchimp write (R18).
        sent = [(r.change, r.list_id) for r in self.refused if r.change.action == "unsubscribe_contact"]
        for change, list_id in sent + list(self.done):
            key = (list_id or "", change.email)
            if change.action == "remove_tags" and change.rule == "R12":
                unfinished[key] = change.reason
            elif change.action in ("archive_member", "create_member", "restore_member"):
                unfinished.pop(key, None)
            if change.action == "unsubscribe_contact":
                opted_out.setdefault(change.email, f"{change.reason} on {at[:10]}")
                for other in [k for k in archived if k[1] == change.email]:
                    del archived[other]
            elif change.action == "archive_member":
                status = change.before.get("status")
                if status in ("unsubscribed", "cleaned"):
                    archived.pop(key, None)
                    opted_out.setdefault(change.email, f"archived while {status} ({change.reason}) on {at[:10]}")
                elif status in ("subscribed", "pending", "transactional") and change.email not in opted_out:
                    archived[key] = str(status)  # an archive of someone known to have opted out is no evidence
            elif change.action in ("restore_member", "create_member", "unsubscribe_member"):
                archived.pop(key, None)
                if change.action != "unsubscribe_member":
                    refusals.pop(key, None)
        return Memory(refusals=refusals, archived_by_us=archived, opted_out=opted_out,
                      handovers_unfinished=unfinished)


def simulate(snapshot: Snapshot, plan: Plan, hidden: VendorHidden = VendorHidden()) -> Snapshot:
    """The snapshot a fresh observation would give after applying `plan` (refusals left undone)."""
    return simulate_apply(snapshot, plan, hidden).snapshot


def simulate_apply(snapshot: Snapshot, plan: Plan, hidden: VendorHidden = VendorHidden()) -> Simulation:
    world = _World(snapshot, hidden, dict(plan.audience_lists))
    not_done: set[int] = set()  # id() of the changes refused or deferred
    deferred: list[Change] = []
    done: list[tuple[Change, str | None]] = []
    for change in in_apply_order(plan.changes):
        if any(id(p) in not_done for p in plan.prerequisites(change)):
            deferred.append(change)
            not_done.add(id(change))
            continue
        reason = world.apply(change)
        if reason is not None:
            world.refused.append(Refused(change, world.list_ids.get(change.target), reason))
            not_done.add(id(change))
        else:
            done.append((change, world.list_ids.get(change.target) if change.system != HUBSPOT else None))
    return Simulation(world.snapshot(), tuple(world.refused), tuple(deferred), tuple(world.archived), tuple(done))


@dataclass
class _World:
    base: Snapshot
    hidden: VendorHidden
    list_ids: dict[str, str]  # audience name -> Mailchimp list id
    contacts: dict[str, Contact] = field(default_factory=dict)
    lists: dict[str, HubList] = field(default_factory=dict)
    members: dict[str, dict[str, Member]] = field(default_factory=dict)  # list id -> email -> member
    refused: list[Refused] = field(default_factory=list)
    archived: list[tuple[str, str, str]] = field(default_factory=list)
    by_api: set[tuple[str, str]] = field(default_factory=set)  # unsubscribed by an admin or the API
    refuses_restore: set[tuple[str, str]] = field(default_factory=set)  # archived after their own opt-out

    def __post_init__(self) -> None:
        self.contacts = dict(self.base.contacts)
        self.lists = dict(self.base.lists)
        self.by_api = set(self.hidden.unsubscribed_by_api)
        self.refuses_restore = set(self.hidden.archived_after_opt_out)

    def snapshot(self) -> Snapshot:
        audiences = dict(self.base.audiences)
        for list_id, members in self.members.items():
            state = audiences.get(list_id) or AudienceState(list_id=list_id)
            audiences[list_id] = replace(state, members=members)
        return replace(self.base, contacts=self.contacts, lists=self.lists, audiences=audiences)

    def apply(self, change: Change) -> str | None:
        """Applies one change; returns the vendor's refusal, or None when it was done."""
        if change.system == HUBSPOT:
            return getattr(self, f"_hubspot_{change.action}")(change)
        list_id = self.list_ids[change.target]
        if list_id not in self.members:
            state = self.base.audiences.get(list_id)
            self.members[list_id] = dict(state.members) if state else {}
        return getattr(self, f"_mailchimp_{change.action}")(change, list_id, self.members[list_id])

    # -- Mailchimp ----------------------------------------------------------------------------

    def _mailchimp_create_member(self, change: Change, list_id: str, members: dict[str, Member]) -> str | None:
        if (list_id, change.email) in self.hidden.forgotten:
            return FORGOTTEN
        after = change.after
        existing = members.get(change.email)
        if existing is not None:  # PUT upsert: status_if_new ignored for an existing member
            members[change.email] = _with_data(existing, after.get("merge_fields", {}), after.get("tags", {}))
            return None
        member = Member(change.email, after["status_if_new"], {}, ())
        members[change.email] = _with_data(member, after.get("merge_fields", {}), after.get("tags", {}))
        return None

    def _mailchimp_update_member(self, change: Change, list_id: str, members: dict[str, Member]) -> str | None:
        member = members.get(change.email)
        if member is None:
            return "Resource Not Found"
        members[change.email] = _with_data(member, change.after, {})
        return None

    def _mailchimp_add_tags(self, change: Change, list_id: str, members: dict[str, Member]) -> str | None:
        return self._tags(change, members)

    def _mailchimp_remove_tags(self, change: Change, list_id: str, members: dict[str, Member]) -> str | None:
        return self._tags(change, members)

    def _tags(self, change: Change, members: dict[str, Member]) -> str | None:
        member = members.get(change.email)
        if member is None:
            return "Resource Not Found"
        members[change.email] = _with_data(member, {}, change.after)
        return None

    def _mailchimp_archive_member(self, change: Change, list_id: str, members: dict[str, Member]) -> str | None:
        member = members.get(change.email)
        if member is None or member.status == "archived":
            return None  # 404 / 405 on an archived member, verified by reading: done
        if member.status in ("pending", "cleaned"):
            return NOT_ARCHIVABLE
        key = (list_id, change.email)
        if member.status == "unsubscribed" and key not in self.by_api:
            self.refuses_restore.add(key)  # the person's own opt-out survives the archive
        self.archived.append((list_id, change.email, member.status))
        members[change.email] = replace(member, status="archived")
        return None

    def _mailchimp_restore_member(self, change: Change, list_id: str, members: dict[str, Member]) -> str | None:
        status = change.after["status"]
        member = members.get(change.email)
        if member is None:
            if (list_id, change.email) in self.hidden.forgotten:
                return FORGOTTEN
            member = Member(change.email, status)
        key = (list_id, change.email)
        # Only a re-subscription is refused; `pending` (a new confirmation email) is let through.
        if status == "subscribed" and (
                (member.status == "unsubscribed" and key not in self.by_api) or member.status == "cleaned"
                or (member.status == "archived" and key in self.refuses_restore)):
            return COMPLIANCE
        self.by_api.discard(key)
        restored = replace(member, status=status)
        members[change.email] = _with_data(restored, change.after.get("merge_fields", {}), change.after.get("tags", {}))
        return None

    def _mailchimp_unsubscribe_member(self, change: Change, list_id: str, members: dict[str, Member]) -> str | None:
        member = members.get(change.email)
        if member is None:
            return "Resource Not Found"
        if member.status in ("subscribed", "pending"):
            members[change.email] = replace(member, status="unsubscribed")
            self.by_api.add((list_id, change.email))
        return None

    # -- HubSpot ------------------------------------------------------------------------------

    def _by_email(self, email: str) -> list[str]:
        return [cid for cid, c in self.contacts.items() if c.email == email]

    def _hubspot_create_contact(self, change: Change) -> str | None:
        if self._by_email(change.email):
            return None  # 409 conflict: it exists, which is what was wanted
        numeric = [int(cid) for cid in self.contacts if cid.isdigit()]
        new_id = str(max(numeric, default=0) + 1)
        self.contacts[new_id] = Contact(new_id, change.email)
        return None

    def _hubspot_unsubscribe_contact(self, change: Change) -> str | None:
        ids = self._by_email(change.email)
        if not ids:
            return "OBJECT_NOT_FOUND"
        sid = change.target
        for cid in ids:  # subscription status belongs to the email address
            contact = self.contacts[cid]
            properties = {**contact.properties, f"hs_email_optout_{sid}": "true"}
            self.contacts[cid] = replace(contact, unsubscribed=contact.unsubscribed | {sid}, properties=properties)
        return None  # a repeat answers 400 "already unsubscribed", which counts as done

    def _hubspot_add_to_list(self, change: Change) -> str | None:
        return self._membership(change, adding=True)

    def _hubspot_remove_from_list(self, change: Change) -> str | None:
        return self._membership(change, adding=False)

    def _membership(self, change: Change, adding: bool) -> str | None:
        hub_list = self.lists.get(change.target)
        if hub_list is None:
            return "list not found"
        if hub_list.processing_type == "DYNAMIC":
            return "DYNAMIC lists cannot be written"
        contact = self.contacts.get(change.contact_id or "")
        if contact is None:
            return "contact not found"
        if (change.target in contact.lists) != adding:
            lists = contact.lists | {change.target} if adding else contact.lists - {change.target}
            self.contacts[contact.id] = replace(contact, lists=lists)
            self.lists[hub_list.id] = replace(hub_list, size=max(hub_list.size + (1 if adding else -1), 0))
        return None

    def _hubspot_set_contact_properties(self, change: Change) -> str | None:
        contact = self.contacts.get(change.contact_id or "")
        if contact is None:
            return "contact not found"
        self.contacts[contact.id] = replace(contact, properties={**contact.properties, **change.after})
        return None


def _with_data(member: Member, merge_fields: Mapping[str, Any], tags: Mapping[str, bool]) -> Member:
    """Merge fields merged per key; tags added or removed by name, case-insensitively."""
    fields = {**member.merge_fields, **merge_fields} if merge_fields else member.merge_fields
    current = list(member.tags)
    for tag, present in tags.items():
        has = any(t.casefold() == tag.casefold() for t in current)
        if present and not has:
            current.append(tag)
        elif not present and has:
            current = [t for t in current if t.casefold() != tag.casefold()]
    return replace(member, merge_fields=fields, tags=tuple(current))
