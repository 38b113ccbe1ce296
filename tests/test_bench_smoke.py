"""Smoke test of bench/run.py at a tiny size, so the benchmark cannot rot unnoticed.

Runs the real script (its own child processes and sandbox) on 300 contacts without the rate-limited
run or the baseline, and checks its JSON: every phase, exit codes, requests within the bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("cold_plan", "apply", "no_change_plan", "drift_plan")


def test_bench_runs_every_phase_within_the_request_bound(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--contacts", "300", "--no-rate-limits", "--no-baseline",
         "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    [result_file] = list(tmp_path.glob("bench-300-*.json"))
    results = json.loads(result_file.read_text())
    phases = results["suites"]["no limits"]["phases"]
    assert tuple(phases) == PHASES
    for name, row in phases.items():
        assert row["exit"] == 0, (name, row.get("stderr_tail"))
        assert row["requests"] == sum(row["endpoints"].values())
        # Within 1.05x of the minimum, plus the two or three calls a tiny portal rounds up.
        assert row["requests"] <= row["minimum"]["total"] * 1.05 + 3, (name, row["requests"], row["minimum"])
        assert row["peak_rss_mb"] > 0
    assert phases["cold_plan"]["changes"] > 0 and phases["cold_plan"]["writes"] == 0
    assert phases["apply"]["writes"] >= phases["apply"]["minimum"]["writes"] > 0
    assert phases["no_change_plan"]["changes"] == 0 and phases["no_change_plan"]["writes"] == 0
    assert phases["drift_plan"]["changes"] > 0 and phases["drift_plan"]["writes"] == 0
    assert "| no limits | apply |" in results["table"]
    assert "| no limits | apply |" in done.stdout
