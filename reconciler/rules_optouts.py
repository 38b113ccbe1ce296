"""Opt-outs carried to HubSpot (R11) and handovers back to sales (R12), decided before the member rules.

Separate and first because both write HubSpot, and the member rules must see HubSpot as it will be
after those writes (R15): a contact R11 unsubscribes counts as opted out in every audience, and a
handover's list and property writes change which streams hold the contact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from reconciler.model import OPTED_OUT_STATUSES, Contact, HubList
from reconciler.plan import (
    HUBSPOT,
    MAILCHIMP,
    STEP_HANDOVER_HUBSPOT,
    STEP_HANDOVER_MAILCHIMP,
    STEP_OPT_OUTS_CREATE_CONTACTS,
    STEP_OPT_OUTS_TO_HUBSPOT,
    Change,
)
from reconciler.rules_contacts import AudienceRules, Out, People, Person, is_unsubscribed_from, valid_email
from reconciler.rules_lists import list_write
from reconciler.settings import Config, Handover

# -- R11 Opt-outs to HubSpot ------------------------------------------------------------------


def opt_outs_to_hubspot(out: Out, config: Config, rules: list[AudienceRules], people: People) -> None:
    """R11: members whose status is in `to_hubspot.statuses` are unsubscribed in HubSpot.

    Marks every person it unsubscribes (`opted_out_in_mailchimp`) so that R4 treats it as opted out
    in every audience of this plan (R15). Audiences in config order: the first decides the legal
    basis of a subscription two audiences both carry.
    """
    planned: set[tuple[str, str]] = set()
    for audience in rules:
        to_hubspot = audience.audience.opt_outs.to_hubspot
        if to_hubspot is None or not to_hubspot.subscriptions:
            continue
        statuses = frozenset(to_hubspot.statuses)
        for email, member in audience.state.members.items():
            if member.status not in statuses:
                continue
            reason = f"R11 {member.status} in Mailchimp audience {audience.name}"
            person = people.get(email)
            if person is None:
                if not to_hubspot.create_missing_contacts or not valid_email(email):
                    out.report("skipped", audience.name, email,
                               f"R11 {member.status} member of audience {audience.name} has no HubSpot contact")
                    continue
                person = people[email] = _create_contact(out, email, reason, audience.name)
            contact_id = None if person.created_in_plan else person.primary.id
            unsubscribed = False
            for sid in to_hubspot.subscriptions:
                if (email, sid) in planned or is_unsubscribed_from(person, sid):
                    continue
                planned.add((email, sid))
                unsubscribed = True
                out.changes.append(Change.make(
                    HUBSPOT, "unsubscribe_contact", sid, email, {"unsubscribed": False},
                    {"unsubscribed": True, "legal_basis": to_hubspot.legal_basis,
                     "explanation": to_hubspot.explanation},
                    f"{reason}: unsubscribe from {config.subscription_name(sid)}", STEP_OPT_OUTS_TO_HUBSPOT, contact_id,
                ))
            if unsubscribed and not person.opted_out_in_mailchimp:
                people[email] = person._replace(
                    opted_out_in_mailchimp=f"unsubscribed in HubSpot by this plan (R11 from audience {audience.name})")


def opt_outs_of_this_plan(out: Out, config: Config, rules: list[AudienceRules], people: People) -> None:
    """R11 for the members R4 unsubscribes in this plan, so the plan converges in one apply.

    Once R4 sets a member to unsubscribed, the next plan would carry it to HubSpot (R11 reads every
    unsubscribed member). Planned now, it is the same write, one run earlier: the person's opt-out
    (in HubSpot of another subscription, or in another Mailchimp audience) reaches every
    subscription R11 uses. R2 and R12 unsubscribe only members they then archive, which R11 does
    not read, so only R4's count."""
    planned = {(c.email, c.target) for c in out.changes if c.action == "unsubscribe_contact"}
    by_name = {r.name: r for r in rules}
    for change in list(out.changes):
        if change.action != "unsubscribe_member" or change.rule != "R4":
            continue
        audience = by_name.get(change.target)
        to_hubspot = audience.audience.opt_outs.to_hubspot if audience else None
        person = people.get(change.email)
        if to_hubspot is None or "unsubscribed" not in to_hubspot.statuses or person is None \
                or person.created_in_plan:
            continue
        for sid in to_hubspot.subscriptions:
            if (change.email, sid) in planned or is_unsubscribed_from(person, sid):
                continue
            planned.add((change.email, sid))
            out.changes.append(Change.make(
                HUBSPOT, "unsubscribe_contact", sid, change.email, {"unsubscribed": False},
                {"unsubscribed": True, "legal_basis": to_hubspot.legal_basis, "explanation": to_hubspot.explanation},
                f"R11 unsubscribed in Mailchimp audience {change.target} by this plan ({change.reason}): "
                f"unsubscribe from {config.subscription_name(sid)}",
                STEP_OPT_OUTS_TO_HUBSPOT, person.primary.id,
            ))


