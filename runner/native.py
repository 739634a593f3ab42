"""The native backend: the same layers, mounted with overlayfs, the app run in a chroot.

On an x86_64 host there is no FEX to run, so this backend builds what the muvm guest
builds: each image mounted read-only (a directory, as tests use for the base, is taken as
it is), then one overlayfs with the list reversed as lowerdir, so the LAST layer wins like
the last ``-f`` does in muvm. All of it happens in a private mount namespace
(``unshare -m``, every mount made private before anything is mounted), so the mounts
vanish with the run and none of them propagates back to the host. Like the muvm
guest, the app sees the host's /proc, /dev, /sys and /tmp, its AppDir and $HOME at the
same absolute paths, the session's display, and a muvm-like environment; it starts in
$HOME. The overlay becomes the namespace's root with pivot_root (not chroot: the kernel
refuses user namespaces, hence bwrap, to a chrooted process). Host paths a base declares
in ``host_provides`` are shown beneath the layers, and only those (FEX's fallback).

The app never runs as root unless asked: right before exec the namespace side drops to
the identity :mod:`runner.identity` chose (no groups, no capabilities, no_new_privs) and
prints what it measured; the user gets its own HOME, a 0700 XDG_RUNTIME_DIR and a copy of
the X cookie (:func:`user_dirs`), and folders on the way to a bind that the user cannot
traverse are replaced by an empty path down to it (:func:`expose`).

The parent side (:func:`run`) writes a spec file and starts
``unshare ... python3 -m runner.native SPEC`` under the PTY of :mod:`runner.capture`; the
child side (:func:`main`) mounts, chroots and execs the app, so the app's exit status and
output are the run's. Setup problems print ``fexstack-native: setup failed: ...`` and exit
with :data:`SETUP_FAILED`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fexstack import atomic, command
from fexstack.errors import FexstackError, RunError, ToolError
from fexstack.paths import PROJECT_ROOT
from runner import capture, identity
from runner.evidence import Outcome
from runner.identity import Identity
from runner.muvm import FORWARDED_ENV, FORWARDED_ENV_PREFIXES, GuestStatus
from runner.profile import Profile

SETUP_FAILED = 125
EXEC_FAILED = 127
SETUP_PREFIX = "fexstack-native: setup failed:"
EXEC_PREFIX = "fexstack-native: failed to execute"
IDENTITY_PREFIX = "fexstack-native: identity "
FALLBACK_PREFIX = "fexstack-native: host-fallback "
FALLBACK_LISTED = 50  # files named per host path in the report (the count is complete)
# the session's display, passed through as it is (no X11 bridge here: the host's own display)
DISPLAY_ENV = ("DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR")
HOST_DIRS = ("/proc", "/dev", "/sys")  # recursive binds
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

_EXEC_FAILED_RE = re.compile(r"^fexstack-native: failed to execute (.*)$")


def guest_environment(
    profile_env: Mapping[str, str], host_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The app's environment, filtered the way muvm filters the guest's."""
    host = dict(os.environ if host_env is None else host_env)
    env = {
        k: v
        for k, v in host.items()
        if k in FORWARDED_ENV or any(k.startswith(p) for p in FORWARDED_ENV_PREFIXES)
    }
    env.setdefault("PATH", DEFAULT_PATH)
    for key in DISPLAY_ENV:
        if host.get(key):
            env[key] = host[key]
    env["HOME"] = host.get("HOME") or "/"
    env.update(profile_env)
    return env


def _check_layer_path(path: Path) -> None:
    if "," in str(path) or ":" in str(path):
        raise RunError(
            f"layer path {path} contains ',' or ':', which overlayfs options cannot hold",
            "move the image to a plain path",
        )


