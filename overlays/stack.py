"""The stack model: ``stacks/<name>.toml``, ``stacks/repos.toml``, ``stacks/bases/<id>.toml``.

TOML is parsed once, here, validated against JSON Schemas (``overlays/schemas``) and
turned into frozen dataclasses. Everything downstream takes these objects, never raw
TOML. Relative paths are relative to the file that names them; ``~`` expands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

CLASSES = ("deps", "base", "base-refresh")
GPU_MODES = ("drm", "venus", "software")
DEFAULT_LIB_DIRS = ("/lib64", "/usr/lib64")


def _frozen(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(sorted((mapping or {}).items())))


@dataclass(frozen=True)
class Repo:
    """One repository from ``stacks/repos.toml`` (``[repos.<id>]``)."""

    id: str
    baseurl: tuple[str, ...] = ()
    metalink: str | None = None
    gpgcheck: bool = False
    gpgkey: tuple[str, ...] = ()  # file:// URLs or absolute paths, already resolved

    def expand(self, release: str, arch: str) -> Repo:
        """This repo with ``$releasever`` and ``$basearch`` substituted."""

        def sub(text: str) -> str:
            return text.replace("$releasever", release).replace("$basearch", arch)

        return Repo(
            id=self.id,
            baseurl=tuple(sub(u) for u in self.baseurl),
            metalink=sub(self.metalink) if self.metalink else None,
            gpgcheck=self.gpgcheck,
            gpgkey=tuple(sub(k) for k in self.gpgkey),
        )


@dataclass(frozen=True)
class Base:
    """A base from ``stacks/bases/<id>.toml``: the RootFS the overlays sit on."""

    id: str
    path: Path  # the bases/<id>.toml file
    image: Path  # an EROFS image, or a directory holding the same tree
    packages: Path | None  # a kiwi .packages list, or the lock of a base stack
    overlays: tuple[Path, ...] = ()  # gpu overlay images, in order
    lib_dirs: tuple[str, ...] = DEFAULT_LIB_DIRS


@dataclass(frozen=True)
class Waiver:
    """A ``[[policy.waiver]]``: accounts for findings of one invariant on matching paths."""

    invariant: str
    reason: str
    path: str | None = None  # fnmatch glob on the absolute path in the overlay
    package: str | None = None  # package name


@dataclass(frozen=True)
class ElfAllowance:
    """A ``[[policy.allow_elf]]``: non-load-bearing ELF (eBPF, firmware), accounted."""

    path: str  # fnmatch glob
    reason: str


@dataclass(frozen=True)
class App:
    """``[app]``: how ``doit run:<name>`` launches the AppImage."""

    appimage: Path | None = None
    gpu_mode: str = "drm"
    env: Mapping[str, str] = field(default_factory=_frozen)
    args: tuple[str, ...] = ()
    timeout_seconds: int | None = None
    sanitize: tuple[str, ...] = ()  # e.g. ("strip-gnu-property",)


@dataclass(frozen=True)
class Stack:
    """A fully loaded stack: its includes merged, its repos and base resolved."""

    name: str
    path: Path
    description: str
    klass: str  # one of CLASSES; "class" in TOML
    base: Base
    includes: tuple[str, ...]  # direct includes, as written
    release: str
    arch: str
    repos: tuple[Repo, ...]  # expanded for release and arch, in the order named
    seeds: Mapping[str, str]  # name -> reason, includes merged in (the stack's own win)
    exclude: tuple[str, ...]  # sorted, includes merged in
    waivers: tuple[Waiver, ...]
    allow_elf: tuple[ElfAllowance, ...]
    allow_32bit: bool = False
    weak_deps: bool = False
    compression: str = "lz4hc"
    app: App | None = None
    files: tuple[Path, ...] = ()  # every file read to build this object (for task deps)
