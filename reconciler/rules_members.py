"""What happens to each Mailchimp member of one audience: R2 archive, R4, R5–R10, R13 and the cap (R16).

Separate from the HubSpot-side rules because it is the per-audience loop over every contact and
member, the hot path of a plan: precedence is decided once per email, here, in `member_fate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from reconciler.model import OPTED_OUT_STATUSES, WRITABLE_STATUSES, Member, Memory, Refusal
from reconciler.normalise import normalise
from reconciler.plan import (
    MAILCHIMP,
    STEP_CRITICAL,
    STEP_LEAVE,
    STEP_MEMBERS,
    STEP_OPT_OUTS_FROM_HUBSPOT,
    Change,
)
from reconciler.rules_contacts import (
    AudienceRules,
    Joined,
    Out,
    People,
    Person,
    join_stream,
    opt_out_reason,
    why_no_stream,
)
from reconciler.rules_optouts import Handed
from reconciler.settings import Config

COUNTED_BY_CAP = ("subscribed", "pending")  # R16
EMPTY_CONSENT: Mapping[str, frozenset[str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A create or restore waiting for the member cap (R16): restores first, then stream,
    source and email order."""

    order: tuple[int, int, int, str]
    change: Change


def plan_audience(
    out: Out, config: Config, audience: AudienceRules, people: People, handed: Handed,
    critical: frozenset[str], memory: Memory, consent: Mapping[str, frozenset[str]] = EMPTY_CONSENT,
) -> None:
    """Every contact and member of the audience, by the precedence of SPEC §4. `consent`: the
    subscriptions each restore candidate's HubSpot contact is explicitly subscribed to (R8)."""
    members = audience.state.members
    candidates: list[Candidate] = []
    sources = audience.source_lists
    for email, person in people.items():
        member = members.get(email)
        if member is None and person.lists.isdisjoint(sources):
            continue  # nothing to create, nothing to change
        if handed.decided(audience.name, email):
            continue
        member_fate(out, config, audience, person, member, critical, memory, candidates, consent)
    for email, member in members.items():
        if email not in people and not handed.decided(audience.name, email):
            leave(out, audience, None, member)
    apply_member_cap(out, audience, candidates)


def member_fate(
    out: Out, config: Config, audience: AudienceRules, person: Person, member: Member | None,
    critical: frozenset[str], memory: Memory, candidates: list[Candidate],
    consent: Mapping[str, frozenset[str]] = EMPTY_CONSENT,
) -> None:
    """Precedence: critical (R2), opted out (R4), then streams (R3): eligible (R5–R8) or leaving (R9).
    A pending handover (R12) was decided before this runs."""
    if not person.lists.isdisjoint(critical):
        archive_critical(out, audience, person, member, critical)
        return
    if member is not None and member.status in OPTED_OUT_STATUSES:
        joined = join_stream(audience, person)  # R7: never written, whatever else holds
        if joined is not None:
            report_opted_out_in_mailchimp(out, audience, person, joined, member)
        return
    opted_out = opt_out_reason(person, audience.r4_subscriptions, config)
    if opted_out is not None:
        unsubscribe_opted_out(out, audience, member, opted_out, unsubscribe=True)
        return
    # Opted out of a configured subscription that R4 does not use (or R4 off): still no write of
    # any kind but an unsubscribe, which only R4's subscriptions ask for (SPEC §4 R4).
    no_writes = opt_out_reason(person, audience.all_subscriptions, config)
    if no_writes is not None:
        unsubscribe_opted_out(out, audience, member, no_writes, unsubscribe=False)
        return
    joined = join_stream(audience, person)
    if joined is not None:
        eligible(out, audience, person, joined, member, memory, candidates, consent)
    elif member is not None:
        leave(out, audience, person, member)


# -- R2 Critical ------------------------------------------------------------------------------


def archive_critical(out: Out, audience: AudienceRules, person: Person, member: Member | None,
                     critical: frozenset[str]) -> None:
    """R2: archived whatever its status, tags or exemptions; never created, updated or restored.

    Mailchimp answers 405 to archiving a pending or cleaned member. A pending member could still
    confirm, so it is first unsubscribed (the archive waits for that, `Plan.prerequisites`); a
    cleaned one is never emailed and is reported, not written."""
    if member is None or member.status == "archived":
        return
    reason = f"R2 critical list {min(person.lists & critical)}"
    if member.status == "cleaned":
        out.report("skipped", audience.name, member.email,
                   f"{reason}: the member is cleaned (never emailed); Mailchimp cannot archive it, not written")
        return
    if member.status == "pending":
        out.changes.append(Change.make(MAILCHIMP, "unsubscribe_member", audience.name, member.email,
                                       {"status": "pending"}, {"status": "unsubscribed"},
                                       f"{reason}: pending member unsubscribed before its archive (it could still confirm)",
                                       STEP_CRITICAL))
    out.changes.append(Change.make(MAILCHIMP, "archive_member", audience.name, member.email,
                                   {"status": member.status}, {"status": "archived"}, reason, STEP_CRITICAL))


