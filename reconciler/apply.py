"""Apply a plan: R18's order, batched writes, concurrency within the vendors' limits, audit rows.

Separate from the engine's flow (observe, stale and safety checks, prompts) so that the mapping
from typed changes to vendor calls can be read in one place. Every write here is idempotent, so
a change interrupted before its outcome row is safe to send again on the next run.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from reconciler.audit import AuditLog
from reconciler.errors import DailyLimitReached, VendorError
from reconciler.model import OPTED_OUT_STATUSES, WRITABLE_STATUSES, Snapshot
from reconciler.plan import (
    STEP_HANDOVER_HUBSPOT,
    STEP_HANDOVER_MAILCHIMP,
    STEP_OPT_OUTS_CREATE_CONTACTS,
    STEP_OPT_OUTS_TO_HUBSPOT,
    Change,
    Plan,
)
from reconciler.platforms.mailchimp import NewMember
from reconciler.platforms.results import ALREADY, APPLIED, FAILED, WriteResult
from reconciler.settings import Config

# Within one R18 step, the order in which action groups run (create a contact before its
# unsubscribe; HubSpot handover writes before the Mailchimp ones; untag before archive).
ACTION_ORDER = (
    "create_contact", "unsubscribe_contact", "unsubscribe_member", "add_to_list", "set_contact_properties",
    "remove_tags", "archive_member", "restore_member", "create_member", "update_member", "add_tags",
    "remove_from_list",
)
DEFERRED = "deferred"
# The re-check of recent opt-outs reads from a little before the observation began, so clock
# skew between this machine and Mailchimp cannot hide one; members already opted out then are
# known from the snapshot and not counted.
RECHECK_MARGIN_MINUTES = 10


def _minutes_before(iso: str, minutes: int) -> str:
    moment = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (moment - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass(frozen=True)
class Outcome:
    change: Change
    outcome: str  # applied | refused | failed | deferred ("already" is recorded as applied)
    detail: str = ""


def _tags_in(value: Any) -> tuple[list[str], list[str]]:
    """(tags to add, tags to remove) from a change's `after` tags: a presence map or a list."""
    if isinstance(value, Mapping):
        return [t for t, on in value.items() if on], [t for t, on in value.items() if not on]
    return list(value or ()), []


