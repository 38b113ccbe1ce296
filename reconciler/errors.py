"""The product's own exception classes, and the exit code each one maps to (SPEC §6).

One place so that the CLI can turn any of them into one clear line and an exit code, and so
that platform code can say "transient" (retry) or "permanent" (report) without the caller
knowing HTTP.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2  # --plan --detailed-exitcode found changes
EXIT_UNSAFE = 3
EXIT_STALE = 4
EXIT_PARTIAL = 5  # apply finished but some changes failed


class ReconcilerError(Exception):
    """A user-facing error: `str(error)` is one line saying what, where and what to do."""

    exit_code = EXIT_ERROR


class ConfigError(ReconcilerError):
    """One or more configuration problems, each `file:line:column key.path: what; what to do`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(f"{count} configuration problem{'s' if count != 1 else ''}:\n" + "\n".join(self.problems))


class UnsafePlan(ReconcilerError):
    exit_code = EXIT_UNSAFE


class StalePlan(ReconcilerError):
    exit_code = EXIT_STALE


class VendorError(ReconcilerError):
    """An error answered by HubSpot or Mailchimp (or the connection to them)."""

    transient = False

    def __init__(self, message: str, *, system: str = "", status: int | None = None, detail: str = "") -> None:
        self.system = system
        self.status = status
        self.detail = detail
        super().__init__(message)


class TransientVendorError(VendorError):
    """Worth retrying: 429, 5xx, connection errors, timeouts."""

    transient = True


class PermanentVendorError(VendorError):
    """Not retried: 400/401/403/404 and the like; reported with the vendor's message."""


class DailyLimitReached(PermanentVendorError):
    """HubSpot's DAILY rate limit: the run stops; retry after the limit resets."""


class LockHeld(ReconcilerError):
    """Another apply holds the audit database's lock."""
