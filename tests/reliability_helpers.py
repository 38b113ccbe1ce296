"""Helpers of the reliability tests (faults, crashes, bad input): runs repeated until convergence,
changes the vendor would double, the printed fault matrix, and the seed, config and observed end
state that the fault matrix and the crash sweep compare with `expected_state`.

Separate from e2e_helpers (whose sandbox, CLI runner, vendor views and `assert_compliance` these
reuse) so that the end-to-end scenarios stay free of the fault and crash machinery.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from e2e_helpers import (DEMO_SEED, HS_TOKEN, LIST_ID, LIVE, MARKETING, MC_KEY, OPTED_OUT, Env, MemberView,
                         RecordingSandbox, Run, VendorView, demo_config_doc)
from reconciler.sandbox import Sandbox
from reconciler.settings import Config

DEMO_SEED_DOC: dict[str, Any] = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))
UNSUBSCRIBE_V3 = "/communication-preferences/v3/unsubscribe"


def demo_doc(root: Path, **audience: Any) -> dict[str, Any]:
    """The demo config, its audit database under `root`, audience keys replaced by `audience`."""
    doc = copy.deepcopy(demo_config_doc())
    doc["audit"] = {"path": str(root / "audit.sqlite")}
    doc["audiences"]["main"].update(audience)
    return doc


def demo_seed() -> dict[str, Any]:
    return copy.deepcopy(DEMO_SEED_DOC)


def doubled_changes(sandbox: RecordingSandbox) -> list[str]:
    """Changes the vendor holds twice or would have acted on twice: a HubSpot unsubscribe recorded
    twice, a contact created twice, a tag created twice, a confirmation email sent twice."""
    problems: list[str] = []
    unsubscribes: Counter[tuple[str, str]] = Counter()
    for method, path, body, status, mutated in sandbox.mutations():
        if method == "POST" and path == UNSUBSCRIBE_V3 and isinstance(body, Mapping):
            unsubscribes[(str(body.get("emailAddress")).lower(), str(body.get("subscriptionId")))] += 1
    problems += [f"HubSpot unsubscribe of {k} recorded {n} times" for k, n in unsubscribes.items() if n > 1]
    emails = Counter(str(c.properties.get("email") or "").lower() for c in sandbox.hubspot.contacts.values())
    problems += [f"{n} HubSpot contacts with email {e}" for e, n in emails.items() if e and n > 1]
    for audience in sandbox.mailchimp.audiences.values():
        names = Counter(t.name.strip().casefold() for t in audience.tags.values())
        problems += [f"tag {name!r} created {n} times on {audience.id}" for name, n in names.items() if n > 1]
    problems += [f"{n} confirmation emails sent to {e}" for e, n in sandbox.mailchimp.confirmations.items() if n > 1]
    return problems


@dataclass
class Attempts:
    """The runs of one scenario: exit codes, seconds, what each printed."""

    runs: list[Run] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def codes(self) -> list[int]:
        return [r.code for r in self.runs]

    @property
    def converged(self) -> bool:
        return bool(self.runs) and self.runs[-1].code == 0


def apply_until_converged(env: Env, *, max_runs: int, between: Callable[[Run], None] = lambda run: None,
                          after_each: Callable[[Run], None] = lambda run: None) -> Attempts:
    """`--apply --yes` until it exits 0 (at most `max_runs` times); `between` runs before each retry."""
    attempts = Attempts()
    for index in range(max_runs):
        if index:
            between(attempts.runs[-1])
        started = time.monotonic()
        run = env.cli("--apply", "--yes", "--no-redact")
        attempts.seconds.append(time.monotonic() - started)
        attempts.runs.append(run)
        after_each(run)
        if run.code == 0:
            break
    return attempts


def no_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" not in text


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table (the printed fault matrix and crash sweep)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def assert_no_harm(view: VendorView, config: Config, before: Mapping[str, Mapping[str, MemberView]]) -> None:
    """What must hold after ANY run, even one that failed or was killed half-way (the full invariants
    of `assert_compliance` hold once an apply finishes): nobody the run found opted out (in Mailchimp
    or in HubSpot) or critical was made subscribed or pending, and no unsubscribed member was
    archived before its opt-out reached HubSpot. Only members whose status changed are looked up."""
    critical: set[str] = set()
    for lid in config.exclusions.critical:
        critical.update(view.list_members(lid))
    problems: list[str] = []
    for audience in config.audiences.values():
        lid = audience.mailchimp_list_id
        earlier = before.get(lid, {})
        r4 = audience.opt_outs.from_hubspot or tuple(config.subscriptions.values())
        to_hs = audience.opt_outs.to_hubspot
        for email, m in view.members(lid).items():
            was = earlier.get(email)
            if was is not None and was.status == m.status:
                continue
            if m.status in ("subscribed", "pending"):
                if was is not None and was.status in OPTED_OUT:
                    problems.append(f"{email} was {was.status} and is now {m.status}")
                if view.opted_out(email, r4):
                    problems.append(f"{email} is opted out in HubSpot and was made {m.status}")
            if m.status in LIVE and view.contact_id(email) in critical:
                problems.append(f"critical contact {email} was made {m.status}")
            if m.status == "archived" and was is not None and to_hs is not None and was.status in to_hs.statuses \
                    and view.contact(email) is not None:
                missing = [sid for sid in to_hs.subscriptions
                           if (view.subscription(email, sid) or {}).get("status") != "NOT_SUBSCRIBED"]
                if missing:
                    problems.append(f"{email} was archived before its opt-out reached HubSpot ({missing})")
    assert not problems, "compliance invariants broken by a run:\n" + "\n".join(problems)


def print_at_end(request: Any, title: str, text: str) -> None:
    """Print a summary past pytest's capture (fixture teardowns are captured like tests)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_sep("=", title)
            reporter.write_line(text)
    else:
        reporter.write_sep("=", title)
        reporter.write_line(text)


