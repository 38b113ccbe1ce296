"""Rehearsal (issue 12): `--plan --snapshot-out FILE` writes the observed portal as a pseudonymised
sandbox seed, and `--sandbox --sandbox-seed FILE` plans and applies on that copy.

The live portal is the demo seed served by a started sandbox; the rehearsal plan must equal the
live plan change by change once emails go through the pseudonym mapping (derived here from the
HubSpot contact ids the snapshot keeps, and checked against a recomputed HMAC), with the live
audit log's memory carried over and never written by the rehearsal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest
import yaml

from e2e_helpers import (DEMO_SEED, LIST_ID, SANDBOX_ENV, Env, Run, demo, demo_config_doc, plan_json, run_cli,
                         started)
from reconciler.model import Memory, Refusal, is_valid_email
from reconciler.pseudonyms import Pseudonyms
from reconciler.rehearsal import memory_of
from reconciler.sandbox.seed import load_seed

SEED = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))
CONTACT_EMAILS = {c["id"]: c["email"] for c in SEED["hubspot"]["contacts"]}
MEMBER_EMAILS = [m["email"] for m in SEED["mailchimp"]["audiences"][0]["members"]]
REAL_EMAILS = set(CONTACT_EMAILS.values()) | set(MEMBER_EMAILS)
NAMES = ({v for c in SEED["hubspot"]["contacts"] for k, v in c["properties"].items() if k.endswith("name")}
         | {v for m in SEED["mailchimp"]["audiences"][0]["members"] for v in m["merge_fields"].values()})
NAME_KEYS = ("FNAME", "LNAME", "firstname", "lastname")
KEY = "a-test-key-of-the-rehearsal-0123456789"
ENV = {**SANDBOX_ENV, "RECONCILER_SNAPSHOT_KEY": KEY}
LIVE_AUDIT = Path(".reconciler/audit.sqlite")  # the demo config's audit.path, under the test's cwd


def _cli(env: Env, *argv: str, environ: Mapping[str, str] = ENV) -> Run:
    return run_cli(*argv, "--config", str(env.config_path), env=environ)


def _rehearse(env: Env, snapshot: str, *argv: str) -> Run:
    return _cli(env, "--sandbox", "--sandbox-seed", snapshot, *argv)


def _recomputed(email: str) -> str:
    """The pseudonym the issue specifies: HMAC-SHA256 of the normalised email under the key."""
    email = email.strip().lower()
    tag = hmac.new(KEY.encode(), f"email\0{email}".encode(), hashlib.sha256).hexdigest()[:16]
    if is_valid_email(email):
        return f"p{tag}@pseudonym.example.com"
    return f"invalid-{tag}@no-dot" if "@" in email else f"invalid-{tag}"


def _mapping(snapshot: Mapping[str, Any]) -> dict[str, str]:
    """Real email -> pseudonym, from the contact ids the snapshot keeps; the recomputed HMAC must
    agree for each, and gives the pseudonyms of members without a contact."""
    by_id = {c["id"]: c.get("email") for c in snapshot["hubspot"]["contacts"]}
    mapping = {CONTACT_EMAILS[cid]: by_id[cid] for cid in CONTACT_EMAILS if cid in by_id}
    assert mapping, "the snapshot holds none of the portal's contacts"
    assert all(fake == _recomputed(real) for real, fake in mapping.items())
    return {email: _recomputed(email) for email in REAL_EMAILS} | mapping


def _comparable(doc: Mapping[str, Any], to_fake: Callable[[str], str]) -> dict[str, Any]:
    """A plan document with emails through `to_fake` and non-empty names as `<name>`."""

    def value(item: Any, key: str = "") -> Any:
        if isinstance(item, Mapping):
            return {k: value(v, k) for k, v in item.items()}
        if isinstance(item, list):
            return [value(v) for v in item]
        if isinstance(item, str) and key in NAME_KEYS and item.strip():
            return "<name>"
        if isinstance(item, str):
            return re.sub(r"[^\s();,]+@[^\s();,]*[^\s();,.]", lambda m: to_fake(m.group(0)), item)
        return item

    def entry(item: Mapping[str, Any]) -> str:
        out = value(dict(item))
        out["email"] = to_fake(item["email"]) if item.get("email") else item.get("email")
        return json.dumps(out, sort_keys=True)

    return {"changes": sorted(entry(c) for c in doc["changes"]), "reports": sorted(entry(r) for r in doc["reports"]),
            "summary": doc["summary"], "observed": doc["observed"]}


def _assert_same_plan(live: Mapping[str, Any], rehearsal: Mapping[str, Any], mapping: Mapping[str, str]) -> None:
    assert rehearsal["summary"]["changes"] + rehearsal["summary"]["reports"] > 0
    want = _comparable(live, lambda email: mapping.get(email.strip().lower(), f"<unmapped {email}>"))
    got = _comparable(rehearsal, lambda email: email)
    assert got["summary"] == want["summary"] and got["observed"] == want["observed"]
    assert got["changes"] == want["changes"]
    assert got["reports"] == want["reports"]
    for change in rehearsal["changes"]:  # the rehearsal's names are the snapshot's fakes
        for part in (change["before"], change["after"], change["after"].get("merge_fields") or {}):
            for key in NAME_KEYS:
                if isinstance(part, Mapping) and part.get(key):
                    assert str(part[key]).startswith("Name-"), change


def _audit_rows(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(str(path))
    try:
        return (db.execute("SELECT COUNT(*) FROM changes").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    finally:
        db.close()


def _snapshot_and_rehearse(env: Env) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(live plan, rehearsal plan, snapshot): `--out` files hold the emails unmasked."""
    live = _cli(env, "--plan", "--format", "json", "--snapshot-out", "snapshot.yaml", "--out", "live.json")
    assert live.code == 0, live.text
    assert "snapshot: written to snapshot.yaml" in live.err and "emails pseudonymised, names replaced" in live.err
    rehearsal = _rehearse(env, "snapshot.yaml", "--plan", "--format", "json", "--out", "rehearsal.json")
    assert rehearsal.code == 0, rehearsal.text
    assert "rehearsal: audit log .reconciler/rehearsal-" in rehearsal.err and "is not used" in rehearsal.err
    snapshot = yaml.safe_load(Path("snapshot.yaml").read_text(encoding="utf-8"))
    return (json.loads(Path("live.json").read_text()), json.loads(Path("rehearsal.json").read_text()), snapshot)


