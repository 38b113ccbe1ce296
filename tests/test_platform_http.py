"""VendorSession over real HTTP: retries on injected faults, rate limits, DAILY, permanent errors, secrets.

Against the sandbox's fault injection and rate limits (fixed seeds, short windows), plus a tiny
scripted loopback server for answers the sandbox does not give on demand (Retry-After, bad JSON).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.errors import DailyLimitReached, PermanentVendorError, TransientVendorError
from reconciler.platforms.hubspot import HubSpotClient, hubspot_session
from reconciler.platforms.http import RetryPolicy, VendorSession
from reconciler.platforms.mailchimp import MailchimpClient, NewMember, mailchimp_session
from reconciler.sandbox import Sandbox, SandboxOptions
from reconciler.settings import HubSpotSettings, MailchimpSettings, RateLimit

TOKEN = "pat-na1-secret-token-0042"
API_KEY = "0123456789abcdef-secretkey-us1"
SUB = "289137112"
LIST = "abc123def4"
FAST = RetryPolicy(max_attempts=8, base_delay=0.005, max_delay=0.05)


def _seed(n: int = 40) -> dict:
    contacts = [{"id": str(100 + i), "email": f"c{i}@example.com", "properties": {"firstname": f"C{i}"},
                 "subscribed": [SUB]} for i in range(n)]
    return {
        "hubspot": {
            "token": TOKEN,
            "subscriptions": [{"id": SUB, "name": "Marketing Information"}],
            "lists": [{"id": "719", "name": "Recruitment", "processing_type": "MANUAL",
                       "members": [c["id"] for c in contacts]},
                      {"id": "947", "name": "Handover", "processing_type": "MANUAL", "members": []}],
            "contacts": contacts,
        },
        "mailchimp": {"api_key": API_KEY, "audiences": [{
            "id": LIST, "name": "Main", "merge_fields": [{"tag": "FNAME", "type": "text"}],
            "members": [{"email": f"c{i}@example.com", "status": "subscribed"} for i in range(n)],
        }]},
    }


def _hubspot(box: Sandbox, *, rate: RateLimit = RateLimit(1000, 10), retry: RetryPolicy = FAST,
             token: str | None = None) -> HubSpotClient:
    settings = HubSpotSettings(token=token or box.hubspot_token, base_url=box.base_url, rate_limit=rate)
    return HubSpotClient(settings, session=hubspot_session(settings, retry=retry))


def _mailchimp(box: Sandbox, *, connections: int = 8, retry: RetryPolicy = FAST, key: str | None = None) -> MailchimpClient:
    settings = MailchimpSettings(api_key=key or box.mailchimp_api_key, base_url=box.mailchimp_base_url,
                                 max_connections=connections)
    return MailchimpClient(settings, session=mailchimp_session(settings, retry=retry))


def test_injected_faults_are_retried_until_reads_and_writes_succeed(caplog):
    caplog.set_level(logging.DEBUG)
    options = SandboxOptions(fault_rate=0.3, seed_random=7)
    with Sandbox(_seed(), options=options) as box:
        hubspot, mailchimp = _hubspot(box), _mailchimp(box)
        for _ in range(10):
            assert len(hubspot.list_member_ids("719")) == 40
            assert hubspot.get_lists(["719"])["719"].name == "Recruitment"
            assert len(mailchimp.all_members(LIST)) == 40
        added = hubspot.add_to_list("947", ["100", "101", "102"])
        assert set(added.added) <= {"100", "101", "102"}
        outcomes = [hubspot.unsubscribe(f"c{i}@example.com", SUB, legal_basis="LEGITIMATE_INTEREST_OTHER",
                                        explanation="test").outcome for i in range(10)]
        created = mailchimp.subscribe_members(LIST, [NewMember(f"n{i}@example.net", {"FNAME": "N"}) for i in range(10)],
                                              status="subscribed")
        counted = box.total_requests()
    assert all(r.ok for r in created)
    assert set(outcomes) <= {"applied", "already"}
    logical = 10 * (1 + 1 + 2) + 1 + 10 + 1
    assert counted > logical  # faults happened, and were retried
    assert any("retry" in r.getMessage() for r in caplog.records)


def test_writes_land_once_despite_dropped_connections():
    options = SandboxOptions(fault_rate=0.5, seed_random=3)
    with Sandbox(_seed(), options=options) as box:
        hubspot, mailchimp = _hubspot(box), _mailchimp(box)
        hubspot.add_to_list("947", [str(100 + i) for i in range(20)])
        results = [hubspot.unsubscribe(f"c{i}@example.com", SUB, legal_basis="LEGITIMATE_INTEREST_OTHER",
                                       explanation="test") for i in range(20)]
        created = mailchimp.subscribe_members(LIST, [NewMember(f"n{i}@example.net") for i in range(30)], status="pending")
        archived = [mailchimp.archive_member(LIST, f"c{i}@example.com") for i in range(10)]
        members_947 = sorted(hubspot.list_member_ids("947"), key=int)
        contacts = hubspot.read_contacts([str(100 + i) for i in range(20)], [f"hs_email_optout_{SUB}"]).found
        members = mailchimp.all_members(LIST)
    assert members_947 == [str(100 + i) for i in range(20)]
    assert all(r.ok for r in results) and all(r.ok for r in created) and all(r.ok for r in archived)
    assert all(c.properties[f"hs_email_optout_{SUB}"] == "true" for c in contacts)
    assert len(members) == 70
    assert sum(1 for m in members.values() if m.status == "pending") == 30
    assert sum(1 for m in members.values() if m.status == "archived") == 10


def test_attempts_are_bounded_then_transient_error_without_secrets():
    with Sandbox(_seed(), options=SandboxOptions(fault_rate=1.0, seed_random=1)) as box:
        hubspot = _hubspot(box, retry=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01))
        with pytest.raises(TransientVendorError) as caught:
            hubspot.get_lists(["719"])
        sent = box.counters().get("GET /crm/v3/lists", 0)
    assert sent == 3
    assert "gave up after 3 attempts" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)


def test_client_side_window_keeps_a_run_at_the_limit_free_of_429s_and_near_the_bound():
    options = SandboxOptions(rate_limits=True, hubspot_limit=10, hubspot_window_seconds=1.0)
    with Sandbox(_seed(), options=options) as box:
        hubspot = _hubspot(box, rate=RateLimit(10, 1.0))
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            names = list(pool.map(lambda _: hubspot.get_lists(["719"])["719"].name, range(30)))
        elapsed = time.monotonic() - started
        sent = box.counters().get("GET /crm/v3/lists", 0)
    assert names == ["Recruitment"] * 30
    assert sent == 30  # no request was refused and re-sent
    lower_bound = (math.ceil(30 / 10) - 1) * 1.0  # the window's lower bound (issue 7)
    assert lower_bound <= elapsed < lower_bound * 1.3


@pytest.mark.parametrize("retry_after", [False, True])
def test_hubspot_429_waits_for_the_window_then_succeeds(retry_after):
    variants = {"hubspot_429_retry_after": retry_after}
    options = SandboxOptions(rate_limits=True, hubspot_limit=5, hubspot_window_seconds=1.0, variants=variants)
    with Sandbox(_seed(), options=options) as box:
        hubspot = _hubspot(box, rate=RateLimit(1000, 1.0))  # our limiter far above the portal's
        started = time.monotonic()
        sizes = [hubspot.get_lists(["719"])["719"].size for _ in range(12)]
        elapsed = time.monotonic() - started
        sent = box.counters().get("GET /crm/v3/lists", 0)
    assert sizes == [40] * 12
    assert sent > 12  # some were refused with 429 and retried
    assert elapsed >= (math.ceil(12 / 5) - 1) * 1.0


def test_daily_limit_stops_without_retrying():
    options = SandboxOptions(rate_limits=True, hubspot_daily_limit=3)
    with Sandbox(_seed(), options=options) as box:
        hubspot = _hubspot(box)
        for _ in range(3):
            hubspot.get_lists(["719"])
        with pytest.raises(DailyLimitReached) as caught:
            hubspot.get_lists(["719"])
        sent = box.counters().get("GET /crm/v3/lists", 0)
    assert sent == 4
    assert "DAILY" in str(caught.value) and "run again" in str(caught.value)


def test_mailchimp_connections_stay_within_max_connections():
    options = SandboxOptions(rate_limits=True, mailchimp_max_connections=3, latency_ms=30)
    with Sandbox(_seed(), options=options) as box:
        mailchimp = _mailchimp(box, connections=3)
        with ThreadPoolExecutor(8) as pool:
            names = list(pool.map(lambda _: mailchimp.get_list(LIST).name, range(16)))
        sent = box.counters().get("GET /3.0/lists/{list_id}", 0)
    assert names == ["Main"] * 16
    assert sent == 16  # no 429 "too many connections"


def test_mailchimp_429_from_too_many_connections_is_retried():
    options = SandboxOptions(rate_limits=True, mailchimp_max_connections=2, latency_ms=30)
    with Sandbox(_seed(), options=options) as box:
        mailchimp = _mailchimp(box, connections=8, retry=RetryPolicy(max_attempts=10, base_delay=0.02, max_delay=0.2))
        with ThreadPoolExecutor(8) as pool:
            names = list(pool.map(lambda _: mailchimp.get_list(LIST).name, range(16)))
        sent = box.counters().get("GET /3.0/lists/{list_id}", 0)
    assert names == ["Main"] * 16
    assert sent > 16


def test_4xx_are_not_retried_and_carry_the_vendor_message():
    with Sandbox(_seed()) as box:
        hubspot, mailchimp = _hubspot(box), _mailchimp(box)
        with pytest.raises(PermanentVendorError) as hub_error:
            hubspot.list_member_ids("424242")
        with pytest.raises(PermanentVendorError) as mc_error:
            mailchimp.get_list("nosuchlist")
        counters = box.counters()
    assert hub_error.value.status == 404 and "List 424242 does not exist" in str(hub_error.value)
    assert mc_error.value.status == 404 and "Resource Not Found: " in str(mc_error.value)
    assert counters["GET /crm/v3/lists/{listId}/memberships"] == 1
    assert counters["GET /3.0/lists/{list_id}"] == 1


def test_secrets_never_appear_in_errors_reprs_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    with Sandbox(_seed(), options=SandboxOptions(fault_rate=0.3, seed_random=5)) as box:
        wrong_token, wrong_key = "pat-na1-wrong-token-9999", "ffffffffffffffff-wrongkey-us1"
        bad_hub, bad_mc = _hubspot(box, token=wrong_token), _mailchimp(box, key=wrong_key)
        with pytest.raises(PermanentVendorError) as hub_error:
            bad_hub.get_lists(["719"])
        with pytest.raises(PermanentVendorError) as mc_error:
            bad_mc.ping()
        good_hub, good_mc = _hubspot(box), _mailchimp(box)
        good_hub.list_member_ids("719")
        good_mc.all_members(LIST)
        port_url = box.base_url
    assert hub_error.value.status == 401 and mc_error.value.status == 401
    unreachable = HubSpotClient(HubSpotSettings(token=TOKEN, base_url=port_url),
                                session=hubspot_session(HubSpotSettings(token=TOKEN, base_url=port_url),
                                                        retry=RetryPolicy(max_attempts=2, base_delay=0.001)))
    with pytest.raises(TransientVendorError) as down:
        unreachable.get_lists(["719"])
    texts = [str(hub_error.value), str(mc_error.value), str(down.value), repr(down.value),
             repr(good_hub), repr(good_mc), repr(good_hub.session), repr(good_mc.session),
             *(r.getMessage() for r in caplog.records)]
    for secret in (TOKEN, API_KEY, wrong_token, wrong_key, "secretkey", "wrongkey"):
        assert not any(secret in text for text in texts), secret
    assert "API Key Invalid" in str(mc_error.value)


class _Scripted:
    """A loopback server answering a fixed script of (status, headers, body bytes), then 200 `{}`."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.script = list(script)
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits += 1
                status, headers, body = outer.script.pop(0) if outer.script else (200, {}, b'{"ok": true}')
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_html_bodies_retry_after_and_malformed_json_are_handled():
    html = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
    script = [(502, {"Content-Type": "text/html"}, html),
              (429, {"Retry-After": "1"}, b'{"title": "TooManyRequests", "status": 429}'),
              (400, {}, b'{"title": "Invalid Resource", "detail": "broken')]
    with _Scripted(script) as server:
        session = VendorSession("mailchimp", server.url, retry=FAST)
        started = time.monotonic()
        with pytest.raises(PermanentVendorError) as caught:
            session.call("GET", "/thing")
        elapsed = time.monotonic() - started
        assert session.call("GET", "/thing").body == {"ok": True}
    assert server.hits == 4
    assert elapsed >= 1.0  # Retry-After honoured
    assert caught.value.status == 400
    assert "broken" in str(caught.value)  # malformed JSON shown as text, not a crash
    html_error = VendorSession("hubspot", "http://127.0.0.1:9", retry=RetryPolicy(max_attempts=1))
    with _Scripted([(502, {"Content-Type": "text/html"}, html)]) as server:
        html_error.base_url = server.url
        with pytest.raises(TransientVendorError) as bad_gateway:
            html_error.call("GET", "/x")
    assert "502 Bad Gateway" in str(bad_gateway.value) and "<" not in str(bad_gateway.value)


def test_json_error_bodies_give_hubspot_message_and_mailchimp_title_and_detail():
    hub = json.dumps({"status": "error", "message": "Property values were not valid", "category": "VALIDATION_ERROR"})
    mc = json.dumps({"title": "Invalid Resource", "status": 400, "detail": "Your merge fields were invalid.",
                     "errors": [{"field": "FNAME", "message": "Please enter a value"}]})
    with _Scripted([(400, {}, hub.encode()), (400, {}, mc.encode())]) as server:
        with pytest.raises(PermanentVendorError) as hub_error:
            VendorSession("hubspot", server.url, retry=FAST).call("GET", "/a")
        with pytest.raises(PermanentVendorError) as mc_error:
            VendorSession("mailchimp", server.url, retry=FAST).call("GET", "/b")
    assert hub_error.value.detail == "Property values were not valid"
    assert mc_error.value.detail == "Invalid Resource: Your merge fields were invalid. (FNAME: Please enter a value)"
