"""`simulate` agrees with the sandbox and the real apply: one plan, applied by both, same end state.

`reconciler.simulate` is the model of the vendors that the core's property tests trust; the sandbox
is the HTTP emulator that the end-to-end tests trust. On generated portals (tests/portal_strategies),
each made realisable and seeded into a fresh sandbox (tests/portal_seed), this checks with the
real code paths (observe, rules, Applier, clients over HTTP, audit log):

1. observe sees exactly the seeded portal, as far as observe reads it;
2. the plan built from that observation, applied by the Applier, and the same plan given to
   `simulate_apply` with the portal's hidden vendor state, end in the same vendor state: members'
   status, tags (case-insensitively) and merge fields (blank as absent); every contact's lists,
   opt-outs and mapped properties (contacts observe did not read must be untouched); list sizes;
3. change by change, simulate's outcome is the apply's: applied, deferred, or not done (a vendor
   refusal is `refused`, any other error `failed`);
4. `Simulation.memory()` is what the audit log remembers after the apply (refusals, archives
   this product made, opt-outs).

The rules' own plans rarely meet a refusal (they never rely on one), so a second test applies
probe plans of writes the rules avoid, aimed at every path of simulate's vendor model.
Portals have at most 100 contacts; hypothesis is derandomised, so CI runs the same 200 of each.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from reconciler.apply import Applier, Outcome
from reconciler.audit import AuditLog
from reconciler.model import Contact, HubList, Member, Memory, Snapshot, is_valid_email
from reconciler.observe import observe
from reconciler.plan import (HUBSPOT, MAILCHIMP, STEP_CLEANUP, STEP_HANDOVER_HUBSPOT, STEP_LEAVE, STEP_MEMBERS,
                             STEP_OPT_OUTS_FROM_HUBSPOT, STEP_OPT_OUTS_TO_HUBSPOT, Change, Plan)
from reconciler.platforms.hubspot import HubSpotClient
from reconciler.platforms.mailchimp import MailchimpClient
from reconciler.rules import build_plan
from reconciler.sandbox import Sandbox
from reconciler.sandbox.hubspot_state import NOT_SUBSCRIBED
from reconciler.settings import Config, RateLimit, frozen_map
from reconciler.simulate import COMPLIANCE, FORGOTTEN, NOT_ARCHIVABLE, Simulation, simulate_apply
from tests.portal_seed import (configured_lists, differences, mapped_properties, observable, realisable, seed_of,
                               subscriptions_of, view)
from tests.portal_strategies import MARKETING, Portal, portals

EXAMPLES = int(os.environ.get("SIMULATE_VS_SANDBOX_EXAMPLES", "200"))
# Derandomised: CI runs the same portals every time, so a failure recurs on every run. No
# shrinking: every example starts a sandbox; the message names the portal and its seed.
AGREEMENT = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])
# simulate's reasons that the apply must report as `refused` (remembered, not a failure).
VENDOR_REFUSALS = (COMPLIANCE, FORGOTTEN, NOT_ARCHIVABLE)


def _pointed_at(config: Config, sandbox: Sandbox) -> Config:
    """The portal's config, its clients aimed at the sandbox. HubSpot's client-side window is
    widened: the sandbox enforces no rate limit here, and waiting would only slow the test."""
    hubspot = dataclasses.replace(config.hubspot, base_url=sandbox.base_url, rate_limit=RateLimit(100_000, 1.0))
    mailchimp = dataclasses.replace(config.mailchimp, base_url=sandbox.mailchimp_base_url)
    return dataclasses.replace(config, hubspot=hubspot, mailchimp=mailchimp)


def _sandbox_contacts(sandbox: Sandbox, config: Config) -> dict[str, Contact]:
    """Every contact of the sandbox as the model values it, read from the emulator's own state
    (observe reads only the contacts the config needs; a contact cleaned off every source list
    would otherwise drop out of the comparison)."""
    state = sandbox.hubspot
    wanted = configured_lists(config)
    sids = subscriptions_of(config)
    contacts = {}
    with state.lock:
        for cid, record in state.contacts.items():
            props = {name: state.value(record, name) for name in [*mapped_properties(config), "hs_email_optout"]}
            contacts[cid] = Contact(
                cid, record.properties.get("email"), frozen_map(props),
                frozenset(lid for lid in wanted if lid in state.lists and cid in state.lists[lid].members),
                frozenset(sid for sid in sids if state.status_of(record, sid) == NOT_SUBSCRIBED),
                record.opted_out_of_all)
    return contacts


def _sandbox_lists(sandbox: Sandbox, config: Config) -> dict[str, HubList]:
    state = sandbox.hubspot
    with state.lock:
        return {lid: HubList(lid, l.name, l.processing_type, len(l.members))
                for lid, l in state.lists.items() if lid in configured_lists(config)}


def _created_by_email(plain: dict[str, Any], seeded: Snapshot) -> dict[str, Any]:
    """Contacts created by the apply keyed by email: their record ids are HubSpot's to choose
    (simulate numbers them after the contacts it was shown, the sandbox after all it holds)."""
    contacts = {(cid if cid in seeded.contacts else f"created {c['email']}"): c
                for cid, c in plain["contacts"].items()}
    return {**plain, "contacts": contacts}


def _outcomes_of_simulation(plan: Plan, simulation: Simulation) -> dict[int, str]:
    refused = {id(r.change): f"refused ({r.reason})" for r in simulation.refused}
    deferred = {id(c): "deferred" for c in simulation.deferred}
    return {id(c): refused.get(id(c)) or deferred.get(id(c)) or "applied" for c in plan.changes}


def _agrees(simulated: str, applied: Outcome | None) -> bool:
    """A vendor's compliance refusal (Member In Compliance State, a permanently deleted email, the
    405 for a pending or cleaned member) is `refused` for the apply; any other error is `failed`."""
    if applied is None:
        return False
    if simulated in ("applied", "deferred"):
        return applied.outcome == simulated
    reason = simulated[len("refused ("):-1]
    return applied.outcome == ("refused" if reason in VENDOR_REFUSALS else "failed")


def _describe(change: Change) -> str:
    return (f"{change.action} {change.target} {change.email} (contact {change.contact_id}) "
            f"before={dict(change.before)} reason={change.reason!r}")


# -- plans the rules would not make: probes of the vendor model ------------------------------

# Per member status, the write sequences a probe may send (one chosen per probed member): every
# archive, restore and unsubscribe path that simulate models, including the provenance chains
# (an API unsubscribe, then an archive, then a restore), refusals and 405s.
PROBES: dict[str, tuple[tuple[tuple[str, str], ...], ...]] = {
    "subscribed": ((("archive", ""),), (("unsubscribe", ""), ("archive", ""), ("restore", "subscribed")),
                   (("unsubscribe", ""), ("restore", "subscribed")), (("restore", "pending"),), (("tags", ""),)),
    "transactional": ((("archive", ""),), (("restore", "subscribed"),), (("tags", ""),)),
    "pending": ((("archive", ""),), (("unsubscribe", ""), ("archive", "")), (("restore", "subscribed"),),
                (("tags", ""),)),
    "unsubscribed": ((("archive", ""),), (("archive", ""), ("restore", "subscribed")), (("restore", "subscribed"),),
                     (("restore", "pending"),), (("archive", ""), ("restore", "pending"))),
    "cleaned": ((("archive", ""),), (("restore", "subscribed"),), (("restore", "pending"),)),
    "archived": ((("restore", "subscribed"),), (("restore", "pending"),), (("archive", ""),)),
}
PROBE_STEPS = {"unsubscribe": STEP_OPT_OUTS_FROM_HUBSPOT, "archive": STEP_LEAVE, "restore": STEP_MEMBERS}


def _member_probes(audience: str, member: Member, sequence: Sequence[tuple[str, str]]) -> list[Change]:
    changes, status = [], member.status
    for kind, target in sequence:
        if kind == "tags":
            tags = [t.swapcase() for t in member.tags[:1]]  # Mailchimp matches tag names case-insensitively
            if tags:
                changes.append(Change.make(MAILCHIMP, "remove_tags", audience, member.email, {tags[0]: True},
                                           {tags[0]: False}, "probe untag", STEP_LEAVE))
            changes.append(Change.make(MAILCHIMP, "add_tags", audience, member.email, {"Probe": False},
                                       {"Probe": True}, "probe tag", STEP_MEMBERS))
            continue
        after = {"status": target or ("unsubscribed" if kind == "unsubscribe" else "archived")}
        if kind == "restore":
            after.update(merge_fields={"FNAME": "Probe"}, tags={})
        action = {"unsubscribe": "unsubscribe_member", "archive": "archive_member", "restore": "restore_member"}[kind]
        # An archive of an archived member is one planned while it was live, archived since.
        before = "subscribed" if kind == "archive" and status == "archived" else status
        changes.append(Change.make(MAILCHIMP, action, audience, member.email, {"status": before}, after,
                                   f"probe {kind}", PROBE_STEPS[kind]))
        status = str(after["status"])
    return changes


def uncapped(portal: Portal) -> Portal:
    """The portal without member caps: R16 is the apply's policy (it holds creates and restores
    back), not the vendor's, and probes are about the vendor."""
    audiences = {n: dataclasses.replace(a, member_cap=None) for n, a in portal.config.audiences.items()}
    return dataclasses.replace(portal, config=dataclasses.replace(portal.config, audiences=frozen_map(audiences)))


