"""Files that hold personal data (a plan file, a rehearsal snapshot): written owner-only and atomically.

One place for the rule both follow: the temporary file is created by `mkstemp` (O_CREAT|O_EXCL,
mode 0600), so its content is never readable by others even for a moment, and `os.replace`
gives the final name that mode too even over an older, world-readable file; a reader sees the
old file or the whole new one, and a failure leaves no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from reconciler.errors import ReconcilerError


def write_private(path: str | os.PathLike[str], text: str, *, what: str) -> None:
    """Write `text` to `path` (0600, atomically); `what` names the file in the one-line error."""
    target = Path(path)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise ReconcilerError(f"cannot write {what} {target}: {error.strerror}; check that the directory "
                              "exists and is writable") from None
    try:
        os.fchmod(fd, 0o600)  # mkstemp already does this; say it here so the intent survives refactors
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ReconcilerError(f"cannot write {what} {target}: {error.strerror}; check the path and free "
                                  "space") from None
        raise
