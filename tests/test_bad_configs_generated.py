"""Generated bad configurations (issue 8): random bytes, random YAML structures and mutations of
the example config give exit 0 (valid) or exit 1 with every problem at file:line:column, and
never a traceback. The hand-written cases are under fixtures/bad_configs (test_cli_validate.py).
"""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = yaml.safe_load((ROOT / "config" / "reconciler.yaml").read_text(encoding="utf-8"))
ENV = {"HUBSPOT_TOKEN": "pat-na1-SECRETHUBSPOTVALUE", "MAILCHIMP_API_KEY": "SECRETMAILCHIMPVALUE-us1",
       "TEAMS_WEBHOOK_URL": "https://teams.example.org/x", "SLACK_WEBHOOK_URL": "https://hooks.example.org/y"}
LOCATED = re.compile(r"^\S+:\d+:\d+ \S+")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["${HUBSPOT_TOKEN}", "${NOPE", "$${x}", "719", "", "~"]))
structures = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=20)


def validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--validate", "--config", str(path)], stdout=out, stderr=err, env=ENV, stdin_isatty=False)
    return code, out.getvalue(), err.getvalue()


def check(path: Path) -> None:
    code, out, err = validate(path)
    assert "Traceback" not in out + err and "error: unexpected" not in err, err  # the CLI's crash line
    for secret in ENV.values():
        assert secret not in out + err
    if code == 0:
        assert out.startswith("config OK"), out
        return
    assert code == 1, (code, err)
    problems = [line for line in err.splitlines() if not line.startswith(("warning: ", "error: "))]
    assert problems, err
    assert all(LOCATED.match(line) for line in problems), err
    assert err.splitlines()[-1].startswith(f"error: {len(problems)} configuration problem"), err


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_are_an_error_with_a_place_or_valid(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "c.yaml"
    path.write_bytes(data)
    check(path)


@SETTINGS
@given(doc=structures)
def test_random_yaml_structures_are_an_error_with_a_place_or_valid(tmp_path_factory: Any, doc: Any) -> None:
    path = tmp_path_factory.mktemp("structure") / "c.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    check(path)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


EXAMPLE_PATHS = _paths(EXAMPLE)


@SETTINGS
@given(where=st.sampled_from(EXAMPLE_PATHS), value=structures, drop=st.booleans())
def test_the_example_with_one_value_replaced_or_dropped_is_an_error_with_a_place_or_valid(
        tmp_path_factory: Any, where: tuple, value: Any, drop: bool) -> None:
    doc = copy.deepcopy(EXAMPLE)
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    if drop:
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    path = tmp_path_factory.mktemp("mutated") / "c.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    check(path)
