"""End-to-end: the demo applied against a sandbox that injects faults and enforces rate limits.

Re-running after a partial apply must reach the same vendor-side end state as a fault-free run,
without any change reaching a vendor twice where it would count twice, and without breaking a
compliance invariant on the way (they are checked after every attempt).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from e2e_helpers import (
    DEMO_SEED,
    RecordingSandbox,
    assert_compliance,
    demo_config_doc,
    members_by_list,
    started,
)
from reconciler.sandbox.http import SandboxOptions

SEED = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))


def _doc(root: Path) -> dict:
    doc = demo_config_doc()
    doc["audit"] = {"path": str(root / "audit.sqlite")}
    return doc


def _applied_writes(sandbox: RecordingSandbox) -> Counter[tuple[str, str]]:
    """(what, whom) for every single-member or single-contact write that changed vendor state."""
    seen: Counter[tuple[str, str]] = Counter()
    for method, path, body, _, mutated in sandbox.log:
        if not mutated:
            continue
        if path.endswith("/communication-preferences/v3/unsubscribe"):
            seen[("unsubscribe", f"{body['emailAddress']} {body['subscriptionId']}")] += 1
        elif "/members/" in path and method in ("DELETE", "PUT", "PATCH"):
            seen[(method, path.rsplit("/", 1)[1])] += 1
    for email in sandbox.created:
        seen[("create", email)] += 1
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(("fault_rate", "seed_random"), [(0.1, 3), (0.1, 2024), (0.3, 5)])
def test_demo_converges_under_faults_to_the_fault_free_end_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 fault_rate: float, seed_random: int) -> None:
    monkeypatch.chdir(tmp_path)
    with started(tmp_path / "clean", SEED, _doc(tmp_path / "clean")) as clean:
        run = clean.cli("--apply", "--yes")
        assert run.code == 0 and "converged" in run.out, run.text
        config = clean.config
        expected = clean.view.end_state(config)
        expected_writes = _applied_writes(clean.sandbox)

    options = SandboxOptions(fault_rate=fault_rate, rate_limits=True, seed_random=seed_random,
                             hubspot_limit=40, hubspot_window_seconds=1.0)
    with started(tmp_path / "faulty", SEED, _doc(tmp_path / "faulty"), options=options) as env:
        before = members_by_list(env.view, config)
        codes = []
        started_at = time.monotonic()
        for _ in range(6):
            run = env.cli("--apply", "--yes")
            codes.append(run.code)
            assert run.code in (0, 1, 5), run.text  # 1: a transient error outlived its retries
            assert "Traceback" not in run.text
            assert_compliance(env.view, config, before, converged=run.code == 0)
            if run.code == 0 and ("converged" in run.out or "No changes" in run.out):
                break
        assert codes[-1] == 0, codes
        assert time.monotonic() - started_at < 240
        assert env.view.end_state(config) == expected
        writes = _applied_writes(env.sandbox)
        doubled = {key: n for key, n in writes.items() if n > 1}
        assert not doubled, doubled
        assert set(writes) == set(expected_writes)
        # faults and 429s did happen: requests were answered without reaching the emulators' handlers
        assert sum(env.sandbox.counters().values()) > len(env.sandbox.log) + 20
        print(f"seed {seed_random}: exit codes {codes}, {sum(env.sandbox.counters().values())} requests, "
              f"{len(env.sandbox.log)} handled")