def probe_plan(portal: Portal, observed: Snapshot) -> Plan:
    """A plan of writes the rules avoid, drawn from the portal's seed: per probed member one of
    `PROBES`; creates of permanently deleted emails; HubSpot unsubscribes (repeated, of contacts
    opted out of all, of emails with no contact), list writes (DYNAMIC lists included)."""
    rng = random.Random(portal.seed)
    changes: list[Change] = []
    for audience in portal.config.audiences.values():
        state = observed.audiences[audience.mailchimp_list_id]
        for email, member in sorted(state.members.items()):
            if rng.random() < 0.6:
                changes += _member_probes(audience.name, member, rng.choice(PROBES[member.status]))
        for list_id, email in sorted(portal.hidden.forgotten):
            if list_id == audience.mailchimp_list_id and rng.random() < 0.5:
                changes.append(Change.make(MAILCHIMP, "create_member", audience.name, email, {},
                                           {"status_if_new": "subscribed", "merge_fields": {}, "tags": {"Probe": True}},
                                           "probe create", STEP_MEMBERS))
    holders = {c.email: c for c in observed.contacts.values() if c.email and is_valid_email(c.email)}
    members = sorted({e for state in observed.audiences.values() for e in state.members})
    for email in sorted(holders) + [e for e in members if e not in holders]:
        if rng.random() < 0.15:
            contact = holders.get(email)
            changes.append(Change.make(HUBSPOT, "unsubscribe_contact", MARKETING, email, {"unsubscribed": False},
                                       {"unsubscribed": True, "legal_basis": "LEGITIMATE_INTEREST_OTHER",
                                        "explanation": "probe"}, "probe unsubscribe",
                                       STEP_OPT_OUTS_TO_HUBSPOT, contact.id if contact else None))
    lists = sorted(observed.lists)
    for contact in sorted(observed.contacts.values(), key=lambda c: c.id):
        if rng.random() < 0.1 and lists:
            list_id = rng.choice(lists)
            adding = list_id not in contact.lists
            changes.append(Change.make(HUBSPOT, "add_to_list" if adding else "remove_from_list", list_id,
                                       contact.email or "", {"member": not adding}, {"member": adding},
                                       "probe list", STEP_HANDOVER_HUBSPOT if adding else STEP_CLEANUP, contact.id))
    names = {a.name: a.mailchimp_list_id for a in portal.config.audiences.values()}
    return Plan(tuple(sorted(changes, key=Change.sort_key)), audiences=tuple(names), audience_lists=names)


