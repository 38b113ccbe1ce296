"""The audit database itself (SPEC §8): migration in place from version 1, append-only triggers, --since parsing.

A version-1 database is written here by hand, as the first release wrote it, so the migration is
tested against the old file and not against whatever the current code would create.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reconciler.audit import SCHEMA_VERSION, AuditLog
from reconciler.audit_query import parse_since
from reconciler.errors import ReconcilerError
from reconciler.plan import STEP_MEMBERS, Change

V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL, at TEXT NOT NULL);
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, at TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('start', 'end')), command TEXT NOT NULL, operator TEXT NOT NULL,
    config_checksum TEXT NOT NULL, plan_checksum TEXT, counts TEXT, exit_code INTEGER);
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, at TEXT NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('attempted', 'outcome')),
    outcome TEXT CHECK (outcome IN ('applied', 'refused', 'failed', 'deferred', 'verified', 'not_applied')),
    error TEXT, change_key TEXT NOT NULL, operator TEXT NOT NULL, config_checksum TEXT NOT NULL,
    system TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, email TEXT NOT NULL, contact_id TEXT,
    before TEXT NOT NULL, after TEXT NOT NULL, reason TEXT NOT NULL, legal_basis TEXT, explanation TEXT);
CREATE INDEX changes_email ON changes (email);
CREATE INDEX changes_key ON changes (change_key);
CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
INSERT INTO schema_version VALUES (1, '2025-01-10T09:00:00.000Z');
INSERT INTO runs (run_id, at, event, command, operator, config_checksum, plan_checksum, counts, exit_code) VALUES
  ('20250110T090000-aaaaaaaa', '2025-01-10T09:00:00.000Z', 'start', 'apply', 'ops', 'c1', NULL, NULL, NULL),
  ('20250110T090000-aaaaaaaa', '2025-01-10T09:00:05.000Z', 'end', 'apply', 'ops', 'c1', 'p1', '{"applied": 2}', 0);
INSERT INTO changes (run_id, at, phase, outcome, error, change_key, operator, config_checksum, system, action, target,
                     email, contact_id, before, after, reason, legal_basis, explanation) VALUES
  ('20250110T090000-aaaaaaaa', '2025-01-10T09:00:01.000Z', 'attempted', NULL, NULL, 'k1', 'ops', 'c1', 'hubspot',
   'unsubscribe_contact', '289137112', 'ann@example.com', '101', '{"unsubscribed":false}',
   '{"explanation":"Contact unsubscribed in Mailchimp","legal_basis":"LEGITIMATE_INTEREST_OTHER","unsubscribed":true}',
   'R11 unsubscribed in Mailchimp audience main', 'LEGITIMATE_INTEREST_OTHER', 'Contact unsubscribed in Mailchimp'),
  ('20250110T090000-aaaaaaaa', '2025-01-10T09:00:02.000Z', 'outcome', 'applied', NULL, 'k1', 'ops', 'c1', 'hubspot',
   'unsubscribe_contact', '289137112', 'ann@example.com', '101', '{"unsubscribed":false}',
   '{"explanation":"Contact unsubscribed in Mailchimp","legal_basis":"LEGITIMATE_INTEREST_OTHER","unsubscribed":true}',
   'R11 unsubscribed in Mailchimp audience main', 'LEGITIMATE_INTEREST_OTHER', 'Contact unsubscribed in Mailchimp'),
  ('20250110T090000-aaaaaaaa', '2025-01-10T09:00:03.000Z', 'outcome', 'refused', 'Member In Compliance State', 'k2',
   'ops', 'c1', 'mailchimp', 'create_member', 'main', 'bob@example.com', '102', '{}', '{"status":"subscribed"}',
   'R5 source list 719', NULL, NULL);
"""


def v1_database(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        return db.execute("SELECT * FROM changes ORDER BY seq").fetchall()


def all_rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                for table in ("schema_version", "runs", "changes")}


def test_a_version_1_database_is_migrated_in_place_with_its_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    old_changes = v1_database(path)
    old = all_rows(path)

    log = AuditLog.open(str(path))
    try:
        assert log.schema_version() == SCHEMA_VERSION == 3
        rows = log.query()
        memory = log.memory()
    finally:
        log.close()

    new = all_rows(path)
    assert new["runs"] == old["runs"]
    # Columns are only ever added: every old row keeps its values, and the new column is empty.
    assert [row[:-1] for row in new["changes"]] == old_changes and all(row[-1] is None for row in new["changes"])
    assert new["schema_version"][0] == old["schema_version"][0] and [v for v, _ in new["schema_version"]] == [1, 2, 3]
    assert [r["email"] for r in rows] == ["ann@example.com", "ann@example.com", "bob@example.com"]
    assert rows[1]["legal_basis"] == "LEGITIMATE_INTEREST_OTHER" and rows[1]["mailchimp_list_id"] is None
    # A v1 refusal has no list id, so it cannot be matched to an audience and is not remembered.
    assert memory.refusals == {}

    # Opening again is a no-op, and the migrated database is append-only on every table, old ones included.
    AuditLog.open(str(path)).close()
    assert all_rows(path) == new
    with sqlite3.connect(path) as db:
        for statement in ("UPDATE changes SET email = 'x@example.com'", "DELETE FROM changes",
                          "UPDATE runs SET exit_code = 0", "DELETE FROM runs", "DELETE FROM schema_version"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
    assert all_rows(path) == new


def test_new_rows_after_a_migration_carry_the_new_column(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    v1_database(path)
    log = AuditLog.open(str(path))
    try:
        change = Change(system="mailchimp", action="create_member", target="main", email="cora@example.org",
                        before={}, after={"status": "subscribed"}, reason="R5 source list 719", step=STEP_MEMBERS)
        run_id = log.start_run(command="apply", operator="ops", config_checksum="c2", plan_checksum=None)
        log.record(run_id, [change], phase="outcome", operator="ops", config_checksum="c2",
                   outcomes=[("refused", "Member In Compliance State")], list_ids={"main": "abc123def4"})
        refusals = log.memory().refusals
    finally:
        log.close()
    assert set(refusals) == {("abc123def4", "cora@example.org")}
    assert len(all_rows(path)["changes"]) == 4


def test_a_database_from_a_newer_reconciler_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    v1_database(path)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (99, '2030-01-01T00:00:00.000Z')")
    before = all_rows(path)
    with pytest.raises(ReconcilerError, match="schema version 99, newer than this reconciler"):
        AuditLog.open(str(path))
    assert all_rows(path) == before


@pytest.mark.parametrize(("given", "stored"), [
    ("2025-03-01", "2025-03-01T00:00:00.000Z"),
    ("2025-03-01T14:30:00Z", "2025-03-01T14:30:00.000Z"),
    ("2025-03-01T14:30", "2025-03-01T14:30:00.000Z"),  # no offset: UTC, as the log is written
    ("2025-03-01T16:30:00+02:00", "2025-03-01T14:30:00.000Z"),
    ("2025-03-01 00:30:00.250-01:00", "2025-03-01T01:30:00.250Z"),
])
def test_since_becomes_the_stored_utc_format(given: str, stored: str) -> None:
    assert parse_since(given) == stored


@pytest.mark.parametrize("given", ["yesterday", "2025-13-01", "01/03/2025", "", "2025-03-01T25:00"])
def test_a_bad_since_is_one_clear_error(given: str) -> None:
    with pytest.raises(ReconcilerError, match="use YYYY-MM-DD") as caught:
        parse_since(given)
    assert repr(given) in str(caught.value)
