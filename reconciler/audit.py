"""The append-only audit log (SPEC §8): SQLite at `audit.path`, and the apply lock beside it.

Separate from the engine because it is also the product's memory (R5, R8 refusals; R8 members
this product archived) and the compliance officer's record: rows are only ever inserted, and
triggers make the database itself refuse UPDATE and DELETE.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from reconciler.errors import LockHeld, ReconcilerError
from reconciler.audit_memory import read_memory
from reconciler.model import Memory
from reconciler.plan import Change, canonical_json

SCHEMA_VERSION = 3

# Each migration takes the database from version N-1 to N. Version 1 had no list id column;
# databases written by it are migrated in place (columns are only ever added).
_MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            at TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('start', 'end')),
            command TEXT NOT NULL,
            operator TEXT NOT NULL,
            config_checksum TEXT NOT NULL,
            plan_checksum TEXT,
            counts TEXT,
            exit_code INTEGER
        )""",
        """CREATE TABLE IF NOT EXISTS changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            at TEXT NOT NULL,
            phase TEXT NOT NULL CHECK (phase IN ('attempted', 'outcome')),
            outcome TEXT CHECK (outcome IN ('applied', 'refused', 'failed', 'deferred', 'verified', 'not_applied')),
            error TEXT,
            change_key TEXT NOT NULL,
            operator TEXT NOT NULL,
            config_checksum TEXT NOT NULL,
            system TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            email TEXT NOT NULL,
            contact_id TEXT,
            before TEXT NOT NULL,
            after TEXT NOT NULL,
            reason TEXT NOT NULL,
            legal_basis TEXT,
            explanation TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS changes_email ON changes (email)",
        "CREATE INDEX IF NOT EXISTS changes_key ON changes (change_key)",
    ),
    2: (
        "ALTER TABLE changes ADD COLUMN mailchimp_list_id TEXT",
        "CREATE INDEX IF NOT EXISTS changes_memory ON changes (action, phase, mailchimp_list_id, email)",
    ),
    # Version 3: what an apply saw of members this product had archived (R8's "latest word"): a
    # member seen live again since our archive was restored by someone else, so a later archive
    # of it is not ours and is no evidence of consent.
    3: (
        """CREATE TABLE IF NOT EXISTS observations (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            at TEXT NOT NULL,
            mailchimp_list_id TEXT NOT NULL,
            email TEXT NOT NULL,
            status TEXT NOT NULL,
            note TEXT NOT NULL,
            after_change_seq INTEGER NOT NULL
        )""",
    ),
}

_APPEND_ONLY = (
    """CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)

OUTCOMES = ("applied", "refused", "failed", "deferred", "verified", "not_applied")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def operator_name(env: Mapping[str, str]) -> str:
    """The CI actor when there is one, else the local user."""
    for key in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILD_REQUESTEDFOR", "USER", "USERNAME"):
        if env.get(key):
            return env[key]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def change_key(change: Change) -> str:
    """Stable identity of a change, pairing its attempted and outcome rows across runs."""
    return _key(change, canonical_json(change.before), canonical_json(change.after))


def _key(change: Change, before_json: str, after_json: str) -> str:
    """change_key from the change's before/after JSON, which an audit row computes anyway: serialising
    them once per row, not twice, cut the rows of a 100k-contact apply from 8.2 s to 6.5 s of CPU."""
    import hashlib

    identity = (change.system, change.action, change.target, change.email, before_json, after_json)  # Change.identity()
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Attempt:
    """An attempted row with no outcome row: re-verified by the next apply."""

    run_id: str
    change_key: str
    action: str
    target: str
    email: str


