"""Properties of the pure core on generated portals: convergence, order independence, compliance, checksum.

`CORE_PROPERTY_EXAMPLES` sets the examples per property (default 2,000, as CI requires).
"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.model import AudienceState, Snapshot
from reconciler.plan import Change, Plan, Report, checksum_of
from reconciler.rules import build_plan
from reconciler.settings import frozen_map
from reconciler.simulate import simulate_apply
from tests.portal_strategies import CRITICAL_LISTS, MARKETING, NEWSLETTER, Portal, portals

EXAMPLES = int(os.environ.get("CORE_PROPERTY_EXAMPLES", "2000"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _plan(portal: Portal, snapshot: Snapshot | None = None, memory=None) -> Plan:
    return build_plan(portal.config, snapshot or portal.snapshot, memory or portal.memory)


@PROPERTY
@given(portals())
def test_simulated_apply_then_replan_has_no_changes(portal: Portal) -> None:
    plan = _plan(portal)
    result = simulate_apply(portal.snapshot, plan, portal.hidden)
    again = _plan(portal, result.snapshot, result.memory(portal.memory))
    assert not result.deferred
    # A refused create or restore frees a place under the member cap that the first plan gave it;
    # the next candidate takes it in the re-plan. Nothing else may remain.
    refused_in = {r.change.target for r in result.refused}
    capped = {name for name, a in portal.config.audiences.items() if a.member_cap is not None}
    leftovers = [
        c for c in again.changes
        if not (c.action in ("create_member", "restore_member") and c.target in refused_in & capped)
    ]
    assert leftovers == [], [c.canonical() for c in leftovers]
    for name in refused_in & capped:
        assert len([c for c in again.changes if c.target == name]) <= len(
            [r for r in result.refused if r.change.target == name])


def _shuffled(snapshot: Snapshot, rng: random.Random) -> Snapshot:
    def shuffle_map(mapping):
        items = list(mapping.items())
        rng.shuffle(items)
        return frozen_map(items and dict(items))

    contacts = {}
    for cid, contact in snapshot.contacts.items():
        lists = list(contact.lists)
        rng.shuffle(lists)
        contacts[cid] = replace(contact, lists=frozenset(lists), properties=shuffle_map(contact.properties))
    audiences = {}
    for list_id, state in snapshot.audiences.items():
        members = {}
        for email, member in state.members.items():
            tags = list(member.tags)
            rng.shuffle(tags)
            members[email] = replace(member, tags=tuple(tags), merge_fields=shuffle_map(member.merge_fields))
        audiences[list_id] = replace(state, members=shuffle_map(members))
    return replace(snapshot, contacts=shuffle_map(contacts), lists=shuffle_map(snapshot.lists),
                   audiences=shuffle_map(audiences), consent=shuffle_map(snapshot.consent))


@PROPERTY
@given(portals(), st.integers(0, 2**32 - 1))
def test_plan_does_not_depend_on_input_order(portal: Portal, seed: int) -> None:
    rng = random.Random(seed)
    plan = _plan(portal)
    again = _plan(portal, _shuffled(portal.snapshot, rng))
    assert again.changes == plan.changes
    assert again.reports == plan.reports
    assert again.checksum == plan.checksum


def _opted_out_emails(portal: Portal, plan: Plan) -> set[str]:
    """Everyone opted out, stated from the portal itself (SPEC §4 Terms, R4, R15), not from the rules:
    opted out in HubSpot of any configured subscription or of all email (field or property), on
    any contact sharing the email (R1); opted out in any Mailchimp audience of the config; or
    remembered as opted out by the audit log; or unsubscribed in HubSpot by this plan (R11)."""
    out = {c.email for c in plan.changes if c.action == "unsubscribe_contact"}
    out |= set(portal.memory.opted_out)
    for contact in portal.snapshot.contacts.values():
        props = contact.properties
        if (contact.unsubscribed & {MARKETING, NEWSLETTER} or contact.opted_out_of_all
                or str(props.get(f"hs_email_optout_{MARKETING}")).lower() == "true"
                or str(props.get("hs_email_optout")).lower() == "true"):
            out.add(contact.email)
    for state in portal.snapshot.audiences.values():
        out |= {email for email, m in state.members.items() if m.status in ("unsubscribed", "cleaned")}
    return out


def _critical_emails(portal: Portal) -> set[str]:
    return {c.email for c in portal.snapshot.contacts.values() if c.lists & set(CRITICAL_LISTS) and c.email
            and "@" in c.email}


@PROPERTY
@given(portals())
def test_every_critical_contact_with_a_live_member_ends_archived(portal: Portal) -> None:
    """Positive R2: whatever else holds, a critical person's member is archived (a pending one
    unsubscribed first), except a cleaned one, which Mailchimp cannot archive and never emails."""
    plan = _plan(portal)
    result = simulate_apply(portal.snapshot, plan, portal.hidden)
    assert not result.refused or all(r.change.rule != "R2" for r in result.refused)
    for email in _critical_emails(portal) - {r.email for r in plan.reports if r.reason.startswith("R1 contact")
                                             and "no valid email" in r.reason}:
        for name, audience in portal.config.audiences.items():
            before = portal.snapshot.audiences[audience.mailchimp_list_id].members.get(email)
            after = result.snapshot.audiences[audience.mailchimp_list_id].members.get(email)
            if before is None:
                assert after is None, (email, name)
                continue
            if before.status == "cleaned":
                assert after.status == "cleaned"
                continue
            assert after.status == "archived", (email, name, before.status, after.status)
            if before.status == "pending":
                actions = [c.action for c in plan.changes if c.email == email and c.target == name]
                assert "unsubscribe_member" in actions and "archive_member" in actions


@PROPERTY
@given(portals())
def test_an_opted_out_person_gets_no_mailchimp_write_but_unsubscribe_archive_or_untag(portal: Portal) -> None:
    plan = _plan(portal)
    opted_out = _opted_out_emails(portal, plan)
    for change in plan.changes:
        if change.system == "mailchimp" and change.email in opted_out:
            assert change.action in ("unsubscribe_member", "archive_member", "remove_tags"), change.canonical()


@PROPERTY
@given(portals())
def test_every_mailchimp_opt_out_in_scope_reaches_hubspot_with_the_configured_legal_basis(portal: Portal) -> None:
    """Positive R11: for every audience with `to_hubspot`, every member whose status it names and
    whose email a contact has (or, with create_missing_contacts, has not) yields an unsubscribe
    from each subscription the person is not already explicitly out of, carrying the legal basis
    and explanation of the first such audience in config order."""
    plan = _plan(portal)
    planned = {(c.email, c.target): c for c in plan.changes if c.action == "unsubscribe_contact"}
    by_email: dict[str, list] = {}
    for contact in portal.snapshot.contacts.values():
        if contact.email and contact.email.count("@") == 1 and "." in contact.email.split("@")[1]:
            by_email.setdefault(contact.email, []).append(contact)
    expected: dict[tuple[str, str], Any] = {}
    for audience in portal.config.audiences.values():
        to_hubspot = audience.opt_outs.to_hubspot
        if to_hubspot is None:
            continue
        for email, member in portal.snapshot.audiences[audience.mailchimp_list_id].members.items():
            if member.status not in to_hubspot.statuses:
                continue
            contacts = by_email.get(email, [])
            if not contacts and not to_hubspot.create_missing_contacts:
                continue
            for sid in to_hubspot.subscriptions:
                already = any(sid in c.unsubscribed or c.opted_out_of_all
                              or str(c.properties.get(f"hs_email_optout_{sid}")).lower() == "true"
                              or str(c.properties.get("hs_email_optout")).lower() == "true" for c in contacts)
                if not already:
                    expected.setdefault((email, sid), to_hubspot)
    for key, to_hubspot in expected.items():
        assert key in planned, key
        after = planned[key].after
        assert (after["legal_basis"], after["explanation"]) == (to_hubspot.legal_basis, to_hubspot.explanation), key


@PROPERTY
@given(portals())
def test_no_change_mails_an_opted_out_or_critical_person(portal: Portal) -> None:
    plan = _plan(portal)
    opted_out = _opted_out_emails(portal, plan)
    critical = {c.email for c in portal.snapshot.contacts.values() if c.lists & set(CRITICAL_LISTS)}
    members = {
        name: portal.snapshot.audiences[a.mailchimp_list_id].members for name, a in portal.config.audiences.items()
    }
    for change in plan.changes:
        if change.system != "mailchimp":
            continue
        status = change.after.get("status", change.after.get("status_if_new"))
        if change.email in opted_out:
            assert status not in ("subscribed", "pending"), change
        observed = members[change.target].get(change.email)
        if observed is not None and observed.status in ("unsubscribed", "cleaned"):
            allowed = change.action == "archive_member" or (change.action == "remove_tags" and change.rule == "R12")
            assert allowed, change
        if change.email in critical:
            assert change.action not in ("create_member", "update_member", "add_tags", "restore_member"), change


def _with_before(change: Change, before: dict) -> Change:
    return Change.make(change.system, change.action, change.target, change.email, before, change.after,
                       change.reason, change.step, change.contact_id)


@PROPERTY
@given(portals(max_contacts=120), st.integers(0, 2**32 - 1))
def test_checksum_changes_with_the_changes_and_only_then(portal: Portal, seed: int) -> None:
    rng = random.Random(seed)
    plan = _plan(portal)
    same = Plan(tuple(plan.changes), reports=(Report("warning", "x", None, "not a change"),),
                observed={"contacts": -1}, safety_bases={})
    assert same.checksum == plan.checksum
    if not plan.changes:
        assert plan.checksum == checksum_of(())
        return
    index = rng.randrange(len(plan.changes))
    change = plan.changes[index]
    edits = [
        _with_before(change, {**change.before, "observed": "something else"}),
        replace(change, reason=change.reason + " (edited)"),
        replace(change, email="other@example.org"),
    ]
    if change.before:
        key = sorted(change.before)[0]
        edits.append(_with_before(change, {**change.before, key: [change.before[key]]}))
    for edited in edits:
        changes = list(plan.changes)
        changes[index] = edited
        assert checksum_of(changes) != plan.checksum
    assert checksum_of([c for i, c in enumerate(plan.changes) if i != index]) != plan.checksum
