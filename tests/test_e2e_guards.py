"""End-to-end: what stops an apply (stale plan, wrong checksum, safety limits, no approval), over real HTTP.

Each refusal is checked where it matters: the exit code, the message naming what changed or which
limit, and the sandbox's counters or state showing that nothing was written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from e2e_helpers import (
    DEMO_CONFIG_FILE,
    DEMO_SEED,
    assert_compliance,
    changes_of,
    demo,
    demo_config_doc,
    embedded_state,
    members_by_list,
    plan_json,
    started,
    typed_config,
)

SEED = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))


def test_apply_of_a_plan_file_refuses_when_a_list_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    written = demo("--plan", "--out", "plan.json")
    assert written.code == 0 and (tmp_path / "plan.json").exists(), written.text
    assert oct((tmp_path / "plan.json").stat().st_mode & 0o777) == oct(0o600)
    with embedded_state(tmp_path) as view:  # someone adds a contact to 719 through HubSpot's API
        newcomer = view.contact("deal.only@example.com")
        assert newcomer is not None
        view.add_to_list("719", [newcomer["id"]])
        before = view.end_state(typed_config(DEMO_CONFIG_FILE))

    stale = demo("--apply", "plan.json", "--no-redact")
    assert stale.code == 4, stale.text
    assert "stale plan" in stale.err
    # deal.only is on 717 (active_deals): the re-plan now removes it from 719; the change is named.
    assert "remove_from_list" in stale.text and "deal.only@example.com" in stale.out
    with embedded_state(tmp_path) as view:
        assert view.end_state(typed_config(DEMO_CONFIG_FILE)) == before  # nothing written

    fresh = demo("--plan", "--out", "plan2.json")
    assert fresh.code == 0
    applied = demo("--apply", "plan2.json")  # a plan file counts as approval: no --yes needed
    assert applied.code == 0 and "converged" in applied.out, applied.text


def test_apply_with_a_wrong_checksum_prints_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    checksum = plan_json(demo("--plan", "--format", "json"))["checksum"]
    wrong = demo("--apply", "--checksum", "0" * 64)
    assert wrong.code == 4, wrong.text
    assert checksum in wrong.text and "0" * 64 in wrong.err
    with embedded_state(tmp_path) as view:
        assert view.member("recruit16@example.com") is None  # not created: nothing written
    right = demo("--apply", "--checksum", checksum)
    assert right.code == 0 and "converged" in right.out, right.text


def test_unsafe_plan_is_refused_without_writes_then_force_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = demo_config_doc()
    doc["safety"] = {"max_creates": {"count": 5}, "max_archives": {"percent": 10, "count": 100}}
    with started(tmp_path, SEED, doc) as env:
        config = env.config
        before = members_by_list(env.view, config)
        env.sandbox.reset_counters()
        refused = env.cli("--apply", "--yes")
        assert refused.code == 3, refused.text
        assert "max_creates" in refused.text and "--force" in refused.text
        assert "19" in refused.err  # how many creates the plan holds
        assert env.writes() == {}, env.sandbox.counters()

        forced = env.cli("--apply", "--yes", "--force")
        assert forced.code == 0 and "converged" in forced.out, forced.text
        members = env.view.members()
        assert sum(1 for e, m in members.items() if e not in before[config.audiences["main"].mailchimp_list_id]) == 19
        assert_compliance(env.view, config, before)


def test_apply_without_yes_and_without_a_terminal_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = demo_config_doc()
    with started(tmp_path, SEED, doc) as env:
        refused = env.cli("--apply")
        assert refused.code == 1, refused.text
        assert "--yes" in refused.err
        assert env.writes() == {}, env.sandbox.counters()
        assert env.view.member("recruit16@example.com") is None
        assert changes_of(plan_json(env.cli("--plan", "--format", "json")), "create_member")  # still planned
