"""Benchmark of the whole product against the sandbox: cold plan, apply, no-change plan, plan after drift.

Drives the real CLI, one child process per phase (bench/child.py, so peak memory is the
reconciler's), against an in-process Sandbox holding a generated portal (bench/portal.py), and
compares request counts with the minimum (bench/minimum.py), with rate limits on and off, and with
the predecessor's per-contact baseline (bench/baseline.py). `python bench/run.py --help`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from minimum import observed_sizes, phase_minimum  # noqa: E402
from portal import API_KEY, AUDIENCE, SOURCE_A, SOURCE_B, TOKEN, Shape, apply_drift, config_yaml, make_seed  # noqa: E402

from reconciler.sandbox import Sandbox  # noqa: E402
from reconciler.sandbox.http import SandboxOptions  # noqa: E402

PHASES = ("cold_plan", "apply", "no_change_plan", "drift_plan")
VENDOR_RATE = 100 / 10  # HubSpot's default limit: 100 requests per rolling 10 s (per app)
UNLIMITED = (100_000, 1.0)  # client limit when the sandbox enforces none: the bench then measures our CPU


class BenchSandbox(Sandbox):
    """The sandbox, also counting answers by status (429s) — it already counts requests per endpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statuses: Counter[int] = Counter()
        self._status_lock = threading.Lock()

    def dispatch(self, request: Any) -> Any:
        response = super().dispatch(request)
        with self._status_lock:
            self.statuses[response.status if response is not None else 0] += 1
        return response


def is_hubspot(endpoint: str) -> bool:
    return not endpoint.split(" ", 1)[-1].startswith("/3.0")


