"""The audit log as the product's memory (SPEC §4 R8, R15; issue 11 point 3): the latest recorded word on
a member decides whether an archive of it is evidence of consent, and Mailchimp opt-outs are remembered.

Each case writes the rows an apply would write, in order, and states the memory SPEC asks for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.audit import AuditLog
from reconciler.model import Memory
from reconciler.plan import (
    STEP_LEAVE,
    STEP_MEMBERS,
    STEP_OPT_OUTS_FROM_HUBSPOT,
    STEP_OPT_OUTS_TO_HUBSPOT,
    Change,
)

LIST = "abc123def4"
ANN = "ann@example.com"
KEY = (LIST, ANN)


def archive(status: str, reason: str = "R9 no source list holds the contact") -> Change:
    return Change.make("mailchimp", "archive_member", "main", ANN, {"status": status}, {"status": "archived"},
                       reason, STEP_LEAVE)


def restore() -> Change:
    return Change.make("mailchimp", "restore_member", "main", ANN, {"status": "archived"}, {"status": "subscribed"},
                       "R8 archived member is eligible again", STEP_MEMBERS)


def create() -> Change:
    return Change.make("mailchimp", "create_member", "main", ANN, {}, {"status_if_new": "subscribed"},
                       "R5 new member", STEP_MEMBERS)


def r4_unsubscribe() -> Change:
    return Change.make("mailchimp", "unsubscribe_member", "main", ANN, {"status": "subscribed"},
                       {"status": "unsubscribed"}, "R4 opted out in HubSpot", STEP_OPT_OUTS_FROM_HUBSPOT)


def r11(email: str = ANN) -> Change:
    return Change.make("hubspot", "unsubscribe_contact", "289137112", email, {"unsubscribed": False},
                       {"unsubscribed": True, "legal_basis": "LEGITIMATE_INTEREST_OTHER", "explanation": "x"},
                       "R11 unsubscribed in Mailchimp audience events: unsubscribe from marketing",
                       STEP_OPT_OUTS_TO_HUBSPOT, "101")


def _replayed(tmp_path: Path, events: list) -> Memory:  # type: ignore[type-arg]
    """The memory after writing `events` as an apply would: (change, outcome or None) pairs, or
    "seen live" for an observation of ANN live again."""
    log = AuditLog.open(str(tmp_path / "audit.sqlite"))
    try:
        run = log.start_run(command="apply", operator="ops", config_checksum="c", plan_checksum=None)
        for event in events:
            if event == "seen live":
                log.record_seen_live(run, [(LIST, ANN, "subscribed")])
                continue
            change, outcome = event
            log.record(run, [change], phase="attempted", operator="ops", config_checksum="c", list_ids={"main": LIST})
            if outcome is not None:
                log.record(run, [change], phase="outcome", operator="ops", config_checksum="c",
                           outcomes=[(outcome, None)], list_ids={"main": LIST})
        return log.memory()
    finally:
        log.close()


def _memory(tmp_path: Path, events: list) -> tuple[dict, dict]:  # type: ignore[type-arg]
    memory = _replayed(tmp_path, events)
    return dict(memory.archived_by_us), dict(memory.opted_out)


@pytest.mark.parametrize("events, evidence, opted_out", [
    ([(archive("subscribed"), "applied")], "subscribed", False),
    ([(archive("pending"), "verified")], "pending", False),
    ([(archive("subscribed"), "failed")], None, False),  # not archived by us after all
    ([(archive("subscribed"), "applied"), (restore(), "applied")], None, False),
    ([(archive("subscribed"), "applied"), (create(), "applied")], None, False),
    ([(archive("subscribed"), "applied"), (restore(), "applied"), (archive("subscribed"), "applied")],
     "subscribed", False),
    ([(archive("subscribed"), "applied"), (r4_unsubscribe(), "applied")], None, False),
    ([(archive("subscribed"), "applied"), (r11(), None)], None, True),  # attempted is enough: the opt-out happened
    ([(r11(), "failed"), (archive("subscribed"), "applied")], None, True),  # an opted-out person never regains it
    ([(archive("unsubscribed", "R2 critical list 762"), "applied")], None, True),
    ([(archive("cleaned", "R12 handover"), "applied")], None, True),
    ([(archive("subscribed"), "applied"), "seen live"], None, False),  # restored (then archived) by someone else
    ([(archive("subscribed"), "applied"), "seen live", (archive("subscribed"), "applied")], "subscribed", False),
    ([(r11("bob@example.com"), None), (archive("subscribed", "R2 critical list 762"), "applied")], "subscribed", False),
])
def test_the_latest_recorded_word_wins(tmp_path: Path, events: list, evidence: str | None,  # type: ignore[type-arg]
                                       opted_out: bool) -> None:
    archived, remembered = _memory(tmp_path, events)
    assert archived.get(KEY) == evidence
    assert (ANN in remembered) == opted_out


def test_observations_are_append_only(tmp_path: Path) -> None:
    import sqlite3

    _memory(tmp_path, [(archive("subscribed"), "applied"), "seen live"])
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        assert db.execute("SELECT status, note FROM observations").fetchall() == [
            ("subscribed", "seen live after this product archived it: restored by someone else")]
        for statement in ("UPDATE observations SET status = 'archived'", "DELETE FROM observations"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)


def _untag() -> Change:
    return Change.make("mailchimp", "remove_tags", "main", ANN, {"Recruitment Finished": True},
                       {"Recruitment Finished": False}, "R12 handover Recruitment Finished to list 947", 45)


@pytest.mark.parametrize("events, unfinished", [
    ([(_untag(), "applied")], True),  # killed before the archive: the next plan must finish it
    ([(_untag(), "applied"), (archive("subscribed", "R12 handover Recruitment Finished to list 947"), None)], True),
    ([(_untag(), "applied"), (archive("subscribed", "R12 handover Recruitment Finished to list 947"), "applied")],
     False),
    ([(_untag(), None)], True),  # killed before its outcome row: the tags may be gone
    ([(_untag(), "failed")], True),  # harmless: a member still carrying its handover tag is handed over by R12
])
def test_a_handover_left_between_its_untag_and_its_archive_is_remembered(tmp_path: Path, events: list,  # type: ignore[type-arg]
                                                                          unfinished: bool) -> None:
    memory = _replayed(tmp_path, events)
    assert (KEY in memory.handovers_unfinished) == unfinished
