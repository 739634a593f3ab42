"""./devroot waits, bounded and saying so, while another apt run holds apt's locks.

When mmdebstrap is missing, ./devroot installs it with apt-get before it builds the root.
These tests run ./devroot with an empty root cache, so it goes that way, with the real
apt-get: a wrapper on PATH only points apt's state (package lists, dpkg status, archives)
at a temp folder and records each call. The test holds the real locks there the way apt
does (fcntl locks on ``lists/lock``, ``lock-frontend`` and ``lock``). There are no
package sources, so ``apt-get update`` succeeds at once once it gets the lock and
``apt-get install mmdebstrap`` then fails (nothing to install from): what is measured is
how ./devroot waits for the lock, not the install.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
LOCKS = ("lists/lock", "dpkg/lock-frontend", "dpkg/lock")

pytestmark = [
    pytest.mark.skipif(
        shutil.which("mmdebstrap") is not None or shutil.which("apt-get") is None,
        reason="needs apt-get and no mmdebstrap (the toolchain root is such a place)",
    ),
    pytest.mark.usefixtures("privileged"),  # ./devroot refuses to build a root without root
]


def apt_state(where: Path) -> tuple[Path, Path]:
    """A private apt state folder and a PATH folder whose apt-get uses it and logs calls."""
    state = where / "apt"
    for sub in ("lists/partial", "dpkg", "cache/archives/partial", "etc/sources.list.d"):
        (state / sub).mkdir(parents=True)
    (state / "dpkg" / "status").touch()
    (state / "etc" / "sources.list").touch()
    bin_dir = where / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "apt-get"
    real = shutil.which("apt-get")
    wrapper.write_text(
        "#!/bin/sh\n"
        f'"{real}" -o Dir::State::Lists={state}/lists -o Dir::State::status={state}/dpkg/status'
        f" -o Dir::Cache={state}/cache -o Dir::Etc::SourceList={state}/etc/sources.list"
        f' -o Dir::Etc::SourceParts={state}/etc/sources.list.d "$@"\n'
        'rc=$?\n'
        f'echo "$rc $*" >> "{where}/calls.log"\n'
        'exit $rc\n'
    )
    wrapper.chmod(0o755)
    return state, bin_dir


@contextmanager
def holding(state: Path) -> Iterator[list[int]]:
    """Hold apt's locks in ``state`` (fcntl, as apt takes them) until the block ends or
    the yielded list's descriptors are closed."""
    fds = []
    for name in LOCKS:
        fd = os.open(state / name, os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        fds.append(fd)
    try:
        yield fds
    finally:
        for fd in fds:
            with suppress(OSError):  # closed already by the test
                os.close(fd)


def devroot(tmp_path: Path, bin_dir: Path, wait: int) -> subprocess.Popen[str]:
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
        "FEXSTACK_DEVROOT": "always",
        "FEXSTACK_DEVROOT_CACHE": str(tmp_path / "roots"),
        "FEXSTACK_DEVROOT_APT_LOCK_WAIT": str(wait),
        "FEXSTACK_DEVROOT_MIRROR": "http://127.0.0.1:9/debian",  # never reached
    }
    return subprocess.Popen(
        [str(CHECKOUT / "devroot"), "true"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_devroot_waits_for_the_apt_lock_then_goes_on(tmp_path: Path) -> None:
    state, bin_dir = apt_state(tmp_path)
    with holding(state) as fds:
        proc = devroot(tmp_path, bin_dir, wait=120)
        deadline = time.monotonic() + 60
        while not any(c.startswith("100 ") for c in calls(tmp_path)):
            assert time.monotonic() < deadline and proc.poll() is None, calls(tmp_path)
            time.sleep(0.1)
        for fd in fds:
            os.close(fd)
    out, _ = proc.communicate(timeout=120)
    log = calls(tmp_path)
    # update failed on the held lock, then ran again and succeeded once it was free.
    assert log[0] == "100 -o DPkg::Lock::Timeout=120 update -qq", log
    assert "0 -o DPkg::Lock::Timeout=120 update -qq" in log, log
    assert log[-1].endswith("-o DPkg::Lock::Timeout=120 install -y -qq mmdebstrap"), log
    assert "another apt run holds the package manager's lock; waiting for it (up to 120s)" in out
    assert out.count("waiting for it") == 1  # said once, not on every try
    assert "for over 120s" not in out
    # There is nothing to install from here: the install fails, with devroot's own error.
    assert proc.returncode == 125
    assert "devroot: error: could not install mmdebstrap" in out


def test_devroot_gives_up_after_the_bounded_wait(tmp_path: Path) -> None:
    state, bin_dir = apt_state(tmp_path)
    with holding(state):
        proc = devroot(tmp_path, bin_dir, wait=3)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 125, out
    assert "devroot: error: another apt run held the package manager's lock for over 3s" in out
    assert "devroot: hint: let it finish" in out
    assert "Could not get lock" in out  # apt's own message is shown too
    assert all(c.startswith("100 -o DPkg::Lock::Timeout=3 update") for c in calls(tmp_path))
    assert [p for p in (tmp_path / "roots").iterdir() if p.is_dir()] == []  # no root made


def test_devroot_refuses_a_bad_wait(tmp_path: Path) -> None:
    _, bin_dir = apt_state(tmp_path)
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "FEXSTACK_DEVROOT": "always",
        "FEXSTACK_DEVROOT_CACHE": str(tmp_path / "roots"),
        "FEXSTACK_DEVROOT_APT_LOCK_WAIT": "5m",
    }
    done = subprocess.run(
        [str(CHECKOUT / "devroot"), "true"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 125
    assert "FEXSTACK_DEVROOT_APT_LOCK_WAIT=5m is not a number of seconds" in done.stderr
