"""The run profile: everything a run needs, expanded from a stack's ``[app]`` and defaults.

A :class:`Profile` is what ``inputs.json`` records verbatim: the layer images in muvm's
order (base, gpu overlays, compat, deps overlays in the stack's order), the muvm binary,
the GPU mode, the environment, the arguments, the timeout, the sanitize steps and the
backend. Precedence: an explicit argument (the command line), then ``[app]``, then the
defaults below (the system FEX RootFS and Mesa overlays when they are installed).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fexstack import command
from fexstack.errors import ConfigError
from overlays.stack import GPU_MODES, App, Base, Stack

DEFAULT_RUN_AS = (65534, 65534)  # nobody:nogroup
SYSTEM_ROOTFS = Path("/usr/share/fex-emu/RootFS/default.erofs")
SYSTEM_GPU_OVERLAYS = (Path("/usr/share/fex-emu/overlays/mesa-x86_64.erofs"),)
# Why a gpu overlay the base names may be absent (FACTS.md, 2026 facts): since Fedora 43 the
# platform metapackage obsoletes mesa-fex-emu-overlay-* and stock Mesa carries the asahi
# driver for x86_64; muvm skips its own missing default overlays the same way.
GPU_ABSENT_REASON = (
    "not installed; since Fedora 43 mesa-fex-emu-overlay-* is obsoleted (stock Mesa carries "
    "the asahi driver for x86_64), and muvm skips its missing default overlays too"
)
DEFAULT_GPU_MODE = "drm"
BACKENDS = ("muvm", "native")
MUVM_ENV = "FEXSTACK_MUVM"


@dataclass(frozen=True)
class DepsLayer:
    """A deps overlay of the stack: its name, image and manifest."""

    name: str
    image: Path
    manifest: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": str(self.image),
            "manifest": str(self.manifest) if self.manifest is not None else None,
        }


@dataclass(frozen=True)
class Layer:
    """One image in muvm's ``-f`` order, with its role (base, gpu, compat, deps)."""

    role: str
    name: str
    path: Path
    manifest: Path | None = None


@dataclass(frozen=True)
class Profile:
    """The expanded run profile (see the module docstring)."""

    app: str
    appimage: Path | None
    base: Path
    gpu: tuple[Path, ...]
    compat: Path | None
    deps: tuple[DepsLayer, ...]
    muvm: Path | None
    gpu_mode: str
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    args: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    sanitize: tuple[str, ...] = ()
    backend: str = "native"
    gpu_absent: tuple[Path, ...] = ()  # gpu overlays of the base (or defaults) not installed
    # a plugin folder the app loads ELF files from (``[app].plugin_dirs``), for appcheck
    plugin_dirs: tuple[Path, ...] = ()
    # native backend: run the app as root (never the default); the uid/gid it runs as
    # when no invoking user is known; host paths shown beneath the layers (FEX's rule)
    privileged: bool = False
    run_as: tuple[int, int] = DEFAULT_RUN_AS
    host_provides: tuple[str, ...] = ()

    def layers(self) -> tuple[Layer, ...]:
        """The images in muvm's ``-f`` order: the LAST one wins on a path collision."""
        out = [Layer("base", "base", self.base)]
        out += [Layer("gpu", p.stem, p) for p in self.gpu]
        if self.compat is not None:
            out.append(Layer("compat", "compat", self.compat))
        out += [Layer("deps", d.name, d.image, d.manifest) for d in self.deps]
        return tuple(out)

    def images(self) -> tuple[Path, ...]:
        return tuple(layer.path for layer in self.layers())

    def with_overrides(
        self,
        *,
        gpu_mode: str | None = None,
        timeout_seconds: float | None = None,
        backend: str | None = None,
        privileged: bool | None = None,
    ) -> Profile:
        """This profile with command-line overrides applied (None keeps the value)."""
        out = self
        if privileged is not None:
            out = replace(out, privileged=privileged)
        if gpu_mode is not None:
            out = replace(out, gpu_mode=_check_gpu_mode(gpu_mode))
        if timeout_seconds is not None:
            out = replace(out, timeout_seconds=_check_timeout(timeout_seconds))
        if backend is not None:
            out = replace(out, backend=_check_backend(backend))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "appimage": str(self.appimage) if self.appimage is not None else None,
            "base": str(self.base),
            "gpu": [str(p) for p in self.gpu],
            "compat": str(self.compat) if self.compat is not None else None,
            "deps": [d.to_json() for d in self.deps],
            "muvm": str(self.muvm) if self.muvm is not None else None,
            "gpu_mode": self.gpu_mode,
            "env": dict(sorted(self.env.items())),
            "args": list(self.args),
            "timeout_seconds": self.timeout_seconds,
            "sanitize": list(self.sanitize),
            "backend": self.backend,
            "gpu_absent": [str(p) for p in self.gpu_absent],
            "plugin_dirs": [str(p) for p in self.plugin_dirs],
            "privileged": self.privileged,
            "run_as": list(self.run_as),
            "host_provides": list(self.host_provides),
        }


def default_backend(machine: str | None = None) -> str:
    """``muvm`` on aarch64 hosts (FEX runs there), ``native`` on x86_64 (and elsewhere)."""
    machine = machine or platform.machine()
    return "muvm" if machine in ("aarch64", "arm64") else "native"


