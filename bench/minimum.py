"""The fewest requests a phase could send: reads from the sandbox's state, writes from the plan's changes.

Separate from the driver so the formula (issues 5 and 7) is written once, next to its assumptions,
and a test can check it. It reads the sandbox state objects directly, never through the API, so
computing a bound never moves the counters it is compared with.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping

from portal import AUDIENCE, CRITICAL, EXCLUDED, HANDOVER_TO, SOURCE_A, SOURCE_B

CONFIGURED_LISTS = (CRITICAL, EXCLUDED, SOURCE_A, SOURCE_B, HANDOVER_TO)
SOURCES = (SOURCE_A, SOURCE_B)
MEMBERSHIP_PAGE, CONTACT_BATCH, MEMBER_PAGE = 250, 100, 1000
SEGMENT_BATCH, SUBSCRIBE_BATCH, LIST_BATCH = 500, 500, 500  # vendors' batch sizes (issue 5)
SEARCH_EMAILS = 500  # R1: one contacts search covers 5 filter groups of 100 emails (issue 11)
# Reads any plan makes whatever the portal's size: preflight (lists by id, subscription definitions,
# contact properties, audience, merge fields) and observe (lists by id, audience, merge fields).
PLAN_HANDFUL = 8


def pages(n: int, size: int) -> int:
    """Pages of a paged read: the first page is read even when empty."""
    return max(1, math.ceil(n / size))


def observed_sizes(sandbox: Any) -> dict[str, int]:
    """C, U, M, A and each configured list's size, as an observation of the sandbox would find them."""
    hub = sandbox.hubspot
    with hub.lock:
        sizes = {f"list {lid}": len(hub.lists[lid].members) for lid in CONFIGURED_LISTS}
        source_ids = {cid for lid in SOURCES for cid in hub.lists[lid].members if cid in hub.contacts}
        source_emails = {hub.contacts[cid].properties.get("email", "").lower() for cid in source_ids}
    audience = sandbox.mailchimp.audiences[AUDIENCE]
    members = list(audience.members.values())
    live = sum(1 for m in members if m.status != "archived")
    emails = {m.email.lower() for m in members}
    live_unheld = {m.email.lower() for m in members if m.status != "archived"} - source_emails
    return {**sizes, "C": len(source_ids), "U": len(emails - source_emails), "M": live, "A": len(members) - live,
            "U_live": len(live_unheld)}


def observe_reads(sizes: Mapping[str, int]) -> int:
    """Issue 5's formula without the handful: Σ ceil(size/250) + ceil(C/100) + ceil(U/100) + pages of M and A,
    plus issue 11's searches for other contacts holding the source contacts' and live members' emails
    (R1): ceil(C/500) + ceil(U_live/500)."""
    lists = sum(pages(sizes[f"list {lid}"], MEMBERSHIP_PAGE) for lid in CONFIGURED_LISTS)
    searches = math.ceil(sizes["C"] / SEARCH_EMAILS) + math.ceil(sizes.get("U_live", 0) / SEARCH_EMAILS)
    return (lists + math.ceil(sizes["C"] / CONTACT_BATCH) + math.ceil(sizes["U"] / CONTACT_BATCH)
            + pages(sizes["M"], MEMBER_PAGE) + pages(sizes["A"], MEMBER_PAGE) + searches)


def _tags(after: Mapping[str, Any], key: str = "tags") -> tuple[list[str], list[str]]:
    value = after.get(key) if key else after
    if isinstance(value, Mapping):
        return [t for t, on in value.items() if on], [t for t, on in value.items() if not on]
    return list(value or ()), []


def write_minimum(changes: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Writes per kind (issue 7): ceil(n/500) for creates and for each tag's adds and for its removes;
    one per update, archive, restore, Mailchimp unsubscribe and HubSpot unsubscribe; list membership
    changes 500 a call per list and direction; HubSpot contact creates and property sets 100 a call."""
    count: dict[str, int] = defaultdict(int)
    tag_adds: dict[str, int] = defaultdict(int)
    tag_removes: dict[str, int] = defaultdict(int)
    list_writes: dict[tuple[str, str], int] = defaultdict(int)
    new_tags: set[str] = set()
    for change in changes:
        action, after = change["action"], change.get("after") or {}
        count[action] += 1
        if action in ("create_member", "restore_member"):
            add, remove = _tags(after)
        elif action in ("add_tags", "remove_tags"):
            add, remove = _tags(after, "")
        else:
            add, remove = [], []
        for tag in add:
            tag_adds[tag] += 1
            new_tags.add(tag)
        for tag in remove:
            tag_removes[tag] += 1
        if action in ("add_to_list", "remove_from_list"):
            list_writes[(action, change["target"])] += 1
    out = {
        "create_member": math.ceil(count["create_member"] / SUBSCRIBE_BATCH),
        "tags": sum(math.ceil(n / SEGMENT_BATCH) for n in tag_adds.values())
        + sum(math.ceil(n / SEGMENT_BATCH) for n in tag_removes.values()),
        "list_memberships": sum(math.ceil(n / LIST_BATCH) for n in list_writes.values()),
        "create_contact": math.ceil(count["create_contact"] / CONTACT_BATCH),
        "set_contact_properties": math.ceil(count["set_contact_properties"] / CONTACT_BATCH),
    }
    for one_each in ("update_member", "archive_member", "restore_member", "unsubscribe_member", "unsubscribe_contact"):
        out[one_each] = count[one_each]
    return {k: v for k, v in out.items() if v}


def phase_minimum(before: Mapping[str, int], changes: list[Mapping[str, Any]] | None = None,
                  after: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A plan (`changes` None) reads once with preflight; an apply reads, writes, then reads again."""
    reads = observe_reads(before) + PLAN_HANDFUL
    writes: dict[str, int] = {}
    if changes is not None:
        writes = write_minimum(changes)
        if writes.get("tags"):
            reads += 1  # a tag write first looks the tags' segments up: one GET per audience
        if after is not None:
            reads += observe_reads(after) + PLAN_HANDFUL - 5  # the re-plan skips preflight's five reads
    return {"reads": reads, "writes": sum(writes.values()), "writes_by_kind": writes,
            "total": reads + sum(writes.values())}
