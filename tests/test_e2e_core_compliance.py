"""End-to-end: the compliance rules of issue 11 that the plan decides (points 3, 4, 6, 8, 14), through the
CLI against a started sandbox, with the vendor-side outcome read back through the vendors' APIs.

Expectations are stated from the seed and SPEC §4, never from a run of the same code: each test names
the people involved and what must (and must not) have happened to each of them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import requests

from e2e_helpers import (
    LIST_ID,
    MARKETING,
    MC_KEY,
    assert_compliance,
    changes_of,
    contact,
    hub_list,
    make_seed,
    member,
    members_by_list,
    plan_json,
    reports_of,
    small_config,
    started,
    subscriber_hash,
)

EVENTS = "bbb222ccc3"
NEWS = "289137999"


def _apply(env, *extra: str):  # type: ignore[no-untyped-def]
    config = env.config
    before = members_by_list(env.view, config)
    run = env.cli("--apply", "--yes", "--no-redact", *extra)
    # With --audience, the other audiences' opt-outs are carried by their own applies.
    assert_compliance(env.view, config, before, converged=run.code == 0 and "--audience" not in extra)
    return run


def _plan(env, *extra: str) -> dict:  # type: ignore[no-untyped-def]
    return plan_json(env.cli("--plan", "--format", "json", "--no-redact", *extra))


def _archived(email: str, before: str, unsubscribed_by: str | None = None, **merge: str) -> dict:
    out = {**member(email, status="archived", tags=["Recruitment"], **merge), "status_before_archive": before}
    if unsubscribed_by:
        out["unsubscribed_by"] = unsubscribed_by
    return out


def _mailchimp(env, method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
    response = requests.request(method, f"{env.sandbox.mailchimp_base_url}{path}", auth=("x", MC_KEY),
                                timeout=30, **kwargs)
    assert response.status_code < 300, response.text
    return response


# -- point 3: R8 restores only with evidence of consent, in both modes -------------------------


@pytest.mark.parametrize("mode", ["subscribed", "pending"])
def test_r8_restores_only_with_evidence_of_consent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   mode: str) -> None:
    """Mailchimp would happily restore the api- and admin-unsubscribed members: the product must not ask it."""
    monkeypatch.chdir(tmp_path)
    people = {
        "consent@example.com": True,  # explicitly SUBSCRIBED in HubSpot: restored
        "api.unsub@example.com": False,  # archived after an API unsubscribe: Mailchimp would restore it
        "admin.unsub@example.com": False,  # archived after an admin unsubscribe: likewise
        "plain@example.com": False,  # archived while subscribed, by someone else: no evidence here
    }
    contacts = [contact(str(i), email, subscribed=ok, firstname="X") for i, (email, ok) in enumerate(people.items(), 1)]
    seed = make_seed(contacts, [hub_list("719", "Recruitment", [c["id"] for c in contacts])],
                     [_archived("consent@example.com", "subscribed"),
                      _archived("api.unsub@example.com", "unsubscribed", "api"),
                      _archived("admin.unsub@example.com", "unsubscribed", "admin"),
                      _archived("plain@example.com", "subscribed")])
    with started(tmp_path, seed, small_config(new_member_status=mode)) as env:
        plan = _plan(env)
        assert [c["email"] for c in changes_of(plan, "restore_member")] == ["consent@example.com"]
        for email in ("api.unsub@example.com", "admin.unsub@example.com", "plain@example.com"):
            assert any(r["reason"].startswith("R8 restore needs consent") for r in reports_of(plan, email)), email
        run = _apply(env)
        assert run.code == 0, run.text
        members = env.view.members()
        assert members["consent@example.com"].status == mode
        for email in ("api.unsub@example.com", "admin.unsub@example.com", "plain@example.com"):
            assert members[email].status == "archived", email
        assert env.sandbox.counters().get("PUT /3.0/lists/{list_id}/members/{subscriber_hash}", 0) <= 1


def test_r8_memory_follows_later_events_the_latest_word_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run 1 archives two members it saw subscribed (R9: their contacts left the source list). Before
    run 2, both are back in the source list, but one opted out in another audience in between: only
    the other is restored (evidence: archived by this product while subscribed)."""
    monkeypatch.chdir(tmp_path)
    second = {"id": EVENTS, "name": "Events", "double_optin": False,
              "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}],
              "members": [member("later.out@example.com", tags=["Events"])]}
    contacts = [contact("1", "comes.back@example.com", subscribed=False, firstname="Co"),
                contact("2", "later.out@example.com", subscribed=False, firstname="La"),
                contact("3", "stays@example.com", subscribed=False, firstname="St")]
    seed = make_seed(contacts, [hub_list("719", "Recruitment", ["3"]), hub_list("720", "Events", ["2"])],
                     [member("comes.back@example.com", tags=["Recruitment"], FNAME="Co"),
                      member("later.out@example.com", tags=["Recruitment"], FNAME="La"),
                      member("stays@example.com", tags=["Recruitment"], FNAME="St")], audiences=[second])
    config = small_config()
    config["audiences"]["events"] = dict(copy.deepcopy(config["audiences"]["main"]), mailchimp_list_id=EVENTS,
                                         handover=[], streams=[{"name": "events", "exclude": [],
                                                                "sources": [{"list": "720", "tag": "Events"}]}])
    with started(tmp_path, seed, config) as env:
        assert _apply(env).code == 0
        assert env.view.member("comes.back@example.com").status == "archived"
        assert env.view.member("later.out@example.com").status == "archived"
        # Between runs: both contacts are back in the source list; one unsubscribes from Events.
        env.view.add_to_list("719", ["1", "2"])
        _mailchimp(env, "PATCH", f"/lists/{EVENTS}/members/{subscriber_hash('later.out@example.com')}",
                   json={"status": "unsubscribed"})
        plan = _plan(env)
        assert [c["email"] for c in changes_of(plan, "restore_member")] == ["comes.back@example.com"]
        assert "archived by this product while subscribed" in changes_of(plan, "restore_member")[0]["reason"]
        assert changes_of(plan, "unsubscribe_contact", "later.out@example.com")  # R11 carries it
        run = _apply(env)
        assert run.code == 0, run.text
        assert env.view.member("comes.back@example.com").status == "subscribed"
        assert env.view.member("later.out@example.com").status == "archived"
        # Run 3: the opt-out is now the latest word (audit memory and HubSpot): still no restore.
        assert changes_of(_plan(env), "restore_member") == []


