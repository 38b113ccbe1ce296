"""The sandbox's Mailchimp compliance states over real HTTP: what a resubscribe, a move to pending
and an archive answer for each member state, who unsubscribed a member (self, admin, API) and how
that survives an archive and the `--state` journal, and the variants giving kinder answers.

The expected answers are written out here from the reference sheet (facts added after review), not
derived from the emulator: an admin- or API-unsubscribed member can be subscribed again by the
API, a self-unsubscribed or cleaned one cannot; pending, cleaned and archived members cannot be
archived (405).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from reconciler.sandbox import Sandbox, SandboxOptions
from reconciler.sandbox.mailchimp_state import MailchimpState
from reconciler.sandbox.seed import load_seed

KEY = "sandboxkey-us1"
LIST = "abc123def4"
AUTH = {"Authorization": f"Bearer {KEY}"}
CANNOT_ARCHIVE = "This list member cannot be removed. Can not archive a contact that is bounced, pending or archived"
ADMIN_REASON = "N/A (Unsubscribed by an admin)"
API_REASON = "N/A (Unsubscribed by admin)"

# Each state: how a member gets there (seed entry, then API calls made before the action).
STATES: dict[str, tuple[dict[str, Any], list[tuple[str, dict[str, Any] | None]]]] = {
    "subscribed": ({"status": "subscribed"}, []),
    "pending": ({"status": "pending"}, []),
    "transactional": ({"status": "transactional"}, []),
    "unsubscribed-self": ({"status": "unsubscribed"}, []),  # a seeded unsubscribe defaults to self
    "unsubscribed-admin": ({"status": "unsubscribed", "unsubscribed_by": "admin"}, []),
    "unsubscribed-api": ({"status": "subscribed"}, [("PATCH", {"status": "unsubscribed"})]),
    "cleaned": ({"status": "cleaned"}, []),
    "archived-after-subscribed": ({"status": "subscribed"}, [("DELETE", None)]),
    "archived-after-self-unsub": ({"status": "unsubscribed", "unsubscribed_by": "self"}, [("DELETE", None)]),
    "archived-after-api-unsub": ({"status": "subscribed"}, [("PATCH", {"status": "unsubscribed"}), ("DELETE", None)]),
}
ACTIONS = ("put-subscribed", "patch-subscribed", "put-pending", "delete")

OK, REFUSED, NOT_ALLOWED = 200, 400, 405
# (state, action) -> (status code, status afterwards, confirmation emails sent by the action)
EXPECTED: dict[tuple[str, str], tuple[int, str, int]] = {
    ("subscribed", "put-subscribed"): (OK, "subscribed", 0),
    ("subscribed", "patch-subscribed"): (OK, "subscribed", 0),
    ("subscribed", "put-pending"): (OK, "pending", 1),
    ("subscribed", "delete"): (204, "archived", 0),
    # pending: subscribing sends no (second) confirmation; pending again is no change
    ("pending", "put-subscribed"): (OK, "subscribed", 0),
    ("pending", "patch-subscribed"): (OK, "subscribed", 0),
    ("pending", "put-pending"): (OK, "pending", 0),
    ("pending", "delete"): (NOT_ALLOWED, "pending", 0),
    ("transactional", "put-subscribed"): (OK, "subscribed", 0),
    ("transactional", "patch-subscribed"): (OK, "subscribed", 0),
    ("transactional", "put-pending"): (OK, "pending", 1),
    ("transactional", "delete"): (204, "archived", 0),
    # unsubscribed by the person: refused; pending is the reported way back (a confirmation email)
    ("unsubscribed-self", "put-subscribed"): (REFUSED, "unsubscribed", 0),
    ("unsubscribed-self", "patch-subscribed"): (REFUSED, "unsubscribed", 0),
    ("unsubscribed-self", "put-pending"): (OK, "pending", 1),
    ("unsubscribed-self", "delete"): (204, "archived", 0),
    # unsubscribed by an admin or the API: Mailchimp lets the API subscribe them again
    ("unsubscribed-admin", "put-subscribed"): (OK, "subscribed", 0),
    ("unsubscribed-admin", "patch-subscribed"): (OK, "subscribed", 0),
    ("unsubscribed-admin", "put-pending"): (OK, "pending", 1),
    ("unsubscribed-admin", "delete"): (204, "archived", 0),
    ("unsubscribed-api", "put-subscribed"): (OK, "subscribed", 0),
    ("unsubscribed-api", "patch-subscribed"): (OK, "subscribed", 0),
    ("unsubscribed-api", "put-pending"): (OK, "pending", 1),
    ("unsubscribed-api", "delete"): (204, "archived", 0),
    ("cleaned", "put-subscribed"): (REFUSED, "cleaned", 0),
    ("cleaned", "patch-subscribed"): (REFUSED, "cleaned", 0),
    ("cleaned", "put-pending"): (OK, "pending", 1),
    ("cleaned", "delete"): (NOT_ALLOWED, "cleaned", 0),
    ("archived-after-subscribed", "put-subscribed"): (OK, "subscribed", 0),
    ("archived-after-subscribed", "patch-subscribed"): (OK, "subscribed", 0),
    ("archived-after-subscribed", "put-pending"): (OK, "pending", 1),
    ("archived-after-subscribed", "delete"): (NOT_ALLOWED, "archived", 0),
    ("archived-after-self-unsub", "put-subscribed"): (REFUSED, "archived", 0),
    ("archived-after-self-unsub", "patch-subscribed"): (REFUSED, "archived", 0),
    ("archived-after-self-unsub", "put-pending"): (OK, "pending", 1),
    ("archived-after-self-unsub", "delete"): (NOT_ALLOWED, "archived", 0),
    ("archived-after-api-unsub", "put-subscribed"): (OK, "subscribed", 0),
    ("archived-after-api-unsub", "patch-subscribed"): (OK, "subscribed", 0),
    ("archived-after-api-unsub", "put-pending"): (OK, "pending", 1),
    ("archived-after-api-unsub", "delete"): (NOT_ALLOWED, "archived", 0),
}


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def email_of(state: str, action: str) -> str:
    return f"{state}.{action}@example.com"


def seed(states: set[str] | None = None, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One member per (state, action) cell, seeded in the state's starting form."""
    members = [
        {"email": email_of(state, action), "merge_fields": {"FNAME": state}, **entry}
        for state, (entry, _calls) in STATES.items() if states is None or state in states
        for action in ACTIONS
    ]
    return {"mailchimp": {"api_key": KEY, "audiences": [{
        "id": LIST, "name": "Main", "double_optin": True,
        "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}],
        "members": members + (extra or []),
    }]}}


