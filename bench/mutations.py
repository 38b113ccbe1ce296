"""Mutation check of the compliance-critical code: do the tests notice when it is broken?

Each mutation breaks one thing a compliance officer counts on (an R2 archive skipped, an opted-out
person written to, a restore without evidence of consent, ...). It is applied, alone, to a COPY of
the working tree (`git ls-files`, tracked and untracked-but-not-ignored files, as they are on
disk); a focused subset of the test suite then runs in that copy with PYTHONPATH pointing at it,
so the copy's `reconciler` is the one imported (checked before the tests run). A mutation is
*caught* when the tests fail, *survived* when they pass: a survivor is a gap in the tests.

Before any mutation, each distinct test subset runs once unmutated (the baseline): a mutant's
failure only means something if the same tests pass without it. Tests that already fail then are
deselected from every mutant run and named in the output.

Not run by pytest (a full run takes minutes). Usage, from the repository root:

    python bench/mutations.py                 # every mutation, one at a time
    python bench/mutations.py --jobs 2        # two mutants at once (the machine has 2 cores)
    python bench/mutations.py --list          # names, files and why each matters
    python bench/mutations.py --only r2_subscribed_not_archived --only r9_archives_pending
    python bench/mutations.py --tests tests/test_rules_r05_r10_members.py   # override every subset

Exit 0 when every mutation is caught, 1 when any survived, 2 when the script cannot run (a find
text is not found exactly once, a baseline subset is missing, the copy imports the wrong package).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 900  # seconds per pytest run; a mutant that hangs the tests counts as caught
PROPERTY_EXAMPLES = "300"  # CORE_PROPERTY_EXAMPLES in mutant runs (CI runs 2,000)


class MutationError(Exception):
    """The script cannot do what it was asked (a find text not found exactly once, a bad copy)."""


# -- test subsets -----------------------------------------------------------------------------
# Fast table tests first: with -x, a caught mutant stops at its first failure.

MUTANTS = "tests/test_compliance_mutants.py"
RULES = (MUTANTS, "tests/test_rules_r01_r04_contacts.py", "tests/test_rules_r05_r10_members.py",
         "tests/test_rules_r11_r18_optouts_plan.py", "tests/test_plan_core.py")
PROPERTIES = ("tests/test_core_simulate.py", "tests/test_core_properties.py")
CORE = RULES + PROPERTIES
AUDIT = (MUTANTS, "tests/test_audit_memory.py", "tests/test_audit_log.py", "tests/test_rules_r05_r10_members.py")
APPLY = (MUTANTS, "tests/test_apply_units.py", "tests/test_apply_races.py", "tests/test_e2e_apply_compliance.py")
MAILCHIMP_CLIENT = (MUTANTS, "tests/test_platform_mailchimp.py", "tests/test_e2e_apply_compliance.py")
CONFIG = (MUTANTS, "tests/test_config_optout_defaults.py")
E2E_CORE = ("tests/test_e2e_core_compliance.py",)
OBSERVE = ("tests/test_e2e_observe_compliance.py", "tests/test_observe.py")


@dataclass(frozen=True)
class Mutation:
    """One compliance-critical break: `find` (exactly once in `file`) becomes `replace`; `also`
    holds further (find, replace) pairs in the same file when one break needs two edits."""

    name: str
    file: str
    find: str
    replace: str
    why: str
    tests: tuple[str, ...]
    also: tuple[tuple[str, str], ...] = ()

    @property
    def edits(self) -> tuple[tuple[str, str], ...]:
        return ((self.find, self.replace), *self.also)


MUTATIONS: tuple[Mutation, ...] = (
    # -- R2 critical ---------------------------------------------------------------------------
    Mutation(
        "r2_subscribed_not_archived", "reconciler/rules_members.py",
        'if member is None or member.status == "archived":\n        return\n    reason = f"R2 critical',
        'if member is None or member.status in ("archived", "subscribed"):\n        return\n    reason = f"R2 critical',
        "R2: a critical contact's subscribed member must be archived; skipping it keeps mailing them.",
        CORE),
    Mutation(
        "r2_pending_not_unsubscribed_first", "reconciler/rules_members.py",
        '    if member.status == "pending":\n        out.changes.append(Change.make(MAILCHIMP, "unsubscribe_member", '
        'audience.name, member.email,',
        '    if False:\n        out.changes.append(Change.make(MAILCHIMP, "unsubscribe_member", audience.name, member.email,',
        "R2 on a pending member: Mailchimp will not archive it (405) and it could still confirm; it must be "
        "unsubscribed first.",
        CORE),
    Mutation(
        "r2_critical_contact_treated_as_eligible", "reconciler/rules_members.py",
        "    if not person.lists.isdisjoint(critical):\n        archive_critical(",
        "    if False:\n        archive_critical(",
        "R2 precedence: a critical contact must never be created, updated or restored.",
        CORE),
    # -- R4 opt-outs from HubSpot ----------------------------------------------------------------
    Mutation(
        "r4_unsubscribe_skipped", "reconciler/rules_members.py",
        "unsubscribe_opted_out(out, audience, member, opted_out, unsubscribe=True)",
        "unsubscribe_opted_out(out, audience, member, opted_out, unsubscribe=False)",
        "R4: a member whose HubSpot contact opted out must be unsubscribed in Mailchimp.",
        CORE),
    Mutation(
        "r4_pending_not_unsubscribed", "reconciler/rules_members.py",
        '    if member.status in ("subscribed", "pending"):\n        out.changes.append(Change.make(MAILCHIMP, '
        '"unsubscribe_member"',
        '    if member.status in ("subscribed",):\n        out.changes.append(Change.make(MAILCHIMP, '
        '"unsubscribe_member"',
        "R4 on a pending member: left pending, an opted-out person could still confirm and be mailed.",
        CORE),
    Mutation(
        "opted_out_gets_writes", "reconciler/rules_members.py",
        "    no_writes = opt_out_reason(person, audience.all_subscriptions, config)",
        "    no_writes = None",
        "Opt-outs stop all writes: opted out of a configured subscription R4 does not use, a person still "
        "gets no update_member or add_tags.",
        CORE),
    Mutation(
        "opted_out_gets_writes_when_from_hubspot_off", "reconciler/rules_members.py",
        "    if not unsubscribe or not audience.audience.opt_outs.from_hubspot_enabled:\n",
        "    if not audience.audience.opt_outs.from_hubspot_enabled:\n"
        "        joined = join_stream(audience, person) if person is not None else None\n"
        "        if joined is not None:\n"
        "            update(out, audience, person, joined, member)\n"
        "        return\n"
        "    if not unsubscribe:\n",
        "Issue 11 point 6: with from_hubspot off an opted-out person still gets no merge fields or tags.",
        CORE,
        also=(("def unsubscribe_opted_out(out: Out, audience: AudienceRules, member: Member | None, reason: str,\n"
               "                          unsubscribe: bool) -> None:",
               "def unsubscribe_opted_out(out: Out, audience: AudienceRules, member: Member | None, reason: str,\n"
               "                          unsubscribe: bool, person: Person | None = None) -> None:"),
              ("unsubscribe_opted_out(out, audience, member, opted_out, unsubscribe=True)",
               "unsubscribe_opted_out(out, audience, member, opted_out, unsubscribe=True, person=person)"),
              ("unsubscribe_opted_out(out, audience, member, no_writes, unsubscribe=False)",
               "unsubscribe_opted_out(out, audience, member, no_writes, unsubscribe=False, person=person)"))),
    # -- R7 never write an opted-out member ------------------------------------------------------
    Mutation(
        "r7_unsubscribed_member_updated", "reconciler/rules_members.py",
        "    if member is not None and member.status in OPTED_OUT_STATUSES:\n        joined = join_stream(",
        "    if False:\n        joined = join_stream(",
        "R7: an unsubscribed or cleaned member is never written (merge fields, tags, status).",
        CORE,
        also=(("    elif member.status in WRITABLE_STATUSES:\n        update(out, audience, person, joined, member)",
               "    elif member.status in WRITABLE_STATUSES | OPTED_OUT_STATUSES:\n"
               "        update(out, audience, person, joined, member)"),)),
    # -- R8 restore needs evidence of consent ------------------------------------------------------
    Mutation(
        "r8_consent_always_given", "reconciler/rules_members.py",
        "        return f\"explicitly subscribed in HubSpot to {', '.join(sorted(subscribed))}\"\n    return None\n",
        "        return f\"explicitly subscribed in HubSpot to {', '.join(sorted(subscribed))}\"\n    return \"mutant\"\n",
        "R8: no restore without evidence of consent (Mailchimp lets the API resubscribe admin/api unsubscribes).",
        CORE),
    Mutation(
        "r8_any_archive_is_consent", "reconciler/rules_members.py",
        '    if archived_while in ("subscribed", "pending"):',
        "    if archived_while is not None:",
        "R8: only an archive of a subscribed or pending member by this product is evidence; a transactional "
        "one never consented to marketing.",
        CORE),
    Mutation(
        "r8_any_subscription_is_consent", "reconciler/rules_members.py",
        "    subscribed = consent.get(email, frozenset()) & frozenset(audience.consent_subscriptions)",
        "    subscribed = consent.get(email, frozenset())",
        "R8: HubSpot consent counts only for the audience's configured subscription, not any subscription.",
        CORE),
    # -- R9 leaving ------------------------------------------------------------------------------
    Mutation(
        "r9_archives_pending", "reconciler/rules_members.py",
        '    if on_leave == "archive" and member.status == "pending":',
        "    if False:",
        "R9 on a pending member: Mailchimp answers 405; archiving it would fail on every run.",
        CORE),
    # -- R16 member cap --------------------------------------------------------------------------
    Mutation(
        "r16_cap_off_by_one", "reconciler/rules_members.py",
        "    room = max(cap - (counted - leaving), 0)",
        "    room = max(cap - (counted - leaving) + 1, 0)",
        "R16: the member cap is never exceeded.",
        CORE),
    # -- R1 one person per email -------------------------------------------------------------------
    Mutation(
        "r1_duplicate_opt_outs_ignored", "reconciler/rules_contacts.py",
        "        frozenset().union(*(c.unsubscribed for c in ordered)),",
        "        ordered[0].unsubscribed,",
        "R1: the opt-outs of every contact sharing an email apply, not only the primary's.",
        CORE),
    Mutation(
        "r1_duplicate_critical_lists_ignored", "reconciler/rules_contacts.py",
        "        frozenset().union(*(c.lists for c in ordered)),",
        "        ordered[0].lists,",
        "R1: a duplicate on a critical or exclusion list makes the person critical or excluded.",
        CORE),
    Mutation(
        "r1_duplicate_hs_email_optout_ignored", "reconciler/rules_contacts.py",
        '        any(c.opted_out_of_all or is_true(c.properties.get("hs_email_optout")) for c in ordered),',
        "        any(c.opted_out_of_all for c in ordered),",
        "R1 + point 6: a duplicate's hs_email_optout property (opted out of all email) is honoured.",
        CORE),
    Mutation(
        "hs_email_optout_property_ignored", "reconciler/rules_contacts.py",
        '                  contact.opted_out_of_all or is_true(contact.properties.get("hs_email_optout")))',
        "                  contact.opted_out_of_all)",
        "Point 6: hs_email_optout (opted out of all email) is honoured always, whatever from_hubspot says.",
        CORE),
    Mutation(
        "explicit_subscription_opt_out_ignored", "reconciler/rules_contacts.py",
        "    if person.opted_out_of_all or sid in person.unsubscribed:",
        "    if person.opted_out_of_all:",
        "R4: an explicit NOT_SUBSCRIBED to a configured subscription is an opt-out.",
        CORE),
    Mutation(
        "subscription_opt_out_property_ignored", "reconciler/rules_contacts.py",
        '    prop = "hs_email_optout_" + sid',
        '    prop = "hs_email_optout_unused_" + sid',
        "R4: HubSpot's per-subscription hs_email_optout_<id> property is an opt-out too.",
        CORE),
    Mutation(
        "mailchimp_opt_out_not_counted_by_r4", "reconciler/rules_contacts.py",
        "    if person.opted_out_in_mailchimp:\n        return",
        "    if False:\n        return",
        "R15/point 8: a person R11 unsubscribes (or who opted out in Mailchimp) counts as opted out in every "
        "audience.",
        CORE),
    Mutation(
        "r1_duplicates_not_searched", "reconciler/observe.py",
        "    wanted = worth_searching(sorted(known), known, _critical_ids(config, hub))\n",
        "    wanted: dict[str, set[str]] = {}\n",
        "Point 11: contacts sharing a source contact's email are read (HubSpot search), so a duplicate on a "
        "critical or exclusion list, or opted out, is honoured.",
        OBSERVE),
    # -- R11 opt-outs to HubSpot, Mailchimp opt-outs everywhere --------------------------------------
    Mutation(
        "r11_cleaned_not_carried", "reconciler/rules_optouts.py",
        "            if member.status not in statuses:\n                continue",
        '            if member.status not in statuses or member.status == "cleaned":\n                continue',
        "R11: a cleaned member (with cleaned in to_hubspot.statuses, the default) reaches HubSpot.",
        CORE),
    Mutation(
        "r11_default_legal_basis", "reconciler/rules_optouts.py",
        '                    {"unsubscribed": True, "legal_basis": to_hubspot.legal_basis,',
        '                    {"unsubscribed": True, "legal_basis": "LEGITIMATE_INTEREST_OTHER",',
        "Point 14: HubSpot receives the configured legal basis, not a hard-coded default.",
        CORE + E2E_CORE),
    Mutation(
        "r11_of_this_plan_default_legal_basis", "reconciler/rules_optouts.py",
        '                {"unsubscribed": True, "legal_basis": to_hubspot.legal_basis, "explanation": '
        "to_hubspot.explanation},",
        '                {"unsubscribed": True, "legal_basis": "LEGITIMATE_INTEREST_OTHER", "explanation": '
        "to_hubspot.explanation},",
        "Point 14 for R4's same-plan R11: the configured legal basis, not a hard-coded default.",
        CORE),
    Mutation(
        "mailchimp_opt_outs_not_marked", "reconciler/rules_optouts.py",
        "            people[email] = person._replace(opted_out_in_mailchimp=why)",
        "            pass",
        "Point 8: a Mailchimp opt-out in one audience keeps the person out of every audience of the config.",
        CORE),
    Mutation(
        "mailchimp_opt_outs_memory_ignored", "reconciler/rules_optouts.py",
        "    for email, why in remembered.items():",
        "    for email, why in {}.items():",
        "Point 8: an opt-out the audit log remembers keeps the person out on every later run, even once the "
        "member is archived.",
        CORE),
    Mutation(
        "r12_archive_before_hubspot_writes", "reconciler/rules_optouts.py",
        '                                   {"status": "archived"}, reason, STEP_HANDOVER_MAILCHIMP))',
        '                                   {"status": "archived"}, reason, STEP_HANDOVER_HUBSPOT - 1))',
        "R12/R18: a handover's Mailchimp archive waits for its HubSpot writes (else the member is lost to both).",
        CORE),
    # -- R14 never write a list of unknown type ------------------------------------------------------
    Mutation(
        "r14_unknown_list_type_written", "reconciler/model.py",
        "        return self.processing_type in WRITABLE_LIST_TYPES",
        '        return self.processing_type != "DYNAMIC"',
        "Point 12: a list whose processingType is missing or unknown is never written.",
        CORE),
    # -- plan ------------------------------------------------------------------------------------
    Mutation(
        "prerequisite_r11_dropped", "reconciler/plan.py",
        '            return tuple(c for c in same_email if c.action == "unsubscribe_contact")',
        "            return ()",
        "R18: an unsubscribed member is archived only after its opt-out is in HubSpot.",
        RULES + APPLY),
    Mutation(
        "prerequisite_pending_unsubscribe_dropped", "reconciler/plan.py",
        '        if status == "pending":\n            return tuple(',
        '        if False:\n            return tuple(',
        "R2: a pending member's archive waits for its unsubscribe (left pending, it could still confirm).",
        RULES + APPLY),
    Mutation(
        "stale_check_ignores_after", "reconciler/plan.py",
        "canonical_json(self.before), canonical_json(self.after))",
        "canonical_json(self.before))",
        "Point 13: a hand-edited `after` in a reviewed plan is refused.",
        (MUTANTS, "tests/test_e2e_apply_compliance.py")),
    # -- apply -----------------------------------------------------------------------------------
    Mutation(
        "apply_ignores_prerequisites", "reconciler/apply.py",
        "        undone = [p for p in self._plan.prerequisites(change) if self._ended.get(id(p)) != APPLIED]",
        "        undone = []",
        "R18: an archive of an unsubscribed member whose R11 write failed is deferred, never sent.",
        APPLY),
    Mutation(
        "apply_recheck_ignored", "reconciler/apply.py",
        "            if change.email in recent and (change.target, change.email) not in self._unsubscribed_here:",
        "            if False:",
        "R7: a member who opted out after the plan was observed is not written by the apply.",
        APPLY),
    Mutation(
        "apply_compliance_shortfall_not_partial", "reconciler/apply.py",
        "        return (self.outcome == FAILED or (self.change.rule, self.change.action) in COMPLIANCE_CRITICAL",
        "        return (self.outcome == FAILED",
        "Point 5: a deferred or refused R2 archive / R4 unsubscribe makes the apply exit 5, never 0.",
        APPLY),
    Mutation(
        "apply_cap_counts_failed_archives", "reconciler/apply.py",
        "                     if o.outcome == APPLIED and o.change.system == MAILCHIMP and o.change.target == audience",
        "                     if o.change.system == MAILCHIMP and o.change.target == audience",
        "Point 10: creates fill only the room that archives which succeeded freed; the cap is never exceeded.",
        APPLY),
    Mutation(
        "apply_handover_archive_not_waiting", "reconciler/apply.py",
        "        if step == STEP_HANDOVER_MAILCHIMP and change.email in self._handover_failed:",
        "        if False:",
        "Point 9: a handover's Mailchimp untag/archive waits until its HubSpot list writes succeeded.",
        APPLY),
    Mutation(
        "apply_default_legal_basis", "reconciler/apply.py",
        'legal_basis=str(change.after.get("legal_basis", "")),',
        'legal_basis="LEGITIMATE_INTEREST_OTHER",',
        "Point 14: the configured legal basis is what HubSpot receives.",
        (MUTANTS, "tests/test_e2e_core_compliance.py", "tests/test_e2e_rules_demo.py")),
    # -- audit memory ----------------------------------------------------------------------------
    Mutation(
        "memory_r11_does_not_clear_archive", "reconciler/audit_memory.py",
        "            for key in by_email.pop(email, ()):\n                archived.pop(key, None)",
        "            by_email.pop(email, ())",
        "Point 3: a later R11 unsubscribe removes the evidence of consent of an earlier archive.",
        AUDIT + E2E_CORE),
    Mutation(
        "memory_restore_does_not_clear_archive", "reconciler/audit_memory.py",
        "                refusals.pop(key, None)\n                archived.pop(key, None)",
        "                refusals.pop(key, None)",
        "Point 3: the latest word wins; a restore (or create) ends the archive's evidence.",
        AUDIT + E2E_CORE),
    Mutation(
        "memory_r4_unsubscribe_does_not_clear_archive", "reconciler/audit_memory.py",
        '        elif action == "unsubscribe_member" and done:\n            archived.pop(key, None)',
        '        elif action == "unsubscribe_member" and done:\n            pass',
        "Point 3: a later R4 unsubscribe of the member removes the evidence of consent.",
        AUDIT + E2E_CORE),
    Mutation(
        "memory_opted_out_archive_not_remembered", "reconciler/audit_memory.py",
        '                opted_out.setdefault(email, f"archived while {status} on {at[:10]}")',
        "                pass",
        "Point 8: archiving an unsubscribed member hides its opt-out; the audit memory must hold it.",
        AUDIT + E2E_CORE),
    Mutation(
        "memory_r11_not_remembered", "reconciler/audit_memory.py",
        "            opted_out.setdefault(email, f\"{reason.split(':', 1)[0]} on {at[:10]}\")",
        "            pass",
        "Point 8: an R11 unsubscribe is remembered until HubSpot reflects it.",
        AUDIT + E2E_CORE),
    Mutation(
        "memory_archive_after_opt_out_is_consent", "reconciler/audit_memory.py",
        "            elif status and email not in opted_out:",
        "            elif status:",
        "Point 3: once a person opted out, a later archive of theirs is never evidence of consent.",
        AUDIT + E2E_CORE),
    Mutation(
        "memory_seen_live_ignored", "reconciler/audit_memory.py",
        "        if key in archived and after_seq >= archived_at[key]:",
        "        if False:",
        "Point 3: a member someone else restored after our archive is no longer ours to restore.",
        AUDIT + E2E_CORE),
    # -- Mailchimp client ------------------------------------------------------------------------
    Mutation(
        "mailchimp_update_sends_status", "reconciler/platforms/mailchimp.py",
        'json={"merge_fields": dict(merge_fields)})',
        'json={"merge_fields": dict(merge_fields), "status": "subscribed"})',
        "R6: an update never sends status (it would confirm a pending member or resubscribe one).",
        MAILCHIMP_CLIENT),
    Mutation(
        "mailchimp_create_updates_existing", "reconciler/platforms/mailchimp.py",
        '                                   for m in part], "update_existing": False}',
        '                                   for m in part], "update_existing": True}',
        "R5/R7: a create never touches an existing member (update_existing would resubscribe opted-out ones).",
        MAILCHIMP_CLIENT),
    Mutation(
        "mailchimp_405_always_done", "reconciler/platforms/mailchimp.py",
        '        if status in (None, "archived"):\n            return WriteResult(email, ALREADY,',
        "        if True:\n            return WriteResult(email, ALREADY,",
        "Point 4: a 405 archive counts as done only when the member reads archived; else a critical member "
        "stays live while the apply reports success.",
        MAILCHIMP_CLIENT),
    # -- HubSpot client ----------------------------------------------------------------------------
    Mutation(
        "hubspot_guard_allows_subscribe", "reconciler/platforms/hubspot_prefs.py",
        "            if not states or any(state != UNSUBSCRIBED for state in states):",
        "            if False:",
        "Nothing may send a subscribe status to HubSpot: the dated API would re-subscribe an opted-out contact.",
        ("tests/test_hubspot_dated.py",)),
    # -- config safe defaults --------------------------------------------------------------------
    Mutation(
        "config_from_hubspot_default_false", "reconciler/config.py",
        '    from_hubspot = data.get("from_hubspot", True)',
        '    from_hubspot = data.get("from_hubspot", False)',
        "Point 7: from_hubspot defaults to true.",
        CONFIG),
    Mutation(
        "config_to_hubspot_default_off", "reconciler/config.py",
        '    elif "to_hubspot" not in data and len(subscriptions) == 1:',
        "    elif False:",
        "Point 7: to_hubspot defaults to on for [unsubscribed, cleaned] with exactly one subscription.",
        CONFIG),
    Mutation(
        "config_legal_basis_ignored", "reconciler/config.py",
        '            legal_basis=to.get("legal_basis", defaults.legal_basis),',
        "            legal_basis=defaults.legal_basis,",
        "Point 14: the configured legal_basis is the one used.",
        CONFIG + E2E_CORE),
)


# -- applying a mutation to a copy --------------------------------------------------------------


def mutate_text(text: str, edits: Iterable[tuple[str, str]], where: str) -> str:
    """`text` with each (find, replace) applied; each find must occur exactly once."""
    for find, replace in edits:
        count = text.count(find)
        if count != 1:
            raise MutationError(f"{where}: find text occurs {count} times, not exactly once "
                                f"(the code changed; update the mutation): {find!r}")
        text = text.replace(find, replace)
    return text


def check_mutations(mutations: Sequence[Mutation], root: Path = REPO) -> None:
    """Every find text occurs exactly once in the current source (raises MutationError)."""
    names = [m.name for m in mutations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MutationError(f"mutation names repeated: {', '.join(duplicates)}")
    for mutation in mutations:
        path = root / mutation.file
        if not path.is_file():
            raise MutationError(f"{mutation.name}: {mutation.file} does not exist")
        mutate_text(path.read_text(encoding="utf-8"), mutation.edits, f"{mutation.name} ({mutation.file})")


def source_files(root: Path = REPO) -> list[str]:
    """The working tree's files as git sees them: tracked plus untracked-but-not-ignored, present on disk."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=root, capture_output=True, check=True).stdout.decode("utf-8").split("\0")
    return sorted({name for name in listed if name and (root / name).is_file()})


