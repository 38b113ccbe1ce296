"""Observe: read both platforms, concurrently and within their limits, into one Snapshot (R15).

Separate from the clients (which know the vendors) and from the rules (which know no I/O): this is
where "which lists, contacts and members does the config need" is decided, and batched.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from reconciler.model import AudienceState, Contact, HubList, Member, MergeField, Snapshot, normalise_email
from reconciler.observe_compliance import (SEARCH_WORKERS, ConsentKnown, holders, read_consent, read_opt_outs,
                                           restore_candidates, search_other_holders, worth_searching)
from reconciler.platforms.hubspot import CONTACT_BATCH, BatchRead, ContactRecord, HubSpotClient, ListInfo, chunks
from reconciler.platforms.mailchimp import AudienceInfo, MailchimpClient
from reconciler.settings import Audience, Config

Progress = Callable[[str, int, "int | None"], None]
OPTOUT_ALL = "hs_email_optout"
OPTOUT_PREFIX = "hs_email_optout_"


def _selected(config: Config, audiences: Iterable[str] | None) -> list[Audience]:
    names = list(config.audiences) if audiences is None else list(audiences)
    return [config.audiences[name] for name in names]


def configured_lists(config: Config, audiences: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Every HubSpot list the selected audiences depend on, with the roles it plays (for messages).

    Critical lists always (R2 applies to every audience); the exclusion sets the audiences' streams
    use; their sources; their handover `to_list` and `remove_from` lists.
    """
    roles: dict[str, list[str]] = {}

    def add(list_id: str, role: str) -> None:
        roles.setdefault(str(list_id), []).append(role)

    for list_id in config.exclusions.critical:
        add(list_id, "critical list")
    for audience in _selected(config, audiences):
        for stream in audience.streams:
            for name in stream.exclude:
                for list_id in config.exclusions.hard.get(name, ()):
                    add(list_id, f"exclusion set {name}")
            for source in stream.sources:
                add(source.list, f"source of audience {audience.name} stream {stream.name}")
        for handover in audience.handover:
            add(handover.to_list, f"handover to_list of audience {audience.name} (tag {handover.tag})")
            for list_id in handover.remove_from:
                add(list_id, f"handover remove_from of audience {audience.name} (tag {handover.tag})")
    return {k: list(dict.fromkeys(v)) for k, v in roles.items()}


def subscription_ids(config: Config, audiences: Iterable[str] | None = None) -> list[str]:
    ids = dict.fromkeys(str(s) for s in config.subscriptions.values())
    for audience in _selected(config, audiences):
        opt = audience.opt_outs
        ids.update(dict.fromkeys(opt.from_hubspot))
        if opt.to_hubspot is not None:
            ids.update(dict.fromkeys(opt.to_hubspot.subscriptions))
    return list(ids)


def mapped_properties(config: Config, audiences: Iterable[str] | None = None) -> dict[str, list[str]]:
    """HubSpot properties the config names (merge fields, tag_rules, set_properties), with where."""
    where: dict[str, list[str]] = {}
    for audience in _selected(config, audiences):
        for tag, prop in audience.merge_fields.items():
            where.setdefault(prop, []).append(f"audiences.{audience.name}.merge_fields.{tag}")
        for stream in audience.streams:
            for source in stream.sources:
                for rule in source.tag_rules:
                    where.setdefault(rule.property, []).append(
                        f"audiences.{audience.name} stream {stream.name} source {source.list} tag_rules")
        for handover in audience.handover:
            for prop in handover.set_properties:
                where.setdefault(prop, []).append(f"audiences.{audience.name}.handover ({handover.tag}).set_properties")
    return where


def contact_properties(config: Config, audiences: Iterable[str] | None = None) -> list[str]:
    """What batch/read asks for: email, the opt-out flags, and every mapped property."""
    props = ["email", OPTOUT_ALL] + [OPTOUT_PREFIX + sid for sid in subscription_ids(config, audiences)]
    return list(dict.fromkeys(props + sorted(mapped_properties(config, audiences))))


def _true(value: Any) -> bool:
    return value == "true" or (value is not None and str(value).strip().lower() == "true")


