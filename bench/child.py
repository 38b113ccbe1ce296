"""One measured process of the benchmark: the real CLI (`reconcile ...`) or the predecessor baseline.

Separate from the driver so each phase runs in its own process: its peak RSS (`ru_maxrss` of this
process alone) is the reconciler's, not the sandbox's, which stays in the driver's process.
Usage: child.py REPORT.json STDOUT_FILE [--profile FILE.prof] (reconcile ARGS... | baseline ARGS...)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    report_path, stdout_path, rest = argv[0], argv[1], argv[2:]
    profile = None
    if rest[:1] == ["--profile"]:
        profile, rest = rest[1], rest[2:]
    kind, args = rest[0], rest[1:]
    started = time.perf_counter()
    with open(stdout_path, "w", encoding="utf-8") as out:
        if kind == "reconcile":
            sys.path.insert(0, str(REPO))
            from reconciler.cli import main as reconcile

            def run() -> int:
                return reconcile(args, stdout=out, stderr=sys.stderr, env=os.environ, stdin_isatty=False)
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from baseline import run_baseline

            def run() -> int:
                return run_baseline(args, out)
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            code = profiler.runcall(run)
            profiler.dump_stats(profile)
        else:
            code = run()
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(report_path).write_text(json.dumps({"exit": code, "seconds_in_process": seconds,
                                             "cpu_seconds": usage.ru_utime + usage.ru_stime,
                                             "maxrss_kb": usage.ru_maxrss}))  # kilobytes on Linux
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
