"""Tests of the sandbox server over real HTTP: lifecycle, counters, injected faults and latency,
the `--state` snapshot + journal (including a crash and a restart), and the `reconcile-sandbox` command.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import EVENTS, HUBSPOT_TOKEN, MAILCHIMP_KEY, MARKETING, small_seed
from reconciler.sandbox import Sandbox, SandboxOptions

AUTH = {"Authorization": f"Bearer {HUBSPOT_TOKEN}"}
ROOT = Path(__file__).resolve().parent.parent
UNSUBSCRIBE = "/communication-preferences/v3/unsubscribe"


def unsubscribe(base: str, email: str, sid: str = MARKETING, session: Any = requests) -> requests.Response:
    return session.post(base + UNSUBSCRIBE, json={"emailAddress": email, "subscriptionId": sid}, headers=AUTH, timeout=10)


# ----- lifecycle and dispatch ------------------------------------------------------------------


def test_start_serves_both_vendors_and_stop_closes_the_port() -> None:
    box = Sandbox(small_seed()).start()
    try:
        assert box.base_url.startswith("http://127.0.0.1:") and box.hubspot_base_url == box.base_url
        assert box.mailchimp_base_url == box.base_url + "/3.0"
        assert box.hubspot_token == HUBSPOT_TOKEN and box.mailchimp_api_key == MAILCHIMP_KEY
        assert requests.get(box.base_url + "/crm/v3/lists/719", headers=AUTH, timeout=10).status_code == 200
        ping = requests.get(box.mailchimp_base_url + "/ping", auth=("anystring", MAILCHIMP_KEY), timeout=10)
        assert ping.status_code == 200 and ping.json() == {"health_status": "Everything's Chimpy!"}
        nowhere = requests.get(box.base_url + "/elsewhere", timeout=10)
        assert nowhere.status_code == 404
        url = box.base_url
    finally:
        box.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/crm/v3/lists/719", headers=AUTH, timeout=2)
    box.stop()  # a second stop is harmless


def test_keep_alive_connection_is_closed_by_stop(sandbox: Sandbox) -> None:
    session = requests.Session()
    url = sandbox.base_url + "/crm/v3/lists/719"
    assert session.get(url, headers=AUTH, timeout=10).status_code == 200
    sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url, headers=AUTH, timeout=2)


def test_state_is_shared_between_http_and_direct_access(sandbox: Sandbox) -> None:
    assert unsubscribe(sandbox.base_url, "ann@example.com").status_code == 200
    assert sandbox.hubspot.subscription_status("ann@example.com", MARKETING) == "NOT_SUBSCRIBED"


# ----- counters --------------------------------------------------------------------------------


def test_counters_per_endpoint_total_and_writes(sandbox: Sandbox) -> None:
    session = requests.Session()
    for _ in range(3):
        session.get(sandbox.base_url + "/crm/v3/lists/719/memberships", headers=AUTH, timeout=10)
    session.post(sandbox.base_url + "/crm/v3/objects/contacts/batch/read", json={"inputs": [{"id": "101"}]},
                 headers=AUTH, timeout=10)
    unsubscribe(sandbox.base_url, "ann@example.com", session=session)
    unsubscribe(sandbox.base_url, "ann@example.com", session=session)  # refused (400), still counted
    session.get(sandbox.base_url + "/crm/v3/lists/719", timeout=10)  # 401, still counted
    session.get(sandbox.mailchimp_base_url + "/ping", auth=("x", MAILCHIMP_KEY), timeout=10)
    counts = sandbox.counters()
    assert counts["GET /crm/v3/lists/{listId}/memberships"] == 3
    assert counts["POST /crm/v3/objects/contacts/batch/read"] == 1
    assert counts["POST /communication-preferences/v3/unsubscribe"] == 2
    assert counts["GET /crm/v3/lists/{listId}"] == 1
    assert counts["GET /3.0/ping"] == 1
    assert sandbox.total_requests() == 8 and sandbox.write_requests() == 2
    sandbox.reset_counters()
    assert sandbox.counters() == {} and sandbox.total_requests() == 0


# ----- faults and latency ----------------------------------------------------------------------


def outcomes(options: SandboxOptions, n: int = 40) -> list[str]:
    with Sandbox(small_seed(), options=options) as box:
        session = requests.Session()
        seen = []
        for _ in range(n):
            try:
                seen.append(str(session.get(box.base_url + "/crm/v3/lists/719", headers=AUTH, timeout=10).status_code))
            except requests.ConnectionError:
                seen.append("dropped")
        assert box.counters()["GET /crm/v3/lists/{listId}"] == n  # faulted requests are counted too
        return seen


def test_faults_are_reproducible_with_a_seed() -> None:
    first = outcomes(SandboxOptions(fault_rate=0.5, seed_random=7))
    assert first == outcomes(SandboxOptions(fault_rate=0.5, seed_random=7))
    assert first != outcomes(SandboxOptions(fault_rate=0.5, seed_random=8))
    assert {"200", "500", "502", "503", "dropped"} <= set(first)
    assert 8 <= first.count("200") <= 32


def test_no_faults_without_a_fault_rate() -> None:
    assert set(outcomes(SandboxOptions(seed_random=7), n=20)) == {"200"}


def only(kind: str) -> SandboxOptions:
    return SandboxOptions(fault_rate=1.0, seed_random=1, variants={"fault_kinds": [kind]})


def test_dropped_connection_changes_nothing() -> None:
    with Sandbox(small_seed(), options=only("drop")) as box:
        with pytest.raises(requests.ConnectionError):
            unsubscribe(box.base_url, "ann@example.com")
        assert box.hubspot.subscription_status("ann@example.com", MARKETING) == "SUBSCRIBED"


def test_processed_then_dropped_changes_state_without_an_answer(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Sandbox(small_seed(), options=only("process_then_drop"), state_file=str(state)) as box:
        with pytest.raises(requests.ConnectionError):
            unsubscribe(box.base_url, "ann@example.com")
        assert box.hubspot.subscription_status("ann@example.com", MARKETING) == "NOT_SUBSCRIBED"
        journal = Path(str(state) + ".journal").read_text()
        assert UNSUBSCRIBE in journal  # processed means journaled too
    with Sandbox(None, state_file=str(state)) as again:
        assert again.hubspot.subscription_status("ann@example.com", MARKETING) == "NOT_SUBSCRIBED"


def test_injected_502_is_an_edge_proxy_html_page_and_500_503_are_vendor_json() -> None:
    with Sandbox(small_seed(), options=only("502")) as box:
        reply = requests.get(box.base_url + "/crm/v3/lists/719", headers=AUTH, timeout=10)
        assert reply.status_code == 502 and reply.headers["Content-Type"].startswith("text/html")
        assert "502 Bad Gateway" in reply.text
    for status in ("500", "503"):
        with Sandbox(small_seed(), options=only(status)) as box:
            reply = requests.get(box.base_url + "/crm/v3/lists/719", headers=AUTH, timeout=10)
            assert reply.status_code == int(status) and reply.json()["status"] == "error"
            assert reply.json()["correlationId"] == reply.headers["X-HubSpot-Correlation-Id"]
            mc = requests.get(box.mailchimp_base_url + "/ping", auth=("x", MAILCHIMP_KEY), timeout=10)
            assert mc.status_code == int(status) and mc.json()["status"] == int(status)


def test_latency_is_added_to_each_request() -> None:
    with Sandbox(small_seed(), options=SandboxOptions(latency_ms=150)) as box:
        session = requests.Session()
        session.get(box.base_url + "/crm/v3/lists/719", headers=AUTH, timeout=10)
        started = time.perf_counter()
        session.get(box.base_url + "/crm/v3/lists/719", headers=AUTH, timeout=10)
        assert time.perf_counter() - started >= 0.15


# ----- state file and journal ------------------------------------------------------------------


def write_some(base: str) -> str:
    """Three kinds of HubSpot write; returns the id HubSpot gave the created contact."""
    session = requests.Session()
    assert unsubscribe(base, "bob@example.com", EVENTS, session).status_code == 200
    assert session.put(base + "/crm/v3/lists/719/memberships/add", json=["104"], headers=AUTH, timeout=10).ok
    created = session.post(base + "/crm/v3/objects/contacts", json={"properties": {"email": "new@example.com"}},
                           headers=AUTH, timeout=10)
    assert created.status_code == 201
    return created.json()["id"]


def test_state_round_trip_through_stop_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Sandbox(small_seed(), state_file=str(state)) as box:
        created = write_some(box.base_url)
        modified = box.hubspot.contact_by_email("bob@example.com")["lastmodifieddate"]
    snapshot = json.loads(state.read_text())
    assert snapshot["format"] == "reconciler-sandbox-state" and snapshot["mailchimp"]["api_key"] == MAILCHIMP_KEY
    assert not Path(str(state) + ".journal").exists() or Path(str(state) + ".journal").read_text() == ""
    # The seed is ignored once state exists: the restart shows the converged state.
    with Sandbox(small_seed(), state_file=str(state)) as again:
        assert again.hubspot.subscription_status("bob@example.com", EVENTS) == "NOT_SUBSCRIBED"
        assert again.hubspot.list_members("719") == ["101", "102", "103", "104"]
        assert again.hubspot.contact_by_email("new@example.com")["id"] == created
        assert again.hubspot.contact_by_email("bob@example.com")["lastmodifieddate"] == modified
        later = requests.post(again.base_url + "/crm/v3/objects/contacts", json={"properties": {"email": "n2@example.com"}},
                              headers=AUTH, timeout=10)
        assert int(later.json()["id"]) == int(created) + 1


def test_journal_replays_after_a_crash(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with Sandbox(small_seed(), state_file=str(state)) as box:
        created = write_some(box.base_url)
        modified = box.hubspot.contact_by_email("bob@example.com")["lastmodifieddate"]
        # A copy taken while running is what a killed process leaves: a snapshot plus a journal.
        for file in tmp_path.glob("state.json*"):
            shutil.copy(file, crashed / file.name)
    entries = [json.loads(line) for line in (crashed / "state.json.journal").read_text().splitlines()]
    assert entries[0] == {"generation": 1} and len(entries) == 4
    assert all("authorization" not in {k.lower() for k in e.get("headers", {})} for e in entries[1:])
    assert HUBSPOT_TOKEN not in (crashed / "state.json.journal").read_text()
    with Sandbox(None, state_file=str(crashed / "state.json")) as replayed:
        assert replayed.hubspot.subscription_status("bob@example.com", EVENTS) == "NOT_SUBSCRIBED"
        assert replayed.hubspot.list_members("719") == ["101", "102", "103", "104"]
        assert replayed.hubspot.contact_by_email("new@example.com")["id"] == created
        assert replayed.hubspot.contact_by_email("bob@example.com")["lastmodifieddate"] == modified


def test_compaction_runs_in_the_background(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Sandbox(small_seed(), state_file=str(state)) as box:
        write_some(box.base_url)
        journal = Path(str(state) + ".journal")
        assert journal.exists()
        deadline = time.monotonic() + 5
        while journal.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not journal.exists()
        snapshot = json.loads(state.read_text())
        lists = {item["id"]: item for item in snapshot["hubspot"]["lists"]}
        assert "104" in dict(lists["719"]["members"])


def test_discard_state_starts_over(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Sandbox(small_seed(), state_file=str(state)) as box:
        write_some(box.base_url)
    Sandbox.discard_state(str(state))
    assert list(tmp_path.iterdir()) == []
    with Sandbox(small_seed(), state_file=str(state)) as fresh:
        assert fresh.hubspot.list_members("719") == ["101", "102", "103"]


def test_many_journaled_writes_stay_fast(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Sandbox(small_seed(), state_file=str(state)) as box:
        session = requests.Session()
        started = time.perf_counter()
        for i in range(500):
            reply = session.put(box.base_url + "/crm/v3/lists/719/memberships/" + ("add" if i % 2 else "remove"),
                                json=["104"], headers=AUTH, timeout=10)
            assert reply.status_code == 200
        per_write = (time.perf_counter() - started) / 500
        print(f"\njournaled write: {per_write * 1000:.2f} ms each over 500 membership writes")
        assert per_write < 0.02


# ----- the reconcile-sandbox command -------------------------------------------------------------


def test_cli_prints_base_url_first_and_keeps_state_at_exit(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from reconciler.sandbox.server import main; sys.exit(main())",
         "--seed", str(ROOT / "config/sandbox/example-seed.yaml"), "--port", "0", "--state", str(state)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline().strip()
        assert first.startswith("http://127.0.0.1:") and first.rsplit(":", 1)[1].isdigit()
        assert unsubscribe(first, "ann@example.com").status_code == 200
        ping = requests.get(first + "/3.0/ping", auth=("x", "sandboxkey-us1"), timeout=10)
        assert ping.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        process.stdout.close()
        process.stderr.close()
    assert code == 0
    snapshot = json.loads(state.read_text())
    ann = next(c for c in snapshot["hubspot"]["contacts"] if c["properties"].get("email") == "ann@example.com")
    assert ann["statuses"]["289137112"][0] == "NOT_SUBSCRIBED"


def test_cli_refuses_a_bad_seed(tmp_path: Path) -> None:
    bad = tmp_path / "seed.yaml"
    bad.write_text("hubspot: [1, 2]\n")
    result = subprocess.run([sys.executable, "-c", "import sys; from reconciler.sandbox.server import main; sys.exit(main())",
                             "--seed", str(bad), "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "hubspot: must be a mapping" in result.stderr and result.stdout == ""


# ----- scale -------------------------------------------------------------------------------------


def test_both_vendors_with_100k_records_load_under_10_seconds(tmp_path: Path) -> None:
    seed = small_seed()
    contacts = [{"id": str(300000 + i), "email": f"c{i}@example.com", "properties": {"firstname": f"F{i}"}}
                for i in range(100_000)]
    seed["hubspot"]["contacts"] += contacts
    seed["hubspot"]["lists"].append({"id": "900", "name": "All", "members": [c["id"] for c in contacts]})
    seed["mailchimp"]["audiences"][0]["members"] += [
        {"email": f"c{i}@example.com", "status": "subscribed", "merge_fields": {"FNAME": f"F{i}"}} for i in range(100_000)]
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    from reconciler.sandbox.seed import load_seed

    started = time.perf_counter()
    box = Sandbox(load_seed(path))
    loaded = time.perf_counter() - started
    print(f"\nscale: 100,000 HubSpot contacts + 100,000 list members + 100,000 Mailchimp members "
          f"loaded from JSON in {loaded:.2f} s")
    assert loaded < 10.0
    assert len(box.hubspot.list_members("900")) == 100_000


# ----- layering ----------------------------------------------------------------------------------


def test_sandbox_imports_nothing_from_the_reconciler() -> None:
    """The emulator must not share code with the clients it checks (STYLE: dependency direction)."""
    import ast

    allowed_third_party = {"yaml"}
    offenders = []
    for module in sorted((ROOT / "reconciler" / "sandbox").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:  # `from ..model import` leaves the sandbox
                offenders.append(f"{module.name}: {'.' * node.level}{node.module or ''}")
                continue
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                inside = name.startswith("reconciler.sandbox")
                if top == "reconciler" and not inside or (top not in sys.stdlib_module_names
                                                           and top not in allowed_third_party and top != "reconciler"):
                    offenders.append(f"{module.name}: {name}")
    assert offenders == []
