"""Injected faults of the sandbox (`--fault-rate`, `--seed-random`): 500/502/503, dropped connections.

Separate from the server so the draw sequence is one seeded generator behind one lock: the same
seed and the same order of requests give the same faults, which makes client retry tests repeatable.
"""

from __future__ import annotations

import random
import threading
from typing import Sequence

from .http import Response

# Fault kinds, drawn uniformly once a request is chosen for a fault
# (SandboxOptions.variants["fault_kinds"] narrows them, e.g. ["drop"] for one test).
KINDS = ("500", "502", "503", "drop", "process_then_drop")
DROP = "drop"  # connection closed before anything is processed
PROCESS_THEN_DROP = "process_then_drop"  # handled (and journaled), then closed with no answer

# What an edge proxy in front of either vendor answers when the origin fails: HTML, not JSON.
EDGE_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")


class FaultInjector:
    def __init__(self, rate: float, seed: int | None, kinds: Sequence[str] = KINDS) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate {rate} must be between 0 and 1")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"fault kinds {list(kinds)} must be a non-empty subset of {KINDS}")
        self.rate = rate
        self.kinds = tuple(kinds)
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        """The fault for the next request, or None. Always draws twice so the sequence is stable."""
        if self.rate <= 0.0:
            return None
        with self._lock:
            hit = self._random.random() < self.rate
            kind = self._random.choice(self.kinds)
        return kind if hit else None


def edge_502() -> Response:
    return Response(502, EDGE_502, content_type="text/html")
