"""Small builders of Config and Snapshot values for the core's tests (rules, plan, simulate).

Separate so that each table-driven rule test reads as data: only what the case is about is
spelled out; everything else is the SPEC §3 example configuration.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping

from reconciler.model import AudienceState, Contact, HubList, Member, MergeField, Memory, Snapshot
from reconciler.plan import Change, Plan
from reconciler.rules import build_plan
from reconciler.settings import (
    Audience,
    Config,
    Exclusions,
    Exempt,
    Handover,
    HubSpotSettings,
    Limit,
    MailchimpSettings,
    OptOuts,
    Safety,
    Source,
    Stream,
    TagRule,
    ToHubSpot,
    frozen_map,
)

MARKETING = "289137112"
LIST_ID = "abc123def4"


def source(list_id: str, tag: str, *, rules: Iterable[TagRule] = (), extra: Iterable[str] = ()) -> Source:
    return Source(list=list_id, tag=tag, tag_rules=tuple(rules), extra_tags=tuple(extra))


def stream(name: str, *sources: Source, exclude: Iterable[str] = ()) -> Stream:
    return Stream(name=name, exclude=tuple(exclude), sources=tuple(sources))


def example_streams() -> tuple[Stream, ...]:
    """SPEC §3: general (excludes active_deals) then manual_override."""
    return (
        stream("general",
               source("719", "Recruitment", rules=[TagRule("branches", "gt", 1, "General Multi")]),
               source("987", "General Single"),
               exclude=["active_deals"]),
        stream("manual_override", source("784", "General Single", extra=["Manual Inclusion"])),
    )


def to_hubspot(**overrides: Any) -> ToHubSpot:
    return replace(ToHubSpot(statuses=("unsubscribed",), subscriptions=(MARKETING,)), **overrides)


def audience(name: str = "main", list_id: str = LIST_ID, **overrides: Any) -> Audience:
    """The SPEC §3 example audience (clean-up, restore and R4/R11 on); override any field."""
    base = Audience(
        name=name,
        mailchimp_list_id=list_id,
        new_member_status="subscribed",
        merge_fields=frozen_map({"FNAME": "firstname", "LNAME": "lastname"}),
        streams=example_streams(),
        tag_policy="first_tag_wins",
        on_leave="archive",
        exempt=Exempt(tags=("VIP", "DoNotArchive"), tag_patterns=("^Manual_", "^Custom_")),
        source_cleanup=True,
        restore_archived=True,
        handover=(Handover("Recruitment Finished", "947", ("719",),
                           frozen_map({"import_list": "{source_list_name}"})),),
        opt_outs=OptOuts(to_hubspot=to_hubspot(), from_hubspot=(MARKETING,), from_hubspot_enabled=True),
    )
    if "merge_fields" in overrides:
        overrides["merge_fields"] = frozen_map(overrides["merge_fields"])
    return replace(base, **overrides)


def config(*audiences: Audience, critical: Iterable[str] = ("762", "773"),
           hard: Mapping[str, Iterable[str]] | None = None, safety: Safety = Safety()) -> Config:
    audiences = audiences or (audience(),)
    return Config(
        version=1,
        hubspot=HubSpotSettings(token="t"),
        mailchimp=MailchimpSettings(api_key="k-us1"),
        subscriptions=frozen_map({"marketing": MARKETING}),
        exclusions=Exclusions(critical=tuple(critical),
                              hard=frozen_map({k: tuple(v) for k, v in (hard or {"active_deals": ["717"]}).items()})),
        audiences=frozen_map({a.name: a for a in audiences}),
        safety=safety,
    )


def limits(**limits: Limit) -> Safety:
    return Safety(**limits)


def contact(cid: str, email: str | None, lists: Iterable[str] = (), *, unsub: Iterable[str] = (),
            opted_out_of_all: bool = False, **properties: Any) -> Contact:
    return Contact(cid, email, frozen_map(properties), frozenset(lists), frozenset(unsub), opted_out_of_all)


def member(email: str, status: str = "subscribed", *tags: str, **merge_fields: Any) -> Member:
    return Member(email, status, frozen_map(merge_fields), tuple(tags))


LIST_NAMES = {"719": "Recruitment", "987": "General", "784": "Manual", "717": "Active deals",
              "762": "Do not contact", "773": "Legal hold", "947": "Recruitment finished"}


def snapshot(contacts: Iterable[Contact] = (), members: Iterable[Member] | Mapping[str, Iterable[Member]] = (),
             *, dynamic: Iterable[str] = (), lists: Iterable[HubList] = (),
             merge_types: Mapping[str, str] | None = None) -> Snapshot:
    """Every list the contacts or the example config name exists (MANUAL unless in `dynamic`).

    `members` is the example audience's members, or {mailchimp list id: members}.
    """
    contacts = list(contacts)
    dynamic = set(dynamic)
    known = {l.id: l for l in lists}
    for list_id in {*LIST_NAMES, *(l for c in contacts for l in c.lists)}:
        if list_id not in known:
            kind = "DYNAMIC" if list_id in dynamic else "MANUAL"
            size = sum(1 for c in contacts if list_id in c.lists)
            known[list_id] = HubList(list_id, LIST_NAMES.get(list_id, f"List {list_id}"), kind, size)
    by_list = members if isinstance(members, Mapping) else {LIST_ID: members}
    types = merge_types or {"FNAME": "text", "LNAME": "text"}
    fields = frozen_map({tag: MergeField(tag, kind) for tag, kind in types.items()})
    audiences = {
        list_id: AudienceState(list_id, f"Audience {list_id}", False, fields, frozen_map({m.email: m for m in ms}))
        for list_id, ms in by_list.items()
    }
    if LIST_ID not in audiences:
        audiences[LIST_ID] = AudienceState(LIST_ID, "Main", False, fields, frozen_map({}))
    return Snapshot(frozen_map({c.id: c for c in contacts}), frozen_map(known), frozen_map(audiences))


def plan(cfg: Config, snap: Snapshot, memory: Memory = Memory(), audiences: Iterable[str] | None = None) -> Plan:
    return build_plan(cfg, snap, memory, audiences)


def brief(changes: Iterable[Change]) -> set[tuple[str, str, str]]:
    """(action, target, email) of each change: what most rule tables assert."""
    return {(c.action, c.target, c.email) for c in changes}


def of(plan: Plan, action: str, email: str | None = None) -> list[Change]:
    return [c for c in plan.changes if c.action == action and (email is None or c.email == email)]


def reasons(plan: Plan, email: str) -> list[str]:
    return [r.reason for r in plan.reports if r.email == email]
