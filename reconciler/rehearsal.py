"""`reconcile --sandbox` on a snapshot (`--sandbox-seed FILE` from `--plan --snapshot-out`): the
sandbox state and the audit log a rehearsal uses, kept apart from the live ones.

Separate from the engine because these are the rules that keep a rehearsal honest: a sandbox
state built from another seed is never reused, and a rehearsal never reads or writes the live
audit log; it gets its own, rebuilt from the snapshot's memory facts and checked against them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from reconciler.audit import AuditLog, now_iso
from reconciler.errors import ReconcilerError
from reconciler.model import Memory, Refusal

SEED_MARK_SUFFIX = ".seed-sha256"
MEMORY_LIST = "rehearsal-memory"  # the list id of rebuilt opt-outs that name no audience
RUN_ID = "rehearsal-seed"
_COLUMNS = ("run_id, at, phase, outcome, error, change_key, operator, config_checksum, system, action, target, "
            "email, contact_id, before, after, reason, legal_basis, explanation, mailchimp_list_id")


def seed_digest(seed: Mapping[str, Any]) -> str:
    """sha256 of the seed's content (not its file: comments and layout do not count)."""
    text = json.dumps(seed, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class SandboxState:
    """The state file of `--sandbox` and the digest of the seed it was built from (beside it)."""

    path: Path
    digest: str

    @property
    def mark(self) -> Path:
        return Path(str(self.path) + SEED_MARK_SUFFIX)

    def check(self, seed_path: str, discard: Callable[[str], None], info: Callable[[str], None], *,
              strict: bool = False) -> bool:
        """Discards a state built from another seed; True when the sandbox starts from the seed.
        A state without a mark (written before marks existed) is kept and marked as this seed's,
        unless `strict` (a rehearsal, which must never run on a state of unknown origin)."""
        if not self.path.exists():
            return True
        recorded = self.mark.read_text(encoding="utf-8").strip() if self.mark.exists() else None
        if recorded == self.digest or (recorded is None and not strict):
            return False
        discard(str(self.path))
        why = "was built from another seed than" if recorded else "does not say which seed it was built from; a rehearsal on"
        info(f"sandbox: {self.path} {why} {seed_path}: starting over from it")
        return True

    def record(self) -> None:
        temporary = Path(str(self.mark) + ".tmp")
        temporary.write_text(self.digest + "\n", encoding="utf-8")
        os.replace(temporary, self.mark)


def rehearsal_audit(seed: Mapping[str, Any], state: SandboxState, fresh: bool, live_audit: str,
                    info: Callable[[str], None]) -> str | None:
    """The audit log of a rehearsal (None for a seed without a `rehearsal:` section, such as the
    demo's): `rehearsal-<seed digest>.sqlite` beside the sandbox state, rebuilt from the snapshot's
    memory whenever the sandbox starts from the seed, so memory and vendor state stay in step."""
    section = seed.get("rehearsal")
    if not isinstance(section, Mapping):
        return None
    path = audit_path(state)
    if fresh or not path.exists():
        for old in state.path.parent.glob("rehearsal-*.sqlite*"):
            if old.name.endswith((".sqlite", ".sqlite-wal", ".sqlite-shm")):  # never a lock file
                old.unlink()
        facts = section.get("memory") or {}
        try:
            expected = memory_of(facts)
            log = AuditLog.open(str(path))
            log.close()
            _insert(path, facts, str(section.get("config_checksum") or ""))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ReconcilerError(f"rehearsal: the seed's rehearsal.memory is not as `--snapshot-out` writes it "
                                  f"({type(exc).__name__}: {exc}); write the snapshot again") from None
        log = AuditLog.open(str(path))
        try:
            rebuilt = log.memory()
        finally:
            log.close()
        if rebuilt != expected:
            raise ReconcilerError(f"rehearsal: the audit memory of the snapshot could not be rebuilt in {path}; "
                                  "write the snapshot again with this version of the reconciler")
        info(f"rehearsal: audit log {path}, rebuilt from the snapshot's memory "
             f"({sum(len(v) for v in facts.values())} facts); the live audit log {live_audit} is not used")
    else:
        info(f"rehearsal: audit log {path} (the live audit log {live_audit} is not used; --sandbox-reset starts over)")
    return str(path)


def audit_path(state: SandboxState) -> Path:
    return state.path.parent / f"rehearsal-{state.digest[:16]}.sqlite"


def audit_of_seed(seed_path: str, state_path: Path) -> str | None:
    """The rehearsal audit log of a snapshot seed (for `--audit --sandbox --sandbox-seed FILE`), None
    for a seed that is no snapshot or cannot be read (the config's audit.path then applies)."""
    from reconciler.sandbox.seed import SeedError, load_seed

    try:
        seed = load_seed(seed_path)
    except SeedError:
        return None
    return str(audit_path(SandboxState(state_path, seed_digest(seed)))) if "rehearsal" in seed else None


def memory_of(facts: Mapping[str, Any]) -> Memory:
    """The Memory the facts describe (what the rebuilt log must give back)."""
    return Memory(
        refusals={(f["list_id"], f["email"]): Refusal(f["action"], f["reason"], f["at"])
                  for f in facts.get("refusals") or []},
        archived_by_us={(f["list_id"], f["email"]): f["status"] for f in facts.get("archived_by_us") or []},
        opted_out={f["email"]: f["reason"] for f in facts.get("opted_out") or []},
        handovers_unfinished={(f["list_id"], f["email"]): f["reason"] for f in facts.get("handovers_unfinished") or []},
    )


def _insert(path: Path, facts: Mapping[str, Any], checksum: str) -> None:
    """Rows that audit_memory.read_memory reads back as the facts, in an order where none undoes
    another: our archives first, then refusals and unfinished handovers, then opt-outs (an
    "archived while unsubscribed" opt-out is an archive under MEMORY_LIST, which undoes nothing)."""
    at = now_iso()
    rows: list[tuple[Any, ...]] = []

    def row(phase: str, outcome: str | None, action: str, email: str, list_id: str | None, *, before: Any = None,
            reason: str = "remembered by the live audit log (rehearsal snapshot)", error: str | None = None,
            when: str = at, system: str = "mailchimp") -> None:
        key = hashlib.sha256(f"{action}\0{list_id}\0{email}\0{len(rows)}".encode()).hexdigest()[:32]
        rows.append((RUN_ID, when, phase, outcome, error, key, "rehearsal", checksum, system, action,
                     list_id or "", email, None, json.dumps(before or {}), "{}", reason, None, None, list_id))
        if phase == "attempted":  # finished, so that the rehearsal's first apply re-verifies nothing
            rows.append((RUN_ID, when, "outcome", "applied", None, key, "rehearsal", checksum, system, action,
                         list_id or "", email, None, json.dumps(before or {}), "{}", reason, None, None, list_id))

    for fact in facts.get("archived_by_us") or []:
        row("outcome", "applied", "archive_member", fact["email"], fact["list_id"], before={"status": fact["status"]})
    for fact in facts.get("refusals") or []:
        row("outcome", "refused", fact["action"], fact["email"], fact["list_id"], error=fact["reason"], when=fact["at"])
    for fact in facts.get("handovers_unfinished") or []:
        row("attempted", None, "remove_tags", fact["email"], fact["list_id"], reason=fact["reason"])
    for fact in facts.get("opted_out") or []:
        what, _, day = str(fact["reason"]).rpartition(" on ")
        status = what.removeprefix("archived while ")
        if what.startswith("archived while ") and status in ("unsubscribed", "cleaned"):
            row("outcome", "applied", "archive_member", fact["email"], MEMORY_LIST, before={"status": status},
                when=f"{day}T00:00:00.000Z")
        else:
            row("attempted", None, "unsubscribe_contact", fact["email"], None, reason=f"{what}: remembered",
                when=f"{day}T00:00:00.000Z", system="hubspot")
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO runs (run_id, at, event, command, operator, config_checksum) "
                   "VALUES (?, ?, 'start', 'rehearsal-seed', 'rehearsal', ?)", (RUN_ID, at, checksum))
        db.executemany(f"INSERT INTO changes ({_COLUMNS}) VALUES ({', '.join('?' * 19)})", rows)
        db.execute("INSERT INTO runs (run_id, at, event, command, operator, config_checksum, counts, exit_code) "
                   "VALUES (?, ?, 'end', 'rehearsal-seed', 'rehearsal', ?, ?, 0)",
                   (RUN_ID, at, checksum, json.dumps({"facts": len(rows)})))
        db.execute("COMMIT")
    finally:
        db.close()