def _create_contact(out: Out, email: str, reason: str, audience: str) -> Person:
    """R11 `create_missing_contacts`: the contact is created, then unsubscribed; until then it has
    no id, and it counts as opted out in every audience of this plan (R15)."""
    out.changes.append(Change.make(HUBSPOT, "create_contact", "contacts", email, {}, {"email": email},
                                   f"{reason}: no HubSpot contact", STEP_OPT_OUTS_CREATE_CONTACTS))
    contact = Contact("", email)
    return Person(email, (contact,), frozenset(), contact.properties, frozenset(), False,
                  f"unsubscribed in HubSpot by this plan (R11 from audience {audience})", created_in_plan=True)


def mailchimp_opt_outs(out: Out, config: Config, snapshot_audiences: Mapping[str, Any], people: People,
                       remembered: Mapping[str, str]) -> None:
    """A Mailchimp opt-out keeps the person out of every audience of the config (SPEC §4 R4, R15),
    on every run: an unsubscribed or cleaned member in any audience (planned or not: `--audience`
    still reads the others' opt-outs), or an opt-out the audit log remembers (the member may since
    have been archived, hiding it, and HubSpot may not reflect it yet)."""
    seen: dict[str, str] = {}
    for name, audience in config.audiences.items():
        state = snapshot_audiences.get(audience.mailchimp_list_id)
        if state is None:
            continue
        for email, member in state.members.items():
            if member.status in OPTED_OUT_STATUSES and email not in seen:
                seen[email] = f"opted out in Mailchimp: {member.status} in audience {name}"
    for email, why in remembered.items():
        seen.setdefault(email, f"opted out in Mailchimp: {why} (audit log)")
    for email, why in seen.items():
        person = people.get(email)
        if person is not None and not person.opted_out_in_mailchimp:
            people[email] = person._replace(opted_out_in_mailchimp=why)


# -- R12 Handover -----------------------------------------------------------------------------


@dataclass
class Handed:
    """Members R12 decided (handed over, or reported for want of a contact), per audience name."""

    emails: dict[str, set[str]] = field(default_factory=dict)
    set_by: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (email, prop) -> value, tag

    def decided(self, audience: str, email: str) -> bool:
        return email in self.emails.get(audience, ())


def pending_handovers(audience: AudienceRules, tags: tuple[str, ...]) -> list[Handover]:
    """The handovers a member's tags call for, in config order (none when a tag is exempt)."""
    carried = {t.casefold() for t in tags}
    if carried.isdisjoint(audience.handovers) or audience.any_exempt(tags):
        return []
    return [h for h in audience.audience.handover if h.tag.casefold() in carried]


def source_list_name(audience: AudienceRules, tags: tuple[str, ...], person: Person,
                     lists: Mapping[str, HubList]) -> str | None:
    """The first source, in stream order, whose primary tag the member carries, preferring one
    whose list holds the contact; None when there is none."""
    carried = {t.casefold() for t in tags}
    matching = [
        source for stream in audience.streams for source in stream.sources
        if carried & {source.tag.casefold(), *(r.tag.casefold() for r in source.tag_rules)}
    ]
    if not matching:
        return None
    chosen = next((s for s in matching if s.list in person.lists), matching[0])
    hub_list = lists.get(chosen.list)
    return hub_list.name if hub_list is not None else chosen.list


def handovers(
    out: Out, rules: list[AudienceRules], people: People, critical: frozenset[str],
    lists: Mapping[str, HubList], unfinished: Mapping[tuple[str, str], str] = MappingProxyType({}),
) -> Handed:
    """R12 for every audience, config order. Updates `people` to HubSpot as it will be after the
    handover writes (lists joined and left, properties set), so later rules plan from it.
    `unfinished`: handovers an interrupted apply left with their tags removed but not archived."""
    handed = Handed()
    for audience in rules:
        decided = handed.emails.setdefault(audience.name, set())
        if not audience.handovers:
            continue
        for email, member in audience.state.members.items():
            if member.status == "archived":
                continue
            pending = pending_handovers(audience, member.tags)
            if not pending:
                memo = unfinished.get((audience.list_id, email))
                person = people.get(email)
                if memo is not None and person is not None and person.lists.isdisjoint(critical):
                    decided.add(email)
                    _finish_in_mailchimp(out, audience, email, member.status, member.tags, memo)
                continue
            person = people.get(email)
            tags = ", ".join(h.tag for h in pending)
            if person is None:
                decided.add(email)
                out.report("skipped", audience.name, email,
                           f"R12 handover tag {tags} but no HubSpot contact has this email: not changed")
                continue
            if person.created_in_plan:
                decided.add(email)
                out.report("skipped", audience.name, email,
                           f"R12 handover tag {tags}: the contact is created by this plan (R11); handed over next run")
                continue
            if not person.lists.isdisjoint(critical):
                continue  # R2 decides
            decided.add(email)
            observed = person
            for handover in pending:
                person = _hand_over_in_hubspot(out, audience, handover, person, observed, member.tags, lists, handed)
            people[email] = person
            _hand_over_in_mailchimp(out, audience, pending, email, member.status, member.tags)
    return handed


