"""The declarative specs of the fixture factory: ELF files, plain files and packages.

A spec is a frozen dataclass; its :func:`digest` keys every cache, so the same spec always
maps to the same built file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack.errors import FexstackError
from fexstack.nevra import format_nevra

MACHINES = ("x86_64", "aarch64", "i386", "bpf")
ISA_LEVELS = ("v2", "v3", "v4")
RPM_ARCHES = ("x86_64", "noarch", "i686", "aarch64")

# The loader each machine's executables name in PT_INTERP unless told otherwise.
DEFAULT_INTERP = {
    "x86_64": "/lib64/ld-linux-x86-64.so.2",
    "aarch64": "/lib/ld-linux-aarch64.so.1",
    "i386": "/lib/ld-linux.so.2",
}


class FactoryError(FexstackError):
    """A fixture spec is inconsistent, or building it failed."""


def fixture_symbol(soname: str) -> str:
    """The function a fixture library exports by default: ``libfoo.so.1`` -> ``libfoo_so_1``."""
    name = re.sub(r"\W", "_", soname)
    return name if re.match(r"[A-Za-z_]", name) else "_" + name


def _check_machine(kind: str, where: str, machine: str, isa_level: str | None) -> None:
    if machine not in MACHINES:
        raise FactoryError(
            f"{kind} {where}: machine {machine!r} is not one of {', '.join(MACHINES)}",
            "pick a supported machine",
        )
    if isa_level is not None and isa_level not in ISA_LEVELS:
        raise FactoryError(
            f"{kind} {where}: isa_level {isa_level!r} is not one of {', '.join(ISA_LEVELS)}",
            "use None for the x86-64 baseline",
        )
    if isa_level is not None and machine != "x86_64":
        raise FactoryError(f"{kind} {where}: isa_level only applies to x86_64", None)


def _check_abs(kind: str, path: str) -> None:
    if not path.startswith("/") or path != posixpath.normpath(path):
        raise FactoryError(
            f"{kind} path {path!r} must be absolute and normalized", "write it like /usr/lib64/x"
        )


@dataclass(frozen=True)
class Library:
    """A shared library compiled from generated C (``bpf``: a relocatable object)."""

    soname: str
    path: str = ""
    needs: tuple[str, ...] = ()
    runpath: str | None = None
    rpath: str | None = None
    machine: str = "x86_64"
    isa_level: str | None = None
    symbols: tuple[str, ...] = ()
    source: str = ""  # extra C appended to the generated source (real functions)

    def __post_init__(self) -> None:
        if not self.soname or "/" in self.soname:
            raise FactoryError(f"library soname {self.soname!r} is empty or has a slash", None)
        _check_machine("library", self.soname, self.machine, self.isa_level)
        if self.path:
            _check_abs("library", self.path)

    @property
    def install_path(self) -> str:
        """Where the file goes: ``path``, else ``/usr/lib64/<soname>`` (i386: ``/usr/lib``)."""
        libdir = "/usr/lib" if self.machine == "i386" else "/usr/lib64"
        return self.path or f"{libdir}/{self.soname}"

    @property
    def soname_link(self) -> str | None:
        """The ``<dir>/<soname>`` symlink installed when the file's name differs."""
        directory, base = posixpath.split(self.install_path)
        return None if base == self.soname else posixpath.join(directory, self.soname)


@dataclass(frozen=True)
class Executable:
    """An executable compiled from generated C; ``main`` replaces the body of main()."""

    path: str
    needs: tuple[str, ...] = ()
    runpath: str | None = None
    rpath: str | None = None
    machine: str = "x86_64"
    isa_level: str | None = None
    interp: str | None = None
    main: str = ""

    def __post_init__(self) -> None:
        _check_abs("executable", self.path)
        _check_machine("executable", self.path, self.machine, self.isa_level)
        if self.machine == "bpf":
            raise FactoryError(f"executable {self.path}: bpf objects are libraries", None)

    @property
    def install_path(self) -> str:
        return self.path

    @property
    def pt_interp(self) -> str:
        return self.interp if self.interp is not None else DEFAULT_INTERP[self.machine]


@dataclass(frozen=True)
class File:
    """A plain file; ``mode`` may carry setuid/setgid/sticky bits."""

    path: str
    content: bytes = b""
    mode: int = 0o644

    def __post_init__(self) -> None:
        _check_abs("file", self.path)


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str

    def __post_init__(self) -> None:
        _check_abs("symlink", self.path)


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int = 0o755

    def __post_init__(self) -> None:
        _check_abs("dir", self.path)


Content = Library | Executable | File | Symlink | Dir
Elf = Library | Executable


@dataclass(frozen=True)
class Package:
    """One binary RPM. ``autoreq=False`` turns off rpm's automatic Requires and Provides
    (``autoprov`` set explicitly overrides the Provides half)."""

    name: str
    version: str = "1.0"
    release: str = "1"
    epoch: int = 0
    arch: str = "x86_64"
    summary: str = ""
    contents: tuple[Content, ...] = ()
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    recommends: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    autoreq: bool = True
    autoprov: bool | None = None
    license: str = "MIT"
    obsoletes: tuple[str, ...] = ()
    supplements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", self.name):
            raise FactoryError(f"package name {self.name!r} is not a valid RPM name", None)
        for label, value in (("version", self.version), ("release", self.release)):
            if not re.fullmatch(r"[A-Za-z0-9._+~^]+", value):
                raise FactoryError(f"package {self.name}: {label} {value!r} is not valid", None)
        if self.arch not in RPM_ARCHES:
            raise FactoryError(
                f"package {self.name}: arch {self.arch!r} is not one of {', '.join(RPM_ARCHES)}",
                None,
            )
        seen: set[str] = set()
        for item in self.contents:
            paths = [item.path if not isinstance(item, Library) else item.install_path]
            if isinstance(item, Library) and item.soname_link:
                paths.append(item.soname_link)
            for path in paths:
                if path in seen:
                    raise FactoryError(f"package {self.name}: {path} is listed twice", None)
                seen.add(path)

    @property
    def nevra(self) -> str:
        return format_nevra(self.name, self.epoch, self.version, self.release, self.arch)

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"

    @property
    def libraries(self) -> tuple[Library, ...]:
        return tuple(c for c in self.contents if isinstance(c, Library))


@dataclass(frozen=True)
class GpgKey:
    """A throwaway OpenPGP signing key (no passphrase) in its own GnuPG home."""

    name: str
    homedir: Path
    fingerprint: str
    public_key: Path


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"__type__": type(value).__name__}
        for field in dataclasses.fields(value):
            out[field.name] = _canonical(getattr(value, field.name))
        return out
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest(), "size": len(value)}
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def digest(*values: Any) -> str:
    """A stable hex key for specs (and anything JSON-able mixed in)."""
    text = json.dumps([_canonical(v) for v in values], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
