"""The JSON plan (SPEC §5 `--format json`, `--out FILE`, `--apply FILE`): versioned document, I/O.

Emails. The plan *file* (`--out`, read back by `--apply FILE`) keeps the real emails: the
stale-plan check compares its changes with the re-plan's, and the checksum is over real emails,
so a masked file could never be applied. SPEC §5 protects it instead by writing it owner-only
(0600, created that way, never world-readable even for a moment). With `RECONCILER_PLAN_KEY` set
(reconciler.pseudonym), the file holds keyed pseudonyms instead, for plans that travel (a CI
artifact): the apply pseudonymises its re-plan with the same key and compares those. SPEC §5's masking rule is about
what reaches stdout, so the CLI should pass `redact=should_redact(...)` for `--format json` on
stdout: a redacted document masks every email (changes, reports, reasons, values), says
`"redacted": true`, keeps the real plan's `checksum` (enough for `--apply --checksum SHA`), and
is refused by `read_plan_json`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from reconciler.errors import ReconcilerError, StalePlan
from reconciler.private_files import write_private
from reconciler.plan import ACTIONS, FORMAT_VERSION, HUBSPOT, MAILCHIMP, Change, Plan, checksum_of
from reconciler.render.diff import plain
from reconciler.render.mask import mask_email, mask_text, mask_value
from reconciler.render.summary import counts

DOCUMENT_KIND = "hubspot-mailchimp-reconciler/plan"
_CHANGE_KEYS = ("system", "action", "target", "email", "contact_id", "before", "after", "reason", "step")


def _masked_change(canonical: dict[str, Any]) -> dict[str, Any]:
    return {
        **canonical,
        "email": mask_email(canonical["email"]),
        "before": mask_value(canonical["before"]),
        "after": mask_value(canonical["after"]),
        "reason": mask_text(canonical["reason"]),
    }


def _masked_report(canonical: dict[str, Any]) -> dict[str, Any]:
    email = canonical["email"]
    return {**canonical, "email": None if email is None else mask_email(email), "reason": mask_text(canonical["reason"])}


def plan_to_document(plan: Plan, *, config_checksum: str, audiences: Sequence[str], options: Mapping[str, Any],
                     redact: bool, generated_at: str | None = None, pseudonymiser: Any = None) -> dict[str, Any]:
    """The versioned JSON document for `plan` (plain values, ready for `json.dumps`).

    With a `pseudonymiser` (reconciler.pseudonyms.PlanPseudonyms, the plan file under `RECONCILER_PLAN_KEY`) every
    email is its keyed pseudonym; `checksum` stays the real plan's (for `--apply --checksum`) and
    `file_checksum` is over the pseudonymised changes, so an edit of the file is still caught."""
    shown = pseudonymiser.plan(plan) if pseudonymiser is not None else plan
    changes = [change.canonical() for change in shown.changes]
    reports = [report.canonical() for report in shown.reports]
    if redact:
        changes = [_masked_change(c) for c in changes]
        reports = [_masked_report(r) for r in reports]
    extra: dict[str, Any] = {}
    if pseudonymiser is not None:
        extra = {"pseudonymised": {"scheme": "hmac-sha256", "key_id": pseudonymiser.key_id},
                 "file_checksum": checksum_of(shown.changes)}
    return {
        "kind": DOCUMENT_KIND,
        "format_version": FORMAT_VERSION,
        "generated_at": generated_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_checksum": config_checksum,
        "audiences": list(audiences),
        "options": plain(dict(options)),
        "observed": plain(dict(plan.observed)),
        "redacted": redact,
        "summary": counts(plan.changes, plan.reports),
        "checksum": plan.checksum,
        **extra,
        "changes": changes,
        "reports": reports,
    }


def dumps_document(document: Mapping[str, Any]) -> str:
    """The document as text, the same bytes for stdout and for the plan file."""
    return json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"


def write_plan_json(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Write the plan owner-only (0600), atomically: readers see the old file or the whole new one."""
    write_private(path, dumps_document(document), what="plan file")


def _bad(path: Path, what: str) -> ReconcilerError:
    return ReconcilerError(f"plan file {path}: {what}; run `reconcile --plan --out FILE` again and apply that file")


