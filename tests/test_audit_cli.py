"""`reconcile --audit` after a real apply on the sandbox (SPEC §8), and the log's append-only promise.

One command must answer "when and why did this person stop getting email, and on what legal
basis?"; and no command, whatever it does or refuses, may change or delete a row already written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from reconciler.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "reconciler.yaml"
DEMO_SEED = REPO / "config" / "sandbox" / "seed.yaml"
AUDIT = ".reconciler/audit.sqlite"
ENV = {"GITHUB_ACTOR": "octo-ops"}
# In the demo seed: opted out in Mailchimp and on critical list 773 (R11 with the legal basis, then R2).
OPTED_OUT = "hold.unsub@example.com"
SPEC_FIELDS = ("run_id", "at", "operator", "config_checksum", "system", "action", "target", "email", "before",
               "after", "reason", "legal_basis", "explanation", "phase", "outcome", "error")


def cli(*argv: str, config: Path = DEMO_CONFIG) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = ["--sandbox", "--config", str(config), "--sandbox-seed", str(DEMO_SEED), *argv]
    code = main(args, stdout=out, stderr=err, env=dict(ENV), stdin_isatty=False)
    return code, out.getvalue(), err.getvalue()


def audit_json(*filters: str) -> list[dict[str, Any]]:
    code, out, err = cli("--audit", "--format", "json", *filters)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A directory where the demo plan was written to plan.json and then applied from it."""
    root = tmp_path_factory.mktemp("applied")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code, _, err = cli("--plan", "--format", "json", "--out", "plan.json")
        assert code == 0, err
        plan = json.loads(Path("plan.json").read_text())
        code, _, err = cli("--apply", "plan.json")
        assert code == 0, err
    finally:
        os.chdir(cwd)
    yield root, plan


