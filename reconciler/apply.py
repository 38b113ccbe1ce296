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
    APPLY_ACTION_ORDER,
    MAILCHIMP,
    STEP_HANDOVER_HUBSPOT,
    STEP_HANDOVER_MAILCHIMP,
    STEP_OPT_OUTS_CREATE_CONTACTS,
    STEP_OPT_OUTS_TO_HUBSPOT,
    Change,
    Plan,
)
from reconciler.platforms.hubspot_prefs import OptOut
from reconciler.platforms.mailchimp import NewMember
from reconciler.platforms.results import ALREADY, APPLIED, FAILED, WriteResult
from reconciler.settings import Config

# Within one R18 step, the order in which action groups run: shared with `simulate`.
ACTION_ORDER = APPLY_ACTION_ORDER
DEFERRED = "deferred"
# The re-check of recent opt-outs reads from a little before the observation began, so clock
# skew between this machine and Mailchimp cannot hide one; members already opted out then are
# known from the snapshot and not counted.
RECHECK_MARGIN_MINUTES = 10
# Writes left undone because that re-check could not be read: the apply is partial (exit 5).
RECHECK_FAILED = "R7 deferred: recent opt-outs could not be re-checked"
# Changes a compliance officer counts on (SPEC R2, R4): one that did not end applied, for whatever
# reason (deferred, refused, failed), makes the apply partial, never a quiet success.
COMPLIANCE_CRITICAL = frozenset({("R2", "archive_member"), ("R2", "unsubscribe_member"), ("R4", "unsubscribe_member")})
# R16: what counts against `member_cap`, what frees room in it and what fills it.
CAP_COUNTED = ("subscribed", "pending")
CAP_FREEING = ("archive_member", "unsubscribe_member")
CAP_FILLING = ("restore_member", "create_member")  # restores first, as the rules plan them


