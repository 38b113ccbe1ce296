"""The stale-plan check of `--apply FILE` and `--apply --checksum SHA` (SPEC §5): the reviewed plan
against the re-plan from live state.

Separate from the engine's flow because it is the one place that decides whether what runs is what
was reviewed: an edited file, other options, or a live state that moved all end in exit 4 here.
"""

from __future__ import annotations

from typing import Any

from reconciler.audit import AuditLog, change_key
from reconciler.errors import ReconcilerError, StalePlan
from reconciler.plan import Change, Plan


def _dropped_as_refused(change: Change, plan: Plan) -> bool:
    """The re-plan drops changes whose refusal is now remembered (R5, R8): not a stale plan."""
    return any(r.kind == "refused" and r.email == change.email and r.target == change.target for r in plan.reports)


def check_reviewed(args: Any, plan: Plan, console: Any, *, redact: bool, audit: AuditLog | None = None,
                   pseudonymiser: Any = None) -> None:
    """`--apply FILE` / `--apply --checksum SHA`: refuse (exit 4) when the re-plan differs.

    A reviewed change that an apply since the review attempted and the re-plan no longer needs is
    done, not stale: re-running the same plan after a partly failed apply (exit 5) goes on.
    A pseudonymised file (`RECONCILER_PLAN_KEY`) is compared with the re-plan pseudonymised by the
    same key; what the re-plan adds is shown with its real (masked) emails."""
    from reconciler.render.text import render_plan, render_stale_diff

    if getattr(args, "plan_file", None):
        document, reviewed = reviewed_plan(args, pseudonymiser)
        keyed = pseudonymiser if document.get("pseudonymised") else None
        done = _attempted_since_review(audit, document.get("generated_at"), keyed)
        compared = keyed.plan(plan) if keyed is not None else plan
        now = {c.identity(): real for c, real in zip(compared.changes, plan.changes)}
        then = {c.identity(): c for c in reviewed}
        added = [c for key, c in now.items() if key not in then]
        removed = [c for key, c in then.items()
                   if key not in now and not _dropped_as_refused(c, compared) and change_key(c) not in done]
        if added or removed:
            render_stale_diff(console, added=added, removed=removed, redact=redact)
            raise StalePlan(
                f"stale plan: {len(added)} change(s) not in {args.plan_file} and {len(removed)} reviewed change(s) "
                f"no longer planned (e.g. {(added or removed)[0].action} {(added or removed)[0].target}); "
                "re-run --plan, review it and apply the new plan")
    if getattr(args, "checksum", None) and args.checksum != plan.checksum:  # both given: both must match
        render_plan(console, plan, redact=redact)
        raise StalePlan(f"stale plan: the live state gives checksum {plan.checksum}, not the reviewed "
                        f"{args.checksum}; review the plan above and re-run with --checksum {plan.checksum}")


def reviewed_plan(args: Any, pseudonymiser: Any = None) -> tuple[dict[str, Any], tuple[Change, ...]]:
    """The plan file of `--apply FILE`, refused (exit 4) when its changes are not the reviewed ones.

    The file's `checksum` is over every field of every change (action, system, target, email,
    contact_id, before, after, reason, step): a change edited by hand after the review (an `after`,
    a record id) no longer matches it, and is refused even if the re-plan happens to agree with
    the edit. A file made with `--retry-refused` plans what a plain re-plan would report as
    remembered refusals, so it is applied with `--retry-refused` (and only such a file is)."""
    from reconciler.render.json_plan import read_plan_json

    document, reviewed = read_plan_json(args.plan_file, pseudonymiser)  # StalePlan when edited after the review
    made_with = bool((document.get("options") or {}).get("retry_refused", False))
    given = bool(getattr(args, "retry_refused", False))
    if made_with != given:
        raise ReconcilerError(
            f"plan file {args.plan_file} was made {'with' if made_with else 'without'} --retry-refused; apply it "
            f"{'with' if made_with else 'without'} --retry-refused too (`reconcile --apply {args.plan_file}"
            f"{' --retry-refused' if made_with else ''}`), or make a new plan; nothing written")
    return document, reviewed


def _attempted_since_review(audit: AuditLog | None, generated_at: Any, pseudonymiser: Any = None) -> frozenset[str]:
    """Keys of the changes attempted since the review; with a pseudonymiser, the keys of those
    changes pseudonymised (as the reviewed file's changes are)."""
    from reconciler.audit_query import parse_since

    if audit is None or not isinstance(generated_at, str):
        return frozenset()
    try:
        since = parse_since(generated_at)
    except ReconcilerError:  # an unreadable time: nothing counts as done, the check stays strict
        return frozenset()
    if pseudonymiser is None:
        return audit.attempted_since(since)
    return frozenset(change_key(pseudonymiser.change(c)) for c in audit.attempted_changes_since(since))