# -- R4 HubSpot opt-out -----------------------------------------------------------------------


def unsubscribe_opted_out(out: Out, audience: AudienceRules, member: Member | None, reason: str,
                          unsubscribe: bool) -> None:
    """R4: not eligible, so no merge fields, tags, create or restore; with `from_hubspot` on (and an
    opt-out R4 counts), a subscribed or pending member is unsubscribed (never archived for it)."""
    if member is None or member.status not in ("subscribed", "pending", "transactional"):
        return
    if not unsubscribe or not audience.audience.opt_outs.from_hubspot_enabled:
        out.report("skipped", audience.name, member.email,
                   f"{reason}: no data written to its {member.status} member"
                   + ("" if unsubscribe else " (not a subscription R4 unsubscribes from)")
                   + ("" if audience.audience.opt_outs.from_hubspot_enabled else "; from_hubspot is off"))
        return
    if member.status in ("subscribed", "pending"):
        out.changes.append(Change.make(MAILCHIMP, "unsubscribe_member", audience.name, member.email,
                                       {"status": member.status}, {"status": "unsubscribed"}, reason,
                                       STEP_OPT_OUTS_FROM_HUBSPOT))


# -- R5–R8 Eligible contacts ------------------------------------------------------------------


def eligible(out: Out, audience: AudienceRules, person: Person, joined: Joined, member: Member | None,
             memory: Memory, candidates: list[Candidate],
             consent: Mapping[str, frozenset[str]] = EMPTY_CONSENT) -> None:
    if member is None:
        create(out, audience, person, joined, memory, candidates)
    elif member.status in WRITABLE_STATUSES:
        update(out, audience, person, joined, member)
    elif member.status in OPTED_OUT_STATUSES:
        report_opted_out_in_mailchimp(out, audience, person, joined, member)
    elif member.status == "archived":
        restore(out, audience, person, joined, member, memory, candidates, consent)


def report_opted_out_in_mailchimp(out: Out, audience: AudienceRules, person: Person, joined: Joined,
                                  member: Member) -> None:
    """R7: an unsubscribed or cleaned member is reported, never written."""
    out.report("skipped", audience.name, person.email,
               f"R7 member is {member.status} in Mailchimp: never resubscribed or written ({source_of(joined)})")


def source_of(joined: Joined) -> str:
    """`stream general, list 719`: where an eligible contact's tags come from, for reasons."""
    return f"stream {joined.stream.name}, list {joined.source.list}"


def refused_on(rule: str, refusal: Refusal) -> str:
    """The reported reason for a remembered refusal (R5, R8): not tried again every run."""
    return (f"{rule} {refusal.action} refused on {refusal.at[:10] or 'an earlier run'} ({refusal.reason}); "
            "--retry-refused tries again")


def create(out: Out, audience: AudienceRules, person: Person, joined: Joined, memory: Memory,
           candidates: list[Candidate]) -> None:
    """R5: status_if_new, merge fields and tags; a remembered refusal is reported instead."""
    refusal = None if memory.retry_refused else memory.refusals.get((audience.list_id, person.email))
    if refusal is not None:
        out.report("refused", audience.name, person.email,
                   refused_on("R5", refusal))
        return
    tags, _ = audience.implied_tags(joined)
    after = {
        "status_if_new": audience.audience.new_member_status,
        "merge_fields": desired_merge_fields(audience, person),
        "tags": dict.fromkeys(tags, True),
    }
    change = Change.make(MAILCHIMP, "create_member", audience.name, person.email, {}, after, f"R5 new member ({source_of(joined)})",
                         STEP_MEMBERS, person.primary.id)
    candidates.append(Candidate((1, joined.stream.index, joined.source_index, person.email), change))