# -- the seed and config of the fault matrix and the crash sweep ------------------------------

LEGAL_BASIS = "LEGITIMATE_INTEREST_CLIENT"  # not the default: what HubSpot receives must be the configured one
EXPLANATION = "Opted out in Mailchimp (reliability seed)"
# One row per kind of person: (lists holding the contact, or None for no contact; its HubSpot status of
# the marketing subscription: sub, unsub, none or all (opted out of all email); the member's status, or
# None for no member; the member's tags; its merge fields: same as HubSpot, old FNAME, or a LNAME that
# HubSpot has empty). What each row must end as is stated by `expected_state`, not here.
CASES: dict[str, tuple[tuple[str, ...] | None, str | None, str | None, tuple[str, ...], str]] = {
    "create": (("719",), "sub", None, (), ""),
    "create.dynamic": (("987",), "none", None, (), ""),
    "override": (("719", "717", "784"), "sub", None, (), ""),
    "override.member": (("719", "717", "784"), "sub", "subscribed", ("Recruitment",), "same"),
    "excluded": (("719", "717"), "sub", None, (), ""),
    "excluded.member": (("719", "717"), "sub", "subscribed", ("Recruitment",), "same"),
    "handed.over": (("719", "947"), "sub", None, (), ""),
    "forgotten": (("719",), "sub", None, (), ""),
    "invalid": (("719",), "sub", None, (), ""),
    "steady": (("719",), "sub", "subscribed", ("Recruitment",), "same"),
    "update": (("719",), "sub", "subscribed", ("Recruitment",), "old"),
    "update.blank": (("719",), "sub", "subscribed", ("Recruitment",), "blank"),
    "update.pending": (("719",), "sub", "pending", ("Recruitment",), "old"),
    "tag": (("719",), "sub", "subscribed", ("Newsletter",), "same"),
    "keep.primary": (("987",), "none", "subscribed", ("Recruitment",), "same"),
    "critical": (("719", "762"), "sub", "subscribed", ("Recruitment",), "same"),
    "critical.exempt": (("719", "762"), "sub", "subscribed", ("Recruitment", "VIP"), "same"),
    "critical.unsub": (("719", "762"), "sub", "unsubscribed", ("Recruitment",), "same"),
    "critical.pending": (("719", "762"), "sub", "pending", ("Recruitment",), "same"),
    "critical.transactional": (("762",), "none", "transactional", ("Newsletter",), "same"),
    "critical.cleaned": (("762", "987"), "sub", "cleaned", ("General Single",), "same"),
    "leaver": (None, None, "subscribed", ("Recruitment",), "same"),
    "leaver.contact": ((), "sub", "subscribed", ("General Single",), "same"),
    "leaver.pending": (None, None, "pending", ("Recruitment",), "same"),
    "leaver.transactional": (None, None, "transactional", ("Recruitment",), "same"),
    "exempt": (None, None, "subscribed", ("Recruitment", "VIP"), "same"),
    "unmanaged": (None, None, "subscribed", ("Newsletter",), "same"),
    "optout": (("719",), "unsub", "subscribed", ("Recruitment",), "old"),
    "optout.pending": (("719",), "unsub", "pending", ("Recruitment",), "same"),
    "optout.all": (("719",), "all", "subscribed", ("Recruitment",), "same"),
    "optout.new": (("719",), "unsub", None, (), ""),
    "optout.archived": (("719",), "unsub", "archived", ("Recruitment",), "same"),
    "mc.unsub": ((), "sub", "unsubscribed", ("General Single",), "same"),
    "mc.unsub.source": (("719",), "sub", "unsubscribed", ("Recruitment",), "old"),
    "mc.cleaned": ((), "none", "cleaned", ("Recruitment",), "same"),
    "mc.unsub.nocontact": (None, None, "unsubscribed", ("Recruitment",), "same"),
    "mc.unsub.already": ((), "unsub", "unsubscribed", ("Recruitment",), "same"),
    "handover": (("719",), "sub", "subscribed", ("Recruitment", "Recruitment Finished", "Newsletter"), "same"),
    "handover.unsub": (("719",), "sub", "unsubscribed", ("Recruitment", "Recruitment Finished"), "same"),
    "handover.exempt": (("719",), "sub", "subscribed", ("Recruitment", "Recruitment Finished", "VIP"), "same"),
    "restore": (("719",), "sub", "archived", ("General Single", "Newsletter"), "old"),
    "restore.noconsent": (("719",), "none", "archived", ("Recruitment",), "same"),
}
LISTS = (("719", "Recruitment", "MANUAL"), ("987", "General Single (active filter)", "DYNAMIC"),
         ("784", "Manual Override", "MANUAL"), ("762", "Compliance Hold", "MANUAL"),
         ("717", "Active Deals", "MANUAL"), ("947", "Sales Handover", "MANUAL"))
