"""One build at a time per project: an advisory lock on ``build/.lock``.

doit's sqlite3 backend keeps its database consistent, but two builds of the same
overlay would still race on the same staging trees and images. The lock is taken when a
doit command that changes the project loads its tasks (tasks/loader.py); a second one
waits, saying who holds the lock. The lock belongs to that process: the workers of
``doit -n N`` are its children.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import IO

_held: IO[str] | None = None


def acquire(build_dir: Path, *, wait: bool = True) -> bool:
    """Take the project's build lock; False when ``wait`` is off and it is held."""
    global _held
    if _held is not None:
        return True
    build_dir.mkdir(parents=True, exist_ok=True)
    fh = open(build_dir / ".lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        if not wait:
            fh.close()
            return False
        print(
            f"fexstack: another build is running in this project ({holder}); waiting for it",
            file=sys.stderr,
            flush=True,
        )
        started = time.monotonic()
        fcntl.flock(fh, fcntl.LOCK_EX)
        print(
            f"fexstack: build lock acquired after {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    _held = fh
    return True


def release() -> None:
    """Give the build lock back (it is otherwise held until the process ends)."""
    global _held
    if _held is None:
        return
    fcntl.flock(_held, fcntl.LOCK_UN)
    _held.close()
    _held = None


def held() -> bool:
    """Whether this process holds the build lock."""
    return _held is not None
