"""`--state FILE` persistence of the sandbox: a JSON snapshot plus an append-only journal of writes.

Separate from the server so the crash-safety rules live in one place: each state-changing request
is appended to FILE.journal (one JSON line, flushed to the OS, no fsync, so a 10,000-write apply is
not slowed); compaction writes a full snapshot atomically (temp file + rename) and drops the
journal segments it covers. Journal files carry a generation number, and a snapshot records the
first generation it does not contain, so a crash at any point replays every write exactly once.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from .http import CaseInsensitiveDict, Request

FORMAT = "reconciler-sandbox-state"
# Only what a replay needs; never Authorization (secrets stay out of files).
JOURNALED_HEADERS = ("content-type",)


def entry_for(vendor: str, request: Request) -> dict[str, Any]:
    """The journal line for a handled request."""
    entry: dict[str, Any] = {"vendor": vendor, "method": request.method, "path": request.path, "query": request.query,
                             "headers": {h: request.headers[h] for h in JOURNALED_HEADERS if h in request.headers},
                             "time": request.time}
    try:
        entry["body"] = request.body.decode("utf-8")
    except UnicodeDecodeError:
        entry["body_b64"] = base64.b64encode(request.body).decode("ascii")
    return entry


def request_from(entry: dict[str, Any]) -> Request:
    """The request a journal line records, marked as a replay."""
    body = entry["body"].encode("utf-8") if "body" in entry else base64.b64decode(entry.get("body_b64", ""))
    return Request(entry["method"], entry["path"], {k: list(v) for k, v in entry["query"].items()},
                   CaseInsensitiveDict(entry.get("headers") or {}), body, replay=True, time=entry.get("time"))


class StateStore:
    """The snapshot at `path` and its journal at `path + ".journal"` (rotated segments `.journal.<gen>`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.journal_path = Path(str(self.path) + ".journal")
        self.generation = 0
        self._file: Any = None
        self._lock = threading.Lock()  # guards the open journal file
        self.dirty = False

    @staticmethod
    def discard(path: str | os.PathLike[str]) -> None:
        """Removes a snapshot and every journal file beside it (a sandbox reset)."""
        store = StateStore(path)
        for file in [store.path, *store._segments(), store.journal_path]:
            file.unlink(missing_ok=True)

    def _segments(self) -> list[Path]:
        prefix = self.journal_path.name + "."
        found = [p for p in self.path.parent.glob(self.journal_path.name + ".*")
                 if p.name[len(prefix):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(prefix):]))

    def load(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(snapshot or None, journal entries not in it, oldest first). Without a snapshot the
        journal belongs to nothing we can rebuild, so it is discarded and the caller starts from the seed."""
        if not self.path.exists():
            for file in [*self._segments(), self.journal_path]:
                file.unlink(missing_ok=True)
            return None, []
        snapshot = json.loads(self.path.read_text(encoding="utf-8"))
        if snapshot.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a sandbox state file (format {snapshot.get('format')!r})")
        first = int(snapshot.get("generation", 0))
        self.generation = first
        entries: list[dict[str, Any]] = []
        for file in [*self._segments(), self.journal_path]:
            if not file.exists():
                continue
            lines = self._read(file)
            header = next(lines, None)
            if header is None or int(header.get("generation", -1)) < first:
                file.unlink()  # already inside the snapshot
                continue
            # The next rotation must cover every generation replayed here.
            self.generation = max(self.generation, int(header["generation"]))
            entries.extend(lines)
        return snapshot, entries

    @staticmethod
    def _read(file: Path) -> Iterator[dict[str, Any]]:
        with file.open(encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return  # a torn last line from a crash mid-write: that write never answered

    def append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if self._file is None:
                self._open()
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._file.flush()
            self.dirty = True

    def _open(self) -> None:
        self._file = self.journal_path.open("a", encoding="utf-8")
        if self._file.tell() == 0:
            self._file.write(json.dumps({"generation": self.generation}) + "\n")

    def rotate(self) -> int:
        """Closes the current journal as segment `<gen>`; later appends start generation gen+1.

        Call while no write is in flight, together with taking the snapshot the segment leads to."""
        with self._lock:
            covered = self.generation
            if self._file is not None:
                self._file.close()
                self._file = None
            if self.journal_path.exists():
                os.replace(self.journal_path, Path(f"{self.journal_path}.{covered}"))
            self.generation = covered + 1
            self.dirty = False
            return covered

    def write_snapshot(self, states: dict[str, Any], covered: int) -> None:
        """Atomically writes the snapshot holding every write up to segment `covered`, then drops that segment."""
        data = {"format": FORMAT, "version": 1, "generation": covered + 1, **states}
        temp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with temp.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        for segment in self._segments():
            if int(segment.name.rsplit(".", 1)[1]) <= covered:
                segment.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