def build_spec(
    profile: Profile,
    command_argv: Sequence[str],
    *,
    workdir: Path,
    binds: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    host_env: Mapping[str, str] | None = None,
    user: UserDirs | None = None,
) -> dict[str, Any]:
    """What the namespace side needs: layers (muvm order), binds, argv, env, cwd, and
    the identity to drop to (``user``; None: the current one, with the host's HOME)."""
    host = dict(os.environ if host_env is None else host_env)
    layers = [str(p) for p in profile.images()]
    for layer in profile.images():
        _check_layer_path(layer)
    guest_env = guest_environment({**profile.env, **(env or {})}, host)
    home = host.get("HOME")
    if user is not None:
        home = str(user.home)
        guest_env.pop("WAYLAND_DISPLAY", None)
        guest_env.pop("XAUTHORITY", None)
        guest_env.update(user.env())
    extra = [str(Path(b).absolute()) for b in binds]
    if home and home != "/" and Path(home).is_dir() and home not in extra:
        extra.append(home)
    return {
        "layers": layers,
        "workdir": str(workdir),
        "binds": extra,
        "argv": list(command_argv),
        "env": guest_env,
        "cwd": home if home and Path(home).is_dir() else "/",
        "identity": user.identity.to_json() if user is not None else None,
        "host_provides": list(profile.host_provides),
    }


