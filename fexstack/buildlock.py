"""One build at a time per project: an advisory lock on ``build/.lock``.

doit's sqlite3 backend keeps its database consistent, but two builds of the same
overlay would still race on the same staging trees and images. The lock is taken when a
doit command that changes the project loads its tasks (tasks/loader.py), or, for a doit
that loads dodo.py (``doit -f path/to/dodo.py``), when its run starts, before any task's
state is read (tasks/reporter.py); each step (a Step action) checks that it is held
and takes it for the step when it is not (:func:`hold`, tasks/action.py: with another
``--reporter``); a clean action takes it before it removes anything (tasks/clean.py:
doit's clean command has no reporter). A second build waits, saying who holds the lock.
The lock belongs to the doit process: the workers of ``doit -n N`` are its
descendants (forked, or started by multiprocessing's fork server) and work under
their parent's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_held: IO[str] | None = None
LOCK_NAME = ".lock"


def acquire(build_dir: Path, *, wait: bool = True) -> bool:
    """Take the project's build lock; False when ``wait`` is off and it is held."""
    global _held
    if _held is not None:
        return True
    build_dir.mkdir(parents=True, exist_ok=True)
    fh = open(build_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held for the process lifetime
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


@contextlib.contextmanager
def hold(build_dir: Path) -> Iterator[None]:
    """The build lock of ``build_dir`` is held while the block runs: by this process, or
    by an ancestor (the doit whose ``-n N`` worker this is); else it is taken for the
    block, waiting for the build that holds it, and given back after it (a worker that
    kept it would shut out its sibling workers)."""
    if _held is not None or holder_is_ancestor(build_dir):
        yield
        return
    acquire(build_dir)
    try:
        yield
    finally:
        release()


def holder_is_ancestor(build_dir: Path) -> bool:
    """Whether the lock of ``build_dir`` is held, by a process this one descends from."""
    path = build_dir / LOCK_NAME
    try:
        fh = open(path)  # noqa: SIM115 - closed below, after the probe
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held (exclusively): by whom?
        else:
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False  # nobody holds it
        words = fh.read().split()
    if len(words) != 2 or words[0] != "pid" or not words[1].isdigit():
        return False
    return int(words[1]) in ancestors()


def ancestors(pid: int | None = None) -> list[int]:
    """The process ids above ``pid`` (default: this process), parent first (Linux /proc)."""
    found: list[int] = []
    current = os.getpid() if pid is None else pid
    while current > 1 and len(found) < 4096:
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            break
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        current = int(stat.rpartition(")")[2].split()[1])
        found.append(current)
    return found
