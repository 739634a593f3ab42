"""The identity the native backend runs an app as, and the privilege drop that gets there.

The native backend needs root to mount the layers, but the app under test (a download from
the internet) never gets root: after the mounts and the chroot, :func:`drop` clears the
supplementary groups, drops every capability from the bounding set, switches to the
chosen uid/gid, clears the inheritable and ambient sets and sets no_new_privs, then checks
``/proc/self/status`` to prove it. The app runs as (:func:`resolve`):

1. root, only when asked (``--privileged`` or ``[app] privileged = true``), with a warning;
2. the invoking user when known: ``SUDO_UID``/``SUDO_GID``, else the owner of the run's
   output folder when that is not root;
3. else the profile's ``run_as`` uid/gid (default 65534:65534, "nobody").

It is done in-process (prctl/capset through libc) rather than by exec'ing util-linux
``setpriv``: after the chroot only the app's own layers are visible, and a Fedora RootFS
carries no setpriv.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack.errors import RunError
from runner.profile import DEFAULT_RUN_AS

CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
PRIVILEGED_WARNING = (
    "the app ran as root (privileged): it could write the host's disks through /dev, "
    "kernel settings through /proc/sys and every file of the shared folders"
)

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_STATUS_RE = re.compile(r"^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):\s*(.*)$")


@dataclass(frozen=True)
class Identity:
    """Who the app runs as, and why (``source``: privileged, sudo, output-owner, run-as,
    current)."""

    uid: int
    gid: int
    source: str

    @property
    def privileged(self) -> bool:
        return self.uid == 0

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "source": self.source}


def _id_from(env: Mapping[str, str], key: str) -> int | None:
    text = env.get(key, "")
    return int(text) if text.isdigit() else None


def resolve(
    env: Mapping[str, str],
    output_dir: Path | None = None,
    *,
    run_as: tuple[int, int] = DEFAULT_RUN_AS,
    privileged: bool = False,
    euid: int | None = None,
) -> Identity:
    """The identity of a run (see the module docstring). ``euid``: fexstack's own."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return Identity(euid, os.getegid(), "current")  # nothing to drop to
    if privileged:
        return Identity(0, 0, "privileged")
    uid, gid = _id_from(env, "SUDO_UID"), _id_from(env, "SUDO_GID")
    if uid is not None and uid != 0:
        return Identity(uid, gid if gid is not None else uid, "sudo")
    if output_dir is not None:
        try:
            st = Path(output_dir).stat()
        except OSError:
            st = None
        if st is not None and st.st_uid != 0:
            return Identity(st.st_uid, st.st_gid, "output-owner")
    if run_as[0] == 0:
        raise RunError(
            "run_as 0 would run the app as root",
            "use --privileged (or [app] privileged = true) to run as root on purpose",
        )
    return Identity(run_as[0], run_as[1], "run-as")


def user_home(uid: int) -> Path | None:
    """The home directory of ``uid`` from the host's passwd, when it exists and is its own."""
    try:
        home = Path(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return None
    try:
        st = home.stat()
    except OSError:
        return None
    return home if home.is_dir() and st.st_uid == uid and str(home) != "/" else None


def searchable(st: os.stat_result, uid: int, gid: int) -> bool:
    """Whether a directory with ``st`` can be traversed by uid/gid (no supplementary
    groups)."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def read_status(text: str | None = None) -> dict[str, str]:
    """The identity fields of ``/proc/self/status``."""
    if text is None:
        text = Path("/proc/self/status").read_text()
    out = {}
    for line in text.splitlines():
        if m := _STATUS_RE.match(line):
            out[m.group(1)] = m.group(2).strip()
    return out


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(ok: bool, what: str) -> None:
    if not ok:
        err = ctypes.get_errno()
        raise RunError(
            f"cannot drop privileges: {what}: {os.strerror(err)}",
            "the native backend needs root with CAP_SETUID, CAP_SETGID and CAP_SETPCAP",
        )


def drop(identity: Identity) -> dict[str, str]:
    """Become ``identity`` with no capabilities and no_new_privs; return the proof
    (:func:`read_status` afterwards). Irreversible: call it right before exec."""
    if identity.privileged:
        return read_status()
    libc = ctypes.CDLL(None, use_errno=True)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    os.setgroups([])
    for cap in range(last_cap + 1):
        _check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0, f"bounding set cap {cap}")
    _check(
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == 0, "ambient set"
    )
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero: no effective, permitted or inheritable capability
    _check(libc.capset(ctypes.byref(header), data) == 0, "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs")
    status = read_status()
    leftover = [f for f in CAP_FIELDS if int(status.get(f, "1"), 16) != 0]
    uids = status.get("Uid", "").split()
    if leftover or status.get("NoNewPrivs") != "1" or set(uids) != {str(identity.uid)}:
        raise RunError(
            f"privileges were not dropped: {status}",
            "report this: the kernel refused part of the privilege drop",
        )
    return status
