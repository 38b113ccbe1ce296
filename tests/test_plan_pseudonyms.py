"""Plan files without emails (`RECONCILER_PLAN_KEY`, issue 12): the PR workflow's artifact holds
keyed pseudonyms, and `--apply FILE` still compares it with the live state, change by change.

Through the real CLI and the sandbox. Emails expected in the plan come from the demo seed
(config/sandbox/seed.yaml), not from a run of the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import yaml

from e2e_helpers import DEMO_CONFIG_DIR, DEMO_SEED, embedded_state, run_cli
from tests.test_notify_webhooks import FailingMemberWrites, cli, live_config
from reconciler.sandbox.seed import load_seed

KEY = "k" * 8 + "0123456789abcdef"
ENV = {"RECONCILER_PLAN_KEY": KEY}
SEED = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))
SEED_EMAILS = {c["email"].lower() for c in SEED["hubspot"]["contacts"] if "@" in str(c.get("email"))}


def demo(*argv: str, env: dict[str, str] = ENV):  # type: ignore[no-untyped-def]
    return run_cli("--sandbox", "--config", str(DEMO_CONFIG_DIR), "--sandbox-seed", str(DEMO_SEED), *argv, env=env)


def pseudonym(email: str) -> str:
    """Computed here from the documented scheme (HMAC-SHA256 of "email", a NUL and the lower-cased email)."""
    tag = hmac.new(KEY.encode(), b"email\0" + email.lower().encode(), hashlib.sha256).hexdigest()[:16]
    return f"p{tag}@pseudonym.example.com"


def test_the_plan_file_holds_no_email_and_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    written = demo("--plan", "--out", "plan.json")
    assert written.code == 0, written.text
    text = (tmp_path / "plan.json").read_text(encoding="utf-8")
    assert not [e for e in SEED_EMAILS if e in text.lower()], "a seed email reached the plan file"
    assert "@example." not in text
    document = json.loads(text)
    emails = {c["email"] for c in document["changes"]}
    # 1001 is on critical list 762 with a subscribed member: R2 archives it (seed header).
    assert pseudonym("recruit01@example.com") in emails
    assert all(e.endswith("@pseudonym.example.com") for e in emails)
    # The real checksum is kept: --apply --checksum works from the artifact alone.
    live = demo("--plan", "--format", "json", env={})
    assert json.loads(live.out)["checksum"] == document["checksum"]

    applied = demo("--apply", "plan.json")
    assert applied.code == 0 and "converged" in applied.out, applied.text


def test_without_the_key_or_with_another_the_file_is_refused_and_nothing_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo("--plan", "--out", "plan.json").code == 0
    missing = demo("--apply", "plan.json", env={})
    assert missing.code == 1 and "set RECONCILER_PLAN_KEY" in missing.err, missing.text
    other = demo("--apply", "plan.json", env={"RECONCILER_PLAN_KEY": "another-key-of-24-chars!"})
    assert other.code == 1 and "another RECONCILER_PLAN_KEY" in other.err, other.text
    short = demo("--plan", "--out", "p2.json", env={"RECONCILER_PLAN_KEY": "short"})
    assert short.code == 1 and "at least 16" in short.err and "Traceback" not in short.text
    with embedded_state(tmp_path) as view:
        assert view.member("recruit16@example.com") is None  # R5 create not done: nothing written


def test_an_edited_pseudonymised_file_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo("--plan", "--out", "plan.json").code == 0
    document = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))
    document["changes"] = document["changes"][1:]  # someone drops a change after the review
    (tmp_path / "plan.json").write_text(json.dumps(document), encoding="utf-8")
    edited = demo("--apply", "plan.json")
    assert edited.code == 4 and "edited or damaged" in edited.err, edited.text


def test_a_live_change_since_the_review_is_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo("--plan", "--out", "plan.json").code == 0
    with embedded_state(tmp_path) as view:  # deal.only (on hard list 717) joins source list 719
        view.add_to_list("719", [view.contact("deal.only@example.com")["id"]])
    stale = demo("--apply", "plan.json", "--no-redact")
    assert stale.code == 4, stale.text
    assert "remove_from_list" in stale.out and "deal.only@example.com" in stale.out  # shown with its real email


def test_after_exit_5_the_same_pseudonymised_plan_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FailingMemberWrites(load_seed(DEMO_SEED)) as sandbox:
        env = {**ENV, "HUBSPOT_TOKEN": sandbox.hubspot_token, "MAILCHIMP_API_KEY": str(sandbox.mailchimp_api_key),
               "TEAMS_WEBHOOK_URL": "http://127.0.0.1:9/off", "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/off"}
        monkeypatch.chdir(tmp_path)
        config = str(live_config(tmp_path, sandbox))
        assert cli("--config", config, "--plan", "--out", "plan.json", env=env)[0] == 0
        code, _, err = cli("--config", config, "--apply", "plan.json", env=env)
        assert code == 5, err
        sandbox.failing = False
        code, out, err = cli("--config", config, "--apply", "plan.json", env=env)
        assert code == 0 and "converged" in out, err