class Applier:
    """Runs one plan's changes against both clients and writes the audit rows around them."""

    def __init__(self, config: Config, hubspot: Any, mailchimp: Any, audit: AuditLog, *, run_id: str,
                 operator: str, progress: Callable[[str, int, int], None] | None = None,
                 snapshot: Snapshot | None = None) -> None:
        self.config = config
        self.hubspot = hubspot
        self.mailchimp = mailchimp
        self.audit = audit
        self.run_id = run_id
        self.operator = operator
        self.progress = progress or (lambda step, done, total: None)
        self.list_ids = {name: a.mailchimp_list_id for name, a in config.audiences.items()}
        self.outcomes: list[Outcome] = []
        self._failed_opt_outs: set[str] = set()  # emails whose R11 change did not succeed
        self._handover_failed: set[str] = set()  # emails whose R12 HubSpot writes did not succeed
        self._created_contacts: dict[str, str] = {}  # email -> new contact id (R11 create_missing)
        self.snapshot = snapshot  # what the plan was made from (R7's re-check compares with it)
        self._opted_out_since: dict[str, set[str] | None] = {}  # audience -> emails opted out since then
        self._recheck_error = ""

    # -- driver -------------------------------------------------------------------------------

    def apply(self, plan: Plan) -> list[Outcome]:
        by_step: dict[int, list[Change]] = defaultdict(list)
        for change in plan.changes:
            by_step[change.step].append(change)
        for step in sorted(by_step):
            groups: dict[str, list[Change]] = defaultdict(list)
            for change in by_step[step]:
                groups[change.action].append(change)
            for action in sorted(groups, key=ACTION_ORDER.index):
                self._run_group(step, action, groups[action])
        return self.outcomes

    def _run_group(self, step: int, action: str, changes: list[Change]) -> None:
        ready: list[Change] = []
        for change in changes:
            why = self._deferral(step, change)
            if why:
                self._record([change], [(DEFERRED, why)])
            else:
                ready.append(change)
        if not ready:
            return
        handler = getattr(self, f"_{action}")
        by_target: dict[str, list[Change]] = defaultdict(list)
        for change in ready:
            by_target[change.target].append(change)
        for target, part in by_target.items():
            self.audit.record(self.run_id, part, phase="attempted", operator=self.operator,
                              config_checksum=self.config.checksum, list_ids=self.list_ids)
            try:
                results = handler(target, part)
            except DailyLimitReached:
                self._record(part, [(FAILED, "HubSpot DAILY limit reached; not sent")] * len(part))
                raise
            except VendorError as exc:
                results = [(FAILED, str(exc))] * len(part)
            self._record(part, results)
            self.progress(action, len(part), len(part))

    def _deferral(self, step: int, change: Change) -> str | None:
        """R18: archives of opted-out members wait for their R11 changes; R12's Mailchimp writes
        wait for its HubSpot writes; R11's unsubscribe waits for its contact's creation."""
        if change.action == "archive_member" and change.before.get("status") in OPTED_OUT_STATUSES \
                and change.email in self._failed_opt_outs:
            return "R18 deferred: the member's opt-out has not reached HubSpot yet"
        if step == STEP_HANDOVER_MAILCHIMP and change.email in self._handover_failed:
            return "R12 deferred: the handover's HubSpot writes or tag removal did not all succeed"
        if step == STEP_OPT_OUTS_TO_HUBSPOT and change.action == "unsubscribe_contact" \
                and change.email in self._failed_opt_outs:
            return "R11 deferred: the contact could not be created"
        if change.system == "mailchimp" and change.action != "unsubscribe_member" \
                and not (step == STEP_HANDOVER_MAILCHIMP and change.action == "remove_tags"):
            recent = self._recent_opt_outs(change.target)
            if recent is None:
                return f"R7 deferred: recent opt-outs could not be re-checked ({self._recheck_error})"
            if change.email in recent:
                return ("R7 deferred: the member opted out in Mailchimp after the plan was observed; "
                        "the next plan carries the opt-out to HubSpot first")
        return None

    def _recent_opt_outs(self, audience: str) -> set[str] | None:
        """Members that unsubscribed or were cleaned while the plan was made and reviewed, read once
        per audience just before its first member write, so R7 (and R18's archive-after-opt-out)
        hold up to the write. None when that read failed: the member writes then wait."""
        if self.snapshot is None or not self.snapshot.observed_at or audience not in self.list_ids:
            return set()
        if audience not in self._opted_out_since:
            list_id = self.list_ids[audience]
            state = self.snapshot.audiences.get(list_id)
            known = {e for e, m in (state.members.items() if state else ()) if m.status in OPTED_OUT_STATUSES}
            try:
                changed = self.mailchimp.opted_out_since(list_id, _minutes_before(self.snapshot.observed_at,
                                                                                  RECHECK_MARGIN_MINUTES))
            except DailyLimitReached:
                raise
            except VendorError as exc:
                self._opted_out_since[audience] = None
                self._recheck_error = str(exc)
            else:
                self._opted_out_since[audience] = changed - known
        return self._opted_out_since[audience]

    def _record(self, changes: Sequence[Change], results: Sequence[tuple[str, str]]) -> None:
        pairs = []
        for change, (outcome, detail) in zip(changes, results):
            outcome = APPLIED if outcome == ALREADY else outcome
            pairs.append((outcome, detail or None))
            self.outcomes.append(Outcome(change, outcome, detail))
            if outcome != APPLIED:
                if change.step in (STEP_OPT_OUTS_CREATE_CONTACTS, STEP_OPT_OUTS_TO_HUBSPOT):
                    self._failed_opt_outs.add(change.email)
                if change.step == STEP_HANDOVER_HUBSPOT or (change.step == STEP_HANDOVER_MAILCHIMP
                                                            and change.action == "remove_tags"):
                    # An archive must not leave the handover tag behind: archived members are
                    # never handed over again, so the tag would stay for good.
                    self._handover_failed.add(change.email)
        self.audit.record(self.run_id, list(changes), phase="outcome", operator=self.operator,
                          config_checksum=self.config.checksum, outcomes=pairs, list_ids=self.list_ids)

    def _parallel(self, changes: Sequence[Change], call: Callable[[Change], WriteResult],
                  workers: int) -> list[tuple[str, str]]:
        def one(change: Change) -> tuple[str, str]:
            try:
                result = call(change)
            except DailyLimitReached:
                raise
            except VendorError as exc:
                return FAILED, str(exc)
            return result.outcome, result.detail

        if len(changes) == 1:
            return [one(changes[0])]
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(changes)))) as pool:
            return list(pool.map(one, changes))

    @property
    def _mc_workers(self) -> int:
        return self.config.mailchimp.max_connections

    @staticmethod
    def _by_key(changes: Sequence[Change], results: Iterable[WriteResult], key: Callable[[Change], str]) -> list[tuple[str, str]]:
        found = {r.key: r for r in results}
        out = []
        for change in changes:
            result = found.get(key(change))
            out.append((result.outcome, result.detail) if result else (FAILED, "no answer for this item"))
        return out

    # -- HubSpot ------------------------------------------------------------------------------

    def _create_contact(self, target: str, changes: list[Change]) -> list[tuple[str, str]]:
        results = self.hubspot.create_contacts([{"email": c.email} for c in changes])
        for result in results:
            if result.ok and result.data.get("id"):
                self._created_contacts[result.key] = str(result.data["id"])
        return self._by_key(changes, results, lambda c: c.email)

    def _unsubscribe_contact(self, subscription_id: str, changes: list[Change]) -> list[tuple[str, str]]:
        def one(change: Change) -> WriteResult:
            retries = 3 if change.email in self._created_contacts else 0
            return self.hubspot.unsubscribe(
                change.email, subscription_id, legal_basis=str(change.after.get("legal_basis", "")),
                explanation=str(change.after.get("explanation", "")), not_found_retries=retries)
        return self._parallel(changes, one, workers=4)

    def _contact_ids(self, changes: Sequence[Change]) -> list[str]:
        return [c.contact_id or self._created_contacts.get(c.email, "") for c in changes]

    def _list_write(self, list_id: str, changes: list[Change], verb: str) -> list[tuple[str, str]]:
        ids = self._contact_ids(changes)
        write = self.hubspot.add_to_list if verb == "add" else self.hubspot.remove_from_list
        write(list_id, [i for i in ids if i])
        # memberships/add and /remove are idempotent and answer for the whole batch: ids that
        # were already (or never) members come back as unchanged, which is the desired state.
        return [(APPLIED, "") if cid else (FAILED, "no HubSpot record id for this contact") for cid in ids]

    def _add_to_list(self, list_id: str, changes: list[Change]) -> list[tuple[str, str]]:
        return self._list_write(list_id, changes, "add")

    def _remove_from_list(self, list_id: str, changes: list[Change]) -> list[tuple[str, str]]:
        return self._list_write(list_id, changes, "remove")

    def _set_contact_properties(self, target: str, changes: list[Change]) -> list[tuple[str, str]]:
        updates: dict[str, dict[str, str]] = {}
        for change, cid in zip(changes, self._contact_ids(changes)):
            updates.setdefault(cid, {}).update({k: "" if v is None else str(v) for k, v in change.after.items()})
        results = self.hubspot.update_contacts({cid: props for cid, props in updates.items() if cid})
        return self._by_key(changes, results, lambda c: c.contact_id or self._created_contacts.get(c.email, ""))

    # -- Mailchimp ----------------------------------------------------------------------------

    def _unsubscribe_member(self, audience: str, changes: list[Change]) -> list[tuple[str, str]]:
        list_id = self.list_ids[audience]
        return self._parallel(changes, lambda c: self.mailchimp.unsubscribe_member(list_id, c.email), self._mc_workers)

    def _archive_member(self, audience: str, changes: list[Change]) -> list[tuple[str, str]]:
        list_id = self.list_ids[audience]
        return self._parallel(changes, lambda c: self.mailchimp.archive_member(list_id, c.email), self._mc_workers)

    def _update_member(self, audience: str, changes: list[Change]) -> list[tuple[str, str]]:
        list_id = self.list_ids[audience]
        return self._parallel(changes, lambda c: self.mailchimp.update_member(list_id, c.email, dict(c.after)),
                              self._mc_workers)

    def _tag_changes(self, audience: str, changes: Sequence[Change], presence: Callable[[Change], Mapping[str, bool]]
                     ) -> list[tuple[str, str]]:
        """Tags through each tag's segment: one bulk call per tag and 500 emails (R6, R9, R12)."""
        list_id = self.list_ids[audience]
        adds: dict[str, list[str]] = defaultdict(list)
        removes: dict[str, list[str]] = defaultdict(list)
        for change in changes:
            for tag, on in presence(change).items():
                (adds if on else removes)[tag].append(change.email)
        failures: dict[str, str] = {}
        for tag in sorted(set(adds) | set(removes), key=str.casefold):
            try:
                results = self.mailchimp.tag_members(list_id, tag, add=adds.get(tag, ()), remove=removes.get(tag, ()))
            except DailyLimitReached:
                raise
            except VendorError as exc:
                for email in adds.get(tag, []) + removes.get(tag, []):
                    failures.setdefault(email, f"tag {tag!r}: {exc}")
                continue
            for result in results:
                if not result.ok:
                    failures.setdefault(result.key, f"tag {tag!r}: {result.detail}")
        return [(FAILED, failures[c.email]) if c.email in failures else (APPLIED, "") for c in changes]

    def _add_tags(self, audience: str, changes: list[Change]) -> list[tuple[str, str]]:
        return self._tag_changes(audience, changes, lambda c: {t: True for t, on in c.after.items() if on})

    def _remove_tags(self, audience: str, changes: list[Change]) -> list[tuple[str, str]]:
        return self._tag_changes(audience, changes, lambda c: {t: False for t, on in c.after.items() if not on})

    def _create_member(self, audience: str, changes: list[Change]) -> list[tuple[str, str]]:
        list_id = self.list_ids[audience]
        status = str(changes[0].after.get("status_if_new") or self.config.audiences[audience].new_member_status)
        members = [NewMember(c.email, dict(c.after.get("merge_fields") or {})) for c in changes]
        results = self._by_key(changes, self.mailchimp.subscribe_members(list_id, members, status=status),
                               lambda c: c.email)
        results = [self._existing_member(list_id, c, r) if r[0] == ALREADY else r for c, r in zip(changes, results)]
        created = [c for c, (outcome, _) in zip(changes, results) if outcome in (APPLIED, ALREADY)]
        tagged = dict(zip((c.email for c in created), self._tag_changes(
            audience, created, lambda c: dict.fromkeys(_tags_in(c.after.get("tags"))[0], True))))
        return [tagged.get(c.email, result) for c, result in zip(changes, results)]

    def _existing_member(self, list_id: str, change: Change, result: tuple[str, str]) -> tuple[str, str]:
        """A create answered "already a member": our own earlier attempt (then tag it as planned), or
        a member that appeared since the plan was made. Only a writable member is tagged (R7): an
        unsubscribed, cleaned or archived one is left for the next plan to decide."""
        status = self.mailchimp.member_status(list_id, change.email)
        if status in WRITABLE_STATUSES:
            return result
        return DEFERRED, f"R7 not tagged: the member already existed as {status or 'unknown'} when created; the next plan decides"

    def _restore_member(self, audience: str, changes: list[Change]) -> list[tuple[str, str]]:
        list_id = self.list_ids[audience]

        def put(change: Change) -> WriteResult:
            status = str(change.after.get("status") or self.config.audiences[audience].new_member_status)
            return self.mailchimp.restore_member(list_id, change.email, status=status,
                                                 merge_fields=dict(change.after.get("merge_fields") or {}))

        results = self._parallel(changes, put, self._mc_workers)
        restored = [c for c, (outcome, _) in zip(changes, results) if outcome in (APPLIED, ALREADY)]

        def presence(change: Change) -> dict[str, bool]:
            add, remove = _tags_in(change.after.get("tags"))
            return {**dict.fromkeys(remove, False), **dict.fromkeys(add, True)}

        tagged = dict(zip((c.email for c in restored), self._tag_changes(audience, restored, presence)))
        return [tagged.get(c.email, result) for c, result in zip(changes, results)]


def summarise(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        counts[outcome.outcome] += 1
    return dict(counts)


__all__ = ["Applier", "Outcome", "summarise", "DEFERRED"]
