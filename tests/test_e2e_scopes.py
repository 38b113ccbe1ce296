"""Issue 12 (auth): a token without a scope the product needs is named from HubSpot's 403, not a traceback.

Through the real CLI and the sandbox, whose HubSpot answers 403 MISSING_SCOPES with
`errors[].context.requiredGranularScopes` when the seed limits the token's scopes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e_helpers import contact, hub_list, make_seed, member, small_config, started
from tests.test_e2e_rules import ALL_SCOPES


def _seed(scopes: list[str]) -> dict:
    return make_seed([contact("1", "ann@example.com", firstname="Ann")], [hub_list("719", "Recruitment", ["1"])],
                     [member("gone@example.com", status="unsubscribed")], scopes=scopes)


def test_plan_names_every_missing_read_scope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    granted = [s for s in ALL_SCOPES if s not in ("crm.lists.read", "communication_preferences.read")]
    with started(tmp_path, _seed(granted), small_config()) as env:
        run = env.cli("--plan")
    assert run.code == 1, run.text
    assert "Traceback" not in run.text
    lines = [line for line in run.err.splitlines() if line.startswith("hubspot.token:")]
    assert len(lines) == 2, run.err
    assert any("lacks the scope(s) crm.lists.read" in line and "GET /crm/v3/lists" in line for line in lines)
    assert any("lacks the scope(s) communication_preferences.read" in line
               and "/communication-preferences/v3/definitions" in line for line in lines)
    assert all("private app or service key" in line for line in lines)


def test_a_missing_contacts_scope_is_named_when_observe_reads(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    granted = [s for s in ALL_SCOPES if s != "crm.objects.contacts.read"]
    with started(tmp_path, _seed(granted), small_config()) as env:
        run = env.cli("--plan")
        assert run.code == 1, run.text
        assert "Traceback" not in run.text
        assert "Missing scope(s): crm.objects.contacts.read." in run.err
        assert env.writes() == {}


def test_a_missing_write_scope_is_named_by_the_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    granted = [s for s in ALL_SCOPES if s != "communication_preferences.write"]
    seed = _seed(granted)
    seed["hubspot"]["contacts"].append(contact("2", "gone@example.com"))
    with started(tmp_path, seed, small_config()) as env:
        run = env.cli("--apply", "--yes")
        assert run.code == 5, run.text
        assert "communication_preferences.write" in run.text
        # the unsubscribed member is not archived while its opt-out has not reached HubSpot
        assert env.view.member("gone@example.com").status == "unsubscribed"
