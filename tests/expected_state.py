"""The end state SPEC §4 documents for a seed and a config, worked out without the product.

The fault matrix and the crash sweep used to compare a faulty apply with a fault-free run of the
same code, which cannot see a bug that both runs share. This module is their independent oracle:
from the sandbox seed (plain mapping, SPEC §7) and the config mapping (SPEC §3) it states, rule by
rule, what every Mailchimp member and every HubSpot contact, list and subscription status must be
once an apply has converged. It imports nothing from `reconciler`, and is written as a reader of
the SPEC would do it by hand, one email at a time, not the way the product plans.

It supports the seed shapes and config keys the reliability tests use (one audience, streams with
`list`/`tag`/`extra_tags` sources, hard exclusions, handovers without `set_properties`, R4/R11 on
one or more subscriptions) and refuses anything else rather than guess. Where the SPEC leaves the
outcome to the run's history (a retried run sees what an interrupted one left), the value is an
`AnyOf`, with the SPEC sentence that allows each option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

SUBSCRIBED, NOT_SUBSCRIBED = "SUBSCRIBED", "NOT_SUBSCRIBED"
LIVE = ("subscribed", "pending", "transactional")
WRITABLE = ("MANUAL", "SNAPSHOT")  # R14: DYNAMIC lists are never written
SUPPORTED_AUDIENCE_KEYS = {"mailchimp_list_id", "new_member_status", "merge_fields", "streams", "tag_policy",
                           "on_leave", "exempt", "source_cleanup", "restore_archived", "handover", "opt_outs"}


@dataclass(frozen=True)
class AnyOf:
    """Where the SPEC leaves a value to the run's history: any of `options` is right, for `why`."""

    options: tuple[Any, ...]
    why: str


def valid_email(email: str) -> bool:
    """SPEC §4 terms: one `@`, a non-empty local part, a domain with a dot, no whitespace."""
    local, at, domain = email.partition("@")
    return at == "@" and "@" not in domain and bool(local) and "." in domain and not re.search(r"\s", email)


# -- the config, read plainly -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    list: str
    tag: str
    extra_tags: tuple[str, ...]


@dataclass(frozen=True)
class Stream:
    name: str
    exclude_lists: frozenset[str]  # the lists of its `exclude` sets (these trigger clean-up, R3)
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Audience:
    list_id: str
    new_status: str
    merge_fields: Mapping[str, str]  # merge tag -> HubSpot property
    streams: tuple[Stream, ...]
    first_tag_wins: bool
    on_leave: str
    exempt_tags: frozenset[str]
    exempt_patterns: tuple[str, ...]
    source_cleanup: bool
    restore_archived: bool
    handovers: tuple[Mapping[str, Any], ...]
    handover_lists: frozenset[str]  # every `to_list`: a hard exclusion of every stream, no clean-up (R12, R3)
    to_hubspot: Mapping[str, Any] | None
    r11_subscriptions: tuple[str, ...]  # to_hubspot's subscription ids (R11 writes them)
    r4_subscriptions: tuple[str, ...]  # subscription ids whose opt-out makes a contact opted out (R4)
    r4_writes: bool  # `from_hubspot` on: subscribed/pending members of opted-out contacts are unsubscribed
    consent_subscriptions: tuple[str, ...]  # R8: explicitly subscribed to one of these = consent

    def primary_tags(self) -> set[str]:
        return {s.tag.casefold() for st in self.streams for s in st.sources}

    def managed_tags(self) -> set[str]:
        return self.primary_tags() | {t.casefold() for st in self.streams for s in st.sources for t in s.extra_tags}

    def handover_tags(self) -> set[str]:
        return {str(h["tag"]).casefold() for h in self.handovers}

    def is_exempt(self, tags: Iterable[str]) -> bool:
        return any(t.casefold() in self.exempt_tags or any(re.search(p, t, re.IGNORECASE) for p in self.exempt_patterns)
                   for t in tags)

    def source_lists(self) -> set[str]:
        return {s.list for st in self.streams for s in st.sources}


