"""Apply notifications end to end: the real CLI posts to a webhook receiver on loopback (SPEC §8).

Exactly one message per apply for each channel whose `on` holds the apply's event, with the run
id and counts; a receiver answering 500, or none listening, never changes the exit code.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from reconciler.cli import main
from tests.webhook_receiver import Receiver
from reconciler.sandbox import Sandbox
from reconciler.sandbox.http import Request, Response
from reconciler.sandbox.seed import load_seed

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "reconciler.yaml"
DEMO_SEED = REPO / "config" / "sandbox" / "seed.yaml"
AUDIT = ".reconciler/audit.sqlite"
TEAMS_PATH = "/workflows/teams-7f3c1d9e-secret-path"
SLACK_PATH = "/services/T000/B000/slack-a81b-secret-path"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def webhook_env(receiver: Receiver) -> dict[str, str]:
    return {"TEAMS_WEBHOOK_URL": receiver.url(TEAMS_PATH), "SLACK_WEBHOOK_URL": receiver.url(SLACK_PATH)}


def cli(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, env=env, stdin_isatty=False)
    return code, out.getvalue(), err.getvalue()


def sandbox_apply(*extra: str, env: dict[str, str], config: Path = DEMO_CONFIG) -> tuple[int, str, str]:
    return cli("--sandbox", "--config", str(config), "--sandbox-seed", str(DEMO_SEED), "--apply", *extra, env=env)


def end_rows() -> list[tuple[str, int, dict[str, int]]]:
    """(run id, exit code, counts) of every finished run, read straight from the database."""
    with sqlite3.connect(AUDIT) as db:
        rows = db.execute("SELECT run_id, exit_code, counts FROM runs WHERE event = 'end' ORDER BY seq").fetchall()
    return [(run_id, code, json.loads(counts)) for run_id, code, counts in rows]


def outcome_counts(run_id: str) -> dict[str, int]:
    with sqlite3.connect(AUDIT) as db:
        rows = db.execute("SELECT outcome, COUNT(*) FROM changes WHERE run_id = ? AND phase = 'outcome' "
                          "GROUP BY outcome", (run_id,)).fetchall()
    return dict(rows)


def card_of(body: Any) -> dict[str, Any]:
    """The Adaptive Card inside a Teams Workflows message, checking the envelope on the way."""
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] and isinstance(card["body"], list)
    return card


def facts_of(card: dict[str, Any]) -> dict[str, str]:
    (factset,) = [item for item in card["body"] if item["type"] == "FactSet"]
    return {fact["title"]: fact["value"] for fact in factset["facts"]}


def card_text(card: dict[str, Any]) -> str:
    return "\n".join(item.get("text", "") for item in card["body"])


def config_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_applied_posts_one_teams_card_with_the_run_id_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = sandbox_apply("--yes", env=webhook_env(receiver))
    assert code == 0, err
    (run_id, exit_code, counts), = end_rows()
    assert exit_code == 0 and counts == outcome_counts(run_id) and counts["applied"] > 0
    (body,) = receiver.bodies(TEAMS_PATH)
    card = card_of(body)
    facts = facts_of(card)
    assert facts["Run"] == run_id and facts["Exit code"] == "0"
    assert {name: int(facts[name.capitalize()]) for name in counts} == counts
    assert "finished" in card_text(card)
    # The demo config's Slack channel is only `on: [failed, unsafe]`.
    assert receiver.bodies(SLACK_PATH) == []
    assert len(receiver.posts) == 1

    # A second apply changes nothing and still reports, once, with its own run id.
    code, _, err = sandbox_apply("--yes", env=webhook_env(receiver))
    assert code == 0, err
    second = facts_of(card_of(receiver.bodies(TEAMS_PATH)[1]))
    assert second["Run"] == end_rows()[1][0] != run_id
    assert len(receiver.posts) == 2


def test_unsafe_goes_to_both_channels_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_variant(tmp_path, "max_archives: {percent: 10, count: 100}", "max_archives: {count: 1}")
    code, _, err = sandbox_apply("--yes", env=webhook_env(receiver), config=config)
    assert code == 3, err
    (run_id, exit_code, _), = end_rows()
    assert exit_code == 3
    (teams,) = receiver.bodies(TEAMS_PATH)
    (slack,) = receiver.bodies(SLACK_PATH)
    card = card_of(teams)
    assert facts_of(card)["Run"] == run_id and "unsafe" in card_text(card)
    assert run_id in slack["text"] and "unsafe" in slack["text"] and "*Exit code:* 3" in slack["text"]
    assert slack["blocks"][0]["text"]["type"] == "mrkdwn"
    assert "max_archives" in card_text(card) and "max_archives" in slack["text"]  # what was exceeded


def test_stale_goes_to_teams_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = sandbox_apply("--checksum", "0" * 64, env=webhook_env(receiver))
    assert code == 4, err
    (teams,) = receiver.bodies(TEAMS_PATH)
    card = card_of(teams)
    assert facts_of(card)["Run"] == end_rows()[0][0] and "stale" in card_text(card)
    assert receiver.bodies(SLACK_PATH) == []


def test_a_held_lock_is_a_failed_apply_and_notifies_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    lock = Path(AUDIT + ".lock")
    lock.parent.mkdir(parents=True)
    # Held by a live process on this host (this one), so it is not reported as stale.
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "operator": "ops",
                                "since": "2025-01-01T00:00:00Z"}))
    code, _, err = sandbox_apply("--yes", env=webhook_env(receiver))
    assert code == 1 and "another apply is running" in err
    (teams,) = receiver.bodies(TEAMS_PATH)
    (slack,) = receiver.bodies(SLACK_PATH)
    card = card_of(teams)
    assert facts_of(card)["Run"] == "not started" and facts_of(card)["Exit code"] == "1"
    assert "another apply is running" in card_text(card) and "another apply is running" in slack["text"]
    assert not Path(AUDIT).exists()  # refused before the audit database was touched
    assert lock.exists()  # and the other apply's lock is left alone


def test_a_config_that_does_not_load_cannot_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    config = config_variant(tmp_path, "on_leave: archive", "on_leave: delete")
    code, _, err = sandbox_apply("--yes", env=webhook_env(receiver), config=config)
    assert code == 1 and "on_leave" in err
    assert receiver.posts == []  # the webhook URLs live in the config that could not be read


def test_a_receiver_answering_500_changes_nothing_but_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    receiver.status = 500
    env = webhook_env(receiver)
    code, out, err = sandbox_apply("--yes", env=env)
    assert code == 0
    assert "notify: teams webhook answered HTTP 500; the apply result is unchanged" in err
    assert len(receiver.bodies(TEAMS_PATH)) == 1  # tried once, not retried into a storm
    for secret in (TEAMS_PATH, env["TEAMS_WEBHOOK_URL"], str(receiver.server.server_address[1])):
        assert secret not in out + err
    assert end_rows()[0][1] == 0  # the audit records the apply's own exit code


def test_an_unreachable_receiver_changes_nothing_but_is_reported(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"TEAMS_WEBHOOK_URL": f"http://127.0.0.1:{port}{TEAMS_PATH}",
           "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{port}{SLACK_PATH}"}
    code, out, err = sandbox_apply("--checksum", "0" * 64, env=env)
    assert code == 4
    assert "notify: teams webhook not reached (URLError); the apply result is unchanged" in err
    assert "slack" not in err  # stale is not among Slack's events: nothing was attempted
    assert TEAMS_PATH not in out + err and str(port) not in out + err


def test_unset_webhook_variables_turn_notifications_off_under_sandbox(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = sandbox_apply("--checksum", "0" * 64, env={})
    assert code == 4
    assert "notify" not in err and receiver.posts == []


class FailingMemberWrites(Sandbox):
    """The sandbox, except that while `failing`, Mailchimp answers every POST under a list with a 400."""

    failing = True

    def _handle(self, vendor: Any, request: Request) -> Response:
        if self.failing and request.method == "POST" and request.path.startswith("/3.0/lists/"):
            return Response(400, {"type": "https://mailchimp.com/developer/marketing/docs/errors/",
                                  "title": "Invalid Resource", "status": 400,
                                  "detail": "The resource submitted could not be validated.", "instance": ""})
        return super()._handle(vendor, request)


def live_config(tmp_path: Path, sandbox: Sandbox) -> Path:
    """The demo config pointed at a started sandbox, as a user points it at the vendors."""
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    text = text.replace("base_url: https://api.hubapi.com", f"base_url: {sandbox.hubspot_base_url}")
    text = text.replace("base_url: null", f"base_url: {sandbox.mailchimp_base_url}")
    path = tmp_path / "live.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_failed_changes_exit_5_and_notify_both_channels_with_the_top_failures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    seed = load_seed(DEMO_SEED)
    with FailingMemberWrites(seed) as sandbox:
        env = {**webhook_env(receiver), "HUBSPOT_TOKEN": sandbox.hubspot_token,
               "MAILCHIMP_API_KEY": str(sandbox.mailchimp_api_key)}
        code, out, err = cli("--config", str(live_config(tmp_path, sandbox)), "--apply", "--yes", env=env)
    assert code == 5, err
    (run_id, exit_code, counts), = end_rows()
    assert exit_code == 5 and counts == outcome_counts(run_id) and counts["failed"] > 0
    (teams,) = receiver.bodies(TEAMS_PATH)
    (slack,) = receiver.bodies(SLACK_PATH)
    card = card_of(teams)
    facts = facts_of(card)
    assert facts["Run"] == run_id and facts["Exit code"] == "5" and int(facts["Failed"]) == counts["failed"]
    assert f"Top failures ({counts['failed']})" in card_text(card) and "Invalid Resource" in card_text(card)
    assert f"*Failed:* {counts['failed']}" in slack["text"] and run_id in slack["text"]
    assert "@example.com" not in json.dumps(teams).replace("***@example.com", "")  # failures name masked emails


def test_after_exit_5_the_same_reviewed_plan_is_applied_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            receiver: Receiver) -> None:
    """The README's recovery: re-run the apply of the reviewed plan; what succeeded is not stale."""
    monkeypatch.chdir(tmp_path)
    with FailingMemberWrites(load_seed(DEMO_SEED)) as sandbox:
        env = {**webhook_env(receiver), "HUBSPOT_TOKEN": sandbox.hubspot_token,
               "MAILCHIMP_API_KEY": str(sandbox.mailchimp_api_key)}
        config = str(live_config(tmp_path, sandbox))
        assert cli("--config", config, "--plan", "--format", "json", "--out", "plan.json", env=env)[0] == 0
        code, _, err = cli("--config", config, "--apply", "plan.json", env=env)
        assert code == 5, err
        sandbox.failing = False  # the cause is fixed
        code, out, err = cli("--config", config, "--apply", "plan.json", env=env)
        assert code == 0, err
        assert "converged: a new plan has no changes" in out
        code, _, err = cli("--config", config, "--plan", "--detailed-exitcode", env=env)
        assert code == 0, err
    (first, _, first_counts), (second, _, second_counts) = end_rows()
    # The second apply wrote only what the first did not achieve.
    assert 0 < sum(second_counts.values()) <= first_counts["failed"]
    assert [facts_of(card_of(body))["Exit code"] for body in receiver.bodies(TEAMS_PATH)] == ["5", "0"]
