"""End-to-end: the demo (config/reconciler.yaml + config/sandbox/seed.yaml) through the real CLI and sandbox.

Issue 5's acceptance for the demo loop, the predecessor's production test, request counts and the
README's first command; vendor-side state is read back through the vendors' APIs afterwards.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e_helpers import (
    DEMO_CONFIG_FILE,
    DEMO_SEED,
    LIST_ID,
    MARKETING,
    REPO,
    assert_compliance,
    changes_of,
    demo,
    demo_config_doc,
    embedded_state,
    is_write,
    members_by_list,
    plan_json,
    reports_of,
    started,
    typed_config,
)

SEED = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))
CONTACTS = {c["id"]: c for c in SEED["hubspot"]["contacts"]}
LISTS = {x["id"]: x for x in SEED["hubspot"]["lists"]}
SEED_MEMBERS = {m["email"]: m for m in SEED["mailchimp"]["audiences"][0]["members"]}


def _email(cid: str) -> str:
    return CONTACTS[cid]["email"]


def test_demo_plan_apply_converges_and_second_apply_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = typed_config(DEMO_CONFIG_FILE)

    shown = demo("--plan", "--no-redact")
    assert shown.code == 0, shown.text
    for reason in ("R2 critical list 762", "R2 critical list 773", "R3 excluded by active_deals (list 717)",
                   "R4 ", "R5 new member", "R6 merge fields differ", "R8 archived member is eligible again",
                   "R9 no source list holds the contact", "R11 unsubscribed in Mailchimp",
                   "R12 handover Recruitment Finished to list 947", "R14 list 987 is DYNAMIC",
                   "R1 contact 1801 has no valid email", "R7 member is cleaned"):
        assert reason in shown.out, f"{reason!r} missing from the plan"
    assert "a***@" not in shown.out and _email("1001") in shown.out  # --no-redact shows emails
    masked = demo("--plan")
    assert _email("1001") not in masked.out and "r***@example.com" in masked.out  # not a terminal: masked

    assert demo("--plan", "--detailed-exitcode").code == 2
    with embedded_state(tmp_path) as view:
        before = members_by_list(view, config)

    applied = demo("--apply", "--yes")
    assert applied.code == 0, applied.text
    assert "converged" in applied.out
    assert "Applied:" in applied.out and "74 applied" in applied.out and "1 refused" in applied.out
    with embedded_state(tmp_path) as view:
        assert_compliance(view, config, before)
        after_first = view.end_state(config)

    again = demo("--apply", "--yes")
    assert again.code == 0, again.text
    assert "No changes" in again.out and "Applied:" not in again.out
    assert demo("--plan", "--detailed-exitcode").code == 0
    with embedded_state(tmp_path) as view:
        assert view.end_state(config) == after_first  # the second apply changed nothing vendor-side
        assert_compliance(view, config, before)


def test_production_case_of_list_719(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """719's 29 contacts: 1 critical archived, 12 hard-excluded not created, 16 created with tag and merge
    fields, 13 removed from 719; the 30 unsubscribed members' contacts unsubscribed with the legal basis."""
    monkeypatch.chdir(tmp_path)
    config = typed_config(DEMO_CONFIG_FILE)
    source = LISTS["719"]["members"]
    critical = [c for c in source if c in LISTS["762"]["members"]]
    excluded = [c for c in source if c in LISTS["717"]["members"]]
    created = [c for c in source if c not in critical and c not in excluded]
    unsubscribed = sorted(e for e, m in SEED_MEMBERS.items() if m["status"] == "unsubscribed" and e.startswith("unsub"))
    assert (len(source), len(critical), len(excluded), len(created), len(unsubscribed)) == (29, 1, 12, 16, 30)

    plan = plan_json(demo("--plan", "--format", "json", "--no-redact"))
    assert {c["email"] for c in changes_of(plan, "create_member")} >= {_email(c) for c in created}
    assert {c["email"] for c in changes_of(plan, "remove_from_list") if c["target"] == "719"} == \
        {_email(c) for c in critical + excluded}

    with embedded_state(tmp_path) as view:
        before = members_by_list(view, config)
        assert all(view.subscription(e)["status"] == "SUBSCRIBED" for e in unsubscribed)
    assert demo("--apply", "--yes").code == 0

    with embedded_state(tmp_path) as view:
        members = view.members()
        assert members[_email(critical[0])].status == "archived"
        for cid in excluded:
            assert _email(cid) not in members, f"hard-excluded {_email(cid)} was created"
        for cid in created:
            props = CONTACTS[cid]["properties"]
            got = members[_email(cid)]
            expected_tag = "General Multi" if int(props["branches"]) > 1 else "Recruitment"
            assert (got.status, got.tags) == ("subscribed", frozenset({expected_tag})), _email(cid)
            assert got.merge_fields == {"FNAME": props["firstname"], "LNAME": props["lastname"]}
        assert view.list_members("719") == set(created)
        assert view.list_members("762") == set(critical)  # a critical list is never cleaned
        assert view.list_members("717") == set(LISTS["717"]["members"])
        for email in unsubscribed:
            status = view.subscription(email, MARKETING)
            assert status is not None and status["status"] == "NOT_SUBSCRIBED", email
            assert status["legalBasis"] == "LEGITIMATE_INTEREST_OTHER"
            assert status["legalBasisExplanation"] == "Contact unsubscribed in Mailchimp"
            assert view.contact(email)["properties"][f"hs_email_optout_{MARKETING}"] == "true"
            assert members[email].status == "unsubscribed"  # R7: never resubscribed, not archived either
        assert_compliance(view, config, before)


