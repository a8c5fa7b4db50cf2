"""One process per run folder: an exclusive lock, so two benches on one output folder never train
the same seed twice at once (interleaved `log.jsonl`, checkpoints overwritten mid-run).

The lock is `fcntl.flock` on `<folder>/.lock`. The kernel drops it when its process exits, however
it exits, so a killed run leaves no stale lock to clean up; the file only records who holds it
(pid and host) for the waiting message. The second process waits, then finds the seed finished
and skips it. flock is per host: folders shared over NFS by several machines are not covered.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs there are not locked
    fcntl = None

LOCK_NAME = ".lock"


@contextlib.contextmanager
def claim_folder(folder: str | os.PathLike, on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Create `folder` and hold its lock for the `with` block; if another process holds it, call
    `on_wait(holder)` once and block until it is released.

    >>> import tempfile
    >>> with claim_folder(Path(tempfile.mkdtemp()) / "seed0") as folder: folder.is_dir()
    True
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield folder
        return
    with open(folder / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            if on_wait is not None:
                on_wait(handle.read().strip() or "another process")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