def find_muvm(explicit: Path | str | None = None) -> Path | None:
    """The muvm binary: ``explicit``, else ``$FEXSTACK_MUVM``, else ``muvm`` on PATH."""
    chosen = explicit if explicit is not None else os.environ.get(MUVM_ENV) or None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if path.is_absolute() or "/" in str(chosen):
            return path.absolute()
        found = command.which(str(chosen))
        return found if found is not None else path
    return command.which("muvm")


def _check_gpu_mode(mode: str) -> str:
    if mode not in GPU_MODES:
        raise ConfigError(
            f"gpu mode {mode!r} is not one of {', '.join(GPU_MODES)}",
            "pass --gpu-mode drm, venus or software",
        )
    return mode


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(
            f"backend {backend!r} is not one of {', '.join(BACKENDS)}",
            "use muvm (FEX in a microVM, aarch64 hosts) or native (overlayfs + chroot, x86_64)",
        )
    return backend


def _check_timeout(seconds: float) -> float:
    if seconds <= 0:
        raise ConfigError(
            f"timeout of {seconds} seconds is not positive", "pass --timeout-seconds N, N > 0"
        )
    return seconds


EXECSTACK_TUNABLE = "glibc.rtld.execstack=2"


def with_execstack(tunables: str) -> str:
    """``GLIBC_TUNABLES`` with ``glibc.rtld.execstack=2`` (glibc 2.41+ then dlopens
    libraries that ask for an executable stack), other tunables kept."""
    kept = [t for t in tunables.split(":") if t and not t.startswith("glibc.rtld.execstack=")]
    return ":".join([*kept, EXECSTACK_TUNABLE])


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def build_profile(
    app_name: str,
    *,
    app: App | None = None,
    base: Base | Path | None = None,
    gpu: Sequence[Path] | None = None,
    compat: Path | None = None,
    deps: Sequence[DepsLayer | tuple[str, Path, Path | None]] = (),
    muvm: Path | str | None = None,
    gpu_mode: str | None = None,
    timeout_seconds: float | None = None,
    backend: str | None = None,
    appimage: Path | None = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] | None = None,
    system_rootfs: Path = SYSTEM_ROOTFS,
    system_gpu: Sequence[Path] = SYSTEM_GPU_OVERLAYS,
) -> Profile:
    """Expand a profile. ``deps`` are (name, image, manifest) in the stack's order.

    The base is ``base`` (a :class:`Base` or a path), else ``system_rootfs``; the gpu
    overlays are ``gpu``, else the base's overlays, else those of ``system_gpu`` that
    exist. A gpu overlay of the base or of the defaults that does not exist is skipped and
    listed in ``gpu_absent`` (preflight warns about it); an explicit ``gpu`` path must exist.
    Every path is made absolute (the muvm guest starts in the user's home).
    """
    app = app or App()
    base_path: Path
    base_overlays: tuple[Path, ...] = ()
    host_provides: tuple[str, ...] = ()
    if isinstance(base, Base):
        base_path = base.image
        base_overlays = tuple(base.overlays)
        host_provides = tuple(base.host_provides)
    elif base is not None:
        base_path = base
    else:
        base_path = system_rootfs
    absent: tuple[Path, ...] = ()
    if gpu is not None:
        gpu_paths = tuple(gpu)
    else:
        wanted = base_overlays or tuple(system_gpu)
        gpu_paths = tuple(p for p in wanted if os.path.lexists(p))
        absent = tuple(p for p in wanted if not os.path.lexists(p))
    layers = tuple(d if isinstance(d, DepsLayer) else DepsLayer(*d) for d in deps)
    layers = tuple(
        DepsLayer(
            d.name, _absolute(d.image), _absolute(d.manifest) if d.manifest is not None else None
        )
        for d in layers
    )
    merged_env = dict(app.env)
    merged_env.update(env or {})
    if app.allow_execstack:  # the user's [app] key, which appcheck's report recommends
        merged_env["GLIBC_TUNABLES"] = with_execstack(merged_env.get("GLIBC_TUNABLES", ""))
    chosen_appimage = appimage if appimage is not None else app.appimage
    chosen_timeout = timeout_seconds if timeout_seconds is not None else app.timeout_seconds
    return Profile(
        app=app_name,
        appimage=_absolute(chosen_appimage) if chosen_appimage is not None else None,
        base=_absolute(base_path),
        gpu=tuple(_absolute(p) for p in gpu_paths),
        compat=_absolute(compat) if compat is not None else None,
        deps=layers,
        muvm=find_muvm(muvm),
        gpu_mode=_check_gpu_mode(gpu_mode or app.gpu_mode or DEFAULT_GPU_MODE),
        env=MappingProxyType(dict(sorted(merged_env.items()))),
        args=tuple(args) if args is not None else tuple(app.args),
        timeout_seconds=_check_timeout(chosen_timeout) if chosen_timeout is not None else None,
        sanitize=tuple(app.sanitize),
        backend=_check_backend(backend or default_backend()),
        gpu_absent=tuple(_absolute(p) for p in absent),
        plugin_dirs=tuple(_absolute(p) for p in app.plugin_dirs),
        privileged=app.privileged,
        run_as=app.run_as or DEFAULT_RUN_AS,
        host_provides=host_provides,
    )


def from_stack(
    stack: Stack,
    *,
    deps: Sequence[DepsLayer | tuple[str, Path, Path | None]] = (),
    compat: Path | None = None,
    **overrides: Any,
) -> Profile:
    """The profile of ``stack``'s ``[app]`` on its base (see :func:`build_profile`)."""
    return build_profile(
        stack.name, app=stack.app, base=stack.base, deps=deps, compat=compat, **overrides
    )