# -- point 4: R2 and R9 on members Mailchimp cannot archive ------------------------------------


def test_r2_pending_is_unsubscribed_then_archived_cleaned_reported_r9_pending_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    contacts = [contact("1", "pending.critical@example.com"), contact("2", "cleaned.critical@example.com"),
                contact("3", "pending.leaver@example.com")]
    seed = make_seed(contacts, [hub_list("719", "Recruitment", ["1", "2"]), hub_list("762", "Compliance", ["1", "2"])],
                     [member("pending.critical@example.com", status="pending", tags=["Recruitment", "VIP"]),
                      member("cleaned.critical@example.com", status="cleaned", tags=["Recruitment"]),
                      member("pending.leaver@example.com", status="pending", tags=["Recruitment"])])
    with started(tmp_path, seed, small_config()) as env:
        plan = _plan(env)
        assert {c["action"] for c in plan["changes"] if c["email"] == "pending.critical@example.com"
                and c["system"] == "mailchimp"} == {"unsubscribe_member", "archive_member"}
        for email in ("cleaned.critical@example.com", "pending.leaver@example.com"):
            assert not [c for c in plan["changes"] if c["email"] == email and c["system"] == "mailchimp"], email
        assert any("cannot archive" in r["reason"] for r in reports_of(plan, "cleaned.critical@example.com"))
        assert any("pending members cannot be archived" in r["reason"]
                   for r in reports_of(plan, "pending.leaver@example.com"))
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        members = env.view.members()
        assert members["pending.critical@example.com"].status == "archived"
        assert members["cleaned.critical@example.com"].status == "cleaned"
        assert members["pending.leaver@example.com"].status == "pending"
        assert env.sandbox.counters().get("DELETE /3.0/lists/{list_id}/members/{subscriber_hash}", 0) == 1
        assert _plan(env)["changes"] == []  # nothing retried every run


