"""Drift detection (issue 12): `--plan --detailed-exitcode` posts the `drift` event, with counts by
rule, only to channels whose `on` holds `drift`, and only when the plan has changes.

Expected counts come from the demo seed's documented cases (config/sandbox/seed.yaml header):
30 Mailchimp-unsubscribed members 1901-1930 plus 1102's unsubscribed member reach HubSpot (R11),
12 contacts of hard-exclusion list 717 are removed from source list 719 (R3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.test_notify_webhooks import (DEMO_SEED, SLACK_PATH, TEAMS_PATH, card_of, card_text, cli, config_variant,
                                        facts_of, webhook_env)
from tests.webhook_receiver import Receiver

DRIFT_ON = ("teams: {webhook_url: \"${TEAMS_WEBHOOK_URL}\", on: [failed, unsafe, stale, applied]}\n"
            "  slack: {webhook_url: \"${SLACK_WEBHOOK_URL}\", on: [failed, unsafe]}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def _config(tmp_path: Path, teams: str, slack: str) -> Path:
    return config_variant(tmp_path, DRIFT_ON,
                          f"teams: {{webhook_url: \"${{TEAMS_WEBHOOK_URL}}\", on: [{teams}]}}\n"
                          f"  slack: {{webhook_url: \"${{SLACK_WEBHOOK_URL}}\", on: [{slack}]}}")


def _sandbox(config: Path, *argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    return cli("--sandbox", "--config", str(config), "--sandbox-seed", str(DEMO_SEED), *argv, env=env)


def test_drift_posts_the_counts_by_rule_once_per_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, "failed, drift", "drift")
    env = webhook_env(receiver)
    code, out, err = _sandbox(config, "--plan", env=env)
    assert code == 0, err
    assert receiver.posts == [], "a plan without --detailed-exitcode is not a drift check"

    code, out, err = _sandbox(config, "--plan", "--detailed-exitcode", env=env)
    assert code == 2, err
    (teams,) = receiver.bodies(TEAMS_PATH)
    (slack,) = receiver.bodies(SLACK_PATH)
    card = card_of(teams)
    facts = facts_of(card)
    assert "drift" in card_text(card).lower()
    assert facts["R11 unsubscribe_contact 289137112"] == "31"
    assert facts["R3 remove_from_list 719"] == "12"
    assert facts["Plan"].startswith("plan ")
    assert "*R11 unsubscribe_contact 289137112:* 31" in slack["text"]
    for raw in receiver.raw_bodies():
        assert b"@example" not in raw, "a channel is a shared room: no email in a drift message"

    # After an apply the live state matches the config: the drift check is quiet.
    code, _, err = _sandbox(config, "--apply", "--yes", env=env)
    assert code == 0, err
    posts = len(receiver.posts)
    code, _, err = _sandbox(config, "--plan", "--detailed-exitcode", env=env)
    assert code == 0, err
    assert len(receiver.posts) == posts


def test_channels_without_drift_in_on_hear_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   receiver: Receiver) -> None:
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, "failed, unsafe, stale, applied", "drift")
    code, _, err = _sandbox(config, "--plan", "--detailed-exitcode", env=webhook_env(receiver))
    assert code == 2, err
    assert receiver.bodies(TEAMS_PATH) == []
    (slack,) = receiver.bodies(SLACK_PATH)
    assert "drift" in slack["text"].lower()
