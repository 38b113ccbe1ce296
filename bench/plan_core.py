"""Benchmark of the pure core: plan a portal of 1,000,000 contacts and 1,000,000 members with 1% drift.

Separate from bench/run.py (which goes through the CLI and the sandbox): this one measures only
`build_plan` on in-memory values, the part that must scale. Generation is not timed; peak memory
(ru_maxrss) covers the whole process, snapshot included. Bar: under 20 s and under 2 GB.

    python bench/plan_core.py [--contacts N] [--members N] [--drift 0.01] [--seed 7] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.model import AudienceState, Contact, HubList, Member, MergeField, Memory, Snapshot  # noqa: E402
from reconciler.rules import build_plan  # noqa: E402
from reconciler.settings import (  # noqa: E402
    Audience,
    Config,
    Exclusions,
    Exempt,
    Handover,
    HubSpotSettings,
    MailchimpSettings,
    OptOuts,
    Source,
    Stream,
    TagRule,
    ToHubSpot,
    frozen_map,
)

MARKETING = "289137112"
LIST_ID = "abc123def4"
FIRST = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lia")
LAST = ("Lee", "Ng", "Ortiz", "Park", "Quinn", "Rossi", "Sato", "Tan")
LIMIT_SECONDS = 20.0
LIMIT_BYTES = 2 * 1024**3


def bench_config() -> Config:
    """SPEC §3's example configuration."""
    audience = Audience(
        name="main",
        mailchimp_list_id=LIST_ID,
        member_cap=None,
        merge_fields=frozen_map({"FNAME": "firstname", "LNAME": "lastname"}),
        streams=(
            Stream("general", ("active_deals",), (
                Source("719", "Recruitment", (TagRule("branches", "gt", 1, "General Multi"),)),
                Source("987", "General Single"),
            )),
            Stream("manual_override", (), (Source("784", "General Single", (), ("Manual Inclusion",)),)),
        ),
        exempt=Exempt(("VIP", "DoNotArchive"), ("^Manual_", "^Custom_")),
        source_cleanup=True,
        restore_archived=True,
        handover=(Handover("Recruitment Finished", "947", ("719",), frozen_map({"import_list": "{source_list_name}"})),),
        opt_outs=OptOuts(ToHubSpot(("unsubscribed",), (MARKETING,)), (MARKETING,), True),
    )
    return Config(1, HubSpotSettings("t"), MailchimpSettings("k-us1"), frozen_map({"marketing": MARKETING}),
                  Exclusions(("762", "773"), frozen_map({"active_deals": ("717",)})), frozen_map({"main": audience}))


def generate(contacts: int, members: int, drift: float, seed: int) -> Snapshot:
    """A converged portal (every member as the rules want it), then `drift` of it changed.

    Contacts sit on 719 (70%), 987 (25%) or 784 (5%); members are the first `members` contacts
    (or more, orphans, when members > contacts). Drift, each about a fifth of `drift`: a renamed
    contact, a member missing its tag, a contact newly excluded or critical, a member opted out
    in Mailchimp, a new contact without a member.
    """
    rng = random.Random(seed)
    list_sets: dict[tuple[str, ...], frozenset[str]] = {}  # shared, as an adapter interning them would

    def lists_of(*ids: str) -> frozenset[str]:
        return list_sets.setdefault(ids, frozenset(ids))

    people: dict[str, Contact] = {}
    found: dict[str, Member] = {}
    tags = {"719": ("Recruitment",), "987": ("General Single",), "784": ("General Single", "Manual Inclusion")}
    for index in range(max(contacts, members)):
        email = f"c{index}@example.com"
        roll = rng.random()
        source = "719" if roll < 0.70 else "987" if roll < 0.95 else "784"
        first, last = rng.choice(FIRST), rng.choice(LAST)
        member_fields = {"FNAME": first, "LNAME": last}
        member_tags = tags[source]
        status = "subscribed"
        lists = (source,)
        kind = rng.random() if rng.random() < drift else None
        if kind is not None:
            if kind < 0.2:
                first = first + "a"  # renamed in HubSpot
            elif kind < 0.4:
                member_tags = ()  # tag lost in Mailchimp
            elif kind < 0.6:
                lists = (source, "717") if rng.random() < 0.8 else (source, "762")  # excluded or critical
            elif kind < 0.8:
                status = "unsubscribed"  # opted out in Mailchimp: R11 carries it over
        if index < contacts:
            people[str(index + 1)] = Contact(str(index + 1), email, {"firstname": first, "lastname": last},
                                             lists_of(*lists))
        if index < members and not (kind is not None and kind >= 0.8):
            found[email] = Member(email, status, member_fields, member_tags)
    sizes = Counter(list_id for contact in people.values() for list_id in contact.lists)
    hub_lists = {i: HubList(i, f"List {i}", "MANUAL", sizes[i])
                 for i in ("719", "987", "784", "717", "762", "773", "947")}
    fields = {tag: MergeField(tag, "text") for tag in ("FNAME", "LNAME")}
    audience = AudienceState(LIST_ID, "Main", False, fields, found)
    return Snapshot(people, hub_lists, {LIST_ID: audience}, "2024-06-01T00:00:00Z")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of build_plan")
    args = parser.parse_args(argv)
    config = bench_config()
    started = time.perf_counter()
    snapshot = generate(args.contacts, args.members, args.drift, args.seed)
    generated = time.perf_counter() - started
    profiler = cProfile.Profile() if args.profile else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    plan = build_plan(config, snapshot, Memory())
    if profiler:
        profiler.disable()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    actions = Counter(c.action for c in plan.changes)
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.platform()}, python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"portal: {len(snapshot.contacts):,} contacts, "
          f"{len(snapshot.audiences[LIST_ID].members):,} members, drift {args.drift:.1%}, seed {args.seed}")
    print(f"generation (not timed): {generated:.1f} s")
    load = os.getloadavg()[0]
    print(f"plan: {elapsed:.2f} s wall (limit {LIMIT_SECONDS:.0f} s), {cpu:.2f} s CPU, load average {load:.1f}; peak RSS {peak / 1024**2:,.0f} MiB "
          f"(limit {LIMIT_BYTES / 1024**2:,.0f} MiB)")
    print(f"changes: {len(plan.changes):,} {dict(sorted(actions.items()))}; reported items: {len(plan.reports):,}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    ok = elapsed < LIMIT_SECONDS and peak < LIMIT_BYTES
    print("result: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
