"""Two applies on one audit database (SPEC §6): the second refuses naming the holder; a lock left by
a killed apply is reported as stale and, once deleted as the README says, the next apply converges.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from e2e_helpers import REPO, SANDBOX_ENV, VendorView, assert_compliance, members_by_list, started
from reconciler.sandbox.http import SandboxOptions
from reliability_helpers import demo_doc, demo_seed, no_traceback


def _apply_process(root: Path, config_path: Path, operator: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(SANDBOX_ENV, USER=operator, PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "reconciler", "--apply", "--yes", "--config", str(config_path)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_a_second_apply_refuses_while_the_first_runs_and_names_it(tmp_path: Path) -> None:
    options = SandboxOptions(latency_ms=15)  # the first apply takes a few seconds
    with started(tmp_path, demo_seed(), demo_doc(tmp_path), options) as env:
        lock = Path(env.config.audit.path + ".lock")
        first = _apply_process(tmp_path, env.config_path, "first-operator")
        try:
            _wait_for(lock, first)
            holder = json.loads(lock.read_text())
            second = env.cli("--apply", "--yes")
            assert first.poll() is None, "the first apply ended before the second was tried"
        finally:
            out, err = first.communicate(timeout=120)
        assert second.code == 1 and no_traceback(second.text), second.text
        assert "another apply is running" in second.err
        assert f"pid {first.pid}" in second.err and "first-operator" in second.err and holder["pid"] == first.pid
        assert second.out == ""  # refused before observing or writing anything
        assert first.returncode == 0 and "converged" in out, err
        assert not lock.exists()
        again = env.cli("--apply", "--yes")
        assert again.code == 0 and "No changes" in again.out, again.text


def test_a_lock_left_by_a_killed_apply_is_reported_stale_and_cleared_by_deleting_it(tmp_path: Path) -> None:
    options = SandboxOptions(latency_ms=15)
    with started(tmp_path, demo_seed(), demo_doc(tmp_path), options) as env:
        view = VendorView(env.sandbox.base_url)
        before = members_by_list(view, env.config)
        lock = Path(env.config.audit.path + ".lock")
        doomed = _apply_process(tmp_path, env.config_path, "doomed-operator")
        _wait_for(lock, doomed)
        while env.sandbox.write_requests() < 5 and doomed.poll() is None:
            time.sleep(0.005)  # killed mid-apply, with writes done
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
        assert lock.exists()

        stale = env.cli("--apply", "--yes")
        assert stale.code == 1 and no_traceback(stale.text), stale.text
        assert "is stale" in stale.err and f"pid {doomed.pid}" in stale.err and "doomed-operator" in stale.err
        assert f"delete {lock}" in stale.err
        assert lock.exists()  # reported, never removed behind the operator's back

        lock.unlink()
        recovered = env.cli("--apply", "--yes")
        assert recovered.code == 0 and "converged" in recovered.out, recovered.text
        assert "re-verified" in recovered.err
        assert_compliance(view, env.config, before)
        view.http.close()
