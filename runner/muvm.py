"""muvm's command line, and what its exit status and output say about the guest.

The grammar is muvm's own (bpaf, ``crates/muvm/src/cli_options.rs``): ``--emu=fex``,
``-f PATH`` once per image (the base first, then overlays in order: the LAST wins on a
collision), ``--gpu-mode drm|venus|software``, ``-e KEY=VALUE``, then ``--`` so that
nothing after it is taken for a muvm option, then COMMAND and its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fexstack.errors import RunError
from overlays.stack import GPU_MODES
from runner.evidence import Outcome
from runner.profile import Profile

MAX_IMAGES = 26  # more misorder in the guest (vdaa sorts before vdb)

# Variables muvm forwards to the guest on its own (besides -e).
FORWARDED_ENV = (
    "LANG",
    "LD_LIBRARY_PATH",
    "LIBGL_DRIVERS_PATH",
    "MESA_LOADER_DRIVER_OVERRIDE",
    "PATH",
    "RUST_LOG",
    "XMODIFIERS",
)
FORWARDED_ENV_PREFIXES = ("LC_",)

NOISE_LINES = ("Failed to set the new pressure in the guest",)
VM_CREATE_FAILED = "Error: Failed to create the microVM"
ROOTFS_MOUNT_FAILED = "Failed to mount FEX rootfs, carrying on without."

_EXITED = re.compile(r'^"(?P<cmd>.*)" process exited with status code: (?P<code>-?\d+)\s*$')
_SIGNALED = re.compile(r'^"(?P<cmd>.*)" process terminated by signal: (?P<sig>\d+)\s*$')
_EXEC_FAILED = re.compile(r"^Failed to execute (?P<what>.*) as child process: (?P<err>.*)$")


def muvm_argv(
    profile: Profile, command: Sequence[str], *, env: Mapping[str, str] | None = None
) -> list[str]:
    """The exact muvm invocation for ``command`` under ``profile``.

    ``env`` adds ``-e`` entries after the profile's own (sorted by key).
    """
    if profile.muvm is None:
        raise RunError(
            "muvm is not installed (not on PATH, FEXSTACK_MUVM unset)",
            "install it (dnf install muvm) or point FEXSTACK_MUVM at the binary",
        )
    if not command:
        raise RunError("muvm needs a command to run in the guest", None)
    if profile.gpu_mode not in GPU_MODES:
        raise RunError(
            f"gpu mode {profile.gpu_mode!r} is not one of {', '.join(GPU_MODES)}",
            "pass --gpu-mode drm, venus or software",
        )
    images = profile.images()
    if len(images) > MAX_IMAGES:
        raise RunError(
            f"{len(images)} images for muvm, at most {MAX_IMAGES} keep their order in the guest",
            "merge deps overlays (one stack can include others) to stay within 26 images",
        )
    for image in images:
        if not image.is_absolute():
            raise RunError(
                f"image path {image} is not absolute (the guest starts in the user's home)",
                "pass absolute paths",
            )
    if not Path(command[0]).is_absolute():
        raise RunError(
            f"guest command {command[0]!r} is not an absolute path",
            "muvm starts the command in the user's home, not the current directory",
        )
    argv = [str(profile.muvm), "--emu=fex"]
    for image in images:
        argv += ["-f", str(image)]
    argv += ["--gpu-mode", profile.gpu_mode]
    merged = dict(profile.env)
    merged.update(env or {})
    for key, value in sorted(merged.items()):
        if not key or "=" in key:
            raise RunError(f"environment key {key!r} is not valid", "fix [app].env")
        argv += ["-e", f"{key}={value}"]
    argv.append("--")
    argv += list(command)
    return argv


@dataclass(frozen=True)
class GuestStatus:
    """What the output and exit status say about the guest command."""

    outcome: Outcome
    reason: str
    guest_status_code: int | None
    guest_signal: int | None


def meaningful_lines(text: str) -> list[str]:
    """The output's lines without muvm's known host noise."""
    return [line for line in text.splitlines() if line.strip() not in NOISE_LINES]


def interpret(
    exit_status: int | None, signal: int | None, text: str, *, timed_out: bool = False
) -> GuestStatus:
    """Read the guest's fate from muvm's exit status and its status lines in ``text``."""
    lines = [line.strip() for line in meaningful_lines(text)]
    code: int | None = None
    guest_signal: int | None = None
    exec_error: str | None = None
    for line in lines:
        if line == VM_CREATE_FAILED or line.startswith(VM_CREATE_FAILED):
            return GuestStatus(
                Outcome.INFRA,
                "muvm could not create the microVM (an -f image is missing or unusable)",
                None,
                None,
            )
        if line == ROOTFS_MOUNT_FAILED:
            return GuestStatus(
                Outcome.INFRA,
                "the guest could not mount the FEX rootfs images and ran without them",
                None,
                None,
            )
        if m := _EXITED.match(line):
            code = int(m["code"])
        elif m := _SIGNALED.match(line):
            guest_signal = int(m["sig"])
        elif m := _EXEC_FAILED.match(line):
            exec_error = line
    if timed_out:
        return GuestStatus(
            Outcome.FAIL, "timed out: the run was ended by --timeout-seconds", code, guest_signal
        )
    if exec_error is not None:
        return GuestStatus(
            Outcome.FAIL, f"the guest could not start the command: {exec_error}", code, guest_signal
        )
    if signal is not None:
        return GuestStatus(Outcome.FAIL, f"muvm was killed by signal {signal}", code, guest_signal)
    if guest_signal is not None:
        return GuestStatus(
            Outcome.FAIL, f"the guest command was terminated by signal {guest_signal}", code,
            guest_signal,
        )
    if code is None and exit_status not in (0, None):
        muvm_errors = [line for line in lines if line.startswith("Error: ")]
        if muvm_errors:
            return GuestStatus(
                Outcome.INFRA, f"muvm failed before the guest ran: {muvm_errors[-1]}", None, None
            )
    if code is None:
        code = exit_status
    if exit_status == 0 and code == 0:
        return GuestStatus(Outcome.PASS, "the guest command exited with status 0", 0, None)
    return GuestStatus(Outcome.FAIL, f"the guest command exited with status {code}", code, None)