class Api:
    """The Mailchimp members endpoint of a started sandbox, over HTTP."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.base = f"{box.mailchimp_base_url}/lists/{LIST}/members"
        self.session = requests.Session()
        self.session.headers.update(AUTH)

    def url(self, email: str) -> str:
        return f"{self.base}/{md5(email)}"

    def call(self, method: str, email: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.session.request(method, self.url(email), json=body, timeout=10)

    def get(self, email: str) -> dict[str, Any]:
        reply = self.call("GET", email)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def act(self, action: str, email: str) -> requests.Response:
        if action == "put-subscribed":
            return self.call("PUT", email, {"email_address": email, "status": "subscribed"})
        if action == "patch-subscribed":
            return self.call("PATCH", email, {"status": "subscribed"})
        if action == "put-pending":
            return self.call("PUT", email, {"email_address": email, "status": "pending"})
        return self.call("DELETE", email)

    def prepare(self, states: set[str] | None = None) -> None:
        """Bring every cell's member to its state through the API (as a product would)."""
        for state, (_entry, calls) in STATES.items():
            if states is not None and state not in states:
                continue
            for action in ACTIONS:
                for method, body in calls:
                    reply = self.call(method, email_of(state, action), body)
                    assert reply.status_code in (200, 204), reply.text

    def confirmations(self, email: str) -> int:
        assert self.box.mailchimp is not None
        return self.box.mailchimp.confirmations[email.lower()]

    def close(self) -> None:
        self.session.close()
        self.box.stop()


def started(states: set[str] | None = None, variants: dict[str, Any] | None = None,
            extra: list[dict[str, Any]] | None = None) -> Api:
    """A sandbox holding the cells of `states` (all when None), brought to their states, plus `extra` members."""
    api = Api(Sandbox(seed(states, extra), options=SandboxOptions(variants=variants or {})).start())
    api.prepare(states)
    return api