def update(out: Out, audience: AudienceRules, person: Person, joined: Joined, member: Member) -> None:
    """R6: only the differences; never `status`."""
    email = person.email
    before, after = merge_field_differences(audience, person, member)
    if after:
        out.changes.append(Change.make(MAILCHIMP, "update_member", audience.name, email, before, after,
                                       f"R6 merge fields differ ({source_of(joined)})", STEP_MEMBERS, person.primary.id))
    adding, removing = tag_differences(audience, joined, member.tags, reach_across=False)
    if adding:
        out.changes.append(Change.make(MAILCHIMP, "add_tags", audience.name, email, dict.fromkeys(adding, False),
                                       dict.fromkeys(adding, True), f"R6 tags of its source ({source_of(joined)})", STEP_MEMBERS,
                                       person.primary.id))
    if removing:
        out.changes.append(Change.make(MAILCHIMP, "remove_tags", audience.name, email, dict.fromkeys(removing, True),
                                       dict.fromkeys(removing, False),
                                       f"R6 follow_source: tags its source no longer implies ({source_of(joined)})", STEP_MEMBERS,
                                       person.primary.id))


def restore(out: Out, audience: AudienceRules, person: Person, joined: Joined, member: Member, memory: Memory,
            candidates: list[Candidate], consent: Mapping[str, frozenset[str]] = EMPTY_CONSENT) -> None:
    """R8: PUT with status = new_member_status, merge fields and tags set as a create would, only
    with evidence of consent (never relying on Mailchimp to refuse: it lets the API re-subscribe
    a member an admin or the API unsubscribed before the archive)."""
    settings = audience.audience
    email = person.email
    if not settings.restore_archived:
        out.report("skipped", audience.name, email, f"R8 archived member not restored: restore_archived is off ({source_of(joined)})")
        return
    refusal = None if memory.retry_refused else memory.refusals.get((audience.list_id, email))
    if refusal is not None:
        out.report("refused", audience.name, email,
                   refused_on("R8", refusal))
        return
    evidence = consent_evidence(audience, email, memory, consent)
    if evidence is None:
        out.report("skipped", audience.name, email,
                   "R8 restore needs consent: not archived by this product while subscribed or pending "
                   "(or opted out since), and the HubSpot contact is not explicitly subscribed to "
                   f"{audience.consent_label} ({source_of(joined)})")
        return
    adding, removing = tag_differences(audience, joined, member.tags, reach_across=True)
    tags = {**dict.fromkeys(adding, True), **dict.fromkeys(removing, False)}
    merge_fields = desired_merge_fields(audience, person)
    before = {
        "status": member.status,
        "merge_fields": {tag: member.merge_fields.get(tag) for tag in merge_fields},
        "tags": {tag: not present for tag, present in tags.items()},
    }
    after = {"status": settings.new_member_status, "merge_fields": merge_fields, "tags": tags}
    change = Change.make(MAILCHIMP, "restore_member", audience.name, email, before, after,
                         f"R8 archived member is eligible again ({source_of(joined)}; {evidence})", STEP_MEMBERS,
                         person.primary.id)
    candidates.append(Candidate((0, joined.stream.index, joined.source_index, email), change))


def consent_evidence(audience: AudienceRules, email: str, memory: Memory,
                     consent: Mapping[str, frozenset[str]]) -> str | None:
    """R8's evidence of consent, as words for the reason; None when there is none.

    Either the audit log's latest word on the member is this product's archive of it while it was
    subscribed or pending (`Memory.archived_by_us` keeps only such latest words), or the HubSpot
    contact is explicitly SUBSCRIBED to one of the audience's configured subscriptions."""
    archived_while = memory.archived_by_us.get((audience.list_id, email))
    if archived_while in ("subscribed", "pending"):
        return f"archived by this product while {archived_while}"
    subscribed = consent.get(email, frozenset()) & frozenset(audience.consent_subscriptions)
    if subscribed:
        return f"explicitly subscribed in HubSpot to {', '.join(sorted(subscribed))}"
    return None


# -- R6 tags, R13 merge fields ----------------------------------------------------------------