def test_every_change_has_an_attempted_and_an_outcome_row_with_every_field(
        applied: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    root, plan = applied
    monkeypatch.chdir(root)
    rows = audit_json("--no-redact")
    assert rows and all(set(SPEC_FIELDS) <= set(row) for row in rows)
    (run_id,) = {row["run_id"] for row in rows}
    assert {row["operator"] for row in rows} == {"octo-ops"}
    assert {row["config_checksum"] for row in rows} == {plan["config_checksum"]}
    for change in plan["changes"]:
        mine = [row for row in rows if (row["system"], row["action"], row["target"], row["email"])
                == (change["system"], change["action"], change["target"], change["email"])]
        phases = sorted(row["phase"] for row in mine)
        assert phases == ["attempted", "outcome"], change
        for row in mine:
            assert (row["before"], row["after"], row["reason"]) == (change["before"], change["after"], change["reason"])
        outcome = next(row for row in mine if row["phase"] == "outcome")
        assert outcome["outcome"] in ("applied", "refused") and outcome["at"] >= mine[0]["at"]
        if change["action"] == "unsubscribe_contact":
            assert outcome["legal_basis"] == "LEGITIMATE_INTEREST_OTHER"
            assert outcome["explanation"] == "Contact unsubscribed in Mailchimp"
        else:
            assert outcome["legal_basis"] is None
        if outcome["outcome"] == "refused":
            assert outcome["error"]  # the vendor's words
    assert len(rows) == 2 * len(plan["changes"])
    with sqlite3.connect(AUDIT) as db:
        runs = db.execute("SELECT run_id, event, exit_code, counts, plan_checksum FROM runs ORDER BY seq").fetchall()
    assert [(r[0], r[1], r[2]) for r in runs] == [(run_id, "start", None), (run_id, "end", 0)]
    counts = json.loads(runs[1][3])
    assert sum(counts.values()) == len(plan["changes"]) and runs[1][4] == plan["checksum"]


def test_one_command_says_when_and_why_a_person_stopped_getting_email(
        applied: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = applied
    monkeypatch.chdir(root)
    code, out, err = cli("--audit", "--email", OPTED_OUT.upper())
    assert code == 0, err
    for expected in ("unsubscribe_contact", "LEGITIMATE_INTEREST_OTHER", "Contact unsubscribed in Mailchimp",
                     "archive_member", "R2 critical list 773", "applied", "h***@example.com"):
        assert expected in out
    assert OPTED_OUT not in out  # not a terminal: masked unless --no-redact

    rows = audit_json("--email", OPTED_OUT, "--outcome", "applied")
    assert [(r["action"], r["reason"].split()[0]) for r in rows] == [("unsubscribe_contact", "R11"),
                                                                      ("archive_member", "R2")]
    assert {r["email"] for r in rows} == {"h***@example.com"}
    assert rows[0]["legal_basis"] == "LEGITIMATE_INTEREST_OTHER" and rows[0]["at"] <= rows[1]["at"]
    assert {r["email"] for r in audit_json("--email", OPTED_OUT, "--no-redact")} == {OPTED_OUT}


def test_filters_and_formats(applied: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = applied
    monkeypatch.chdir(root)
    everything = audit_json()
    first = min(row["at"] for row in everything)
    assert audit_json("--since", first[:10]) == everything
    assert audit_json("--since", "2999-01-01") == []
    assert audit_json("--since", first) == everything  # the boundary is inclusive
    archives = audit_json("--action", "archive_member", "--outcome", "applied")
    assert archives and {(r["action"], r["outcome"]) for r in archives} == {("archive_member", "applied")}
    refused = audit_json("--outcome", "refused")
    assert refused and all("Compliance State" in r["error"] for r in refused)
    assert all("@example.com" not in r["error"].replace("***@example.com", "") for r in refused)

    code, out, err = cli("--audit", "--format", "csv")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == len(everything) and set(SPEC_FIELDS) <= set(table[0])
    assert [json.loads(r["after"]) for r in table] == [r["after"] for r in everything]

    for argv, message in ((("--since", "last week"), "--since 'last week': not a date or time; use YYYY-MM-DD"),
                          (("--outcome", "sucess"), "--outcome 'sucess' is not one of: applied, refused"),
                          (("--action", "delete_member"), "--action 'delete_member' is not one of: create_member")):
        code, out, err = cli("--audit", *argv)
        assert code == 1 and out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_audit_before_any_apply_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("--audit")
    assert code == 1 and f"no audit database at {AUDIT} yet" in err and out == ""
    assert not Path(AUDIT).exists()  # a query never creates the database


def snapshot() -> dict[str, list[tuple]]:
    with sqlite3.connect(AUDIT) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                for table in ("schema_version", "runs", "changes")}


def test_no_command_changes_or_deletes_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("--apply", "--yes")[0] == 0
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text(DEMO_CONFIG.read_text().replace("max_creates: {count: 1000}", "max_creates: {count: 0}"))
    commands: list[tuple[tuple[str, ...], int, Path]] = [
        (("--plan",), 0, DEMO_CONFIG),
        (("--plan", "--format", "json", "--out", "plan.json"), 0, DEMO_CONFIG),
        (("--plan", "--format", "markdown"), 0, DEMO_CONFIG),
        (("--apply", "plan.json"), 0, DEMO_CONFIG),
        (("--apply", "--yes"), 0, DEMO_CONFIG),
        (("--apply", "--checksum", "0" * 64), 4, DEMO_CONFIG),
        (("--apply", "--yes", "--sandbox-reset"), 3, unsafe),  # a fresh sandbox: creates again, over the limit
        (("--apply", "--yes", "--retry-refused"), 0, DEMO_CONFIG),
        (("--audit",), 0, DEMO_CONFIG),
        (("--audit", "--format", "csv"), 0, DEMO_CONFIG),
        (("--audit", "--format", "json", "--email", OPTED_OUT), 0, DEMO_CONFIG),
    ]
    seen = snapshot()
    assert seen["changes"] and seen["runs"]
    for argv, expected, config in commands:
        code, _, err = cli(*argv, config=config)
        assert code == expected, (argv, err)
        now = snapshot()
        for table, rows in seen.items():
            assert now[table][: len(rows)] == rows, (argv, table)  # earlier rows byte for byte, new ones after
        seen = now
    # --validate takes no --sandbox: run it on its own
    out, err = io.StringIO(), io.StringIO()
    assert main(["--validate", "--config", str(DEMO_CONFIG)], stdout=out, stderr=err, env={}, stdin_isatty=False) == 0
    # A refused apply (the lock is held) does not touch the database at all.
    Path(AUDIT + ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert cli("--apply", "--yes")[0] == 1
    Path(AUDIT + ".lock").unlink()
    assert snapshot() == seen
    assert len(seen["runs"]) == 2 * 6  # one start and one end row for each of the six applies that ran

    with sqlite3.connect(AUDIT) as db:
        for table in ("changes", "runs", "schema_version"):
            for statement in (f"UPDATE {table} SET rowid = rowid", f"DELETE FROM {table}",
                              f"DELETE FROM {table} WHERE rowid = (SELECT MAX(rowid) FROM {table})"):
                with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                    db.execute(statement)
    assert snapshot() == seen