def assert_problem(reply: requests.Response, status: int, title: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    body = reply.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["title"] == title and body["status"] == status
    return body


@pytest.fixture(scope="module")
def matrix() -> Iterator[Api]:
    api = started()
    yield api
    api.close()


# ----- the matrix -------------------------------------------------------------------------------


def test_the_matrix_covers_every_cell() -> None:
    assert set(EXPECTED) == {(s, a) for s in STATES for a in ACTIONS}


@pytest.mark.parametrize(("state", "action"), sorted(EXPECTED))
def test_state_action_cell(matrix: Api, state: str, action: str) -> None:
    email = email_of(state, action)
    code, after, emails = EXPECTED[(state, action)]
    before = matrix.get(email)
    assert before["status"] == ("archived" if state.startswith("archived") else state.split("-")[0])
    sent = matrix.confirmations(email)
    reply = matrix.act(action, email)
    if code == REFUSED:
        body = assert_problem(reply, 400, "Member In Compliance State")
        assert body["detail"].startswith(email) and "cannot be subscribed" in body["detail"]
    elif code == NOT_ALLOWED:
        body = assert_problem(reply, 405, "Method Not Allowed")
        assert body["detail"] == CANNOT_ARCHIVE
    else:
        assert reply.status_code == code, reply.text
        if code == 200:
            assert reply.json()["status"] == after
    member = matrix.get(email)
    assert member["status"] == after
    assert matrix.confirmations(email) - sent == emails
    if code in (REFUSED, NOT_ALLOWED):  # a refusal changes nothing, not even last_changed
        assert member["last_changed"] == before["last_changed"]
    if after != "unsubscribed":
        assert "unsubscribe_reason" not in member  # only unsubscribed members carry one


def test_unsubscribe_reason_shows_who_unsubscribed() -> None:
    states = {"unsubscribed-self", "unsubscribed-admin", "unsubscribed-api", "archived-after-api-unsub"}
    api = started(states)
    try:
        reasons = {state: api.get(email_of(state, "delete")).get("unsubscribe_reason") for state in states}
        assert reasons == {"unsubscribed-self": "", "unsubscribed-admin": ADMIN_REASON,
                           "unsubscribed-api": API_REASON, "archived-after-api-unsub": None}
        # restored as unsubscribed, an archived API unsubscribe shows its reason again
        back = api.call("PATCH", email_of("archived-after-api-unsub", "delete"), {"status": "unsubscribed"}).json()
        assert back["unsubscribe_reason"] == API_REASON
    finally:
        api.close()


# ----- provenance rules beyond the matrix -------------------------------------------------------


def test_an_api_unsubscribe_of_a_self_unsubscribed_member_keeps_it_self() -> None:
    api = started({"unsubscribed-self", "archived-after-self-unsub"})
    try:
        email = email_of("unsubscribed-self", "put-subscribed")
        repeat = api.call("PATCH", email, {"status": "unsubscribed"})
        assert repeat.status_code == 200 and repeat.json()["unsubscribe_reason"] == ""
        assert_problem(api.act("put-subscribed", email), 400, "Member In Compliance State")
        # restored from an archive as unsubscribed: still the person's own unsubscribe
        archived = email_of("archived-after-self-unsub", "put-subscribed")
        assert api.call("PATCH", archived, {"status": "unsubscribed"}).json()["status"] == "unsubscribed"
        assert_problem(api.act("put-subscribed", archived), 400, "Member In Compliance State")
        assert api.get(archived)["status"] == "unsubscribed"
    finally:
        api.close()


def test_a_member_created_unsubscribed_through_the_api_can_be_subscribed_again() -> None:
    api = started(set())
    try:
        email = "made.unsubscribed@example.com"
        created = api.call("PUT", email, {"email_address": email, "status_if_new": "unsubscribed"})
        assert created.status_code == 200 and created.json()["unsubscribe_reason"] == API_REASON
        assert api.act("put-subscribed", email).json()["status"] == "subscribed"
    finally:
        api.close()


def test_batch_subscribe_follows_the_same_rule() -> None:
    api = started({"unsubscribed-self", "unsubscribed-admin"})
    try:
        self_email, admin_email = email_of("unsubscribed-self", "delete"), email_of("unsubscribed-admin", "delete")
        reply = api.session.post(f"{api.box.mailchimp_base_url}/lists/{LIST}", timeout=10, json={
            "members": [{"email_address": e, "status": "subscribed"} for e in (self_email, admin_email)],
            "update_existing": True})
        body = reply.json()
        assert (body["total_updated"], body["error_count"]) == (1, 1)
        assert body["errors"][0]["email_address"] == self_email and "compliance state" in body["errors"][0]["error"]
        assert api.get(admin_email)["status"] == "subscribed" and api.get(self_email)["status"] == "unsubscribed"
    finally:
        api.close()


def test_seeded_archived_member_carries_its_provenance() -> None:
    extra = [
        {"email": "arch.admin@example.com", "status": "archived", "status_before_archive": "unsubscribed", "unsubscribed_by": "admin"},
        {"email": "arch.self@example.com", "status": "archived", "status_before_archive": "unsubscribed"},
        {"email": "arch.pending@example.com", "status": "archived", "status_before_archive": "pending"},
        {"email": "self.reason@example.com", "status": "unsubscribed", "unsubscribe_reason": "I never signed up for this mailing list"},
    ]
    api = started(set(), extra=extra)
    try:
        assert api.act("put-subscribed", "arch.admin@example.com").json()["status"] == "subscribed"
        assert_problem(api.act("put-subscribed", "arch.self@example.com"), 400, "Member In Compliance State")
        assert api.act("put-subscribed", "arch.pending@example.com").json()["status"] == "subscribed"
        assert api.get("self.reason@example.com")["unsubscribe_reason"] == "I never signed up for this mailing list"
        assert_problem(api.act("put-subscribed", "self.reason@example.com"), 400, "Member In Compliance State")
    finally:
        api.close()


def test_example_seed_shows_the_provenance_keys() -> None:
    example = load_seed(Path(__file__).resolve().parents[1] / "config/sandbox/example-seed.yaml")
    members = MailchimpState.from_seed(example["mailchimp"]).audiences[LIST].members
    kinds = {m.email: (m.status, m.status_before_archive, m.unsubscribed_by) for m in members.values()}
    assert kinds["bob@example.com"] == ("unsubscribed", "", "self")
    assert kinds["dev@example.org"] == ("unsubscribed", "", "admin")
    assert kinds["gus@example.org"] == ("archived", "unsubscribed", "api")


@pytest.mark.parametrize(("entry", "message"), [
    ({"status": "unsubscribed", "unsubscribed_by": "robot"}, r"unsubscribed_by: 'robot' is not one of self, admin, api"),
    ({"status": "subscribed", "unsubscribed_by": "admin"}, r"unsubscribed_by: only an unsubscribed member"),
    ({"status": "archived", "unsubscribed_by": "api"}, r"unsubscribed_by: only an unsubscribed member"),
    ({"status": "archived", "status_before_archive": "archived"}, r"status_before_archive: 'archived' is not one of"),
    ({"status": "pending", "status_before_archive": "subscribed"}, r"status_before_archive: only an archived member"),
])
def test_seed_errors_name_the_bad_provenance(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"members\[0\]\." + message):
        MailchimpState.from_seed(seed(set(), [{"email": "x@example.com", **entry}])["mailchimp"])


# ----- variants ---------------------------------------------------------------------------------


def test_variant_refuse_all_unsubscribed() -> None:
    states = {"unsubscribed-admin", "unsubscribed-api", "archived-after-api-unsub", "subscribed"}
    api = started(states, {"mailchimp_refuse_all_unsubscribed": True})
    try:
        for state in ("unsubscribed-admin", "unsubscribed-api", "archived-after-api-unsub"):
            for action in ("put-subscribed", "patch-subscribed"):
                assert_problem(api.act(action, email_of(state, action)), 400, "Member In Compliance State")
            assert api.act("put-pending", email_of(state, "put-pending")).json()["status"] == "pending"
        assert api.act("put-subscribed", email_of("subscribed", "put-pending")).status_code == 200
    finally:
        api.close()


def test_variant_refuse_pending_from_compliance() -> None:
    states = {"unsubscribed-self", "cleaned", "archived-after-self-unsub", "unsubscribed-admin"}
    api = started(states, {"mailchimp_refuse_pending_from_compliance": True})
    try:
        for state in ("unsubscribed-self", "cleaned", "archived-after-self-unsub"):
            email = email_of(state, "put-pending")
            assert_problem(api.act("put-pending", email), 400, "Member In Compliance State")
            assert api.confirmations(email) == 0
        email = email_of("unsubscribed-admin", "put-pending")
        assert api.act("put-pending", email).json()["status"] == "pending" and api.confirmations(email) == 1
    finally:
        api.close()


@pytest.mark.parametrize(("variant", "status"), [("204", 204), ("404", 404), ("405", 405)])
def test_variant_delete_archived(variant: str, status: int) -> None:
    states = {"archived-after-subscribed", "pending", "cleaned"}
    api = started(states, {"mailchimp_delete_archived": variant})
    try:
        email = email_of("archived-after-subscribed", "delete")
        reply = api.act("delete", email)
        assert reply.status_code == status and api.get(email)["status"] == "archived"
        # pending and cleaned members are refused whatever the variant says about archived ones
        for state in ("pending", "cleaned"):
            assert_problem(api.act("delete", email_of(state, "delete")), 405, "Method Not Allowed")
    finally:
        api.close()


def test_variant_delete_compliance_405_refuses_unsubscribed_members() -> None:
    states = {"unsubscribed-self", "unsubscribed-api", "subscribed"}
    api = started(states, {"mailchimp_delete_compliance_405": True})
    try:
        for state in ("unsubscribed-self", "unsubscribed-api"):
            body = assert_problem(api.act("delete", email_of(state, "delete")), 405, "Method Not Allowed")
            assert body["detail"] == "This list member cannot be removed.  Please contact support."
        assert api.act("delete", email_of("subscribed", "delete")).status_code == 204
    finally:
        api.close()


# ----- the --state snapshot and journal ---------------------------------------------------------


def write_provenance(api: Api) -> tuple[str, str, str]:
    """An API unsubscribe, an API unsubscribe then archive, and a self-unsubscribed member archived."""
    unsub = email_of("subscribed", "put-subscribed")
    archived_api = email_of("subscribed", "patch-subscribed")
    archived_self = email_of("unsubscribed-self", "put-subscribed")
    assert api.call("PATCH", unsub, {"status": "unsubscribed"}).status_code == 200
    assert api.call("PATCH", archived_api, {"status": "unsubscribed"}).status_code == 200
    assert api.call("DELETE", archived_api).status_code == 204
    assert api.call("DELETE", archived_self).status_code == 204
    return unsub, archived_api, archived_self


def assert_provenance_kept(box: Sandbox, unsub: str, archived_api: str, archived_self: str) -> None:
    api = Api(box)
    try:
        assert api.get(unsub)["unsubscribe_reason"] == API_REASON
        assert api.act("put-subscribed", unsub).json()["status"] == "subscribed"
        assert api.act("put-subscribed", archived_api).json()["status"] == "subscribed"
        assert_problem(api.act("put-subscribed", archived_self), 400, "Member In Compliance State")
        assert_problem(api.act("delete", email_of("pending", "delete")), 405, "Method Not Allowed")
    finally:
        api.session.close()


def test_provenance_survives_the_journal_after_a_crash(tmp_path: Path) -> None:
    state, crashed = tmp_path / "state.json", tmp_path / "crashed"
    crashed.mkdir()
    states = {"subscribed", "unsubscribed-self", "pending"}
    with Sandbox(seed(states), state_file=str(state)) as box:
        emails = write_provenance(Api(box))
        # a copy taken while running is what a killed process leaves: the snapshot plus the journal
        for file in tmp_path.glob("state.json*"):
            shutil.copy(file, crashed / file.name)
    journal = [json.loads(line) for line in (crashed / "state.json.journal").read_text().splitlines()]
    assert [e.get("method") for e in journal[1:]] == ["PATCH", "PATCH", "DELETE", "DELETE"]
    snapshot = json.loads((crashed / "state.json").read_text())
    assert all(m["unsubscribed_by"] in ("", "self") for a in snapshot["mailchimp"]["audiences"] for m in a["members"])
    with Sandbox(None, state_file=str(crashed / "state.json")) as replayed:
        members = replayed.mailchimp.audiences[LIST].members  # type: ignore[union-attr]
        assert members[md5(emails[0])].unsubscribed_by == "api"
        assert (members[md5(emails[1])].status, members[md5(emails[1])].unsubscribed_by) == ("archived", "api")
        assert (members[md5(emails[2])].status, members[md5(emails[2])].unsubscribed_by) == ("archived", "self")
        assert_provenance_kept(replayed, *emails)


def test_provenance_survives_the_snapshot_and_an_old_state_file_reads_as_self(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    states = {"subscribed", "unsubscribed-self", "pending"}
    with Sandbox(seed(states), state_file=str(state)) as box:
        emails = write_provenance(Api(box))
    snapshot = json.loads(state.read_text())
    by_email = {m["email"]: m for m in snapshot["mailchimp"]["audiences"][0]["members"]}
    assert by_email[emails[0]]["unsubscribed_by"] == "api" and by_email[emails[1]]["unsubscribed_by"] == "api"
    assert by_email[emails[2]]["unsubscribed_by"] == "self"
    with Sandbox(None, state_file=str(state)) as again:
        assert_provenance_kept(again, *emails)
    # A state file written before provenance existed: every unsubscribe counts as the person's own.
    old = json.loads(json.dumps(snapshot))
    for member in old["mailchimp"]["audiences"][0]["members"]:
        member.pop("unsubscribed_by")
    loaded = MailchimpState.from_json(old["mailchimp"])
    kinds = {m.email: m.unsubscribed_by for m in loaded.audiences[LIST].members.values()}
    assert kinds[emails[0]] == kinds[emails[1]] == kinds[emails[2]] == "self"
    assert kinds[email_of("subscribed", "delete")] == ""