class Run:
    """One portal: seeded sandbox, real clients, an audit log in a scratch directory."""

    def __init__(self, portal: Portal, root: Path) -> None:
        self.portal = portal
        self.sandbox = Sandbox(seed_of(portal)).start()
        self.config = _pointed_at(portal.config, self.sandbox)
        self.hubspot = HubSpotClient(self.config.hubspot)
        self.mailchimp = MailchimpClient(self.config.mailchimp)
        root.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog.open(str(Path(tempfile.mkdtemp(prefix="audit-", dir=root)) / "audit.sqlite"))

    def observe(self) -> Snapshot:
        return observe(self.config, self.hubspot, self.mailchimp, list(self.config.audiences))

    def apply(self, plan: Plan, snapshot: Snapshot) -> list[Outcome]:
        applier = Applier(self.config, self.hubspot, self.mailchimp, self.audit, run_id=f"agree-{self.portal.seed}",
                          operator="test", snapshot=snapshot)
        return applier.apply(plan)

    def close(self) -> None:
        for closing in (self.hubspot.close, self.mailchimp.close, self.audit.close, self.sandbox.stop):
            closing()


def _compare(run: Run, portal: Portal, expected: Snapshot, plan: Plan, observed: Snapshot) -> list[str]:
    """Applies `plan` for real and through `simulate`; every disagreement, as a line."""
    config = portal.config
    outcomes = run.apply(plan, observed)
    simulation = simulate_apply(expected, plan, portal.hidden)

    by_change = {id(o.change): o for o in outcomes}
    simulated = _outcomes_of_simulation(plan, simulation)
    disagreements = [f"{_describe(c)}: simulate {simulated[id(c)]}, apply "
                     + (f"{by_change[id(c)].outcome} ({by_change[id(c)].detail})" if id(c) in by_change else "none")
                     for c in plan.changes if not _agrees(simulated[id(c)], by_change.get(id(c)))]

    after = run.observe()
    simulated_end = simulation.snapshot
    everyone = _sandbox_contacts(run.sandbox, config)
    # The contacts observe read, plus those the apply created; the others were not in the plan's
    # view, and must be exactly as seeded.
    compared = {cid: c for cid, c in everyone.items()
                if cid in simulated_end.contacts or cid not in portal.snapshot.contacts}
    unseen = [cid for cid in everyone if cid not in compared]
    actual_end = dataclasses.replace(after, contacts=frozen_map(compared),
                                     lists=frozen_map(_sandbox_lists(run.sandbox, config)),
                                     consent=simulated_end.consent)
    end = differences(_created_by_email(view(simulated_end, config), portal.snapshot),
                      _created_by_email(view(actual_end, config), portal.snapshot))
    end += differences(view(portal.snapshot, config, unseen)["contacts"],
                       view(dataclasses.replace(after, contacts=frozen_map(everyone)), config, unseen)["contacts"],
                       "/unseen contacts")
    # observe's own reading of the end state agrees with the emulator's state, contact by contact.
    seen = differences(view(actual_end, config, after.contacts), view(after, config, after.contacts))
    seen = [line for line in seen if not line.startswith("/consent")]
    # What the next run remembers: simulate's model of the audit log against the audit log itself.
    remembered = differences(_memory_view(simulation.memory()), _memory_view(run.audit.memory()))
    return ([f"outcome: {line}" for line in disagreements] + [f"end state{line}" for line in end]
            + [f"re-observed{line}" for line in seen] + [f"memory{line}" for line in remembered])