def run_child(kind: str, args: list[str], work: Path, name: str, profile: bool) -> dict[str, Any]:
    report, stdout = work / f"{name}.report.json", work / f"{name}.stdout"
    command = [sys.executable, str(HERE / "child.py"), str(report), str(stdout)]
    if profile:
        command += ["--profile", str(work / f"{name}.prof")]
    env = {**os.environ, "HUBSPOT_TOKEN": TOKEN, "MAILCHIMP_API_KEY": API_KEY, "CI": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    started = time.perf_counter()
    done = subprocess.run(command + [kind, *args], cwd=work, env=env, stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not report.exists():
        raise SystemExit(f"bench: {name} crashed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(report.read_text())
    result.update(wall_seconds=wall, stderr_tail=done.stderr[-600:])
    return result


def run_suite(seed: dict[str, Any], shape: Shape, work: Path, *, limit: tuple[int, float] | None, drift: float,
              profile: bool, baseline: bool) -> dict[str, Any]:
    """The four phases on a fresh sandbox; `limit` = (requests, window seconds) turns rate limits on."""
    options = (SandboxOptions(rate_limits=True, hubspot_limit=limit[0], hubspot_window_seconds=limit[1])
               if limit else SandboxOptions())
    client_limit = limit or UNLIMITED
    work.mkdir(parents=True, exist_ok=True)
    sandbox = BenchSandbox(seed, options=options).start()
    try:
        config = work / "config.yaml"
        config.write_text(config_yaml(sandbox.hubspot_base_url, sandbox.mailchimp_base_url, str(work / "audit.sqlite"),
                                      requests_per_window=client_limit[0], window_seconds=client_limit[1]))
        base = ["--config", str(config)]
        phases: dict[str, Any] = {}
        plan_of: dict[str, list[dict[str, Any]]] = {}
        drift_done: dict[str, int] = {}
        for phase in PHASES:
            if phase == "drift_plan":
                drift_done = apply_drift(sandbox.base_url, drift, shape.contacts, shape.seed)
            if limit:
                time.sleep(limit[1] * 1.1)  # the previous phase's requests leave the vendor's window
            before = observed_sizes(sandbox)
            sandbox.reset_counters()
            sandbox.statuses.clear()
            plan_file = work / f"{phase}.plan.json"
            argv = base + (["--apply", "--yes"] if phase == "apply" else ["--plan", "--out", str(plan_file)])
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            child = run_child("reconcile", argv, work, phase, profile)
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            counters = sandbox.counters()
            after = observed_sizes(sandbox)
            if phase != "apply":
                plan_of[phase] = json.loads(plan_file.read_text())["changes"]
            minimum = (phase_minimum(before, plan_of["cold_plan"], after) if phase == "apply"
                       else phase_minimum(before))
            requests_ = sum(counters.values())
            hubspot = sum(n for e, n in counters.items() if is_hubspot(e))
            row: dict[str, Any] = {
                "exit": child["exit"], "wall_seconds": round(child["wall_seconds"], 3),
                "seconds_in_process": round(child["seconds_in_process"], 3),
                "peak_rss_mb": round(child["maxrss_kb"] / 1024, 1),
                "reconciler_cpu_seconds": round(child["cpu_seconds"], 2),
                "sandbox_cpu_seconds": round(cpu_after.ru_utime + cpu_after.ru_stime - cpu.ru_utime - cpu.ru_stime, 2),
                "requests": requests_, "writes": sandbox.write_requests(), "hubspot_requests": hubspot,
                "minimum": minimum, "ratio_to_minimum": round(requests_ / minimum["total"], 4),
                "status_429": sandbox.statuses.get(429, 0), "endpoints": dict(sorted(counters.items())),
                "observed_before": before, "observed_after": after,
                "changes": len(plan_of.get(phase, [])) if phase != "apply" else len(plan_of["cold_plan"]),
            }
            if limit:
                windows = math.ceil(hubspot / limit[0])
                row["windows"] = windows
                row["lower_bound_seconds"] = (windows - 1) * limit[1]
                row["ratio_to_lower_bound"] = (round(child["wall_seconds"] / row["lower_bound_seconds"], 3)
                                               if row["lower_bound_seconds"] else None)
            if phase == "drift_plan":
                row["drift"] = drift_done
            expected_exit = 0
            if child["exit"] != expected_exit:
                row["stderr_tail"] = child["stderr_tail"]
            phases[phase] = row
            print(f"  {phase}: {row['wall_seconds']} s, {requests_} requests (min {minimum['total']}), "
                  f"{row['writes']} writes, {row['status_429']} x 429, peak {row['peak_rss_mb']} MB, CPU reconciler "
                  f"{row['reconciler_cpu_seconds']} s, sandbox {row['sandbox_cpu_seconds']} s", file=sys.stderr)
        result: dict[str, Any] = {"phases": phases, "client_rate_limit": list(client_limit),
                                  "sandbox_rate_limit": list(limit) if limit else None}
        if baseline:
            sandbox.reset_counters()
            child = run_child("baseline", [sandbox.base_url, TOKEN, API_KEY, AUDIENCE, SOURCE_A, SOURCE_B],
                              work, "baseline", False)
            result["baseline"] = {"wall_seconds": round(child["wall_seconds"], 3), "requests": sandbox.total_requests(),
                                  "writes": sandbox.write_requests(), "peak_rss_mb": round(child["maxrss_kb"] / 1024, 1)}
        return result
    finally:
        sandbox.stop()


def choose_limit(unlimited: dict[str, Any], window: float, min_windows: int) -> tuple[int, float]:
    """HubSpot's real rate (100 requests per 10 s) with the window scaled to `window` seconds, so the
    timing is that of a real run; fewer per window when the smallest phase would span < `min_windows`."""
    limit = max(1, round(VENDOR_RATE * window))
    fewest = min(p["hubspot_requests"] for p in unlimited["phases"].values())
    if math.ceil(fewest / limit) < min_windows:
        limit = max(1, fewest // min_windows)
    return limit, window


def machine() -> dict[str, str]:
    return {"uname": " ".join(platform.uname()), "nproc": str(os.cpu_count()), "python": sys.version.split()[0]}


def table(results: dict[str, Any]) -> str:
    lines = ["| run | phase | wall s | requests | minimum | × min | writes | HubSpot req | 429s | bound s | × bound "
             "| peak MB | changes |", "|" + "---|" * 13]
    for label, suite in results["suites"].items():
        for phase, row in suite["phases"].items():
            bound = row.get("lower_bound_seconds")
            lines.append(
                f"| {label} | {phase} | {row['wall_seconds']:.2f} | {row['requests']} | {row['minimum']['total']} | "
                f"{row['ratio_to_minimum']:.3f} | {row['writes']} | {row['hubspot_requests']} | {row['status_429']} | "
                f"{'' if bound is None else f'{bound:.1f}'} | "
                f"{'' if row.get('ratio_to_lower_bound') is None else row['ratio_to_lower_bound']} | "
                f"{row['peak_rss_mb']} | {row['changes']} |")
    base = results["suites"]["no limits"].get("baseline")
    if base:
        ours = results["suites"]["no limits"]["phases"]["no_change_plan"]
        lines.append("")
        lines.append(f"Baseline (predecessor: read + upsert + tag per contact, 8 threads): {base['requests']} requests "
                     f"({base['writes']} writes) in {base['wall_seconds']:.2f} s; no-change plan: {ours['requests']} "
                     f"requests ({ours['writes']} writes) in {ours['wall_seconds']:.2f} s: "
                     f"{base['requests'] / ours['requests']:.0f}× fewer requests, "
                     f"{base['wall_seconds'] / ours['wall_seconds']:.1f}× faster.")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, required=True, help="HubSpot contacts in the portal (N)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generated portal")
    parser.add_argument("--members", type=float, default=0.6, help="share of eligible contacts already members")
    parser.add_argument("--member-drift", type=float, default=0.02, help="share of existing members out of date")
    parser.add_argument("--drift", type=float, default=0.01, help="share of contacts changed before the last plan")
    parser.add_argument("--no-rate-limits", action="store_true", help="skip the run with the sandbox's rate limits")
    parser.add_argument("--window", type=float, default=1.0, help="scaled HubSpot window, seconds (rate-limited run)")
    parser.add_argument("--windows", type=int, default=5, help="windows the smallest rate-limited phase spans, at least")
    parser.add_argument("--limit", type=int, default=None, help="HubSpot requests per window (default: from --windows)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the predecessor baseline")
    parser.add_argument("--profile", action="store_true", help="cProfile every phase (files in the work directory)")
    parser.add_argument("--out", default=str(HERE / "results"), help="directory for the JSON results")
    parser.add_argument("--work", default=None, help="keep configs, plans, audit and profiles here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    shape = Shape(args.contacts, seed=args.seed, members=args.members, drift=args.member_drift)
    started = time.perf_counter()
    seed = make_seed(shape)
    print(f"bench: portal of {args.contacts} contacts generated in {time.perf_counter() - started:.1f} s "
          "(not timed)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        work = Path(args.work or scratch)
        results: dict[str, Any] = {"command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
                                   "machine": machine(), "shape": vars(shape), "drift": args.drift, "suites": {}}
        print("bench: no rate limits", file=sys.stderr)
        results["suites"]["no limits"] = run_suite(seed, shape, work / "unlimited", limit=None, drift=args.drift,
                                                   profile=args.profile, baseline=not args.no_baseline)
        if not args.no_rate_limits:
            limit = ((args.limit, args.window) if args.limit
                     else choose_limit(results["suites"]["no limits"], args.window, args.windows))
            label = f"limits {limit[0]}/{limit[1]:g}s"
            print(f"bench: rate limits on: HubSpot {limit[0]} requests per {limit[1]:g} s window "
                  f"(client config rate_limit the same; HubSpot's real 100 per 10 s is {VENDOR_RATE * limit[1]:g} per "
                  f"{limit[1]:g} s), Mailchimp 10 connections", file=sys.stderr)
            results["suites"][label] = run_suite(seed, shape, work / "limited", limit=limit, drift=args.drift,
                                                 profile=False, baseline=False)
        results["table"] = table(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{args.contacts}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']['uname']}; nproc {results['machine']['nproc']}; "
          f"python {results['machine']['python']}")
    print(f"command: {results['command']}\n")
    print(results["table"])
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