def _demo_env_config(tmp_path: Path) -> dict:
    doc = demo_config_doc()
    doc["audit"] = {"path": str(tmp_path / ".reconciler" / "audit.sqlite")}
    return doc


def test_request_counts_of_a_no_change_plan_and_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with started(tmp_path, SEED, _demo_env_config(tmp_path)) as env:
        first = env.cli("--apply", "--yes")
        assert first.code == 0 and "converged" in first.out, first.text
        config = env.config
        # The bound, computed from the converged vendor state the plan will read.
        view = env.view
        sizes = {lid: len(view.list_members(lid)) for lid in
                 {*config.exclusions.critical, *(l for ls in config.exclusions.hard.values() for l in ls),
                  *(s.list for st in config.audiences["main"].streams for s in st.sources),
                  *(h.to_list for h in config.audiences["main"].handover),
                  *(r for h in config.audiences["main"].handover for r in h.remove_from)}}
        sources = {s.list for st in config.audiences["main"].streams for s in st.sources}
        source_ids = set().union(*(view.list_members(lid) for lid in sources))
        source_emails = {e for cid, c in CONTACTS.items() if cid in source_ids for e in [c["email"]]}
        members = view.members()
        live = [e for e, m in members.items() if m.status != "archived"]
        archived = [e for e, m in members.items() if m.status == "archived"]
        outside = {e for e in members if e not in source_emails}
        bound = (sum(max(1, math.ceil(n / 250)) for n in sizes.values()) + math.ceil(len(source_ids) / 100)
                 + math.ceil(len(outside) / 100) + math.ceil(len(live) / 1000) + math.ceil(len(archived) / 1000) + 10)
        # R8: one consent read per archived source member the audit log gives no evidence for
        # (1307, no.consent@: consent may be given any day, so it is read on every plan).
        bound += len([e for e in archived if e in source_emails])

        env.sandbox.reset_counters()
        plan = env.cli("--plan", "--detailed-exitcode")
        assert plan.code == 0, plan.text
        counts = env.sandbox.counters()
        assert not {k: n for k, n in counts.items() if is_write(k)}, counts
        assert sum(counts.values()) <= bound, (sum(counts.values()), bound, sorted(counts.items()))
        # Reads are batched: one batch/read per 100 contacts, not one GET per contact or member.
        assert counts.get("GET /crm/v3/objects/contacts/{contactId}", 0) == 0, counts
        assert counts.get("GET /3.0/lists/{list_id}/members/{subscriber_hash}", 0) == 0, counts

        env.sandbox.reset_counters()
        again = env.cli("--apply", "--yes")
        assert again.code == 0 and "No changes" in again.out, again.text
        assert env.writes() == {}, env.sandbox.counters()


def test_readme_first_command_needs_no_environment(tmp_path: Path) -> None:
    """`python -m reconciler --sandbox --plan` from a fresh copy of the project, with only PATH and HOME."""
    clone = tmp_path / "clone"
    for part in ("config", "reconciler", "schemas"):  # what a clone holds that the run reads
        shutil.copytree(REPO / part, clone / part, ignore=shutil.ignore_patterns("__pycache__", ".reconciler"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=120)

    plan = run("--sandbox", "--plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "R2 critical list 762" in plan.stdout and "Traceback" not in plan.stderr
    applied = run("--sandbox", "--apply", "--yes")
    assert applied.returncode == 0 and "converged" in applied.stdout, applied.stdout + applied.stderr
    again = run("--sandbox", "--plan", "--detailed-exitcode")
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr
    assert (clone / ".reconciler" / "audit.sqlite").exists()
