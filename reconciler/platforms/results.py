"""Small values the platform clients return to the engine instead of vendor JSON.

Shared by both clients so that the apply engine handles one outcome vocabulary (SPEC §8's
applied / refused / failed, plus "already" for a write the vendor had already made).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

APPLIED = "applied"  # the vendor made the change
ALREADY = "already"  # the vendor was already in the desired state (a repeat, or a retried write)
REFUSED = "refused"  # the vendor refused for a compliance reason: reported, remembered, not a failure
FAILED = "failed"  # any other per-item error; `detail` carries the vendor's text
OUTCOMES = (APPLIED, ALREADY, REFUSED, FAILED)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one item of a write (a member, a contact, an email in a batch)."""

    key: str  # the email, or the HubSpot record id for list membership writes
    outcome: str  # one of OUTCOMES
    detail: str = ""  # the vendor's words for refused and failed items
    data: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"id": "123"} for a created contact

    @property
    def ok(self) -> bool:
        """Applied or already there: the change holds."""
        return self.outcome in (APPLIED, ALREADY)
