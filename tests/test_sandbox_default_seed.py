"""`--sandbox` finds its seed beside the config (issue 12): `--config DIR` works from any directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2e_helpers import DEMO_CONFIG_DIR, changes_of, plan_json, run_cli


def _copy_config(where: Path) -> Path:
    target = where / "portal-config"
    shutil.copytree(DEMO_CONFIG_DIR, target)
    return target


@pytest.mark.parametrize("as_file", [False, True])
def test_the_seed_beside_the_config_is_used_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   as_file: bool) -> None:
    config = _copy_config(tmp_path / "elsewhere")
    seed = config / "sandbox" / "seed.yaml"
    # A seed of our own beside the copied config: recruit16 gets another email, so a plan built
    # from it (and only from it) creates that member.
    seed.write_text(seed.read_text(encoding="utf-8").replace("recruit16@example.com", "moved16@example.org"),
                    encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # no config/ here
    target = config / "reconciler.yaml" if as_file else config
    run = run_cli("--sandbox", "--plan", "--format", "json", "--no-redact", "--config", str(target))
    doc = plan_json(run)
    assert changes_of(doc, "create_member", "moved16@example.org")
    assert not changes_of(doc, "create_member", "recruit16@example.com")


def test_without_a_seed_beside_the_config_the_error_names_the_flag(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = _copy_config(tmp_path)
    shutil.rmtree(config / "sandbox")
    monkeypatch.chdir(tmp_path)
    run = run_cli("--sandbox", "--plan", "--config", str(config))
    assert run.code == 1 and "--sandbox-seed" in run.err and "Traceback" not in run.text
    assert str(config / "sandbox" / "seed.yaml") in run.err  # says where it looked