def _change(path: Path, index: int, item: Any) -> Change:
    if not isinstance(item, dict) or any(key not in item for key in _CHANGE_KEYS):
        raise _bad(path, f"change #{index + 1} is not a plan change (needs {', '.join(_CHANGE_KEYS)})")
    if item["system"] not in (MAILCHIMP, HUBSPOT) or item["action"] not in ACTIONS:
        raise _bad(path, f"change #{index + 1} has unknown system/action {item['system']!r}/{item['action']!r}")
    if not isinstance(item["before"], dict) or not isinstance(item["after"], dict):
        raise _bad(path, f"change #{index + 1}: `before` and `after` must be objects")
    if not isinstance(item["step"], int) or isinstance(item["step"], bool):
        raise _bad(path, f"change #{index + 1}: `step` must be an integer")
    if not all(isinstance(item[key], str) for key in ("target", "email", "reason")) or not isinstance(
            item["contact_id"], (str, type(None))):
        raise _bad(path, f"change #{index + 1}: `target`, `email`, `reason` and `contact_id` must be strings")
    return Change.make(item["system"], item["action"], item["target"], item["email"], item["before"],
                       item["after"], item["reason"], item["step"], item["contact_id"])


def read_plan_json(path: str | os.PathLike[str], pseudonymiser: Any = None) -> tuple[dict[str, Any], tuple[Change, ...]]:
    """The reviewed plan for `--apply FILE`: its document and its changes, checked to be intact.

    A pseudonymised file needs the pseudonymiser of the key it was made with (its changes stay
    pseudonymised: the caller compares them with the re-plan pseudonymised the same way)."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _bad(source, "not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise _bad(source, f"cannot be read ({getattr(error, 'strerror', None) or error})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(source, f"not JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    if not isinstance(document, dict) or document.get("kind") != DOCUMENT_KIND or "format_version" not in document:
        raise _bad(source, "not a reconciler plan (no `kind` and `format_version` of this product)")
    if document["format_version"] != FORMAT_VERSION:
        raise _bad(source, f"format_version {document['format_version']!r} is not the version this reconciler "
                           f"reads ({FORMAT_VERSION})")
    if document.get("redacted") is not False:
        raise _bad(source, "its emails are masked (a `--format json` print-out, not an `--out` file), so it "
                           "cannot be compared with live state")
    items = document.get("changes")
    if not isinstance(items, list) or not isinstance(document.get("checksum"), str):
        raise _bad(source, "`changes` or `checksum` is missing")
    changes = tuple(_change(source, index, item) for index, item in enumerate(items))
    actual = checksum_of(changes)
    expected = document["checksum"]
    if document.get("pseudonymised"):
        expected = _pseudonymised_checksum(source, document, pseudonymiser)
    if actual != expected:
        raise StalePlan(f"stale plan: plan file {source}: its changes do not match its checksum (file says "
                        f"{expected[:12]}…, changes give {actual[:12]}…): it was edited or damaged; "
                        "make a new plan with `reconcile --plan --out FILE` and review it; nothing written")
    return document, changes


def _pseudonymised_checksum(source: Path, document: Mapping[str, Any], pseudonymiser: Any) -> str:
    """The checksum a pseudonymised file's changes must give, once its key is known to be ours."""
    from reconciler.pseudonyms import PLAN_KEY_ENV

    marker = document.get("pseudonymised")
    if pseudonymiser is None:
        raise _bad(source, f"its emails are pseudonymised; set {PLAN_KEY_ENV} to the key the plan was made with")
    if not isinstance(marker, Mapping) or marker.get("key_id") != pseudonymiser.key_id:
        raise _bad(source, f"it was pseudonymised with another {PLAN_KEY_ENV} (key id "
                           f"{(marker or {}).get('key_id') if isinstance(marker, Mapping) else '?'}, this key's is "
                           f"{pseudonymiser.key_id})")
    checksum = document.get("file_checksum")
    if not isinstance(checksum, str):
        raise _bad(source, "`file_checksum` is missing")
    return checksum
