"""End-to-end, through the CLI against the sandbox: the apply never relies on a vendor to refuse (issue 11).

Each scenario seeds both vendors, applies with the real CLI over real HTTP, and checks three
things: the exit code (and, where it matters, the notification event), the audit log's outcome
rows, and the vendor end state read back through the vendors' own APIs. Faults are injected in
the sandbox itself (`Hooked._handle`): one endpoint for one member answers as a vendor would when
it fails, refuses or moves under us; everything else is served normally.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from e2e_helpers import (
    LIST_ID,
    SANDBOX_ENV,
    Env,
    RecordingSandbox,
    Run,
    changes_of,
    contact,
    hub_list,
    make_seed,
    member,
    plan_json,
    reports_of,
    run_cli,
    small_config,
    subscriber_hash,
)
from reconciler.plan import Change, checksum_of
from reconciler.sandbox.http import Request, Response
from tests.webhook_receiver import Receiver

TEAMS_PATH = "/workflows/teams-compliance-secret"
MEMBER_PATH = f"/3.0/lists/{LIST_ID}/members/"
Hook = Callable[[Request, Callable[[Request], Response]], "Response | None"]


class Hooked(RecordingSandbox):
    """The recording sandbox with per-test hooks: each sees a request (and how to serve it
    normally) and may answer in its place; None lets the request through."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks: list[Hook] = []

    def _handle(self, vendor: Any, request: Request) -> Response:
        for hook in list(self.hooks):
            answer = hook(request, lambda r: super(Hooked, self)._handle(vendor, r))
            if answer is not None:
                return answer
        return super()._handle(vendor, request)


@contextmanager
def hooked(root: Path, seed: Mapping[str, Any], config_doc: Mapping[str, Any]) -> Iterator[tuple[Env, Hooked]]:
    sandbox = Hooked(copy.deepcopy(dict(seed)))
    sandbox.start()
    try:
        yield Env(root, sandbox, copy.deepcopy(dict(config_doc))), sandbox
    finally:
        sandbox.stop()


def mailchimp_error(status: int, title: str, detail: str) -> Response:
    return Response(status, {"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": title,
                             "status": status, "detail": detail, "instance": ""})


CANNOT_REMOVE = ("This list member cannot be removed. Can not archive a contact that is bounced, pending or "
                 "archived")


def on_member(method: str, email: str, answer: Callable[[Request, Callable[[Request], Response]], Response]) -> Hook:
    """A hook answering `method` on one member's own path (not its tags or notes)."""
    path = MEMBER_PATH + subscriber_hash(email)

    def hook(request: Request, proceed: Callable[[Request], Response]) -> Response | None:
        return answer(request, proceed) if request.method == method and request.path == path else None
    return hook


def apply(env: Env, *extra: str, receiver: Receiver | None = None) -> Run:
    extra_env = {"TEAMS_WEBHOOK_URL": receiver.url(TEAMS_PATH)} if receiver else {}
    return run_cli("--apply", "--yes", "--no-redact", *extra, "--config", str(env.config_path),
                   env={**SANDBOX_ENV, **extra_env})


def outcome_rows(env: Env, email: str) -> list[dict[str, Any]]:
    """The audit's outcome rows about `email`, oldest first, read through `--audit`."""
    # A config with notifications needs their variable set even to be read; --audit posts nothing.
    run = run_cli("--audit", "--format", "json", "--no-redact", "--email", email, "--config", str(env.config_path),
                  env={**SANDBOX_ENV, "TEAMS_WEBHOOK_URL": "http://127.0.0.1:9/unused"})
    assert run.code == 0, run.text
    return [row for row in json.loads(run.out) if row["phase"] == "outcome"]


def outcomes(env: Env, email: str) -> list[tuple[str, str]]:
    return [(row["action"], row["outcome"]) for row in outcome_rows(env, email)]


def notified_event(receiver: Receiver, index: int = 0) -> str:
    card = receiver.bodies(TEAMS_PATH)[index]["attachments"][0]["content"]
    return str(card["body"][0]["text"])