# -- point 6: an opt-out stops every write, whatever from_hubspot says -------------------------


@pytest.mark.parametrize("from_hubspot", [True, False])
def test_opted_out_people_get_no_merge_fields_or_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      from_hubspot: bool) -> None:
    monkeypatch.chdir(tmp_path)
    contacts = [
        contact("1", "sub.optout@example.com", unsubscribed=True, firstname="New"),
        {**contact("2", "all.optout@example.com", firstname="New"), "opted_out_of_all": True},
        {**contact("3", "news.optout@example.com", firstname="New"), "unsubscribed": [NEWS]},
        contact("4", "fine@example.com", firstname="New"),
    ]
    emails = [c["email"] for c in contacts]
    seed = make_seed(contacts, [hub_list("719", "Recruitment", ["1", "2", "3", "4"])],
                     [member(email, tags=["Other"], FNAME="Old") for email in emails])
    seed["hubspot"]["subscriptions"].append({"id": NEWS, "name": "Newsletter"})
    config = small_config()
    config["subscriptions"]["newsletter"] = NEWS
    config["audiences"]["main"]["opt_outs"]["from_hubspot"] = ["marketing"] if from_hubspot else False
    with started(tmp_path, seed, config) as env:
        plan = _plan(env)
        for email in emails[:3]:
            actions = {c["action"] for c in plan["changes"] if c["email"] == email and c["system"] == "mailchimp"}
            assert actions <= {"unsubscribe_member"}, (email, actions)
        assert {c["action"] for c in plan["changes"] if c["email"] == "fine@example.com"} == {"update_member", "add_tags"}
        run = _apply(env)
        assert run.code == 0, run.text
        members = env.view.members()
        for email in emails[:3]:
            assert members[email].merge_fields["FNAME"] == "Old" and members[email].tags == {"Other"}, email
        # R4 unsubscribes for marketing and for all email, only with from_hubspot on; never for the
        # newsletter, which R4 does not use (but which still stops every write).
        expected = "unsubscribed" if from_hubspot else "subscribed"
        assert members["sub.optout@example.com"].status == expected
        assert members["all.optout@example.com"].status == expected
        assert members["news.optout@example.com"].status == "subscribed"
        assert members["fine@example.com"].merge_fields["FNAME"] == "New"


# -- point 8: a Mailchimp opt-out keeps the person out of every audience, on every run ---------