def read_audience(config: Mapping[str, Any], doc: Mapping[str, Any]) -> Audience:
    unknown = set(doc) - SUPPORTED_AUDIENCE_KEYS
    if unknown:
        raise NotImplementedError(f"expected_state does not model audience keys {sorted(unknown)}")
    subscriptions = {str(k): str(v) for k, v in (config.get("subscriptions") or {}).items()}
    hard = {str(k): [str(x) for x in v] for k, v in ((config.get("exclusions") or {}).get("hard") or {}).items()}
    handovers = tuple(doc.get("handover") or ())
    if any(h.get("set_properties") for h in handovers):
        raise NotImplementedError("expected_state does not model handover set_properties")
    to_list_exclusion = {str(h["to_list"]) for h in handovers}  # R12: to_list is a hard exclusion of every stream
    streams = []
    for raw in doc["streams"]:
        sources = []
        for s in raw["sources"]:
            if s.get("tag_rules"):
                raise NotImplementedError("expected_state does not model tag_rules")
            sources.append(Source(str(s["list"]), str(s["tag"]), tuple(str(t) for t in s.get("extra_tags") or ())))
        excluded = {lid for name in raw.get("exclude") or () for lid in hard[name]}
        streams.append(Stream(str(raw["name"]), frozenset(excluded), tuple(sources)))
    opt_outs = doc.get("opt_outs") or {}
    to_hubspot = opt_outs.get("to_hubspot")
    if to_hubspot is not None and to_hubspot.get("create_missing_contacts"):
        raise NotImplementedError("expected_state does not model create_missing_contacts")
    to_hs_subs = tuple(subscriptions[n] for n in (to_hubspot or {}).get("subscriptions") or ())
    # The reliability tests state from_hubspot explicitly, so the default (true, SPEC §4 R4) is not relied on.
    from_hubspot = opt_outs["from_hubspot"]
    if from_hubspot is True:
        r4 = to_hs_subs
    elif from_hubspot is False:
        r4 = ()
    else:
        r4 = tuple(subscriptions[n] for n in from_hubspot)
    exempt = doc.get("exempt") or {}
    return Audience(
        list_id=str(doc["mailchimp_list_id"]), new_status=str(doc.get("new_member_status", "subscribed")),
        merge_fields={str(k): str(v) for k, v in (doc.get("merge_fields") or {}).items()},
        streams=tuple(streams), first_tag_wins=doc.get("tag_policy", "first_tag_wins") == "first_tag_wins",
        on_leave=str(doc.get("on_leave", "archive")),
        exempt_tags=frozenset(str(t).casefold() for t in exempt.get("tags") or ()),
        exempt_patterns=tuple(str(p) for p in exempt.get("tag_patterns") or ()),
        source_cleanup=bool(doc.get("source_cleanup", False)), restore_archived=bool(doc.get("restore_archived", False)),
        handovers=handovers, handover_lists=frozenset(to_list_exclusion), to_hubspot=to_hubspot, r11_subscriptions=to_hs_subs, r4_subscriptions=r4, r4_writes=from_hubspot is not False,
        consent_subscriptions=tuple(dict.fromkeys(to_hs_subs + r4)))


# -- the seed, read plainly ---------------------------------------------------------------------


@dataclass
class Portal:
    """HubSpot and one Mailchimp audience as the seed describes them, and as the rules leave them."""

    contacts: dict[str, Mapping[str, Any]]  # id -> seed contact
    by_email: dict[str, str]  # valid, lower-cased email -> contact id
    list_kind: dict[str, str]
    lists: dict[str, set[str]]  # list id -> contact ids
    statuses: dict[str, dict[str, Any]]  # contact id -> subscription id -> [status, legal basis, explanation]
    members: dict[str, dict[str, Any]]  # email -> {status, tags, merge_fields, status_before_archive}
    forgotten: set[str]
    confirmations: dict[str, int] = field(default_factory=dict)

    def in_list(self, cid: str, lids: Iterable[str]) -> bool:
        return any(cid in self.lists.get(lid, ()) for lid in lids)

    def remove(self, cid: str, lid: str) -> None:
        if self.list_kind.get(lid) in WRITABLE:
            self.lists[lid].discard(cid)

    def add(self, cid: str, lid: str) -> None:
        if self.list_kind.get(lid) in WRITABLE:
            self.lists[lid].add(cid)


