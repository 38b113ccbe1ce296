"""The example pull-request workflow (.github/) and the pre-commit hook: they parse, call only what exists.

Every `reconcile ...` in them is parsed by the CLI's own parser; plan and apply share one
concurrency group; the audit database is kept between runs; pipes fail the step when they fail.
(The Markdown comment's size bound for a 50,000-change plan is tested in test_render_markdown.py.)
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from reconciler.cli import build_parser, parse_args

REPO = Path(__file__).resolve().parents[1]
GITHUB = REPO / ".github"
WORKFLOWS = {path.stem: path for path in sorted((GITHUB / "workflows").glob("*.yml"))}
ACTIONS = sorted((GITHUB / "actions").glob("*/action.yml"))
HOOKS = REPO / ".pre-commit-hooks.yaml"
_SEPARATORS = {";", "&&", "||", "|", "(", "then", "else", "do", "{", "!"}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), path
    return doc


def triggers(doc: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    found = doc.get("on", doc.get(True))
    return found if isinstance(found, dict) else {name: None for name in ([found] if isinstance(found, str) else found)}


def steps(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "runs" in doc:
        yield from doc["runs"]["steps"]
    for job in doc.get("jobs", {}).values():
        yield from job["steps"]


def scripts() -> Iterator[tuple[str, str]]:
    for path in [*WORKFLOWS.values(), *ACTIONS]:
        for step in steps(load(path)):
            if "run" in step:
                yield f"{path.relative_to(REPO)}: {step.get('name', step['run'][:30])}", step["run"]


def invocations(script: str) -> Iterator[list[str]]:
    """The argument lists of every `reconcile` command in a shell script."""
    text = script.replace("\\\n", " ")
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for index, token in enumerate(tokens):
            if token == "reconcile" and (index == 0 or tokens[index - 1] in _SEPARATORS):
                args = []
                for arg in tokens[index + 1:]:
                    if arg and set(arg) <= set("();<>|&"):
                        break  # a redirection or the next command
                    args.append(arg)
                yield args


def all_invocations() -> list[tuple[str, list[str]]]:
    found = [(where, args) for where, script in scripts() for args in invocations(script)]
    for hook in yaml.safe_load(HOOKS.read_text(encoding="utf-8")):
        entry = shlex.split(hook["entry"])
        assert entry[0] == "reconcile"
        found.append((f".pre-commit-hooks.yaml: {hook['id']}", entry[1:] + list(hook.get("args", []))))
    return found


def test_every_file_parses_and_the_three_workflows_exist() -> None:
    assert set(WORKFLOWS) == {"validate", "plan", "apply", "drift"}
    for path in [*WORKFLOWS.values(), *ACTIONS]:
        doc = load(path)
        assert doc.get("name") and (triggers(doc) if "runs" not in doc else doc["runs"]["using"] == "composite")
        assert list(steps(doc)), path
    hooks = yaml.safe_load(HOOKS.read_text(encoding="utf-8"))
    assert [hook["id"] for hook in hooks] == ["reconcile-validate"]
    assert hooks[0]["pass_filenames"] is False and hooks[0]["language"] == "python"


def test_every_reconcile_invocation_is_accepted_by_the_cli_parser() -> None:
    found = all_invocations()
    commands = sorted({next(a for a in args if a in ("--validate", "--plan", "--apply", "--audit")) for _, args in found})
    assert commands == ["--apply", "--plan", "--validate"]
    for where, args in found:
        out = io.StringIO()
        build_parser(out).parse_args(args)  # raises on an unknown flag or a bad value
        parsed = parse_args(args, out)  # and the CLI's own rules (flags meant for another command)
        assert parsed.command in ("validate", "plan", "apply"), where


def test_drift_runs_on_a_schedule_and_only_plans() -> None:
    doc = load(WORKFLOWS["drift"])
    assert triggers(doc)["schedule"][0]["cron"] and "workflow_dispatch" in triggers(doc)
    runs = [args for where, args in all_invocations() if where.startswith(".github/workflows/drift.yml")]
    assert runs and all(args[0] == "--plan" and "--detailed-exitcode" in args for args in runs)
    assert doc["concurrency"]["group"] == load(WORKFLOWS["apply"])["concurrency"]["group"]
    text = WORKFLOWS["drift"].read_text()
    assert "2)" in text and 'exit "$code"' in text  # drift (2) passes, an error fails the job
    uses = [s.get("uses") for s in steps(doc)]
    assert "./.github/actions/restore-audit-db" in uses  # the plan sees the audit memory apply sees


def test_the_parser_check_catches_a_flag_that_does_not_exist() -> None:
    (args,) = list(invocations("set -e\nreconcile --plan --colour always > plan.md"))
    assert args == ["--plan", "--colour", "always"]
    with pytest.raises(Exception, match="unrecognized arguments: --colour"):
        build_parser(io.StringIO()).parse_args(args)


def test_validate_runs_on_pull_requests_without_secrets() -> None:
    doc = load(WORKFLOWS["validate"])
    assert "pull_request" in triggers(doc)
    assert "secrets." not in WORKFLOWS["validate"].read_text()
    runs = [args for where, args in all_invocations() if where.startswith(".github/workflows/validate.yml")]
    assert runs and all(args[0] == "--validate" for args in runs)


def test_plan_runs_on_merge_and_publishes_markdown_json_and_checksum() -> None:
    doc = load(WORKFLOWS["plan"])
    assert triggers(doc)["push"]["branches"] == ["main"]
    text = WORKFLOWS["plan"].read_text()
    assert re.search(r"^\s*reconcile --plan --format markdown --out plan\.json > plan\.md$", text, re.M)
    uploads = [s for s in steps(doc) if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and "plan.json" in uploads[0]["with"]["path"]
    assert "jq -r .checksum plan.json" in text and "GITHUB_STEP_SUMMARY" in text
    assert re.search(r"-gt 6[0-5],?\d{3}", text)  # the comment is kept under GitHub's 65,535 characters
    assert "${{ secrets.HUBSPOT_TOKEN }}" in text and "${{ secrets.MAILCHIMP_API_KEY }}" in text


def test_apply_takes_the_reviewed_plan_of_a_plan_run_and_surfaces_exit_codes() -> None:
    doc = load(WORKFLOWS["apply"])
    dispatch = triggers(doc)["workflow_dispatch"]
    assert dispatch["inputs"]["plan_run_id"]["required"] is True
    downloads = [s for s in steps(doc) if str(s.get("uses", "")).startswith("actions/download-artifact@")]
    assert downloads and downloads[0]["with"]["run-id"] == "${{ inputs.plan_run_id }}"
    assert downloads[0]["with"]["name"] == "reconciler-plan"
    runs = [args for where, args in all_invocations() if where.startswith(".github/workflows/apply.yml")]
    assert runs and all(args[:2] == ["--apply", "plan.json"] for args in runs)
    text = WORKFLOWS["apply"].read_text()
    for code in ("3)", "4)", "5)"):
        assert code in text
    assert 'exit "$code"' in text and "set +e" in text  # the step fails with reconcile's own exit code


def test_plan_and_apply_share_one_concurrency_group_and_never_cancel() -> None:
    groups = {name: load(WORKFLOWS[name])["concurrency"] for name in ("plan", "apply")}
    assert groups["plan"]["group"] == groups["apply"]["group"]
    assert groups["plan"]["cancel-in-progress"] is False and groups["apply"]["cancel-in-progress"] is False


def test_the_audit_database_is_kept_between_runs() -> None:
    action = ACTIONS[0]
    for name in ("plan", "apply"):
        uses = [s.get("uses") for s in steps(load(WORKFLOWS[name]))]
        assert f"./{action.parent.relative_to(REPO)}" in uses, name  # both see the latest memory
    restore = next(s for s in steps(load(action)) if str(s.get("uses", "")).startswith("actions/cache/restore@"))
    saves = [s for s in steps(load(WORKFLOWS["apply"])) if str(s.get("uses", "")).startswith("actions/cache/save@")]
    assert saves and saves[0]["if"] == "always()"
    # Each save is a new key; restore-keys finds the newest by prefix.
    assert saves[0]["with"]["key"] == restore["with"]["key"]
    assert saves[0]["with"]["key"].startswith(restore["with"]["restore-keys"])
    assert "${{ github.run_id }}" in saves[0]["with"]["key"]
    assert ".reconciler/audit.sqlite" in saves[0]["with"]["path"].split()
    assert not any(p.endswith(".lock") or p.endswith("*") for p in saves[0]["with"]["path"].split())
    artifact = [s for s in steps(load(WORKFLOWS["apply"])) if s.get("with", {}).get("name") == "reconciler-audit-db"]
    assert artifact and artifact[0]["if"] == "always()"


def pipes_without_pipefail(script: str) -> bool:
    """Whether the script pipes (outside quotes) without `set -o pipefail` (or `set -euo pipefail`)."""
    unquoted = re.sub(r"'[^']*'|\"(?:\\.|[^\"\\])*\"", "''", script)
    pipes = re.search(r"(?<![|])\|(?![|])", unquoted) is not None
    return pipes and not re.search(r"^\s*set -[a-z]*o pipefail", script, re.M)


def test_the_pipe_check_tells_a_guarded_pipe_from_an_unguarded_one() -> None:
    assert pipes_without_pipefail("reconcile --plan --format markdown | tee plan.md")
    assert not pipes_without_pipefail("set -euo pipefail\nreconcile --plan --format markdown | tee plan.md")
    assert not pipes_without_pipefail("set -o pipefail\nsha256sum plan.json | cut -c1-64")
    assert not pipes_without_pipefail('echo "a | b" && reconcile --validate || exit 1')


def test_pipes_fail_the_step_and_inputs_never_reach_a_script() -> None:
    found = list(scripts())
    assert len(found) >= 6
    for where, script in found:
        assert not pipes_without_pipefail(script), where
        assert "${{ inputs." not in script, where  # pass inputs through env: no script injection
