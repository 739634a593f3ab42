"""The native backend: the same layers, mounted with overlayfs, the app run in a chroot.

On an x86_64 host there is no FEX to run, so this backend builds what the muvm guest
builds: each image mounted read-only (a directory, as tests use for the base, is taken as
it is), then one overlayfs with the list reversed as lowerdir, so the LAST layer wins like
the last ``-f`` does in muvm. All of it happens in a private mount namespace
(``unshare -m``, every mount made private before anything is mounted), so the mounts
vanish with the run and none of them propagates back to the host. Like the muvm
guest, the app sees the host's /proc, /dev, /sys and /tmp, its AppDir and $HOME at the
same absolute paths, and a muvm-like environment; it starts in $HOME.

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
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from fexstack import atomic, command
from fexstack.errors import FexstackError, RunError
from fexstack.paths import PROJECT_ROOT
from runner import capture
from runner.muvm import FORWARDED_ENV, FORWARDED_ENV_PREFIXES, GuestStatus
from runner.profile import Profile

SETUP_FAILED = 125
EXEC_FAILED = 127
SETUP_PREFIX = "fexstack-native: setup failed:"
EXEC_PREFIX = "fexstack-native: failed to execute"
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
    for key in ("DISPLAY", "XDG_RUNTIME_DIR"):
        if host.get(key):
            env[key] = host[key]  # no X11 bridge here: the host's own display
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
) -> dict[str, Any]:
    """What the namespace side needs: layers (muvm order), binds, argv, env, cwd."""
    host = dict(os.environ if host_env is None else host_env)
    layers = [str(p) for p in profile.images()]
    for layer in profile.images():
        _check_layer_path(layer)
    guest_env = guest_environment({**profile.env, **(env or {})}, host)
    home = host.get("HOME")
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
    }


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
) -> capture.CaptureResult:
    """Run ``command_argv`` on ``profile``'s layers (see the module docstring).

    ``ready``: end the run once this pattern appears in the output (see
    :func:`runner.capture.run_pty`).
    """
    if not command_argv or not command_argv[0].startswith("/"):
        raise RunError(
            f"the command to run must be an absolute path, not {command_argv[:1]}",
            "pass the entrypoint's absolute path",
        )
    workdir = Path(tempfile.mkdtemp(prefix="fexstack-native-"))
    try:
        spec = build_spec(profile, command_argv, workdir=workdir, binds=binds, env=env)
        spec_path = workdir / "spec.json"
        atomic.write_text(spec_path, json.dumps(spec, sort_keys=True, indent=2))
        argv = [
            "unshare", "-m", "--propagation", "unchanged", "--",
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
        )
    finally:
        # the namespace is gone with the run: only empty mount points remain
        with contextlib.suppress(OSError):
            atomic.remove(workdir)


def interpret(
    exit_status: int | None, signal: int | None, text: str, *, timed_out: bool = False
) -> GuestStatus:
    """Read the app's fate from the native run's exit status and output."""
    lines = [line.strip() for line in text.splitlines()]
    for line in lines:
        if line.startswith(SETUP_PREFIX):
            return GuestStatus("INFRA", line.removeprefix("fexstack-native: "), None, None)
    if timed_out:
        return GuestStatus("FAIL", "timed out: the run was ended by --timeout-seconds",
                           exit_status, signal)
    for line in lines:
        if m := _EXEC_FAILED_RE.match(line):
            return GuestStatus("FAIL", f"the app could not be started: {m.group(1)}",
                               exit_status, None)
    if signal is not None:
        return GuestStatus("FAIL", f"the app was terminated by signal {signal}", None, signal)
    if exit_status == 0:
        return GuestStatus("PASS", "the app exited with status 0", 0, None)
    return GuestStatus("FAIL", f"the app exited with status {exit_status}", exit_status, None)


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
    except FexstackError:
        pass
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
    for host_dir in HOST_DIRS:
        command.run(["mount", "--rbind", host_dir, f"{root}{host_dir}"])
    command.run(["mount", "--bind", "/tmp", f"{root}/tmp"])
    for bind in spec["binds"]:
        command.run(["mount", "--bind", bind, f"{root}{bind}"])
    return root


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
    print(f"fexstack-native: chroot {root}: {shlex.join(app_argv)}", flush=True)
    try:
        os.chroot(root)
        os.chdir(spec["cwd"] if os.path.isdir(spec["cwd"]) else "/")
        os.execve(app_argv[0], app_argv, env)
    except OSError as exc:
        print(f'{EXEC_PREFIX} "{app_argv[0]}": {exc.strerror or exc}', flush=True)
        return EXEC_FAILED
    return EXEC_FAILED  # not reached


if __name__ == "__main__":
    sys.exit(main())