class _Progress:
    """Serialises progress calls from worker threads, so the CLI's callback needs no lock."""

    def __init__(self, callback: Progress | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()

    def __call__(self, step: str, done: int, total: int | None) -> None:
        if self._callback is not None:
            with self._lock:
                self._callback(step, done, total)


@dataclass
class _HubSpotRead:
    lists: dict[str, ListInfo]
    members: dict[str, list[str]]  # list id -> record ids
    contacts: dict[str, ContactRecord]


@dataclass
class _AudienceRead:
    info: AudienceInfo
    merge_fields: list[MergeField]
    members: dict[str, Member]


def observe(config: Config, hubspot: HubSpotClient, mailchimp: MailchimpClient, audiences: list[str],
            progress: Progress | None = None, consent_known: ConsentKnown | None = None) -> Snapshot:
    """One observation of everything the selected audiences need (R15), batched at the vendor limits.

    Requests: one list read per 100 lists, ceil(size/250) membership pages per list, ceil(C/100)
    contact reads by id, per audience one list read, one merge-field read, ceil(M/1000) +
    ceil(A/1000) member pages, and ceil(U/100) contact reads by email for member emails that no
    source contact has. Then the compliance reads (observe_compliance): one search per 500 emails
    of source contacts and of non-archived members for other contacts holding them (R1), one
    status read per restore candidate the audit log has no evidence for (`consent_known`, R8),
    and, for each audience of the config the run does not plan, its unsubscribed and cleaned
    members (ceil(n/1000) pages each). HubSpot and Mailchimp are read at the same time.
    """
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # reads reflect the vendor from here on
    report = _Progress(progress)
    selected = _selected(config, audiences)
    others = [a for name, a in config.audiences.items() if name not in {s.name for s in selected}]
    roles = configured_lists(config, audiences)
    sources = {s.list for a in selected for st in a.streams for s in st.sources}
    properties = contact_properties(config, audiences)
    hs_pool = ThreadPoolExecutor(hubspot.concurrency, thread_name_prefix="observe-hubspot")
    mc_pool = ThreadPoolExecutor(mailchimp.concurrency, thread_name_prefix="observe-mailchimp")
    search_pool = ThreadPoolExecutor(SEARCH_WORKERS, thread_name_prefix="observe-search")
    # Drivers only wait on the pools (never run inside them), so nested fan-out cannot deadlock.
    drivers = ThreadPoolExecutor(3 + 2 * len(selected) + len(others), thread_name_prefix="observe-driver")
    try:
        hub_future = drivers.submit(_read_hubspot, hubspot, hs_pool, list(roles), sources, properties, report)
        # Other holders of the source contacts' emails are searched while Mailchimp is still read.
        first = drivers.submit(_search_source_emails, hubspot, search_pool, hub_future, config, properties, report)
        audience_futures = {a.name: _read_audience(mailchimp, mc_pool, drivers, a, report) for a in selected}
        opt_out_futures = {a.name: drivers.submit(read_opt_outs, mailchimp, mc_pool, a, report) for a in others}
        reads = {name: read() for name, read in audience_futures.items()}
        hub = hub_future.result()
        source_emails = holders(hub.contacts.values())
        unmatched = sorted({e for read in reads.values() for e in read.members} - set(source_emails))
        found = _read_by_email(hubspot, hs_pool, unmatched, properties, report)
        candidates = restore_candidates(config, selected, {n: r.members for n, r in reads.items()}, _lists_of(hub),
                                        hub.contacts.values(), consent_known)
        consent = drivers.submit(read_consent, hubspot, hs_pool, candidates, report)
        for record in [*found, *first.result()]:
            hub.contacts.setdefault(record.id, record)
        live = [e for read in reads.values() for e, m in read.members.items() if m.status != "archived"]
        wanted = worth_searching((e for e in live if e not in source_emails), holders(hub.contacts.values()),
                                 _critical_ids(config, hub))
        for record in search_other_holders(hubspot, search_pool, wanted, properties, report,
                                           "hubspot other contacts sharing a member's email"):
            hub.contacts.setdefault(record.id, record)
        opt_outs = {name: future.result() for name, future in opt_out_futures.items()}
        snapshot = _snapshot(config, audiences, hub, reads, opt_outs, consent.result())
    finally:
        for pool in (drivers, hs_pool, mc_pool, search_pool):
            pool.shutdown(wait=True, cancel_futures=True)
    return dataclasses.replace(snapshot, observed_at=started)


def _critical_ids(config: Config, hub: _HubSpotRead) -> set[str]:
    return {cid for list_id in config.exclusions.critical for cid in hub.members.get(str(list_id), ())}


def _search_source_emails(hubspot: HubSpotClient, pool: ThreadPoolExecutor, hub_future: Future[_HubSpotRead],
                          config: Config, properties: list[str], report: _Progress) -> list[ContactRecord]:
    """R1: the other contacts holding a source contact's email (a duplicate on a critical or
    exclusion list, or opted out, must be honoured); their lists come from the lists already read."""
    hub = hub_future.result()
    known = holders(hub.contacts.values())
    wanted = worth_searching(sorted(known), known, _critical_ids(config, hub))
    return search_other_holders(hubspot, pool, wanted, properties, report,
                                "hubspot other contacts sharing a source contact's email")


class _SourceContacts:
    """Reads source contacts 100 a call as membership pages arrive, so the reads overlap the paging.

    Membership paging is sequential per list (a cursor); starting the contact reads early keeps
    the other workers busy meanwhile. Ids shared by several lists are read once.
    """

    def __init__(self, hubspot: HubSpotClient, pool: ThreadPoolExecutor, properties: list[str]) -> None:
        self._hubspot, self._pool, self._properties = hubspot, pool, properties
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._pending: list[str] = []
        self._reads: list[Future[BatchRead]] = []

    def offer(self, ids: list[str]) -> None:
        with self._lock:
            for cid in ids:
                if cid not in self._seen:
                    self._seen.add(cid)
                    self._pending.append(cid)
            while len(self._pending) >= CONTACT_BATCH:
                self._submit(self._pending[:CONTACT_BATCH])
                del self._pending[:CONTACT_BATCH]

    def _submit(self, part: list[str]) -> None:
        self._reads.append(self._pool.submit(self._hubspot.read_contacts, part, self._properties))

    def collect(self, report: _Progress) -> dict[str, ContactRecord]:
        with self._lock:
            if self._pending:
                self._submit(self._pending)
                self._pending = []
            reads, total = list(self._reads), len(self._seen)
        contacts: dict[str, ContactRecord] = {}
        done = 0
        report("hubspot source contacts", 0, total)
        for future in reads:
            batch = future.result()
            contacts.update({r.id: r for r in batch.found})
            done += len(batch.found) + len(batch.missing)
            report("hubspot source contacts", done, total)
        return contacts


def _read_hubspot(hubspot: HubSpotClient, pool: ThreadPoolExecutor, list_ids: list[str], sources: set[str],
                  properties: list[str], report: _Progress) -> _HubSpotRead:
    infos = hubspot.get_lists(list_ids)
    existing = [i for i in list_ids if i in infos]  # missing lists are preflight's to report
    source_contacts = _SourceContacts(hubspot, pool, properties)

    def read_list(list_id: str) -> list[str]:
        info = infos[list_id]
        step = f"hubspot list {list_id} {info.name}".rstrip()
        ids: list[str] = []
        report(step, 0, info.size)
        for page in hubspot.iter_list_members(list_id):
            ids += page
            if list_id in sources:
                source_contacts.offer(page)
            report(step, len(ids), max(info.size, len(ids)))
        report(step, len(ids), len(ids))
        return ids

    # Source lists first, so their contact reads start as early as possible.
    order = sorted(existing, key=lambda i: i not in sources)
    members = dict(zip(order, pool.map(read_list, order)))
    return _HubSpotRead(infos, members, source_contacts.collect(report))


def _read_by_email(hubspot: HubSpotClient, pool: ThreadPoolExecutor, emails: list[str], properties: list[str],
                   report: _Progress) -> list[ContactRecord]:
    """Contacts for member emails no source contact has (R2, R11, R12 need them)."""
    done = 0
    found: list[ContactRecord] = []
    report("hubspot contacts of members", 0, len(emails))
    for batch in pool.map(lambda part: hubspot.read_contacts_by_email(part, properties), chunks(emails, CONTACT_BATCH)):
        found += batch.found
        done += len(batch.found) + len(batch.missing)
        report("hubspot contacts of members", min(done, len(emails)), len(emails))
    return found


def _read_audience(mailchimp: MailchimpClient, pool: ThreadPoolExecutor, drivers: ThreadPoolExecutor,
                   audience: Audience, report: _Progress) -> Callable[[], _AudienceRead]:
    """Start reading one audience; returns a function that waits for the result."""
    list_id = audience.mailchimp_list_id
    info: Future[AudienceInfo] = pool.submit(mailchimp.get_list, list_id)
    fields: Future[list[MergeField]] = pool.submit(mailchimp.merge_fields, list_id)

    def read(status: str | None) -> list[Member]:
        step = f"mailchimp {audience.name} {'archived members' if status else 'members'}"
        return mailchimp.members(list_id, status, executor=pool, progress=lambda d, t: report(step, d, t))

    live = drivers.submit(read, None)
    archived = drivers.submit(read, "archived")

    def result() -> _AudienceRead:
        by_email = {m.email: m for m in archived.result()}
        for member in live.result():
            # The unfiltered listing may include archived members; an id seen twice is kept once.
            if member.status != "archived" or member.email not in by_email:
                by_email[member.email] = member
        return _AudienceRead(info.result(), fields.result(), by_email)

    return result


def _lists_of(hub: _HubSpotRead) -> dict[str, set[str]]:
    """Contact id -> the configured lists that hold it (for every contact, however it was read)."""
    lists_of: dict[str, set[str]] = {}
    for list_id, ids in hub.members.items():
        for cid in ids:
            lists_of.setdefault(cid, set()).add(list_id)
    return lists_of


def _snapshot(config: Config, audiences: list[str], hub: _HubSpotRead, reads: Mapping[str, _AudienceRead],
              opt_outs: Mapping[str, Mapping[str, Member]], consent: Mapping[str, frozenset[str]]) -> Snapshot:
    lists_of = _lists_of(hub)
    # Many contacts share one set of lists: share one frozenset between them (memory at 100k).
    shared: dict[frozenset[str], frozenset[str]] = {}
    optout_keys = [(sid, OPTOUT_PREFIX + sid) for sid in subscription_ids(config, audiences)]
    contacts: dict[str, Contact] = {}
    for record in hub.contacts.values():
        props = record.properties
        lists = frozenset(lists_of.get(record.id, ()))
        contacts[record.id] = Contact(
            id=record.id,
            email=normalise_email(props.get("email")) or None,
            properties=props,
            lists=shared.setdefault(lists, lists),
            unsubscribed=frozenset(sid for sid, key in optout_keys if _true(props.get(key))),
            opted_out_of_all=_true(props.get(OPTOUT_ALL)),
        )
    lists = {lid: HubList(lid, info.name, info.processing_type, len(hub.members.get(lid, ())))
             for lid, info in hub.lists.items()}
    states: dict[str, AudienceState] = {}
    for name, read in reads.items():
        list_id = config.audiences[name].mailchimp_list_id
        states[list_id] = AudienceState(
            list_id=list_id,
            name=read.info.name,
            double_optin=read.info.double_optin,
            merge_fields={f.tag: f for f in read.merge_fields},
            members=read.members,
        )
    for name, members in opt_outs.items():
        list_id = config.audiences[name].mailchimp_list_id
        states[list_id] = AudienceState(list_id=list_id, members=dict(members), opt_outs_only=True)
    return Snapshot(contacts=contacts, lists=lists, audiences=states, consent=dict(consent))


def preflight(config: Config, hubspot: HubSpotClient, mailchimp: MailchimpClient,
              audiences: list[str] | None = None) -> tuple[list[str], list[str]]:
    """SPEC §3's live checks: (problems, warnings); see reconciler.preflight."""
    from reconciler.preflight import live_checks

    return live_checks(config, hubspot, mailchimp, audiences)
