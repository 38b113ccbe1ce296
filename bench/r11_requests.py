"""R11 requests with HubSpot's date-based API: batch opt-out writes vs one request per contact.

Seeds the sandbox with N Mailchimp members who unsubscribed and whose HubSpot contacts are still
subscribed to marketing, then runs one real `reconcile --apply --yes` (a child process, the real
CLI and engine) per way of sending R11's opt-outs:

- `2026-03 enterprise`: `hubspot.api_version: 2026-03` on a Marketing Hub Enterprise portal:
  `POST /communication-preferences/2026-03/statuses/batch/write`, 100 opt-outs a request;
- `2026-03 professional`: the same on a Professional portal: the batch write is refused (403) once
  and the client falls back to `POST …/statuses/{email}`, one request per contact;
- `legacy`: `POST /communication-preferences/v3/unsubscribe`, one request per contact.

Prints, per way, the communication-preferences requests of the apply (writes and reads), every
HubSpot request, the apply's wall time (client limiter off and the sandbox unlimited, so it measures
the reconciler and the sandbox, not HubSpot's rate), the time HubSpot's default limit (100 requests
per rolling 10 s) would impose on those HubSpot requests at the least, the machine and the command.
`python bench/r11_requests.py --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO)]

from reconciler.sandbox import Sandbox  # noqa: E402

MARKETING = "289137112"
AUDIENCE = "r11bench01"
TOKEN = "r11-bench-token"
API_KEY = "r11benchkey-us1"
SOURCE, CRITICAL = "719", "762"
WAYS = (("2026-03 enterprise", "2026-03", "enterprise"), ("2026-03 professional", "2026-03", "professional"),
        ("legacy", "legacy", "enterprise"))
VENDOR_RATE = 100 / 10  # HubSpot's default: 100 requests per rolling 10 s


def make_seed(n: int, tier: str) -> dict[str, Any]:
    """N contacts subscribed to marketing in HubSpot, each an unsubscribed member in Mailchimp."""
    emails = [f"optout{i:05d}@example.com" for i in range(n)]
    return {
        "hubspot": {
            "token": TOKEN, "tier": tier,
            "subscriptions": [{"id": MARKETING, "name": "Marketing Information"}],
            "lists": [{"id": SOURCE, "name": "Recruitment", "processing_type": "MANUAL", "members": []},
                      {"id": CRITICAL, "name": "Compliance Hold", "processing_type": "MANUAL", "members": []}],
            "contacts": [{"id": str(1000 + i), "email": e, "properties": {"firstname": f"P{i}"},
                          "subscribed": [MARKETING]} for i, e in enumerate(emails)],
        },
        "mailchimp": {
            "api_key": API_KEY,
            "audiences": [{"id": AUDIENCE, "name": "R11 bench", "double_optin": False,
                           "merge_fields": [{"tag": "FNAME", "type": "text"}],
                           "members": [{"email": e, "status": "unsubscribed", "merge_fields": {}, "tags": []}
                                       for e in emails]}],
        },
    }


def config_yaml(sandbox: Sandbox, api_version: str, audit_path: Path, n: int) -> str:
    return f"""version: 1
hubspot:
  token: ${{HUBSPOT_TOKEN}}
  base_url: {sandbox.base_url}
  rate_limit: {{requests: 100000, per_seconds: 1}}
  api_version: "{api_version}"
mailchimp:
  api_key: ${{MAILCHIMP_API_KEY}}
  base_url: {sandbox.mailchimp_base_url}
  max_connections: 8
subscriptions:
  marketing: "{MARKETING}"
exclusions:
  critical: ["{CRITICAL}"]
audiences:
  r11:
    mailchimp_list_id: "{AUDIENCE}"
    new_member_status: subscribed
    merge_fields: {{FNAME: firstname}}
    streams:
      - name: general
        sources:
          - {{list: "{SOURCE}", tag: Recruitment}}
    opt_outs:
      to_hubspot:
        statuses: [unsubscribed]
        subscriptions: [marketing]
        legal_basis: LEGITIMATE_INTEREST_OTHER
        explanation: Contact unsubscribed in Mailchimp
      from_hubspot: true
safety:
  max_hubspot_unsubscribes: {{count: {n + 1}}}
audit:
  path: {audit_path}
"""


def run_way(name: str, api_version: str, tier: str, n: int, work: Path) -> dict[str, Any]:
    folder = work / name.replace(" ", "-")
    folder.mkdir(parents=True, exist_ok=True)
    with Sandbox(make_seed(n, tier)) as sandbox:
        config = folder / "reconciler.yaml"
        config.write_text(config_yaml(sandbox, api_version, folder / "audit.sqlite", n), encoding="utf-8")
        command = [sys.executable, "-m", "reconciler", "--apply", "--yes", "--config", str(config)]
        env = {**os.environ, "HUBSPOT_TOKEN": TOKEN, "MAILCHIMP_API_KEY": API_KEY,
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        started = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - started
        counts = sandbox.counters()
        unsubscribed = sum(1 for i in range(n)
                           if sandbox.hubspot.subscription_status(f"optout{i:05d}@example.com", MARKETING) == "NOT_SUBSCRIBED")
    prefs = {k: v for k, v in counts.items() if "/communication-preferences/" in k}
    hubspot = sum(v for k, v in counts.items() if not k.split(" ", 1)[-1].startswith("/3.0"))
    return {
        "way": name, "exit": done.returncode, "stderr_tail": done.stderr[-2000:] if done.returncode else "",
        "opted_out_in_hubspot": unsubscribed,
        "prefs_writes": sum(v for k, v in prefs.items() if k.startswith("POST") and not k.endswith("/batch/read")),
        "prefs_reads": sum(v for k, v in prefs.items() if k.startswith("GET") or k.endswith("/batch/read")),
        "prefs_endpoints": prefs, "hubspot_requests": hubspot,
        "apply_seconds": round(seconds, 2), "at_vendor_rate_seconds": round(hubspot / VENDOR_RATE, 1),
        "command": " ".join(shlex.quote(part) for part in command),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| way | exit | opted out in HubSpot | comm-prefs writes | comm-prefs reads | HubSpot requests "
             "| apply wall time (s) | at 100 req/10 s, at least (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['way']} | {r['exit']} | {r['opted_out_in_hubspot']} | {r['prefs_writes']} | "
                     f"{r['prefs_reads']} | {r['hubspot_requests']} | {r['apply_seconds']} | {r['at_vendor_rate_seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/r11_requests.py", description=__doc__.splitlines()[0])
    parser.add_argument("--opt-outs", type=int, default=2500, help="Mailchimp-unsubscribed members with a contact")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--work", default=None, help="keep configs and audit logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="r11-bench-") as scratch:
        work = Path(args.work or scratch)
        rows = [run_way(name, version, tier, args.opt_outs, work) for name, version, tier in WAYS]
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    print(f"R11 requests for {args.opt_outs} opt-outs (one real apply each way)")
    print(f"machine: {machine['platform']}, Python {machine['python']}, {machine['cpus']} CPUs")
    print(f"command: python bench/r11_requests.py --opt-outs {args.opt_outs}")
    print(f"apply, each way: {rows[0]['command'].replace(str(work), '<work>')}")
    print(table(rows))
    for r in rows:
        if r["exit"] != 0:
            print(f"{r['way']}: apply exited {r['exit']}: {r['stderr_tail']}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"opt_outs": args.opt_outs, "machine": machine, "ways": rows},
                                              indent=2), encoding="utf-8")
    ok = all(r["exit"] == 0 and r["opted_out_in_hubspot"] == args.opt_outs for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