def _minutes_before(iso: str, minutes: int) -> str:
    moment = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (moment - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass(frozen=True)
class Outcome:
    change: Change
    outcome: str  # applied | refused | failed | deferred ("already" is recorded as applied)
    detail: str = ""

    @property
    def partial(self) -> bool:
        """Makes the apply partial (exit 5, notification `failed`): a failure; an R2 archive or
        unsubscribe or an R4 unsubscribe left undone for any reason; a write left undone because
        the last-moment opt-out re-check could not be read."""
        if self.outcome == APPLIED:
            return False
        return (self.outcome == FAILED or (self.change.rule, self.change.action) in COMPLIANCE_CRITICAL
                or self.detail.startswith(RECHECK_FAILED))


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
        self._unsubscribed_here: set[tuple[str, str]] = set()  # (audience, email) this apply unsubscribed
        self._ended: dict[int, str] = {}  # id(change) -> its outcome, for Plan.prerequisites
        self._capped: dict[int, str] = {}  # id(change) -> why R16 holds it back
        self._plan = Plan(())

    # -- driver -------------------------------------------------------------------------------

    def apply(self, plan: Plan) -> list[Outcome]:
        self._plan = plan
        by_step: dict[int, list[Change]] = defaultdict(list)
        for change in plan.changes:
            by_step[change.step].append(change)
        for step in sorted(by_step):
            groups: dict[str, list[Change]] = defaultdict(list)
            for change in by_step[step]:
                groups[change.action].append(change)
            self._capped = self._beyond_cap(by_step[step])
            for action in sorted(groups, key=ACTION_ORDER.index):
                self._run_group(step, action, groups[action])
        self._archive_again_if_brought_back()
        return self.outcomes

    def _archive_again_if_brought_back(self) -> None:
        """A pending member is unsubscribed, then archived (R2, R12). If the unsubscribe timed out and
        was sent again, the first request can still land after the archive, and Mailchimp un-archives
        a member on any PATCH with a status. So, once every other write is done, those members are
        read again, and one found live is archived again (a second attempted/outcome pair)."""
        archived = [o.change for o in self.outcomes
                    if o.outcome == APPLIED and o.change.action == "archive_member"
                    and o.change.before.get("status") == "pending"]
        for change in archived:
            list_id = self.list_ids[change.target]
            try:
                status = self.mailchimp.member_status(list_id, change.email)
            except DailyLimitReached:
                raise
            except VendorError:
                continue  # not readable now: the next plan sees the member as it is
            if status not in (None, "archived"):
                self.audit.record(self.run_id, [change], phase="attempted", operator=self.operator,
                                  config_checksum=self.config.checksum, list_ids=self.list_ids)
                (outcome, detail), = self._archive_member(change.target, [change])
                self._record([change], [(outcome, detail or f"archived again: a late request had brought it "
                                                          f"back as {status}")])

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
        """R18: a change waits for its prerequisites (`Plan.prerequisites`: an opted-out member's
        archive for its R11 changes, a pending member's archive for its unsubscribe); R12's
        Mailchimp writes wait for its HubSpot writes; R11's unsubscribe for its contact's creation;
        R16's creates and restores for the archives that make room for them."""
        waiting = self._waiting_for(change)
        if waiting:
            return waiting
        if id(change) in self._capped:
            return self._capped[id(change)]
        if step == STEP_HANDOVER_MAILCHIMP and change.email in self._handover_failed:
            return "R12 deferred: the handover's HubSpot writes or tag removal did not all succeed"
        if step == STEP_OPT_OUTS_TO_HUBSPOT and change.action == "unsubscribe_contact" \
                and change.email in self._failed_opt_outs:
            return "R11 deferred: the contact could not be created"
        if change.system == "mailchimp" and change.action != "unsubscribe_member" \
                and not (step == STEP_HANDOVER_MAILCHIMP and change.action == "remove_tags"):
            recent = self._recent_opt_outs(change.target)
            if recent is None:
                return f"{RECHECK_FAILED} ({self._recheck_error})"
            if change.email in recent and (change.target, change.email) not in self._unsubscribed_here:
                return ("R7 deferred: the member opted out in Mailchimp after the plan was observed; "
                        "the next plan carries the opt-out to HubSpot first")
        return None

    def _waiting_for(self, change: Change) -> str | None:
        """Why `change` waits: a prerequisite of it (R18) that did not end applied, or None."""
        undone = [p for p in self._plan.prerequisites(change) if self._ended.get(id(p)) != APPLIED]
        if not undone:
            return None
        if any(p.action == "unsubscribe_contact" for p in undone):
            return "R18 deferred: the member's opt-out has not reached HubSpot yet"
        if any(p.action == "unsubscribe_member" for p in undone):
            return (f"{change.rule} deferred: the pending member's unsubscribe did not succeed; "
                    "it is archived once unsubscribed")
        return f"R18 deferred: {undone[0].action} {undone[0].target} did not succeed"

    def _beyond_cap(self, changes: Sequence[Change]) -> dict[int, str]:
        """R16: the creates and restores of this step that the member cap has no room for once this
        apply's archives and unsubscribes that actually succeeded are counted. The plan counted
        every planned one as done; one that failed or waited frees nothing, so the creates that
        were to fill its room wait for the next plan and the cap is never exceeded."""
        held: dict[int, str] = {}
        filling: dict[str, list[Change]] = defaultdict(list)
        for change in changes:
            if change.system == MAILCHIMP and change.action in CAP_FILLING:
                filling[change.target].append(change)
        for audience, group in filling.items():
            settings = self.config.audiences.get(audience)
            cap = settings.member_cap if settings is not None else None
            counted = self._cap_counted(audience)
            if cap is None or counted is None:
                continue
            freed = {o.change.email for o in self.outcomes
                     if o.outcome == APPLIED and o.change.system == MAILCHIMP and o.change.target == audience
                     and o.change.action in CAP_FREEING and o.change.before.get("status") in CAP_COUNTED}
            room = max(cap - (counted - len(freed)), 0)
            group.sort(key=lambda c: CAP_FILLING.index(c.action))  # stable: plan order within each
            for change in group[room:]:
                held[id(change)] = (f"R16 deferred: room not freed in audience {audience} (member cap {cap}, "
                                    f"{counted - len(freed)} subscribed or pending members after this apply's "
                                    "archives and unsubscribes); the next plan decides")
        return held

    def _cap_counted(self, audience: str) -> int | None:
        """Subscribed and pending members observed for the plan (its counts, else the snapshot)."""
        observed = ((self._plan.observed.get("audiences") or {}).get(audience) or {}).get("members")
        if isinstance(observed, Mapping):
            return sum(int(observed.get(status) or 0) for status in CAP_COUNTED)
        state = self.snapshot.audiences.get(self.list_ids.get(audience, "")) if self.snapshot else None
        if state is None:
            return None
        return sum(1 for m in state.members.values() if m.status in CAP_COUNTED)

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
            self._ended[id(change)] = outcome
            if outcome == APPLIED and change.action == "unsubscribe_member":
                self._unsubscribed_here.add((change.target, change.email))
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
        # One result per change: batch status writes where the API version and portal allow them,
        # else one request per contact (4 at once); a contact created by this apply gets 404 retries.
        opt_outs = [OptOut(change.email, subscription_id, legal_basis=str(change.after.get("legal_basis", "")),
                           explanation=str(change.after.get("explanation", "")),
                           not_found_retries=3 if change.email in self._created_contacts else 0) for change in changes]
        return [(result.outcome, result.detail) for result in self.hubspot.unsubscribe_many(opt_outs, workers=4)]

    def _contact_ids(self, changes: Sequence[Change]) -> list[str]:
        return [c.contact_id or self._created_contacts.get(c.email, "") for c in changes]

    def _list_write(self, list_id: str, changes: list[Change], verb: str) -> list[tuple[str, str]]:
        ids = self._contact_ids(changes)
        write = self.hubspot.add_to_list if verb == "add" else self.hubspot.remove_from_list
        failures = write(list_id, [i for i in ids if i]).failures()
        # memberships/add and /remove are idempotent and answer for the whole batch: ids that
        # were already (or never) members come back as unchanged, which is the desired state; ids
        # HubSpot names as missing (or failed) were not written, and the change failed (R12 waits).
        return [(FAILED, "no HubSpot record id for this contact") if not cid
                else (FAILED, failures[cid]) if cid in failures else (APPLIED, "") for cid in ids]

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


def partial(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The outcomes that make the apply partial (exit 5); see `Outcome.partial`."""
    return [o for o in outcomes if o.partial]


__all__ = ["Applier", "Outcome", "summarise", "partial", "DEFERRED", "RECHECK_FAILED"]
