"""From one snapshot to the plan (SPEC §4): `build_plan` runs the rules in their order of dependence.

Pure: Config + Snapshot + Memory in, Plan out; no I/O. The rules themselves live in rules_contacts
(R1–R4 resolution), rules_tag_rules (R3 tag_rules), rules_optouts (R11, R12), rules_members (R2
archive, R4–R10, R13, R16) and rules_lists (R14, clean-up); this module sequences them and counts
what was observed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from reconciler.errors import ReconcilerError
from reconciler.model import AudienceState, Memory, Snapshot
from reconciler.plan import Change, Plan, Report
from reconciler.rules_contacts import AudienceRules, Out, compile_audience, people_by_email
from reconciler.rules_lists import source_cleanup
from reconciler.rules_members import plan_audience
from reconciler.rules_optouts import handovers, mailchimp_opt_outs, opt_outs_of_this_plan, opt_outs_to_hubspot
from reconciler.settings import Config

__all__ = ["build_plan", "selected_audiences"]


def selected_audiences(config: Config, audiences: Iterable[str] | None) -> list[str]:
    """The audience names to plan, in config order (all when None)."""
    if audiences is None:
        return list(config.audiences)
    wanted = set(audiences)
    unknown = sorted(wanted - set(config.audiences))
    if unknown:
        raise ReconcilerError(f"unknown audience {', '.join(unknown)}: the config defines "
                              f"{', '.join(config.audiences) or 'none'}; check --audience")
    return [name for name in config.audiences if name in wanted]


def build_plan(config: Config, snapshot: Snapshot, memory: Memory = Memory(),
               audiences: Iterable[str] | None = None) -> Plan:
    """The plan for the selected audiences, by the precedence of SPEC §4 and the order of R18."""
    names = selected_audiences(config, audiences)
    rules = [_compile(config, name, snapshot) for name in names]
    critical = frozenset(config.exclusions.critical)
    people, r1_reports = people_by_email(snapshot)
    out = Out(reports=r1_reports)
    # HubSpot writes first: the member rules plan from HubSpot as it will be after them (R15).
    opt_outs_to_hubspot(out, config, rules, people)
    mailchimp_opt_outs(out, config, snapshot.audiences, people, memory.opted_out)
    handed = handovers(out, rules, people, critical, snapshot.lists, memory.handovers_unfinished)
    for audience in rules:
        plan_audience(out, config, audience, people, handed, critical, memory, snapshot.consent)
    opt_outs_of_this_plan(out, config, rules, people)
    source_cleanup(out, people, rules, critical, snapshot.lists)
    return Plan(
        changes=tuple(sorted(out.changes, key=Change.sort_key)),
        reports=tuple(sorted(out.reports, key=_report_order)),
        audiences=tuple(names),
        observed=observed_counts(snapshot, rules),
        safety_bases=safety_bases(snapshot, rules, out.changes),
        audience_lists={r.name: r.list_id for r in rules},
    )


def _compile(config: Config, name: str, snapshot: Snapshot) -> AudienceRules:
    audience = config.audiences[name]
    state = snapshot.audiences.get(audience.mailchimp_list_id) or AudienceState(list_id=audience.mailchimp_list_id)
    return compile_audience(config, audience, state)


def _report_order(report: Report) -> tuple[str, str, str, str]:
    return (report.target, report.email or "", report.kind, report.reason)


def observed_counts(snapshot: Snapshot, rules: list[AudienceRules]) -> dict[str, Any]:
    """Counts of what the plan was computed from (for the summary and the JSON plan)."""
    return {
        "contacts": len(snapshot.contacts),
        "lists": {
            list_id: {"name": hub_list.name, "processing_type": hub_list.processing_type, "size": hub_list.size}
            for list_id, hub_list in sorted(snapshot.lists.items())
        },
        "audiences": {
            r.name: {"list_id": r.list_id,
                     "members": dict(sorted(Counter(m.status for m in r.state.members.values()).items()))}
            for r in rules
        },
    }


def safety_bases(snapshot: Snapshot, rules: list[AudienceRules], changes: list[Change]) -> dict[str, Any]:
    """What R17's percentages are of: each audience's non-archived members, each list's size.

    A list whose size was not observed (0) is measured by the contacts the snapshot puts in it.
    """
    audiences = {r.name: sum(1 for m in r.state.members.values() if m.status != "archived") for r in rules}
    removed = {c.target for c in changes if c.action == "remove_from_list"}
    sizes = {list_id: snapshot.lists[list_id].size for list_id in removed if list_id in snapshot.lists}
    unmeasured = {list_id for list_id in removed if not sizes.get(list_id)}
    if unmeasured:
        counted: Counter[str] = Counter()
        for contact in snapshot.contacts.values():
            counted.update(contact.lists & unmeasured)
        sizes.update({list_id: counted[list_id] for list_id in unmeasured})
    return {
        "audiences": audiences,
        "lists": dict(sorted(sizes.items())),
        "members": sum(audiences.values()),
    }
