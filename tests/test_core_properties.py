"""Properties of the pure core on generated portals: convergence, order independence, compliance, checksum.

`CORE_PROPERTY_EXAMPLES` sets the examples per property (default 2,000, as CI requires).
"""

from __future__ import annotations

import os
import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.model import AudienceState, Snapshot
from reconciler.plan import Change, Plan, Report, checksum_of
from reconciler.rules import build_plan
from reconciler.settings import frozen_map
from reconciler.simulate import simulate_apply
from tests.portal_strategies import CRITICAL_LISTS, MARKETING, Portal, portals

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
        audiences[list_id] = AudienceState(state.list_id, state.name, state.double_optin, state.merge_fields,
                                           shuffle_map(members))
    return Snapshot(shuffle_map(contacts), shuffle_map(snapshot.lists), shuffle_map(audiences), snapshot.observed_at)


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
    out = {c.email for c in plan.changes if c.action == "unsubscribe_contact"}
    for contact in portal.snapshot.contacts.values():
        props = contact.properties
        if (MARKETING in contact.unsubscribed or contact.opted_out_of_all
                or str(props.get(f"hs_email_optout_{MARKETING}")).lower() == "true"
                or str(props.get("hs_email_optout")).lower() == "true"):
            out.add(contact.email)
    return out


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