def _memory_view(memory: Memory) -> dict[str, Any]:
    """Memory without times and wording: which refusals (by action), archives this product made,
    opt-outs, and handovers left unfinished."""
    return {"refusals": {f"{lid} {e}": r.action for (lid, e), r in sorted(memory.refusals.items())},
            "archived_by_us": {f"{lid} {e}": s for (lid, e), s in sorted(memory.archived_by_us.items())},
            "opted_out": sorted(memory.opted_out),
            "handovers_unfinished": sorted(f"{lid} {e}" for lid, e in memory.handovers_unfinished)}


def check_agreement(portal: Portal, root: Path, make_plan: Callable[[Portal, Snapshot], Plan] | None = None) -> None:
    """Seeds the portal, checks observe sees it, then applies the rules' plan (or `make_plan`'s)
    both ways and asserts simulate and the sandbox agree."""
    portal = realisable(portal)
    expected = observable(portal)
    config = portal.config
    run = Run(portal, root)
    try:
        observed = run.observe()
        mismatch = differences(view(expected, config), view(observed, config))
        assert not mismatch, f"{portal!r:.300}: observe does not see the seeded portal:\n" + "\n".join(mismatch[:20])
        plan = make_plan(portal, observed) if make_plan else build_plan(config, observed, portal.memory)
        problems = _compare(run, portal, expected, plan, observed)
        assert not problems, (f"{portal!r:.300}: simulate and the sandbox disagree ({len(problems)}):\n"
                              + "\n".join(problems[:40]))
    finally:
        run.close()


@pytest.mark.slow
@AGREEMENT
@given(portal=portals(max_contacts=100))
def test_simulate_agrees_with_the_sandbox_and_the_real_apply(portal: Portal, tmp_path: Path) -> None:
    check_agreement(portal, tmp_path)


@pytest.mark.slow
@AGREEMENT
@given(portal=portals(max_contacts=100))
def test_simulate_agrees_with_the_sandbox_on_writes_the_rules_avoid(portal: Portal, tmp_path: Path) -> None:
    # The rules never rely on a vendor to refuse, so their plans rarely reach simulate's refusal
    # model; these plans do (`probe_plan`), and simulate must still say what the vendor does.
    check_agreement(uncapped(portal), tmp_path, probe_plan)
