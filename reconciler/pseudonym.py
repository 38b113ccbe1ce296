"""Keyed pseudonyms for emails in plan files (`RECONCILER_PLAN_KEY`): a reviewed plan that travels
(a CI artifact, a chat attachment) without anyone's address in it, and that `--apply FILE` can
still compare with the live state.

The same email always gets the same pseudonym under one key (HMAC-SHA256 of the trimmed,
lower-cased address), so the apply pseudonymises its re-plan with the key and compares change by
change. Without the key a pseudonym cannot be turned back into the address, nor confirmed by
hashing a guessed one (an unkeyed hash could be, by trying a list of known addresses).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from typing import Any, Mapping

from reconciler.errors import ReconcilerError
from reconciler.plan import Change, Plan, Report
from reconciler.render.mask import EMAIL_PATTERN

PLAN_KEY_ENV = "RECONCILER_PLAN_KEY"
DOMAIN = "pseudonym.invalid"  # RFC 2606: never a real mailbox
MIN_KEY_LENGTH = 16


class Pseudonymiser:
    """Replaces every email in a change or report (its `email`, reasons, values) by its pseudonym."""

    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ReconcilerError(f"{PLAN_KEY_ENV} is {len(key)} characters long; use a random secret of at least "
                                  f"{MIN_KEY_LENGTH} (e.g. `python -c \"import secrets; print(secrets.token_hex(32))\"`)")
        self._key = key.encode("utf-8")

    @property
    def key_id(self) -> str:
        """Names the key in a plan file without revealing it: an apply with another key is refused."""
        return hmac.new(self._key, b"reconciler plan key id", hashlib.sha256).hexdigest()[:16]

    def email(self, email: str) -> str:
        digest = hmac.new(self._key, email.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()
        return f"p{digest[:24]}@{DOMAIN}"

    def text(self, text: str) -> str:
        return EMAIL_PATTERN.sub(lambda found: self.email(found.group(0)), text)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.value(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def change(self, change: Change) -> Change:
        email = self.email(change.email) if change.email else change.email
        return Change.make(change.system, change.action, change.target, email, self.value(dict(change.before)),
                           self.value(dict(change.after)), self.text(change.reason), change.step, change.contact_id)

    def report(self, report: Report) -> Report:
        email = self.email(report.email) if report.email else report.email
        return Report(report.kind, report.target, email, self.text(report.reason))

    def plan(self, plan: Plan) -> Plan:
        return replace(plan, changes=tuple(self.change(c) for c in plan.changes),
                       reports=tuple(self.report(r) for r in plan.reports))


def plan_pseudonymiser(env: Mapping[str, str]) -> Pseudonymiser | None:
    """The pseudonymiser of `RECONCILER_PLAN_KEY`, or None when it is unset or empty."""
    key = env.get(PLAN_KEY_ENV) or ""
    return Pseudonymiser(key) if key else None