# The fault matrix: every case, a few of the common ones; about the demo's number of writes.
MATRIX_COUNTS = {"create": 15, "steady": 40, "update": 6, "tag": 3, "mc.unsub": 12, "leaver": 3, "critical": 3,
                 "critical.pending": 2, "handover": 2, "excluded": 3, "optout": 2}
# The crash sweep: a large apply (creates batched, hundreds of single-member writes), every case too.
SWEEP_COUNTS = {"create": 1000, "update": 400, "mc.unsub": 200, "leaver": 200, "critical": 40, "critical.unsub": 20,
                "critical.pending": 6, "steady": 50}


def reliability_seed(counts: Mapping[str, int], default: int = 1) -> dict[str, Any]:
    """A deterministic seed with `counts[case]` people of each case of CASES (`default` for the others)."""
    contacts: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    lists: dict[str, list[str]] = {lid: [] for lid, _, _ in LISTS}
    forgotten: list[str] = []
    cid = 100000
    for case, (in_lists, status, member_status, tags, merge) in CASES.items():
        for i in range(counts.get(case, default)):
            email = f"{case}{i:04d}@example.com" if case != "invalid" else f"not-an-email-{i}"
            first, last = f"F{case.replace('.', '')}{i}", "" if merge == "blank" else "Case"
            if in_lists is not None:
                cid += 1
                contacts.append({"id": str(cid), "email": email, "properties": {"firstname": first, "lastname": last},
                                 "subscribed": [MARKETING] if status == "sub" else [],
                                 "unsubscribed": [MARKETING] if status == "unsub" else [],
                                 "opted_out_of_all": status == "all"})
                for lid in in_lists:
                    lists[lid].append(str(cid))
            if case == "forgotten":
                forgotten.append(email)
            if member_status is not None:
                fields = {"FNAME": "Old" if merge == "old" else first, "LNAME": "Kept" if merge == "blank" else last}
                members.append({"email": email, "status": member_status, "merge_fields": fields, "tags": list(tags),
                                **({"status_before_archive": "subscribed"} if member_status == "archived" else {})})
    return {"hubspot": {"token": HS_TOKEN, "subscriptions": [{"id": MARKETING, "name": "Marketing Information"}],
                        "properties": [], "contacts": contacts,
                        "lists": [{"id": lid, "name": name, "processing_type": kind, "members": lists[lid]}
                                  for lid, name, kind in LISTS]},
            "mailchimp": {"api_key": MC_KEY, "audiences": [
                {"id": LIST_ID, "name": "Main", "double_optin": False,
                 "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}],
                 "members": members, "permanently_deleted": forgotten}]}}


