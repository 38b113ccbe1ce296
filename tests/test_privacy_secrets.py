"""Secrets never leave: every command and format, run with known secret values, leaks none of them.

Searched: stdout, stderr, log records, plan files, the audit database's bytes (with its WAL),
the sandbox state file and every notification body received. Also: plan files are owner-only.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from reconciler.cli import main
from tests.webhook_receiver import Receiver
from reconciler.sandbox import Sandbox
from reconciler.sandbox.seed import load_seed

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "reconciler.yaml"
DEMO_SEED = REPO / "config" / "sandbox" / "seed.yaml"

HUBSPOT_TOKEN = "pat-na1-7c4e1f0a-LEAKCANARY-HUBSPOT-9d2b"
MAILCHIMP_SECRET = "0f9e8d7c6b5a4LEAKCANARYMAILCHIMP3210"
MAILCHIMP_KEY = MAILCHIMP_SECRET + "-us1"  # the sandbox's data centre: a key for another one is refused
TEAMS_SECRET = "LEAKCANARY-teams-sig-4b0c"
SLACK_SECRET = "LEAKCANARY-slack-hook-77aa"


def secret_forms(*extra: str) -> list[bytes]:
    """Each secret as itself and as it would travel in an Authorization header."""
    forms = [HUBSPOT_TOKEN, MAILCHIMP_KEY, MAILCHIMP_SECRET, TEAMS_SECRET, SLACK_SECRET, "LEAKCANARY", *extra]
    for user in ("anystring", "apikey", "reconciler", ""):
        forms.append(base64.b64encode(f"{user}:{MAILCHIMP_KEY}".encode()).decode())
    return [form.encode() for form in forms]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


class Produced:
    """Everything the commands produced, to be searched at the end."""

    def __init__(self) -> None:
        self.streams: list[tuple[str, bytes]] = []

    def run(self, *argv: str, env: dict[str, str], expect: int | tuple[int, ...]) -> tuple[str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), stdout=out, stderr=err, env=env, stdin_isatty=False)
        self.streams.append((f"{argv} stdout", out.getvalue().encode()))
        self.streams.append((f"{argv} stderr", err.getvalue().encode()))
        assert code in (expect if isinstance(expect, tuple) else (expect,)), (argv, err.getvalue())
        return out.getvalue(), err.getvalue()

    def assert_clean(self, root: Path, receiver: Receiver, logs: str, secrets: list[bytes]) -> int:
        places = list(self.streams) + [("log records", logs.encode())]
        places += [(f"file {path}", path.read_bytes()) for path in sorted(root.rglob("*"))
                   if path.is_file() and "inputs" not in path.parts]
        places += [(f"notification {i}", body) for i, body in enumerate(receiver.raw_bodies())]
        for where, data in places:
            for secret in secrets:
                assert secret not in data, f"{secret!r} found in {where}"
        return len(places)


def live_config(root: Path, sandbox: Sandbox) -> Path:
    """The demo config pointed at a started sandbox, the way a user points it at the vendors."""
    text = DEMO_CONFIG.read_text(encoding="utf-8")
    text = text.replace("base_url: https://api.hubapi.com", f"base_url: {sandbox.hubspot_base_url}")
    text = text.replace("base_url: null", f"base_url: {sandbox.mailchimp_base_url}")
    path = root / "config" / "reconciler.yaml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    return path.parent


def test_no_command_or_format_leaks_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # whatever the clients log at any level is searched too
    monkeypatch.chdir(tmp_path)
    seed = load_seed(DEMO_SEED)
    seed["hubspot"]["token"] = HUBSPOT_TOKEN
    seed["mailchimp"]["api_key"] = MAILCHIMP_KEY
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    hooks = {"TEAMS_WEBHOOK_URL": receiver.url(f"/workflows/{TEAMS_SECRET}"),
             "SLACK_WEBHOOK_URL": receiver.url(f"/services/T0/B0/{SLACK_SECRET}")}
    env = {"HUBSPOT_TOKEN": HUBSPOT_TOKEN, "MAILCHIMP_API_KEY": MAILCHIMP_KEY, "CI": "true", **hooks}
    produced = Produced()

    with Sandbox(seed) as sandbox:
        config = str(live_config(tmp_path, sandbox))
        produced.run("--validate", "--config", config, env=env, expect=0)
        produced.run("--plan", "--config", config, env=env, expect=0)
        produced.run("--plan", "--config", config, "--verbose", "--no-redact", env=env, expect=0)
        produced.run("--plan", "--config", config, "--format", "json", "--out", "plan.json", env=env, expect=0)
        produced.run("--plan", "--config", config, "--format", "markdown", "--out", "plan-md.json",
                     "--detailed-exitcode", env=env, expect=2)
        for plan_file in ("plan.json", "plan-md.json"):
            assert (tmp_path / plan_file).stat().st_mode & 0o777 == 0o600, plan_file  # owner-only
        produced.run("--apply", "plan.json", "--config", config, "--checksum", "0" * 64, env=env, expect=4)

        receiver.status = 500  # a failing receiver: reported, without its URL
        produced.run("--apply", "--config", config, "--checksum", "0" * 64, env=env, expect=4)
        receiver.status = 200
        produced.run("--apply", "plan.json", "--config", config, "--verbose", env=env, expect=0)
        produced.run("--apply", "--config", config, "--yes", "--debug", env=env, expect=0)
        for fmt in ("table", "csv", "json"):
            produced.run("--audit", "--config", config, "--format", fmt, env=env, expect=0)
            produced.run("--audit", "--config", config, "--format", fmt, "--no-redact", env=env, expect=0)

        # Wrong credentials: the vendors answer 401; the error names the vendor, not the secret.
        wrong_token = {**env, "HUBSPOT_TOKEN": HUBSPOT_TOKEN + "-wrong"}
        _, err = produced.run("--plan", "--config", config, env=wrong_token, expect=1)
        assert "401" in err or "unauthor" in err.lower(), err
        produced.run("--apply", "--config", config, "--yes", "--debug", env=wrong_token, expect=1)
        wrong_key = {**env, "MAILCHIMP_API_KEY": MAILCHIMP_SECRET + "ffff-us1"}
        produced.run("--plan", "--config", config, "--debug", env=wrong_key, expect=1)
        produced.run("--apply", "--config", config, "--yes", env=wrong_key, expect=1)

        # Unreachable webhooks whose URLs hold the secrets.
        unreachable = {**env, "TEAMS_WEBHOOK_URL": f"http://127.0.0.1:{closed_port}/workflows/{TEAMS_SECRET}",
                       "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{closed_port}/services/{SLACK_SECRET}"}
        _, err = produced.run("--apply", "--config", config, "--yes", env=unreachable, expect=0)
        assert "teams webhook not reached" in err

    # A secret written inline in a config file is refused without being repeated.
    inline = tmp_path / "inputs" / "inline.yaml"  # the test's own input, not searched
    inline.parent.mkdir()
    inline.write_text(DEMO_CONFIG.read_text().replace("${HUBSPOT_TOKEN}", HUBSPOT_TOKEN))
    _, err = produced.run("--validate", "--config", str(inline), env=env, expect=1)
    assert "hubspot.token" in err

    # The embedded sandbox with the same environment: its state file and audit database too.
    sandbox_args = ("--sandbox", "--config", str(DEMO_CONFIG), "--sandbox-seed", str(DEMO_SEED))
    produced.run(*sandbox_args, "--plan", "--format", "json", "--out", "sandbox-plan.json", env=env, expect=0)
    produced.run(*sandbox_args, "--apply", "sandbox-plan.json", env=env, expect=0)
    produced.run(*sandbox_args, "--audit", "--format", "json", env=env, expect=0)
    assert (tmp_path / ".reconciler" / "sandbox-state.json").exists()

    assert len(receiver.posts) >= 6  # stale, 500, applied twice, failed twice (401s), sandbox applied
    assert any(b"failed" in body for body in receiver.raw_bodies())
    searched = produced.assert_clean(tmp_path, receiver, caplog.text, secret_forms())
    assert searched > 40
    # The webhook ports are not secret, but the URLs are: no stream holds one.
    for where, data in produced.streams:
        for url in (*hooks.values(), unreachable["TEAMS_WEBHOOK_URL"], unreachable["SLACK_WEBHOOK_URL"]):
            assert url.encode() not in data, where
