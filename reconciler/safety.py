"""The safety check of R17: does the plan exceed a limit of `safety`, and by how much?

Separate from the rules because it judges a whole plan against thresholds the operator may
override (`--force`); the rules never look at it. Pure: the engine turns violations into exit 3.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

from reconciler.plan import Change, Plan
from reconciler.settings import Config, Limit

# What each limit counts, and the noun its message uses. Every archive counts (R2, R9, R12);
# creates include restores (both add a member that may be mailed); untags are every remove_tags;
# R4's unsubscribe_member changes are the Mailchimp unsubscribes; every remove_from_list (R2/R3
# clean-up and R12 remove_from) is a list removal.
_COUNTED: dict[str, tuple[Callable[[Change], bool], str]] = {
    "max_archives": (lambda c: c.action == "archive_member", "archives"),
    "max_untags": (lambda c: c.action == "remove_tags", "untags"),
    "max_creates": (lambda c: c.action in ("create_member", "restore_member"), "creates/restores"),
    "max_mailchimp_unsubscribes": (lambda c: c.action == "unsubscribe_member", "Mailchimp unsubscribes"),
    "max_hubspot_unsubscribes": (lambda c: c.action == "unsubscribe_contact", "HubSpot unsubscribes"),
    "max_list_removals": (lambda c: c.action == "remove_from_list", "list removals"),
}


@dataclass(frozen=True)
class SafetyViolation:
    """One limit of R17 exceeded in one scope (an audience, a list, or all of HubSpot)."""

    limit: str  # e.g. max_archives
    scope: str  # "audience main", "list 719", "hubspot"
    count: int
    bound: int  # the largest count allowed by the bound that was exceeded
    bound_kind: str  # "count" or "percent"
    percent: float | None  # the configured percent, when bound_kind is "percent"
    base: int | None  # what the percent is of
    noun: str

    @property
    def excess(self) -> int:
        return self.count - self.bound

    @property
    def message(self) -> str:
        if self.bound_kind == "percent":
            share = 100.0 * self.count / self.base if self.base else 100.0
            limit = f"{self.percent:g}% of {self.base} = {self.bound}"
            what = f"{self.count} {self.noun} in {self.scope} ({share:.1f}%) exceed {self.limit} ({limit})"
        else:
            what = f"{self.count} {self.noun} in {self.scope} exceed {self.limit} (count {self.bound})"
        return (f"{what} by {self.excess}; re-run with --force to allow {self.count} {self.noun} "
                f"(limit {self.bound}), or raise safety.{self.limit} in the config")

    def __str__(self) -> str:
        return self.message


def allowed(limit: Limit, base: int | None) -> list[tuple[str, int]]:
    """The bounds of a limit as (kind, largest allowed count); a percent of an unknown base is skipped."""
    bounds = []
    if limit.count is not None:
        bounds.append(("count", int(limit.count)))
    if limit.percent is not None and base is not None:
        # Exceeding the percent means count > percent * base; the largest allowed count is the floor.
        bounds.append(("percent", math.floor(limit.percent * base / 100.0 + 1e-9)))
    return bounds


def check_safety(plan: Plan, config: Config) -> list[SafetyViolation]:
    """Every limit exceeded, by either bound (R17); empty when the plan is safe."""
    violations: list[SafetyViolation] = []
    bases = plan.safety_bases
    audience_bases = dict(bases.get("audiences", {}))
    list_bases = dict(bases.get("lists", {}))
    for name, (counts, noun) in _COUNTED.items():
        limit = getattr(config.safety, name)
        if limit is None:
            continue
        chosen = [c for c in plan.changes if counts(c)]
        for scope, count, base in _scopes(name, chosen, audience_bases, list_bases, bases.get("members")):
            violations.extend(_exceeded(name, limit, scope, count, base, noun))
    return violations


def _scopes(name: str, changes: Iterable[Change], audience_bases: dict, list_bases: dict,
            members: int | None) -> list[tuple[str, int, int | None]]:
    """(scope, count, percent base) per audience, per list, or once for HubSpot unsubscribes."""
    changes = list(changes)
    if name == "max_hubspot_unsubscribes":
        # By email: one person unsubscribed from two subscriptions is one person.
        count = len({c.email for c in changes})
        return [("hubspot", count, members)] if count else []
    per_target = Counter(c.target for c in changes)
    if name == "max_list_removals":
        return [(f"list {t}", n, list_bases.get(t)) for t, n in sorted(per_target.items())]
    return [(f"audience {t}", n, audience_bases.get(t)) for t, n in sorted(per_target.items())]


def _exceeded(name: str, limit: Limit, scope: str, count: int, base: int | None,
              noun: str) -> list[SafetyViolation]:
    found = []
    for kind, bound in allowed(limit, base):
        if count > bound:
            found.append(SafetyViolation(name, scope, count, bound, kind,
                                         limit.percent if kind == "percent" else None,
                                         base if kind == "percent" else None, noun))
    return found