def reliability_config(root: Path, new_member_status: str = "subscribed") -> dict[str, Any]:
    """The config of the fault matrix and the crash sweep. Every key the rules depend on is explicit
    (R4 and R11 included: their defaults are not what is under test here)."""
    return {
        "version": 1,
        "hubspot": {"token": "${HUBSPOT_TOKEN}", "rate_limit": {"requests": 1000, "per_seconds": 10}},
        "mailchimp": {"api_key": "${MAILCHIMP_API_KEY}"},
        "subscriptions": {"marketing": MARKETING},
        "exclusions": {"critical": ["762"], "hard": {"active_deals": ["717"]}},
        "audiences": {"main": {
            "mailchimp_list_id": LIST_ID,
            "new_member_status": new_member_status,
            "merge_fields": {"FNAME": "firstname", "LNAME": "lastname"},
            "streams": [{"name": "general", "exclude": ["active_deals"],
                         "sources": [{"list": "719", "tag": "Recruitment"}, {"list": "987", "tag": "General Single"}]},
                        {"name": "manual_override", "exclude": [],
                         "sources": [{"list": "784", "tag": "General Single", "extra_tags": ["Manual Inclusion"]}]}],
            "tag_policy": "first_tag_wins",
            "on_leave": "archive",
            "exempt": {"tags": ["VIP"]},
            "source_cleanup": True,
            "restore_archived": True,
            "handover": [{"tag": "Recruitment Finished", "to_list": "947", "remove_from": ["719"]}],
            "opt_outs": {"to_hubspot": {"statuses": ["unsubscribed", "cleaned"], "subscriptions": ["marketing"],
                                        "legal_basis": LEGAL_BASIS, "explanation": EXPLANATION,
                                        "create_missing_contacts": False},
                         "from_hubspot": True}}},
        "audit": {"path": str(root / "audit.sqlite")},
    }


def observed_state(sandbox: Sandbox, list_ids: Sequence[str]) -> dict[str, Any]:
    """The vendor-side state in the shape `expected_state.expected_end_state` states it, read from the
    sandbox's stores under their locks (a snapshot, untouched by its fault injection)."""
    assert sandbox.mailchimp is not None
    with sandbox.mailchimp.lock:
        audiences = {}
        for lid in list_ids:
            audience = sandbox.mailchimp.audiences[lid]
            audiences[lid] = {m.email.lower(): {"status": m.status,
                                                "tags": sorted(audience.tags[t].name for t in m.tags),
                                                "merge_fields": {k: v for k, v in sorted(m.merge_fields.items())
                                                                 if v not in ("", None)}}
                              for m in sorted(audience.members.values(), key=lambda m: m.email.lower())}
        confirmations = dict(sorted(sandbox.mailchimp.confirmations.items()))
    hubspot = sandbox.hubspot
    with hubspot.lock:
        statuses = {c.id: {sid: [s.status, s.legal_basis or "", s.explanation or ""] for sid, s in sorted(c.statuses.items())}
                    for c in hubspot.contacts.values() if c.statuses}
        lists = {lid: sorted(h.members, key=int) for lid, h in sorted(hubspot.lists.items())}
        contacts = sorted(hubspot.contacts, key=int)
    return {"mailchimp": audiences,
            "hubspot": {"contacts": contacts, "statuses": dict(sorted(statuses.items(), key=lambda kv: int(kv[0]))),
                        "lists": lists},
            "confirmations": confirmations}