def _hand_over_in_hubspot(
    out: Out, audience: AudienceRules, handover: Handover, person: Person, observed: Person, tags: tuple[str, ...],
    lists: Mapping[str, HubList], handed: Handed,
) -> Person:
    reason = f"R12 handover {handover.tag} to list {handover.to_list} (audience {audience.name})"
    joined, left = set(), set()
    if handover.to_list not in person.lists:
        if list_write(out, lists, "add_to_list", handover.to_list, person, person.primary.id, reason,
                      STEP_HANDOVER_HUBSPOT):
            joined.add(handover.to_list)
    for list_id in handover.remove_from:
        if list_id not in person.lists:
            continue
        removed = [c for c in person.contacts if list_id in c.lists]
        if all([list_write(out, lists, "remove_from_list", list_id, person, c.id, reason, STEP_HANDOVER_HUBSPOT)
                for c in removed]):
            left.add(list_id)
    properties = _handover_properties(out, audience, handover, observed, tags, lists, handed, reason)
    if properties:
        before = {prop: person.properties.get(prop) for prop in properties}
        out.changes.append(Change.make(HUBSPOT, "set_contact_properties", "contacts", person.email, before,
                                       properties, reason, STEP_HANDOVER_HUBSPOT, person.primary.id))
    if not (joined or left or properties):
        return person
    merged: dict[str, Any] = {**person.properties, **properties}
    return person._replace(lists=(person.lists | joined) - left, properties=merged)


def _handover_properties(
    out: Out, audience: AudienceRules, handover: Handover, person: Person, tags: tuple[str, ...],
    lists: Mapping[str, HubList], handed: Handed, reason: str,
) -> dict[str, str]:
    """The `set_properties` values that differ from the contact's, `{source_list_name}` filled in."""
    wanted: dict[str, str] = {}
    for prop, template in handover.set_properties.items():
        value = str(template)
        if "{source_list_name}" in value:
            name = source_list_name(audience, tags, person, lists)
            if name is None:
                out.report("warning", "contacts", person.email,
                           f"{reason}: no source's primary tag on the member; {prop} gets an empty source list name")
                name = ""
            value = value.replace("{source_list_name}", name)
        earlier = handed.set_by.get((person.email, prop))
        if earlier is not None:
            if earlier[0] != value:
                out.report("warning", "contacts", person.email,
                           f"{reason}: {prop} already set to another value by handover {earlier[1]}; not changed")
            continue
        handed.set_by[(person.email, prop)] = (value, handover.tag)
        current = person.properties.get(prop)
        if (current if current is not None else "") != value:
            wanted[prop] = value
    return wanted


def _finish_in_mailchimp(out: Out, audience: AudienceRules, email: str, status: str, tags: tuple[str, ...],
                         memo: str) -> None:
    """The Mailchimp half of a handover whose tags an interrupted apply already removed: without
    its tags the member looks unmanaged (R10), so the audit log's memory of the removal decides."""
    reason = memo.split(" (", 1)[0] if memo.startswith("R12 ") else "R12 handover"
    _hand_over_in_mailchimp(out, audience, [], email, status, tags,
                            reason=f"{reason} (finishing a handover an interrupted apply left unarchived)")


def _hand_over_in_mailchimp(
    out: Out, audience: AudienceRules, pending: list[Handover], email: str, status: str, tags: tuple[str, ...],
    reason: str | None = None,
) -> None:
    """After the HubSpot writes: managed and handover tags removed, then the member archived.

    Mailchimp answers 405 to archiving a pending or cleaned member. A pending member could still
    confirm, so, as R2 does, it is unsubscribed first (the archive waits for it). A cleaned one
    is never emailed: its managed and handover tags go (R7 lets R12 remove them), so the handover
    is done once, and it is reported, not archived."""
    handover_tags = {h.tag.casefold() for h in pending}
    if reason is None:
        reason = f"R12 handover {', '.join(h.tag for h in pending)} to list {', '.join(h.to_list for h in pending)}"
    removed = [t for t in tags if t.casefold() in audience.managed or t.casefold() in handover_tags]
    if removed:
        out.changes.append(Change.make(MAILCHIMP, "remove_tags", audience.name, email, dict.fromkeys(removed, True),
                                       dict.fromkeys(removed, False), reason, STEP_HANDOVER_MAILCHIMP))
    if status == "cleaned":
        out.report("skipped", audience.name, email,
                   f"{reason}: the member is cleaned (never emailed); Mailchimp cannot archive it, not archived")
        return
    if status == "pending":
        out.changes.append(Change.make(MAILCHIMP, "unsubscribe_member", audience.name, email, {"status": "pending"},
                                       {"status": "unsubscribed"},
                                       f"{reason}: pending member unsubscribed before its archive (it could still confirm)",
                                       STEP_HANDOVER_MAILCHIMP))
    out.changes.append(Change.make(MAILCHIMP, "archive_member", audience.name, email, {"status": status},
                                   {"status": "archived"}, reason, STEP_HANDOVER_MAILCHIMP))