def read_portal(seed: Mapping[str, Any], list_id: str) -> Portal:
    hub = seed.get("hubspot") or {}
    contacts = {str(c["id"]): c for c in hub.get("contacts") or ()}
    by_email: dict[str, str] = {}
    statuses: dict[str, dict[str, Any]] = {}
    for cid, c in contacts.items():
        email = str(c.get("email") or (c.get("properties") or {}).get("email") or "").strip().lower()
        if valid_email(email):
            by_email[email] = cid
        statuses[cid] = {str(s): [SUBSCRIBED, "", ""] for s in c.get("subscribed") or ()}
        statuses[cid].update({str(s): [NOT_SUBSCRIBED, "", ""] for s in c.get("unsubscribed") or ()})
    lists = {str(x["id"]): {str(m) for m in x.get("members") or ()} for x in hub.get("lists") or ()}
    kinds = {str(x["id"]): str(x.get("processing_type", "MANUAL")).upper() for x in hub.get("lists") or ()}
    audiences = [a for a in (seed.get("mailchimp") or {}).get("audiences") or () if str(a["id"]) == list_id]
    members: dict[str, dict[str, Any]] = {}
    forgotten: set[str] = set()
    for a in audiences:
        for m in a.get("members") or ():
            status = str(m.get("status", "subscribed"))
            members[str(m["email"]).strip().lower()] = {
                "status": status, "tags": [str(t) for t in m.get("tags") or ()],
                "merge_fields": {str(k): v for k, v in (m.get("merge_fields") or {}).items()},
                "status_before_archive": str(m.get("status_before_archive", "subscribed")) if status == "archived" else ""}
        forgotten |= {str(e).strip().lower() for e in a.get("permanently_deleted") or ()}
    return Portal(contacts, by_email, kinds, lists, statuses, members, forgotten)


# -- the rules ---------------------------------------------------------------------------------


