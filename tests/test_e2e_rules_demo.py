"""End-to-end: the rules of SPEC §4 that the demo shows, checked vendor-side after one apply of the demo.

One module-scoped sandbox applies the demo once (plan, apply, second plan); each test then reads
what its rule should have left in HubSpot and Mailchimp through their APIs, and what reached the
vendors in which order (the recording sandbox's log).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from e2e_helpers import (
    DEMO_SEED,
    MARKETING,
    Env,
    MemberView,
    Run,
    assert_compliance,
    changes_of,
    demo_config_doc,
    members_by_list,
    plan_json,
    reports_of,
    started,
    subscriber_hash,
)

SEED = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))
SEED_MEMBERS = {m["email"]: m for m in SEED["mailchimp"]["audiences"][0]["members"]}
LISTS = {x["id"]: x for x in SEED["hubspot"]["lists"]}


@dataclass
class Applied:
    env: Env
    plan: dict[str, Any]
    apply: Run
    replan: dict[str, Any]
    before: dict[str, MemberView]
    after: dict[str, MemberView]


@pytest.fixture(scope="module")
def demo_applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Applied]:
    root = tmp_path_factory.mktemp("demo")
    doc = demo_config_doc()
    doc["audit"] = {"path": str(root / ".reconciler" / "audit.sqlite")}
    with started(root, SEED, doc) as env:
        config = env.config
        plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        before = members_by_list(env.view, config)
        applied = env.cli("--apply", "--yes", "--no-redact")
        assert applied.code == 0 and "converged" in applied.out, applied.text
        assert_compliance(env.view, config, before)
        replan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        yield Applied(env, plan, applied, replan, before["abc123def4"], env.view.members())


def _reasons(doc: dict[str, Any], email: str) -> list[str]:
    return [f"{c['action']}: {c['reason']}" for c in changes_of(doc, email=email)]


def _index(log: list[tuple[str, str, Any, int, bool]], method: str, path_end: str, email: str) -> int:
    for i, (m, path, body, status, _) in enumerate(log):
        if m != method or not path.endswith(path_end) or status >= 300:
            continue
        if email in str(body) or path.endswith(subscriber_hash(email)):
            return i
    raise AssertionError(f"no {method} …{path_end} for {email} reached the vendor")


def test_r1_contact_without_valid_email_is_skipped_and_reported(demo_applied: Applied) -> None:
    assert any(r["reason"].startswith("R1 contact 1801 has no valid email") for r in demo_applied.plan["reports"])
    assert not [c for c in demo_applied.plan["changes"] if c.get("contact_id") == "1801"]
    assert "not-an-email" not in demo_applied.after
    assert "1801" in demo_applied.env.view.list_members("987")


def test_r2_critical_members_archived_and_cleaned_from_sources(demo_applied: Applied) -> None:
    view, after = demo_applied.env.view, demo_applied.after
    assert demo_applied.before["recruit01@example.com"].status == "subscribed"
    assert after["recruit01@example.com"].status == "archived"
    assert "1001" not in view.list_members("719") and "1001" in view.list_members("762")
    # on DYNAMIC critical list 773 with an unsubscribed member: R11 first, then the archive (R18)
    assert after["hold.unsub@example.com"].status == "archived"
    assert view.subscription("hold.unsub@example.com")["status"] == "NOT_SUBSCRIBED"
    assert view.list_members("773") == {"1102"}
    log = demo_applied.env.sandbox.log
    assert _index(log, "POST", "/communication-preferences/v3/unsubscribe", "hold.unsub@example.com") < \
        _index(log, "DELETE", "", "hold.unsub@example.com")


def test_r3_streams_exclusion_and_override(demo_applied: Applied) -> None:
    view, after = demo_applied.env.view, demo_applied.after
    for n in range(2, 14):
        email = f"recruit{n:02d}@example.com"
        assert email not in after
        assert any("R3 excluded by active_deals (list 717)" in r for r in _reasons(demo_applied.plan, email))
    assert not view.list_members("719") & set(LISTS["717"]["members"])
    assert view.list_members("717") == set(LISTS["717"]["members"])
    # 1401: on 717 and on the manual_override source 784: joins that stream, with its extra tag
    assert after["override@example.org"].status == "subscribed"
    assert after["override@example.org"].tags == {"General Single", "Manual Inclusion"}
    assert view.list_members("784") == {"1401"}


def test_r4_hubspot_opt_out_unsubscribes_without_archiving(demo_applied: Applied) -> None:
    assert demo_applied.before["hs.optout@example.com"].status == "subscribed"
    got = demo_applied.after["hs.optout@example.com"]
    assert got.status == "unsubscribed"
    assert got.tags == demo_applied.before["hs.optout@example.com"].tags
    status = demo_applied.env.view.subscription("hs.optout@example.com")
    assert status["status"] == "NOT_SUBSCRIBED"
    assert not changes_of(demo_applied.plan, "unsubscribe_contact", "hs.optout@example.com")  # already out


def test_r5_created_members_have_status_tags_and_merge_fields(demo_applied: Applied) -> None:
    for email, tags in (("single.new@example.com", {"General Single"}), ("dup@example.com", {"General Single"}),
                        ("recruit14@example.com", {"General Multi"}), ("recruit16@example.com", {"Recruitment"})):
        assert email not in demo_applied.before
        got = demo_applied.after[email]
        assert (got.status, got.tags) == ("subscribed", frozenset(tags)), email
    assert demo_applied.after["single.new@example.com"].merge_fields == {"FNAME": "Sia", "LNAME": "Single"}


def test_r6_first_tag_wins_keeps_the_journey_and_updates_merge_fields(demo_applied: Applied) -> None:
    got = demo_applied.after["switch.tag@example.com"]
    assert got.tags == {"General Multi"}  # not switched to General Single mid-journey
    assert got.merge_fields["FNAME"] == "Newname" and got.status == "subscribed"
    changes = changes_of(demo_applied.plan, email="switch.tag@example.com")
    assert [c["action"] for c in changes] == ["update_member"] and "status" not in changes[0]["after"]


def test_r7_cleaned_and_unsubscribed_members_are_never_written(demo_applied: Applied) -> None:
    for email in ("bounced@example.com", "unsub01@example.com"):
        assert demo_applied.after[email] == demo_applied.before[email]
        assert not [c for c in changes_of(demo_applied.plan, email=email) if c["system"] == "mailchimp"]
    assert any(r["reason"].startswith("R7") for r in reports_of(demo_applied.plan, "bounced@example.com"))


def test_r8_restore_and_compliance_refusal_remembered(demo_applied: Applied) -> None:
    got = demo_applied.after["back.again@example.com"]
    assert (got.status, got.tags) == ("subscribed", frozenset({"General Single"}))  # Recruitment removed
    refused = demo_applied.after["archived.unsub@example.com"]
    assert refused.status == "archived"
    assert "refused: restore_member main archived.unsub@example.com: Member In Compliance State" in demo_applied.apply.out
    remembered = reports_of(demo_applied.replan, "archived.unsub@example.com")
    assert remembered and remembered[0]["kind"] == "refused" and "refused on" in remembered[0]["reason"]
    assert not changes_of(demo_applied.replan, email="archived.unsub@example.com")
    # --retry-refused (an --apply flag) tries again; Mailchimp refuses again and nothing is restored
    retry = demo_applied.env.cli("--apply", "--yes", "--retry-refused", "--no-redact")
    assert retry.code == 0, retry.text
    assert "refused: restore_member main archived.unsub@example.com" in retry.out
    assert demo_applied.env.view.member("archived.unsub@example.com").status == "archived"


def test_r9_leavers_archived_exempt_and_r10_unmanaged_untouched(demo_applied: Applied) -> None:
    for email in ("leaver@example.net", "moved.on@example.com"):
        assert demo_applied.after[email].status == "archived", email
    for email in ("vip@example.com", "newsletter@example.com"):  # exempt tag; no managed tag (R10)
        assert demo_applied.after[email] == demo_applied.before[email], email
        assert not changes_of(demo_applied.plan, email=email)


def test_r11_opt_outs_reach_hubspot_with_the_legal_basis(demo_applied: Applied) -> None:
    unsubscribed = [e for e, m in SEED_MEMBERS.items() if m["status"] == "unsubscribed"]
    assert len(unsubscribed) == 31
    for email in unsubscribed:
        status = demo_applied.env.view.subscription(email, MARKETING)
        assert (status["status"], status["legalBasis"], status["legalBasisExplanation"]) == \
            ("NOT_SUBSCRIBED", "LEGITIMATE_INTEREST_OTHER", "Contact unsubscribed in Mailchimp"), email
    audit = demo_applied.env.cli("--audit", "--action", "unsubscribe_contact", "--format", "json", "--no-redact")
    rows = [r for r in audit.json() if r["phase"] == "outcome"]
    assert sorted(r["email"] for r in rows) == sorted(unsubscribed)
    assert {(r["outcome"], r["legal_basis"], r["explanation"]) for r in rows} == \
        {("applied", "LEGITIMATE_INTEREST_OTHER", "Contact unsubscribed in Mailchimp")}


def test_r12_handover_writes_hubspot_then_archives(demo_applied: Applied) -> None:
    view = demo_applied.env.view
    assert view.list_members("947") == {"1501"}
    assert view.contact("finished@example.com", ["import_list"])["properties"]["import_list"] == "Recruitment"
    got = demo_applied.after["finished@example.com"]
    assert got.status == "archived" and not got.tags & {"Recruitment", "Recruitment Finished"}
    log = demo_applied.env.sandbox.log
    assert _index(log, "PUT", "/memberships/add", "1501") < _index(log, "DELETE", "", "finished@example.com")
    # still in source 987, but 947 excludes it: never re-imported
    assert "1501" in view.list_members("987")
    assert not changes_of(demo_applied.replan, email="finished@example.com")


def test_r14_dynamic_lists_are_never_written(demo_applied: Applied) -> None:
    view = demo_applied.env.view
    assert view.list_members("987") == set(LISTS["987"]["members"])
    assert any(r["reason"].startswith("R14 list 987 is DYNAMIC") for r in demo_applied.plan["reports"])
    for method, path, _, _, _ in demo_applied.env.sandbox.log:
        assert not (method == "PUT" and ("/lists/987/" in path or "/lists/773/" in path)), path


def test_r15_one_snapshot_no_change_undoes_another(demo_applied: Applied) -> None:
    by_email: dict[str, list[str]] = {}
    for change in demo_applied.plan["changes"]:
        if change["system"] == "mailchimp":
            by_email.setdefault(change["email"], []).append(change["action"])
    for email, actions in by_email.items():
        assert not ({"archive_member"} & set(actions) and {"create_member", "restore_member", "update_member",
                                                            "add_tags"} & set(actions)), (email, actions)
        assert not ({"unsubscribe_member"} & set(actions) and {"create_member", "restore_member", "add_tags"}
                    & set(actions)), (email, actions)


def test_r18_second_plan_is_empty_and_order_of_steps(demo_applied: Applied) -> None:
    assert demo_applied.replan["changes"] == []
    log = [entry for entry in demo_applied.env.sandbox.log if entry[4]]
    first_unsubscribe = min(i for i, e in enumerate(log) if e[1].endswith("/unsubscribe"))
    first_mailchimp = min(i for i, e in enumerate(log) if e[1].startswith("/3.0/"))
    last_cleanup = max(i for i, e in enumerate(log) if e[1].endswith("/lists/719/memberships/remove"))
    assert first_unsubscribe < first_mailchimp  # R11 before anything in Mailchimp
    assert all(i < last_cleanup for i, e in enumerate(log) if e[1].startswith("/3.0/"))  # clean-up last