def copy_tree(destination: Path, root: Path = REPO, files: Sequence[str] | None = None) -> Path:
    """A copy of the working tree's files under `destination` (created), never touching `root`."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in files if files is not None else source_files(root):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target, follow_symlinks=False)
    return destination


def apply_mutation(copy: Path, mutation: Mutation) -> None:
    path = copy / mutation.file
    if copy.resolve() == REPO.resolve() or REPO.resolve() in copy.resolve().parents:
        raise MutationError("refusing to mutate the repository itself; mutate a copy")
    path.write_text(mutate_text(path.read_text(encoding="utf-8"), mutation.edits, mutation.name), encoding="utf-8")


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CORE_PROPERTY_EXAMPLES"] = env.get("MUTATION_PROPERTY_EXAMPLES", PROPERTY_EXAMPLES)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def imported_from(copy: Path) -> Path:
    """Where `import reconciler` resolves in the copy's environment (must be inside the copy)."""
    done = subprocess.run([sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
                          cwd=copy, env=environment(copy), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise MutationError(f"the copy at {copy} cannot import reconciler: {done.stderr.strip()[-500:]}")
    found = Path(done.stdout.strip()).resolve()
    if copy.resolve() not in found.parents:
        raise MutationError(f"the copy at {copy} imports reconciler from {found}, not from the copy")
    return found


# -- running the tests --------------------------------------------------------------------------


@dataclass
class TestRun:
    passed: bool
    seconds: float
    failures: list[str] = field(default_factory=list)  # node ids (or files) that failed
    tail: str = ""
    timed_out: bool = False


SUMMARY_LINE = re.compile(r"^(FAILED|ERROR) (\S+?)(?: - .*)?$")


def run_tests(copy: Path, tests: Sequence[str], *, stop_first: bool, deselect: Iterable[str] = ()) -> TestRun:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--no-header"]
    if stop_first:
        command.append("-x")
    for node in sorted(deselect):
        command += ["--deselect", node]
    command += list(tests)
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return TestRun(False, time.monotonic() - started, ["(timeout)"], timed_out=True)
    output = done.stdout + done.stderr
    failures = [m.group(2) for m in map(SUMMARY_LINE.match, output.splitlines()) if m]
    # 0: passed; 5: nothing collected (everything deselected) counts as passing, nothing was caught.
    passed = done.returncode in (0, 5)
    if not passed and not failures:
        failures = [f"(pytest exit {done.returncode})"]
    return TestRun(passed, time.monotonic() - started, failures, output[-3000:])


@dataclass
class Result:
    mutation: Mutation
    caught: bool
    by: str
    seconds: float


@dataclass(frozen=True)
class Pristine:
    """The working tree as it was when the run began: every mutant is copied from it, so that
    colleagues editing the tree meanwhile change neither the find texts nor the baseline."""

    root: Path
    files: tuple[str, ...]

    def copy(self, destination: Path) -> Path:
        return copy_tree(destination, self.root, self.files)


def take_pristine(work: Path) -> Pristine:
    files = tuple(source_files())
    return Pristine(copy_tree(work / "pristine", REPO, files), files)


def baseline(pristine: Pristine, work: Path, subsets: Iterable[tuple[str, ...]], jobs: int
             ) -> dict[tuple[str, ...], set[str]]:
    """Each subset once, unmutated: the tests failing already (to deselect from mutant runs)."""
    copy = pristine.copy(work / "baseline")
    print(f"baseline copy imports {imported_from(copy)}", flush=True)
    unique = list(dict.fromkeys(subsets))
    for tests in unique:
        missing = [t for t in tests if not (copy / t.split("::")[0]).exists()]
        if missing:
            raise MutationError(f"test files missing from the repository: {', '.join(missing)}")

    def one(tests: tuple[str, ...]) -> tuple[tuple[str, ...], TestRun]:
        return tests, run_tests(copy, tests, stop_first=False)

    failing: dict[tuple[str, ...], set[str]] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for tests, run in pool.map(one, unique):
            failing[tests] = set(run.failures)
            state = "passes" if run.passed else f"FAILS UNMUTATED ({len(run.failures)}; deselected below)"
            print(f"baseline {run.seconds:6.1f}s {state}: {' '.join(tests)}", flush=True)
            for node in sorted(run.failures):
                print(f"    already failing: {node}", flush=True)
            if not run.passed and any("::" not in f for f in run.failures):
                raise MutationError("a test file fails to run unmutated (collection error or timeout); "
                                    f"fix it first:\n{run.tail}")
    shutil.rmtree(copy, ignore_errors=True)
    return failing


def run_mutation(pristine: Pristine, work: Path, mutation: Mutation, tests: tuple[str, ...],
                 deselect: set[str]) -> Result:
    copy = pristine.copy(work / mutation.name)
    try:
        apply_mutation(copy, mutation)
        imported_from(copy)
        run = run_tests(copy, tests, stop_first=True, deselect=deselect)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    by = "timeout" if run.timed_out else (run.failures[0] if run.failures else "")
    return Result(mutation, not run.passed, by, run.seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=1, help="mutants run at once (default 1)")
    parser.add_argument("--tests", nargs="+", metavar="PATH", help="run these tests for every mutation")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each subset")
    args = parser.parse_args(argv)

    selected = list(MUTATIONS)
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
        if unknown:
            print(f"unknown mutation {', '.join(unknown)}; --list names them", file=sys.stderr)
            return 2
        selected = [m for m in MUTATIONS if m.name in args.only]
    try:
        check_mutations(selected)
    except MutationError as exc:
        print(f"mutations.py: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for m in selected:
            print(f"{m.name}  [{m.file}]\n    {m.why}\n    tests: {' '.join(m.tests)}")
        print(f"{len(selected)} mutations")
        return 0

    def tests_of(mutation: Mutation) -> tuple[str, ...]:
        return tuple(dict.fromkeys(args.tests if args.tests else mutation.tests))

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reconciler-mutants-") as tmp:
        work = Path(tmp)
        try:
            pristine = take_pristine(work)
            check_mutations(selected, pristine.root)
            failing = {} if args.no_baseline else baseline(pristine, work, (tests_of(m) for m in selected),
                                                           args.jobs)
        except MutationError as exc:
            print(f"mutations.py: {exc}", file=sys.stderr)
            return 2

        def one(mutation: Mutation) -> Result:
            tests = tests_of(mutation)
            result = run_mutation(pristine, work, mutation, tests, failing.get(tests, set()))
            verdict = "caught  " if result.caught else "SURVIVED"
            print(f"{verdict} {result.seconds:6.1f}s {mutation.name}: {result.by or mutation.why}", flush=True)
            return result

        try:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                results = list(pool.map(one, selected))
        except MutationError as exc:
            print(f"mutations.py: {exc}", file=sys.stderr)
            return 2
    caught = sum(1 for r in results if r.caught)
    survived = [r for r in results if not r.caught]
    for result in survived:
        print(f"survived: {result.mutation.name} ({result.mutation.file}): {result.mutation.why}")
    print(f"wall time {time.monotonic() - started:.0f}s")
    print(f"{caught} caught, {len(survived)} survived")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