def tag_differences(audience: AudienceRules, joined: Joined, tags: tuple[str, ...],
                    reach_across: bool) -> tuple[list[str], list[str]]:
    """(tags to add, tags to remove). `reach_across`: a restore, where first_tag_wins does not apply
    and handover tags go too."""
    carried = {t.casefold() for t in tags}
    implied, implied_keys = audience.implied_tags(joined)
    follow = reach_across or audience.audience.tag_policy == "follow_source"
    if implied_keys <= carried and not reach_across and (not follow or carried.isdisjoint(audience.managed.keys()
                                                                                        - implied_keys)):
        return [], []  # the common case: nothing to do
    primary_key = joined.primary_tag.casefold()
    journey_started = any(t in audience.primary and t != primary_key for t in carried)
    adding = [
        t for t in implied
        if t.casefold() not in carried and (follow or t.casefold() != primary_key or not journey_started)
    ]
    removing = [t for t in tags if follow and t.casefold() in audience.managed and t.casefold() not in implied_keys]
    if reach_across:
        # A restore starts a new journey, as a create would: a handover tag left from the last one
        # would hand the member over again on the next run.
        removing += [t for t in tags if t.casefold() in audience.handovers and t.casefold() not in implied_keys]
    return adding, removing


def desired_merge_fields(audience: AudienceRules, person: Person) -> dict[str, Any]:
    """Every mapped merge field with a non-empty HubSpot value, normalised (R13)."""
    wanted: dict[str, Any] = {}
    for tag, prop, field_type in audience.merge_fields:
        value = normalise(person.properties.get(prop), field_type)
        if value is not None:
            wanted[tag] = value
    return wanted


def merge_field_differences(audience: AudienceRules, person: Person,
                            member: Member) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) of the merge fields whose normalised values differ; an empty HubSpot value
    never blanks a Mailchimp one (R13)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    current = member.merge_fields
    properties = person.properties
    for tag, prop, field_type in audience.merge_fields:
        raw = properties.get(prop)
        observed = current.get(tag)
        if raw == observed and raw.__class__ is str and 0 < len(raw) <= 63 and raw.strip() == raw \
                and field_type != "number" and field_type != "date":
            continue  # the common case: equal, already normalised strings (63 chars fit in 255 bytes)
        value = normalise(raw, field_type)
        if value is None:
            continue
        if observed != value and normalise(observed, field_type) != value:
            before[tag] = observed
            after[tag] = value
    return before, after


# -- R9 Leaving, R10 Unmanaged ----------------------------------------------------------------


def leave(out: Out, audience: AudienceRules, person: Person | None, member: Member) -> None:
    """R9: a managed, writable member no stream wants gets `on_leave`; exempt and unmanaged
    members (R10) are left alone."""
    if member.status not in WRITABLE_STATUSES:
        return
    managed = audience.managed_tags_of(member.tags)
    if not managed or audience.any_exempt(member.tags):
        return
    on_leave = audience.audience.on_leave
    if on_leave == "keep":
        return
    reason = why_no_stream(audience, person)
    if on_leave == "archive" and member.status == "pending":
        out.report("skipped", audience.name, member.email,
                   f"{reason}: pending members cannot be archived (Mailchimp answers 405); not written")
        return
    if on_leave == "archive":
        out.changes.append(Change.make(MAILCHIMP, "archive_member", audience.name, member.email,
                                       {"status": member.status}, {"status": "archived"}, reason, STEP_LEAVE))
    else:
        out.changes.append(Change.make(MAILCHIMP, "remove_tags", audience.name, member.email,
                                       dict.fromkeys(managed, True), dict.fromkeys(managed, False), reason, STEP_LEAVE))


# -- R16 Member cap ---------------------------------------------------------------------------


def apply_member_cap(out: Out, audience: AudienceRules, candidates: list[Candidate]) -> None:
    """Creates and restores up to the cap; the rest are reported. Members this plan archives or
    unsubscribes no longer count, so the re-plan after apply sees the same room."""
    candidates.sort(key=lambda c: c.order)
    cap = audience.audience.member_cap
    if cap is None:
        out.changes.extend(c.change for c in candidates)
        return
    counted = sum(1 for m in audience.state.members.values() if m.status in COUNTED_BY_CAP)
    leaving = len({
        c.email for c in out.changes
        if c.system == MAILCHIMP and c.target == audience.name
        and c.action in ("archive_member", "unsubscribe_member") and c.before.get("status") in COUNTED_BY_CAP
    })  # an R2 pending member is both unsubscribed and archived: it frees one place
    room = max(cap - (counted - leaving), 0)
    for candidate in candidates[:room]:
        out.changes.append(candidate.change)
    for candidate in candidates[room:]:
        change = candidate.change
        out.report("capped", audience.name, change.email,
                   f"R16 member cap {cap} of audience {audience.name} reached: {change.action} not planned "
                   f"({counted - leaving} subscribed or pending members counted)")
