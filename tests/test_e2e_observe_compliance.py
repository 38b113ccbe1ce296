"""End-to-end through the CLI and a started sandbox: what observe must read for compliance.

(a) R1: a contact sharing a source contact's email (stored with another case) on a critical list,
on an exclusion list, or opted out of all email is honoured: no create, and a live member is
archived. (b) R14: a list whose `processingType` is missing or unknown is never written, and the
plan and preflight name it. Plus the request cost of these reads on the demo seed.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pytest
import yaml

from e2e_helpers import (
    DEMO_SEED,
    Env,
    RecordingSandbox,
    assert_compliance,
    changes_of,
    contact,
    demo_config_doc,
    hub_list,
    make_seed,
    member,
    members_by_list,
    plan_json,
    reports_of,
    small_config,
    started,
    typed_config,
    write_yaml,
)
from reconciler.observe import observe
from reconciler.platforms.hubspot import HubSpotClient
from reconciler.platforms.mailchimp import MailchimpClient
from reconciler.sandbox.http import Request, Response
from test_platform_hubspot import add_duplicate

SEARCH = "POST /crm/v3/objects/contacts/search"


def _apply(env: Env, *extra: str):  # type: ignore[no-untyped-def]
    config = env.config
    before = members_by_list(env.view, config)
    run = env.cli("--apply", "--yes", "--no-redact", *extra)
    assert_compliance(env.view, config, before, converged=run.code == 0)
    return run


# -- (a) R1: duplicates found by search -------------------------------------------------------


def _r1_seed() -> dict[str, Any]:
    contacts = [contact("1", " Dup.Case@Example.com ", firstname="Ca"),  # the seed trims and lower-cases
                contact("3", "dup.live@example.com", firstname="Li"),
                contact("4", "dup.optout@example.com", firstname="Op"),
                contact("5", "dup.excluded@example.com", firstname="Ex"),
                contact("6", "fine@example.com", firstname="Fi")]
    lists = [hub_list("719", "Recruitment", ["1", "3", "4", "5", "6"])]
    members = [member("dup.live@example.com", tags=["Recruitment"], FNAME="Li")]
    return make_seed(contacts, lists, members)


def _add_r1_duplicates(env: Env) -> None:
    add_duplicate(env.sandbox, "11", "DUP.CASE@example.com", lists=["762"])  # critical
    add_duplicate(env.sandbox, "13", "Dup.Live@Example.COM", lists=["762"])  # critical, member is live
    add_duplicate(env.sandbox, "14", "DUP.OPTOUT@EXAMPLE.COM", opted_out_of_all=True)  # on no list
    add_duplicate(env.sandbox, "15", "dup.Excluded@example.com", lists=["717"])  # exclusion set active_deals


def test_a_duplicate_critical_excluded_or_opted_out_contact_stops_the_create_and_archives_the_member(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with started(tmp_path, _r1_seed(), small_config()) as env:
        # Without the duplicates every source contact is eligible: the control.
        plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert {c["email"] for c in changes_of(plan, "create_member")} == {
            "dup.case@example.com", "dup.optout@example.com", "dup.excluded@example.com", "fine@example.com"}

        _add_r1_duplicates(env)
        env.sandbox.reset_counters()
        plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert env.sandbox.counters()[SEARCH] >= 1
        assert {c["email"] for c in changes_of(plan, "create_member")} == {"fine@example.com"}
        assert [c["email"] for c in changes_of(plan, "archive_member")] == ["dup.live@example.com"]
        for email, other in (("dup.case@example.com", "11"), ("dup.optout@example.com", "14"),
                             ("dup.excluded@example.com", "15"), ("dup.live@example.com", "13")):
            assert any(f"R1 contact {other} shares its email" in r["reason"] for r in reports_of(plan, email)), email

        run = _apply(env)
        assert run.code == 0, run.text
        members = env.view.members()
        assert env.sandbox.created == ["fine@example.com"]
        assert members["fine@example.com"].status == "subscribed"
        assert members["dup.live@example.com"].status == "archived"
        for email in ("dup.case@example.com", "dup.optout@example.com", "dup.excluded@example.com"):
            assert email not in members, email
        # Clean-up applies to every holder too: R2 (critical 11, 13) and R3 (15 is in active deals).
        assert env.view.list_members("719") == {"4", "6"}
        again = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert again["changes"] == []


# -- (b) R14: lists whose processingType is missing or unknown ---------------------------------


class UntypedListSandbox(RecordingSandbox):
    """Leaves `processingType` out of list reads for the ids in `untyped` (HubSpot's list object
    does not promise it; the sandbox always sends it)."""

    def __init__(self, *args: Any, untyped: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.untyped = set(untyped)

    def _handle(self, vendor: Any, request: Request) -> Response:
        response = super()._handle(vendor, request)
        if request.method == "GET" and request.path.startswith("/crm/v3/lists") and isinstance(response.body, dict):
            for item in response.body.get("lists") or ([response.body["list"]] if "list" in response.body else []):
                if str(item.get("listId")) in self.untyped:
                    item.pop("processingType", None)
        return response


@contextmanager
def _started(root: Path, seed: Mapping[str, Any], config_doc: Mapping[str, Any], untyped: Sequence[str]) -> Iterator[Env]:
    sandbox = UntypedListSandbox(copy.deepcopy(dict(seed)), untyped=untyped)
    sandbox.start()
    try:
        yield Env(root, sandbox, copy.deepcopy(dict(config_doc)))
    finally:
        sandbox.stop()


def _r14_seed() -> dict[str, Any]:
    contacts = [contact("1", "held@example.com", firstname="He"), contact("2", "handed@example.com", firstname="Ha"),
                contact("3", "stays@example.com", firstname="St")]
    lists = [hub_list("719", "Recruitment", ["1", "2", "3"]), hub_list("762", "Compliance Hold", ["1"])]
    members = [member("handed@example.com", tags=["Recruitment", "Recruitment Finished"], FNAME="Ha"),
               member("stays@example.com", tags=["Recruitment"], FNAME="St")]
    return make_seed(contacts, lists, members)


@pytest.mark.parametrize("how", ["missing", "unknown"])
def test_a_list_of_missing_or_unknown_type_is_never_written_and_is_named(how: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """719 is the source list that R2's clean-up (held@, critical) and the handover's remove_from
    (handed@) would write; with no known processingType neither write is planned or sent."""
    monkeypatch.chdir(tmp_path)
    with _started(tmp_path, _r14_seed(), small_config(), untyped=["719"] if how == "missing" else []) as env:
        if how == "unknown":
            with env.sandbox.hubspot.lock:
                env.sandbox.hubspot.lists["719"].processing_type = "REALTIME"  # the sandbox accepts writes to it
        sent = "no processingType" if how == "missing" else "processingType 'REALTIME'"
        run = env.cli("--plan", "--format", "json", "--no-redact")
        plan = plan_json(run)
        assert f"hubspot list 719 'Recruitment' (source of audience main stream general; handover remove_from" in run.err
        assert "is of unknown type" in run.err
        assert not [c for c in plan["changes"] if c["target"] == "719"]
        warnings = [r for r in plan["reports"] if r["kind"] == "warning" and r["target"] == "719"]
        assert {r["email"] for r in warnings} == {"held@example.com", "handed@example.com"}
        for report in warnings:
            assert report["reason"].startswith(f"R14 list 719 is of unknown type (Recruitment; HubSpot sent {sent}, "
                                               "and only MANUAL and SNAPSHOT lists are written): never written")

        run = _apply(env)
        assert run.code == 0, run.text
        writes_to_719 = [entry for entry in env.sandbox.log if entry[1].startswith("/crm/v3/lists/719/memberships/")]
        assert writes_to_719 == []  # the sandbox would have taken them: only DYNAMIC lists refuse there
        assert env.view.list_members("719") == {"1", "2", "3"}
        assert env.view.list_members("947") == {"2"}  # the handover's MANUAL to_list was written


# -- the cost of the compliance reads on the demo seed -----------------------------------------


def test_the_demo_seed_pays_two_searches_and_one_status_read_per_restore_candidate(tmp_path: Path) -> None:
    box = RecordingSandbox(yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8")))
    box.start()
    try:
        doc = demo_config_doc()
        doc["hubspot"]["base_url"], doc["mailchimp"]["base_url"] = box.base_url, box.mailchimp_base_url
        config = typed_config(write_yaml(tmp_path / "reconciler.yaml", doc))
        hubspot, mailchimp = HubSpotClient(config.hubspot), MailchimpClient(config.mailchimp)
        try:
            box.reset_counters()
            snap = observe(config, hubspot, mailchimp, list(config.audiences))
            first = box.counters()
            box.reset_counters()
            observe(config, hubspot, mailchimp, list(config.audiences), consent_known=lambda list_id, email: True)
            known = box.counters()
        finally:
            hubspot.close()
            mailchimp.close()
    finally:
        box.stop()
    status = "GET /communication-preferences/v3/status/email/{emailAddress}"
    # One search for the source contacts' emails, one for the other live members' emails.
    assert first[SEARCH] == known[SEARCH] == 2
    candidates = [e for e, m in snap.audiences[config.audiences["main"].mailchimp_list_id].members.items()
                  if m.status == "archived" and any(c.email == e and c.lists for c in snap.contacts.values())]
    assert first[status] == len(candidates) == 3
    assert status not in known  # the audit log's evidence makes the reads unnecessary
    assert sum(first.values()) - sum(known.values()) == 3
    assert sum(known.values()) == 16, known  # 14 before these reads, plus the two searches
