"""How to run an app: one record shared by every way of running one.

:func:`runner.launch.run_app`, :func:`runner.ab.run_ab`, :func:`runner.bench.run_bench`
and :func:`runner.probe.run_probe` take a :class:`~runner.profile.Profile` (what runs:
layers, AppImage, environment) and a :class:`RunOptions` (how: where the evidence goes,
overrides from the command line, what to launch instead of the AppImage, how to watch
it). The values are checked when the record is made, so a bad ``--timeout-seconds``,
``--gpu-mode``, ``--backend`` or ``--ready`` is refused before anything starts; a
caller that changes one field uses :func:`dataclasses.replace`, which checks again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fexstack.errors import ConfigError
from overlays.stack import GPU_MODES
from runner.profile import BACKENDS, Profile


@dataclass(frozen=True)
class AppcheckResult:
    """What the appcheck hook found in an extracted AppDir."""

    blocking: bool
    summary: str
    findings: tuple[str, ...] = ()
    report: Mapping[str, Any] | None = None  # the full report, written as appcheck.json


Appcheck = Callable[[Path], AppcheckResult]


@dataclass(frozen=True)
class RunOptions:
    """How to run (see the module docstring); every field has a default.

    ``out_dir``: the evidence goes exactly there (else a new ``<evidence_root>/<app>/<UTC
    time>/``). ``timeout_seconds``, ``gpu_mode``, ``backend`` and ``privileged`` override
    the profile's (None, False: keep them). ``force`` runs despite blocking ``appcheck``
    findings. ``command`` runs that argv instead of the AppImage's entrypoint (probes,
    tests); ``binds`` are host paths the native backend shows at the same place (the
    AppDir always is one). ``private_runtime``: when a muvm VM is already running, give
    the run its own XDG_RUNTIME_DIR instead of refusing; ``fresh_runtime``: always do
    (a fresh VM boots: cold starts). ``ready``: a regular expression; once it appears in
    the output the launch phase ends, the app is stopped and the run is PASS.
    ``syscall_trace``: on the native backend, strace the run (runner/trace.py). ``echo``
    copies the app's output to the terminal (None: when it is one); ``stream`` gets the
    summary lines (default: standard output).
    """

    out_dir: Path | None = None
    evidence_root: Path | None = None
    timeout_seconds: float | None = None
    gpu_mode: str | None = None
    backend: str | None = None
    privileged: bool = False
    force: bool = False
    appcheck: Appcheck | None = None
    command: tuple[str, ...] | None = None
    binds: tuple[Path, ...] = ()
    private_runtime: bool = True
    fresh_runtime: bool = False
    ready: str | None = None
    syscall_trace: bool = False
    echo: bool | None = None
    stream: TextIO | None = None

    def __post_init__(self) -> None:
        if self.timeout_seconds is not None and not self.timeout_seconds > 0:
            raise ConfigError(
                f"timeout of {self.timeout_seconds} seconds is not positive",
                "pass --timeout-seconds N with N > 0 (0 or nothing: the stack's or none)",
            )
        if self.gpu_mode is not None and self.gpu_mode not in GPU_MODES:
            raise ConfigError(
                f"gpu mode {self.gpu_mode!r} is not one of {', '.join(GPU_MODES)}",
                "pass --gpu-mode drm, venus or software",
            )
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(
                f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}",
                "use muvm (FEX in a microVM, aarch64 hosts) or native (overlayfs + chroot, "
                "x86_64)",
            )
        if self.command is not None:
            command = tuple(self.command)
            if not command or not all(isinstance(a, str) and a for a in command):
                raise ConfigError(
                    f"command {list(command)!r} is not a program and its arguments",
                    "pass a non-empty argv of non-empty strings, e.g. ['/bin/true']",
                )
            object.__setattr__(self, "command", command)  # a list given: kept as a tuple
        object.__setattr__(self, "binds", tuple(Path(b) for b in self.binds))
        self.ready_pattern()  # a bad --ready is refused now, not after preflight

    def ready_pattern(self) -> re.Pattern[str] | None:
        """``ready`` compiled (None when there is none)."""
        if not self.ready:
            return None
        try:
            return re.compile(self.ready)
        except re.error as exc:
            raise ConfigError(
                f"--ready {self.ready!r} is not a valid regular expression: {exc}",
                "pass a Python regular expression, e.g. --ready 'window shown'",
            ) from exc

    def apply(self, profile: Profile) -> Profile:
        """``profile`` with these options' overrides (gpu mode, timeout, backend, privileged)."""
        return profile.with_overrides(
            gpu_mode=self.gpu_mode, timeout_seconds=self.timeout_seconds,
            backend=self.backend, privileged=self.privileged or None,
        )  # fmt: skip

