"""The audit log read as the product's memory (SPEC §4 R5, R8, R15; §8): refusals, evidence of consent
and remembered Mailchimp opt-outs, the latest recorded word on each member winning.

Separate from the log's writing side because these rules decide what the product may do next
(restore someone, or keep them out of every audience); they are tested case by case on their own.
"""

from __future__ import annotations

import json
import sqlite3

from reconciler.model import Memory, Refusal


def read_memory(db: sqlite3.Connection, *, retry_refused: bool = False) -> Memory:
    """What the log says about each member and person, the latest recorded word winning.

    - refusals (R5, R8): the latest create/restore refusal not followed by a success;
    - archived_by_us (R8's evidence of consent): members whose latest recorded event is this
      product archiving them while subscribed, pending or transactional. A later restore,
      create or R4 unsubscribe of the member, an R11 unsubscribe of the person, or an archive
      of it while opted out removes the evidence;
    - opted_out (R4, R15): people this product saw opt out in Mailchimp: an R11 unsubscribe it
      attempted (whatever its outcome: the opt-out happened in Mailchimp), or an archive of a
      member that was unsubscribed or cleaned. They stay out of every audience.
    - handovers_unfinished (R12): members whose handover tags this product set out to remove and
      whose archive has not been recorded since (an apply interrupted between the two): with its tags
      gone the member looks unmanaged, so only this memory lets the next plan finish the handover.
    - a member an apply saw live after this product archived it (the `observations` table) was
      restored by someone else: that archive is no longer evidence.
    """
    refusals: dict[tuple[str, str], Refusal] = {}
    archived: dict[tuple[str, str], str] = {}
    archived_at: dict[tuple[str, str], int] = {}  # the change row's seq
    by_email: dict[str, set[tuple[str, str]]] = {}
    opted_out: dict[str, str] = {}
    unfinished: dict[tuple[str, str], str] = {}
    rows = db.execute(
        "SELECT phase, action, outcome, mailchimp_list_id, email, before, reason, error, at, seq FROM changes "
        "WHERE (phase = 'outcome' AND mailchimp_list_id IS NOT NULL "
        "       AND action IN ('create_member', 'restore_member', 'archive_member', 'unsubscribe_member')) "
        "   OR (phase = 'attempted' AND mailchimp_list_id IS NOT NULL AND action = 'remove_tags' AND reason LIKE 'R12 %') "
        "   OR (phase = 'attempted' AND action = 'unsubscribe_contact') ORDER BY seq"
    )
    for phase, action, outcome, list_id, email, before, reason, error, at, seq in rows:
        if action == "unsubscribe_contact":
            opted_out.setdefault(email, f"{reason.split(':', 1)[0]} on {at[:10]}")
            for key in by_email.pop(email, ()):
                archived.pop(key, None)
            continue
        key = (list_id, email)
        done = outcome in ("applied", "verified")
        if action == "remove_tags":
            # Attempted is enough: an apply killed before the outcome row may have removed the tags
            # (a member that still carries its handover tag is handed over by R12 anyway).
            unfinished[key] = reason
            continue
        if done and action in ("archive_member", "create_member", "restore_member"):
            unfinished.pop(key, None)
        if action in ("create_member", "restore_member"):
            if outcome == "refused":
                refusals[key] = Refusal(action=action, reason=error or "refused", at=at)
            elif done:
                refusals.pop(key, None)
                archived.pop(key, None)
        elif action == "unsubscribe_member" and done:
            archived.pop(key, None)
        elif action == "archive_member" and done:
            status = json.loads(before).get("status")
            if status in ("unsubscribed", "cleaned"):
                archived.pop(key, None)
                opted_out.setdefault(email, f"archived while {status} on {at[:10]}")
            elif status and email not in opted_out:
                archived[key] = status
                archived_at[key] = seq
                by_email.setdefault(email, set()).add(key)
    # A member seen live after our archive was restored by someone else: our archive is no
    # longer the latest word, and a later archive of it (by anyone) is not ours.
    for list_id, email, after_seq in db.execute(
            "SELECT mailchimp_list_id, email, after_change_seq FROM observations ORDER BY seq"):
        key = (list_id, email)
        if key in archived and after_seq >= archived_at[key]:
            del archived[key]
    return Memory(refusals=refusals, archived_by_us=archived, opted_out=opted_out,
                  handovers_unfinished=unfinished, retry_refused=retry_refused)
