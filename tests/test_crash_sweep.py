"""The crash sweep (issue 8): SIGKILL a large apply at 20 points, then recover and converge.

The apply runs as `python -m reconciler --apply --yes` in a subprocess against a Sandbox served by
this test process, which polls the sandbox's write counter and kills the apply when it reaches
each kill point. After each kill: the lock left behind is reported as stale and cleared as the
README says, a new apply converges to the state SPEC §4 states for the seed (`expected_state`,
worked out without the product, so a bug an uninterrupted run shares is caught too), every
attempted change has an outcome row (the interrupted ones re-verified, SPEC §8), and the compliance
invariants hold both right after the kill and after the recovery. Run it with `pytest -m slow -k crash`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_helpers import (LIST_ID, REPO, SANDBOX_ENV, VendorView, assert_compliance, members_by_list, run_cli,
                         typed_config, write_yaml)
from expected_state import differences, expected_end_state
from reconciler.audit import AuditLog
from reconciler.sandbox import Sandbox
from reliability_helpers import (SWEEP_COUNTS, assert_no_harm, no_traceback, observed_state, print_at_end,
                                 reliability_config, reliability_seed, table)

pytestmark = pytest.mark.slow

KILL_POINTS = 20


def big_seed() -> dict[str, Any]:
    """About 1,900 changes: 1,000 creates (batched), 400 merge-field updates, 200 R11 opt-outs, 200 R9
    leavers, 66 critical members (some unsubscribed: R11 before the R2 archive; some pending: unsubscribed
    then archived), each needing its own writes, and every other case of `reliability_helpers.CASES`."""
    return reliability_seed(SWEEP_COUNTS, default=2)


def config_doc(root: Path, base_url: str) -> dict[str, Any]:
    doc = reliability_config(root)
    doc["hubspot"].update(base_url=base_url)
    doc["mailchimp"].update(base_url=base_url + "/3.0")
    return doc


def expected() -> dict[str, Any]:
    """What SPEC §4 says the big seed ends as (the sandbox's URLs do not change it)."""
    return expected_end_state(big_seed(), config_doc(Path("."), "http://127.0.0.1:1"))


def end_state_problems(sandbox: Sandbox, wanted: dict[str, Any]) -> list[str]:
    found = differences(wanted, observed_state(sandbox, [LIST_ID]))
    return [f"end state differs from the expected one ({len(found)} places): " + "; ".join(found[:12])] if found else []


@dataclass
class Point:
    target: int
    killed_at: int = 0
    unfinished: int = 0
    recovered: list[int] = field(default_factory=list)
    reverified: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
    env.update(SANDBOX_ENV, PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _kill_apply_at(sandbox: Sandbox, config_path: Path, root: Path, target: int) -> int:
    """Start the apply and SIGKILL it once the sandbox has seen `target` writes; the write count then."""
    process = subprocess.Popen([sys.executable, "-m", "reconciler", "--apply", "--yes", "--config", str(config_path)],
                               cwd=root, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and sandbox.write_requests() < target:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    return sandbox.write_requests()


def _sweep_point(root: Path, target: int, wanted: dict[str, Any]) -> Point:
    point = Point(target)
    started_at = time.monotonic()
    with Sandbox(big_seed()) as sandbox:
        config_path = write_yaml(root / "config" / "reconciler.yaml", config_doc(root, sandbox.base_url))
        config = typed_config(config_path)
        view = VendorView(sandbox.base_url)
        try:
            before = members_by_list(view, config)
            point.killed_at = _kill_apply_at(sandbox, config_path, root, target)
            assert_no_harm(view, config, before)
            lock = Path(config.audit.path + ".lock")
            log = AuditLog.open(config.audit.path)
            point.unfinished = len(log.unfinished_attempts())
            log.close()
            refused = run_cli("--apply", "--yes", "--config", str(config_path), env=SANDBOX_ENV)
            if not (refused.code == 1 and "stale" in refused.err and str(lock) in refused.err):
                point.problems.append(f"the killed apply's lock was not reported as stale: {refused.code} {refused.err}")
            lock.unlink()  # as the README says: no apply runs, so delete the lock file
            for _ in range(3):
                run = run_cli("--apply", "--yes", "--config", str(config_path), env=SANDBOX_ENV)
                point.recovered.append(run.code)
                if not no_traceback(run.text):
                    point.problems.append("traceback")
                if run.code == 0:
                    break
            if point.recovered[-1] != 0:
                point.problems.append(f"recovery did not converge: {point.recovered}")
            log = AuditLog.open(config.audit.path)
            try:
                left = log.unfinished_attempts()
                rows = log.query()
            finally:
                log.close()
            if left:
                point.problems.append(f"{len(left)} attempted change(s) without an outcome row after the recovery")
            point.reverified = sum(1 for r in rows if r["outcome"] in ("verified", "not_applied"))
            if point.reverified < point.unfinished:
                point.problems.append(f"{point.unfinished} unfinished attempt(s) but {point.reverified} re-verified")
            assert_compliance(view, config, before)
            point.problems += end_state_problems(sandbox, wanted)  # no confirmation email either: nobody is made pending
        except AssertionError as broken:
            point.problems.append(str(broken)[:600])
        finally:
            view.http.close()
    point.seconds = time.monotonic() - started_at
    return point


@dataclass
class Sweep:
    points: list[Point]
    uninterrupted: list[str]  # where the uninterrupted apply differs from the expected state (nowhere, it must)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Sweep]:
    started_at = time.monotonic()
    root = tmp_path_factory.mktemp("uninterrupted")
    wanted = expected()
    with Sandbox(big_seed()) as sandbox:
        config_path = write_yaml(root / "config" / "reconciler.yaml", config_doc(root, sandbox.base_url))
        run = run_cli("--apply", "--yes", "--config", str(config_path), env=SANDBOX_ENV)
        uninterrupted = [] if run.code == 0 and "converged" in run.out else [f"exit {run.code}: {run.text[-1500:]}"]
        uninterrupted += end_state_problems(sandbox, wanted)
        total_writes = sandbox.write_requests()
    assert total_writes > 800, total_writes  # a large apply: hundreds of single-member writes
    step = total_writes / (KILL_POINTS + 1)
    targets = [max(1, round(step * (i + 1))) for i in range(KILL_POINTS)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        points = list(pool.map(lambda t: _sweep_point(tmp_path_factory.mktemp(f"kill-{t}"), t, wanted), targets))
    yield Sweep(points, uninterrupted)
    print_at_end(request, f"crash sweep: {len(points)} kill points over {total_writes} writes in "
                          f"{time.monotonic() - started_at:.0f} s",
                 table(("kill at write", "killed at", "unfinished", "recovery exits", "re-verified", "seconds", "result"),
                       [(p.target, p.killed_at, p.unfinished, " ".join(map(str, p.recovered)), p.reverified,
                         f"{p.seconds:.1f}", "ok" if not p.problems else "FAILED") for p in points]))


def test_crash_sweep_uninterrupted_apply_reaches_the_expected_state(sweep: Sweep) -> None:
    assert not sweep.uninterrupted, "\n".join(sweep.uninterrupted)


def test_crash_sweep_every_kill_point_recovers_to_the_expected_state(sweep: Sweep) -> None:
    points = sweep.points
    assert len(points) >= 20
    assert all(p.killed_at >= p.target for p in points)
    failures = [f"kill at {p.target}: {problem}" for p in points for problem in p.problems]
    assert not failures, "\n".join(failures)
    assert any(p.unfinished for p in points), "no kill landed between an attempted row and its outcome"
