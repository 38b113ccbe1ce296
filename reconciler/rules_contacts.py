"""Who a contact is to the rules: one person per email (R1), critical (R2), streams (R3), opted out (R4).

Separate from the member rules because these answers depend on HubSpot alone and are shared by
every audience; each audience's configuration is compiled once into `AudienceRules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

from reconciler.model import AudienceState, Contact, Snapshot, is_valid_email
from reconciler.plan import Change, Report
from reconciler.rules_tag_rules import is_true, tag_for
from reconciler.settings import Audience, Config, Handover, Source

@dataclass
class Out:
    """What the rules have decided so far: changes and reported items, in any order (sorted later)."""

    changes: list[Change] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)

    def report(self, kind: str, target: str, email: str | None, reason: str) -> None:
        self.reports.append(Report(kind, target, email, reason))


# -- R1 Emails --------------------------------------------------------------------------------


class Person(NamedTuple):
    """The contacts sharing one valid email (R1): the lowest numeric id supplies properties; the
    lists (critical, exclusions, handover) and opt-outs of every one of them apply.

    A NamedTuple rather than a frozen dataclass: one is built per email (a million per run), and
    a tuple is immutable and several times cheaper to build.
    """

    email: str
    contacts: tuple[Contact, ...]  # lowest numeric id first
    lists: frozenset[str]  # every contact's lists, after this plan's handover writes (R12)
    properties: Mapping[str, Any]  # the first contact's, after this plan's handover writes
    unsubscribed: frozenset[str]  # every contact's explicit opt-outs
    opted_out_of_all: bool
    # Why the person counts as opted out in Mailchimp (R15, SPEC §4 R4): this plan's R11 unsubscribe,
    # an opt-out in another audience of the config, or one the audit log remembers.
    opted_out_in_mailchimp: str | None = None
    created_in_plan: bool = False  # R11 create_missing_contacts: no HubSpot id yet (contact id "")

    @property
    def primary(self) -> Contact:
        return self.contacts[0]


def valid_email(email: str | None) -> bool:
    """`model.is_valid_email`, with a fast path for the common case (1M contacts per run)."""
    if not email:
        return False
    if email.isprintable() and " " not in email:  # no whitespace at all (isspace chars are unprintable)
        at = email.find("@")
        if at <= 0 or email.find("@", at + 1) != -1:
            return False
        domain = email[at + 1 :]
        return "." in domain and domain[0] != "." and domain[-1] != "."
    return is_valid_email(email)


def _id_order(contact: Contact) -> tuple[int, int, str]:
    return (0, int(contact.id), "") if contact.id.isdigit() else (1, 0, contact.id)


def single_person(email: str, contact: Contact) -> Person:
    """The common case of R1: one contact per email (no sorting, no unions)."""
    return Person(email, (contact,), contact.lists, contact.properties, contact.unsubscribed,
                  contact.opted_out_of_all or is_true(contact.properties.get("hs_email_optout")))


def person_of(email: str, contacts: Iterable[Contact]) -> Person:
    ordered = tuple(sorted(contacts, key=_id_order))
    if len(ordered) == 1:
        return single_person(email, ordered[0])
    return Person(
        email,
        ordered,
        frozenset().union(*(c.lists for c in ordered)),
        ordered[0].properties,
        frozenset().union(*(c.unsubscribed for c in ordered)),
        any(c.opted_out_of_all or is_true(c.properties.get("hs_email_optout")) for c in ordered),
    )


class People:
    """Person by email (R1), built on demand for the common single-contact email.

    A million Person values kept alive for a whole plan cost memory and, worse, full garbage
    collections over the snapshot; built on demand they die young. Persons that differ from
    their contacts (duplicates; this plan's R11 and R12 writes) are stored.
    """

    def __init__(self, singles: dict[str, Contact], stored: dict[str, Person]) -> None:
        self._singles = singles  # email -> its only contact, for emails not in `_stored`
        self._stored = stored

    def get(self, email: str) -> Person | None:
        person = self._stored.get(email)
        if person is not None:
            return person
        contact = self._singles.get(email)
        return None if contact is None else single_person(email, contact)

    def __setitem__(self, email: str, person: Person) -> None:
        self._singles.pop(email, None)
        self._stored[email] = person

    def __getitem__(self, email: str) -> Person:
        person = self.get(email)
        if person is None:
            raise KeyError(email)
        return person

    def __contains__(self, email: object) -> bool:
        return email in self._stored or email in self._singles

    def __len__(self) -> int:
        return len(self._stored) + len(self._singles)

    def items(self) -> Iterator[tuple[str, Person]]:
        for email, contact in self._singles.items():
            yield email, single_person(email, contact)
        yield from self._stored.items()

    def values(self) -> Iterator[Person]:
        for _, person in self.items():
            yield person


def people_by_email(snapshot: Snapshot) -> tuple[People, list[Report]]:
    """R1: one Person per valid email; contacts with no valid email and duplicates are reported."""
    reports: list[Report] = []
    first: dict[str, Contact] = {}
    duplicates: dict[str, list[Contact]] = {}
    for contact in snapshot.contacts.values():
        email = contact.email
        if not valid_email(email):
            reports.append(Report("skipped", "contacts", email, f"R1 contact {contact.id} has no valid email"))
            continue
        seen = first.get(email)  # type: ignore[arg-type]
        if seen is None:
            first[email] = contact  # type: ignore[index]
        else:
            duplicates.setdefault(email, [seen]).append(contact)  # type: ignore[arg-type]
    people = People(first, {})
    for email, group in duplicates.items():
        person = person_of(email, group)
        people[email] = person
        for other in person.contacts[1:]:
            reports.append(Report("skipped", "contacts", email,
                                  f"R1 contact {other.id} shares its email with contact {person.primary.id}, "
                                  "which supplies properties; the lists and opt-outs of both apply"))
    return people, reports


# -- R2 Critical, R4 opted out ----------------------------------------------------------------


def critical_lists_of(person: Person, critical: frozenset[str]) -> list[str]:
    return sorted(person.lists & critical)


def opt_out_reason(person: Person, subscriptions: tuple[str, ...], config: Config) -> str | None:
    """Why the person counts as opted out in HubSpot for R4 (None: it does not)."""
    if person.opted_out_in_mailchimp:
        return f"R4 {person.opted_out_in_mailchimp}"
    if person.opted_out_of_all:
        return "R4 opted out of all email in HubSpot"
    for sid in subscriptions:
        if is_unsubscribed_from(person, sid):
            return f"R4 opted out in HubSpot of {config.subscription_name(sid)} ({sid})"
    return None


def is_unsubscribed_from(person: Person, sid: str) -> bool:
    """Explicitly unsubscribed, or opted out of all email (R11 skips these: nothing to carry over,
    and an R4 unsubscribe of an opted-out-of-all contact must not come back as an R11 write)."""
    if person.opted_out_of_all or sid in person.unsubscribed:
        return True
    prop = "hs_email_optout_" + sid
    for contact in person.contacts:
        value = contact.properties.get(prop)
        if value is not None and is_true(value):
            return True
    return False


# -- R3 Streams -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamRules:
    index: int
    name: str
    sources: tuple[Source, ...]
    source_lists: frozenset[str]
    exclusions: tuple[tuple[str, str], ...]  # (list id, label): hard sets, then handover lists
    excluded_lists: frozenset[str]  # every list that excludes (hard sets and handover to_lists)
    cleanup_lists: frozenset[str]  # hard sets only: a handover to_list never triggers clean-up

    def exclusion_label(self, lists: frozenset[str]) -> str | None:
        for list_id, label in self.exclusions:
            if list_id in lists:
                return label
        return None


class Joined(NamedTuple):
    """The stream a contact joins (R3) and what its source gives it (a NamedTuple: one per contact)."""

    stream: StreamRules
    source_index: int
    source: Source
    primary_tag: str
    extra_tags: tuple[str, ...]


@dataclass
class AudienceRules:
    """One audience's configuration, compiled for fast lookups (tags keyed by casefold)."""

    audience: Audience
    state: AudienceState
    streams: tuple[StreamRules, ...]
    source_lists: frozenset[str]
    primary: dict[str, str]
    managed: dict[str, str]
    handovers: dict[str, tuple[Handover, ...]]  # handover tag (casefold) -> handovers, config order
    r4_subscriptions: tuple[str, ...]
    all_subscriptions: tuple[str, ...]  # every subscription of the config: an opt-out of any stops writes (R4)
    consent_subscriptions: tuple[str, ...]  # R8: explicit SUBSCRIBED to one of these is consent to restore
    merge_fields: tuple[tuple[str, str, str], ...]  # (merge tag, HubSpot property, Mailchimp type)
    consent_label: str = "a configured subscription"  # R8's subscriptions by name, for reports
    _exempt: dict[str, bool] = field(default_factory=dict)
    _implied: dict[tuple[int, str], tuple[list[str], frozenset[str]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.audience.name

    @property
    def list_id(self) -> str:
        return self.audience.mailchimp_list_id

    def is_exempt(self, tag: str) -> bool:
        known = self._exempt.get(tag)
        if known is None:
            known = self._exempt[tag] = self.audience.exempt.matches(tag)
        return known

    def any_exempt(self, tags: Iterable[str]) -> bool:
        return any(self.is_exempt(t) for t in tags)

    def implied_tags(self, joined: "Joined") -> tuple[list[str], frozenset[str]]:
        """The primary and extra tags a source gives (no case repeats), and their casefolds."""
        key = (id(joined.source), joined.primary_tag)
        known = self._implied.get(key)
        if known is None:
            seen: dict[str, str] = {}
            for tag in (joined.primary_tag, *joined.extra_tags):
                seen.setdefault(tag.casefold(), tag)
            known = self._implied[key] = (list(seen.values()), frozenset(seen))
        return known

    def managed_tags_of(self, tags: Iterable[str]) -> list[str]:
        return [t for t in tags if t.casefold() in self.managed]


def compile_audience(config: Config, audience: Audience, state: AudienceState) -> AudienceRules:
    handover_labels = tuple((h.to_list, f"handover list {h.to_list}") for h in audience.handover)
    streams = []
    for index, stream in enumerate(audience.streams):
        hard = tuple(
            (list_id, f"{name} (list {list_id})")
            for name in stream.exclude
            for list_id in config.exclusions.hard.get(name, ())
        )
        streams.append(StreamRules(
            index=index,
            name=stream.name,
            sources=stream.sources,
            source_lists=frozenset(s.list for s in stream.sources),
            exclusions=hard + handover_labels,
            excluded_lists=frozenset(list_id for list_id, _ in hard + handover_labels),
            cleanup_lists=frozenset(list_id for list_id, _ in hard),
        ))
    handovers: dict[str, list[Handover]] = {}
    for handover in audience.handover:
        handovers.setdefault(handover.tag.casefold(), []).append(handover)
    opt_outs = audience.opt_outs
    consent = _consent_subscriptions(config, audience)
    merge_fields = tuple(
        (tag, prop, state.merge_fields[tag].type if tag in state.merge_fields else "text")
        for tag, prop in audience.merge_fields.items()
    )
    return AudienceRules(
        audience=audience,
        state=state,
        streams=tuple(streams),
        source_lists=frozenset(audience.source_lists),
        primary={t.casefold(): t for t in audience.primary_tags},
        managed={t.casefold(): t for t in audience.managed_tags},
        handovers={tag: tuple(hs) for tag, hs in handovers.items()},
        r4_subscriptions=tuple(opt_outs.from_hubspot),
        all_subscriptions=tuple(dict.fromkeys(str(s) for s in config.subscriptions.values())),
        consent_subscriptions=consent,
        merge_fields=merge_fields,
        consent_label=" or ".join(f"{config.subscription_name(sid)} ({sid})" for sid in consent)
        or "a configured subscription",
    )


def _consent_subscriptions(config: Config, audience: Audience) -> tuple[str, ...]:
    """The audience's configured subscriptions (R4's and R11's), or every subscription of the
    config when the audience names none."""
    opt_outs = audience.opt_outs
    named = list(opt_outs.from_hubspot) + list(opt_outs.to_hubspot.subscriptions if opt_outs.to_hubspot else ())
    return tuple(dict.fromkeys(named or (str(s) for s in config.subscriptions.values())))


def join_stream(rules: AudienceRules, person: Person) -> Joined | None:
    """R3: the first stream with a source list holding the person and no exclusion holding it."""
    lists = person.lists
    if lists.isdisjoint(rules.source_lists):
        return None
    for stream in rules.streams:
        if lists.isdisjoint(stream.source_lists) or not lists.isdisjoint(stream.excluded_lists):
            continue
        for index, source in enumerate(stream.sources):
            if source.list in lists:
                return Joined(stream, index, source, tag_for(source, person.properties), source.extra_tags)
    return None


def why_no_stream(rules: AudienceRules, person: Person | None) -> str:
    """The R9 reason a contact (or a member with none) joins no stream of the audience."""
    if person is None:
        return "R9 no HubSpot contact has this email"
    held = [s for s in rules.streams if not person.lists.isdisjoint(s.source_lists)]
    if not held:
        return "R9 no source list holds the contact"
    parts = [f"stream {s.name} by {s.exclusion_label(person.lists)}" for s in held]
    return "R9 excluded from every stream holding it: " + "; ".join(parts)