def test_rehearsal_plan_equals_the_live_plan_and_its_apply_touches_nothing_live(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with started(tmp_path, SEED, demo_config_doc()) as env:
        live, rehearsal, snapshot = _snapshot_and_rehearse(env)
        mapping = _mapping(snapshot)
        _assert_same_plan(live, rehearsal, mapping)
        assert live["summary"]["changes"] == 75  # the demo's whole first plan, every rule of it

        # Privacy: no real email anywhere in the file, no name among its values; same person, same
        # fake in both vendors; an invalid email (R1) stays invalid.
        text = Path("snapshot.yaml").read_text(encoding="utf-8")
        assert text.startswith("# Rehearsal snapshot") and "personal data" in text.split("\nhubspot:")[0]
        assert not [email for email in REAL_EMAILS if email in text]
        values = [v for c in snapshot["hubspot"]["contacts"] for v in (c.get("properties") or {}).values()]
        values += [v for a in snapshot["mailchimp"]["audiences"] for m in a["members"] for v in m["merge_fields"].values()]
        assert values and not NAMES & set(values)
        members = {m["email"] for m in snapshot["mailchimp"]["audiences"][0]["members"]}
        assert {mapping[e] for e in MEMBER_EMAILS} == members
        assert mapping["not-an-email"] in {c.get("email") for c in snapshot["hubspot"]["contacts"]}
        assert not is_valid_email(mapping["not-an-email"])
        assert Path("snapshot.yaml").stat().st_mode & 0o077 == 0

        # The rehearsal's apply converges on the copy; the live portal and audit log see nothing of it.
        writes_before = env.writes()
        applied = _rehearse(env, "snapshot.yaml", "--apply", "--yes")
        assert applied.code == 0 and "converged" in applied.out, applied.text
        # 75, where the live apply has 74 and 1 refused: the member archived after it unsubscribed
        # itself is restored here, since Mailchimp does not say what an archived member was.
        assert "75 applied" in applied.out
        assert env.writes() == writes_before
        assert not LIVE_AUDIT.exists()
        again = _rehearse(env, "snapshot.yaml", "--plan", "--detailed-exitcode")
        assert again.code == 0, again.text
        (log,) = Path(".reconciler").glob("rehearsal-*.sqlite")
        assert _audit_rows(log)[0] > 75
        # `--audit` on the snapshot reads the rehearsal's log: pseudonyms only.
        rows = _rehearse(env, "snapshot.yaml", "--audit", "--format", "json", "--no-redact").json()
        applied_rows = [r for r in rows if r["phase"] == "outcome" and r["outcome"] == "applied"]
        assert len(applied_rows) == 75 and all(r["email"] in mapping.values() for r in applied_rows)


def test_rehearsal_sees_the_live_audit_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a live apply the audit log holds R8 evidence (our archives), a refusal and R11 opt-outs;
    1601 back in a source list is restored on that evidence alone, which only the memory gives."""
    monkeypatch.chdir(tmp_path)
    with started(tmp_path, SEED, demo_config_doc()) as env:
        first = _cli(env, "--apply", "--yes")
        assert first.code == 0 and "1 refused" in first.out, first.text
        env.view.add_to_list("719", ["1601"])
        live, rehearsal, snapshot = _snapshot_and_rehearse(env)
        mapping = _mapping(snapshot)
        (restore,) = [c for c in live["changes"] if c["action"] == "restore_member"]
        assert restore["email"] == CONTACT_EMAILS["1601"] and "archived by this product while subscribed" in restore["reason"]
        assert [r for r in live["reports"] if r["kind"] == "refused"]
        memory = snapshot["rehearsal"]["memory"]
        assert memory["archived_by_us"] and memory["refusals"] and memory["opted_out"]
        _assert_same_plan(live, rehearsal, mapping)

        live_rows = _audit_rows(LIVE_AUDIT)
        applied = _rehearse(env, "snapshot.yaml", "--apply", "--yes")
        assert applied.code == 0 and "converged" in applied.out and "1 applied" in applied.out, applied.text
        # The refused restore, tried again, is refused on the copy too: the snapshot says what that
        # archived member was (unsubscribed) from the refusal the audit log remembers.
        retried = _rehearse(env, "snapshot.yaml", "--apply", "--yes", "--retry-refused")
        assert retried.code == 0 and "Applied: 1 refused" in retried.out, retried.text
        assert _audit_rows(LIVE_AUDIT) == live_rows
        # The live portal still needs its restore: the rehearsal wrote nothing there.
        assert [c["action"] for c in plan_json(_cli(env, "--plan", "--format", "json"))["changes"]] == ["restore_member"]


def test_names_are_kept_only_with_no_redact_and_a_random_key_is_used_without_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with started(tmp_path, SEED, demo_config_doc()) as env:
        kept = _cli(env, "--plan", "--no-redact", "--snapshot-out", "named.yaml", environ=SANDBOX_ENV)
        assert kept.code == 0 and "names kept (--no-redact)" in kept.err, kept.text
        named = yaml.safe_load(Path("named.yaml").read_text(encoding="utf-8"))
        by_id = {c["id"]: c for c in named["hubspot"]["contacts"]}
        assert by_id["1001"]["properties"] == {"firstname": "Nia", "lastname": "Recruit", "branches": "1"}
        assert not [email for email in REAL_EMAILS if email in Path("named.yaml").read_text(encoding="utf-8")]
        # Without RECONCILER_SNAPSHOT_KEY the key is random: a second snapshot has other pseudonyms.
        again = _cli(env, "--plan", "--snapshot-out", "named.yaml", environ=SANDBOX_ENV)
        assert again.code == 0 and "snapshot: replaced named.yaml" in again.err, again.text
        other = {c["id"]: c for c in yaml.safe_load(Path("named.yaml").read_text(encoding="utf-8"))["hubspot"]["contacts"]}
        assert other["1001"]["email"] != by_id["1001"]["email"] and other["1001"]["email"].endswith(".example.com")
        assert other["1001"]["properties"]["firstname"].startswith("Name-")
        as_json = _cli(env, "--plan", "--snapshot-out", "named.json", environ=SANDBOX_ENV)
        assert as_json.code == 0, as_json.text
        loaded = load_seed("named.json")  # JSON, with the header's words inside
        assert "personal data" in loaded["rehearsal"]["note"] and len(loaded["hubspot"]["contacts"]) == len(other)


def test_a_state_built_from_another_seed_is_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "config"
    applied = demo("--apply", "--yes", config=config)
    assert applied.code == 0, applied.text
    demo_audit = _audit_rows(LIVE_AUDIT)
    assert demo("--plan", "--detailed-exitcode", config=config).code == 0  # same seed: the state is kept
    with started(tmp_path, SEED, demo_config_doc()) as env:
        assert _cli(env, "--plan", "--snapshot-out", "snapshot.yaml").code == 0
        rehearsal = _rehearse(env, "snapshot.yaml", "--plan", "--detailed-exitcode")
        assert rehearsal.code == 2 and "was built from another seed" in rehearsal.err, rehearsal.text
        # A state that does not say which seed it was built from (older versions) is no base for a rehearsal.
        assert _rehearse(env, "snapshot.yaml", "--apply", "--yes").code == 0
        Path(".reconciler/sandbox-state.json.seed-sha256").unlink()
        unmarked = _rehearse(env, "snapshot.yaml", "--plan", "--detailed-exitcode")
        assert unmarked.code == 2 and "does not say which seed" in unmarked.err, unmarked.text
    back = demo("--plan", "--detailed-exitcode", config=config)
    assert back.code == 2 and "was built from another seed" in back.err  # the demo starts over too
    assert _audit_rows(LIVE_AUDIT) == demo_audit
    assert "rehearsal:" not in back.err  # the demo's seed is no snapshot: it uses audit.path


def test_snapshot_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with started(tmp_path, SEED, demo_config_doc()) as env:
        inside = _cli(env, "--plan", "--snapshot-out", str(env.config_path.parent / "snapshot.yaml"))
        assert inside.code == 1 and "inside the config directory" in inside.err, inside.text
        short = _cli(env, "--plan", "--snapshot-out", "s.yaml", environ={**SANDBOX_ENV, "RECONCILER_SNAPSHOT_KEY": "x"})
        assert short.code == 1 and "RECONCILER_SNAPSHOT_KEY is too short" in short.err, short.text
        missing = _cli(env, "--plan", "--snapshot-out", "nowhere/s.yaml")
        assert missing.code == 1 and "the directory nowhere does not exist" in missing.err, missing.text
        for run in (inside, short, missing):
            assert "Traceback" not in run.err
        assert not list(tmp_path.glob("*.yaml")) and not list(env.config_path.parent.glob("snapshot*"))
        assert inside.out == short.out == missing.out == "" and env.sandbox.total_requests() == 0  # before any read
        # The product's own `.reconciler/` is made when missing (a first run has no audit log yet).
        assert not Path(".reconciler").exists()
        made = _cli(env, "--plan", "--snapshot-out", ".reconciler/first.yaml")
        assert made.code == 0 and Path(".reconciler/first.yaml").exists(), made.text


def test_pseudonyms_keep_validity_and_link_one_person_across_vendors() -> None:
    fake = Pseudonyms(b"k" * 32, random=False)
    assert fake.email(" Ann@Example.COM ") == fake.email("ann@example.com")
    assert is_valid_email(fake.email("ann@example.com") or "")
    for invalid in ("not-an-email", "a@localhost", "two@@example.com"):
        assert not is_valid_email(fake.email(invalid) or "") and ("@" in (fake.email(invalid) or "")) == ("@" in invalid)
    assert fake.email(None) is None and fake.email("") == ""
    # One person's name is the same fake in both vendors when R13 compares it equal; another
    # person with that name gets another fake; empty stays empty.
    assert fake.name("Ann ", "a@example.com") == fake.name("Ann", "A@example.com") != fake.name("Ann", "b@example.com")
    assert fake.name("", "a@example.com") == "" and fake.name(None, "a@example.com") is None
    assert fake.text("refused: ann@example.com (twice)") == f"refused: {fake.email('ann@example.com')} (twice)"
    assert Pseudonyms.from_env({}).random and not Pseudonyms.from_env({"RECONCILER_SNAPSHOT_KEY": KEY}).random


def test_memory_facts_round_trip_through_a_rehearsal_audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind of fact, including a person both archived by us in one audience and opted out
    by an archive in another, is read back by audit_memory exactly."""
    from reconciler.rehearsal import SandboxState, rehearsal_audit

    facts = {
        "archived_by_us": [{"list_id": LIST_ID, "email": "p1@pseudonym.example.com", "status": "subscribed"},
                           {"list_id": "other", "email": "p2@pseudonym.example.com", "status": "pending"}],
        "refusals": [{"list_id": LIST_ID, "email": "p3@pseudonym.example.com", "action": "create_member",
                      "reason": "Forgotten Email Not Subscribed", "at": "2026-01-02T03:04:05.000Z"}],
        "opted_out": [{"email": "p2@pseudonym.example.com", "reason": "archived while cleaned on 2026-01-03"},
                      {"email": "p4@pseudonym.example.com", "reason": "R11 unsubscribed in Mailchimp audience main on 2026-01-04"}],
        "handovers_unfinished": [{"list_id": LIST_ID, "email": "p5@pseudonym.example.com",
                                  "reason": "R12 handover Recruitment Finished to list 947"}],
    }
    state = SandboxState(tmp_path / "state.json", "0" * 64)
    lines: list[str] = []
    path = rehearsal_audit({"rehearsal": {"memory": facts}}, state, True, "live.sqlite", lines.append)
    assert path is not None and "rebuilt from the snapshot's memory (6 facts)" in lines[0]
    from reconciler.audit import AuditLog

    log = AuditLog.open(path)
    try:
        assert log.memory() == memory_of(facts)
        assert log.unfinished_attempts() == []
    finally:
        log.close()
    assert memory_of(facts) == Memory(
        refusals={(LIST_ID, "p3@pseudonym.example.com"): Refusal("create_member", "Forgotten Email Not Subscribed",
                                                                 "2026-01-02T03:04:05.000Z")},
        archived_by_us={(LIST_ID, "p1@pseudonym.example.com"): "subscribed", ("other", "p2@pseudonym.example.com"): "pending"},
        opted_out={"p2@pseudonym.example.com": "archived while cleaned on 2026-01-03",
                   "p4@pseudonym.example.com": "R11 unsubscribed in Mailchimp audience main on 2026-01-04"},
        handovers_unfinished={(LIST_ID, "p5@pseudonym.example.com"): "R12 handover Recruitment Finished to list 947"})


def test_a_rehearsal_posts_no_notification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The team's channels hear of live applies and live drift only, never of a rehearsal on a copy."""
    from tests.webhook_receiver import Receiver

    monkeypatch.chdir(tmp_path)
    receiver = Receiver()
    try:
        hooks = {"TEAMS_WEBHOOK_URL": receiver.url("/teams"), "SLACK_WEBHOOK_URL": receiver.url("/slack")}
        doc = demo_config_doc()
        doc["notifications"] = {"teams": {"webhook_url": "${TEAMS_WEBHOOK_URL}",
                                          "on": ["failed", "unsafe", "stale", "applied", "drift"]}}
        with started(tmp_path, SEED, doc) as env:
            environ = {**ENV, **hooks}
            assert _cli(env, "--plan", "--snapshot-out", "snapshot.yaml", environ=environ).code == 0
            drift = _cli(env, "--sandbox", "--sandbox-seed", "snapshot.yaml", "--plan", "--detailed-exitcode",
                         environ=environ)
            assert drift.code == 2 and "a rehearsal posts no drift notification" in drift.err, drift.text
            applied = _cli(env, "--sandbox", "--sandbox-seed", "snapshot.yaml", "--apply", "--yes", environ=environ)
            assert applied.code == 0 and "a rehearsal posts no notifications" in applied.err, applied.text
            assert receiver.posts == []
            live = _cli(env, "--plan", "--detailed-exitcode", environ=environ)  # the live portal still drifts
            assert live.code == 2 and len(receiver.bodies("/teams")) == 1
    finally:
        receiver.close()
