"""`reconcile --audit` (SPEC §8): check the filters, read the append-only log, show it as a table, CSV or JSON.

Separate from audit.py (which writes, migrates and locks the database) and from the engine (which
plans and applies): this is the compliance officer's read side, and it masks what it shows.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timezone
from typing import Any, Sequence

from reconciler import errors
from reconciler.audit import OUTCOMES, AuditLog
from reconciler.errors import ReconcilerError
from reconciler.plan import ACTIONS
from reconciler.render.mask import mask_value, show_email
from reconciler.settings import Config

# What a person reading the table needs to answer "when and why, on what legal basis"; the CSV
# and JSON forms carry every column of the database.
TABLE_COLUMNS = ("at", "run_id", "phase", "outcome", "action", "target", "email", "reason", "legal_basis",
                 "explanation", "error")
_WRAPPED = ("reason", "explanation", "error")  # the rest are short and read best whole
# Off a terminal (a file, a CI log, grep) cells are never wrapped: one row is one line, as wide as it needs.
_UNWRAPPED_WIDTH = 10_000


def parse_since(text: str) -> str:
    """`--since` as the stored time format (UTC, milliseconds, `Z`), so it compares as text.

    A date means its midnight in UTC; a time without an offset is taken as UTC."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ReconcilerError(
            f"--since {text!r}: not a date or time; use YYYY-MM-DD (e.g. 2025-03-01) "
            "or an ISO 8601 time (e.g. 2025-03-01T14:30:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _choice(flag: str, value: str | None, allowed: Sequence[str]) -> str | None:
    # A misspelt filter would otherwise answer "no rows", which reads as "nothing happened".
    if value is None:
        return None
    if value not in allowed:
        raise ReconcilerError(f"--{flag} {value!r} is not one of: {', '.join(allowed)}")
    return value


def query_rows(config: Config, *, since: str | None = None, email: str | None = None, action: str | None = None,
               outcome: str | None = None) -> list[dict[str, Any]]:
    """The change rows matching every filter given, oldest first, unmasked."""
    since_at = parse_since(since) if since is not None else None
    action = _choice("action", action, ACTIONS)
    outcome = _choice("outcome", outcome, OUTCOMES)
    path = config.audit.path
    if not os.path.exists(path):
        raise ReconcilerError(f"audit: no audit database at {path} yet; it is written by --apply "
                              "(check audit.path in the config and the directory you run in)")
    log = AuditLog.open(path)
    try:
        return log.query(since=since_at, email=email, action=action, outcome=outcome)
    finally:
        log.close()


def displayed(rows: list[dict[str, Any]], *, redact: bool) -> list[dict[str, Any]]:
    """Rows as shown: `before`/`after` as objects, emails masked everywhere when `redact`."""
    shown = []
    for row in rows:
        row = dict(row, before=json.loads(row["before"]), after=json.loads(row["after"]))
        if redact:
            row = {key: (value if key in ("email",) else mask_value(value)) for key, value in row.items()}
        row["email"] = show_email(row["email"], redact)
        shown.append(row)
    return shown


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def run_audit(args: Any, config: Config, cli_io: Any) -> int:
    """`reconcile --audit [--since DATE] [--email EMAIL] [--action A] [--outcome O] [--format table|csv|json]`."""
    from reconciler.engine import _redact, engine_io

    io = engine_io(cli_io)
    rows = query_rows(config, since=getattr(args, "since", None), email=getattr(args, "email", None),
                      action=getattr(args, "action", None), outcome=getattr(args, "outcome", None))
    shown = displayed(rows, redact=_redact(args, io))
    fmt = getattr(args, "format", None) or "table"
    if fmt == "json":
        io.stdout.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        names = list(shown[0]) if shown else ["seq", *TABLE_COLUMNS]
        writer = csv.DictWriter(io.stdout, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _text(value) for key, value in row.items()} for row in shown)
    else:
        from rich.console import Console
        from rich.table import Table

        title = f"Audit: {len(shown)} row(s) from {config.audit.path}"
        table = Table(title=title)
        for column in TABLE_COLUMNS:
            table.add_column(column, no_wrap=column not in _WRAPPED, overflow="fold")
        for row in shown:
            table.add_row(*(_text(row.get(column)) for column in TABLE_COLUMNS))
        console = io.console if io.stdout_isatty else Console(file=io.stdout, width=_UNWRAPPED_WIDTH, highlight=False)
        console.print(table)
    return errors.EXIT_OK