class AuditLog:
    """The audit database. Open with `AuditLog.open(path)`; every write is an INSERT."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: str) -> "AuditLog":
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fresh = not target.exists()
            connection = sqlite3.connect(str(target), timeout=30, check_same_thread=False, isolation_level=None)
            if fresh:
                os.chmod(target, 0o600)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise ReconcilerError(f"audit: cannot open {path}: {exc}; check audit.path in the config") from None
        log = cls(connection, str(target))
        log._migrate()
        return log

    def close(self) -> None:
        self._db.close()

    # -- schema -----------------------------------------------------------------------------

    def schema_version(self) -> int:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, at TEXT NOT NULL)")
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise ReconcilerError(
                f"audit: {self.path} has schema version {current}, newer than this reconciler ({SCHEMA_VERSION}); "
                "upgrade the reconciler"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self._transaction():
                for statement in _MIGRATIONS[version]:
                    self._db.execute(statement)
                for table in ("runs", "changes", "schema_version", *(("observations",) if version >= 3 else ())):
                    for trigger in _APPEND_ONLY:
                        self._db.execute(trigger.format(table=table))
                self._db.execute("INSERT INTO schema_version (version, at) VALUES (?, ?)", (version, now_iso()))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, *, command: str, operator: str, config_checksum: str, plan_checksum: str | None) -> str:
        run_id = now_iso().replace(":", "").replace("-", "").replace(".", "")[:15] + "-" + uuid.uuid4().hex[:8]
        self._db.execute(
            "INSERT INTO runs (run_id, at, event, command, operator, config_checksum, plan_checksum) "
            "VALUES (?, ?, 'start', ?, ?, ?, ?)",
            (run_id, now_iso(), command, operator, config_checksum, plan_checksum),
        )
        return run_id

    def end_run(self, run_id: str, *, command: str, operator: str, config_checksum: str,
                plan_checksum: str | None, counts: Mapping[str, Any], exit_code: int) -> None:
        self._db.execute(
            "INSERT INTO runs (run_id, at, event, command, operator, config_checksum, plan_checksum, counts, exit_code) "
            "VALUES (?, ?, 'end', ?, ?, ?, ?, ?, ?)",
            (run_id, now_iso(), command, operator, config_checksum, plan_checksum,
             json.dumps(dict(counts), sort_keys=True), exit_code),
        )

    # -- changes ------------------------------------------------------------------------------

    def _change_row(self, run_id: str, change: Change, *, phase: str, outcome: str | None, error: str | None,
                    operator: str, config_checksum: str, mailchimp_list_id: str | None,
                    legal_basis: str | None, explanation: str | None) -> tuple:
        before, after = canonical_json(change.before), canonical_json(change.after)
        return (
            run_id, now_iso(), phase, outcome, error, _key(change, before, after), operator, config_checksum,
            change.system, change.action, change.target, change.email, change.contact_id,
            before, after, change.reason,
            legal_basis, explanation, mailchimp_list_id,
        )

    def record(self, run_id: str, changes: Sequence[Change], *, phase: str, operator: str, config_checksum: str,
               outcomes: Sequence[tuple[str | None, str | None]] | None = None,
               list_ids: Mapping[str, str] | None = None) -> None:
        """Insert one row per change in one transaction. `outcomes` pairs (outcome, error) with
        `changes` for outcome rows; `list_ids` maps audience names to Mailchimp list ids."""
        rows = []
        for index, change in enumerate(changes):
            outcome, error = (outcomes[index] if outcomes else (None, None))
            legal_basis = change.after.get("legal_basis") if change.action == "unsubscribe_contact" else None
            explanation = change.after.get("explanation") if change.action == "unsubscribe_contact" else None
            list_id = (list_ids or {}).get(change.target) if change.system == "mailchimp" else None
            rows.append(self._change_row(
                run_id, change, phase=phase, outcome=outcome, error=error, operator=operator,
                config_checksum=config_checksum, mailchimp_list_id=list_id,
                legal_basis=legal_basis, explanation=explanation,
            ))
        with self._transaction():
            self._db.executemany(
                "INSERT INTO changes (run_id, at, phase, outcome, error, change_key, operator, config_checksum, "
                "system, action, target, email, contact_id, before, after, reason, legal_basis, explanation, "
                "mailchimp_list_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    # -- memory (R5, R8) ----------------------------------------------------------------------

    def memory(self, *, retry_refused: bool = False) -> Memory:
        """The product's memory (R5, R8, R15): see `audit_memory.read_memory`."""
        return read_memory(self._db, retry_refused=retry_refused)

    def record_seen_live(self, run_id: str, seen: Sequence[tuple[str, str, str]]) -> None:
        """(Mailchimp list id, email, status) of members this product archived that an apply's
        observation found live again: R8 no longer counts that archive as evidence of consent."""
        if not seen:
            return
        with self._transaction():
            # Ordered against the change rows by their seq (times can share a millisecond).
            (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
            self._db.executemany(
                "INSERT INTO observations (run_id, at, mailchimp_list_id, email, status, note, after_change_seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, now_iso(), list_id, email, status,
                  "seen live after this product archived it: restored by someone else", last)
                 for list_id, email, status in seen])

    def attempted_since(self, at: str) -> frozenset[str]:
        """Keys of the changes an apply attempted at or after `at` (the stored time format)."""
        rows = self._db.execute("SELECT DISTINCT change_key FROM changes WHERE phase = 'attempted' AND at >= ?", (at,))
        return frozenset(row[0] for row in rows)

    def attempted_changes_since(self, at: str) -> list[Change]:
        """The changes an apply attempted at or after `at`, rebuilt from their rows (for comparing
        with a pseudonymised plan file, whose change keys are over pseudonymised emails)."""
        rows = self._db.execute(
            "SELECT DISTINCT system, action, target, email, contact_id, before, after, reason FROM changes "
            "WHERE phase = 'attempted' AND at >= ?", (at,))
        return [Change.make(system, action, target, email, json.loads(before or "{}"), json.loads(after or "{}"),
                            reason or "", 0, contact_id)
                for system, action, target, email, contact_id, before, after, reason in rows]

    def unfinished_attempts(self) -> list[Attempt]:
        """Attempted rows with no outcome row for the same change after them."""
        rows = self._db.execute(
            "SELECT a.run_id, a.change_key, a.action, a.target, a.email FROM changes a "
            "WHERE a.phase = 'attempted' AND NOT EXISTS ("
            "  SELECT 1 FROM changes o WHERE o.phase = 'outcome' AND o.change_key = a.change_key AND o.seq > a.seq)"
            " ORDER BY a.seq"
        ).fetchall()
        seen: dict[str, Attempt] = {}
        for run_id, key, action, target, email in rows:
            seen[key] = Attempt(run_id, key, action, target, email)
        return list(seen.values())

    def record_verification(self, run_id: str, attempt: Attempt, *, still_needed: bool, operator: str,
                            config_checksum: str) -> None:
        """The outcome of an interrupted attempt, found by re-observing (SPEC §8)."""
        row = self._db.execute(
            "SELECT system, action, target, email, contact_id, before, after, reason, legal_basis, explanation, "
            "mailchimp_list_id FROM changes WHERE change_key = ? AND phase = 'attempted' ORDER BY seq DESC LIMIT 1",
            (attempt.change_key,),
        ).fetchone()
        if row is None:
            return
        outcome = "not_applied" if still_needed else "verified"
        note = ("re-verified: still needed, applied again in this run" if still_needed
                else "re-verified: the vendor already holds this change")
        self._db.execute(
            "INSERT INTO changes (run_id, at, phase, outcome, error, change_key, operator, config_checksum, system, "
            "action, target, email, contact_id, before, after, reason, legal_basis, explanation, mailchimp_list_id) "
            "VALUES (?, ?, 'outcome', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, now_iso(), outcome, note, attempt.change_key, operator, config_checksum, *row),
        )

    # -- queries (reconcile --audit) ----------------------------------------------------------

    def query(self, *, since: str | None = None, email: str | None = None, action: str | None = None,
              outcome: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM changes WHERE 1=1"
        params: list[Any] = []
        if since:
            sql += " AND at >= ?"
            params.append(since)
        if email:
            sql += " AND email = ?"
            params.append(email.strip().lower())
        if action:
            sql += " AND action = ?"
            params.append(action)
        if outcome:
            sql += " AND outcome = ?"
            params.append(outcome)
        sql += " ORDER BY seq"
        cursor = self._db.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def runs(self) -> list[dict[str, Any]]:
        cursor = self._db.execute("SELECT * FROM runs ORDER BY seq")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


# -- the apply lock -----------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def apply_lock(audit_path: str, *, operator: str) -> Iterator[None]:
    """Exclusive lock file beside the audit database; names the holder when refused."""
    lock_path = Path(audit_path + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "operator": operator, "since": now_iso()}
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise LockHeld(_lock_message(lock_path)) from None
    with os.fdopen(fd, "w") as handle:
        json.dump(holder, handle)
    try:
        yield
    finally:
        try:
            lock_path.unlink()
        except FileNotFoundError:
            pass


def _lock_message(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    who = f"pid {info.get('pid', '?')} on {info.get('host', '?')} (operator {info.get('operator', '?')}, since {info.get('since', '?')})"
    pid = info.get("pid")
    if info.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return (f"apply lock {lock_path} is stale: held by {who}, which is no longer running; "
                f"if no apply is running, delete {lock_path} and re-run")
    return f"another apply is running: {lock_path} is held by {who}; wait for it to finish"
