"""Single faults, made certain (rate 1.0), behind the fault matrix's findings: malformed JSON is
retried and never read as an empty answer, the client timeout comes from RECONCILER_HTTP_TIMEOUT,
and a handover whose tag removal failed is not archived with the tag still on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from e2e_helpers import LIST_ID, VendorView, assert_compliance, contact, members_by_list, hub_list, make_seed, member, small_config, started
from reconciler.errors import TransientVendorError
from reconciler.platforms.http import TIMEOUT_ENV, RetryPolicy, VendorSession
from reconciler.platforms.mailchimp import MailchimpClient, mailchimp_session
from reconciler.sandbox import Sandbox
from reconciler.sandbox.faults import ITEM_ERROR_MAILCHIMP, FaultInjector, partial_batch
from reconciler.sandbox.http import Request, Response, SandboxOptions
from reconciler.settings import MailchimpSettings
from reliability_helpers import no_traceback

FAST = RetryPolicy(max_attempts=2, base_delay=0.0)


def _one_member_seed() -> dict:
    return make_seed([], [], [member("ann@example.com", tags=["Recruitment"], FNAME="Ann")])


def test_malformed_json_in_a_2xx_is_retried_and_never_read_as_an_empty_page() -> None:
    options = SandboxOptions(fault_rate=1.0, seed_random=1, variants={"fault_kinds": ["malformed"]})
    with Sandbox(_one_member_seed(), options=options) as box:
        settings = MailchimpSettings(api_key=box.mailchimp_api_key, base_url=box.mailchimp_base_url)
        client = MailchimpClient(settings, session=mailchimp_session(settings, retry=FAST))
        try:
            with pytest.raises(TransientVendorError, match="malformed JSON"):
                client.member_page(LIST_ID, 0)  # before the fix: ([], 0), an audience read as empty
        finally:
            client.close()
        assert box.injected_faults() == {"malformed": 2}
    with Sandbox(_one_member_seed()) as box:  # and without the fault the same read finds the member
        settings = MailchimpSettings(api_key=box.mailchimp_api_key, base_url=box.mailchimp_base_url)
        client = MailchimpClient(settings, session=mailchimp_session(settings, retry=FAST))
        try:
            members, total = client.member_page(LIST_ID, 0)
        finally:
            client.close()
        assert [m.email for m in members] == ["ann@example.com"] and total == 1


def test_an_html_page_in_a_200_is_not_an_empty_answer() -> None:
    class HtmlBox(Sandbox):
        def dispatch(self, request: Request) -> Response | None:
            return Response(200, b"<html><body>Please sign in to the network</body></html>", content_type="text/html")

    with HtmlBox(_one_member_seed()) as box:
        session = VendorSession("mailchimp", box.mailchimp_base_url, retry=FAST)
        try:
            with pytest.raises(TransientVendorError, match="malformed JSON"):
                session.call("GET", f"/lists/{LIST_ID}/members")
        finally:
            session.close()


def test_the_client_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert VendorSession("hubspot", "http://127.0.0.1:9").timeout == (2.5, 2.5)
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    assert VendorSession("hubspot", "http://127.0.0.1:9").timeout == (10.0, 120.0)
    monkeypatch.delenv(TIMEOUT_ENV)
    assert VendorSession("hubspot", "http://127.0.0.1:9", timeout=(3.0, 30.0)).timeout == (3.0, 30.0)


def test_a_slow_answer_beyond_the_client_timeout_times_out_yet_is_processed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, "0.3")
    options = SandboxOptions(fault_rate=1.0, seed_random=1, variants={"fault_kinds": ["slow"], "slow_ms": 600})
    with Sandbox(_one_member_seed(), options=options) as box:
        settings = MailchimpSettings(api_key=box.mailchimp_api_key, base_url=box.mailchimp_base_url)
        client = MailchimpClient(settings, session=mailchimp_session(settings, retry=FAST))
        try:
            with pytest.raises(TransientVendorError, match="timed out"):
                client.update_member(LIST_ID, "ann@example.com", {"FNAME": "Annie"})
        finally:
            client.close()
        with box.quiet():
            view = VendorView(box.base_url)
            try:
                deadline = time.monotonic() + 5
                while view.member("ann@example.com").merge_fields["FNAME"] != "Annie" and time.monotonic() < deadline:
                    time.sleep(0.05)  # the vendor finishes the slow request after the client gave up
                assert view.member("ann@example.com").merge_fields["FNAME"] == "Annie"
            finally:
                view.http.close()


def test_partial_batch_fails_the_last_third_and_processes_the_rest() -> None:
    seen: list[list[str]] = []

    def handle(request: Request) -> Response:
        members = request.json()["members"]
        seen.append([m["email_address"] for m in members])
        return Response(200, {"new_members": [{"email_address": m["email_address"]} for m in members], "errors": []})

    emails = [f"m{i}@example.com" for i in range(6)]
    body = {"members": [{"email_address": e} for e in emails], "update_existing": False}
    request = Request("POST", f"/3.0/lists/{LIST_ID}", body=json.dumps(body).encode())
    answer = partial_batch("POST /3.0/lists/{list_id}", request, handle)
    assert seen == [emails[:3]]
    assert [e["email_address"] for e in answer.body["errors"]] == emails[3:]
    assert {e["error"] for e in answer.body["errors"]} == {ITEM_ERROR_MAILCHIMP}


def test_targeted_fault_kinds_are_drawn_only_for_the_requests_they_apply_to() -> None:
    injector = FaultInjector(1.0, 1, ["hubspot_207"])
    assert injector.draw("GET /crm/v3/lists/{listId}/memberships") is None
    assert injector.draw("POST /crm/v3/objects/contacts/batch/read") == "hubspot_207"
    with pytest.raises(ValueError):
        FaultInjector(0.5, 1, ["teapot"])


def test_handover_archive_waits_for_its_tag_removal(tmp_path: Path) -> None:
    """Found by the fault matrix (member_errors@0.3): the archive went ahead after the handover
    tag's removal failed, and an archived member is never handed over again, so the tag stayed."""
    seed = make_seed([contact("201", "fin@example.com", firstname="Fin")], [hub_list("719", "Recruitment", ["201"])],
                     [member("fin@example.com", tags=["Recruitment", "Recruitment Finished"], FNAME="Fin")])
    doc = small_config()
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    options = SandboxOptions(fault_rate=1.0, seed_random=1, variants={"fault_kinds": ["member_errors"]})
    with started(tmp_path, seed, doc, options) as env:
        with env.sandbox.quiet():
            before = members_by_list(VendorView(env.sandbox.base_url), env.config)
        first = env.cli("--apply", "--yes", "--no-redact")
        assert first.code == 5 and no_traceback(first.text), first.text
        assert ITEM_ERROR_MAILCHIMP in first.out
        assert "deferred: archive_member" in first.out
        view = VendorView(env.sandbox.base_url)
        try:
            with env.sandbox.quiet():
                held = view.member("fin@example.com")
                assert held is not None and held.status == "subscribed" and "Recruitment Finished" in held.tags
                second = env.cli("--apply", "--yes")
                assert second.code == 0 and "converged" in second.out, second.text
                done = view.member("fin@example.com")
                assert done is not None and done.status == "archived" and not done.tags & {"Recruitment Finished"}
                assert view.contact_id("fin@example.com") in view.list_members("947")
                assert_compliance(view, env.config, before)
        finally:
            view.http.close()
