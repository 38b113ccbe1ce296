"""Hypothesis strategies for whole portals: a Config, a Snapshot, a Memory and hidden vendor state.

Separate from the property tests so the same generated worlds can serve any core property. Bulk
data (hundreds of contacts and members) comes from a `Random` seeded by hypothesis, which keeps
generation cheap enough for thousands of examples; the configuration too, from the same seed.

Configurations stay within what SPEC §3's semantic checks accept, plus three assumptions the
properties document: exclusion, critical and handover lists are never source lists; every
audience's R4 uses the same subscription as R11; contacts are only created by R11 in portals
without handovers (a handover of a contact created in the same plan waits for the next run).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from reconciler.model import AudienceState, Contact, HubList, Member, MergeField, Memory, Refusal, Snapshot
from reconciler.settings import (
    Audience,
    Config,
    Exclusions,
    Exempt,
    Handover,
    LEGAL_BASES,
    HubSpotSettings,
    MailchimpSettings,
    OptOuts,
    Source,
    Stream,
    TagRule,
    ToHubSpot,
    frozen_map,
)
from reconciler.simulate import VendorHidden

MARKETING = "289137112"
NEWSLETTER = "289137113"  # configured, used by neither R4 nor R11: an opt-out of it still stops writes
SOURCE_LISTS = ("101", "102", "103", "104", "105")
EXCLUSION_LISTS = ("701", "702")
CRITICAL_LISTS = ("761",)
HANDOVER_LISTS = ("901", "902")
ALL_LISTS = SOURCE_LISTS + EXCLUSION_LISTS + CRITICAL_LISTS + HANDOVER_LISTS
STATUSES = ("subscribed", "subscribed", "subscribed", "pending", "transactional", "unsubscribed", "cleaned",
            "archived", "archived")
MERGE_FIELDS = {"FNAME": ("firstname", "text"), "AGE": ("age", "number"), "BDAY": ("birthday", "date")}
FIRST_NAMES = ("Ann", " Ann ", "", None, "Bob", "Zoë", "a" * 300)
AGES = ("2", "2.0", " 2 ", "x", None, "", "3.50", "-0")
DATES = ("1706659200000", "2024-01-31", "2024-01-31T10:00:00Z", None, "", "01/31/2024")


@dataclass(frozen=True)
class Portal:
    config: Config
    snapshot: Snapshot
    memory: Memory
    hidden: VendorHidden
    seed: int = 0

    def __repr__(self) -> str:
        # Short on purpose: hypothesis prints falsifying examples, and a full portal is 50 kB.
        members = {a.name: len(a.members) for a in self.snapshot.audiences.values()}
        return (f"Portal(seed={self.seed}, contacts={len(self.snapshot.contacts)}, members={members}, "
                f"audiences={list(self.config.audiences.values())!r:.2000})")


def _audience(rng: random.Random, name: str, list_id: str, handovers_allowed: bool, create_missing: bool) -> Audience:
    tags = [f"{name}-T{i}" for i in range(3)]
    streams = []
    for s in range(rng.randint(1, 3)):
        sources = []
        for source_list in rng.sample(SOURCE_LISTS, rng.randint(1, 2)):
            rules = ()
            if rng.random() < 0.5:
                rules = (TagRule("branches", rng.choice(("gt", "eq", "is_set")), 1, f"{name}-Multi"),)
            extra = (f"{name}-X",) if rng.random() < 0.5 else ()
            sources.append(Source(source_list, rng.choice(tags), rules, extra))
        exclude = tuple(rng.sample(("deals", "hold"), rng.randint(0, 2)))
        streams.append(Stream(f"s{s}", exclude, tuple(sources)))
    handover: tuple[Handover, ...] = ()
    if handovers_allowed and rng.random() < 0.5:
        handover = (Handover(f"{name}-Done", rng.choice(HANDOVER_LISTS),
                             tuple(rng.sample(SOURCE_LISTS, rng.randint(0, 2))),
                             frozen_map({"import_list": "{source_list_name}"})),)
    to_hubspot = None
    if rng.random() < 0.5:
        statuses = tuple(rng.sample(("unsubscribed", "cleaned"), rng.randint(1, 2)))
        to_hubspot = ToHubSpot(statuses, (MARKETING,), legal_basis=rng.choice(LEGAL_BASES),
                               explanation=rng.choice(("Contact unsubscribed in Mailchimp", f"Opt-out seen in {name}")),
                               create_missing_contacts=create_missing)
    merge = rng.sample(sorted(MERGE_FIELDS), rng.randint(0, len(MERGE_FIELDS)))
    return Audience(
        name=name,
        mailchimp_list_id=list_id,
        new_member_status=rng.choice(("subscribed", "pending")),
        member_cap=rng.choice((None, None, rng.randint(0, 60))),
        merge_fields=frozen_map({tag: MERGE_FIELDS[tag][0] for tag in merge}),
        streams=tuple(streams),
        tag_policy=rng.choice(("first_tag_wins", "follow_source")),
        on_leave=rng.choice(("archive", "untag", "keep")),
        exempt=Exempt(tags=("VIP",), tag_patterns=("^Manual_",)),
        source_cleanup=rng.random() < 0.5,
        restore_archived=rng.random() < 0.5,
        handover=handover,
        opt_outs=OptOuts(to_hubspot, (MARKETING,), rng.random() < 0.5),
    )


def _config(rng: random.Random) -> Config:
    handovers_allowed = rng.random() < 0.5
    create_missing = not handovers_allowed and rng.random() < 0.5
    built = [_audience(rng, f"a{i}", f"list{i}", handovers_allowed, create_missing) for i in range(rng.randint(1, 2))]
    return Config(
        version=1,
        hubspot=HubSpotSettings(token="t"),
        mailchimp=MailchimpSettings(api_key="k-us1"),
        subscriptions=frozen_map({"marketing": MARKETING, "newsletter": NEWSLETTER}),
        exclusions=Exclusions(critical=CRITICAL_LISTS, hard=frozen_map({"deals": ("701",), "hold": ("702",)})),
        audiences=frozen_map({a.name: a for a in built}),
    )


def _email(rng: random.Random, pool: int) -> str | None:
    roll = rng.random()
    if roll < 0.02:
        return None
    if roll < 0.04:
        return rng.choice(("not-an-email", "two@@example.com", "sp ace@example.com", "x@localhost"))
    return f"u{rng.randrange(pool)}@example.com"


def _contacts(rng: random.Random, count: int, pool: int) -> dict[str, Contact]:
    contacts = {}
    for index in range(count):
        cid = str(1000 + index * 7 % 1009 + rng.randrange(3) * 1009)
        lists = frozenset(l for l in ALL_LISTS if rng.random() < (0.3 if l in SOURCE_LISTS else 0.08))
        properties: dict[str, Any] = {
            "firstname": rng.choice(FIRST_NAMES), "age": rng.choice(AGES), "birthday": rng.choice(DATES),
            "branches": rng.choice(("1", "2", None)),
        }
        if rng.random() < 0.05:
            properties[f"hs_email_optout_{MARKETING}"] = "true"
        if rng.random() < 0.03:
            properties["hs_email_optout"] = rng.choice(("true", "True"))  # opted out of all, as a property
        unsubscribed = frozenset({MARKETING}) if rng.random() < 0.08 else frozenset()
        if rng.random() < 0.04:
            unsubscribed |= {NEWSLETTER}
        contacts[cid] = Contact(cid, _email(rng, pool), frozen_map(properties), lists, unsubscribed,
                                rng.random() < 0.03)
    return contacts


def _members(rng: random.Random, audience: Audience, count: int, pool: int) -> dict[str, Member]:
    tags = [*audience.managed_tags, "VIP", "Manual_keep", "Other", *(h.tag for h in audience.handover)]
    members = {}
    for _ in range(count):
        email = f"u{rng.randrange(pool)}@example.com"
        chosen = {t.casefold(): t for t in rng.sample(tags, k=min(len(tags), rng.choice((0, 1, 1, 2, 3))))}
        fields = {tag: rng.choice((FIRST_NAMES + AGES + DATES)) for tag in MERGE_FIELDS if rng.random() < 0.5}
        fields = {k: v for k, v in fields.items() if v is not None}
        members[email] = Member(email, rng.choice(STATUSES), frozen_map(fields), tuple(chosen.values()))
    return members


@st.composite
def portals(draw: Any, max_contacts: int = 300) -> Portal:
    # A seeded Random, not st.randoms() nor a draw per field: hypothesis draws cost about as much
    # as planning a whole portal, and thousands of examples must fit in CI. The size still shrinks.
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    config = _config(rng)
    count = draw(st.one_of(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30), st.integers(0, max_contacts)))
    pool = max(int(count * 1.2), 5)
    contacts = _contacts(rng, count, pool)
    lists = {}
    for list_id in ALL_LISTS:
        kind = "DYNAMIC" if list_id in SOURCE_LISTS + EXCLUSION_LISTS and rng.random() < 0.1 else "MANUAL"
        size = sum(1 for c in contacts.values() if list_id in c.lists)
        lists[list_id] = HubList(list_id, f"List {list_id}", kind, size)
    fields = frozen_map({tag: MergeField(tag, kind) for tag, (_, kind) in MERGE_FIELDS.items()})
    states = {}
    refusals, archived_by_us, compliance, forgotten, by_api = {}, {}, set(), set(), set()
    opted_out: dict[str, str] = {}
    consent: dict[str, frozenset[str]] = {}
    for audience in config.audiences.values():
        members = _members(rng, audience, rng.randrange(int(count * 1.1) + 2), pool)
        states[audience.mailchimp_list_id] = AudienceState(audience.mailchimp_list_id, audience.name, False, fields,
                                                          frozen_map(members))
        for email in (f"u{i}@example.com" for i in range(pool)):
            key = (audience.mailchimp_list_id, email)
            member = members.get(email)
            if member is not None and member.status == "archived":
                if rng.random() < 0.3:
                    compliance.add(key)  # archived after the person unsubscribed themselves
                if rng.random() < 0.3:
                    archived_by_us[key] = rng.choice(("subscribed", "pending", "transactional"))
            if member is not None and member.status == "unsubscribed" and rng.random() < 0.3:
                by_api.add(key)  # unsubscribed by an admin or the API: Mailchimp lets the API resubscribe it
            if rng.random() < 0.02:
                opted_out[email] = "R11 unsubscribe remembered from an earlier run"
            if rng.random() < 0.1:
                consent[email] = frozenset(rng.sample((MARKETING, NEWSLETTER), rng.randint(1, 2)))
            if member is None and rng.random() < 0.05:
                forgotten.add(key)
            if rng.random() < 0.03:
                refusals[key] = Refusal(rng.choice(("create_member", "restore_member")), "Member In Compliance State",
                                        "2024-05-01T10:00:00Z")
    snapshot = Snapshot(frozen_map(contacts), frozen_map(lists), frozen_map(states), "2024-06-01T00:00:00Z",
                        consent=frozen_map(consent))
    memory = Memory(frozen_map(refusals), frozen_map(archived_by_us), frozen_map(opted_out),
                    retry_refused=rng.random() < 0.1)
    hidden = VendorHidden(frozenset(compliance), frozenset(forgotten), frozenset(by_api))
    return Portal(config, snapshot, memory, hidden, seed)