def test_mailchimp_opt_out_keeps_the_person_out_of_every_audience_on_every_later_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """R11 carries the opt-out in `main` to the marketing subscription, but audience `events` listens
    to the newsletter subscription (R4): HubSpot never reflects the opt-out for it. After someone else
    archives the unsubscribed member in `main` (hiding the opt-out), the audit memory still keeps the
    person out of `events`, and `--audience events` alone reads `main`'s opt-outs too."""
    monkeypatch.chdir(tmp_path)
    events = {"id": EVENTS, "name": "Events", "double_optin": False,
              "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}], "members": []}
    contacts = [contact("1", "out@example.com", firstname="Ou"), contact("2", "in@example.com", firstname="In")]
    seed = make_seed(contacts, [hub_list("719", "Recruitment", ["1", "2"]), hub_list("720", "Events", ["1", "2"])],
                     [member("out@example.com", status="unsubscribed", tags=["Recruitment"])], audiences=[events])
    seed["hubspot"]["subscriptions"].append({"id": NEWS, "name": "Newsletter"})
    config = small_config()
    config["subscriptions"]["newsletter"] = NEWS
    config["audiences"]["events"] = dict(
        copy.deepcopy(config["audiences"]["main"]), mailchimp_list_id=EVENTS, handover=[],
        streams=[{"name": "events", "exclude": [], "sources": [{"list": "720", "tag": "Events"}]}],
        opt_outs={"to_hubspot": False, "from_hubspot": ["newsletter"]})
    with started(tmp_path, seed, config) as env:
        only_events = _plan(env, "--audience", "events")
        assert [c["email"] for c in changes_of(only_events, "create_member")] == ["in@example.com"]
        assert _apply(env, "--audience", "events").code == 0
        assert env.view.member("out@example.com", EVENTS) is None
        assert _apply(env).code == 0  # main: R11 carries the opt-out to marketing
        assert env.view.subscription("out@example.com")["status"] == "NOT_SUBSCRIBED"
        # Someone else archives the unsubscribed member: Mailchimp no longer shows the opt-out.
        _mailchimp(env, "DELETE", f"/lists/{LIST_ID}/members/{subscriber_hash('out@example.com')}")
        for args in ((), ("--audience", "events")):
            plan = _plan(env, *args)
            assert not changes_of(plan, "create_member", "out@example.com"), args
            assert not changes_of(plan, "restore_member", "out@example.com"), args
        assert _apply(env).code == 0
        assert env.view.member("out@example.com", EVENTS) is None


# -- point 14: the configured legal basis and explanation reach HubSpot ------------------------


def test_r11_sends_the_configured_legal_basis_and_explanation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed([contact("1", "gone@example.com"), contact("2", "bounced@example.com")],
                     [hub_list("719", "Recruitment", ["1", "2"])],
                     [member("gone@example.com", status="unsubscribed", tags=["Recruitment"]),
                      member("bounced@example.com", status="cleaned", tags=["Recruitment"])])
    config = small_config()
    config["audiences"]["main"]["opt_outs"]["to_hubspot"] = {
        "statuses": ["unsubscribed", "cleaned"], "subscriptions": ["marketing"],
        "legal_basis": "PERFORMANCE_OF_CONTRACT", "explanation": "Opted out of the Main audience (ticket 4711)"}
    with started(tmp_path, seed, config) as env:
        assert _apply(env).code == 0
        for email in ("gone@example.com", "bounced@example.com"):
            status = env.view.subscription(email, MARKETING)
            assert (status["status"], status["legalBasis"], status["legalBasisExplanation"]) == (
                "NOT_SUBSCRIBED", "PERFORMANCE_OF_CONTRACT", "Opted out of the Main audience (ticket 4711)"), email
        audit = env.cli("--audit", "--email", "gone@example.com", "--format", "json")
        assert "PERFORMANCE_OF_CONTRACT" in audit.out and "ticket 4711" in audit.out


def test_r8_an_archive_by_someone_else_after_a_restore_by_someone_else_is_no_evidence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This product archives a member (evidence). Someone else restores it (untagged, so the product
    leaves it alone), an apply sees it live, then someone else archives it again. When the contact
    comes back to a source list, the archive on record is not the latest word: no restore."""
    monkeypatch.chdir(tmp_path)
    seed = make_seed([contact("1", "twice@example.com", subscribed=False, firstname="Tw")],
                     [hub_list("719", "Recruitment", [])],
                     [member("twice@example.com", tags=["Recruitment"], FNAME="Tw")])
    path = f"/lists/{LIST_ID}/members/{subscriber_hash('twice@example.com')}"
    with started(tmp_path, seed, small_config()) as env:
        assert _apply(env).code == 0
        assert env.view.member("twice@example.com").status == "archived"  # R9, by this product
        _mailchimp(env, "PUT", path, json={"email_address": "twice@example.com", "status": "subscribed"})
        _mailchimp(env, "POST", f"{path}/tags", json={"tags": [{"name": "Recruitment", "status": "inactive"}]})
        assert env.view.member("twice@example.com").status == "subscribed"
        assert _apply(env).code == 0  # nothing to do (R10), but the apply saw it live
        _mailchimp(env, "DELETE", path)
        env.view.add_to_list("719", ["1"])
        plan = _plan(env)
        assert changes_of(plan, "restore_member") == []
        assert any(r["reason"].startswith("R8 restore needs consent") for r in reports_of(plan, "twice@example.com"))
