"""The JSON plan (SPEC §5): versioned document, owner-only file, round trip for `--apply FILE`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.errors import ReconcilerError
from reconciler.plan import FORMAT_VERSION, HUBSPOT, MAILCHIMP, STEP_CRITICAL, STEP_MEMBERS, Change, Plan, Report
from reconciler.render.json_plan import dumps_document, plan_to_document, read_plan_json, write_plan_json

EMAILS = ("ann@example.com", "élodie@exämple.de", "bob@example.org")


def sample_plan() -> Plan:
    changes = (
        Change.make(HUBSPOT, "unsubscribe_contact", "289137112", EMAILS[2], {"subscribed": True},
                    {"subscribed": False}, "R11 member unsubscribed in main", 10, contact_id="51"),
        Change.make(MAILCHIMP, "archive_member", "main", EMAILS[0], {"status": "subscribed"},
                    {"status": "archived"}, "R2 critical list 762", STEP_CRITICAL, contact_id="12"),
        Change.make(MAILCHIMP, "update_member", "main", EMAILS[1],
                    {"FNAME": "Élodie", "ADDRESS": {"city": "Lyon", "zip": "69001"}, "AGE": 41},
                    {"FNAME": "Élo", "ADDRESS": {"city": "Paris", "zip": "75001"}, "AGE": 41.5},
                    f"R6 merge fields differ (duplicate of {EMAILS[2]})", STEP_MEMBERS, contact_id="13"),
    )
    reports = (Report("warning", "main", EMAILS[2], f"R1 duplicate of {EMAILS[1]}"),
               Report("skipped", "contacts", None, "R1 no valid email for contact 99"))
    return Plan(changes, reports, audiences=("main",), observed={"contacts": 3, "members": {"main": 2}})


def document(plan: Plan, redact: bool = False) -> dict:
    return plan_to_document(plan, config_checksum="c" * 64, audiences=plan.audiences,
                            options={"retry_refused": False, "audience": None}, redact=redact,
                            generated_at="2026-01-02T03:04:05+00:00")


def test_document_carries_every_field_of_spec_5() -> None:
    plan = sample_plan()
    doc = document(plan)
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["checksum"] == plan.checksum
    assert doc["audiences"] == ["main"]
    assert doc["options"] == {"retry_refused": False, "audience": None}
    assert doc["observed"] == {"contacts": 3, "members": {"main": 2}}
    assert doc["config_checksum"] == "c" * 64
    assert doc["generated_at"] == "2026-01-02T03:04:05+00:00"
    assert doc["changes"] == [c.canonical() for c in plan.changes]
    assert doc["reports"] == [r.canonical() for r in plan.reports]
    assert doc["summary"]["changes"] == 3 and doc["summary"]["reports"] == 2
    assert doc["summary"]["by_action"] == {"unsubscribe_contact": 1, "archive_member": 1, "update_member": 1}
    assert doc["summary"]["by_target"]["main"] == {"archive_member": 1, "update_member": 1}
    assert doc["summary"]["by_kind"] == {"warning": 1, "skipped": 1}
    assert doc["redacted"] is False
    json.loads(dumps_document(doc))  # plain JSON all the way down


def test_generated_at_defaults_to_now_in_utc() -> None:
    doc = plan_to_document(Plan(()), config_checksum="", audiences=(), options={}, redact=False)
    assert doc["generated_at"].endswith("+00:00")


def test_round_trip_gives_the_same_changes_and_checksum(tmp_path: Path) -> None:
    plan = sample_plan()
    path = tmp_path / "plan.json"
    write_plan_json(path, document(plan))
    doc, changes = read_plan_json(path)
    assert changes == plan.changes
    assert [c.canonical() for c in changes] == [c.canonical() for c in plan.changes]
    assert Plan(changes).checksum == plan.checksum == doc["checksum"]
    assert EMAILS[1] in path.read_text(encoding="utf-8")  # the plan file keeps real emails


def test_plan_file_is_owner_only_even_over_a_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("old")
    path.chmod(0o644)
    old_umask = os.umask(0)  # the most permissive umask must not matter
    try:
        write_plan_json(path, document(sample_plan()))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary file left behind


def test_write_to_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReconcilerError, match=r"cannot write plan file .*missing.*directory exists"):
        write_plan_json(tmp_path / "missing" / "plan.json", document(sample_plan()))


def test_redacted_document_masks_every_email_but_keeps_the_real_checksum() -> None:
    plan = sample_plan()
    doc = document(plan, redact=True)
    text = dumps_document(doc)
    for email in EMAILS:
        assert email not in text
    assert "a***@example.com" in text and "é***@exämple.de" in text
    assert doc["redacted"] is True and doc["checksum"] == plan.checksum


def write_raw(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(content, encoding="utf-8")
    return path


def edited(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    doc = document(sample_plan())
    edit(doc)
    return write_raw(tmp_path, json.dumps(doc))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "absent.json", "not found"),
        (lambda p: write_raw(p, "{not json"), r"not JSON \(line 1, column 2"),
        (lambda p: write_raw(p, '{"resource": "aws_instance"}'), "not a reconciler plan"),
        (lambda p: write_raw(p, "[1, 2]"), "not a reconciler plan"),
        (lambda p: edited(p, lambda d: d.update(format_version=99)), "format_version 99"),
        (lambda p: edited(p, lambda d: d.update(redacted=True)), "emails are masked"),
        (lambda p: edited(p, lambda d: d["changes"][1]["before"].update(status="pending")), "do not match its checksum"),
        (lambda p: edited(p, lambda d: d["changes"].pop()), "do not match its checksum"),
        (lambda p: edited(p, lambda d: d["changes"][0].update(action="delete_everything")), "unknown system/action"),
        (lambda p: edited(p, lambda d: d["changes"][0].pop("before")), "change #1 is not a plan change"),
        (lambda p: edited(p, lambda d: d.pop("checksum")), "`changes` or `checksum` is missing"),
        (lambda p: edited(p, lambda d: d["changes"][2].update(email=None)), "must be strings"),
    ],
)
def test_bad_plan_file_is_one_clear_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(ReconcilerError, match=message) as raised:
        read_plan_json(path)
    text = str(raised.value)
    assert str(path) in text and "reconcile --plan" in text
    assert "\n" not in text


def test_a_redacted_print_out_cannot_be_applied(tmp_path: Path) -> None:
    path = tmp_path / "printed.json"
    path.write_text(dumps_document(document(sample_plan(), redact=True)), encoding="utf-8")
    with pytest.raises(ReconcilerError, match="emails are masked"):
        read_plan_json(path)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
field_maps = st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, max_size=4)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.emails(), field_maps, field_maps), max_size=5))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:  # type: ignore[type-arg]
    changes = tuple(Change.make(MAILCHIMP, "update_member", "main", email, before, after, "R6 merge fields differ", 60)
                    for email, before, after in rows)
    plan = Plan(changes)
    path = tmp_path_factory.mktemp("plans") / "plan.json"
    write_plan_json(path, document(plan))
    _, read = read_plan_json(path)
    assert Plan(read).checksum == plan.checksum
    assert [c.canonical() for c in read] == [c.canonical() for c in changes]
