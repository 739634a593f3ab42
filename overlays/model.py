"""The stack model: frozen dataclasses of a loaded stack, its repos, base and app.

:mod:`overlays.stack` builds them from TOML; everything downstream takes these objects.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from invariants.policy import CheckPolicy, ElfAllowance, KeptExecutable, Waiver

CLASSES = ("deps", "base", "base-refresh")
GPU_MODES = ("drm", "venus", "software")
COMPRESSIONS = ("lz4hc", "lz4", "none")  # what the muvm guest kernel's EROFS mounts
SANITIZE_STEPS = ("strip-gnu-property",)
DEFAULT_LIB_DIRS = ("/lib64", "/usr/lib64")
DEFAULT_ARCH = "x86_64"
REPOS_FILE = "repos.toml"
BASES_DIR = "bases"
LOCK_SUFFIX = ".lock.toml"
INPUTS_FORMAT = 1


def frozen_mapping(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(sorted((mapping or {}).items())))


@dataclass(frozen=True)
class Repo:
    """One repository from ``stacks/repos.toml`` (``[repos.<id>]``)."""

    id: str
    baseurl: tuple[str, ...] = ()
    metalink: str | None = None
    gpgcheck: bool = False
    gpgkey: tuple[str, ...] = ()  # absolute paths of key files (file:// URLs are converted)
    # The repo's own release ($releasever): a stack may take packages from another
    # release's repository (e.g. fedora-41 for a library Fedora 44 no longer ships).
    # None: the stack's [source].release. Once expanded, always set.
    release: str | None = None
    # baseurl and gpgkey as written in repos.toml (relative paths stay relative): what the
    # lock's inputs record, so that a clone at another path has the same inputs
    baseurl_written: tuple[str, ...] = ()
    gpgkey_written: tuple[str, ...] = ()

    def expand(self, release: str, arch: str) -> Repo:
        """This repo with ``$releasever`` (its own release, else ``release``) and
        ``$basearch`` substituted."""
        release = self.release or release

        def sub(text: str) -> str:
            return text.replace("$releasever", release).replace("$basearch", arch)

        return Repo(
            id=self.id,
            baseurl=tuple(sub(u) for u in self.baseurl),
            metalink=sub(self.metalink) if self.metalink else None,
            gpgcheck=self.gpgcheck,
            gpgkey=tuple(sub(k) for k in self.gpgkey),
            release=release,
            baseurl_written=tuple(sub(u) for u in self.baseurl_written),
            gpgkey_written=tuple(sub(k) for k in self.gpgkey_written),
        )

    @property
    def gpgkey_urls(self) -> tuple[str, ...]:
        """The keys as file:// URLs (what libdnf5's ``gpgkey`` option takes)."""
        return tuple("file://" + urllib.parse.quote(k) for k in self.gpgkey)


@dataclass(frozen=True)
class Base:
    """A base from ``stacks/bases/<id>.toml``: the RootFS the overlays sit on."""

    id: str
    path: Path  # the bases/<id>.toml file
    image: Path  # an EROFS image, or a directory holding the same tree
    packages: Path | None  # a kiwi .packages list (may be a glob), or the lock of a base stack
    overlays: tuple[Path, ...] = ()  # gpu overlay images, in order
    lib_dirs: tuple[str, ...] = DEFAULT_LIB_DIRS
    # host paths the emulator falls back to when no layer has them (FEX's rule), e.g.
    # /usr/bin/bwrap or /usr/share/mime on Asahi; empty: no fallback (x86_64 default)
    host_provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class App:
    """``[app]``: how ``doit run:<name>`` launches the AppImage."""

    appimage: Path | None = None
    gpu_mode: str = "drm"
    env: Mapping[str, str] = field(default_factory=frozen_mapping)
    args: tuple[str, ...] = ()
    timeout_seconds: int | None = None
    sanitize: tuple[str, ...] = ()  # e.g. ("strip-gnu-property",)
    plugin_dirs: tuple[Path, ...] = ()  # folders of ELF plugins the app loads (appcheck)
    allow_execstack: bool = False  # GLIBC_TUNABLES=glibc.rtld.execstack=2 in the run
    privileged: bool = False  # native backend: run the app as root (never the default)
    run_as: tuple[int, int] | None = None  # native backend: uid, gid when no user is known


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
    included: tuple[str, ...] = ()  # every stack merged in (transitively), in merge order
    pull_digest: str | None = None  # [pull] digest: the only published artifact accepted
    keep_executables: tuple[KeptExecutable, ...] = ()  # deps overlays drop the others

    def check_policy(self) -> CheckPolicy:
        """What the check step checks this stack's staged tree against (and nothing else)."""
        library_path = self.app.env.get("LD_LIBRARY_PATH", "") if self.app else ""
        return CheckPolicy(
            stack_class=self.klass,
            waivers=self.waivers,
            allow_elf=self.allow_elf,
            allow_32bit=self.allow_32bit,
            keep_executables=self.keep_executables,
            ld_library_path=tuple(p for p in library_path.split(":") if p),
            lib_dirs=tuple(self.base.lib_dirs),
        )
