"""`reconcile --validate` end to end, in-process: every bad configuration under fixtures/bad_configs.

Each fixture says where its problems are in `# expect: [FILE] LINE:COLUMN key.path` comments
(FILE defaults to the fixture itself); `# mode: run` fixtures are loaded as `--plan` would.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bad_configs"
# Values that must never be printed, whatever goes wrong.
ENV = {"HUBSPOT_TOKEN": "pat-na1-SECRETHUBSPOTVALUE", "MAILCHIMP_API_KEY": "SECRETMAILCHIMPVALUE-us1"}
EXPECT = re.compile(r"^# expect: (?:(\S+\.yaml) )?(\d+:\d+ \S+)$")


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err, env=ENV if env is None else env, stdin_isatty=False)
    return code, out.getvalue(), err.getvalue()


def fixture_files(case: Path) -> list[Path]:
    return sorted(case.glob("*.yaml")) if case.is_dir() else [case]


def expectations(case: Path) -> tuple[set[str], str]:
    """The expected `file:line:column key.path` heads, and the fixture's mode."""
    expected, mode = set(), "validate"
    for path in fixture_files(case):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = EXPECT.match(line)
            if match:
                name = str(case / match.group(1)) if match.group(1) else str(path)
                expected.add(f"{name}:{match.group(2)}")
            elif line.startswith("# mode: "):
                mode = line.split(": ", 1)[1].strip()
    return expected, mode


def heads(problem_lines: list[str]) -> set[str]:
    """`file:line:column key.path` of each problem line (the part before the colon after the path)."""
    result = set()
    for line in problem_lines:
        where, path = line.split(" ", 2)[:2]
        result.add(f"{where} {path.rstrip(':')}")
    return result


CASES = sorted(FIXTURES.iterdir())


def test_there_are_enough_bad_configurations() -> None:
    assert len(CASES) >= 40  # issue 11: at least 40 hand-written bad configurations
    assert all(expectations(case)[0] for case in CASES), "every fixture states where its problems are"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_configuration_is_reported_at_its_place(case: Path) -> None:
    expected, mode = expectations(case)
    if mode == "run":
        with pytest.raises(ConfigError) as raised:
            load_config(case, ENV, mode="run")
        assert heads(raised.value.problems) == expected
        return
    code, out, err = run(["--validate", "--config", str(case)])
    problems = [line for line in err.splitlines() if not line.startswith(("warning: ", "error: "))]
    assert code == 1
    assert heads(problems) == expected, err
    assert all(re.match(r"^\S+:\d+:\d+ \S+: .+; .+$", line) for line in problems), err
    assert err.splitlines()[-1].startswith(f"error: {len(expected)} configuration problem")
    assert "Traceback" not in out + err
    assert out == ""
    for secret in ENV.values():
        assert secret not in err


def test_three_problems_in_one_file_are_all_reported() -> None:
    code, _, err = run(["--validate", "--config", str(FIXTURES / "three_problems.yaml")])
    assert code == 1
    assert len([line for line in err.splitlines() if "three_problems.yaml:" in line]) == 3
    assert "error: 3 configuration problems" in err


def test_example_config_validates_without_any_environment() -> None:
    code, out, err = run(["--validate", "--config", str(ROOT / "config")], env={})
    assert code == 0, err
    assert out == "config OK: 1 audience, 1 file\n"
    warned = {line.split("environment variable ")[1].split()[0] for line in err.splitlines() if line.startswith("warning: ")}
    assert warned == {"HUBSPOT_TOKEN", "MAILCHIMP_API_KEY", "TEAMS_WEBHOOK_URL", "SLACK_WEBHOOK_URL"}


def test_missing_variable_is_a_warning_with_its_place_under_validate() -> None:
    code, out, err = run(["--validate", "--config", str(FIXTURES / "missing_env_under_run.yaml")])
    assert code == 0, err
    assert "missing_env_under_run.yaml:24:9 audit.path: environment variable AUDIT_DIR is not set" in err
    assert out.startswith("config OK")


def test_usage_errors_exit_1_not_2() -> None:
    assert run([])[0] == 1
    assert run(["--validate", "--plan"])[0] == 1
    code, _, err = run(["--validate", "--checksum", "abc"])
    assert code == 1 and "--checksum applies to --apply" in err
    code, _, err = run(["--plan", "--format", "csv"])
    assert code == 1 and "--format csv is not available with --plan" in err
    assert "Traceback" not in err


def test_help_goes_to_stdout_and_exits_0() -> None:
    code, out, _ = run(["--help"])
    assert code == 0
    for flag in ("--validate", "--plan", "--apply", "--audit", "--sandbox", "--config", "--audience", "--format",
                 "--out", "--detailed-exitcode", "--verbose", "--no-redact", "--checksum", "--force", "--yes",
                 "--retry-refused", "--since", "--email", "--action", "--outcome", "--sandbox-seed",
                 "--sandbox-reset", "--debug"):
        assert flag in out


def test_unreadable_config_path_is_one_located_line() -> None:
    code, _, err = run(["--validate", "--config", str(FIXTURES / "no-such-dir")])
    assert code == 1
    assert f"{FIXTURES / 'no-such-dir'}:1:1 (file): no such file or directory" in err


def test_python_dash_m_validate_runs_as_a_subprocess() -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler", "--validate", "--config", "config"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "config OK: 1 audience, 1 file\n"


def test_an_unquoted_id_is_shown_as_written_in_the_quote_hint() -> None:
    # YAML 1.1 reads 0717 as the octal number 463; the hint must show what the user typed.
    _, _, err = run(["--validate", "--config", str(FIXTURES / "int_list_id_leading_zero.yaml")])
    assert 'got a whole number; quote it: "0717"' in err
