"""Run a command under a pseudo-terminal and capture everything it prints.

muvm drops the guest's output and its own status lines unless its stdout and stderr are a
terminal, so runs go through a PTY: the child gets the slave side as stdin, stdout and
stderr, in a new session (its own process group), and this module reads the master side
until the child is gone. Output is echoed to the user's terminal when stdout is one, and
written raw to the run log as it arrives. A timeout ends the whole process group (SIGTERM,
then SIGKILL after a grace period) and still returns a result.

This is the one place where fexstack starts a process itself instead of through
:func:`fexstack.command.run`; the argv is logged the same way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from fexstack.errors import RunError

log = logging.getLogger("fexstack.capture")

GRACE_SECONDS = 5.0
DRAIN_SECONDS = 0.5  # how long to keep reading after the child exited
READY_WINDOW = 65536  # bytes of recent output the ready pattern is matched against
DEFAULT_WINSIZE = (50, 200)  # rows, columns when the user's stdout is not a terminal

_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class CaptureResult:
    """How a captured command ended, and what it printed."""

    argv: tuple[str, ...]
    exit_status: int | None  # None when a signal ended it
    signal: int | None
    duration_seconds: float
    timed_out: bool
    output: bytes  # raw, as read from the PTY
    ready_seconds: float | None = None  # when the ``ready`` pattern first matched
    stopped_on_ready: bool = False  # ended by fexstack once the ready pattern matched

    @property
    def text(self) -> str:
        return clean(self.output)


def clean(raw: bytes) -> str:
    """Terminal output as plain text: escape sequences gone, CRLF and lone CR handled."""
    data = _ANSI.sub(b"", raw)
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    lines = []
    for line in text.split("\n"):
        # a carriage return rewrites the line: keep what was written last
        if "\r" in line:
            parts = [p for p in line.split("\r") if p]
            line = parts[-1] if parts else ""
        lines.append(line)
    return "\n".join(lines)


def _set_winsize(fd: int) -> None:
    rows, cols = DEFAULT_WINSIZE
    if sys.stdout.isatty():
        with contextlib.suppress(OSError):
            packed = fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            rows, cols = struct.unpack("HHHH", packed)[:2]
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Monitor(Protocol):
    """Watches something of the running app (its windows) while :func:`run_pty` waits."""

    def tick(self) -> None:
        """Called about every 0.1 s while the process runs (rate-limit inside)."""

    def before_stop(self, reason: str) -> None:
        """Called once the timeout (``timeout``) or the ready marker (``ready``) is hit,
        before the process group is signalled."""


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_pty(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_seconds: float | None = None,
    log_file: BinaryIO | None = None,
    echo: bool | None = None,
    grace_seconds: float = GRACE_SECONDS,
    ready: re.Pattern[str] | None = None,
    stop_on_ready: bool = False,
    monitor: Monitor | None = None,
) -> CaptureResult:
    """Run ``argv`` under a PTY; see the module docstring.

    ``env`` replaces the environment when given. ``echo`` defaults to whether stdout is a
    terminal. Raw output goes to ``log_file`` (flushed as it arrives) and into the result.
    ``ready``: note when this pattern first matches the (cleaned) output; with
    ``stop_on_ready`` the process group is then ended like on a timeout (not a timeout).
    ``monitor``: ticked while the process runs, told before the timeout or the ready
    marker ends it (a screenshot is taken then).
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("run_pty() needs a command")
    if echo is None:
        echo = sys.stdout.isatty()
    log.debug("run (pty): %s", shlex.join(args))
    master, slave = pty.openpty()
    _set_winsize(slave)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env) if env is not None else None,
            cwd=os.fspath(cwd) if cwd is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        os.close(master)
        os.close(slave)
        raise RunError(
            f"cannot start {shlex.join(args)}: {exc.strerror or exc}",
            "check that the program exists and is executable",
        ) from exc
    os.close(slave)
    pgid = proc.pid  # a new session: the child leads its own process group
    chunks: list[bytes] = []
    deadline = start + timeout_seconds if timeout_seconds is not None else None
    timed_out = False
    ready_seconds: float | None = None
    stopped_on_ready = False
    kill_at: float | None = None
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if monitor is not None and exited_at is None and kill_at is None:
                monitor.tick()
            if deadline is not None and not timed_out and now >= deadline:
                if monitor is not None and exited_at is None:
                    monitor.before_stop("timeout")
                timed_out = True
                log.debug("timeout after %s s: SIGTERM to process group %d", timeout_seconds, pgid)
                _kill_group(pgid, signal.SIGTERM)
                kill_at = now + grace_seconds
            if kill_at is not None and now >= kill_at:
                log.debug("grace period over: SIGKILL to process group %d", pgid)
                _kill_group(pgid, signal.SIGKILL)
                kill_at = None
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at >= DRAIN_SECONDS:
                break
            waits = [0.1]
            if deadline is not None and not timed_out:
                waits.append(max(0.0, deadline - now))
            readable, _, _ = select.select([master], [], [], min(waits))
            if not readable:
                continue
            try:
                data = os.read(master, 65536)
            except OSError as exc:
                if exc.errno == errno.EIO:  # every slave end closed: the output is complete
                    data = b""
                else:
                    raise
            if not data:
                proc.wait()
                break
            chunks.append(data)
            if ready is not None and ready_seconds is None:
                # the window overlaps earlier chunks: a marker split across reads still matches
                window = b"".join(chunks)[-READY_WINDOW:]
                if ready.search(clean(window)):
                    ready_seconds = round(time.monotonic() - start, 3)
                    if monitor is not None and exited_at is None:
                        monitor.before_stop("ready")
                    if stop_on_ready and kill_at is None and exited_at is None:
                        log.debug("ready after %s s: SIGTERM to process group %d",
                                  ready_seconds, pgid)  # fmt: skip
                        stopped_on_ready = True
                        _kill_group(pgid, signal.SIGTERM)
                        kill_at = time.monotonic() + grace_seconds
            if log_file is not None:
                log_file.write(data)
                log_file.flush()
            if echo:
                with contextlib.suppress(OSError):
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
        returncode = proc.wait()
        if (timed_out or stopped_on_ready) and group_alive(pgid):
            # the leader is gone, stragglers of its group are not
            _kill_group(pgid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            _kill_group(pgid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    duration = time.monotonic() - start
    return CaptureResult(
        argv=tuple(args),
        exit_status=returncode if returncode >= 0 else None,
        signal=-returncode if returncode < 0 else None,
        duration_seconds=round(duration, 3),
        timed_out=timed_out,
        output=b"".join(chunks),
        ready_seconds=ready_seconds,
        stopped_on_ready=stopped_on_ready,
    )