def carry_opt_outs_to_hubspot(portal: Portal, audience: Audience, seen: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """R11: "Every member (managed or not, archived or not) whose status is in `to_hubspot.statuses`
    and whose email matches a contact is unsubscribed ... from each subscription in
    `to_hubspot.subscriptions` that the contact is not already explicitly unsubscribed from, with
    `legal_basis` and `explanation`." A member with no contact is only reported. Returns those contacts."""
    done: set[str] = set()
    if audience.to_hubspot is None:
        return done
    for email, m in sorted(seen.items()):
        cid = portal.by_email.get(email)
        if cid is None or m["status"] not in audience.to_hubspot["statuses"]:
            continue
        done.add(cid)
        for sid in audience.r11_subscriptions:
            unsubscribe_in_hubspot(portal, audience, cid, sid, why="")
    return done


def unsubscribe_in_hubspot(portal: Portal, audience: Audience, cid: str, sid: str, *, why: str) -> None:
    """One R11 unsubscribe; with `why`, one that only a retried run makes (it depends on history)."""
    assert audience.to_hubspot is not None
    done = [NOT_SUBSCRIBED, str(audience.to_hubspot["legal_basis"]), str(audience.to_hubspot["explanation"])]
    if explicitly_unsubscribed(portal, cid, sid):
        return
    if portal.contacts[cid].get("opted_out_of_all"):
        # R11 skips subscriptions "the contact is not already explicitly unsubscribed from"; HubSpot shows a
        # contact opted out of all email as NOT_SUBSCRIBED from every subscription (portal-wide), and the
        # SPEC does not say whether that counts as explicit: both answers are right.
        why = "opted out of all email: whether portal-wide NOT_SUBSCRIBED counts as explicit is open (R11)"
    if not why:
        portal.statuses[cid][sid] = done
        return
    current = portal.statuses[cid].get(sid)
    options = list(current.options) if isinstance(current, AnyOf) else [current]
    portal.statuses[cid][sid] = AnyOf(tuple(options + ([done] if done not in options else [])), why)


def explicitly_unsubscribed(portal: Portal, cid: str, sid: str) -> bool:
    status = portal.statuses[cid].get(sid)
    return isinstance(status, list) and status[0] == NOT_SUBSCRIBED


def joined_stream(audience: Audience, lists: Mapping[str, set[str]], cid: str) -> tuple[Stream, Source] | None:
    """R3: the first stream with a source list holding the contact and no exclusion holding it
    (a handover `to_list` excludes from every stream, R12); the first such source gives the tags."""
    for stream in audience.streams:
        holding = [s for s in stream.sources if cid in lists.get(s.list, ())]
        excluded = any(cid in lists.get(lid, ()) for lid in stream.exclude_lists | audience.handover_lists)
        if holding and not excluded:
            return stream, holding[0]
    return None


@dataclass(frozen=True)
class Observation:
    """The one snapshot a plan is computed from (R15): members, lists and opt-outs as seeded."""

    members: Mapping[str, Mapping[str, Any]]
    lists: Mapping[str, set[str]]
    critical: frozenset[str]  # contact ids on a critical list
    opted_out: frozenset[str]  # contact ids opted out in HubSpot (R4), R11's included


def observe(portal: Portal, audience: Audience, critical_lists: Iterable[str], r11: set[str]) -> Observation:
    lists = {lid: set(ids) for lid, ids in portal.lists.items()}
    critical = {cid for lid in critical_lists for cid in lists.get(lid, ())}
    opted_out = set(r11)  # R4: "A contact that R11 unsubscribes in this plan counts as opted out here"
    for cid, c in portal.contacts.items():
        seeded = {str(s) for s in c.get("unsubscribed") or ()}
        if c.get("opted_out_of_all") or seeded & set(audience.r4_subscriptions):
            opted_out.add(cid)  # R4: opted out of all email always counts, whatever from_hubspot says
    members = {e: {**m, "tags": list(m["tags"])} for e, m in portal.members.items()}
    return Observation(members, lists, frozenset(critical), frozenset(opted_out))


def expected_end_state(seed: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """What SPEC §4 says both platforms hold once an apply of `config` on `seed` has converged:
    `mailchimp` (list id -> email -> status, sorted tags, non-empty merge fields), `hubspot`
    (`statuses`: contact id -> subscription id -> [status, legal basis, explanation] for explicit
    statuses; `lists`: list id -> sorted contact ids) and `confirmations` (email -> opt-in emails sent)."""
    audiences = list((config.get("audiences") or {}).values())
    if len(audiences) != 1:
        raise NotImplementedError("expected_state models exactly one audience")
    audience = read_audience(config, audiences[0])
    portal = read_portal(seed, audience.list_id)
    critical_lists = [str(x) for x in (config.get("exclusions") or {}).get("critical") or ()]
    seen_members = {e: {**m, "tags": list(m["tags"])} for e, m in portal.members.items()}
    seen = observe(portal, audience, critical_lists, carry_opt_outs_to_hubspot(portal, audience, seen_members))
    for email in sorted(set(seen.members) | set(portal.by_email)):
        decide_member(portal, audience, seen, email)
    for cid in sorted(set(portal.by_email.values()), key=int):  # R1: a contact with no valid email is skipped
        clean_up_source_lists(portal, audience, seen, cid)
    return {
        "mailchimp": {audience.list_id: {e: member_view(m) for e, m in sorted(portal.members.items())}},
        "hubspot": {"contacts": sorted(portal.contacts, key=int),  # none is created (no create_missing_contacts)
                    "statuses": {cid: dict(sorted(st.items())) for cid, st in sorted(portal.statuses.items()) if st},
                    "lists": {lid: sorted(ids, key=int) for lid, ids in sorted(portal.lists.items())}},
        "confirmations": dict(sorted(portal.confirmations.items())),
    }


def member_view(m: Mapping[str, Any]) -> dict[str, Any]:
    """A member as compared: status, tags sorted, merge fields without empty values."""
    return {"status": m["status"], "tags": sorted(m["tags"]),
            "merge_fields": {k: v for k, v in sorted(m["merge_fields"].items()) if v not in ("", None)}}


def decide_member(portal: Portal, audience: Audience, seen: Observation, email: str) -> None:
    """SPEC §4 precedence: critical (R2), then a pending handover (R12), then opted out in HubSpot
    (R4), then streams (R3) giving an eligible contact (R5-R8) or a leaving one (R9). The first wins."""
    cid = portal.by_email.get(email)
    was = seen.members.get(email)
    if cid is not None and cid in seen.critical:
        archive_critical(portal, audience, cid, email)
    elif was is not None and pending_handover(audience, was):
        if cid is None:
            raise NotImplementedError(f"{email}: a handover member with no contact is reported; then R9 or not is open")
        hand_over(portal, audience, cid, email)
    elif cid is not None and cid in seen.opted_out:
        unsubscribe_opted_out(portal, audience, cid, email)
    elif cid is not None and (joined := joined_stream(audience, seen.lists, cid)) is not None:
        make_eligible(portal, audience, cid, email, joined[1])
    elif was is not None:
        leave(portal, audience, email)


def archive_critical(portal: Portal, audience: Audience, cid: str, email: str) -> None:
    """R2: "Its member, if not archived, is archived ... subscribed, transactional and unsubscribed
    members by DELETE; a pending member is first set to unsubscribed ..., then archived; a cleaned
    member (405 too, never emailed) is reported, not written." Never created, updated or tagged."""
    m = portal.members.get(email)
    if m is None or m["status"] in ("archived", "cleaned"):
        return
    if m["status"] == "pending" and audience.to_hubspot is not None and "unsubscribed" in audience.to_hubspot["statuses"]:
        for sid in audience.r11_subscriptions:
            # A run interrupted between R2's unsubscribe and its archive leaves an unsubscribed member, and
            # the next plan carries it to HubSpot: R11 covers "every member (managed or not, archived or
            # not) whose status is in to_hubspot.statuses". An uninterrupted apply never does.
            unsubscribe_in_hubspot(portal, audience, cid, sid, why="R2 unsubscribed the pending member; a retried run's R11 sees it")
    m["status"] = "archived"


def pending_handover(audience: Audience, was: Mapping[str, Any]) -> bool:
    """R12: "A non-archived member carrying a `handover` tag (and no exempt tag)"."""
    tags = {t.casefold() for t in was["tags"]}
    if was["status"] == "archived" or not tags & audience.handover_tags() or audience.is_exempt(was["tags"]):
        return False
    if was["status"] in ("pending", "cleaned"):
        raise NotImplementedError("the SPEC does not say how R12 archives a pending or cleaned member (405)")
    return True


def hand_over(portal: Portal, audience: Audience, cid: str, email: str) -> None:
    """R12: HubSpot first (add to `to_list`, remove from each `remove_from`), then Mailchimp: "the
    member's managed tags and the handover tag are removed and it is archived"."""
    m = portal.members[email]
    tags = {t.casefold() for t in m["tags"]}
    matching = [h for h in audience.handovers if str(h["tag"]).casefold() in tags]
    for h in matching:
        portal.add(cid, str(h["to_list"]))
        for lid in h.get("remove_from") or ():
            portal.remove(cid, str(lid))
    dropped = audience.managed_tags() | {str(h["tag"]).casefold() for h in matching}
    m["tags"] = [t for t in m["tags"] if t.casefold() not in dropped]
    m["status"] = "archived"


def unsubscribe_opted_out(portal: Portal, audience: Audience, cid: str, email: str) -> None:
    """R4: no write but this one: "If `from_hubspot` is on and its member is subscribed or pending,
    the member is set to unsubscribed". Never archived, never created."""
    m = portal.members.get(email)
    if m is None or not audience.r4_writes or m["status"] not in ("subscribed", "pending"):
        return
    m["status"] = "unsubscribed"
    if audience.to_hubspot is not None and "unsubscribed" in audience.to_hubspot["statuses"]:
        for sid in audience.r11_subscriptions:
            # Only when the contact is not already explicitly unsubscribed (R11): a retried run sees the
            # member R4 unsubscribed, like any other unsubscribed member.
            unsubscribe_in_hubspot(portal, audience, cid, sid, why="R4 unsubscribed the member; a retried run's R11 sees it")


def merge_values(portal: Portal, audience: Audience, cid: str) -> dict[str, Any]:
    """R13: the mapped HubSpot values; "An empty HubSpot value never blanks a Mailchimp value"."""
    props = portal.contacts[cid].get("properties") or {}
    return {tag: str(props[prop]).strip() for tag, prop in audience.merge_fields.items()
            if str(props.get(prop) or "").strip()}


def make_eligible(portal: Portal, audience: Audience, cid: str, email: str, source: Source) -> None:
    """R5 create, R6 update, R7 opted out in Mailchimp (no write), R8 restore."""
    implied = list(dict.fromkeys([source.tag, *source.extra_tags]))
    merges = merge_values(portal, audience, cid)
    m = portal.members.get(email)
    if m is None:
        if email in portal.forgotten:
            return  # R5: "refused with 400 "Forgotten Email Not Subscribed" is reported, remembered"
        portal.members[email] = {"status": audience.new_status, "tags": implied, "merge_fields": merges}
        confirm(portal, audience, email)
    elif m["status"] in LIVE:
        m["merge_fields"].update(merges)
        have = {t.casefold() for t in m["tags"]}
        other_primary = (have & audience.primary_tags()) - {source.tag.casefold()}
        wanted = [t for t in implied if not (audience.first_tag_wins and other_primary and t == source.tag)]
        if not audience.first_tag_wins:
            keep = {t.casefold() for t in implied}
            m["tags"] = [t for t in m["tags"] if t.casefold() not in audience.managed_tags() or t.casefold() in keep]
        m["tags"] += [t for t in wanted if t.casefold() not in {x.casefold() for x in m["tags"]}]
    elif m["status"] == "archived" and audience.restore_archived and consent(portal, audience, cid):
        if m.get("status_before_archive") in ("unsubscribed", "cleaned"):
            raise NotImplementedError("restoring an opted-out archived member depends on who unsubscribed it")
        m["status"] = audience.new_status
        m["merge_fields"].update(merges)
        keep = {t.casefold() for t in implied}
        m["tags"] = [t for t in m["tags"] if t.casefold() not in audience.managed_tags() or t.casefold() in keep]
        m["tags"] += [t for t in implied if t.casefold() not in {x.casefold() for x in m["tags"]}]
        confirm(portal, audience, email)
    # unsubscribed or cleaned (R7), or archived without consent ("restore needs consent"): no write


def consent(portal: Portal, audience: Audience, cid: str) -> bool:
    """R8's evidence of consent. The audit log is new in these tests, so it cannot show "this
    product archived the member while it was subscribed or pending"; what is left is "the HubSpot
    contact is explicitly subscribed to one of the audience's configured subscriptions"."""
    statuses = portal.contacts[cid]
    subscribed = {str(s) for s in statuses.get("subscribed") or ()} - {str(s) for s in statuses.get("unsubscribed") or ()}
    return not statuses.get("opted_out_of_all") and bool(subscribed & set(audience.consent_subscriptions))


def confirm(portal: Portal, audience: Audience, email: str) -> None:
    """A member that becomes pending is sent one opt-in confirmation email by Mailchimp."""
    if audience.new_status == "pending":
        portal.confirmations[email] = portal.confirmations.get(email, 0) + 1


def leave(portal: Portal, audience: Audience, email: str) -> None:
    """R9 (and R10): a managed, live, non-exempt member with no eligible contact gets `on_leave`;
    "a pending member cannot be archived, 405: it is reported, not written"."""
    m = portal.members[email]
    managed = {t.casefold() for t in m["tags"]} & audience.managed_tags()
    if not managed or m["status"] not in LIVE or audience.is_exempt(m["tags"]):
        return
    if audience.on_leave == "archive" and m["status"] != "pending":
        m["status"] = "archived"
    elif audience.on_leave == "untag":
        m["tags"] = [t for t in m["tags"] if t.casefold() not in audience.managed_tags()]


def clean_up_source_lists(portal: Portal, audience: Audience, seen: Observation, cid: str) -> None:
    """With `source_cleanup`: R2 removes a critical contact from every source list; R3 removes a
    contact from the source lists of each stream whose `exclude` sets hold it, "except lists that are
    a source of the stream it joined". Only MANUAL and SNAPSHOT lists are written (R14)."""
    if not audience.source_cleanup:
        return
    if cid in seen.critical:
        for lid in audience.source_lists():
            portal.remove(cid, lid)
    joined = joined_stream(audience, seen.lists, cid)
    kept = {s.list for s in joined[0].sources} if joined else set()
    for stream in audience.streams:
        if any(cid in seen.lists.get(lid, ()) for lid in stream.exclude_lists):
            for source in stream.sources:
                if source.list not in kept:
                    portal.remove(cid, source.list)


# -- comparing ---------------------------------------------------------------------------------


def differences(expected: Any, observed: Any, path: str = "") -> list[str]:
    """Every place where `observed` is not what `expected` states (a missing key reads as None)."""
    if isinstance(expected, AnyOf):
        return [] if observed in expected.options else [f"{path}: {observed!r} is none of {list(expected.options)!r} ({expected.why})"]
    if isinstance(expected, Mapping) and isinstance(observed, Mapping | None) and expected:
        observed = observed or {}
        out: list[str] = []
        for key in sorted(set(expected) | set(observed), key=str):
            out += differences(expected.get(key), observed.get(key), f"{path}/{key}")
        return out
    return [] if expected == observed else [f"{path}: expected {expected!r}, found {observed!r}"]