@dataclass(frozen=True)
class UserDirs:
    """The per-run folders of the unprivileged user: HOME, a private 0700 XDG_RUNTIME_DIR
    and a copy of the session's X authority, all under one 0700 folder in /tmp (which the
    app sees at the same path)."""

    identity: Identity
    folder: Path  # removed after the run
    home: Path
    runtime_dir: Path
    xauthority: Path | None
    wayland_display: str | None = None

    def env(self) -> dict[str, str]:
        out = {"HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.runtime_dir)}
        if self.xauthority is not None:
            out["XAUTHORITY"] = str(self.xauthority)
        if self.wayland_display is not None:
            out["WAYLAND_DISPLAY"] = self.wayland_display
        return out


def _own(path: Path, who: Identity, mode: int) -> None:
    os.chown(path, who.uid, who.gid)
    path.chmod(mode)


def user_dirs(who: Identity, host_env: Mapping[str, str]) -> UserDirs:
    """Make the HOME, XDG_RUNTIME_DIR and X authority ``who`` runs with (see
    :class:`UserDirs`). HOME is the user's own when the host's $HOME or passwd entry is
    theirs, else a private empty one; the runtime dir (and the Wayland socket in it) is
    the session's when it is theirs and 0700, else a private one."""
    folder = Path(tempfile.mkdtemp(prefix="fexstack-user-", dir="/tmp"))
    _own(folder, who, 0o700)
    home: Path | None = None
    home_env = host_env.get("HOME")
    if home_env and home_env != "/":
        with contextlib.suppress(OSError):
            if Path(home_env).is_dir() and Path(home_env).stat().st_uid == who.uid:
                home = Path(home_env)
    home = home or identity.user_home(who.uid)
    if home is None:
        home = folder / "home"
        home.mkdir()
        _own(home, who, 0o700)
    runtime: Path | None = None
    wayland = None
    session_runtime = host_env.get("XDG_RUNTIME_DIR")
    if session_runtime:
        with contextlib.suppress(OSError):
            st = Path(session_runtime).stat()
            if st.st_uid == who.uid and st.st_mode & 0o777 == 0o700:
                runtime = Path(session_runtime)
                wayland = host_env.get("WAYLAND_DISPLAY") or None
    if runtime is None:
        runtime = folder / "runtime"
        runtime.mkdir()
        _own(runtime, who, 0o700)
    xauth: Path | None = None
    source = host_env.get("XAUTHORITY")
    if source and Path(source).is_file():
        xauth = folder / "Xauthority"
        shutil.copyfile(source, xauth)
        _own(xauth, who, 0o600)
    return UserDirs(who, folder, home, runtime, xauth, wayland)


def run(
    profile: Profile,
    command_argv: Sequence[str],
    *,
    binds: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    log_file: BinaryIO | None = None,
    timeout_seconds: float | None = None,
    echo: bool | None = None,
    ready: re.Pattern[str] | None = None,
    user: Identity | None = None,
    monitor: capture.Monitor | None = None,
    wrap: Sequence[str] = (),
) -> capture.CaptureResult:
    """Run ``command_argv`` on ``profile``'s layers (see the module docstring).

    ``wrap``: an argv prefix for the namespace side, run by the caller outside the
    namespace (``strace -ff -o ...``: :func:`runner.trace.strace_argv`).

    ``ready``: end the run once this pattern appears in the output (see
    :func:`runner.capture.run_pty`). ``user``: the identity the app runs as (see
    :mod:`runner.identity`; None: resolved from the environment and the profile).
    ``monitor``: watches the display during the run (see :mod:`runner.display`).
    """
    if not command_argv or not command_argv[0].startswith("/"):
        raise RunError(
            f"the command to run must be an absolute path, not {command_argv[:1]}",
            "pass the entrypoint's absolute path",
        )
    workdir = Path(tempfile.mkdtemp(prefix="fexstack-native-"))
    dirs: UserDirs | None = None
    try:
        who = user if user is not None else identity.resolve(
            os.environ, run_as=profile.run_as, privileged=profile.privileged
        )
        if not who.privileged and os.geteuid() == 0:
            dirs = user_dirs(who, os.environ)
        spec = build_spec(
            profile, command_argv, workdir=workdir, binds=binds, env=env, user=dirs
        )
        if who.privileged:
            spec["identity"] = who.to_json()
        spec_path = workdir / "spec.json"
        atomic.write_text(spec_path, json.dumps(spec, sort_keys=True, indent=2))
        argv = [
            *wrap, "unshare", "-m", "--propagation", "unchanged", "--",
            sys.executable, "-m", "runner.native", str(spec_path),
        ]  # fmt: skip
        helper_env = dict(os.environ)
        helper_env["PYTHONPATH"] = os.pathsep.join(
            [str(PROJECT_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        )
        return capture.run_pty(
            argv,
            env=helper_env,
            timeout_seconds=timeout_seconds,
            log_file=log_file,
            echo=echo,
            ready=ready,
            stop_on_ready=ready is not None,
            monitor=monitor,
        )
    finally:
        # the namespace is gone with the run: only empty mount points remain
        with contextlib.suppress(OSError):
            atomic.remove(workdir)
        if dirs is not None:
            shutil.rmtree(dirs.folder, ignore_errors=True)


def identity_report(text: str) -> dict[str, Any] | None:
    """What the namespace side measured of the app's identity right before exec
    (uid, gid, groups, capability sets, no_new_privs), from the run's output."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(IDENTITY_PREFIX):
            with contextlib.suppress(ValueError):
                doc = json.loads(line.removeprefix(IDENTITY_PREFIX))
                if isinstance(doc, dict):
                    return doc
    return None


def interpret(
    exit_status: int | None, signal: int | None, text: str, *, timed_out: bool = False
) -> GuestStatus:
    """Read the app's fate from the native run's exit status and output."""
    lines = [line.strip() for line in text.splitlines()]
    for line in lines:
        if line.startswith(SETUP_PREFIX):
            return GuestStatus(Outcome.INFRA, line.removeprefix("fexstack-native: "), None, None)
    if timed_out:
        return GuestStatus(Outcome.FAIL, "timed out: the run was ended by --timeout-seconds",
                           exit_status, signal)
    for line in lines:
        if m := _EXEC_FAILED_RE.match(line):
            return GuestStatus(Outcome.FAIL, f"the app could not be started: {m.group(1)}",
                               exit_status, None)
    if signal is not None:
        return GuestStatus(Outcome.FAIL, f"the app was terminated by signal {signal}", None, signal)
    if exit_status == 0:
        return GuestStatus(Outcome.PASS, "the app exited with status 0", 0, None)
    return GuestStatus(Outcome.FAIL, f"the app exited with status {exit_status}", exit_status, None)


# --- the namespace side -------------------------------------------------------------


def _mount_layer(image: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    try:
        command.run(["mount", "-t", "erofs", "-o", "ro", image, target])
    except FexstackError:
        # kernels without file-backed EROFS mounts need a loop device
        command.run(["mount", "-t", "erofs", "-o", "ro,loop", image, target])


def _stub_tree(stub: Path, spec: Mapping[str, Any]) -> None:
    """Empty directories for every mount point, the lowest layer of the overlay."""
    for path in [*HOST_DIRS, "/tmp", *spec["binds"], spec["cwd"]]:
        (stub / str(path).lstrip("/")).mkdir(parents=True, exist_ok=True)
    for path in spec.get("host_provides", []):
        target = stub / str(path).lstrip("/")
        if Path(path).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif Path(path).exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts() -> list[tuple[str, list[str]]]:
    """(mount point, optional fields) of every mount this process can see."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        out.append((_unescape(fields[4]), fields[6:sep]))
    return out


def make_private(work: Path) -> None:
    """Stop mount propagation to and from the host before mounting anything.

    ``mount --make-rprivate /`` works where / is a mount point; inside a chroot it is
    not, so every visible mount is made private one by one, and the mount holding the
    work directory must then be private.
    """
    try:
        command.run(["mount", "--make-rprivate", "/"])
        return
    except ToolError as exc:
        if exc.returncode is None:  # no mount(8) at all: nothing below can work either
            raise
    mounts = _mounts()
    for point, _ in mounts:
        command.run(["mount", "--make-private", point])
    holder = max(
        (m for m in _mounts() if work == Path(m[0]) or Path(m[0]) in work.parents),
        key=lambda m: len(m[0]),
        default=None,
    )
    if holder is None or any(f.startswith("shared:") for f in holder[1]):
        raise RunError(
            f"cannot make the mount holding {work} private; mounts would reach the host",
            "set TMPDIR to a directory on a mount point of its own",
        )


def setup(spec: Mapping[str, Any]) -> Path:
    """Mount the layers, the overlay and the binds; return the new root."""
    work = Path(spec["workdir"])
    make_private(work)
    lowers: list[str] = []
    for i, layer in enumerate(spec["layers"]):
        path = Path(layer)
        if path.is_dir():
            lowers.append(str(path))
        elif path.is_file():
            target = work / f"layer{i}"
            _mount_layer(path, target)
            lowers.append(str(target))
        else:
            raise RunError(f"layer {path} does not exist", "build it, or fix the profile")
    stub = work / "stub"
    _stub_tree(stub, spec)
    root = work / "root"
    root.mkdir(exist_ok=True)
    # the last layer wins: it goes first in lowerdir; the stub sits below everything
    lowerdir = ":".join(_escape(p) for p in [*reversed(lowers), str(stub)])
    command.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", root])
    fallback = [host_fallback(root, lowers, p) for p in spec.get("host_provides", [])]
    if fallback:
        print(f"{FALLBACK_PREFIX}{json.dumps(fallback, sort_keys=True)}", flush=True)
    for host_dir in HOST_DIRS:
        command.run(["mount", "--rbind", host_dir, f"{root}{host_dir}"])
    command.run(["mount", "--bind", "/tmp", f"{root}/tmp"])
    who = spec.get("identity")
    for bind in sorted(spec["binds"], key=len):
        if who is not None and who["uid"] != 0:
            expose(root, bind, who["uid"], who["gid"])
        command.run(["mount", "--bind", bind, f"{root}{bind}"])
    return root


def _files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel = Path(dirpath).relative_to(folder)
        out += [str(rel / name) for name in sorted(filenames)]
    return out


def host_fallback(root: Path, lowers: Sequence[str], path: str) -> dict[str, Any]:
    """Show the host's ``path`` beneath the layers mounted at ``root`` (read-only), as
    FEX falls back to host files: all of it when no layer has it, the files the layers
    lack when both have the folder (a nested overlay), nothing when a layer has the file.
    Returns what the app takes from the host."""
    host = Path(path)
    if not host.exists():
        raise RunError(
            f"host_provides {path}: the host has no such path",
            "install the package that provides it on the host, or drop it from "
            "host_provides in the base",
        )
    target = Path(f"{root}{path}")
    in_layers = [layer for layer in lowers if os.path.lexists(f"{layer}{path}")]
    taken: list[str]
    if not in_layers:
        command.run(["mount", "--rbind", path, target])
        command.run(["mount", "-o", "remount,bind,ro", target])
        taken = _files(host) if host.is_dir() else [path]
        mode = "host"
    elif host.is_dir() and target.is_dir() and not target.is_symlink():
        taken = [f for f in _files(host) if not os.path.lexists(target / f)]
        if taken:
            lowerdir = f"{_escape(str(target))}:{_escape(path)}"
            command.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", target])
        mode = "merged"
    else:
        taken = []
        mode = "layers"
    if host.is_dir() and mode != "layers":
        taken = [str(host / f) for f in taken]
    return {"path": path, "mode": mode, "files": len(taken), "listed": taken[:FALLBACK_LISTED]}


def fallback_report(text: str) -> list[dict[str, Any]] | None:
    """What the namespace side reported of the host fallback (see :func:`host_fallback`)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(FALLBACK_PREFIX):
            with contextlib.suppress(ValueError):
                doc = json.loads(line.removeprefix(FALLBACK_PREFIX))
                if isinstance(doc, list):
                    return doc
    return None


def expose(root: Path, path: str, uid: int, gid: int) -> None:
    """Make ``path`` reachable inside ``root`` for uid/gid: the highest ancestor the user
    cannot traverse (root's 0700 home or cache, a 0550 /root of the base) is replaced, in
    this namespace only, by an empty tmpfs holding just the way down to ``path``. Nothing
    is lost to the user: what lay below such a folder was out of their reach anyway."""
    parts = Path(path).parts[1:-1]
    current = Path("/")
    for part in parts:
        current = current / part
        inside = Path(f"{root}{current}")
        try:
            st = inside.stat()
        except OSError:
            return
        if not identity.searchable(st, uid, gid):
            command.run(
                ["mount", "-t", "tmpfs", "-o", "mode=0755,size=64k", "fexstack-path", inside]
            )
            break
    Path(f"{root}{path}").mkdir(parents=True, exist_ok=True)


_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_MNT_DETACH = 2


def enter_root(root: Path) -> str:
    """Make ``root`` the root of this mount namespace (pivot_root, the old root detached),
    so that the app's own sandboxes can make user namespaces: the kernel refuses them to
    a chrooted process. Where pivot_root is refused (fexstack itself runs chrooted, as in
    an old toolchain root), chroot instead. Returns which one was done."""
    import ctypes
    import platform

    number = _SYS_PIVOT_ROOT.get(platform.machine())
    os.chdir(root)
    if number is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(number, b".", b".") == 0:
            # the old root now sits on top of the new one: detach it
            if libc.umount2(b".", _MNT_DETACH) != 0:
                err = ctypes.get_errno()
                raise RunError(f"cannot detach the old root: {os.strerror(err)}", None)
            os.chdir("/")
            return "pivot_root"
        err = ctypes.get_errno()
        print(f"fexstack-native: pivot_root refused ({os.strerror(err)}): chroot instead; "
              "user-namespace sandboxes (bwrap) will not start", flush=True)  # fmt: skip
    os.chroot(root)
    os.chdir("/")
    return "chroot"


def main(argv: Sequence[str] | None = None) -> int:
    """The namespace side: ``python3 -m runner.native SPEC`` (never returns on success)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python3 -m runner.native SPEC", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    try:
        root = setup(spec)
    except FexstackError as exc:
        print(f"{SETUP_PREFIX} {exc.message}", flush=True)
        if exc.hint:
            print(f"hint: {exc.hint}", flush=True)
        return SETUP_FAILED
    app_argv = spec["argv"]
    env = spec["env"]
    who = spec.get("identity")
    try:
        how = enter_root(root)
        print(f"fexstack-native: {how} {root}: {shlex.join(app_argv)}", flush=True)
        os.chdir(spec["cwd"] if os.path.isdir(spec["cwd"]) else "/")
        if who is not None:
            status = identity.drop(Identity(who["uid"], who["gid"], who["source"]))
            with contextlib.suppress(OSError):
                os.chdir(spec["cwd"])  # again, now as the user
            print(f"{IDENTITY_PREFIX}{json.dumps(_measured(who, status), sort_keys=True)}",
                  flush=True)  # fmt: skip
        os.execve(app_argv[0], app_argv, env)
    except FexstackError as exc:
        print(f"{SETUP_PREFIX} {exc.message}", flush=True)
        return SETUP_FAILED
    except OSError as exc:
        print(f'{EXEC_PREFIX} "{app_argv[0]}": {exc.strerror or exc}', flush=True)
        return EXEC_FAILED
    return EXEC_FAILED  # not reached


def _measured(who: Mapping[str, Any], status: Mapping[str, str]) -> dict[str, Any]:
    uid = status.get("Uid", "").split()
    gid = status.get("Gid", "").split()
    return {
        "uid": int(uid[0]) if uid else -1,
        "gid": int(gid[0]) if gid else -1,
        "groups": [int(g) for g in status.get("Groups", "").split()],
        "source": who["source"],
        "privileged": who["uid"] == 0,
        "capabilities": {f: status.get(f, "") for f in identity.CAP_FIELDS},
        "no_new_privs": status.get("NoNewPrivs") == "1",
    }


if __name__ == "__main__":
    sys.exit(main())
