"""Keyed pseudonyms (HMAC-SHA256) of emails, names and email-like text, for the two files that
leave the operator's machine: a snapshot (`--plan --snapshot-out`, key `RECONCILER_SNAPSHOT_KEY`
or a random one) and a plan file (`--plan --out` under `RECONCILER_PLAN_KEY`).

Separate from the snapshot's shape and the plan's format because the privacy decisions live here,
testable alone: the same person gets the same fake address in both vendors, a valid email stays
valid and an invalid one stays invalid, and nothing can be reversed, nor a guessed address
confirmed, without the key (an unkeyed hash could be confirmed by hashing a list of addresses).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace
from typing import Any, Mapping

from reconciler.errors import ReconcilerError
from reconciler.model import is_valid_email, normalise_email
from reconciler.plan import Change, Plan, Report
from reconciler.normalise import normalise_text
from reconciler.render.mask import EMAIL_PATTERN

KEY_VARIABLE = "RECONCILER_SNAPSHOT_KEY"
PLAN_KEY_ENV = "RECONCILER_PLAN_KEY"
MIN_KEY_LENGTH = 16
# Reserved for documentation (RFC 2606): no real mailbox can receive mail there, and Mailchimp's
# and HubSpot's address checks accept it (`.invalid` would be refused by Mailchimp's).
DOMAIN = "pseudonym.example.com"


class Pseudonyms:
    """One snapshot's pseudonyms, all derived from one key (`random`: written nowhere)."""

    def __init__(self, key: bytes, *, random: bool) -> None:
        self._key = key
        self.random = random
        self._emails: dict[str, str] = {}  # each person is met in both vendors and in the memory

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Pseudonyms":
        """`RECONCILER_SNAPSHOT_KEY` when set (stable pseudonyms: two snapshots compare), else a
        random key that is never written (pseudonyms differ from one snapshot to the next)."""
        given = env.get(KEY_VARIABLE)
        if given is None or given == "":
            return cls(secrets.token_bytes(32), random=True)
        if len(given) < MIN_KEY_LENGTH:
            raise ReconcilerError(f"{KEY_VARIABLE} is too short ({len(given)} characters): use at least "
                                  f"{MIN_KEY_LENGTH} random characters (e.g. `openssl rand -hex 32`), or unset it")
        return cls(given.encode("utf-8"), random=False)

    def digest(self, kind: str, value: str, length: int = 16) -> str:
        mac = hmac.new(self._key, f"{kind}\0{value}".encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()[:length]

    def email(self, raw: str | None) -> str | None:
        """The fake address of a (normalised) email: valid stays valid, invalid stays invalid
        (with an `@` if it had one, since Mailchimp's seeds need one), None stays None."""
        email = normalise_email(raw)
        if not email:
            return email
        fake = self._emails.get(email)
        if fake is None:
            tag = self.digest("email", email)
            if is_valid_email(email):
                fake = f"p{tag}@{DOMAIN}"
            else:
                fake = f"invalid-{tag}@no-dot" if "@" in email else f"invalid-{tag}"
            self._emails[email] = fake
        return fake

    def name(self, value: Any, owner: str) -> Any:
        """A fake for a name `owner` (a person's email) holds: values R13 compares as equal
        (`normalise_text`) get the same fake for one person in both vendors, and an empty value
        stays empty, so R6 sees the same differences; two people sharing a name are not linked."""
        if value is None:
            return None
        text = normalise_text(value)
        if text is None:
            return "" if isinstance(value, str) else value
        return "Name-" + self.digest("name", f"{normalise_email(owner)}\0{text}", 10)

    def text(self, value: Any) -> Any:
        """A kept value with every email-like part replaced by its pseudonym (free text, vendor
        error messages, an email held in a merge field or property)."""
        if not isinstance(value, str) or "@" not in value:
            return value
        return EMAIL_PATTERN.sub(lambda found: self.email(found.group(0)) or "", value)


class PlanPseudonyms:
    """A plan with every email (a change's or report's `email`, reasons, values) replaced by its
    pseudonym under `RECONCILER_PLAN_KEY`: the same key gives the same plan file pseudonyms, so
    `--apply FILE` pseudonymises its re-plan and compares change by change."""

    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ReconcilerError(f"{PLAN_KEY_ENV} is too short ({len(key)} characters): use at least "
                                  f"{MIN_KEY_LENGTH} random characters (e.g. `openssl rand -hex 32`)")
        self._names = Pseudonyms(key.encode("utf-8"), random=False)

    @property
    def key_id(self) -> str:
        """Names the key in a plan file without revealing it: an apply with another key is refused."""
        return self._names.digest("key id", "reconciler plan")

    def email(self, email: str) -> str:
        return self._names.email(email) or email

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._names.text(value)
        if isinstance(value, Mapping):
            return {self.value(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def change(self, change: Change) -> Change:
        return Change.make(change.system, change.action, change.target, self.email(change.email),
                           self.value(dict(change.before)), self.value(dict(change.after)),
                           self.value(change.reason), change.step, change.contact_id)

    def report(self, report: Report) -> Report:
        email = self.email(report.email) if report.email else report.email
        return Report(report.kind, report.target, email, self.value(report.reason))

    def plan(self, plan: Plan) -> Plan:
        return replace(plan, changes=tuple(self.change(c) for c in plan.changes),
                       reports=tuple(self.report(r) for r in plan.reports))


def plan_pseudonyms(env: Mapping[str, str]) -> PlanPseudonyms | None:
    """The plan pseudonyms of `RECONCILER_PLAN_KEY`, or None when it is unset or empty."""
    key = env.get(PLAN_KEY_ENV) or ""
    return PlanPseudonyms(key) if key else None
