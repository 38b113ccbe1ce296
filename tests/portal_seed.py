"""Generated portals as the sandbox holds them: a SPEC §7 seed, what observe must see, comparable views.

Used by tests/test_simulate_vs_sandbox.py, which applies one plan twice (through `simulate` and
through the real apply against the sandbox) and compares the end states. Three steps live here:

- `realisable(portal)`: the portal as the vendors can hold it. HubSpot keeps one contact per
  email, so later contacts sharing an email are dropped; `hs_email_optout*` properties are what
  HubSpot computes from subscription statuses, so a generated property `true` becomes the status
  it reflects; consent (R8) is an explicit SUBSCRIBED status, so it exists only for a contact that
  holds the email and is not opted out of that subscription.
- `seed_of(portal)`: the sandbox seed, mapping `VendorHidden` onto the sandbox's extensions:
  archived after the person's own opt-out -> `status_before_archive: unsubscribed` (else
  subscribed); unsubscribed by the account -> `unsubscribed_by: admin|api` (else self); forgotten
  -> `permanently_deleted`. Members last changed long ago (see LONG_AGO).
- `observable(portal)` / `view(...)`: the snapshot observe must return (only the contacts and
  lists it reads, consent only for restore candidates) and a plain, normalised value of a
  snapshot for equality assertions (tags case-insensitive, blank values as absent).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping

from reconciler.model import AudienceState, Contact, Snapshot, subscriber_hash
from reconciler.settings import Config, frozen_map
from tests.portal_strategies import Portal

# A subscription type that no generated config names: with it, HubSpot's `hs_email_optout`
# ("unsubscribed from all email") is true only for contacts opted out of all, as in a real portal
# that has more subscription types than one config uses.
OTHER_SUBSCRIPTION = "289137199"
# Seeded members changed long before the observation, so the apply's last-moment re-check of
# opt-outs since the observation (R7) finds only what happened since, as on a real account.
LONG_AGO = "2024-05-01T00:00:00+00:00"
OPTOUT_ALL = "hs_email_optout"
OPTOUT_PREFIX = "hs_email_optout_"


def _true(value: Any) -> bool:
    return value is not None and str(value).strip().lower() == "true"


def subscriptions_of(config: Config) -> list[str]:
    """Every subscription id the config names (R4, R11 and `subscriptions:`), in a stable order."""
    ids = dict.fromkeys(str(s) for s in config.subscriptions.values())
    for audience in config.audiences.values():
        ids.update(dict.fromkeys(audience.opt_outs.from_hubspot))
        if audience.opt_outs.to_hubspot is not None:
            ids.update(dict.fromkeys(audience.opt_outs.to_hubspot.subscriptions))
    return list(ids)


def configured_lists(config: Config) -> set[str]:
    """The HubSpot lists observe reads for every audience (critical, exclusions, sources, handover)."""
    lists = {str(l) for l in config.exclusions.critical}
    for audience in config.audiences.values():
        for stream in audience.streams:
            for name in stream.exclude:
                lists.update(str(l) for l in config.exclusions.hard.get(name, ()))
            lists.update(s.list for s in stream.sources)
        for handover in audience.handover:
            lists.add(handover.to_list)
            lists.update(handover.remove_from)
    return lists


def mapped_properties(config: Config) -> set[str]:
    """The contact properties the config reads or writes (merge fields, tag_rules, set_properties)."""
    names: set[str] = set()
    for audience in config.audiences.values():
        names.update(audience.merge_fields.values())
        names.update(r.property for st in audience.streams for s in st.sources for r in s.tag_rules)
        for handover in audience.handover:
            names.update(handover.set_properties)
    return names


# -- the portal as the vendors can hold it ----------------------------------------------------


def _realisable_contact(contact: Contact, sids: list[str]) -> Contact:
    props = {k: v for k, v in contact.properties.items() if v is not None and not k.startswith(OPTOUT_ALL)}
    opted_out_of_all = contact.opted_out_of_all or _true(contact.properties.get(OPTOUT_ALL))
    unsubscribed = set(contact.unsubscribed)
    unsubscribed.update(sid for sid in sids if _true(contact.properties.get(OPTOUT_PREFIX + sid)))
    if opted_out_of_all:  # HubSpot reads every subscription as NOT_SUBSCRIBED for these
        unsubscribed.update(sids)
    props.update({OPTOUT_PREFIX + sid: "true" for sid in sorted(unsubscribed)})
    if opted_out_of_all:
        props[OPTOUT_ALL] = "true"
    return replace(contact, properties=frozen_map(props), unsubscribed=frozenset(unsubscribed),
                   opted_out_of_all=opted_out_of_all)


def realisable(portal: Portal) -> Portal:
    """`portal` as HubSpot and Mailchimp can hold it (see the module docstring); the same portal
    when it already is."""
    sids = subscriptions_of(portal.config)
    contacts: dict[str, Contact] = {}
    holders: dict[str, Contact] = {}
    for cid, contact in portal.snapshot.contacts.items():
        if contact.email is not None:
            if contact.email in holders:
                continue  # HubSpot: one contact per email
            holders[contact.email] = contact
        contacts[cid] = _realisable_contact(contact, sids)
    for email, contact in holders.items():
        holders[email] = contacts[contact.id]
    lists = {lid: replace(l, size=sum(1 for c in contacts.values() if lid in c.lists))
             for lid, l in portal.snapshot.lists.items()}
    consent: dict[str, frozenset[str]] = {}
    for email, wanted in (getattr(portal.snapshot, "consent", None) or {}).items():
        holder = holders.get(email)
        granted = frozenset(wanted) - holder.unsubscribed if holder is not None and not holder.opted_out_of_all \
            else frozenset()
        if granted:
            consent[email] = granted
    snapshot = replace(portal.snapshot, contacts=frozen_map(contacts), lists=frozen_map(lists),
                       consent=frozen_map(consent))
    return replace(portal, snapshot=snapshot)


# -- the seed ---------------------------------------------------------------------------------


def seed_of(portal: Portal) -> dict[str, Any]:
    """The SPEC §7 seed (plus the sandbox's extensions) of a realisable portal."""
    config, snapshot, hidden = portal.config, portal.snapshot, portal.hidden
    sids = subscriptions_of(config)
    contacts = []
    for contact in snapshot.contacts.values():
        granted = snapshot.consent.get(contact.email or "", frozenset()) if contact.email else frozenset()
        contacts.append({
            "id": contact.id,
            "email": contact.email,
            "properties": {k: v for k, v in contact.properties.items() if not k.startswith(OPTOUT_ALL)},
            "subscribed": sorted(granted),
            "unsubscribed": sorted(contact.unsubscribed),
            "opted_out_of_all": contact.opted_out_of_all,
        })
    lists = [{"id": l.id, "name": l.name, "processing_type": l.processing_type,
              "members": [c.id for c in snapshot.contacts.values() if l.id in c.lists]}
             for l in snapshot.lists.values()]
    audiences = []
    for state in snapshot.audiences.values():
        members = []
        for email, member in state.members.items():
            key = (state.list_id, email)
            raw: dict[str, Any] = {"email": email, "status": member.status, "tags": list(member.tags),
                                   "merge_fields": dict(member.merge_fields), "last_changed": LONG_AGO}
            if member.status == "archived":
                raw["status_before_archive"] = ("unsubscribed" if key in hidden.archived_after_opt_out
                                                else "subscribed")
            if member.status == "unsubscribed":
                # VendorHidden does not tell an admin from the API: Mailchimp treats both alike.
                by_account = "admin" if int(subscriber_hash(email), 16) % 2 else "api"
                raw["unsubscribed_by"] = by_account if key in hidden.unsubscribed_by_api else "self"
            members.append(raw)
        audiences.append({
            "id": state.list_id, "name": state.name, "double_optin": state.double_optin,
            "merge_fields": [{"tag": f.tag, "type": f.type, "required": f.required}
                             for f in state.merge_fields.values()],
            "members": members,
            "permanently_deleted": sorted(e for (lid, e) in hidden.forgotten if lid == state.list_id),
        })
    hubspot = {
        "token": config.hubspot.token,
        "subscriptions": [{"id": sid, "name": f"Subscription {sid}"} for sid in [*sids, OTHER_SUBSCRIPTION]],
        "properties": sorted(mapped_properties(config)),
        "lists": lists,
        "contacts": contacts,
    }
    return {"hubspot": hubspot, "mailchimp": {"api_key": config.mailchimp.api_key, "audiences": audiences}}


# -- what observe must see --------------------------------------------------------------------


def observable(portal: Portal) -> Snapshot:
    """The snapshot observe must return for a realisable portal seeded with `seed_of`: the contacts
    it reads (source lists, emails of members), the configured lists, consent of restore candidates."""
    config, snapshot = portal.config, portal.snapshot
    wanted_lists = configured_lists(config)
    sources = {s.list for a in config.audiences.values() for st in a.streams for s in st.sources}
    member_emails = {e for state in snapshot.audiences.values() for e in state.members}
    contacts = {cid: replace(c, lists=frozenset(c.lists & wanted_lists))
                for cid, c in snapshot.contacts.items()
                if c.lists & sources or (c.email is not None and c.email in member_emails)}
    lists = {lid: l for lid, l in snapshot.lists.items() if lid in wanted_lists}
    consent = {e: snapshot.consent[e] for e in restore_candidates(config, snapshot.audiences, contacts.values())
               if e in snapshot.consent}
    return replace(snapshot, contacts=frozen_map(contacts), lists=frozen_map(lists), consent=frozen_map(consent))


def restore_candidates(config: Config, audiences: Mapping[str, AudienceState], contacts: Iterable[Contact]) -> set[str]:
    """R8's candidates (observe reads their consent): archived members of an audience with
    `restore_archived` whose email a contact on one of that audience's source lists holds."""
    contacts = list(contacts)
    found: set[str] = set()
    for audience in config.audiences.values():
        state = audiences.get(audience.mailchimp_list_id)
        if not audience.restore_archived or state is None:
            continue
        sources = {s.list for st in audience.streams for s in st.sources}
        on_source = {c.email for c in contacts if c.email is not None and c.lists & sources}
        found.update(e for e, m in state.members.items() if m.status == "archived" and e in on_source)
    return found


# -- comparable views -------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or value == ""


def contact_view(contact: Contact, config: Config) -> dict[str, Any]:
    sids = set(subscriptions_of(config))
    return {
        "email": contact.email,
        "lists": sorted(contact.lists & configured_lists(config)),
        "unsubscribed": sorted(contact.unsubscribed & sids),
        "opted_out_of_all": contact.opted_out_of_all or _true(contact.properties.get(OPTOUT_ALL)),
        "properties": {k: str(v) for k, v in sorted(contact.properties.items())
                       if k in mapped_properties(config) and not _blank(v)},
    }


def member_view(member: Any) -> dict[str, Any]:
    return {
        "status": member.status,
        "merge_fields": {k: v for k, v in sorted(member.merge_fields.items()) if not _blank(v)},
        "tags": sorted({t.casefold() for t in member.tags}),
    }


def view(snapshot: Snapshot, config: Config, contacts: Iterable[str] | None = None) -> dict[str, Any]:
    """A plain, normalised value of `snapshot` (only `contacts` when given) for `==` and diffs."""
    wanted = set(contacts) if contacts is not None else None
    return {
        "contacts": {cid: contact_view(c, config) for cid, c in sorted(snapshot.contacts.items())
                     if wanted is None or cid in wanted},
        "lists": {lid: {"name": l.name, "processing_type": l.processing_type, "size": l.size}
                  for lid, l in sorted(snapshot.lists.items()) if lid in configured_lists(config)},
        "audiences": {lid: {"name": a.name, "double_optin": a.double_optin, "opt_outs_only": a.opt_outs_only,
                            "merge_fields": {t: (f.type, f.required) for t, f in sorted(a.merge_fields.items())},
                            "members": {e: member_view(m) for e, m in sorted(a.members.items())}}
                      for lid, a in sorted(snapshot.audiences.items())},
        "consent": {e: sorted(s) for e, s in sorted(snapshot.consent.items())},
    }


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Human-readable differences between two plain values (first ones first), for messages."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}/{key}"
            if key not in actual:
                out.append(f"{where}: expected {expected[key]!r:.300}, missing")
            elif key not in expected:
                out.append(f"{where}: unexpected {actual[key]!r:.300}")
            else:
                out += differences(expected[key], actual[key], where)
        return out
    return [] if expected == actual else [f"{path}: expected {expected!r:.300}, got {actual!r:.300}"]
