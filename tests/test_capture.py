"""PTY capture: output, exit status, signals, the timeout that ends a process group."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from fexstack.errors import RunError
from runner import capture
from tests.test_muvm import FAKE_MUVM, fake_env


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_captures_output_and_exit_status(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        result = capture.run_pty(
            ["/bin/sh", "-c", "echo out; echo err >&2; [ -t 1 ] && echo tty; exit 5"],
            log_file=fh, echo=False,
        )  # fmt: skip
    assert result.exit_status == 5 and result.signal is None and not result.timed_out
    assert result.text.splitlines() == ["out", "err", "tty"]
    assert log.read_bytes() == result.output
    assert b"\r\n" in result.output  # raw PTY bytes are kept in the log


def test_signal_is_reported() -> None:
    result = capture.run_pty(["/bin/sh", "-c", "kill -TERM $$"], echo=False)
    assert result.exit_status is None and result.signal == signal.SIGTERM


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = f"{60 + random.randint(1, 10**6) / 10**7:.7f}"  # a unique `sleep` argument
    env = fake_env(tmp_path)
    start = time.monotonic()
    result = capture.run_pty(
        [str(FAKE_MUVM), "--", "/bin/sh", "-c", f"sleep {marker}; echo never"],
        env=env, timeout_seconds=1, echo=False, grace_seconds=2,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert result.timed_out
    assert elapsed < 10
    assert "never" not in result.text
    time.sleep(0.2)
    assert processes_with(marker) == [], "the guest's sleep outlived the timeout"


def test_timeout_escalates_to_sigkill(tmp_path: Path) -> None:
    marker = f"{60 + random.randint(1, 10**6) / 10**7:.7f}"
    script = f"trap '' TERM; sleep {marker} & wait; wait"
    start = time.monotonic()
    result = capture.run_pty(
        ["/bin/sh", "-c", script], timeout_seconds=0.5, grace_seconds=0.5, echo=False
    )
    assert result.timed_out
    assert time.monotonic() - start < 5
    time.sleep(0.2)
    assert processes_with(marker) == []


def test_clean_text() -> None:
    raw = b"\x1b[1;31mred\x1b[0m\r\nprogress 10%\rprogress 100%\r\nend"
    assert capture.clean(raw) == "red\nprogress 100%\nend"


def test_missing_program_is_a_run_error(tmp_path: Path) -> None:
    open_fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RunError, match="cannot start"):
        capture.run_pty([str(tmp_path / "nope")], echo=False)
    assert len(os.listdir("/proc/self/fd")) == open_fds  # both PTY ends closed
