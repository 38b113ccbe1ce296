"""Check that Mailchimp's official Python SDK (`mailchimp-marketing`) works against the sandbox:
ping, page members, upsert with status_if_new, post tags, and read the vendor's errors.

Not a project dependency: run it with an interpreter that has the SDK, e.g.
    python -m venv /tmp/mcvenv && /tmp/mcvenv/bin/pip install mailchimp-marketing
    /tmp/mcvenv/bin/python bench/sdk_check_mailchimp.py            # starts its own sandbox
    /tmp/mcvenv/bin/python bench/sdk_check_mailchimp.py --base-url http://127.0.0.1:8025 \
        --api-key sandboxkey-us1 --list-id abc123def4               # or uses a running one
Without --base-url it writes a seed of --members members and starts `python3 -m
reconciler.sandbox.server` (the project's interpreter, --project-python) from the repo root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import mailchimp_marketing
from mailchimp_marketing.api_client import ApiClientError

REPO = Path(__file__).resolve().parents[1]
KEY = "sandboxkey-us1"
LIST = "sdkcheck01"


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def write_seed(path: Path, members: int) -> None:
    seed = {
        "mailchimp": {
            "api_key": KEY,
            "audiences": [{
                "id": LIST, "name": "SDK check", "double_optin": False,
                "merge_fields": [{"tag": "FNAME", "type": "text"}, {"tag": "LNAME", "type": "text"}],
                "members": [{"email": "opted.out@example.com", "status": "unsubscribed", "merge_fields": {"FNAME": "Olive"}}]
                + [{"email": f"member{i:05d}@example.com", "status": "subscribed", "merge_fields": {"FNAME": "M", "LNAME": str(i)}} for i in range(members - 1)],
            }],
        }
    }
    path.write_text(json.dumps(seed), encoding="utf-8")


def start_sandbox(python: str, seed: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [python, "-m", "reconciler.sandbox.server", "--seed", str(seed), "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    if not first.startswith("http"):
        process.kill()
        raise SystemExit(f"sandbox did not start: {first!r} {process.stderr.read() if process.stderr else ''}")
    return process, first


def client_for(base_url: str, api_key: str) -> Any:
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": api_key, "server": api_key.rsplit("-", 1)[-1]})
    client.api_client.host = base_url.rstrip("/") + "/3.0"  # instead of https://<dc>.api.mailchimp.com/3.0
    return client


def run_checks(client: Any, bad_client: Any, list_id: str) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []

    def check(name: str, action: Callable[[], tuple[bool, str]]) -> None:
        try:
            passed, detail = action()
        except Exception as exc:  # a check that crashes is reported, not fatal to the others
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        results.append((name, passed, detail))

    def ping() -> tuple[bool, str]:
        answer = client.ping.get()
        return answer.get("health_status") == "Everything's Chimpy!", str(answer)

    def page_members() -> tuple[bool, str]:
        started, seen, offset, total = time.perf_counter(), set(), 0, None
        while total is None or offset < total:
            page = client.lists.get_list_members_info(
                list_id, count=1000, offset=offset,
                fields=["members.id", "members.email_address", "members.status", "total_items"],
            )
            total = page["total_items"]
            seen.update(m["id"] for m in page["members"])
            offset += 1000
        return len(seen) == total, f"{len(seen)} of total_items {total} in {offset // 1000} pages, {time.perf_counter() - started:.2f} s"

    def upsert_new() -> tuple[bool, str]:
        email = "sdk.new@example.com"
        body = {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "Sdk"}}
        first = client.lists.set_list_member(list_id, md5(email), body)
        again = client.lists.set_list_member(list_id, md5(email), body)
        return first["status"] == again["status"] == "subscribed" and first["id"] == md5(email), f"status {first['status']}, id {first['id']}"

    def upsert_keeps_opt_out() -> tuple[bool, str]:
        email = "opted.out@example.com"
        member = client.lists.set_list_member(list_id, md5(email), {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"LNAME": "Out"}})
        return member["status"] == "unsubscribed" and member["merge_fields"]["LNAME"] == "Out", f"status stays {member['status']}"

    def post_tags() -> tuple[bool, str]:
        email = "sdk.new@example.com"
        answer = client.lists.update_list_member_tags(list_id, md5(email), {"tags": [{"name": "SDK", "status": "active"}]})
        tags = client.lists.get_list_member_tags(list_id, md5(email))
        names = [t["name"] for t in tags["tags"]]
        return getattr(answer, "status_code", None) == 204 and names == ["SDK"], f"POST -> {getattr(answer, 'status_code', answer)}, tags {names}"

    def compliance_refusal() -> tuple[bool, str]:
        email = "opted.out@example.com"
        try:
            client.lists.set_list_member(list_id, md5(email), {"email_address": email, "status": "subscribed"})
        except ApiClientError as exc:
            body = json.loads(exc.text) if isinstance(exc.text, str) else exc.text
            return exc.status_code == 400 and body["title"] == "Member In Compliance State", f"{exc.status_code} {body['title']}"
        return False, "resubscribe was accepted"

    def wrong_key() -> tuple[bool, str]:
        try:
            bad_client.ping.get()
        except ApiClientError as exc:
            body = json.loads(exc.text) if isinstance(exc.text, str) else exc.text
            return exc.status_code == 401, f"{exc.status_code} {body['title']}"
        return False, "a wrong key was accepted"

    for name, action in [("ping", ping), ("page members", page_members), ("upsert with status_if_new", upsert_new),
                         ("status_if_new keeps an opt-out", upsert_keeps_opt_out), ("post tags", post_tags),
                         ("compliance refusal", compliance_refusal), ("wrong key", wrong_key)]:
        check(name, action)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running sandbox (default: start one)")
    parser.add_argument("--api-key", default=KEY)
    parser.add_argument("--list-id", default=LIST)
    parser.add_argument("--members", type=int, default=2500)
    parser.add_argument("--project-python", default="python3", help="interpreter with the project's dependencies")
    args = parser.parse_args()
    process = None
    with tempfile.TemporaryDirectory() as tmp:
        base_url = args.base_url
        if base_url is None:
            seed = Path(tmp) / "seed.json"
            write_seed(seed, args.members)
            process, base_url = start_sandbox(args.project_python, seed)
        try:
            print(f"mailchimp-marketing SDK against {base_url}")
            results = run_checks(client_for(base_url, args.api_key), client_for(base_url, "wrongkey-us1"), args.list_id)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
    for name, passed, detail in results:
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")
    failed = sum(1 for _, passed, _ in results if not passed)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