def with_teams(config: dict[str, Any]) -> dict[str, Any]:
    config["notifications"] = {"teams": {"webhook_url": "${TEAMS_WEBHOOK_URL}", "on": ["failed", "applied"]}}
    return config


def deletes_of(sandbox: RecordingSandbox, email: str) -> list[int]:
    path = MEMBER_PATH + subscriber_hash(email)
    return [status for method, p, _, status, _ in sandbox.log if method == "DELETE" and p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the audit database lives in ./.reconciler


# -- point 4: a critical pending member is unsubscribed, then archived; a cleaned one is reported ----------


CRITICAL_SEED = make_seed(
    [contact("501", "crit.pending@example.com"), contact("502", "crit.cleaned@example.com"),
     contact("503", "crit.live@example.com")],
    [hub_list("762", "Compliance Hold", ["501", "502", "503"])],
    [member("crit.pending@example.com", "pending", ["Recruitment"]),
     member("crit.cleaned@example.com", "cleaned", ["Recruitment"]),
     member("crit.live@example.com", "subscribed", ["Recruitment"])])


def test_critical_pending_member_is_unsubscribed_then_archived_and_a_cleaned_one_is_only_reported(
        tmp_path: Path) -> None:
    with hooked(tmp_path, CRITICAL_SEED, small_config()) as (env, sandbox):
        doc = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert sorted(c["action"] for c in changes_of(doc, email="crit.pending@example.com")) == \
            ["archive_member", "unsubscribe_member"]
        assert changes_of(doc, email="crit.cleaned@example.com") == []
        assert any("cleaned" in r["reason"] for r in reports_of(doc, "crit.cleaned@example.com"))

        run = apply(env)
        assert run.code == 0, run.text
        assert "converged" in run.out
        assert outcomes(env, "crit.pending@example.com") == [("unsubscribe_member", "applied"),
                                                             ("archive_member", "applied")]
        members = env.view.members()
        assert members["crit.pending@example.com"].status == "archived"
        assert members["crit.live@example.com"].status == "archived"
        assert members["crit.cleaned@example.com"].status == "cleaned"
        assert deletes_of(sandbox, "crit.cleaned@example.com") == []  # never written
        path = MEMBER_PATH + subscriber_hash("crit.pending@example.com")
        writes = [method for method, p, _, _, mutated in sandbox.log if p == path and mutated]
        assert writes == ["PATCH", "DELETE"]  # unsubscribed first, archived after


def test_a_pending_critical_member_whose_unsubscribe_fails_is_not_archived_and_the_apply_is_partial(
        tmp_path: Path) -> None:
    with hooked(tmp_path, CRITICAL_SEED, small_config()) as (env, sandbox):
        sandbox.hooks.append(on_member("PATCH", "crit.pending@example.com", lambda r, p: mailchimp_error(
            400, "Invalid Resource", "The resource submitted could not be validated.")))
        run = apply(env)
        assert run.code == 5, run.text
        rows = outcome_rows(env, "crit.pending@example.com")
        assert [(r["action"], r["outcome"]) for r in rows] == [("unsubscribe_member", "failed"),
                                                                ("archive_member", "deferred")]
        assert "R2 deferred" in rows[1]["error"] and "unsubscribe did not succeed" in rows[1]["error"]
        assert deletes_of(sandbox, "crit.pending@example.com") == []  # the archive waited: no 405 to interpret
        assert env.view.member("crit.pending@example.com").status == "pending"

        sandbox.hooks.clear()  # the cause is fixed: the next apply finishes the job
        again = apply(env)
        assert again.code == 0, again.text
        assert env.view.member("crit.pending@example.com").status == "archived"


def test_a_late_duplicate_of_the_unsubscribe_that_unarchives_the_member_is_archived_again(tmp_path: Path) -> None:
    """The unsubscribe timed out and was retried; the first request lands after the archive, and
    Mailchimp un-archives a member on a PATCH with a status. The apply reads it again at the end."""
    sent: list[Request] = []

    def remember(request: Request, proceed: Callable[[Request], Response]) -> Response:
        sent.append(request)
        return proceed(request)

    def late_duplicate(request: Request, proceed: Callable[[Request], Response]) -> Response:
        answer = proceed(request)
        if len(sent) == 1:  # after the first DELETE only
            sent.append(request)
            proceed(sent[0])  # the timed-out PATCH lands now
        return answer

    with hooked(tmp_path, CRITICAL_SEED, small_config()) as (env, sandbox):
        sandbox.hooks += [on_member("PATCH", "crit.pending@example.com", remember),
                          on_member("DELETE", "crit.pending@example.com", late_duplicate)]
        run = apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        assert env.view.member("crit.pending@example.com").status == "archived"
        assert outcomes(env, "crit.pending@example.com") == [
            ("unsubscribe_member", "applied"), ("archive_member", "applied"), ("archive_member", "applied")]
        assert "late request" in outcome_rows(env, "crit.pending@example.com")[2]["error"]


# -- point 4/5: a 405 on an archive is verified by reading the member -----------------------------------


def test_an_archive_answered_405_is_done_when_the_member_reads_archived_and_failed_when_it_does_not(
        tmp_path: Path, receiver: Receiver) -> None:
    seed = make_seed(
        [contact("601", "raced@example.com"), contact("602", "stuck@example.com")],
        [hub_list("762", "Compliance Hold", ["601", "602"])],
        [member("raced@example.com", "subscribed", ["Recruitment"]),
         member("stuck@example.com", "subscribed", ["Recruitment"])])

    def archived_meanwhile(request: Request, proceed: Callable[[Request], Response]) -> Response:
        proceed(request)  # someone archived it a moment before our DELETE arrived
        return mailchimp_error(405, "Method Not Allowed", CANNOT_REMOVE)

    with hooked(tmp_path, seed, with_teams(small_config())) as (env, sandbox):
        sandbox.hooks += [on_member("DELETE", "raced@example.com", archived_meanwhile),
                          on_member("DELETE", "stuck@example.com",
                                    lambda r, p: mailchimp_error(405, "Method Not Allowed", CANNOT_REMOVE))]
        run = apply(env, receiver=receiver)
        assert run.code == 5, run.text
        assert outcomes(env, "raced@example.com") == [("archive_member", "applied")]
        (stuck,) = outcome_rows(env, "stuck@example.com")
        # A subscribed critical member Mailchimp will not archive is failed, never refused.
        assert stuck["outcome"] == "failed"
        assert "cannot be removed" in stuck["error"] and "the member is subscribed" in stuck["error"]
        assert env.view.member("raced@example.com").status == "archived"
        assert env.view.member("stuck@example.com").status == "subscribed"
        assert notified_event(receiver) == "Reconcile apply failed"


# -- point 5: critical archives and R4 unsubscribes left undone make the apply partial ---------------------


def test_a_critical_archive_that_fails_exits_5_and_notifies_failed(tmp_path: Path, receiver: Receiver) -> None:
    with hooked(tmp_path, CRITICAL_SEED, with_teams(small_config())) as (env, sandbox):
        sandbox.hooks.append(on_member("DELETE", "crit.live@example.com", lambda r, p: mailchimp_error(
            400, "Invalid Resource", "The resource submitted could not be validated.")))
        run = apply(env, receiver=receiver)
        assert run.code == 5, run.text
        assert outcomes(env, "crit.live@example.com") == [("archive_member", "failed")]
        assert env.view.member("crit.live@example.com").status == "subscribed"
        assert notified_event(receiver) == "Reconcile apply failed"
        (body,) = receiver.bodies(TEAMS_PATH)
        assert "Invalid Resource" in json.dumps(body)


def test_an_r4_unsubscribe_that_fails_exits_5(tmp_path: Path) -> None:
    seed = make_seed([contact("701", "optout@example.com", unsubscribed=True)],
                     [hub_list("719", "Recruitment", ["701"])],
                     [member("optout@example.com", "subscribed", ["Recruitment"])])
    with hooked(tmp_path, seed, small_config()) as (env, sandbox):
        sandbox.hooks.append(on_member("PATCH", "optout@example.com", lambda r, p: mailchimp_error(
            400, "Invalid Resource", "The resource submitted could not be validated.")))
        run = apply(env)
        assert run.code == 5, run.text
        assert outcomes(env, "optout@example.com") == [("unsubscribe_member", "failed")]
        assert env.view.member("optout@example.com").status == "subscribed"
        sandbox.hooks.clear()
        assert apply(env).code == 0
        assert env.view.member("optout@example.com").status == "unsubscribed"


def test_a_failed_opt_out_recheck_holds_the_member_writes_and_exits_5(tmp_path: Path, receiver: Receiver) -> None:
    seed = make_seed(
        [contact("801", "ann@example.com", firstname="Ann"), contact("802", "crit.live@example.com")],
        [hub_list("719", "Recruitment", ["801"]), hub_list("762", "Compliance Hold", ["802"])],
        [member("ann@example.com", "subscribed", ["Recruitment"], FNAME="Old"),
         member("crit.live@example.com", "subscribed", ["Recruitment"])])

    def recheck_fails(request: Request, proceed: Callable[[Request], Response]) -> Response | None:
        if request.method == "GET" and request.arg("since_last_changed"):
            return mailchimp_error(400, "Invalid Resource", "since_last_changed could not be read")
        return None

    with hooked(tmp_path, seed, with_teams(small_config())) as (env, sandbox):
        sandbox.hooks.append(recheck_fails)
        run = apply(env, receiver=receiver)
        assert run.code == 5, run.text
        (update,) = outcome_rows(env, "ann@example.com")
        assert (update["action"], update["outcome"]) == ("update_member", "deferred")
        assert "could not be re-checked" in update["error"]
        assert outcomes(env, "crit.live@example.com") == [("archive_member", "deferred")]
        assert env.view.member("ann@example.com").merge_fields["FNAME"] == "Old"
        assert env.view.member("crit.live@example.com").status == "subscribed"
        assert notified_event(receiver) == "Reconcile apply failed"

        sandbox.hooks.clear()
        again = apply(env, receiver=receiver)
        assert again.code == 0, again.text
        assert env.view.member("ann@example.com").merge_fields["FNAME"] == "Ann"
        assert env.view.member("crit.live@example.com").status == "archived"
        assert notified_event(receiver, 1) == "Reconcile apply finished"


# -- point 9: a handover whose HubSpot list add names the record missing ---------------------------------


def test_a_handover_list_add_answered_record_ids_missing_fails_and_mailchimp_waits(tmp_path: Path) -> None:
    seed = make_seed([contact("901", "hand@example.com")], [hub_list("719", "Recruitment", ["901"])],
                     [member("hand@example.com", "subscribed", ["Recruitment", "Recruitment Finished"])])

    def missing(request: Request, proceed: Callable[[Request], Response]) -> Response | None:
        if request.method == "PUT" and request.path == "/crm/v3/lists/947/memberships/add":
            return Response(200, {"recordsIdsAdded": [], "recordIdsRemoved": [], "recordIdsMissing": ["901"]})
        return None

    with hooked(tmp_path, seed, small_config()) as (env, sandbox):
        sandbox.hooks.append(missing)
        run = apply(env)
        assert run.code == 5, run.text
        rows = {row["action"]: row for row in outcome_rows(env, "hand@example.com")}
        assert rows["add_to_list"]["outcome"] == "failed" and "recordIdsMissing" in rows["add_to_list"]["error"]
        for action in ("remove_tags", "archive_member"):
            assert rows[action]["outcome"] == "deferred" and "R12 deferred" in rows[action]["error"]
        handed = env.view.member("hand@example.com")
        assert handed.status == "subscribed" and "Recruitment Finished" in handed.tags
        assert "901" not in env.view.list_members("947")

        sandbox.hooks.clear()
        again = apply(env)
        assert again.code == 0, again.text
        assert env.view.member("hand@example.com").status == "archived"
        assert "901" in env.view.list_members("947")


# -- point 10: the member cap is never exceeded, even when the archive that made room fails ---------------


def test_creates_filling_room_freed_by_an_archive_wait_for_it(tmp_path: Path) -> None:
    seed = make_seed([contact("111", "stays@example.com"), contact("112", "newcomer@example.com")],
                     [hub_list("719", "Recruitment", ["111", "112"])],
                     [member("stays@example.com", "subscribed", ["Recruitment"]),
                      member("leaver@example.com", "subscribed", ["Recruitment"])])
    with hooked(tmp_path, seed, small_config(member_cap=2)) as (env, sandbox):
        doc = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert changes_of(doc, "archive_member", "leaver@example.com")
        assert changes_of(doc, "create_member", "newcomer@example.com")  # the plan counts on the archive

        sandbox.hooks.append(on_member("DELETE", "leaver@example.com", lambda r, p: mailchimp_error(
            400, "Invalid Resource", "The resource submitted could not be validated.")))
        run = apply(env)
        assert run.code == 5, run.text
        assert outcomes(env, "leaver@example.com") == [("archive_member", "failed")]
        (create,) = outcome_rows(env, "newcomer@example.com")
        assert create["outcome"] == "deferred" and "R16 deferred: room not freed" in create["error"]
        live = [m for m in env.view.members().values() if m.status in ("subscribed", "pending")]
        assert len(live) == 2 and "newcomer@example.com" not in {m.email for m in live}

        sandbox.hooks.clear()
        again = apply(env)
        assert again.code == 0, again.text
        members = env.view.members()
        assert members["leaver@example.com"].status == "archived"
        assert members["newcomer@example.com"].status == "subscribed"
        assert sum(1 for m in members.values() if m.status in ("subscribed", "pending")) == 2


# -- point 13: every field of a reviewed change is checked ---------------------------------------------


ANN_SEED = make_seed([contact("121", "ann@example.com", firstname="Ann")], [hub_list("719", "Recruitment", ["121"])],
                     [member("ann@example.com", "subscribed", ["Recruitment"], FNAME="Old")])


def _set_firstname(env: Env, contact_id: str, value: str) -> None:
    answer = env.view.http.post(f"{env.sandbox.base_url}/crm/v3/objects/contacts/batch/update", headers=env.view.hs,
                                json={"inputs": [{"id": contact_id, "properties": {"firstname": value}}]}, timeout=30)
    answer.raise_for_status()


def test_a_hand_edited_after_is_refused_even_when_the_re_plan_agrees_with_the_edit(tmp_path: Path) -> None:
    with hooked(tmp_path, ANN_SEED, small_config()) as (env, sandbox):
        assert env.cli("--plan", "--out", "plan.json").code == 0
        document = json.loads(Path("plan.json").read_text(encoding="utf-8"))
        (update,) = changes_of(document, "update_member", "ann@example.com")
        update["after"]["FNAME"] = "Zed"
        Path("plan.json").write_text(json.dumps(document), encoding="utf-8")
        _set_firstname(env, "121", "Zed")  # the live re-plan now wants exactly the edited value
        assert changes_of(plan_json(env.cli("--plan", "--format", "json", "--no-redact")),
                          "update_member")[0]["after"] == {"FNAME": "Zed"}

        sandbox.reset_counters()
        run = run_cli("--apply", "plan.json", "--config", str(env.config_path), env=SANDBOX_ENV)
        assert run.code == 4, run.text
        assert "stale plan" in run.err and "checksum" in run.err
        assert env.writes() == {}
        assert env.view.member("ann@example.com").merge_fields["FNAME"] == "Old"


def test_a_changed_contact_id_is_stale_even_with_a_recomputed_checksum(tmp_path: Path) -> None:
    with hooked(tmp_path, ANN_SEED, small_config()) as (env, sandbox):
        assert env.cli("--plan", "--out", "plan.json").code == 0
        document = json.loads(Path("plan.json").read_text(encoding="utf-8"))
        (update,) = changes_of(document, "update_member", "ann@example.com")
        update["contact_id"] = "999"
        document["checksum"] = checksum_of(Change.make(**{k: c[k] for k in (
            "system", "action", "target", "email", "before", "after", "reason", "step", "contact_id")})
            for c in document["changes"])
        Path("plan.json").write_text(json.dumps(document), encoding="utf-8")

        sandbox.reset_counters()
        run = run_cli("--apply", "plan.json", "--config", str(env.config_path), env=SANDBOX_ENV)
        assert run.code == 4, run.text
        assert "stale plan" in run.err and "1 change(s) not in plan.json" in run.err
        assert env.writes() == {}


# -- point 15: new_member_status pending, end to end ---------------------------------------------------


def test_new_member_status_pending_creates_pending_members_and_converges(tmp_path: Path) -> None:
    seed = make_seed([contact("131", "p1@example.com", firstname="Pia"), contact("132", "p2@example.com")],
                     [hub_list("719", "Recruitment", ["131", "132"])], [], double_optin=True)
    with hooked(tmp_path, seed, small_config(new_member_status="pending")) as (env, sandbox):
        run = apply(env)
        assert run.code == 0, run.text
        assert "converged" in run.out
        for email in ("p1@example.com", "p2@example.com"):
            created = env.view.member(email)
            assert created is not None and created.status == "pending"
            assert "Recruitment" in created.tags
        assert env.view.member("p1@example.com").merge_fields["FNAME"] == "Pia"
        again = env.cli("--plan", "--detailed-exitcode")
        assert again.code == 0, again.text


# -- point 16: --retry-refused with a reviewed plan ------------------------------------------------------


def test_retry_refused_plans_the_retries_and_that_plan_applies_with_it(tmp_path: Path) -> None:
    seed = make_seed([contact("141", "gone@example.com"), contact("142", "fine@example.com")],
                     [hub_list("719", "Recruitment", ["141", "142"])], [], permanently_deleted=["gone@example.com"])
    with hooked(tmp_path, seed, small_config()) as (env, sandbox):
        first = apply(env)
        assert first.code == 0, first.text  # a compliance refusal is reported, not a failure
        assert outcomes(env, "gone@example.com") == [("create_member", "refused")]

        plain = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert changes_of(plain, email="gone@example.com") == []
        assert any("refused on" in r["reason"] for r in reports_of(plain, "gone@example.com"))

        written = env.cli("--plan", "--retry-refused", "--out", "plan.json")
        assert written.code == 0, written.text
        document = json.loads(Path("plan.json").read_text(encoding="utf-8"))
        assert document["options"]["retry_refused"] is True
        assert changes_of(document, "create_member", "gone@example.com")

        sandbox.reset_counters()
        without = run_cli("--apply", "plan.json", "--config", str(env.config_path), env=SANDBOX_ENV)
        assert without.code == 1, without.text
        assert "--retry-refused" in without.err and "Traceback" not in without.text
        assert env.writes() == {}

        retried = run_cli("--apply", "plan.json", "--retry-refused", "--config", str(env.config_path),
                          env=SANDBOX_ENV)
        assert retried.code == 0, retried.text
        assert "stale" not in retried.err
        assert outcomes(env, "gone@example.com") == [("create_member", "refused"), ("create_member", "refused")]
        assert env.view.member("gone@example.com") is None  # Mailchimp still refuses it


def test_a_plan_made_without_retry_refused_is_not_applied_with_it(tmp_path: Path) -> None:
    with hooked(tmp_path, ANN_SEED, small_config()) as (env, sandbox):
        assert env.cli("--plan", "--out", "plan.json").code == 0
        sandbox.reset_counters()
        run = run_cli("--apply", "plan.json", "--retry-refused", "--config", str(env.config_path), env=SANDBOX_ENV)
        assert run.code == 1 and "made without --retry-refused" in run.err, run.text
        assert env.writes() == {}
