"""End-to-end: the rules of SPEC §4 that need their own small seed and config, through the CLI and sandbox.

Each test seeds HubSpot and Mailchimp for one rule, runs the real CLI (embedded `--sandbox` or a
started Sandbox), and reads the vendor-side outcome back through the vendors' APIs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import (
    LIST_ID,
    MARKETING,
    assert_compliance,
    changes_of,
    contact,
    embedded_state,
    hub_list,
    make_seed,
    member,
    members_by_list,
    plan_json,
    reports_of,
    run_cli,
    small_config,
    started,
    subscriber_hash,
    typed_config,
    write_yaml,
)

ALL_SCOPES = ["crm.objects.contacts.read", "crm.objects.contacts.write", "crm.schemas.contacts.read",
              "crm.lists.read", "crm.lists.write", "communication_preferences.read",
              "communication_preferences.write", "communication_preferences.statuses.batch.read",
              "communication_preferences.statuses.batch.write"]


def _apply(env, *extra: str):  # type: ignore[no-untyped-def]
    config = env.config
    before = members_by_list(env.view, config)
    run = env.cli("--apply", "--yes", "--no-redact", *extra)
    assert_compliance(env.view, config, before, converged=run.code == 0)
    return run


def test_r2_critical_overrides_exemptions_and_every_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed(
        [contact("1", "vip.hold@example.com", firstname="Vi"), contact("2", "pending.hold@example.com"),
         contact("3", "fine@example.com", firstname="Fi")],
        [hub_list("719", "Recruitment", ["1", "2", "3"]), hub_list("762", "Compliance Hold", ["1", "2"])],
        [member("vip.hold@example.com", tags=["Recruitment", "VIP"], FNAME="Vi"),
         member("pending.hold@example.com", status="pending", tags=["Other"])])
    with started(tmp_path, seed, small_config()) as env:
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        members = env.view.members()
        assert members["vip.hold@example.com"].status == "archived"  # exempt tag does not protect (R2)
        assert members["pending.hold@example.com"].status == "archived"  # unmanaged does not protect (R2)
        assert members["fine@example.com"].status == "subscribed"
        assert env.view.list_members("719") == {"3"} and env.view.list_members("762") == {"1", "2"}


def test_r5_forgotten_email_is_reported_remembered_and_not_tried_again(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed([contact("1", "forgotten@example.com", firstname="Fo"), contact("2", "new@example.com")],
                     [hub_list("719", "Recruitment", ["1", "2"])], [],
                     permanently_deleted=["forgotten@example.com"])
    write_yaml(tmp_path / "seed.yaml", seed)
    write_yaml(tmp_path / "config" / "reconciler.yaml", small_config())

    def cli(*argv: str):  # type: ignore[no-untyped-def]
        return run_cli("--sandbox", "--sandbox-seed", "seed.yaml", "--config", "config", *argv)

    plan = plan_json(cli("--plan", "--format", "json", "--no-redact"))
    assert {c["email"] for c in changes_of(plan, "create_member")} == {"forgotten@example.com", "new@example.com"}
    applied = cli("--apply", "--yes", "--no-redact")
    assert applied.code == 0, applied.text  # a refusal is reported, not a failure
    assert "refused: create_member main forgotten@example.com: " in applied.out
    assert "permanently deleted" in applied.out  # the vendor's text
    assert "converged" in applied.out
    again = plan_json(cli("--plan", "--format", "json", "--no-redact"))
    assert again["changes"] == []
    assert [r["kind"] for r in reports_of(again, "forgotten@example.com")] == ["refused"]
    with embedded_state(tmp_path) as view:
        assert view.member("forgotten@example.com") is None
        assert view.member("new@example.com").status == "subscribed"
    audit = cli("--audit", "--email", "forgotten@example.com", "--format", "json", "--no-redact").json()
    assert [r["outcome"] for r in audit if r["phase"] == "outcome"] == ["refused"]


@pytest.mark.parametrize("policy", ["first_tag_wins", "follow_source"])
def test_r6_tag_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed([contact("1", "mover@example.com", firstname="New")],
                     [hub_list("719", "Recruitment", ["1"]), hub_list("720", "Single", [])],
                     [member("mover@example.com", tags=["General Single", "Unmanaged"], FNAME="Old")])
    streams = [{"name": "general", "exclude": ["active_deals"],
                "sources": [{"list": "719", "tag": "Recruitment", "extra_tags": ["Recruit Extra"]},
                            {"list": "720", "tag": "General Single"}]}]
    with started(tmp_path, seed, small_config(streams=streams, tag_policy=policy)) as env:
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        got = env.view.member("mover@example.com")
        assert got.status == "subscribed" and got.merge_fields["FNAME"] == "New"
        if policy == "first_tag_wins":
            assert got.tags == {"General Single", "Recruit Extra", "Unmanaged"}
        else:
            assert got.tags == {"Recruitment", "Recruit Extra", "Unmanaged"}
        for _, path, body, _, _ in env.sandbox.mutations():
            if path.endswith("/members/" + subscriber_hash("mover@example.com")):
                assert "status" not in (body or {})  # R6 never sends status


def test_r8_pending_restores_only_what_this_product_archived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # theirs@ is not explicitly subscribed in HubSpot either: no evidence of consent at all.
    seed = make_seed([contact("1", "ours@example.com", firstname="Our"),
                      contact("2", "theirs@example.com", subscribed=False)],
                     [hub_list("719", "Recruitment", ["2"]), hub_list("720", "Parking", ["1"])],
                     [member("ours@example.com", tags=["Recruitment"], FNAME="Our"),
                      {**member("theirs@example.com", status="archived", tags=["Recruitment"]),
                       "status_before_archive": "subscribed"}])
    write_yaml(tmp_path / "seed.yaml", seed)
    write_yaml(tmp_path / "config" / "reconciler.yaml", small_config(new_member_status="pending"))

    def cli(*argv: str):  # type: ignore[no-untyped-def]
        return run_cli("--sandbox", "--sandbox-seed", "seed.yaml", "--config", "config", *argv)

    first = cli("--apply", "--yes", "--no-redact")  # ours@ has left 719: archived by this product (R9)
    assert first.code == 0, first.text
    with embedded_state(tmp_path) as view:
        assert view.member("ours@example.com").status == "archived"
        view.add_to_list("719", ["1"])  # ours@ comes back to the source list
    plan = plan_json(cli("--plan", "--format", "json", "--no-redact"))
    restore = changes_of(plan, "restore_member")
    assert [(c["email"], c["after"]["status"]) for c in restore] == [("ours@example.com", "pending")]
    consent = reports_of(plan, "theirs@example.com")
    assert consent and "consent" in consent[0]["reason"]
    second = cli("--apply", "--yes", "--no-redact")
    assert second.code == 0 and "converged" in second.out, second.text
    with embedded_state(tmp_path) as view:
        ours = view.member("ours@example.com")
        assert (ours.status, ours.tags) == ("pending", frozenset({"Recruitment"}))
        assert view.member("theirs@example.com").status == "archived"  # never sent a confirmation
        assert_compliance(view, typed_config(tmp_path / "config"))


@pytest.mark.parametrize("on_leave", ["archive", "untag", "keep"])
def test_r9_on_leave_and_r10_unmanaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_leave: str) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed(
        [contact("1", "stays@example.com", firstname="St"), contact("2", "dealing@example.com"),
         contact("3", "gone@example.com")],
        [hub_list("719", "Recruitment", ["1", "2"]), hub_list("717", "Active Deals", ["2"])],
        [member("stays@example.com", tags=["Recruitment"], FNAME="St"),
         member("dealing@example.com", tags=["Recruitment", "Keep Me"]),  # only excluded now: leaving
         member("gone@example.com", status="pending", tags=["Recruitment"]),
         member("nocontact@example.com", tags=["Recruitment"]),
         member("vip@example.com", tags=["Recruitment", "VIP"]),
         member("unmanaged@example.com", tags=["Newsletter"])])
    with started(tmp_path, seed, small_config(on_leave=on_leave)) as env:
        before = env.view.members()
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        after = env.view.members()
        leavers = ("dealing@example.com", "gone@example.com", "nocontact@example.com")
        for email in leavers:
            if on_leave == "archive" and before[email].status == "pending":
                assert after[email] == before[email], email  # Mailchimp cannot archive it: reported (R9)
            elif on_leave == "archive":
                assert after[email].status == "archived", email
            elif on_leave == "untag":
                assert after[email].status == before[email].status, email
                assert after[email].tags == before[email].tags - {"Recruitment"}, email
            else:
                assert after[email] == before[email], email
        for email in ("stays@example.com", "vip@example.com", "unmanaged@example.com"):
            assert after[email] == before[email], email
        assert env.view.list_members("719") == {"1"}  # R3 clean-up of the excluded contact


@pytest.mark.parametrize("create_missing", [False, True])
def test_r11_members_without_contact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, create_missing: bool) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed([contact("1", "known@example.com")], [],
                     [member("known@example.com", status="cleaned", tags=["Other"]),
                      member("stranger@example.com", status="unsubscribed", tags=["Other"]),
                      member("archived.out@example.com", status="archived")])
    to_hubspot = {"statuses": ["unsubscribed", "cleaned"], "subscriptions": ["marketing"],
                  "legal_basis": "LEGITIMATE_INTEREST_OTHER", "explanation": "Opted out in Mailchimp",
                  "create_missing_contacts": create_missing}
    with started(tmp_path, seed, small_config(opt_outs={"to_hubspot": to_hubspot, "from_hubspot": True})) as env:
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        known = env.view.subscription("known@example.com")
        assert (known["status"], known["legalBasisExplanation"]) == ("NOT_SUBSCRIBED", "Opted out in Mailchimp")
        stranger = env.view.contact("stranger@example.com")
        if create_missing:
            assert stranger is not None
            status = env.view.subscription("stranger@example.com")
            assert (status["status"], status["legalBasis"]) == ("NOT_SUBSCRIBED", "LEGITIMATE_INTEREST_OTHER")
        else:
            assert stranger is None
            plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
            assert reports_of(plan, "stranger@example.com")
        assert env.view.contact("archived.out@example.com") is None
        assert env.view.members()["stranger@example.com"].status == "unsubscribed"


def test_r12_mailchimp_waits_for_the_hubspot_handover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed([contact("1", "done@example.com", firstname="Do")], [hub_list("719", "Recruitment", ["1"])],
                     [member("done@example.com", tags=["Recruitment", "Recruitment Finished"], FNAME="Do")],
                     scopes=[s for s in ALL_SCOPES if s != "crm.lists.write"])
    with started(tmp_path, seed, small_config()) as env:
        failed = _apply(env)
        assert failed.code == 5, failed.text
        assert "R12 deferred" in failed.out
        got = env.view.member("done@example.com")
        assert (got.status, got.tags) == ("subscribed", frozenset({"Recruitment", "Recruitment Finished"}))
        assert env.view.list_members("947") == set()
        env.sandbox.hubspot.scopes = None  # the portal admin grants the missing scope
        fixed = _apply(env)
        assert fixed.code == 0 and "converged" in fixed.out, fixed.text
        got = env.view.member("done@example.com")
        assert got.status == "archived" and not got.tags
        assert env.view.list_members("947") == {"1"} and env.view.list_members("719") == set()


def test_r13_merge_fields_normalised_by_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    long_name = "Zoë" * 100  # 400 bytes in UTF-8
    seed = make_seed(
        [contact("1", "same@example.com", firstname="  Ann ", score="5.0", joined="2024-03-05T00:00:00Z"),
         contact("2", "empty@example.com", firstname="", score="3", joined="2024-01-02"),
         contact("3", "long@example.com", firstname=long_name, score="10", joined="1709596800000"),
         contact("4", "changed@example.com", firstname="Dee", score="7", joined="2024-03-05")],
        [hub_list("719", "Recruitment", ["1", "2", "3", "4"])],
        [member("same@example.com", tags=["Recruitment"], FNAME="Ann", SCORE=5, JOINED="2024-03-05"),
         member("empty@example.com", tags=["Recruitment"], FNAME="Bob", SCORE=3, JOINED="2024-01-02"),
         member("changed@example.com", tags=["Recruitment"], FNAME="Dee", SCORE=6, JOINED="2024-03-05")],
        merge_fields=[{"tag": "FNAME", "type": "text"}, {"tag": "SCORE", "type": "number"},
                      {"tag": "JOINED", "type": "date"}],
        properties=["score", "joined"])
    config = small_config(merge_fields={"FNAME": "firstname", "SCORE": "score", "JOINED": "joined"})
    with started(tmp_path, seed, config) as env:
        plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert not changes_of(plan, email="same@example.com")
        assert not changes_of(plan, email="empty@example.com")  # an empty HubSpot value never blanks
        [update] = changes_of(plan, "update_member")
        assert update["email"] == "changed@example.com" and list(update["after"]) == ["SCORE"]
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        members = env.view.members()
        assert members["empty@example.com"].merge_fields["FNAME"] == "Bob"
        assert float(members["changed@example.com"].merge_fields["SCORE"]) == 7
        created = members["long@example.com"].merge_fields
        assert len(created["FNAME"].encode("utf-8")) <= 255 and long_name.startswith(created["FNAME"])
        assert len(created["FNAME"].encode("utf-8")) > 250
        assert created["JOINED"] == "2024-03-05"


def test_r15_an_r11_unsubscribe_counts_as_opted_out_in_every_audience(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    second = {"id": "bbb222ccc3", "name": "Events", "double_optin": False,
              "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}],
              "members": []}
    seed = make_seed([contact("1", "out@example.com", firstname="Ou"), contact("2", "in@example.com")],
                     [hub_list("719", "Recruitment", ["1", "2"])],
                     [member("out@example.com", status="unsubscribed", tags=["Recruitment"])], audiences=[second])
    config = small_config()
    events = dict(config["audiences"]["main"], mailchimp_list_id="bbb222ccc3", handover=[],
                  streams=[{"name": "events", "exclude": [], "sources": [{"list": "719", "tag": "Events"}]}])
    config["audiences"]["events"] = events
    with started(tmp_path, seed, config) as env:
        plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert changes_of(plan, "unsubscribe_contact", "out@example.com")
        assert sorted((c["target"], c["email"]) for c in changes_of(plan, "create_member")) == \
            [("events", "in@example.com"), ("main", "in@example.com")]
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        assert env.view.member("out@example.com", "bbb222ccc3") is None
        assert env.view.member("in@example.com", "bbb222ccc3").status == "subscribed"
        assert env.view.subscription("out@example.com")["status"] == "NOT_SUBSCRIBED"


def test_r16_member_cap_restores_first_and_is_checked_again_at_apply(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed(
        [contact(str(i), f"{name}@example.com") for i, name in enumerate(
            ["old1", "old2", "back", "new-c", "new-a", "new-b"], start=1)],
        [hub_list("719", "Recruitment", ["1", "2", "3", "4", "5", "6"])],
        [member("old1@example.com", tags=["Recruitment"]), member("old2@example.com", tags=["Recruitment"]),
         {**member("back@example.com", status="archived", tags=["Recruitment"]), "status_before_archive": "subscribed"},
         member("outside@example.com", status="unsubscribed", tags=["Other"])])
    with started(tmp_path, seed, small_config(member_cap=4)) as env:
        plan = plan_json(env.cli("--plan", "--format", "json", "--no-redact"))
        assert [c["email"] for c in changes_of(plan, "restore_member")] == ["back@example.com"]
        assert [c["email"] for c in changes_of(plan, "create_member")] == ["new-a@example.com"]
        capped = {r["email"] for r in plan["reports"] if "R16" in r["reason"]}
        assert capped == {"new-b@example.com", "new-c@example.com"}
        assert env.cli("--plan", "--out", "plan.json").code == 0
        # someone adds a subscribed member in Mailchimp: the reviewed plan no longer fits the cap
        added = env.view.http.post(f"{env.sandbox.mailchimp_base_url}/lists/{LIST_ID}/members", auth=env.view.mc,
                                   json={"email_address": "walkin@example.com", "status": "subscribed"}, timeout=30)
        assert added.status_code == 200, added.text
        stale = env.cli("--apply", "plan.json")
        assert stale.code == 4, stale.text
        assert env.view.member("back@example.com").status == "archived"
        run = _apply(env)
        assert run.code == 0 and "converged" in run.out, run.text
        live = [e for e, m in env.view.members().items() if m.status in ("subscribed", "pending")]
        assert sorted(live) == ["back@example.com", "old1@example.com", "old2@example.com", "walkin@example.com"]


@pytest.mark.parametrize(("limit", "refused"), [
    ({"max_archives": {"count": 4}}, True), ({"max_archives": {"count": 5}}, False),
    ({"max_archives": {"percent": 5}}, True), ({"max_mailchimp_unsubscribes": {"count": 0}}, True),
    ({"max_hubspot_unsubscribes": {"count": 30}}, True), ({"max_list_removals": {"percent": 40}}, True),
])
def test_r17_safety_limits_count_every_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: dict,
                                            refused: bool) -> None:
    """The demo plans 5 archives (R2 x2, R12, R9 x2) of 54 non-archived members, 1 R4 unsubscribe,
    31 HubSpot unsubscribes and 13 removals from 719 (29 contacts)."""
    monkeypatch.chdir(tmp_path)
    import yaml

    from e2e_helpers import DEMO_SEED, demo_config_doc
    doc = demo_config_doc()
    doc["safety"] = limit
    with started(tmp_path, yaml.safe_load(DEMO_SEED.read_text()), doc) as env:
        run = env.cli("--apply", "--yes")
        if refused:
            assert run.code == 3, run.text
            assert next(iter(limit)) in run.err and "--force" in run.text
            assert env.writes() == {}, env.sandbox.counters()
        else:
            assert run.code == 0 and "converged" in run.out, run.text


def test_r18_archive_of_an_unsubscribed_member_waits_for_its_opt_out(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed = make_seed([contact("1", "held@example.com"), contact("2", "held.live@example.com")],
                     [hub_list("762", "Compliance Hold", ["1", "2"])],
                     [member("held@example.com", status="unsubscribed", tags=["Recruitment"]),
                      member("held.live@example.com", tags=["Recruitment"])],
                     scopes=[s for s in ALL_SCOPES if s != "communication_preferences.write"])
    with started(tmp_path, seed, small_config()) as env:
        failed = _apply(env)
        assert failed.code == 5, failed.text
        assert "deferred: archive_member main held@example.com" in failed.out
        assert "failed: unsubscribe_contact" in failed.out
        assert env.view.member("held@example.com").status == "unsubscribed"  # not archived before HubSpot knows
        assert env.view.member("held.live@example.com").status == "archived"  # unaffected by the other failure
        rows = env.cli("--audit", "--email", "held@example.com", "--format", "json", "--no-redact").json()
        assert {(r["action"], r["outcome"]) for r in rows if r["phase"] == "outcome"} == \
            {("unsubscribe_contact", "failed"), ("archive_member", "deferred")}
        env.sandbox.hubspot.scopes = None
        fixed = _apply(env)
        assert fixed.code == 0 and "converged" in fixed.out, fixed.text
        assert env.view.member("held@example.com").status == "archived"
        assert env.view.subscription("held@example.com")["status"] == "NOT_SUBSCRIBED"
