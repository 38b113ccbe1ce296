"""HubSpot list writes: the DYNAMIC-list guard (R14) and the source-list clean-up of R2 and R3.

Separate because clean-up is decided for every contact independently of what happens to its
Mailchimp member (SPEC §4 precedence), and every list write, clean-up or handover, passes R14.
"""

from __future__ import annotations

from typing import Mapping

from reconciler.model import HubList
from reconciler.plan import HUBSPOT, STEP_CLEANUP, Change
from reconciler.rules_contacts import AudienceRules, Out, People, Person, join_stream



def list_write(
    out: Out, lists: Mapping[str, HubList], action: str, list_id: str, person: Person, contact_id: str,
    reason: str, step: int,
) -> bool:
    """Adds an add_to_list / remove_from_list change, unless R14 forbids it (then a warning).

    Returns whether the change was planned, so callers only count writes that will happen.
    """
    hub_list = lists.get(list_id)
    if hub_list is None or not hub_list.writable:
        if hub_list is None:
            kind = "not found"
        elif hub_list.processing_type == "DYNAMIC":
            kind = f"DYNAMIC ({hub_list.name})"
        else:  # missing or unknown: only MANUAL and SNAPSHOT lists are known to take membership writes
            sent = f"processingType {hub_list.processing_type!r}" if hub_list.processing_type else "no processingType"
            kind = f"of unknown type ({hub_list.name}; HubSpot sent {sent}, and only MANUAL and SNAPSHOT lists are written)"
        out.report("warning", list_id, person.email,
                   f"R14 list {list_id} is {kind}: never written; left out {action} of contact {contact_id} ({reason})")
        return False
    adding = action == "add_to_list"
    out.changes.append(Change.make(HUBSPOT, action, list_id, person.email, {"member": not adding},
                                   {"member": adding}, reason, step, contact_id))
    return True


def cleanup_triggers(rules: list[AudienceRules], critical: frozenset[str]) -> frozenset[str]:
    """Lists whose presence can make a contact need clean-up (fast skip for everybody else)."""
    lists = set(critical)
    for audience in rules:
        if audience.audience.source_cleanup:
            for stream in audience.streams:
                lists |= stream.cleanup_lists
    return frozenset(lists)


def cleanup_targets(person: Person, rules: list[AudienceRules], critical: frozenset[str]) -> dict[str, str]:
    """List id -> reason, for the source lists the person must leave (R2, R3)."""
    cleaning = [r for r in rules if r.audience.source_cleanup]
    critical_held = sorted(person.lists & critical)
    targets: dict[str, str] = {}
    if critical_held:
        reason = f"R2 critical list {critical_held[0]}"
        for audience in cleaning:
            for list_id in audience.audience.source_lists:
                targets.setdefault(list_id, reason)
        return targets
    for audience in cleaning:
        for stream in audience.streams:
            label = stream.exclusion_label(person.lists & stream.cleanup_lists)
            if label is None:
                continue
            for source in stream.sources:
                targets.setdefault(source.list, f"R3 excluded by {label} from stream {stream.name}")
    if targets:
        # A list that a stream the person joined uses (in any audience planned) is kept.
        for audience in rules:
            joined = join_stream(audience, person)
            if joined is not None:
                for list_id in joined.stream.source_lists:
                    targets.pop(list_id, None)
    return targets


def source_cleanup(
    out: Out, people: People, rules: list[AudienceRules], critical: frozenset[str],
    lists: Mapping[str, HubList],
) -> None:
    """R2/R3 clean-up: every contact sharing the email is removed from the lists that hold it."""
    triggers = cleanup_triggers(rules, critical)
    if not any(r.audience.source_cleanup for r in rules):
        return
    for person in people.values():
        if person.lists.isdisjoint(triggers):
            continue
        for list_id, reason in sorted(cleanup_targets(person, rules, critical).items()):
            if list_id not in person.lists:
                continue
            for contact in person.contacts:
                if list_id in contact.lists:
                    list_write(out, lists, "remove_from_list", list_id, person, contact.id, reason, STEP_CLEANUP)
